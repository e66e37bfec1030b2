"""The Llama family against Hugging Face transformers, exactly: tiny random Llama / Qwen2 / Qwen3 models
built offline, loaded into npgpt from the directory transformers saves, compared in float64.

Know the reference. transformers' Llama/Qwen code computes RMSNorm (`hidden_states.to(torch.float32)`)
and RoPE's cos/sin (inverse frequencies made with dtype=torch.float, angles in `.float()`) in float32
even in a float64 model, its eager attention's softmax in float32, and `loss` (ForCausalLMLoss upcasts
to float32... and averages in its own order) as well; a float64 comparison against it stops near 1e-7,
which would hide any real error below that. So `hf_float64` (below) swaps those forwards for float64
ones written from the same formulas: RMSNorm in the input's dtype; the rotary embedding's inverse
frequencies recomputed by transformers' own rope functions with `torch.float` answering float64, its
angles in float64; SDPA attention (attn_implementation="sdpa", float64 throughout); the loss taken
with F.cross_entropy on HF's logits. Against that: logits and loss <= 1e-12, every gradient <= 1e-11.
Against unpatched transformers in float32, npgpt in float32 agrees to 1e-5.

`PYTHONPATH=. python -m tests.test_llama_hf` prints the parity table (each config: logits, loss, worst gradient,
greedy tokens).
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from npgpt.generation.generate import KVCache  # noqa: E402
from npgpt.models.gpt import GPT  # noqa: E402
from npgpt.tensor import no_grad  # noqa: E402
from tests.helpers import edit_config_json, rel_error  # noqa: E402

LLAMA3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
COMMON = dict(vocab_size=67, hidden_size=32, intermediate_size=40, num_hidden_layers=2, max_position_embeddings=128)
CONFIGS = {
    # GQA (4 query heads on 2 kv heads), llama3 rope scaling, every bias on (attention_bias, mlp_bias), untied
    "llama-gqa-llama3": ("llama", dict(num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                                       rms_norm_eps=1e-5, tie_word_embeddings=False,
                                       rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, **LLAMA3})),
    # MQA (one kv head), tied head, linear rope scaling
    "llama-mqa-tied": ("llama", dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                                     rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
    # q/k/v biases, no o bias
    "qwen2-qkv-bias": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    # QK-norm, head size 12 with 4 heads on a width of 32 (not 32 / 4), tied
    "qwen3-qknorm-hs12": ("qwen3", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                                        tie_word_embeddings=True,
                                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
}
CONFIG_CLASSES = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config"}


# --- the float64 reference -------------------------------------------------------------------------
class _Float64Torch:
    """Stands in for a transformers module's `torch`: torch.float answers float64, so transformers'
    own rope formulas (which ask for dtype=torch.float) run in float64."""

    float = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def _rms_norm_float64(self, hidden_states):
    """RMSNorm in the input's dtype (transformers casts to float32 first)."""
    x = hidden_states
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def _rotary_float64(self, x, position_ids):
    """cos/sin with float64 angles (transformers takes `.float()` of positions and frequencies)."""
    freqs = position_ids[..., None].to(torch.float64) * self.inv_freq.to(device=x.device, dtype=torch.float64)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


@contextlib.contextmanager
def hf_float64(monkeypatch):
    """Within: transformers' Llama/Qwen2/Qwen3 RMSNorm and rotary embedding compute in float64 (see the
    module docstring). Call `float64_rope(model)` on a model built inside to recompute its inverse frequencies."""
    from transformers import modeling_rope_utils as mru
    from transformers.models.llama import modeling_llama
    from transformers.models.qwen2 import modeling_qwen2
    from transformers.models.qwen3 import modeling_qwen3

    with monkeypatch.context() as m:
        for mod, prefix in ((modeling_llama, "Llama"), (modeling_qwen2, "Qwen2"), (modeling_qwen3, "Qwen3")):
            m.setattr(getattr(mod, f"{prefix}RMSNorm"), "forward", _rms_norm_float64)
            m.setattr(getattr(mod, f"{prefix}RotaryEmbedding"), "forward", _rotary_float64)
            m.setattr(mod, "torch", _Float64Torch())
        m.setattr(mru, "torch", _Float64Torch())
        yield


def float64_rope(model):
    """Recompute each rotary embedding's inverse frequencies with transformers' own function, in float64
    (inside hf_float64)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for mod in model.modules():
        if type(mod).__name__.endswith("RotaryEmbedding"):
            fn = mod.compute_default_rope_parameters if mod.rope_type == "default" else ROPE_INIT_FUNCTIONS[mod.rope_type]
            inv, scaling = fn(mod.config)
            assert inv.dtype == torch.float64
            mod.inv_freq = inv
            mod.attention_scaling = scaling


def hf_loss(logits, targets):
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# --- building the tiny models -----------------------------------------------------------------------
def make_hf(name: str, seed: int = 0):
    """A float64 transformers model of CONFIGS[name] with every parameter drawn (norm weights near 1,
    biases non-zero), in eval mode, SDPA attention."""
    family, kw = CONFIGS[name]
    return random_hf_model(getattr(transformers, CONFIG_CLASSES[family])(**COMMON, **kw), seed)


def random_hf_model(config, seed: int = 0):
    """A float64 transformers causal LM of `config`, every parameter drawn (norm weights near 1,
    biases non-zero), in eval mode, SDPA attention."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            p.copy_(1.0 + 0.2 * noise if "norm" in pname else 0.3 * noise)
    return model.eval()


@pytest.fixture(params=list(CONFIGS))
def name(request):
    return request.param


@pytest.fixture
def pair(name, tmp_path, monkeypatch):
    """(hf float64 model under the float64 harness, npgpt float64 model from its saved directory, dir)."""
    folder = tmp_path / name
    with hf_float64(monkeypatch):
        hf = make_hf(name)
        hf.save_pretrained(folder)
        float64_rope(hf)
        ours = GPT.from_pretrained(folder, dtype="float64")
        yield hf, ours, folder


def _batch(V: int, B: int = 2, T: int = 24, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def _hf_grad(hf, pname):
    g = dict(hf.named_parameters())[pname].grad
    return g.T if pname.endswith("_proj.weight") else g


def measure(hf, ours) -> dict:
    """The parity figures of one pair: logits, loss, worst gradient (and its name), greedy tokens."""
    ids, targets = _batch(ours.config.vocab_size)
    ours.train()
    logits, loss = ours(ids, targets)
    loss.backward()
    hf.zero_grad()
    hf_logits = hf(torch.tensor(ids)).logits
    ref = hf_loss(hf_logits, torch.tensor(targets))
    ref.backward()
    grads = {n: rel_error(p.grad, _hf_grad(hf, n)) for n, p in ours.named_parameters()}
    worst = max(grads, key=grads.get)
    ours.eval()
    prompt = ids[:1, :8]
    with torch.no_grad():
        hf_tokens = hf.generate(torch.tensor(prompt), max_new_tokens=100, do_sample=False, eos_token_id=None,
                                pad_token_id=0, attention_mask=torch.ones_like(torch.tensor(prompt))).numpy()
    our_tokens = np.asarray(ours.generate(prompt, max_new_tokens=100, do_sample=False, eos_token_id=[]))
    same = int((hf_tokens[0, 8:] == our_tokens[0, 8:]).sum())
    return dict(logits=rel_error(logits.data, hf_logits), loss=abs(float(loss.data) - ref.item()) / abs(ref.item()),
                grads=grads, worst_grad=(worst, grads[worst]), greedy=(same, hf_tokens.shape[1] - 8),
                hf_tokens=hf_tokens, our_tokens=our_tokens)


# --- the tests --------------------------------------------------------------------------------------
def test_config_round_trip_names_the_family(pair, name):
    hf, ours, folder = pair
    c = ours.config
    family, kw = CONFIGS[name]
    assert c.layout == "llama" and c.n_kv_head == kw["num_key_value_heads"] and c.qk_norm == (family == "qwen3")
    assert c.head_size == kw.get("head_dim", 8) and c.tie_embeddings == kw["tie_word_embeddings"]
    assert c.rope_type == kw["rope_parameters"]["rope_type"]
    assert set(ours.state_dict()) == {n for n, _ in hf.named_parameters()}  # HF's names, one to one


def test_logits_loss_and_every_gradient_match_float64(pair):
    hf, ours, _ = pair
    r = measure(hf, ours)
    assert r["logits"] <= 1e-12, f"logits {r['logits']:.2e}"
    assert r["loss"] <= 1e-12, f"loss {r['loss']:.2e}"
    bad = {n: e for n, e in r["grads"].items() if not e <= 1e-11}
    assert not bad, "worst relative gradient error per parameter:\n" + "\n".join(
        f"  {n}: {e:.2e}" for n, e in sorted(r["grads"].items(), key=lambda kv: -kv[1]))
    np.testing.assert_array_equal(r["our_tokens"], r["hf_tokens"])  # 100 greedy tokens, npgpt with its KV cache


def test_cached_logits_equal_recomputed(pair):
    _, ours, _ = pair
    ids, _ = _batch(ours.config.vocab_size, T=20)
    with no_grad():
        full = ours(ids)[0].data
        cache = KVCache(ours, 2)
        parts = [ours(ids[:, :5], cache=cache)[0].data] + [ours(ids[:, t:t + 1], cache=cache)[0].data for t in range(5, 20)]
    assert rel_error(np.concatenate(parts, axis=1), full) <= 1e-12
    c = ours.config
    assert cache.k[0].shape == (2, c.n_kv_head, c.block_size, c.head_size)  # memory grows with n_kv_head


def test_save_pretrained_loads_in_transformers_with_the_same_logits(pair, tmp_path):
    hf, ours, _ = pair
    out = tmp_path / "saved"
    ours.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == hf.config.model_type
    back = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float64, attn_implementation="sdpa").eval()
    assert type(back) is type(hf)
    float64_rope(back)
    ids, _ = _batch(ours.config.vocab_size)
    with torch.no_grad(), no_grad():
        assert rel_error(ours(ids)[0].data, back(torch.tensor(ids)).logits) <= 1e-12
    for n, p in hf.named_parameters():
        torch.testing.assert_close(dict(back.named_parameters())[n], p, rtol=0, atol=0)


def test_float32_against_unpatched_transformers(name, tmp_path):
    folder = tmp_path / name
    make_hf(name).save_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ours = GPT.from_pretrained(folder, dtype="float32")
    ids, targets = _batch(ours.config.vocab_size)
    with torch.no_grad(), no_grad():
        out = hf(torch.tensor(ids), labels=torch.tensor(targets))
        logits, loss = ours(ids, targets)
    assert logits.dtype == np.float32
    # HF's labels loss shifts targets by one; compare on the logits it was computed from
    assert rel_error(logits.data, out.logits) <= 1e-5
    assert abs(float(loss.data) - float(hf_loss(out.logits, torch.tensor(targets)))) <= 1e-5


# --- refusals ---------------------------------------------------------------------------------------
def _llama_dir(tmp_path, **change):
    folder = tmp_path / "refused"
    make_hf("llama-mqa-tied").save_pretrained(folder)
    return edit_config_json(folder, **change)


@pytest.mark.parametrize("change, message", [
    (dict(hidden_act="gelu"), r"hidden_act 'gelu' is not supported"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}), r"rope type 'yarn' is not supported"),
    (dict(rope_parameters=None, rope_scaling={"type": "dynamic", "factor": 2.0}), r"rope type 'dynamic' is not supported"),
    (dict(model_type="qwen2", use_sliding_window=True), r"use_sliding_window=true"),
    (dict(model_type="qwen3", layer_types=["full_attention", "sliding_attention"]), r"sliding_attention"),
    (dict(num_local_experts=8), r"num_local_experts=8 \(mixture of experts\)"),
    (dict(partial_rotary_factor=0.5), r"partial_rotary_factor=0.5"),
    (dict(tie_word_embeddings=False), r"tie_word_embeddings is false, but the checkpoint has no lm_head.weight"),
])
def test_what_npgpt_cannot_run_is_refused_by_name(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        GPT.from_pretrained(_llama_dir(tmp_path, **change))


def test_transformers4_rope_keys_read(tmp_path):
    """transformers 4 wrote rope_theta + rope_scaling with `type` or `rope_type`; both read the same."""
    for key in ("type", "rope_type"):
        folder = _llama_dir(tmp_path, rope_parameters=None, rope_theta=123456.0,
                            rope_scaling={key: "llama3", **LLAMA3})
        c = GPT.from_pretrained(folder).config
        assert (c.rope_type, c.rope_theta, c.rope_factor, c.rope_original_max_position) == ("llama3", 123456.0, 8.0, 16)


def parity_table() -> str:
    """The parity table of every config, as the module docstring's harness measures it."""
    import tempfile

    rows = ["| config | logits (rel) | loss (rel) | worst gradient (rel, parameter) | greedy tokens equal |",
            "|---|---|---|---|---|"]
    mp = pytest.MonkeyPatch()
    for n in CONFIGS:
        with tempfile.TemporaryDirectory() as d, hf_float64(mp):
            hf = make_hf(n)
            hf.save_pretrained(d)
            float64_rope(hf)
            r = measure(hf, GPT.from_pretrained(d, dtype="float64"))
        (wn, we), (same, total) = r["worst_grad"], r["greedy"]
        rows.append(f"| {n} | {r['logits']:.1e} | {r['loss']:.1e} | {we:.1e} ({wn}) | {same}/{total} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(parity_table())
