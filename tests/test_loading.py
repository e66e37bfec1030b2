"""loading.py: a checkpoint (file or training directory) -> (model, tokenizer), streamed text, sample()."""

from __future__ import annotations

import ast
import io
import os

import numpy as np
import pytest

from npgpt.training import checkpoint as ck
from npgpt.generation.loading import load_model
from npgpt.generation.sample import TextStreamer, encode_prompt, sample
from npgpt.models.gpt import GPT, GPTConfig
from npgpt.tokenizers import BPETokenizer, CharTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOT = "<|endoftext|>"


def save(path, model, tok):
    ck.save_checkpoint(str(path), model=model, optimizer=None, iter_num=3, best_val_loss=None,
                       train_config={}, rng={}, tokenizer=tok)


@pytest.fixture
def char_dir(tmp_path):
    tok = CharTokenizer.train("abcdef\n")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8), seed=4)
    save(tmp_path / ck.BEST, model, tok)
    return tmp_path, model


def test_load_model_from_a_checkpoint_file_or_directory(char_dir):
    d, model = char_dir
    for path in (str(d), str(d / ck.BEST)):
        loaded, tok = load_model(path, dtype="float64")
        assert loaded.config == model.config and loaded.dtype == np.float64
        for name, a in model.state_dict().items():
            assert np.array_equal(loaded.state_dict()[name], a.astype(np.float64)), name
        assert tok.decode(tok.encode("fade")) == "fade"
    loaded, _ = load_model(d, seed=9, dropout=0.25)
    assert loaded.config.dropout == 0.25
    assert loaded.dropout_generator.random() == GPT(model.config, seed=9).dropout_generator.random()
    with pytest.raises(ValueError, match="no such checkpoint"):
        load_model(d / "missing")
    with pytest.raises(ValueError, match="GPTConfig.n_head"):
        load_model(d, n_head=0)


def test_checkpoint_does_not_import_the_model():
    """checkpoint.py sits below the model: it reads and writes files, loading.py builds models."""
    tree = ast.parse(open(os.path.join(ROOT, "npgpt", "training", "checkpoint.py"), encoding="utf-8").read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.lstrip(".").split(".")[0] in ("model", "models", "nn", "generate", "generation", "loading")}
    assert "..fileio" in imported or "fileio" in imported and not hasattr(ck.Checkpoint, "build_model")


def test_encode_prompt_defaults():
    assert encode_prompt(CharTokenizer.train("ab\n"), None) == [0]  # "\n" sorts first
    bpe = BPETokenizer.train("hello there", 258, special_tokens=[EOT])
    assert encode_prompt(bpe, "") == [bpe.eot_id]
    assert encode_prompt(bpe, "hi" + EOT) == bpe.encode("hi" + EOT, allowed_special="all")
    with pytest.raises(ValueError, match="prompt: character 'z'"):
        encode_prompt(CharTokenizer.train("ab\n"), "abz")
    with pytest.raises(ValueError, match="cannot encode a newline"):
        encode_prompt(CharTokenizer.train("ab"), None)


class Recorder(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, s):
        self.writes.append(s)
        return super().write(s)


def test_streamer_writes_whole_characters_only():
    text = "naïve café — 日本語 ✓ ok"
    bpe = BPETokenizer.train("plain ascii words", 257, special_tokens=[EOT])  # one merge: characters stay split in bytes
    ids = bpe.encode(text)
    out = Recorder()
    s = TextStreamer(bpe, out, skip={bpe.eot_id})
    s.put(np.array([ids[:3]]))
    for i in ids[3:] + [bpe.eot_id]:
        s.put(np.array([i]))
    s.end()
    assert s.text == out.getvalue() == text  # the end-of-text token left out
    assert "" not in out.writes and all("\ufffd" not in w for w in out.writes)
    assert len(out.writes) < len(ids)  # bytes of a character waited for the rest
    cut = TextStreamer(bpe, None)
    cut.put(np.array([bpe.encode("é")[:1]]))
    cut.end()
    assert cut.text == "\ufffd"  # a character cut off at the end, as decode shows it
    with pytest.raises(ValueError, match="one sequence"):
        cut.put(np.array([1, 2]))


def test_sample_streams_what_it_returns(char_dir):
    d, _ = char_dir
    out = Recorder()
    texts = sample(d, "abc", num_samples=3, max_new_tokens=20, seed=1, top_k=None, out=out)
    assert len(texts) == 3 and all(t.startswith("abc") and len(t) == 23 for t in texts)
    assert out.getvalue() == "\n---------------\n".join(texts) + "\n"
    assert len(out.writes) > 60  # a piece per token, not a text per sample
    assert texts == sample(d, "abc", num_samples=3, max_new_tokens=20, seed=1, top_k=None)
    assert texts == sample(d, "abc", num_samples=3, max_new_tokens=20, seed=1, top_k=None, use_cache=False)
    assert sample(d, max_length=5)[0].startswith("\n") and len(sample(d, max_length=5)[0]) == 5
    assert len(sample(d)[0]) == 201  # newline prompt + 200 by default
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        sample(d, num_samples=0)
    with pytest.raises(ValueError, match="greedy decoding gives one text"):
        sample(d, do_sample=False, num_samples=2)
    with pytest.raises(ValueError, match="no end-of-text token to stop at"):
        sample(d, stop_at_eos=True)
    with pytest.raises(ValueError, match="temperature"):
        sample(d, temperature=0.0)


def test_sample_stops_at_end_of_text(tmp_path):
    """A model that says 'a' first, then (with 'a' penalised) <|endoftext|>, then 'a' again."""
    tok = BPETokenizer.train("a b", 257, special_tokens=[EOT])
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8, tie_embeddings=False)
    model = GPT(cfg, seed=0)
    t = model.transformer
    t.ln_f.weight.data[...] = 0.0
    t.ln_f.bias.data[...] = 1.0  # every position's final features are ones: logits = row sums of the head
    head = model.lm_head.weight.data
    head[...] = 0.0
    a = tok.encode("a")[0]
    head[a], head[tok.eot_id] = 2.0, 1.0  # logits 16 for 'a', 8 for the end, 0 elsewhere
    save(tmp_path / ck.BEST, model, tok)
    kw = dict(do_sample=False, repetition_penalty=3.0, max_new_tokens=6)
    assert sample(tmp_path, "b", stop_at_eos=True, **kw) == ["ba"]
    assert sample(tmp_path, "b", **kw)[0].startswith("baa")  # on past the (unprinted) end-of-text
