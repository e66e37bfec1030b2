"""Reading a Hugging Face directory's weight files into {name: NumPy array}.

Looked for in this order (the first present wins):
    model.safetensors                  safetensors' NumPy API; bfloat16 tensors become float32
    model.safetensors.index.json       {"weight_map": {name: shard file}}, each shard as above
    pytorch_model.bin                  npgpt.models.torch_pickle: torch.save's zip read with an unpickler that
                                       knows only a state dict's names (as torch.load(weights_only=True)),
                                       so it cannot run code; PyTorch is not needed
    pytorch_model.bin.index.json       shards of the above
"""

from __future__ import annotations

import json
import os

import numpy as np

from .torch_pickle import load_state_dict

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


def read_weights(folder: str) -> dict:
    """{tensor name: array} from the first weight file of the module docstring's list in `folder`."""
    for name, reader in ((SAFETENSORS, read_safetensors), (SAFETENSORS_INDEX, None), (BIN, read_bin), (BIN_INDEX, None)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            if reader is not None:
                return reader(path)
            return _read_sharded(path, read_safetensors if name == SAFETENSORS_INDEX else read_bin)
    raise FileNotFoundError(f"{folder}: no weights: expected {SAFETENSORS}, {SAFETENSORS_INDEX}, {BIN} or {BIN_INDEX}")


def _read_sharded(index_path: str, reader) -> dict:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise ValueError(f"{index_path}: not a shard index ({{'weight_map': {{name: file}}}}): {e!r}") from None
    folder = os.path.dirname(index_path)
    out = {}
    for shard in shards:
        if not isinstance(shard, str) or os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise ValueError(f"{index_path}: shard {shard!r} is not a file name in the same directory")
        path = os.path.join(folder, shard)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{index_path}: lists the shard {shard}, which is missing")
        tensors = reader(path)
        for name, file in weight_map.items():
            if file == shard:
                if name not in tensors:
                    raise ValueError(f"{index_path}: {name} is said to be in {shard}, which lacks it")
                out[name] = tensors[name]
    return out


def _header(path: str, raw: bytes) -> dict:
    n = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else -1
    if n < 0 or n > len(raw) - 8:
        raise ValueError(f"{path}: not a safetensors file (truncated or another format)")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a safetensors file (its header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (its header is not a JSON object)")
    return header


def read_safetensors(path: str) -> dict:
    """{name: array}; F64/F32/F16 as stored, BF16 widened to float32 (exact: its top 16 bits)."""
    with open(path, "rb") as f:
        raw = f.read()
    header = _header(path, raw)
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if not any(isinstance(v, dict) and v.get("dtype") == "BF16" for v in entries.values()):
        from safetensors.numpy import load  # noqa: PLC0415

        try:
            return load(raw)
        except Exception as e:  # safetensors raises its own error type for a broken file
            raise ValueError(f"{path}: not a readable safetensors file: {type(e).__name__}: {e}") from None
    data = memoryview(raw)[8 + int.from_bytes(raw[:8], "little"):]
    out = {}
    for name, e in entries.items():
        try:
            dtype, shape, (begin, end) = e["dtype"], tuple(e["shape"]), e["data_offsets"]
            if dtype == "BF16":
                bits = np.frombuffer(data[begin:end], dtype="<u2").astype(np.uint32) << 16
                array = bits.view(np.float32)
            else:
                array = np.frombuffer(data[begin:end], dtype=_NUMPY_DTYPES[dtype]).copy()
            out[name] = array.reshape(shape)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: tensor {name!r} is unreadable ({type(err).__name__}: {err}); "
                             f"npgpt reads {', '.join(_NUMPY_DTYPES)} and BF16 tensors") from None
    return out


def read_bin(path: str) -> dict:
    """{name: array} from a PyTorch state dict file, without PyTorch (see npgpt.models.torch_pickle)."""
    return load_state_dict(path)


def place_head(state: dict, head, embedding_key: str, tied: bool, where: str) -> dict:
    """Put a checkpoint's `lm_head.weight` (or None) into npgpt's state dict `state`, in place: with a
    tied head it must be absent or equal to the embedding `embedding_key` (npgpt then keeps none);
    untied it is required. ValueError naming `where` otherwise. Returns state."""
    emb = state.get(embedding_key)
    if tied:
        if head is not None and emb is not None and (head.shape != emb.shape or not np.array_equal(head, emb)):
            shown = embedding_key.removeprefix("transformer.")  # GPT-2 checkpoints may leave the prefix out
            raise ValueError(f"{where}: tie_word_embeddings is true, but lm_head.weight differs from {shown}; "
                             "set tie_word_embeddings to false in config.json to keep a separate head")
    elif head is None:
        raise ValueError(f"{where}: tie_word_embeddings is false, but the checkpoint has no lm_head.weight")
    else:
        state["lm_head.weight"] = head
    return state
