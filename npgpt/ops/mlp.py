"""The transformer's feed-forward block, fused: linear -> GELU -> linear as one Function."""

from __future__ import annotations

from ..function import Function
from ..backend import get_xp
from ._util import check_float, sum_rows
from .activation import check_approximate, gelu_with_grad


class MLP(Function):
    """y = gelu(x @ w_fc + b_fc) @ w_proj + b_proj,  weights stored (in, out) as GPT-2's c_fc/c_proj.

    Shapes:   x (..., C), w_fc (C, H), b_fc (H,), w_proj (H, Cout), b_proj (Cout,)  ->  y (..., Cout)
              (GPT-2: H = 4C, Cout = C); either bias may be absent.
    Saved:    x, a = gelu(h) and d = gelu'(h) (both (N, H): step 2 computes gelu' while the
              GELU's tanh(u) or Phi(h) is at hand, and d takes over h's buffer), w_fc, w_proj.
              Under no_grad (not recording) only a is computed, in h's buffer, and nothing is saved.
    Forward:  1. h = x @ w_fc + b_fc        # (..., H)
              2. a = gelu(h),  d = gelu'(h) # (..., H)  (see activation.Gelu for gelu')
              3. y = a @ w_proj + b_proj    # (..., Cout)
    Backward: with rows flattened (N = product of the leading dims):
              3. dw_proj = a^T @ dy,  db_proj = sum_rows(dy),  da = dy @ w_proj^T
              2. dh = da * d
              1. dw_fc = x^T @ dh,  db_fc = sum_rows(dh),  dx = dh @ w_fc^T
    """

    def forward(self, x, w_fc, b_fc, w_proj, b_proj, approximate="tanh"):
        check_float("mlp", x, w_fc, w_proj)
        if x.ndim < 1 or w_fc.ndim != 2 or w_proj.ndim != 2 or x.shape[-1] != w_fc.shape[0] or w_fc.shape[1] != w_proj.shape[0]:
            raise ValueError(
                f"mlp: shapes x {tuple(x.shape)}, w_fc {tuple(w_fc.shape)}, w_proj {tuple(w_proj.shape)} "
                "do not chain as (..., C) @ (C, H) @ (H, Cout)"
            )
        for name, b, n in (("b_fc", b_fc, w_fc.shape[1]), ("b_proj", b_proj, w_proj.shape[1])):
            if b is not None:
                check_float("mlp", b)
                if tuple(b.shape) != (n,):
                    raise ValueError(f"mlp: {name} of shape {tuple(b.shape)}, expected ({n},)")
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1]) @ w_fc  # 1. (N, H): one matrix product over all rows
        if b_fc is not None:
            h += b_fc
        a, d = gelu_with_grad(h, approximate, grad=self.recording, overwrite=True)  # 2. (N, H); h is gone
        y = a @ w_proj  # 3. (N, Cout)
        if b_proj is not None:
            y += b_proj
        if self.recording:
            self.x, self.a, self.d, self.w_fc, self.w_proj = x, a, d, w_fc, w_proj
        return y.reshape(*lead, w_proj.shape[1])  # (..., Cout)

    def backward(self, dy):
        xp = get_xp(dy)
        C, H = self.w_fc.shape
        Cout = self.w_proj.shape[1]
        need_x, need_wfc, need_bfc, need_wproj, need_bproj = self.needs_grad
        a = self.a  # (N, H)
        dy2 = dy.reshape(-1, Cout)  # (N, Cout)
        # 3.
        dw_proj = a.T @ dy2 if need_wproj else None  # (H, Cout)
        db_proj = sum_rows(xp, dy2) if need_bproj else None  # (Cout,)
        dx = dw_fc = db_fc = None
        if need_x or need_wfc or need_bfc:
            da = dy2 @ self.w_proj.T  # (N, H)
            # 2.
            dh = da
            dh *= self.d  # (N, H), in place in da
            # 1.
            if need_wfc:
                dw_fc = self.x.reshape(-1, C).T @ dh  # (C, H)
            if need_bfc:
                db_fc = sum_rows(xp, dh)  # (H,)
            if need_x:
                dx = (dh @ self.w_fc.T).reshape(self.x.shape)  # (..., C)
        return dx, dw_fc, db_fc, dw_proj, db_proj


def mlp(x, w_fc, b_fc, w_proj, b_proj, approximate: str = "tanh"):
    """gelu(x @ w_fc + b_fc) @ w_proj + b_proj in one op; b_fc / b_proj may be None (bias=False)."""
    check_approximate(approximate)
    return MLP.apply(x, w_fc, b_fc, w_proj, b_proj, approximate=approximate)


