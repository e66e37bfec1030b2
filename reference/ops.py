"""PyTorch twins of npgpt's ops: one function per op, with the same name and arguments.

Written plainly from torch primitives so each can be read against npgpt/ops/ line by line; the
tests compare npgpt's forward and every gradient with these in float64. Used only by tests and
benchmarks: npgpt itself never imports torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


# --- Core ops: twins of npgpt/ops/elementwise.py, reduce.py, shape.py and matrix.py --------------
# sum, max and pow shadow the builtins from here on: nothing in this module uses the builtins.


def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b


def div(a, b):
    return a / b


def neg(x):
    return torch.neg(x)


def pow(x, p):  # noqa: A001 - the operator's name, as in npgpt
    """x ** p for a scalar exponent p."""
    return x**p


def exp(x):
    return torch.exp(x)


def log(x):
    return torch.log(x)


def tanh(x):
    return torch.tanh(x)


def _dims(x, axis):
    """numpy's axis (None, int or tuple) as torch's dim: None means every axis."""
    return tuple(range(x.ndim)) if axis is None else axis


def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy, as in npgpt
    return torch.sum(x, dim=_dims(x, axis), keepdim=keepdims)


def mean(x, axis=None, keepdims=False):
    return torch.mean(x, dim=_dims(x, axis), keepdim=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy, as in npgpt
    """torch.amax: its gradient is shared equally among tied maxima, as npgpt's is."""
    return torch.amax(x, dim=_dims(x, axis), keepdim=keepdims)


def reshape(x, shape):
    return x.reshape(tuple(shape))


def transpose(x, axes=None):
    """Permute the axes; axes=None reverses them, as numpy does."""
    return x.permute(*(reversed(range(x.ndim)) if axes is None else axes))


def getitem(x, index):
    """x[index], with numpy index arrays (ints or bools) turned into torch tensors."""

    def part(p):
        return torch.as_tensor(p, device=x.device) if isinstance(p, np.ndarray) else p

    return x[tuple(part(p) for p in index)] if isinstance(index, tuple) else x[part(index)]


def split(x, sizes, axis=-1):
    """Pieces along `axis`: `sizes` is an int (equal pieces of that size) or a list of sizes."""
    return list(torch.split(x, sizes, dim=axis))


def concatenate(tensors, axis=0):
    return torch.cat(list(tensors), dim=axis)


def matmul(a, b):
    return a @ b


# --- Layers ----------------------------------------------------------------------------------------


def linear(x, w, b=None):
    """x @ w (+ b), with w stored (in, out) as GPT-2's checkpoints store it."""
    y = x @ w
    return y if b is None else y + b


def lora_linear(x, w, b, lora_a, lora_b, scale, x_drop=None):
    """PEFT's LoRA forward on a base stored (in, out): x @ w (+ b) + scale * lora_B(lora_A(x_drop)),
    lora_A.weight (r, in), lora_B.weight (out, r); x_drop is dropout(x), None for x itself."""
    xd = x if x_drop is None else x_drop
    return linear(x, w, b) + (xd @ lora_a.T @ lora_b.T) * scale


def attention(qkv, n_head, dropout=0.0, training=False, generator=None, keep=None):
    """Causal multi-head self-attention from qkv (B, T, 3C) -> y (B, T, C), built from primitives.

    Dropout on the attention probabilities needs the keep mask (B, NH, T, T) of booleans that npgpt
    drew (see npgpt.ops.attention.dropout_keep), so both sides drop the same entries; without it,
    training with dropout > 0 is refused rather than compared against a different mask.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = qkv.split(C, dim=-1)
    q = q.view(B, T, n_head, hs).transpose(1, 2)  # (B, NH, T, HS)
    k = k.view(B, T, n_head, hs).transpose(1, 2)
    v = v.view(B, T, n_head, hs).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, NH, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=qkv.device).triu(1)
    att = att.masked_fill(future, float("-inf"))
    att = torch.softmax(att, dim=-1)
    if training and dropout > 0:
        if keep is None:
            raise ValueError("reference attention with dropout needs npgpt's keep mask to compare")
        keep = torch.as_tensor(keep, device=qkv.device)
        att = att * keep / (1.0 - dropout)
    y = att @ v  # (B, NH, T, HS)
    return y.transpose(1, 2).contiguous().view(B, T, C)


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean"):
    """Mean (or sum) negative log-likelihood of targets under softmax(logits), rows with ignore_index skipped."""
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1).long(), ignore_index=ignore_index,
                           reduction=reduction)


def embedding(ids, w):
    """Rows of w (V, C) picked by integer ids of any shape -> (*ids.shape, C)."""
    return F.embedding(torch.as_tensor(ids).long(), w)


def position_embedding(T, wpe):
    """Learned positions: rows 0..T-1 of wpe -> (T, C)."""
    return F.embedding(torch.arange(T, device=wpe.device), wpe)


def sinusoidal_positions(T, C, dtype=None, like=None):
    """Vaswani et al.'s table: PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(same); odd C ends in a sin."""
    dtype = (like.dtype if like is not None else torch.float32) if dtype is None else getattr(torch, str(dtype))
    device = like.device if like is not None else None
    pe = torch.zeros(T, C + (C % 2), dtype=torch.float64, device=device)
    pos = torch.arange(T, dtype=torch.float64, device=device).unsqueeze(1)
    freq = torch.pow(10000.0, torch.arange(0, C, 2, dtype=torch.float64, device=device) / C)
    pe[:, 0::2] = torch.sin(pos / freq)
    pe[:, 1::2] = torch.cos(pos / freq)
    return pe[:, :C].to(dtype)


def layer_norm(x, w, b=None, eps=1e-5):
    """LayerNorm over the last axis, b=None for no shift."""
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def gelu(x, approximate="tanh"):
    """GELU: approximate="tanh" (GPT-2) or "none" (exact erf)."""
    return F.gelu(x, approximate=approximate)


def softmax(x, axis=-1):
    return torch.softmax(x, dim=axis)


def dropout(x, p, training, generator=None):
    """Inverted dropout drawing the same mask npgpt draws from the same numpy Generator state:
    u = generator.random(shape) in float64, cast to x's dtype, keep = u >= p."""
    if not training or p == 0:
        return x
    u = torch.from_numpy(generator.random(tuple(x.shape), dtype=np.float64)).to(x.dtype)
    keep = (u >= p).to(x.device)
    return x * keep / (1.0 - p)


def mlp(x, w_fc, b_fc, w_proj, b_proj, approximate="tanh"):
    """GPT-2's feed-forward block: linear -> GELU -> linear, w stored (in, out)."""
    return linear(gelu(linear(x, w_fc, b_fc), approximate), w_proj, b_proj)


# --- The Llama family ------------------------------------------------------------------------------


def rms_norm(x, w, eps=1e-6):
    """RMSNorm over the last axis, weight after normalising (Hugging Face's LlamaRMSNorm, in x's dtype)."""
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope(x, cos, sin):
    """Hugging Face's apply_rotary_pos_emb on one tensor: x * cos + rotate_half(x) * sin."""
    return x * cos + _rotate_half(x) * sin


def rope_inv_freq(head_size, theta=10000.0, rope_type="default", factor=None, low_freq_factor=None,
                  high_freq_factor=None, original_max_position_embeddings=None):
    """Inverse frequencies in float64 torch, written from the formulas (default, linear, llama3)."""
    inv = 1.0 / theta ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)
    if rope_type == "default":
        return inv
    if rope_type == "linear":
        return inv / factor
    if rope_type != "llama3":
        raise ValueError(f"rope type {rope_type!r} has no twin")
    L = original_max_position_embeddings
    wavelen = 2 * math.pi / inv
    s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    out = torch.where(wavelen > L / low_freq_factor, inv / factor, inv)
    medium = (wavelen >= L / high_freq_factor) & (wavelen <= L / low_freq_factor)
    return torch.where(medium, (1 - s) * inv / factor + s * inv, out)


def rope_cos_sin(positions, inv_freq, dtype=torch.float64):
    """cos, sin (T, HS) at absolute positions, as Hugging Face's rotary embedding lays them out."""
    freqs = torch.as_tensor(positions, dtype=torch.float64)[:, None] * torch.as_tensor(inv_freq, dtype=torch.float64)[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def swiglu_mlp(x, w_gate, w_up, w_down, b_gate=None, b_up=None, b_down=None):
    """Llama's MLP: down(silu(gate(x)) * up(x)), weights stored (in, out)."""
    return linear(F.silu(linear(x, w_gate, b_gate)) * linear(x, w_up, b_up), w_down, b_down)


def grouped_query_attention(q, k, v, dropout=0.0, training=False, generator=None, keep=None):
    """Causal GQA: q (B, NH, T, HS), k, v (B, NKV, T, HS) -> (B, T, NH*HS); k, v repeated per group
    (repeat_interleave, as Hugging Face's repeat_kv). Dropout needs npgpt's keep mask (B, NH, T, T)."""
    B, NH, T, HS = q.shape
    G = NH // k.shape[1]
    k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    att = torch.softmax(att.masked_fill(future, float("-inf")), dim=-1)
    if training and dropout > 0:
        if keep is None:
            raise ValueError("reference attention with dropout needs npgpt's keep mask to compare")
        att = att * torch.as_tensor(keep, device=q.device) / (1.0 - dropout)
    return (att @ v).transpose(1, 2).reshape(B, T, NH * HS)
