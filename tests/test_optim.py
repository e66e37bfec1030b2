"""AdamW, SGD, clip_grad_norm and cosine_lr against torch.optim and nanoGPT's schedule shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from npgpt import GPT, GPTConfig
from npgpt.nn import Parameter
from npgpt.training.optim import SGD, AdamW, clip_grad_norm, configure_optimizer, cosine_lr, param_groups
from tests.helpers import rel_error

SHAPES = [(4, 3), (3,), (2, 5), (5,)]


def twin_params(seed=0, scale=1.0):
    g = np.random.default_rng(seed)
    arrays = [g.normal(size=s) * scale for s in SHAPES]
    ours = [Parameter(a.copy()) for a in arrays]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in arrays]
    return ours, theirs


def set_grads(ours, theirs, g, scale=1.0):
    for p, q in zip(ours, theirs):
        grad = g.normal(size=p.shape) * scale
        p.grad = grad.copy()
        q.grad = torch.tensor(grad)


def run_both(make_ours, make_theirs, steps=20, seed=0, lr_schedule=None):
    ours, theirs = twin_params(seed)
    opt, topt = make_ours(ours), make_theirs(theirs)
    g = np.random.default_rng(seed + 1)
    for it in range(steps):
        if lr_schedule is not None:
            lr = lr_schedule(it)
            opt.set_lr(lr)
            for group in topt.param_groups:
                group["lr"] = lr
        set_grads(ours, theirs, g, scale=10.0 ** g.uniform(-4, 1))
        opt.step()
        topt.step()
        for i, (p, q) in enumerate(zip(ours, theirs)):
            assert rel_error(p.data, q) <= 1e-14, f"step {it}, param {i}: {rel_error(p.data, q):.3e}"
    return opt, ours


def groups_of(params, wd):
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": wd},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


@pytest.mark.parametrize("betas", [(0.9, 0.95), (0.3, 0.999)])  # 1 - beta1 below and above 0.5: both lerp branches
def test_adamw_groups_match_torch(betas):
    run_both(lambda ps: AdamW(groups_of(ps, 0.1), lr=3e-2, betas=betas, eps=1e-8, weight_decay=0.1),
             lambda ps: torch.optim.AdamW(groups_of(ps, 0.1), lr=3e-2, betas=betas, eps=1e-8, weight_decay=0.1, foreach=False),
             lr_schedule=lambda it: cosine_lr(it, 3e-2, 3e-3, 5, 15))


def test_adamw_no_decay_group_does_not_decay():
    p = Parameter(np.ones(3))
    opt = AdamW([{"params": [p], "weight_decay": 0.0}], lr=0.1, weight_decay=0.5)
    p.grad = np.zeros(3)
    opt.step()
    assert np.array_equal(p.data, np.ones(3))
    q = Parameter(np.ones((1, 3)))
    q.grad = np.zeros((1, 3))
    opt2 = AdamW([q], lr=0.1, weight_decay=0.5)
    opt2.step()
    np.testing.assert_allclose(q.data, 1 - 0.1 * 0.5, rtol=0, atol=1e-15)


def test_adamw_keeps_float32():
    p = Parameter(np.ones((2, 3), dtype=np.float32))
    opt = AdamW([p], lr=0.1)
    p.grad = np.full((2, 3), 0.5, dtype=np.float32)
    opt.step()
    sd = opt.state_dict()["state"][0]
    assert p.data.dtype == np.float32 and sd["exp_avg"].dtype == np.float32 and sd["exp_avg_sq"].dtype == np.float32


def test_adamw_state_dict_resume_is_exact():
    steps = 6
    make = lambda ps: AdamW(groups_of(ps, 0.1), lr=1e-2, betas=(0.9, 0.95))  # noqa: E731
    ours, _ = twin_params(0)
    opt = make(ours)
    g = np.random.default_rng(5)
    grads = [[g.normal(size=s) for s in SHAPES] for _ in range(steps)]
    for it in range(steps):
        for p, gr in zip(ours, grads[it]):
            p.grad = gr.copy()
        opt.step()
        if it == 2:
            saved_sd = opt.state_dict()
            saved_params = [p.data.copy() for p in ours]
    resumed = [Parameter(a.copy()) for a in saved_params]
    opt2 = make(resumed)
    opt2.load_state_dict(saved_sd)
    for it in range(3, steps):
        for p, gr in zip(resumed, grads[it]):
            p.grad = gr.copy()
        opt2.step()
    for p, q in zip(ours, resumed):
        assert np.array_equal(p.data, q.data)
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == steps and isinstance(sd["state"][0]["step"], int)
    assert isinstance(sd["state"][0]["exp_avg"], np.ndarray)
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    bad = {**saved_sd, "param_groups": saved_sd["param_groups"][:1]}
    with pytest.raises(ValueError, match="param groups"):
        opt2.load_state_dict(bad)


@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, weight_decay=0.01),
                                dict(momentum=0.8, nesterov=True)])
def test_sgd_matches_torch(kw):
    run_both(lambda ps: SGD(ps, lr=0.05, **kw), lambda ps: torch.optim.SGD(ps, lr=0.05, **kw))


@pytest.mark.parametrize("max_norm", [1e-3, 1.0, 1e3])
def test_clip_grad_norm_matches_torch(max_norm):
    ours, theirs = twin_params(1)
    set_grads(ours, theirs, np.random.default_rng(2))
    total = clip_grad_norm(ours, max_norm)
    t_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert np.ndim(total) == 0 and np.asarray(total).dtype == np.float64  # a device scalar, not a Python float
    assert abs(float(total) - float(t_total)) <= 1e-14 * float(total)
    for p, q in zip(ours, theirs):
        assert rel_error(p.grad, q.grad) <= 1e-15
    after = math.sqrt(sum(float((p.grad ** 2).sum()) for p in ours))
    assert after <= max_norm * (1 + 1e-12) if total > max_norm else after == pytest.approx(total, rel=1e-15)


def test_cosine_lr_key_points():
    lr, mn, w, d = 6e-4, 6e-5, 10, 110
    assert cosine_lr(0, lr, mn, w, d) == pytest.approx(lr / 11)
    assert cosine_lr(9, lr, mn, w, d) == pytest.approx(lr * 10 / 11)
    assert cosine_lr(10, lr, mn, w, d) == pytest.approx(lr)
    assert cosine_lr(60, lr, mn, w, d) == pytest.approx((lr + mn) / 2)
    assert cosine_lr(110, lr, mn, w, d) == pytest.approx(mn)
    assert cosine_lr(10_000, lr, mn, w, d) == mn
    values = [cosine_lr(i, lr, mn, w, d) for i in range(w, d + 1)]
    assert all(a >= b for a, b in zip(values, values[1:])), "decay must be monotone"
    assert cosine_lr(5, lr, mn, 5, 5) == mn
    with pytest.raises(ValueError, match="decay_iters"):
        cosine_lr(0, lr, mn, 10, 5)


def test_param_groups_decay_only_matrices():
    m = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=8))
    groups = param_groups(m, 0.1)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(m.parameters())
    opt = configure_optimizer(m, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    opt.param_groups[1]["lr"] = 5.0
    assert opt.param_groups[0]["lr"] == 1e-3


def test_optimizer_bad_inputs():
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        AdamW([], lr=1e-3)
    with pytest.raises(ValueError, match="betas"):
        AdamW([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="lr"):
        AdamW([p], lr=-1.0)
    with pytest.raises(ValueError, match="unknown options"):
        AdamW([{"params": [p], "momentum": 0.9}])
    with pytest.raises(ValueError, match="more than one group"):
        AdamW([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([p], 0.0)
