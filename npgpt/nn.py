"""Modules: named parameters, state dicts, train/eval, and the layers a GPT is built from.

A Module registers what it is assigned: a Parameter becomes a parameter, a Module a child, in the
order of assignment, so `named_parameters()` yields GPT-2's dotted names (`h.0.attn.c_attn.weight`)
in a fixed order. Layers hold parameters and call npgpt.functional; the math lives in the ops.

Layouts follow GPT-2's checkpoint: Linear.weight is stored (in, out) and used as x @ W.

The composite layers take the model description whole: `Block(config)`, `CausalSelfAttention(config)`,
`MLP(config)`. A layer is built on the host, its parameters zeros (norm weights ones), each tagged
with its role for the one init policy, `init_parameters`: weights N(0, 0.02), residual projections
(c_proj) N(0, 0.02 / sqrt(2 n_layer)), biases 0, norm weights 1, drawn in float64 from one seeded
NumPy generator in named_parameters order and cast. `Module.to(device)` then moves every parameter
once. GPT does exactly this; a layer built on its own is initialised by calling the same function.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import functional as F
from .backend import device_of, resolve_device, resolve_dtype, to_device, to_numpy
from .ops.attention import cached_attention
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


def norm_layer(config, dtype="float32") -> Module:
    """The config's norm over n_embd."""
    return LayerNorm(config.n_embd, config.norm_bias, config.norm_eps, dtype)


_GELU_APPROXIMATE = {"gelu_tanh": "tanh", "gelu": "none"}  # config activation -> gelu's `approximate`


class MLP(Module):
    """c_proj(gelu(c_fc(x))), then residual dropout (as nanoGPT). c_fc (C, I), c_proj (I, C), I = intermediate_size."""

    def __init__(self, config, dtype="float32"):
        super().__init__()
        self.approximate = _GELU_APPROXIMATE[config.activation]
        self.p = config.dropout
        self.c_fc = Linear(config.n_embd, config.intermediate_size, config.mlp_bias, dtype)
        self.c_proj = Linear(config.intermediate_size, config.n_embd, config.mlp_bias, dtype, residual=True)

    def forward(self, x, generator=None):
        if type(self.c_fc) is Linear and type(self.c_proj) is Linear:  # the fused op
            y = F.mlp(x, self.c_fc.weight, self.c_fc.bias, self.c_proj.weight, self.c_proj.bias,
                      approximate=self.approximate)
        else:  # a layer with an adapter (training.lora) computes its own linear
            y = self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))
        return _dropout(y, self.p, self.training, generator)


class CausalSelfAttention(Module):
    """c_proj(causal multi-head attention(c_attn(x))), then residual dropout.

    c_attn (C, 3 NH HS) gives q, k, v side by side; attention-probability dropout happens inside the
    fused attention op, residual dropout after c_proj (NH HS, C) (as nanoGPT).
    """

    def __init__(self, config, dtype="float32"):
        super().__init__()
        self.n_head = config.n_head
        self.p = config.dropout
        inner = config.n_head * config.head_size
        self.c_attn = Linear(config.n_embd, 3 * inner, config.qkv_bias, dtype)
        self.c_proj = Linear(inner, config.n_embd, config.out_bias, dtype, residual=True)

    def forward(self, x, generator=None, kv=None):
        """kv = (k_cache, v_cache, start): attend from positions start.. against the cached keys and
        values (see ops.attention.cached_attention), an inference path: no_grad, no dropout."""
        qkv = self.c_attn(x)  # (B, T, 3 NH HS)
        if kv is None:
            y = F.attention(qkv, self.n_head, dropout=self.p, training=self.training, generator=generator)  # (B, T, NH HS)
        else:
            if is_grad_enabled() or (self.training and self.p > 0):
                raise RuntimeError("the KV cache is an inference path: call the model under no_grad() in eval mode")
            y = Tensor(cached_attention(qkv.data, self.n_head, *kv))  # (B, T, NH HS)
        y = self.c_proj(y)
        return _dropout(y, self.p, self.training, generator)


class Block(Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config, dtype="float32"):
        super().__init__()
        self.ln_1 = norm_layer(config, dtype)
        self.attn = CausalSelfAttention(config, dtype)
        self.ln_2 = norm_layer(config, dtype)
        self.mlp = MLP(config, dtype)

    def forward(self, x, generator=None, kv=None):
        x = x + self.attn(self.ln_1(x), generator=generator, kv=kv)
        return x + self.mlp(self.ln_2(x), generator=generator)


__all__ = [
    "Parameter", "Module", "ModuleList", "Linear", "Embedding", "LayerNorm", "MLP",
    "CausalSelfAttention", "Block", "init_parameters", "norm_layer",
]
