"""What a training run shows and leaves behind: the progress bar, log.jsonl, and loss.png.

tqdm and matplotlib are optional (the `train` extra): without tqdm the progress is plain log
lines; without matplotlib the plot is skipped with a one-line note.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

from ..fileio import atomic_file, named_error


class TrainLog:
    """Append-only JSON lines, flushed after each record so a killed run keeps what it logged."""

    def __init__(self, path: str, append: bool):
        self.path = path
        try:
            self._f = open(path, "a" if append else "w", encoding="utf-8")
        except OSError as e:
            raise named_error(e, path) from None

    def write(self, record: dict) -> None:
        """One record as strict JSON: a NaN or infinite number (a diverged loss) is written as null."""
        record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        try:
            self._f.write(json.dumps({**record, "time": time.time()}, allow_nan=False) + "\n")
            self._f.flush()
        except OSError as e:  # a full disk: say which file
            raise named_error(e, self.path) from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _interactive() -> bool:
    """True when both stdout and stderr are terminals: a bar's carriage returns are for a person
    watching, while a log file or CI gets plain lines."""
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


class Progress:
    """A tqdm bar over the steps (loss, lr, tokens/s, and tqdm's time left), or plain lines when
    tqdm is missing, the bar is turned off, or the output is not a terminal."""

    def __init__(self, start: int, total: int, enabled: bool, log=print, interactive: bool | None = None):
        self.start, self.total, self.log = start, total, log
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and (interactive if interactive is not None else _interactive()):
            try:
                from tqdm.auto import tqdm  # noqa: PLC0415 - optional dependency
            except ImportError:
                log("(tqdm is not installed: plain progress lines; pip install 'npgpt[train]' for a bar)")
            else:
                self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, smoothing=0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def note(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            self.log(msg)

    def update(self, it: int, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(it - self.bar.n)

    def step_line(self, it: int, loss: float, lr: float, tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}, lr {lr:.2e}, {tokens_per_s:,.0f} tok/s")
            return
        done = it - self.start
        elapsed = time.perf_counter() - self.t0
        left = elapsed / done * (self.total - it) if done else 0.0
        self.log(f"step {it}/{self.total}: loss {loss:.4f}, lr {lr:.2e}, {tokens_per_s:,.0f} tok/s, "
                 f"{_fmt_seconds(elapsed)} elapsed, ~{_fmt_seconds(left)} left")


def read_log(out_dir: str) -> list[dict]:
    """The records of out_dir/log.jsonl, in order; a last line cut short by a kill is skipped."""
    records = []
    with open(os.path.join(out_dir, "log.jsonl"), encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def plot_losses(out_dir: str, log=print) -> str | None:
    """Draw train (every logged step, and each eval) and val loss against the step into out_dir/loss.png.

    Returns the path, or None (with a note) when matplotlib is missing or nothing was logged.
    """
    path = os.path.join(out_dir, "log.jsonl")
    if not os.path.isfile(path):
        raise ValueError(f"{out_dir}: no log.jsonl here; it is written by `npgpt train --out-dir {out_dir}`")
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        log("(matplotlib is not installed: no loss plot; pip install 'npgpt[train]')")
        return None
    steps, evals = [], []
    for r in read_log(out_dir):
        if r.get("event") == "start":  # a fresh run or a resume: later records supersede
            steps = [s for s in steps if s[0] <= r["iter"]]
            evals = [e for e in evals if e[0] < r["iter"]]
        elif r.get("event") == "step":
            steps.append((r["iter"], r["loss"]))
        elif r.get("event") == "eval":
            evals.append((r["iter"], r["train_loss"], r["val_loss"]))
    if not steps and not evals:
        log(f"(nothing logged in {path} yet: no plot)")
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if steps:
        ax.plot(*zip(*steps), color="tab:blue", alpha=0.35, lw=1, label="train (batch)")
    if evals:
        it, tr, va = zip(*evals)
        ax.plot(it, tr, "o-", color="tab:blue", label="train (eval)")
        ax.plot(it, va, "o-", color="tab:orange", label="val (eval)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(os.path.basename(os.path.abspath(out_dir)))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = os.path.join(out_dir, "loss.png")
    with atomic_file(png) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    log(f"loss plot: {png}")
    return png


class NoLog:
    """log.jsonl for ranks other than 0: writes nothing."""

    def write(self, record: dict) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass
