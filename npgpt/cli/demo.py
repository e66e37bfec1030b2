"""What `make train` runs: prepare the offline stdlib corpus, train a small char model, print a sample.

About 3 minutes on 2 CPU cores: 4 layers, 4 heads, 128 wide, block 64, batch 12, 2500 steps.
Everything lands under ./out (out/demo-data, out/demo); nothing needs the network.

Run again, it never starts over: when out/demo holds a run, the demo continues it (up to the 2500
steps, or --max-iters; a run already past that is kept as it is and only sampled). To start over,
remove out/demo or train into it with `npgpt train ... --overwrite`.
"""

from __future__ import annotations

import os
import sys

from ..data.tokens import prepare
from ..generation.sample import sample
from ..training.checkpoint import LATEST, load_checkpoint
from ..training.config import TrainConfig
from ..training.loop import train

DEMO = dict(
    n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0,
    max_iters=2500, lr=1e-3, min_lr=1e-4, warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
    eval_interval=250, eval_iters=40, log_interval=10,
)


def _command() -> str:
    """How to spell the npgpt command from here: .venv/bin/npgpt when it lives in a virtual
    environment that is not active (what `make train` leaves), else npgpt."""
    script = os.path.join(os.path.dirname(sys.executable), "npgpt")
    if not os.path.isfile(script) or os.environ.get("VIRTUAL_ENV") == sys.prefix:
        return "npgpt"
    rel = os.path.relpath(script)
    return rel if not rel.startswith("..") else script


def run_demo(root: str = "out", max_iters: int | None = None, log=print) -> int:
    data_dir, out_dir = os.path.join(root, "demo-data"), os.path.join(root, "demo")
    log("== npgpt demo: a character-level GPT on the Python standard library's own source ==")
    prepare("stdlib", data_dir, log=log)
    overrides = {} if max_iters is None else {"max_iters": max_iters, "warmup_iters": min(100, max_iters)}
    settings = {**DEMO, **overrides}
    init = "scratch"
    if os.path.isfile(os.path.join(out_dir, LATEST)):  # a second `make train`: continue, never wipe
        done = load_checkpoint(out_dir, prefer=LATEST).iter_num
        settings["max_iters"] = max(settings["max_iters"], done)
        init = "resume"
        log(f"{out_dir} already holds a run at step {done}: continuing it to step {settings['max_iters']} "
            f"(to start over, remove {out_dir})")
    cfg = TrainConfig.from_values({**settings, "out_dir": out_dir, "data_dir": data_dir, "init_from": init})
    result = train(cfg, log=log)
    if result.interrupted:
        return 130
    if result.best_val_loss is None:
        log(f"\n(no evaluation ran, so no best checkpoint to sample from in {out_dir})")
        return 0
    log(f"\n== a sample from {out_dir} (best val loss {result.best_val_loss:.3f}) ==")
    log(sample(out_dir, prompt="def ", max_new_tokens=400, temperature=0.8, top_k=200, seed=0)[0])
    npgpt = _command()
    log("\n== next ==" + (f"  (the npgpt command is in {os.path.dirname(npgpt)}: run it as below, or "
                           f"`source {os.path.dirname(os.path.dirname(npgpt))}/bin/activate` first)" if npgpt != "npgpt" else "") + "\n"
        f"  {npgpt} sample {out_dir} --prompt 'class ' --num-samples 3\n"
        f"  {npgpt} train --init-from resume --out-dir {out_dir} --max-iters 4000   # keep training\n"
        f"  {npgpt} plot {out_dir}                                                # {out_dir}/loss.png")
    return 0
