"""GPT vs its PyTorch twin: logits, loss and every gradient by name; causality; dropout; errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from npgpt import GPT, GPTConfig
from npgpt.nn import MLP
from npgpt.tensor import Tensor
from reference.model import TorchGPT
from tests.helpers import TOL, gpt_configs, rel_error

TORCH = {"float64": torch.float64, "float32": torch.float32}


def configs():
    return gpt_configs(dropouts=(0.0, 0.0, 0.25), free_widths=True)


def twin_of(model: GPT, dtype: str) -> TorchGPT:
    twin = TorchGPT(model.config, dtype=TORCH[dtype])
    twin.load_from_npgpt({k: np.asarray(v) for k, v in model.state_dict().items()})
    twin.dropout_generator = np.random.default_rng()
    twin.dropout_generator.bit_generator.state = model.dropout_generator.bit_generator.state
    return twin


def compare(cfg: GPTConfig, dtype: str, B: int, T: int, seed: int, ignore_some: bool = False) -> None:
    """Forward and backward in both; assert logits, loss and each gradient within TOL[dtype]."""
    model = GPT(cfg, seed=seed, dtype=dtype)
    g = np.random.default_rng(seed + 1)
    # GPT-2's init (std 0.02) keeps activations so small that e.g. both gelus nearly agree: load
    # O(1) weights instead so every op works in its non-linear range.
    model.load_state_dict({k: g.normal(1.0 if ".ln_" in k else 0.0, 0.4, v.shape) for k, v in model.state_dict().items()})
    twin = twin_of(model, dtype)
    idx = g.integers(0, cfg.vocab_size, (B, T))
    targets = g.integers(0, cfg.vocab_size, (B, T))
    if ignore_some:
        targets[0, 0] = -100
    logits, loss = model(idx, targets)
    t_logits, t_loss = twin(idx, targets)
    loss.backward()
    t_loss.backward()
    errors = {"logits": rel_error(logits.data, t_logits), "loss": rel_error(loss.data, t_loss)}
    theirs = dict(twin.named_parameters())
    assert [n for n, _ in model.named_parameters()] == list(theirs), "parameter names/order differ from the twin"
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert p.grad.dtype == np.dtype(dtype), f"{name}: gradient dtype {p.grad.dtype}, model {dtype}"
        errors[name] = rel_error(p.grad, theirs[name].grad)
    assert logits.dtype == np.dtype(dtype) and loss.dtype == np.dtype(dtype)
    worst = max(errors.values())
    report = "\n".join(f"  {e:.3e}  {n}" for n, e in sorted(errors.items(), key=lambda kv: -kv[1]))
    assert worst <= TOL[dtype], f"{cfg} B={B} T={T} ({dtype}): worst relative error per name:\n{report}"


@given(cfg=configs(), B=st.integers(1, 3), data=st.data(), seed=st.integers(0, 2**16))
def test_parity_float64(cfg, B, data, seed):
    T = data.draw(st.integers(1, cfg.block_size))
    compare(cfg, "float64", B, T, seed)


@pytest.mark.parametrize("cfg, B, T", [
    (GPTConfig(vocab_size=97, block_size=32, n_layer=3, n_head=4, n_embd=64, dropout=0.25, tie_embeddings=False,
               pos_encoding="sinusoidal", activation="gelu"), 3, 32),  # the largest drawn sizes
    (GPTConfig(vocab_size=2, block_size=1, n_layer=1, n_head=1, n_embd=1), 1, 1),  # the smallest
])
def test_parity_edges(cfg, B, T):
    compare(cfg, "float64", B, T, 11)


@pytest.mark.parametrize("kw", [{}, {"pos_encoding": "sinusoidal", "tie_embeddings": False, "bias": False,
                                     "activation": "gelu", "dropout": 0.1}])
def test_parity_float32(kw):
    compare(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32, **kw), "float32", 3, 16, 7)


def test_parity_with_ignored_targets():
    compare(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8), "float64", 2, 8, 3, ignore_some=True)


def test_parameter_names_and_layouts():
    cfg = GPTConfig(vocab_size=10, block_size=6, n_layer=2, n_head=2, n_embd=8, tie_embeddings=False)
    shapes = {n: p.shape for n, p in GPT(cfg, dtype="float64").named_parameters()}
    C, V = 8, 10
    assert shapes["transformer.wte.weight"] == (V, C)
    assert shapes["transformer.wpe.weight"] == (6, C)
    assert shapes["transformer.h.1.attn.c_attn.weight"] == (C, 3 * C)
    assert shapes["transformer.h.1.attn.c_attn.bias"] == (3 * C,)
    assert shapes["transformer.h.1.attn.c_proj.weight"] == (C, C)
    assert shapes["transformer.h.1.mlp.c_fc.weight"] == (C, 4 * C)
    assert shapes["transformer.h.1.mlp.c_proj.weight"] == (4 * C, C)
    assert shapes["transformer.ln_f.bias"] == (C,)
    assert shapes["lm_head.weight"] == (V, C)
    assert len(shapes) == 2 + 2 * 12 + 2 + 1
    nobias = GPT(GPTConfig(vocab_size=10, block_size=6, n_layer=1, n_head=2, n_embd=8, bias=False,
                           pos_encoding="sinusoidal"))
    names = [n for n, _ in nobias.named_parameters()]
    assert not any(n.endswith(".bias") for n in names) and "transformer.wpe.weight" not in names
    assert "lm_head.weight" not in names


def test_init_is_gpt2_and_deterministic():
    cfg = GPTConfig(vocab_size=50, block_size=64, n_layer=4, n_head=4, n_embd=64)
    a, b = GPT(cfg, seed=3), GPT(cfg, seed=3)
    sd = a.state_dict()
    for k, v in b.state_dict().items():
        assert v.dtype == np.float32 and np.array_equal(v, sd[k]), k
    assert not np.array_equal(GPT(cfg, seed=4).state_dict()["transformer.wte.weight"], sd["transformer.wte.weight"])
    assert np.all(sd["transformer.h.0.ln_1.weight"] == 1) and np.all(sd["transformer.h.0.attn.c_attn.bias"] == 0)
    assert abs(sd["transformer.h.0.mlp.c_fc.weight"].std() - 0.02) < 0.002
    assert abs(sd["transformer.h.0.mlp.c_proj.weight"].std() - 0.02 / np.sqrt(8)) < 0.001
    # float64 model from the same seed holds the same numbers before rounding
    c = GPT(cfg, seed=3, dtype="float64").state_dict()["transformer.wte.weight"]
    assert np.array_equal(c.astype(np.float32), sd["transformer.wte.weight"])


def test_state_dict_roundtrip_is_a_copy():
    cfg = GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=8, tie_embeddings=False)
    a, b = GPT(cfg, seed=1, dtype="float64"), GPT(cfg, seed=2, dtype="float64")
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    idx = np.arange(16).reshape(2, 8) % 17
    assert np.array_equal(a(idx)[0].data, b(idx)[0].data)


def test_load_state_dict_lists_every_problem():
    cfg = GPTConfig(vocab_size=17, block_size=8, n_layer=1, n_head=2, n_embd=8)
    m = GPT(cfg)
    sd = dict(m.state_dict())
    del sd["transformer.ln_f.bias"]
    sd["bogus.weight"] = np.zeros(3)
    sd["transformer.wte.weight"] = np.zeros((5, 8))
    with pytest.raises(ValueError) as e:
        m.load_state_dict(sd)
    msg = str(e.value)
    assert "missing" in msg and "transformer.ln_f.bias" in msg
    assert "unexpected" in msg and "bogus.weight" in msg
    assert "mis-shaped" in msg and "transformer.wte.weight" in msg and "(17, 8)" in msg
    sd["transformer.wte.weight"] = m.state_dict()["transformer.wte.weight"]
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert missing == ["transformer.ln_f.bias"] and unexpected == ["bogus.weight"]


def test_causality():
    cfg = GPTConfig(vocab_size=23, block_size=12, n_layer=2, n_head=2, n_embd=16)
    m = GPT(cfg, seed=0, dtype="float64")
    g = np.random.default_rng(0)
    idx = g.integers(0, 23, (2, 12))
    base = m(idx)[0].data
    for t in range(12):
        changed = idx.copy()
        changed[:, t + 1:] = (changed[:, t + 1:] + g.integers(1, 23, changed[:, t + 1:].shape)) % 23
        out = m(changed)[0].data
        assert np.array_equal(out[:, : t + 1], base[:, : t + 1]), f"logits at t <= {t} changed"
        if t < 11:
            assert not np.allclose(out[:, t + 1:], base[:, t + 1:]), "later logits should change"


def test_dropout_modes_and_seeds():
    kw = dict(vocab_size=19, block_size=8, n_layer=2, n_head=2, n_embd=16)
    idx = np.arange(16).reshape(2, 8) % 19
    ref = GPT(GPTConfig(**kw), seed=5, dtype="float64")
    ref.train()
    plain = ref(idx)[0].data
    m = GPT(GPTConfig(**kw, dropout=0.3), seed=5, dtype="float64")
    m.eval()
    assert np.array_equal(m(idx)[0].data, plain), "eval mode must drop nothing"
    m.train()
    state = m.dropout_generator.bit_generator.state
    a = m(idx)[0].data
    assert not np.allclose(a, plain), "training mode with p > 0 must change the output"
    b = m(idx)[0].data
    assert not np.array_equal(a, b), "the generator advances: two steps get different masks"
    m.dropout_generator.bit_generator.state = state
    assert np.array_equal(m(idx)[0].data, a), "same generator state -> same masks"
    m2 = GPT(GPTConfig(**kw, dropout=0.3), seed=5, dtype="float64")
    assert np.array_equal(m2(idx)[0].data, a), "same seed -> same masks"
    with pytest.raises(ValueError, match="Generator"):
        m.dropout_generator = 3


def test_residual_dropout_rate_and_scale():
    p = 0.3
    mlp = MLP(GPTConfig(n_embd=16, dropout=p), dtype="float64")
    g = np.random.default_rng(0)
    for prm in mlp.parameters():
        prm.data[...] = g.normal(0, 0.5, prm.shape)
    x = Tensor(g.normal(size=(8, 64, 16)))
    mlp.eval()
    y_eval = mlp(x).data
    mlp.train()
    y = mlp(x, generator=np.random.default_rng(1)).data
    dropped = y == 0
    n = dropped.size
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n), f"drop rate {dropped.mean():.4f}, expected {p}"
    np.testing.assert_allclose(y[~dropped], y_eval[~dropped] / (1 - p), rtol=1e-12)
    mlp.p = 0.0
    g = np.random.default_rng(1)
    state = g.bit_generator.state
    assert np.array_equal(mlp(x, generator=g).data, y_eval), "p = 0 in training mode is the identity"
    assert g.bit_generator.state == state, "p = 0 draws no mask"


@pytest.mark.parametrize("kw, field", [
    (dict(vocab_size=0), "vocab_size"), (dict(block_size=-1), "block_size"), (dict(n_layer=0), "n_layer"),
    (dict(n_head=3), "n_embd"), (dict(dropout=1.0), "dropout"), (dict(dropout=-0.1), "dropout"),
    (dict(pos_encoding="alibi"), "pos_encoding"), (dict(activation="relu"), "activation"),
    (dict(n_embd=2.5), "n_embd"), (dict(norm_eps=0), "norm_eps"), (dict(bias="yes"), "bias"),
    (dict(n_kv_head=3), "n_kv_head"), (dict(head_size=0), "head_size"), (dict(norm="batchnorm"), "norm"),
    (dict(mlp="gated"), "mlp='gated' with activation='gelu_tanh'"), (dict(rope_type="llama3"), "needs pos_encoding"),
    (dict(pos_encoding="rope", n_embd=6, n_head=2), "head_size must be even"),
    (dict(pos_encoding="rope", rope_type="linear"), "needs rope_factor"),
    (dict(norm="rmsnorm", norm_bias=True), "norm_bias"), (dict(qkv_bias=1), "qkv_bias"),
])
def test_config_validation(kw, field):
    base = dict(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{**base, **kw})


def test_config_dict_roundtrip():
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.1, pos_encoding="sinusoidal")
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys.*n_heads"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_heads": 2})
    with pytest.raises(ValueError, match="missing required keys.*vocab_size"):
        GPTConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "vocab_size"})


def test_idx_errors():
    m = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(IndexError, match="vocab_size=10"):
        m(np.array([[1, 10]]))
    with pytest.raises(IndexError, match=r"min -1"):
        m(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="integer"):
        m(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="block_size=8"):
        m(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="targets"):
        m(np.zeros((1, 4), dtype=np.int64), np.zeros((1, 3), dtype=np.int64))
    with pytest.raises(IndexError, match="targets"):
        m(np.zeros((1, 4), dtype=np.int64), np.full((1, 4), 11))
    logits, loss = m(Tensor(np.zeros((2, 4), dtype=np.int32)))
    assert logits.shape == (2, 4, 10) and loss is None


def test_module_machinery():
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=8)
    m = GPT(cfg)
    names = [n for n, _ in m.named_parameters()]
    assert names[:4] == ["transformer.wte.weight", "transformer.wpe.weight",
                         "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias"]
    assert names[-2:] == ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    assert list(m.state_dict()) == names and len(m.parameters()) == len(names)
    C = 8
    per_block = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C)
    assert m.num_params() == 10 * C + 8 * C + 2 * per_block + 2 * C  # the tied head counts once
    untied = GPT(GPTConfig(**{**cfg.to_dict(), "tie_embeddings": False}))
    assert untied.num_params() == m.num_params() + 10 * C
    m.eval()
    assert all(not mod.training for _, mod in m.named_modules())
    m.train()
    assert all(mod.training for _, mod in m.named_modules())
    _, loss = m(np.zeros((1, 4), dtype=np.int64), np.ones((1, 4), dtype=np.int64))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    # loading casts to the model's dtype and copies in place (an optimizer holding the Parameter sees it)
    wte = m.transformer.wte.weight
    m.load_state_dict({k: v.astype(np.float64) + 1 for k, v in m.state_dict().items()})
    assert m.transformer.wte.weight is wte and wte.data.dtype == np.float32


def test_config_numpy_integers_become_plain_ints():
    cfg = GPTConfig(vocab_size=np.int64(7), block_size=np.int32(4), n_layer=1, n_head=1, n_embd=np.int64(4))
    assert all(type(getattr(cfg, n)) is int for n in ("vocab_size", "block_size", "n_embd"))
    assert json.loads(json.dumps(cfg.to_dict()))["vocab_size"] == 7


def test_a_forward_checks_ids_and_targets_with_one_host_round_trip(monkeypatch):
    """On a GPU every look at a value waits for the device: GPT.forward checks idx and targets
    together in one transfer, and tells the embedding and cross-entropy ops to skip their own checks."""
    import npgpt.functional as F
    import npgpt.models.gpt as model_module
    import npgpt.ops.embedding as emb_module

    m = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=4), dtype="float64")
    transfers, checks = [], []
    real_to_numpy, real_emb, real_ce = model_module.to_numpy, emb_module.Embedding.forward, F.cross_entropy
    monkeypatch.setattr(model_module, "to_numpy", lambda a: transfers.append(1) or real_to_numpy(a))

    def emb_forward(self, ids, w, check_ids=True):
        checks.append(("embedding", check_ids))
        return real_emb(self, ids, w, check_ids=check_ids)

    def cross_entropy(logits, targets, ignore_index=-100, check_targets=True):
        checks.append(("cross_entropy", check_targets))
        return real_ce(logits, targets, ignore_index, check_targets)

    monkeypatch.setattr(emb_module.Embedding, "forward", emb_forward)
    monkeypatch.setattr(F, "cross_entropy", cross_entropy)
    idx = np.arange(16).reshape(2, 8) % 11
    m(idx, idx)
    assert len(transfers) == 1
    assert sorted(checks) == [("cross_entropy", False), ("embedding", False), ("embedding", False)]  # wte, wpe
    with pytest.raises(IndexError, match=r"targets holds ids outside \[0, vocab_size=11\) other than ignore_index"):
        m(idx, idx + 5)
    with pytest.raises(IndexError, match=r"idx holds ids outside \[0, vocab_size=11\)"):
        m(idx - 1)
