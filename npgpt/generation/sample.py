"""Text in, text out: what `npgpt sample` and the demo run. Prompt text -> ids -> generate -> text,
streamed as it is generated (TextStreamer prints complete characters only)."""

from __future__ import annotations

import codecs

import numpy as np

from .generate import generate
from .loading import load_model


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

