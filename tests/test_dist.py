"""Data-parallel training over MPI: N ranks with grad_accum k equal one process with grad_accum k N.

Each test starts real ranks with the dist extra's mpiexec (`make test` installs it). The model is
tiny so a run takes about a second. The 1e-12 comparisons run without biases: the attention key
bias has an exactly zero true gradient (softmax ignores a constant added to a row of scores), so
its computed gradient is rounding noise that depends on the order of the gradient sum, and Adam
moves that bias by steps of the noise's size (below 1e-13, differing between the runs by as much),
which alone brings c_attn.bias to ~1e-12 relative; every other weight agrees to ~1e-15.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from npgpt.training import checkpoint as ck
from npgpt.training import dist
from npgpt.data.tokens import prepare
from npgpt.training.loop import TrainConfig, read_log, resume_config, train
from npgpt.training.rng import pcg64_distance
from tests.helpers import cli_flags

TEXT = "".join(f"line {i}: the cat sat on the mat, {i * 7 % 13} times.\n" for i in range(300))
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_driver.py")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
quiet = dict(log=lambda *a: None)
TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=4, bias=False, dtype="float64", dropout=0.1,
            grad_clip=0.5, lr=1e-2, min_lr=1e-3, warmup_iters=2, lr_decay_iters=20, max_iters=20, eval_interval=5,
            eval_iters=5, log_interval=1, seed=3, progress=False, plot=False)


def flags(**kw) -> list[str]:
    return cli_flags(TINY, **kw)


def run(cmd: list[str], **env) -> subprocess.CompletedProcess:
    """Run a command line to its end (a hang fails the test at the timeout), one BLAS thread per rank."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def ranks(n: int, *args: str, driver: bool = False, **env) -> subprocess.CompletedProcess:
    """`mpiexec -n N npgpt train ARGS` (through tests/dist_driver.py when a failure is injected)."""
    program = [DRIVER] if driver else ["-m", "npgpt.cli"]
    return run([MPIEXEC, "-n", str(n), sys.executable, *program, "train", *args], **env)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    if not os.path.isfile(MPIEXEC):
        pytest.fail(f"no mpiexec beside {sys.executable}: install the dist extra (make .venv/.test does)")
    d = tmp_path_factory.mktemp("data")
    (d / "t.txt").write_text(TEXT)
    prepare(str(d / "t.txt"), str(d / "prep"), **quiet)
    return str(d / "prep")


@pytest.fixture(scope="module")
def pair(tmp_path_factory, data_dir):
    """One process with grad_accum 4, and `npgpt train --nproc 2` with grad_accum 2: (one, two) dirs."""
    root = tmp_path_factory.mktemp("pair")
    one, two = str(root / "one"), str(root / "two")
    train(TrainConfig.from_values(dict(out_dir=one, data_dir=data_dir, grad_accum=4, **TINY)), **quiet)
    r = run([sys.executable, "-m", "npgpt.cli", "train", "--nproc", "2", "--data-dir", data_dir, "--out-dir", two,
             "--grad-accum", "2", *flags()])
    assert r.returncode == 0, r.stderr
    assert "2 ranks x grad_accum 2" in r.stdout
    return one, two


def worst_relative(a: dict, b: dict) -> tuple[float, str]:
    """max over tensors of max|a - b| / max|a|, and the tensor where it is reached."""
    assert a.keys() == b.keys()
    errs = {k: float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(a[k]))) for k in a}
    worst = max(errs, key=errs.get)
    return errs[worst], worst


def test_two_ranks_equal_one_process_with_double_accumulation(pair):
    one, two = (ck.load_checkpoint(d, prefer=ck.LATEST) for d in pair)
    assert one.iter_num == two.iter_num == 20
    err, name = worst_relative(one.model_state, two.model_state)
    assert err < 1e-12, f"{name}: relative difference {err:.3g}"
    # the batch and dropout generators end where one process leaves them: same batches, same masks
    assert one.rng == two.rng
    steps = [[r for r in read_log(d) if r["event"] == "step"] for d in pair]
    assert [r["iter"] for r in steps[0]] == [r["iter"] for r in steps[1]] == list(range(1, 21))
    for a, b in zip(*steps):
        assert abs(a["loss"] - b["loss"]) <= 1e-12 * abs(a["loss"]) and abs(a["grad_norm"] - b["grad_norm"]) <= 1e-12 * a["grad_norm"]
    assert sum(r["grad_norm"] > TINY["grad_clip"] for r in steps[0]) >= 5, "clipping should act in this run"
    start = [r for r in read_log(pair[1]) if r["event"] == "start"]
    assert start[0]["ranks"] == 2


def test_eval_split_over_ranks_gives_the_one_process_loss(pair):
    evals = [[r for r in read_log(d) if r["event"] == "eval"] for d in pair]
    assert [r["iter"] for r in evals[0]] == [r["iter"] for r in evals[1]] == [0, 5, 10, 15, 20]
    # step 0: the same weights, eval_iters = 5 batches split 3 + 2 over the ranks: the same bits
    assert (evals[0][0]["train_loss"], evals[0][0]["val_loss"]) == (evals[1][0]["train_loss"], evals[1][0]["val_loss"])
    for a, b in zip(*evals):
        for k in ("train_loss", "val_loss"):
            assert abs(a[k] - b[k]) <= 1e-12 * a[k], (a, b)


def test_resume_of_two_ranks_equals_the_uninterrupted_run(tmp_path, pair, data_dir):
    out = str(tmp_path / "resumed")
    first = ranks(2, "--data-dir", data_dir, "--out-dir", out, "--grad-accum", "2", *flags(max_iters=10))
    assert first.returncode == 0, first.stderr
    assert ck.load_checkpoint(out, prefer=ck.LATEST).iter_num == 10
    second = ranks(2, "--init-from", "resume", "--out-dir", out, "--max-iters", "20")
    assert second.returncode == 0, second.stderr
    resumed, straight = (ck.load_checkpoint(d, prefer=ck.LATEST) for d in (out, pair[1]))
    assert resumed.iter_num == 20 and resumed.rng == straight.rng
    for k in straight.model_state:
        assert np.array_equal(resumed.model_state[k], straight.model_state[k]), k


def test_one_process_resumes_a_two_rank_checkpoint(tmp_path, pair, data_dir):
    out = str(tmp_path / "half")
    r = ranks(2, "--data-dir", data_dir, "--out-dir", out, "--grad-accum", "2", *flags(max_iters=10))
    assert r.returncode == 0, r.stderr
    assert ck.load_checkpoint(out, prefer=ck.LATEST).train_config["ranks"] == 2
    cfg = resume_config(out, {"max_iters": 20})  # no --grad-accum: the batch is kept (issue 15 point 8)
    assert cfg.grad_accum == 4
    said = []
    train(cfg, log=said.append)
    assert any("resuming a 2-rank run in 1 process(es)" in m and "keeps the batch of 16 sequences" in m for m in said)
    resumed, one = (ck.load_checkpoint(d, prefer=ck.LATEST) for d in (out, pair[0]))
    err, name = worst_relative(one.model_state, resumed.model_state)
    assert resumed.iter_num == 20 and err < 1e-12, f"{name}: {err:.3g}"
    said = []  # a --grad-accum that changes the batch is obeyed, and said
    train(resume_config(out, {"max_iters": 22, "grad_accum": 1}), log=said.append)
    assert any("the batch changes from here" in m for m in said), said


@pytest.mark.parametrize("how", ["raise", "value", "die", "drift"])
def test_a_failing_rank_ends_the_job_with_its_error(tmp_path, data_dir, how):
    out = str(tmp_path / "out")
    r = ranks(2, "--data-dir", data_dir, "--out-dir", out, *flags(max_iters=50, eval_interval=3, always_save_checkpoint=True),
              driver=True, FAIL_RANK="1", FAIL_STEP="7", FAIL_HOW=how)
    assert r.returncode != 0
    if how == "raise":
        assert "npgpt: rank 1 of 2 failed: InjectedFailure: injected failure on rank 1 at step 7" in r.stderr
        assert "Traceback" in r.stderr
    elif how == "value":
        assert "npgpt train (rank 1 of 2): error: injected failure on rank 1 at step 7" in r.stderr
        assert r.returncode == 2
    elif how == "die":  # no last words: mpiexec ends rank 0 and passes on the dead rank's status
        assert r.returncode == 9
    elif how == "drift":  # caught at the next evaluation, step 9, before anything is saved
        assert "at step 9 rank(s) 1 hold weights that differ from rank 0's" in r.stderr and r.returncode == 2
    # whatever rank 0 had written is whole: the last checkpoint loads, and no temporary file is left
    ckpt = ck.load_checkpoint(out, prefer=ck.LATEST)
    assert ckpt.iter_num in (3, 6)
    assert sorted(n for n in os.listdir(out) if not n.endswith((".safetensors", ".json", ".jsonl"))) == []


def test_ranks_that_disagree_are_refused(tmp_path, data_dir):
    common = [sys.executable, "-m", "npgpt.cli", "train", "--out-dir", str(tmp_path / "out"), *flags(max_iters=2)]
    r = run([MPIEXEC, "-n", "1", *common, "--data-dir", data_dir, "--lr", "0.01", ":",
             "-n", "1", *common, "--data-dir", data_dir, "--lr", "0.02"])
    assert r.returncode == 2
    assert "ranks disagree" in r.stderr and "lr: rank 0 has 0.01, rank 1 has 0.02" in r.stderr
    other = tmp_path / "other"
    (tmp_path / "u.txt").write_text(TEXT.replace("cat", "bat"))
    prepare(str(tmp_path / "u.txt"), str(other), **quiet)
    r = run([MPIEXEC, "-n", "1", *common, "--data-dir", data_dir, ":", "-n", "1", *common, "--data-dir", str(other)])
    assert r.returncode == 2 and "the data files differs on rank(s) 1" in r.stderr
    assert not (tmp_path / "out" / ck.LATEST).exists()


def test_pcg64_distance_inverts_advance():
    g = np.random.default_rng([7, 1])
    for d in (0, 1, 2, 3, 1000, 123456789, 2**64 + 5, 2**127 + 3):
        start = g.bit_generator.state
        g.bit_generator.advance(d)
        assert pcg64_distance(start, g.bit_generator.state) == d
    start = g.bit_generator.state
    g.random(1000)  # a float64 is one 64-bit draw
    assert pcg64_distance(start, g.bit_generator.state) == 1000
    with pytest.raises(RuntimeError, match="PCG64"):
        pcg64_distance(np.random.Generator(np.random.MT19937(0)).bit_generator.state, start)


def test_launch_command_and_threads(monkeypatch):
    seen = {}

    class Proc:
        def __init__(self, cmd, env, start_new_session):
            seen.update(cmd=cmd, env=env)

        def wait(self):
            return 0

    monkeypatch.setattr(dist.subprocess, "Popen", Proc)
    for v in dist.THREAD_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    assert dist.launch(2, ["train", "--nproc", "2"]) == 0
    assert seen["cmd"] == [MPIEXEC, "-n", "2", sys.executable, "-m", "npgpt.cli", "train", "--nproc", "2"]
    assert seen["env"]["OMP_NUM_THREADS"] == seen["env"]["OPENBLAS_NUM_THREADS"] == str(max(1, dist.cores() // 2))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # told otherwise: left alone
    dist.launch(2, ["train"])
    assert seen["env"]["OMP_NUM_THREADS"] == "3" and "OPENBLAS_NUM_THREADS" not in seen["env"]


def test_clear_errors_without_mpi(tmp_path, monkeypatch, capsys):
    from npgpt.cli import main

    monkeypatch.setattr(dist.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["train", "--nproc", "2"]) == 2
    assert "--nproc needs mpiexec" in capsys.readouterr().err
    monkeypatch.setenv("PMI_SIZE", "2")
    assert main(["train", "--nproc", "3"]) == 2
    assert "--nproc 3, but mpiexec started 2 processes" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if not installed
    monkeypatch.setattr(dist, "_world", None)
    assert main(["train"]) == 2
    assert "mpi4py is not installed" in capsys.readouterr().err
    monkeypatch.setenv("PMI_SIZE", "1")  # mpiexec -n 1: one process, mpi4py never needed
    monkeypatch.setattr(dist, "_world", None)
    assert dist.world().size == 1


def test_ctrl_c_through_the_launcher_stops_every_rank_after_the_same_step(tmp_path, data_dir):
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "npgpt.cli", "train", "--nproc", "2", "--data-dir", data_dir,
                             "--out-dir", str(out), *flags(max_iters=100000, eval_interval=100000, dropout=0.0)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not (out / "log.jsonl").exists() or not any(r["event"] == "step" for r in read_log(str(out))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    ckpt = ck.load_checkpoint(str(out), prefer=ck.LATEST)
    assert f"interrupted: saved step {ckpt.iter_num} " in stdout and 0 < ckpt.iter_num < 100000
    assert max(r["iter"] for r in read_log(str(out)) if r["event"] == "step") == ckpt.iter_num


def test_two_ranks_on_a_device_read_it_once_per_step(tmp_path, data_dir):
    """On a GPU each rank's step reads the device once: the gradients and the loss packed into one
    transfer for the Allreduce (no float(loss) sync of its own), plus one read per log step. Counted
    on the strict CuPy stand-in (tests/strict_device.py): two runs 8 steps apart, alike otherwise."""
    counts = {}
    for n in (4, 12):
        prefix = str(tmp_path / f"t{n}")
        r = ranks(2, "--data-dir", data_dir, "--out-dir", str(tmp_path / f"o{n}"), "--grad-accum", "2",
                  *flags(device="strict", max_iters=n, eval_interval=1000, log_interval=4), driver=True,
                  STRICT_TRANSFERS=prefix)
        assert r.returncode == 0, r.stderr
        counts[n] = [json.load(open(f"{prefix}.{rank}.json")) for rank in (0, 1)]
    for rank in (0, 1):
        extra = counts[12][rank]["reads"] - counts[4][rank]["reads"]
        assert extra == 8 + 2, (f"rank {rank}: {extra} reads for 8 more steps, expected 10 (one gradient sum "
                                "per step, one per log step):\n" + "\n".join(map(str, counts[12][rank]["read_log"])))
    one = ck.load_checkpoint(str(tmp_path / "o12"), prefer=ck.LATEST)
    assert one.iter_num == 12


def test_a_second_ctrl_c_through_the_launcher_exits_130_quietly(tmp_path, data_dir):
    """Two Ctrl-Cs: the launcher ends mpiexec and both ranks at once (no rank left running), exit
    status 130 and one line, not MPICH's page about killed processes (issue 15 point 8)."""
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "npgpt.cli", "train", "--nproc", "2", "--data-dir", data_dir,
                             "--out-dir", str(out), *flags(max_iters=100000, eval_interval=100000, dropout=0.0,
                                                                 n_embd=384, n_head=4, batch_size=48)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not (out / "log.jsonl").exists() or not any(r["event"] == "step" for r in read_log(str(out))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # a step takes about a second here: the second lands mid-step
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted again: stopped at once" in stderr
    assert "BAD TERMINATION" not in stderr and "Traceback" not in stderr and len(stderr.splitlines()) <= 3, stderr
    time.sleep(0.5)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps  # no rank outlived the launcher
