"""One way to load: a path -> (model, tokenizer), and the text glue around generate.

A path is one of
    - an npgpt checkpoint file, or a training directory (its best.safetensors, else ckpt.safetensors):
      the model is built from the checkpoint's config and weights, the tokenizer from its JSON;
    - a GPT-2 / Hugging Face directory (it holds config.json): GPT.from_pretrained and
      BPETokenizer.from_pretrained read it.
`sample` is what `npgpt sample` and the demo run: prompt text -> ids -> generate -> text, with the
text streamed as it is generated (TextStreamer prints complete characters only).
"""

from __future__ import annotations

import codecs
import dataclasses
import os

import numpy as np

from ..training.checkpoint import BEST, LATEST, load_checkpoint
from ..training.start import model_from_checkpoint
from .generate import generate
from ..models.gpt import GPT

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


# --- text ----------------------------------------------------------------------------------
def encode_prompt(tokenizer, prompt: str | None) -> list[int]:
    """The prompt's ids; without a prompt the end-of-text token when there is one, else a newline."""
    if prompt:
        try:
            return tokenizer.encode(prompt, allowed_special="all")
        except ValueError as e:
            raise ValueError(f"prompt: {e}") from None
    if tokenizer.eot_id is not None:
        return [tokenizer.eot_id]
    try:
        return tokenizer.encode("\n")
    except ValueError:
        raise ValueError("this tokenizer cannot encode a newline and has no end-of-text token: give a prompt") from None


def special_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (<|endoftext|>, ...), which the text leaves out."""
    return {int(i) for i in getattr(tokenizer, "special_tokens", {}).values()}


class TextStreamer:
    """generate's streamer: writes the text of one sequence to `out` as its ids arrive.

    generate calls put(prompt ids (1, T)), then put(new id (1,)) once per step, then end().
    Ids in `skip` (special tokens) are left out. A byte-level tokenizer's token may end inside a
    multi-byte UTF-8 character: the bytes wait in an incremental decoder until the character is
    complete, so only whole characters are written (invalid bytes become U+FFFD, as decode does).
    `text` is everything written so far.
    """

    def __init__(self, tokenizer, out=None, skip=()):
        self.tokenizer, self.out, self.skip = tokenizer, out, set(skip)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace") if hasattr(tokenizer, "decode_bytes") else None
        self.pieces: list[str] = []

    def put(self, ids) -> None:
        ids = np.asarray(ids)
        if ids.shape[0] != 1:
            raise ValueError(f"TextStreamer follows one sequence, got a batch of {ids.shape[0]}")
        for i in ids.reshape(-1).tolist():
            if i not in self.skip:
                self._write(self._utf8.decode(self.tokenizer.decode_bytes([i])) if self._utf8
                            else self.tokenizer.decode([i]))

    def end(self) -> None:
        if self._utf8:
            self._write(self._utf8.decode(b"", final=True))  # a character cut off at the end -> U+FFFD

    def _write(self, text: str) -> None:
        if text:
            self.pieces.append(text)
            if self.out is not None:
                self.out.write(text)
                self.out.flush()

    @property
    def text(self) -> str:
        return "".join(self.pieces)


SEPARATOR = "\n---------------\n"


def sample(path, prompt: str | None = None, *, num_samples: int = 1, max_new_tokens: int | None = None,
           max_length: int | None = None, do_sample: bool = True, temperature: float = 0.8, top_k: int | None = 200,
           top_p: float | None = None, repetition_penalty: float = 1.0, stop_at_eos: bool = False,
           seed=1337, use_cache: bool = True, dtype: str = "float32", device: str | None = None, out=None) -> list[str]:
    """num_samples texts (prompt included, special tokens left out) from a checkpoint or GPT-2 directory.

    Samples are generated one after another from one generator seeded with `seed` (repeatable);
    with `out` (a text stream such as sys.stdout) each is written there as it is generated, the
    samples separated by a dashed line. max_new_tokens is 200 when neither length is given;
    stop_at_eos ends a sample at the tokenizer's end-of-text token.
    """
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if not do_sample and num_samples > 1:
        raise ValueError(f"greedy decoding gives one text: num_samples={num_samples} needs sampling")
    if max_new_tokens is None and max_length is None:
        max_new_tokens = 200
    model, tok = load_model(path, dtype=dtype, device=device)
    if tok is None:
        raise ValueError(f"{path}: no tokenizer here (vocab.json and merges.txt) to turn text into ids")
    ids = encode_prompt(tok, prompt)
    eos = []  # no eos unless asked, even for a model with a tokenizer attached
    if stop_at_eos:
        if tok.eot_id is None:
            raise ValueError("this tokenizer has no end-of-text token to stop at")
        eos = tok.eot_id
    generator = np.random.default_rng(seed)
    texts = []
    for n in range(num_samples):
        if out is not None and n:
            out.write(SEPARATOR)
        streamer = TextStreamer(tok, out, skip=special_ids(tok))
        generate(model, [ids], max_new_tokens=max_new_tokens, max_length=max_length, do_sample=do_sample,
                 temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                 eos_token_id=eos, seed=generator, use_cache=use_cache, streamer=streamer)
        texts.append(streamer.text)
    if out is not None:
        out.write("\n")
        out.flush()
    return texts

