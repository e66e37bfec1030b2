"""The KV cache: cached attention equals attention's rows, cached logits equal the full context's
through and past block_size, and greedy tokens do not depend on it (learned and sinusoidal positions)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npgpt.generation.generate import KVCache, _next_logits, generate
from npgpt.ops.attention import Attention, cached_attention
from npgpt.tensor import no_grad
from tests.test_generate import VARIED, greedy_by_hand, model64


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.lists(st.integers(1, 4), min_size=1, max_size=4),
       st.integers(0, 2**32 - 1))
def test_cached_attention_equals_attention_rows(B, NH, HS, chunks, seed):
    """Feeding the positions in chunks against the cache gives Attention's rows on the whole sequence."""
    L = sum(chunks)
    qkv = np.random.default_rng(seed).normal(size=(B, L, 3 * NH * HS))
    full = Attention().forward(qkv, n_head=NH)  # (B, L, C)
    k = np.zeros((B, NH, L + 2, HS))
    v = np.zeros_like(k)
    start = 0
    for T in chunks:
        y = cached_attention(qkv[:, start:start + T], NH, k, v, start)
        np.testing.assert_allclose(y, full[:, start:start + T], rtol=0, atol=1e-12)
        start += T
    with pytest.raises(ValueError, match="cannot hold positions"):
        cached_attention(np.zeros((B, 3, 3 * NH * HS)), NH, k, v, L)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_cached_logits_match_full_context_through_and_past_block_size(pos):
    model = model64(pos, seed=3)
    ids = np.random.default_rng(0).integers(0, 7, (2, 15))  # block_size 6: the window slides from 7 on
    cache = KVCache(model, 2)
    with no_grad():
        for t in range(1, ids.shape[1] + 1):
            cached = _next_logits(model, ids[:, :t], cache)
            full = _next_logits(model, ids[:, :t], None)
            np.testing.assert_allclose(cached, full, rtol=0, atol=1e-10, err_msg=f"t={t}")
            assert cache.length == min(t, 6)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_greedy_with_and_without_cache_identical(pos):
    model = model64(pos, seed=VARIED[pos])
    for prompt in ([[1, 2, 3]], [[1, 4, 6, 6, 6, 4, 1, 4]]):  # the second is longer than block_size 6
        a = generate(model, prompt, max_new_tokens=14)
        b = generate(model, prompt, max_new_tokens=14, use_cache=False)
        assert np.array_equal(a, b) and np.array_equal(a, greedy_by_hand(model, prompt, 14))
        assert len(set(a[0, -10:].tolist())) > 1  # not a constant run: the comparison means something


def test_cache_is_an_inference_path():
    model = model64()
    cache = KVCache(model, 1)
    with pytest.raises(RuntimeError, match="under no_grad"):
        model([[1, 2]], cache=cache)
    with no_grad():
        with pytest.raises(ValueError, match="holds 1 sequences, idx has 2"):
            model([[1], [2]], cache=cache)
        model([[1, 2, 3, 4]], cache=cache)
        with pytest.raises(ValueError, match="holds 4 positions: 3 more exceed block_size=6"):
            model([[1, 2, 3]], cache=cache)
        with pytest.raises(ValueError, match="targets or a cache"):
            model([[1]], [[2]], cache=cache)
