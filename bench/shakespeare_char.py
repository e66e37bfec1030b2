"""nanoGPT's CPU recipe on Tiny Shakespeare, through npgpt and through its PyTorch twin.

Recipe (nanoGPT's config/train_shakespeare_char.py, CPU variant): char tokenizer, 4 layers, 4 heads,
128 wide, no biases (nanoGPT's default bias=False), exact GELU (nanoGPT's nn.GELU()), block 64,
batch 12, 2000 steps, lr 1e-3 with 100 warmup steps and a cosine to 1e-4 at 2000, AdamW beta2 0.99,
weight decay 0.1, clip 1.0, dropout 0, eval every 250 steps on 200 batches. nanoGPT reports val loss 1.88 for it.

Both runs start from the same weights (npgpt's init, copied into the twin), see the same batches
(the same seeded sampler over the same token file) and the same eval batches, in float32 on this
machine; each prints its evals, then both final val losses and wall times.

    python bench/shakespeare_char.py                      # the full recipe (npgpt ~3 min, torch ~2 min on 2 idle cores)
    python bench/shakespeare_char.py --max-iters 50 --eval-iters 5    # a smoke run
    python bench/shakespeare_char.py --nanogpt /tmp/nanogpt --eval-iters 20   # against nanoGPT's own train.py

--nanogpt PATH races nanoGPT's own train.py instead of the twin: a checkout of
https://github.com/karpathy/nanoGPT kept outside this repository (`git clone
https://github.com/karpathy/nanoGPT /tmp/nanogpt`; nothing of it is copied here). It runs the README's
CPU command (config/train_shakespeare_char.py --device=cpu --compile=False, 4L/128, block 64, batch 12,
dropout 0, --dtype=float32) as a child process on the very bins npgpt trains on (train.bin and val.bin,
uint16 in both, plus the meta.pkl with vocab_size that train.py reads, in a nanoGPT-layout copy under
--out); its batches are its own (torch.randint). Wall time counts from its first eval line (after
imports, as npgpt's counts from train()); the process's whole wall time is printed too.
The text comes from --data-path, $NPGPT_DATA, ../shared/data/tinyshakespeare.txt, or a checked download.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-iters", type=int, default=2000, help="steps (the cosine ends here too; default 2000)")
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--eval-iters", type=int, default=200)
    ap.add_argument("--data-path", help="tinyshakespeare.txt or a directory holding it")
    ap.add_argument("--out", default=os.path.join("out", "bench-shakespeare"), help="working directory (default out/bench-shakespeare)")
    ap.add_argument("--threads", type=int, help="BLAS and torch threads (default: each library's own)")
    ap.add_argument("--only", choices=("npgpt", "torch"), help="run one side only")
    ap.add_argument("--activation", choices=("gelu", "gelu_tanh"), default="gelu",
                    help="MLP activation (default gelu, the exact erf form nanoGPT's nn.GELU() uses)")
    ap.add_argument("--seed", type=int, default=1337, help="initial weights and batch order (default 1337, nanoGPT's)")
    ap.add_argument("--twin", choices=("nanogpt", "primitives"), default="nanogpt",
                    help="the PyTorch side: reference/nanogpt.py, written as people write it (SDPA, F.gelu, "
                         "torch AdamW; default), or reference/model.py, the op-by-op exactness twin")
    ap.add_argument("--nanogpt", metavar="PATH", help="a nanoGPT checkout: race its own train.py (see above) instead of --twin")
    return ap.parse_args()


ARGS = parse()
if ARGS.threads is not None:  # before NumPy loads OpenBLAS
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
sys.path.insert(0, ROOT)

import time  # noqa: E402

import numpy as np  # noqa: E402

from npgpt.data.tokens import TokenData, prepare  # noqa: E402
from npgpt.models.gpt import GPT  # noqa: E402
from npgpt.training.loop import TrainConfig, train  # noqa: E402

SHARED = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")


def recipe(data_dir: str, out_dir: str) -> TrainConfig:
    warmup = min(100, ARGS.max_iters)
    return TrainConfig.from_values(dict(
        out_dir=out_dir, data_dir=data_dir, n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12,
        dropout=0.0, bias=False, activation=ARGS.activation, max_iters=ARGS.max_iters, lr=1e-3, min_lr=1e-4, warmup_iters=warmup,
        lr_decay_iters=max(ARGS.max_iters, warmup), beta2=0.99, weight_decay=0.1, grad_clip=1.0,
        eval_interval=ARGS.eval_interval, eval_iters=ARGS.eval_iters, log_interval=50, seed=ARGS.seed,
        plot=False,  # the PyTorch side draws nothing: the wall times compare training and evals only
    ))


def run_torch(cfg: TrainConfig, data: TokenData) -> tuple[float, float]:
    """The same recipe through reference/ (--twin: the nanoGPT-style model with nanoGPT's AdamW
    groups, or the primitives twin) and torch.optim.AdamW: (final val loss, seconds)."""
    import torch  # noqa: PLC0415

    from reference.train import make_optimizer, train_step  # noqa: PLC0415

    if ARGS.threads is not None:
        torch.set_num_threads(ARGS.threads)
    mcfg = cfg.model.with_vocab(data.vocab_size)
    weights = GPT(mcfg, seed=cfg.seed).state_dict()  # the same initial weights as npgpt's run
    if ARGS.twin == "nanogpt":
        from reference.nanogpt import NanoGPT, configure_optimizer  # noqa: PLC0415

        model = NanoGPT(mcfg, dtype=torch.float32)
        model.load_from_npgpt(weights)
        opt = configure_optimizer(model, cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
        as_input = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    else:
        from reference.model import TorchGPT  # noqa: PLC0415

        model = TorchGPT(mcfg, dtype=torch.float32)
        model.load_from_npgpt(weights)
        opt = make_optimizer(model, cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
        as_input = np.asarray
    batches = np.random.default_rng([cfg.seed, 2])  # npgpt.train's training sampler

    def batch(split, g):
        return tuple(as_input(a) for a in data.get_batch(split, cfg.batch_size, cfg.model.block_size, g))

    def evaluate(it):
        model.eval()
        out = {}
        with torch.no_grad():
            for k, split in enumerate(("train", "val")):
                g = np.random.default_rng([cfg.seed, 3, it, k])  # npgpt.train.estimate_loss's batches
                out[split] = float(np.mean([model(*batch(split, g))[1].item()
                                            for _ in range(cfg.eval_iters)]))
        model.train()
        return out

    t0 = time.perf_counter()
    last = None
    for it in range(cfg.max_iters + 1):
        if it % cfg.eval_interval == 0 or it == cfg.max_iters:
            last = evaluate(it)
            print(f"torch step {it}: train loss {last['train']:.4f}, val loss {last['val']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if it == cfg.max_iters:
            break
        micro = [batch("train", batches) for _ in range(cfg.grad_accum)]
        train_step(model, opt, micro, it, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_iters,
                   decay_iters=cfg.decay_iters, max_norm=cfg.grad_clip)
    return last["val"], time.perf_counter() - t0


def run_nanogpt(cfg: TrainConfig, data_dir: str, vocab_size: int) -> tuple[float, float]:
    """nanoGPT's own train.py on npgpt's bins, as a child process: (final val loss, seconds from its
    first eval line to its exit)."""
    import pickle  # noqa: PLC0415 - nanoGPT's train.py reads meta.pkl; only its vocab_size is written
    import re  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    repo = os.path.abspath(ARGS.nanogpt)
    if not os.path.isfile(os.path.join(repo, "train.py")) or not os.path.isfile(os.path.join(repo, "configurator.py")):
        raise SystemExit(f"--nanogpt {ARGS.nanogpt}: no nanoGPT checkout there (train.py, configurator.py); "
                         "get one with: git clone https://github.com/karpathy/nanoGPT /tmp/nanogpt")
    work = os.path.abspath(os.path.join(ARGS.out, "nanogpt"))
    name = "npgpt_shakespeare_char"
    ddir = os.path.join(work, "data", name)
    os.makedirs(ddir, exist_ok=True)
    for split in ("train.bin", "val.bin"):  # the same token ids, uint16 in both formats
        shutil.copyfile(os.path.join(data_dir, split), os.path.join(ddir, split))
    with open(os.path.join(ddir, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": vocab_size}, f)
    # train.py exec()s configurator.py and reads data/<dataset> from its working directory
    shutil.copyfile(os.path.join(repo, "configurator.py"), os.path.join(work, "configurator.py"))
    m = cfg.model
    cmd = [sys.executable, os.path.join(repo, "train.py"), os.path.join(repo, "config", "train_shakespeare_char.py"),
           "--device=cpu", "--compile=False", "--dtype=float32", f"--dataset={name}", f"--out_dir={os.path.join(work, 'out')}",
           f"--eval_iters={cfg.eval_iters}", f"--eval_interval={cfg.eval_interval}", "--log_interval=50",
           f"--block_size={m.block_size}", f"--batch_size={cfg.batch_size}", f"--n_layer={m.n_layer}", f"--n_head={m.n_head}",
           f"--n_embd={m.n_embd}", f"--max_iters={cfg.max_iters}", f"--lr_decay_iters={max(cfg.decay_iters, cfg.warmup_iters + 1)}",  # train.py divides by their difference
           f"--warmup_iters={cfg.warmup_iters}", "--dropout=0.0", "--wandb_log=False"]
    env = dict(os.environ)
    if ARGS.threads is not None:
        env["OMP_NUM_THREADS"] = str(ARGS.threads)
    t_start = time.perf_counter()
    t0, last = None, None
    with subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        tail = []
        for line in proc.stdout:
            tail = (tail + [line])[-20:]
            hit = re.match(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", line)
            if hit:
                t0 = t0 or time.perf_counter()
                last = float(hit.group(3))
                print(f"nanoGPT {line.strip()} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if proc.returncode or last is None:
        raise SystemExit(f"nanoGPT's train.py failed (exit {proc.returncode}): {' '.join(cmd)}\n{''.join(tail)}")
    end = time.perf_counter()
    print(f"nanoGPT process wall time {end - t_start:.1f} s (imports included)")
    return last, end - t0


def main() -> int:
    data_dir = os.path.join(ARGS.out, "data")
    data_path = ARGS.data_path or (None if os.environ.get("NPGPT_DATA") or not os.path.isfile(SHARED) else SHARED)
    prepare("shakespeare_char", data_dir, data_path=data_path)
    cfg = recipe(data_dir, os.path.join(ARGS.out, "npgpt"))
    data = TokenData(data_dir)
    results = {}
    if ARGS.only in (None, "npgpt"):
        t0 = time.perf_counter()
        r = train(cfg)
        results["npgpt"] = (r.last_eval["val_loss"], time.perf_counter() - t0)
    if ARGS.only in (None, "torch") and ARGS.nanogpt:
        results["nanoGPT train.py"] = run_nanogpt(cfg, data_dir, data.vocab_size)
    elif ARGS.only in (None, "torch"):
        results[f"torch {ARGS.twin}"] = run_torch(cfg, data)
    print(f"\nTiny Shakespeare, nanoGPT CPU recipe, {cfg.max_iters} steps, eval on {cfg.eval_iters} batches "
          f"(nanoGPT reports val 1.88 at 2000 steps):")
    for name, (val, secs) in results.items():
        print(f"  {name:<16} final val loss {val:.4f}   wall {secs:7.1f} s   ({secs / max(cfg.max_iters, 1) * 1000:.0f} ms/step incl. evals)")
    if len(results) == 2:
        (_, (_, a)), (_, (_, b)) = results.items()
        print(f"  npgpt / torch wall-time ratio: {a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
