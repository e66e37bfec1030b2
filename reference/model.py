"""The PyTorch twin of npgpt.GPT: same parameter keys, same layouts, torch autograd for the backward.

Written from torch primitives (F.layer_norm, F.gelu, softmax, matmuls), not from npgpt's ops, so
it is an independent check. Linear weights are stored (in, out) and used as x @ W, as npgpt and
GPT-2 store them; the head (wte, or lm_head.weight when untied) is (V, C) with logits = x @ W^T.

Dropout: the twin draws its keep masks the way npgpt does, from a NumPy Generator in the same
order (embedding, then per block: attention probabilities, attention residual, MLP residual),
u = generator.random(shape) cast to the dtype, keep = u >= p. Set `twin.dropout_generator` to a
generator in the same state as `model.dropout_generator` and the two runs drop the same elements,
so parity holds with dropout on (tests also check p = 0 and the statistics separately).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as TF

APPROXIMATE = {"gelu_tanh": "tanh", "gelu": "none"}  # a model config's activation -> F.gelu's approximate


def sinusoidal_table(T: int, C: int, dtype) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(same angle); computed in float64."""
    p = torch.arange(T, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, C, 2, dtype=torch.float64)
    angle = p / torch.pow(torch.tensor(10000.0, dtype=torch.float64), two_i / C)
    pe = torch.empty(T, C, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : C // 2])
    return pe.to(dtype)


class _Linear(torch.nn.Module):
    def __init__(self, n_in, n_out, bias, dtype):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n_in, n_out, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(n_out, dtype=dtype)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y


class _LayerNorm(torch.nn.Module):
    def __init__(self, C, bias, eps, dtype):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(C, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(C, dtype=dtype)) if bias else None

    def forward(self, x):
        return TF.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class _Embedding(torch.nn.Module):
    def __init__(self, n, C, dtype):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n, C, dtype=dtype))


class _Attention(torch.nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.n_head, self.head_size = cfg.n_head, cfg.head_size
        inner = cfg.n_head * cfg.head_size
        self.c_attn = _Linear(cfg.n_embd, 3 * inner, cfg.bias, dtype)
        self.c_proj = _Linear(inner, cfg.n_embd, cfg.bias, dtype)

    def forward(self, x, drop):
        B, T, _ = x.shape
        NH, HS = self.n_head, self.head_size
        C = NH * HS
        q, k, v = self.c_attn(x).split(C, dim=-1)
        q, k, v = (t.reshape(B, T, NH, HS).transpose(1, 2) for t in (q, k, v))  # (B, NH, T, HS)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(HS))  # (B, NH, T, T)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        att = torch.softmax(att.masked_fill(future, float("-inf")), dim=-1)
        att = drop(att)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return drop(self.c_proj(y))


class _MLP(torch.nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.approximate = APPROXIMATE[cfg.activation]
        self.c_fc = _Linear(cfg.n_embd, cfg.intermediate_size, cfg.bias, dtype)
        self.c_proj = _Linear(cfg.intermediate_size, cfg.n_embd, cfg.bias, dtype)

    def forward(self, x, drop):
        return drop(self.c_proj(TF.gelu(self.c_fc(x), approximate=self.approximate)))


class _Block(torch.nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.ln_1 = _LayerNorm(cfg.n_embd, cfg.bias, cfg.norm_eps, dtype)
        self.attn = _Attention(cfg, dtype)
        self.ln_2 = _LayerNorm(cfg.n_embd, cfg.bias, cfg.norm_eps, dtype)
        self.mlp = _MLP(cfg, dtype)

    def forward(self, x, drop):
        x = x + self.attn(self.ln_1(x), drop)
        return x + self.mlp(self.ln_2(x), drop)


class TorchGPT(torch.nn.Module):
    """model(idx, targets=None) -> (logits, loss or None), with npgpt.GPT's parameter keys."""

    def __init__(self, config, dtype=torch.float64):
        super().__init__()
        self.config, self.dtype = config, dtype
        c = config
        self.transformer = torch.nn.Module()
        self.transformer.wte = _Embedding(c.vocab_size, c.n_embd, dtype)
        if c.pos_encoding == "learned":
            self.transformer.wpe = _Embedding(c.block_size, c.n_embd, dtype)
        self.transformer.h = torch.nn.ModuleList(_Block(c, dtype) for _ in range(c.n_layer))
        self.transformer.ln_f = _LayerNorm(c.n_embd, c.bias, c.norm_eps, dtype)
        if not c.tie_embeddings:
            self.lm_head = torch.nn.Module()
            self.lm_head.weight = torch.nn.Parameter(torch.zeros(c.vocab_size, c.n_embd, dtype=dtype))
        self.register_buffer("sinusoid", sinusoidal_table(c.block_size, c.n_embd, dtype), persistent=False)
        self.dropout_generator: np.random.Generator | None = None

    def load_from_npgpt(self, state_dict) -> None:
        """Copy npgpt's arrays (name -> array) in; keys must match exactly."""
        own = dict(self.named_parameters())
        missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise ValueError(f"load_from_npgpt: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for k, p in own.items():
                a = np.asarray(state_dict[k])
                if tuple(a.shape) != tuple(p.shape):
                    raise ValueError(f"load_from_npgpt: {k} has shape {a.shape}, expected {tuple(p.shape)}")
                p.copy_(torch.from_numpy(np.array(a)).to(self.dtype))

    def _drop(self, x):
        """Inverted dropout with npgpt's mask recipe; the identity in eval mode or at p = 0."""
        p = self.config.dropout
        if not self.training or p == 0:
            return x
        if self.dropout_generator is None:
            raise RuntimeError("set twin.dropout_generator (a numpy Generator) to use dropout")
        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        u = self.dropout_generator.random(tuple(x.shape), dtype=np.float64).astype(np_dtype)
        keep = torch.from_numpy(u >= p).to(self.dtype)
        return x * (keep * (1.0 / (1.0 - p)))

    def forward(self, idx, targets=None):
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        B, T = idx.shape
        c, tr = self.config, self.transformer
        x = tr.wte.weight[idx]  # (B, T, C)
        x = x + (tr.wpe.weight[:T] if c.pos_encoding == "learned" else self.sinusoid[:T])
        x = self._drop(x)
        for block in tr.h:
            x = block(x, self._drop)
        x = tr.ln_f(x)
        head = tr.wte.weight if c.tie_embeddings else self.lm_head.weight  # (V, C)
        logits = x @ head.T  # (B, T, V)
        loss = None
        if targets is not None:
            t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
            loss = TF.cross_entropy(logits.reshape(B * T, -1), t.reshape(B * T), ignore_index=-100)
        return logits, loss
