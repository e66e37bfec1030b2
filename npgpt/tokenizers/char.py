"""Character-level tokenizer: one id per distinct character of the training text."""

from __future__ import annotations

from .base import Tokenizer, as_id_list, unknown_id_error


class CharTokenizer(Tokenizer):
    """Vocabulary = the sorted distinct characters of a text; id = index in that order.

    It has no special tokens: decode accepts `skip_special_tokens` and encode accepts tiktoken's `allowed_special` / `disallowed_special`
    keywords only so that every Tokenizer can be called the same way, and ignores them.
    """

    type_name = "char"

    def __init__(self, chars):
        chars = list(chars)
        if not chars:
            raise ValueError("a CharTokenizer needs at least one character")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"vocabulary entries must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary characters must be distinct")
        self.chars: list[str] = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is sorted(set(text)); empty text raises ValueError."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("cannot train a CharTokenizer on empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str, *, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            for pos, c in enumerate(text):
                if c not in stoi:
                    raise ValueError(
                        f"character {c!r} (U+{ord(c):04X}) at position {pos} is not in the "
                        f"vocabulary of this CharTokenizer ({len(self.chars)} characters)"
                    ) from None
            raise

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of `ids`; there are no special tokens, so skip_special_tokens changes nothing."""
        ids = as_id_list(ids)
        chars = self.chars
        n = len(chars)
        try:
            if ids and min(ids) < 0:  # a negative index would silently wrap around
                raise IndexError
            return "".join([chars[i] for i in ids])
        except (IndexError, TypeError):
            raise unknown_id_error(ids, range(n), n) from None

    def to_dict(self) -> dict:
        return {"type": self.type_name, "version": 1, "chars": list(self.chars)}

    @classmethod
    def _from_dict(cls, d: dict) -> CharTokenizer:
        if d.get("type") != cls.type_name:
            raise ValueError(f"expected type {cls.type_name!r}, got {d.get('type')!r}")
        chars = d.get("chars")
        if not isinstance(chars, list):
            raise ValueError("'chars' must be a list of single characters")
        return cls(chars)
