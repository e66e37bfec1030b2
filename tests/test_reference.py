"""reference/nanogpt.py (the nanoGPT-style benchmark baseline) computes what npgpt computes.

The bench compares like with like only if the fused PyTorch model (SDPA, F.gelu, F.layer_norm,
nn.Linear with transposed weights, tied head) gives npgpt's logits, loss and gradients for npgpt's
weights: checked in float64 over drawn configs, every gradient by npgpt's parameter name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from npgpt import GPT, GPTConfig
from reference.nanogpt import NanoGPT, configure_optimizer
from tests.helpers import TOL, gpt_configs, rel_error


def configs():
    return gpt_configs(max_vocab=67, max_block=24, max_layers=2, max_head_size=12)


def pair(cfg: GPTConfig, seed: int):
    """npgpt's model with O(1) weights (so every op works off its linear range) and the twin loaded from it."""
    model = GPT(cfg, seed=seed, dtype="float64")
    g = np.random.default_rng(seed + 1)
    model.load_state_dict({k: g.normal(1.0 if ".ln_" in k else 0.0, 0.4, v.shape) for k, v in model.state_dict().items()})
    twin = NanoGPT(cfg, dtype=torch.float64)
    twin.load_from_npgpt(model.state_dict())
    return model, twin


def errors_of(model, twin, idx, targets) -> dict:
    logits, loss = model(idx, targets)
    loss.backward()
    t_logits, t_loss = twin(torch.from_numpy(idx), torch.from_numpy(targets))
    t_loss.backward()
    errors = {"logits": rel_error(logits.data, t_logits), "loss": rel_error(loss.data, t_loss)}
    theirs = twin.npgpt_grads()
    assert sorted(theirs) == sorted(n for n, _ in model.named_parameters()), "parameter names differ"
    for name, p in model.named_parameters():
        errors[name] = rel_error(p.grad, theirs[name])
    return errors


@settings(max_examples=25)
@given(cfg=configs(), B=st.integers(1, 3), data=st.data(), seed=st.integers(0, 2**16))
def test_nanogpt_matches_npgpt_float64(cfg, B, data, seed):
    T = data.draw(st.integers(1, cfg.block_size))
    model, twin = pair(cfg, seed)
    g = np.random.default_rng(seed + 2)
    idx, targets = g.integers(0, cfg.vocab_size, (B, T)), g.integers(0, cfg.vocab_size, (B, T))
    errors = errors_of(model, twin, idx, targets)
    worst = max(errors.values())
    report = "\n".join(f"  {e:.3e}  {n}" for n, e in sorted(errors.items(), key=lambda kv: -kv[1]))
    assert worst <= TOL["float64"], f"{cfg} B={B} T={T}: worst relative error per name:\n{report}"


def test_tied_head_is_one_parameter_and_weights_are_transposed():
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model, twin = pair(cfg, 0)
    names = [n for n, _ in twin.npgpt_parameters()]
    assert "lm_head.weight" not in names and twin.lm_head.weight is twin.transformer.wte.weight
    w = model.state_dict()["transformer.h.0.attn.c_attn.weight"]  # (in, out) = (8, 24)
    assert tuple(twin.transformer.h[0].attn.c_attn.weight.shape) == (24, 8)
    np.testing.assert_array_equal(twin.transformer.h[0].attn.c_attn.weight.detach().numpy(), w.T)


def test_load_rejects_wrong_keys_and_shapes():
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model, twin = pair(cfg, 0)
    sd = dict(model.state_dict())
    sd.pop("transformer.ln_f.bias")
    with pytest.raises(ValueError, match="missing"):
        twin.load_from_npgpt(sd)
    sd = dict(model.state_dict())
    sd["transformer.ln_f.bias"] = np.zeros(9)
    with pytest.raises(ValueError, match="shape"):
        twin.load_from_npgpt(sd)


def test_optimizer_groups_follow_nanogpt():
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
    _, twin = pair(cfg, 0)
    opt = configure_optimizer(twin, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    decay, rest = opt.param_groups
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in rest["params"])
    assert len(decay["params"]) + len(rest["params"]) == len(list(twin.parameters()))
