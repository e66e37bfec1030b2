"""Root-mean-square normalisation over the last axis (Llama's RMSNorm), with a hand-written backward."""

from __future__ import annotations

from ..backend import get_xp
from ..function import Function
from ._util import check_float


class RMSNorm(Function):
    """y = w * x / sqrt(mean(x^2) + eps)   over the last axis; the weight is applied after
    normalising (Hugging Face's LlamaRMSNorm, Qwen2/Qwen3 and their QK-norm alike). No mean is
    subtracted and there is no bias.

    Shapes:   x (..., C), w (C,)  ->  y (..., C). For Qwen3's QK-norm, x is (B, NH, T, HS) and w (HS,):
              one weight shared by every head.
    Saved:    x (the input, which the graph holds anyway), rstd (N, 1) with N the rows, w.
              Nothing under no_grad.
    Backward: forward steps
                1. rstd = 1 / sqrt(mean_C(x^2) + eps)    # (N, 1)
                2. xhat = x * rstd                       # (N, C)
                3. y = xhat * w
              walked back:
                3. dw = sum_rows(dy * xhat),  g = dxhat = dy * w
                2-1. xhat_j = x_j * rstd depends on x_k directly and through rstd, with
                     d rstd / d x_k = -rstd^3 * x_k / C, so
                     d xhat_j / d x_k = rstd * (delta_jk - xhat_j * xhat_k / C) and
                     dx_k = sum_j g_j * that = rstd * (g_k - xhat_k * mean_C(g * xhat))
    """

    def forward(self, x, w, eps=1e-6):
        check_float("rms_norm", x, w)
        if x.ndim < 1 or x.shape[-1] == 0:
            raise ValueError(f"rms_norm needs x of shape (..., C) with C >= 1, got {tuple(x.shape)}")
        C = x.shape[-1]
        if tuple(w.shape) != (C,):
            raise ValueError(f"rms_norm: weight of shape {tuple(w.shape)}, expected ({C},) for x {tuple(x.shape)}")
        xp = get_xp(x)
        x2 = x.reshape(-1, C)  # (N, C)
        ms = _row_dot(xp, x2, x2)[:, None]  # 1. sum_C(x^2)  (N, 1)
        ms /= C
        ms += eps
        xp.sqrt(ms, out=ms)
        rstd = xp.divide(1.0, ms, out=ms)  # 1. rstd  (N, 1), in ms's buffer
        y = x2 * rstd  # 2. xhat  (N, C)
        y *= w  # 3. y, in place
        if self.recording:
            self.x, self.rstd, self.w = x2, rstd, w
        return y.reshape(x.shape)

    def backward(self, dy):
        xp = get_xp(dy)
        x2, rstd, w = self.x, self.rstd, self.w  # (N, C), (N, 1), (C,)
        C = w.shape[0]
        dy2 = dy.reshape(-1, C)  # (N, C)
        need_x, need_w = self.needs_grad
        xhat = x2 * rstd  # 2. xhat again, the forward's bits  (N, C)
        dw = _col_dot(xp, dy2, xhat) if need_w else None  # 3. (C,)
        dx = None
        if need_x:
            g = dy2 * w  # 3. g = dy * w  (N, C)
            m = _row_dot(xp, g, xhat)[:, None]  # C mean_C(g * xhat)  (N, 1)
            m /= C
            xhat *= m
            g -= xhat
            g *= rstd  # 2-1. dx = rstd * (g - xhat * mean_C(g * xhat))
            dx = g.reshape(dy.shape)
        return dx, dw


def _row_dot(xp, a, b):
    """sum_C(a * b) for each row, in one pass without an (N, C) temporary (einsum)."""
    return xp.einsum("ij,ij->i", a, b)


def _col_dot(xp, a, b):
    """sum_rows(a * b) for each column, in one pass without an (N, C) temporary (einsum)."""
    return xp.einsum("ij,ij->j", a, b)


def rms_norm(x, w, eps: float = 1e-6):
    """Normalise x by its root mean square over the last axis, then scale by w (Llama's RMSNorm)."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"rms_norm: eps must be a number >= 0, got {eps!r}")
    return RMSNorm.apply(x, w, eps=float(eps))
