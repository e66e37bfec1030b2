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
from ._util import check_float, row_blocks
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
    Saved:    q, k, v (views of qkv), P, and the boolean keep mask when dropout is active; nothing
              under no_grad. Steps 2-6 (and their backward) run a few sequences at a time, so
              each block's (b, NH, T, T) temporaries stay in cache.
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
        keep = None
        if training and dropout > 0:  # 5. the whole mask in one draw, so a seed gives the same mask
            if generator is None:
                generator = rng(None)
            keep = dropout_keep(generator, (B, NH, T, T), dropout, qkv)  # (B, NH, T, T) booleans
            self.inv_keep_prob = qkv.dtype.type(1.0 / (1.0 - dropout))
        bias = _causal_bias(xp, T, qkv.dtype)
        P = xp.empty((B, NH, T, T), dtype=qkv.dtype) if self.recording else None
        y = xp.empty((B, T, NH, HS), dtype=qkv.dtype)
        for b0, b1 in row_blocks(xp, B, NH * T * T, _BLOCK):  # steps 2-6 on a few sequences at a time, in cache
            att = q[b0:b1] @ k[b0:b1].swapaxes(-1, -2)  # 2. (b, NH, T, T)
            att *= scale
            att += bias  # 3.
            att -= att.max(axis=-1, keepdims=True)  # 4. softmax; the diagonal keeps every row finite
            xp.exp(att, out=att)
            att /= att.sum(axis=-1, keepdims=True)
            if P is not None:
                P[b0:b1] = att
            if keep is not None:  # 5.
                att *= keep[b0:b1]
                att *= self.inv_keep_prob
            _matmul_into(xp, att, v[b0:b1], y[b0:b1].transpose(0, 2, 1, 3))  # 6., 7. Y straight into y's layout
        if self.recording:
            self.q, self.k, self.v, self.P, self.keep = q, k, v, P, keep
        return y.reshape(B, T, C)  # 7. (B, T, C)

    def backward(self, dy):
        xp = get_xp(dy)
        q, k, v, P, keep = self.q, self.k, self.v, self.P, self.keep
        B, NH, T, HS = q.shape
        scale = 1.0 / math.sqrt(HS)

        dY = dy.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)  # 7. (B, NH, T, HS)
        dqkv = xp.empty((B, T, 3, NH, HS), dtype=dy.dtype)  # 1. filled block by block
        for b0, b1 in row_blocks(xp, B, NH * T * T, _BLOCK):
            Pb, dYb = P[b0:b1], dY[b0:b1]  # (b, NH, T, T), (b, NH, T, HS)
            out = dqkv[b0:b1].transpose(2, 0, 3, 1, 4)  # 1. (3, b, NH, T, HS), a view: dq, dk, dv go there
            A = Pb if keep is None else Pb * keep[b0:b1] * self.inv_keep_prob
            _matmul_into(xp, A.swapaxes(-1, -2), dYb, out[2])  # 6. dv (b, NH, T, HS)
            dP = dYb @ v[b0:b1].swapaxes(-1, -2)  # 6. (b, NH, T, T)
            if keep is not None:
                dP *= keep[b0:b1]  # 5.
                dP *= self.inv_keep_prob
            dP -= (dP * Pb).sum(axis=-1, keepdims=True)  # 4. dS = P * (dP - sum(dP * P))
            dP *= Pb
            dP *= scale  # 3. nothing to do; 2. fold s into dS once
            _matmul_into(xp, dP, k[b0:b1], out[0])  # 2. dq (b, NH, T, HS)
            _matmul_into(xp, dP.swapaxes(-1, -2), q[b0:b1], out[1])  # 2. dk (b, NH, T, HS)
        return (dqkv.reshape(B, T, 3 * NH * HS),)  # (B, T, 3C)


_BLOCK = 1 << 18  # score elements per block on the CPU (1 MiB in float32): a block's (b, NH, T, T) arrays stay in cache


def _matmul_into(xp, a, b, out) -> None:
    """out[...] = a @ b, where out is a strided view into the final layout. NumPy writes the product
    straight there (no transposing copy afterwards); CuPy's matmul is given a fresh result to copy,
    since its `out=` is not relied on for non-contiguous views."""
    if xp.__name__ == "numpy":
        xp.matmul(a, b, out=out)
    else:
        out[...] = a @ b


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


def cached_attention(qkv, n_head: int, k_cache, v_cache, start: int):
    """Causal attention for T new positions against a key/value cache: the inference path of generation.

    The new tokens sit at absolute positions start .. start+T-1; positions 0 .. start-1 are already
    in the cache. With HS = C / NH, s = 1 / sqrt(HS) and L = start + T:
      1. q, k, v = qkv split as in Attention, heads split                          (B, NH, T, HS)
      2. k_cache[:, :, start:L] = k,  v_cache[:, :, start:L] = v   (the cache now holds 0 .. L-1)
      3. S = s * q @ K^T  with K = k_cache[:, :, :L]                                  (B, NH, T, L)
      4. S[i, j] = -inf for j > start + i   (new position start+i sees 0 .. start+i)
      5. P = softmax(S) over the last axis;  Y = P @ V with V = v_cache[:, :, :L]     (B, NH, T, HS)
      6. y = Y with heads merged                                                      (B, T, C)
    With start = 0 this is Attention's forward without dropout, and row i of the result for any
    start equals row start+i of Attention run on all L positions: the cache only saves recomputing
    k and v of the earlier positions, so one new token costs one query against L keys.

    Shapes:   qkv (B, T, 3C) raw array; k_cache, v_cache (B, NH, T_max, HS) with start + T <= T_max,
              written in place  ->  y (B, T, C)
    Saved:    nothing: no graph is recorded and there is no backward (call it under no_grad).
    """
    xp = get_xp(qkv)
    B, T, C3 = qkv.shape
    C = C3 // 3
    NH, HS = n_head, C // n_head
    L = start + T
    if tuple(k_cache.shape[:2]) != (B, NH) or k_cache.shape[3] != HS or L > k_cache.shape[2]:
        raise ValueError(f"cached_attention: cache of shape {tuple(k_cache.shape)} cannot hold positions "
                         f"{start}..{L - 1} of qkv {tuple(qkv.shape)} with {n_head} heads")
    heads = qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)  # (3, B, NH, T, HS)
    q = heads[0]  # 1. (B, NH, T, HS)
    k_cache[:, :, start:L] = heads[1]  # 2.
    v_cache[:, :, start:L] = heads[2]
    att = q @ k_cache[:, :, :L].swapaxes(-1, -2)  # 3. (B, NH, T, L)
    att *= 1.0 / math.sqrt(HS)
    if T > 1:  # 4. rows start .. L-1 of the (L, L) mask; one new token (the last row) sees every key
        att += _causal_bias(xp, L, qkv.dtype)[start:L]
    att -= att.max(axis=-1, keepdims=True)  # 5. softmax; the diagonal keeps every row finite
    xp.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)
    y = xp.empty((B, T, NH, HS), dtype=qkv.dtype)
    _matmul_into(xp, att, v_cache[:, :, :L], y.transpose(0, 2, 1, 3))  # 5., 6. Y straight into y's layout
    return y.reshape(B, T, C)  # 6. (B, T, C)
