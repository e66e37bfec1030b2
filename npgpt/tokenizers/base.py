"""The Tokenizer interface shared by every tokenizer, and JSON files that hold one.

A tokenizer file is the JSON of `to_dict()`; its "type" field ("char" or "bpe") says which class
reads it back. Files are written atomically (a temporary file in the same folder, then
os.replace), so a crash mid-save never leaves half a file under the real name.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable

from ..fileio import atomic_write


class Tokenizer(ABC):
    """Text <-> list of integer ids.

    Subclasses set `type_name` (the "type" written by to_dict) and implement vocab_size, encode,
    decode, to_dict and _from_dict. encode takes tiktoken's keyword arguments for special tokens
    (`allowed_special`, `disallowed_special`); a tokenizer without special tokens ignores them.
    """

    type_name: str = ""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """One more than the largest id this tokenizer can produce."""

    @abstractmethod
    def encode(self, text: str, *, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
        """Ids of `text`."""

    @abstractmethod
    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of `ids` (a list or a 1-d NumPy integer array); with skip_special_tokens=True the
        special tokens' ids are left out (a tokenizer without special tokens ignores the flag)."""

    @abstractmethod
    def to_dict(self) -> dict:
        """A JSON-serializable dict with a "type" field; tokenizer_from_dict reads it back."""

    @classmethod
    @abstractmethod
    def _from_dict(cls, d: dict) -> Tokenizer:
        """Build from to_dict's output; raise ValueError on anything malformed."""

    @property
    def eot_id(self) -> int | None:
        """Id of the end-of-text special token, or None when there is none."""
        return None

    def to_json(self) -> str:
        """to_dict() as the JSON text that save() writes."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    def save(self, path: str | os.PathLike) -> None:
        """Write to_dict() as JSON to `path` atomically."""
        path = os.fspath(path)
        atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by save(). On Tokenizer this dispatches on "type"; on a subclass the
        file must hold that subclass. A corrupt or foreign file raises ValueError naming the file."""
        tok = load_tokenizer(path)
        if not isinstance(tok, cls):
            raise ValueError(f"{os.fspath(path)}: holds a {type(tok).__name__}, not a {cls.__name__}")
        return tok

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def _registry() -> dict[str, type[Tokenizer]]:
    # Imported here, not at the top, because char.py and bpe.py import this module.
    from .bpe import BPETokenizer
    from .char import CharTokenizer

    return {c.type_name: c for c in (CharTokenizer, BPETokenizer)}


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from to_dict() output, dispatching on d["type"]."""
    if not isinstance(d, dict):
        raise ValueError(f"a tokenizer dict must be a JSON object, got {type(d).__name__}")
    registry = _registry()
    kind = d.get("type")
    if kind not in registry:
        raise ValueError(f"unknown tokenizer type {kind!r}; expected one of {sorted(registry)}")
    return registry[kind]._from_dict(d)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer file written by Tokenizer.save; ValueError naming the file if it is not one.

    A Hugging Face tokenizer.json is read too (npgpt.tokenizers.bpe_json). A directory is read too: a
    GPT-2 / Hugging Face directory (vocab.json + merges.txt) through BPETokenizer.from_pretrained, or
    its tokenizer.json, an npgpt training directory's or Hugging Face's.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_tokenizer_dir(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        d = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid npgpt tokenizer file: {e}") from e
    if _is_hf_json(d):  # a Hugging Face tokenizer.json
        from .bpe import BPETokenizer
        from .bpe_json import tokenizer_from_json_dict

        try:
            return tokenizer_from_json_dict(BPETokenizer, d)
        except ValueError as e:
            raise ValueError(f"{path}: a Hugging Face tokenizer.json that npgpt cannot read: {e}") from e
    try:
        return tokenizer_from_dict(d)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid npgpt tokenizer file: {e}") from e


def _load_tokenizer_dir(path: str) -> Tokenizer:
    from .bpe import BPETokenizer
    from .bpe_hf import HF_FILES

    if all(os.path.isfile(os.path.join(path, n)) for n in HF_FILES):
        return BPETokenizer.from_pretrained(path)
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
        # an npgpt training directory's tokenizer, or a Hugging Face tokenizer.json (transformers 5, Llama, Qwen)
        return load_tokenizer(os.path.join(path, "tokenizer.json"))
    raise ValueError(f"{path}: a directory without a tokenizer: expected {' + '.join(HF_FILES)} (a GPT-2 / "
                     "Hugging Face directory) or tokenizer.json (an npgpt training directory)")


def _is_hf_json(d) -> bool:
    from .bpe_json import is_hf_tokenizer_json

    return is_hf_tokenizer_json(d)


def as_id_list(ids) -> list:
    """ids as a list of Python ints (accepts lists, tuples and 0-d or 1-d NumPy integer arrays)."""
    ndim = getattr(ids, "ndim", None)
    if ndim is not None:
        if ndim > 1:
            raise ValueError(f"ids must be one-dimensional, got an array of shape {ids.shape}")
        ids = ids.tolist()
        return [ids] if ndim == 0 else ids
    if isinstance(ids, list):
        return ids
    return list(ids) if isinstance(ids, Iterable) else [ids]


def unknown_id_error(ids: list, known, vocab_size: int) -> ValueError:
    """The ValueError for the first id in `ids` that `known` (a container of valid ids) lacks."""
    for i in ids:
        try:
            ok = i in known and not isinstance(i, bool)
        except TypeError:  # unhashable
            ok = False
        if not ok:
            return ValueError(f"unknown token id {i!r} (vocab size {vocab_size})")
    return ValueError(f"unknown token id (vocab size {vocab_size})")
