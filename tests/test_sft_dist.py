"""SFT accumulation across real ranks: `npgpt train --nproc 2` (two MPI ranks, each batch_size 1 x
grad_accum 2) on SFT data whose answers have very different lengths ends, after several float64 steps,
with the weights of one process with batch_size 1 x grad_accum 4 (and 2 x 2): the step's loss is the
sum over its counted tokens divided by the count summed over micro-batches and ranks.
tests/test_sft.py proves the same with the ranks simulated in one process; this runs them for real.
"""

from __future__ import annotations

import os
import sys

import pytest

from npgpt.training import checkpoint as ck
from npgpt.training.loop import TrainConfig, read_log, train
from tests.helpers import cli_flags
from tests.test_dist import MPIEXEC, run, worst_relative
from tests.test_sft import sft_dir, tok_file  # noqa: F401 - fixtures

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=128, bias=False, dtype="float64", dropout=0.0, lr=3e-2,
            min_lr=3e-3, warmup_iters=1, lr_decay_iters=6, max_iters=6, eval_interval=3, eval_iters=2,
            log_interval=1, seed=5, grad_clip=1.0, progress=False, plot=False)


def flags(**kw) -> list[str]:
    return cli_flags(TINY, **kw)


def test_two_real_ranks_equal_one_process_with_the_same_product(sft_dir, tmp_path, capsys):  # noqa: F811
    if not os.path.isfile(MPIEXEC):
        pytest.fail(f"no mpiexec beside {sys.executable}: install the dist extra (make .venv/.test does)")
    quiet = dict(log=lambda *a: None)
    one, split, two = str(tmp_path / "1x4"), str(tmp_path / "2x2"), str(tmp_path / "ranks")
    train(TrainConfig.from_values(dict(out_dir=one, data_dir=sft_dir, batch_size=1, grad_accum=4, **TINY)), **quiet)
    train(TrainConfig.from_values(dict(out_dir=split, data_dir=sft_dir, batch_size=2, grad_accum=2, **TINY)), **quiet)
    r = run([sys.executable, "-m", "npgpt.cli", "train", "--nproc", "2", "--data-dir", sft_dir, "--out-dir", two,
             "--batch-size", "1", "--grad-accum", "2", *flags()])
    assert r.returncode == 0, r.stderr
    assert "2 ranks x grad_accum 2" in r.stdout
    a, b, c = (ck.load_checkpoint(d, prefer=ck.LATEST) for d in (one, split, two))
    assert a.iter_num == b.iter_num == c.iter_num == TINY["max_iters"]
    err_ranks, name_ranks = worst_relative(a.model_state, c.model_state)
    err_split, name_split = worst_relative(a.model_state, b.model_state)
    with capsys.disabled():
        print(f"\n  SFT weights after {TINY['max_iters']} steps, relative to 1x4: 2 real ranks of 1x2 {err_ranks:.1e}"
              f" ({name_ranks}), 2x2 {err_split:.1e} ({name_split})")
    assert err_ranks <= 1e-12, f"{name_ranks}: {err_ranks:.3g}"
    assert err_split <= 1e-12, f"{name_split}: {err_split:.3g}"
    # the comparison can fail: half the product (1 x 2, one process) sees other examples per step
    half = str(tmp_path / "1x2")
    train(TrainConfig.from_values(dict(out_dir=half, data_dir=sft_dir, batch_size=1, grad_accum=2, **TINY)), **quiet)
    err_half, _ = worst_relative(a.model_state, ck.load_checkpoint(half, prefer=ck.LATEST).model_state)
    assert err_half > 1e-3
    steps = [[r for r in read_log(d) if r["event"] == "step"] for d in (one, two)]
    assert len(steps[0]) == len(steps[1]) == TINY["max_iters"]
    for x, y in zip(*steps):  # the step's loss (counted-token mean over the whole step) is the same number
        assert abs(x["loss"] - y["loss"]) <= 1e-12 * abs(x["loss"]), (x, y)


def test_two_real_ranks_with_dropout_equal_one_process(sft_dir, tmp_path):  # noqa: F811
    """With dropout every micro-batch is padded to block_size (in one process and on N ranks alike),
    so rank r can seek micro-step j's masks: 2 ranks of 1 x 2 draw the masks of one process's 1 x 4.
    (Padding to the step's longest example in one process gave a 1.2 relative difference.)"""
    if not os.path.isfile(MPIEXEC):
        pytest.fail(f"no mpiexec beside {sys.executable}: install the dist extra (make .venv/.test does)")
    drop = dict(TINY, dropout=0.1)
    one, two = str(tmp_path / "1x4"), str(tmp_path / "ranks")
    train(TrainConfig.from_values(dict(out_dir=one, data_dir=sft_dir, batch_size=1, grad_accum=4, **drop)),
          log=lambda *a: None)
    args = flags(dropout=0.1)
    r = run([sys.executable, "-m", "npgpt.cli", "train", "--nproc", "2", "--data-dir", sft_dir, "--out-dir", two,
             "--batch-size", "1", "--grad-accum", "2", *args])
    assert r.returncode == 0, r.stderr
    a, c = (ck.load_checkpoint(d, prefer=ck.LATEST) for d in (one, two))
    err, name = worst_relative(a.model_state, c.model_state)
    assert err <= 1e-12, f"{name}: {err:.3g}"
