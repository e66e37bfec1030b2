"""Supervised fine-tuning data: examples as token ids plus which of them the loss counts.

`prepare_sft(FILE.jsonl, out_dir, ...)` reads one example per line (blank lines are skipped):

    {"prompt": "...", "completion": "..."}     ids = prompt + completion + end token; the loss counts
                                               the completion and the end token
    {"messages": [{"role": ..., "content": ...}, ...]}
                                               rendered with the chat template (chat_template.py);
                                               the loss counts every assistant turn plus its
                                               end-of-turn token, never system or user turns

The end token of a prompt/completion pair is the tokenizer directory's eos_token
(tokenizer_config.json), else <|endoftext|>. A conversation without a template of its own uses
ChatML. A tokenizer that lacks <|endoftext|> (pairs) or ChatML's <|im_start|>/<|im_end|>
(conversations) gets them as new special tokens with the next free ids; meta.json records them in
"added_tokens", and training grows the model's embedding and head to match (training/start.py).

Assistant spans, for any template: with F the whole conversation's text, assistant message i's
text runs from the end of render(messages[:i], add_generation_prompt=True) to the end of
render(messages[:i + 1]) less trailing whitespace (so ChatML counts "...<|im_end|>", not the newline
after it). Both must be prefixes of F, or the template is refused (it does not render a
conversation turn by turn). The whole text is encoded at once, so the ids are the ones the
tokenizer (and transformers' apply_chat_template) gives; a token counts when its last byte lies in
a counted span (a token that straddles the start of an answer, as "  " in "A:  x" may, is the answer's).

Position 0 is never counted (nothing predicts the first token). Training reads example e as
x = ids[:-1], y = ids[1:] where mask[1:], else -100.

Rule for long examples: with block_size, an example of more than block_size + 1 ids (more than
block_size inputs) is skipped whole, and the count is printed; a truncated answer would teach the
model to stop mid-answer without its end token.

Files (written whole through fileio.replace_dir, like `prepare`):

    {split}.bin           every example's ids, concatenated (uint16, or uint32 past 65,536 ids)
    {split}_mask.bin      uint8, 1 where the id is a counted target
    {split}_offsets.bin   int64, example e is ids[offsets[e]:offsets[e + 1]]
    tokenizer.json, meta.json ("format": "sft", "examples", "tokens", "loss_tokens" per split, ...)

Train and val are split by example: the last val_fraction of the examples (at least one) is val.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .chat_template import CHATML, CHATML_TOKENS, check_messages, find_chat_template, render
from .tokens import SPLITS, SFT_FILES, _check_ids, _inode, _write_all, token_dtype
from ..fileio import settle_dir

EOT_TEXT = "<|endoftext|>"
IGNORE = -100


# --- reading the examples ---------------------------------------------------------------------
def read_jsonl(path: str) -> list[tuple[int, dict]]:
    """[(line number, example)] of a JSONL file; ValueError naming the line for a bad one."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            ex = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{where}: not JSON ({e})") from None
        if not isinstance(ex, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(ex).__name__}")
        if "messages" in ex:
            ex = {"messages": check_messages(ex["messages"], where)}
        elif "prompt" in ex or "completion" in ex:
            for key in ("prompt", "completion"):
                if key not in ex:
                    raise ValueError(f"{where}: missing \"{key}\" (a pair needs both \"prompt\" and \"completion\")")
                if not isinstance(ex[key], str):
                    raise ValueError(f"{where}: \"{key}\" must be a string, got {type(ex[key]).__name__}")
            if not ex["prompt"]:
                raise ValueError(f"{where}: empty prompt (the first token is never predicted, so a pair needs a prompt)")
            if not ex["completion"]:
                raise ValueError(f"{where}: empty completion (nothing for the loss to count)")
            ex = {"prompt": ex["prompt"], "completion": ex["completion"]}
        else:
            raise ValueError(f"{where}: expected {{\"prompt\", \"completion\"}} or {{\"messages\": [...]}}, got keys "
                             f"{sorted(ex)}")
        out.append((n, ex))
    if not out:
        raise ValueError(f"{path}: no examples (one JSON object per line)")
    return out


# --- the tokenizer's special tokens -------------------------------------------------------------
def add_special_tokens(tok, names) -> tuple[object, dict]:
    """(tokenizer, {text: id} added): `tok` with each of `names` it lacks as a new special token, ids
    from vocab_size upwards in the order given. ValueError for a tokenizer that cannot hold them."""
    have = getattr(tok, "special_tokens", None)
    missing = [n for n in names if have is None or n not in have]
    if not missing:
        return tok, {}
    if have is None:
        raise ValueError(f"a {tok.type_name} tokenizer has no special tokens, and SFT data needs {', '.join(missing)}: "
                         "use a bpe tokenizer (--tokenizer bpe --vocab-size N, or the model's --tokenizer-file)")
    from ..tokenizers.base import tokenizer_from_dict  # noqa: PLC0415

    d = tok.to_dict()
    added = {n: tok.vocab_size + i for i, n in enumerate(missing)}
    d["special_tokens"] = {**d.get("special_tokens", {}), **added}
    return tokenizer_from_dict(d), added


def base_tokenizer_dict(tok, added: dict) -> dict:
    """tok.to_dict() without the special tokens `added` (meta.json's "added_tokens"): the tokenizer
    the data was prepared from, to compare with a model's."""
    d = tok.to_dict()
    if added:
        d["special_tokens"] = {k: v for k, v in d.get("special_tokens", {}).items() if k not in added}
    return d


# --- one example -> ids and mask ------------------------------------------------------------------
def conversation_segments(messages: list[dict], template: str, specials: dict) -> list[tuple[str, bool]]:
    """[(text, counted)] covering the rendered conversation: the assistant spans counted (see the
    module docstring), everything else not."""
    full = render(template, messages, **specials)
    segs, pos = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        pre = render(template, messages[:i], add_generation_prompt=True, **specials)
        end_text = render(template, messages[:i + 1], **specials).rstrip()
        start = len(pre)
        if not (full.startswith(pre) and full.startswith(end_text) and pos <= start < len(end_text)):
            raise ValueError("the chat template does not render a conversation turn by turn (a prefix of the "
                             "conversation is not a prefix of its text), so npgpt cannot find the assistant turns")
        segs += [(full[pos:start], False), (full[start:len(end_text)], True)]
        pos = len(end_text)
    segs.append((full[pos:], False))
    return [s for s in segs if s[0]]


def encode_segments(tok, segs) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 (L,), mask bool (L,)) of the segments' joined text. The text is encoded whole (so the
    ids are what the tokenizer, and transformers' apply_chat_template, give for it), and a token is
    counted when its last byte lies in a counted segment; mask[0] is False."""
    text = "".join(t for t, _ in segs)
    ids = tok.encode(text, allowed_special="all")
    counted = np.concatenate([np.full(len(t.encode("utf-8")), c, dtype=bool) for t, c in segs] or [np.zeros(0, bool)])
    ends = np.cumsum([len(tok.token_bytes(i)) for i in ids]).astype(np.int64)  # (L,) byte where each token ends
    if not len(ids) or ends[-1] != len(counted):
        raise ValueError("the tokenizer changed the text's bytes while encoding it (a normalizer?), so npgpt cannot "
                         "tell which tokens are the answer's")
    ids, mask = np.asarray(ids, dtype=np.int64), counted[ends - 1]
    mask[0] = False
    return ids, mask


# --- prepare --------------------------------------------------------------------------------------
def _tokenizer_for(examples, tokenizer, vocab_size, tokenizer_file):
    from .tokens import _make_tokenizer  # noqa: PLC0415

    if tokenizer_file is None and tokenizer in (None, "char"):
        raise ValueError("SFT data needs a tokenizer with special tokens: give the model's --tokenizer-file (to "
                         "fine-tune it), or --tokenizer bpe --vocab-size N (to train one on the examples)")
    text = "\n".join(m["content"] for _, ex in examples for m in
                     (ex["messages"] if "messages" in ex else ({"content": ex["prompt"]}, {"content": ex["completion"]})))
    return _make_tokenizer(text, tokenizer, vocab_size, tokenizer_file)


def prepare_sft(source: str, out_dir: str, *, tokenizer: str | None = None, vocab_size: int | None = None,
                tokenizer_file: str | None = None, val_fraction: float = 0.1, block_size: int | None = None,
                log=print) -> dict:
    """Write the SFT data directory of `source` (a .jsonl file) into out_dir; return its meta.json dict.
    See the module docstring for the format, the masks, the split and the rule for long examples."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    examples = read_jsonl(source)
    tok = _tokenizer_for(examples, tokenizer, vocab_size, tokenizer_file)
    template, specials = find_chat_template(tokenizer_file)
    chats = any("messages" in ex for _, ex in examples)
    pairs = any("prompt" in ex for _, ex in examples)
    end_token = specials.get("eos_token") or EOT_TEXT
    needed = ([end_token] if pairs else []) + (list(CHATML_TOKENS) if chats and template is None else [])
    tok, added = add_special_tokens(tok, needed)
    template_source = "tokenizer_config.json" if template is not None else "chatml"
    template = CHATML if template is None else template
    specials = {**specials, "eos_token": end_token}

    encoded, skipped = [], 0
    for n, ex in examples:
        try:
            if "messages" in ex:
                segs = conversation_segments(ex["messages"], template, specials)
            else:
                segs = [(ex["prompt"], False), (ex["completion"] + end_token, True)]
            ids, mask = encode_segments(tok, segs)
        except ValueError as e:
            raise ValueError(f"{source}:{n}: {e}") from None
        if not mask.any():
            raise ValueError(f"{source}:{n}: no token for the loss to count after tokenizing")
        if block_size is not None and len(ids) > block_size + 1:
            skipped += 1
            continue
        encoded.append((ids, mask))
    if skipped:
        log(f"skipped {skipped} of {len(examples)} example(s) longer than block_size + 1 = {block_size + 1} tokens")
    if len(encoded) < 2:
        raise ValueError(f"{source}: {len(encoded)} example(s) left; need at least 2 to make a train and a val split")
    n = len(encoded)
    n_train = min(max(int(n * (1.0 - val_fraction)), 1), n - 1)
    dtype = token_dtype(tok.vocab_size)
    files, counts = {}, {"examples": {}, "tokens": {}, "loss_tokens": {}}
    for split, part in (("train", encoded[:n_train]), ("val", encoded[n_train:])):
        lengths = [len(ids) for ids, _ in part]
        files[f"{split}.bin"] = np.concatenate([ids for ids, _ in part]).astype(dtype).tobytes()
        files[f"{split}_mask.bin"] = np.concatenate([m for _, m in part]).astype(np.uint8).tobytes()
        files[f"{split}_offsets.bin"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64).tobytes()
        counts["examples"][split] = len(part)
        counts["tokens"][split] = int(sum(lengths))
        counts["loss_tokens"][split] = int(sum(int(m.sum()) for _, m in part))
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    tok_json = tok.to_json().encode("utf-8")
    meta = {
        "version": 1, "format": "sft", "source": os.path.abspath(source), "text_sha256": digest,
        "tokenizer": {"type": tok.type_name, "vocab_size": tok.vocab_size, "file": "tokenizer.json",
                      "sha256": hashlib.sha256(tok_json).hexdigest()},
        "vocab_size": tok.vocab_size, "dtype": dtype.name, "val_fraction": val_fraction,
        **counts, "skipped": skipped, "block_size": block_size,
        "added_tokens": added, "chat_template": template, "chat_template_source": template_source,
        "special_tokens": specials, "end_of_turn": end_of_turn(tok, template, specials),
    }
    files["tokenizer.json"] = tok_json
    files["meta.json"] = json.dumps(meta, indent=1).encode("utf-8")
    _write_all(out_dir, files)
    log(f"prepared {source}: {n} examples ({counts['examples']['train']} train, {counts['examples']['val']} val), "
        f"{counts['tokens']['train']:,} + {counts['tokens']['val']:,} tokens of which {counts['loss_tokens']['train']:,} "
        f"+ {counts['loss_tokens']['val']:,} counted, chat template {template_source}, "
        f"{len(added)} special token(s) added, vocab {tok.vocab_size} -> {out_dir}")
    return meta


def end_of_turn(tok, template: str, specials: dict) -> str | None:
    """The special token that ends an assistant turn under `template`: the last special token of the
    assistant span of a probe conversation (ChatML: <|im_end|>), or None when the span has none."""
    segs = conversation_segments([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                 template, specials)
    span = "".join(t for t, counted in segs if counted)
    found = [s for s in getattr(tok, "special_tokens", {}) if span.endswith(s)]
    return max(found, key=len) if found else None


# --- reading a prepared directory --------------------------------------------------------------
class SFTData:
    """An SFT data directory (see the module docstring), every file checked on opening, each problem
    one ValueError naming the file. `train`/`val` are the concatenated ids (for their lengths);
    batches come from step_batches and eval_batch."""

    FORMAT = "sft"

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        for _ in range(3):
            before = _inode(data_dir)
            self._open(data_dir)
            if _inode(data_dir) == before:
                return
        raise ValueError(f"{data_dir}: replaced three times while being read; is a `npgpt prepare` writing it?")

    def _open(self, data_dir: str) -> None:
        from .tokens import TokenData  # noqa: PLC0415 - the tokenizer check is shared

        settle_dir(data_dir)
        meta_path = os.path.join(data_dir, "meta.json")
        with open(meta_path, encoding="utf-8") as f:
            self.meta = json.load(f)
        try:
            dtype = np.dtype(self.meta["dtype"])
            n_ex = {s: int(self.meta["examples"][s]) for s in SPLITS}
            n_tok = {s: int(self.meta["tokens"][s]) for s in SPLITS}
            n_loss = {s: int(self.meta["loss_tokens"][s]) for s in SPLITS}
            vocab = int(self.meta["vocab_size"])
            if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)) or min(n_ex.values()) < 1 or vocab < 1:
                raise ValueError(f"dtype {dtype.name}, examples {n_ex}, vocab_size {vocab}")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{meta_path}: not a valid npgpt SFT meta.json ({e})") from e
        self.ids, self.mask, self.offsets = {}, {}, {}
        for s in SPLITS:
            for name, dt, count in ((f"{s}.bin", dtype, n_tok[s]), (f"{s}_mask.bin", np.uint8, n_tok[s]),
                                    (f"{s}_offsets.bin", np.int64, n_ex[s] + 1)):
                path = os.path.join(data_dir, name)
                size = os.path.getsize(path) if os.path.isfile(path) else None
                if size != count * np.dtype(dt).itemsize:
                    raise ValueError(f"{path}: expected {count} {np.dtype(dt).name} values per meta.json, found "
                                     f"{'no file' if size is None else f'{size} bytes'}; run `npgpt prepare` again")
            ids = np.fromfile(os.path.join(data_dir, f"{s}.bin"), dtype=dtype)
            mask = np.fromfile(os.path.join(data_dir, f"{s}_mask.bin"), dtype=np.uint8)
            offsets = np.fromfile(os.path.join(data_dir, f"{s}_offsets.bin"), dtype=np.int64)
            _check_ids(ids, vocab, os.path.join(data_dir, f"{s}.bin"))
            if mask.max(initial=0) > 1 or int(mask.sum()) != n_loss[s]:
                raise ValueError(f"{os.path.join(data_dir, f'{s}_mask.bin')}: not {n_loss[s]} counted tokens of 0/1 "
                                 "flags, as meta.json says; run `npgpt prepare` again")
            if offsets[0] != 0 or offsets[-1] != n_tok[s] or np.any(np.diff(offsets) < 2):
                raise ValueError(f"{os.path.join(data_dir, f'{s}_offsets.bin')}: not rising offsets from 0 to "
                                 f"{n_tok[s]} (examples of >= 2 tokens); run `npgpt prepare` again")
            self.ids[s], self.mask[s], self.offsets[s] = ids, mask.astype(bool), offsets
        self._tokenizer = TokenData._check_tokenizer(self)

    @property
    def files(self) -> list[str]:
        return [os.path.join(self.data_dir, n) for n in SFT_FILES]

    @property
    def train(self) -> np.ndarray:
        return self.ids["train"]

    @property
    def val(self) -> np.ndarray:
        return self.ids["val"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def added_tokens(self) -> dict:
        return dict(self.meta.get("added_tokens") or {})

    def num_examples(self, split: str) -> int:
        return len(self.offsets[split]) - 1

    def longest(self) -> int:
        """The most inputs (ids - 1) of any example in either split."""
        return max(int(np.diff(self.offsets[s]).max()) - 1 for s in SPLITS)

    def check_block_size(self, block_size: int) -> None:
        if self.longest() > block_size:
            raise ValueError(f"{self.data_dir}: an example has {self.longest() + 1} tokens, more than block_size "
                             f"{block_size} + 1; prepare the data again with --block-size {block_size} (it skips "
                             "longer examples)")

    def batch(self, split: str, examples, pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """x, y int64 (B, T) for the example numbers `examples`, right-padded to the longest of them (or
        to pad_to): x pads with id 0, y holds the next id where it is counted and -100 elsewhere."""
        off, ids, mask = self.offsets[split], self.ids[split], self.mask[split]
        lengths = [int(off[e + 1] - off[e]) - 1 for e in examples]
        T = max(lengths) if pad_to is None else pad_to
        x = np.zeros((len(examples), T), dtype=np.int64)
        y = np.full((len(examples), T), IGNORE, dtype=np.int64)
        for b, (e, n) in enumerate(zip(examples, lengths)):
            a = int(off[e])
            x[b, :n] = ids[a:a + n]
            y[b, :n] = np.where(mask[a + 1:a + n + 1], ids[a + 1:a + n + 1].astype(np.int64), IGNORE)
        return x, y

    def draw(self, split: str, n: int, generator: np.random.Generator) -> np.ndarray:
        """n example numbers of `split` drawn uniformly with replacement."""
        return generator.integers(0, self.num_examples(split), size=n)

    def get_batch(self, split: str, batch_size: int, block_size: int, generator: np.random.Generator):
        """batch_size drawn examples padded to block_size (a fixed shape: what dropout_draws measures)."""
        return self.batch(split, self.draw(split, batch_size, generator), pad_to=block_size)


def open_data(data_dir: str):
    """The data directory `data_dir` opened as what meta.json says it is: SFTData or TokenData."""
    from .tokens import TokenData  # noqa: PLC0415

    meta_path = os.path.join(data_dir, "meta.json")
    fmt = None
    settle_dir(data_dir)
    if os.path.isfile(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            fmt = meta.get("format") if isinstance(meta, dict) else None
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{meta_path}: not a valid npgpt meta.json ({e})") from None
    return SFTData(data_dir) if fmt == SFTData.FORMAT else TokenData(data_dir)
