"""GPTConfig: the one description of a model, for the GPT-2 and the Llama families alike.

Built once, frozen, passed whole (`GPT(config)`, `Block(config)`), stored once in a checkpoint and
mapped to and from a Hugging Face config.json in one place (npgpt/models/hf.py). Training options
hold it as a field (`TrainConfig.model`); nothing copies its fields.

Families differ by fields, not by copies of the model:

    field            GPT-2 (the defaults)        Llama / Qwen2 / Qwen3
    norm             "layernorm"                 "rmsnorm"
    mlp              "standard": c_proj(act(c_fc x))   "gated": down(act(gate x) * up x)
    activation       "gelu_tanh" or "gelu"       "silu"
    pos_encoding     "learned" (or "sinusoidal") "rope" (rope_theta, rope_type and its factors)
    n_kv_head        = n_head                    <= n_head (grouped-query; 1 = multi-query)
    head_size        n_embd // n_head            any (Qwen3-0.6B: 1024 wide, 16 heads of 128)
    intermediate     4 * n_embd                  any
    biases           bias=True everywhere        none, q/k/v (Qwen2: qkv_bias), or all (attention_bias)
    qk_norm          False                       Qwen3: RMSNorm over the head size on q and k
    tie_embeddings   True                        either
    layout           "gpt2"                      "llama"

`layout` names the parameters and lays them out: 'gpt2' keeps GPT-2's names (transformer.h.0.attn.c_attn,
fused q/k/v, so a state dict is a GPT-2 state dict), 'llama' Hugging Face Llama's (model.layers.0.self_attn.q_proj,
separate q/k/v, mlp.gate_proj/up_proj/down_proj), so loading either family's checkpoint is a copy.
The gated MLP and QK-norm exist only in the 'llama' layout, and the 'llama' layout holds only
Llama-family models (rmsnorm, gated MLP, rope). A stored config without the key (older checkpoints) is 'gpt2'.

`n_kv_head`, `head_size`, `intermediate_size` and the four bias switches may be given as None; the
constructor resolves them (n_head, n_embd // n_head, 4 * n_embd, `bias`), so a stored config always
says every number. `vocab_size` None means "not known yet": training fills it from the data
(`with_vocab`), and a model cannot be built from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from numbers import Integral, Real

NORMS = ("layernorm", "rmsnorm")
MLPS = ("standard", "gated")
ACTIVATIONS = ("gelu_tanh", "gelu", "silu")
POS_ENCODINGS = ("learned", "sinusoidal", "rope")
ROPE_TYPES = ("default", "linear", "llama3")
BIASES = ("qkv_bias", "out_bias", "mlp_bias", "norm_bias")
LAYOUTS = ("gpt2", "llama")

# Each family's defaults, which `npgpt train --arch NAME` starts from; every field stays a flag.
ARCHS: dict[str, dict] = {
    "gpt2": {},
    "llama": dict(layout="llama", norm="rmsnorm", mlp="gated", activation="silu", pos_encoding="rope", bias=False,
                  tie_embeddings=False, rope_theta=500000.0),
    "qwen2": dict(layout="llama", norm="rmsnorm", mlp="gated", activation="silu", pos_encoding="rope", bias=False,
                  qkv_bias=True, norm_eps=1e-6, rope_theta=1000000.0),
    "qwen3": dict(layout="llama", norm="rmsnorm", mlp="gated", activation="silu", pos_encoding="rope", bias=False,
                  qk_norm=True, norm_eps=1e-6, rope_theta=1000000.0),
}


def _h(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int | None = _h("token ids the model knows (none: the data's vocabulary)", None)
    block_size: int = _h("context length in tokens (the model's positions)", 64)
    n_layer: int = _h("transformer blocks", 4)
    n_head: int = _h("attention (query) heads", 4)
    n_embd: int = _h("embedding width", 128)
    n_kv_head: int | None = _h("key/value heads, dividing n_head (none: n_head; fewer: grouped-query)", None)
    head_size: int | None = _h("width of one head (none: n_embd // n_head)", None)
    intermediate_size: int | None = _h("the MLP's hidden width (none: 4 * n_embd)", None)
    dropout: float = _h("dropout probability", 0.0)
    norm: str = _h("'layernorm' or 'rmsnorm'", "layernorm")
    norm_eps: float = _h("epsilon added to the variance (mean square) in each norm", 1e-5)
    mlp: str = _h("'standard': c_proj(act(c_fc x)); 'gated': down(act(gate x) * up x)", "standard")
    activation: str = _h("'gelu_tanh', 'gelu' (exact) or 'silu'", "gelu_tanh")
    pos_encoding: str = _h("'learned', 'sinusoidal' or 'rope'", "learned")
    rope_theta: float = _h("RoPE base: inverse frequencies 1 / theta^(2i/head_size)", 10000.0)
    rope_type: str = _h("'default', 'linear' or 'llama3' (frequency scaling)", "default")
    rope_factor: float | None = _h("RoPE scaling factor (linear, llama3)", None)
    rope_low_freq_factor: float | None = _h("llama3 RoPE scaling: low_freq_factor", None)
    rope_high_freq_factor: float | None = _h("llama3 RoPE scaling: high_freq_factor", None)
    rope_original_max_position: int | None = _h("llama3 RoPE scaling: original_max_position_embeddings", None)
    bias: bool = _h("biases in every linear and norm layer (the default of the four switches below)", True)
    qkv_bias: bool | None = _h("biases on the query, key and value projections (none: bias)", None)
    out_bias: bool | None = _h("bias on the attention's output projection (none: bias)", None)
    mlp_bias: bool | None = _h("biases in the MLP (none: bias)", None)
    norm_bias: bool | None = _h("a bias in each layernorm (none: bias; rmsnorm has none)", None)
    qk_norm: bool = _h("RMSNorm over the head size on queries and keys, before RoPE (Qwen3)", False)
    tie_embeddings: bool = _h("share the token embedding with the output head", True)
    layout: str = _h("parameter names and layout: 'gpt2' (transformer.h.0.attn.c_attn) or 'llama' "
                     "(model.layers.0.self_attn.q_proj)", "gpt2")

    def __post_init__(self):
        set_ = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731 - frozen: resolve in place
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_kv_head", "head_size",
                     "intermediate_size", "rope_original_max_position"):
            v = getattr(self, name)
            if v is None and name in ("vocab_size", "n_kv_head", "head_size", "intermediate_size",
                                      "rope_original_max_position"):
                continue
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {v!r}")
            set_(name, int(v))  # a NumPy integer becomes a plain int (JSON-able)
        for name, choices in (("norm", NORMS), ("mlp", MLPS), ("activation", ACTIVATIONS),
                              ("pos_encoding", POS_ENCODINGS), ("rope_type", ROPE_TYPES),
                              ("layout", LAYOUTS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"GPTConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.norm == "rmsnorm" and self.norm_bias:
            raise ValueError("GPTConfig: norm_bias=True with norm='rmsnorm' (RMSNorm has a weight and no bias)")
        for name in ("bias", "qk_norm", "tie_embeddings", *BIASES):
            v = getattr(self, name)
            if v is None and name in BIASES:
                set_(name, self.bias and not (name == "norm_bias" and self.norm == "rmsnorm"))
            elif not isinstance(v, bool):
                raise ValueError(f"GPTConfig.{name} must be a bool, got {v!r}")
        for name, positive in (("dropout", False), ("norm_eps", True), ("rope_theta", True)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or (
                    v <= 0 if positive else not 0.0 <= v < 1.0):
                want = "a positive number" if positive else "in [0, 1)"
                raise ValueError(f"GPTConfig.{name} must be {want}, got {v!r}")
            set_(name, float(v))
        for name in ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
            v = getattr(self, name)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v <= 0:
                    raise ValueError(f"GPTConfig.{name} must be a positive number or None, got {v!r}")
                set_(name, float(v))
        if self.n_kv_head is None:
            set_("n_kv_head", self.n_head)
        if self.n_head % self.n_kv_head:
            raise ValueError(f"GPTConfig.n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        if self.head_size is None:
            if self.n_embd % self.n_head:
                raise ValueError(f"GPTConfig.n_embd={self.n_embd} must be divisible by n_head={self.n_head} "
                                 "(or give head_size)")
            set_("head_size", self.n_embd // self.n_head)
        if self.intermediate_size is None:
            set_("intermediate_size", 4 * self.n_embd)
        self._check_combinations()

    def _check_combinations(self) -> None:
        """The combinations that describe no model npgpt (or Hugging Face) has."""
        if self.pos_encoding == "rope":
            if self.head_size % 2:
                raise ValueError(f"GPTConfig: RoPE rotates pairs, so head_size must be even, got {self.head_size}")
            need = {"linear": ("rope_factor",),
                    "llama3": ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                               "rope_original_max_position")}.get(self.rope_type, ())
            missing = [n for n in need if getattr(self, n) is None]
            if missing:
                raise ValueError(f"GPTConfig: rope_type={self.rope_type!r} needs {', '.join(missing)}")
        elif self.rope_type != "default":
            raise ValueError(f"GPTConfig: rope_type={self.rope_type!r} needs pos_encoding='rope'")
        if (self.mlp == "gated") != (self.activation == "silu"):
            raise ValueError(f"GPTConfig: mlp={self.mlp!r} with activation={self.activation!r}: the standard MLP runs "
                             "a GELU ('gelu_tanh', 'gelu'), the gated one SiLU (SwiGLU)")
        if self.layout == "gpt2" and (self.mlp == "gated" or self.qk_norm):
            raise ValueError("GPTConfig: " + ("mlp='gated'" if self.mlp == "gated" else "qk_norm=True") +
                             " needs layout='llama' (GPT-2's layout has no gate_proj / q_norm; --arch llama sets it)")
        if self.layout == "llama":
            bad = [f"{n}={getattr(self, n)!r}" for n, want in (("norm", "rmsnorm"), ("mlp", "gated"),
                                                               ("pos_encoding", "rope")) if getattr(self, n) != want]
            if bad:
                raise ValueError(f"GPTConfig: layout='llama' holds the Llama family (rmsnorm, gated MLP, rope), "
                                 f"not {', '.join(bad)}")

    # --- derived ------------------------------------------------------------------------------
    @property
    def qkv_size(self) -> int:
        """Width of the queries, keys and values side by side: (n_head + 2 n_kv_head) * head_size."""
        return (self.n_head + 2 * self.n_kv_head) * self.head_size

    def with_vocab(self, vocab_size: int) -> "GPTConfig":
        """This config with vocab_size set (training fills it from the data)."""
        return dataclasses.replace(self, vocab_size=vocab_size)

    @classmethod
    def for_arch(cls, arch: str, **fields) -> "GPTConfig":
        """A config with the family `arch`'s defaults (see ARCHS), `fields` on top."""
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
        return cls(**{**ARCHS[arch], **fields})

    # --- storage ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """The config a checkpoint stored: every key known, vocab_size given."""
        if not isinstance(d, dict):
            raise ValueError(f"GPTConfig.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"GPTConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}")
        if d.get("vocab_size") is None:
            raise ValueError("GPTConfig.from_dict: missing required keys ['vocab_size']")
        return cls(**d)


FIELDS = tuple(f.name for f in dataclasses.fields(GPTConfig))
