"""Optimizers (AdamW, SGD), gradient clipping and the cosine learning-rate schedule.

Each update works in place on the parameters' arrays, in the same order of floating-point
operations as PyTorch's default (single-tensor) CPU path, so a float64 training run follows
torch.optim.AdamW step for step.
"""

from __future__ import annotations

import math

import numpy as np

from .. import parallel
from ..backend import get_xp, to_device, to_numpy, uses_thread_pool
from ..ops._util import row_blocks


def _check_param(p, where: str):
    if not getattr(p, "requires_grad", False) or not hasattr(p, "data"):
        raise ValueError(f"{where}: expected Parameters (tensors with requires_grad=True), got {p!r}")


class Optimizer:
    """Holds param groups (dicts with 'params' plus options) and per-parameter state.

    `params` is a list of Parameters or a list of dicts {'params': [...], option: value, ...};
    options missing from a group take the constructor's defaults. Each group's 'lr' may be
    changed between steps (`opt.param_groups[i]['lr'] = ...` or `opt.set_lr(lr)`).
    """

    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = [{"params": params}] if not isinstance(params[0], dict) else params
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        seen = set()
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or "params" not in g:
                raise ValueError(f"{type(self).__name__}: param group {i} must be a dict with a 'params' list")
            unknown = set(g) - set(defaults) - {"params", "name"}
            if unknown:
                raise ValueError(f"{type(self).__name__}: param group {i} has unknown options {sorted(unknown)}")
            group = {**defaults, **g, "params": list(g["params"])}
            for p in group["params"]:
                _check_param(p, type(self).__name__)
                if id(p) in seen:
                    raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
                seen.add(id(p))
            self._check_group(group, i)
            self.param_groups.append(group)
        self.state: dict[int, dict] = {}  # id(param) -> state

    def _check_group(self, group: dict, i: int) -> None:
        if not group["lr"] >= 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {group['lr']!r} (group {i})")
        if not group.get("weight_decay", 0.0) >= 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {group['weight_decay']!r} (group {i})")

    def zero_grad(self) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def set_lr(self, lr: float) -> None:
        """Set every group's learning rate (what a schedule does each step)."""
        for g in self.param_groups:
            g["lr"] = lr

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{'state': {index: {'step': int, name: np.ndarray, ...}}, 'param_groups': [options + 'params': [indices]]}

        Parameters are numbered 0, 1, ... across groups in order; arrays are NumPy copies. Every
        value is an int, float, list or NumPy array, so it serialises to safetensors + JSON.
        """
        state, groups, k = {}, [], 0
        for g in self.param_groups:
            idx = []
            for p in g["params"]:
                s = self.state.get(id(p))
                if s is not None:
                    state[k] = {n: (int(v) if n == "step" else to_numpy(v).copy()) for n, v in s.items()}
                idx.append(k)
                k += 1
            opts = {n: (list(v) if isinstance(v, tuple) else v) for n, v in g.items() if n != "params"}
            groups.append({**opts, "params": idx})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        """Restore options and state from `state_dict()`'s output (arrays copied to each param's device)."""
        groups = sd.get("param_groups")
        if groups is None or "state" not in sd:
            raise ValueError("optimizer state dict needs 'state' and 'param_groups'")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state dict has {len(groups)} param groups, this optimizer {len(self.param_groups)}")
        params = [p for g in self.param_groups for p in g["params"]]
        for i, (g, saved) in enumerate(zip(self.param_groups, groups)):
            if len(saved["params"]) != len(g["params"]):
                raise ValueError(f"param group {i}: state dict has {len(saved['params'])} params, optimizer {len(g['params'])}")
        new_state = {}
        for key, s in sd["state"].items():
            k = int(key)
            if not 0 <= k < len(params):
                raise ValueError(f"optimizer state for parameter {k}, but there are {len(params)}")
            p = params[k]
            entry = {}
            for n, v in s.items():
                if n == "step":
                    entry[n] = int(v)
                    continue
                v = np.asarray(to_numpy(v))
                if tuple(v.shape) != p.shape:
                    raise ValueError(f"optimizer state {n} of parameter {k}: shape {tuple(v.shape)}, parameter {p.shape}")
                entry[n] = to_device(v.astype(p.dtype), p.device).copy()
            new_state[id(p)] = entry
        for g, saved in zip(self.param_groups, groups):
            for n, v in saved.items():
                if n != "params":
                    g[n] = tuple(v) if isinstance(v, list) else v
        self.state = new_state


class AdamW(Optimizer):
    """Adam with decoupled weight decay, as torch.optim.AdamW (amsgrad off).

    For each parameter p with gradient g, at step t = 1, 2, ...:
        p  = p * (1 - lr * wd)                     (decoupled decay, before the moments)
        m  = m + (1 - b1) * (g - m)                (torch's lerp; for 1 - b1 >= 0.5: g - (g - m) * b1)
        v  = v * b2 + ((1 - b2) * g) * g
        denom = sqrt(v) / sqrt(1 - b2^t) + eps
        p  = p + (-lr / (1 - b1^t) * m) / denom
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"AdamW: betas must be in [0, 1), got {betas!r}")
        if not eps >= 0:
            raise ValueError(f"AdamW: eps must be >= 0, got {eps!r}")
        super().__init__(params, {"lr": lr, "betas": (b1, b2), "eps": eps, "weight_decay": weight_decay})

    def step(self) -> None:
        jobs = []
        for g in self.param_groups:
            lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                xp = get_xp(p.data)
                s = self.state.get(id(p))
                if s is None:
                    s = self.state[id(p)] = {"step": 0, "exp_avg": xp.zeros_like(p.data),
                                             "exp_avg_sq": xp.zeros_like(p.data)}
                s["step"] += 1
                jobs.append((xp, p.data, p.grad, s["exp_avg"], s["exp_avg_sq"], s["step"], lr, b1, b2, eps, wd))
        _each_parameter(lambda i0, i1: [_adamw_update(*jobs[i]) for i in range(i0, i1)], jobs)


def _adamw_update(xp, x, grad, m, v, t: int, lr, b1, b2, eps, wd) -> None:
    """One parameter's AdamW step in place (the class docstring's formulas, torch's order), walked
    in flat blocks (`_in_flat_blocks`); every step is elementwise, so blocks change no bit."""
    w = 1 - b1
    bc1 = 1 - b1 ** float(t)
    bc2_sqrt = (1 - b2 ** float(t)) ** 0.5

    def block(x, grad, m, v, tmp, denom):  # flat slices of one parameter; tmp, denom: scratch
        if wd != 0:
            x *= 1 - lr * wd
        xp.subtract(grad, m, out=tmp)  # g - m
        if w < 0.5:  # torch's lerp, both branches
            tmp *= w
            m += tmp  # m + (1 - b1) (g - m)
        else:
            tmp *= 1 - w
            xp.subtract(grad, tmp, out=m)  # g - (g - m) b1
        v *= b2
        xp.multiply(grad, 1 - b2, out=tmp)
        tmp *= grad
        v += tmp  # v b2 + ((1 - b2) g) g
        xp.sqrt(v, out=denom)
        denom /= bc2_sqrt
        denom += eps  # sqrt(v) / sqrt(1 - b2^t) + eps
        xp.multiply(m, -(lr / bc1), out=tmp)
        tmp /= denom
        x += tmp  # p + (-lr / (1 - b1^t) m) / denom

    _in_flat_blocks(xp, block, x, grad, m, v)


_BLOCK = 1 << 16  # elements per block on the CPU: a block of p, g, m, v and two scratch arrays stays in L2


def _in_flat_blocks(xp, fn, x, grad, m, v) -> None:
    """fn on matching flat blocks of the four arrays, with two scratch arrays per thread (a speed
    trick: each block's dozen passes stay in cache, and no temporary is allocated; on the GPU,
    row_blocks gives one block). Arrays that are not contiguous are taken whole."""
    arrays = (x, grad, m, v)
    if not all(a.flags.c_contiguous for a in arrays):
        fn(*arrays, xp.empty_like(x), xp.empty_like(x))
        return
    flat = [a.reshape(-1) for a in arrays]  # views
    for i0, i1 in row_blocks(xp, x.size, 1, _BLOCK):
        tmp = parallel.scratch(xp, "adamw_tmp", (i1 - i0,), x.dtype)
        denom = parallel.scratch(xp, "adamw_denom", (i1 - i0,), x.dtype)
        fn(*(a[i0:i1] for a in flat), tmp, denom)


def _each_parameter(fn, jobs) -> None:
    """fn over the parameters' jobs, one block per parameter on the thread pool (each parameter's
    update is independent of the others and each worker runs a whole parameter's chain over its
    blocks: a speed trick); on the GPU, one after the other."""
    blocks = [(i, i + 1) for i in range(len(jobs))]
    if not jobs or not uses_thread_pool(jobs[0][0]):
        parallel.run_serial(fn, blocks)
        return
    parallel.run(fn, blocks, size=sum(int(j[1].size) for j in jobs))


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay, as torch.optim.SGD.

        g = g + wd * p;   buf = g (first step) or buf * momentum + g;   p = p - lr * buf
    (without momentum p = p - lr * g; nesterov: p = p - lr * (g + momentum * buf)).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        if not momentum >= 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {momentum!r}")
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov})

    def step(self) -> None:
        for g in self.param_groups:
            lr, mom, wd = g["lr"], g["momentum"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if wd != 0:
                    grad = grad + wd * p.data
                if mom != 0:
                    s = self.state.get(id(p))
                    if s is None:
                        buf = grad.copy()
                        self.state[id(p)] = {"step": 1, "momentum_buffer": buf}
                    else:
                        buf = s["momentum_buffer"]
                        buf *= mom
                        buf += grad
                        s["step"] += 1
                    grad = grad + mom * buf if g["nesterov"] else buf
                p.data -= lr * grad


def clip_grad_norm(params, max_norm: float):
    """Scale gradients in place so their global 2-norm is at most max_norm; return the norm before.

        total = sqrt(sum over params of ||g||^2)   (the 2-norm of the per-parameter norms)
        coef  = min(max_norm / (total + 1e-6), 1);   g = g * coef
    as torch.nn.utils.clip_grad_norm_ (multiplying by a coef of exactly 1 changes no bit). Everything
    stays on the gradients' device: the norm comes back as a 0-d float64 array there (float(...)
    reads it, which on a GPU waits for it), so clipping costs no host round trip.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0, got {max_norm!r}")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    xp = get_xp(grads[0])
    sq = xp.stack([(g * g).sum() for g in grads]).astype(xp.float64)  # (n,) squared norms, each in g's dtype
    norms = xp.sqrt(sq)
    total = xp.sqrt((norms * norms).sum())  # ()
    if not math.isinf(max_norm):
        coef = xp.minimum(max_norm / (total + 1e-6), 1.0)  # ()
        for g in grads:
            g *= coef.astype(g.dtype)
    return total


def cosine_lr(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    """Linear warmup, cosine decay, then a floor:

        it < warmup:              lr * (it + 1) / (warmup + 1)
        warmup <= it <= decay:    min_lr + 0.5 * (1 + cos(pi * r)) * (lr - min_lr),
                                  r = (it - warmup) / (decay_iters - warmup)
        it > decay_iters:         min_lr
    (decay_iters == warmup gives min_lr from it = warmup on.)
    """
    if it < 0 or warmup < 0 or decay_iters < warmup:
        raise ValueError(f"cosine_lr: need it >= 0 and 0 <= warmup <= decay_iters, got it={it}, warmup={warmup}, decay_iters={decay_iters}")
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it >= decay_iters:
        return min_lr
    r = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)


def param_groups(model, weight_decay: float) -> list[dict]:
    """Two groups, as nanoGPT: params with ndim >= 2 (matmul weights, embeddings) decay, the rest
    (biases, layernorm weights) do not. Frozen parameters (requires_grad=False: a LoRA model's base)
    are left out, so the optimizer holds only what trains."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [(n, p) for n, p in named if p.ndim >= 2]
    no_decay = [(n, p) for n, p in named if p.ndim < 2]
    groups = [{"params": [p for _, p in decay], "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": [p for _, p in no_decay], "weight_decay": 0.0})
    return groups


def configure_optimizer(model, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95), eps: float = 1e-8) -> AdamW:
    """AdamW over `param_groups(model, weight_decay)`."""
    return AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
