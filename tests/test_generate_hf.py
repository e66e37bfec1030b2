"""Generation against transformers itself: its logits processors, and GPT2LMHeadModel.generate.

Random GPT-2 models are made with transformers at small odd sizes (non-trivial biases and
layernorms), their weights copied into an npgpt GPT in float64 by name (GPT-2's Conv1D weights are
(in, out), as npgpt's), and both generate. Nothing is downloaded.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

transformers = pytest.importorskip("transformers")
from transformers.generation.logits_process import (  # noqa: E402
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from npgpt.cli import main  # noqa: E402
from npgpt.generation.generate import KVCache, _next_logits, generate, process_logits  # noqa: E402
from npgpt.generation.loading import load_model  # noqa: E402
from npgpt.models.gpt import GPT, GPTConfig  # noqa: E402
from npgpt.tensor import no_grad  # noqa: E402
from npgpt.tokenizers import BPETokenizer  # noqa: E402

SIZES = {  # (n_layer, n_head, n_embd, vocab_size, n_positions)
    "3x48": (3, 3, 48, 97, 29),
    "2x30": (2, 5, 30, 53, 27),  # n_embd not a multiple of 8, head size 6
}


def random_hf(size: str, seed: int = 0, vocab: int | None = None, eos: int | None = None):
    """A random transformers GPT-2 of one of SIZES in float64, eval mode, every weight, bias and
    layernorm drawn around its usual value (vocab and eos_token_id replaced when given)."""
    n_layer, n_head, n_embd, v, n_pos = SIZES[size]
    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab or v, n_positions=n_pos,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                                  activation_function="gelu_new", bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(cfg).double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            base = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
            p.copy_(base + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return hf


def hf_and_npgpt(size: str, seed: int = 0):
    """A random transformers GPT-2 (float64, eval) and an npgpt GPT holding the same weights."""
    n_layer, n_head, n_embd, vocab, n_pos = SIZES[size]
    hf = random_hf(size, seed)
    ours = GPT(GPTConfig(vocab_size=vocab, block_size=n_pos, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                         activation="gelu_tanh", norm_eps=1e-5, tie_embeddings=True), dtype="float64")
    state = {k: v.numpy() for k, v in hf.state_dict().items()
             if not k.endswith((".attn.bias", ".attn.masked_bias")) and k != "lm_head.weight"}
    assert torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)  # tied: the head is wte
    ours.load_state_dict(state)  # strict: every name matches
    return hf, ours.eval()


def hf_generate(hf, ids, **kw):
    x = torch.as_tensor(np.asarray(ids))
    with torch.no_grad():
        return hf.generate(x, attention_mask=torch.ones_like(x), **kw).numpy()


@pytest.fixture(scope="module", params=sorted(SIZES))
def models(request):
    return hf_and_npgpt(request.param)


# --- process_logits against the processors ---------------------------------------------------
def hf_process(logits, ids, temperature, top_k, top_p, penalty):
    """transformers' processors in generate's order, each where generate would add it."""
    s, x = torch.tensor(logits), torch.tensor(ids)
    if penalty != 1.0:
        s = RepetitionPenaltyLogitsProcessor(penalty)(x, s)
    if temperature != 1.0:
        s = TemperatureLogitsWarper(temperature)(x, s)
    if top_k is not None:
        s = TopKLogitsWarper(top_k)(x, s)
    if top_p is not None and top_p < 1.0:
        s = TopPLogitsWarper(top_p)(x, s)
    return s.numpy()


@st.composite
def logits_and_ids(draw):
    B, V, T = draw(st.integers(1, 4)), draw(st.integers(1, 16)), draw(st.integers(1, 6))
    values = st.one_of(st.floats(-20, 20, allow_nan=False), st.sampled_from([0.0, 1.0, -1.0, -np.inf]))
    logits = draw(hnp.arrays(np.float64, (B, V), elements=values))
    logits[:, draw(st.integers(0, V - 1))] = draw(st.floats(-20, 20))  # one finite entry per row at least
    ids = draw(hnp.arrays(np.int64, (B, T), elements=st.integers(0, V - 1)))
    return logits, ids


@given(logits_and_ids(), st.sampled_from([1.0, 0.3, 0.7, 1.9]), st.one_of(st.none(), st.integers(1, 20)),
       st.one_of(st.none(), st.floats(0.01, 1.0), st.sampled_from([0.25, 0.5, 0.75])),  # exact sums: the <= rule
       st.sampled_from([1.0, 0.5, 1.3, 2.0]))
@example((np.zeros((2, 4)), np.zeros((2, 1), dtype=np.int64)), 1.0, None, 0.5, 1.0)  # cumulative .5 <= 1 - .5: dropped
@example((np.array([[1.0, 2.0, 2.0, 0.0, 2.0]]), np.array([[1]])), 1.0, 2, None, 1.0)  # ties with the k-th
def test_process_logits_matches_transformers(data, temperature, top_k, top_p, penalty):
    logits, ids = data
    ours = process_logits(logits, ids, temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty)
    theirs = hf_process(logits, ids, temperature, top_k, top_p, penalty)
    assert np.array_equal(np.isneginf(ours), np.isneginf(theirs)), (ours, theirs)
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-12, atol=1e-12)


# --- generate against GPT2LMHeadModel.generate ----------------------------------------------
def test_logits_with_the_cache_match_transformers(models):
    hf, ours = models
    ids = np.random.default_rng(1).integers(0, ours.config.vocab_size, (2, 12))
    with torch.no_grad():
        full = hf(torch.as_tensor(ids)).logits.numpy()  # (B, T, V)
    cache = KVCache(ours, 2)
    with no_grad():
        for t in range(1, 13):
            np.testing.assert_allclose(_next_logits(ours, ids[:, :t], cache), full[:, t - 1], rtol=0, atol=1e-10)


def test_greedy_20_tokens_identical(models):
    hf, ours = models
    prompts = np.random.default_rng(2).integers(0, ours.config.vocab_size, (3, 5))
    theirs = hf_generate(hf, prompts, do_sample=False, max_new_tokens=20)
    assert theirs.shape == (3, 25)
    assert np.array_equal(generate(ours, prompts, max_new_tokens=20), theirs)
    assert np.array_equal(generate(ours, prompts, max_new_tokens=20, use_cache=False), theirs)
    assert np.array_equal(ours.generate(prompts[:1], max_length=25), theirs[:1])  # max_length counts the prompt
    penalised = hf_generate(hf, prompts, do_sample=False, max_new_tokens=20, repetition_penalty=1.7)
    assert np.array_equal(generate(ours, prompts, max_new_tokens=20, repetition_penalty=1.7), penalised)
    assert not np.array_equal(penalised, theirs)  # the penalty changed something


def test_eos_and_pad_identical(models):
    hf, ours = models
    prompts = np.random.default_rng(3).integers(0, ours.config.vocab_size, (3, 4))
    free = generate(ours, prompts, max_new_tokens=20)
    eos = int(free[0, 6])  # row 0 emits it early
    pad = int((eos + 1) % ours.config.vocab_size)
    for kw in (dict(eos_token_id=eos, pad_token_id=pad), dict(eos_token_id=eos, pad_token_id=eos)):
        theirs = hf_generate(hf, prompts, do_sample=False, max_new_tokens=20, **kw)
        assert (theirs[0, 7:] == kw["pad_token_id"]).all()  # row 0 finished and was padded
        assert np.array_equal(generate(ours, prompts, max_new_tokens=20, **kw), theirs)
    ours_no_pad = generate(ours, prompts, max_new_tokens=20, eos_token_id=eos)  # pad defaults to eos
    assert np.array_equal(ours_no_pad, theirs)


def test_num_return_sequences_order_matches(models):
    """Sampling with top_k=1 is deterministic, so transformers' row order can be compared exactly."""
    hf, ours = models
    prompts = np.random.default_rng(4).integers(0, ours.config.vocab_size, (2, 3))
    kw = dict(do_sample=True, top_k=1, num_return_sequences=3, max_new_tokens=10)
    theirs = hf_generate(hf, prompts, **kw)
    assert theirs.shape == (6, 13) and not np.array_equal(theirs[0], theirs[3])
    assert np.array_equal(generate(ours, prompts, seed=0, **kw), theirs)


# --- a GPT-2 directory, end to end --------------------------------------------------------------
EOT = "<|endoftext|>"


def test_gpt2_directory_five_lines_and_npgpt_sample(tmp_path, capsys):
    """transformers' five lines and npgpt's, on one directory, give the same text; it stops at the
    config's end-of-text in both (the model is nudged to say it mid-way), and so does `npgpt sample --eos`."""
    tok = BPETokenizer.train("Once upon a time there was a tiny model that told tales. " * 10, 293, special_tokens=[EOT])
    hf = random_hf("3x48", seed=5, vocab=tok.vocab_size, eos=tok.eot_id)
    with torch.no_grad():
        hf.transformer.wte.weight[tok.eot_id] *= 3.0
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    hf_tok = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    ids = hf_tok.encode("Once upon a time", return_tensors="pt")
    with torch.no_grad():
        out = hf.generate(ids, max_length=29, num_return_sequences=1, attention_mask=torch.ones_like(ids))
    expected = hf_tok.decode(out[0], skip_special_tokens=True)

    model = GPT.from_pretrained(tmp_path, dtype="float64")
    tokenizer = BPETokenizer.from_pretrained(tmp_path)
    ids = tokenizer.encode("Once upon a time")
    ours = model.generate(ids, max_length=29, num_return_sequences=1)
    assert np.array_equal(ours, out.numpy())
    assert ids[-1] != tok.eot_id and 4 < ours.shape[1] < 29 and ours[0, -1] == tok.eot_id  # stopped at it
    assert tokenizer.decode(ours[0], skip_special_tokens=True) == expected

    loaded, loaded_tok = load_model(tmp_path, dtype="float64")
    assert np.array_equal(loaded.generate(ids, max_length=29), ours) and loaded_tok.encode("tales") == tokenizer.encode("tales")
    changed, changed_tok = load_model(tmp_path, dtype="float64", seed=3, dropout=0.2, activation="gelu")
    assert (changed.config.dropout, changed.config.activation, changed.tokenizer) == (0.2, "gelu", changed_tok)
    assert all(np.array_equal(a, changed.state_dict()[k]) for k, a in loaded.state_dict().items())
    flags = ["sample", str(tmp_path), "--prompt", "Once upon a time", "--greedy", "--max-length", "29", "--dtype", "float64"]
    assert main([*flags, "--eos"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert main(flags) == 0  # without --eos it goes on past the end-of-text (which it does not print)
    assert capsys.readouterr().out.startswith(expected) and len(loaded.generate(ids, max_length=29, eos_token_id=[])[0]) == 29
