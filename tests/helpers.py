"""Tolerances and the parity harness every op test uses.

Error measure, for outputs and gradients alike:
    worst |npgpt - torch| / max(1, worst |torch|)
It is absolute for values of size up to 1 and relative beyond, so neither tiny nor huge values
make a comparison meaningless.
"""

from __future__ import annotations

import numpy as np
import torch

from npgpt import Tensor
from npgpt.backend import to_numpy

TOL = {"float64": 1e-10, "float32": 1e-4}
TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}
ERRORS: list = []  # (op name, what, dtype, error) of every check_parity comparison, for reporting the worst


def rel_error(actual, expected) -> float:
    a = np.asarray(to_numpy(actual), dtype=np.float64)
    e = np.asarray(expected.detach().cpu().numpy() if isinstance(expected, torch.Tensor) else to_numpy(expected), dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"shape mismatch: npgpt {a.shape} vs reference {e.shape}")
    if a.size == 0:
        return 0.0
    if not (np.isfinite(a).all() and np.isfinite(e).all()):
        same = np.array_equal(np.isnan(a), np.isnan(e)) and np.array_equal(a[~np.isfinite(a)], e[~np.isfinite(e)], equal_nan=True)
        if not same:
            return float("inf")
        a, e = a[np.isfinite(a)], e[np.isfinite(e)]
        if a.size == 0:
            return 0.0
    return float(np.max(np.abs(a - e)) / max(1.0, float(np.max(np.abs(e)))))


def assert_close(actual, expected, dtype: str = "float64", what: str = "value", tol: float | None = None) -> None:
    tol = TOL[dtype] if tol is None else tol
    err = rel_error(actual, expected)
    assert err <= tol, f"{what}: error {err:.3e} > tolerance {tol:.0e} ({dtype})"


def check_parity(np_fn, torch_fn, args: dict, *, dtype: str = "float64", xp=np, seed: int = 0,
                 grads: tuple[str, ...] | None = None, options: dict | None = None, tol: float | None = None):
    """Run an op in npgpt and in PyTorch on the same inputs; compare y and every input's gradient.

    args: name -> NumPy array. Floating arrays are cast to `dtype` and become differentiable inputs
    (or only those named in `grads`); integer arrays pass through as they are.
    The backward goes through a random upstream gradient dy: loss = sum(y * dy).
    tol: a tighter tolerance than TOL[dtype] where the op's error analysis allows one.
    Returns (y_npgpt, y_torch) for further checks.
    """

    def close(a, e, what):
        ERRORS.append((getattr(np_fn, "__name__", "op"), what, dtype, rel_error(a, e)))
        assert_close(a, e, dtype, what, tol)

    options = options or {}
    np_dtype = np.dtype(dtype)
    ours, theirs = {}, {}
    for name, a in args.items():
        a = np.asarray(a)
        diff = a.dtype.kind == "f" and (grads is None or name in grads)
        if a.dtype.kind == "f":
            a = a.astype(np_dtype)
        ours[name] = Tensor(xp.asarray(a), requires_grad=diff)
        theirs[name] = torch.tensor(a, requires_grad=diff)
    y = np_fn(**ours, **options)
    yt = torch_fn(**theirs, **options)
    close(y.data, yt, "forward")
    assert y.dtype == np_dtype, f"forward: dtype {y.dtype}, inputs are {dtype}"
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal(y.shape).astype(np_dtype)
    y.backward(xp.asarray(dy))
    (yt * torch.tensor(dy)).sum().backward()
    for name, t in ours.items():
        if t.requires_grad:
            assert t.grad is not None, f"no gradient reached input {name!r}"
            close(t.grad, theirs[name].grad, f"grad of {name}")
            assert t.grad.dtype == np_dtype, f"grad of {name}: dtype {t.grad.dtype}, inputs are {dtype}"
    return y, yt


def gpt_configs(max_vocab: int = 97, max_block: int = 32, max_layers: int = 3, max_head_size: int = 16,
                dropouts=(0.0,), free_widths: bool = False):
    """A hypothesis strategy of GPTConfigs over every option, sizes drawn up to the given bounds.
    free_widths: head_size and intermediate_size drawn too (not n_embd / n_head and 4 n_embd)."""
    from hypothesis import strategies as st

    from npgpt.models.gpt import GPTConfig

    @st.composite
    def configs(draw):
        n_head = draw(st.integers(1, 4))
        widths = {}
        if free_widths and draw(st.booleans()):
            widths = dict(head_size=draw(st.integers(1, max_head_size)), intermediate_size=draw(st.integers(1, 64)))
        return GPTConfig(
            **widths,
            vocab_size=draw(st.integers(2, max_vocab)),
            block_size=draw(st.integers(1, max_block)),
            n_layer=draw(st.integers(1, max_layers)),
            n_head=n_head,
            n_embd=n_head * draw(st.integers(1, max_head_size)),
            dropout=draw(st.sampled_from(dropouts)),
            bias=draw(st.booleans()),
            pos_encoding=draw(st.sampled_from(["learned", "sinusoidal"])),
            activation=draw(st.sampled_from(["gelu_tanh", "gelu"])),
            tie_embeddings=draw(st.booleans()),
        )

    return configs()


def cli_flags(base: dict, **kw) -> list[str]:
    """`npgpt train` flags for the options in base, overridden by kw: --name value, and --name /
    --no-name for booleans."""
    out = []
    for k, v in {**base, **kw}.items():
        name = "--" + k.replace("_", "-")
        out += [name if v else "--no-" + name[2:]] if isinstance(v, bool) else [name, str(v)]
    return out


def edit_config_json(folder, **change):
    """Update a saved Hugging Face directory's config.json with `change`; returns the folder."""
    import json  # noqa: PLC0415

    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(change)
    path.write_text(json.dumps(config))
    return folder


def save_random_peft_adapter(pm, folder, seed: int = 4) -> None:
    """Draw every LoRA weight of a float64 PEFT model (B away from zero, so A's gradient is not
    trivially zero), then save the adapter to folder."""
    g = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.from_numpy(g.normal(0.0, 0.5, tuple(p.shape))))
    assert all(p.dtype == torch.float64 for n, p in pm.named_parameters() if "lora_" in n)
    pm.save_pretrained(folder)
