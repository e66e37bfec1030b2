"""npgpt/ops/reduce.py (sum, mean, max) against reference/ops.py."""

from __future__ import annotations

import numpy as np
import pytest

import npgpt.functional as F
import reference.ops as ref
from tests.helpers import check_parity

AXES = [None, 0, -1, (0, 2), (1,), (0, 1, 2)]


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(xp, name, axis, keepdims):
    x = np.random.default_rng(4).standard_normal((2, 3, 4))
    check_parity(getattr(F, name), getattr(ref, name), {"x": x}, options={"axis": axis, "keepdims": keepdims}, xp=xp)


@pytest.mark.parametrize("axis", AXES, ids=str)
def test_max_with_ties(xp, axis):
    x = np.random.default_rng(5).integers(0, 3, (2, 3, 4)).astype(np.float64)  # many ties
    check_parity(F.max, ref.max, {"x": x}, options={"axis": axis}, xp=xp)
    check_parity(F.max, ref.max, {"x": x}, options={"axis": axis}, dtype="float32", xp=xp)


def test_reduction_bad_axis():
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        F.sum(F.exp(np.zeros((2, 3))), axis=3)
