"""npgpt.parallel: the thread pool's results do not depend on the thread count, bit for bit, and
they are PyTorch's.

The ops cut their row blocks from the shape alone and add partial sums in block order, so a whole
training step (forward, backward, clipping, AdamW) gives the same bits at 1, 2 and 3 threads, and
the same bits when run twice; and that step is the PyTorch twin's (reference/model.py with
torch.optim.AdamW and clip_grad_norm_). The block sizes are the tiny ones of tests/conftest.py, so
layer_norm, GELU and attention each walk many blocks and query chunks on the pool.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from npgpt import GPT, GPTConfig, parallel
from npgpt.training.optim import clip_grad_norm, configure_optimizer
from reference.model import TorchGPT
from reference.train import make_optimizer
from tests.helpers import TOL, TORCH_DTYPE, rel_error

CFG = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
STEP = dict(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99))
MAX_NORM = 1.0


def _batch():
    g = np.random.default_rng(4)
    return g.integers(0, 13, (5, 8)), g.integers(0, 13, (5, 8))


def one_step(threads: int, dtype: str, activation_name: str):
    parallel.set_num_threads(threads)
    model = GPT(GPTConfig(**CFG, activation=activation_name), seed=3, dtype=dtype)
    opt = configure_optimizer(model, **STEP)
    x, y = _batch()
    logits, loss = model(x, y)
    loss.backward()
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}
    clip_grad_norm(model.parameters(), MAX_NORM)
    opt.step()
    out = {"logits": logits.data.copy(), "loss": loss.data.copy(), **{f"grad {n}": v for n, v in grads.items()}}
    out.update({f"param {n}": p.data.copy() for n, p in model.named_parameters()})
    return out


def torch_step(dtype: str, activation_name: str):
    """one_step in the PyTorch twin, from the same initial weights."""
    cfg = GPTConfig(**CFG, activation=activation_name)
    twin = TorchGPT(cfg, dtype=TORCH_DTYPE[dtype])
    twin.load_from_npgpt(GPT(cfg, seed=3, dtype=dtype).state_dict())
    opt = make_optimizer(twin, **STEP)
    logits, loss = twin(*_batch())
    loss.backward()
    out = {"logits": logits, "loss": loss, **{f"grad {n}": p.grad.clone() for n, p in twin.named_parameters()}}
    torch.nn.utils.clip_grad_norm_(twin.parameters(), MAX_NORM)
    opt.step()
    out.update({f"param {n}": p.detach().clone() for n, p in twin.named_parameters()})
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation_name", ["gelu_tanh", "gelu"])
def test_training_step_bits_do_not_depend_on_threads(tiny_blocks, dtype, activation_name):
    ref = one_step(1, dtype, activation_name)
    for threads in (2, 3, 1):
        got = one_step(threads, dtype, activation_name)
        for name, a in ref.items():
            assert np.array_equal(a, got[name]), f"{name} differs at {threads} threads ({dtype}, {activation_name})"
    theirs = torch_step(dtype, activation_name)
    assert sorted(theirs) == sorted(ref), "npgpt's and the twin's parameter names differ"
    # float32: AdamW's first step moves a weight by about lr * sign(grad), so a gradient entry near 0
    # whose float32 rounding differs moves the other way; the parameters are compared in float64 only.
    names = [n for n in ref if dtype == "float64" or not n.startswith("param ")]
    errors = {n: rel_error(ref[n], theirs[n]) for n in names}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL[dtype], f"{worst}: error {errors[worst]:.3e} against PyTorch ({dtype}, {activation_name})"


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
