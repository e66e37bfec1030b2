"""A BPETokenizer in a GPT-2 / Hugging Face directory, both ways.

The files, as transformers' GPT2Tokenizer reads and writes them:

    vocab.json               {token string: id}; a token string is its bytes through GPT-2's
                             byte -> printable character map (bytes_to_unicode: " " -> "Ġ", ...),
                             a special token's string is its text
    merges.txt               "#version: 0.2", then one merge per line, "left right" in rank order
    tokenizer_config.json    the special tokens (added_tokens_decoder), bos/eos/unk, no prefix space
    special_tokens_map.json  bos/eos/unk, for older readers

Reading takes Hugging Face's merge rule ("pair": only the listed pairs merge, ranked by line), so
encodings equal transformers'. A tokenizer read from these files and written again gives the same
files. A tokenizer trained here merges by tiktoken's "token" rule; written out, its merges are
listed in rank order and read back under the "pair" rule. The two rules could part only where a
token's bytes are also the join of two tokens other than its own merge's; no trained tokenizer
tried so far does (tests/tokenizers/test_bpe_hf.py draws small-alphabet corpora, full of ties).
"""

from __future__ import annotations

import json
import os

from ..fileio import atomic_write, read_json
from .bpe_import import bytes_to_unicode, read_hf_files

HF_FILES = ("vocab.json", "merges.txt")
EOT_TEXT = "<|endoftext|>"


def _config_specials(path: str) -> dict[str, int]:
    """{text: id} of tokenizer_config.json's special added tokens; refuse what npgpt cannot honour."""
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if cfg.get("add_prefix_space"):
        raise ValueError(f"{path}: add_prefix_space is true; npgpt's GPT-2 tokenizer encodes text as it is "
                         "(no space added in front), as GPT-2's own tokenizer does")
    added = cfg.get("added_tokens_decoder") or {}
    if not isinstance(added, dict):
        raise ValueError(f"{path}: added_tokens_decoder must be a JSON object {{id: token}}")
    specials = {}
    for key, entry in added.items():
        content = entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(content, str) or not str(key).isdigit():
            raise ValueError(f"{path}: added_tokens_decoder entry {key!r} is not {{id: {{'content': text, ...}}}}")
        if not entry.get("special", False):
            raise ValueError(f"{path}: added token {content!r} (id {key}) is not special; npgpt supports added "
                             "tokens only as special tokens")
        specials[content] = int(key)
    return specials


def read_pretrained(cls, path):
    """The tokenizer of the directory `path` (see the module docstring); clear errors otherwise."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a directory (expected a GPT-2 / Hugging Face directory holding "
                                f"{' + '.join(HF_FILES)})")
    missing = [n for n in HF_FILES if not os.path.isfile(os.path.join(path, n))]
    if missing and _hf_tokenizer_json(path):
        return cls.from_tokenizer_json(os.path.join(path, "tokenizer.json"))
    if missing:
        raise FileNotFoundError(f"{path}: no {' or '.join(missing)}; a GPT-2 tokenizer is vocab.json + merges.txt")
    vocab_path, merges_path = (os.path.join(path, n) for n in HF_FILES)
    tok = read_hf_files(cls, vocab_path, merges_path)
    config_path = os.path.join(path, "tokenizer_config.json")
    if not os.path.isfile(config_path):
        return tok
    wanted = _config_specials(config_path)
    if all(tok.special_tokens.get(s) == i for s, i in wanted.items()):
        return tok
    for s, i in wanted.items():
        if s in tok.special_tokens and tok.special_tokens[s] != i:
            raise ValueError(f"{path}: special token {s!r} has id {tok.special_tokens[s]} in vocab.json but "
                             f"{i} in tokenizer_config.json")
    try:
        return cls(tok.merges, "gpt2", {**tok.special_tokens, **wanted}, byte_ids=tok.byte_ids,
                   merge_ids=tok.merge_ids, merge_rule="pair")
    except ValueError as e:
        raise ValueError(f"{path}: tokenizer_config.json's special tokens clash with vocab.json: {e}") from e


def has_pretrained_tokenizer(path) -> bool:
    """True when the directory holds a tokenizer from_pretrained reads: vocab.json + merges.txt, or a
    Hugging Face tokenizer.json."""
    path = os.fspath(path)
    return all(os.path.isfile(os.path.join(path, n)) for n in HF_FILES) or _hf_tokenizer_json(path)


def _hf_tokenizer_json(path: str) -> bool:
    """True when the directory holds a Hugging Face tokenizer.json (not an npgpt tokenizer file)."""
    from .bpe_json import is_hf_tokenizer_json

    f = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(f):
        return False
    try:
        return is_hf_tokenizer_json(read_json(f))
    except ValueError:
        return False


def _token_strings(tok) -> dict[int, str]:
    """id -> vocab.json string for every token; ValueError if two tokens would share a string."""
    byte_char = bytes_to_unicode()
    strings = {i: "".join(byte_char[b] for b in piece) for i, piece in tok._vocab.items()}
    strings.update({i: s for s, i in tok.special_tokens.items()})
    if len(set(strings.values())) != len(strings):
        seen: dict[str, int] = {}
        for i, s in sorted(strings.items()):
            if s in seen:
                raise ValueError(f"tokens {seen[s]} and {i} would both be {s!r} in vocab.json; a GPT-2 "
                                 "vocabulary needs every token distinct")
            seen[s] = i
    return strings


def pretrained_files(tok, model_max_length: int | None = None) -> dict[str, str]:
    """{file name: text} of tok's GPT-2 files; ValueError, before anything is written, for a tokenizer
    they cannot hold."""
    from .bpe import GPT2_PATTERN

    if tok.pattern != GPT2_PATTERN:
        raise ValueError("a GPT-2 tokenizer splits text with GPT-2's pattern (BPETokenizer pattern='gpt2'); this "
                         f"one uses {tok.pattern!r}, which transformers' GPT2Tokenizer cannot express")
    strings = _token_strings(tok)
    vocab = {strings[i]: i for i in sorted(strings)}
    merges = ["#version: 0.2"] + [f"{strings[a]} {strings[b]}" for a, b in tok.merges]
    eot = EOT_TEXT if EOT_TEXT in tok.special_tokens else None
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "bos_token": eot, "eos_token": eot, "unk_token": eot,
        "added_tokens_decoder": {
            str(i): {"content": s, "special": True, "lstrip": False, "rstrip": False, "normalized": False,
                     "single_word": False}
            for s, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
        },
    }
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    special_map = {k: eot for k in ("bos_token", "eos_token", "unk_token")} if eot else {}
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False, indent=1),
        "merges.txt": "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps(config, ensure_ascii=False, indent=1),
        "special_tokens_map.json": json.dumps(special_map, ensure_ascii=False, indent=1),
    }


def write_files(path, files: dict) -> list[str]:
    """Write {file name: text or bytes} into the directory `path` (made if missing), each atomically."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    written = []
    for name, payload in files.items():
        atomic_write(os.path.join(path, name), payload)
        written.append(os.path.join(path, name))
    return written


def write_pretrained(tok, path, model_max_length: int | None = None) -> list[str]:
    """Write tok's GPT-2 files into the directory `path`; returns the paths written."""
    return write_files(path, pretrained_files(tok, model_max_length))
