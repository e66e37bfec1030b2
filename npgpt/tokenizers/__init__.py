"""Tokenizers: character-level and byte-level BPE, behind one Tokenizer interface."""

from .base import Tokenizer, load_tokenizer, tokenizer_from_dict
from .bpe import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer
from .char import CharTokenizer

__all__ = [
    "Tokenizer",
    "CharTokenizer",
    "BPETokenizer",
    "load_tokenizer",
    "tokenizer_from_dict",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
]
