"""The autograd engine in npgpt/tensor.py and npgpt/function.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import npgpt.functional as F
from npgpt import Tensor, as_tensor, no_grad


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
    t = as_tensor([[1, 2], [3, 4]], dtype="float32", requires_grad=True)
    assert t.shape == (2, 2) and t.dtype == np.float32 and t.ndim == 2 and t.size == 4 and len(t) == 2
    assert t.device == "cpu" and t.requires_grad and t.is_leaf
    assert as_tensor(np.ones(1)).item() == 1.0
    with pytest.raises(ValueError, match=r"one element, got shape \(2, 2\)"):
        t.item()


def _own_memory(*leaves):
    """No two leaves' gradients share memory, and none is a view of another array."""
    for i, a in enumerate(leaves):
        assert a.grad.base is None, f"leaf {i}'s gradient is a view"
        for b in leaves[i + 1:]:
            assert not np.shares_memory(a.grad, b.grad)


@pytest.mark.parametrize("graph", ["add", "broadcast", "reshape", "getitem", "used twice", "sub", "chain"])
def test_leaf_gradients_never_share_memory(graph):
    """One upstream array can flow to several leaves (Add hands dy to both inputs, reshape and
    getitem pass views); each leaf must still own its gradient, so scaling one in place (as
    clip_grad_norm and the optimizer do) leaves the others alone."""
    from npgpt.training.optim import clip_grad_norm

    a, b = leaf(np.ones(3)), leaf(np.ones(3))
    if graph == "add":
        y = a + b
    elif graph == "broadcast":
        b = leaf(np.ones((1, 3)))
        y = a + b  # (1, 3): b's gradient is dy itself, a's a sum over the broadcast axis
    elif graph == "reshape":
        y = a.reshape(3, 1).reshape(3) + b.reshape(1, 3).reshape(3)
    elif graph == "getitem":
        y = a[0:3] + b[:]
    elif graph == "used twice":
        y = a + a + b
    elif graph == "sub":
        y = a - (-b)
    else:
        y = ((a + b) + 0.0) * 1.0
    y.sum().backward()
    _own_memory(a, b)
    norm_before = float(np.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum()))
    clip_grad_norm([a, b], 1.0)
    norm_after = float(np.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum()))
    assert norm_before > 1.0
    assert norm_after == pytest.approx(norm_before / (norm_before + 1e-6), rel=1e-12)  # 0.41 when the two shared one array


def test_first_gradient_does_not_alias_a_given_upstream_array():
    x = leaf([1.0, 2.0])
    g = np.array([1.0, -1.0])
    (x + 0.0).backward(g)
    g[:] = 7.0
    np.testing.assert_array_equal(x.grad, [1.0, -1.0])


def test_backward_frees_the_graph_and_a_second_pass_is_a_clear_error():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    fn = y._fn
    assert fn.released and not hasattr(fn, "inputs")
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_keeps_the_graph_for_a_second_pass():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])  # 2 * 2x
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_saved_arrays_are_released_as_backward_walks():
    """After backward nothing of the graph's saved state stays reachable from the loss."""
    import gc
    import weakref

    x = leaf(np.ones(1000))
    h = x * 2.0
    saved = weakref.ref(h._fn)  # the Mul node's Function
    y = (h * h).sum()
    del h
    y.backward()
    gc.collect()
    fn = saved()
    assert fn is None or fn.released
