"""Dropout with inverted scaling, drawn from a caller's seeded generator."""

from __future__ import annotations

from numbers import Real

from ..backend import rng, uniform
from ..function import Function
from ..tensor import Tensor
from ._util import check_float


class Dropout(Function):
    """y = x * m / (1 - p),  m_i = 1 with probability 1 - p, else 0 (inverted dropout: E[y] = x).

    Shapes:   x (...), keep (...) booleans  ->  y (...)
    Saved:    scale = m / (1 - p), in x's dtype (one array)
    Backward: y is x times a constant, so dx = dy * m / (1 - p) = dy * scale
    """

    def forward(self, x, keep=None, p=0.0):
        check_float("dropout", x)
        self.scale = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))  # (...)
        return x * self.scale

    def backward(self, dy):
        return (dy * self.scale,)


def dropout_keep(generator, shape, p: float, like):
    """The keep mask (booleans of `shape`, True with probability 1 - p) on `like`'s device.

    u ~ U[0, 1) in like's dtype, then keep = u >= p. On the CPU u is drawn from `generator` in
    float64 and cast; on a GPU it is drawn on the device from a seed `generator` gives
    (backend.uniform), so one seed repeats the mask on each device, but CPU and GPU masks differ.
    """
    return uniform(generator, shape, like) >= p


def dropout(x, p: float, training: bool, generator=None):
    """Zero each element with probability p and scale the rest by 1 / (1 - p), in training only.

    p == 0 or training=False: returns x itself (no copy, no graph node). `generator` is a seeded
    numpy Generator (npgpt.backend.rng(seed)); without one, a fresh unseeded generator is used and
    the mask cannot be reproduced.
    """
    if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be a probability in [0, 1), got {p!r}")
    if not training or p == 0:
        return x
    data = x.data if isinstance(x, Tensor) else x
    keep = dropout_keep(generator if generator is not None else rng(None), data.shape, float(p), data)
    return Dropout.apply(x, keep=keep, p=float(p))


