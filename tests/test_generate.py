"""Generation without transformers: process_logits's rules, sampling, eos/pad, bad settings.

The KV cache has tests/test_kv_cache.py; tests/test_generate_hf.py compares with transformers itself.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npgpt.generation.generate import _sample, generate, process_logits
from npgpt.models.gpt import GPT, GPTConfig
from npgpt.tensor import no_grad
from npgpt.tokenizers import CharTokenizer

CFG = GPTConfig(vocab_size=7, block_size=6, n_layer=2, n_head=2, n_embd=8, dropout=0.3)


VARIED = {"learned": 8, "sinusoidal": 9}  # seeds whose greedy tokens do not settle into one repeated id


def model64(pos="learned", seed=1, **kw):
    cfg = GPTConfig(**{**CFG.to_dict(), "pos_encoding": pos, "dropout": 0.0, **kw})
    m = GPT(cfg, seed=seed, dtype="float64")
    g = np.random.default_rng(seed)  # larger weights than GPT-2's init, so the tokens vary
    for p in m.parameters():
        p.data[...] = g.normal(0.0, 0.5, p.shape)
    return m.eval()


def greedy_by_hand(model, ids, n, penalty=1.0):
    out = np.array(ids)
    with no_grad():
        for _ in range(n):
            logits = model(out[:, -model.config.block_size:])[0].data[:, -1]
            scores = process_logits(logits, out, repetition_penalty=penalty)
            out = np.concatenate([out, scores.argmax(-1)[:, None]], axis=1)
    return out


# --- process_logits ------------------------------------------------------------------------
def test_process_logits_rules_by_hand():
    x = np.array([[2.0, -1.0, 0.5, 3.0, 0.0]])
    seen = np.array([[0, 1, 1, 4]])  # ids 0, 1 and 4 seen (1 twice: penalised once)
    assert np.array_equal(process_logits(x, seen, repetition_penalty=2.0), [[1.0, -2.0, 0.5, 3.0, 0.0]])
    assert np.array_equal(process_logits(x, seen, temperature=0.5), x * 2)
    # penalty first, then temperature
    assert np.array_equal(process_logits(x, seen, temperature=2.0, repetition_penalty=2.0), [[0.5, -1.0, 0.25, 1.5, 0.0]])
    inf = -np.inf
    assert np.array_equal(process_logits(x, seen, top_k=2), [[2.0, inf, inf, 3.0, inf]])
    ties = np.array([[1.0, 2.0, 2.0, 0.0, 2.0]])
    assert np.array_equal(process_logits(ties, seen, top_k=2), [[inf, 2.0, 2.0, inf, 2.0]])  # ties with the k-th kept
    assert np.array_equal(process_logits(x, seen, top_k=99), x)
    # top-p: probabilities of [ln 5, ln 3, ln 2] are [.5, .3, .2]
    y = np.log(np.array([[5.0, 3.0, 2.0]]))
    one = np.array([[0]])
    assert np.array_equal(process_logits(y, one, top_p=0.5), [[y[0, 0], inf, inf]])  # .5 reaches .5
    assert np.array_equal(process_logits(y, one, top_p=0.6), [[y[0, 0], y[0, 1], inf]])  # .8 is the smallest >= .6
    assert np.array_equal(process_logits(y, one, top_p=1e-9), [[y[0, 0], inf, inf]])  # at least one
    assert np.array_equal(process_logits(y, one, top_p=1.0), y)
    # top-k then top-p: the second sees the first's -inf as probability 0
    # (ascending, kept by top-k: probabilities 3/12, 4/12, 5/12, cumulative .25 <= .4 < .58: 3 goes)
    z = np.log([[5.0, 3.0, 2.0, 4.0]])
    assert np.array_equal(process_logits(z, one, top_k=3, top_p=0.6), [[z[0, 0], inf, inf, z[0, 3]]])


def test_process_logits_returns_a_float64_copy():
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    before = x.copy()
    s = process_logits(x, [[0]], temperature=0.7, top_k=1, repetition_penalty=1.3)
    assert s.dtype == np.float64 and np.array_equal(x, before)
    assert s[0, 2] == np.float64(np.float32(3.0)) / 0.7


@given(st.integers(1, 4), st.integers(1, 12), st.integers(0, 2**32 - 1), st.integers(1, 14),
       st.floats(0.01, 1.0), st.floats(0.2, 3.0))
def test_process_logits_keeps_the_smallest_likeliest_set(B, V, seed, k, p, temperature):
    g = np.random.default_rng(seed)
    x = g.normal(0, 2, (B, V)).round(1)  # rounding makes ties
    s = process_logits(x, g.integers(0, V, (B, 3)), temperature=temperature, top_k=k, top_p=p)
    for b in range(B):
        kept = np.isfinite(s[b])
        assert kept.any()
        assert np.array_equal(s[b, kept], x[b, kept] / temperature)
        z = x[b] / temperature
        kth = np.sort(z)[::-1][min(k, V) - 1]
        assert not kept[z < kth].any()  # top-k: nothing below the k-th
        q = np.where(z >= kth, np.exp(z - z.max()), 0.0)
        q /= q.sum()
        assert q[kept].sum() >= p - 1e-12  # top-p: the kept mass reaches p ...
        assert q[kept].min() >= q[~kept].max(initial=0.0)  # ... with the likeliest ids ...
        assert q[kept].sum() - q[kept].min() < p + 1e-12  # ... and no fewer would do (ties aside)


def test_process_logits_bad_inputs():
    x = np.zeros((2, 5))
    ids = np.zeros((2, 1), dtype=np.int64)
    for kw, msg in [({"temperature": 0}, "temperature must be a finite number > 0"),
                    ({"temperature": float("nan")}, "temperature"),
                    ({"top_k": 0}, "top_k must be an integer >= 1"), ({"top_k": 2.0}, "top_k"),
                    ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\]"), ({"top_p": 1.5}, "top_p"),
                    ({"repetition_penalty": 0.0}, "repetition_penalty must be a finite number > 0"),
                    ({"repetition_penalty": -1.0}, "repetition_penalty")]:
        with pytest.raises(ValueError, match=msg):
            process_logits(x, ids, **kw)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, V\)"):
        process_logits(np.zeros(5), ids)
    with pytest.raises(ValueError, match="NaN"):
        process_logits(np.array([[0.0, np.nan]]), [[0]])
    with pytest.raises(ValueError, match="-inf everywhere"):
        process_logits(np.array([[-np.inf, -np.inf]]), [[0]])
    with pytest.raises(ValueError, match="input_ids has 1 rows but logits has 2"):
        process_logits(x, [[0]])
    with pytest.raises(IndexError, match="outside"):
        process_logits(x, [[5], [0]])


def test_sample_follows_softmax_and_never_draws_removed_ids():
    scores = np.array([[0.0, 1.0, 2.0, -np.inf, 0.5]])
    g = np.random.default_rng(0)
    n = 40000
    draws = np.concatenate([_sample(np.repeat(scores, 100, 0), g) for _ in range(n // 100)])
    p = np.exp(np.where(np.isfinite(scores[0]), scores[0], -np.inf))
    p /= p.sum()
    freq = np.bincount(draws, minlength=5) / n
    assert freq[3] == 0
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-9), (freq, p)
    edges = np.array([[-np.inf, 0.0, -np.inf, -np.inf]] * 1000)  # removed ids at both ends
    assert (_sample(edges, g) == 1).all()


# --- generate --------------------------------------------------------------------------------
def test_greedy_batch_lengths_and_the_method():
    model = model64(seed=7)
    prompts = np.array([[1, 2], [3, 3], [6, 0]])
    out = model.generate(prompts, max_new_tokens=9)
    assert out.shape == (3, 11) and out.dtype == np.int64 and np.array_equal(out[:, :2], prompts)
    for i in range(3):  # a batch gives what each prompt gives alone
        assert np.array_equal(out[i:i + 1], generate(model, prompts[i:i + 1], max_new_tokens=9))
    assert np.array_equal(generate(model, prompts, max_length=11), out)
    assert np.array_equal(generate(model, [1, 2], max_new_tokens=9), out[:1])  # one list is one prompt
    assert np.array_equal(generate(model, prompts, max_length=2), prompts)
    assert np.array_equal(generate(model, prompts, max_new_tokens=0), prompts)
    # greedy ignores the sampling settings, as in transformers
    assert np.array_equal(generate(model, prompts, max_new_tokens=9, temperature=0.0, top_k=1, top_p=0.1), out)


def test_repetition_penalty_in_greedy():
    model = model64(seed=7)
    a = generate(model, [[1, 2]], max_new_tokens=10, repetition_penalty=3.0)
    assert np.array_equal(a, greedy_by_hand(model, [[1, 2]], 10, penalty=3.0))
    assert not np.array_equal(a, generate(model, [[1, 2]], max_new_tokens=10))


def test_sampling_is_seeded_and_cache_independent_and_mode_restored():
    model = model64(seed=2)
    model.train()
    before = model.dropout_generator.bit_generator.state
    kw = dict(max_new_tokens=12, do_sample=True, temperature=1.3, top_k=5, top_p=0.95, repetition_penalty=1.2)
    a = generate(model, [[0], [1]], seed=5, **kw)
    assert np.array_equal(a, generate(model, [[0], [1]], seed=5, **kw))
    assert np.array_equal(a, generate(model, [[0], [1]], seed=5, use_cache=False, **kw))
    assert not np.array_equal(a, generate(model, [[0], [1]], seed=6, **kw))
    assert model.training and model.dropout_generator.bit_generator.state == before
    assert a.min() >= 0 and a.max() < 7


def test_num_return_sequences_copies_sit_together():
    model = model64(seed=4)
    prompts = np.array([[1, 2], [5, 6]])
    out = generate(model, prompts, max_new_tokens=8, do_sample=True, num_return_sequences=3, seed=0)
    assert out.shape == (6, 10)
    assert np.array_equal(out[:, :2], np.repeat(prompts, 3, axis=0))
    assert len({tuple(r) for r in out[:3]}) > 1  # the copies are sampled independently
    same = generate(model, np.repeat(prompts, 3, axis=0), max_new_tokens=8, do_sample=True, seed=0)
    assert np.array_equal(out, same)  # exactly as if each prompt were given three times


def with_eos(free, T0, eos, pad):
    """What eos/pad must make of the free-running rows: pad after each row's first new eos, and the
    run cut once every row has one."""
    out, ends = free.copy(), []
    for row in out:
        hits = np.flatnonzero(row[T0:] == eos)
        ends.append(T0 + hits[0] + 1 if len(hits) else free.shape[1])
        row[ends[-1]:] = pad
    return out[:, :max(ends)], ends


def test_eos_finishes_a_row_and_pads_it():
    model = model64(seed=VARIED["learned"])
    prompts = [[1, 2, 3], [4, 0, 1], [6, 5, 2]]
    free = generate(model, prompts, max_new_tokens=12)
    eos = int(free[0, 5])
    for pad, kw in ((0, dict(pad_token_id=0)), (eos, {})):  # no pad: eos pads
        out = generate(model, prompts, max_new_tokens=12, eos_token_id=eos, **kw)
        expected, ends = with_eos(free, 3, eos, pad)
        assert len(set(ends)) == 3 and max(ends) < free.shape[1]  # rows end apart, then the run stops
        assert np.array_equal(out, expected)
        assert np.array_equal(out, generate(model, prompts, max_new_tokens=12, eos_token_id=eos, use_cache=False, **kw))
    never = sorted(set(range(7)) - set(free[:, 3:].ravel().tolist()))
    assert never  # an id the free run never emits: a list with it acts as eos alone
    assert np.array_equal(generate(model, prompts, max_new_tokens=12, eos_token_id=[never[0], eos]),
                          with_eos(free, 3, eos, never[0])[0])
    one = generate(model, prompts[:1], max_new_tokens=12, eos_token_id=eos)  # its only row finished: stop
    assert np.array_equal(one, free[:1, :6])
    model.tokenizer = CharTokenizer.train("abc")  # no end-of-text: no default eos
    assert np.array_equal(generate(model, prompts, max_new_tokens=12), free)
    model.tokenizer = SimpleNamespace(eot_id=eos)  # as a GPT-2 directory's tokenizer: stops there
    assert np.array_equal(generate(model, prompts, max_new_tokens=12), with_eos(free, 3, eos, eos)[0])
    assert np.array_equal(generate(model, prompts, max_new_tokens=12, eos_token_id=[]), free)


def test_streamer_sees_the_prompt_then_each_token():
    model = model64(seed=4)
    seen = []

    class Recorder:
        def put(self, ids):
            seen.append(np.array(ids))

        def end(self):
            seen.append("end")

    out = generate(model, [[1, 2]], max_new_tokens=4, streamer=Recorder())
    assert np.array_equal(seen[0], [[1, 2]]) and seen[-1] == "end"
    assert [int(s[0]) for s in seen[1:-1]] == out[0, 2:].tolist()


def test_bad_settings():
    model = model64()
    x = [[1]]
    cases = [
        (dict(max_new_tokens=3, do_sample=True, temperature=0), "temperature must be a finite number > 0"),
        (dict(max_new_tokens=3, do_sample=True, temperature=-1.0), "temperature"),
        (dict(max_new_tokens=3, top_k=0), "top_k must be an integer >= 1"),
        (dict(max_new_tokens=3, top_p=0.0), r"top_p must be a number in \(0, 1\]"),
        (dict(max_new_tokens=3, top_p=1.01), "top_p"),
        (dict(max_new_tokens=3, repetition_penalty=0), "repetition_penalty must be a finite number > 0"),
        (dict(), "give exactly one of max_new_tokens .* or max_length .*, got neither"),
        (dict(max_new_tokens=3, max_length=4), "got both"),
        (dict(max_length=0), "max_length must be an integer >= the prompt's length 1"),
        (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0"),
        (dict(max_new_tokens=3, num_return_sequences=0), "num_return_sequences must be an integer >= 1"),
        (dict(max_new_tokens=3, num_return_sequences=2), "greedy decoding gives one sequence per prompt"),
        (dict(max_new_tokens=3, eos_token_id=7), r"eos_token_id must be an id in \[0, vocab_size=7\)"),
        (dict(max_new_tokens=3, eos_token_id=[1, None]), "eos_token_id must be"),
        (dict(max_new_tokens=3, pad_token_id=-1), "pad_token_id must be an id"),
        (dict(max_new_tokens=3, do_sample=1), "do_sample must be True or False"),
        (dict(max_new_tokens=3, do_sample=True, seed=-1), "seed must be"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            generate(model, x, **kw)
    with pytest.raises(ValueError, match="input_ids is empty"):
        generate(model, [], max_new_tokens=3)
    with pytest.raises(ValueError, match="input_ids is empty"):
        generate(model, np.zeros((2, 0), dtype=np.int64), max_new_tokens=3)
    with pytest.raises(ValueError, match=r"input_ids must be a \(B, T\) integer array"):
        generate(model, [[0.5]], max_new_tokens=3)
    with pytest.raises(ValueError, match="input_ids must be"):
        generate(model, [[1, 2], [3]], max_new_tokens=3)
    with pytest.raises(IndexError, match=r"outside \[0, vocab_size=7\)"):
        generate(model, [[7]], max_new_tokens=3)
    with pytest.raises(IndexError, match="outside"):
        generate(model, [[-1]], max_new_tokens=3)


def test_settings_and_prompts_are_checked_once_per_call(monkeypatch):
    """Validate at the door: generate checks its settings and the prompt ids once, and a cached step
    does no work that grows with the ids already generated (no re-scan of the growing array)."""
    import npgpt.generation.generate as gen

    calls = {"check": 0, "as_ids": 0, "seen": 0}
    for name, key in (("_check_processing", "check"), ("_as_ids", "as_ids"), ("_seen", "seen")):
        real = getattr(gen, name)
        monkeypatch.setattr(gen, name, lambda *a, _r=real, _k=key, **k: calls.__setitem__(_k, calls[_k] + 1) or _r(*a, **k))
    model = model64(block_size=64)
    ids = np.array([[1, 2, 3]])
    out = generate(model, ids, max_new_tokens=40, do_sample=True, top_k=3, top_p=0.9, temperature=0.7,
                   repetition_penalty=1.3, seed=2)
    assert out.shape == (1, 43)
    assert calls == {"check": 1, "as_ids": 1, "seen": 1}
    # the incremental seen-set gives what a fresh scan of the whole row would: same ids as by hand
    ref = greedy_by_hand(model, ids, 10, penalty=1.3)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=10, repetition_penalty=1.3), ref)
