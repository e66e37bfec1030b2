"""npgpt vs a nanoGPT-style PyTorch GPT: training step, eval forward and peak memory, side by side.

The baseline is reference/nanogpt.py (SDPA attention, F.gelu, F.layer_norm, F.cross_entropy,
torch.optim.AdamW), loaded with npgpt's weights. Per config, in float32:
  train step = zero_grad, forward with targets, backward, clip_grad_norm(1.0), AdamW step
               (npgpt.optim's AdamW vs torch.optim.AdamW, nanoGPT's groups, the same hyperparameters)
  eval fwd   = forward with targets in eval mode under no_grad (what estimate_loss runs)
Each framework runs at 1 and at 2 threads (BLAS and torch intra-op threads, and npgpt's pool), all
four (framework, threads) pairs alternating step by step, so a busy machine slows all alike. The
ratio is PyTorch's best median time over npgpt's best median time (> 1: npgpt is faster).

FLOP per training step = tokens * (6 N + 12 L C T): N the parameters taking part in matmuls (all
but wpe), 12 L C T for attention's two T x T products over the full square (nanoGPT's estimate_mfu).
An eval forward counts a third of that. "of peak" divides achieved FLOP/s by the best FLOP/s of a
2048^3 float32 NumPy matmul measured in the same run.

Peak memory: each framework in a fresh process of its own (bench/peak_memory.py) builds the model,
resets the kernel's peak-RSS mark (/proc/self/clear_refs; else it takes ru_maxrss), runs 3 training
steps, and reports peak RSS minus the RSS after building the model.

    python bench/bench_train.py                       # small and baby (~4 min on 2 idle cores)
    python bench/bench_train.py --config small --steps 20 --threads 2
    python bench/bench_train.py --device cuda         # PyTorch on CUDA vs npgpt on CuPy
    python bench/bench_train.py --profile             # cProfile one npgpt train step and eval forward

For benchmarking, OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some machines for old OpenBLAS
builds) should be unset for this command alone; the header prints the BLAS kernel actually in use.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from bench.peak_memory import memory_rows  # noqa: E402
from npgpt import GPT, GPTConfig, parallel  # noqa: E402
from npgpt.training.optim import clip_grad_norm, configure_optimizer  # noqa: E402
from npgpt.tensor import no_grad  # noqa: E402

CONFIGS = {
    # nanoGPT's CPU recipe for shakespeare_char
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12, steps=20),
    # nanoGPT's "baby GPT" for shakespeare_char
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=16, steps=5),
}
VOCAB = 65
HYPER = dict(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))


# --- threads ----------------------------------------------------------------------------------
def blas_info() -> str:
    """Which BLAS kernel NumPy runs (OpenBLAS's corename) and its default thread count."""
    import ctypes  # noqa: PLC0415
    import glob  # noqa: PLC0415

    core = "unknown"
    for lib in glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*")):
        dll = ctypes.CDLL(lib)
        fn = next((getattr(dll, n) for n in ("scipy_openblas_get_corename64_", "openblas_get_corename")
                   if hasattr(dll, n)), None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            core = fn().decode()
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return (f"NumPy {np.__version__}, OpenBLAS kernel {core}, {parallel.blas_threads()} threads by default, "
            f"env {env or 'clean'}")


def set_threads(n: int | None) -> None:
    """n threads for NumPy's BLAS, npgpt's pool and (when loaded) torch's intra-op pool."""
    if n is None:
        return
    parallel.set_blas_threads(n)
    parallel.set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    ap.add_argument("--steps", type=int, help="timed steps per (framework, threads) (default per config)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per (framework, threads) first")
    ap.add_argument("--threads", default="1,2", help="thread counts to try, comma-separated (default 1,2)")
    ap.add_argument("--activation", choices=("gelu_tanh", "gelu"), default="gelu_tanh")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--profile", action="store_true", help="cProfile one npgpt train step and eval forward per config")
    return ap.parse_args(argv)


def gpt_config(spec: dict, activation: str) -> GPTConfig:
    return GPTConfig(vocab_size=VOCAB, block_size=spec["block_size"], n_layer=spec["n_layer"], n_head=spec["n_head"],
                     n_embd=spec["n_embd"], activation=activation)


def batches(spec: dict, n: int = 4):
    g = np.random.default_rng(0)
    B, T = spec["batch"], spec["block_size"]
    return [(g.integers(0, VOCAB, (B, T)), g.integers(0, VOCAB, (B, T))) for _ in range(n)]


# --- the two frameworks, each as (train_step(i), eval_forward(i), sync) -----------------------
def npgpt_runner(cfg: GPTConfig, data, device: str):
    model = GPT(cfg, seed=0, dtype="float32", device=device)
    opt = configure_optimizer(model, **HYPER)
    params = model.parameters()

    def train_step(i):
        x, y = data[i % len(data)]
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        return loss

    def eval_forward(i):
        x, y = data[i % len(data)]
        model.eval()
        with no_grad():
            _, loss = model(x, y)
        model.train()
        return loss

    def sync():
        if device == "cuda":
            from npgpt.backend import xp_for  # noqa: PLC0415

            xp_for("cuda").cuda.Device().synchronize()

    return model, train_step, eval_forward, sync


def torch_runner(cfg: GPTConfig, data, device: str, weights):
    import torch  # noqa: PLC0415

    from reference.nanogpt import NanoGPT, configure_optimizer as torch_optimizer  # noqa: PLC0415

    model = NanoGPT(cfg, dtype=torch.float32, device=device)
    model.load_from_npgpt(weights)
    opt = torch_optimizer(model, **HYPER)
    tdata = [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in data]

    def train_step(i):
        x, y = tdata[i % len(tdata)]
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def eval_forward(i):
        x, y = tdata[i % len(tdata)]
        model.eval()
        with torch.no_grad():
            _, loss = model(x, y)
        model.train()
        return loss

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    return model, train_step, eval_forward, sync


# --- timing -----------------------------------------------------------------------------------
def matmul_peak(threads: list[int]) -> dict:
    """FLOP/s of a 2048^3 float32 NumPy matmul, best of 3, at each thread count."""
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    out = {}
    for th in threads:
        set_threads(th)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(3))
        out[th] = 2 * n**3 / best
    return out


def _timed(fn, sync=None) -> float:
    t0 = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t0


def race(runners: dict, which: int, steps: int, warmup: int, threads: list) -> dict:
    """Median seconds per (framework, threads) for runners[fw][which] (1: train step, 2: eval forward)."""
    times = {(fw, th): [] for fw in runners for th in threads}
    for i in range(warmup + steps):
        for th in threads:
            for fw, r in runners.items():
                set_threads(th)
                dt = _timed(lambda: r[which](i), r[3])
                if i >= warmup:
                    times[(fw, th)].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def flops_per_step(model: GPT, cfg: GPTConfig, B: int, T: int) -> float:
    n_mm = model.num_params() - (cfg.block_size * cfg.n_embd if cfg.pos_encoding == "learned" else 0)
    return B * T * (6 * n_mm + 12 * cfg.n_layer * cfg.n_embd * T)


def bench_config(name: str, spec: dict, args, threads: list, peak: float | None) -> list[str]:
    cfg = gpt_config(spec, args.activation)
    B, T = spec["batch"], spec["block_size"]
    data = batches(spec)
    np_model, *np_fns = npgpt_runner(cfg, data, args.device)
    _, *t_fns = torch_runner(cfg, data, args.device, np_model.state_dict())
    runners = {"npgpt": (None, *np_fns), "torch": (None, *t_fns)}
    steps = args.steps or spec["steps"]
    train_flops = flops_per_step(np_model, cfg, B, T)
    lines = [f"\n{name}: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, block {T}, batch {B}, "
             f"vocab {VOCAB}, {cfg.activation}, {np_model.num_params() / 1e6:.2f}M params; "
             f"median of {steps} steps (+{args.warmup} warmup) per cell"]
    head = "  ".join(f"{fw} {th}T".rjust(10) for fw in ("npgpt", "torch") for th in threads)
    lines.append(f"  {'row':<11} {head}   best: npgpt {'torch':>7}  ratio  npgpt/torch of peak")
    for which, row, flops in ((1, "train step", train_flops), (2, "eval fwd", train_flops / 3)):
        med = race(runners, which, steps, args.warmup, threads)
        cells = "  ".join(f"{med[(fw, th)] * 1e3:>7.1f} ms" for fw in ("npgpt", "torch") for th in threads)
        best = {fw: min(med[(fw, th)] for th in threads) for fw in ("npgpt", "torch")}
        frac = "" if peak is None else f"{flops / best['npgpt'] / peak:>6.1%} /{flops / best['torch'] / peak:>6.1%}"
        lines.append(f"  {row:<11} {cells}   {best['npgpt'] * 1e3:>8.1f} {best['torch'] * 1e3:>7.1f}  "
                     f"{best['torch'] / best['npgpt']:>5.2f}  {frac}")
        print(lines[-1], flush=True)
    if args.profile:
        profile(name, np_fns)
    return lines


def profile(name: str, np_fns) -> None:
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    for fn, what in ((np_fns[0], "train step"), (np_fns[1], "eval forward")):
        pr = cProfile.Profile()
        pr.enable()
        fn(0)
        pr.disable()
        print(f"\ncProfile of one npgpt {what} ({name}), top 20 by own time:")
        pstats.Stats(pr).sort_stats("tottime").print_stats(20)


def main(argv=None) -> int:
    args = parse(argv)
    names = list(CONFIGS) if args.config == "all" else [args.config]
    threads = [int(t) for t in args.threads.split(",")] if args.device == "cpu" else [None]
    lines = []
    peak = None
    if args.device == "cpu":
        peaks = matmul_peak(threads)
        peak = max(peaks.values())
        lines.append(f"BLAS: {blas_info()}; load average {os.getloadavg()[0]:.2f}")
        lines.append("float32 matmul 2048^3 (NumPy): " + ", ".join(f"{p / 1e9:.1f} GFLOP/s at {t}T" for t, p in peaks.items()))
    print("\n".join(lines), flush=True)
    for name in names:
        rows = bench_config(name, CONFIGS[name], args, threads, peak)
        if args.device == "cpu" and not args.no_memory:
            rows += memory_rows(name, args.threads, args.activation)
            print(rows[-1], flush=True)
        lines += rows
    lines.append(f"load average at the end {os.getloadavg()[0]:.2f}")
    print("\n=== summary ===\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
