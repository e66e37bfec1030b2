"""Hugging Face Llama / Qwen2 / Qwen3 config.json and weights <-> GPTConfig and npgpt's state dict (layout 'llama').

config.json keys read (a key left out takes that model_type's transformers default, DEFAULTS):
    hidden_size (n_embd), num_hidden_layers, num_attention_heads, num_key_value_heads (n_kv_head),
    head_dim (head_size), intermediate_size, vocab_size, max_position_embeddings (block_size),
    rms_norm_eps, hidden_act (silu only), tie_word_embeddings, attention_dropout (npgpt's dropout),
    llama/qwen3: attention_bias (q, k, v and o), llama: mlp_bias; qwen2 has q/k/v biases and no o bias;
    qwen3 has QK-norm (q_norm, k_norm).
    RoPE, both spellings: transformers 4's rope_theta + rope_scaling ({"type" or "rope_type": ...,
    factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}) and transformers 5's
    rope_parameters ({"rope_type", "rope_theta", ...}). Types default, linear and llama3.
Refused by name: sliding windows (use_sliding_window, layer_types with 'sliding_attention'), any other
activation, mixtures of experts, rope types not built (dynamic, yarn, longrope, ...), partial rotary.

Weights: the names are npgpt's (model.layers.{i}.self_attn.q_proj.weight, ...). Hugging Face's nn.Linear
stores (out, in) and npgpt's Linear (in, out), so every `*_proj.weight` is transposed on the way in
and out; embeddings, norms and lm_head.weight (V, C) are copies. Tied (tie_word_embeddings) there is
no lm_head.weight (one equal to the embedding is dropped); untied it is required.
"""

from __future__ import annotations

import numpy as np

from ..ops.rope import REFUSED_ROPE_TYPES, ROPE_TYPES
from .config import GPTConfig
from .hf_weights import place_head

MODEL_TYPES = ("llama", "qwen2", "qwen3")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
DEFAULTS = {  # transformers' config defaults for the keys npgpt reads
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, attention_bias=False, mlp_bias=False, attention_dropout=0.0),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, hidden_act="silu", max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, attention_dropout=0.0),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, head_dim=128, hidden_act="silu",
                  max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  attention_bias=False, attention_dropout=0.0),
}
DEFAULT_THETA = 10000.0
MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size")
BUFFERS = (".rotary_emb.inv_freq",)  # older checkpoints saved RoPE's inverse frequencies: a constant, not a parameter
_LLAMA3_KEYS = {"rope_factor": "factor", "rope_low_freq_factor": "low_freq_factor",
                "rope_high_freq_factor": "high_freq_factor",
                "rope_original_max_position": "original_max_position_embeddings"}


def _rope_fields(g: dict, where: str) -> dict:
    """GPTConfig's rope fields from either spelling (see the module docstring)."""
    params = g.get("rope_parameters") or g.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise ValueError(f"{where}: rope_parameters / rope_scaling must be a JSON object, got {params!r}")
    if any(isinstance(v, dict) for v in params.values()):
        raise ValueError(f"{where}: RoPE parameters per layer type ({', '.join(params)}) are not supported")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type in REFUSED_ROPE_TYPES or rope_type not in ROPE_TYPES:
        raise ValueError(f"{where}: rope type {rope_type!r} is not supported (npgpt runs {', '.join(ROPE_TYPES)})")
    prf = params.get("partial_rotary_factor", g.get("partial_rotary_factor"))
    if prf not in (None, 1, 1.0):
        raise ValueError(f"{where}: partial_rotary_factor={prf!r} is not supported (RoPE rotates the whole head)")
    out = {"rope_theta": params.get("rope_theta", g.get("rope_theta", DEFAULT_THETA)), "rope_type": rope_type}
    if rope_type == "linear":
        out["rope_factor"] = params.get("factor")
    elif rope_type == "llama3":
        out.update({ours: params.get(theirs) for ours, theirs in _LLAMA3_KEYS.items()})
    return out


def config_from_hf(d: dict, where: str, dropout: float | None = None) -> GPTConfig:
    """The GPTConfig of a Llama / Qwen2 / Qwen3 config.json's dict; ValueError naming `where` and the key."""
    model_type = d.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{where}: model_type {model_type!r}; this reader takes {', '.join(MODEL_TYPES)}")
    g = {**DEFAULTS[model_type], **{k: v for k, v in d.items() if v is not None}}
    if g["hidden_act"] != "silu":
        raise ValueError(f"{where}: hidden_act {g['hidden_act']!r} is not supported (the Llama family's MLP runs silu)")
    bad = []
    if g.get("use_sliding_window"):
        bad.append("use_sliding_window=true (sliding-window attention)")
    if "sliding_attention" in (g.get("layer_types") or ()):
        bad.append("layer_types with 'sliding_attention'")
    bad += [f"{k}={g[k]!r} (mixture of experts)" for k in MOE_KEYS if g.get(k)]
    if g.get("pretraining_tp", 1) not in (None, 1):
        bad.append(f"pretraining_tp={g['pretraining_tp']!r}")
    if bad:
        raise ValueError(f"{where}: npgpt cannot run {', '.join(bad)}")
    attention_bias = bool(g.get("attention_bias", False))
    biases = {"qwen2": dict(qkv_bias=True, out_bias=False, mlp_bias=False),
              "qwen3": dict(qkv_bias=attention_bias, out_bias=attention_bias, mlp_bias=False),
              "llama": dict(qkv_bias=attention_bias, out_bias=attention_bias, mlp_bias=bool(g.get("mlp_bias", False)))}[model_type]
    if dropout is None:
        dropout = g["attention_dropout"]
    try:
        return GPTConfig(
            vocab_size=g["vocab_size"], block_size=g["max_position_embeddings"], n_layer=g["num_hidden_layers"],
            n_head=g["num_attention_heads"], n_embd=g["hidden_size"],
            n_kv_head=g.get("num_key_value_heads") or g["num_attention_heads"], head_size=g.get("head_dim"),
            intermediate_size=g["intermediate_size"], dropout=dropout, layout="llama", norm="rmsnorm",
            norm_eps=g["rms_norm_eps"], mlp="gated", activation="silu", pos_encoding="rope", bias=False,
            **biases, norm_bias=False, qk_norm=model_type == "qwen3",
            tie_embeddings=bool(g["tie_word_embeddings"]), **_rope_fields(g, where))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def model_type_of(c: GPTConfig) -> str:
    """The Hugging Face family that holds `c`: qwen3 with QK-norm, qwen2 with q/k/v biases only, else
    llama; ValueError naming what none of them can express."""
    if c.layout != "llama":
        raise ValueError(f"a Llama-family directory holds a model of layout 'llama', not {c.layout!r}")
    if c.qk_norm:
        if c.qkv_bias != c.out_bias or c.mlp_bias:
            raise ValueError("Qwen3 (QK-norm) has biases on all of q, k, v, o or on none, and none in the MLP; "
                             f"this model has qkv_bias={c.qkv_bias}, out_bias={c.out_bias}, mlp_bias={c.mlp_bias}")
        return "qwen3"
    if c.qkv_bias and not c.out_bias and not c.mlp_bias:
        return "qwen2"
    if c.qkv_bias != c.out_bias:
        raise ValueError(f"Llama has biases on all of q, k, v, o or on none (attention_bias); this model has "
                         f"qkv_bias={c.qkv_bias}, out_bias={c.out_bias}")
    return "llama"


def config_to_hf(c: GPTConfig, dtype: str = "float32", eos_id: int | None = None, bos_id: int | None = None) -> dict:
    """That family's config.json for `c` (transformers 5's rope_parameters and transformers 4's
    rope_theta + rope_scaling both written)."""
    model_type = model_type_of(c)
    rope = {"rope_type": c.rope_type, "rope_theta": c.rope_theta}
    if c.rope_type == "linear":
        rope["factor"] = c.rope_factor
    elif c.rope_type == "llama3":
        rope.update({theirs: getattr(c, ours) for ours, theirs in _LLAMA3_KEYS.items()})
    d = {
        "architectures": [ARCHITECTURES[model_type]], "model_type": model_type,
        "vocab_size": c.vocab_size, "hidden_size": c.n_embd, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_size, "hidden_act": "silu", "max_position_embeddings": c.block_size,
        "rms_norm_eps": c.norm_eps, "tie_word_embeddings": c.tie_embeddings, "attention_dropout": c.dropout,
        "rope_theta": c.rope_theta, "rope_scaling": None if c.rope_type == "default" else dict(rope),
        "rope_parameters": rope, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "torch_dtype": dtype, "dtype": dtype,
    }
    if model_type in ("llama", "qwen3"):
        d["attention_bias"] = c.qkv_bias
    if model_type == "llama":
        d["mlp_bias"] = c.mlp_bias
    if model_type in ("qwen2", "qwen3"):
        d.update(use_sliding_window=False, sliding_window=None, max_window_layers=c.n_layer)
    return d


def _is_linear_weight(name: str) -> bool:
    return name.endswith("_proj.weight")


def state_from_hf(tensors: dict, config: GPTConfig, where: str) -> dict:
    """Llama-family checkpoint tensors -> npgpt's state dict (see the module docstring)."""
    state, head = {}, None
    for key, value in tensors.items():
        if key.endswith(BUFFERS):
            continue
        if key == "lm_head.weight":
            head = value
            continue
        state[key] = np.ascontiguousarray(value.T) if _is_linear_weight(key) and value.ndim == 2 else value
    return place_head(state, head, "model.embed_tokens.weight", config.tie_embeddings, where)


def state_to_hf(state: dict, config: GPTConfig) -> dict:
    """npgpt's state dict -> the family's checkpoint tensors: the same names, Linear weights transposed."""
    return {k: (np.ascontiguousarray(v.T) if _is_linear_weight(k) else v) for k, v in state.items()}
