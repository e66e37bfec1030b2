"""npgpt/ops/activation.py (gelu, softmax) against reference/ops.py.

GELU's parity tests run at npgpt's block sizes and at tiny ones (the `blocks` fixture,
tests/conftest.py); tests/test_fastpath.py runs GELU on arrays of several of npgpt's own row blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor
from npgpt.ops.activation import gelu, softmax
from tests.helpers import check_parity

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


@given(shape=shapes, approximate=st.sampled_from(["tanh", "none"]), scale=st.sampled_from([1.0, 4.0, 30.0]),
       seed=st.integers(0, 2**16))
@example(shape=(1,), approximate="tanh", scale=1.0, seed=0)
@example(shape=(1,), approximate="none", scale=1.0, seed=0)
@example(shape=(2, 3, 7), approximate="none", scale=30.0, seed=1)  # far tails: erf saturates
def test_gelu_parity(xp, blocks, shape, approximate, scale, seed):
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    check_parity(gelu, ref.gelu, {"x": x}, xp=xp, seed=seed, options={"approximate": approximate})


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_float32_and_special_points(xp, blocks, approximate):
    x = np.concatenate([np.random.default_rng(0).standard_normal(50) * 3, [0.0, -0.0, 1e-8, -1e-8, 8.0, -8.0, 40.0, -40.0]])
    check_parity(gelu, ref.gelu, {"x": x}, dtype="float32", xp=xp, options={"approximate": approximate})
    check_parity(gelu, ref.gelu, {"x": x}, xp=xp, options={"approximate": approximate})


def test_gelu_tanh_and_exact_differ_but_are_close():
    x = Tensor(np.linspace(-4, 4, 101))
    d = np.abs(gelu(x, "tanh").numpy() - gelu(x, "none").numpy())
    assert 1e-5 < d.max() < 1e-2  # a wrong mode switch would give 0 or a large gap


@pytest.mark.parametrize("bad", ["exact", "Tanh", None, True])
def test_gelu_bad_approximate(bad):
    with pytest.raises(ValueError, match="approximate"):
        gelu(Tensor(np.zeros(3)), approximate=bad)


@given(shape=shapes, axis=st.integers(-3, 2), scale=st.sampled_from([1.0, 10.0, 1000.0]), seed=st.integers(0, 2**16))
@example(shape=(1,), axis=-1, scale=1.0, seed=0)
@example(shape=(2, 1, 5), axis=1, scale=1.0, seed=0)
def test_softmax_parity(xp, shape, axis, scale, seed):
    if not -len(shape) <= axis < len(shape):
        axis = -1
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    y, _ = check_parity(softmax, ref.softmax, {"x": x}, xp=xp, seed=seed, options={"axis": axis})
    np.testing.assert_allclose(y.numpy().sum(axis=axis), 1.0, rtol=1e-12)


def test_softmax_float32_and_huge_inputs(xp):
    x = np.random.default_rng(2).standard_normal((3, 9)) * 5
    check_parity(softmax, ref.softmax, {"x": x}, dtype="float32", xp=xp)
    big = Tensor(xp.asarray(np.array([[1000.0, 1001.0, -1e30], [-1000.0, -1000.0, -1000.0]])))
    y = softmax(big).numpy()
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[1], 1 / 3, rtol=1e-15)


def test_softmax_bad_inputs():
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        softmax(Tensor(np.zeros((2, 2))), axis=2)
    with pytest.raises(ValueError, match="axis"):
        softmax(Tensor(np.zeros((2, 2))), axis=(0, 1))
    with pytest.raises(ValueError, match="int64"):
        softmax(Tensor(np.zeros((2, 2), dtype=np.int64)))
