"""Activations: GELU (GPT-2's tanh approximation, or exact with erf) and softmax.

The GELU pieces are plain functions on arrays too (`gelu_forward`, `gelu_grad`), so the fused
MLP (mlp.py) can recompute them in its backward.
"""

from __future__ import annotations

import math

from ..backend import erf, get_xp
from ..function import Function
from ._util import check_float, normalize_axes

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


class Gelu(Function):
    """Gaussian error linear unit, y = x * Phi(x), Phi the standard normal CDF.

    approximate="tanh" (GPT-2): y = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
    approximate="none" (exact): y = x Phi(x),             Phi(x) = 0.5 (1 + erf(x / sqrt(2)))

    Shapes:   x (...)  ->  y (...)
    Saved:    x, and t = tanh(u) (tanh form) or Phi(x) (exact form)
    Backward: tanh form, with du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2) and d tanh(u)/du = 1 - t^2:
                dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) du/dx)
              exact form, with Phi'(x) = phi(x) = exp(-x^2 / 2) / sqrt(2 pi):
                dx = dy * (Phi(x) + x phi(x))
    """

    def forward(self, x, approximate="tanh"):
        check_float("gelu", x)
        self.approximate = approximate
        y, self.s = gelu_forward(x, approximate)
        self.x = x
        return y

    def backward(self, dy):
        return (dy * gelu_grad(self.x, self.s, self.approximate),)


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
