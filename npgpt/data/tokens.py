"""Corpora -> token files -> batches.

`prepare(source, out_dir)` turns a text file or a named corpus into a data directory:

    train.bin, val.bin   the token ids, uint16 (uint32 when the vocabulary passes 65,535), read with np.memmap
    tokenizer.json       the tokenizer that made them
    meta.json            tokenizer type and vocab size, dtype, split fraction, token counts, source, sha256 of the text

Every file is written under a temporary name and renamed into place, meta.json last, so a failure
leaves no half-written file under a real name; `TokenData` checks the .bin sizes against meta.json.

Named corpora (see corpora.py): `stdlib`, the Python standard library's own source (offline, the
default), and `shakespeare_char`, Tiny Shakespeare (a path, $NPGPT_DATA, or a checked download).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .corpora import KNOWN_CORPORA, load_corpus, read_text_file
from ..fileio import fsync_dir, temp_beside

META_VERSION = 1
SPLITS = ("train", "val")


def _write_all(out_dir: str, writers: dict) -> None:
    """Write every file under a temporary name (fsynced), then rename them all into place.

    A failure while writing leaves the directory as it was. The old meta.json goes first and the
    new one is renamed last, so even a crash between renames leaves no meta.json that describes
    files it does not match (readers refuse a directory without meta.json).
    """
    temps = {}
    try:
        for name, write in writers.items():
            fd, tmp = temp_beside(os.path.join(out_dir, name))
            temps[name] = tmp
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        meta_path = os.path.join(out_dir, "meta.json")
        if os.path.exists(meta_path):
            os.unlink(meta_path)
        for name in sorted(temps, key=lambda n: n == "meta.json"):
            os.replace(temps[name], os.path.join(out_dir, name))
        fsync_dir(out_dir)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits in it (vocab_size <= 65,536: ids up to 65,535), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def _make_tokenizer(text: str, tokenizer: str, vocab_size: int | None, tokenizer_file: str | None):
    from ..tokenizers.base import load_tokenizer

    if tokenizer_file is not None:
        return load_tokenizer(tokenizer_file)
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
    tokenizer: str = "char",
    vocab_size: int | None = None,
    tokenizer_file: str | None = None,
    val_fraction: float = 0.1,
    block_size: int | None = None,
    data_path: str | None = None,
    url: str | None = None,
    log=print,
) -> dict:
    """Tokenize a text file or a named corpus into `out_dir`; return the meta dict written.

    `source` is a path to an existing UTF-8 text file, or one of KNOWN_CORPORA. The first
    (1 - val_fraction) of the tokens is the train split, the rest the validation split. With
    `block_size`, both splits are checked to hold at least block_size + 1 tokens.
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

    os.makedirs(out_dir, exist_ok=True)
    meta = {
        "version": META_VERSION,
        "source": source_desc,
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "text_chars": len(text),
        "tokenizer": {"type": tok.type_name, "vocab_size": tok.vocab_size, "file": "tokenizer.json"},
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "train_tokens": int(len(train_ids)),
        "val_tokens": int(len(val_ids)),
    }
    _write_all(out_dir, {
        "train.bin": lambda f: f.write(train_ids.astype(dtype).tobytes()),
        "val.bin": lambda f: f.write(val_ids.astype(dtype).tobytes()),
        "tokenizer.json": lambda f: f.write(tok.to_json().encode("utf-8")),
        "meta.json": lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")),
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
    """A prepared data directory: `train` and `val` token memmaps, `meta`, and its tokenizer."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        meta_path = os.path.join(data_dir, "meta.json")
        if not os.path.isfile(meta_path):
            raise ValueError(f"{data_dir}: no meta.json here; make the data directory with `npgpt prepare SOURCE --out {data_dir}`")
        try:
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
            dtype = np.dtype(self.meta["dtype"])
            counts = {s: int(self.meta[f"{s}_tokens"]) for s in SPLITS}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{meta_path}: not a valid npgpt meta.json ({e})") from e
        self._arrays = {}
        for split in SPLITS:
            path = os.path.join(data_dir, f"{split}.bin")
            size = os.path.getsize(path) if os.path.isfile(path) else None
            if size != counts[split] * dtype.itemsize:
                raise ValueError(
                    f"{path}: expected {counts[split]} {dtype.name} tokens ({counts[split] * dtype.itemsize} bytes) "
                    f"per meta.json, found {'no file' if size is None else f'{size} bytes'}; run `npgpt prepare` again"
                )
            self._arrays[split] = np.memmap(path, dtype=dtype, mode="r", shape=(counts[split],)) if counts[split] else np.zeros(0, dtype)
        self._tokenizer = None

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
        """The tokenizer saved beside the data (loaded on first use)."""
        if self._tokenizer is None:
            from ..tokenizers.base import load_tokenizer

            self._tokenizer = load_tokenizer(os.path.join(self.data_dir, "tokenizer.json"))
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
