"""Reductions: sum, mean, max over any axes.

Backward spreads dy back over the reduced axes: a reduced axis is restored as size 1
(`expand_dims`), then broadcasting copies dy along it.
"""

from __future__ import annotations

from ..backend import get_xp
from ..function import Function
from ._util import normalize_axes


def _restore(dy, axes, keepdims):
    """dy with the reduced axes put back as size 1, ready to broadcast against the input."""
    if keepdims or not axes:
        return dy
    xp = get_xp(dy)
    return xp.expand_dims(dy, axes)


class Sum(Function):
    """y = sum of x over `axes`.

    Shapes:   x (...)  ->  y: x's shape without the reduced axes (kept as size 1 with keepdims)
    Saved:    x's shape, the axes, keepdims
    Backward: every x element enters its sum with weight 1, so dx = dy broadcast back over the axes
    """

    def forward(self, x, axis=None, keepdims=False):
        self.shape = x.shape
        self.axes, self.keepdims = normalize_axes(axis, x.ndim), keepdims
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, dy):
        xp = get_xp(dy)
        return (xp.broadcast_to(_restore(dy, self.axes, self.keepdims), self.shape).copy(),)


class Mean(Function):
    """y = sum(x over axes) / N, N = number of elements reduced.

    Shapes:   x (...)  ->  y: x's shape without the reduced axes (kept as size 1 with keepdims)
    Saved:    x's shape, the axes, keepdims, N
    Backward: every x element enters its mean with weight 1 / N, so dx = dy / N broadcast back
    """

    def forward(self, x, axis=None, keepdims=False):
        self.shape = x.shape
        self.axes, self.keepdims = normalize_axes(axis, x.ndim), keepdims
        self.n = 1
        for a in self.axes:
            self.n *= x.shape[a]
        if self.n == 0:
            raise ValueError(f"mean over an empty axis (shape {tuple(x.shape)}, axes {self.axes})")
        return x.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, dy):
        xp = get_xp(dy)
        dx = xp.broadcast_to(_restore(dy, self.axes, self.keepdims) / self.n, self.shape)
        return (dx.astype(dy.dtype, copy=True),)


class Max(Function):
    """y = max of x over `axes`.

    Shapes:   x (...)  ->  y: x's shape without the reduced axes (kept as size 1 with keepdims)
    Backward: the gradient flows to the positions that hold the maximum. When several positions tie,
    dy is shared equally among them (the subgradient PyTorch's amax uses), so the total is dy.
    Saved: the mask of maxima and its count.
    """

    def forward(self, x, axis=None, keepdims=False):
        self.axes, self.keepdims = normalize_axes(axis, x.ndim), keepdims
        y = x.max(axis=self.axes, keepdims=True)
        self.mask = x == y
        self.count = self.mask.sum(axis=self.axes, keepdims=True).astype(x.dtype)  # int -> x's dtype: no float64 creep
        return y if keepdims else y.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, dy):
        dy = _restore(dy, self.axes, self.keepdims)
        return (self.mask * (dy / self.count),)


def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy
    return Max.apply(x, axis=axis, keepdims=keepdims)
