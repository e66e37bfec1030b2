"""Corpora -> token files -> batches.

`prepare(source, out_dir)` turns a text file or a named corpus into a data directory:

    train.bin, val.bin   the token ids, uint16 (uint32 when the vocabulary passes 65,535), read with np.memmap
    tokenizer.json       the tokenizer that made them
    meta.json            tokenizer type and vocab size, dtype, split fraction, token counts, source, sha256 of the text

The directory is written whole into a hidden sibling and swapped in at once (fileio.replace_dir), so a
failure or a kill -9 at any moment leaves the old data directory or the new one, never a mix.
`TokenData` checks every file when it opens the directory, with one line naming the file: the .bin
sizes against meta.json, every token id against the vocabulary (one vectorised max per split),
tokenizer.json against meta.json's type, vocab size and sha256.

Named corpora (see corpora.py): `stdlib`, the Python standard library's own source (offline, the
default), and `shakespeare_char`, Tiny Shakespeare (a path, $NPGPT_DATA, or a checked download).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .corpora import KNOWN_CORPORA, load_corpus, read_text_file
from ..fileio import named_error, replace_dir, settle_dir, write_file

META_VERSION = 1
SPLITS = ("train", "val")


DATA_FILES = ("train.bin", "val.bin", "tokenizer.json", "meta.json")
SFT_FILES = DATA_FILES + tuple(f"{s}_{kind}.bin" for s in SPLITS for kind in ("mask", "offsets"))  # sft.py's


def _write_all(out_dir: str, files: dict) -> None:
    """Replace the directory `out_dir` by one holding exactly `files` ({name: bytes}), as a whole
    (fileio.replace_dir): a reader sees the old data or the new, whatever moment a kill lands. A
    directory holding other files than a data directory's is refused before anything is written."""
    with replace_dir(out_dir, keep_only=SFT_FILES, what="data directory") as tmp:  # either kind replaces either
        for name, payload in files.items():
            try:
                write_file(os.path.join(tmp, name), payload)
            except OSError as e:  # a full disk: name the file the user asked for, not the hidden one
                raise named_error(e, os.path.join(out_dir, name)) from None


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits in it (vocab_size <= 65,536: ids up to 65,535), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def _make_tokenizer(text: str, tokenizer: str | None, vocab_size: int | None, tokenizer_file: str | None):
    from ..tokenizers.base import load_tokenizer

    if tokenizer_file is not None:
        given = [f for f, v in (("--tokenizer", tokenizer), ("--vocab-size", vocab_size)) if v is not None]
        if given:
            raise ValueError(f"--tokenizer-file reuses the tokenizer of {tokenizer_file}; {' and '.join(given)} "
                             "describe a new one to train: give one or the other")
        return load_tokenizer(tokenizer_file)
    tokenizer = "char" if tokenizer is None else tokenizer
    if tokenizer == "char":
        if vocab_size is not None:
            raise ValueError("--vocab-size applies to the bpe tokenizer; a char tokenizer's vocabulary is the text's characters")
        from ..tokenizers.char import CharTokenizer

        return CharTokenizer.train(text)
    if tokenizer == "bpe":
        if vocab_size is None:
            raise ValueError("the bpe tokenizer needs --vocab-size (at least 257: 256 bytes + <|endoftext|>; e.g. 512)")
        from ..tokenizers.bpe import BPETokenizer

        return BPETokenizer.train(text, vocab_size, special_tokens=["<|endoftext|>"])
    raise ValueError(f"unknown tokenizer {tokenizer!r}: expected 'char' or 'bpe' (or --tokenizer-file)")


def prepare(
    source: str,
    out_dir: str,
    *,
    tokenizer: str | None = None,
    vocab_size: int | None = None,
    tokenizer_file: str | None = None,
    val_fraction: float = 0.1,
    block_size: int | None = None,
    data_path: str | None = None,
    url: str | None = None,
    log=print,
) -> dict:
    """Tokenize a text file or a named corpus into `out_dir`; return the meta dict written.

    `source` is a path to an existing UTF-8 text file, or one of KNOWN_CORPORA. `tokenizer` is
    'char' (None: the default) or 'bpe' (with vocab_size), or `tokenizer_file` reuses a tokenizer. The first
    (1 - val_fraction) of the tokens is the train split, the rest the validation split. With
    `block_size`, both splits are checked to hold at least block_size + 1 tokens. (A `.jsonl` file of
    supervised fine-tuning examples goes to npgpt.data.sft.prepare_sft; npgpt.data.prepare picks.)
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    if os.path.isfile(source):
        text = read_text_file(source)
        source_desc = os.path.abspath(source)
    elif source in KNOWN_CORPORA:
        text, source_desc = load_corpus(source, data_path=data_path, url=url, log=log)
    elif os.path.exists(source):
        raise ValueError(f"{source}: not a regular file")
    else:
        raise ValueError(f"{source!r} is neither an existing text file nor a known corpus; known corpora: {', '.join(KNOWN_CORPORA)}")

    tok = _make_tokenizer(text, tokenizer, vocab_size, tokenizer_file)
    ids = np.asarray(tok.encode(text, allowed_special="all"), dtype=np.int64)  # a literal <|endoftext|> separates documents
    dtype = token_dtype(tok.vocab_size)
    n = len(ids)
    if n < 2:
        raise ValueError(f"{source}: only {n} token(s); need at least 2 to make a train and a val split")
    n_train = min(max(int(n * (1.0 - val_fraction)), 1), n - 1)
    train_ids, val_ids = ids[:n_train], ids[n_train:]
    if block_size is not None:
        for name, arr in (("train", train_ids), ("val", val_ids)):
            _check_length(name, len(arr), block_size, source)

    tok_json = tok.to_json().encode("utf-8")
    meta = {
        "version": META_VERSION,
        "source": source_desc,
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "text_chars": len(text),
        "tokenizer": {"type": tok.type_name, "vocab_size": tok.vocab_size, "file": "tokenizer.json",
                      "sha256": hashlib.sha256(tok_json).hexdigest()},
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "train_tokens": int(len(train_ids)),
        "val_tokens": int(len(val_ids)),
    }
    _write_all(out_dir, {
        "train.bin": train_ids.astype(dtype).tobytes(),
        "val.bin": val_ids.astype(dtype).tobytes(),
        "tokenizer.json": tok_json,
        "meta.json": json.dumps(meta, indent=1).encode("utf-8"),
    })
    log(f"prepared {source_desc}: {meta['text_chars']:,} characters -> {n:,} tokens "
        f"({meta['train_tokens']:,} train, {meta['val_tokens']:,} val), {tok.type_name} tokenizer, "
        f"vocab {tok.vocab_size}, {dtype.name} -> {out_dir}")
    return meta


def _check_length(split: str, n_tokens: int, block_size: int, where: str) -> None:
    if n_tokens < block_size + 1:
        raise ValueError(
            f"{where}: the {split} split has {n_tokens} tokens, but block_size {block_size} needs at least "
            f"{block_size + 1} (one block plus its next-token target); use a longer text or a smaller block_size"
        )


def _inode(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_ids(arr: np.ndarray, vocab_size: int, path: str) -> None:
    """ValueError naming the file, the first bad position and the id when an id is >= vocab_size
    (one vectorised max over the split, in chunks so a large memmap is not paged in twice)."""
    chunk = 1 << 24
    for start in range(0, len(arr), chunk):
        part = arr[start:start + chunk]
        if int(part.max()) >= vocab_size:
            at = start + int(np.argmax(part >= vocab_size))
            raise ValueError(f"{path}: token id {int(arr[at])} at position {at:,} is outside the vocabulary of "
                             f"{vocab_size} (meta.json); the file is not what `npgpt prepare` wrote: run it again")


def sample_batch(tokens: np.ndarray, batch_size: int, block_size: int, generator: np.random.Generator):
    """batch_size random windows of a 1-d token array: x (B, T) and y = x shifted by one, both int64.

    Window starts are drawn uniformly from [0, len - block_size) with `generator`, so a seeded
    generator gives the same batches every run.
    """
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size} and {block_size}")
    n = len(tokens)
    if n < block_size + 1:
        raise ValueError(f"{n} tokens cannot hold one block of {block_size} plus its target; need >= {block_size + 1}")
    starts = generator.integers(0, n - block_size, size=batch_size)  # (B,)
    windows = np.asarray(tokens[starts[:, None] + np.arange(block_size + 1)], dtype=np.int64)  # (B, T+1)
    return windows[:, :-1], windows[:, 1:]


class TokenData:
    """A prepared data directory: `train` and `val` token memmaps, `meta`, and its tokenizer.

    Every file is checked here, each problem one ValueError naming the file (see the module
    docstring). The directory is read as one set: if it was replaced while being read (its inode
    changed), it is read again.
    """

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        for _ in range(3):
            before = _inode(data_dir)
            self._open(data_dir)
            if _inode(data_dir) == before:
                return
        raise ValueError(f"{data_dir}: replaced three times while being read; is a `npgpt prepare` writing it?")

    def _open(self, data_dir: str) -> None:
        settle_dir(data_dir)
        meta_path = os.path.join(data_dir, "meta.json")
        if not os.path.isdir(data_dir):
            raise ValueError(f"{data_dir}: no such data directory; make it with `npgpt prepare SOURCE --out {data_dir}`")
        if not os.path.isfile(meta_path):
            raise ValueError(f"{data_dir}: no meta.json here; make the data directory with `npgpt prepare SOURCE --out {data_dir}`")
        try:
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
            dtype = np.dtype(self.meta["dtype"])
            counts = {s: int(self.meta[f"{s}_tokens"]) for s in SPLITS}
            vocab = int(self.meta["vocab_size"])
            if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)) or min(counts.values()) < 0 or vocab < 1:
                raise ValueError(f"dtype {dtype.name}, token counts {counts}, vocab_size {vocab}")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{meta_path}: not a valid npgpt meta.json ({e})") from e
        if vocab > np.iinfo(dtype).max + 1:
            raise ValueError(f"{meta_path}: vocab_size {vocab} does not fit its dtype {dtype.name}")
        self._arrays = {}
        for split in SPLITS:
            path = os.path.join(data_dir, f"{split}.bin")
            size = os.path.getsize(path) if os.path.isfile(path) else None
            if size != counts[split] * dtype.itemsize:
                raise ValueError(
                    f"{path}: expected {counts[split]} {dtype.name} tokens ({counts[split] * dtype.itemsize} bytes) "
                    f"per meta.json, found {'no file' if size is None else f'{size} bytes'}; run `npgpt prepare` again"
                )
            arr = np.memmap(path, dtype=dtype, mode="r", shape=(counts[split],)) if counts[split] else np.zeros(0, dtype)
            _check_ids(arr, vocab, path)
            self._arrays[split] = arr
        self._tokenizer = self._check_tokenizer()

    def _check_tokenizer(self):
        """tokenizer.json, checked against meta.json (sha256 when meta.json has it, type and vocab size)."""
        from ..tokenizers.base import load_tokenizer  # noqa: PLC0415

        path = os.path.join(self.data_dir, "tokenizer.json")
        if not os.path.isfile(path):
            raise ValueError(f"{path}: missing; the data directory's tokenizer is part of it: run `npgpt prepare` again")
        want = self.meta.get("tokenizer") if isinstance(self.meta.get("tokenizer"), dict) else {}
        with open(path, "rb") as f:
            raw = f.read()
        if want.get("sha256") and hashlib.sha256(raw).hexdigest() != want["sha256"]:
            raise ValueError(f"{path}: not the tokenizer these tokens were made with (its sha256 differs from "
                             "meta.json's); put the original back or run `npgpt prepare` again")
        tok = load_tokenizer(path)
        if tok.vocab_size != self.vocab_size or (want.get("type") and want["type"] != tok.type_name):
            raise ValueError(f"{path}: a {tok.type_name} tokenizer of vocab {tok.vocab_size}, but meta.json says the tokens "
                             f"were made by a {want.get('type', '?')} tokenizer of vocab {self.vocab_size}; put the "
                             "original back or run `npgpt prepare` again")
        return tok

    @property
    def train(self) -> np.ndarray:
        return self._arrays["train"]

    @property
    def val(self) -> np.ndarray:
        return self._arrays["val"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def tokenizer(self):
        """The tokenizer saved beside the data (checked against meta.json when the directory was opened)."""
        return self._tokenizer

    def check_block_size(self, block_size: int) -> None:
        """ValueError naming the sizes when a split is shorter than one block plus its target."""
        for split in SPLITS:
            _check_length(split, len(self._arrays[split]), block_size, self.data_dir)

    def get_batch(self, split: str, batch_size: int, block_size: int, generator: np.random.Generator):
        """(x, y) int64 arrays of shape (batch_size, block_size) from `split` ('train' or 'val')."""
        if split not in self._arrays:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        _check_length(split, len(self._arrays[split]), block_size, self.data_dir)
        return sample_batch(self._arrays[split], batch_size, block_size, generator)
