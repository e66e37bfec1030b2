"""The GPU code path on every CPU run: the whole GPT, training, generation and files on device "strict".

tests/strict_device.py is a CuPy stand-in on NumPy that keeps CuPy's refusals (no implicit trip to
the host, no NumPy operands, 0-d reductions) and counts every host transfer. The whole-model tests
here take a `device` parameter: "strict" always, and "cuda" under `make test-gpu` on a real GPU (the
one set of tests for both; test_gpu.py keeps what only a real GPU can show). They also pin how many
times one training step reads from the device: a GPU step must wait for the device only when
logging asks for a number.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from npgpt import backend
from npgpt.data.tokens import prepare
from npgpt.models.gpt import GPT, GPTConfig
from npgpt.training.checkpoint import load_checkpoint, save_checkpoint
from npgpt.training.loop import TrainConfig, read_log, train
from npgpt.training.optim import clip_grad_norm, configure_optimizer
from tests import strict_device
from tests.strict_device import module as sx
from tests.strict_device import transfers

CONFIGS = [
    dict(vocab_size=37, block_size=16, n_layer=2, n_head=3, n_embd=24),
    dict(vocab_size=50, block_size=12, n_layer=2, n_head=2, n_embd=16, bias=False, pos_encoding="sinusoidal",
         activation="gelu", tie_embeddings=False),
]
TEXT = "".join(f"line {i}: the cat sat on the mat, {i * 7 % 13} times.\n" for i in range(300))


# --- the stand-in itself is strict: each refusal CuPy makes, it makes -------------------------------
def test_the_stand_in_refuses_what_cupy_refuses():
    x = sx.asarray(np.arange(6.0).reshape(2, 3))
    for implicit in (np.asarray, np.array, lambda a: np.exp(np.ones(3)) + a):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed|Unsupported type"):
            implicit(x)
    for mixed in (lambda: x + np.ones(3), lambda: np.ones(3) * x, lambda: sx.exp(np.ones(3)),
                  lambda: sx.stack([x, np.ones((2, 3))]), lambda: x * np.array(2.0), lambda: sx.add(x, [1, 2, 3])):
        with pytest.raises(TypeError, match="Unsupported type"):
            mixed()
    with pytest.raises(TypeError, match="only length-1"):
        float(x)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x > 1)
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        x[...] = np.ones((2, 3))
    with pytest.raises(TypeError):
        range(x.sum().astype(int))  # no __index__: a device number is not a Python int
    assert backend.get_xp(x) is sx and backend.device_of(x) == "strict" and backend.is_device_array(x)


def test_the_stand_in_gives_0d_arrays_and_counts_every_read():
    x = sx.asarray(np.arange(6.0).reshape(2, 3))
    transfers.reset()
    s, m, e = x.sum(), x.max(axis=None), x[1, 2]
    assert all(isinstance(v, sx.ndarray) and v.shape == () for v in (s, m, e, np.sum(x), sx.sqrt(s)))
    assert transfers.reads == 0
    assert float(s) == 15.0 and int(m) == 5 and bool(e == 5.0) and x.get().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert f"{s:.1f}" == "15.0" and s.item() == 15.0
    assert transfers.reads == 6, transfers.read_log
    y = x.copy()
    y += 1
    assert np.array_equal(backend.to_numpy(y), np.arange(1.0, 7.0).reshape(2, 3)) and transfers.reads == 7


# --- the whole model ----------------------------------------------------------------------------------
# On the stand-in the kernels are NumPy's own, so it agrees with the CPU to rounding; a real GPU sums
# in other orders (its reductions and matmuls), hence the looser bound there.
TOL = {"strict": 1e-12, "cuda": 1e-10}


@pytest.fixture(params=["strict", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    if request.param == "cuda" and not backend.cuda_available():
        pytest.skip("needs CuPy and an NVIDIA GPU (make test-gpu on a GPU machine)")
    return request.param


def _pair(kw, seed=0, dtype="float64", device="strict"):
    cpu = GPT(GPTConfig(**kw), seed=seed, dtype=dtype, device="cpu")
    dev = GPT(GPTConfig(**kw), seed=seed, dtype=dtype, device=device)
    for (name, p), (_, q) in zip(cpu.named_parameters(), dev.named_parameters()):
        assert backend.device_of(q.data) == device, name
        assert np.array_equal(p.numpy(), q.numpy()), f"{name}: the same seed must give the same weights on both devices"
    return cpu, dev


def _batch(kw, B=3, seed=1):
    g = np.random.default_rng(seed)
    T = kw["block_size"]
    return g.integers(0, kw["vocab_size"], (B, T)), g.integers(0, kw["vocab_size"], (B, T))


def _worst(a, b) -> float:
    a, b = backend.to_numpy(a), backend.to_numpy(b)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.parametrize("kw", CONFIGS)
def test_gpt_logits_loss_and_every_gradient_match_the_cpu(kw, device):
    cpu, dev = _pair(kw, device=device)
    tol = TOL[device]
    x, y = _batch(kw)
    lc, loss_c = cpu(x, y)
    ld, loss_d = dev(x, y)
    assert backend.device_of(ld.data) == device and backend.device_of(loss_d.data) == device
    assert _worst(ld.data, lc.data) < tol and abs(loss_d.item() - loss_c.item()) < tol
    loss_c.backward()
    loss_d.backward()
    for (name, p), (_, q) in zip(cpu.named_parameters(), dev.named_parameters()):
        assert backend.device_of(q.grad) == device, name
        assert _worst(q.grad, p.grad) < tol, f"{name}: worst relative error {_worst(q.grad, p.grad):.2e}"


def test_three_adamw_steps_with_clipping_match_the_cpu(device):
    kw = CONFIGS[0]
    tol = TOL[device]
    cpu, dev = _pair(kw, seed=4, device=device)
    opts = [configure_optimizer(m, lr=3e-2, weight_decay=0.1, betas=(0.9, 0.95)) for m in (cpu, dev)]
    for step in range(3):
        x, y = _batch(kw, seed=10 + step)
        norms = []
        for m, opt in zip((cpu, dev), opts):
            _, loss = m(x, y)
            loss.backward()
            norms.append(float(clip_grad_norm(m.parameters(), 0.5)))
            opt.step()
            opt.zero_grad()
        assert norms[0] > 0.5, "clipping must act for this test to mean anything"
        assert abs(norms[0] - norms[1]) < tol * norms[0]
    for (name, p), (_, q) in zip(cpu.named_parameters(), dev.named_parameters()):
        assert _worst(q.data, p.data) < tol, name


@pytest.mark.parametrize("do_sample", [False, True])
def test_cached_generation_matches_the_cpu(do_sample):
    kw = dict(CONFIGS[0], block_size=24)
    cpu, dev = _pair(kw, seed=5)
    prompt = np.random.default_rng(2).integers(0, kw["vocab_size"], (2, 5))
    opts = dict(max_new_tokens=12, do_sample=do_sample, seed=7, top_k=10 if do_sample else None)
    want = cpu.generate(prompt, use_cache=True, **opts)
    assert np.array_equal(dev.generate(prompt, use_cache=True, **opts), want)
    assert np.array_equal(dev.generate(prompt, use_cache=False, **opts), want)


def test_dropout_on_the_device_is_repeatable_and_drawn_there(device):
    kw = dict(CONFIGS[0], dropout=0.2)
    x, y = _batch(kw)
    a = GPT(GPTConfig(**kw), seed=2, dtype="float32", device=device)
    b = GPT(GPTConfig(**kw), seed=2, dtype="float32", device=device)
    la, lb = a(x, y)[1].item(), b(x, y)[1].item()
    assert la == lb, "the same seed gives the same masks"
    assert a(x, y)[1].item() != la, "the next forward draws new masks"


# --- training through npgpt's own loop -----------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    (d / "t.txt").write_text(TEXT)
    prepare(str(d / "t.txt"), str(d / "prep"), log=lambda *a: None)
    return str(d / "prep")


def _cfg(tmp_path, data_dir, name, **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / name), data_dir=data_dir, n_layer=1, n_head=2, n_embd=16, block_size=8,
                batch_size=4, max_iters=3, eval_interval=3, eval_iters=2, log_interval=1, warmup_iters=1, lr=3e-2,
                lr_decay_iters=12, grad_clip=0.05, dtype="float64", progress=False, plot=False, seed=3)
    return TrainConfig.from_values({**base, **kw})


def _numbers(out_dir):
    return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s", "config")} for r in read_log(out_dir)]


def test_three_training_steps_with_clipping_then_the_checkpoint_round_trip(tmp_path, data_dir):
    on_cpu = train(_cfg(tmp_path, data_dir, "cpu", device="cpu"), log=lambda *a: None)
    on_dev = train(_cfg(tmp_path, data_dir, "dev", device="strict"), log=lambda *a: None)
    assert on_dev.iter_num == 3 and backend.device_of(on_dev.model.transformer.wte.weight.data) == "strict"
    steps = [r for r in _numbers(on_cpu.config.out_dir) if r["event"] == "step"]
    assert len(steps) == 3 and all(r["grad_norm"] > 0.05 for r in steps), "clipping must act in every step"
    for a, b in zip(_numbers(on_cpu.config.out_dir), _numbers(on_dev.config.out_dir), strict=True):
        assert a.keys() == b.keys() and a["event"] == b["event"]
        for k in a:
            if isinstance(a[k], float):
                assert abs(a[k] - b[k]) <= 1e-12 * max(1.0, abs(a[k])), (a["event"], k, a[k], b[k])
            else:
                assert a[k] == b[k], (k, a[k], b[k])
    # the checkpoint: host arrays equal to the device's weights, loading on the device and resuming
    ckpt = load_checkpoint(on_dev.config.out_dir)
    state = on_dev.model.state_dict()
    for name, a in ckpt.model_state.items():
        assert isinstance(a, np.ndarray) and np.array_equal(a, backend.to_numpy(state[name])), name
    more = train(dataclasses.replace(on_dev.config, max_iters=5, init_from="resume"), log=lambda *a: None)
    straight = train(_cfg(tmp_path, data_dir, "straight", device="strict", max_iters=5), log=lambda *a: None)
    assert more.iter_num == 5
    for (name, p), (_, q) in zip(more.model.named_parameters(), straight.model.named_parameters()):
        assert backend.device_of(p.data) == "strict" and np.array_equal(p.numpy(), q.numpy()), name


def _reads_of_a_run(tmp_path, data_dir, name, **kw):
    transfers.reset()
    train(_cfg(tmp_path, data_dir, name, device="strict", **kw), log=lambda *a: None)
    return transfers.reads, list(transfers.read_log)


def test_a_training_step_reads_from_the_device_only_when_logging_asks(tmp_path, data_dir):
    """Two runs that differ only in 8 more training steps, evaluation and checkpoints alike (at step 0
    and the end): the extra reads are the extra steps' reads. With log_interval 4 that is 2 log
    reads (StepReadings: the pending losses and norms in one transfer), and nothing else: no
    per-step sync for the loss, the norm, the ids' range check or the optimizer."""
    short, _ = _reads_of_a_run(tmp_path, data_dir, "short", max_iters=4, eval_interval=1000, log_interval=4)
    long, log = _reads_of_a_run(tmp_path, data_dir, "long", max_iters=12, eval_interval=1000, log_interval=4)
    per_log_read = [r for r in log if os.path.join("training", "step.py") in r[2]]
    assert long - short == 2, f"{long - short} extra reads for 8 steps, expected 2 (one per log step):\n" + "\n".join(
        map(str, log))
    assert per_log_read, "StepReadings.read is where the steps' numbers come back"


def test_grad_accumulation_adds_no_reads_per_micro_step(tmp_path, data_dir):
    one, _ = _reads_of_a_run(tmp_path, data_dir, "a1", max_iters=8, eval_interval=1000, log_interval=4)
    three, log = _reads_of_a_run(tmp_path, data_dir, "a3", max_iters=8, eval_interval=1000, log_interval=4, grad_accum=3)
    assert three == one, "\n".join(map(str, log))


def test_a_test_device_is_known_only_while_registered():
    strict_device.disable()
    try:
        with pytest.raises(ValueError, match="unknown device 'strict'"):
            backend.resolve_device("strict")
    finally:
        strict_device.enable()
    assert "strict" in backend.devices() and backend.xp_for("strict") is sx
    with pytest.raises(ValueError, match="real device"):
        backend.register_test_device("cuda", sx, None)


def test_a_checkpoint_with_optimizer_state_written_on_the_device_loads_on_either_device(tmp_path):
    kw = CONFIGS[1]
    cpu, dev = _pair(kw, seed=8)
    opt = configure_optimizer(dev, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    x, y = _batch(kw)
    dev(x, y)[1].backward()
    opt.step()
    path = save_checkpoint(os.path.join(tmp_path, "c.safetensors"), model=dev, optimizer=opt, iter_num=1,
                           best_val_loss=None, train_config={}, rng={})
    ckpt = load_checkpoint(path)
    opt.zero_grad()
    dev(x, y)[1].backward()
    opt.step()  # the run goes on; each copy loaded from the file must take the very same step
    for device in ("strict", "cpu"):
        back = GPT(GPTConfig.from_dict(ckpt.model_config), dtype="float64", device=device)
        back.load_state_dict(ckpt.model_state)
        again = configure_optimizer(back, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
        again.load_state_dict(ckpt.optimizer_state)
        back(x, y)[1].backward()
        again.step()
        for (name, p), (_, q) in zip(back.named_parameters(), dev.named_parameters()):
            assert backend.device_of(p.data) == device and _worst(q.data, p.data) < 1e-12, (device, name)
