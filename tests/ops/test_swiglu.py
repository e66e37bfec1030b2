"""npgpt/ops/swiglu.py (fused gate/up -> SiLU * up -> down) against reference/ops.py.

The parity tests run at npgpt's block sizes and at tiny ones (the `blocks` fixture, tests/conftest.py);
tests/test_fastpath.py runs the op with a hidden layer of several of npgpt's own row blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor, no_grad
from npgpt.gradcheck import check_op
from npgpt.ops.swiglu import swiglu_mlp
from tests.helpers import check_parity

NAMES = ("x", "w_gate", "w_up", "w_down", "b_gate", "b_up", "b_down")


def _args(rng, lead, C, H, Cout, biases=(False, False, False), gate_scale=1.0):
    bg, bu, bd = biases
    return {
        "x": rng.standard_normal((*lead, C)),
        "w_gate": rng.standard_normal((C, H)) / np.sqrt(C) * gate_scale,
        "w_up": rng.standard_normal((C, H)) / np.sqrt(C),
        "w_down": rng.standard_normal((H, Cout)) / np.sqrt(H),
        "b_gate": rng.standard_normal(H) if bg else None,
        "b_up": rng.standard_normal(H) if bu else None,
        "b_down": rng.standard_normal(Cout) if bd else None,
    }


def _run(args, **kw):
    """check_parity wants arrays only: the absent biases travel as options (None on both sides)."""
    present = {k: v for k, v in args.items() if v is not None}
    absent = {k: None for k, v in args.items() if v is None}
    return check_parity(swiglu_mlp, ref.swiglu_mlp, present, options={**absent, **kw.pop("options", {})}, **kw)


@given(B=st.integers(1, 3), T=st.integers(1, 4), C=st.integers(1, 6), H=st.integers(1, 12), Cout=st.integers(1, 6),
       biases=st.tuples(st.booleans(), st.booleans(), st.booleans()), gate_scale=st.sampled_from([1.0, 30.0]),
       seed=st.integers(0, 2**16))
@example(B=1, T=1, C=1, H=1, Cout=1, biases=(True, True, True), gate_scale=1.0, seed=0)
@example(B=2, T=3, C=4, H=11, Cout=4, biases=(False, False, False), gate_scale=1.0, seed=1)  # Llama: no biases
@example(B=1, T=2, C=3, H=8, Cout=3, biases=(False, False, False), gate_scale=300.0, seed=2)  # sigmoid saturated both ways
def test_swiglu_mlp_parity(xp, blocks, B, T, C, H, Cout, biases, gate_scale, seed):
    rng = np.random.default_rng(seed)
    _run(_args(rng, (B, T), C, H, Cout, biases, gate_scale), xp=xp, seed=seed, tol=1e-12)


def test_swiglu_mlp_float32_and_2d_input(xp, blocks):
    rng = np.random.default_rng(3)
    _run(_args(rng, (2, 4), 8, 24, 8), dtype="float32", xp=xp)
    _run(_args(rng, (5,), 4, 16, 4, (True, True, True)), xp=xp)


@pytest.mark.parametrize("grads", [("x",), ("w_gate", "b_down"), ("w_up",), ("w_down",), ("b_gate", "b_up")])
def test_swiglu_mlp_partial_gradients(xp, blocks, grads):
    _run(_args(np.random.default_rng(4), (2, 3), 4, 8, 4, (True, True, True)), xp=xp, grads=grads)


def test_swiglu_mlp_no_grad_equals_recorded():
    args = {k: (Tensor(v) if v is not None else None) for k, v in _args(np.random.default_rng(5), (2, 3), 4, 8, 4, (True, True, True)).items()}
    recorded = swiglu_mlp(**{k: (Tensor(v.data, requires_grad=True) if v is not None else None) for k, v in args.items()})
    with no_grad():
        plain = swiglu_mlp(**args)
    np.testing.assert_array_equal(plain.numpy(), recorded.numpy())


def test_swiglu_mlp_finite_differences():
    args = {k: v for k, v in _args(np.random.default_rng(6), (2, 2), 3, 5, 3, (True, True, True)).items()}
    r = check_op(lambda **a: swiglu_mlp(**a), args, name="swiglu_mlp")
    assert r.passed and r.checks > 0, r


def test_swiglu_mlp_bad_inputs():
    x, wg, wd = Tensor(np.zeros((2, 4))), Tensor(np.zeros((4, 8))), Tensor(np.zeros((8, 4)))
    with pytest.raises(ValueError, match=r"x \(2, 3\), w_gate \(4, 8\), w_up \(4, 8\), w_down \(8, 4\)"):
        swiglu_mlp(Tensor(np.zeros((2, 3))), wg, wg, wd)
    with pytest.raises(ValueError, match=r"w_up \(4, 7\)"):
        swiglu_mlp(x, wg, Tensor(np.zeros((4, 7))), wd)
    with pytest.raises(ValueError, match=r"w_down \(7, 4\)"):
        swiglu_mlp(x, wg, wg, Tensor(np.zeros((7, 4))))
    with pytest.raises(ValueError, match=r"b_up of shape \(4,\), expected \(8,\)"):
        swiglu_mlp(x, wg, wg, wd, b_up=Tensor(np.zeros(4)))
    with pytest.raises(ValueError, match=r"b_down of shape \(8,\), expected \(4,\)"):
        swiglu_mlp(x, wg, wg, wd, b_down=Tensor(np.zeros(8)))
    with pytest.raises(ValueError, match="int64"):
        swiglu_mlp(Tensor(np.zeros((2, 4), dtype=np.int64)), wg, wg, wd)
