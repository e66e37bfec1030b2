"""Atomic writes, of one file or of a whole directory: a crash or kill -9 at any moment leaves the
old version or the new one, never a mix, and the leftovers of a killed writer are cleaned by the
next one.

One file (`atomic_file`, `atomic_write`): the new bytes go to a temporary file in the same folder
(same filesystem, so the rename is atomic), are flushed and fsynced, and only then renamed over the
real name; the folder is fsynced after, so the rename itself survives a power cut.

A directory whose files must agree (`replace_dir`: an export, a data directory): the new set is
written into a sibling temporary directory, fsynced, and then swapped with the old directory in one
step, renameat2(RENAME_EXCHANGE) on Linux, so a reader that opens the real name sees the whole old
set or the whole new set at every moment. Where the exchange is not available (another OS, a
filesystem that refuses it) the swap is two renames, old -> .NAME.TAG.old then new -> NAME; a kill
between them leaves the old set whole under its hidden name, and `settle_dir` (which readers and the
next writer call) renames it back.

Temporary names carry their writer's host and pid: `.NAME.HOST-PID-RANDOM.tmp` (files),
`.NAME.HOST-PID-RANDOM.new` / `.old` (directories). A writer first removes the ones whose process
is gone (on this host; a pid that is alive, or another host's, is left alone), so a killed run's
10-100 MB temporary file does not stay for ever.

Every change to a folder's listing goes through `_changed(what, path)` after it happens; tests set
`fileio._on_change` to a hook that SIGKILLs the process at the k-th change (tests/test_kill.py).

Disk-full and other OS errors while writing are re-raised as OSError naming the real file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import socket

_on_change = None  # tests: called as _on_change(what, path) after every listing change made here


def _changed(what: str, path: str) -> None:
    if _on_change is not None:
        _on_change(what, path)


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


# --- temporary names that say whose they are -------------------------------------------------------
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"
_TEMP = re.compile(r"\.(?P<base>.+)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]+\.(?P<kind>tmp|new|old)")


def _tag() -> str:
    return f"{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return True
    return True


def stale_temps(folder: str, base: str | None = None) -> list[tuple[str, str]]:
    """(kind, path) of the temporaries in `folder` (of `base` only, when given) whose writer, a
    process on this host, is gone."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for name in names:
        m = _TEMP.fullmatch(name)
        if m and (base is None or m["base"] == base) and m["host"] == _HOST and not _alive(int(m["pid"])):
            out.append((m["kind"], os.path.join(folder, name)))
    return out


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    _changed("remove", path)


def clean_stale(folder: str, base: str | None = None) -> list[str]:
    """Remove the dead writers' temporary files and directories in `folder`; return their paths.
    A `.old` directory is left when the real name is missing: it is the old set, see settle_dir."""
    removed = []
    for kind, path in stale_temps(folder, base):
        real = os.path.join(folder, _TEMP.fullmatch(os.path.basename(path))["base"])
        if kind == "old" and not os.path.lexists(real):
            continue
        _remove(path)
        removed.append(path)
    return removed


def settle_dir(path) -> str:
    """`path`, after undoing a two-rename swap that a kill cut in half: when `path` is missing and a
    dead writer's `.NAME.*.old` holds the old set, it is renamed back. Readers call this first."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        folder, base = os.path.split(path)
        olds = sorted((p for kind, p in stale_temps(folder, base) if kind == "old"), key=os.path.getmtime)
        if olds:
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rename(olds[-1], path)
                _changed("rename", path)
                fsync_dir(folder)
    return path


# --- one file ----------------------------------------------------------------------------------
def temp_beside(path: str, suffix: str = ".tmp") -> tuple[int, str]:
    """(fd, name) of a new temporary file in `path`'s folder, with the mode `path` should get; the
    temporaries of dead writers of `path` are removed first."""
    folder, base = os.path.split(os.path.abspath(path))
    clean_stale(folder, base)
    tmp = os.path.join(folder, f".{base}.{_tag()}{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, new_file_mode(path))
    _changed("create", tmp)
    os.fchmod(fd, new_file_mode(path))
    return fd, tmp


def named_error(e: OSError, path: str) -> OSError:
    """e as an OSError of the same type that names `path` (ENOSPC: 'No space left on device: PATH')."""
    if e.errno is None:
        return OSError(f"{path}: {e}")
    return type(e)(e.errno, f"{e.strerror}: {path}")


def write_all(fd: int, data) -> None:
    """os.write until every byte is written (a short write is retried, an error raised)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


@contextlib.contextmanager
def atomic_file(path, suffix: str = ".tmp"):
    """Yield a binary file open at a temporary name beside `path`; on a clean exit it replaces `path`.

    Raise inside the block to abandon the write (e.g. a checksum that does not match). An OSError
    while writing (a full disk) is raised naming `path`.
    """
    path = os.fspath(path)
    try:
        fd, tmp = temp_beside(path, suffix)
    except OSError as e:
        raise named_error(e, path) from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _changed("rename", path)
        except OSError as e:
            raise named_error(e, path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
            _changed("remove", tmp)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write(path, payload: bytes | str) -> None:
    """Write bytes (or UTF-8 text) to `path` atomically."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    with atomic_file(path) as f:
        f.write(payload)


# --- a whole directory -------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = None


def _exchange(a: str, b: str) -> bool:
    """Swap the names a and b in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.renameat2  # noqa: B018 - glibc >= 2.28
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), b)


def _swap(new: str, path: str, tag: str) -> str | None:
    """Put directory `new` at `path`; return where the old directory went (to be removed), if any."""
    if not os.path.lexists(path):
        os.rename(new, path)
        _changed("rename", path)
        return None
    if exchange_supported and _exchange(new, path):
        _changed("exchange", path)
        return new  # now holds the old set
    folder, base = os.path.split(path)
    old = os.path.join(folder, f".{base}.{tag}.old")
    os.rename(path, old)
    _changed("rename", old)
    os.rename(new, path)
    _changed("rename", path)
    return old


exchange_supported = True  # tests set False to run the two-rename fallback


@contextlib.contextmanager
def replace_dir(path, keep_only=None, what: str = "directory"):
    """Yield an empty temporary directory beside `path`; on a clean exit it replaces `path` whole.

    Write the new set of files into the yielded directory (fsync each, e.g. with atomic_file or
    write_file); the directory is fsynced, swapped in, and the old set removed. An exception inside
    the block leaves `path` as it was. `keep_only`: the file names `path` may hold now (a collection,
    or a test name -> bool); anything else
    there (a user's own files) makes this refuse with a ValueError before writing, since replacing
    the directory would delete them.
    """
    path = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    settle_dir(path)
    clean_stale(folder, base)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"{path}: exists and is not a directory")
    if keep_only is not None and os.path.isdir(path):
        ours = keep_only if callable(keep_only) else set(keep_only).__contains__
        foreign = sorted(n for n in os.listdir(path) if not ours(n))
        if foreign:
            raise ValueError(f"{path}: holds files that are not an npgpt {what}'s ({', '.join(foreign[:5])}"
                             f"{', ...' if len(foreign) > 5 else ''}); writing the {what} replaces the whole "
                             "directory, so choose a new or empty one")
    tag = _tag()
    new = os.path.join(folder, f".{base}.{tag}.new")
    os.mkdir(new)
    _changed("mkdir", new)
    try:
        yield new
        fsync_dir(new)
        old = _swap(new, path, tag)
        fsync_dir(folder)
        if old is not None:
            _remove(old)
    finally:
        if os.path.lexists(new):
            _remove(new)


def write_file(path: str, payload: bytes | str) -> None:
    """Write a new file (into a replace_dir directory) and fsync it; an OSError names the file."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, new_file_mode(path))
        _changed("create", path)
        try:
            write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise named_error(e, path) from None


def read_json(path: str):
    """The JSON value in the UTF-8 file `path`; ValueError naming the file when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
