"""The training loop: determinism, exact resume (dropout on), Ctrl-C, NaN stop, fine-tuning, accumulation."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys

import numpy as np
import pytest

from npgpt.training import checkpoint as ck
from npgpt.data.tokens import TokenData, prepare
from npgpt.models.gpt import GPT
from npgpt.training.loop import TrainConfig, TrainingDiverged, read_log, train

TEXT = "".join(f"line {i}: the cat sat on the mat, {i * 7 % 13} times.\n" for i in range(300))
quiet = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    (d / "t.txt").write_text(TEXT)
    prepare(str(d / "t.txt"), str(d / "prep"), **quiet)
    return str(d / "prep")


def tiny(tmp_path, data_dir, name="out", **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / name), data_dir=data_dir, n_layer=1, n_head=2, n_embd=16, block_size=8,
                batch_size=4, max_iters=12, eval_interval=4, eval_iters=2, log_interval=2, warmup_iters=2,
                lr=1e-2, min_lr=1e-3, progress=False, plot=False, seed=3)
    return TrainConfig.from_values({**base, **kw})


def weights(out_dir, name=ck.LATEST):
    return ck.load_checkpoint(os.path.join(out_dir, name)).model_state


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs"


def numbers(log):
    """The log without wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s", "config")} for r in log]


def test_same_seed_same_losses_bit_for_bit(tmp_path, data_dir):
    r1 = train(tiny(tmp_path, data_dir, "a", dropout=0.1), **quiet)
    r2 = train(tiny(tmp_path, data_dir, "b", dropout=0.1), **quiet)
    log1, log2 = numbers(read_log(r1.config.out_dir)), numbers(read_log(r2.config.out_dir))
    assert len([r for r in log1 if r["event"] == "step"]) == 6 and len([r for r in log1 if r["event"] == "eval"]) == 4
    assert log1 == log2
    assert_same_weights(weights(r1.config.out_dir), weights(r2.config.out_dir))
    r3 = train(tiny(tmp_path, data_dir, "c", dropout=0.1, seed=4), **quiet)
    assert numbers(read_log(r3.config.out_dir)) != log1
    assert r1.last_eval["val_loss"] < log1[1]["val_loss"]  # it learns something


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_is_exact(tmp_path, data_dir, grad_accum):
    cfg = tiny(tmp_path, data_dir, "straight", dropout=0.2, grad_accum=grad_accum, lr_decay_iters=12)
    train(cfg, **quiet)
    half = dataclasses.replace(cfg, out_dir=str(tmp_path / "split"), max_iters=6)
    r = train(half, **quiet)
    assert r.iter_num == 6 and ck.load_checkpoint(os.path.join(half.out_dir, ck.LATEST)).iter_num == 6
    r = train(dataclasses.replace(half, max_iters=12, init_from="resume"), **quiet)
    assert r.iter_num == 12
    assert_same_weights(weights(cfg.out_dir), weights(half.out_dir))
    a, b = ck.load_checkpoint(os.path.join(cfg.out_dir, ck.LATEST)), ck.load_checkpoint(os.path.join(half.out_dir, ck.LATEST))
    assert a.rng == b.rng
    for k, s in a.optimizer_state["state"].items():
        for n, v in s.items():
            assert np.array_equal(v, b.optimizer_state["state"][k][n]), (k, n)
    steps = lambda d: [r for r in numbers(read_log(d)) if r["event"] == "step"]  # noqa: E731
    assert steps(cfg.out_dir) == steps(half.out_dir)


def test_ctrl_c_saves_and_resumes_exactly(tmp_path, data_dir, monkeypatch):
    cfg = tiny(tmp_path, data_dir, "straight", dropout=0.1)
    train(cfg, **quiet)
    calls = {"n": 0}
    real = TokenData.get_batch

    def get_batch(self, split, *a):
        if split == "train":
            calls["n"] += 1
            if calls["n"] == 5:  # the eval at step 0 drew 2 train batches: this is step 2
                os.kill(os.getpid(), signal.SIGINT)
        return real(self, split, *a)

    monkeypatch.setattr(TokenData, "get_batch", get_batch)
    messages = []
    stopped = dataclasses.replace(cfg, out_dir=str(tmp_path / "stopped"))
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when run as a background job, as CI may be
    r = train(stopped, log=messages.append)
    assert r.interrupted and r.iter_num == 3  # step 2 finished, then it stopped
    assert ck.load_checkpoint(os.path.join(stopped.out_dir, ck.LATEST)).iter_num == 3
    assert any("interrupted: saved step 3" in m and "--init-from resume" in m for m in messages)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    monkeypatch.setattr(TokenData, "get_batch", real)
    r = train(dataclasses.replace(stopped, init_from="resume"), **quiet)
    assert r.iter_num == 12 and not r.interrupted
    assert_same_weights(weights(cfg.out_dir), weights(stopped.out_dir))


def nan_loss_at_call(monkeypatch, n: int) -> dict:
    """Make the n-th training-mode forward's loss NaN (with grad_accum 1, call n is step n - 1);
    returns the call counter."""
    real = GPT.forward
    calls = {"n": 0}

    def forward(self, idx, targets=None, **kw):
        logits, loss = real(self, idx, targets, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] == n:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward)
    return calls


def test_nan_loss_stops_and_keeps_last_good(tmp_path, data_dir, monkeypatch):
    cfg = tiny(tmp_path, data_dir, always_save_checkpoint=True)
    nan_loss_at_call(monkeypatch, 7)  # step 6
    with pytest.raises(TrainingDiverged, match=r"loss nan at step 6 .*last good state"):
        train(cfg, **quiet)
    latest = ck.load_checkpoint(os.path.join(cfg.out_dir, ck.LATEST))
    best = ck.load_checkpoint(os.path.join(cfg.out_dir, ck.BEST))
    assert latest.iter_num == 4 and best.iter_num == 4  # the eval at step 4
    assert read_log(cfg.out_dir)[-1]["event"] == "diverged"
    with open(os.path.join(cfg.out_dir, "log.jsonl"), encoding="utf-8") as f:  # strict JSON: NaN written as null
        last = json.loads(f.read().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert last["loss"] is None
    assert all(np.isfinite(v).all() for v in latest.model_state.values())


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_huge_lr_diverges_with_a_clear_message(tmp_path, data_dir):
    cfg = tiny(tmp_path, data_dir, lr=1e30, min_lr=0.0, grad_clip=0.0, decay_lr=False, max_iters=30)
    with pytest.raises(TrainingDiverged, match=r"at step \d+ \(lr 1e\+30\)"):
        train(cfg, **quiet)


def test_fine_tune_starts_from_checkpoint_weights(tmp_path, data_dir):
    base = train(tiny(tmp_path, data_dir, "base"), **quiet)
    src = tmp_path / "new.txt"
    src.write_text("the mat sat on the cat.\n" * 100)
    prepare(str(src), str(tmp_path / "newdata"), tokenizer_file=os.path.join(base.config.out_dir, "tokenizer.json"), **quiet)
    ft = tiny(tmp_path, str(tmp_path / "newdata"), "ft", init_from=base.config.out_dir, max_iters=0,
              n_layer=3, n_embd=32, block_size=4)  # shape flags are ignored: the checkpoint decides
    r = train(ft, **quiet)
    m = r.config.model
    assert m.n_layer == 1 and m.n_embd == 16 and m.block_size == 8
    assert_same_weights(weights(base.config.out_dir, ck.BEST), weights(ft.out_dir, ck.LATEST))
    r = train(dataclasses.replace(ft, out_dir=str(tmp_path / "ft2"), max_iters=3, lr=3e-4, min_lr=3e-5), **quiet)
    saved = ck.load_checkpoint(os.path.join(r.config.out_dir, ck.LATEST))
    assert saved.iter_num == 3 and saved.train_config["lr"] == 3e-4
    start = read_log(r.config.out_dir)[1]
    assert start["event"] == "eval" and start["iter"] == 0
    scratch = train(tiny(tmp_path, str(tmp_path / "newdata"), "scratch", max_iters=0), **quiet)
    assert start["val_loss"] < scratch.last_eval["val_loss"]  # started from trained weights


def test_fine_tune_vocabulary_mismatch(tmp_path, data_dir):
    base = train(tiny(tmp_path, data_dir, "base", max_iters=2), **quiet)
    src = tmp_path / "other.txt"
    src.write_text("ZYXWVU 0123456789 " * 50)
    prepare(str(src), str(tmp_path / "otherdata"), **quiet)
    with pytest.raises(ValueError, match=r"fine-tune: the checkpoint .* different char tokenizer .*--tokenizer-file"):
        train(tiny(tmp_path, str(tmp_path / "otherdata"), "ft", init_from=base.config.out_dir), **quiet)
    with pytest.raises(ValueError, match=r"character 'Z' .* not in the vocabulary"):
        prepare(str(src), str(tmp_path / "x"), tokenizer_file=os.path.join(base.config.out_dir, "tokenizer.json"), **quiet)


def test_grad_accum_matches_one_big_batch(tmp_path, data_dir, monkeypatch):
    big = np.random.default_rng(0).integers(0, TokenData(data_dir).vocab_size, size=(4, 9))
    x, y = big[:, :-1], big[:, 1:]
    served = {"i": 0}

    def get_batch(self, split, batch_size, block_size, generator):
        if split != "train":
            return x[:batch_size], y[:batch_size]
        i = served["i"] % 4
        served["i"] += batch_size
        return x[i:i + batch_size], y[i:i + batch_size]

    monkeypatch.setattr(TokenData, "get_batch", get_batch)
    common = dict(max_iters=1, dtype="float64", grad_clip=0.0, eval_interval=100)
    a = train(tiny(tmp_path, data_dir, "accum", batch_size=2, grad_accum=2, **common), **quiet)
    served["i"] = 0
    b = train(tiny(tmp_path, data_dir, "big", batch_size=4, grad_accum=1, **common), **quiet)
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        np.testing.assert_allclose(pa.data, pb.data, rtol=0, atol=1e-12, err_msg=name)
    # Adam hides a gradient scale in its update, so compare the loss and gradient norm (1/k scaling) too
    la = [(r["loss"], r["grad_norm"]) for r in read_log(a.config.out_dir) if r["event"] == "step"]
    lb = [(r["loss"], r["grad_norm"]) for r in read_log(b.config.out_dir) if r["event"] == "step"]
    assert len(la) == 1 and np.allclose(la, lb, rtol=1e-12, atol=0)


def test_block_longer_than_data_is_refused(tmp_path, data_dir):
    with pytest.raises(ValueError, match=r"val split has \d+ tokens, but block_size 5000 needs at least 5001"):
        train(tiny(tmp_path, data_dir, block_size=5000), **quiet)


def test_bad_config_values():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="min_lr <= lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="warmup_iters=500 exceeds lr_decay_iters=100"):
        TrainConfig(warmup_iters=500, lr_decay_iters=100)
    assert TrainConfig(warmup_iters=100, max_iters=10).decay_iters == 100  # a short run only warms up
    with pytest.raises(ValueError, match=r"beta2 must lie in \[0, 1\), got 1.5"):
        TrainConfig(beta2=1.5)
    with pytest.raises(ValueError, match="device one of"):
        TrainConfig(device="tpu")


def test_device_default_comes_from_the_environment(monkeypatch):
    """TrainConfig and GPT read $NPGPT_DEVICE when they are made (npgpt was imported long before)."""
    from npgpt.models.gpt import GPTConfig

    monkeypatch.setenv("NPGPT_DEVICE", "cuda")
    assert TrainConfig().device == "cuda"
    assert TrainConfig(device="cpu").device == "cpu", "an explicit device wins"
    monkeypatch.setenv("NPGPT_DEVICE", "nonsense")
    with pytest.raises(ValueError, match="device one of"):
        TrainConfig()
    with pytest.raises(ValueError, match="unknown device 'nonsense'"):
        GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4))  # device=None reads it
    monkeypatch.delenv("NPGPT_DEVICE")
    assert TrainConfig().device == "cpu"


def test_resume_without_checkpoint(tmp_path, data_dir):
    with pytest.raises(ValueError, match=r"init_from='resume': no checkpoint in .*out to resume from"):
        train(tiny(tmp_path, data_dir, init_from="resume"), **quiet)


def test_plot_and_fallbacks(tmp_path, data_dir, monkeypatch):
    pytest.importorskip("matplotlib")
    r = train(tiny(tmp_path, data_dir, "p", plot=True, max_iters=4), **quiet)
    png = os.path.join(r.config.out_dir, "loss.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    os.unlink(png)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr("npgpt.training.log._interactive", lambda: True)  # as on a terminal, where a bar is wanted
    messages = []
    train(tiny(tmp_path, data_dir, "p", plot=True, progress=True, max_iters=4), log=messages.append, overwrite=True)
    assert not os.path.exists(png)
    assert any("matplotlib is not installed" in m for m in messages)
    assert any("tqdm is not installed" in m for m in messages)
    assert any(m.startswith("step 4/4: loss") and "tok/s" in m and "left" in m for m in messages)


def test_output_that_is_not_a_terminal_gets_plain_lines(tmp_path, data_dir, monkeypatch):
    """Under pytest stdout is captured, as it is in a log file or CI: no tqdm bar, plain step lines."""
    pytest.importorskip("tqdm")
    import npgpt.training.log as tl

    assert not tl._interactive()
    created = []
    monkeypatch.setattr("tqdm.auto.tqdm", lambda *a, **k: created.append(1))
    messages = []
    train(tiny(tmp_path, data_dir, "plain", progress=True, max_iters=4), log=messages.append)
    assert not created
    assert any(m.startswith("step 4/4: loss") for m in messages)


class _ReadLikeAGpu:
    """StepReadings as the loop makes them on a GPU (read at log steps, evaluations, saves and the
    end, not every step), counting the transfers."""

    transfers = 0

    def __new__(cls, every_step, out_dir):
        from npgpt.training.step import StepReadings

        readings = StepReadings(False, out_dir)
        real = readings.read

        def read():
            if readings.pending:
                cls.transfers += 1
            return real()

        readings.read = read
        return readings


def test_reading_losses_only_when_logging_changes_nothing(tmp_path, data_dir, monkeypatch):
    """On a GPU the loop reads the loss and gradient norm back only at log steps, evaluations and
    saves: the run and its log are the same bits as reading every step."""
    every = train(tiny(tmp_path, data_dir, "every", log_interval=3, eval_interval=6, max_iters=12), **quiet)
    monkeypatch.setattr("npgpt.training.loop.StepReadings", _ReadLikeAGpu)
    _ReadLikeAGpu.transfers = 0
    lazy = train(tiny(tmp_path, data_dir, "lazy", log_interval=3, eval_interval=6, max_iters=12), **quiet)
    assert _ReadLikeAGpu.transfers == 4  # steps 3, 6, 9, 12: not 12
    assert_same_weights(weights(every.config.out_dir), weights(lazy.config.out_dir))
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "config", "time")} for r in recs]  # noqa: E731
    assert strip(read_log(every.config.out_dir)) == strip(read_log(lazy.config.out_dir))


def test_nan_found_late_still_names_its_step_and_keeps_the_files(tmp_path, data_dir, monkeypatch):
    """Read at log steps only, a NaN at step 6 is found at step 7's reading (log_interval 4), after
    the update of step 6 has run: the error still names step 6 and no file holds the spoiled weights."""
    monkeypatch.setattr("npgpt.training.loop.StepReadings", _ReadLikeAGpu)
    cfg = tiny(tmp_path, data_dir, always_save_checkpoint=True, log_interval=4, eval_interval=4)
    calls = nan_loss_at_call(monkeypatch, 7)  # step 6
    with pytest.raises(TrainingDiverged, match=r"loss nan at step 6 .*last good state"):
        train(cfg, **quiet)
    assert calls["n"] == 8, "steps 6 and 7 ran before the reading at step 7"
    latest = ck.load_checkpoint(os.path.join(cfg.out_dir, ck.LATEST))
    assert latest.iter_num == 4
    assert all(np.isfinite(v).all() for v in latest.model_state.values())
    last = read_log(cfg.out_dir)[-1]
    assert (last["event"], last["iter"], last["loss"]) == ("diverged", 6, None)
