"""Reading other tokenizers' files into BPETokenizer: tiktoken rank files and Hugging Face GPT-2
vocab.json + merges.txt."""

from __future__ import annotations

import base64
import binascii
import json
import os


def read_tiktoken_file(cls, path, pattern: str, special_tokens=None):
    """A .tiktoken file: one "base64(token bytes) rank" per line, blank lines ignored."""
    path = os.fspath(path)
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except (ValueError, binascii.Error) as e:
                raise ValueError(f"{path}: line {lineno} is not 'base64 rank': {line[:80]!r}") from e
    try:
        return tokenizer_from_ranks(cls, ranks, pattern, special_tokens)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def tokenizer_from_ranks(cls, ranks: dict[bytes, int], pattern: str, special_tokens=None):
    """Rebuild merges from tiktoken ranks: the token of rank r is the merge of the two parts that
    BPE with only ranks below r leaves of its bytes (exactly two, or the ranks are not BPE's)."""
    if len(set(ranks.values())) != len(ranks):
        raise ValueError("two tokens share a rank")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"no one-byte token for byte(s) {missing[:8]}; every byte needs a rank")
    byte_ids = [ranks[bytes([b])] for b in range(256)]
    merges, merge_ids = [], []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = _bpe_below(ranks, token, rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens")
        merges.append((ranks[parts[0]], ranks[parts[1]]))
        merge_ids.append(rank)
    return cls(merges, pattern, dict(special_tokens or {}), byte_ids=byte_ids, merge_ids=merge_ids,
               merge_rule="token")


def _bpe_below(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's merge loop on token's bytes, using only tokens ranked below max_rank."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_i = max_rank, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best:
                best, best_i = r, i
        if best_i < 0:
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map: printable Latin-1 bytes map to themselves, the
    other 68 bytes (controls, space, ...) to U+0100 onwards, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_hf_files(cls, vocab_json_path, merges_txt_path, special_tokens=None):
    """GPT-2 style vocab.json + merges.txt. Ids are vocab.json's; a merge's rank is its line.

    special_tokens: None takes every vocab entry that is neither a byte nor made by a merge (for
    GPT-2 that is "<|endoftext|>"); a list names entries of vocab.json; a dict gives {text: id}.
    """
    vocab_json_path, merges_txt_path = os.fspath(vocab_json_path), os.fspath(merges_txt_path)
    try:
        with open(vocab_json_path, encoding="utf-8") as f:
            vocab = json.load(f)
        if not isinstance(vocab, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in vocab.items()):
            raise ValueError("expected a JSON object {token: id}")
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{vocab_json_path}: not a vocab.json: {e}") from e
    byte_char = bytes_to_unicode()
    missing = [b for b in range(256) if byte_char[b] not in vocab]
    if missing:
        raise ValueError(f"{vocab_json_path}: no token for byte(s) {missing[:8]}; every byte needs one")
    byte_ids = [vocab[byte_char[b]] for b in range(256)]

    merges, merge_ids = [], []
    with open(merges_txt_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts) or not all(p in vocab for p in (*parts, parts[0] + parts[1])):
                raise ValueError(f"{merges_txt_path}: line {lineno} is not a merge of two tokens in "
                                 f"{os.path.basename(vocab_json_path)} whose join is one too: {line[:80]!r}")
            merges.append((vocab[parts[0]], vocab[parts[1]]))
            merge_ids.append(vocab[parts[0] + parts[1]])

    if special_tokens is None:
        ordinary = set(byte_ids) | set(merge_ids)
        specials = {s: i for s, i in vocab.items() if i not in ordinary}
    elif isinstance(special_tokens, dict):
        specials = dict(special_tokens)
    else:
        specials = {}
        for s in ([special_tokens] if isinstance(special_tokens, str) else special_tokens):
            if s not in vocab:
                raise ValueError(f"{vocab_json_path}: special token {s!r} is not in the vocabulary")
            specials[s] = vocab[s]
    try:
        return cls(merges, "gpt2", specials, byte_ids=byte_ids, merge_ids=merge_ids, merge_rule="pair")
    except ValueError as e:
        raise ValueError(f"{vocab_json_path} + {merges_txt_path}: {e}") from e
