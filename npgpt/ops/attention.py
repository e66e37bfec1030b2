"""Fused causal multi-head self-attention: qkv (B, T, 3C) -> y (B, T, C) as one Function.

One forward and one hand-written backward over the whole core (split heads, scores, causal mask,
softmax, dropout, weighted sum, merge heads), so the graph holds one node per layer instead of a
dozen, and backward saves only q, k, v, two numbers per softmax row and the dropout mask.
`cached_attention` (at the end) is generation's inference path against a key/value cache.
"""

from __future__ import annotations

import math
from numbers import Integral

from .. import parallel
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
    Saved:    q, k, v (views of qkv), the softmax's row maxima m and reciprocal row sums r
              (B, NH, T, 1) each, and the boolean keep mask when dropout is active; nothing under
              no_grad. Backward rebuilds P = exp(S - m) * r from q, k, m, r with the forward's
              bits, so no (B, NH, T, T) array lives between the passes. Steps 2-6 (and their
              backward) run a few sequences at a time on the thread pool (npgpt.parallel), so
              each block's (b, NH, T, T) temporaries stay in cache.
    Backward: walking the steps in reverse, with dy (B, T, C):
      7. dY = dy split into heads                                       (B, NH, T, HS)
      6. dA = dY @ v^T,   dv = A^T @ dY      (P rebuilt by steps 2-4 with the saved m and r;
                                               A = P * keep / (1 - p))
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
        rec = self.recording
        m = xp.empty((B, NH, T, 1), dtype=qkv.dtype) if rec else None  # row maxima of S
        r = xp.empty((B, NH, T, 1), dtype=qkv.dtype) if rec else None  # 1 / row sums of exp(S - m)
        y = xp.empty((B, T, NH, HS), dtype=qkv.dtype)

        def sequences(b0, b1):  # steps 2-6 on a few sequences, in cache, on the thread pool
            for r0, r1 in _query_chunks(xp, T):  # query rows r0:r1 see keys 0:r1 only
                att = _softmax_scores(xp, q[b0:b1, :, r0:r1], k[b0:b1, :, :r1], scale, bias[r0:r1, :r1],
                                      None if m is None else m[b0:b1, :, r0:r1],
                                      None if r is None else r[b0:b1, :, r0:r1])  # 2.-4. P (b, NH, rows, r1)
                if keep is not None:  # 5.
                    att *= keep[b0:b1, :, r0:r1, :r1]
                    att *= self.inv_keep_prob
                _matmul_into(xp, att, v[b0:b1, :, :r1], y[b0:b1, r0:r1].transpose(0, 2, 1, 3))  # 6., 7. into y's layout

        parallel.run(sequences, row_blocks(xp, B, NH * T * T, _BLOCK), B * NH * T * T, blas=True)
        if rec:
            self.q, self.k, self.v, self.m, self.r, self.keep = q, k, v, m, r, keep
        return y.reshape(B, T, C)  # 7. (B, T, C)

    def backward(self, dy):
        xp = get_xp(dy)
        q, k, v, m, r, keep = self.q, self.k, self.v, self.m, self.r, self.keep
        B, NH, T, HS = q.shape
        scale = 1.0 / math.sqrt(HS)
        bias = _causal_bias(xp, T, dy.dtype)

        dY = dy.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)  # 7. (B, NH, T, HS)
        dqkv = xp.zeros((B, T, 3, NH, HS), dtype=dy.dtype)  # 1. dk and dv add up over query chunks

        def sequences(b0, b1):
            out = dqkv[b0:b1].transpose(2, 0, 3, 1, 4)  # 1. (3, b, NH, T, HS), a view: dq, dk, dv go there
            for r0, r1 in _query_chunks(xp, T):
                qc, kc, vc, dYc = q[b0:b1, :, r0:r1], k[b0:b1, :, :r1], v[b0:b1, :, :r1], dY[b0:b1, :, r0:r1]
                Pc = _probabilities_again(xp, qc, kc, scale, bias[r0:r1, :r1], m[b0:b1, :, r0:r1],
                                          r[b0:b1, :, r0:r1])  # 2.-4. P rebuilt (b, NH, rows, r1)
                A = Pc if keep is None else Pc * keep[b0:b1, :, r0:r1, :r1] * self.inv_keep_prob
                out[2][:, :, :r1] += A.swapaxes(-1, -2) @ dYc  # 6. dv (b, NH, r1, HS)
                dS = parallel.scratch(xp, "attn_dS", Pc.shape, dy.dtype)  # holds dA, then dP, then dS
                xp.matmul(dYc, vc.swapaxes(-1, -2), out=dS)  # 6. dA = dY @ v^T (b, NH, rows, r1)
                if keep is not None:
                    dS *= keep[b0:b1, :, r0:r1, :r1]  # 5. dP = dA * keep / (1 - p)
                    dS *= self.inv_keep_prob
                dS -= _row_dot(xp, dS, Pc)[..., None]  # 4. dS = P * (dP - sum(dP * P)); 3. nothing to do
                dS *= Pc
                _matmul_into(xp, dS, _scaled(xp, kc, scale), out[0][:, :, r0:r1])  # 2. dq = dS @ (s k)
                out[1][:, :, :r1] += dS.swapaxes(-1, -2) @ _scaled(xp, qc, scale)  # 2. dk += dS^T @ (s q)

        parallel.run(sequences, row_blocks(xp, B, NH * T * T, _BLOCK), B * NH * T * T, blas=True)
        return (dqkv.reshape(B, T, 3 * NH * HS),)  # (B, T, 3C)


_Q_CHUNK = 64  # query rows per chunk on the CPU


def _query_chunks(xp, T: int) -> list[tuple[int, int]]:
    """(r0, r1) ranges of query rows. Rows r0:r1 attend to keys 0:r1 only, so walking the queries
    in chunks skips the masked upper triangle's products and exps (a speed trick: at T = 256 in
    chunks of 64 it computes 10/16 of the T x T scores). One chunk on the GPU (whole-array kernels)."""
    if xp.__name__ != "numpy":
        return [(0, T)]
    return [(r0, min(r0 + _Q_CHUNK, T)) for r0 in range(0, T, _Q_CHUNK)]


def _masked_scores(xp, q, k, scale, bias):
    """Steps 2-3 for a block of sequences: S = s q @ k^T + bias, in a per-thread scratch array
    (b, NH, rows, keys) that steps 4 then turn into P in place."""
    att = parallel.scratch(xp, "attn_P", q.shape[:-1] + (k.shape[-2],), q.dtype)  # (b, NH, rows, keys)
    xp.matmul(_scaled(xp, q, scale), k.swapaxes(-1, -2), out=att)  # 2. (b, NH, rows, keys)
    att += bias  # 3.
    return att


def _softmax_scores(xp, q, k, scale, bias, m, r):
    """Steps 2-4 in forward: P = exp(S - m) * r over the last axis, with m the row maxima of S and r
    the reciprocal row sums of exp(S - m), written into m and r when they are given (backward's
    `_probabilities_again` needs them). Every row has a finite entry (its diagonal), so no row is
    all -inf."""
    att = _masked_scores(xp, q, k, scale, bias)  # 2.-3. S
    mb = att.max(axis=-1, keepdims=True)  # (b, NH, rows, 1)
    if m is not None:
        m[...] = mb
    att -= mb
    xp.exp(att, out=att)
    rb = 1.0 / att.sum(axis=-1, keepdims=True)  # (b, NH, rows, 1)
    if r is not None:
        r[...] = rb
    att *= rb  # 4. P
    return att


def _probabilities_again(xp, q, k, scale, bias, m, r):
    """Steps 2-4 in backward: P rebuilt as exp(S - m) * r from forward's saved m and r, the very
    bits forward had, instead of keeping the (B, NH, T, T) probabilities alive between the passes
    (a memory trick: T / HS times less than P)."""
    att = _masked_scores(xp, q, k, scale, bias)  # 2.-3. S
    att -= m
    xp.exp(att, out=att)
    att *= r  # 4. P
    return att


def _scaled(xp, a, s):
    """s * a as a new contiguous array: scaling the (b, NH, T, HS) operand instead of the
    (b, NH, T, T) product costs HS / T of a pass over the scores (a speed trick)."""
    return xp.multiply(a, a.dtype.type(s))


def _row_dot(xp, a, b):
    """sum over the last axis of a * b, without an a-sized temporary (einsum)."""
    return xp.einsum("...j,...j->...", a, b)


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
