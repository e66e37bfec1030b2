"""Data-parallel throughput: 1 rank x 2 threads against 2 ranks x 1 thread, the same global batch.

Both layouts run the same `npgpt train` (float32, no dropout, clipping at 1.0): one process with
grad_accum 2 and two BLAS threads, or `--nproc 2` with grad_accum 1 and one thread per rank, so
every step sees the same 2 micro-batches either way; 1 rank x 1 thread runs as a reference.
tokens/s is the median of the per-step figures in log.jsonl (training time only, evaluation
excluded), leaving out the first --warmup steps. The layouts alternate --repeats times, so a busy
machine slows all alike; the best median is kept.

    python bench/bench_dist.py                        # small and baby (~10-15 min on 2 busy cores)
    python bench/bench_dist.py --config small --steps 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from npgpt.training.log import read_log  # noqa: E402

CONFIGS = {
    # nanoGPT's CPU recipe for shakespeare_char
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, steps=20),
    # nanoGPT's "baby GPT" for shakespeare_char
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=16, steps=6),
}
# the comparison asked for, and one process on one thread as a reference for what threading gives
LAYOUTS = {"1 rank x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1), "1 rank x 1 thread": (1, 1)}


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    ap.add_argument("--steps", type=int, help="timed steps per run (default per config)")
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    ap.add_argument("--repeats", type=int, default=2, help="runs per layout, alternating")
    return ap.parse_args()


def corpus(folder: str) -> str:
    """A char-level data directory from a few hundred KB of Python source (the stdlib's own files)."""
    import glob  # noqa: PLC0415

    from npgpt.data.tokens import prepare  # noqa: PLC0415

    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:40]
    text = "".join(open(f, encoding="utf-8", errors="replace").read() for f in files)
    path = os.path.join(folder, "text.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    prepare(path, os.path.join(folder, "data"), log=lambda *a: None)
    return os.path.join(folder, "data")


def run(cfg: dict, ranks: int, threads: int, steps: int, data: str, out: str) -> list[float]:
    """Train `steps` steps in this layout; the tokens/s of each step from log.jsonl."""
    shape = {k: v for k, v in cfg.items() if k != "steps"}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in shape.items()]
    cmd = [sys.executable, "-m", "npgpt.cli", "train", f"--data-dir={data}", f"--out-dir={out}", *flags,
           f"--max-iters={steps}", f"--grad-accum={2 // ranks}", "--log-interval=1", f"--eval-interval={steps}",
           "--eval-iters=1", "--dropout=0", "--no-progress", "--no-plot", "--warmup-iters=0"]
    if ranks > 1:
        cmd.append(f"--nproc={ranks}")
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return [rec["tokens_per_s"] for rec in read_log(out) if rec.get("event") == "step"]


def main():
    args = parse()
    names = list(CONFIGS) if args.config == "all" else [args.config]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = corpus(tmp)
        for name in names:
            cfg = CONFIGS[name]
            steps = args.steps or cfg["steps"]
            best = dict.fromkeys(LAYOUTS, 0.0)
            for rep in range(args.repeats):
                for layout, (ranks, threads) in LAYOUTS.items():
                    tps = run(cfg, ranks, threads, steps, data, os.path.join(tmp, f"{name}-{ranks}-{rep}"))
                    best[layout] = max(best[layout], statistics.median(tps[args.warmup:] or tps))
            tokens = 2 * cfg["batch_size"] * cfg["block_size"]
            for layout in LAYOUTS:
                rows.append((name, layout, tokens, 1000 * tokens / best[layout], best[layout],
                             best[layout] / best["1 rank x 2 threads"]))
    print(f"{'config':<6} {'layout':<20} {'tokens/step':>11} {'ms/step':>9} {'tokens/s':>10} {'vs 1x2':>7}")
    for name, layout, tokens, ms, tps, ratio in rows:
        print(f"{name:<6} {layout:<20} {tokens:>11,} {ms:>9.1f} {tps:>10,.0f} {ratio:>6.2f}x")
    print(f"(median per-step tokens/s after {args.warmup} warmup steps, best of {args.repeats} alternating runs, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
