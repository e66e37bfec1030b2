"""Modules: named parameters, state dicts, train/eval, and the layers a GPT is built from.

A Module registers what it is assigned: a Parameter becomes a parameter, a Module a child, in the
order of assignment, so `named_parameters()` yields GPT-2's dotted names (`h.0.attn.c_attn.weight`)
in a fixed order. Layers hold parameters and call npgpt.functional; the math lives in the ops.

Layouts follow GPT-2's checkpoint: Linear.weight is stored (in, out) and used as x @ W.

The composite layers take the model description whole: `Block(config)`, `CausalSelfAttention(config)`,
`MLP(config)`. A layer is built on the host, its parameters zeros (norm weights ones), each tagged
with its role for the one init policy, `init_parameters`: weights N(0, 0.02), residual projections
(c_proj; Llama's o_proj and down_proj) N(0, 0.02 / sqrt(2 n_layer)), biases 0, norm weights 1, drawn in float64 from one seeded
NumPy generator in named_parameters order and cast. `Module.to(device)` then moves every parameter
once. GPT does exactly this; a layer built on its own is initialised by calling the same function.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import functional as F
from .backend import device_of, resolve_device, resolve_dtype, to_device, to_numpy
from .ops.attention import cached_attention, cached_grouped_query_attention
from .tensor import Tensor, is_grad_enabled


INIT_ROLES = ("normal", "residual", "zeros", "ones")


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates: a leaf with requires_grad=True.

    `init` names its role for `init_parameters`: 'normal', 'residual' (a projection into the
    residual stream), 'zeros' (biases) or 'ones' (norm weights)."""

    def __init__(self, data, requires_grad: bool = True, init: str = "normal"):
        super().__init__(data, requires_grad=requires_grad)
        if init not in INIT_ROLES:
            raise ValueError(f"Parameter init must be one of {INIT_ROLES}, got {init!r}")
        self.init = init

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class Module:
    """Base class: registers Parameters and sub-Modules by attribute assignment, in order."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning {name!r}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- traversal -------------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        """(dotted name, module) for this module and every descendant, depth first, in order."""
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) in registration order; a shared Parameter is yielded once."""
        seen = set()
        for mname, m in self.named_modules(prefix):
            for pname, p in m._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_params(self) -> int:
        return sum(p.size for p in self.parameters())

    # --- modes and gradients ---------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, device: str | None) -> "Module":
        """Move every parameter to `device` (None: $NPGPT_DEVICE, else cpu); returns self."""
        device = resolve_device(device)
        for p in self.parameters():
            if p.device != device:
                p.data = to_device(p.data, device)
        return self

    # --- state -----------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, object]":
        """name -> the parameter's array (the array itself, not a copy; on the module's device)."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays into the parameters in place (cast to each parameter's dtype and device).

        Shapes must match always. With strict=True the keys must match exactly; otherwise one
        ValueError lists every missing, unexpected and mis-shaped key. Returns (missing, unexpected).
        """
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        misshaped = [
            f"{k}: expected {params[k].shape}, got {tuple(state_dict[k].shape)}"
            for k in params if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != params[k].shape
        ]
        if misshaped or (strict and (missing or unexpected)):
            lines = [f"load_state_dict into {type(self).__name__} failed:"]
            if missing:
                lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
            if unexpected:
                lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
            if misshaped:
                lines.append(f"  mis-shaped keys ({len(misshaped)}): {'; '.join(misshaped)}")
            raise ValueError("\n".join(lines))
        for k, p in params.items():
            if k not in state_dict:
                continue
            value = state_dict[k]
            value = value.data if isinstance(value, Tensor) else value
            if getattr(value, "dtype", None) is not None and value.dtype.kind not in "fiu":
                raise ValueError(f"load_state_dict: {k} has dtype {value.dtype}, expected a floating-point array")
            if device_of(value) != p.device:
                value = to_device(to_numpy(value), p.device)
            p.data[...] = value  # in place: optimizers holding p keep seeing the new values
        return missing, unexpected


class ModuleList(Module):
    """Children named 0, 1, 2, ... (GPT-2's `h.0`, `h.1`, ...)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._modules)), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]


INIT_STD = 0.02  # GPT-2's standard deviation for weights and embeddings


def init_parameters(module: Module, generator: np.random.Generator, n_layer: int = 1) -> None:
    """The one init policy (GPT-2's), in place, on the host: weights N(0, INIT_STD), residual
    projections N(0, INIT_STD / sqrt(2 n_layer)) (each block adds two of them to the residual
    stream), biases 0, norm weights 1. Drawn in float64 in named_parameters order from `generator`,
    then cast to each parameter's dtype. Call it before `Module.to(device)`."""
    std = {"normal": INIT_STD, "residual": INIT_STD / np.sqrt(2 * n_layer)}
    for _, p in module.named_parameters():
        if device_of(p.data) != "cpu":
            raise ValueError("init_parameters draws on the host: call it before Module.to(device)")
        if p.init in std:
            p.data[...] = generator.normal(0.0, std[p.init], size=p.shape).astype(p.data.dtype)
        else:
            p.data[...] = 1.0 if p.init == "ones" else 0.0


def _param(shape, dtype, init: str) -> Parameter:
    """A host Parameter of `shape` holding its role's constant (ones for norm weights, else zeros)."""
    fill = np.ones if init == "ones" else np.zeros
    return Parameter(fill(shape, resolve_dtype(dtype)), init=init)


def _dropout(x, p: float, training: bool, generator):
    """F.dropout, skipped entirely (no graph node) when it would be the identity."""
    if not training or p == 0.0:
        return x
    return F.dropout(x, p, training, generator=generator)


class Linear(Module):
    """y = x @ weight + bias, weight stored (in, out) as GPT-2's Conv1D. residual=True tags the
    weight as a projection into the residual stream (init_parameters gives it a smaller std)."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True, dtype="float32", residual: bool = False):
        super().__init__()
        self.weight = _param((n_in, n_out), dtype, "residual" if residual else "normal")
        self.bias = _param((n_out,), dtype, "zeros") if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    """y[b, t] = weight[ids[b, t]];  weight (num, dim). The ids are checked where they enter (GPT.forward)."""

    def __init__(self, num: int, dim: int, dtype="float32"):
        super().__init__()
        self.weight = _param((num, dim), dtype, "normal")

    def forward(self, ids):
        return F.embedding(ids, self.weight, check_ids=False)


class LayerNorm(Module):
    """Layer normalisation over the last axis, with a weight and (unless bias=False) a bias."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5, dtype="float32"):
        super().__init__()
        self.eps = eps
        self.weight = _param((dim,), dtype, "ones")
        self.bias = _param((dim,), dtype, "zeros") if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)


class RMSNorm(Module):
    """Root-mean-square normalisation over the last axis with a weight (Llama's RMSNorm; no bias)."""

    def __init__(self, dim: int, eps: float = 1e-6, dtype="float32"):
        super().__init__()
        self.eps = eps
        self.weight = _param((dim,), dtype, "ones")

    def forward(self, x):
        return F.rms_norm(x, self.weight, eps=self.eps)


def norm_layer(config, dtype="float32", dim: int | None = None) -> Module:
    """The config's norm over `dim` (default n_embd)."""
    dim = config.n_embd if dim is None else dim
    if config.norm == "rmsnorm":
        return RMSNorm(dim, config.norm_eps, dtype)
    return LayerNorm(dim, config.norm_bias, config.norm_eps, dtype)


_GELU_APPROXIMATE = {"gelu_tanh": "tanh", "gelu": "none"}  # config activation -> gelu's `approximate`


class MLP(Module):
    """The block's feed-forward part, then residual dropout (as nanoGPT); I = intermediate_size.

    mlp='standard' (GPT-2's names): c_proj(gelu(c_fc(x))), c_fc (C, I), c_proj (I, C).
    mlp='gated' (Llama's names): down_proj(silu(gate_proj(x)) * up_proj(x)), gate/up (C, I), down (I, C).
    Each is one fused op (F.mlp, F.swiglu_mlp) with its hand-written backward.
    """

    def __init__(self, config, dtype="float32"):
        super().__init__()
        self.p = config.dropout
        self.gated = config.mlp == "gated"
        C, I, b = config.n_embd, config.intermediate_size, config.mlp_bias
        if self.gated:
            self.gate_proj = Linear(C, I, b, dtype)
            self.up_proj = Linear(C, I, b, dtype)
            self.down_proj = Linear(I, C, b, dtype, residual=True)
        else:
            self.approximate = _GELU_APPROXIMATE[config.activation]
            self.c_fc = Linear(C, I, b, dtype)
            self.c_proj = Linear(I, C, b, dtype, residual=True)

    def forward(self, x, generator=None):
        if self.gated:
            g, u, d = self.gate_proj, self.up_proj, self.down_proj
            if all(type(m) is Linear for m in (g, u, d)):  # the fused op
                y = F.swiglu_mlp(x, g.weight, u.weight, d.weight, g.bias, u.bias, d.bias)
            else:  # a layer with an adapter (training.lora) computes its own linear
                z = g(x)
                y = d(z * ((F.tanh(z * 0.5) + 1.0) * 0.5) * u(x))  # silu(z) = z sigmoid(z), sigmoid via tanh
        elif type(self.c_fc) is Linear and type(self.c_proj) is Linear:  # the fused op
            y = F.mlp(x, self.c_fc.weight, self.c_fc.bias, self.c_proj.weight, self.c_proj.bias,
                      approximate=self.approximate)
        else:  # a layer with an adapter (training.lora) computes its own linear
            y = self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))
        return _dropout(y, self.p, self.training, generator)


class CausalSelfAttention(Module):
    """o(causal attention(q, k, v)), then residual dropout; NH query heads, NKV key/value heads, head size HS.

    layout 'gpt2': c_attn (C, (NH + 2 NKV) HS) gives q, k, v side by side, c_proj (NH HS, C).
    layout 'llama': q_proj (C, NH HS), k_proj and v_proj (C, NKV HS), o_proj (NH HS, C), and with
    qk_norm q_norm and k_norm (HS,) (one RMSNorm weight shared by the heads).
    Steps: 1. q, k, v split into heads (B, NH|NKV, T, HS); 2. QK-norm (Qwen3) on q and k; 3. RoPE at
    the absolute positions start .. start+T-1 (cos, sin given by the model); 4. causal attention,
    key/value head h // (NH / NKV) for query head h, scale 1 / sqrt(HS), probability dropout inside;
    5. the output projection. GPT-2's own case (NKV = NH, no RoPE, no QK-norm, fused c_attn) runs the
    fused F.attention on c_attn's output, as before.
    """

    def __init__(self, config, dtype="float32"):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.n_kv_head, config.head_size
        self.p = config.dropout
        self.fused = config.layout == "gpt2"
        C, HS = config.n_embd, config.head_size
        q_size, kv_size = config.n_head * HS, config.n_kv_head * HS
        if self.fused:
            self.c_attn = Linear(C, q_size + 2 * kv_size, config.qkv_bias, dtype)
            self.c_proj = Linear(q_size, C, config.out_bias, dtype, residual=True)
        else:
            self.q_proj = Linear(C, q_size, config.qkv_bias, dtype)
            self.k_proj = Linear(C, kv_size, config.qkv_bias, dtype)
            self.v_proj = Linear(C, kv_size, config.qkv_bias, dtype)
            self.o_proj = Linear(q_size, C, config.out_bias, dtype, residual=True)
            if config.qk_norm:
                self.q_norm = RMSNorm(HS, config.norm_eps, dtype)
                self.k_norm = RMSNorm(HS, config.norm_eps, dtype)
        self.qk_norm = config.qk_norm
        self.rope = config.pos_encoding == "rope"
        self.gpt2_core = self.fused and not self.rope and config.n_kv_head == config.n_head

    def forward(self, x, generator=None, kv=None, rope=None):
        """kv = (k_cache, v_cache, start): attend from positions start.. against the cached keys and
        values (see ops.attention.cached_attention), an inference path: no_grad, no dropout.
        rope = (cos, sin) (T, HS) at these positions, when the model uses RoPE."""
        if kv is not None and (is_grad_enabled() or (self.training and self.p > 0)):
            raise RuntimeError("the KV cache is an inference path: call the model under no_grad() in eval mode")
        out = self.c_proj if self.fused else self.o_proj
        if self.gpt2_core:
            qkv = self.c_attn(x)  # (B, T, 3 NH HS)
            if kv is None:
                y = F.attention(qkv, self.n_head, dropout=self.p, training=self.training, generator=generator)
            else:
                y = Tensor(cached_attention(qkv.data, self.n_head, *kv))  # (B, T, NH HS)
            return _dropout(out(y), self.p, self.training, generator)
        q, k, v = self._heads(x)  # 1. (B, NH, T, HS), (B, NKV, T, HS) x 2
        if self.qk_norm:  # 2.
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:  # 3.
            cos, sin = rope
            q, k = F.rope(q, cos, sin), F.rope(k, cos, sin)
        if kv is None:  # 4. (B, T, NH HS)
            y = F.grouped_query_attention(q, k, v, dropout=self.p, training=self.training, generator=generator)
        else:
            y = Tensor(cached_grouped_query_attention(q.data, k.data, v.data, *kv))
        return _dropout(out(y), self.p, self.training, generator)  # 5.

    def _heads(self, x):
        """1. q (B, NH, T, HS), k and v (B, NKV, T, HS) from x (B, T, C)."""
        B, T, _ = x.shape
        NH, NKV, HS = self.n_head, self.n_kv_head, self.head_size
        if self.fused:
            q, k, v = F.split(self.c_attn(x), [NH * HS, NKV * HS, NKV * HS], axis=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        split = lambda t, n: F.transpose(F.reshape(t, (B, T, n, HS)), (0, 2, 1, 3))  # noqa: E731
        return split(q, NH), split(k, NKV), split(v, NKV)


_BLOCK_NAMES = {  # layout -> names of (first norm, attention, second norm, MLP)
    "gpt2": ("ln_1", "attn", "ln_2", "mlp"),
    "llama": ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"),
}


class Block(Module):
    """Pre-norm transformer block: x + attn(norm_1(x)), then x + mlp(norm_2(x)).

    The children carry the layout's names (GPT-2: ln_1, attn, ln_2, mlp; Llama: input_layernorm,
    self_attn, post_attention_layernorm, mlp); forward reaches them through the same four."""

    def __init__(self, config, dtype="float32"):
        super().__init__()
        names = _BLOCK_NAMES[config.layout]
        parts = (norm_layer(config, dtype), CausalSelfAttention(config, dtype), norm_layer(config, dtype),
                 MLP(config, dtype))
        for name, part in zip(names, parts):
            setattr(self, name, part)
        object.__setattr__(self, "_parts", parts)  # not registered again: the names above own them

    def forward(self, x, generator=None, kv=None, rope=None):
        norm_1, attn, norm_2, mlp = self._parts
        x = x + attn(norm_1(x), generator=generator, kv=kv, rope=rope)
        return x + mlp(norm_2(x), generator=generator)


__all__ = [
    "Parameter", "Module", "ModuleList", "Linear", "Embedding", "LayerNorm", "RMSNorm", "MLP",
    "CausalSelfAttention", "Block", "init_parameters", "norm_layer",
]
