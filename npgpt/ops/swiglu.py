"""The Llama family's feed-forward block, fused: down(silu(gate(x)) * up(x)) as one Function."""

from __future__ import annotations

import numpy as np

from .. import parallel
from ..backend import get_xp, matmul_into
from ..function import Function
from ..tensor import Tensor
from ._util import check_float, in_row_blocks, sum_rows


class SwiGLUMLP(Function):
    """y = (silu(x @ w_gate + b_gate) * (x @ w_up + b_up)) @ w_down + b_down,  silu(g) = g * sigmoid(g);
    weights stored (in, out), so the forward is x @ W (Hugging Face's gate_proj/up_proj/down_proj
    hold W^T). Every bias may be absent (Llama: none; mlp_bias=True: all three).

    Shapes:   x (..., C), w_gate (C, H), w_up (C, H), w_down (H, Cout), b_gate (H,), b_up (H,),
              b_down (Cout,)  ->  y (..., Cout)
    Saved:    x, g and u (side by side in one (N, 2H) array, N the rows), the three weights.
              Backward recomputes sigmoid(g) and silu(g) from g (one exp over (N, H), cheap next to
              the matrix products) instead of keeping a third (N, H) array. Nothing under no_grad.
    Forward:  1. g = x @ w_gate + b_gate,  u = x @ w_up + b_up    # (N, H) each, side by side in (N, 2H)
              2. sg = sigmoid(g),  a = g * sg                     # silu(g)  (N, H)
              3. m = a * u                                        # (N, H)
              4. y = m @ w_down + b_down                          # (N, Cout)
    Backward: 4. dm = dy @ w_down^T,  dw_down = m^T @ dy,  db_down = sum_rows(dy)
              3. da = dm * u,  du = dm * a
              2. silu'(g) = sg + g * sg * (1 - sg) = sg * (1 + g * (1 - sg)),  dg = da * silu'(g)
              1. dw_gate = x^T @ dg,  dw_up = x^T @ du,  [db_gate | db_up] = sum_rows([dg | du]),
                 dx = dg @ w_gate^T + du @ w_up^T
    Steps 2-3 and their backward walk blocks of rows through per-thread scratch, on the thread
    pool (`_util.in_row_blocks`, as GELU): every element is computed alone, so the bits do not depend on
    the blocks or the threads.
    """

    def forward(self, x, w_gate, w_up, w_down, b_gate=None, b_up=None, b_down=None):
        xp = get_xp(x)
        C, H = w_gate.shape
        x2 = x.reshape(-1, C)  # (N, C)
        gu = xp.empty((x2.shape[0], 2 * H), dtype=xp.result_type(x2, w_gate, w_up))  # [g | u]: one array, so backward's [dg | du] bias sums are one product
        g, u = gu[:, :H], gu[:, H:]
        matmul_into(x2, w_gate, g)  # 1. (N, H)
        matmul_into(x2, w_up, u)  # 1. (N, H)
        if b_gate is not None:
            g += b_gate
        if b_up is not None:
            u += b_up
        m = xp.empty_like(g) if self.recording else g  # (N, H); under no_grad in g's place (g is not kept)

        def rows(i0, i1):  # 2., 3. on one block of rows
            gb = g[i0:i1]
            a = _sigmoid(xp, gb, parallel.scratch(xp, "swiglu_s", gb.shape, gb.dtype))  # sg
            a *= gb  # 2. a = g * sg
            xp.multiply(a, u[i0:i1], out=m[i0:i1])  # 3. m = a * u

        in_row_blocks(xp, rows, g.shape[0], H, _BLOCK)
        y = m @ w_down  # 4. (N, Cout)
        if b_down is not None:
            y += b_down
        if self.recording:
            self.x, self.gu, self.w_gate, self.w_up, self.w_down = x2, gu, w_gate, w_up, w_down
        return y.reshape(*x.shape[:-1], w_down.shape[1])  # (..., Cout)

    def backward(self, dy):
        xp = get_xp(dy)
        x2, gu, w_gate, w_up, w_down = self.x, self.gu, self.w_gate, self.w_up, self.w_down
        need_x, need_wg, need_wu, need_wd, need_bg, need_bu, need_bd = self.needs_grad
        H = w_down.shape[0]
        g, u = gu[:, :H], gu[:, H:]
        dy2 = dy.reshape(-1, w_down.shape[1])  # (N, Cout)
        dm = dy2 @ w_down.T  # 4. (N, H)
        m = xp.empty_like(g) if need_wd else None  # 3. again, for dw_down
        dgu = xp.empty_like(gu)  # (N, 2H): [dg | du]
        dg, du = dgu[:, :H], dgu[:, H:]

        def rows(i0, i1):  # 2., 3. again and their backward, on one block of rows
            gb, ub, dmb = g[i0:i1], u[i0:i1], dm[i0:i1]
            sg = _sigmoid(xp, gb, parallel.scratch(xp, "swiglu_s", gb.shape, gb.dtype))  # 2. sg
            a = xp.multiply(gb, sg, out=parallel.scratch(xp, "swiglu_a", gb.shape, gb.dtype))  # 2. a, the forward's bits
            if m is not None:
                xp.multiply(a, ub, out=m[i0:i1])  # 3. m
            xp.multiply(dmb, a, out=du[i0:i1])  # 3. du = dm * a
            d = xp.subtract(1.0, sg, out=a)  # 1 - sg, in a's scratch (a is used up)
            d *= gb
            d += 1.0
            d *= sg  # 2. silu'(g) = sg * (1 + g * (1 - sg))
            d *= ub  # u silu'(g)
            xp.multiply(dmb, d, out=dg[i0:i1])  # 3., 2. dg = (dm * u) * silu'(g)

        in_row_blocks(xp, rows, g.shape[0], H, _BLOCK)
        dw_down = m.T @ dy2 if need_wd else None  # 4. (H, Cout)
        db_down = sum_rows(xp, dy2) if need_bd else None  # 4. (Cout,)
        dw_gate = dw_up = db_gate = db_up = dx = None
        if need_wg:
            dw_gate = x2.T @ dg  # 1. (C, H)
        if need_wu:
            dw_up = x2.T @ du  # 1. (C, H)
        if need_bg or need_bu:
            db_gu = sum_rows(xp, dgu)  # 1. (2H,)
            db_gate, db_up = db_gu[:H] if need_bg else None, db_gu[H:] if need_bu else None
        if need_x:
            dx = dg @ w_gate.T
            dx += du @ w_up.T
            dx = dx.reshape(dy.shape[:-1] + (x2.shape[1],))  # 1. (..., C)
        return dx, dw_gate, dw_up, dw_down, db_gate, db_up, db_down


_BLOCK = 1 << 16  # elements per row block on the CPU, as GELU's: a block's scratch stays in cache


def _sigmoid(xp, g, out=None):
    """sigmoid(g) = 1 / (1 + e^-g) in four in-place passes (into `out` when given). For g below
    -log(float max) (about -88 in float32), e^-g overflows to inf and the result is 1 / inf = 0,
    the true value rounded (it is below the smallest normal float): the overflow is expected, so
    its warning is silenced. Elsewhere each step rounds once, so the result is within a few ulps,
    relative, on both sides of 0 (no cancellation: 1 + e^-g >= 1)."""
    s = xp.negative(g, out=out)
    with np.errstate(over="ignore"):
        xp.exp(s, out=s)  # e^-g
    s += 1.0
    return xp.reciprocal(s, out=s)


def swiglu_mlp(x, w_gate, w_up, w_down, b_gate=None, b_up=None, b_down=None):
    """down(silu(gate(x)) * up(x)) in one op, weights stored (in, out); each bias may be None."""
    data = {n: (t.data if isinstance(t, Tensor) else t) for n, t in
            (("x", x), ("w_gate", w_gate), ("w_up", w_up), ("w_down", w_down))}
    check_float("swiglu_mlp", *data.values())
    xs, wg, wu, wd = (tuple(a.shape) for a in data.values())
    if len(xs) < 1 or len(wg) != 2 or wg != wu or len(wd) != 2 or xs[-1] != wg[0] or wg[1] != wd[0]:
        raise ValueError(f"swiglu_mlp: shapes x {xs}, w_gate {wg}, w_up {wu}, w_down {wd} "
                         "do not chain as (..., C) @ (C, H), (C, H), then (H, Cout)")
    for name, b, n in (("b_gate", b_gate, wg[1]), ("b_up", b_up, wg[1]), ("b_down", b_down, wd[1])):
        if b is not None:
            bd = b.data if isinstance(b, Tensor) else b
            check_float("swiglu_mlp", bd)
            if tuple(bd.shape) != (n,):
                raise ValueError(f"swiglu_mlp: {name} of shape {tuple(bd.shape)}, expected ({n},)")
    return SwiGLUMLP.apply(x, w_gate, w_up, w_down, b_gate, b_up, b_down)
