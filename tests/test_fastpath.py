"""The CPU's fast paths against PyTorch, at the sizes where they switch on.

Attention walks query rows in chunks of 64 and sequences in blocks on the thread pool; layer_norm and
GELU (alone and inside the fused MLP) walk row blocks of tens of thousands of elements. The op tests
in tests/ops/ draw small shapes (and run them again with tiny block sizes, the `blocks` fixture);
here each op runs at npgpt's own block sizes on arrays that cross several chunks and blocks, at 1
and 2 threads, in float64 (float32 where its path differs), forward and every gradient, at the op
tests' tolerances; then the whole GPT against reference/nanogpt.py at such a size.

Each test also asserts, through the `walked_blocks` spy on npgpt.parallel, that its shapes really
crossed block seams: if block sizes grow, the test says so instead of quietly testing one block.
(These tests must stay out of modules that use the module-scoped `blocks` fixture; `threads` checks.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import npgpt.functional as F
import reference.ops as R
from npgpt import GPT, GPTConfig, Tensor, parallel
from tests.helpers import TOL, check_parity
from tests.ops import test_attention as attention_tests
from tests.ops import test_layernorm as layernorm_tests
from tests.ops import test_mlp as mlp_tests
from tests.ops import test_swiglu as swiglu_tests
from tests.test_reference import errors_of, pair

# --- attention -------------------------------------------------------------------------------------
# (B, T, NH, HS), as in tests/ops/test_attention.py. T = 63 / 64 / 65 end inside, on and just past
# the first 64-row query chunk; T = 129 and 257 walk 3 and 5 chunks over several blocks of sequences,
# with B * NH * T^2 past two threads' worth of parallel.MIN_WORK, so at 2 threads the pool really
# runs them on both.
ATTENTION_SHAPES = [(2, 63, 2, 4), (2, 64, 2, 4), (2, 65, 3, 2), (8, 129, 4, 2), (4, 257, 2, 4)]


@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=lambda s: f"T={s[1]}")
def test_attention_parity(threads, walked_blocks, shape):
    qkv = attention_tests._qkv(shape, 5, 2.0)
    check_parity(F.attention, R.attention, {"qkv": qkv}, options={"n_head": shape[2]}, seed=5)
    if shape[1] >= 129:
        assert walked_blocks["npgpt.ops.attention"] >= 2, f"{shape}: one block of sequences only; make B larger"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_attention_dropout_parity(threads, dtype):
    """The same keep mask on both sides, cut into the chunks' (rows, keys) pieces on npgpt's."""
    shape, p, seed = (8, 129, 4, 2), 0.2, 13
    keep = torch.tensor(attention_tests._keep(seed, shape, p, dtype))
    ours = lambda qkv, n_head: F.attention(qkv, n_head, p, True, np.random.default_rng(seed))  # noqa: E731
    theirs = lambda qkv, n_head: R.attention(qkv, n_head, p, True, keep=keep)  # noqa: E731
    check_parity(ours, theirs, {"qkv": attention_tests._qkv(shape, seed)}, dtype=dtype, options={"n_head": shape[2]},
                 seed=seed)


def test_attention_float32_at_the_longest_sequence(threads):
    shape = ATTENTION_SHAPES[-1]
    check_parity(F.attention, R.attention, {"qkv": attention_tests._qkv(shape, 6)}, dtype="float32",
                 options={"n_head": shape[2]}, seed=6)


# --- layer norm, GELU, MLP --------------------------------------------------------------------------
# layer_norm's blocks are 131,072 elements today: (4, 257, 256) is 1028 rows of 256 in blocks of 512
# rows (the last one 4 rows); (3, 140001) has rows longer than a block (one row per block).
@pytest.mark.parametrize("shape", [(4, 257, 256), (3, 140001)], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_layer_norm_parity(threads, walked_blocks, shape, bias):
    args = layernorm_tests._args(np.random.default_rng(7), shape, bias, offset=3.0)
    check_parity(F.layer_norm, R.layer_norm, args, seed=7)
    assert walked_blocks["npgpt.ops.layernorm"] >= 3, f"{shape} fits in fewer than 3 row blocks: make it larger"


# GELU's blocks are 65,536 elements today: 260 rows of 1000 walk 4 blocks, rows of 70,001 one row
# per block. float32's exact form also walks erf's table in its own flat blocks.
@pytest.mark.parametrize("shape", [(4, 65, 1000), (3, 70001)], ids=str)
@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gelu_parity(threads, walked_blocks, shape, approximate, dtype):
    x = np.random.default_rng(8).standard_normal(shape) * 3
    check_parity(F.gelu, R.gelu, {"x": x}, dtype=dtype, seed=8, options={"approximate": approximate})
    assert walked_blocks["npgpt.ops.activation"] >= 3, f"{shape} fits in fewer than 3 row blocks: make it larger"


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("b_fc", [True, False], ids=["b_fc", "no b_fc"])
def test_mlp_parity(threads, walked_blocks, approximate, b_fc):
    """x (4, 129, 64), H = 256: the hidden (516, 256) walks 3 GELU row blocks (2 of 256 rows, then 4)."""
    args = mlp_tests._args(np.random.default_rng(9), (4, 129), 64, 256, 64, b_fc=b_fc)
    mlp_tests._run(args, seed=9, options={"approximate": approximate})
    assert walked_blocks["npgpt.ops.activation"] >= 3, "the hidden layer fits in fewer than 3 row blocks: make it larger"


@pytest.mark.parametrize("biases", [(False, False, False), (True, True, True)], ids=["Llama", "biases"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_swiglu_mlp_parity(threads, walked_blocks, biases, dtype):
    """x (4, 129, 64), H = 256: g, u and m (516, 256) walk 3 row blocks of 65,536 elements (2 of 256 rows, then 4)."""
    args = swiglu_tests._args(np.random.default_rng(11), (4, 129), 64, 256, 64, biases, gate_scale=3.0)
    swiglu_tests._run(args, seed=11, dtype=dtype)
    assert walked_blocks["npgpt.ops.swiglu"] >= 3, "the hidden layer fits in fewer than 3 row blocks: make it larger"


# --- cross-entropy and embeddings: no block walk today, but checked at a training batch's size -------
def test_cross_entropy_parity(threads):
    """(4, 129, 257) logits, about 133,000 elements, a tenth of the targets ignored."""
    g = np.random.default_rng(10)
    logits, targets = g.standard_normal((4, 129, 257)) * 3, g.integers(0, 257, (4, 129))
    targets[g.random((4, 129)) < 0.1] = -100
    check_parity(F.cross_entropy, R.cross_entropy, {"logits": logits, "targets": targets}, seed=10)


def test_embedding_parity(threads):
    """ids (4, 257) into (300, 256), an output of about 263,000 elements, ids repeated; positions 0..256."""
    g = np.random.default_rng(11)
    check_parity(F.embedding, R.embedding, {"ids": g.integers(0, 300, (4, 257)), "w": g.standard_normal((300, 256))},
                 seed=11)
    check_parity(F.position_embedding, R.position_embedding, {"wpe": g.standard_normal((300, 256))}, options={"T": 257},
                 seed=12)


# --- the whole model --------------------------------------------------------------------------------
# B = 8, T = 130 (3 query chunks), C = 128, 4 heads: B*T*C = 133,120 elements, past one layer-norm row
# block; the MLP's hidden (1040, 512) walks 9 GELU blocks; attention's B*NH*T^2 = 540,800 scores go to
# the pool in 3 blocks of sequences, on both threads at 2.
MODEL_CONFIGS = [
    GPTConfig(vocab_size=67, block_size=130, n_layer=2, n_head=4, n_embd=128),
    GPTConfig(vocab_size=67, block_size=130, n_layer=2, n_head=4, n_embd=128, bias=False, activation="gelu",
              pos_encoding="sinusoidal", tie_embeddings=False),
]


@pytest.mark.parametrize("cfg", MODEL_CONFIGS, ids=["gpt2", "exact-gelu-untied-sinusoidal-nobias"])
def test_gpt_matches_nanogpt_at_fast_path_sizes(walked_blocks, cfg):
    """Logits, loss and every gradient by name against reference/nanogpt.py (SDPA, F.layer_norm, F.gelu),
    float64, at 1 and 2 threads; and the two thread counts give the same bits."""
    B, T = 8, 130
    g = np.random.default_rng(3)
    idx, targets = g.integers(0, cfg.vocab_size, (B, T)), g.integers(0, cfg.vocab_size, (B, T))
    grads = {}
    try:
        for n in (1, 2):
            parallel.set_num_threads(n)
            model, twin = pair(cfg, 3)
            errors = errors_of(model, twin, idx, targets)
            report = "\n".join(f"  {e:.3e}  {k}" for k, e in sorted(errors.items(), key=lambda kv: -kv[1]))
            assert max(errors.values()) <= TOL["float64"], f"{n} threads: worst relative error per name:\n{report}"
            grads[n] = {k: p.grad.copy() for k, p in model.named_parameters()}
    finally:
        parallel.set_num_threads(None)
    for k, a in grads[1].items():
        assert np.array_equal(a, grads[2][k]), f"grad of {k}: 2 threads differ from 1 in the bits"
    for module in ("npgpt.ops.attention", "npgpt.ops.layernorm", "npgpt.ops.activation"):
        assert walked_blocks.get(module, 0) >= 2, f"{module} ran one block only at this size: make the model larger"


# --- the tiny blocks reach every walk ---------------------------------------------------------------
def test_tiny_blocks_cross_many_seams(tiny_blocks, walked_blocks):
    """With the `blocks` fixture's tiny sizes, the op tests' small shapes walk many blocks in every op
    that blocks its work; a knob renamed away makes `tiny_blocks` itself fail (monkeypatch raises)."""
    g = np.random.default_rng(0)
    x = Tensor(g.standard_normal((2, 5, 6)), requires_grad=True)
    y = F.layer_norm(x, Tensor(np.ones(6)))
    y = F.gelu(y)
    y.sum().backward()
    qkv = Tensor(g.standard_normal((3, 5, 6)), requires_grad=True)
    F.attention(qkv, 2).sum().backward()
    w = [Tensor(g.standard_normal(s), requires_grad=True) for s in ((6, 8), (6, 8), (8, 6))]
    F.swiglu_mlp(x, *w).sum().backward()
    for module in ("npgpt.ops.layernorm", "npgpt.ops.activation", "npgpt.ops.attention", "npgpt.ops.swiglu"):
        assert walked_blocks.get(module, 0) >= 3, f"{module} walked {walked_blocks.get(module, 0)} blocks under tiny sizes"


# --- the Llama block: the same bits at 1, 2 and 3 threads -------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_llama_block_same_bits_at_1_2_and_3_threads(walked_blocks, arch, dtype):
    """A Llama / Qwen3-layout GPT at a size where the SwiGLU MLP's hidden (1040, 512) walks 9 row
    blocks on the pool: logits, loss and every gradient have the same bits at 1, 2 and 3 threads
    (every trick on the pool is elementwise or sums in a fixed order)."""
    cfg = GPTConfig.for_arch(arch, vocab_size=67, block_size=130, n_layer=2, n_head=4, n_kv_head=2, n_embd=128)
    B, T = 8, 130
    g = np.random.default_rng(4)
    idx, targets = g.integers(0, cfg.vocab_size, (B, T)), g.integers(0, cfg.vocab_size, (B, T))
    runs = {}
    try:
        for n in (1, 2, 3):
            parallel.set_num_threads(n)
            model = GPT(cfg, seed=4, dtype=dtype)
            logits, loss = model(idx, targets)
            loss.backward()
            runs[n] = (logits.numpy().copy(), float(loss.item()),
                       {k: p.grad.copy() for k, p in model.named_parameters()})
    finally:
        parallel.set_num_threads(None)
    for n in (2, 3):
        assert np.array_equal(runs[n][0], runs[1][0]), f"logits: {n} threads differ from 1 in the bits"
        assert runs[n][1] == runs[1][1], f"loss: {n} threads differ from 1"
        for k, a in runs[1][2].items():
            assert np.array_equal(runs[n][2][k], a), f"grad of {k}: {n} threads differ from 1 in the bits"
    assert walked_blocks.get("npgpt.ops.swiglu", 0) >= 3, "the SwiGLU hidden layer ran in fewer than 3 blocks: make it larger"
