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
from ..backend import blocks_for_cache, get_xp, matmul_into, rng
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
    if not blocks_for_cache(xp):
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
    """out[...] = a @ b, where out is a strided view into the final layout (backend.matmul_into:
    NumPy writes straight there, CuPy copies a fresh product in)."""
    matmul_into(a, b, out)


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


# --- Grouped-query attention (the Llama family): separate q, k, v, n_kv_head <= n_head ----------------


class GroupedQueryAttention(Function):
    """Causal attention with NKV key/value heads shared by groups of G = NH / NKV query heads (GQA;
    MQA at NKV = 1, multi-head at NKV = NH). Query head h = j * G + g uses key/value head j = h // G.

    Forward, with s = 1 / sqrt(HS) (HS is the head size, not tied to the model width):
      1. q as (B, NKV, G, T, HS); k, v as (B, NKV, 1, T, HS), broadcast over the group
      2. S = s * q @ k^T                                                      (B, NKV, G, T, T)
      3. S[i, j] = -inf for j > i
      4. P = softmax(S) over the last axis
      5. A = P * keep / (1 - p)     (dropout; keep (B, NH, T, T) as dropout_keep draws it)
      6. Y = A @ v                                                            (B, NKV, G, T, HS)
      7. y = Y with heads merged: (B, T, NH * HS), head h at columns h*HS .. (h+1)*HS - 1

    Shapes:   q (B, NH, T, HS), k, v (B, NKV, T, HS) with NKV dividing NH  ->  y (B, T, NH * HS)
    Saved:    q, k, v, the softmax's row maxima m and reciprocal row sums r (B, NKV, G, T, 1), and
              the keep mask when dropout is active; P is rebuilt in backward (as in Attention).
    Backward: walking the steps in reverse, with dy (B, T, NH * HS):
      7. dY = dy split into heads                                             (B, NKV, G, T, HS)
      6. dA = dY @ v^T;  dv = sum_G(A^T @ dY)    (k and v were broadcast over the group: their
                                                    gradients sum over its G query heads)
      5. dP = dA * keep / (1 - p)
      4. dS = P * (dP - sum(dP * P, -1));  3. zero where masked
      2. dq = s * dS @ k,   dk = sum_G(s * dS^T @ q)
    """

    def forward(self, q, k, v, dropout: float = 0.0, training: bool = False, generator=None):
        xp = get_xp(q)
        B, NH, T, HS = q.shape
        NKV = k.shape[1]
        G = NH // NKV
        scale = 1.0 / math.sqrt(HS)
        qg, kg, vg = q.reshape(B, NKV, G, T, HS), k[:, :, None], v[:, :, None]  # 1.
        keep = None
        if training and dropout > 0:  # 5. the whole mask in one draw, as Attention draws it
            if generator is None:
                generator = rng(None)
            keep = dropout_keep(generator, (B, NH, T, T), dropout, q).reshape(B, NKV, G, T, T)
            self.inv_keep_prob = q.dtype.type(1.0 / (1.0 - dropout))
        bias = _causal_bias(xp, T, q.dtype)
        rec = self.recording
        m = xp.empty((B, NKV, G, T, 1), dtype=q.dtype) if rec else None
        r = xp.empty((B, NKV, G, T, 1), dtype=q.dtype) if rec else None
        y = xp.empty((B, T, NKV, G, HS), dtype=q.dtype)
        Y = y.transpose(0, 2, 3, 1, 4)  # (B, NKV, G, T, HS), a view into y's layout
        for r0, r1 in _query_chunks(xp, T):  # query rows r0:r1 see keys 0:r1 only
            att = _softmax_scores(xp, qg[:, :, :, r0:r1], kg[:, :, :, :r1], scale, bias[r0:r1, :r1],
                                 None if m is None else m[:, :, :, r0:r1],
                                 None if r is None else r[:, :, :, r0:r1])  # 2.-4. (B, NKV, G, rows, r1)
            if keep is not None:  # 5.
                att *= keep[:, :, :, r0:r1, :r1]
                att *= self.inv_keep_prob
            _matmul_into(xp, att, vg[:, :, :, :r1], Y[:, :, :, r0:r1])  # 6., 7.
        if rec:
            self.q, self.k, self.v, self.m, self.r, self.keep = qg, kg, vg, m, r, keep
        return y.reshape(B, T, NH * HS)  # 7.

    def backward(self, dy):
        xp = get_xp(dy)
        qg, kg, vg, m, r, keep = self.q, self.k, self.v, self.m, self.r, self.keep
        B, NKV, G, T, HS = qg.shape
        scale = 1.0 / math.sqrt(HS)
        bias = _causal_bias(xp, T, dy.dtype)
        dY = dy.reshape(B, T, NKV, G, HS).transpose(0, 2, 3, 1, 4)  # 7. (B, NKV, G, T, HS)
        dq = xp.empty((B, NKV, G, T, HS), dtype=dy.dtype)
        dk = xp.zeros((B, NKV, T, HS), dtype=dy.dtype)  # add up over query chunks and the group
        dv = xp.zeros((B, NKV, T, HS), dtype=dy.dtype)
        for r0, r1 in _query_chunks(xp, T):
            qc, kc, vc, dYc = qg[:, :, :, r0:r1], kg[:, :, :, :r1], vg[:, :, :, :r1], dY[:, :, :, r0:r1]
            Pc = _probabilities_again(xp, qc, kc, scale, bias[r0:r1, :r1], m[:, :, :, r0:r1],
                                      r[:, :, :, r0:r1])  # 4. P again (B, NKV, G, rows, r1)
            A = Pc if keep is None else Pc * keep[:, :, :, r0:r1, :r1] * self.inv_keep_prob
            dv[:, :, :r1] += (A.swapaxes(-1, -2) @ dYc).sum(axis=2)  # 6. sum over the group
            dP = dYc @ vc.swapaxes(-1, -2)  # 6. (B, NKV, G, rows, r1)
            if keep is not None:
                dP *= keep[:, :, :, r0:r1, :r1]  # 5.
                dP *= self.inv_keep_prob
            dP -= _row_dot(xp, dP, Pc)[..., None]  # 4. dS = P * (dP - sum(dP * P)); 3. nothing to do
            dP *= Pc
            xp.matmul(dP, _scaled(xp, kc, scale), out=dq[:, :, :, r0:r1])  # 2. dq = dS @ (s k)
            dk[:, :, :r1] += (dP.swapaxes(-1, -2) @ _scaled(xp, qc, scale)).sum(axis=2)  # 2. sum over the group
        return dq.reshape(B, NKV * G, T, HS), dk, dv


def _check_gqa(name, q, k, v, caches=None):
    for t, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim != 4:
            raise ValueError(f"{name}: {t} must be (B, heads, T, HS), got shape {tuple(a.shape)}")
    B, NH, T, HS = q.shape
    if tuple(k.shape) != tuple(v.shape) or k.shape[0] != B or k.shape[2] != T or k.shape[3] != HS:
        raise ValueError(f"{name}: k {tuple(k.shape)} and v {tuple(v.shape)} must both be (B, NKV, T, HS) = "
                         f"({B}, NKV, {T}, {HS}) for q {tuple(q.shape)}")
    if k.shape[1] < 1 or NH % k.shape[1]:
        raise ValueError(f"{name}: {k.shape[1]} key/value heads do not divide {NH} query heads")
    if HS < 1 or T < 1:
        raise ValueError(f"{name}: q {tuple(q.shape)} needs T >= 1 and HS >= 1")
    check_float(name, q, k, v)


def grouped_query_attention(q, k, v, dropout: float = 0.0, training: bool = False, generator=None):
    """Causal grouped-query attention: q (B, NH, T, HS), k, v (B, NKV, T, HS) -> y (B, T, NH * HS).

    Query head h attends with key/value head h // (NH / NKV); scale 1 / sqrt(HS). Dropout on the
    probabilities as in `attention`: its mask is dropout_keep(generator, (B, NH, T, T), dropout, q).
    """
    data = [t.data if isinstance(t, Tensor) else t for t in (q, k, v)]
    _check_gqa("grouped_query_attention", *data)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"grouped_query_attention dropout must be a probability in [0, 1), got {dropout!r}")
    return GroupedQueryAttention.apply(q, k, v, dropout=float(dropout), training=bool(training), generator=generator)


def cached_grouped_query_attention(q, k, v, k_cache, v_cache, start: int):
    """Grouped-query attention for T new positions against a key/value cache that holds only the NKV
    key/value heads (memory grows with NKV, not NH): generation's inference path for the Llama family.

    q (B, NH, T, HS), k, v (B, NKV, T, HS) raw arrays of the new positions start .. start+T-1, with RoPE
    already applied at those absolute positions; k_cache, v_cache (B, NKV, T_max, HS), written in place.
      1. k_cache[:, :, start:L] = k,  v_cache[:, :, start:L] = v     (L = start + T)
      2. S = s * q @ K^T with K = k_cache[:, :, :L], per group      (B, NKV, G, T, L)
      3. S[i, j] = -inf for j > start + i;  4. P = softmax(S);  5. Y = P @ V  (B, NKV, G, T, HS)
      6. y = Y with heads merged                                     (B, T, NH * HS)
    Row i equals row start+i of GroupedQueryAttention over all L positions. No graph, no backward.
    """
    _check_gqa("cached_grouped_query_attention", q, k, v)
    xp = get_xp(q)
    B, NH, T, HS = q.shape
    NKV = k.shape[1]
    G = NH // NKV
    L = start + T
    if tuple(k_cache.shape[:2]) != (B, NKV) or k_cache.shape[3] != HS or L > k_cache.shape[2] \
            or tuple(v_cache.shape) != tuple(k_cache.shape):
        raise ValueError(f"cached_grouped_query_attention: cache of shape {tuple(k_cache.shape)} cannot hold positions "
                         f"{start}..{L - 1} of {NKV} key/value heads of size {HS} (batch {B})")
    k_cache[:, :, start:L] = k  # 1.
    v_cache[:, :, start:L] = v
    qg = q.reshape(B, NKV, G, T, HS)
    att = qg @ k_cache[:, :, None, :L].swapaxes(-1, -2)  # 2. (B, NKV, G, T, L)
    att *= 1.0 / math.sqrt(HS)
    if T > 1:  # 3. rows start .. L-1 of the (L, L) mask; one new token sees every key
        att += _causal_bias(xp, L, q.dtype)[start:L]
    att -= att.max(axis=-1, keepdims=True)  # 4.
    xp.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)
    y = xp.empty((B, T, NKV, G, HS), dtype=q.dtype)
    _matmul_into(xp, att, v_cache[:, :, None, :L], y.transpose(0, 2, 3, 1, 4))  # 5., 6.
    return y.reshape(B, T, NH * HS)  # 6.
