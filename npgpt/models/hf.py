"""Hugging Face model directories, both ways: resolving a directory or hub name, reading and writing one.

A directory (what transformers' save_pretrained writes):
    config.json        model_type "gpt2" (npgpt.models.hf_gpt2) or "llama", "qwen2", "qwen3"
                       (npgpt.models.hf_llama): each family's module maps its config.json <-> GPTConfig
                       and its tensors <-> npgpt's state dict
    model.safetensors  the weights (or model.safetensors.index.json + shards, or pytorch_model.bin,
                       read without PyTorch by npgpt.models.torch_pickle, which refuses any pickled code)
    the tokenizer      vocab.json + merges.txt (GPT-2, npgpt.tokenizers.bpe_hf), or tokenizer.json
                       alone (Llama 3, Qwen, SmolLM2, and GPT-2 saved by transformers 5: npgpt.tokenizers.bpe_json)

Writing: a GPT-2 model (layout 'gpt2') writes GPT-2's config.json and vocab.json + merges.txt; a
Llama-family model (layout 'llama') writes llama/qwen2/qwen3's config.json (whichever holds it) and
tokenizer.json, so transformers.AutoModelForCausalLM / AutoTokenizer load the same class.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from ..backend import to_numpy
from ..fileio import read_json
from . import hf_gpt2, hf_llama
from .hf_weights import read_weights

FAMILIES = {"gpt2": hf_gpt2, **{t: hf_llama for t in hf_llama.MODEL_TYPES}}  # model_type -> its mapping
LAYOUT_FAMILY = {"gpt2": hf_gpt2, "llama": hf_llama}  # GPTConfig.layout -> its mapping

HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "vocab.json", "merges.txt",
             "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"]


def resolve_dir(path_or_name) -> str:
    """A local GPT-2 directory, or a hub name downloaded through huggingface_hub (see download)."""
    p = os.fspath(path_or_name)
    if not os.path.lexists(p):
        from ..fileio import settle_dir  # noqa: PLC0415 - undo an export's swap that a kill cut in half

        settle_dir(p)
    if os.path.isdir(p):
        return p
    if os.path.exists(p):
        raise ValueError(f"{p}: a file; expected a GPT-2 directory (config.json + model.safetensors) or a "
                         "Hugging Face hub name such as 'gpt2'")
    if not HUB_NAME.fullmatch(p) or ".." in p:
        raise FileNotFoundError(f"{p}: no such directory (and not a Hugging Face hub name such as 'gpt2' "
                                "or 'openai-community/gpt2')")
    return download(p)


def download(name: str) -> str:
    """snapshot_download of the files npgpt reads (safetensors, else pytorch_model.bin); a clear error
    when huggingface_hub is missing, the machine is offline, or the hub refuses."""
    try:
        import huggingface_hub  # noqa: PLC0415 - the optional `hf` extra
    except ImportError:
        raise RuntimeError(f"{name!r} is not a local directory, and downloading it from the Hugging Face hub "
                           "needs huggingface_hub, which is not installed: pip install 'npgpt[hf]', or pass the "
                           "path of a GPT-2 directory") from None
    try:
        folder = huggingface_hub.snapshot_download(name, allow_patterns=HUB_FILES)
        if not any(n.endswith(".safetensors") for n in os.listdir(folder)):
            folder = huggingface_hub.snapshot_download(
                name, allow_patterns=HUB_FILES + ["pytorch_model*.bin", "pytorch_model.bin.index.json"])
    except Exception as e:  # huggingface_hub raises many types: offline, not found, gated, HTTP
        offline = getattr(getattr(huggingface_hub, "constants", None), "HF_HUB_OFFLINE", False)
        why = ("HF_HUB_OFFLINE is set, so nothing can be downloaded, and it is not in the local cache" if offline
               else f"{type(e).__name__}: {' '.join(str(e).split())}")  # one line
        raise RuntimeError(f"cannot download {name!r} from the Hugging Face hub ({why}); {name!r} is not a local "
                           "directory either: download it while online, or pass the path of a GPT-2 directory") from None
    return folder


def config_from_hf(d: dict, where: str, dropout: float | None = None):
    """The GPTConfig of a config.json's dict, by its model_type (gpt2 when absent)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object")
    model_type = d.get("model_type", "gpt2")
    if model_type not in FAMILIES:
        raise ValueError(f"{where}: model_type {model_type!r}; npgpt reads {', '.join(FAMILIES)} checkpoints")
    return FAMILIES[model_type].config_from_hf(d, where, dropout)


def load_pretrained(cls, path_or_name, dtype="float32", device=None, dropout: float | None = None, seed: int = 0):
    """A `cls` (GPT) with a directory's config and weights, in eval mode, its tokenizer (vocab.json +
    merges.txt, or tokenizer.json) as `model.tokenizer`, else None."""
    from ..tokenizers.bpe import BPETokenizer  # noqa: PLC0415
    from ..tokenizers.bpe_hf import has_pretrained_tokenizer  # noqa: PLC0415

    folder = resolve_dir(path_or_name)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{folder}: no config.json; not a GPT-2 / Hugging Face model directory")
    config = config_from_hf(read_json(config_path), config_path, dropout)
    state = LAYOUT_FAMILY[config.layout].state_from_hf(read_weights(folder), config, folder)
    model = cls(config, seed=seed, dtype=dtype, device=device, init=False)  # load_state_dict fills every parameter
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{folder}: the weights do not fit config.json's model: {e}") from None
    tokenizer = None
    if has_pretrained_tokenizer(folder):
        tokenizer = BPETokenizer.from_pretrained(folder)
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"{folder}: the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size "
                             f"is {config.vocab_size}")
    model.tokenizer = tokenizer
    return model.eval()


def save_pretrained(model, path, tokenizer=None) -> list[str]:
    """Write config.json + model.safetensors (+ the tokenizer's files: `tokenizer`, else
    model.tokenizer when set) into the directory `path`, each atomically; returns the paths. Every
    check runs before the first file is written. GPT-2 (layout 'gpt2') writes vocab.json + merges.txt,
    the Llama family tokenizer.json + tokenizer_config.json."""
    from safetensors.numpy import save  # noqa: PLC0415
    from ..tokenizers.bpe import BPETokenizer  # noqa: PLC0415
    from ..tokenizers.bpe_hf import pretrained_files, write_files  # noqa: PLC0415

    c = model.config
    family = LAYOUT_FAMILY[c.layout]
    tok = tokenizer if tokenizer is not None else model.tokenizer
    files = {}
    if tok is not None:
        if not isinstance(tok, BPETokenizer):
            raise ValueError(f"a Hugging Face directory holds a byte-level BPE tokenizer; this one is a "
                             f"{type(tok).__name__} (save without a tokenizer, or train with --tokenizer bpe)")
        if tok.vocab_size > c.vocab_size:
            raise ValueError(f"the tokenizer has {tok.vocab_size} ids, more than the model's vocab_size {c.vocab_size}")
        files = pretrained_files(tok, model_max_length=c.block_size) if c.layout == "gpt2" else \
            _tokenizer_json_files(tok, c.block_size)
    eot = tok.eot_id if tok is not None else None
    dtype = str(np.dtype(model.dtype))
    hf_config = hf_gpt2.config_to_hf(c, dtype, eot) if c.layout == "gpt2" else hf_llama.config_to_hf(c, dtype, eot)
    state = {k: to_numpy(v) for k, v in model.state_dict().items()}
    tensors = {k: np.ascontiguousarray(v) for k, v in family.state_to_hf(state, c).items()}
    files = {"model.safetensors": save(tensors, metadata={"format": "pt"}),
             "config.json": json.dumps(hf_config, indent=1), **files}
    return write_files(path, files)


def _tokenizer_json_files(tok, model_max_length: int) -> dict[str, str]:
    """tokenizer.json (+ a tokenizer_config.json naming the fast tokenizer) for the Llama family."""
    from ..tokenizers.bpe_json import tokenizer_json_dict  # noqa: PLC0415

    specials = sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    eos = next((s for s, i in specials if i == tok.eot_id), None) if tok.eot_id is not None else None
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": int(model_max_length),
              "clean_up_tokenization_spaces": False, "bos_token": None, "eos_token": eos}
    return {"tokenizer.json": json.dumps(tokenizer_json_dict(tok), ensure_ascii=False, indent=1),
            "tokenizer_config.json": json.dumps(config, ensure_ascii=False, indent=1)}
