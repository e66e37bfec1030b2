"""npgpt/ops/shape.py (reshape, transpose, getitem, split, concatenate) against reference/ops.py."""

from __future__ import annotations

import numpy as np
import pytest

import npgpt.functional as F
import reference.ops as ref
from tests.helpers import check_parity


@pytest.mark.parametrize("shape,new", [((2, 3, 4), (6, 4)), ((2, 3, 4), (-1,)), ((6,), (1, 2, 3)), ((1,), ())])
def test_reshape(xp, shape, new):
    x = np.random.default_rng(7).standard_normal(shape)
    check_parity(F.reshape, ref.reshape, {"x": x}, options={"shape": new}, xp=xp)


def test_reshape_bad():
    with pytest.raises(ValueError, match=r"\(2, 3\) into \(4,\)"):
        F.reshape(F.exp(np.zeros((2, 3))), (4,))


@pytest.mark.parametrize("axes", [None, (0, 1, 2), (2, 0, 1), (1, 0, 2), (-1, 0, 1)], ids=str)
def test_transpose(xp, axes):
    x = np.random.default_rng(8).standard_normal((2, 3, 4))
    check_parity(F.transpose, ref.transpose, {"x": x}, options={"axes": axes}, xp=xp)
    if axes is None:  # None reverses the axes, as numpy does
        check_parity(F.transpose, lambda x: x.permute(2, 1, 0), {"x": x}, xp=xp)


def test_transpose_bad():
    with pytest.raises(ValueError, match="not a permutation"):
        F.transpose(F.exp(np.zeros((2, 3))), (0, 0))


INDICES = {
    "int": 1, "negative int": -1, "slice": slice(1, 3), "step": slice(None, None, 2), "pair": (1, slice(0, 2)),
    "ellipsis": (Ellipsis, 0), "newaxis": (None, slice(None), 1),
    "repeats": np.array([0, 0, 2, 0]), "2-D ids": np.array([[1, 1], [2, 0]]),
    "two arrays": (np.array([0, 1, 1]), np.array([2, 2, 0])), "mixed": (slice(None), np.array([3, 3, 0])),
    "bool mask": np.array([True, False, True]),
}


@pytest.mark.parametrize("name", list(INDICES))
def test_getitem(xp, name):
    index = INDICES[name]
    x = np.random.default_rng(9).standard_normal((3, 4, 2))
    xp_index = tuple(xp.asarray(p) if isinstance(p, np.ndarray) else p for p in index) if isinstance(index, tuple) else (
        xp.asarray(index) if isinstance(index, np.ndarray) else index)
    check_parity(lambda x: F.getitem(x, xp_index), lambda x: ref.getitem(x, index), {"x": x}, xp=xp)
    check_parity(lambda x: x[xp_index], lambda x: ref.getitem(x, index), {"x": x}, dtype="float32", xp=xp)


@pytest.mark.parametrize("sizes", [2, [1, 3, 2], [6], [0, 6]], ids=str)
@pytest.mark.parametrize("axis", [-1, 1])
def test_split_then_concatenate(xp, sizes, axis):
    x = np.random.default_rng(10).standard_normal((2, 6, 6))

    def through(split, concatenate):
        def fn(x):
            pieces = split(x, sizes, axis=axis)
            assert isinstance(pieces, list)
            return concatenate([p * (i + 1.0) for i, p in enumerate(pieces)][::-1], axis=axis)
        return fn

    check_parity(through(F.split, F.concatenate), through(ref.split, ref.concatenate), {"x": x}, xp=xp)


def test_concatenate_three_inputs(xp):
    rng = np.random.default_rng(11)
    args = {"a": rng.standard_normal((2, 1, 3)), "b": rng.standard_normal((2, 4, 3)),
            "c": rng.standard_normal((2, 2, 3))}
    check_parity(lambda a, b, c: F.concatenate([a, b, c], axis=1), lambda a, b, c: ref.concatenate([a, b, c], axis=1),
                 args, xp=xp)


def test_split_bad_sizes():
    x = F.exp(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="does not divide into pieces of 4"):
        F.split(x, 4)
    with pytest.raises(ValueError, match=r"sizes \[2, 2\] do not add up to the axis length 6"):
        F.split(x, [2, 2])
    with pytest.raises(ValueError, match="at least one"):
        F.concatenate([])
