"""Fused causal multi-head self-attention: qkv (B, T, 3C) -> y (B, T, C) as one Function.

One forward and one hand-written backward over the whole core (split heads, scores, causal mask,
softmax, dropout, weighted sum, merge heads), so the graph holds one node per layer instead of a
dozen, and backward saves only q, k, v, the probabilities and the dropout mask.
"""

from __future__ import annotations

import math
from numbers import Integral

from ..backend import get_xp, rng
from ..function import Function
from ..tensor import Tensor
from ._util import check_float
from .dropout import dropout_keep

_CAUSAL_BIAS: dict = {}  # (array module, T, dtype) -> (T, T) additive mask: 0 on/below the diagonal, -inf above


def _causal_bias(xp, T: int, dtype):
    key = (xp.__name__, T, str(dtype))
    bias = _CAUSAL_BIAS.get(key)
    if bias is None:
        if len(_CAUSAL_BIAS) > 32:  # many different T (generation grows T by one): keep the cache small
            _CAUSAL_BIAS.clear()
        future = xp.triu(xp.ones((T, T), dtype=bool), k=1)
        bias = xp.where(future, -xp.inf, 0.0).astype(dtype)  # (T, T)
        _CAUSAL_BIAS[key] = bias
    return bias


class Attention(Function):
    """Causal multi-head self-attention on the output of c_attn, laid out as GPT-2 lays it out.

    Forward, with HS = C / NH and s = 1 / sqrt(HS):
      1. q, k, v = qkv[..., :C], qkv[..., C:2C], qkv[..., 2C:], each split into heads  (B, NH, T, HS)
      2. S = s * q @ k^T                                                                (B, NH, T, T)
      3. S[i, j] = -inf for j > i   (position i sees positions 0..i only)
      4. P = softmax(S) over the last axis
      5. A = P * keep / (1 - p)     (dropout; keep ~ Bernoulli(1 - p); A = P when off)
      6. Y = A @ v                                                                       (B, NH, T, HS)
      7. y = Y with heads merged back                                                    (B, T, C)

    Shapes:   qkv (B, T, 3C)  ->  y (B, T, C)
    Saved:    q, k, v (views of qkv), P, and the boolean keep mask when dropout is active
    Backward: walking the steps in reverse, with dy (B, T, C):
      7. dY = dy split into heads                                       (B, NH, T, HS)
      6. dA = dY @ v^T,   dv = A^T @ dY                       (A recomputed as P * keep / (1 - p))
      5. dP = dA * keep / (1 - p)
      4. softmax: P_ij = e^S_ij / sum_l e^S_il gives dS_ij = P_ij (dP_ij - sum_l dP_il P_il),
         i.e. dS = P * (dP - sum(dP * P, -1))
      3. masked entries have P = 0, so dS is already 0 there: nothing flows to the future
      2. dq = s * dS @ k,   dk = s * dS^T @ q
      1. dqkv = [dq, dk, dv] with heads merged, side by side on the last axis   (B, T, 3C)
    """

    def forward(self, qkv, n_head: int = 1, dropout: float = 0.0, training: bool = False, generator=None):
        xp = get_xp(qkv)
        B, T, C3 = qkv.shape
        C = C3 // 3
        NH, HS = n_head, C // n_head
        scale = 1.0 / math.sqrt(HS)

        heads = qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)  # (3, B, NH, T, HS)
        q, k, v = heads[0], heads[1], heads[2]  # 1. (B, NH, T, HS) each
        att = q @ k.swapaxes(-1, -2)  # 2. (B, NH, T, T)
        att *= scale
        att += _causal_bias(xp, T, att.dtype)  # 3.
        att -= att.max(axis=-1, keepdims=True)  # 4. softmax; the diagonal keeps every row finite
        xp.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)
        self.q, self.k, self.v, self.P = q, k, v, att
        self.keep = None
        if training and dropout > 0:  # 5.
            if generator is None:
                generator = rng(None)
            self.keep = dropout_keep(generator, att.shape, dropout, att)  # (B, NH, T, T) booleans
            self.inv_keep_prob = att.dtype.type(1.0 / (1.0 - dropout))
            att = att * self.keep
            att *= self.inv_keep_prob
        Y = att @ v  # 6. (B, NH, T, HS)
        return Y.transpose(0, 2, 1, 3).reshape(B, T, C)  # 7. (B, T, C)

    def backward(self, dy):
        xp = get_xp(dy)
        q, k, v, P, keep = self.q, self.k, self.v, self.P, self.keep
        B, NH, T, HS = q.shape
        scale = 1.0 / math.sqrt(HS)

        dY = dy.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)  # 7. (B, NH, T, HS)
        A = P if keep is None else P * keep * self.inv_keep_prob
        dv = A.swapaxes(-1, -2) @ dY  # 6. (B, NH, T, HS)
        dP = dY @ v.swapaxes(-1, -2)  # 6. (B, NH, T, T)
        if keep is not None:
            dP *= keep  # 5.
            dP *= self.inv_keep_prob
        dP -= (dP * P).sum(axis=-1, keepdims=True)  # 4. dS = P * (dP - sum(dP * P))
        dP *= P
        dP *= scale  # 3. nothing to do; 2. fold s into dS once
        dq = dP @ k  # 2. (B, NH, T, HS)
        dk = dP.swapaxes(-1, -2) @ q  # 2. (B, NH, T, HS)

        dqkv = xp.empty((3, B, NH, T, HS), dtype=dy.dtype)  # 1.
        dqkv[0], dqkv[1], dqkv[2] = dq, dk, dv
        return (dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * NH * HS),)  # (B, T, 3C)


def attention(qkv, n_head: int, dropout: float = 0.0, training: bool = False, generator=None):
    """Causal multi-head self-attention core: qkv (B, T, 3C) from c_attn -> y (B, T, C).

    Dropout on the attention probabilities is active only when `training` and `dropout > 0`; its
    mask is `npgpt.ops.dropout.dropout_keep(generator, (B, NH, T, T), dropout, qkv)`, so a test can
    redraw it from the same seed (a fresh unseeded generator when none is given).
    """
    shape = tuple(qkv.shape)
    if len(shape) != 3 or shape[-1] % 3:
        raise ValueError(f"attention needs qkv of shape (B, T, 3C), got {shape}")
    if isinstance(n_head, bool) or not isinstance(n_head, Integral) or n_head < 1:
        raise ValueError(f"attention needs a positive integer n_head, got {n_head!r}")
    C = shape[-1] // 3
    if C % n_head:
        raise ValueError(f"attention: C = {C} (qkv {shape}) is not divisible by n_head = {n_head}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"attention dropout must be a probability in [0, 1), got {dropout!r}")
    check_float("attention", qkv.data if isinstance(qkv, Tensor) else qkv)
    return Attention.apply(qkv, n_head=int(n_head), dropout=float(dropout), training=bool(training), generator=generator)
