"""Tensor: an array, its gradient, and the link to the Function that made it.

`backward()` walks the graph in reverse topological order, found by an iterative depth-first
search (a chain of 10,000 ops must not meet Python's recursion limit). Gradients add up over every
use of a tensor, and leaves keep theirs in `.grad` across calls until `zero_grad()`, as in PyTorch.

Two promises about memory:
  - A leaf's `.grad` is its own array, never shared with another leaf or a view of something else
    (Add hands one dy to both inputs; a leaf copies it on arrival and adds later ones in place), so
    scaling one gradient in place (clipping, the optimizer) never changes another.
  - Once a node's backward has run, its Function drops its saved arrays and its links to the
    inputs, so memory holds one graph at a time; `backward(retain_graph=True)` keeps them for a
    second pass, and a second backward through a freed graph is a clear error.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from .backend import device_of, get_xp, to_device, to_numpy

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Inside this block no graph is built: results have requires_grad=False."""
    before = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = before


def _ops():
    # Operators dispatch to npgpt.ops, which builds on this module: import late to keep the
    # one-way flow tensor -> ops at import time.
    from . import ops  # noqa: PLC0415

    return ops


class Tensor:
    __array_priority__ = 1000  # so `ndarray + Tensor` defers to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, _fn=None, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        xp = get_xp(data)
        if not hasattr(data, "dtype") or not hasattr(data, "shape"):
            data = xp.asarray(data)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._fn = _fn
        self.name = name

    @classmethod
    def constant(cls, value, like: "Tensor | None" = None) -> "Tensor":
        """Wrap a number or array as a graph constant. A Python number takes the dtype and device
        of `like`, so `x * 0.5` stays float32 when x is float32."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and like is not None:
            xp = like.xp
            return cls(xp.asarray(value, dtype=like.dtype))
        if like is not None and device_of(value) != like.device:
            value = to_device(value, like.device)
        return cls(value)

    # --- array facts -----------------------------------------------------------------------
    @property
    def xp(self):
        return get_xp(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def device(self) -> str:
        return device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._fn is None

    def __len__(self) -> int:
        return self.shape[0]

    def numpy(self) -> np.ndarray:
        return to_numpy(self.data)

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor of one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data, requires_grad=False)

    def to(self, device: str) -> "Tensor":
        return Tensor(to_device(self.data, device), requires_grad=self.requires_grad)

    def zero_grad(self) -> None:
        self.grad = None

    def __repr__(self) -> str:
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device}{flag})"

    # --- autograd ----------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into every leaf's `.grad`.

        Without `grad` the tensor must hold one element (a loss); its gradient is 1. The graph's
        saved arrays are freed as backward uses them, unless `retain_graph=True`.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph to walk)")
        xp = self.xp
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without an upstream gradient needs a scalar, got shape {self.shape}; "
                    "pass grad= of the same shape"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            grad = xp.asarray(grad, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward(): grad has shape {tuple(grad.shape)}, tensor has {self.shape}")

        grads = {id(self): grad}
        for node in reversed(self._topological_order()):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._fn is None:  # a leaf: keep its gradient, in memory of its own
                if node.grad is None:
                    node.grad = g.copy()
                else:
                    node.grad += g
                continue
            fn = node._fn
            in_grads = fn.backward(g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if len(in_grads) != len(fn.inputs):
                raise RuntimeError(f"{fn!r}.backward returned {len(in_grads)} gradients for {len(fn.inputs)} inputs")
            for t, gi in zip(fn.inputs, in_grads):
                if gi is None or t is None or not t.requires_grad:
                    continue
                if tuple(gi.shape) != t.shape:
                    raise RuntimeError(f"{fn!r}.backward gave a gradient of shape {tuple(gi.shape)} for an input of shape {t.shape}")
                prev = grads.get(id(t))
                grads[id(t)] = gi if prev is None else prev + gi
            if not retain_graph:
                fn.release()

    def _topological_order(self) -> list["Tensor"]:
        """Tensors that need a gradient, each after all of its inputs (iterative DFS, post-order)."""
        order, seen = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            if node._fn is not None:
                if node._fn.released:
                    raise RuntimeError(
                        f"backward through a graph a second time: {node._fn!r}'s saved arrays were freed by the "
                        "first backward; call the first one as backward(retain_graph=True) to keep them"
                    )
                for t in node._fn.inputs:
                    if t is not None and t.requires_grad and id(t) not in seen:
                        stack.append((t, False))
        return order

    # --- operators (implemented in npgpt.ops) ------------------------------------------------
    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().sub(self, other)

    def __rsub__(self, other):
        return _ops().sub(other, self)

    def __mul__(self, other):
        return _ops().mul(self, other)

    def __rmul__(self, other):
        return _ops().mul(other, self)

    def __truediv__(self, other):
        return _ops().div(self, other)

    def __rtruediv__(self, other):
        return _ops().div(other, self)

    def __neg__(self):
        return _ops().neg(self)

    def __pow__(self, exponent):
        return _ops().pow(self, exponent)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __getitem__(self, index):
        return _ops().getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        return _ops().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _ops().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _ops().max(self, axis=axis, keepdims=keepdims)

    def exp(self):
        return _ops().exp(self)

    def log(self):
        return _ops().log(self)

    def tanh(self):
        return _ops().tanh(self)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops().reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops().transpose(self, axes or None)

    @property
    def T(self):
        return _ops().transpose(self, None)

    def split(self, sizes, axis=-1):
        return _ops().split(self, sizes, axis=axis)


def as_tensor(data, requires_grad: bool = False, dtype=None, device: str | None = None) -> Tensor:
    """Make a Tensor from a list, number or array, optionally cast and moved."""
    from .backend import resolve_device  # noqa: PLC0415

    a = data.data if isinstance(data, Tensor) else data
    if device is not None:
        a = to_device(a, resolve_device(device))
    xp = get_xp(a)
    a = xp.asarray(a, dtype=dtype) if dtype is not None else xp.asarray(a)
    return Tensor(a, requires_grad=requires_grad)
