"""npgpt/ops/attention.py: parity with the PyTorch twin, the causal mask, the composed graph, dropout.

The parity tests run at npgpt's block sizes and at tiny ones (the `blocks` fixture, tests/conftest.py:
query chunks of 2 rows, one sequence per block, two threads); tests/test_fastpath.py runs attention
at the sizes where its chunks and blocks switch on (T = 63, 64, 65, 129, 257).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import npgpt.functional as F
import reference.ops as R
from npgpt import Tensor
from npgpt.backend import to_numpy
from npgpt.ops.dropout import dropout_keep
from tests.helpers import assert_close, check_parity

# (B, T, NH, HS): batch, sequence length, heads, head size
shapes = st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(1, 3), st.integers(1, 4))
EDGES = [(1, 1, 1, 1), (1, 6, 1, 1), (2, 1, 3, 2), (1, 5, 1, 4), (3, 7, 3, 1)]


def _qkv(shape, seed, scale=1.0):
    B, T, NH, HS = shape
    return np.random.default_rng(seed).standard_normal((B, T, 3 * NH * HS)) * scale


def _with_edges(test):
    for e in EDGES:
        test = example(shape=e, seed=0)(test)
    return test


@given(shape=shapes, seed=st.integers(0, 2**16))
@_with_edges
def test_parity_float64(xp, blocks, shape, seed):
    check_parity(F.attention, R.attention, {"qkv": _qkv(shape, seed, 2.0)}, xp=xp,
                 options={"n_head": shape[2]}, seed=seed)


@given(shape=shapes, seed=st.integers(0, 2**16))
@_with_edges
def test_parity_float32(xp, blocks, shape, seed):
    check_parity(F.attention, R.attention, {"qkv": _qkv(shape, seed)}, dtype="float32", xp=xp,
                 options={"n_head": shape[2]}, seed=seed)


def test_reference_equals_torch_sdpa():
    B, T, NH, HS = 2, 6, 3, 4
    qkv = torch.tensor(_qkv((B, T, NH, HS), 1))
    q, k, v = (a.view(B, T, NH, HS).transpose(1, 2) for a in qkv.split(NH * HS, dim=-1))
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    y = y.transpose(1, 2).reshape(B, T, NH * HS)
    assert_close(R.attention(qkv, NH), y, "float64", "reference vs sdpa")


@given(shape=shapes, seed=st.integers(0, 2**16), cut=st.integers(0, 6))
@example(shape=(1, 2, 1, 1), seed=0, cut=0)
def test_causal_mask_holds_exactly(xp, blocks, shape, seed, cut):
    """Changing the tokens after position t never changes the outputs at <= t, nor lets their
    gradient reach the future positions."""
    B, T, NH, HS = shape
    t = min(cut, T - 1)
    a = _qkv(shape, seed)
    b = a.copy()
    b[:, t + 1:] = np.random.default_rng(seed + 1).standard_normal(b[:, t + 1:].shape) * 10
    ya = F.attention(Tensor(xp.asarray(a)), NH).data
    x = Tensor(xp.asarray(b), requires_grad=True)
    yb = F.attention(x, NH)
    assert np.array_equal(to_numpy(ya[:, : t + 1]), to_numpy(yb.data[:, : t + 1]))
    dy = np.zeros(yb.shape)
    dy[:, : t + 1] = 1.0
    yb.backward(xp.asarray(dy))
    assert not to_numpy(x.grad[:, t + 1:]).any()
    if t + 1 < T:  # and the future does change when it should: the test can fail
        assert not np.array_equal(to_numpy(ya[:, t + 1:]), to_numpy(yb.data[:, t + 1:]))


def _attention_composed(qkv, n_head):
    """The same attention written with npgpt's primitive ops, differentiated by the autograd."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    HS = C // n_head
    q, k, v = (qkv[:, :, i * C:(i + 1) * C].reshape(B, T, n_head, HS).transpose(0, 2, 1, 3) for i in range(3))
    att = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(HS))  # (B, NH, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), 1)
    att = att + Tensor(np.where(future, -np.inf, 0.0))
    e = (att - att.max(axis=-1, keepdims=True)).exp()
    p = e / e.sum(axis=-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C)


@given(shape=shapes, seed=st.integers(0, 2**16))
@_with_edges
def test_fused_equals_composed_primitives(shape, seed):
    a = _qkv(shape, seed, 2.0)
    dy = np.random.default_rng(seed + 7).standard_normal((shape[0], shape[1], shape[2] * shape[3]))
    x1, x2 = Tensor(a, requires_grad=True), Tensor(a.copy(), requires_grad=True)
    y1, y2 = F.attention(x1, shape[2]), _attention_composed(x2, shape[2])
    assert_close(y1.data, y2.data, "float64", "forward")
    y1.backward(dy)
    y2.backward(dy)
    assert_close(x1.grad, x2.grad, "float64", "grad of qkv")


def _keep(seed, shape, p, dtype, xp=np):
    """The mask attention draws from `seed` on xp's device (a device draws its own numbers)."""
    B, T, NH, HS = shape
    return to_numpy(dropout_keep(np.random.default_rng(seed), (B, NH, T, T), p, xp.empty(0, dtype=dtype)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape,p", [((2, 6, 3, 2), 0.3), ((1, 1, 1, 1), 0.5), ((1, 5, 1, 4), 0.9)])
def test_dropout_parity_with_same_mask(xp, blocks, dtype, shape, p):
    seed = 11
    keep = torch.tensor(_keep(seed, shape, p, dtype, xp))
    ours = lambda qkv, n_head: F.attention(qkv, n_head, p, True, np.random.default_rng(seed))  # noqa: E731
    theirs = lambda qkv, n_head: R.attention(qkv, n_head, p, True, keep=keep)  # noqa: E731
    check_parity(ours, theirs, {"qkv": _qkv(shape, seed)}, dtype=dtype, xp=xp, options={"n_head": shape[2]})


def test_dropout_is_deterministic_per_seed_and_off_in_eval():
    shape = (2, 8, 2, 4)
    x = Tensor(_qkv(shape, 3))
    drop = lambda seed: F.attention(x, 2, 0.2, True, np.random.default_rng(seed)).data  # noqa: E731
    plain = F.attention(x, 2).data
    assert np.array_equal(drop(5), drop(5))
    assert not np.array_equal(drop(5), drop(6))
    assert not np.array_equal(drop(5), plain)
    assert np.array_equal(F.attention(x, 2, 0.2, False, np.random.default_rng(5)).data, plain)
    assert np.array_equal(F.attention(x, 2, 0.0, True, np.random.default_rng(5)).data, plain)


def test_dropout_keeps_the_expected_fraction():
    keep = _keep(0, (4, 32, 4, 1), 0.25, np.float64)  # (4, 4, 32, 32): 16384 draws
    assert abs(keep.mean() - 0.75) < 0.02


@pytest.mark.parametrize("shape,n_head,match", [
    ((2, 3), 1, r"\(B, T, 3C\).*\(2, 3\)"),
    ((1, 2, 3, 6), 1, r"\(1, 2, 3, 6\)"),
    ((1, 2, 10), 1, r"\(1, 2, 10\)"),
    ((1, 2, 12), 3, r"C = 4.*n_head = 3"),
    ((1, 2, 12), 0, "n_head"),
])
def test_bad_shapes_raise(shape, n_head, match):
    with pytest.raises(ValueError, match=match):
        F.attention(Tensor(np.zeros(shape)), n_head)


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1, True])
def test_bad_dropout_raises(p):
    with pytest.raises(ValueError, match="dropout"):
        F.attention(Tensor(np.zeros((1, 2, 6))), 1, dropout=p, training=True)


def test_bad_dtype_raises():
    with pytest.raises(ValueError, match="floating-point"):
        F.attention(Tensor(np.zeros((1, 2, 6), dtype=np.int64)), 1)
