"""The training loop: train(cfg) for a TrainConfig (npgpt/training/config.py), and its starts.

    it = start
    loop:
      at it % eval_interval == 0 and at it == max_iters: evaluate train and val loss (eval mode,
          no_grad, eval_iters batches from a generator seeded by (seed, it), so evaluating never
          moves the training stream); better val -> best.safetensors; always_save_checkpoint -> ckpt.safetensors
      stop at max_iters (saving ckpt.safetensors), or after Ctrl-C (saving ckpt.safetensors)
      lr = cosine_lr(it) (or lr when decay_lr is off)
      grad_accum micro-batches: loss / grad_accum, backward (gradients add up); with N ranks
          (dist.py) rank r runs micro-batches r, r + N, ... of grad_accum x N, and one Allreduce
          sums the gradients (trainstep.py says how that equals one process)
      loss or gradient norm not finite -> TrainingDiverged naming the step; the files on disk are
          the last good state
      clip the gradient norm to grad_clip (0: no clipping), AdamW step, it += 1

Randomness: weights from GPT(seed); the training batches from rng([seed, 2]); dropout masks from
model.dropout_generator. A checkpoint stores the states of both generators, so a resumed run
draws exactly the batches and masks the uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from . import dist
from ..backend import reading_is_free, select_cuda_device
from ..data.sft import open_data
from ..models.gpt import GPT
from ..process import keep_freed_memory
from .checkpoint import BEST, LATEST, load_checkpoint, save_checkpoint
from .config import TrainConfig, split_values  # noqa: F401 - TrainConfig re-exported for callers
from .lora import LoraConfig
from .optim import clip_grad_norm, configure_optimizer
from .start import start_model
from .log import NoLog, Progress, TrainLog, plot_losses, read_log  # noqa: F401 - read_log re-exported
from .replicas import check_replicas, refuse_mismatch
from .signals import StopFlag
from .step import StepReadings, accumulate_gradients, dropout_draws, estimate_loss
from .step import TrainingDiverged  # noqa: F401 - raised here, re-exported for callers


@dataclass
class TrainResult:
    iter_num: int
    best_val_loss: float | None
    last_eval: dict | None
    interrupted: bool
    model: GPT
    config: TrainConfig


RUN_FILES = (LATEST, BEST, "log.jsonl", "loss.png", "tokenizer.json")  # what a run writes into out_dir


def _absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """cfg with data_dir (and init_from, when it is a path) made absolute, so the train config a
    checkpoint stores resolves from any working directory. out_dir stays as given: a resume always
    takes it from --out-dir."""
    init = cfg.init_from
    if init not in ("scratch", "resume") and os.path.exists(init):
        init = os.path.abspath(init)
    return dataclasses.replace(cfg, data_dir=os.path.abspath(cfg.data_dir), init_from=init)


def _check_out_dir(cfg: TrainConfig, overwrite: bool, main: bool, log) -> None:
    """Refuse a scratch run or a fine-tune into a directory that holds a run's checkpoints, unless
    `overwrite` (which removes the old run's files first: nothing of it is kept or mixed in)."""
    resume = cfg.init_from == "resume"
    if overwrite and resume:
        raise ValueError("--overwrite starts over and keeps nothing, --init-from resume continues the run in "
                         f"{cfg.out_dir}: give one or the other")
    held = [n for n in (LATEST, BEST) if os.path.isfile(os.path.join(cfg.out_dir, n))]
    if resume or not held:
        return
    if not overwrite:
        raise ValueError(f"{cfg.out_dir} already holds a training run ({', '.join(held)}), which a new run would "
                         f"replace: continue it with --init-from resume --out-dir {cfg.out_dir}, train into a new "
                         "--out-dir, or pass --overwrite to start over there (nothing of the old run is kept)")
    if main:
        for name in RUN_FILES:  # checkpoints first: a kill midway leaves a run that is still refused
            path = os.path.join(cfg.out_dir, name)
            if os.path.isfile(path):
                os.unlink(path)
        log(f"--overwrite: removed the old run's files from {cfg.out_dir}")


def _note_batch_change(cfg: TrainConfig, ckpt, world, log) -> None:
    """On resume, say whether a step still holds as many sequences as the checkpoint's steps did
    (a 2-rank run resumed in one process: resume_config doubles grad_accum to keep the batch)."""
    saved = ckpt.train_config
    ranks = saved.get("ranks")
    if not isinstance(ranks, int):
        return
    before = saved.get("batch_size", 0) * saved.get("grad_accum", 0) * ranks
    after = cfg.batch_size * cfg.grad_accum * world.size
    how = f"{ranks} rank(s) x grad_accum {saved.get('grad_accum')} -> {world.size} x grad_accum {cfg.grad_accum}"
    if before != after:
        log(f"note: the checkpoint's steps took {before} sequences, this run's take {after} ({how}): "
            "the batch changes from here; --grad-accum sets it")
    elif ranks != world.size:
        log(f"resuming a {ranks}-rank run in {world.size} process(es): {how} keeps the batch of {after} sequences")


def train(cfg: TrainConfig, log=print, *, overwrite: bool = False) -> TrainResult:
    """Train as cfg says; see the module docstring. Raises TrainingDiverged on a non-finite loss.

    A scratch run or fine-tune into an out_dir that holds checkpoints is refused (ValueError) unless
    `overwrite`, which first removes the old run's files. Started under MPI with N > 1 ranks (see
    dist.py), this is one rank of a data-parallel run that equals one process with grad_accum x N
    (see trainstep.py); rank 0 alone prints and writes files.
    """
    world = dist.world()
    main = world.rank == 0
    log = log if main else (lambda *a, **k: None)
    cfg = _absolute_paths(cfg)
    _check_out_dir(cfg, overwrite, main, log)
    if cfg.device == "cuda" and world.size > 1:
        select_cuda_device(world.local_rank)
    if cfg.device == "cpu":
        keep_freed_memory()  # training re-allocates the same large arrays every step
    data = open_data(cfg.data_dir)  # a token stream (TokenData) or SFT examples (SFTData)
    model, ckpt = start_model(cfg, data, log)
    cfg = dataclasses.replace(cfg, model=model.config)  # the model's own description, vocab_size known
    data.check_block_size(cfg.model.block_size)
    optimizer = configure_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
    batch_gen = np.random.default_rng([cfg.seed, 2])
    it, best = 0, None
    if ckpt is not None and cfg.init_from == "resume":
        if ckpt.optimizer_state is not None:
            optimizer.load_state_dict(ckpt.optimizer_state)
        batch_gen.bit_generator.state = ckpt.rng["batches"]
        model.dropout_generator.bit_generator.state = ckpt.rng["dropout"]
        it, best = ckpt.iter_num, ckpt.best_val_loss
        _note_batch_change(cfg, ckpt, world, log)
    refuse_mismatch(world, cfg, data, model, batch_gen, it)  # also: every rank has read the checkpoint
    if main:
        os.makedirs(cfg.out_dir, exist_ok=True)
        data.tokenizer.save(os.path.join(cfg.out_dir, "tokenizer.json"))
    # append: after --overwrite there is no old log; otherwise an old log (of a run that left no
    # checkpoint) is kept, and its records before this run's "start" are superseded (plot_losses)
    tlog = TrainLog(os.path.join(cfg.out_dir, "log.jsonl"), append=True) if main else NoLog()
    tlog.write({"event": "start", "iter": it, "config": dataclasses.asdict(cfg), "params": model.num_params(),
                "ranks": world.size})
    sft = getattr(data, "FORMAT", None) == "sft"
    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    log(f"{model.num_params():,} parameters" + (f" ({trainable:,} trainable)" if trainable != model.num_params() else "")
        + f", {data.vocab_size} tokens in the vocabulary, "
        + (f"{data.num_examples('train'):,} train / {data.num_examples('val'):,} val examples (SFT: the loss "
           f"counts {data.meta['loss_tokens']['train']:,} of {len(data.train):,} train tokens)" if sft else
           f"{len(data.train):,} train / {len(data.val):,} val tokens")
        + f", steps {it} -> {cfg.max_iters}"
        + (f", {world.size} ranks x grad_accum {cfg.grad_accum}" if world.size > 1 else ""))

    readings = StepReadings(every_step=reading_is_free(cfg.device), out_dir=cfg.out_dir)

    def read(r: StepReadings):
        try:
            return r.read()
        except TrainingDiverged as e:
            tlog.write({"event": "diverged", "iter": e.step, "loss": e.loss, "grad_norm": e.grad_norm})
            raise

    def save(name: str) -> None:
        read(readings)  # every step behind these weights was finite
        if not main:
            return
        rng = {"batches": batch_gen.bit_generator.state, "dropout": model.dropout_generator.bit_generator.state}
        save_checkpoint(os.path.join(cfg.out_dir, name), model=model, optimizer=optimizer, iter_num=it,
                        best_val_loss=best, train_config={**cfg.to_dict(), "ranks": world.size}, rng=rng,
                        tokenizer=data.tokenizer)

    params = [p for p in model.parameters() if p.requires_grad]  # with LoRA: the adapters alone
    sum_gradients = dist.GradientSum(params, world) if world.size > 1 else None
    draws = dropout_draws(model, data, cfg) if world.size > 1 else 0
    tokens_per_step = cfg.batch_size * cfg.model.block_size * cfg.grad_accum * world.size
    last_eval, interrupted = None, False
    progress = Progress(it, cfg.max_iters, enabled=cfg.progress and main, log=log)
    t_last, it_last = time.perf_counter(), it
    model.train()
    with StopFlag() as stop, progress, tlog:
        while True:
            if it % cfg.eval_interval == 0 or it == cfg.max_iters:
                check_replicas(world, model, it)
                losses = estimate_loss(model, data, cfg, it, world)
                last_eval = {"event": "eval", "iter": it, "train_loss": losses["train"], "val_loss": losses["val"]}
                tlog.write(last_eval)
                progress.note(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                if it > 0 or ckpt is not None:
                    if best is None or losses["val"] < best:
                        best = losses["val"]
                        save(BEST)
                    if cfg.always_save_checkpoint:
                        save(LATEST)
                t_last, it_last = time.perf_counter(), it  # tokens/s counts training time only
            stopping = world.any(stop.set)  # Ctrl-C on any rank stops all of them after the same step
            if it >= cfg.max_iters or stopping:
                interrupted = stopping and it < cfg.max_iters
                save(LATEST)
                if interrupted:
                    progress.note(f"interrupted: saved step {it} to {os.path.join(cfg.out_dir, LATEST)}; "
                                  f"continue with --init-from resume --out-dir {cfg.out_dir}")
                break
            lr = cfg.lr_at(it)
            optimizer.set_lr(lr)
            loss_sum = accumulate_gradients(model, data, cfg, batch_gen, world, draws)
            if sum_gradients is not None:
                loss_sum = sum_gradients([loss_sum])[0]  # the loss rides in the gradients' one transfer
            norm = clip_grad_norm(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            readings.add(it, lr, loss_sum, norm)
            if readings.due(it, cfg):
                loss_sum, norm = read(readings)
            optimizer.step()
            optimizer.zero_grad()
            it += 1
            progress.update(it, loss_sum, lr)
            if it % cfg.log_interval == 0 or it == cfg.max_iters:
                now = time.perf_counter()
                tps = tokens_per_step * (it - it_last) / max(now - t_last, 1e-9)
                t_last, it_last = now, it
                tlog.write({"event": "step", "iter": it, "loss": loss_sum, "lr": lr, "grad_norm": norm,
                            "tokens_per_s": tps})
                progress.step_line(it, loss_sum, lr, tps)
    if cfg.plot and main:
        plot_losses(cfg.out_dir, log=log)
    world.barrier()  # no rank leaves before rank 0 has written its files
    return TrainResult(it, best, last_eval, interrupted, model, cfg)


def resume_config(out_dir: str, given: dict) -> TrainConfig:
    """The config a resumed run uses: the checkpoint's own training options and model, with the
    options `given` on top. Of the model's fields only dropout may change: any other given one that
    differs from the checkpoint's is a ValueError naming it (a resumed run keeps its shape)."""
    ckpt = load_checkpoint(out_dir, prefer=LATEST)
    train_given, model_given = split_values(given)
    saved = {k: v for k, v in ckpt.train_config.items() if k in TrainConfig.__dataclass_fields__ and k != "model"}
    if "data_dir" not in given and not os.path.isdir(saved.get("data_dir", "")):
        raise ValueError(f"resume: {ckpt.path} was trained on the data directory {saved.get('data_dir')!r}, which is "
                         "not there now (moved, or a relative path from another working directory): pass --data-dir DIR")
    ranks, size = ckpt.train_config.get("ranks"), dist.world().size
    if "grad_accum" not in given and isinstance(ranks, int) and ranks != size and saved["grad_accum"] * ranks % size == 0:
        saved["grad_accum"] = saved["grad_accum"] * ranks // size  # the same sequences per step (see _note_batch_change)
    lora_given, lora_saved = train_given.pop("lora", None), saved.get("lora")
    if lora_given is not None:  # the adapters' shape is the run's: what is given must be the checkpoint's
        given = lora_given.to_dict() if isinstance(lora_given, LoraConfig) else lora_given
        merged = {**(lora_saved or {}), **given}
        same = "r" in merged and LoraConfig.from_dict(merged).to_dict() == lora_saved
        if not same:
            flags = ", ".join(f"--lora-{k.replace('_', '-')} {v!r}" for k, v in given.items())
            raise ValueError(f"resume: {flags} differs from the LoRA adapters in {ckpt.path} ({lora_saved}); a resumed "
                             "run keeps its adapters: train into a new --out-dir to change them")
    model = {**ckpt.model_config, **model_given}
    changed = sorted(k for k, v in model_given.items() if k != "dropout" and ckpt.model_config.get(k) != v)
    if changed:
        raise ValueError(f"resume: {', '.join(f'--{k.replace(chr(95), chr(45))} {model_given[k]!r}' for k in changed)} "
                         f"differs from the model in {ckpt.path} "
                         f"({', '.join(f'{k}={ckpt.model_config.get(k)!r}' for k in changed)}); a resumed run keeps its "
                         "model's shape (only --dropout may change): train into a new --out-dir to change it")
    return TrainConfig.from_values({**saved, **train_given, "model": model, "out_dir": out_dir, "init_from": "resume"})


def config_from_cli(args) -> TrainConfig:
    """TrainConfig from `npgpt train`'s namespace: defaults (the --arch family's for the model) <
    --config file < flags given. With init_from=resume the checkpoint's own config replaces the defaults."""
    from ..flags import flag_values, load_config_file  # noqa: PLC0415

    given = load_config_file(args.config, TrainConfig) if getattr(args, "config", None) else {}
    if "model" in given:  # a [model] table: its fields join the flat ones
        given = {**given.pop("model"), **given}
    given.update(flag_values(args, TrainConfig))
    if given.get("init_from") == "resume" and not getattr(args, "overwrite", False):  # train() refuses the pair
        return resume_config(given.get("out_dir", TrainConfig.out_dir), given)
    return TrainConfig.from_values(given, arch=getattr(args, "arch", None))
