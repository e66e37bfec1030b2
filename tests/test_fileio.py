"""npgpt/fileio.py: errors that name the file, whole-directory replacement, leftovers (issue 15).
The kill -9 tests are in tests/test_kill.py."""

from __future__ import annotations

import errno
import os

import pytest

from npgpt import fileio


class FullDisk:
    """A file object whose writes fail as a full disk does, after writing a little."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_disk_full_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.safetensors"
    target.write_bytes(b"old")
    real = fileio.os.fdopen
    monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode: FullDisk(real(fd, mode)))
    with pytest.raises(OSError, match=rf"No space left on device: {target}$") as e:
        fileio.atomic_write(target, b"new bytes")
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_train_log_disk_full_names_log_jsonl(tmp_path):
    from npgpt.training.log import TrainLog

    log = TrainLog(str(tmp_path / "log.jsonl"), append=False)
    log._f = FullDisk(log._f)
    with pytest.raises(OSError, match=r"No space left on device: .*log\.jsonl$"):
        log.write({"event": "step"})


def test_replace_dir_swaps_whole_and_refuses_foreign_files(tmp_path):
    target = tmp_path / "d"
    for round_, names in enumerate((["a", "b"], ["a"], ["c"])):
        with fileio.replace_dir(target, keep_only={"a", "b", "c"}) as tmp:
            for n in names:
                fileio.write_file(os.path.join(tmp, n), f"{n}{round_}")
        assert sorted(os.listdir(target)) == names  # no file of an older set stays
        assert all((target / n).read_text() == f"{n}{round_}" for n in names)
    assert sorted(os.listdir(tmp_path)) == ["d"]
    with pytest.raises(RuntimeError, match="abandon"):  # an error inside leaves the old set
        with fileio.replace_dir(target) as tmp:
            fileio.write_file(os.path.join(tmp, "z"), "partial")
            raise RuntimeError("abandon")
    assert os.listdir(target) == ["c"] and sorted(os.listdir(tmp_path)) == ["d"]
    (target / "mine.txt").write_text("a user's file")
    with pytest.raises(ValueError, match=r"holds files that are not an npgpt thing's \(mine\.txt\)"):
        with fileio.replace_dir(target, keep_only={"c"}, what="thing"):
            pass
    assert sorted(os.listdir(target)) == ["c", "mine.txt"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        with fileio.replace_dir(tmp_path / "f"):
            pass


def test_settle_dir_restores_the_old_set_after_a_half_swap(tmp_path):
    dead = 2 ** 22 + 999
    old = tmp_path / f".d.{fileio._HOST}-{dead}-00ff00ff.old"
    old.mkdir()
    (old / "meta.json").write_text("{}")
    assert fileio.settle_dir(tmp_path / "d") == str(tmp_path / "d")
    assert os.listdir(tmp_path) == ["d"] and (tmp_path / "d" / "meta.json").read_text() == "{}"
    live = tmp_path / f".e.{fileio._HOST}-{os.getpid()}-00ff00ff.old"  # a live writer mid-swap: left alone
    live.mkdir()
    fileio.settle_dir(tmp_path / "e")
    assert live.is_dir() and not (tmp_path / "e").exists()
