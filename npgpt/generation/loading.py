"""One way to load: a path -> (model, tokenizer).

A path is one of
    - an npgpt checkpoint file, or a training directory (its best.safetensors, else ckpt.safetensors):
      the model is built from the checkpoint's config and weights, the tokenizer from its JSON;
    - a GPT-2 / Hugging Face directory (it holds config.json): GPT.from_pretrained and
      BPETokenizer.from_pretrained read it.
"""

from __future__ import annotations

import dataclasses
import os

from ..models.gpt import GPT
from ..training.checkpoint import BEST, LATEST, load_checkpoint
from ..training.start import model_from_checkpoint

HF_CONFIG = "config.json"


def is_pretrained_dir(path) -> bool:
    """A GPT-2 / Hugging Face directory: one holding config.json (and no npgpt checkpoint)."""
    inside = os.path.isdir(path) and set(os.listdir(path))
    return bool(inside) and HF_CONFIG in inside and not {BEST, LATEST} & inside


def _hub_name(path: str) -> bool:
    """A name that is no local path and reads as a Hugging Face hub name ('gpt2', 'openai-community/gpt2'):
    from_pretrained downloads it, or says why it cannot (offline, huggingface_hub missing)."""
    from ..models.hf import HUB_NAME  # noqa: PLC0415

    first = path.split("/")[0]  # out/typo is a path under ./out, not the hub's owner "out"
    return not os.path.lexists(path) and not os.path.lexists(first) and bool(HUB_NAME.fullmatch(path)) and ".." not in path


def load_model(path, dtype="float32", device=None, seed: int = 0, **overrides):
    """(model, tokenizer) from an npgpt checkpoint file or training directory, or a GPT-2 directory.

    `overrides` replace fields of the model's config (dropout, say); `seed` seeds the dropout
    generator. The tokenizer is None for a GPT-2 directory without vocab.json and merges.txt.
    """
    path = os.fspath(path)
    if not is_pretrained_dir(path) and not _hub_name(path):
        ckpt = load_checkpoint(path)
        return model_from_checkpoint(ckpt, dtype, device, seed, **overrides), ckpt.load_tokenizer()
    dropout = overrides.pop("dropout", None)
    model = GPT.from_pretrained(path, dtype=dtype, device=device, dropout=dropout, seed=seed)
    tokenizer = model.tokenizer  # the directory's vocab.json + merges.txt, or None
    if overrides:  # other config fields: the same weights in a GPT of the changed config
        weights = model.state_dict()
        model = GPT(dataclasses.replace(model.config, **overrides), seed=seed, dtype=dtype, device=device)
        model.load_state_dict(weights)
        model.tokenizer = tokenizer
    return model, tokenizer
