"""Checkpoints: one safetensors file holding everything needed to resume exactly.

File layout (safetensors; nothing unpickles, so loading never runs code):
    tensors   "model/<parameter name>"     the weights
              "optim/<path>"               every array of the optimizer's state_dict
    metadata  "format": "npgpt-checkpoint", "version": "2"
              "state": JSON of {iter_num, best_val_loss, model_config, train_config, rng, tokenizer,
                                optimizer (state_dict with arrays replaced by {"__tensor__": key}),
                                tensors_sha256}
`model_config` is the model's one description (GPTConfig.to_dict()); `train_config` holds the
training options only (TrainConfig.to_dict(), without the model). Version 1 files (npgpt before the
one-description redesign) stored the model's shape a second time inside train_config and named the
norm epsilon `ln_eps`: they load as version 2 (`_upgrade_v1`), so every earlier checkpoint still
samples and resumes.
`tensors_sha256` hashes every tensor's name, dtype, shape and bytes, so a flipped byte in the data
is caught on load, not only a broken header.

A training directory holds `ckpt.safetensors` (the latest state: what resume reads) and
`best.safetensors` (the state with the best val loss: what sampling and fine-tuning read), plus
`tokenizer.json` for people and other tools. Each file is written to a temporary name in the same
directory, fsynced, and moved over the old one with os.replace, so a crash or kill at any moment
leaves the previous file whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from ..backend import to_numpy
from ..fileio import atomic_write

FORMAT = "npgpt-checkpoint"
VERSION = 2
READS = ("1", "2")
# version 1's train_config copied these model fields; version 2 keeps them in model_config only
_V1_MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "pos_encoding", "activation",
                  "tie_embeddings", "dropout")
LATEST = "ckpt.safetensors"
BEST = "best.safetensors"


@dataclasses.dataclass
class Checkpoint:
    path: str
    iter_num: int
    best_val_loss: float | None
    model_config: dict
    train_config: dict
    rng: dict
    tokenizer: dict | None
    model_state: dict  # name -> np.ndarray
    optimizer_state: dict | None

    def load_tokenizer(self):
        from ..tokenizers.base import tokenizer_from_dict  # noqa: PLC0415

        if self.tokenizer is None:
            raise ValueError(f"{self.path}: this checkpoint holds no tokenizer")
        return tokenizer_from_dict(self.tokenizer)


# --- flattening the optimizer state: arrays out to tensors, the rest stays JSON ----------------------
def _split_arrays(obj, prefix: str, tensors: dict):
    if isinstance(obj, dict):
        return {str(k): _split_arrays(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        tensors[prefix] = np.ascontiguousarray(to_numpy(obj))
        return {"__tensor__": prefix}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _join_arrays(obj, tensors: dict):
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_arrays(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, tensors) for v in obj]
    return obj


def _tensors_digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = tensors[name]
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def encode_checkpoint(*, model_state, optimizer_state, iter_num, best_val_loss, model_config, train_config,
                      rng, tokenizer) -> bytes:
    """The bytes of a checkpoint file (see the module docstring)."""
    from safetensors.numpy import save  # noqa: PLC0415 - a runtime dependency, imported where used

    tensors = {f"model/{k}": np.ascontiguousarray(to_numpy(v)) for k, v in model_state.items()}
    optim = _split_arrays(optimizer_state, "optim", tensors) if optimizer_state is not None else None
    state = {
        "iter_num": int(iter_num),
        "best_val_loss": None if best_val_loss is None else float(best_val_loss),
        "model_config": model_config,
        "train_config": train_config,
        "rng": rng,
        "tokenizer": tokenizer,
        "optimizer": optim,
        "tensors_sha256": _tensors_digest(tensors),
    }
    return save(tensors, metadata={"format": FORMAT, "version": str(VERSION), "state": json.dumps(state)})


def save_checkpoint(path: str, *, model, optimizer, iter_num: int, best_val_loss, train_config, rng: dict,
                    tokenizer=None) -> str:
    """Save model + optimizer + loop state to the file `path` atomically; return the path.

    `train_config` is a dataclass or dict; `rng` maps names to `bit_generator.state` dicts;
    `tokenizer` is a Tokenizer (its to_dict() is stored) or None.
    """
    if hasattr(train_config, "to_dict"):
        tcfg = train_config.to_dict()  # a TrainConfig: the options without the model, stored once below
    else:
        tcfg = dataclasses.asdict(train_config) if dataclasses.is_dataclass(train_config) else dict(train_config)
    payload = encode_checkpoint(
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict() if optimizer is not None else None,
        iter_num=iter_num, best_val_loss=best_val_loss, model_config=model.config.to_dict(),
        train_config=tcfg, rng=rng, tokenizer=tokenizer.to_dict() if tokenizer is not None else None,
    )
    atomic_write(path, payload)  # temporary file, fsync, os.replace
    return path


def resolve_checkpoint(path: str, prefer: str = BEST) -> str:
    """A checkpoint file: `path` itself, or in a directory `prefer` (BEST or LATEST), else the other."""
    if os.path.isdir(path):
        other = LATEST if prefer == BEST else BEST
        for name in (prefer, other):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise ValueError(f"{path}: no checkpoint here (expected {BEST} or {LATEST}); train one with `npgpt train --out-dir {path}`")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file or directory")
    return path


def load_checkpoint(path: str, prefer: str = BEST) -> Checkpoint:
    """Read a checkpoint file (or a training directory's, see resolve_checkpoint).

    A truncated or corrupt file, or a safetensors file that is not an npgpt checkpoint, raises a
    ValueError naming the file.
    """
    path = resolve_checkpoint(path, prefer)
    with open(path, "rb") as f:
        raw = f.read()
    bad = f"{path}: not a readable npgpt checkpoint"
    if len(raw) < 8:
        raise ValueError(f"{bad}: {len(raw)} bytes, too short to be a safetensors file (truncated?)")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise ValueError(f"{bad}: header claims {n} bytes but the file has {len(raw) - 8} after it (truncated or not safetensors)")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{bad}: the safetensors header is not valid JSON ({e}); the file is corrupt or of another format") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: a safetensors file, but not an npgpt checkpoint (no format={FORMAT!r} in its "
                         "metadata); GPT-2 weights load through the model, not as a training checkpoint")
    if meta.get("version") not in READS:
        raise ValueError(f"{path}: checkpoint format version {meta.get('version')!r}; this npgpt reads versions "
                         f"{', '.join(READS)} (a newer npgpt wrote it?)")
    try:
        from safetensors.numpy import load  # noqa: PLC0415

        tensors = load(raw)
        state = json.loads(meta["state"])
    except Exception as e:  # safetensors raises its own error type for a broken file
        raise ValueError(f"{bad}: {type(e).__name__}: {e} (corrupt or truncated)") from None
    if not isinstance(state, dict):
        raise ValueError(f"{bad}: its 'state' metadata is a {type(state).__name__}, not a JSON object (corrupt)")
    if _tensors_digest(tensors) != state.get("tensors_sha256"):
        raise ValueError(f"{bad}: the tensor data does not match its checksum (corrupt)")
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    optim = state.get("optimizer")
    if meta["version"] == "1":
        state = _upgrade_v1(state)
    try:
        return Checkpoint(
            path=path, iter_num=int(state["iter_num"]), best_val_loss=state["best_val_loss"],
            model_config=state["model_config"], train_config=state["train_config"], rng=state["rng"],
            tokenizer=state["tokenizer"], model_state=model_state,
            optimizer_state=_join_arrays(optim, tensors) if optim is not None else None,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{bad}: its metadata lacks or garbles {e}") from None


def _upgrade_v1(state: dict) -> dict:
    """A version-1 state in version 2's shape: the model's fields out of train_config, ln_eps -> norm_eps."""
    model = dict(state.get("model_config") or {})
    if "ln_eps" in model:
        model["norm_eps"] = model.pop("ln_eps")
    train = {k: v for k, v in (state.get("train_config") or {}).items() if k not in _V1_MODEL_KEYS}
    return {**state, "model_config": model, "train_config": train}
