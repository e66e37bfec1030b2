"""The Llama family's feed-forward block, fused: down(silu(gate(x)) * up(x)) as one Function."""

from __future__ import annotations

from ..backend import get_xp
from ..function import Function
from ..tensor import Tensor
from ._util import check_float


class SwiGLUMLP(Function):
    """y = (silu(x @ w_gate + b_gate) * (x @ w_up + b_up)) @ w_down + b_down,  silu(g) = g * sigmoid(g);
    weights stored (in, out), so the forward is x @ W (Hugging Face's gate_proj/up_proj/down_proj
    hold W^T). Every bias may be absent (Llama: none; mlp_bias=True: all three).

    Shapes:   x (..., C), w_gate (C, H), w_up (C, H), w_down (H, Cout), b_gate (H,), b_up (H,),
              b_down (Cout,)  ->  y (..., Cout)
    Saved:    x, g and u (both (N, H), N the rows), the three weights. Backward recomputes
              sigmoid(g) and silu(g) from g (one exp over (N, H), cheap next to the five matrix
              products) instead of keeping a third (N, H) array. Nothing under no_grad.
    Forward:  1. g = x @ w_gate + b_gate,  u = x @ w_up + b_up    # (N, H) each
              2. sg = sigmoid(g),  a = g * sg                     # silu(g)  (N, H)
              3. m = a * u                                        # (N, H)
              4. y = m @ w_down + b_down                          # (N, Cout)
    Backward: 4. dw_down = m^T @ dy,  db_down = sum_rows(dy),  dm = dy @ w_down^T
              3. da = dm * u,  du = dm * a
              2. silu'(g) = sg + g * sg * (1 - sg) = sg * (1 + g * (1 - sg)),  dg = da * silu'(g)
              1. dw_gate = x^T @ dg,  db_gate = sum_rows(dg),  dw_up = x^T @ du,  db_up = sum_rows(du),
                 dx = dg @ w_gate^T + du @ w_up^T
    """

    def forward(self, x, w_gate, w_up, w_down, b_gate=None, b_up=None, b_down=None):
        xp = get_xp(x)
        C = x.shape[-1]
        x2 = x.reshape(-1, C)  # (N, C)
        g = x2 @ w_gate  # 1. (N, H)
        if b_gate is not None:
            g += b_gate
        u = x2 @ w_up  # 1. (N, H)
        if b_up is not None:
            u += b_up
        if self.recording:
            self.x, self.g, self.u, self.w_gate, self.w_up, self.w_down = x2, g, u, w_gate, w_up, w_down
            m = _silu(xp, g, overwrite=False)  # 2. a, a new array: g is saved
        else:
            m = _silu(xp, g, overwrite=True)  # 2. a, in g's buffer
        m *= u  # 3. m = a * u
        y = m @ w_down  # 4. (N, Cout)
        if b_down is not None:
            y += b_down
        return y.reshape(*x.shape[:-1], w_down.shape[1])  # (..., Cout)

    def backward(self, dy):
        xp = get_xp(dy)
        x2, g, u, w_gate, w_up, w_down = self.x, self.g, self.u, self.w_gate, self.w_up, self.w_down
        need_x, need_wg, need_wu, need_wd, need_bg, need_bu, need_bd = self.needs_grad
        dy2 = dy.reshape(-1, w_down.shape[1])  # (N, Cout)
        sg = _sigmoid(xp, g)  # 2. again  (N, H)
        a = g * sg  # 2. silu(g), the forward's bits
        # 4.
        dw_down = (a * u).T @ dy2 if need_wd else None  # (H, Cout)
        db_down = dy2.sum(axis=0) if need_bd else None  # (Cout,)
        dx = dw_gate = dw_up = db_gate = db_up = None
        if need_x or need_wg or need_wu or need_bg or need_bu:
            dm = dy2 @ w_down.T  # 4. (N, H)
            du = dm * a  # 3. (N, H)
            dg = dm
            dg *= u  # 3. da, in dm's buffer
            sg1 = xp.subtract(1.0, sg, out=a)  # 2. 1 - sg, in a's buffer (a is used up)
            sg1 *= g
            sg1 += 1.0
            sg1 *= sg  # 2. silu'(g) = sg * (1 + g * (1 - sg))
            dg *= sg1  # 2. dg
            # 1.
            if need_wg:
                dw_gate = x2.T @ dg  # (C, H)
            if need_bg:
                db_gate = dg.sum(axis=0)  # (H,)
            if need_wu:
                dw_up = x2.T @ du  # (C, H)
            if need_bu:
                db_up = du.sum(axis=0)  # (H,)
            if need_x:
                dx = dg @ w_gate.T
                dx += du @ w_up.T
                dx = dx.reshape(dy.shape[:-1] + (x2.shape[1],))  # (..., C)
        return dx, dw_gate, dw_up, dw_down, db_gate, db_up, db_down


def _sigmoid(xp, g):
    """sigmoid(g) = 1 / (1 + e^-g), written with e = e^-|g| <= 1 so no exp overflows for large |g|:
    1 / (1 + e) for g >= 0 and e / (1 + e) for g < 0."""
    e = xp.abs(g)
    xp.negative(e, out=e)
    xp.exp(e, out=e)  # e^-|g|  (N, H)
    d = e + 1.0
    return xp.divide(xp.where(g >= 0, 1.0, e), d, out=d)


def _silu(xp, g, overwrite: bool):
    """silu(g) = g * sigmoid(g), in g's buffer when overwrite."""
    s = _sigmoid(xp, g)
    if overwrite:
        g *= s
        return g
    s *= g
    return s


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
