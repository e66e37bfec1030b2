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
    if ARGS.only in (None, "torch"):
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
