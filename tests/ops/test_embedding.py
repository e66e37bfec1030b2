"""npgpt/ops/embedding.py against reference/ops.py: lookup, learned and sinusoidal positions.

The lookup's parity runs at npgpt's block sizes and at tiny ones (the `blocks` fixture,
tests/conftest.py); tests/test_fastpath.py runs it at a training batch's size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor
from npgpt.backend import to_numpy
from npgpt.ops.embedding import embedding, position_embedding, sinusoidal_positions
from tests.helpers import assert_close, check_parity

sizes = st.integers(1, 4)


@given(B=sizes, T=st.integers(1, 6), V=st.integers(2, 7), C=st.integers(1, 6), seed=st.integers(0, 2**16))
@example(B=1, T=1, V=2, C=1, seed=0)
@example(B=2, T=5, V=2, C=3, seed=1)  # vocab 2: ids repeat
def test_embedding_parity(xp, blocks, B, T, V, C, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=(B, T))
    check_parity(embedding, ref.embedding, {"ids": ids, "w": rng.standard_normal((V, C))}, xp=xp, seed=seed)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_embedding_repeated_ids_all_contribute(xp, dtype):
    rng = np.random.default_rng(0)
    ids = np.array([[3, 3, 3, 1], [3, 0, 1, 3]])  # id 3 five times, id 2 never
    y, _ = check_parity(embedding, ref.embedding, {"ids": ids, "w": rng.standard_normal((5, 4))}, dtype=dtype, xp=xp)
    w = Tensor(xp.asarray(rng.standard_normal((5, 4))), requires_grad=True)
    embedding(ids, w).backward(xp.ones((2, 4, 4)))
    counts = np.bincount(ids.ravel(), minlength=5)
    np.testing.assert_array_equal(to_numpy(w.grad), np.repeat(counts[:, None], 4, 1))


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4)])
def test_embedding_any_id_shape(xp, shape):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 6, size=shape)
    y, _ = check_parity(embedding, ref.embedding, {"ids": ids, "w": rng.standard_normal((6, 3))}, xp=xp)
    assert y.shape == (*shape, 3)


def test_embedding_takes_plain_arrays_lists_and_unsigned():
    w = Tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    np.testing.assert_array_equal(embedding([2, 0], w).numpy(), [[6, 7, 8], [0, 1, 2]])
    np.testing.assert_array_equal(embedding(np.array([3], dtype=np.uint16), w).numpy(), [[9, 10, 11]])


@pytest.mark.parametrize("bad", [-1, 5, 99])
def test_embedding_out_of_range_ids_raise_naming_id_and_vocab(bad):
    w = Tensor(np.zeros((5, 2)), requires_grad=True)
    ids = np.array([[0, 1], [bad, 2]])
    with pytest.raises(IndexError, match=rf"id {bad}\b.*size 5"):
        embedding(ids, w)
    with pytest.raises(IndexError, match=rf"id {bad}\b"):
        embedding(Tensor(ids), w)


def test_embedding_reports_the_first_bad_id():
    with pytest.raises(IndexError, match=r"id 7 .*size 4"):
        embedding(np.array([0, 7, -3]), Tensor(np.zeros((4, 2))))


def test_embedding_rejects_float_ids_and_bad_tables():
    w = Tensor(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="float64"):
        embedding(np.array([0.0, 1.0]), w)
    with pytest.raises(ValueError, match="float32"):
        embedding(Tensor(np.zeros(2, dtype=np.float32)), w)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        embedding(np.array([0]), Tensor(np.zeros(4)))
    with pytest.raises(ValueError, match="int64"):
        embedding(np.array([0]), Tensor(np.zeros((4, 2), dtype=np.int64)))


@given(T=st.integers(1, 8), extra=st.integers(0, 3), C=st.integers(1, 5))
@example(T=1, extra=0, C=1)
def test_position_embedding_parity(xp, T, extra, C):
    wpe = np.random.default_rng(T * 10 + C).standard_normal((T + extra, C))
    y, _ = check_parity(position_embedding, ref.position_embedding, {"wpe": wpe}, xp=xp, options={"T": T})
    assert y.shape == (T, C)


def test_position_embedding_float32(xp):
    wpe = np.random.default_rng(0).standard_normal((8, 4))
    check_parity(position_embedding, ref.position_embedding, {"wpe": wpe}, dtype="float32", xp=xp, options={"T": 5})


@pytest.mark.parametrize("T", [9, 0, -1, 2.0])
def test_position_embedding_bad_T(T):
    with pytest.raises(ValueError, match=r"T=9 exceeds .* 8 rows" if T == 9 else "positive int"):
        position_embedding(T, Tensor(np.zeros((8, 4))))


@pytest.mark.parametrize("T,C", [(1, 1), (5, 1), (7, 2), (6, 5), (50, 16), (3, 7)])
def test_sinusoidal_matches_reference_and_formula(T, C):
    pe = sinusoidal_positions(T, C, dtype="float64")
    assert isinstance(pe, np.ndarray) and pe.shape == (T, C) and pe.dtype == np.float64
    assert_close(pe, ref.sinusoidal_positions(T, C, dtype="float64"), what="sinusoidal table")
    for p in range(T):  # by hand, entry by entry
        for j in range(C):
            angle = p / 10000 ** ((j - j % 2) / C)
            assert math.isclose(pe[p, j], math.sin(angle) if j % 2 == 0 else math.cos(angle), rel_tol=1e-12, abs_tol=1e-12)
    if C % 2:  # odd C: the last column is a sin
        assert pe[0, C - 1] == 0.0


def test_sinusoidal_dtype_and_device_follow_like(xp):
    assert sinusoidal_positions(4, 6).dtype == np.float32
    like = Tensor(xp.zeros((2, 3), dtype=xp.float64))
    pe = sinusoidal_positions(4, 6, like=like)
    assert type(pe) is type(like.data) and pe.dtype == np.float64
    assert sinusoidal_positions(4, 6, dtype="float32", like=like.data).dtype == np.float32
    assert_close(sinusoidal_positions(4, 6), ref.sinusoidal_positions(4, 6), "float32", "float32 table")
    assert ref.sinusoidal_positions(4, 6, like=torch.zeros(1, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("T,C", [(0, 4), (4, 0), (2.5, 4), (4, -2)])
def test_sinusoidal_bad_sizes(T, C):
    with pytest.raises(ValueError, match="positive int"):
        sinusoidal_positions(T, C)


def test_scatter_add_by_sorting_matches_add_at():
    """backend.scatter_add's NumPy path for repeated row ids (sorted runs, add.reduceat) adds what
    add.at adds; negative ids, broadcast values and few ids take add.at itself."""
    from npgpt.backend import scatter_add

    g = np.random.default_rng(0)
    for V, N, lo in ((5, 64, 0), (65, 300, 0), (7, 40, -7), (50, 10, 0)):
        ids = g.integers(lo, V, N)
        values = g.standard_normal((N, 3))
        expected = np.zeros((V, 3))
        np.add.at(expected, ids, values)
        got = np.zeros((V, 3))
        scatter_add(got, ids, values)
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
    got, expected = np.zeros((4, 3)), np.zeros((4, 3))
    ids = np.array([0, 1, 1, 3, 0, 2])
    scatter_add(got, ids, np.ones((1, 3)))  # broadcast values
    np.add.at(expected, ids, np.ones((1, 3)))
    np.testing.assert_array_equal(got, expected)
