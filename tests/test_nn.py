"""npgpt/nn.py's layers on their own: built from the model description, initialised by the one
policy GPT uses (init_parameters), float32 by default, moved once by Module.to."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import GPT, GPTConfig, Tensor
from npgpt.nn import MLP, Block, CausalSelfAttention, Embedding, LayerNorm, Linear, init_parameters

CFG = GPTConfig(vocab_size=11, block_size=8, n_layer=3, n_head=2, n_embd=16)


def test_linear_is_initialised_like_gpt_and_float32():
    lin = Linear(256, 512)
    assert not lin.weight.data.any(), "a layer is built as constants; the policy draws"
    init_parameters(lin, np.random.default_rng(0))
    w, b = lin.weight.data, lin.bias.data
    assert w.dtype == np.float32 and b.dtype == np.float32 and lin.weight.device == "cpu"
    assert w.shape == (256, 512) and b.shape == (512,)
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001
    assert not b.any()
    expected = np.random.default_rng(0).normal(0.0, 0.02, size=(256, 512)).astype(np.float32)
    np.testing.assert_array_equal(w, expected)


def test_embedding_layernorm_and_dtype_choice():
    emb = Embedding(100, 32, dtype="float64")
    init_parameters(emb, np.random.default_rng(1))
    assert emb.weight.dtype == np.float64 and abs(emb.weight.data.std() - 0.02) < 0.002
    ln = LayerNorm(7)
    assert ln.weight.dtype == np.float32
    np.testing.assert_array_equal(ln.weight.data, np.ones(7))
    np.testing.assert_array_equal(ln.bias.data, np.zeros(7))
    assert LayerNorm(7, bias=False).bias is None and Linear(3, 4, bias=False).bias is None


def test_one_policy_residual_projections_get_the_smaller_std():
    blk = Block(CFG)
    init_parameters(blk, np.random.default_rng(3), n_layer=CFG.n_layer)
    roles = {name: p.init for name, p in blk.named_parameters()}
    assert roles["attn.c_proj.weight"] == roles["mlp.c_proj.weight"] == "residual"
    assert roles["attn.c_attn.weight"] == roles["mlp.c_fc.weight"] == "normal"
    assert roles["ln_1.weight"] == "ones" and roles["attn.c_attn.bias"] == "zeros"
    std = 0.02 / np.sqrt(2 * CFG.n_layer)
    assert abs(blk.mlp.c_proj.weight.data.std() - std) < 0.15 * std
    assert abs(blk.mlp.c_fc.weight.data.std() - 0.02) < 0.003
    np.testing.assert_array_equal(blk.ln_2.weight.data, np.ones(16))


def test_composite_layers_draw_every_part_from_one_generator():
    """Two parts of one layer never get the same numbers, and one seed gives one layer."""
    a, b = Block(CFG), Block(CFG)
    init_parameters(a, np.random.default_rng(3))
    init_parameters(b, np.random.default_rng(3))
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert not np.array_equal(a.attn.c_proj.weight.data, a.attn.c_attn.weight.data[:, :16])
    mlp = MLP(GPTConfig(n_embd=8, n_head=2))
    init_parameters(mlp, np.random.default_rng(0))
    assert not np.array_equal(mlp.c_fc.weight.data[:, :8], mlp.c_proj.weight.data[:8, :])


def test_layers_follow_the_description():
    c = GPTConfig(n_embd=12, n_head=2, head_size=5, intermediate_size=7, bias=False)
    attn, mlp = CausalSelfAttention(c), MLP(c)
    assert attn.c_attn.weight.shape == (12, 30) and attn.c_proj.weight.shape == (10, 12) and attn.c_attn.bias is None
    assert mlp.c_fc.weight.shape == (12, 7) and mlp.c_proj.weight.shape == (7, 12)


def test_gpt_draws_once_on_the_host_and_moves_once(monkeypatch):
    """GPT's weights are the policy's draws from rng(seed) in named_parameters order, and each
    parameter crosses to the device exactly once (Module.to)."""
    import npgpt.nn as nn_module

    moves = []
    real = nn_module.to_device
    monkeypatch.setattr(nn_module, "to_device", lambda a, d: moves.append(a.shape) or real(a, d))
    m = GPT(CFG, seed=5, dtype="float64")
    assert len(moves) == 0, "on the CPU nothing moves"
    g = np.random.default_rng(5)
    for name, p in m.named_parameters():
        if p.init in ("normal", "residual"):
            std = 0.02 if p.init == "normal" else 0.02 / np.sqrt(2 * CFG.n_layer)
            np.testing.assert_array_equal(p.data, g.normal(0.0, std, size=p.shape), err_msg=name)
    m.to("cpu")
    assert len(moves) == 0


def test_init_false_leaves_zeros_for_the_caller():
    m = GPT(CFG, init=False)
    assert all(not p.data.any() for n, p in m.named_parameters() if p.init != "ones")


def test_a_fresh_layer_computes_something():
    lin = Linear(4, 3)
    init_parameters(lin, np.random.default_rng(0))
    y = lin(Tensor(np.ones((2, 4), np.float32)))
    assert y.dtype == np.float32 and np.abs(y.data).sum() > 0


def test_module_to_reads_the_default_device(monkeypatch):
    monkeypatch.setenv("NPGPT_DEVICE", "nonsense")
    with pytest.raises(ValueError, match="unknown device 'nonsense'"):
        Linear(2, 2).to(None)


def test_init_parameters_refuses_device_arrays(monkeypatch):
    import npgpt.nn as nn_module

    lin = Linear(2, 2)
    monkeypatch.setattr(nn_module, "device_of", lambda a: "cuda")
    with pytest.raises(ValueError, match="draws on the host"):
        init_parameters(lin, np.random.default_rng(0))
