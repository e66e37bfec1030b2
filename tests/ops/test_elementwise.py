"""npgpt/ops/elementwise.py (add, sub, mul, div, neg, pow, exp, log, tanh) against reference/ops.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npgpt.functional as F
import reference.ops as ref
from tests.helpers import check_parity

BROADCAST_PAIRS = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 3)),
                   ((2, 3), ()), ((1, 1), (1,)), ((4, 1, 2), (1, 5, 1))]
BINARY = {name: (getattr(F, name), getattr(ref, name)) for name in ["add", "sub", "mul", "div"]}


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_binary_broadcasting(xp, op, shapes, dtype):
    rng = np.random.default_rng(len(shapes[0]) * 7 + len(shapes[1]))
    a = rng.standard_normal(shapes[0])
    b = rng.uniform(0.5, 2.0, shapes[1]) * rng.choice([-1, 1], shapes[1])  # away from 0 for div
    ours, theirs = BINARY[op]
    check_parity(ours, theirs, {"a": a, "b": b}, dtype=dtype, xp=xp)


@given(a=st.lists(st.integers(1, 3), max_size=3).map(tuple), drop=st.integers(0, 3), seed=st.integers(0, 99))
def test_binary_broadcasting_drawn(xp, a, drop, seed):
    rng = np.random.default_rng(seed)
    b = tuple(1 if rng.random() < 0.5 else n for n in a[drop:])  # a broadcastable partner
    for ours, theirs in BINARY.values():
        check_parity(ours, theirs, {"a": rng.standard_normal(a), "b": rng.uniform(0.5, 2, b)}, xp=xp, seed=seed)


UNARY = {"neg": False, "exp": False, "log": True, "tanh": False}  # name -> needs a positive input


@pytest.mark.parametrize("op", list(UNARY))
@pytest.mark.parametrize("shape", [(), (1,), (3, 5)], ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_unary(xp, op, shape, dtype):
    rng = np.random.default_rng(2)
    x = rng.uniform(0.1, 3.0, shape) if UNARY[op] else rng.standard_normal(shape)
    check_parity(getattr(F, op), getattr(ref, op), {"x": x}, dtype=dtype, xp=xp)


@pytest.mark.parametrize("p", [2, 3, 0.5, -1, -2.5, 0, 1])
def test_pow(xp, p):
    x = np.random.default_rng(3).uniform(0.2, 2.0, (3, 4))
    check_parity(F.pow, ref.pow, {"x": x}, options={"p": p}, xp=xp)
    check_parity(lambda x: x**p, lambda x: ref.pow(x, p), {"x": x}, dtype="float32", xp=xp)  # Tensor.__pow__


def test_pow_rejects_tensor_exponent():
    with pytest.raises(ValueError, match="scalar exponent"):
        F.pow(F.exp(np.zeros(2)), np.ones(2))
