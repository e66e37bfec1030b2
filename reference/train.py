"""The PyTorch twin of one training step: torch.optim.AdamW on nanoGPT's two param groups, the same
cosine schedule (`lr_at`, nanoGPT's get_lr written out here: reference/ imports nothing from npgpt), torch.nn.utils.clip_grad_norm_,
and gradient accumulation over micro-batches with each micro-batch loss scaled by 1/k.
"""

from __future__ import annotations

import math

import torch



def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Params with ndim >= 2 decay, the rest do not; in named_parameters order, as npgpt's."""
    named = list(model.named_parameters())
    groups = [{"params": [p for _, p in named if p.dim() >= 2], "weight_decay": weight_decay}]
    rest = [p for _, p in named if p.dim() < 2]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


def make_optimizer(model, lr, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8) -> torch.optim.AdamW:
    # foreach=False: the single-tensor path, whose op order npgpt.optim.AdamW follows.
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             weight_decay=weight_decay, foreach=False)


def lr_at(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    """nanoGPT's schedule: linear warmup to lr, cosine down to min_lr at decay_iters, then min_lr."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it >= decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def train_step(model, opt, micro_batches, it: int, *, lr: float, min_lr: float, warmup: int,
               decay_iters: int, max_norm: float | None):
    """One optimizer step over micro_batches [(x, y), ...]. Returns (summed scaled loss, grad norm)."""
    lr_now = lr_at(it, lr, min_lr, warmup, decay_iters)
    for g in opt.param_groups:
        g["lr"] = lr_now
    opt.zero_grad(set_to_none=True)
    k = len(micro_batches)
    total = 0.0
    for x, y in micro_batches:
        _, loss = model(x, y)
        loss = loss / k
        loss.backward()
        total += loss.item()
    norm = None
    if max_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    opt.step()
    return total, norm
