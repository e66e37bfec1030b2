"""Modules: named parameters, state dicts, train/eval, and the layers a GPT is built from.

A Module registers what it is assigned: a Parameter becomes a parameter, a Module a child, in the
order of assignment, so `named_parameters()` yields GPT-2's dotted names (`h.0.attn.c_attn.weight`)
in a fixed order. Layers hold parameters and call npgpt.functional; the math lives in the ops.

Layouts follow GPT-2's checkpoint: Linear.weight is stored (in, out) and used as x @ W.

A layer built on its own is initialised as GPT initialises its layers: weights N(0, 0.02), biases 0,
layernorm weights 1, drawn in float64 on the CPU from `generator` (a seeded NumPy Generator; a fresh
unseeded one when None), then cast to `dtype` (float32 by default, like GPT) and moved to `device`
(None: $NPGPT_DEVICE, else cpu). `init=False` leaves zeros for a caller that fills every parameter
itself, as GPT does (its residual projections get a smaller std) and as loading weights does.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import functional as F
from .backend import device_of, resolve_device, resolve_dtype, rng, to_device, to_numpy
from .ops.attention import cached_attention
from .tensor import Tensor, is_grad_enabled


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates: a leaf with requires_grad=True."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

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


def _param(shape, fill: str, dtype, device, generator, init: bool) -> Parameter:
    """A Parameter of `shape`: fill 'normal' draws N(0, INIT_STD) from generator, 'zeros' and 'ones'
    are constants; all zeros when not `init` (the caller fills it)."""
    if not init or fill == "zeros":
        value = np.zeros(shape)
    elif fill == "ones":
        value = np.ones(shape)
    else:
        value = (generator if generator is not None else rng(None)).normal(0.0, INIT_STD, size=shape)
    return Parameter(to_device(value.astype(resolve_dtype(dtype)), resolve_device(device)))


def _generator(generator):
    """One generator for all of a composite layer's parts (so no two parts draw the same numbers)."""
    return generator if generator is not None else rng(None)


def _dropout(x, p: float, training: bool, generator):
    """F.dropout, skipped entirely (no graph node) when it would be the identity."""
    if not training or p == 0.0:
        return x
    return F.dropout(x, p, training, generator=generator)


class Linear(Module):
    """y = x @ weight + bias, weight stored (in, out) as GPT-2's Conv1D."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True, dtype="float32", device=None,
                 generator=None, init: bool = True):
        super().__init__()
        self.weight = _param((n_in, n_out), "normal", dtype, device, generator, init)
        self.bias = _param((n_out,), "zeros", dtype, device, generator, init) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    """y[b, t] = weight[ids[b, t]];  weight (num, dim)."""

    def __init__(self, num: int, dim: int, dtype="float32", device=None, generator=None, init: bool = True):
        super().__init__()
        self.weight = _param((num, dim), "normal", dtype, device, generator, init)

    def forward(self, ids, check_ids: bool = True):
        return F.embedding(ids, self.weight, check_ids=check_ids)


class LayerNorm(Module):
    """Layer normalisation over the last axis, with a weight and (unless bias=False) a bias."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5, dtype="float32", device=None,
                 init: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = _param((dim,), "ones", dtype, device, None, init)
        self.bias = _param((dim,), "zeros", dtype, device, None, init) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)


class MLP(Module):
    """c_proj(gelu(c_fc(x))), then residual dropout (as nanoGPT). c_fc (C, 4C), c_proj (4C, C)."""

    def __init__(self, dim: int, bias: bool = True, approximate: str = "tanh", dropout: float = 0.0,
                 dtype="float32", device=None, generator=None, init: bool = True):
        super().__init__()
        self.approximate = approximate
        self.p = dropout
        g = _generator(generator) if init else None
        self.c_fc = Linear(dim, 4 * dim, bias, dtype, device, g, init)
        self.c_proj = Linear(4 * dim, dim, bias, dtype, device, g, init)

    def forward(self, x, generator=None):
        y = F.mlp(x, self.c_fc.weight, self.c_fc.bias, self.c_proj.weight, self.c_proj.bias,
                  approximate=self.approximate)
        return _dropout(y, self.p, self.training, generator)


class CausalSelfAttention(Module):
    """c_proj(causal multi-head attention(c_attn(x))), then residual dropout.

    c_attn (C, 3C) gives q, k, v side by side; attention-probability dropout happens inside the
    fused attention op, residual dropout after c_proj (as nanoGPT).
    """

    def __init__(self, dim: int, n_head: int, bias: bool = True, dropout: float = 0.0,
                 dtype="float32", device=None, generator=None, init: bool = True):
        super().__init__()
        if dim % n_head:
            raise ValueError(f"n_embd={dim} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.p = dropout
        g = _generator(generator) if init else None
        self.c_attn = Linear(dim, 3 * dim, bias, dtype, device, g, init)
        self.c_proj = Linear(dim, dim, bias, dtype, device, g, init)

    def forward(self, x, generator=None, kv=None):
        """kv = (k_cache, v_cache, start): attend from positions start.. against the cached keys and
        values (see ops.attention.cached_attention), an inference path: no_grad, no dropout."""
        qkv = self.c_attn(x)  # (B, T, 3C)
        if kv is None:
            y = F.attention(qkv, self.n_head, dropout=self.p, training=self.training, generator=generator)  # (B, T, C)
        else:
            if is_grad_enabled() or (self.training and self.p > 0):
                raise RuntimeError("the KV cache is an inference path: call the model under no_grad() in eval mode")
            y = Tensor(cached_attention(qkv.data, self.n_head, *kv))  # (B, T, C)
        y = self.c_proj(y)
        return _dropout(y, self.p, self.training, generator)


class Block(Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, dim: int, n_head: int, bias: bool = True, dropout: float = 0.0,
                 approximate: str = "tanh", eps: float = 1e-5, dtype="float32", device=None,
                 generator=None, init: bool = True):
        super().__init__()
        g = _generator(generator) if init else None
        self.ln_1 = LayerNorm(dim, bias, eps, dtype, device, init)
        self.attn = CausalSelfAttention(dim, n_head, bias, dropout, dtype, device, g, init)
        self.ln_2 = LayerNorm(dim, bias, eps, dtype, device, init)
        self.mlp = MLP(dim, bias, approximate, dropout, dtype, device, g, init)

    def forward(self, x, generator=None, kv=None):
        x = x + self.attn(self.ln_1(x), generator=generator, kv=kv)
        return x + self.mlp(self.ln_2(x), generator=generator)


__all__ = [
    "Parameter", "Module", "ModuleList", "Linear", "Embedding", "LayerNorm", "MLP",
    "CausalSelfAttention", "Block",
]
