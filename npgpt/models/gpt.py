"""GPT: token + position embedding, n_layer pre-norm blocks, final norm, head; described by a GPTConfig.

Parameter names and layouts are GPT-2's, so `state_dict()` is a GPT-2 state dict:
    transformer.wte.weight (V, C)            transformer.wpe.weight (block_size, C)  [learned only]
    transformer.h.{i}.ln_1.weight/bias (C,)  transformer.h.{i}.attn.c_attn.weight (C, 3C) / bias (3C,)
    transformer.h.{i}.attn.c_proj (C, C)     transformer.h.{i}.ln_2, .mlp.c_fc (C, 4C), .mlp.c_proj (4C, C)
    transformer.ln_f.weight/bias (C,)        lm_head.weight (V, C)  [only when tie_embeddings=False]
Linear weights are (in, out), used as x @ W. The head is (V, C) as in GPT-2/HF, tied or not:
logits = x @ W^T, so an untied head loads from HF's `lm_head.weight` as a copy.

With config.layout == 'llama' the same model carries Hugging Face Llama's names (Qwen2/Qwen3 too):
    model.embed_tokens.weight (V, C)                  model.layers.{i}.input_layernorm.weight (C,)
    model.layers.{i}.self_attn.q_proj.weight (C, NH HS) / bias     .k_proj, .v_proj (C, NKV HS) / bias
    model.layers.{i}.self_attn.o_proj.weight (NH HS, C) / bias     .q_norm.weight, .k_norm.weight (HS,)
    model.layers.{i}.post_attention_layernorm.weight (C,)          .mlp.gate_proj, .up_proj (C, I), .down_proj (I, C)
    model.norm.weight (C,)                            lm_head.weight (V, C)  [only when untied]
Hugging Face's nn.Linear stores (out, in): its weights load transposed (npgpt.models.hf_llama).
RoPE's cos/sin tables (block_size, HS) are built once per model from rope_inv_freq in float64 and cast
once; a forward takes the rows of its absolute positions, so the KV cache never rotates past keys again.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..backend import get_xp, resolve_device, resolve_dtype, rng, to_device, to_numpy
from ..nn import Block, Embedding, Module, ModuleList, Parameter, init_parameters, norm_layer
from ..tensor import Tensor
from .config import GPTConfig


class GPT(Module):
    """A decoder-only transformer of either family (GPT-2, or Llama / Qwen2 / Qwen3), as its config describes.

    model(idx, targets=None) -> (logits (B, T, V), loss or None).
    Weights are drawn from `npgpt.backend.rng(seed)` in float64 on the CPU, then cast to `dtype`
    and moved to `device` (None: $NPGPT_DEVICE, else cpu): the same seed gives the same model on CPU and GPU. Dropout masks come
    from `model.dropout_generator`, a NumPy Generator seeded from `seed` as well; its
    `bit_generator.state` is what a checkpoint saves to resume exactly.
    """

    tokenizer = None  # from_pretrained sets the directory's; save_pretrained writes it

    def __init__(self, config: GPTConfig, seed: int = 0, dtype="float32", device: str | None = None,
                 init: bool = True):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        if config.vocab_size is None:
            raise ValueError("GPTConfig.vocab_size is None: give the vocabulary's size to build a model "
                             "(training fills it from the data)")
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "dtype", resolve_dtype(dtype))
        object.__setattr__(self, "device", resolve_device(device))
        c, dt = config, self.dtype
        t = Module()  # built on the host, drawn there (init), then moved once
        wte, wpe, h, ln_f = _NAMES[c.layout][1:]
        setattr(t, wte, Embedding(c.vocab_size, c.n_embd, dt))
        if c.pos_encoding == "learned":
            setattr(t, wpe, Embedding(c.block_size, c.n_embd, dt))
        setattr(t, h, ModuleList(Block(c, dt) for _ in range(c.n_layer)))
        setattr(t, ln_f, norm_layer(c, dt))
        setattr(self, _NAMES[c.layout][0], t)
        # the layout's names for the same four parts (not registered twice)
        object.__setattr__(self, "_parts", (getattr(t, wte), getattr(t, wpe) if c.pos_encoding == "learned" else None, getattr(t, h), getattr(t, ln_f)))
        if not c.tie_embeddings:
            self.lm_head = Module()
            self.lm_head.weight = Parameter(np.zeros((c.vocab_size, c.n_embd), dt))
        if init:  # init=False leaves zeros for a caller that fills every parameter (from_pretrained)
            init_parameters(self, rng(seed), c.n_layer)
        self.to(self.device)
        sin = None
        if c.pos_encoding == "sinusoidal":
            sin = to_device(F.sinusoidal_positions(c.block_size, c.n_embd, dtype=dt), self.device)
        object.__setattr__(self, "_sinusoid", sin)  # (block_size, C), a constant
        rope = None
        if c.pos_encoding == "rope":  # (block_size, HS) each, float64 math cast once (see npgpt.ops.rope)
            inv = F.rope_inv_freq(c.head_size, c.rope_theta, c.rope_type, c.rope_factor, c.rope_low_freq_factor,
                                  c.rope_high_freq_factor, c.rope_original_max_position)
            rope = F.rope_cos_sin(np.arange(c.block_size), inv, dtype=dt, like=self._parts[0].weight)
        object.__setattr__(self, "_rope", rope)
        object.__setattr__(self, "_dropout_generator", rng([seed, 1]))

    # --- dropout randomness -----------------------------------------------------------------
    @property
    def dropout_generator(self) -> np.random.Generator:
        return self._dropout_generator

    @dropout_generator.setter
    def dropout_generator(self, g: np.random.Generator) -> None:
        if not isinstance(g, np.random.Generator):
            raise ValueError(f"dropout_generator must be a numpy.random.Generator, got {type(g).__name__}")
        object.__setattr__(self, "_dropout_generator", g)

    # --- forward ----------------------------------------------------------------------------
    def _as_ids(self, a, what: str):
        """a as a (B, T) integer array where it was given (host or device), its shape checked (no look at
        the values)."""
        a = a.data if isinstance(a, Tensor) else a
        if not hasattr(a, "dtype"):
            a = np.asarray(a)
        if a.dtype.kind not in "iu":
            raise ValueError(f"{what} must hold integer token ids, got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"{what} must have shape (B, T), got shape {tuple(a.shape)} ({a.ndim} dimensions)")
        B, T = a.shape
        if B < 1 or T < 1:
            raise ValueError(f"{what} must have B >= 1 and T >= 1, got shape {tuple(a.shape)}")
        if T > self.config.block_size:
            raise ValueError(f"{what} has length T={T}, longer than block_size={self.config.block_size}")
        return a

    def _check_ids(self, idx, targets=None):
        """(idx, targets) as (B, T) integer arrays on the model's device, every id in [0, vocab_size)
        (targets may also hold the ignore index -100). The values are checked where the ids were given,
        before they move: host ids (training batches) on the host, which on a GPU costs no wait for
        the device; device ids with one host round trip per forward, for both arrays together. The
        ops then skip their own checks."""
        idx = self._as_ids(idx, "idx")
        if targets is not None:
            targets = self._as_ids(targets, "targets")
            if tuple(targets.shape) != tuple(idx.shape):
                raise ValueError(f"targets must have idx's shape {tuple(idx.shape)}, got {tuple(targets.shape)}")
            if get_xp(targets) is not get_xp(idx):  # one on the host, one on the device: check both there
                idx, targets = to_device(idx, self.device), to_device(targets, self.device)
        xp, V = get_xp(idx), self.config.vocab_size
        bad = [xp.any((idx < 0) | (idx >= V))]
        if targets is not None:
            bad.append(xp.any((targets != -100) & ((targets < 0) | (targets >= V))))
        bad_idx, *bad_targets = (bool(b) for b in to_numpy(xp.stack(bad)))
        for what, a, is_bad, extra in (("idx", idx, bad_idx, ""), ("targets", targets, any(bad_targets),
                                                                    " other than ignore_index -100")):
            if is_bad:
                raise IndexError(f"{what} holds ids outside [0, vocab_size={V}){extra} "
                                 f"(min {int(xp.min(a))}, max {int(xp.max(a))})")
        if xp is not self.xp:
            idx = to_device(idx, self.device)
            targets = None if targets is None else to_device(targets, self.device)
        return idx, targets

    @property
    def xp(self):
        return get_xp(self._parts[0].weight.data)

    @property
    def embedding(self) -> Embedding:
        """The token embedding (transformer.wte, or model.embed_tokens in the Llama layout)."""
        return self._parts[0]

    def forward(self, idx, targets=None, cache=None):
        """idx (B, T) integer ids -> (logits (B, T, V), mean cross-entropy over targets or None).

        cache: a npgpt.generation.generate.KVCache (inference under no_grad): idx are the positions after the
        cache's `length` ones, their keys and values are added to it, and `length` grows by T.
        """
        idx, targets = self._check_ids(idx, targets)
        B, T = idx.shape
        t0 = 0 if cache is None else self._check_cache(cache, B, T, targets)
        c, gen = self.config, self._dropout_generator
        wte, wpe, blocks, ln_f = self._parts
        x = wte(idx)  # (B, T, C)
        rope = None
        if c.pos_encoding == "learned" and t0 == 0:
            x = x + F.position_embedding(T, wpe.weight)  # (T, C) broadcast over B
        elif c.pos_encoding == "learned":
            x = x + F.embedding(self.xp.arange(t0, t0 + T), wpe.weight, check_ids=False)  # positions t0 .. t0+T-1
        elif c.pos_encoding == "sinusoidal":
            x = x + Tensor(self._sinusoid[t0:t0 + T])
        else:
            rope = (self._rope[0][t0:t0 + T], self._rope[1][t0:t0 + T])  # (T, HS) each, rotated in attention
        if self.training and c.dropout > 0:
            x = F.dropout(x, c.dropout, True, generator=gen)
        for i, block in enumerate(blocks):
            x = block(x, generator=gen, kv=None if cache is None else (cache.k[i], cache.v[i], t0), rope=rope)
        if cache is not None:
            cache.length = t0 + T
        x = ln_f(x)
        head = wte.weight if c.tie_embeddings else self.lm_head.weight  # (V, C)
        logits = F.linear(x, F.transpose(head, (1, 0)))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(F.reshape(logits, (B * T, c.vocab_size)), targets.reshape(B * T), check_targets=False)
        return logits, loss

    def _check_cache(self, cache, B: int, T: int, targets) -> int:
        """The cache's length, once it is known to hold B rows with room for T more positions."""
        if targets is not None:
            raise ValueError("a KV cache is for generation: give targets or a cache, not both")
        if cache.batch_size != B:
            raise ValueError(f"the KV cache holds {cache.batch_size} sequences, idx has {B}")
        if cache.length + T > self.config.block_size:
            raise ValueError(f"the KV cache holds {cache.length} positions: {T} more exceed block_size="
                             f"{self.config.block_size} (start a new cache from the last block_size ids)")
        return cache.length

    # --- generation ---------------------------------------------------------------------------
    def generate(self, input_ids, **options):
        """Prompts plus new ids, as transformers' generate: see npgpt.generation.generate.generate for the options
        (max_new_tokens or max_length, do_sample, temperature, top_k, top_p, repetition_penalty,
        num_return_sequences, eos_token_id, pad_token_id, seed, use_cache)."""
        from ..generation.generate import generate  # noqa: PLC0415 - generate sits above model in the import flow

        return generate(self, input_ids, **options)

    # --- GPT-2 / Hugging Face directories (npgpt/hf.py) -------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_name, dtype="float32", device=None, dropout=None, seed: int = 0) -> "GPT":
        """A Hugging Face directory's model (config.json with model_type gpt2, llama, qwen2 or qwen3 +
        model.safetensors or pytorch_model.bin), or a hub name such as "gpt2" downloaded through
        huggingface_hub; in eval mode, with the directory's tokenizer as `model.tokenizer` (vocab.json +
        merges.txt or tokenizer.json; None without). dropout: None takes
        the config's; seed seeds only the dropout generator. See npgpt.models.hf."""
        from .hf import load_pretrained  # noqa: PLC0415 - hf.py sits above model.py

        return load_pretrained(cls, path_or_name, dtype=dtype, device=device, dropout=dropout, seed=seed)

    def save_pretrained(self, path, tokenizer=None) -> list[str]:
        """Write a directory that transformers.AutoModelForCausalLM.from_pretrained loads as the same
        class: config.json, model.safetensors, and the tokenizer (`tokenizer`, else `self.tokenizer`
        when set): GPT-2's vocab.json + merges.txt (+ tokenizer_config.json, special_tokens_map.json),
        or tokenizer.json for the Llama family (llama, qwen2 or qwen3, whichever holds the config). A
        model the family cannot express (GPT-2: sinusoidal positions, no bias) raises ValueError saying
        which. Returns the paths."""
        from .hf import save_pretrained  # noqa: PLC0415

        return save_pretrained(self, path, tokenizer)


# layout -> names of (the trunk, token embedding, position embedding, blocks, final norm)
_NAMES = {"gpt2": ("transformer", "wte", "wpe", "h", "ln_f"),
          "llama": ("model", "embed_tokens", None, "layers", "norm")}
