"""One step's micro-batches and one evaluation, for one process or for one rank of N.

The rule that makes N ranks equal one process: with grad_accum k on N ranks, a step has K = k N
micro-steps j = 0 .. K-1, the micro-steps of one process with grad_accum K. Rank r runs
j = r, r + N, r + 2N, ...; each micro-step's loss is scaled by 1/K, so the gradients summed over
the ranks are the one process's gradient up to the order of that sum.

  batches   every rank draws all K micro-batches from the one batch generator and keeps its own,
            so the generator's state is the same on every rank (and in a checkpoint).
  dropout   every micro-step draws the same number D of values from the dropout generator (the
            shapes do not change); rank r moves the generator to start + j D before micro-step j
            and to start + K D after the step, with PCG64's advance(), so the masks of micro-step
            j are the one process's. D is measured once with a no-grad forward (pcg64_distance),
            and each micro-step checks that it drew exactly D.
  eval      batch i of eval_iters runs on rank i % N; the per-batch losses are summed into one
            vector (each entry comes from one rank, so that sum is exact) and averaged as one
            process averages them: the same bits.

With N = 1 all of this reduces to the plain loop: the same draws in the same order.

On SFT data (npgpt.data.sft.SFTData) a micro-batch is whole examples, right-padded:
  batches   the step's K x batch_size examples are drawn first (every rank draws all of them) and then
            cut into K micro-batches of batch_size, all padded to the step's longest example (to
            block_size when N > 1 with dropout, so every micro-step draws the same D values); so a
            step sees the same examples, in the same rows, whatever split of batch_size x grad_accum
            x N gives the same product.
  loss      the step's loss is the sum of its counted tokens' losses over the number of counted
            tokens in the whole step, M: micro-step j adds sum_j / M (cross_entropy with reduction
            "sum", so a micro-batch with nothing to count adds 0, never NaN). M is the sum over the
            ranks of their micro-batches' counts; since every rank holds the step's whole draw, each
            computes that sum itself before its first backward, with no message. Never a mean of
            micro-batch means (wrong whenever the counts differ).
  eval      the counted-token mean over eval_iters drawn batches: sum of losses / sum of counts.
"""

from __future__ import annotations

import os

import numpy as np

from .. import functional as F
from ..backend import get_xp, to_device, to_numpy
from ..tensor import no_grad
from .dist import World
from .rng import _seek, pcg64_distance

def dropout_draws(model, data, cfg) -> int:
    """D: the 64-bit draws one training micro-step takes from model.dropout_generator (0 without
    dropout), measured with a no-grad forward on a throwaway batch; the generator is put back."""
    lora = getattr(model, "lora_config", None)
    if model.config.dropout == 0 and (lora is None or lora.dropout == 0):  # LoRA's dropout draws from it too
        return 0
    bits = model.dropout_generator.bit_generator
    start, was_training = bits.state, model.training
    x, y = data.get_batch("train", cfg.batch_size, cfg.model.block_size, np.random.default_rng(0))
    model.train()
    try:
        with no_grad():
            model(x, y)
        return pcg64_distance(start, bits.state)
    finally:
        bits.state = start
        model.train(was_training)


def accumulate_gradients(model, data, cfg, batch_gen: np.random.Generator, world: World, draws: int):
    """Forward and backward of this rank's micro-steps of one step (see the module docstring); the
    gradients add up in each parameter's .grad. Returns this rank's sum of the scaled losses as a
    0-d float64 array on the model's device (summed there: reading it is StepReadings' business).
    `draws` is dropout_draws(...) (unused by one process)."""
    if is_sft(data):
        return _accumulate_sft(model, data, cfg, batch_gen, world, draws)
    k = cfg.grad_accum * world.size
    batches = [data.get_batch("train", cfg.batch_size, cfg.model.block_size, batch_gen) for _ in range(k)]  # all K
    return _micro_steps(model, world, draws, k, lambda j: model(*batches[j])[1] * (1.0 / k))


def _micro_steps(model, world: World, draws: int, k: int, loss_of):
    """Forward and backward of this rank's micro-steps j = rank, rank + N, ... of k, loss_of(j) giving
    micro-step j's scaled loss; on N > 1 ranks the dropout generator is put at micro-step j's position
    first and past all k after (the module docstring), and each micro-step must draw exactly `draws`.
    Returns this rank's sum of the scaled losses, 0-d float64 on the model's device (0 with no step)."""
    n = world.size
    bits = model.dropout_generator.bit_generator
    start = bits.state if n > 1 else None
    loss_sum = None
    for j in range(world.rank, k, n):
        if n > 1:
            _seek(bits, start, j * draws)
            before = bits.state
        loss = loss_of(j)
        loss.backward()
        part = loss.data.astype("float64")  # float64, as summing Python floats did: the same bits
        loss_sum = part if loss_sum is None else loss_sum + part
        if n > 1 and pcg64_distance(before, bits.state) != draws:
            raise RuntimeError(f"micro-step {j} drew {pcg64_distance(before, bits.state)} dropout values, "
                               f"not the {draws} measured at the start: the ranks' dropout masks would drift apart")
    if n > 1:
        _seek(bits, start, k * draws)
    if loss_sum is None:  # more ranks than micro-steps: this rank adds nothing
        loss_sum = model.xp.asarray(0.0, dtype="float64")
    return loss_sum


def is_sft(data) -> bool:
    """Whether `data` is SFT examples (npgpt.data.sft.SFTData) rather than a token stream."""
    return getattr(data, "FORMAT", None) == "sft"


def sft_step(data, cfg, batch_gen: np.random.Generator, world: World):
    """The micro-batches of one SFT step, [(x, y)] * K with K = grad_accum x ranks, and the step's
    count M of counted tokens (see the module docstring)."""
    k, B = cfg.grad_accum * world.size, cfg.batch_size
    examples = data.draw("train", k * B, batch_gen)  # the step's examples, drawn before any split
    pad_to = cfg.model.block_size if _draws_dropout(cfg) else None
    x, y = data.batch("train", examples, pad_to)  # (K B, T): T the step's longest example (or block_size)
    count = int((y != -100).sum())  # M: the count over every micro-batch of every rank
    return [(x[j * B:(j + 1) * B], y[j * B:(j + 1) * B]) for j in range(k)], count


def _draws_dropout(cfg) -> bool:
    """Whether a micro-step draws dropout masks (the model's or LoRA's). Then every micro-batch is padded
    to block_size, in one process and on N ranks alike: the draws per micro-step (D, measured once on
    a block_size batch) must not depend on the step's longest example, or rank r could not seek its
    micro-steps' masks and N ranks would not equal one process."""
    return cfg.model.dropout > 0 or (cfg.lora is not None and cfg.lora.dropout > 0)


def token_loss_sum(model, x, y):
    """sum over the counted targets of y of -log p(target), as a 0-d Tensor (0 when none counts)."""
    logits, _ = model(x)  # (B, T, V)
    return F.cross_entropy(logits, to_device(y, model.device), reduction="sum", check_targets=False)


def _accumulate_sft(model, data, cfg, batch_gen, world, draws):
    """accumulate_gradients on SFT data: micro-step j's loss is sum_j / M (the module docstring)."""
    micro, count = sft_step(data, cfg, batch_gen, world)
    scale = 1.0 / max(count, 1)
    return _micro_steps(model, world, draws, len(micro), lambda j: token_loss_sum(model, *micro[j]) * scale)


def _estimate_sft(model, data, cfg, split: str, g, world: World) -> float:
    """The counted-token mean loss over eval_iters drawn batches of `split`: sum of losses / sum of counts."""
    sums, counts, mine, values = np.zeros(cfg.eval_iters), np.zeros(cfg.eval_iters), [], []
    for i in range(cfg.eval_iters):
        x, y = data.batch(split, data.draw(split, cfg.batch_size, g))
        counts[i] = int((y != -100).sum())  # every rank computes every batch's count
        if i % world.size == world.rank:
            mine.append(i)
            values.append(token_loss_sum(model, x, y).data)
    if values:
        sums[mine] = to_numpy(get_xp(values[0]).stack(values)).astype(np.float64)
    return float(world.allreduce_sum(sums).sum() / max(counts.sum(), 1))


def estimate_loss(model, data, cfg, it: int, world: World | None = None) -> dict:
    """Mean loss over eval_iters batches of each split, in eval mode under no_grad; train mode after.
    The batches come from a generator seeded by (seed, it, split), so evaluating never moves the
    training stream; with N ranks, batch i runs on rank i % N."""
    world = world or World()
    was_training = model.training
    model.eval()
    out = {}
    try:
        with no_grad():
            for s, split in enumerate(("train", "val")):
                g = np.random.default_rng([cfg.seed, 3, it, s])
                if is_sft(data):
                    out[split] = _estimate_sft(model, data, cfg, split, g, world)
                    continue
                mine, values = [], []  # this rank's batch numbers and their losses, left on the device
                for i in range(cfg.eval_iters):
                    x, y = data.get_batch(split, cfg.batch_size, cfg.model.block_size, g)
                    if i % world.size == world.rank:
                        mine.append(i)
                        values.append(model(x, y)[1].data)
                losses = np.zeros(cfg.eval_iters)  # (eval_iters,) float64
                if values:  # one transfer for the split
                    losses[mine] = to_numpy(get_xp(values[0]).stack(values)).astype(np.float64)
                out[split] = float(np.mean(world.allreduce_sum(losses)))
    finally:
        model.train(was_training)
    return out


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm stopped being a finite number."""

    def __init__(self, message: str, step: int, loss: float, grad_norm: float):
        super().__init__(message)
        self.step, self.loss, self.grad_norm = step, loss, grad_norm


class StepReadings:
    """Each step's loss and gradient norm, left where they were computed until they are read.

    On a GPU reading a number waits for the device, so the training loop reads the pending steps
    together, in one transfer, only when it needs them: at log steps, before an evaluation or a
    checkpoint, and at the end. On the CPU reading is free and every step is read before its update.
    Reading checks every pending step in order and raises TrainingDiverged for the first whose loss
    or norm is not finite, before any file is written from the weights that followed it (on a GPU
    up to log_interval - 1 updates may have run past it by then: the model in memory is spoiled, the
    files on disk are the last good state either way).
    """

    def __init__(self, every_step: bool, out_dir: str):
        self.every_step, self.out_dir = every_step, out_dir
        self.pending = []  # (step, lr, loss, norm), loss and norm 0-d arrays on the device

    def add(self, step: int, lr: float, loss, norm) -> None:
        self.pending.append((step, lr, loss, norm))

    def due(self, step: int, cfg) -> bool:
        """Whether `step` (0-based, before its update) must be read now."""
        after = step + 1
        return (self.every_step or after % cfg.log_interval == 0 or after % cfg.eval_interval == 0
                or after >= cfg.max_iters)

    def read(self) -> tuple[float, float] | None:
        """(loss, norm) of the last pending step as floats, after checking every pending step."""
        if not self.pending:
            return None
        values = [v for _, _, loss, norm in self.pending for v in (loss, norm)]
        xp = get_xp(*values)
        host = to_numpy(xp.stack([xp.asarray(v, dtype=xp.float64) for v in values])).reshape(-1, 2)  # one transfer
        steps, self.pending = self.pending, []
        for (step, lr, _, _), (loss, norm) in zip(steps, host):
            if not (np.isfinite(loss) and np.isfinite(norm)):
                what = f"loss {loss}" if not np.isfinite(loss) else f"gradient norm {norm}"
                saved = any(os.path.isfile(os.path.join(self.out_dir, n)) for n in ("ckpt.safetensors", "best.safetensors"))
                files = (f"the checkpoints in {self.out_dir} hold the last good state" if saved else
                         f"it had saved no checkpoint yet, so {self.out_dir} holds none")
                raise TrainingDiverged(
                    f"{what} at step {step} (lr {lr:.3g}): training stopped; {files}. Try a lower --lr, a "
                    "--grad-clip, or --dtype float64", step, float(loss), float(norm))
        return float(host[-1, 0]), float(host[-1, 1])
