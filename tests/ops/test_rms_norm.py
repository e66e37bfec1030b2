"""npgpt/ops/rms_norm.py against reference/ops.py (Hugging Face's RMSNorm written in torch, float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor
from npgpt.gradcheck import check_op
from npgpt.ops.rms_norm import rms_norm
from tests.helpers import check_parity, rel_error


def _args(rng, shape, offset=0.0, scale=1.0):
    return {"x": rng.standard_normal(shape) * scale + offset, "w": rng.standard_normal(shape[-1])}


@given(B=st.integers(1, 3), T=st.integers(1, 5), C=st.integers(1, 9), eps=st.sampled_from([1e-6, 1e-5, 0.5]),
       offset=st.sampled_from([0.0, 3.0, -50.0]), scale=st.sampled_from([1.0, 1e-3, 100.0]), seed=st.integers(0, 2**16))
@example(B=1, T=1, C=1, eps=1e-6, offset=0.0, scale=1.0, seed=0)  # C = 1: y = w * x / sqrt(x^2 + eps)
@example(B=1, T=1, C=2, eps=1e-6, offset=0.0, scale=1.0, seed=1)
@example(B=2, T=3, C=7, eps=1e-5, offset=3.0, scale=1.0, seed=2)  # odd C
def test_rms_norm_parity(xp, B, T, C, eps, offset, scale, seed):
    rng = np.random.default_rng(seed)
    check_parity(rms_norm, ref.rms_norm, _args(rng, (B, T, C), offset, scale), xp=xp, seed=seed, options={"eps": eps},
                 tol=1e-12)


@given(B=st.integers(1, 2), NH=st.integers(1, 4), T=st.integers(1, 4), HS=st.sampled_from([1, 2, 4, 8, 16]),
       seed=st.integers(0, 2**16))
@example(B=1, NH=1, T=1, HS=2, seed=0)
def test_rms_norm_over_heads_shared_weight(xp, B, NH, T, HS, seed):
    """Qwen3's QK-norm: x (B, NH, T, HS), one weight (HS,) shared by every head."""
    rng = np.random.default_rng(seed)
    check_parity(rms_norm, ref.rms_norm, _args(rng, (B, NH, T, HS)), xp=xp, seed=seed, tol=1e-12)


@pytest.mark.parametrize("shape", [(5,), (4, 6), (2, 2, 3, 8)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rms_norm_any_leading_dims(xp, shape, dtype):
    rng = np.random.default_rng(len(shape))
    check_parity(rms_norm, ref.rms_norm, _args(rng, shape), dtype=dtype, xp=xp)


@pytest.mark.parametrize("grads", [("x",), ("w",)])
def test_rms_norm_partial_gradients(xp, grads):
    check_parity(rms_norm, ref.rms_norm, _args(np.random.default_rng(3), (2, 3, 4)), xp=xp, grads=grads)


def test_rms_norm_finite_differences():
    rng = np.random.default_rng(4)
    r = check_op(lambda x, w: rms_norm(x, w, 1e-5), _args(rng, (2, 3, 5)), name="rms_norm")
    assert r.passed and r.checks > 0, r


def test_rms_norm_normalises_and_matches_hf():
    transformers = pytest.importorskip("transformers")
    import torch
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x = np.random.default_rng(0).standard_normal((3, 16)) * 5 + 2
    y = rms_norm(Tensor(x), Tensor(np.ones(16)), eps=0.0).numpy()
    np.testing.assert_allclose((y**2).mean(-1), 1, atol=1e-12)
    # HF casts to float32 inside; in float32 it must agree with ours to float32 rounding
    hf = LlamaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        hf.weight.copy_(torch.linspace(-1, 2, 16))
        want = hf(torch.tensor(x, dtype=torch.float32))
    got = rms_norm(Tensor(x.astype(np.float32)), Tensor(np.linspace(-1, 2, 16).astype(np.float32)), 1e-6)
    assert rel_error(got.data, want) < 1e-6, transformers.__version__


def test_rms_norm_bad_inputs():
    x = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"weight of shape \(3,\), expected \(4,\) for x \(2, 3, 4\)"):
        rms_norm(x, Tensor(np.ones(3)))
    with pytest.raises(ValueError, match="int64"):
        rms_norm(Tensor(np.zeros((2, 4), dtype=np.int64)), Tensor(np.ones(4)))
    with pytest.raises(ValueError, match="eps"):
        rms_norm(x, Tensor(np.ones(4)), eps=-1.0)
    with pytest.raises(ValueError, match=r"\(2, 0\)"):
        rms_norm(Tensor(np.zeros((2, 0))), Tensor(np.ones(0)))
