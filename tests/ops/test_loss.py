"""npgpt/ops/loss.py: fused cross-entropy against PyTorch, the composed graph, ignore_index, bad input.

The float64 parity runs at npgpt's block sizes and at tiny ones (the `blocks` fixture,
tests/conftest.py); tests/test_fastpath.py runs it on logits of a training batch's size.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import npgpt.functional as F
import reference.ops as R
from npgpt import Tensor
from tests.helpers import assert_close, check_parity

# lead: the shape of targets (logits add V); ignore: fraction of targets set to ignore_index
cases = st.tuples(
    st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple),
    st.integers(2, 9),
    st.sampled_from([0.0, 0.3, 0.8]),
)
# the edges, drawn on every run: one row, V = 2, batch 1, repeated targets, all ignored but one
EDGES = [((1,), 2, 0.0), ((), 2, 0.0), ((1, 1), 5, 0.0), ((6,), 2, "repeat"), ((2, 3), 4, "all_but_one"), ((4, 4), 3, "repeat")]


def _data(lead, V, ignore, seed, scale=3.0):
    r = np.random.default_rng(seed)
    logits = r.standard_normal(lead + (V,)) * scale
    targets = r.integers(0, V, size=lead)
    if ignore == "repeat":
        targets[...] = V - 1
    elif ignore == "all_but_one":
        targets[...] = -100
        targets.reshape(-1)[-1] = r.integers(0, V)
    elif ignore:
        targets[r.random(lead) < ignore] = -100
    return logits, targets


def _with_edges(test):
    for e in EDGES:
        test = example(case=e, seed=0)(test)
    return test


@given(case=cases, seed=st.integers(0, 2**16))
@_with_edges
def test_parity_float64(xp, blocks, case, seed):
    logits, targets = _data(*case, seed)
    check_parity(F.cross_entropy, R.cross_entropy, {"logits": logits, "targets": targets}, xp=xp, seed=seed)


@given(case=cases, seed=st.integers(0, 2**16))
@_with_edges
def test_parity_float32(xp, case, seed):
    logits, targets = _data(*case, seed)
    check_parity(F.cross_entropy, R.cross_entropy, {"logits": logits, "targets": targets}, dtype="float32", xp=xp, seed=seed)


def test_large_logits_stay_finite(xp):
    logits, targets = _data((3, 5), 7, 0.0, 1, scale=1e4)
    y, _ = check_parity(F.cross_entropy, R.cross_entropy, {"logits": logits, "targets": targets}, xp=xp)
    assert np.isfinite(float(y.data))


def test_all_targets_ignored_gives_nan_and_zero_grad_like_pytorch(xp):
    logits, targets = _data((2, 3), 4, 0.0, 2)
    targets[...] = -100
    y, yt = check_parity(F.cross_entropy, R.cross_entropy, {"logits": logits, "targets": targets}, xp=xp)
    assert np.isnan(float(y.data)) and np.isnan(yt.item())


def test_custom_ignore_index_inside_the_vocabulary():
    logits, targets = _data((8,), 3, 0.0, 3)
    targets[:4] = 0
    check_parity(lambda logits, targets: F.cross_entropy(logits, targets, ignore_index=0),
                 lambda logits, targets: R.cross_entropy(logits, targets, ignore_index=0),
                 {"logits": logits, "targets": targets})


def _cross_entropy_composed(logits, targets, ignore_index=-100):
    """The same loss from npgpt's primitive ops, differentiated by the autograd."""
    V = logits.shape[-1]
    X = logits.reshape(-1, V)
    t = targets.reshape(-1)
    valid = t != ignore_index
    z = X - X.max(axis=-1, keepdims=True)
    logp = z - z.exp().sum(axis=-1, keepdims=True).log()  # (R, V)
    picked = logp[np.arange(t.size), np.where(valid, t, 0)]  # (R,)
    return -(picked * valid.astype(np.float64)).sum() / float(valid.sum())


@given(case=cases, seed=st.integers(0, 2**16))
@example(case=((6,), 2, "repeat"), seed=0)
@example(case=((2, 3), 4, "all_but_one"), seed=0)
def test_fused_equals_composed_primitives(case, seed):
    logits, targets = _data(*case, seed)
    if not (targets != -100).any():
        targets.reshape(-1)[0] = 0
    x1, x2 = Tensor(logits, requires_grad=True), Tensor(logits.copy(), requires_grad=True)
    y1, y2 = F.cross_entropy(x1, targets), _cross_entropy_composed(x2, targets)
    assert_close(y1.data, y2.data, "float64", "loss")
    y1.backward()
    y2.backward()
    assert_close(x1.grad, x2.grad, "float64", "grad of logits")


def test_gradient_is_softmax_minus_onehot_over_n():
    logits = np.array([[0.0, 0.0], [1.0, 2.0], [5.0, 5.0]])
    targets = np.array([1, -100, 0])
    x = Tensor(logits, requires_grad=True)
    F.cross_entropy(x, targets).backward()
    np.testing.assert_allclose(x.grad, [[0.25, -0.25], [0.0, 0.0], [-0.25, 0.25]], atol=1e-15)


def test_targets_may_be_a_tensor():
    logits, targets = _data((4,), 3, 0.0, 5)
    assert float(F.cross_entropy(Tensor(logits), Tensor(targets)).data) == float(F.cross_entropy(Tensor(logits), targets).data)


@pytest.mark.parametrize("bad", [5, -1, -101, 100])
def test_targets_out_of_range_raise_index_error(bad):
    targets = np.array([0, 1, bad, -100])
    with pytest.raises(IndexError, match=rf"target {bad} .*V = 5"):
        F.cross_entropy(Tensor(np.zeros((4, 5))), targets)


@pytest.mark.parametrize("logits_shape,targets_shape", [((4, 5), (3,)), ((2, 3, 5), (3, 2)), ((2, 3, 5), (6,)), ((4, 5), (4, 5))])
def test_shape_mismatch_raises(logits_shape, targets_shape):
    with pytest.raises(ValueError, match=rf"targets of shape {targets_shape!r:s}".replace("(", r"\(").replace(")", r"\)")):
        F.cross_entropy(Tensor(np.zeros(logits_shape)), np.zeros(targets_shape, dtype=np.int64))


def test_bad_dtypes_raise():
    with pytest.raises(ValueError, match="integer targets"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.zeros(2))
    with pytest.raises(ValueError, match="floating-point"):
        F.cross_entropy(Tensor(np.zeros((2, 3), dtype=np.int64)), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="V >= 1"):
        F.cross_entropy(Tensor(np.zeros((2, 0))), np.zeros(2, dtype=np.int64))


@given(case=cases, seed=st.integers(0, 2**16))
@_with_edges
def test_sum_reduction_parity_float64(xp, case, seed):
    """reduction="sum" (what a training step on SFT data divides by its own count) against PyTorch's."""
    logits, targets = _data(*case, seed)
    check_parity(F.cross_entropy, R.cross_entropy, {"logits": logits, "targets": targets}, xp=xp, seed=seed,
                 options={"reduction": "sum"})


def test_sum_reduction_with_every_target_ignored_is_zero_not_nan(xp):
    logits, targets = _data((2, 3), 4, 0.0, 2)
    targets[...] = -100
    y, yt = check_parity(F.cross_entropy, R.cross_entropy, {"logits": logits, "targets": targets}, xp=xp,
                         options={"reduction": "sum"})
    assert float(y.data) == 0.0 and yt.item() == 0.0


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        F.cross_entropy(np.zeros((2, 3)), np.zeros(2, dtype=np.int64), reduction="none")
