"""npgpt/ops/rope.py: rope against reference/ops.py (Hugging Face's rotate-half RoPE, float64), and
rope_inv_freq / rope_cos_sin against transformers' own tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor
from npgpt.gradcheck import check_op
from npgpt.ops.rope import rope, rope_cos_sin, rope_inv_freq
from tests.helpers import check_parity, rel_error

LLAMA3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def _tables(HS, start, T, theta=10000.0, dtype="float64", **kw):
    inv = rope_inv_freq(HS, theta, **kw)
    return rope_cos_sin(np.arange(start, start + T), inv, dtype=dtype)


@given(B=st.integers(1, 2), NH=st.integers(1, 4), T=st.integers(1, 6), HS=st.sampled_from([2, 4, 6, 8, 16, 32]),
       start=st.sampled_from([0, 1, 7, 1000]), rope_type=st.sampled_from(["default", "linear", "llama3"]),
       theta=st.sampled_from([10000.0, 500000.0, 1e6]), seed=st.integers(0, 2**16))
@example(B=1, NH=1, T=1, HS=2, start=0, rope_type="default", theta=10000.0, seed=0)  # position 0: y = x
@example(B=1, NH=1, T=1, HS=2, start=5, rope_type="default", theta=10000.0, seed=1)
def test_rope_parity(xp, B, NH, T, HS, start, rope_type, theta, seed):
    rng = np.random.default_rng(seed)
    kw = {} if rope_type == "default" else {"factor": 8.0} if rope_type == "linear" else LLAMA3
    cos, sin = _tables(HS, start, T, theta, rope_type=rope_type, **kw)
    args = {"x": rng.standard_normal((B, NH, T, HS)), "cos": cos, "sin": sin}
    check_parity(rope, ref.rope, args, xp=xp, seed=seed, grads=("x",), tol=1e-14)


def test_rope_float32_and_broadcast_tables(xp):
    rng = np.random.default_rng(2)
    cos, sin = _tables(8, 3, 5)
    check_parity(rope, ref.rope, {"x": rng.standard_normal((2, 3, 5, 8)), "cos": cos, "sin": sin}, dtype="float32",
                 xp=xp, grads=("x",))
    # (B, 1, T, HS) tables (per-sequence positions) broadcast over the heads
    cb, sb = np.stack([cos, cos[::-1]])[:, None], np.stack([sin, sin[::-1]])[:, None]
    check_parity(rope, ref.rope, {"x": rng.standard_normal((2, 3, 5, 8)), "cos": cb, "sin": sb}, xp=xp, grads=("x",))


def test_rope_backward_is_the_inverse_rotation():
    """R is orthogonal: rope with -sin undoes rope, and the gradient of <dy, R x> is R^T dy = rope(dy, cos, -sin)."""
    rng = np.random.default_rng(3)
    cos, sin = _tables(16, 11, 4)
    x = Tensor(rng.standard_normal((2, 2, 4, 16)), requires_grad=True)
    y = rope(x, cos, sin)
    np.testing.assert_allclose(rope(y.detach(), cos, -sin).numpy(), x.numpy(), atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(y.numpy(), axis=-1), np.linalg.norm(x.numpy(), axis=-1), rtol=1e-14)
    dy = rng.standard_normal(y.shape)
    y.backward(dy)
    np.testing.assert_allclose(x.grad, rope(Tensor(dy), cos, -sin).numpy(), atol=1e-15)


def test_rope_positions_are_absolute():
    """Rotating the last T keys alone (positions start..) gives the rows of rotating all of them: a KV
    cache never rotates a past key again."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 9, 8))
    inv = rope_inv_freq(8, 10000.0)
    full = rope(Tensor(x), *rope_cos_sin(np.arange(9), inv, dtype="float64")).numpy()
    tail = rope(Tensor(x[:, :, 6:]), *rope_cos_sin(np.arange(6, 9), inv, dtype="float64")).numpy()
    np.testing.assert_array_equal(tail, full[:, :, 6:])


def test_rope_finite_differences():
    cos, sin = _tables(6, 2, 3)
    r = check_op(lambda x: rope(x, cos, sin), {"x": np.random.default_rng(5).standard_normal((1, 2, 3, 6))}, name="rope")
    assert r.passed and r.checks > 0, r


class _Float64Torch:
    """transformers computes the inverse frequencies with dtype=torch.float (float32); this stand-in
    for its module's `torch` answers torch.float with float64, so its own formulas run in float64."""

    float = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.mark.parametrize("HS", [2, 8, 64, 128])
@pytest.mark.parametrize("theta", [10000.0, 500000.0, 1e6])
@pytest.mark.parametrize("rope_type", ["default", "linear", "llama3"])
def test_rope_inv_freq_matches_transformers(monkeypatch, HS, theta, rope_type):
    from transformers import LlamaConfig
    from transformers import modeling_rope_utils as mru
    from transformers.models.llama import modeling_llama as ml

    params = {"rope_type": rope_type, "rope_theta": theta}
    params.update({} if rope_type == "default" else {"factor": 4.0} if rope_type == "linear" else LLAMA3)
    config = LlamaConfig(hidden_size=4 * HS, num_attention_heads=4, head_dim=HS, rope_parameters=params)
    hf_fn = ml.LlamaRotaryEmbedding.compute_default_rope_parameters if rope_type == "default" else mru.ROPE_INIT_FUNCTIONS[rope_type]
    hf32 = hf_fn(config)[0]
    monkeypatch.setattr(mru, "torch", _Float64Torch())
    monkeypatch.setattr(ml, "torch", _Float64Torch())
    hf64 = hf_fn(config)[0]
    assert hf64.dtype == torch.float64
    kw = {k: v for k, v in params.items() if k not in ("rope_type", "rope_theta")}
    ours = rope_inv_freq(HS, theta, rope_type, **kw)
    assert ours.dtype == np.float64 and ours.shape == (HS // 2,)
    err = float(np.max(np.abs(ours - hf64.numpy()) / hf64.numpy()))
    assert err <= 1e-15, f"relative error {err:.2e} vs transformers in float64"
    assert float(np.max(np.abs(ours - hf32.numpy()) / ours)) < 1e-6  # and float32 transformers is that, rounded
    np.testing.assert_allclose(ours, ref.rope_inv_freq(HS, theta, rope_type, **kw).numpy(), rtol=1e-15)


def test_rope_llama3_takes_all_three_branches():
    """With HS = 128 and L = 64 the wavelengths straddle both thresholds: some frequencies are kept, some
    divided by the factor and some interpolated between."""
    base = rope_inv_freq(128, 500000.0)
    ours = rope_inv_freq(128, 500000.0, "llama3", **LLAMA3)
    kept, divided = np.isclose(ours, base, rtol=0), np.isclose(ours, base / 8.0, rtol=1e-15)
    assert kept.sum() and divided.sum() and (~kept & ~divided).sum()


def test_rope_cos_sin_matches_transformers_rotary_embedding():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=16, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, **LLAMA3})
    emb = LlamaRotaryEmbedding(config)
    pos = np.array([0, 1, 5, 63, 64, 500])
    x = torch.zeros(1, len(pos), 16)
    hf_cos, hf_sin = emb(x, torch.tensor(pos)[None])  # float32 throughout (angles of up to 500 rad)
    cos, sin = rope_cos_sin(pos, rope_inv_freq(16, 500000.0, "llama3", **LLAMA3), dtype="float32")
    assert cos.dtype == np.float32 and cos.shape == (len(pos), 16)
    assert rel_error(cos, hf_cos[0]) < 1e-4 and rel_error(sin, hf_sin[0]) < 1e-4
    c64, s64 = rope_cos_sin(pos, rope_inv_freq(16, 500000.0, "llama3", **LLAMA3), dtype="float64")
    rc, rs = ref.rope_cos_sin(pos, ref.rope_inv_freq(16, 500000.0, "llama3", **LLAMA3))
    assert rel_error(c64, rc) < 1e-15 and rel_error(s64, rs) < 1e-15


def test_rope_bad_inputs():
    cos, sin = _tables(8, 0, 3)
    with pytest.raises(ValueError, match=r"even head size"):
        rope(Tensor(np.zeros((1, 1, 3, 7))), cos[:, :7], sin[:, :7])
    with pytest.raises(ValueError, match=r"cos of shape \(3, 8\) does not fit x \(1, 1, 4, 8\)"):
        rope(Tensor(np.zeros((1, 1, 4, 8))), cos, sin)
    with pytest.raises(ValueError, match="int64"):
        rope(Tensor(np.zeros((1, 1, 3, 8), dtype=np.int64)), cos, sin)
    with pytest.raises(ValueError, match=r"rope type 'yarn' is not supported"):
        rope_inv_freq(8, 10000.0, "yarn", factor=2.0)
    with pytest.raises(ValueError, match=r"rope type 'dynamic' is not supported"):
        rope_inv_freq(8, 10000.0, "dynamic", factor=2.0)
    with pytest.raises(ValueError, match=r"unknown rope type 'ntk'"):
        rope_inv_freq(8, 10000.0, "ntk")
    with pytest.raises(ValueError, match="needs factor"):
        rope_inv_freq(8, 10000.0, "linear")
    with pytest.raises(ValueError, match="needs low_freq_factor, original_max_position_embeddings"):
        rope_inv_freq(8, 10000.0, "llama3", factor=8.0, high_freq_factor=4.0)
    with pytest.raises(ValueError, match="head_size must be an even integer"):
        rope_inv_freq(7)
    with pytest.raises(ValueError, match="theta must be a positive"):
        rope_inv_freq(8, -1.0)
    with pytest.raises(ValueError, match="positions must be a 1-D array of integers"):
        rope_cos_sin(np.array([0.5, 1.0]), rope_inv_freq(8))
    with pytest.raises(ValueError, match="positions must be a 1-D array of integers"):
        rope_cos_sin(np.array([-1, 0]), rope_inv_freq(8))
