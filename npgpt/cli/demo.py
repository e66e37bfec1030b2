"""What `make train` runs: prepare the offline stdlib corpus, train a small char model, print a sample.

About 3 minutes on 2 CPU cores: 4 layers, 4 heads, 128 wide, block 64, batch 12, 2500 steps.
Everything lands under ./out (out/demo-data, out/demo); nothing needs the network.
"""

from __future__ import annotations

import os

from ..data.tokens import prepare
from ..generation.loading import sample
from ..training.config import TrainConfig
from ..training.loop import train

DEMO = dict(
    n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0,
    max_iters=2500, lr=1e-3, min_lr=1e-4, warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
    eval_interval=250, eval_iters=40, log_interval=10,
)


def run_demo(root: str = "out", max_iters: int | None = None, log=print) -> int:
    data_dir, out_dir = os.path.join(root, "demo-data"), os.path.join(root, "demo")
    log("== npgpt demo: a character-level GPT on the Python standard library's own source ==")
    prepare("stdlib", data_dir, log=log)
    overrides = {} if max_iters is None else {"max_iters": max_iters, "warmup_iters": min(100, max_iters)}
    cfg = TrainConfig.from_values({**DEMO, **overrides, "out_dir": out_dir, "data_dir": data_dir})
    result = train(cfg, log=log)
    if result.interrupted:
        return 130
    if result.best_val_loss is None:
        log(f"\n(no evaluation ran, so no best checkpoint to sample from in {out_dir})")
        return 0
    log(f"\n== a sample from {out_dir} (best val loss {result.best_val_loss:.3f}) ==")
    log(sample(out_dir, prompt="def ", max_new_tokens=400, temperature=0.8, top_k=200, seed=0)[0])
    log("\n== next ==\n"
        f"  python -m npgpt.cli sample {out_dir} --prompt 'class ' --num-samples 3\n"
        f"  python -m npgpt.cli train --init-from resume --out-dir {out_dir} --max-iters 4000   # keep training\n"
        f"  python -m npgpt.cli plot {out_dir}                                                # {out_dir}/loss.png")
    return 0
