"""GPT-2's config.json and weights <-> GPTConfig and npgpt's state dict (layout 'gpt2').

config.json: model_type "gpt2"; n_layer, n_head, n_embd, n_positions (npgpt's block_size), vocab_size,
layer_norm_epsilon (norm_eps), n_inner (intermediate_size), activation_function, tie_word_embeddings,
resid/embd/attn_pdrop; a key left out takes GPT2Config's default.

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

from .config import GPTConfig
from .hf_weights import place_head

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
    return place_head(state, head, "transformer.wte.weight", config.tie_embeddings, where)


def state_to_hf(state: dict, config: GPTConfig) -> dict:
    """npgpt's state dict -> GPT-2 checkpoint tensors: the same names and layouts."""
    return dict(state)
