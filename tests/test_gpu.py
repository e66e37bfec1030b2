"""The GPU path end to end (`make test-gpu`): the whole GPT on CUDA against the CPU, training, files.

Every test here needs CuPy and an NVIDIA GPU and skips with a reason without them. The op-level
CuPy cases live beside each op's own tests (the `xp` fixture); these check what only the whole
model shows: parameters, gradients, the optimizer and checkpoints crossing devices.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import backend
from npgpt.training.checkpoint import load_checkpoint
from npgpt.data.tokens import prepare
from npgpt.models.gpt import GPT, GPTConfig
from npgpt.training.optim import clip_grad_norm, configure_optimizer
from npgpt.training.config import TrainConfig
from npgpt.training.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and an NVIDIA GPU (make test-gpu on a GPU machine)"),
]

CONFIGS = [
    dict(vocab_size=37, block_size=16, n_layer=2, n_head=3, n_embd=24),
    dict(vocab_size=50, block_size=12, n_layer=2, n_head=2, n_embd=16, bias=False, pos_encoding="sinusoidal",
         activation="gelu", tie_embeddings=False),
]


def _pair(kw, seed=0):
    cpu = GPT(GPTConfig(**kw), seed=seed, dtype="float64", device="cpu")
    gpu = GPT(GPTConfig(**kw), seed=seed, dtype="float64", device="cuda")
    for (name, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert np.array_equal(p.numpy(), q.numpy()), f"{name}: the same seed must give the same weights on both devices"
    return cpu, gpu


def _batch(kw, B=3, seed=1):
    g = np.random.default_rng(seed)
    T = kw["block_size"]
    return g.integers(0, kw["vocab_size"], (B, T)), g.integers(0, kw["vocab_size"], (B, T))


def _worst(a, b) -> float:
    a, b = backend.to_numpy(a), backend.to_numpy(b)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.parametrize("kw", CONFIGS)
def test_gpt_logits_loss_and_every_gradient_match_the_cpu(kw):
    cpu, gpu = _pair(kw)
    x, y = _batch(kw)
    lc, loss_c = cpu(x, y)
    lg, loss_g = gpu(x, y)
    assert backend.device_of(lg.data) == "cuda"
    assert _worst(lg.data, lc.data) < 1e-10 and abs(loss_g.item() - loss_c.item()) < 1e-10
    loss_c.backward()
    loss_g.backward()
    for (name, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert backend.device_of(q.grad) == "cuda", name
        assert _worst(q.grad, p.grad) < 1e-10, f"{name}: worst relative error {_worst(q.grad, p.grad):.2e}"


def test_three_adamw_steps_with_clipping_match_the_cpu():
    kw = CONFIGS[0]
    cpu, gpu = _pair(kw, seed=4)
    opts = [configure_optimizer(m, lr=3e-2, weight_decay=0.1, betas=(0.9, 0.95)) for m in (cpu, gpu)]
    for step in range(3):
        x, y = _batch(kw, seed=10 + step)
        norms = []
        for m, opt in zip((cpu, gpu), opts):
            _, loss = m(x, y)
            loss.backward()
            norms.append(float(clip_grad_norm(m.parameters(), 0.5)))
            opt.step()
            opt.zero_grad()
        assert norms[0] > 0.5, "clipping must act for this test to mean anything"
        assert abs(norms[0] - norms[1]) < 1e-10 * norms[0]
    for (name, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert _worst(q.data, p.data) < 1e-10, name


def test_dropout_on_the_gpu_is_repeatable_and_drawn_there():
    kw = dict(CONFIGS[0], dropout=0.2)
    x, y = _batch(kw)
    a = GPT(GPTConfig(**kw), seed=2, dtype="float32", device="cuda")
    b = GPT(GPTConfig(**kw), seed=2, dtype="float32", device="cuda")
    la, lb = a(x, y)[1].item(), b(x, y)[1].item()
    assert la == lb, "the same seed gives the same masks"
    assert a(x, y)[1].item() != la, "the next forward draws new masks"


def test_train_on_the_gpu_then_load_the_checkpoint_on_the_cpu(tmp_path):
    text = "".join(f"line {i}: the cat sat on the mat.\n" for i in range(200))
    (tmp_path / "t.txt").write_text(text)
    prepare(str(tmp_path / "t.txt"), str(tmp_path / "data"), log=lambda *a: None)
    cfg = TrainConfig.from_values(dict(
        out_dir=str(tmp_path / "out"), data_dir=str(tmp_path / "data"), device="cuda", dtype="float32",
        n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=4, max_iters=6, eval_interval=3,
        eval_iters=2, log_interval=2, warmup_iters=1, progress=False, plot=False))
    result = train(cfg, log=lambda *a: None)
    assert result.iter_num == 6 and np.isfinite(result.best_val_loss)
    ckpt = load_checkpoint(cfg.out_dir, prefer="ckpt.safetensors")
    gpu_state = result.model.state_dict()
    for name, a in ckpt.model_state.items():
        assert isinstance(a, np.ndarray)
        assert np.array_equal(a, backend.to_numpy(gpu_state[name])), name
    on_cpu = GPT(GPTConfig.from_dict(ckpt.model_config), dtype="float32", device="cpu")
    on_cpu.load_state_dict(ckpt.model_state)
    x, _ = _batch(dict(vocab_size=on_cpu.config.vocab_size, block_size=8))
    with_cpu = on_cpu(x)[0].data
    with_gpu = backend.to_numpy(result.model.eval()(x)[0].data)
    assert np.max(np.abs(with_cpu - with_gpu)) < 1e-4
