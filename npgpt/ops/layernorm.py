"""Layer normalisation over the last axis, with a hand-written backward."""

from __future__ import annotations

from ..backend import get_xp
from ..function import Function
from ._util import check_float


class LayerNorm(Function):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * w + b   over the last axis (biased variance).

    Shapes:   x (..., C), w (C,), b (C,) or absent  ->  y (..., C)
    Saved:    xhat (..., C), rstd (..., 1), w; nothing under no_grad (y then reuses xhat's buffer)
    Backward: forward steps
                1. mu = mean_C(x),  xc = x - mu,  rstd = 1 / sqrt(mean_C(xc^2) + eps)
                2. xhat = xc * rstd
                3. y = xhat * w + b
              walked back:
                3. dw = sum_rows(dy * xhat),  db = sum_rows(dy),  g = dxhat = dy * w
                2-1. xhat depends on x directly, through mu and through rstd:
                     d xhat_j / d x_k = rstd * (delta_jk - 1/C - xhat_j * xhat_k / C),
                     so dx_k = sum_j g_j * that
                         = rstd * (g_k - mean_C(g) - xhat_k * mean_C(g * xhat))
    """

    def forward(self, x, w, b=None, eps=1e-5):
        check_float("layer_norm", x, w)
        if x.ndim < 1 or x.shape[-1] == 0:
            raise ValueError(f"layer_norm needs x of shape (..., C) with C >= 1, got {tuple(x.shape)}")
        C = x.shape[-1]
        if tuple(w.shape) != (C,):
            raise ValueError(f"layer_norm: weight of shape {tuple(w.shape)}, expected ({C},) for x {tuple(x.shape)}")
        if b is not None:
            check_float("layer_norm", b)
            if tuple(b.shape) != (C,):
                raise ValueError(f"layer_norm: bias of shape {tuple(b.shape)}, expected ({C},) for x {tuple(x.shape)}")
        xc = x - x.mean(axis=-1, keepdims=True)  # (..., C)
        var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1)
        rstd = 1.0 / (var + eps) ** 0.5  # (..., 1)
        xhat = xc
        xhat *= rstd  # (..., C), in place in xc
        if self.recording:
            self.xhat, self.rstd, self.w = xhat, rstd, w
            y = xhat * w
        else:  # nothing is saved: y takes over xhat's buffer
            y = xhat
            y *= w
        if b is not None:
            y += b
        return y

    def backward(self, dy):
        C = self.w.shape[0]
        xhat = self.xhat
        dx = dw = db = None
        if self.needs_grad[0]:
            g = dy * self.w  # (..., C)
            gx = g * xhat
            m2 = gx.mean(axis=-1, keepdims=True)  # mean_C(g * xhat) (..., 1)
            g -= g.mean(axis=-1, keepdims=True)
            g -= get_xp(g).multiply(xhat, m2, out=gx)  # gx's buffer reused for xhat * mean_C(g * xhat)
            g *= self.rstd
            dx = g  # rstd * (g - mean_C(g) - xhat * mean_C(g * xhat)), built in g's buffer
        if self.needs_grad[1]:
            dw = (dy * xhat).reshape(-1, C).sum(axis=0)  # (C,)
        if self.needs_grad[2]:
            db = dy.reshape(-1, C).sum(axis=0)  # (C,)
        return dx, dw, db


def layer_norm(x, w, b=None, eps: float = 1e-5):
    """Normalise x over its last axis, then scale by w and shift by b (b=None: no shift)."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"layer_norm: eps must be a number >= 0, got {eps!r}")
    eps = float(eps)
    return LayerNorm.apply(x, w, b, eps=eps)
