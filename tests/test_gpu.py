"""The GPU path end to end (`make test-gpu`): training on CUDA and a checkpoint crossing to the CPU.

Every test here needs CuPy and an NVIDIA GPU and skips with a reason without them. The op-level
CuPy cases live beside each op's own tests (the `xp` fixture); the whole GPT's logits and every
gradient, AdamW steps with clipping and GPU dropout run in tests/test_strict_device.py with
device="cuda" (the same tests run on the strict stand-in on every CPU run).
"""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import backend
from npgpt.training.checkpoint import load_checkpoint
from npgpt.data.tokens import prepare
from npgpt.models.gpt import GPT, GPTConfig
from npgpt.training.config import TrainConfig
from npgpt.training.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and an NVIDIA GPU (make test-gpu on a GPU machine)"),
]

def _batch(kw, B=3, seed=1):
    g = np.random.default_rng(seed)
    T = kw["block_size"]
    return g.integers(0, kw["vocab_size"], (B, T)), g.integers(0, kw["vocab_size"], (B, T))


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
