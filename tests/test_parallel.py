"""npgpt.parallel: the thread pool's results do not depend on the thread count, bit for bit.

The ops cut their row blocks from the shape alone and add partial sums in block order, so a whole
training step (forward, backward, AdamW) gives the same bits at 1, 2 and 3 threads, and the same
bits when run twice. Shapes are chosen so layernorm, GELU and attention each walk several blocks.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from npgpt import GPT, GPTConfig, parallel
from npgpt.ops import activation, attention, layernorm
from npgpt.training.optim import clip_grad_norm, configure_optimizer


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks small enough that a tiny model has several of them in every op."""
    monkeypatch.setattr(layernorm, "_BLOCK", 64)
    monkeypatch.setattr(activation, "_BLOCK", 64)
    monkeypatch.setattr(attention, "_BLOCK", 40)
    monkeypatch.setattr(attention, "_Q_CHUNK", 3)
    monkeypatch.setattr(parallel, "MIN_WORK", 1)  # tiny problems still go to the pool here
    yield
    parallel.set_num_threads(None)


def one_step(threads: int, dtype: str, activation_name: str):
    parallel.set_num_threads(threads)
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, activation=activation_name)
    model = GPT(cfg, seed=3, dtype=dtype)
    opt = configure_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99))
    g = np.random.default_rng(4)
    x, y = g.integers(0, 13, (5, 8)), g.integers(0, 13, (5, 8))
    logits, loss = model(x, y)
    loss.backward()
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}
    clip_grad_norm(model.parameters(), 1.0)
    opt.step()
    out = {"logits": logits.data.copy(), "loss": loss.data.copy(), **{f"grad {n}": v for n, v in grads.items()}}
    out.update({f"param {n}": p.data.copy() for n, p in model.named_parameters()})
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation_name", ["gelu_tanh", "gelu"])
def test_training_step_bits_do_not_depend_on_threads(small_blocks, dtype, activation_name):
    ref = one_step(1, dtype, activation_name)
    for threads in (2, 3, 1):
        got = one_step(threads, dtype, activation_name)
        for name, a in ref.items():
            assert np.array_equal(a, got[name]), f"{name} differs at {threads} threads ({dtype}, {activation_name})"


def test_run_keeps_block_order_and_raises_block_errors():
    parallel.set_num_threads(3)
    try:
        blocks = [(i, i + 1) for i in range(20)]
        assert parallel.run(lambda i0, i1: i0 * 10, blocks) == [i * 10 for i in range(20)]
        seen = set()
        parallel.run(lambda i0, i1: seen.add(threading.get_ident()), blocks, size=10)  # too small to hand off
        assert seen == {threading.get_ident()}

        def boom(i0, i1):
            if i0 == 7:
                raise ValueError("block 7")
            return i0

        with pytest.raises(ValueError, match="block 7"):
            parallel.run(boom, blocks)
        # a nested run inside a block runs serially instead of waiting on the pool
        assert parallel.run(lambda i0, i1: sum(parallel.run(lambda a, b: a, [(0, 1), (1, 2)])), blocks[:4]) == [1] * 4
    finally:
        parallel.set_num_threads(None)


def test_thread_count_sources(monkeypatch):
    monkeypatch.setenv("NPGPT_THREADS", "3")
    assert parallel.num_threads() == 3
    parallel.set_num_threads(2)
    assert parallel.num_threads() == 2
    parallel.set_num_threads(None)
    monkeypatch.setenv("NPGPT_THREADS", "zero")
    with pytest.raises(ValueError, match="NPGPT_THREADS"):
        parallel.num_threads()
    monkeypatch.delenv("NPGPT_THREADS")
    assert parallel.num_threads() >= 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive int"):
            parallel.set_num_threads(bad)


def test_scratch_is_reused_per_thread_and_slot():
    a = parallel.scratch(np, "t", (4, 5), np.float32)
    b = parallel.scratch(np, "t", (2, 3), np.float32)
    c = parallel.scratch(np, "u", (2, 3), np.float32)
    assert a.shape == (4, 5) and b.shape == (2, 3)
    assert np.shares_memory(a, b) and not np.shares_memory(a, c)


def test_sum_in_order_adds_left_to_right():
    parts = [np.array([1e16]), np.array([1.0]), np.array([-1e16])]
    assert parallel.sum_in_order(parts)[0] == (1e16 + 1.0) - 1e16
    assert parts[0][0] == 1e16  # the first part is not modified
