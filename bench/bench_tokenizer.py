"""Tokenizer benchmark: BPE training time and encode throughput of npgpt against tiktoken.

    python bench/bench_tokenizer.py [--vocab-size 4096] [--pattern gpt2] [--repeat 3]

Both encoders use the same ranks (npgpt's trained tokenizer, handed to tiktoken.Encoding) on the
same text, so the ratio compares implementations, not vocabularies. The corpus is Tiny Shakespeare
from ../shared/data/ when present, else ~1 MB of Python standard-library source (sorted files).
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from npgpt.tokenizers import BPETokenizer  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare.txt"


def corpus() -> tuple[str, str]:
    if SHAKESPEARE.exists():
        return SHAKESPEARE.read_text(encoding="utf-8"), "Tiny Shakespeare"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size > 1_100_000:
            break
    return "".join(parts), f"Python stdlib source ({len(parts)} files; Tiny Shakespeare not found)"


def best_of(repeat: int, f):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = f()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--pattern", default="gpt2")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    text, name = corpus()
    mb = len(text.encode("utf-8")) / 1e6
    print(f"corpus: {name}, {mb:.2f} MB; vocab {args.vocab_size}, pattern {args.pattern}, "
          f"{os.cpu_count()} cpus (npgpt uses one)")

    t_train, tok = best_of(1, lambda: BPETokenizer.train(text, args.vocab_size, pattern=args.pattern,
                                                           special_tokens=["<|endoftext|>"]))
    rows = [("train (npgpt)", f"{t_train:8.2f} s", "")]

    fresh = BPETokenizer._from_dict(tok.to_dict())
    t_cold, ids = best_of(1, lambda: fresh.encode(text))
    t_warm, _ = best_of(args.repeat, lambda: fresh.encode(text))
    t_dec, _ = best_of(args.repeat, lambda: fresh.decode(ids))
    rows += [("encode npgpt, cold cache", f"{mb / t_cold:8.2f} MB/s", ""),
             ("encode npgpt, warm cache", f"{mb / t_warm:8.2f} MB/s", ""),
             ("decode npgpt", f"{mb / t_dec:8.2f} MB/s", "")]
    try:
        import tiktoken
    except ImportError:
        rows.append(("encode tiktoken", "not installed", ""))
    else:
        enc = tiktoken.Encoding(name="npgpt-bench", pat_str=tok.pattern, mergeable_ranks=tok.to_tiktoken_ranks(),
                                special_tokens=dict(tok.special_tokens))
        t_tik, tik_ids = best_of(args.repeat, lambda: enc.encode_ordinary(text))
        t_tdec, _ = best_of(args.repeat, lambda: enc.decode(tik_ids))
        same = "same ids" if tik_ids == ids else "IDS DIFFER"
        rows += [("encode tiktoken (1 thread)", f"{mb / t_tik:8.2f} MB/s", same),
                 ("decode tiktoken", f"{mb / t_tdec:8.2f} MB/s", ""),
                 ("npgpt / tiktoken encode speed", f"{t_tik / t_warm:8.3f} x", "warm cache"),
                 ("npgpt / tiktoken encode speed", f"{t_tik / t_cold:8.3f} x", "cold cache")]
    print(f"tokens: {len(ids)} ({len(text.encode('utf-8')) / len(ids):.2f} bytes/token)\n")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"  {label:<{width}}  {value:>14}  {note}")


if __name__ == "__main__":
    main()
