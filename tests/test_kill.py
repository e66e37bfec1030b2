"""kill -9 at every change of a target directory's listing: a reader sees the old set or the new set,
and the next run cleans up what the killed one left (issue 15 point 2).

Each writer runs in a subprocess whose fileio._on_change hook SIGKILLs it right after the k-th change
(file created, renamed, removed, directory made or exchanged), for k = 0 .. N, N being the changes of
an unkilled run. After each kill the target is compared byte for byte with the old and the new set,
opened by npgpt's own reader, and then the writer runs again unkilled: it must succeed and leave no
hidden temporary file or directory beside or inside the target. Both swaps are tested: the one-step
RENAME_EXCHANGE and the two-rename fallback (undone by settle_dir when a kill lands between).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HARNESS = textwrap.dedent("""
    import os, signal, sys
    from npgpt import fileio
    kill_at, exchange, job = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]
    fileio.exchange_supported = exchange
    count = [0]
    def hook(what, path):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    fileio._on_change = hook
    kind = job[0]
    if kind == "prepare":
        from npgpt.data.tokens import prepare
        prepare(job[1], job[2], log=lambda *a: None)
    elif kind == "export":
        from npgpt.cli.export import export_checkpoint
        export_checkpoint(job[1], job[3], tokenizer=job[2] == "1", log=lambda *a: None)
    elif kind == "checkpoint":
        from npgpt.fileio import atomic_write
        atomic_write(job[2], open(job[1], "rb").read())
    print("changes", count[0])
""")


def run(kill_at: int, exchange: bool, *job) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", HARNESS, str(kill_at), "1" if exchange else "0", *map(str, job)],
                          capture_output=True, text=True, env=env, timeout=60)


def snapshot(path) -> dict | None:
    if not os.path.isdir(path):
        return None
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


def hidden(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def kill_everywhere(tmp_path, exchange: bool, job_new, target, read):
    """Kill job_new after each of its listing changes; check old-or-new, readability, and cleanup."""
    old = snapshot(target)
    ref = tmp_path / "reference"  # the new set, written unkilled elsewhere, to compare with
    done = run(0, exchange, *job_new[:-1], ref)
    assert done.returncode == 0, done.stderr
    new = snapshot(ref)
    assert new != old
    fresh = run(0, exchange, *job_new)  # how many changes an unkilled run over the old set makes
    assert fresh.returncode == 0, fresh.stderr
    n = int(fresh.stdout.split()[-1])
    assert n >= 3
    seen = set()
    for k in range(1, n + 1):
        restore(target, old)
        killed = run(k, exchange, *job_new)
        assert killed.returncode == -9, (k, killed.stderr)
        read(target)  # npgpt's reader opens it (and settles a half-done fallback swap)
        now = snapshot(target)
        assert now in (old, new), f"kill after change {k} of {n}: a mix: {sorted(now or {})}"
        seen.add("old" if now == old else "new")
        again = run(0, exchange, *job_new)
        assert again.returncode == 0, (k, again.stderr)
        assert snapshot(target) == new
        assert hidden(os.path.dirname(target)) == [], (k, hidden(os.path.dirname(target)))
    assert seen == {"old", "new"}  # the kills landed on both sides of the swap


def restore(target, files: dict) -> None:
    import shutil

    if os.path.lexists(target):
        shutil.rmtree(target)
    os.makedirs(target)
    for name, data in files.items():
        with open(os.path.join(target, name), "wb") as f:
            f.write(data)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_prepare_killed_at_every_change(tmp_path, exchange):
    from npgpt.data.tokens import TokenData, prepare

    work = tmp_path / "w"
    work.mkdir()
    (work / "a.txt").write_text("the old text, which is not the new one\n" * 20)
    (work / "b.txt").write_text("brand new words for a new data set!\n" * 30)
    target = str(work / "d")
    prepare(str(work / "a.txt"), target, log=lambda *a: None)
    kill_everywhere(tmp_path, exchange, ["prepare", work / "b.txt", target], target, TokenData)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_export_killed_at_every_change(tmp_path, exchange):
    """Over an export with a tokenizer, an export without one: never new weights beside an old
    config.json, never the old vocab.json beside the new weights."""
    from npgpt.data.tokens import prepare
    from npgpt.models.gpt import GPT
    from npgpt.cli.export import export_checkpoint
    from npgpt.training.loop import TrainConfig, train

    work = tmp_path / "w"
    work.mkdir()
    (work / "t.txt").write_text("".join(f"line {i}: some words to tokenize\n" for i in range(100)))
    prepare(str(work / "t.txt"), str(work / "data"), tokenizer="bpe", vocab_size=300, log=lambda *a: None)
    cfg = dict(data_dir=str(work / "data"), n_layer=1, n_head=2, n_embd=8, block_size=8, batch_size=2,
               eval_iters=1, eval_interval=2, warmup_iters=1, plot=False, progress=False)
    train(TrainConfig.from_values(dict(out_dir=str(work / "r1"), max_iters=2, **cfg)), log=lambda *a: None)
    train(TrainConfig.from_values(dict(out_dir=str(work / "r2"), max_iters=2, seed=5, **cfg)), log=lambda *a: None)
    target = str(work / "export")
    export_checkpoint(str(work / "r1"), target, log=lambda *a: None)
    assert "vocab.json" in os.listdir(target)

    kill_everywhere(tmp_path, exchange, ["export", work / "r2", 0, target], target, GPT.from_pretrained)
    assert "vocab.json" not in os.listdir(target)  # --no-tokenizer left no stale tokenizer file


def test_checkpoint_file_killed_at_every_change(tmp_path):
    """One file (atomic_write, what save_checkpoint uses): old or new bytes; the killed writer's
    hidden temporary file is removed by the next write of that file, not left for ever."""
    new = tmp_path / "new.bin"
    new.write_bytes(os.urandom(1 << 20))
    target = tmp_path / "ckpt.safetensors"
    target.write_bytes(b"old")
    n = int(run(0, True, "checkpoint", new, target).stdout.split()[-1])
    for k in range(1, n + 1):
        target.write_bytes(b"old")
        assert run(k, True, "checkpoint", new, target).returncode == -9
        assert target.read_bytes() in (b"old", new.read_bytes())
        assert run(0, True, "checkpoint", new, target).returncode == 0
        assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_a_live_writers_temporaries_are_left_alone(tmp_path):
    """Cleaning removes only a dead writer's leftovers: a name with a live pid (here this process's
    parent) stays."""
    from npgpt import fileio

    live = tmp_path / f".x.{fileio._HOST}-{os.getppid()}-abcd1234.tmp"
    dead_pid = 2 ** 22 + 12345  # beyond pid_max on Linux by default: no such process
    dead = tmp_path / f".x.{fileio._HOST}-{dead_pid}-abcd1234.tmp"
    other_host = tmp_path / f".x.otherhost-{dead_pid}-abcd1234.tmp"
    for p in (live, dead, other_host):
        p.write_bytes(b"partial")
    fileio.atomic_write(tmp_path / "x", b"whole")
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other_host.name, "x"])
