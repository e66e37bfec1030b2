"""Supervised fine-tuning (npgpt/data/sft.py, training/step.py's SFT path, models/resize.py).

The accumulation proof: on examples whose answers have very different lengths, after several float64
steps the weights of batch_size x grad_accum = 4x1, 2x2, 1x4 and 2 ranks of 1x2 agree within 1e-12;
a mean of micro-batch means (the bug transformers fixed in PR #34191) gives different weights.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt.data.sft import SFTData, open_data, prepare_sft, read_jsonl
from npgpt.models.resize import grow_vocab
from npgpt.tokenizers.bpe import BPETokenizer
from npgpt.training.config import TrainConfig
from npgpt.training.dist import World
from npgpt.training.optim import configure_optimizer
from npgpt.training.step import accumulate_gradients, estimate_loss, sft_step, token_loss_sum

TEXT = "the quick brown fox jumps over the lazy dog; reverse add numbers 0123456789 hello world " * 8


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    tok = BPETokenizer.train(TEXT, 300, special_tokens=["<|endoftext|>"])
    path = str(d / "tokenizer.json")
    tok.save(path)
    return path


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


def uneven_rows(n=12):
    """Answers of 1 to ~30 tokens, so micro-batches count very different numbers of tokens."""
    rows = []
    for i in range(n):
        answer = " fox" if i % 3 == 0 else " " + " ".join(["quick brown dog"] * (1 + (i * 5) % 9))
        if i % 4 == 1:
            rows.append({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"},
                                      {"role": "assistant", "content": answer.strip()},
                                      {"role": "user", "content": "more"}, {"role": "assistant", "content": "lazy"}]})
        else:
            rows.append({"prompt": f"add {i} and {i + 1}:", "completion": answer})
    return rows


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, tok_file):
    d = tmp_path_factory.mktemp("sft")
    src = write_jsonl(d / "ex.jsonl", uneven_rows())
    prepare_sft(src, str(d / "data"), tokenizer_file=tok_file, val_fraction=0.25, log=lambda *a: None)
    return str(d / "data")


# --- data -----------------------------------------------------------------------------------------
def test_masks_count_completions_and_assistant_turns_only(sft_dir):
    data = open_data(sft_dir)
    assert isinstance(data, SFTData) and data.meta["format"] == "sft"
    meta, tok = data.meta, data.tokenizer
    assert meta["examples"] == {"train": 9, "val": 3}
    assert set(meta["added_tokens"]) == {"<|im_start|>", "<|im_end|>"} and meta["end_of_turn"] == "<|im_end|>"
    rows = uneven_rows()
    for e in range(9):
        x, y = data.batch("train", [e])
        counted = tok.decode([t for t in y[0] if t >= 0])
        row = rows[e]
        if "prompt" in row:
            assert counted == row["completion"] + "<|endoftext|>"
            assert tok.decode(x[0]) + tok.decode([int(y[0, -1])]) == row["prompt"] + row["completion"] + "<|endoftext|>"
        else:
            assert counted == row["messages"][2]["content"] + "<|im_end|>" + "lazy<|im_end|>"
    for s in ("train", "val"):
        assert meta["loss_tokens"][s] == int(data.mask[s].sum()) and meta["tokens"][s] == len(data.ids[s])


@pytest.mark.parametrize("line, message", [
    ("{not json", "x.jsonl:2: not JSON"),
    ('{"prompt": "a"}', 'x.jsonl:2: missing "completion"'),
    ('{"prompt": "a", "completion": ""}', "x.jsonl:2: empty completion"),
    ('{"messages": [{"role": "assistant", "content": "hi"}]}', "x.jsonl:2: message 0 is a assistant turn where a user"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}', "x.jsonl:2: message 1"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}', "role 'bot'"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "must end with an assistant turn"),
    ('{"text": "a"}', "x.jsonl:2: expected"),
])
def test_bad_lines_are_refused_with_their_line_number(tmp_path, line, message):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "completion": "b"}, line])
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        read_jsonl(path)


def test_long_examples_are_skipped_and_counted(tmp_path, tok_file):
    rows = [{"prompt": "add 1:", "completion": " fox"}] * 3 + [{"prompt": "add 2:", "completion": " quick" * 40}]
    said = []
    meta = prepare_sft(write_jsonl(tmp_path / "x.jsonl", rows), str(tmp_path / "d"), tokenizer_file=tok_file,
                       block_size=16, log=said.append)
    assert meta["skipped"] == 1 and sum(meta["examples"].values()) == 3
    assert any("skipped 1 of 4" in s for s in said)
    with pytest.raises(ValueError, match="--block-size 4"):
        SFTData(str(tmp_path / "d")).check_block_size(4)


def test_char_tokenizer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="special tokens"):
        prepare_sft(write_jsonl(tmp_path / "x.jsonl", uneven_rows(4)), str(tmp_path / "d"), tokenizer="char")


# --- the step's loss ---------------------------------------------------------------------------------
def tiny_model(vocab, seed=0):
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=128, vocab_size=vocab, dropout=0.0),
               seed=seed, dtype="float64")


def make_cfg(data_dir, batch_size, grad_accum):
    return TrainConfig.from_values({"data_dir": data_dir, "batch_size": batch_size, "grad_accum": grad_accum,
                                    "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 128, "dropout": 0.0,
                                    "dtype": "float64", "lr": 3e-2, "eval_iters": 2})


class Rank(World):
    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def run_steps(data, batch_size, grad_accum, ranks=1, steps=4, accumulate=accumulate_gradients):
    """`steps` AdamW steps; with ranks > 1 each rank's gradients are summed as GradientSum sums them.
    Returns the weights (rank 0's; every rank holds the same)."""
    cfg = make_cfg(data.data_dir, batch_size, grad_accum)
    models = [tiny_model(data.vocab_size) for _ in range(ranks)]
    opts = [configure_optimizer(m, lr=cfg.lr, weight_decay=cfg.weight_decay) for m in models]
    gens = [np.random.default_rng([cfg.seed, 2]) for _ in range(ranks)]
    for _ in range(steps):
        for r in range(ranks):
            accumulate(models[r], data, cfg, gens[r], Rank(r, ranks), 0)
        for ps in zip(*(m.parameters() for m in models)):
            total = sum(p.grad for p in ps)
            for p in ps:
                p.grad = total.copy()
        for o in opts:
            o.step()
            o.zero_grad()
    return {k: np.array(v) for k, v in models[0].state_dict().items()}


def mean_of_means(model, data, cfg, gen, world, draws):
    """The wrong method: each micro-batch's mean over its counted tokens, divided by K."""
    micro, _ = sft_step(data, cfg, gen, world)
    for j in range(world.rank, len(micro), world.size):
        x, y = micro[j]
        loss = token_loss_sum(model, x, y) * (1.0 / (int((y != -100).sum()) * len(micro)))
        loss.backward()


def worst(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_accumulation_is_exact_whatever_the_split(sft_dir, capsys):
    data = open_data(sft_dir)
    ref = run_steps(data, 4, 1)
    splits = {"2x2": run_steps(data, 2, 2), "1x4": run_steps(data, 1, 4), "2 ranks of 1x2": run_steps(data, 1, 2, ranks=2)}
    wrong = {"2x2": run_steps(data, 2, 2, accumulate=mean_of_means), "1x4": run_steps(data, 1, 4, accumulate=mean_of_means)}
    with capsys.disabled():
        print("\nSFT accumulation, float64, max |w - w(4x1)| after 4 steps:")
        for name, w in splits.items():
            print(f"  sum / step count  {name:>15}: {worst(w, ref):.3e}")
        for name, w in wrong.items():
            print(f"  mean of means     {name:>15}: {worst(w, ref):.3e}")
    for name, w in splits.items():
        assert worst(w, ref) < 1e-12, name
    for name, w in wrong.items():
        assert worst(w, ref) > 1e-6, name  # the counts differ, so the wrong method moves the weights elsewhere
    # the wrong method with one micro-batch is the right one: the difference above is the method's
    assert worst(run_steps(data, 4, 1, accumulate=mean_of_means), ref) < 1e-12


def test_micro_batch_with_nothing_to_count_adds_zero(sft_dir):
    data = open_data(sft_dir)
    model = tiny_model(data.vocab_size)
    x, y = data.batch("train", [0, 1])
    y[:] = -100
    loss = token_loss_sum(model, x, y) * (1.0 / 7)
    loss.backward()
    assert float(loss.data) == 0.0
    assert all(p.grad is None or not np.any(p.grad) for p in model.parameters())
    assert all(p.grad is None or np.all(np.isfinite(p.grad)) for p in model.parameters())


def test_step_loss_equals_hugging_face_float64(sft_dir, tmp_path):
    """One step's loss (1x4 micro-batches) = F.cross_entropy over HF GPT2LMHeadModel's float64 logits with
    labels -100 outside the counted tokens, shifted as transformers shifts them."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    data = open_data(sft_dir)
    model = tiny_model(data.vocab_size, seed=3)
    cfg = make_cfg(sft_dir, 1, 4)
    ours = float(accumulate_gradients(model, data, cfg, np.random.default_rng([cfg.seed, 2]), World(), 0))
    model.save_pretrained(str(tmp_path / "hf"))
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf"), dtype=torch.float64).eval()
    examples = data.draw("train", 4, np.random.default_rng([cfg.seed, 2]))
    x, y = data.batch("train", examples)
    ids = np.concatenate([x, y[:, -1:]], axis=1)  # labels at positions: the counted next ids
    labels = np.full(ids.shape, -100)
    labels[:, 1:] = y
    with torch.no_grad():
        logits = hf(torch.tensor(ids[:, :-1])).logits  # float64
    theirs = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               torch.tensor(labels[:, 1:]).reshape(-1), ignore_index=-100).item()
    assert abs(ours - theirs) <= 1e-12 * abs(theirs), (ours, theirs)


def test_eval_is_the_counted_token_mean(sft_dir):
    data = open_data(sft_dir)
    model = tiny_model(data.vocab_size)
    cfg = make_cfg(sft_dir, 2, 1)
    got = estimate_loss(model, data, cfg, it=0)
    total = count = 0.0
    for s, split in enumerate(("train", "val")):
        g = np.random.default_rng([cfg.seed, 3, 0, s])
        total = count = 0.0
        for _ in range(cfg.eval_iters):
            x, y = data.batch(split, data.draw(split, cfg.batch_size, g))
            model.eval()
            total += float(token_loss_sum(model, x, y).data)
            count += int((y != -100).sum())
        assert abs(got[split] - total / count) < 1e-12


# --- growing the vocabulary --------------------------------------------------------------------------
def test_grow_vocab_appends_mean_rows():
    model = tiny_model(20)
    grown = grow_vocab(model, 23)
    old, new = np.array(model.state_dict()["transformer.wte.weight"]), np.array(grown.state_dict()["transformer.wte.weight"])
    assert new.shape == (23, 16) and np.array_equal(new[:20], old)
    assert np.allclose(new[20:], old.mean(axis=0), atol=1e-15, rtol=0)
    ids = np.array([[1, 2, 3]])
    assert np.allclose(np.array(grown(ids)[0].data)[..., :20], np.array(model(ids)[0].data), atol=1e-12)


# --- chat templates as transformers renders them ------------------------------------------------------
LLAMA3_LIKE = ("{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '<|im_end|>\\n\\n' + "
               "message['content'] | trim + '<|endoftext|>' }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|im_start|>assistant<|im_end|>\\n\\n' }}{% endif %}")
# trim_blocks / lstrip_blocks, namespace, loop, tojson, upper, raise_exception and {% generation %}
FANCY = """{%- set ns = namespace(n=0) -%}
{% for message in messages %}
  {% if message.role == 'system' and not loop.first %}{{ raise_exception('the system message goes first') }}{% endif %}
  {% set ns.n = ns.n + 1 %}
  {% if message.role == 'assistant' %}
{{ 'A' ~ ns.n ~ ': ' }}{% generation %}{{ message.content }}{{ eos_token }}{% endgeneration %}

  {% else %}
    {{ message.role | upper }}: {{ message.content | tojson }}
  {% endif %}
{% endfor %}
{% if add_generation_prompt %}{{ 'A' ~ (ns.n + 1) ~ ': ' }}{% endif %}"""
CONVERSATION = [{"role": "system", "content": "be brief <&>"}, {"role": "user", "content": "  hello \"fox\" é "},
                {"role": "assistant", "content": "quick dog"}, {"role": "user", "content": "more"},
                {"role": "assistant", "content": " lazy\n"}]


def hf_tokenizer_dir(tmp_path, tok, template):
    tok.save_tokenizer_json(str(tmp_path / "tokenizer.json"))
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump({"chat_template": template, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f)
    return str(tmp_path)


@pytest.mark.parametrize("name", ["chatml", "llama3_like", "fancy"])
def test_templates_render_and_tokenize_as_transformers(sft_dir, tmp_path, name):
    transformers = pytest.importorskip("transformers")
    from npgpt.data.chat_template import CHATML, find_chat_template, render  # noqa: PLC0415
    from npgpt.data.sft import conversation_segments, encode_segments  # noqa: PLC0415

    template = {"chatml": CHATML, "llama3_like": LLAMA3_LIKE, "fancy": FANCY}[name]
    tok = open_data(sft_dir).tokenizer  # holds <|im_start|>, <|im_end|>, <|endoftext|>
    folder = hf_tokenizer_dir(tmp_path, tok, template)
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    found, specials = find_chat_template(folder)
    assert found == template and specials["eos_token"] == "<|endoftext|>"
    for msgs in (CONVERSATION, CONVERSATION[1:4]):
        for gen in (False, True):
            want = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert render(template, msgs, add_generation_prompt=gen, **specials) == want
    ids, mask = encode_segments(tok, conversation_segments(CONVERSATION, template, specials))
    assert ids.tolist() == list(hf.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False))
    counted = tok.decode(ids[mask].tolist())
    end = {"chatml": "<|im_end|>", "llama3_like": "<|endoftext|>", "fancy": "<|endoftext|>"}[name]
    # fancy: "A3: quick" encodes as "A3:" + " quick", a token that straddles the answer's start and counts
    body = {"llama3_like": ["quick dog", "lazy"], "fancy": [" quick dog", " lazy\n"]}.get(name, ["quick dog", " lazy\n"])
    assert counted == body[0] + end + body[1] + end
    if name == "fancy":
        with pytest.raises(ValueError, match="the system message goes first"):
            render(template, CONVERSATION[1:2] + CONVERSATION[:1], **specials)


def test_prepare_uses_the_directory_template(sft_dir, tmp_path):
    tok = open_data(sft_dir).tokenizer
    folder = hf_tokenizer_dir(tmp_path, tok, FANCY)
    src = write_jsonl(tmp_path / "x.jsonl", [{"messages": CONVERSATION}] * 3)
    meta = prepare_sft(src, str(tmp_path / "d"), tokenizer_file=folder, log=lambda *a: None)
    assert meta["chat_template_source"] == "tokenizer_config.json" and meta["added_tokens"] == {}
    data = SFTData(str(tmp_path / "d"))
    x, y = data.batch("train", [0])
    assert data.tokenizer.decode([t for t in y[0] if t >= 0]) == " quick dog<|endoftext|> lazy\n<|endoftext|>"
