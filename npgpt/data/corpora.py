"""Where text comes from: UTF-8 files, and the named corpora `stdlib` and `shakespeare_char`.

stdlib            the .py files at the top level of this Python's standard library
                  (sysconfig.get_paths()["stdlib"]) that are pure ASCII, in sorted name order, each
                  preceded by a `# file: NAME` line, whole files until the total passes
                  STDLIB_MAX_BYTES. Needs no network; the text depends on the Python version, and
                  meta.json records its sha256.
shakespeare_char  Tiny Shakespeare (1,115,394 characters), from, in this order: `data_path` (a file,
                  or a directory holding tinyshakespeare.txt or input.txt), $NPGPT_DATA (the same),
                  the download cache ($NPGPT_CACHE or ~/.cache/npgpt), else a download from
                  SHAKESPEARE_URL ($NPGPT_SHAKESPEARE_URL overrides it). Every copy is checked
                  against SHAKESPEARE_SHA256.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import urllib.error
import urllib.request

from ..fileio import atomic_file

KNOWN_CORPORA = ("stdlib", "shakespeare_char")
STDLIB_MAX_BYTES = 2_000_000
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_NAMES = ("tinyshakespeare.txt", "input.txt")


def read_text_file(path: str) -> str:
    """The text of a UTF-8 file; ValueError naming the file for an empty or non-UTF-8 one."""
    with open(path, "rb") as f:
        raw = f.read()
    return decode_text(raw, path)


def decode_text(raw: bytes, where: str) -> str:
    if not raw:
        raise ValueError(f"{where}: the file is empty; there is nothing to train on")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{where}: not UTF-8 text: byte 0x{raw[e.start]:02x} at byte offset {e.start} ({e.reason}); "
            "convert the file to UTF-8 first"
        ) from None


def stdlib_text(max_bytes: int = STDLIB_MAX_BYTES) -> tuple[str, str]:
    """(text, description) of the `stdlib` corpus."""
    root = sysconfig.get_paths()["stdlib"]
    parts, total, used = [], 0, 0
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not name.endswith(".py") or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            raw = f.read()
        if not raw.isascii():
            continue
        piece = f"# file: {name}\n" + raw.decode("ascii").replace("\r\n", "\n").rstrip("\n") + "\n\n"
        parts.append(piece)
        total += len(piece)
        used += 1
        if total >= max_bytes:
            break
    if not parts:
        raise ValueError(f"no ASCII .py files found in the standard library folder {root}")
    return "".join(parts), f"stdlib:{root} ({used} files)"


def _cache_dir() -> str:
    return os.environ.get("NPGPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "npgpt")


def _find_in(path: str) -> str | None:
    """`path` itself if it is a file, else the first of SHAKESPEARE_NAMES inside it."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        for name in SHAKESPEARE_NAMES:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
    return None


def _verified(raw: bytes, where: str) -> bytes:
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise ValueError(
            f"{where}: sha256 {digest} is not Tiny Shakespeare's {SHAKESPEARE_SHA256}; "
            "to train on a different text, pass its path to `npgpt prepare` instead of a corpus name"
        )
    return raw


def shakespeare_text(data_path: str | None = None, url: str | None = None, log=print) -> tuple[str, str]:
    """(text, description) of Tiny Shakespeare, found or downloaded as the module docstring says."""
    for given, what in ((data_path, "--data-path"), (os.environ.get("NPGPT_DATA"), "$NPGPT_DATA")):
        if not given:
            continue
        found = _find_in(given)
        if found is None:
            raise ValueError(f"{what} {given!r}: neither a file nor a directory holding one of {SHAKESPEARE_NAMES}")
        with open(found, "rb") as f:
            return decode_text(_verified(f.read(), found), found), os.path.abspath(found)
    cached = os.path.join(_cache_dir(), SHAKESPEARE_NAMES[0])
    if os.path.isfile(cached):
        with open(cached, "rb") as f:
            return decode_text(_verified(f.read(), cached), cached), cached
    url = url or os.environ.get("NPGPT_SHAKESPEARE_URL") or SHAKESPEARE_URL
    log(f"downloading Tiny Shakespeare from {url} -> {cached}")
    download(url, cached, SHAKESPEARE_SHA256)
    with open(cached, "rb") as f:
        return decode_text(f.read(), cached), url


def download(url: str, dest: str, sha256: str, timeout: float = 30.0) -> None:
    """Fetch `url` into `dest`, checked against `sha256`; nothing is left at `dest` unless it matches.

    Offline or unreachable: RuntimeError saying how to provide the file by hand.
    Wrong checksum: ValueError naming both digests.
    """
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    h = hashlib.sha256()
    with atomic_file(dest, suffix=".part") as f:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                while chunk := r.read(1 << 16):
                    h.update(chunk)
                    f.write(chunk)
        except (urllib.error.URLError, OSError) as e:
            raise RuntimeError(
                f"could not download {url} ({getattr(e, 'reason', e)}). Offline? Get tinyshakespeare.txt "
                f"(sha256 {sha256}) by other means and pass --data-path FILE, or set NPGPT_DATA to the file or "
                f"to a directory holding it; or train on the offline corpus: `npgpt prepare stdlib`"
            ) from e
        if h.hexdigest() != sha256:  # raising here abandons the temporary file: nothing is kept
            raise ValueError(f"{url}: downloaded file has sha256 {h.hexdigest()}, expected {sha256}; nothing was kept")


def load_corpus(name: str, data_path: str | None = None, url: str | None = None, log=print) -> tuple[str, str]:
    """(text, description) of a named corpus."""
    if name == "stdlib":
        if data_path is not None:
            raise ValueError("--data-path applies to shakespeare_char; to train on a file, pass its path as the source")
        return stdlib_text()
    if name == "shakespeare_char":
        return shakespeare_text(data_path=data_path, url=url, log=log)
    raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(KNOWN_CORPORA)}")
