"""The core ops (elementwise, reduce, matmul/linear, shape) against torch twins, float64 and float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
import npgpt.functional as F
from tests.helpers import check_parity

BROADCAST_PAIRS = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 3)),
                   ((2, 3), ()), ((1, 1), (1,)), ((4, 1, 2), (1, 5, 1))]
BINARY = {  # twins take (a, b) by name, as check_parity passes them
    "add": (F.add, lambda a, b: a + b), "sub": (F.sub, lambda a, b: a - b),
    "mul": (F.mul, lambda a, b: a * b), "div": (F.div, lambda a, b: a / b),
}


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


UNARY = {
    "neg": (F.neg, torch.neg, False), "exp": (F.exp, torch.exp, False), "log": (F.log, torch.log, True),
    "tanh": (F.tanh, torch.tanh, False),
}


@pytest.mark.parametrize("op", list(UNARY))
@pytest.mark.parametrize("shape", [(), (1,), (3, 5)], ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_unary(xp, op, shape, dtype):
    ours, theirs, positive = UNARY[op]
    rng = np.random.default_rng(2)
    x = rng.uniform(0.1, 3.0, shape) if positive else rng.standard_normal(shape)
    check_parity(lambda x: ours(x), lambda x: theirs(x), {"x": x}, dtype=dtype, xp=xp)


@pytest.mark.parametrize("p", [2, 3, 0.5, -1, -2.5, 0, 1])
def test_pow(xp, p):
    x = np.random.default_rng(3).uniform(0.2, 2.0, (3, 4))
    check_parity(lambda x: F.pow(x, p), lambda x: x**p, {"x": x}, xp=xp)
    check_parity(lambda x: x**p, lambda x: x**p, {"x": x}, dtype="float32", xp=xp)


def test_pow_rejects_tensor_exponent():
    with pytest.raises(ValueError, match="scalar exponent"):
        F.pow(F.exp(np.zeros(2)), np.ones(2))


AXES = [None, 0, -1, (0, 2), (1,), (0, 1, 2)]


def _torch_reduce(name, x, axis, keepdims):
    dims = tuple(range(x.ndim)) if axis is None else axis
    if name == "sum":
        return x.sum(dim=dims, keepdim=keepdims)
    if name == "mean":
        return x.mean(dim=dims, keepdim=keepdims)
    return torch.amax(x, dim=dims, keepdim=keepdims)  # shares dy equally among ties, as npgpt does


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(xp, name, axis, keepdims):
    x = np.random.default_rng(4).standard_normal((2, 3, 4))
    check_parity(lambda x: getattr(F, name)(x, axis=axis, keepdims=keepdims),
                 lambda x: _torch_reduce(name, x, axis, keepdims), {"x": x}, xp=xp)


@pytest.mark.parametrize("axis", AXES, ids=str)
def test_max_with_ties(xp, axis):
    x = np.random.default_rng(5).integers(0, 3, (2, 3, 4)).astype(np.float64)  # many ties
    check_parity(lambda x: F.max(x, axis=axis), lambda x: _torch_reduce("max", x, axis, False), {"x": x}, xp=xp)
    check_parity(lambda x: F.max(x, axis=axis), lambda x: _torch_reduce("max", x, axis, False), {"x": x},
                 dtype="float32", xp=xp)


def test_reduction_bad_axis():
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        F.sum(F.exp(np.zeros((2, 3))), axis=3)


MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 5)), ((3, 4), (4,)),
                 ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((1, 1), (1, 1)), ((3, 4), (2, 4, 1))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matmul(xp, shapes, dtype):
    rng = np.random.default_rng(6)
    check_parity(F.matmul, lambda a, b: a @ b, {"a": rng.standard_normal(shapes[0]), "b": rng.standard_normal(shapes[1])},
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


@pytest.mark.parametrize("shape,new", [((2, 3, 4), (6, 4)), ((2, 3, 4), (-1,)), ((6,), (1, 2, 3)), ((1,), ())])
def test_reshape(xp, shape, new):
    x = np.random.default_rng(7).standard_normal(shape)
    check_parity(lambda x: F.reshape(x, new), lambda x: x.reshape(new), {"x": x}, xp=xp)


def test_reshape_bad():
    with pytest.raises(ValueError, match=r"\(2, 3\) into \(4,\)"):
        F.reshape(F.exp(np.zeros((2, 3))), (4,))


@pytest.mark.parametrize("axes", [None, (0, 1, 2), (2, 0, 1), (1, 0, 2), (-1, 0, 1)], ids=str)
def test_transpose(xp, axes):
    x = np.random.default_rng(8).standard_normal((2, 3, 4))
    twin = (lambda x: x.permute(2, 1, 0)) if axes is None else (lambda x: x.permute(*axes))
    check_parity(lambda x: F.transpose(x, axes), twin, {"x": x}, xp=xp)


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


def _torch_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    out = tuple(torch.as_tensor(p) if isinstance(p, np.ndarray) else p for p in parts)
    return out if isinstance(index, tuple) else out[0]


@pytest.mark.parametrize("name", list(INDICES))
def test_getitem(xp, name):
    index = INDICES[name]
    x = np.random.default_rng(9).standard_normal((3, 4, 2))
    xp_index = tuple(xp.asarray(p) if isinstance(p, np.ndarray) else p for p in index) if isinstance(index, tuple) else (
        xp.asarray(index) if isinstance(index, np.ndarray) else index)
    check_parity(lambda x: F.getitem(x, xp_index), lambda x: x[_torch_index(index)], {"x": x}, xp=xp)
    check_parity(lambda x: x[xp_index], lambda x: x[_torch_index(index)], {"x": x}, dtype="float32", xp=xp)


@pytest.mark.parametrize("sizes", [2, [1, 3, 2], [6], [0, 6]], ids=str)
@pytest.mark.parametrize("axis", [-1, 1])
def test_split_then_concatenate(xp, sizes, axis):
    x = np.random.default_rng(10).standard_normal((2, 6, 6))

    def ours(x):
        pieces = F.split(x, sizes, axis=axis)
        return F.concatenate([p * (i + 1.0) for i, p in enumerate(pieces)][::-1], axis=axis)

    def theirs(x):
        pieces = torch.split(x, sizes, dim=axis)
        return torch.cat([p * (i + 1.0) for i, p in enumerate(pieces)][::-1], dim=axis)

    check_parity(ours, theirs, {"x": x}, xp=xp)


def test_concatenate_three_inputs(xp):
    rng = np.random.default_rng(11)
    args = {"a": rng.standard_normal((2, 1, 3)), "b": rng.standard_normal((2, 4, 3)), "c": rng.standard_normal((2, 2, 3))}
    check_parity(lambda a, b, c: F.concatenate([a, b, c], axis=1), lambda a, b, c: torch.cat([a, b, c], dim=1), args, xp=xp)


def test_split_bad_sizes():
    x = F.exp(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="does not divide into pieces of 4"):
        F.split(x, 4)
    with pytest.raises(ValueError, match=r"sizes \[2, 2\] do not add up to the axis length 6"):
        F.split(x, [2, 2])
    with pytest.raises(ValueError, match="at least one"):
        F.concatenate([])
