"""A BPETokenizer from and to a Hugging Face `tokenizer.json` (the `tokenizers` library's one-file format).

What is read (everything else is refused by name, so a file is never half understood):

    model          type "BPE": vocab {token string: id} and merges, each "left right" or [left, right],
                   in rank order; token strings are bytes through GPT-2's byte -> character map
                   (bytes_to_unicode). ignore_merges (Llama 3) becomes merge rule "pair_word", else
                   "pair". No dropout, unk_token unused, no subword prefix/suffix, no byte_fallback.
    normalizer     none, or NFC (Qwen2); anything that changes text otherwise is refused.
    pre_tokenizer  ByteLevel(use_regex=true, add_prefix_space=false): GPT-2's split pattern; or
                   Sequence[Split(pattern, behavior "Isolated", invert false), ByteLevel(use_regex
                   false)] as Llama 3 and Qwen2 ship it. An Isolated split keeps the text between two
                   matches as a chunk of its own, so the pattern P becomes `P|(?:(?!P).)+` here (the
                   same chunks from findall: a run of characters where P matches nowhere).
    added_tokens   matched in the text before it is split (as the library does), ids as given. Every
                   one becomes an npgpt special token; those with special=false are kept by
                   decode(skip_special_tokens=True) (keep_on_skip). lstrip/rstrip/single_word refused.
    decoder        ByteLevel (or none): ids -> bytes -> UTF-8.
    post_processor ignored: npgpt's encode adds no BOS/EOS of its own (the caller adds them), so its
                   ids equal the library's encode(text, add_special_tokens=False).ids; with
                   allowed_special="all" added tokens in the text encode as theirs do.

A vocab entry that is neither a byte, nor a merge's result, nor an added token is refused: npgpt
could never produce nor name it. Writing gives the same kind of file (null post_processor), the
special tokens both in added_tokens and in the vocab (as the library's trainer writes them).
"""

from __future__ import annotations

import json
import os

import regex

from ..fileio import read_json
from .bpe_import import bytes_to_unicode

_GAP_OPEN, _GAP_MID, _GAP_CLOSE = "(?:", ")|(?:(?!(?:", "))(?s:.))+"


def isolated_pattern(p: str) -> str:
    """The findall pattern whose chunks are an Isolated Split's: the matches of p and the runs between them."""
    return f"{_GAP_OPEN}{p}{_GAP_MID}{p}{_GAP_CLOSE}"


def _unwrap(pattern: str) -> str:
    """isolated_pattern's argument, or the pattern itself when it is not one."""
    if pattern.startswith(_GAP_OPEN) and pattern.endswith(_GAP_CLOSE):
        body = pattern[len(_GAP_OPEN):-len(_GAP_CLOSE)]
        n = (len(body) - len(_GAP_MID)) // 2
        if n >= 0 and body[n:n + len(_GAP_MID)] == _GAP_MID and body[:n] == body[n + len(_GAP_MID):]:
            return body[:n]
    return pattern


class _Refuse(ValueError):
    pass


def _check_keys(where: str, d: dict, allowed: dict) -> None:
    """Refuse a field whose value npgpt does not honour: allowed maps a key to the values accepted."""
    for key, ok in allowed.items():
        if key in d and d[key] not in ok:
            raise _Refuse(f"{where} {key}={d[key]!r} is not supported (npgpt reads {', '.join(map(repr, ok))})")


def _normalizer(n) -> str | None:
    if n is None:
        return None
    t = n.get("type") if isinstance(n, dict) else None
    if t == "NFC":
        return "nfc"
    if t == "Sequence" and not n.get("normalizers"):
        return None
    raise _Refuse(f"normalizer {t!r} is not supported: it changes the text before splitting (npgpt reads none or NFC)")


def _byte_level(p: dict, use_regex: bool) -> None:
    _check_keys("ByteLevel pre_tokenizer", p, {"add_prefix_space": (False,), "use_regex": (use_regex,)})


def _pre_tokenizer(p) -> str:
    from .bpe import GPT2_PATTERN

    t = p.get("type") if isinstance(p, dict) else None
    if t == "ByteLevel":
        _byte_level(p, True)
        return GPT2_PATTERN
    if t == "Sequence":
        parts = p.get("pretokenizers") or []
        if len(parts) == 1 and isinstance(parts[0], dict) and parts[0].get("type") == "ByteLevel":
            return _pre_tokenizer(parts[0])
        kinds = [q.get("type") if isinstance(q, dict) else None for q in parts]
        if kinds == ["Split", "ByteLevel"]:
            split, bl = parts
            _byte_level(bl, False)
            _check_keys("Split pre_tokenizer", split, {"behavior": ("Isolated",), "invert": (False,)})
            pat = split.get("pattern") or {}
            if "Regex" in pat:
                p_re = pat["Regex"]
            elif "String" in pat:
                p_re = regex.escape(pat["String"])
            else:
                raise _Refuse(f"Split pre_tokenizer pattern {pat!r} is neither a Regex nor a String")
            if not isinstance(p_re, str) or not p_re:
                raise _Refuse(f"Split pre_tokenizer pattern {p_re!r} is not a non-empty string")
            try:
                if regex.compile(p_re).search("") is not None:
                    raise _Refuse(f"Split pattern {p_re!r} matches the empty string")
            except regex.error as e:
                raise _Refuse(f"Split pattern {p_re!r} does not compile: {e}") from None
            return isolated_pattern(p_re)
        raise _Refuse(f"pre_tokenizer Sequence of {kinds} is not supported (npgpt reads ByteLevel, or "
                      "Split(Isolated) then ByteLevel(use_regex=false))")
    raise _Refuse(f"pre_tokenizer {t!r} is not supported (npgpt reads ByteLevel, or Sequence[Split, ByteLevel])")


def _merges(raw, vocab: dict) -> tuple[list, list]:
    merges, merge_ids = [], []
    if not isinstance(raw, list):
        raise _Refuse("model.merges must be a list")
    for k, m in enumerate(raw):
        if isinstance(m, str):
            parts = m.split(" ")
        elif isinstance(m, list):
            parts = m
        else:
            parts = None
        if (parts is None or len(parts) != 2 or not all(isinstance(x, str) and x in vocab for x in parts)
                or parts[0] + parts[1] not in vocab):
            raise _Refuse(f"merge {k} {m!r} is not two vocab tokens whose join is in the vocab too")
        merges.append((vocab[parts[0]], vocab[parts[1]]))
        merge_ids.append(vocab[parts[0] + parts[1]])
    return merges, merge_ids


def tokenizer_from_json_dict(cls, d: dict):
    """A BPETokenizer from a parsed tokenizer.json (see the module docstring); ValueError otherwise."""
    if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
        raise _Refuse("not a Hugging Face tokenizer.json (no 'model' object)")
    model = d["model"]
    if model.get("type", "BPE") != "BPE":
        raise _Refuse(f"model type {model.get('type')!r} is not supported (npgpt reads byte-level BPE)")
    _check_keys("model", model, {"dropout": (None, 0, 0.0), "continuing_subword_prefix": (None, ""),
                                 "end_of_word_suffix": (None, ""), "byte_fallback": (False,)})
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                              for k, v in vocab.items()):
        raise _Refuse("model.vocab must be an object {token: id}")
    normalizer = _normalizer(d.get("normalizer"))
    pattern = _pre_tokenizer(d.get("pre_tokenizer"))
    dec = d.get("decoder")
    if dec is not None and (not isinstance(dec, dict) or dec.get("type") != "ByteLevel"):
        raise _Refuse(f"decoder {dec.get('type') if isinstance(dec, dict) else dec!r} is not supported (npgpt reads ByteLevel)")
    byte_char = bytes_to_unicode()
    missing = [b for b in range(256) if byte_char[b] not in vocab]
    if missing:
        raise _Refuse(f"no vocab token for byte(s) {missing[:8]}; a byte-level BPE needs all 256")
    byte_ids = [vocab[byte_char[b]] for b in range(256)]
    merges, merge_ids = _merges(model.get("merges", []), vocab)

    specials, keep = {}, []
    for entry in d.get("added_tokens") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) or not isinstance(entry.get("id"), int):
            raise _Refuse(f"added token {entry!r} is not {{'id': int, 'content': str, ...}}")
        s = entry["content"]
        for flag in ("lstrip", "rstrip", "single_word"):
            if entry.get(flag):
                raise _Refuse(f"added token {s!r} has {flag}=true, which npgpt does not support")
        if s in vocab and vocab[s] != entry["id"]:
            raise _Refuse(f"added token {s!r} has id {entry['id']} but {vocab[s]} in the vocab")
        specials[s] = entry["id"]
        if not entry.get("special", False):
            keep.append(s)
    ordinary = set(byte_ids) | set(merge_ids)
    special_ids = set(specials.values())
    orphans = [(s, i) for s, i in vocab.items() if i not in ordinary and i not in special_ids]
    if orphans:
        raise _Refuse(f"vocab token {orphans[0][0]!r} (id {orphans[0][1]}) is neither a byte, a merge's result "
                      f"nor an added token ({len(orphans)} such); npgpt cannot represent it")
    # an added token that is also an ordinary token (same id): the library matches it as added text first
    clash = [s for s, i in specials.items() if i in ordinary]
    if clash:
        raise _Refuse(f"added token {clash[0]!r} is also an ordinary BPE token; npgpt keeps the two apart")
    rule = "pair_word" if model.get("ignore_merges") else "pair"
    return cls(merges, pattern, specials, byte_ids=byte_ids, merge_ids=merge_ids, merge_rule=rule,
               normalizer=normalizer, keep_on_skip=keep)


def is_hf_tokenizer_json(d) -> bool:
    """True for a parsed Hugging Face tokenizer.json (npgpt's own tokenizer files carry 'type' instead)."""
    return isinstance(d, dict) and "model" in d and "type" not in d


def read_tokenizer_json(cls, path):
    """The BPETokenizer of a Hugging Face tokenizer.json file; ValueError naming the file otherwise."""
    path = os.fspath(path)
    d = read_json(path)
    try:
        return tokenizer_from_json_dict(cls, d)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def tokenizer_json_dict(tok) -> dict:
    """tok as a tokenizer.json object that `tokenizers.Tokenizer.from_str` reads and encodes the same."""
    from .bpe import GPT2_PATTERN
    from .bpe_hf import _token_strings

    strings = _token_strings(tok)
    if tok.pattern == GPT2_PATTERN:
        pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    else:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _unwrap(tok.pattern)}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": s not in tok.keep_on_skip}
             for s, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"} if tok.normalizer == "nfc" else None,
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": tok.merge_rule != "pair",
            "vocab": {strings[i]: i for i in sorted(strings)},  # special tokens too, as the library's trainer writes them
            "merges": [[strings[a], strings[b]] for a, b in tok.merges],
        },
    }


def write_tokenizer_json(tok, path) -> str:
    """Write tok as a Hugging Face tokenizer.json at `path` (a file), atomically; returns the path."""
    from ..fileio import atomic_write

    path = os.fspath(path)
    atomic_write(path, json.dumps(tokenizer_json_dict(tok), ensure_ascii=False, indent=1))
    return path
