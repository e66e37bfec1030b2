"""Fine-tuning for a task, with a number: exact-match accuracy on held-out prompts before and after SFT.

1. pretrain a small GPT on the offline `stdlib` corpus (a slice of it, BPE tokenizer trained on it)
2. generate instruction pairs, two tasks:
       add 3 4 =        ->  " 7"          (two one-digit numbers)
       rev a b c =      ->  " c b a"      (three letters of a..h, spaced so each is a token)
   and hold out prompts the fine-tuning never sees (20 of the 100 sums, 100 of the 512 triples)
3. score the pretrained model: greedy decoding from each held-out prompt until <|endoftext|> (at most
   8 tokens); exact match of the decoded answer
4. full fine-tuning on the pairs (npgpt prepare FILE.jsonl + npgpt train --init-from), score again
5. LoRA fine-tuning (r 16, alpha 32 on c_attn, c_proj, c_fc; the base frozen) from the same
   pretrained model, the same steps and pairs, at a higher learning rate (adapters start at zero)

Prints a table of accuracy and wall time per row.

    python bench/sft_task.py                 # a few minutes on 2 cores
    python bench/sft_task.py --quick         # a smoke run (seconds; accuracy meaningless)
    python bench/sft_task.py --reuse         # keep the pretrained model of an earlier run in --out
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npgpt.data import prepare  # noqa: E402
from npgpt.data.corpora import stdlib_text  # noqa: E402
from npgpt.generation.generate import generate  # noqa: E402
from npgpt.generation.loading import load_model  # noqa: E402
from npgpt.training.config import TrainConfig  # noqa: E402
from npgpt.training.loop import train  # noqa: E402
from npgpt.training.lora import LoraConfig  # noqa: E402

MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0}


def tasks(seed: int = 0):
    """(train pairs, held-out pairs): {"prompt", "completion"} dicts."""
    g = np.random.default_rng(seed)
    sums = [{"prompt": f"add {a} {b} =", "completion": f" {a + b}"} for a in range(10) for b in range(10)]
    revs = [{"prompt": f"rev {' '.join(t)} =", "completion": " " + " ".join(reversed(t))}
            for t in itertools.product("abcdefgh", repeat=3)]
    g.shuffle(sums)
    g.shuffle(revs)
    return sums[20:] + revs[100:], sums[:20] + revs[:100]


def accuracy(path: str, held_out) -> float:
    model, tok = load_model(path)
    eos = tok.eot_id
    hits = 0
    for ex in held_out:
        ids = tok.encode(ex["prompt"])
        out = generate(model, [ids], max_new_tokens=8, eos_token_id=[eos])[0, len(ids):].tolist()
        answer = tok.decode([i for i in out if i != eos])
        hits += answer == ex["completion"]
    return hits / len(held_out)


def pretrain(args, common, quiet) -> None:
    text, _ = stdlib_text(args.corpus_bytes)
    corpus = os.path.join(args.out, "stdlib.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(text)
    prepare(corpus, os.path.join(args.out, "pre-data"), tokenizer="bpe", vocab_size=512, log=quiet)
    train(TrainConfig.from_values({**common, "data_dir": os.path.join(args.out, "pre-data"),
                                   "out_dir": os.path.join(args.out, "pre"), "max_iters": args.pretrain_iters,
                                   "eval_interval": args.pretrain_iters, "batch_size": 16, "lr": 2e-3}),
          log=quiet, overwrite=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("out", "bench-sft"))
    ap.add_argument("--pretrain-iters", type=int, default=300)
    ap.add_argument("--sft-iters", type=int, default=300)
    ap.add_argument("--corpus-bytes", type=int, default=300_000, help="the slice of stdlib to pretrain on")
    ap.add_argument("--quick", action="store_true", help="a smoke run: a few steps of each")
    ap.add_argument("--reuse", action="store_true", help="reuse --out's pretrained model (its time: not measured)")
    args = ap.parse_args()
    if args.quick:
        args.pretrain_iters, args.sft_iters, args.corpus_bytes = 5, 5, 30_000
    os.makedirs(args.out, exist_ok=True)
    quiet = lambda *a, **k: None  # noqa: E731
    rows = []

    t = time.perf_counter()
    common = {**MODEL, "eval_iters": 10, "log_interval": 50, "progress": False, "plot": False, "warmup_iters": 20}
    if not (args.reuse and os.path.isfile(os.path.join(args.out, "pre", "ckpt.safetensors"))):
        pretrain(args, common, quiet)
    pre_s = None if args.reuse else time.perf_counter() - t

    train_pairs, held_out = tasks()
    jsonl = os.path.join(args.out, "pairs.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(p) + "\n" for p in train_pairs))
    prepare(jsonl, os.path.join(args.out, "sft-data"), tokenizer_file=os.path.join(args.out, "pre", "tokenizer.json"),
            val_fraction=0.05, block_size=MODEL["block_size"], log=quiet)
    rows.append(("pretrained on stdlib, no fine-tuning", accuracy(os.path.join(args.out, "pre"), held_out), pre_s))

    t = time.perf_counter()
    train(TrainConfig.from_values({**common, "data_dir": os.path.join(args.out, "sft-data"),
                                   "out_dir": os.path.join(args.out, "sft-full"),
                                   "init_from": os.path.join(args.out, "pre"), "max_iters": args.sft_iters,
                                   "eval_interval": args.sft_iters, "batch_size": 32, "lr": 1e-3}),
          log=quiet, overwrite=True)
    rows.append((f"+ full fine-tuning, {args.sft_iters} steps", accuracy(os.path.join(args.out, "sft-full"), held_out),
                 time.perf_counter() - t))
    t = time.perf_counter()
    lora = LoraConfig(r=16, alpha=32, target_modules=("c_attn", "c_proj", "c_fc"))
    train(TrainConfig.from_values({**common, "data_dir": os.path.join(args.out, "sft-data"),
                                   "out_dir": os.path.join(args.out, "sft-lora"), "lora": lora,
                                   "init_from": os.path.join(args.out, "pre"), "max_iters": args.sft_iters,
                                   "eval_interval": args.sft_iters, "batch_size": 32, "lr": 5e-3}),
          log=quiet, overwrite=True)
    rows.append((f"+ LoRA r 16, {args.sft_iters} steps", accuracy(os.path.join(args.out, "sft-lora"), held_out),
                 time.perf_counter() - t))

    print(f"held-out prompts: {len(held_out)} (20 sums of two digits, 100 reversals of three letters); "
          f"model {MODEL['n_layer']} layers x {MODEL['n_embd']}, pretrained {args.pretrain_iters} steps on "
          f"{args.corpus_bytes:,} bytes of stdlib")
    print(f"| {'run':<40} | exact match | wall time |")
    print(f"|{'-' * 42}|-------------|-----------|")
    for name, acc, secs in rows:
        a = f"{100 * acc:.1f} %"
        s = "(reused)" if secs is None else f"{secs:.0f} s"
        print(f"| {name:<40} | {a:>11} | {s:>9} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
