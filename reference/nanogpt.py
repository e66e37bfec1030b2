"""A PyTorch GPT written the way people write one today (nanoGPT's model.py style): the baseline
npgpt's benchmarks race against.

Unlike reference/model.py (the primitives twin, which spells every step out so float64 parity is
checked op by op), this model uses PyTorch's fused building blocks: nn.Linear, nn.Embedding,
F.layer_norm, F.scaled_dot_product_attention(is_causal=True), F.gelu, F.cross_entropy, and a tied
lm_head. It is what a user would pick, so it is what npgpt's speed is measured against.

Parameter names are npgpt's (GPT-2's), so `load_from_npgpt(model.state_dict())` copies the same
weights in. Layouts differ in one place: npgpt stores Linear weights (in, out) and computes x @ W,
while nn.Linear stores (out, in) and computes x @ W^T, so those weights are transposed on the way in
(and `npgpt_grads()` transposes the gradients back). The embeddings and an untied lm_head are (V, C)
in both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as TF

APPROXIMATE = {"gelu_tanh": "tanh", "gelu": "none"}  # a model config's activation -> F.gelu's approximate


class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm: an optional bias (PyTorch's nn.LayerNorm had no bias=False until 2.1)."""

    def __init__(self, C: int, bias: bool, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(C))
        self.bias = nn.Parameter(torch.zeros(C)) if bias else None

    def forward(self, x):
        return TF.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, NH, T, HS)
        y = TF.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.approximate = APPROXIMATE[cfg.activation]  # "tanh" (gelu_tanh) or "none" (exact gelu)
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(TF.gelu(self.c_fc(x), approximate=self.approximate)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, cfg.bias, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, cfg.bias, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def _sinusoid(T: int, C: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(same), in float64 (npgpt's table)."""
    p = torch.arange(T, dtype=torch.float64)[:, None]
    angle = p / torch.pow(torch.tensor(10000.0, dtype=torch.float64), torch.arange(0, C, 2, dtype=torch.float64) / C)
    pe = torch.empty(T, C, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle[:, : C // 2])
    return pe


class NanoGPT(nn.Module):
    """model(idx, targets=None) -> (logits (B, T, V), loss or None), nanoGPT's forward.

    `dtype` and `device` are applied to the whole model after construction (`.to`).
    """

    def __init__(self, config, dtype=torch.float32, device: str = "cpu"):
        super().__init__()
        c = self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd),
            **({"wpe": nn.Embedding(c.block_size, c.n_embd)} if c.pos_encoding == "learned" else {}),
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList(Block(c) for _ in range(c.n_layer)),
            ln_f=LayerNorm(c.n_embd, c.bias, c.norm_eps),
        ))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT
        self.register_buffer("sinusoid", _sinusoid(c.block_size, c.n_embd), persistent=False)
        self.to(device=device, dtype=dtype)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        tr = self.transformer
        pos = tr.wpe(torch.arange(T, device=idx.device)) if "wpe" in tr else self.sinusoid[:T]
        x = tr.drop(tr.wte(idx) + pos)
        for block in tr.h:
            x = block(x)
        x = tr.ln_f(x)
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = TF.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)
        return logits, loss

    # --- npgpt's names and layouts -------------------------------------------------------------
    def _transposed(self, name: str) -> bool:
        """True for the weights npgpt stores (in, out): every nn.Linear's but the head's."""
        return name.endswith(".weight") and any(s in name for s in (".c_attn.", ".c_proj.", ".c_fc."))

    def npgpt_parameters(self):
        """(npgpt's name, parameter) for each parameter, once (a tied head shows as transformer.wte.weight)."""
        return list(self.named_parameters())

    def load_from_npgpt(self, state_dict) -> None:
        """Copy npgpt's arrays (name -> array) in, transposing Linear weights; keys must match exactly."""
        own = dict(self.npgpt_parameters())
        missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise ValueError(f"load_from_npgpt: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for k, p in own.items():
                a = _host(state_dict[k])
                if self._transposed(k):
                    a = a.T
                if tuple(a.shape) != tuple(p.shape):
                    raise ValueError(f"load_from_npgpt: {k} has shape {a.shape}, expected {tuple(p.shape)}")
                p.copy_(torch.from_numpy(np.ascontiguousarray(a)).to(p.dtype))

    def npgpt_grads(self) -> dict:
        """npgpt's name -> this model's gradient as a NumPy array in npgpt's layout."""
        out = {}
        for k, p in self.npgpt_parameters():
            g = p.grad.detach().cpu().numpy()
            out[k] = g.T if self._transposed(k) else g
        return out


def configure_optimizer(model: NanoGPT, lr: float, weight_decay: float, betas, eps: float = 1e-8):
    """nanoGPT's configure_optimizers: params of 2+ dims decay, the rest do not; fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **({"fused": True} if fused else {}))


__all__ = ["NanoGPT", "configure_optimizer"]


def _host(a) -> np.ndarray:
    """A NumPy array of `a` (a CuPy array comes back from the device)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)
