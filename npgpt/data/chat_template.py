"""Chat templates: a conversation (a list of {"role", "content"} messages) -> the text a model reads.

A template is a Jinja2 string, rendered the way transformers' `apply_chat_template` renders it
(transformers/utils/chat_template_utils.py), so a Hugging Face directory's template gives the text
its tokenizer would:

    environment   jinja2's ImmutableSandboxedEnvironment with trim_blocks=True, lstrip_blocks=True and
                  the loopcontrols extension ({% break %}, {% continue %}); a {% generation %} block
                  renders its body (transformers uses it to mark assistant text; npgpt finds the
                  assistant spans by prefixes instead, see sft.py)
    globals       raise_exception(message) -> TemplateError, strftime_now(format), namespace, dict
    filters       tojson: json.dumps with ensure_ascii=False (Jinja's own escapes HTML characters)
    variables     messages, add_generation_prompt, and the tokenizer's special tokens by name
                  (bos_token, eos_token, ...), as transformers passes its special_tokens_map

Where the template comes from (`find_chat_template`): a directory's tokenizer_config.json
"chat_template" (a string; a list of named templates picks "default"), else its chat_template.jinja
(what transformers 5 writes), else None; callers then use CHATML.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from functools import lru_cache

from ..fileio import read_json

# ChatML, the template Qwen and many others ship: <|im_start|>role\n...<|im_end|>\n per message.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
ROLES = ("system", "user", "assistant")
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class ChatTemplateError(ValueError):
    """The template raised (raise_exception) or could not be compiled/rendered."""


@lru_cache(maxsize=8)
def _compile(template: str):
    import jinja2  # noqa: PLC0415 - only chat needs it
    from jinja2.ext import Extension, loopcontrols  # noqa: PLC0415
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415

    class Generation(Extension):
        """{% generation %} ... {% endgeneration %}: renders the body as it is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = dict
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"the chat template does not compile: {e}") from None


def render(template: str, messages: list[dict], add_generation_prompt: bool = False, **special_tokens) -> str:
    """The text of `messages` under `template` (see the module docstring); ChatTemplateError when the
    template refuses the conversation (its raise_exception) or fails."""
    import jinja2  # noqa: PLC0415

    try:
        return _compile(template).render(messages=[dict(m) for m in messages],
                                         add_generation_prompt=add_generation_prompt, **special_tokens)
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"the chat template refused the conversation: {e}") from None


def _token_text(value):
    """A special token as tokenizer_config.json spells it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def find_chat_template(path: str | None) -> tuple[str | None, dict]:
    """(template or None, {bos_token: ..., eos_token: ...}) of a tokenizer path: a directory's
    tokenizer_config.json (its "chat_template" and special tokens) or chat_template.jinja; a file
    path looks in the file's directory. None when there is no template."""
    if path is None:
        return None, {}
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    config_path = os.path.join(folder, "tokenizer_config.json")
    config = {}
    if os.path.isfile(config_path):
        config = read_json(config_path)
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: expected a JSON object")
    specials = {k: t for k in _SPECIAL_KEYS if (t := _token_text(config.get(k))) is not None}
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...], as transformers allows
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    jinja_path = os.path.join(folder, "chat_template.jinja")
    if template is None and os.path.isfile(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            template = f.read()
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{config_path}: chat_template must be a string, got {type(template).__name__}")
    return template, specials


def check_messages(messages, where: str) -> list[dict]:
    """The messages of one conversation, checked: a non-empty list of {"role", "content": str}; an
    optional system message first, then user and assistant turns alternating from a user turn,
    ending with an assistant turn; every assistant message non-empty. ValueError naming `where`."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: message {i} needs \"role\" and \"content\"")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ValueError(f"{where}: message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"{where}: message {i}'s content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    turns = out[1:] if out[0]["role"] == "system" else out
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            at = i + (len(out) - len(turns))
            raise ValueError(f"{where}: message {at} is a {m['role']} turn where a {want} turn belongs (an optional "
                             "system message first, then user and assistant turns alternating from a user turn)")
        if want == "assistant" and not m["content"]:
            raise ValueError(f"{where}: message {i + (len(out) - len(turns))} is an empty assistant turn")
    if not turns or turns[-1]["role"] != "assistant":
        raise ValueError(f"{where}: the conversation must end with an assistant turn (nothing to learn otherwise)")
    return out
