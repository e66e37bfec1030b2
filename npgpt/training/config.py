"""TrainConfig: how to train, holding the model's description (`model`, a GPTConfig) whole.

Nothing here copies a model field. The flat spellings users know (`--n-layer`, `n_layer = 4` in a
TOML file, `TrainConfig.from_values({"n_layer": 4, "lr": 1e-3})`) are split once, by field name,
into the training options and the model's description; a `[model]` table in a file works too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..backend import DTYPES, default_device, devices
from ..models.config import FIELDS as MODEL_FIELDS
from ..models.config import GPTConfig
from .lora import LoraConfig
from .optim import cosine_lr


def _h(text: str, default=dataclasses.MISSING):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class TrainConfig:
    # I/O and start
    out_dir: str = _h("where checkpoints, log.jsonl and loss.png go", "out")
    data_dir: str = _h("a directory made by `npgpt prepare`", "data")
    init_from: str = _h("'scratch', 'resume' (from out_dir), or a checkpoint or GPT-2 directory to fine-tune from", "scratch")
    # evaluation and logging
    eval_interval: int = _h("evaluate (and maybe save) every this many steps", 250)
    eval_iters: int = _h("batches per split in each evaluation", 200)
    log_interval: int = _h("log the training loss every this many steps", 10)
    always_save_checkpoint: bool = _h("save ckpt.safetensors at every evaluation, not only at the end", False)
    plot: bool = _h("draw out_dir/loss.png at the end (needs matplotlib)", True)
    progress: bool = _h("show a tqdm progress bar (plain log lines without tqdm)", True)
    # data
    batch_size: int = _h("sequences per micro-batch", 12)
    grad_accum: int = _h("micro-batches per optimizer step (gradient_accumulation_steps)", 1)
    # optimizer and schedule
    max_iters: int = _h("optimizer steps in all (a resumed run continues up to this)", 2000)
    lr: float = _h("peak learning rate", 1e-3)
    min_lr: float = _h("learning rate at the end of the cosine decay", 1e-4)
    warmup_iters: int = _h("linear warmup steps", 100)
    lr_decay_iters: int | None = _h("step where the cosine reaches min_lr (none: max_iters)", None)
    decay_lr: bool = _h("use warmup + cosine decay; off: constant lr", True)
    weight_decay: float = _h("AdamW weight decay on matrices and embeddings", 0.1)
    beta1: float = _h("AdamW beta1", 0.9)
    beta2: float = _h("AdamW beta2", 0.99)
    grad_clip: float = _h("clip the global gradient norm to this (0: off)", 1.0)
    # system
    seed: int = _h("seed for weights, batches and dropout", 1337)
    dtype: str = _h("'float32' or 'float64'", "float32")
    device: str | None = _h("'cpu' or 'cuda' (CuPy); none: $NPGPT_DEVICE when the config is made, else cpu", None)
    # the model (on resume and fine-tune: the checkpoint's or directory's, only its dropout from here)
    model: GPTConfig = field(default_factory=GPTConfig, metadata={"help": "the model's description"})
    # LoRA adapters (none: train every weight); flat as --lora-r, --lora-alpha, ..., or a [lora] table
    lora: LoraConfig | None = field(default=None, metadata={"help": "LoRA adapters to train", "prefix": "lora_"})

    def __post_init__(self):
        if not isinstance(self.model, GPTConfig):
            raise ValueError(f"TrainConfig.model must be a GPTConfig, got {type(self.model).__name__}")
        if self.device is None:
            object.__setattr__(self, "device", default_device())
        for name in ("eval_interval", "eval_iters", "log_interval", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_iters", "warmup_iters", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"TrainConfig needs lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if self.decay_lr and self.lr_decay_iters is not None and self.warmup_iters > self.lr_decay_iters:
            raise ValueError(f"TrainConfig.warmup_iters={self.warmup_iters} exceeds lr_decay_iters={self.lr_decay_iters}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError(f"TrainConfig.grad_clip and weight_decay must be >= 0, got {self.grad_clip}, {self.weight_decay}")
        if self.dtype not in DTYPES or self.device not in devices():
            raise ValueError(f"TrainConfig: dtype must be one of {tuple(DTYPES)} and device one of {devices()}, "
                             f"got {self.dtype!r}, {self.device!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name} must lie in [0, 1), got {getattr(self, name)}")
        if not self.init_from:
            raise ValueError("TrainConfig.init_from must be 'scratch', 'resume' or a checkpoint path")
        if self.lora is not None and not isinstance(self.lora, LoraConfig):
            raise ValueError(f"TrainConfig.lora must be a LoraConfig or None, got {type(self.lora).__name__}")
        if self.lora is not None and self.init_from == "scratch":
            raise ValueError("LoRA adapts a trained model: give --init-from a checkpoint or a Hugging Face directory "
                             "(or resume), not scratch")

    # --- flat values <-> the nested config --------------------------------------------------------
    @classmethod
    def from_values(cls, values: dict, arch: str | None = None) -> "TrainConfig":
        """A TrainConfig from one dict of field values: the model's fields flat beside the training
        options (`n_layer`), or under "model" (a dict or a GPTConfig); `arch` starts the model from
        that family's defaults (GPTConfig.for_arch)."""
        train, model = split_values(values)
        train["lora"] = lora_from_values(train.pop("lora", None))
        if isinstance(values.get("model"), GPTConfig):
            if model:
                raise ValueError(f"give the model as a GPTConfig or as fields, not both: {', '.join(sorted(model))}")
            return cls(**train, model=values["model"])
        m = GPTConfig.for_arch(arch, **model) if arch else GPTConfig(**model)
        return cls(**train, model=m)

    def to_dict(self) -> dict:
        """The training options without the model (a checkpoint stores the model once, on its own);
        lora as a dict of LoraConfig's fields, or None."""
        d = dataclasses.asdict(self)
        del d["model"]
        d["lora"] = None if self.lora is None else self.lora.to_dict()
        return d

    # --- the schedule -----------------------------------------------------------------------------
    @property
    def decay_iters(self) -> int:
        """Where the cosine ends: lr_decay_iters, or max_iters (but never before warmup ends)."""
        return max(self.max_iters, self.warmup_iters) if self.lr_decay_iters is None else self.lr_decay_iters

    def lr_at(self, it: int) -> float:
        if not self.decay_lr:
            return self.lr
        return cosine_lr(it, self.lr, self.min_lr, self.warmup_iters, self.decay_iters)


TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "model")
# flat name -> LoraConfig field: lora_r -> r, lora_targets -> target_modules, lora_rslora -> use_rslora
LORA_FLAT = {"lora_" + f.metadata.get("flag", f.name): f.name for f in dataclasses.fields(LoraConfig)}


def lora_from_values(v) -> LoraConfig | None:
    """A LoraConfig from a dict of its fields (None or an empty dict: no LoRA)."""
    if v is None or isinstance(v, LoraConfig):
        return v
    if not isinstance(v, dict):
        raise ValueError(f"lora must be a table of LoRA fields, got {type(v).__name__}")
    if not v:
        return None
    if v.get("r") is None:
        given = ", ".join(f"--{k.replace('_', '-')}" for k, f in LORA_FLAT.items() if f in v)
        raise ValueError(f"{given} given without --lora-r: LoRA needs its rank")
    return LoraConfig.from_dict(v)


def split_values(values: dict) -> tuple[dict, dict]:
    """(training options, model fields) from one dict: model fields flat, or in values["model"] as a
    dict; a key that is neither is a ValueError naming it."""
    train, model = {}, {}
    for key, v in values.items():
        if key == "model":
            if isinstance(v, dict):
                model.update(v)
            elif not isinstance(v, GPTConfig):
                raise ValueError(f"model must be a table of model fields, got {type(v).__name__}")
        elif key == "lora":
            if isinstance(v, dict):
                train.setdefault("lora", {}).update(v)
            elif v is None or isinstance(v, LoraConfig):
                train["lora"] = v
            else:
                raise ValueError(f"lora must be a table of LoRA fields, got {type(v).__name__}")
        elif key in LORA_FLAT:
            lora = train.get("lora")
            if isinstance(lora, LoraConfig):
                lora = lora.to_dict()
            train["lora"] = {**(lora or {}), LORA_FLAT[key]: v}
        elif key in MODEL_FIELDS:
            model[key] = v
        elif key in TRAIN_FIELDS:
            train[key] = v
        else:
            raise ValueError(f"unknown key {key!r}; known: {', '.join(TRAIN_FIELDS + tuple(LORA_FLAT) + MODEL_FIELDS)}")
    return train, model
