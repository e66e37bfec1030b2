"""npgpt/ops/dropout.py: parity with the twin on the same seed, statistics, eval identity, bad p."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor
from npgpt.backend import rng, to_numpy, uniform
from npgpt.ops.dropout import dropout
from tests.helpers import check_parity


class _DeviceDraws:
    """A generator for the twin that hands back the uniforms npgpt draws from `seed` on xp's device:
    a device draws its own numbers from a seed the host generator gives, so a seeded NumPy generator
    alone cannot make the device's mask."""

    def __init__(self, seed, xp, dtype):
        self.seed, self.xp, self.dtype = seed, xp, dtype

    def random(self, shape, dtype=np.float64):
        like = self.xp.empty(0, dtype=self.dtype)
        return to_numpy(uniform(rng(self.seed), shape, like)).astype(dtype)


def _pair(p, seed, xp=np, dtype="float64"):
    """npgpt's dropout and the twin, drawing the same mask: on the CPU each from its own generator
    seeded alike; on a device the twin replays the device's draw."""
    twin = np.random.default_rng(seed) if xp is np else _DeviceDraws(seed, xp, dtype)
    return (lambda x: dropout(x, p, True, rng(seed)),
            lambda x: ref.dropout(x, p, True, twin))


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), p=st.sampled_from([0.1, 0.5, 0.9, 0.999]),
       seed=st.integers(0, 2**16))
@example(shape=(1,), p=0.5, seed=0)
def test_dropout_parity(xp, shape, p, seed):
    ours, theirs = _pair(p, seed, xp)
    x = np.random.default_rng(seed + 1).standard_normal(shape)
    check_parity(ours, theirs, {"x": x}, xp=xp, seed=seed)


def test_dropout_parity_float32(xp):
    ours, theirs = _pair(0.3, 7, xp, "float32")
    check_parity(ours, theirs, {"x": np.random.default_rng(0).standard_normal((4, 5, 6))}, dtype="float32", xp=xp)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_rate_and_exact_scaling(p):
    n = 200_000
    x = np.random.default_rng(0).uniform(0.5, 2.0, n)  # never 0, so a zero output means dropped
    y = dropout(Tensor(x), p, True, rng(123)).numpy()
    dropped = y == 0
    bound = 6 * np.sqrt(p * (1 - p) / n)  # six binomial standard deviations
    assert abs(dropped.mean() - p) <= bound, (dropped.mean(), p, bound)
    kept = ~dropped
    np.testing.assert_array_equal(y[kept], x[kept] * (1.0 / (1.0 - p)))
    np.testing.assert_allclose(y.mean(), x.mean(), rtol=0.02)  # inverted scaling keeps the expectation


def test_dropout_backward_uses_the_forward_mask():
    x = Tensor(np.random.default_rng(1).standard_normal((50, 40)), requires_grad=True)
    y = dropout(x, 0.4, True, rng(5))
    dy = np.random.default_rng(2).standard_normal((50, 40))
    y.backward(dy)
    kept = y.numpy() != 0
    np.testing.assert_array_equal(x.grad[kept], dy[kept] * (1 / 0.6))
    np.testing.assert_array_equal(x.grad[~kept], 0)


def test_dropout_accepts_numpy_scalars():
    y = dropout(Tensor(np.ones(1000)), np.float32(0.5), True, rng(0)).numpy()
    assert 0.3 < (y == 0).mean() < 0.7


def test_dropout_eval_and_p0_return_x_itself():
    x = Tensor(np.ones((3, 3)), requires_grad=True)
    assert dropout(x, 0.5, False) is x
    assert dropout(x, 0.0, True, rng(0)) is x
    assert dropout(x, 0, True) is x
    a = np.ones(4)
    assert dropout(a, 0.5, False) is a


def test_dropout_same_seed_same_mask_other_seed_other_mask():
    x = Tensor(np.ones((64, 64)))
    m1 = dropout(x, 0.5, True, rng(42)).numpy() != 0
    m2 = dropout(x, 0.5, True, rng(42)).numpy() != 0
    m3 = dropout(x, 0.5, True, rng(43)).numpy() != 0
    np.testing.assert_array_equal(m1, m2)
    assert (m1 != m3).any()
    g = rng(42)  # one generator advances: two calls give two masks
    assert (dropout(x, 0.5, True, g).numpy() != dropout(x, 0.5, True, g).numpy()).any()


def test_dropout_without_generator_still_drops():
    y = dropout(Tensor(np.ones(10_000)), 0.5, True).numpy()
    assert 0.4 < (y == 0).mean() < 0.6


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), True, "0.5"])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\)"):
        dropout(Tensor(np.ones(3)), p, True, rng(0))
    with pytest.raises(ValueError, match="probability"):
        dropout(Tensor(np.ones(3)), p, False)  # checked even when it would not be used
