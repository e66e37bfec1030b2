"""Byte-level BPE: the representation, encoding, decoding and the JSON file format.

One representation serves tokenizers trained here, read from tiktoken rank files, and read from
Hugging Face GPT-2 files:

    byte_ids[b]       the id of the one-byte token b (0..255); byte_ids[b] == b when trained here
    merges[k]         (left id, right id) of the k-th merge; k is the merge's rank (lower = first)
    merge_ids[k]      the id of the token merge k makes; 256 + k when trained here, the tiktoken
                      rank for rank files, the vocab.json id for Hugging Face files
    special_tokens    {text: id}, ids distinct from every ordinary token's

Two merge rules say which adjacent pair of a chunk merges next (always the lowest rank, and the
leftmost among equal ranks):

    "token"  tiktoken's rule. Any adjacent pair whose concatenated bytes form a token merges, with
             the rank of that token; a chunk that is itself a token encodes to it directly. Used
             for trained tokenizers and rank files, so encodings equal tiktoken's.
    "pair"   Hugging Face's rule. Only the listed merge pairs merge, ranked by their line in
             merges.txt. Used by from_hf, so encodings equal the `tokenizers` library's.
    "pair_word"  "pair", except that a chunk that is itself a token encodes to it directly (the
             `tokenizers` library's BPE with ignore_merges, as Llama 3's tokenizer.json asks).

Two options serve Hugging Face tokenizer.json files (bpe_json.py): `normalizer="nfc"` puts the text
between special tokens in Unicode NFC before splitting it (Qwen2's normalizer), and `keep_on_skip`
names special tokens that decode(skip_special_tokens=True) keeps (added tokens that are not special).

Training lives in bpe_train.py, the merge loops in bpe_merge.py, and the tiktoken / Hugging Face
file formats in bpe_import.py.
"""

from __future__ import annotations

import unicodedata

import regex

from .base import Tokenizer, as_id_list, unknown_id_error
from .bpe_merge import merge_by_scan, merge_with_heap

# GPT-2's split pattern, as in OpenAI's encoder.py and Hugging Face's ByteLevel pre-tokenizer.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-4's (cl100k_base) split pattern, as tiktoken spells it.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN, "cl100k": GPT4_PATTERN}
MERGE_RULES = ("token", "pair", "pair_word")
NORMALIZERS = (None, "nfc")
EOT_TEXT = "<|endoftext|>"

_HEAP_FROM = 256  # chunks of at least this many bytes merge with a heap (O(n log n))
_CACHE_MAX = 1 << 18  # encoded chunks kept; the cache is emptied when it grows past this


def resolve_pattern(pattern: str) -> str:
    """A named pattern ("gpt2", "gpt4", "cl100k") as its regex; any other string as itself."""
    if not isinstance(pattern, str):
        raise ValueError(f"pattern must be a str, got {type(pattern).__name__}")
    return PATTERNS.get(pattern.lower(), pattern)


def _compile(pattern: str):
    try:
        return regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"invalid split pattern {pattern!r}: {e}") from None


class BPETokenizer(Tokenizer):
    """Byte-level BPE with a regex pre-tokenizer; see the module docstring for the representation.

    Text is split into chunks by `pattern` (merges never cross chunks), each chunk's UTF-8 bytes
    start as one-byte tokens, and merges apply lowest rank first, leftmost first among ties.
    """

    type_name = "bpe"

    def __init__(self, merges, pattern: str = GPT2_PATTERN, special_tokens=None, *,
                 byte_ids=None, merge_ids=None, merge_rule: str = "token", normalizer: str | None = None,
                 keep_on_skip=()):
        self.pattern = resolve_pattern(pattern)
        self._regex = _compile(self.pattern)
        if merge_rule not in MERGE_RULES:
            raise ValueError(f"merge_rule must be one of {MERGE_RULES}, got {merge_rule!r}")
        self.merge_rule = merge_rule
        self.merges = [_id_pair(m) for m in merges]
        self.byte_ids = list(range(256)) if byte_ids is None else [_int(i, "byte id") for i in byte_ids]
        if merge_ids is None:
            merge_ids = range(256, 256 + len(self.merges))
        self.merge_ids = [_int(i, "merge id") for i in merge_ids]
        if len(self.byte_ids) != 256:
            raise ValueError(f"byte_ids must have 256 entries, got {len(self.byte_ids)}")
        if len(self.merge_ids) != len(self.merges):
            raise ValueError(f"{len(self.merge_ids)} merge ids for {len(self.merges)} merges")
        self.special_tokens = _special_dict(special_tokens)
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        self.normalizer = normalizer
        self.keep_on_skip = frozenset(keep_on_skip)
        unknown = sorted(self.keep_on_skip - set(self.special_tokens))
        if unknown:
            raise ValueError(f"keep_on_skip names {unknown}, which are not special tokens")
        self._build_vocab()
        self._cache: dict[str, list[int]] = {}
        self._special_regex = None
        if self.special_tokens:
            alts = sorted(self.special_tokens, key=lambda s: (-len(s), s))
            self._special_regex = regex.compile("|".join(regex.escape(s) for s in alts))

    def _build_vocab(self) -> None:
        """id -> bytes for ordinary tokens, the pair table used by encode, and checks."""
        vocab: dict[int, bytes] = {}
        for b, i in enumerate(self.byte_ids):
            if i < 0 or i in vocab:
                raise ValueError(f"byte id {i} is negative or used twice")
            vocab[i] = bytes([b])
        for k, ((left, right), new) in enumerate(zip(self.merges, self.merge_ids)):
            if left not in vocab or right not in vocab:
                raise ValueError(f"merge {k} ({left}, {right}) uses an id not defined before it")
            piece = vocab[left] + vocab[right]
            if new < 0 or vocab.get(new, piece) != piece:
                raise ValueError(f"merge {k} gives id {new}, which is negative or already another token")
            vocab[new] = piece
        self._vocab = vocab
        self._bytes_to_id = {b: i for i, b in vocab.items()}
        if self.merge_rule == "token" and len(self._bytes_to_id) != len(vocab):
            raise ValueError("under merge_rule 'token' every token's bytes must be distinct")
        for s, i in self.special_tokens.items():
            if i in vocab:
                raise ValueError(f"special token {s!r} has id {i}, already an ordinary token's")
        if len(set(self.special_tokens.values())) != len(self.special_tokens):
            raise ValueError("special tokens must have distinct ids")
        self._special_by_id = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        self._skip_ids = {i for s, i in self.special_tokens.items() if s not in self.keep_on_skip}
        self._decoder = {**vocab, **self._special_by_id}
        self._vocab_size = max(self._decoder) + 1
        self._pairs = self._pair_table()

    def _pair_table(self) -> dict[tuple[int, int], tuple[int, int]]:
        """(left id, right id) -> (rank, new id) for every pair that merges under the merge rule."""
        table: dict[tuple[int, int], tuple[int, int]] = {}
        if self.merge_rule != "token":
            for k, (pair, new) in enumerate(zip(self.merges, self.merge_ids)):
                table.setdefault(pair, (k, new))  # a repeated line: the first one counts
            return table
        # "token": every split of every merged token into two tokens, ranked by the token.
        to_id = self._bytes_to_id
        for k, new in enumerate(self.merge_ids):
            piece = self._vocab[new]
            for cut in range(1, len(piece)):
                left, right = to_id.get(piece[:cut]), to_id.get(piece[cut:])
                if left is not None and right is not None:
                    table[(left, right)] = (k, new)
        return table

    # ---------------------------------------------------------------- constructors

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = GPT2_PATTERN, special_tokens=None,
              progress: bool = False) -> BPETokenizer:
        """Learn merges from `text`; see npgpt.tokenizers.bpe_train.train_bpe for the rules."""
        from .bpe_train import train_bpe

        pattern = resolve_pattern(pattern)
        merges = train_bpe(text, vocab_size, pattern, special_tokens, progress)
        specials = list(_special_list(special_tokens))
        first = 256 + len(merges)
        return cls(merges, pattern, {s: first + j for j, s in enumerate(specials)})

    @classmethod
    def from_tiktoken_file(cls, path, pattern: str, special_tokens=None) -> BPETokenizer:
        """Read a .tiktoken rank file (base64 token, space, rank per line); encodes as tiktoken does."""
        from .bpe_import import read_tiktoken_file

        return read_tiktoken_file(cls, path, pattern, special_tokens)

    @classmethod
    def from_tiktoken_ranks(cls, ranks: dict, pattern: str, special_tokens=None) -> BPETokenizer:
        """From tiktoken's mergeable_ranks {token bytes: rank}; encodes as tiktoken does."""
        from .bpe_import import tokenizer_from_ranks

        return tokenizer_from_ranks(cls, ranks, pattern, special_tokens)

    @classmethod
    def from_hf(cls, vocab_json_path, merges_txt_path, special_tokens=None) -> BPETokenizer:
        """Read GPT-2 style vocab.json + merges.txt; encodes with Hugging Face's ids and rule."""
        from .bpe_import import read_hf_files

        return read_hf_files(cls, vocab_json_path, merges_txt_path, special_tokens)

    @classmethod
    def from_tokenizer_json(cls, path) -> BPETokenizer:
        """Read a Hugging Face tokenizer.json (byte-level BPE: GPT-2, Llama 3, Qwen2/3, SmolLM2); see
        npgpt.tokenizers.bpe_json for what is read and what is refused."""
        from .bpe_json import read_tokenizer_json

        return read_tokenizer_json(cls, path)

    def save_tokenizer_json(self, path) -> str:
        """Write this tokenizer as a Hugging Face tokenizer.json file at `path`; returns the path."""
        from .bpe_json import write_tokenizer_json

        return write_tokenizer_json(self, path)

    @classmethod
    def from_pretrained(cls, path) -> BPETokenizer:
        """A GPT-2 / Hugging Face directory's tokenizer: vocab.json + merges.txt, with the entries
        that are neither bytes nor merges (GPT-2: <|endoftext|>) and tokenizer_config.json's added
        special tokens as special tokens. Encodes with Hugging Face's ids and merge rule. Without
        vocab.json + merges.txt, a Hugging Face tokenizer.json (what transformers 5 writes, and what
        Llama and Qwen directories ship) is read instead."""
        from .bpe_hf import read_pretrained

        return read_pretrained(cls, path)

    def save_pretrained(self, path, model_max_length: int | None = None) -> list[str]:
        """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into the
        directory `path` (made if missing), each atomically, so that transformers' GPT2Tokenizer and
        from_pretrained read this tokenizer back; returns the paths written. See npgpt.tokenizers.bpe_hf."""
        from .bpe_hf import write_pretrained

        return write_pretrained(self, path, model_max_length)

    def to_tiktoken_ranks(self) -> dict[bytes, int]:
        """{token bytes: id} for ordinary tokens, as tiktoken.Encoding's mergeable_ranks.

        tiktoken ranks by id, so this reproduces our encoding when merge ids rise with rank
        (true for trained tokenizers, rank files and GPT-2) and the merge rule is "token".
        """
        return {b: i for i, b in self._vocab.items()}

    # ---------------------------------------------------------------- properties

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eot_id(self) -> int | None:
        return self.special_tokens.get(EOT_TEXT)

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self.special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's are its UTF-8 text)."""
        try:
            return self._decoder[token_id]
        except (KeyError, TypeError):
            raise unknown_id_error([token_id], self._decoder, self._vocab_size) from None

    # ---------------------------------------------------------------- encoding

    def encode(self, text: str, *, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
        """Ids of `text`, with tiktoken's rules for special tokens:

        - allowed_special: a set of special-token texts, or "all", encoded as their ids.
        - disallowed_special: "all" (default: every special not allowed) or a collection; finding
          one of them in the text raises ValueError. Pass () to encode special text as ordinary.
        - Also accepted: allowed_special="none_raise" (the default, set()) and "none" (= set() with
          disallowed_special=()), and disallowed_special="none" (= ()).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        if disallowed:
            found = regex.search("|".join(regex.escape(s) for s in sorted(disallowed)), text)
            if found:
                raise ValueError(
                    f"encountered text corresponding to disallowed special token {found.group()!r}; "
                    f"pass allowed_special={{{found.group()!r}}} (or 'all') to encode it as a special "
                    "token, or disallowed_special=() to encode it as ordinary text"
                )
        text = _valid_utf8(text)
        if not allowed or self._special_regex is None:
            return self._encode_ordinary(text)
        out: list[int] = []
        start = 0
        search = self._special_regex.search
        while True:
            pos, found = start, None
            while (m := search(text, pos)) is not None:
                if m.group() in allowed:
                    found = m
                    break
                pos = m.start() + 1  # not allowed: it stays ordinary text, look further on
            end = len(text) if found is None else found.start()
            out.extend(self._encode_ordinary(text[start:end]))
            if found is None:
                return out
            out.append(self.special_tokens[found.group()])
            start = found.end()

    def _special_sets(self, allowed_special, disallowed_special):
        if isinstance(allowed_special, str):
            if allowed_special == "all":
                allowed_special = self.special_tokens_set
            elif allowed_special == "none_raise":
                allowed_special = frozenset()
            elif allowed_special == "none":
                allowed_special, disallowed_special = frozenset(), ()
            else:
                raise ValueError(f"allowed_special must be a set of strings, 'all', 'none' or "
                                 f"'none_raise', got {allowed_special!r}")
        allowed_special = frozenset(allowed_special)
        if isinstance(disallowed_special, str):
            if disallowed_special == "all":
                disallowed_special = self.special_tokens_set - allowed_special
            elif disallowed_special == "none":
                disallowed_special = ()
            else:
                raise ValueError(f"disallowed_special must be a collection of strings, 'all' or "
                                 f"'none', got {disallowed_special!r}")
        return allowed_special, frozenset(disallowed_special)

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of `text`, treating special-token text as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._encode_ordinary(_valid_utf8(text))

    def _encode_ordinary(self, text: str) -> list[int]:
        cache = self._cache
        if len(cache) > _CACHE_MAX:
            cache.clear()
        if self.normalizer == "nfc":
            text = unicodedata.normalize("NFC", text)
        out: list[int] = []
        for chunk in self._split(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = cache[chunk] = self._encode_chunk(chunk.encode("utf-8"))
            out.extend(ids)
        return out

    def _split(self, text: str) -> list[str]:
        if self._regex.groups == 0:
            return self._regex.findall(text)
        return [m.group() for m in self._regex.finditer(text)]

    def _encode_chunk(self, piece: bytes) -> list[int]:
        if len(piece) == 1:
            return [self.byte_ids[piece[0]]]
        if self.merge_rule != "pair":  # tiktoken's shortcut (and ignore_merges): a chunk that is a token
            whole = self._bytes_to_id.get(piece)
            if whole is not None:
                return [whole]
        ids = [self.byte_ids[b] for b in piece]
        if len(ids) >= _HEAP_FROM:
            return merge_with_heap(ids, self._pairs)
        return merge_by_scan(ids, self._pairs)

    # ---------------------------------------------------------------- decoding

    def decode_bytes(self, ids, skip_special_tokens: bool = False) -> bytes:
        """The raw bytes of `ids`; an unknown id raises ValueError naming it and the vocab size.
        skip_special_tokens=True leaves out the special tokens' ids (as Hugging Face's decode)."""
        ids = as_id_list(ids)
        if skip_special_tokens and self._special_by_id:
            ids = [i for i in ids if not self._is_special_id(i)]
        try:
            return b"".join(map(self._decoder.__getitem__, ids))
        except (KeyError, TypeError):
            raise unknown_id_error(ids, self._decoder, self._vocab_size) from None

    def _is_special_id(self, i) -> bool:
        try:
            return i in self._skip_ids and not isinstance(i, bool)
        except TypeError:  # unhashable: decode_bytes names it as an unknown id
            return False

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of `ids`; byte sequences that are not valid UTF-8 become U+FFFD, as in tiktoken.
        skip_special_tokens=True leaves out the special tokens (e.g. <|endoftext|>)."""
        return self.decode_bytes(ids, skip_special_tokens).decode("utf-8", errors="replace")

    # ---------------------------------------------------------------- files

    def to_dict(self) -> dict:
        d = {
            "type": self.type_name,
            "version": 1,
            "pattern": self.pattern,
            "merge_rule": self.merge_rule,
            "special_tokens": dict(self.special_tokens),
            "merges": [list(m) for m in self.merges],
        }
        if self.byte_ids != list(range(256)):
            d["byte_ids"] = list(self.byte_ids)
        if self.merge_ids != list(range(256, 256 + len(self.merges))):
            d["merge_ids"] = list(self.merge_ids)
        if self.normalizer is not None:
            d["normalizer"] = self.normalizer
        if self.keep_on_skip:
            d["keep_on_skip"] = sorted(self.keep_on_skip)
        return d

    @classmethod
    def _from_dict(cls, d: dict) -> BPETokenizer:
        if d.get("type") != cls.type_name:
            raise ValueError(f"expected type {cls.type_name!r}, got {d.get('type')!r}")
        if d.get("version") != 1:
            raise ValueError(f"unsupported bpe file version {d.get('version')!r}")
        for key in ("pattern", "merges"):
            if key not in d:
                raise ValueError(f"missing field {key!r}")
        if not isinstance(d["merges"], list):
            raise ValueError("'merges' must be a list of [left id, right id] pairs")
        return cls(d["merges"], d["pattern"], d.get("special_tokens") or {},
                   byte_ids=d.get("byte_ids"), merge_ids=d.get("merge_ids"),
                   merge_rule=d.get("merge_rule", "token"), normalizer=d.get("normalizer"),
                   keep_on_skip=d.get("keep_on_skip") or ())

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={len(self.special_tokens)}, merge_rule={self.merge_rule!r})")


def _valid_utf8(text: str) -> str:
    """text, with lone surrogates replaced by U+FFFD as tiktoken does, so it encodes to UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _int(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError(f"{what} must be an int, got {x!r}")
    return x


def _id_pair(m) -> tuple[int, int]:
    if not isinstance(m, (list, tuple)) or len(m) != 2:
        raise ValueError(f"a merge must be a [left id, right id] pair, got {m!r}")
    return _int(m[0], "merge left id"), _int(m[1], "merge right id")


def _special_list(special_tokens) -> list[str]:
    """Special-token texts from None, a str, an iterable of str or a {text: id} dict, checked."""
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str):
        special_tokens = [special_tokens]
    out = list(special_tokens)
    for s in out:
        if not isinstance(s, str) or not s:
            raise ValueError(f"special tokens must be non-empty strings, got {s!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"special tokens must be distinct, got {out}")
    return out


def _special_dict(special_tokens) -> dict[str, int]:
    if special_tokens is None:
        return {}
    if not isinstance(special_tokens, dict):
        raise ValueError(f"special_tokens must be a {{text: id}} dict, got {type(special_tokens).__name__}")
    _special_list(list(special_tokens))
    return {s: _int(i, f"id of special token {s!r}") for s, i in special_tokens.items()}


__all__ = ["BPETokenizer", "GPT2_PATTERN", "GPT4_PATTERN", "PATTERNS", "resolve_pattern"]
