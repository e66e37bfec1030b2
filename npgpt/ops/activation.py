"""Activations: GELU (GPT-2's tanh approximation, or exact with erf) and softmax.

The GELU pieces are plain functions on arrays too (`gelu_forward`, `gelu_grad`, and
`gelu_with_grad`, which runs them block by block), so the fused MLP (mlp.py) shares them.
"""

from __future__ import annotations

import math

from .. import parallel
from ..backend import get_xp
from .erf import erf
from ..function import Function
from ._util import check_float, normalize_axes, row_blocks

APPROXIMATIONS = ("tanh", "none")
_K = math.sqrt(2.0 / math.pi)  # tanh form's scale
_A = 0.044715  # tanh form's cubic coefficient
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def check_approximate(approximate) -> str:
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"gelu: approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    return approximate


def gelu_forward(x, approximate: str):
    """(y, s) with y = gelu(x) and s the piece gelu_grad needs: tanh(u) or Phi(x).

    The elementwise chains below work in place on one buffer: they dominate the MLP's time
    beside its two matrix products, and each temporary would be an (N, H) allocation.
    """
    xp = get_xp(x)
    if approximate == "tanh":
        s = x * x
        s *= _A * _K
        s += _K
        s *= x  # u = sqrt(2/pi) (x + 0.044715 x^3) = x (K + A K x^2)
        xp.tanh(s, out=s)  # t = tanh(u)
    else:
        s = x * _INV_SQRT2
        s = erf(s)
        s += 1.0
        s *= 0.5  # Phi(x) = (1 + erf(x / sqrt(2))) / 2
    return gelu_from(x, s, approximate), s


def gelu_from(x, s, approximate: str):
    """gelu(x) from x and s = tanh(u) (tanh form) or Phi(x) (exact form)."""
    if approximate == "none":
        return x * s
    y = s + 1.0
    y *= x
    y *= 0.5  # x (1 + t) / 2
    return y


def gelu_grad(x, s, approximate: str):
    """d gelu / dx at x, given s from gelu_forward (see Gelu's docstring for the derivation)."""
    xp = get_xp(x)
    if approximate == "tanh":
        g = x * x
        g *= 3.0 * _A * _K
        g += _K  # du/dx = K (1 + 3 A x^2)
        g *= x
        t2 = s * s
        xp.subtract(1.0, t2, out=t2)  # 1 - t^2
        g *= t2  # x (1 - t^2) du/dx
        g += s
        g += 1.0
        g *= 0.5  # (1 + t) / 2 + x (1 - t^2) du/dx / 2
        return g
    g = x * x
    g *= -0.5
    xp.exp(g, out=g)
    g *= _INV_SQRT_2PI
    g *= x
    g += s  # Phi(x) + x phi(x)
    return g


_BLOCK = 1 << 15  # elements per block in gelu_with_grad on the CPU: a block's float32 temporaries stay in cache


def gelu_with_grad(x, approximate: str, grad: bool, overwrite: bool = False):
    """(y, d): y = gelu(x) and, when `grad`, d = gelu'(x) (else None), x of shape (..., H).

    The same formulas as gelu_forward and gelu_grad, computed block by block of rows (`_gelu_rows`;
    on the calling thread, see parallel.run_serial), so each block's passes stay in cache instead
    of streaming whole (N, H) arrays through memory once per pass. `overwrite=True` lets the result reuse x's buffer (x is
    destroyed): d when `grad`, else y.
    """
    xp = get_xp(x)
    H = x.shape[-1] if x.ndim else 1
    x2 = x.reshape(-1, H)  # (N, H), a view when x is contiguous
    y = x2 if overwrite and not grad else xp.empty_like(x2)
    d = (x2 if overwrite else xp.empty_like(x2)) if grad else None

    def rows(i0, i1):
        _gelu_rows(xp, x2[i0:i1], y[i0:i1], None if d is None else d[i0:i1], approximate)

    parallel.run_serial(rows, row_blocks(xp, x2.shape[0], H, _BLOCK))
    return y.reshape(x.shape), (d.reshape(x.shape) if grad else None)


def _gelu_rows(xp, x, y, d, approximate: str) -> None:
    """y = gelu(x) and, when d is given, d = gelu'(x), for one block of rows, in two per-thread
    scratch arrays (a speed trick: no allocation per pass, and the fewest passes found). y or d may
    be x's own buffer: x is read for the last time before either is written."""
    s = parallel.scratch(xp, "gelu_s", x.shape, x.dtype)
    g = parallel.scratch(xp, "gelu_g", x.shape, x.dtype) if d is not None else None
    if approximate == "tanh":
        xp.multiply(x, x, out=s)  # x^2
        if g is not None:
            xp.multiply(s, 1.5 * _A * _K, out=g)
            g += 0.5 * _K
            g *= x  # x du/dx / 2 = x K (1 + 3 A x^2) / 2
        s *= _A * _K
        s += _K
        s *= x  # u = x (K + A K x^2)
        xp.tanh(s, out=s)  # t = tanh(u)
        if g is None:
            s += 1.0
            s *= x
            xp.multiply(s, 0.5, out=y)  # y = x (1 + t) / 2
            return
        xp.multiply(s, 0.5, out=y)
        y += 0.5  # (1 + t) / 2, for now
        s *= s
        xp.subtract(1.0, s, out=s)  # 1 - t^2
        g *= s
        g += y  # d = (1 + t) / 2 + x (1 - t^2) du/dx / 2
        y *= x  # y = x (1 + t) / 2
    else:
        xp.multiply(x, _INV_SQRT2, out=s)
        erf(s, out=s)
        s += 1.0
        s *= 0.5  # Phi(x) = (1 + erf(x / sqrt(2))) / 2
        if g is not None:
            xp.multiply(x, x, out=g)
            g *= -0.5
            xp.exp(g, out=g)
            g *= _INV_SQRT_2PI
            g *= x
            g += s  # d = Phi(x) + x phi(x)
        xp.multiply(x, s, out=y)  # y = x Phi(x)
    if d is not None:
        xp.copyto(d, g)


class Gelu(Function):
    """Gaussian error linear unit, y = x * Phi(x), Phi the standard normal CDF.

    approximate="tanh" (GPT-2): y = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
    approximate="none" (exact): y = x Phi(x),             Phi(x) = 0.5 (1 + erf(x / sqrt(2)))

    Shapes:   x (...)  ->  y (...)
    Saved:    d = dy/dx, computed in forward while tanh(u) or Phi(x) is at hand (only when the
              graph is recorded)
    Backward: dx = dy * d, where
              tanh form, with du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2) and d tanh(u)/du = 1 - t^2:
                d = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx
              exact form, with Phi'(x) = phi(x) = exp(-x^2 / 2) / sqrt(2 pi):
                d = Phi(x) + x phi(x)
    """

    def forward(self, x, approximate="tanh"):
        check_float("gelu", x)
        y, self.d = gelu_with_grad(x, approximate, grad=self.recording)
        return y

    def backward(self, dy):
        return (dy * self.d,)


class Softmax(Function):
    """y = exp(x - max(x)) / sum(exp(x - max(x)))   along `axis` (the max cancels; it stops overflow).

    Shapes:   x (...)  ->  y (...)
    Saved:    y
    Backward: dy_i/dx_j = y_i (delta_ij - y_j), so
                dx_j = sum_i dy_i y_i (delta_ij - y_j) = y_j (dy_j - sum_i dy_i y_i)
    """

    def forward(self, x, axis=-1):
        check_float("softmax", x)
        xp = get_xp(x)
        (self.axis,) = normalize_axes(axis, x.ndim)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        e /= e.sum(axis=self.axis, keepdims=True)
        self.y = e
        return e

    def backward(self, dy):
        y = self.y
        return (y * (dy - (dy * y).sum(axis=self.axis, keepdims=True)),)


def gelu(x, approximate: str = "tanh"):
    """GELU; approximate="tanh" is GPT-2's form, "none" the exact erf form."""
    return Gelu.apply(x, approximate=check_approximate(approximate))


def softmax(x, axis: int = -1):
    """Softmax along one axis, numerically stable."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"softmax: axis must be an int, got {axis!r}")
    return Softmax.apply(x, axis=axis)
