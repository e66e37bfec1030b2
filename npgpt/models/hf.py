"""GPT-2 / Hugging Face directories, both ways: config.json <-> GPTConfig, weights <-> state dict.

A GPT-2 directory (what transformers' GPT2LMHeadModel.save_pretrained writes):
    config.json        model_type "gpt2"; n_layer, n_head, n_embd, n_positions (npgpt's block_size),
                       vocab_size, layer_norm_epsilon (norm_eps), n_inner (intermediate_size), activation_function, tie_word_embeddings,
                       resid/embd/attn_pdrop; a key left out takes GPT2Config's default
    model.safetensors  the weights (or model.safetensors.index.json + shards, or pytorch_model.bin,
                       read without PyTorch by npgpt.models.torch_pickle, which refuses any pickled code)
    vocab.json + merges.txt (+ tokenizer_config.json)   the tokenizer (npgpt.tokenizers.bpe_hf)

Weights map one to one: GPT-2's Conv1D stores (in, out) as npgpt's Linear does, and the names are
npgpt's, with or without the `transformer.` prefix. The causal-mask buffers `attn.bias` and
`attn.masked_bias` of older checkpoints are dropped. With tie_word_embeddings (GPT-2's default) the
head is wte: `lm_head.weight` is absent or equal to wte; untied, `lm_head.weight` is the head.

activation_function: gelu_new, gelu_pytorch_tanh, gelu_fast and gelu_python_tanh are the tanh GELU
(npgpt's "gelu_tanh"); gelu and gelu_python are the exact one ("gelu"). GPT-2 has one layout npgpt
cannot leave: learned positions and biases everywhere, so a sinusoidal or bias-free model is refused
on the way out.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from ..backend import to_numpy
from .hf_weights import read_weights
from .config import GPTConfig

TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
EXACT_GELUS = ("gelu", "gelu_python")
FROM_HF_ACTIVATION = {**{a: "gelu_tanh" for a in TANH_GELUS}, **{a: "gelu" for a in EXACT_GELUS}}
TO_HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
GPT2_DEFAULTS = {  # transformers.GPT2Config's defaults, for keys a config.json leaves out
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "tie_word_embeddings": True,
    "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
}
BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not parameters
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "vocab.json", "merges.txt",
             "tokenizer_config.json", "special_tokens_map.json"]


# --- config.json <-> GPTConfig -------------------------------------------------------------------
def config_from_hf(d: dict, where: str, dropout: float | None = None) -> GPTConfig:
    """The GPTConfig of a GPT-2 config.json's dict; ValueError naming `where` and the key otherwise.

    dropout: None takes the config's resid_pdrop (npgpt has one rate; where embd_pdrop or attn_pdrop
    differ they are not used: dropout is off when sampling, and fine-tuning passes its --dropout).
    """
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object")
    model_type = d.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"{where}: model_type {model_type!r}; npgpt reads GPT-2 checkpoints (model_type 'gpt2')")
    g = {**GPT2_DEFAULTS, **{k: v for k, v in d.items() if v is not None}}
    if "n_positions" not in d and d.get("n_ctx") is not None:
        g["n_positions"] = d["n_ctx"]
    act = g["activation_function"]
    if act not in FROM_HF_ACTIVATION:
        raise ValueError(f"{where}: activation_function {act!r} is not supported; npgpt runs the tanh GELU "
                         f"({', '.join(TANH_GELUS)}) and the exact GELU ({', '.join(EXACT_GELUS)})")
    refused = {
        "scale_attn_weights": g.get("scale_attn_weights", True) is not True,
        "scale_attn_by_inverse_layer_idx": bool(g.get("scale_attn_by_inverse_layer_idx", False)),
        "add_cross_attention": bool(g.get("add_cross_attention", False)),
    }
    bad = [k for k, no in refused.items() if no]
    if bad:
        raise ValueError(f"{where}: npgpt cannot run {', '.join(f'{k}={g[k]!r}' for k in bad)} (it runs GPT-2's "
                         "layout: attention scaled by 1/sqrt(head size), no cross-attention)")
    if dropout is None:  # npgpt has one rate; the three differ in some configs (sampling ignores dropout)
        dropout = g["resid_pdrop"]
    try:
        return GPTConfig(vocab_size=g["vocab_size"], block_size=g["n_positions"], n_layer=g["n_layer"],
                         n_head=g["n_head"], n_embd=g["n_embd"], intermediate_size=g.get("n_inner"),
                         dropout=dropout, bias=True, pos_encoding="learned", activation=FROM_HF_ACTIVATION[act],
                         tie_embeddings=g["tie_word_embeddings"], norm_eps=g["layer_norm_epsilon"])
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def config_to_hf(c: GPTConfig, dtype: str = "float32", eot_id: int | None = None) -> dict:
    """GPT-2's config.json for `c`; ValueError naming each option GPT-2 cannot express."""
    bad = []
    if c.pos_encoding != "learned":
        bad.append(f"pos_encoding={c.pos_encoding!r} (GPT-2 has learned positions only)")
    if not all((c.bias, c.qkv_bias, c.out_bias, c.mlp_bias, c.norm_bias)):
        bad.append("bias=False (GPT-2 has biases in every linear and layernorm layer)")
    if c.head_size * c.n_head != c.n_embd:
        bad.append(f"head_size={c.head_size} with n_head={c.n_head}, n_embd={c.n_embd} (GPT-2's heads split n_embd)")
    if bad:
        raise ValueError("this model cannot be saved as a GPT-2 checkpoint: " + "; ".join(bad))
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None if c.intermediate_size == 4 * c.n_embd else c.intermediate_size, "activation_function": TO_HF_ACTIVATION[c.activation],
        "layer_norm_epsilon": c.norm_eps, "tie_word_embeddings": c.tie_embeddings,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "initializer_range": 0.02, "bos_token_id": eot_id, "eos_token_id": eot_id, "use_cache": True,
        "torch_dtype": dtype,
    }


# --- weights -------------------------------------------------------------------------------------
def state_from_hf(tensors: dict, config: GPTConfig, where: str) -> dict:
    """GPT-2 checkpoint tensors -> npgpt's state dict (see the module docstring)."""
    state, head = {}, None
    for key, value in tensors.items():
        if key == "lm_head.weight":
            head = value
            continue
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if name.endswith(BUFFERS):
            continue
        state["transformer." + name] = value
    wte = state.get("transformer.wte.weight")
    if config.tie_embeddings:
        if head is not None and wte is not None and (head.shape != wte.shape or not np.array_equal(head, wte)):
            raise ValueError(f"{where}: tie_word_embeddings is true, but lm_head.weight differs from wte.weight; "
                             "set tie_word_embeddings to false in config.json to keep a separate head")
    elif head is None:
        raise ValueError(f"{where}: tie_word_embeddings is false, but the checkpoint has no lm_head.weight")
    else:
        state["lm_head.weight"] = head
    return state


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


def load_pretrained(cls, path_or_name, dtype="float32", device=None, dropout: float | None = None, seed: int = 0):
    """A `cls` (GPT) with a GPT-2 directory's config and weights, in eval mode, its tokenizer (when the
    directory has vocab.json + merges.txt) as `model.tokenizer`, else None."""
    from ..tokenizers.bpe import BPETokenizer  # noqa: PLC0415
    from ..tokenizers.bpe_hf import HF_FILES  # noqa: PLC0415

    folder = resolve_dir(path_or_name)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{folder}: no config.json; not a GPT-2 / Hugging Face model directory")
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_path}: not valid JSON: {e}") from None
    config = config_from_hf(raw, config_path, dropout)
    state = state_from_hf(read_weights(folder), config, folder)
    model = cls(config, seed=seed, dtype=dtype, device=device, init=False)  # load_state_dict fills every parameter
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{folder}: the weights do not fit config.json's model: {e}") from None
    tokenizer = None
    if all(os.path.isfile(os.path.join(folder, n)) for n in HF_FILES):
        tokenizer = BPETokenizer.from_pretrained(folder)
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"{folder}: the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size "
                             f"is {config.vocab_size}")
    model.tokenizer = tokenizer
    return model.eval()


def save_pretrained(model, path, tokenizer=None) -> list[str]:
    """Write config.json + model.safetensors (+ the tokenizer's files: `tokenizer`, else
    model.tokenizer when set) into the directory `path`, each atomically; returns the paths. Every
    check runs before the first file is written."""
    from safetensors.numpy import save  # noqa: PLC0415
    from ..tokenizers.bpe import BPETokenizer  # noqa: PLC0415
    from ..tokenizers.bpe_hf import pretrained_files, write_files  # noqa: PLC0415

    c = model.config
    tok = tokenizer if tokenizer is not None else model.tokenizer
    files = {}
    if tok is not None:
        if not isinstance(tok, BPETokenizer):
            raise ValueError(f"a GPT-2 directory holds a byte-level BPE tokenizer; this one is a {type(tok).__name__} "
                             "(save without a tokenizer, or train with --tokenizer bpe)")
        if tok.vocab_size > c.vocab_size:
            raise ValueError(f"the tokenizer has {tok.vocab_size} ids, more than the model's vocab_size {c.vocab_size}")
        files = pretrained_files(tok, model_max_length=c.block_size)
    hf_config = config_to_hf(c, str(np.dtype(model.dtype)), tok.eot_id if tok is not None else None)
    tensors = {k: np.ascontiguousarray(to_numpy(v)) for k, v in model.state_dict().items()}
    files = {"model.safetensors": save(tensors, metadata={"format": "pt"}),
             "config.json": json.dumps(hf_config, indent=1), **files}
    return write_files(path, files)
