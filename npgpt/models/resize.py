"""Growing a model's vocabulary: new rows for tokens added to its tokenizer (chat special tokens)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..backend import to_numpy
from .gpt import GPT

# The head's rows live in the token embedding when tied, in lm_head.weight otherwise.
_ROWS = ("transformer.wte.weight", "lm_head.weight")


def grow_vocab(model: GPT, vocab_size: int) -> GPT:
    """A GPT equal to `model` but with `vocab_size` rows in its token embedding and head.

    Each new row is the mean of the existing rows of its matrix (the embedding; an untied head's
    own). transformers' resize_token_embeddings (mean_resizing=True, its default since 4.46) draws
    the new rows from a normal with that mean and 1e-9 times the rows' covariance; npgpt takes the
    mean itself, deterministic and within that noise of it. With every new head row equal to the mean,
    each new token's logit is the mean of the old logits, so the model's distribution over the old
    tokens changes little (softmax renormalises over a few more entries). The mode, dtype, device,
    dropout generator and tokenizer attribute carry over; every other weight is copied as it is.
    """
    old = model.config.vocab_size
    if vocab_size == old:
        return model
    if vocab_size < old:
        raise ValueError(f"grow_vocab: {vocab_size} rows is fewer than the model's {old}")
    state = {}
    for name, a in model.state_dict().items():
        a = to_numpy(a)
        if name in _ROWS:
            mean = a.astype(np.float64).mean(axis=0, keepdims=True).astype(a.dtype)  # (1, C)
            a = np.concatenate([a, np.repeat(mean, vocab_size - old, axis=0)], axis=0)  # (vocab_size, C)
        state[name] = a
    grown = GPT(dataclasses.replace(model.config, vocab_size=vocab_size), dtype=model.dtype, device=model.device,
                init=False)
    grown.load_state_dict(state)
    grown.dropout_generator = model.dropout_generator
    grown.tokenizer = model.tokenizer
    return grown.train(model.training)
