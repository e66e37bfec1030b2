"""Sampling text from a model: temperature, top-k, a seeded generator, context cropped to block_size.

    repeat max_new_tokens times:
        context = the last block_size tokens            (B, <=block_size)
        logits  = model(context)[:, -1, :] / temperature  (B, V)
        keep the top_k largest logits (the rest -> -inf)
        p = softmax(logits);  next ~ p, drawn by inverse CDF from a seeded NumPy generator
        append next

Each step runs the whole context through the model (no KV cache yet); `next_token` is the one
place that turns logits into a choice, so top-p and friends go there.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import to_numpy
from .tensor import no_grad


def check_sampling(temperature: float, top_k: int | None, max_new_tokens: int) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r} (use a small value like 1e-3 for near-greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None for no cut), got {top_k!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")


def next_token(logits: np.ndarray, temperature: float, top_k: int | None, generator: np.random.Generator) -> np.ndarray:
    """One id per row of logits (B, V), drawn from softmax(logits / temperature) cut to the top_k."""
    z = np.asarray(logits, dtype=np.float64) / temperature  # (B, V)
    V = z.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.partition(z, V - top_k, axis=-1)[:, V - top_k:V - top_k + 1]  # (B, 1) the k-th largest
        z = np.where(z < kth, -np.inf, z)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=-1)  # (B, V)
    u = generator.random(z.shape[0]) * cdf[:, -1]  # (B,)
    ids = (cdf <= u[:, None]).sum(axis=-1)  # first index whose cdf exceeds u
    return np.minimum(ids, V - 1)


def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             generator: np.random.Generator | None = None) -> np.ndarray:
    """idx (B, T) int ids -> (B, T + max_new_tokens), in eval mode under no_grad (mode restored)."""
    check_sampling(temperature, top_k, max_new_tokens)
    idx = np.asarray(to_numpy(idx))
    if idx.ndim != 2 or idx.shape[1] < 1 or idx.dtype.kind not in "iu":
        raise ValueError(f"idx must be a (B, T) integer array with T >= 1, got shape {idx.shape}, dtype {idx.dtype}")
    generator = generator if generator is not None else np.random.default_rng()
    block = model.config.block_size
    out = idx.astype(np.int64)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for _ in range(max_new_tokens):
                logits, _ = model(out[:, -block:])  # (B, T', V)
                last = to_numpy(logits.data[:, -1, :])  # (B, V)
                out = np.concatenate([out, next_token(last, temperature, top_k, generator)[:, None]], axis=1)
    finally:
        model.train(was_training)
    return out


def default_prompt(tokenizer) -> list[int]:
    """The end-of-text token when the tokenizer has one, else a newline."""
    if tokenizer.eot_id is not None:
        return [tokenizer.eot_id]
    try:
        return tokenizer.encode("\n")
    except ValueError:
        raise ValueError("this tokenizer cannot encode a newline and has no end-of-text token: give a --prompt") from None


def sample(checkpoint: str, prompt: str | None = None, max_new_tokens: int = 200, temperature: float = 0.8,
           top_k: int | None = 200, seed: int = 1337, num_samples: int = 1, dtype: str = "float32",
           device: str = "cpu") -> list[str]:
    """num_samples texts (prompt included) from a checkpoint file or training directory (best first)."""
    from .checkpoint import load_checkpoint  # noqa: PLC0415

    check_sampling(temperature, top_k, max_new_tokens)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    ckpt = load_checkpoint(checkpoint)
    tok = ckpt.load_tokenizer()
    if prompt is None or prompt == "":
        ids = default_prompt(tok)
    else:
        try:
            ids = tok.encode(prompt, allowed_special="all")
        except ValueError as e:
            raise ValueError(f"prompt: {e}") from None
    model = ckpt.build_model(dtype=dtype, device=device, dropout=0.0)
    x = np.tile(np.asarray(ids, dtype=np.int64), (num_samples, 1))  # (B, T)
    out = generate(model, x, max_new_tokens, temperature, top_k, np.random.default_rng(seed))
    return [tok.decode(row) for row in out]
