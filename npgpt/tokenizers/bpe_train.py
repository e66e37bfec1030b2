"""Training byte-level BPE merges (used by BPETokenizer.train).

Rules:
- The text is cut at special-token texts first (merges never learn them), then split into chunks
  by the pattern; merges never cross chunks. Each distinct chunk is kept once with its count.
- The base vocabulary is the 256 bytes (id = byte value); merge k makes id 256 + k.
- A pair's frequency is the number of times it is adjacent in the chunks (overlaps counted, so
  "aaa" holds ("a", "a") twice), weighted by the chunk counts.
- Each step merges the most frequent pair. Tie-break: among equally frequent pairs, the one whose
  (left id, right id) is smallest wins. Pairs with frequency 0 never merge.
- Within a chunk a merge replaces the pair's occurrences left to right, without overlap.
- If the merged bytes already are a token (two different pairs can spell the same bytes), the
  pair is merged into that token in the chunks but no new merge or id is recorded: every token's
  bytes stay distinct, as tiktoken requires.
- Empty text is allowed and gives the 256 byte tokens (plus specials). When the corpus runs out
  of pairs before vocab_size is reached, training stops early with a UserWarning and the
  tokenizer is smaller than asked.
- vocab_size below 256 + number of special tokens raises ValueError.

Speed: pair counts are built once over the distinct chunks; a merge touches only the chunks in
the pair's index (pair -> chunks that have held it), and the most frequent pair comes from a heap
of (-count, left, right) whose stale entries are skipped when popped.
"""

from __future__ import annotations

import heapq
import warnings
from collections import Counter, defaultdict

import regex

from .bpe import _compile, _special_list, _valid_utf8


def train_bpe(text: str, vocab_size: int, pattern: str, special_tokens=None,
              progress: bool = False) -> list[tuple[int, int]]:
    """The merges, in order, for a vocabulary of `vocab_size` (specials included)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab_size must be an int, got {vocab_size!r}")
    specials = _special_list(special_tokens)
    n_merges = vocab_size - 256 - len(specials)
    if n_merges < 0:
        raise ValueError(f"vocab_size {vocab_size} is below 256 byte tokens + {len(specials)} "
                         f"special tokens = {256 + len(specials)}")
    words, weights = _distinct_chunks(_valid_utf8(text), _compile(pattern), specials)

    # 1. Count pairs once, and index which chunks hold each pair.
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (word, weight) in enumerate(zip(words, weights)):
        for pair in zip(word, word[1:]):
            counts[pair] += weight
            where[pair].add(w)
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)

    vocab = {i: bytes([i]) for i in range(256)}
    to_id = {b: i for i, b in vocab.items()}
    merges: list[tuple[int, int]] = []
    bar = _progress_bar(n_merges) if progress else None
    while len(merges) < n_merges:
        # 2. The most frequent pair, smallest (left, right) among ties; skip stale entries.
        pair = None
        while heap:
            neg, a, b = heapq.heappop(heap)
            if counts.get((a, b), 0) == -neg and neg < 0:
                pair = (a, b)
                break
        if pair is None:
            break
        piece = vocab[pair[0]] + vocab[pair[1]]
        new = to_id.get(piece)
        if new is None:  # a new token; otherwise an existing token's bytes (see docstring)
            new = 256 + len(merges)
            merges.append(pair)
            vocab[new], to_id[piece] = piece, new
            if bar is not None:
                bar.update(1)
        # 3. Rewrite only the chunks holding the pair, moving their pair counts.
        changed = set()
        for w in where.pop(pair):
            word = words[w]
            merged = _merge_word(word, pair, new)
            if len(merged) == len(word):
                continue  # the index is lazy: this chunk lost the pair to an earlier merge
            weight = weights[w]
            for p in zip(word, word[1:]):
                counts[p] -= weight
                changed.add(p)
            for p in zip(merged, merged[1:]):
                counts[p] += weight
                where[p].add(w)
                changed.add(p)
            words[w] = merged
        for p in changed:
            c = counts[p]
            if c > 0:
                heapq.heappush(heap, (-c, p[0], p[1]))
            else:
                del counts[p]
    if bar is not None:
        bar.close()
    if len(merges) < n_merges:
        warnings.warn(f"the corpus has only enough pairs for {len(merges)} merges, not {n_merges}: "
                      f"the vocabulary has {256 + len(merges) + len(specials)} tokens, not {vocab_size}",
                      UserWarning, stacklevel=3)
    return merges


def _distinct_chunks(text: str, split, specials: list[str]):
    """The distinct chunks of two or more bytes as byte-id lists, and how often each occurs."""
    pieces = [text]
    if specials:
        cut = regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=lambda s: (-len(s), s))))
        pieces = cut.split(text)
    chunks: Counter[str] = Counter()
    for piece in pieces:
        if split.groups == 0:
            chunks.update(split.findall(piece))
        else:
            chunks.update(m.group() for m in split.finditer(piece))
    words, weights = [], []
    for chunk, n in chunks.items():  # first-seen order, so training is deterministic
        b = chunk.encode("utf-8")
        if len(b) > 1:
            words.append(list(b))
            weights.append(n)
    return words, weights


def _merge_word(word: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """word with each occurrence of pair, left to right and without overlap, replaced by new."""
    a, b = pair
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _progress_bar(total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no bar
        return None
    return tqdm(total=total, desc="bpe merges", unit="merge")
