"""LoRA linear: a frozen linear layer plus a trainable low-rank update, as PEFT computes it.

PEFT's LoRA layer computes y = base(x) + s * lora_B(lora_A(dropout(x))): lora_A is an nn.Linear
from in to r (weight A stored (r, in)), lora_B one from r to out (weight B stored (out, r)), and
s = alpha / r (alpha / sqrt(r) with rsLoRA). The base weight here is npgpt's (in, out) layout.
"""

from __future__ import annotations

from numbers import Real

from ..function import Function
from ._util import check_float


class LoraLinear(Function):
    """y = x @ W + b + s * (xd @ A^T) @ B^T,   xd = dropout(x) (xd is x itself without dropout).

    Shapes:   x (..., Cin), W (Cin, Cout), b (Cout,) or absent, A (r, Cin), B (Cout, r),
              xd (..., Cin) or absent (then xd = x)  ->  y (..., Cout)
    Saved:    x, xd (when given), W, A, B, h = xd @ A^T (N, r)
    Forward:  with x, xd flattened to rows X, Xd (N, Cin):
              1. y0 = X @ W (+ b)                   (N, Cout)  the frozen base
              2. h  = Xd @ A^T                      (N, r)     down to rank r
              3. y  = y0 + s * h @ B^T              (N, Cout)  up, scaled
    Backward: with dY (N, Cout) and g = s * dY @ B (N, r), the gradient reaching h:
              3. dB  = s * dY^T @ h                 (Cout, r)
              2. dA  = g^T @ Xd                     (r, Cin)
                 dXd = g @ A                        (N, Cin)
              1. dX  = dY @ W^T  (+ dXd when xd is x itself: x reaches y along both paths)
                 dW  = X^T @ dY,  db = sum over rows of dY   (only asked for when the base trains)
    """

    def forward(self, x, w, b, a, bm, xd=None, scale=1.0):
        check_float("lora_linear", x, w, a, bm)
        cin, cout = w.shape if w.ndim == 2 else (None, None)
        if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != cin:
            raise ValueError(f"lora_linear: x {tuple(x.shape)} @ w {tuple(w.shape)} needs w of shape (in, out)")
        if b is not None and tuple(b.shape) != (cout,):
            raise ValueError(f"lora_linear: bias of shape {tuple(b.shape)}, expected ({cout},)")
        if a.ndim != 2 or a.shape[1] != cin or tuple(bm.shape) != (cout, a.shape[0]):
            raise ValueError(f"lora_linear: lora_A {tuple(a.shape)} and lora_B {tuple(bm.shape)} must be (r, {cin}) "
                             f"and ({cout}, r) for w {tuple(w.shape)}")
        if xd is not None and xd.shape != x.shape:
            raise ValueError(f"lora_linear: dropped-out input {tuple(xd.shape)} differs from x {tuple(x.shape)}")
        if isinstance(scale, bool) or not isinstance(scale, Real):
            raise ValueError(f"lora_linear: scale must be a number, got {scale!r}")
        X = x.reshape(-1, cin)  # (N, Cin)
        Xd = X if xd is None else xd.reshape(-1, cin)  # (N, Cin)
        y = X @ w  # 1. (N, Cout)
        if b is not None:
            y += b
        h = Xd @ a.T  # 2. (N, r)
        y += (h @ bm.T) * x.dtype.type(scale)  # 3. (N, Cout)
        if self.recording:
            self.X, self.Xd, self.w, self.a, self.bm, self.h = X, (None if xd is None else Xd), w, a, bm, h
            self.scale, self.shape = x.dtype.type(scale), x.shape
        return y.reshape(*x.shape[:-1], cout)  # (..., Cout)

    def backward(self, dy):
        cin, cout = self.w.shape
        dY = dy.reshape(-1, cout)  # (N, Cout)
        Xd = self.X if self.Xd is None else self.Xd
        g = (dY @ self.bm) * self.scale  # (N, r): the gradient reaching h
        dbm = (dY.T @ self.h) * self.scale if self.needs_grad[4] else None  # 3. (Cout, r)
        da = g.T @ Xd if self.needs_grad[3] else None  # 2. (r, Cin)
        want_x, want_xd = self.needs_grad[0], self.Xd is not None and self.needs_grad[5]
        dXd = g @ self.a if (want_xd or (want_x and self.Xd is None)) else None  # (N, Cin)
        dx = None
        if want_x:
            dx = dY @ self.w.T  # 1. (N, Cin)
            if self.Xd is None:
                dx += dXd
            dx = dx.reshape(self.shape)
        dxd = dXd.reshape(self.shape) if want_xd else None
        dw = self.X.T @ dY if self.needs_grad[1] else None  # (Cin, Cout)
        db = dY.sum(axis=0) if self.needs_grad[2] else None  # (Cout,)
        return dx, dw, db, da, dbm, dxd


def lora_linear(x, w, b, lora_a, lora_b, scale: float, x_drop=None):
    """x @ w (+ b) + scale * (x_drop @ lora_a^T) @ lora_b^T, with w (in, out), lora_a (r, in),
    lora_b (out, r); x_drop is dropout(x), or None for x itself (no dropout)."""
    return LoraLinear.apply(x, w, b, lora_a, lora_b, x_drop, scale=scale)
