"""Atomic file writes: a crash or kill at any moment leaves either the old file or the new one.

The new bytes go to a temporary file in the same folder (same filesystem, so the rename is atomic),
are flushed and fsynced, and only then renamed over the real name; the folder is fsynced after, so
the rename itself survives a power cut. On any error the temporary file is removed and the real
name is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def fsync_dir(folder: str) -> None:
    """Make a rename in `folder` durable (best effort: some filesystems refuse to fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_file_mode(path: str) -> int:
    """The permission bits a plain open() would give `path`: the replaced file's own, else 0o666
    less the umask (mkstemp alone would make every file private, 0o600)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def temp_beside(path: str, suffix: str = ".tmp") -> tuple[int, str]:
    """(fd, name) of a new temporary file in `path`'s folder, with the mode `path` should get."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=suffix)
    os.fchmod(fd, new_file_mode(path))
    return fd, tmp


@contextlib.contextmanager
def atomic_file(path, suffix: str = ".tmp"):
    """Yield a binary file open at a temporary name beside `path`; on a clean exit it replaces `path`.

    Raise inside the block to abandon the write (e.g. a checksum that does not match).
    """
    path = os.fspath(path)
    fd, tmp = temp_beside(path, suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write(path, payload: bytes | str) -> None:
    """Write bytes (or UTF-8 text) to `path` atomically."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    with atomic_file(path) as f:
        f.write(payload)
