"""Rotary position embedding (RoPE) in Hugging Face's rotate-half layout, with a hand-written backward,
and the constant tables it needs: the inverse frequencies of each rope type and cos/sin at absolute positions."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from ..backend import get_xp, resolve_dtype
from ..function import Function
from ..tensor import Tensor
from ._util import check_float

ROPE_TYPES = ("default", "linear", "llama3")  # built
REFUSED_ROPE_TYPES = ("dynamic", "yarn", "longrope", "proportional")  # known to transformers, not built


def _rot(xp, x):
    """rot(x) = [-x2, x1] for halves x1 = x[..., :HS/2], x2 = x[..., HS/2:] (a rotation by +90 degrees
    in each plane (x1_i, x2_i))."""
    h = x.shape[-1] // 2
    return xp.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def _rot_t(xp, u):
    """rot^T(u) = [u2, -u1], the transpose (and inverse) of rot."""
    h = u.shape[-1] // 2
    return xp.concatenate([u[..., h:], -u[..., :h]], axis=-1)


class Rope(Function):
    """y = x * cos + rot(x) * sin,   rot(x) = [-x2, x1]   (halves of the head, Hugging Face's layout).

    With cos = [cos(theta), cos(theta)] and sin = [sin(theta), sin(theta)] (theta_i = position *
    inv_freq_i, see rope_cos_sin) each pair (x1_i, x2_i) is rotated by theta_i:
        y1_i = x1_i cos(theta_i) - x2_i sin(theta_i),   y2_i = x2_i cos(theta_i) + x1_i sin(theta_i).

    Shapes:   x (..., T, HS) with HS even (queries (B, NH, T, HS), keys (B, NKV, T, HS));
              cos, sin (T, HS), or any shape that broadcasts to x's without growing it  ->  y like x
    Saved:    cos, sin (constants: they get no gradient).
    Backward: y = R x with R = diag(cos) + diag(sin) rot, linear in x, so dx = R^T dy
              = cos * dy + rot^T(sin * dy),  rot^T(u) = [u2, -u1]; per pair:
              dx1_i = dy1_i cos(theta_i) + dy2_i sin(theta_i),  dx2_i = dy2_i cos(theta_i) - dy1_i sin(theta_i),
              the rotation by -theta_i.
    """

    def forward(self, x, cos, sin):
        xp = get_xp(x)
        y = x * cos  # (..., T, HS)
        y += _rot(xp, x) * sin
        if self.recording:
            self.cos, self.sin = cos, sin
        return y

    def backward(self, dy):
        xp = get_xp(dy)
        dx = dy * self.cos  # (..., T, HS)
        dx += _rot_t(xp, dy * self.sin)
        return dx, None, None


def rope(x, cos, sin):
    """Rotate x's heads by their positions' angles (Llama/Qwen RoPE); cos, sin from rope_cos_sin."""
    arrays = [t.data if isinstance(t, Tensor) else t for t in (x, cos, sin)]
    check_float("rope", *arrays)
    xs = tuple(arrays[0].shape)
    if len(xs) < 2 or xs[-1] % 2 or xs[-1] == 0:
        raise ValueError(f"rope needs x of shape (..., T, HS) with an even head size HS >= 2, got {xs}")
    for name, a in (("cos", arrays[1]), ("sin", arrays[2])):
        try:
            ok = np.broadcast_shapes(tuple(a.shape), xs) == xs
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"rope: {name} of shape {tuple(a.shape)} does not fit x {xs}: expected (T, HS) = {xs[-2:]}")
    return Rope.apply(x, cos, sin)


def _number(name, v, *, positive=True):
    if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or (positive and not v > 0):
        raise ValueError(f"rope_inv_freq: {name} must be a {'positive ' if positive else ''}finite number, got {v!r}")
    return float(v)


def rope_inv_freq(head_size: int, theta: float = 10000.0, rope_type: str = "default", factor=None,
                  low_freq_factor=None, high_freq_factor=None, original_max_position_embeddings=None):
    """The HS/2 inverse frequencies of RoPE, a float64 NumPy array (a constant; cast once by rope_cos_sin).

      default:  inv_i = 1 / theta^(2i / HS),  i = 0 .. HS/2 - 1
      linear:   inv_i / factor  (positions interpolated by factor)
      llama3:   by wavelength w_i = 2 pi / inv_i, with L = original_max_position_embeddings,
                lo = L / low_freq_factor and hi = L / high_freq_factor (lo >= hi):
                  w_i < hi         inv_i unchanged  (high frequencies: short waves)
                  w_i > lo         inv_i / factor   (low frequencies: long waves)
                  otherwise        (1 - s) inv_i / factor + s inv_i,
                                   s = (L / w_i - low_freq_factor) / (high_freq_factor - low_freq_factor)
    dynamic, yarn (and transformers' other types) are refused by name.
    """
    if isinstance(head_size, bool) or not isinstance(head_size, Integral) or head_size < 2 or head_size % 2:
        raise ValueError(f"rope_inv_freq: head_size must be an even integer >= 2, got {head_size!r}")
    theta = _number("theta", theta)
    if rope_type in REFUSED_ROPE_TYPES:
        raise ValueError(f"rope_inv_freq: rope type {rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope_inv_freq: unknown rope type {rope_type!r} (supported: {', '.join(ROPE_TYPES)})")
    two_i = np.arange(0, head_size, 2, dtype=np.float64)  # (HS/2,)
    inv = 1.0 / np.power(theta, two_i / head_size)  # default  (HS/2,)
    if rope_type == "default":
        return inv
    if factor is None:
        raise ValueError(f"rope_inv_freq: rope type {rope_type!r} needs factor")
    factor = _number("factor", factor)
    if rope_type == "linear":
        return inv / factor
    missing = [n for n, v in (("low_freq_factor", low_freq_factor), ("high_freq_factor", high_freq_factor),
                              ("original_max_position_embeddings", original_max_position_embeddings)) if v is None]
    if missing:
        raise ValueError(f"rope_inv_freq: rope type 'llama3' needs {', '.join(missing)}")
    lo_f, hi_f = _number("low_freq_factor", low_freq_factor), _number("high_freq_factor", high_freq_factor)
    L = _number("original_max_position_embeddings", original_max_position_embeddings)
    if not hi_f > lo_f:
        raise ValueError(f"rope_inv_freq: llama3 needs high_freq_factor > low_freq_factor, got {hi_f} and {lo_f}")
    wavelen = 2 * math.pi / inv  # (HS/2,)
    long_wave, short_wave = wavelen > L / lo_f, wavelen < L / hi_f
    s = (L / wavelen - lo_f) / (hi_f - lo_f)  # 0 at w = lo, 1 at w = hi
    medium = (1.0 - s) * inv / factor + s * inv
    return np.where(short_wave, inv, np.where(long_wave, inv / factor, medium))


def rope_cos_sin(positions, inv_freq, dtype=None, like=None):
    """cos, sin tables (T, HS) for rope at absolute positions (T,) (integers >= 0): theta = p * inv_freq,
    laid out [theta, theta] along HS = 2 * len(inv_freq). Computed in float64, then cast to `dtype`
    (default: like's dtype, else float32) on like's device. Absolute positions mean a KV cache only
    needs the new tokens' rows (positions start .. start+T-1): past keys are never rotated again."""
    p = np.asarray(positions.data if isinstance(positions, Tensor) else positions)
    if hasattr(p, "get"):  # a CuPy array of positions
        p = p.get()
    if p.ndim != 1 or p.dtype.kind not in "iu" or (p.size and p.min() < 0):
        raise ValueError(f"rope_cos_sin: positions must be a 1-D array of integers >= 0, got {p.dtype} {p.shape}")
    inv = np.asarray(inv_freq, dtype=np.float64)
    if inv.ndim != 1 or inv.size == 0:
        raise ValueError(f"rope_cos_sin: inv_freq must be a non-empty 1-D array, got shape {inv.shape}")
    data = like.data if isinstance(like, Tensor) else like
    xp = get_xp(data) if data is not None else get_xp()
    dtype = resolve_dtype(data.dtype if dtype is None and data is not None else dtype)
    angle = p.astype(np.float64)[:, None] * inv[None, :]  # (T, HS/2)
    emb = np.concatenate([angle, angle], axis=-1)  # (T, HS)
    return xp.asarray(np.cos(emb).astype(dtype)), xp.asarray(np.sin(emb).astype(dtype))
