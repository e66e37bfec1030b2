"""Generation as transformers defines it: process_logits, generate, and the KV cache.

    ids = the prompts, each repeated num_return_sequences times, copies side by side     (B, T)
    repeat until max_length, or until every sequence has emitted an end-of-sequence id:
        logits = model(context)[:, -1, :]                                              (B, V)
        scores = process_logits(logits, ids, ...)  repetition penalty, then (sampling only)
                                                   temperature, top-k, top-p
        next   = argmax(scores) when greedy, else a draw from softmax(scores)           (B,)
        a finished sequence gets pad_token_id instead;  ids = [ids, next]

The context is the last block_size ids. With use_cache=True a KVCache holds every layer's keys and
values, so after the prompt each step runs one position through the model. Once the sequence is
longer than block_size the window slides; positions are absolute (learned or sinusoidal), so every
cached key of the old window was computed at a position it no longer has, and none can be reused:
each step past block_size empties the cache and runs the last block_size ids afresh, exactly the
context the uncached path sees (as slow as it, and giving the same tokens).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from ..backend import to_numpy
from ..tensor import Tensor, no_grad


class KVCache:
    """Keys and values of every attention layer for the positions run so far (inference only).

    k[i], v[i]: (B, NH, block_size, HS) buffers on the model's device in its dtype; positions
    0 .. length-1 are filled. `model(ids, cache=cache)` runs ids at positions length .. length+T-1,
    writes their keys and values, and advances length by T. reset() empties it (buffers kept).
    """

    def __init__(self, model, batch_size: int):
        c = model.config
        shape = (batch_size, c.n_head, c.block_size, c.head_size)
        xp = model.xp
        self.batch_size = batch_size
        self.k = [xp.zeros(shape, dtype=model.dtype) for _ in range(c.n_layer)]
        self.v = [xp.zeros(shape, dtype=model.dtype) for _ in range(c.n_layer)]
        self.length = 0

    def reset(self) -> None:
        self.length = 0


# --- checking settings ---------------------------------------------------------------------
def _is_int(x) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _check_processing(temperature, top_k, top_p, repetition_penalty, sampling: bool = True) -> None:
    if not _is_real(temperature):
        raise ValueError(f"temperature must be a number, got {temperature!r}")
    if sampling and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0 when sampling, got {temperature!r} "
                         "(for the likeliest token use greedy decoding: do_sample=False)")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None for no cut), got {top_k!r}")
    if top_p is not None and (not _is_real(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1] (or None for no cut), got {top_p!r}")
    if not _is_real(repetition_penalty) or not (math.isfinite(repetition_penalty) and repetition_penalty > 0):
        raise ValueError(f"repetition_penalty must be a finite number > 0 (1.0: no penalty), got {repetition_penalty!r}")


def _as_ids(input_ids, vocab_size: int, what: str = "input_ids") -> np.ndarray:
    """input_ids as a (B, T) int64 NumPy array; a 1-d sequence is one prompt."""
    a = input_ids.data if isinstance(input_ids, Tensor) else input_ids
    try:
        a = np.asarray(to_numpy(a))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be a (B, T) array or a list of token ids, got {type(input_ids).__name__} ({e})") from None
    if a.ndim == 1:
        a = a[None, :]
    if a.size == 0 and a.ndim == 2:
        raise ValueError(f"{what} is empty (shape {a.shape}): give at least one prompt of at least one token")
    if a.ndim != 2 or a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be a (B, T) integer array (or one list of ids), got shape {a.shape}, dtype {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= vocab_size:
        raise IndexError(f"{what} holds ids outside [0, vocab_size={vocab_size}): min {lo}, max {hi}")
    return a.astype(np.int64)


# --- logits -> scores ----------------------------------------------------------------------
def process_logits(logits, input_ids, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, repetition_penalty: float = 1.0) -> np.ndarray:
    """The last position's logits (B, V) -> float64 scores (B, V) to sample from; removed ids at -inf.

    In transformers' order and with its rules:
      1. repetition penalty r, for every id v present in row b of input_ids (B, T):
         s[b, v] = s[b, v] / r if s[b, v] > 0, else s[b, v] * r  (r > 1 makes a seen id less likely)
      2. temperature:  s = s / temperature
      3. top-k: remove every s[b, v] < the k-th largest of row b (ties with the k-th are kept)
      4. top-p: sort row b ascending, p = softmax of the sorted row, c = its cumulative sum; remove
         the ids with c <= 1 - top_p, never the largest. What is kept is the smallest set of the
         likeliest ids whose probability reaches top_p.
    A setting at its neutral value (1.0, None) skips its step. generate() applies steps 2-4 only
    when sampling, as transformers does (greedy takes the argmax, which they do not change).
    """
    _check_processing(temperature, top_k, top_p, repetition_penalty)
    s = np.array(to_numpy(logits.data if isinstance(logits, Tensor) else logits), dtype=np.float64)  # a copy
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise ValueError(f"process_logits: logits must have shape (B, V), got {s.shape}")
    B, V = s.shape
    if np.isnan(s).any() or np.isposinf(s).any():
        raise ValueError("process_logits: logits hold NaN or +inf (the model's output is broken)")
    if not np.isfinite(s).any(axis=-1).all():
        raise ValueError("process_logits: a row of logits is -inf everywhere, nothing can be chosen")
    ids = _as_ids(input_ids, V)
    if ids.shape[0] != B:
        raise ValueError(f"process_logits: input_ids has {ids.shape[0]} rows but logits has {B}")
    return _scores(s, _seen(ids, V) if repetition_penalty != 1.0 else None, temperature, top_k, top_p,
                   repetition_penalty)


def _seen(ids: np.ndarray, V: int) -> np.ndarray:
    """(B, V) booleans: id v occurs in row b of ids (B, T). generate() keeps it up to date one id per
    step, so a step's work does not grow with the tokens already generated."""
    seen = np.zeros((ids.shape[0], V), dtype=bool)
    seen[np.arange(ids.shape[0])[:, None], ids] = True
    return seen


def _scores(s: np.ndarray, seen, temperature, top_k, top_p, repetition_penalty) -> np.ndarray:
    """process_logits's steps 1-4 on checked float64 logits s (B, V), in place; `seen` is _seen(ids)
    (needed only for the repetition penalty). Trusts its inputs: the callers checked them once."""
    B, V = s.shape
    if repetition_penalty != 1.0:  # 1.
        penalised = np.where(s < 0, s * repetition_penalty, s / repetition_penalty)
        s = np.where(seen, penalised, s)
    if temperature != 1.0:  # 2.
        s /= temperature
    if top_k is not None and top_k < V:  # 3.
        kth = np.partition(s, V - top_k, axis=-1)[:, V - top_k:V - top_k + 1]  # (B, 1) the k-th largest
        s[s < kth] = -np.inf
    if top_p is not None and top_p < 1.0:  # 4.
        order = np.argsort(s, axis=-1, kind="stable")  # (B, V) ascending
        ranked = np.take_along_axis(s, order, axis=-1)
        p = np.exp(ranked - ranked[:, -1:])  # the row's maximum is last
        c = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
        drop = c <= 1 - top_p
        drop[:, -1] = False  # at least one id
        remove = np.empty_like(drop)
        remove[np.arange(B)[:, None], order] = drop  # back to vocabulary order
        s[remove] = -np.inf
    return s


def _sample(scores: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """One id per row drawn from softmax(scores) (B, V) by inverse CDF: ids at -inf are never drawn."""
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))  # (B, V)
    cdf = np.cumsum(p, axis=-1)
    u = generator.random(scores.shape[0]) * cdf[:, -1]  # (B,) in [0, total): r < 1 keeps r * total < total
    return (cdf <= u[:, None]).sum(axis=-1)  # the first index whose cdf exceeds u: one with p > 0


# --- the loop ------------------------------------------------------------------------------
def _eos_ids(model, eos_token_id, V: int) -> list[int]:
    """The ids that finish a row: eos_token_id (an id or a list; [] for none), or when it is None the
    end-of-text id of the tokenizer attached to the model, as transformers takes GPT-2's from its config."""
    if eos_token_id is None:
        eot = getattr(getattr(model, "tokenizer", None), "eot_id", None)
        return [] if eot is None else [int(eot)]
    many = eos_token_id if isinstance(eos_token_id, (list, tuple, set, frozenset)) else [eos_token_id]
    for e in many:
        if not _is_int(e) or not 0 <= e < V:
            raise ValueError(f"eos_token_id must be an id in [0, vocab_size={V}), a list of them ([] for none) "
                             f"or None, got {eos_token_id!r}")
    return [int(e) for e in many]


def _next_logits(model, ids: np.ndarray, cache: KVCache | None) -> np.ndarray:
    """The logits (B, V) for the position after ids (B, T), from the last block_size ids."""
    block = model.config.block_size
    if cache is None:
        feed = ids[:, -block:]
    elif ids.shape[1] > block:  # the window slides: no cached key is at its position any more
        cache.reset()
        feed = ids[:, -block:]
    else:
        feed = ids[:, cache.length:]  # the prompt on the first step, then the newest id
    logits, _ = model(feed, cache=cache)
    return np.asarray(to_numpy(logits.data[:, -1, :]), dtype=np.float64)  # (B, V)


def generate(model, input_ids, max_new_tokens: int | None = None, max_length: int | None = None,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float = 1.0, num_return_sequences: int = 1,
             eos_token_id=None, pad_token_id: int | None = None, seed=None, use_cache: bool = True,
             streamer=None) -> np.ndarray:
    """Prompts plus new ids, as transformers' `model.generate`: an int64 array (B * num_return_sequences, T_total).

    input_ids: (B, T) ids, or one list of ids (B = 1); all prompts have the same length T >= 1.
    max_new_tokens counts the new ids, max_length the prompt as well: give exactly one.
    do_sample=False is greedy (the argmax after the repetition penalty; temperature, top_k and top_p
    are then ignored, as in transformers); do_sample=True draws from process_logits's scores with a
    NumPy generator from `seed` (an int, a numpy Generator, or None for fresh entropy).
    num_return_sequences copies of each prompt sit next to each other (prompt 0's first); greedy
    allows only 1, as in transformers. Once a row emits eos_token_id (an id or a list) it is
    finished: its later positions hold pad_token_id (eos when none is given), and the loop stops
    early once every row has finished. eos_token_id=None takes the end-of-text id of the tokenizer
    that GPT.from_pretrained attaches to a GPT-2 directory's model (transformers stops at GPT-2's
    config eos by default too), and no eos for a model without one; [] means no eos at all.
    use_cache=False recomputes the whole context each step.
    streamer (as transformers'): its put() gets the prompts (B', T), then each step's ids (B',);
    end() is called when generation is over (npgpt.generation.sample.TextStreamer prints text as it comes).
    The model runs in eval mode under no_grad; its training mode is restored afterwards.
    Every setting and the prompts are checked once, here; a step's work (with the KV cache) does not
    grow with the ids already generated: they are written into one preallocated array and the
    repetition penalty's set of seen ids is kept up to date one id per step.
    """
    V = model.config.vocab_size
    if not isinstance(do_sample, bool):
        raise ValueError(f"do_sample must be True or False, got {do_sample!r}")
    if not isinstance(use_cache, bool):
        raise ValueError(f"use_cache must be True or False, got {use_cache!r}")
    _check_processing(temperature, top_k, top_p, repetition_penalty, sampling=do_sample)
    ids = _as_ids(input_ids, V)
    T = ids.shape[1]
    if (max_new_tokens is None) == (max_length is None):
        raise ValueError("give exactly one of max_new_tokens (new ids) or max_length (prompt + new ids), got "
                         + ("neither" if max_new_tokens is None else f"both ({max_new_tokens}, {max_length})"))
    if max_length is not None:
        if not _is_int(max_length) or max_length < T:
            raise ValueError(f"max_length must be an integer >= the prompt's length {T}, got {max_length!r}")
        max_new_tokens = max_length - T
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not _is_int(num_return_sequences) or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
    if num_return_sequences > 1 and not do_sample:
        raise ValueError(f"greedy decoding gives one sequence per prompt: num_return_sequences={num_return_sequences} "
                         "needs do_sample=True")
    eos = _eos_ids(model, eos_token_id, V)
    if pad_token_id is not None and (not _is_int(pad_token_id) or not 0 <= pad_token_id < V):
        raise ValueError(f"pad_token_id must be an id in [0, vocab_size={V}), got {pad_token_id!r}")
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else None)
    try:
        generator = np.random.default_rng(seed)
    except (TypeError, ValueError) as e:
        raise ValueError(f"seed must be an int >= 0, a numpy Generator or None, got {seed!r} ({e})") from None

    prompts = np.repeat(ids, num_return_sequences, axis=0)  # (B', T) copies of a prompt adjacent
    Bp = prompts.shape[0]
    ids = np.empty((Bp, T + max_new_tokens), dtype=np.int64)  # filled as it goes: no copy per step
    ids[:, :T] = prompts
    seen = _seen(prompts, V) if repetition_penalty != 1.0 else None
    finished = np.zeros(Bp, dtype=bool)
    was_training = model.training
    model.eval()
    if streamer is not None:
        streamer.put(prompts)
    t = T
    try:
        with no_grad():
            cache = KVCache(model, Bp) if use_cache else None
            for _ in range(max_new_tokens):
                logits = _next_logits(model, ids[:, :t], cache)
                if do_sample:
                    nxt = _sample(_scores(logits, seen, temperature, top_k, top_p, repetition_penalty), generator)
                else:
                    nxt = _scores(logits, seen, 1.0, None, None, repetition_penalty).argmax(axis=-1)
                if eos:
                    nxt = np.where(finished, pad, nxt)
                    finished |= np.isin(nxt, eos)
                ids[:, t] = nxt
                t += 1
                if seen is not None:
                    seen[np.arange(Bp), nxt] = True
                if streamer is not None:
                    streamer.put(ids[:, t - 1])
                if eos and finished.all():
                    break
    finally:
        model.train(was_training)
    if streamer is not None:
        streamer.end()
    ids = ids[:, :t]
    return ids
