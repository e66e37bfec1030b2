"""Matrix products: matmul (batched, broadcasting) and linear (x @ W + b, W stored (in, out)).

For y = a @ b over the last two axes, dy has y's shape and
    da = dy @ b^T,     db = a^T @ dy,
each summed over the batch axes its input was broadcast along.
"""

from __future__ import annotations

from ..backend import get_xp
from ..function import Function
from ._util import check_float, sum_rows, unbroadcast


def _swap(a):
    return a.swapaxes(-1, -2)


class MatMul(Function):
    """y = a @ b.

    Shapes:   a (..., N, K), b (..., K, M)  ->  y (..., N, M)   (1-D a or b as in NumPy)
    Saved:    a, b
    Backward: da = dy @ b^T,  db = a^T @ dy   (vectors are lifted to matrices first)
    """

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul needs arrays of at least one dimension, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not align")
        self.a, self.b = a, b
        return a @ b

    def backward(self, dy):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a  # (1, K)
        b2 = b[:, None] if b.ndim == 1 else b  # (K, 1)
        dy2 = dy
        if b.ndim == 1:  # first, so a 0-d dy (vector @ vector) gets its axes back too
            dy2 = dy2[..., None]  # (..., N, 1)
        if a.ndim == 1:
            dy2 = dy2[..., None, :]  # (..., 1, M)
        da = db = None
        if self.needs_grad[0]:
            da = unbroadcast(dy2 @ _swap(b2), a2.shape).reshape(a.shape)
        if self.needs_grad[1]:
            db = unbroadcast(_swap(a2) @ dy2, b2.shape).reshape(b.shape)
        return da, db


class Linear(Function):
    """y = x @ w + b with w stored (in, out), as GPT-2's Conv1D checkpoints store it.

    Shapes:   x (..., Cin), w (Cin, Cout), b (Cout,) or absent  ->  y (..., Cout)
    Saved:    x, w
    Backward: with x and dy flattened to rows, X (N, Cin) and dY (N, Cout):
              dx = dy @ w^T,  dw = X^T @ dY,  db = sum over rows of dY
    """

    def forward(self, x, w, b=None):
        check_float("linear", x, w)
        if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[0]:
            raise ValueError(f"linear: x {tuple(x.shape)} @ w {tuple(w.shape)} needs w of shape (in={x.shape[-1] if x.ndim else '?'}, out)")
        if b is not None and tuple(b.shape) != (w.shape[1],):
            raise ValueError(f"linear: bias of shape {tuple(b.shape)}, expected ({w.shape[1]},) for w {tuple(w.shape)}")
        self.x, self.w = x, w
        y = x.reshape(-1, w.shape[0]) @ w  # (N, Cout): one matrix product over all rows
        if b is not None:
            y += b
        return y.reshape(*x.shape[:-1], w.shape[1])  # (..., Cout)

    def backward(self, dy):
        xp = get_xp(dy)
        cin, cout = self.w.shape
        dx = (dy.reshape(-1, cout) @ self.w.T).reshape(self.x.shape) if self.needs_grad[0] else None  # (..., Cin)
        dw = self.x.reshape(-1, cin).T @ dy.reshape(-1, cout) if self.needs_grad[1] else None  # (Cin, Cout)
        db = sum_rows(xp, dy.reshape(-1, cout)) if self.needs_grad[2] else None  # (Cout,)
        return dx, dw, db


def matmul(a, b):
    return MatMul.apply(a, b)


def linear(x, w, b=None):
    """x @ w (+ b), with w of shape (in, out)."""
    return Linear.apply(x, w, b)
