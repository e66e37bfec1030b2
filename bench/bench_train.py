"""npgpt vs a nanoGPT-style PyTorch GPT (or, --arch llama, transformers' LlamaForCausalLM): training step,
eval forward, where npgpt's time goes, peak memory.

--arch llama races npgpt's Llama block (RMSNorm, SwiGLU MLP, RoPE, grouped-query attention with half
as many key/value heads as heads, tied head, no biases) against transformers.LlamaForCausalLM built
from the same config (float32, attn_implementation="sdpa"), holding npgpt's weights; its loss is
F.cross_entropy on its logits against the same targets (what npgpt computes). Peak memory is measured
for --arch gpt2 only.

The baseline is reference/nanogpt.py (SDPA attention, F.gelu, F.layer_norm, F.cross_entropy,
torch.optim.AdamW): the model nanoGPT's users run, loaded with npgpt's weights. Per config:
  train step = zero_grad, forward with targets, backward, clip_grad_norm(1.0), AdamW step
               (npgpt.optim's AdamW vs torch.optim.AdamW, nanoGPT's groups, the same hyperparameters)
  eval fwd   = forward with targets in eval mode under no_grad (what estimate_loss runs)

Each framework runs in a process of its own (a child of this script, `--child`), at 1 and then at
2 threads (BLAS, torch's intra-op pool, npgpt's pool), so neither library's threads spin while the
other works. The processes alternate, npgpt, torch, npgpt, torch, ... (`--rounds`), so a busy
machine slows both alike; a cell is the best over rounds of each process's median step. Ratios
(PyTorch's time over npgpt's: > 1 means npgpt is faster) come last.

FLOP per training step = tokens * (6 N + 12 L C T): N the parameters taking part in matmuls (all
but wpe), 12 L C T for attention's two T x T products over the full square (nanoGPT's estimate_mfu).
An eval forward counts a third of that. "of peak" divides achieved FLOP/s by the best FLOP/s of a
2048^3 float32 NumPy matmul at any thread count, measured in the same run (before and after the
races). "2nd core" is a framework's 1-thread time over its 2-thread time.

"exact / tanh GELU" (--arch gpt2): one more npgpt process builds the model twice, with the exact and
with the tanh GELU, and alternates their train steps, so the ratio of the two medians is measured on
the same machine at the same moments (what "the exact GELU within 5% of the tanh GELU" asks).

"BLAS only": the step's matrix products (step_products: each weight's three, attention's six
per head) called one after another with nothing else, in NumPy (the BLAS npgpt calls) and in torch
(its own), each in a process of its own: the floor under each framework's step on this machine. Its
fraction of peak is the most a NumPy step can reach here; its torch/npgpt ratio is how much of the
gap is the BLAS rather than npgpt's own work.

Breakdown: one more npgpt process per thread count times every Function subclass's forward and
backward (a timer wrapped around them by this script only; npgpt itself carries none), plus
clip_grad_norm and AdamW's step; "rest" is the step minus all of those (graph walk, Python).

Peak memory: each framework in a fresh process of its own (bench/peak_memory.py) builds the model,
resets the kernel's peak-RSS mark, runs 3 training steps, and reports peak RSS minus the RSS after
building the model.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_train.py   # ~8 min on 2 idle cores
    python bench/bench_train.py --config small --steps 20 --dtypes float32
    python bench/bench_train.py --device cuda         # PyTorch on CUDA vs npgpt on CuPy
    python bench/bench_train.py --profile             # cProfile one npgpt train step and eval forward
    python bench/bench_train.py --arch llama --dtypes float32 --no-breakdown   # vs LlamaForCausalLM

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some machines for old OpenBLAS builds) should be
unset for this command alone; the header prints the BLAS kernel actually in use (threadpoolctl).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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
    """Which BLAS NumPy runs, its kernel (OpenBLAS's corename, via threadpoolctl) and thread count."""
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415
    except ImportError:
        info = []
    else:
        info = [d for d in threadpool_info() if d.get("user_api") == "blas" and "numpy" in d.get("filepath", "")]
    kernel = ", ".join(f"{d.get('internal_api')} {d.get('version')} kernel {d.get('architecture')}" for d in info) or "unknown"
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return (f"NumPy {np.__version__}, {kernel}, {parallel.blas_threads()} threads by default, "
            f"OpenBLAS env {env or 'clean'}")


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
    ap.add_argument("--steps", type=int, help="timed steps per process and thread count (default per config)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first, at each thread count")
    ap.add_argument("--rounds", type=int, default=2, help="processes per framework, alternating (default 2)")
    ap.add_argument("--threads", default="1,2", help="thread counts to try, comma-separated (default 1,2)")
    ap.add_argument("--dtypes", default="float32,float64", help="float32 rows, and float64 train-step rows")
    ap.add_argument("--activation", choices=("gelu_tanh", "gelu"), default="gelu_tanh")
    ap.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2",
                    help="gpt2: vs reference/nanogpt.py; llama: vs transformers' LlamaForCausalLM")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--no-breakdown", action="store_true", help="skip npgpt's per-op time breakdown")
    ap.add_argument("--profile", action="store_true", help="cProfile one npgpt train step and eval forward per config")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # JSON job of one child process
    return ap.parse_args(argv)


def gpt_config(spec: dict, activation: str, arch: str = "gpt2") -> GPTConfig:
    shape = dict(vocab_size=VOCAB, block_size=spec["block_size"], n_layer=spec["n_layer"], n_head=spec["n_head"],
                 n_embd=spec["n_embd"])
    if arch == "llama":  # GQA with half the heads for keys and values; tied head as the GPT-2 rows
        return GPTConfig.for_arch("llama", **shape, n_kv_head=spec["n_head"] // 2, tie_embeddings=True)
    return GPTConfig(**shape, activation=activation)


def batches(spec: dict, n: int = 4):
    g = np.random.default_rng(0)
    B, T = spec["batch"], spec["block_size"]
    return [(g.integers(0, VOCAB, (B, T)), g.integers(0, VOCAB, (B, T))) for _ in range(n)]


# --- the two frameworks, each as (train_step(i), eval_forward(i), sync) -----------------------
def npgpt_runner(cfg: GPTConfig, data, device: str, dtype: str = "float32", hooks=None):
    from npgpt.process import keep_freed_memory  # noqa: PLC0415 - as `npgpt train` does before it trains

    keep_freed_memory()
    model = GPT(cfg, seed=0, dtype=dtype, device=device)
    opt = configure_optimizer(model, **HYPER)
    params = model.parameters()
    clip, step = clip_grad_norm, opt.step
    if hooks is not None:  # the breakdown's timers around the two calls outside the graph
        clip, step = hooks("clip_grad_norm", clip_grad_norm), hooks("AdamW.step", opt.step)

    def train_step(i):
        x, y = data[i % len(data)]
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        clip(params, 1.0)
        step()
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


def hf_llama(cfg: GPTConfig, device: str, weights, dtype: str):
    """transformers' LlamaForCausalLM of cfg (SDPA) holding npgpt's weights; forward(x, y) -> (logits, loss)."""
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    from npgpt.models import hf_llama as mapping  # noqa: PLC0415

    d = mapping.config_to_hf(cfg, dtype)
    d = {k: v for k, v in d.items() if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**d, attn_implementation="sdpa"))
    hf = hf.to(device=device, dtype=getattr(torch, dtype))
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in mapping.state_to_hf(weights, cfg).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # tied

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, x, y):
            logits = self.hf(x).logits
            return logits, torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    return Model()


def torch_runner(cfg: GPTConfig, data, device: str, weights, dtype: str = "float32"):
    import torch  # noqa: PLC0415

    from reference.nanogpt import NanoGPT, configure_optimizer as torch_optimizer  # noqa: PLC0415

    if cfg.layout == "llama":
        model = hf_llama(cfg, device, weights, dtype)
    else:
        model = NanoGPT(cfg, dtype=getattr(torch, dtype), device=device)
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


def flops_per_step(n_params: int, cfg: GPTConfig, B: int, T: int) -> float:
    n_mm = n_params - (cfg.block_size * cfg.n_embd if cfg.pos_encoding == "learned" else 0)
    return B * T * (6 * n_mm + 12 * cfg.n_layer * cfg.n_embd * T)


def step_products(model, cfg: GPTConfig, B: int, T: int) -> list[tuple]:
    """The matrix products of one training step, as (batch, n, k, m) for (n, k) @ (k, m): what a
    step costs if it did nothing but call the BLAS once per product. N = B T rows.
    Every 2-D weight W (k, m) that multiplies activations (all but the position table; the token
    table when it is also the head) gives x @ W (N, k, m), dx = dy @ W^T (N, m, k), dW = x^T @ dy
    (k, N, m); each layer's attention gives, per sequence and query head, S = q k^T (T, HS, T) and
    Y = P v (T, T, HS) forward, dP = dY v^T, dv = P^T dY, dq = dS k, dk = dS^T q backward (the
    full T x T square, as flops_per_step counts it)."""
    N, out = B * T, []
    for name, p in model.named_parameters():
        if p.data.ndim != 2 or name.endswith(("wpe.weight",)):
            continue
        if name.endswith(("wte.weight", "embed_tokens.weight")):
            if not cfg.tie_embeddings:
                continue  # a lookup only; the separate head is a parameter of its own
            k, m = p.data.shape[1], p.data.shape[0]  # logits = x @ wte^T
        else:
            k, m = p.data.shape
        out += [(1, N, k, m), (1, N, m, k), (1, k, N, m)]
    HS, BH = cfg.head_size, B * cfg.n_head
    for _ in range(cfg.n_layer):
        out += [(BH, T, HS, T), (BH, T, T, HS)] + [(BH, T, HS, T), (BH, T, T, HS), (BH, T, T, HS), (BH, T, T, HS)]
    return out


def time_products(products: list[tuple], dtype: str, framework: str, threads: list, repeats: int = 5) -> dict:
    """{threads: seconds} for all `products` one after another (fresh outputs, as an op allocates
    them), best of `repeats` passes, in NumPy (its BLAS) or torch (its own)."""
    g = np.random.default_rng(0)

    def operand(b, *shape):  # a (rows, cols) matrix, or a stack of b of them
        return g.standard_normal((b, *shape) if b > 1 else shape).astype(dtype)

    pairs = [(operand(b, n, k), operand(b, k, m)) for b, n, k, m in products]
    mm = np.matmul
    if framework == "torch":
        import torch  # noqa: PLC0415

        pairs = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in pairs]
        mm = torch.matmul
    out = {}
    for th in threads:
        set_threads(th)
        best = float("inf")
        for _ in range(repeats + 1):  # the first pass warms the BLAS's threads and buffers
            t0 = time.perf_counter()
            for a, b in pairs:
                mm(a, b)
            best = min(best, time.perf_counter() - t0)
        out[th] = best
    return out


class OpTimer:
    """Seconds per (Function class, forward/backward), by wrapping every Function subclass's
    methods in this process (the bench's own instrument; npgpt carries no timer)."""

    def __init__(self):
        from npgpt.function import Function  # noqa: PLC0415

        self.t: dict[str, float] = {}
        todo, seen = list(Function.__subclasses__()), set()
        while todo:
            cls = todo.pop()
            if cls in seen:
                continue
            seen.add(cls)
            todo += cls.__subclasses__()
            for meth in ("forward", "backward"):
                if meth in cls.__dict__:
                    setattr(cls, meth, self.wrap(f"{cls.__name__}.{meth}", cls.__dict__[meth]))

    def wrap(self, key, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[key] = self.t.get(key, 0.0) + time.perf_counter() - t0
        return timed


def child(job: dict) -> dict:
    """One framework's races (or npgpt's breakdown) in this process; the result as a dict."""
    spec = CONFIGS[job["config"]]
    cfg = gpt_config(spec, job["activation"], job.get("arch", "gpt2"))
    if job["kind"] == "gelu":
        return gelu_cost(spec, job["threads"], job["steps"], job["warmup"])
    if job["kind"] == "products":
        products = step_products(GPT(cfg, seed=0), cfg, spec["batch"], spec["block_size"])
        times = time_products(products, job["dtype"], job["framework"], job["threads"])
        return {"flops": sum(2 * b * n * k * m for b, n, k, m in products), **{str(th): t for th, t in times.items()}}
    data = batches(spec)
    timer = OpTimer() if job["kind"] == "breakdown" else None
    model, *fns = npgpt_runner(cfg, data, job["device"], job["dtype"], hooks=timer and timer.wrap)
    n_params = model.num_params()
    if job["framework"] == "torch":
        weights = {k: v.copy() for k, v in model.state_dict().items()}
        del model, fns
        _, *fns = torch_runner(cfg, data, job["device"], weights, job["dtype"])
    out = {"n_params": n_params}
    rows = ("train",) if job["kind"] == "breakdown" or job["dtype"] != "float32" else ("train", "eval")
    for th in job["threads"]:
        set_threads(th)
        for row in rows:
            fn = fns[0] if row == "train" else fns[1]
            times = []
            for i in range(job["warmup"] + job["steps"]):
                if timer is not None and i == job["warmup"]:
                    timer.t.clear()
                dt = _timed(lambda: fn(i), fns[2])
                if i >= job["warmup"]:
                    times.append(dt)
            out[f"{row} {th}"] = statistics.median(times)
            if timer is not None:
                out[f"ops {th}"] = {k: v / job["steps"] for k, v in timer.t.items()}
                out[f"mean {th}"] = statistics.fmean(times)
    return out


def run_child(job: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"child {job} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_config(name: str, spec: dict, args, threads: list) -> tuple[list[str], list[tuple]]:
    """The table rows, and (config, row, FLOP, npgpt's best s, torch's best s) for the last lines."""
    cfg = gpt_config(spec, args.activation, args.arch)
    B, T = spec["batch"], spec["block_size"]
    steps = args.steps or spec["steps"]
    lines = [f"\n{name}: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, block {T}, batch {B}, "
             f"vocab {VOCAB}, {cfg.activation}, {args.arch}"
             + (f" (vs transformers' LlamaForCausalLM, SDPA; {cfg.n_kv_head} kv heads)" if args.arch == "llama" else "")
             + f"; best of {args.rounds} processes' median of {steps} steps "
             f"(+{args.warmup} warmup) per cell"]
    head = "  ".join(f"{fw} {th}T".rjust(10) for fw in ("npgpt", "torch") for th in threads)
    lines.append(f"  {'row':<19} {head}   npgpt 2nd core  torch 2nd core   load")
    print("\n".join(lines), flush=True)
    ratios = []
    for dtype in args.dtypes.split(","):
        res = {"npgpt": [], "torch": []}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for fw in ("npgpt", "torch"):
                job = dict(kind="race", framework=fw, config=name, dtype=dtype, activation=args.activation,
                           arch=args.arch, device=args.device, threads=threads, steps=steps, warmup=args.warmup)
                res[fw].append(run_child(job))
        n_params = res["npgpt"][0]["n_params"]
        flops = flops_per_step(n_params, cfg, B, T)
        for row in ("train", "eval") if dtype == "float32" else ("train",):
            med = {(fw, th): min(r[f"{row} {th}"] for r in res[fw]) for fw in res for th in threads}
            cells = "  ".join(f"{med[(fw, th)] * 1e3:>7.1f} ms" for fw in ("npgpt", "torch") for th in threads)
            best = {fw: min(med[(fw, th)] for th in threads) for fw in res}
            gain = {fw: med[(fw, threads[0])] / med[(fw, threads[-1])] for fw in res}  # 1T time / 2T time
            label = f"{'train step' if row == 'train' else 'eval fwd'} {dtype}"
            lines.append(f"  {label:<19} {cells}   {gain['npgpt']:>13.2f}x {gain['torch']:>14.2f}x"
                         f"   {load:.2f}-{os.getloadavg()[0]:.2f}")
            ratios.append((name, label, flops if row == "train" else flops / 3, best["npgpt"], best["torch"]))
            print(lines[-1], flush=True)
        if args.device == "cpu":
            row, floor = products_row(name, args, threads, dtype)
            lines.append(row)
            ratios.append(floor)
            print(lines[-1], flush=True)
    if args.device == "cpu" and args.arch == "gpt2":
        lines.append(gelu_row(name, args, threads, steps))
        print(lines[-1], flush=True)
    if not args.no_breakdown and args.device == "cpu":
        lines += breakdown(name, args, threads, steps)
    if args.profile:
        profile(name, args)
    return lines, ratios


def gelu_cost(spec: dict, threads: list, steps: int, warmup: int) -> dict:
    """Median float32 train step of an exact-GELU and a tanh-GELU npgpt model of the same shape in
    this one process, their steps alternating (so both see the same machine), at each thread count."""
    data = batches(spec)
    runs = {act: npgpt_runner(gpt_config(spec, act), data, "cpu")[1] for act in ("gelu", "gelu_tanh")}
    out = {}
    for th in threads:
        set_threads(th)
        times = {act: [] for act in runs}
        for i in range(warmup + steps):
            for act, step in runs.items():
                dt = _timed(lambda: step(i))
                if i >= warmup:
                    times[act].append(dt)
        out[str(th)] = {act: statistics.median(v) for act, v in times.items()}
    return out


def gelu_row(name: str, args, threads: list, steps: int) -> str:
    """Exact GELU's train step over the tanh GELU's (gelu_cost; the issue's target: within 5%)."""
    job = dict(kind="gelu", framework="npgpt", config=name, dtype="float32", activation="gelu", arch="gpt2",
               device="cpu", threads=threads, steps=steps, warmup=args.warmup)
    r = run_child(job)
    cells = ", ".join(f"{th}T {r[str(th)]['gelu'] * 1e3:.1f} / {r[str(th)]['gelu_tanh'] * 1e3:.1f} ms = "
                      f"{r[str(th)]['gelu'] / r[str(th)]['gelu_tanh']:.3f}" for th in threads)
    return f"  npgpt exact / tanh GELU train step (one process, steps alternating): {cells}"


def products_row(name: str, args, threads: list, dtype: str) -> tuple[str, tuple]:
    """The train step's matrix products alone (step_products), NumPy's BLAS and torch's, each in a
    process of its own: the floor under each framework's train step row on this machine. Returns
    the table row and its (config, row, FLOP, NumPy's best s, torch's best s) for the last lines."""
    t = {}
    for fw in ("npgpt", "torch"):
        job = dict(kind="products", framework=fw, config=name, dtype=dtype, activation=args.activation,
                   arch=args.arch, device="cpu", threads=threads)
        t[fw] = run_child(job)
    cells = "  ".join(f"{t[fw][str(th)] * 1e3:>7.1f} ms" for fw in ("npgpt", "torch") for th in threads)
    gain = {fw: t[fw][str(threads[0])] / t[fw][str(threads[-1])] for fw in t}
    label = f"BLAS only {dtype}"
    best = {fw: min(t[fw][str(th)] for th in threads) for fw in t}
    row = f"  {label:<19} {cells}   {gain['npgpt']:>13.2f}x {gain['torch']:>14.2f}x   (NumPy's BLAS | torch's)"
    return row, (name, label, t["npgpt"]["flops"], best["npgpt"], best["torch"])


def family(key: str) -> str:
    """An op family's name for a Function method's key: 'Attention.backward' -> 'Attention'."""
    return key.rsplit(".", 1)[0] if key.endswith((".forward", ".backward")) else key


def breakdown(name: str, args, threads: list, steps: int) -> list[str]:
    """npgpt's float32 train step split by op family, forward | backward, ms per step."""
    per = {}
    for th in threads:
        job = dict(kind="breakdown", framework="npgpt", config=name, dtype="float32", activation=args.activation,
                   arch=args.arch, device="cpu", threads=[th], steps=steps, warmup=args.warmup)
        per[th] = run_child(job)
    keys = sorted({family(k) for th in threads for k in per[th][f"ops {th}"]},
                  key=lambda f: -sum(v for k, v in per[threads[-1]][f"ops {threads[-1]}"].items() if family(k) == f))
    cols = "  ".join(f"{f'{th}T fwd | bwd':>19}" for th in threads)
    lines = [f"  npgpt float32 train step by op family (ms per step; {steps} steps, timers on; load "
             f"{os.getloadavg()[0]:.2f}):", f"    {'family':<16} {cols}"]
    for fam in keys:
        cells = []
        for th in threads:
            t = per[th][f"ops {th}"]
            fw, bw = t.get(f"{fam}.forward"), t.get(f"{fam}.backward")
            if fw is None and bw is None:
                cells.append(f"{t.get(fam, 0.0) * 1e3:>19.1f}")
            else:
                cells.append(f"{(fw or 0) * 1e3:>9.1f} | {(bw or 0) * 1e3:>7.1f}")
        lines.append(f"    {fam:<16} " + "  ".join(cells))
    rest = [per[th][f"mean {th}"] - sum(per[th][f"ops {th}"].values()) for th in threads]
    lines.append(f"    {'rest (graph)':<16} " + "  ".join(f"{r * 1e3:>19.1f}" for r in rest))
    lines.append(f"    {'step (mean)':<16} " + "  ".join(f"{per[th][f'mean {th}'] * 1e3:>19.1f}" for th in threads))
    print("\n".join(lines), flush=True)
    return lines


def profile(name: str, args) -> None:
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    spec = CONFIGS[name]
    _, *np_fns = npgpt_runner(gpt_config(spec, args.activation, args.arch), batches(spec), args.device)
    for fn, what in ((np_fns[0], "train step"), (np_fns[1], "eval forward")):
        fn(0)
        pr = cProfile.Profile()
        pr.enable()
        fn(1)
        pr.disable()
        print(f"\ncProfile of one npgpt {what} ({name}), top 20 by own time:")
        pstats.Stats(pr).sort_stats("tottime").print_stats(20)


def main(argv=None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    names = list(CONFIGS) if args.config == "all" else [args.config]
    threads = [int(t) for t in args.threads.split(",")] if args.device == "cpu" else [None]
    lines, ratios = [], []
    peaks = {}
    if args.device == "cpu":
        peaks = matmul_peak(threads)
        lines.append(f"BLAS: {blas_info()}; load average {os.getloadavg()[0]:.2f}")
        lines.append("float32 matmul 2048^3 (NumPy), before the races: "
                     + ", ".join(f"{p / 1e9:.1f} GFLOP/s at {t}T" for t, p in peaks.items()))
    print("\n".join(lines), flush=True)
    peak = max(peaks.values()) if peaks else None
    for name in names:
        rows, r = bench_config(name, CONFIGS[name], args, threads)
        if args.device == "cpu" and not args.no_memory and args.arch == "gpt2":
            rows += memory_rows(name, args.threads, args.activation)
            print(rows[-1], flush=True)
        lines += rows
        ratios += r
    if args.device == "cpu":
        after = matmul_peak(threads)
        peak = max(peak, *after.values())
        lines.append("\nfloat32 matmul 2048^3 (NumPy), after the races: "
                     + ", ".join(f"{p / 1e9:.1f} GFLOP/s at {t}T" for t, p in after.items())
                     + f"; peak = the best of before and after, {peak / 1e9:.1f} GFLOP/s")
    lines.append(f"load average at the end {os.getloadavg()[0]:.2f}")
    last = [f"  {'config':<6} {'row':<19} {'torch/npgpt':>11}   {'of float32 peak: npgpt / torch':>30}"]
    for name, label, flops, t_np, t_torch in ratios:
        frac = "" if peak is None else f"{flops / t_np / peak:>6.1%} / {flops / t_torch / peak:>6.1%}"
        last.append(f"  {name:<6} {label:<19} {t_torch / t_np:>11.2f}   {frac:>30}")
    print("\n=== summary ===\n" + "\n".join(lines) + "\n\nratios, best vs best (> 1: npgpt faster), and the "
          "fraction of the matmul peak:\n" + "\n".join(last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
