"""Sampling: the distribution of next_token, top-k, greedy limit, cropping, modes, and bad settings."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import checkpoint as ck
from npgpt.generate import generate, next_token, sample
from npgpt.model import GPT, GPTConfig
from npgpt.tokenizers.char import CharTokenizer

CFG = GPTConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, n_embd=8, dropout=0.3)


def test_next_token_follows_softmax_and_top_k():
    logits = np.array([[0.0, 1.0, 2.0, -1.0, 0.5]])
    g = np.random.default_rng(0)
    n = 40000
    draws = np.array([next_token(logits, 1.0, None, g)[0] for _ in range(n)])
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    freq = np.bincount(draws, minlength=5) / n
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-9), (freq, p)
    draws = np.array([next_token(logits / 1.0, 2.0, 2, g)[0] for _ in range(4000)])
    assert set(draws.tolist()) == {1, 2}  # only the two largest
    q = np.exp(np.array([1.0, 2.0]) / 2.0)
    assert abs((draws == 2).mean() - q[1] / q.sum()) < 0.03
    batch = np.tile(logits, (3, 1))
    assert next_token(batch, 1.0, 1, g).tolist() == [2, 2, 2]


def greedy(model, idx, n):
    out = idx.copy()
    model.eval()
    for _ in range(n):
        logits, _ = model(out[:, -model.config.block_size:])
        out = np.concatenate([out, logits.data[:, -1].argmax(-1)[:, None]], axis=1)
    return out


def test_top_k_1_is_greedy_with_cropping():
    model = GPT(CFG, seed=1)
    prompt = np.array([[1, 2, 3, 4, 5, 6, 0, 1, 2]])  # longer than block_size 6: cropped
    out = generate(model, prompt, 10, temperature=0.7, top_k=1, generator=np.random.default_rng(0))
    assert out.shape == (1, 19) and np.array_equal(out[:, :9], prompt)
    assert np.array_equal(out, greedy(model, prompt, 10))


def test_seeded_deterministic_and_eval_mode_restored():
    model = GPT(CFG, seed=2)
    model.train()
    before = model.dropout_generator.bit_generator.state
    x = np.zeros((3, 1), dtype=np.int64)
    a = generate(model, x, 12, top_k=None, generator=np.random.default_rng(5))
    b = generate(model, x, 12, top_k=None, generator=np.random.default_rng(5))
    c = generate(model, x, 12, top_k=None, generator=np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert model.training  # restored
    assert model.dropout_generator.bit_generator.state == before  # eval mode: no dropout masks drawn
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < CFG.vocab_size


def test_bad_settings():
    model = GPT(CFG, seed=0)
    x = np.zeros((1, 1), dtype=np.int64)
    for t in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            generate(model, x, 3, temperature=t)
    for k in (0, -2, 1.5):
        with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
            generate(model, x, 3, top_k=k)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        generate(model, x, -1)
    with pytest.raises(ValueError, match=r"idx must be a \(B, T\) integer array"):
        generate(model, np.zeros(3, dtype=np.int64), 3)
    with pytest.raises(IndexError, match="outside"):
        generate(model, np.array([[99]]), 3)


@pytest.fixture
def ckpt_dir(tmp_path):
    tok = CharTokenizer.train("abcdef\n")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8), seed=0)
    ck.save_checkpoint(str(tmp_path / ck.BEST), model=model, optimizer=None, iter_num=0, best_val_loss=None,
                       train_config={}, rng={}, tokenizer=tok)
    return str(tmp_path)


def test_sample_from_checkpoint(ckpt_dir):
    texts = sample(ckpt_dir, prompt="abc", max_new_tokens=20, num_samples=3, seed=1, top_k=None)
    assert len(texts) == 3 and all(t.startswith("abc") and len(t) == 23 for t in texts)
    assert set("".join(texts)) <= set("abcdef\n")
    assert texts == sample(ckpt_dir, prompt="abc", max_new_tokens=20, num_samples=3, seed=1, top_k=None)
    default = sample(ckpt_dir, max_new_tokens=5)
    assert default[0].startswith("\n") and len(default[0]) == 6
    with pytest.raises(ValueError, match=r"prompt: character 'z' .* not in the vocabulary"):
        sample(ckpt_dir, prompt="abz")
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        sample(ckpt_dir, num_samples=0)
    with pytest.raises(ValueError, match="temperature"):
        sample(ckpt_dir, temperature=0.0)
