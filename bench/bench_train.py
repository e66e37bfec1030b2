"""Training-step throughput: npgpt vs its PyTorch twin, same config, float32, batch and threads.

One step = forward + backward + AdamW step (+ clipping at 1.0, as a training loop does). The two
frameworks alternate step by step after their warmup steps, so a busy machine slows both alike.

Reported per framework: median step time, tokens/s, and achieved FLOP/s with
    flops per step = tokens * (6 * N + 12 * n_layer * n_embd * T)
N = parameters that take part in matmuls (all but wpe; the tied wte counts once, for the head),
12 * L * C * T = attention's q@k^T and att@v, forward (4 L C T per token) and backward (twice that),
counted over the full T x T square as nanoGPT's estimate_mfu does. The fraction is against the
FLOP/s of one large float32 matmul (2048^3, NumPy) measured in the same run and thread count.

    python bench/bench_train.py                    # both configs, defaults (~2-3 min on 2 cores)
    python bench/bench_train.py --config cpu --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys

CONFIGS = {
    # nanoGPT's CPU recipe for shakespeare_char
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12, steps=10),
    # nanoGPT's "baby GPT" for shakespeare_char
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=16, steps=5),
}


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per framework (default per config)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per framework first")
    ap.add_argument("--threads", type=int, default=None, help="BLAS/torch threads (default: NumPy's BLAS default)")
    ap.add_argument("--profile", action="store_true", help="cProfile one npgpt step and print the top entries")
    return ap.parse_args()


ARGS = parse()
if ARGS.threads is not None:  # before NumPy loads OpenBLAS
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ctypes  # noqa: E402
import glob  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from npgpt import GPT, GPTConfig  # noqa: E402
from npgpt.optim import clip_grad_norm, configure_optimizer  # noqa: E402
from reference.model import TorchGPT  # noqa: E402
from reference.train import make_optimizer  # noqa: E402


def blas_threads() -> int:
    """OpenBLAS's thread count as NumPy uses it (asked from the library itself), else a best guess."""
    here = os.path.dirname(np.__file__)
    for lib in glob.glob(os.path.join(here, "..", "numpy.libs", "*openblas*")) + glob.glob(
            os.path.join(here, "..", "scipy_openblas*", "lib", "*.so*")):
        try:
            dll = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(dll, sym):
                return int(getattr(dll, sym)())
    return ARGS.threads or os.cpu_count() or 1


def matmul_flops(threads: int) -> float:
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def bench(name: str, spec: dict, steps: int, warmup: int, peak: float):
    cfg = GPTConfig(vocab_size=65, block_size=spec["block_size"], n_layer=spec["n_layer"], n_head=spec["n_head"],
                    n_embd=spec["n_embd"])
    B, T = spec["batch"], spec["block_size"]
    model = GPT(cfg, seed=0, dtype="float32")
    twin = TorchGPT(cfg, dtype=torch.float32)
    twin.load_from_npgpt(model.state_dict())
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    topt = make_optimizer(twin, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    g = np.random.default_rng(0)
    data = [(g.integers(0, 65, (B, T)), g.integers(0, 65, (B, T))) for _ in range(4)]

    def np_step(i):
        x, y = data[i % len(data)]
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        return loss

    def torch_step(i):
        x, y = data[i % len(data)]
        topt.zero_grad(set_to_none=True)
        _, loss = twin(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0)
        topt.step()
        return loss

    for i in range(warmup):
        np_step(i)
        torch_step(i)
    times = {"npgpt": [], "torch": []}
    for i in range(steps):
        for fw, fn in (("npgpt", np_step), ("torch", torch_step)):
            t0 = time.perf_counter()
            loss = fn(i)
            times[fw].append(time.perf_counter() - t0)
        assert loss.dtype in (np.float32, torch.float32), f"{fw} loss dtype {loss.dtype}"
    for n, p in model.named_parameters():
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32, f"{n} left float32"

    n_mm = model.num_params() - (cfg.block_size * cfg.n_embd if cfg.pos_encoding == "learned" else 0)
    flops = B * T * (6 * n_mm + 12 * cfg.n_layer * cfg.n_embd * T)
    rows = []
    for fw in ("npgpt", "torch"):
        med = statistics.median(times[fw])
        rows.append((fw, med, B * T / med, flops / med))
    print(f"\n{name}: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, block {T}, batch {B}, vocab 65, "
          f"{model.num_params() / 1e6:.2f}M params, {steps} timed steps (+{warmup} warmup) each")
    print(f"  {'framework':<9} {'step (ms)':>10} {'tokens/s':>10} {'GFLOP/s':>9} {'of matmul':>10}")
    for fw, med, tps, fl in rows:
        print(f"  {fw:<9} {med * 1e3:>10.1f} {tps:>10.0f} {fl / 1e9:>9.1f} {fl / peak:>9.1%}")
    print(f"  npgpt / torch tokens/s: {rows[0][2] / rows[1][2]:.2f}")
    return model, np_step


def main():
    threads = blas_threads()
    torch.set_num_threads(threads)
    peak = matmul_flops(threads)
    print(f"threads: NumPy BLAS {threads}, torch {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}")
    print(f"float32 matmul 2048^3 (NumPy): {peak / 1e9:.1f} GFLOP/s")
    print("FLOP/step = tokens * (6 * N_matmul_params + 12 * n_layer * n_embd * T)")
    names = list(CONFIGS) if ARGS.config == "all" else [ARGS.config]
    for name in names:
        spec = CONFIGS[name]
        model, np_step = bench(name, spec, ARGS.steps or spec["steps"], ARGS.warmup, peak)
        if ARGS.profile:
            import cProfile  # noqa: PLC0415
            import pstats  # noqa: PLC0415

            pr = cProfile.Profile()
            pr.enable()
            np_step(0)
            pr.disable()
            print(f"\ncProfile of one npgpt step ({name}), top 15 by total time:")
            pstats.Stats(pr).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
