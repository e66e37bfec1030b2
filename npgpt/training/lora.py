"""LoRA, as PEFT defines it: low-rank adapters on a frozen model, and adapter files PEFT loads.

    y = W x + b + s * B(A(dropout(x))),   s = alpha / r   (alpha / sqrt(r) with use_rslora)

A (r, in) is drawn as PEFT draws it, kaiming-uniform with a = sqrt(5), which is U(-1/sqrt(in),
1/sqrt(in)) (gain sqrt(2 / (1 + a^2)) = sqrt(1/3), bound gain * sqrt(3 / in)); B (out, r) starts at
zero, so an adapted model starts as the base model exactly. The op and its backward are
npgpt/ops/lora.py.

`add_lora(model, config)` replaces each targeted Linear by a LoraLinear in the same place: it keeps
the base layer's own weight and bias Parameters (names unchanged, `transformer.h.0.attn.c_attn.weight`)
and adds `<module path>.lora_A.weight` and `<module path>.lora_B.weight`. Every other parameter
stops taking gradients (requires_grad=False, PEFT's bias="none"), so an optimizer built from the
trainable parameters (training.optim.param_groups) holds only the adapters. The adapters' dropout
masks come from the model's `dropout_generator`, whose state a checkpoint saves, so a resumed run
draws the masks the uninterrupted run would have drawn.

Target matching is PEFT's (peft.tuners.tuners_utils.check_target_module_exists): a list of names
matches a module path equal to a name or ending in "." + name (`c_proj` is the attention's and the
MLP's; `q_proj` is Llama's `model.layers.{i}.self_attn.q_proj`); a string is a regex that must match
the whole path (re.fullmatch). A match that is not a Linear, or no match at all, is refused.

Files (`save_adapter`, `load_adapter`): PEFT's adapter directory, `adapter_config.json` +
`adapter_model.safetensors` with keys `base_model.model.<module path>.lora_A.weight` (r, in) and
`.lora_B.weight` (out, r). npgpt's module paths are the Hugging Face model's (GPT-2's
`transformer.h.{i}.attn.c_attn`), so the keys need no renaming. GPT-2's layers are Conv1D in
transformers, stored (in, out): PEFT records that as `fan_in_fan_out: true` (it only changes how
PEFT merges; the adapter matrices have the same layout either way).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from numbers import Real

import numpy as np

from .. import functional as F
from ..backend import rng, to_device, to_numpy
from ..fileio import read_json
from ..nn import Linear, Module, Parameter, _dropout

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
# PEFT's defaults when target_modules is not given (peft.utils.constants, by model type)
DEFAULT_TARGETS = {"gpt2": ("c_attn",), "llama": ("q_proj", "v_proj")}


def _check_targets(t):
    """target_modules as a tuple of names or a regex string; ValueError for anything else."""
    if t is None:
        return None
    if isinstance(t, str):
        if not t:
            raise ValueError("LoraConfig.target_modules: an empty regex matches no module")
        try:
            re.compile(t)
        except re.error as e:
            raise ValueError(f"LoraConfig.target_modules: {t!r} is not a valid regex ({e})") from None
        return t
    if isinstance(t, (list, tuple)) and t and all(isinstance(n, str) and n for n in t):
        return tuple(t)
    raise ValueError(f"LoraConfig.target_modules must be a list of module names or a regex string, got {t!r}")


def parse_targets(text: str) -> tuple[str, ...]:
    """`--lora-targets c_attn,c_proj` -> ("c_attn", "c_proj") (names; a regex goes in a config file)."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise ValueError(f"--lora-targets expects module names separated by commas, got {text!r}")
    return names


def _check_targets_value(v):
    """The check a config file's value gets (a list of names or a regex string)."""
    return _check_targets(v)


@dataclass(frozen=True)
class LoraConfig:
    """One description of the adapters; names as PEFT's LoraConfig (alpha is its lora_alpha)."""

    r: int = field(metadata={"help": "LoRA rank r (adapters A (r, in), B (out, r)); giving it turns LoRA on"})
    alpha: float = field(default=None, metadata={"help": "LoRA alpha: the update is scaled by alpha / r (none: r, a scale of 1)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapters' input (PEFT's lora_dropout)"})
    target_modules: tuple | str | None = field(default=None, metadata={
        "help": "module names the adapters go on, comma-separated (PEFT's default: c_attn for GPT-2, "
                "q_proj,v_proj for Llama)", "flag": "targets", "metavar": "NAMES", "parse": parse_targets,
        "check": _check_targets_value})
    use_rslora: bool = field(default=False, metadata={"help": "rank-stabilised LoRA: scale by alpha / sqrt(r)", "flag": "rslora"})

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoraConfig.r must be an integer >= 1, got {self.r!r}")
        if self.alpha is None:
            object.__setattr__(self, "alpha", float(self.r))
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, Real) or not self.alpha > 0 or not math.isfinite(self.alpha):
            raise ValueError(f"LoraConfig.alpha must be a number > 0, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, Real) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraConfig.dropout must be a probability in [0, 1), got {self.dropout!r}")
        if not isinstance(self.use_rslora, bool):
            raise ValueError(f"LoraConfig.use_rslora must be true or false, got {self.use_rslora!r}")
        object.__setattr__(self, "target_modules", _check_targets(self.target_modules))

    @property
    def scale(self) -> float:
        """s: alpha / r, or alpha / sqrt(r) with rsLoRA (PEFT's `scaling`)."""
        return self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(d["target_modules"], tuple):
            d["target_modules"] = list(d["target_modules"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LoraConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"LoraConfig: unknown field(s) {', '.join(sorted(unknown))}")
        if "r" not in d:
            raise ValueError("LoraConfig needs r (--lora-r)")
        return cls(**d)


class LoraLinear(Module):
    """A Linear with a LoRA adapter: the base's weight (in, out) and bias, lora_A.weight (r, in),
    lora_B.weight (out, r); forward = ops.lora.lora_linear with dropout on the adapters' input."""

    def __init__(self, base: Linear, r: int, scale: float, dropout: float, generator_of):
        super().__init__()
        n_in, n_out = base.weight.shape
        self.weight = base.weight
        self.bias = base.bias
        dt = base.weight.data.dtype
        self.lora_A = Module()
        self.lora_A.weight = Parameter(np.zeros((r, n_in), dt))  # drawn by add_lora
        self.lora_B = Module()
        self.lora_B.weight = Parameter(np.zeros((n_out, r), dt), init="zeros")
        object.__setattr__(self, "scale", float(scale))
        object.__setattr__(self, "p", float(dropout))
        object.__setattr__(self, "_generator_of", generator_of)  # () -> the model's dropout generator

    def forward(self, x):
        xd = _dropout(x, self.p, self.training, self._generator_of() if self.p > 0 and self.training else None)
        return F.lora_linear(x, self.weight, self.bias, self.lora_A.weight, self.lora_B.weight, self.scale,
                             None if xd is x else xd)


def _matches(targets, path: str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return path in targets or any(path.endswith("." + t) for t in targets)


def _default_targets(model) -> tuple[str, ...]:
    names = {p.rsplit(".", 1)[-1] for p, _ in model.named_modules()}
    for family, targets in DEFAULT_TARGETS.items():
        if set(targets) <= names:
            return targets
    raise ValueError("LoraConfig.target_modules is not given and this model has none of PEFT's default targets "
                     f"({', '.join(f'{k}: {v}' for k, v in DEFAULT_TARGETS.items())}): name the modules")


def _replace_child(parent: Module, name: str, child: Module) -> None:
    """parent.<name> = child in the same registration slot, so named_parameters keeps its order."""
    parent._modules[name] = child
    object.__setattr__(parent, name, child)


def lora_layers(model) -> dict[str, LoraLinear]:
    """module path -> LoraLinear, in named_modules order."""
    return {p: m for p, m in model.named_modules() if isinstance(m, LoraLinear)}


def add_lora(model: Module, config: LoraConfig, seed: int = 0) -> dict[str, LoraLinear]:
    """Put adapters on the Linear layers `config.target_modules` matches and freeze every other
    parameter (see the module docstring). A drawn from rng([seed, 4]) on the host in float64, in
    named_modules order, then cast and moved to the model's device. Returns path -> layer."""
    if not isinstance(config, LoraConfig):
        raise ValueError(f"add_lora needs a LoraConfig, got {type(config).__name__}")
    if lora_layers(model):
        raise ValueError("this model has LoRA adapters already: merge_lora(model) first, or load into a fresh model")
    targets = config.target_modules or _default_targets(model)
    config = dataclasses.replace(config, target_modules=targets)
    found = [(p, m) for p, m in model.named_modules() if p and _matches(targets, p)]
    wrong = [f"{p} ({type(m).__name__})" for p, m in found if type(m) is not Linear]
    if wrong:
        raise ValueError(f"LoRA target_modules {targets!r} match modules that are not Linear layers: {', '.join(wrong)}")
    if not found:
        linears = sorted({p.rsplit('.', 1)[-1] for p, m in model.named_modules() if type(m) is Linear})
        raise ValueError(f"LoRA target_modules {targets!r} match no module of this model; its Linear layers are "
                         f"named {', '.join(linears)}")
    for p in model.parameters():
        p.requires_grad = False
    gen = rng([seed, 4])
    modules = dict(model.named_modules())
    layers = {}
    for path, base in found:
        layer = LoraLinear(base, config.r, config.scale, config.dropout, lambda: model.dropout_generator)
        a = layer.lora_A.weight
        bound = 1.0 / math.sqrt(a.shape[1])  # kaiming_uniform_(a=sqrt(5)) over fan_in = in
        a.data[...] = gen.uniform(-bound, bound, size=a.shape).astype(a.data.dtype)
        device = base.weight.device
        for q in (layer.lora_A.weight, layer.lora_B.weight):
            q.data = to_device(q.data, device)
        parent, _, name = path.rpartition(".")
        _replace_child(modules[parent] if parent else model, name, layer)
        layers[path] = layer
    object.__setattr__(model, "lora_config", config)
    return layers


def merge_lora(model: Module) -> list[str]:
    """Fold each adapter into its base weight, W (in, out) += s * A^T B^T (= s (B A)^T), put a
    plain Linear holding the same weight and bias back in its place, and let every parameter take
    gradients again. Returns the merged module paths."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("merge_lora: this model has no LoRA adapters")
    modules = dict(model.named_modules())
    for path, layer in layers.items():
        a, b = layer.lora_A.weight.data, layer.lora_B.weight.data
        w = layer.weight
        w.data += (a.T @ b.T) * w.data.dtype.type(layer.scale)  # (in, r) @ (r, out)
        plain = Linear.__new__(Linear)
        Module.__init__(plain)
        plain.weight, plain.bias = w, layer.bias
        parent, _, name = path.rpartition(".")
        _replace_child(modules[parent] if parent else model, name, plain)
    for p in model.parameters():
        p.requires_grad = True
    object.__setattr__(model, "lora_config", None)
    return list(layers)


# --- PEFT's adapter directory ------------------------------------------------------------------------
def _fan_in_fan_out(paths) -> bool:
    """transformers' GPT-2 (transformer.h.*) uses Conv1D, stored (in, out); Llama's nn.Linear is (out, in)."""
    return all(p.startswith("transformer.") for p in paths)


def adapter_tensors(model) -> dict[str, np.ndarray]:
    """PEFT's keys -> host arrays: base_model.model.<path>.lora_A.weight (r, in), .lora_B.weight (out, r)."""
    out = {}
    for path, layer in lora_layers(model).items():
        out[f"{PREFIX}{path}.lora_A.weight"] = np.ascontiguousarray(to_numpy(layer.lora_A.weight.data))
        out[f"{PREFIX}{path}.lora_B.weight"] = np.ascontiguousarray(to_numpy(layer.lora_B.weight.data))
    return out


def adapter_config_json(model, base_model_name_or_path: str | None = None) -> dict:
    """adapter_config.json as PEFT writes it for these adapters (its LoraConfig's field names)."""
    c = model.lora_config
    paths = list(lora_layers(model))
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
        "r": c.r, "lora_alpha": c.alpha, "lora_dropout": c.dropout, "use_rslora": c.use_rslora,
        "target_modules": list(c.target_modules) if isinstance(c.target_modules, tuple) else c.target_modules,
        "fan_in_fan_out": _fan_in_fan_out(paths), "bias": "none", "init_lora_weights": True,
        "inference_mode": True, "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False, "lora_bias": False,
        "exclude_modules": None, "revision": None,
    }


ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md")


def save_adapter(model, path, base_model_name_or_path: str | None = None) -> list[str]:
    """Write PEFT's adapter directory (adapter_config.json + adapter_model.safetensors) at `path`,
    replaced as a whole (fileio.replace_dir: a kill leaves the old directory or the new one).
    `peft.PeftModel.from_pretrained(hf_model, path)` loads it. Returns the two paths."""
    from safetensors.numpy import save  # noqa: PLC0415 - a runtime dependency, imported where used

    from ..fileio import replace_dir, write_file  # noqa: PLC0415

    if not lora_layers(model):
        raise ValueError("save_adapter: this model has no LoRA adapters (add_lora or load_adapter first)")
    config = json.dumps(adapter_config_json(model, base_model_name_or_path), indent=2)
    weights = save(adapter_tensors(model), metadata={"format": "pt"})
    with replace_dir(path, keep_only=ADAPTER_FILES, what="LoRA adapter") as tmp:
        write_file(os.path.join(tmp, ADAPTER_CONFIG), config)
        write_file(os.path.join(tmp, ADAPTER_WEIGHTS), weights)
    return [os.path.join(path, ADAPTER_CONFIG), os.path.join(path, ADAPTER_WEIGHTS)]


# options of PEFT's LoraConfig that change the math; an adapter that sets one is refused by name
_UNSUPPORTED = {"use_dora": False, "lora_bias": False, "bias": "none", "rank_pattern": {}, "alpha_pattern": {},
                "modules_to_save": None, "layers_to_transform": None, "exclude_modules": None,
                "target_parameters": None, "trainable_token_indices": None, "layer_replication": None,
                "use_qalora": False, "use_bdlora": None}


def read_adapter_config(path) -> LoraConfig:
    """The LoraConfig of a PEFT adapter directory; ValueError naming what npgpt cannot apply."""
    cfg_path = os.path.join(path, ADAPTER_CONFIG)
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{path}: no {ADAPTER_CONFIG}; not a PEFT adapter directory")
    d = read_json(cfg_path)
    if not isinstance(d, dict) or d.get("peft_type") != "LORA":
        raise ValueError(f"{cfg_path}: peft_type {d.get('peft_type') if isinstance(d, dict) else d!r}, npgpt loads LORA adapters")
    bad = [f"{k}={d[k]!r}" for k, ok in _UNSUPPORTED.items() if d.get(k) not in (ok, None, False) and d[k] != {}]
    if bad:
        raise ValueError(f"{cfg_path}: uses PEFT options npgpt does not implement: {', '.join(bad)}")
    try:
        return LoraConfig(r=d.get("r"), alpha=d.get("lora_alpha"), dropout=d.get("lora_dropout", 0.0),
                          target_modules=d.get("target_modules"), use_rslora=bool(d.get("use_rslora", False)))
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}") from None


def load_adapter(model, path, seed: int = 0) -> dict[str, LoraLinear]:
    """Load a PEFT adapter directory (written by PEFT or save_adapter) into `model`: add_lora with its
    config when the model has no adapters yet, then copy every lora_A / lora_B tensor (cast to the
    model's dtype). The keys must be exactly the adapted layers' (PEFT's `.default` adapter name
    accepted); a missing, unexpected or mis-shaped key is a ValueError listing them."""
    from safetensors.numpy import load_file  # noqa: PLC0415

    config = read_adapter_config(path)
    if lora_layers(model):
        if model.lora_config.r != config.r:
            raise ValueError(f"{path}: adapters of rank {config.r}, but the model holds rank {model.lora_config.r}")
        layers = lora_layers(model)
    else:
        layers = add_lora(model, config, seed=seed)
    weights = os.path.join(path, ADAPTER_WEIGHTS)
    if not os.path.isfile(weights):
        raise ValueError(f"{path}: no {ADAPTER_WEIGHTS} (npgpt reads safetensors adapters only)")
    try:
        tensors = load_file(weights)
    except Exception as e:  # safetensors raises its own error type for a broken file
        raise ValueError(f"{weights}: {type(e).__name__}: {e} (corrupt or truncated)") from None
    tensors = {k.replace(".default.weight", ".weight"): v for k, v in tensors.items()}
    expected = {}
    for p, layer in layers.items():
        expected[f"{PREFIX}{p}.lora_A.weight"] = layer.lora_A.weight
        expected[f"{PREFIX}{p}.lora_B.weight"] = layer.lora_B.weight
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = [f"{k}: file {tuple(v.shape)}, model {expected[k].shape}" for k, v in tensors.items()
                 if k in expected and tuple(v.shape) != expected[k].shape]
    if missing or unexpected or misshaped:
        raise ValueError(f"{weights} does not fit this model's adapters: "
                         + "; ".join(f"{what} ({len(ks)}): {', '.join(ks[:4])}{', ...' if len(ks) > 4 else ''}"
                                     for what, ks in (("missing", missing), ("unexpected", unexpected),
                                                      ("mis-shaped", misshaped)) if ks))
    for k, p in expected.items():
        p.data[...] = to_device(tensors[k].astype(p.data.dtype), p.device)
    return layers


def trainable_parameters(model) -> list[Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


__all__ = ["LoraConfig", "LoraLinear", "add_lora", "merge_lora", "save_adapter", "load_adapter", "lora_layers",
           "read_adapter_config", "adapter_tensors", "trainable_parameters", "parse_targets"]
