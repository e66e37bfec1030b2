"""Layer normalisation over the last axis, with a hand-written backward."""

from __future__ import annotations

from .. import parallel
from ..backend import get_xp
from ..function import Function
from ._util import check_float, in_row_blocks


class LayerNorm(Function):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * w + b   over the last axis (biased variance).

    Shapes:   x (..., C), w (C,), b (C,) or absent  ->  y (..., C)
    Saved:    x (the input, which the graph holds anyway), mu (N, 1), rstd (N, 1), w, with N the
              rows; backward recomputes xhat = (x - mu) * rstd block by block (the same bits), so
              no (N, C) array is saved of its own. Nothing under no_grad. Forward and backward walk
              blocks of rows that stay in cache, each thread one contiguous run of them
              (parallel.run_chains); dw and db add the blocks' partial sums in block order.
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
        xp = get_xp(x)
        x2 = x.reshape(-1, C)  # (N, C)
        y = xp.empty_like(x2)
        rec = self.recording
        mu = xp.empty((x2.shape[0], 1), dtype=x.dtype)  # (N, 1)
        rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)  # (N, 1)

        def rows(i0, i1):
            xc = y[i0:i1] if not rec else parallel.scratch(xp, "ln_xhat", (i1 - i0, C), x.dtype)
            x2[i0:i1].mean(axis=-1, keepdims=True, out=mu[i0:i1])  # 1. mu
            xp.subtract(x2[i0:i1], mu[i0:i1], out=xc)  # 1. xc = x - mu
            r = _row_dot(xp, xc, xc)  # 1. sum_C(xc^2)  (n,)
            r /= C
            r += eps
            xp.sqrt(r, out=r)
            xp.divide(1.0, r, out=rstd[i0:i1, 0])  # 1. rstd
            xc *= rstd[i0:i1]  # 2. xhat, in place
            xp.multiply(xc, w, out=y[i0:i1])  # 3.
            if b is not None:
                y[i0:i1] += b

        in_row_blocks(xp, rows, x2.shape[0], C, _BLOCK)
        if rec:
            self.x, self.mu, self.rstd, self.w = x2, mu, rstd, w
        return y.reshape(x.shape)

    def backward(self, dy):
        xp = get_xp(dy)
        C = self.w.shape[0]
        x2, mu, rstd, w = self.x, self.mu, self.rstd, self.w  # (N, C), (N, 1), (N, 1), (C,)
        dy2 = dy.reshape(-1, C)  # (N, C)
        need_x, need_w, need_b = self.needs_grad
        dx = xp.empty_like(dy2) if need_x else None

        def rows(i0, i1):
            dyb = dy2[i0:i1]
            xh = xp.subtract(x2[i0:i1], mu[i0:i1], out=parallel.scratch(xp, "ln_xhat", dyb.shape, dyb.dtype))
            xh *= rstd[i0:i1]  # 2. xhat again, the forward's bits
            if need_x:
                g = xp.multiply(dyb, w, out=dx[i0:i1])  # 3. g = dy * w, built in dx's rows
                m1 = g.sum(axis=-1, keepdims=True)  # C mean_C(g)  (n, 1)
                m2 = _row_dot(xp, g, xh)[:, None]  # C mean_C(g * xhat)  (n, 1)
                m1 /= C
                m2 /= C
                g -= m1
                g -= xh * m2
                g *= rstd[i0:i1]  # 2-1. dx = rstd * (g - mean_C(g) - xhat * mean_C(g * xhat))
            return ((dyb * xh).sum(axis=0) if need_w else None,  # 3. this block's part of dw
                    dyb.sum(axis=0) if need_b else None)  # 3. and of db

        parts = in_row_blocks(xp, rows, dy2.shape[0], C, _BLOCK)
        dw = parallel.sum_in_order(p[0] for p in parts) if need_w else None  # (C,)
        db = parallel.sum_in_order(p[1] for p in parts) if need_b else None  # (C,)
        return (dx.reshape(dy.shape) if need_x else None), dw, db


_BLOCK = 1 << 17  # elements per row block on the CPU: a block's rows of x, xhat and y stay in a core's cache, its ufunc calls long enough that two threads rarely wait on the GIL


def _row_dot(xp, a, b):
    """sum_C(a * b) for each row, in one pass without an (n, C) temporary (einsum)."""
    return xp.einsum("ij,ij->i", a, b)


def layer_norm(x, w, b=None, eps: float = 1e-5):
    """Normalise x over its last axis, then scale by w and shift by b (b=None: no shift)."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"layer_norm: eps must be a number >= 0, got {eps!r}")
    eps = float(eps)
    return LayerNorm.apply(x, w, b, eps=eps)
