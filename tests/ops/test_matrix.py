"""npgpt/ops/matrix.py (matmul, linear) against reference/ops.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import npgpt.functional as F
import reference.ops as ref
from tests.helpers import check_parity

MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 5)), ((3, 4), (4,)),
                 ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((1, 1), (1, 1)), ((3, 4), (2, 4, 1))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matmul(xp, shapes, dtype):
    rng = np.random.default_rng(6)
    check_parity(F.matmul, ref.matmul, {"a": rng.standard_normal(shapes[0]), "b": rng.standard_normal(shapes[1])},
                 dtype=dtype, xp=xp)


def test_matmul_bad_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 2\)"):
        F.matmul(np.zeros((3, 4)), F.exp(np.zeros((5, 2))))


@given(lead=st.lists(st.integers(1, 3), max_size=2).map(tuple), cin=st.integers(1, 5), cout=st.integers(1, 5),
       bias=st.booleans(), seed=st.integers(0, 99))
@example(lead=(), cin=1, cout=1, bias=False, seed=0)
@example(lead=(1, 1), cin=1, cout=1, bias=True, seed=0)
def test_linear(xp, lead, cin, cout, bias, seed):
    rng = np.random.default_rng(seed)
    args = {"x": rng.standard_normal((*lead, cin)), "w": rng.standard_normal((cin, cout))}
    if bias:
        args["b"] = rng.standard_normal(cout)
    check_parity(F.linear, ref.linear, args, xp=xp, seed=seed)
    check_parity(F.linear, ref.linear, args, dtype="float32", xp=xp, seed=seed)


def test_linear_bad_shapes():
    x = F.exp(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"x \(2, 3\) @ w \(4, 5\)"):
        F.linear(x, np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"bias of shape \(4,\), expected \(5,\)"):
        F.linear(x, np.zeros((3, 5)), np.zeros(4))
