"""Fused softmax cross-entropy: log-softmax and the negative log-likelihood as one Function."""

from __future__ import annotations

from ..backend import get_xp
from ..function import Function
from ..tensor import Tensor
from ._util import check_float


class CrossEntropy(Function):
    """loss = -(1 / N) * sum over valid rows n of log softmax(logits_n)[t_n]

    A row is valid when its target is not ignore_index; N is the number of valid rows. With
    reduction="sum" the loss is the sum itself (N := 1 below): a batch with no valid row gives 0, and
    a caller divides by a count of its own (a training step's counted tokens over all micro-batches).
    Forward, on the rows X (R, V) and targets t (R,):
      1. Z = X - max(X, -1)                 (shifting a row leaves its softmax unchanged)
      2. lse = log(sum(exp(Z), -1))          (R,)
      3. logp_n = Z[n, t_n] - lse_n          (R,)
      4. loss = -sum(logp_n over valid n) / N
    With every row ignored, N = 0 and the mean is NaN (0 / 0), as in PyTorch (the sum is 0); the gradient is 0.

    Shapes:   logits (..., V) float, targets (...) integer  ->  loss ()
    Saved:    P = softmax(X) (R, V), the targets with ignored rows set to 0, the valid mask, N
              (none of it, and no P, under no_grad)
    Backward: with dloss the upstream scalar, walking back:
      4. dlogp_n = -dloss / N on valid rows, 0 on ignored rows
      3. d(logp_n)/dZ_nj = [j = t_n] - d(lse_n)/dZ_nj
      2. d(lse_n)/dZ_nj = exp(Z_nj) / sum_l exp(Z_nl) = P_nj
      1. dX = dZ (the shift cancels because each row of (P - onehot) sums to 0)
      so dlogits_n = (P_n - onehot(t_n)) * dloss / N on valid rows, 0 on ignored rows.
    """

    def forward(self, logits, targets, ignore_index: int = -100, reduction: str = "mean"):
        xp = get_xp(logits)
        self.reduction = reduction
        V = logits.shape[-1]
        self.shape = logits.shape
        X = logits.reshape(-1, V)  # (R, V)
        t = targets.reshape(-1)  # (R,)
        valid = t != ignore_index  # (R,)
        t = xp.where(valid, t, 0)  # any in-range index on ignored rows; masked out below
        rows = xp.arange(t.shape[0])

        Z = X - X.max(axis=-1, keepdims=True)  # 1. (R, V)
        E = xp.exp(Z)
        sumexp = E.sum(axis=-1)  # (R,)
        logp = Z[rows, t] - xp.log(sumexp)  # 2., 3. (R,)
        n_valid = valid.sum().astype(logits.dtype)  # () on the logits' device: no host round trip
        total = -(logp * valid).sum()
        if reduction == "sum":
            loss = total  # 4. with N := 1; 0 when no row counts
        else:
            loss = xp.where(n_valid > 0, total / xp.maximum(n_valid, 1), xp.nan)  # 4. NaN when no row counts (0 / 0)

        if self.recording:  # under no_grad P is never needed
            E /= sumexp[:, None]  # P (R, V), in place
            self.P, self.t, self.valid, self.n_valid = E, t, valid, n_valid
        return xp.asarray(loss, dtype=logits.dtype)

    def backward(self, dloss):
        xp = get_xp(dloss)
        P, t, valid = self.P, self.t, self.valid
        dX = P.copy()  # (R, V)
        dX[xp.arange(t.shape[0]), t] -= 1.0
        scale = dloss if self.reduction == "sum" else dloss / xp.maximum(self.n_valid, 1)
        dX *= (valid * scale)[:, None].astype(dX.dtype, copy=False)  # 4.
        return dX.reshape(self.shape), None


def cross_entropy(logits, targets, ignore_index: int = -100, check_targets: bool = True, reduction: str = "mean"):
    """Mean cross-entropy of integer targets (...) under softmax(logits) (..., V), like PyTorch's
    F.cross_entropy on the flattened rows. Rows whose target is `ignore_index` are left out of the
    mean; when every row is left out the loss is NaN (0 / 0), as in PyTorch. reduction="sum" gives
    the sum over the valid rows instead (0 when none is valid), as PyTorch's reduction="sum".

    `check_targets=False` skips the range check (a host round trip on the GPU) for a caller that has
    checked them already, as GPT.forward does once per forward for ids and targets together."""
    xp_l = logits.data if isinstance(logits, Tensor) else logits
    xp_t = targets.data if isinstance(targets, Tensor) else targets
    if not hasattr(xp_t, "dtype"):
        xp_t = get_xp(xp_l).asarray(xp_t)
    check_float("cross_entropy", xp_l)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}")
    if xp_l.ndim < 1 or xp_l.shape[-1] < 1:
        raise ValueError(f"cross_entropy needs logits of shape (..., V) with V >= 1, got {tuple(xp_l.shape)}")
    if xp_t.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy needs integer targets, got dtype {xp_t.dtype} (shape {tuple(xp_t.shape)})")
    if tuple(xp_t.shape) != tuple(xp_l.shape[:-1]):
        raise ValueError(
            f"cross_entropy: targets of shape {tuple(xp_t.shape)} do not match logits {tuple(xp_l.shape)}: "
            f"expected targets of shape {tuple(xp_l.shape[:-1])}"
        )
    V = xp_l.shape[-1]
    bad = (xp_t != ignore_index) & ((xp_t < 0) | (xp_t >= V)) if check_targets else None
    if bad is not None and bool(bad.any()):
        first = int(xp_t[bad].reshape(-1)[0])
        raise IndexError(f"cross_entropy: target {first} is out of range for V = {V} classes (ignore_index = {ignore_index})")
    if not isinstance(targets, Tensor):
        targets = xp_t
    return CrossEntropy.apply(logits, targets, ignore_index=int(ignore_index), reduction=reduction)
