"""Activations: GELU (GPT-2's tanh approximation, or exact with erf) and softmax.

`gelu_with_grad` is GELU and its derivative on plain arrays, the one implementation: the Gelu op
and the fused MLP (mlp.py) both call it.
"""

from __future__ import annotations

import math

from .. import parallel
from ..backend import blocks_for_cache, get_xp
from .erf import erf, normal_cdf_float32
from ..function import Function
from ._util import check_float, in_row_blocks, normalize_axes

APPROXIMATIONS = ("tanh", "none")
_K = math.sqrt(2.0 / math.pi)  # tanh form's scale
_A = 0.044715  # tanh form's cubic coefficient
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def check_approximate(approximate) -> str:
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"gelu: approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    return approximate


_BLOCK = 1 << 16  # elements per row block on the CPU: a block's float32 temporaries stay in cache, and each ufunc call is long enough that two threads rarely wait on the GIL


def gelu_with_grad(x, approximate: str, grad: bool, overwrite: bool = False):
    """(y, d): y = gelu(x) and, when `grad`, d = gelu'(x) (else None); x of shape (..., H).

    tanh form (GPT-2), with K = sqrt(2/pi) and A = 0.044715:
      1. u = K (x + A x^3) = x (K + A K x^2),   t = tanh(u)
      2. y = x (1 + t) / 2
      3. d = (1 + t) / 2 + x (1 - t^2) du/dx / 2,   du/dx = K (1 + 3 A x^2)
    exact form:
      1. Phi = (1 + erf(x / sqrt(2))) / 2   (float32 on the CPU: from exp(-x^2 / 2) and a polynomial,
         erf.normal_cdf_float32, sharing step 3's exp)
      2. y = x Phi
      3. d = Phi + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    (Gelu's docstring derives d.) The steps run on one block of rows at a time (`_util.in_row_blocks`,
    a speed trick: each block's passes stay in cache) through two per-thread scratch arrays. `overwrite=True` lets the result reuse x's buffer (x is
    destroyed): d when `grad`, else y.
    """
    xp = get_xp(x)
    H = x.shape[-1] if x.ndim else 1
    x2 = x.reshape(-1, H)  # (N, H), a view when x is contiguous
    y = x2 if overwrite and not grad else xp.empty_like(x2)
    d = (x2 if overwrite else xp.empty_like(x2)) if grad else None

    def rows(i0, i1):  # one block of rows: x, y and d may share a buffer (x is read before either is written)
        xb, yb, db = x2[i0:i1], y[i0:i1], None if d is None else d[i0:i1]
        s = parallel.scratch(xp, "gelu_s", xb.shape, xb.dtype)
        g = parallel.scratch(xp, "gelu_g", xb.shape, xb.dtype) if db is not None else None
        if approximate == "tanh":
            xp.multiply(xb, xb, out=s)  # x^2
            if g is not None:
                xp.multiply(s, 1.5 * _A * _K, out=g)
                g += 0.5 * _K
                g *= xb  # 3. x du/dx / 2 = x K (1 + 3 A x^2) / 2
            s *= _A * _K
            s += _K
            s *= xb  # 1. u = x (K + A K x^2)
            xp.tanh(s, out=s)  # 1. t = tanh(u)
            if g is None:
                s += 1.0
                s *= xb
                xp.multiply(s, 0.5, out=yb)  # 2. y = x (1 + t) / 2
                return
            xp.multiply(s, 0.5, out=yb)
            yb += 0.5  # (1 + t) / 2, for now
            s *= s
            xp.subtract(1.0, s, out=s)  # 1 - t^2
            g *= s
            g += yb  # 3. d = (1 + t) / 2 + x (1 - t^2) du/dx / 2
            yb *= xb  # 2. y = x (1 + t) / 2
        elif _phi_from_exp(xp, xb):
            e = g if g is not None else parallel.scratch(xp, "gelu_g", xb.shape, xb.dtype)
            xp.multiply(xb, xb, out=e)
            e *= -0.5
            xp.exp(e, out=e)  # exp(-x^2 / 2): phi's, and Phi's tail too
            normal_cdf_float32(xb, e, s, parallel.scratch(xp, "gelu_t", xb.shape, xb.dtype),
                               parallel.scratch(xp, "gelu_sign", xb.shape, xp.int32))  # 1. Phi
            if g is not None:
                g *= xb
                g *= _INV_SQRT_2PI
                g += s  # 3. d = Phi + x phi(x)
            xp.multiply(xb, s, out=yb)  # 2. y = x Phi
        else:
            xp.multiply(xb, _INV_SQRT2, out=s)
            erf(s, out=s)
            s += 1.0
            s *= 0.5  # 1. Phi = (1 + erf(x / sqrt(2))) / 2
            if g is not None:
                xp.multiply(xb, xb, out=g)
                g *= -0.5
                xp.exp(g, out=g)
                g *= _INV_SQRT_2PI
                g *= xb
                g += s  # 3. d = Phi + x phi(x)
            xp.multiply(xb, s, out=yb)  # 2. y = x Phi
        if db is not None:
            xp.copyto(db, g)

    in_row_blocks(xp, rows, x2.shape[0], H, _BLOCK)  # every element alone: the bits do not depend on blocks or threads
    return y.reshape(x.shape), (d.reshape(x.shape) if grad else None)


def _phi_from_exp(xp, x) -> bool:
    """Whether the exact form takes Phi from exp(-x^2 / 2) (erf.normal_cdf_float32: float32 on the
    CPU, a speed trick); float64 takes erf from erf.erf_float64 (within two ulps: the parity tests), CuPy from its own erf kernel."""
    return blocks_for_cache(xp) and x.dtype == xp.float32


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
