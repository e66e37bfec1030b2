"""Grouped-query attention (npgpt/ops/attention.py: grouped_query_attention, cached_grouped_query_attention)
against reference/ops.py, float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor
from npgpt.backend import to_numpy
from npgpt.gradcheck import check_op
from npgpt.ops.attention import attention, cached_grouped_query_attention, grouped_query_attention
from npgpt.ops.dropout import dropout_keep
from tests.helpers import assert_close, check_parity


def _qkv(rng, B, NKV, G, T, HS, scale=1.0):
    return {"q": rng.standard_normal((B, NKV * G, T, HS)) * scale, "k": rng.standard_normal((B, NKV, T, HS)) * scale,
            "v": rng.standard_normal((B, NKV, T, HS))}


@given(B=st.integers(1, 2), NKV=st.integers(1, 3), G=st.integers(1, 4), T=st.integers(1, 7),
       HS=st.sampled_from([1, 2, 3, 8, 16]), scale=st.sampled_from([1.0, 4.0]), seed=st.integers(0, 2**16))
@example(B=1, NKV=1, G=1, T=1, HS=2, scale=1.0, seed=0)  # T = 1, one head
@example(B=1, NKV=1, G=4, T=5, HS=2, scale=1.0, seed=1)  # MQA
@example(B=2, NKV=3, G=1, T=4, HS=8, scale=1.0, seed=2)  # NKV = NH: multi-head
def test_gqa_parity(xp, B, NKV, G, T, HS, scale, seed):
    check_parity(grouped_query_attention, ref.grouped_query_attention, _qkv(np.random.default_rng(seed), B, NKV, G, T, HS, scale),
                 xp=xp, seed=seed, tol=1e-12)


def test_gqa_long_sequence_crosses_query_chunks(xp):
    check_parity(grouped_query_attention, ref.grouped_query_attention, _qkv(np.random.default_rng(3), 1, 2, 2, 150, 4),
                 xp=xp, tol=1e-12)


def test_gqa_float32(xp):
    check_parity(grouped_query_attention, ref.grouped_query_attention, _qkv(np.random.default_rng(4), 2, 2, 3, 6, 8),
                 dtype="float32", xp=xp)


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_gqa_dropout_parity(xp, p):
    rng = np.random.default_rng(5)
    args = _qkv(rng, 2, 2, 2, 5, 4)
    # the mask the op draws on xp's device (a device draws its own numbers)
    keep = torch.tensor(to_numpy(dropout_keep(np.random.default_rng(11), (2, 4, 5, 5), p, xp.empty(0))))
    ours = lambda q, k, v: grouped_query_attention(q, k, v, p, True, np.random.default_rng(11))  # noqa: E731
    theirs = lambda q, k, v: ref.grouped_query_attention(q, k, v, p, True, keep=keep)  # noqa: E731
    check_parity(ours, theirs, args, xp=xp, tol=1e-12)


def test_gqa_with_one_group_is_attention():
    """NKV = NH and q, k, v cut from a qkv: the GPT-2 op's result and gradient."""
    rng = np.random.default_rng(6)
    B, T, NH, HS = 2, 5, 3, 4
    qkv = rng.standard_normal((B, T, 3 * NH * HS))
    a = Tensor(qkv, requires_grad=True)
    heads = [Tensor(np.ascontiguousarray(h), requires_grad=True)
             for h in qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)]
    dy = rng.standard_normal((B, T, NH * HS))
    y1, y2 = attention(a, NH), grouped_query_attention(*heads)
    assert_close(y2.data, torch.tensor(y1.data), tol=1e-15)
    y1.backward(dy)
    y2.backward(dy)
    d = a.grad.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)
    for i in range(3):
        assert_close(heads[i].grad, torch.tensor(d[i]), tol=1e-14)


@given(B=st.integers(1, 2), NKV=st.integers(1, 2), G=st.integers(1, 3), HS=st.sampled_from([2, 4]),
       chunks=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 2**10))
def test_cached_gqa_equals_rows_of_the_full_op(B, NKV, G, HS, chunks, seed):
    rng = np.random.default_rng(seed)
    L = sum(chunks)
    a = _qkv(rng, B, NKV, G, L, HS)
    full = grouped_query_attention(*(Tensor(a[n]) for n in "qkv")).numpy()
    k_cache, v_cache = np.zeros((B, NKV, L + 2, HS)), np.zeros((B, NKV, L + 2, HS))  # NKV heads only
    start = 0
    for T in chunks:
        s = slice(start, start + T)
        y = cached_grouped_query_attention(a["q"][:, :, s], a["k"][:, :, s], a["v"][:, :, s], k_cache, v_cache, start)
        np.testing.assert_allclose(y, full[:, s], rtol=0, atol=1e-13)
        start += T


def test_gqa_finite_differences():
    args = _qkv(np.random.default_rng(7), 1, 2, 2, 3, 2)
    r = check_op(lambda q, k, v: grouped_query_attention(q, k, v), args, name="gqa")
    assert r.passed and r.checks > 0, r


def test_gqa_bad_inputs():
    q, k = Tensor(np.zeros((1, 4, 3, 2))), Tensor(np.zeros((1, 3, 3, 2)))
    with pytest.raises(ValueError, match="3 key/value heads do not divide 4 query heads"):
        grouped_query_attention(q, k, k)
    with pytest.raises(ValueError, match=r"must both be \(B, NKV, T, HS\) = \(1, NKV, 3, 2\)"):
        grouped_query_attention(q, Tensor(np.zeros((1, 2, 4, 2))), Tensor(np.zeros((1, 2, 4, 2))))
    with pytest.raises(ValueError, match=r"q must be \(B, heads, T, HS\)"):
        grouped_query_attention(Tensor(np.zeros((4, 3, 2))), k, k)
    with pytest.raises(ValueError, match="dropout must be a probability"):
        grouped_query_attention(q, Tensor(np.zeros((1, 2, 3, 2))), Tensor(np.zeros((1, 2, 3, 2))), dropout=1.0)
    with pytest.raises(ValueError, match="int64"):
        grouped_query_attention(Tensor(np.zeros((1, 2, 3, 2), dtype=np.int64)), Tensor(np.zeros((1, 2, 3, 2))),
                                Tensor(np.zeros((1, 2, 3, 2))))
    with pytest.raises(ValueError, match="cannot hold positions 3..4"):
        kc = np.zeros((1, 2, 4, 2))
        cached_grouped_query_attention(np.zeros((1, 4, 2, 2)), np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)), kc, kc.copy(), 3)
