"""The autograd engine in npgpt/tensor.py and npgpt/function.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import npgpt.functional as F
from npgpt import Tensor, no_grad, tensor


def leaf(a, dtype=np.float64):
    return Tensor(np.asarray(a, dtype=dtype), requires_grad=True)


def test_a_10000_op_chain_backward_without_recursion():
    x = leaf([0.5, -0.25])
    y = x
    n = 10_000
    assert n > sys.getrecursionlimit()
    for _ in range(n):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 1.0001**n, rtol=1e-10)


def test_x_times_x_accumulates_both_uses():
    x = leaf([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.data)


def test_two_branches_accumulate():
    x = leaf([1.0, 2.0])
    a = x.exp()
    b = x * 3.0
    (a + b + a * b).sum().backward()  # d/dx [e^x + 3x + 3x e^x] = e^x + 3 + 3 e^x + 3x e^x
    e = np.exp(x.data)
    np.testing.assert_allclose(x.grad, e + 3 + 3 * e + 3 * x.data * e, rtol=1e-14)


def test_diamond_graph_visits_each_node_once():
    x = leaf([2.0])
    h = x * x  # used twice below
    (h + h).sum().backward()
    np.testing.assert_array_equal(x.grad, [8.0])


def test_leaf_grad_accumulates_across_backward_calls_until_zeroed():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_no_grad_builds_no_graph_and_restores():
    x = leaf([1.0])
    with no_grad():
        y = x * 2.0
        assert not y.requires_grad and y.is_leaf
    z = x * 2.0
    assert z.requires_grad and not z.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_restores_after_an_exception():
    with pytest.raises(ZeroDivisionError), no_grad():
        1 / 0
    assert (leaf([1.0]) * 2.0).requires_grad


def test_detach_cuts_the_graph():
    x = leaf([1.0, 2.0])
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    (x * d).sum().backward()  # d is a constant here
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_backward_on_non_scalar_without_grad_raises():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(RuntimeError, match=r"needs a scalar, got shape \(2,\)"):
        y.backward()


def test_backward_with_grad_of_wrong_shape_raises():
    y = leaf([[1.0, 2.0]]) * 2.0
    with pytest.raises(ValueError, match=r"grad has shape \(2,\), tensor has \(1, 2\)"):
        y.backward(np.ones(2))


def test_backward_with_a_given_grad():
    x = leaf([1.0, 2.0])
    (x * 3.0).backward(np.array([1.0, -1.0]))
    np.testing.assert_array_equal(x.grad, [3.0, -3.0])


@pytest.mark.parametrize("op", [
    lambda x: x * 0.5, lambda x: 0.5 * x, lambda x: x + 1, lambda x: 2.0 - x, lambda x: x / 3.0,
    lambda x: 1.0 / x, lambda x: x**2, lambda x: -x, lambda x: F.mul(x, 2.5),
])
def test_python_scalars_keep_float32(op):
    x = leaf([1.0, 2.0], dtype=np.float32)
    y = op(x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_inputs_without_grad_get_none():
    x, c = leaf([1.0, 2.0]), Tensor(np.array([3.0, 4.0]))
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_tensor_factory_and_facts():
    t = tensor([[1, 2], [3, 4]], dtype="float32", requires_grad=True)
    assert t.shape == (2, 2) and t.dtype == np.float32 and t.ndim == 2 and t.size == 4 and len(t) == 2
    assert t.device == "cpu" and t.requires_grad and t.is_leaf
    assert tensor(np.ones(1)).item() == 1.0
    with pytest.raises(ValueError, match=r"one element, got shape \(2, 2\)"):
        t.item()
