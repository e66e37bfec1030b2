"""npgpt/ops/layernorm.py against reference/ops.py (torch.nn.functional.layer_norm).

The parity tests run at npgpt's block sizes and at tiny ones (the `blocks` fixture, tests/conftest.py);
tests/test_fastpath.py runs layer_norm on arrays of several of npgpt's own row blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor
from npgpt.ops.layernorm import layer_norm
from tests.helpers import check_parity


def _args(rng, shape, bias, offset=0.0, scale=1.0):
    C = shape[-1]
    args = {"x": rng.standard_normal(shape) * scale + offset, "w": rng.standard_normal(C)}
    if bias:
        args["b"] = rng.standard_normal(C)
    return args


@given(B=st.integers(1, 3), T=st.integers(1, 5), C=st.integers(1, 9), bias=st.booleans(),
       eps=st.sampled_from([1e-5, 1e-3, 0.5]), offset=st.sampled_from([0.0, 3.0, -50.0]), seed=st.integers(0, 2**16))
@example(B=1, T=1, C=1, bias=True, eps=1e-5, offset=0.0, seed=0)  # C = 1: xhat = 0, only b and eps matter
@example(B=1, T=1, C=2, bias=False, eps=1e-5, offset=0.0, seed=1)
@example(B=2, T=3, C=7, bias=True, eps=1e-5, offset=3.0, seed=2)  # odd C
def test_layer_norm_parity(xp, blocks, B, T, C, bias, eps, offset, seed):
    rng = np.random.default_rng(seed)
    check_parity(layer_norm, ref.layer_norm, _args(rng, (B, T, C), bias, offset), xp=xp, seed=seed, options={"eps": eps})


@pytest.mark.parametrize("shape", [(5,), (4, 6), (2, 2, 3, 8)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layer_norm_any_leading_dims(xp, blocks, shape, dtype):
    rng = np.random.default_rng(len(shape))
    check_parity(layer_norm, ref.layer_norm, _args(rng, shape, True), dtype=dtype, xp=xp)


def test_layer_norm_grad_to_x_only(xp, blocks):
    rng = np.random.default_rng(3)
    check_parity(layer_norm, ref.layer_norm, _args(rng, (2, 3, 4), True), xp=xp, grads=("x",))


def test_layer_norm_normalises():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 16)) * 5 + 2)
    y = layer_norm(x, Tensor(np.ones(16)), eps=0.0).numpy()
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-12)


def test_layer_norm_bad_inputs():
    x = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"weight of shape \(3,\), expected \(4,\) for x \(2, 3, 4\)"):
        layer_norm(x, Tensor(np.ones(3)))
    with pytest.raises(ValueError, match=r"bias of shape \(4, 1\), expected \(4,\)"):
        layer_norm(x, Tensor(np.ones(4)), Tensor(np.ones((4, 1))))
    with pytest.raises(ValueError, match="int64"):
        layer_norm(Tensor(np.zeros((2, 4), dtype=np.int64)), Tensor(np.ones(4)))
    with pytest.raises(ValueError, match="eps"):
        layer_norm(x, Tensor(np.ones(4)), eps=-1.0)
    with pytest.raises(ValueError, match=r"\(2, 0\)"):
        layer_norm(Tensor(np.zeros((2, 0))), Tensor(np.ones(0)))
