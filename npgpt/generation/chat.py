"""`npgpt chat DIR`: a conversation with a model, one user line at a time.

    history = [system message]                                   (with --system)
    for each line read (Ctrl-D, end of input, ends the chat):
        history += user message
        prompt = chat template (history, add_generation_prompt=True) -> ids
        while prompt + max_new_tokens > block_size and older turns remain:
            drop the oldest user/assistant pair (the system message stays), and say so
        the reply is generated and streamed; it ends at the end-of-turn token (ChatML's <|im_end|>),
        the end-of-text token, or max_new_tokens; history += assistant message

The template: --chat-template FILE, else a Hugging Face directory's own (tokenizer_config.json or
chat_template.jinja), else the chat template of the SFT data a checkpoint was trained on (its
meta.json), else ChatML.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..data.chat_template import CHATML, find_chat_template, render
from .generate import generate
from .loading import is_pretrained_dir, load_model
from .sample import TextStreamer, special_ids


class ReplyStreamer(TextStreamer):
    """TextStreamer that leaves out the prompt (generate's first put): only the reply is written."""

    def put(self, ids) -> None:
        if getattr(self, "_prompt_seen", False):
            super().put(ids)
        self._prompt_seen = True


def _checkpoint_template(path: str) -> tuple[str | None, dict]:
    """The chat template and special tokens of the SFT data a checkpoint was trained on, if still there."""
    from ..training.checkpoint import load_checkpoint  # noqa: PLC0415

    data_dir = load_checkpoint(path).train_config.get("data_dir")
    meta_path = os.path.join(data_dir or "", "meta.json")
    if not data_dir or not os.path.isfile(meta_path):
        return None, {}
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != "sft":
        return None, {}
    return meta.get("chat_template"), dict(meta.get("special_tokens") or {})


def chat_template_for(path: str, template_file: str | None = None) -> tuple[str, dict]:
    """(template, special tokens) for the model at `path` (see the module docstring)."""
    template, specials = (find_chat_template(path) if is_pretrained_dir(path) else _checkpoint_template(path))
    if template_file is not None:
        with open(template_file, encoding="utf-8") as f:
            template = f.read()
    return template or CHATML, specials


def _stop_ids(tok, template: str, specials: dict) -> list[int]:
    """The special tokens that end a reply: the template's end-of-turn token and the eos/end-of-text."""
    from ..data.sft import end_of_turn  # noqa: PLC0415

    names = {end_of_turn(tok, template, specials), specials.get("eos_token"), "<|endoftext|>"}
    table = getattr(tok, "special_tokens", {})
    return sorted(table[n] for n in names if n in table)


def chat(path, *, system: str | None = None, template_file: str | None = None, max_new_tokens: int = 200,
         do_sample: bool = True, temperature: float = 0.8, top_k: int | None = 200, top_p: float | None = None,
         repetition_penalty: float = 1.0, seed=1337, use_cache: bool = True, dtype: str = "float32",
         device: str | None = None, inp, out, note=None) -> list[dict]:
    """Run the chat loop over the lines of `inp`, writing replies to `out` as they come and notes
    (dropped turns, the end) to `note` (a stream; default `out`). Returns the final history."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    note = note or out
    model, tok = load_model(path, dtype=dtype, device=device)
    if tok is None:
        raise ValueError(f"{path}: no tokenizer here to turn text into ids")
    template, specials = chat_template_for(path, template_file)
    stops, skip = _stop_ids(tok, template, specials), special_ids(tok)
    block = model.config.block_size
    history = [{"role": "system", "content": system}] if system else []
    generator = np.random.default_rng(seed)
    note.write(f"chatting with {path} (context {block} tokens); end with Ctrl-D\n")
    while True:
        out.write("> ")
        out.flush()
        line = inp.readline()
        if not line:  # Ctrl-D / end of input
            note.write("\n")
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        history.append({"role": "user", "content": text})
        ids = tok.encode(render(template, history, add_generation_prompt=True, **specials), allowed_special="all")
        first = 1 if system else 0  # the oldest turn that may go
        while len(ids) + max_new_tokens > block and len(history) - first > 1:
            del history[first:first + 2]  # the oldest user message and its reply
            note.write(f"(dropped the oldest turn to stay within the context window of {block} tokens)\n")
            ids = tok.encode(render(template, history, add_generation_prompt=True, **specials), allowed_special="all")
        room = min(max_new_tokens, block - len(ids))
        if room < 1:
            history.pop()
            note.write(f"(that message takes {len(ids)} tokens with the template: no room left in the context window "
                       f"of {block}; say something shorter)\n")
            continue
        new = generate(model, [ids], max_new_tokens=room, do_sample=do_sample, temperature=temperature, top_k=top_k,
                       top_p=top_p, repetition_penalty=repetition_penalty, eos_token_id=stops, seed=generator,
                       use_cache=use_cache, streamer=ReplyStreamer(tok, out, skip=skip))[0, len(ids):]
        out.write("\n")
        out.flush()
        reply = [i for i in new.tolist() if i not in stops]
        history.append({"role": "assistant", "content": tok.decode(reply, skip_special_tokens=True)})
    out.flush()
    return history
