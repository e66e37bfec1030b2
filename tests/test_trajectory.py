"""A whole training run in npgpt and in the PyTorch twin: same weights, batches, schedule and clipping.

Also: gradient accumulation over k micro-batches (each loss scaled by 1/k) equals one big batch.
"""

from __future__ import annotations

import numpy as np

from npgpt import GPT, GPTConfig
from npgpt.training.optim import clip_grad_norm, configure_optimizer, cosine_lr
from reference.model import TorchGPT
from reference.train import make_optimizer, train_step
from tests.helpers import rel_error

SCHED = dict(lr=1e-2, min_lr=1e-3, warmup=5, decay_iters=40)  # steps 40..49 sit at min_lr


def npgpt_step(model, opt, micro_batches, it, *, lr, min_lr, warmup, decay_iters, max_norm):
    """The training loop's step, spelled out: schedule, accumulate (loss / k), clip, AdamW."""
    opt.set_lr(cosine_lr(it, lr, min_lr, warmup, decay_iters))
    opt.zero_grad()
    k = len(micro_batches)
    total = 0.0
    for x, y in micro_batches:
        _, loss = model(x, y)
        loss = loss * (1.0 / k)
        loss.backward()
        total += loss.item()
    norm = clip_grad_norm(model.parameters(), max_norm) if max_norm is not None else None
    opt.step()
    return total, norm


def make_pair(cfg, seed=0):
    model = GPT(cfg, seed=seed, dtype="float64")
    twin = TorchGPT(cfg)
    twin.load_from_npgpt(model.state_dict())
    twin.dropout_generator = np.random.default_rng()
    twin.dropout_generator.bit_generator.state = model.dropout_generator.bit_generator.state
    return model, twin


def batches(cfg, steps, k, b, T, seed=1):
    """A fixed corpus with structure (so the loss really falls), cut into random windows."""
    g = np.random.default_rng(seed)
    corpus = (np.arange(4000) * 7 + g.integers(0, 3, 4000)) % cfg.vocab_size
    out = []
    for _ in range(steps):
        micro = []
        for _ in range(k):
            starts = g.integers(0, len(corpus) - T - 1, b)
            x = np.stack([corpus[s:s + T] for s in starts])
            y = np.stack([corpus[s + 1:s + T + 1] for s in starts])
            micro.append((x, y))
        out.append(micro)
    return out


def test_fifty_steps_match_torch():
    cfg = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1)
    model, twin = make_pair(cfg)
    opt = configure_optimizer(model, lr=SCHED["lr"], weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    topt = make_optimizer(twin, lr=SCHED["lr"], weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    max_norm = 0.8  # about half the steps' gradient norms exceed it: clipping is exercised both ways
    losses, norms = [], []
    for it, micro in enumerate(batches(cfg, 50, k=2, b=3, T=16)):
        loss, norm = npgpt_step(model, opt, micro, it, **SCHED, max_norm=max_norm)
        t_loss, t_norm = train_step(twin, topt, micro, it, **SCHED, max_norm=max_norm)
        assert abs(loss - t_loss) <= 1e-9, f"step {it}: loss {loss!r} vs torch {t_loss!r}"
        assert abs(norm - t_norm) <= 1e-9 * max(1.0, t_norm), f"step {it}: grad norm {norm!r} vs {t_norm!r}"
        losses.append(loss)
        norms.append(norm)
    clipped = sum(n > max_norm for n in norms)
    print(f"clipped on {clipped} of 50 steps")
    assert 0 < clipped < 50, f"clipping triggered on {clipped} of 50 steps; norms {np.round(norms, 3)}"
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, "the loss should fall"
    theirs = dict(twin.named_parameters())
    errors = {n: rel_error(p.data, theirs[n]) for n, p in model.named_parameters()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-9, f"final weights differ: worst {worst} {errors[worst]:.3e}"


def test_gradient_accumulation_equals_big_batch():
    cfg = GPTConfig(vocab_size=19, block_size=8, n_layer=2, n_head=2, n_embd=12, tie_embeddings=False)
    k, b, T = 3, 2, 8
    (micro,) = batches(cfg, 1, k=k, b=b, T=T, seed=4)
    a = GPT(cfg, seed=2, dtype="float64")
    for x, y in micro:
        _, loss = a(x, y)
        (loss * (1.0 / k)).backward()
    big = GPT(cfg, seed=2, dtype="float64")
    _, loss = big(np.concatenate([x for x, _ in micro]), np.concatenate([y for _, y in micro]))
    loss.backward()
    theirs = dict(big.named_parameters())
    for name, p in a.named_parameters():
        err = rel_error(p.grad, theirs[name].grad)
        assert err <= 1e-12, f"{name}: accumulated gradient differs from the big batch's by {err:.3e}"
