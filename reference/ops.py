"""PyTorch twins of npgpt's ops: one function per op, with the same name and arguments.

Written plainly from torch primitives so each can be read against npgpt/ops/ line by line; the
tests compare npgpt's forward and every gradient with these in float64. Used only by tests and
benchmarks: npgpt itself never imports torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def linear(x, w, b=None):
    """x @ w (+ b), with w stored (in, out) as GPT-2's checkpoints store it."""
    y = x @ w
    return y if b is None else y + b


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
        att = att * keep / (1.0 - dropout) if dropout < 1 else att * 0
    y = att @ v  # (B, NH, T, HS)
    return y.transpose(1, 2).contiguous().view(B, T, C)


def cross_entropy(logits, targets, ignore_index=-100):
    """Mean negative log-likelihood of targets under softmax(logits), rows with ignore_index skipped."""
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1).long(), ignore_index=ignore_index)
