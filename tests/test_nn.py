"""npgpt/nn.py's layers on their own: initialised as GPT initialises them, float32 by default."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import Tensor
from npgpt.nn import MLP, Block, CausalSelfAttention, Embedding, LayerNorm, Linear


def test_linear_is_initialised_like_gpt_and_float32():
    lin = Linear(256, 512, generator=np.random.default_rng(0))
    w, b = lin.weight.data, lin.bias.data
    assert w.dtype == np.float32 and b.dtype == np.float32 and lin.weight.device == "cpu"
    assert w.shape == (256, 512) and b.shape == (512,)
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001
    assert not b.any()
    expected = np.random.default_rng(0).normal(0.0, 0.02, size=(256, 512)).astype(np.float32)
    np.testing.assert_array_equal(w, expected)


def test_embedding_layernorm_and_dtype_choice():
    emb = Embedding(100, 32, dtype="float64", generator=np.random.default_rng(1))
    assert emb.weight.dtype == np.float64 and abs(emb.weight.data.std() - 0.02) < 0.002
    ln = LayerNorm(7)
    assert ln.weight.dtype == np.float32
    np.testing.assert_array_equal(ln.weight.data, np.ones(7))
    np.testing.assert_array_equal(ln.bias.data, np.zeros(7))
    assert LayerNorm(7, bias=False).bias is None and Linear(3, 4, bias=False).bias is None


def test_composite_layers_draw_every_part_from_one_generator():
    """Two parts of one layer never get the same numbers, and one seed gives one layer."""
    a = Block(16, 2, generator=np.random.default_rng(3))
    b = Block(16, 2, generator=np.random.default_rng(3))
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert not np.array_equal(a.attn.c_proj.weight.data, a.attn.c_attn.weight.data[:, :16])
    mlp = MLP(8, generator=np.random.default_rng(0))
    assert not np.array_equal(mlp.c_fc.weight.data[:, :8], mlp.c_proj.weight.data[:8, :])
    assert CausalSelfAttention(8, 2).c_attn.weight.data.std() > 0.01


def test_init_false_leaves_zeros_for_the_caller():
    blk = Block(8, 2, init=False)
    assert all(not p.data.any() for p in blk.parameters())


def test_a_fresh_layer_computes_something():
    y = Linear(4, 3)(Tensor(np.ones((2, 4), np.float32)))
    assert y.dtype == np.float32 and np.abs(y.data).sum() > 0


def test_layers_read_the_default_device_when_built(monkeypatch):
    monkeypatch.setenv("NPGPT_DEVICE", "nonsense")
    with pytest.raises(ValueError, match="unknown device 'nonsense'"):
        Linear(2, 2)
