"""LoRA on the Llama family (npgpt/training/lora.py) against PEFT, in float64 and offline: tiny random
LlamaForCausalLM (GQA, biases) and Qwen3ForCausalLM (QK-norm, GQA, head size != width / heads).

transformers' Llama/Qwen RMSNorm and RoPE compute in float32 even in a float64 model, so the reference
runs under tests/test_llama_hf.py's float64 harness (hf_float64 + float64_rope), SDPA attention, and
the loss is taken with F.cross_entropy on its logits. As tests/test_lora.py does for GPT-2: the same
random adapters (B non-zero) in PEFT's model and npgpt's (PEFT's directory loaded by load_adapter);
logits and every adapter gradient within 1e-10; npgpt's adapter directory (fan_in_fan_out false: these
are nn.Linear layers, stored (out, in) by transformers) loads in peft.PeftModel.from_pretrained and
gives npgpt's logits; merged equals unmerged (1e-12) and equals PEFT's merge_and_unload.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import npgpt.functional as F  # noqa: E402
from npgpt import GPT  # noqa: E402
from npgpt.lora import LoraConfig, add_lora, load_adapter, lora_layers, merge_lora, save_adapter  # noqa: E402
from tests.helpers import rel_error, save_random_peft_adapter  # noqa: E402
from tests.test_llama_hf import float64_rope, hf_float64, random_hf_model  # noqa: E402

TOL = 1e-10
COMMON = dict(vocab_size=53, hidden_size=24, intermediate_size=36, num_hidden_layers=2, max_position_embeddings=64)
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODELS = {
    "llama": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                                  tie_word_embeddings=False,
                                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "qwen3": ("Qwen3Config", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=10, tie_word_embeddings=True,
                                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
}
LORAS = {
    "qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "all-rslora": dict(r=3, lora_alpha=5, target_modules=ALL, use_rslora=True),
}
CASES = [(m, lo) for m in MODELS for lo in LORAS]
ERRORS: dict = {}  # case -> worst error per quantity, printed by test_report


def _random_hf(model: str, seed: int = 0):
    cls, kw = MODELS[model]
    return random_hf_model(getattr(transformers, cls)(**COMMON, **kw), seed)


def _ids(V: int, seed: int = 5):
    return np.random.default_rng(seed).integers(0, V, (2, 13))


def _targets(ids):
    return np.pad(ids, ((0, 0), (0, 1)), constant_values=-100)[:, 1:]  # next token; the last counts nothing


@pytest.fixture(params=CASES, ids=[f"{m}-{lo}" for m, lo in CASES])
def case(request, tmp_path, monkeypatch):
    """(model, lora, PEFT model with random adapters under the float64 harness, npgpt model with the
    adapters PEFT wrote, tmp_path)."""
    model, lora = request.param
    with hf_float64(monkeypatch):
        hf = _random_hf(model)
        hf.save_pretrained(tmp_path / "base")
        float64_rope(hf)
        pm = peft.get_peft_model(hf, peft.LoraConfig(**LORAS[lora], lora_dropout=0.0))
        save_random_peft_adapter(pm, tmp_path / "peft_adapter")
        ours = GPT.from_pretrained(tmp_path / "base", dtype="float64")
        yield model, lora, pm.eval(), ours, tmp_path


def test_peft_adapter_logits_and_gradients_match(case):
    model, lora, pm, ours, tmp_path = case
    written = json.loads((tmp_path / "peft_adapter" / "adapter_config.json").read_text())
    assert written["fan_in_fan_out"] is False
    load_adapter(ours, tmp_path / "peft_adapter")
    assert len(lora_layers(ours)) == 2 * len(LORAS[lora]["target_modules"])
    peft_lora = {n.replace("base_model.model.", "").replace(".default", ""): p
                 for n, p in pm.named_parameters() if p.requires_grad}
    mine = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    assert sorted(mine) == sorted(peft_lora) and mine  # the same adapters, by name; nothing else trains
    ids = _ids(ours.config.vocab_size)
    targets = _targets(ids)
    ours.train()
    logits, loss = ours(ids, targets)
    loss.backward()
    out = pm(input_ids=torch.from_numpy(ids)).logits
    tloss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), torch.from_numpy(targets).reshape(-1),
                                              ignore_index=-100)
    tloss.backward()
    errors = {"logits": rel_error(logits.data, out), "loss": rel_error(loss.data, tloss)}
    for n, p in mine.items():
        errors[n] = rel_error(p.grad, peft_lora[n].grad)
    assert all(p.grad is None for p in ours.parameters() if not p.requires_grad)  # the base takes none
    ERRORS.setdefault(f"{model}-{lora}", {}).update(
        logits=errors["logits"], gradients=max(v for k, v in errors.items() if "lora_" in k))
    report = "\n".join(f"  {e:.3e}  {n}" for n, e in sorted(errors.items(), key=lambda kv: -kv[1]))
    assert max(errors.values()) <= TOL, f"worst error per name:\n{report}"
    assert float(loss.data) > 1.0


def test_npgpt_adapter_loads_in_peft_and_merges(case, monkeypatch):
    model, lora, _, ours, tmp_path = case
    kw = LORAS[lora]
    add_lora(ours, LoraConfig(r=kw["r"], alpha=kw["lora_alpha"], target_modules=kw["target_modules"],
                              use_rslora=kw.get("use_rslora", False)), seed=7)
    g = np.random.default_rng(8)
    for layer in lora_layers(ours).values():  # B away from zero
        layer.lora_B.weight.data[...] = g.normal(0.0, 0.5, layer.lora_B.weight.shape)
    save_adapter(ours, tmp_path / "ours")
    written = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert written["fan_in_fan_out"] is False and written["peft_type"] == "LORA"
    ids = _ids(ours.config.vocab_size, seed=6)
    with hf_float64(monkeypatch):
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", torch_dtype=torch.float64,
                                                               attn_implementation="sdpa").eval()
        float64_rope(hf)
        loaded = peft.PeftModel.from_pretrained(hf, tmp_path / "ours").eval()
        with torch.no_grad():
            theirs = loaded(input_ids=torch.from_numpy(ids)).logits
        logits, _ = ours(ids)
        err = rel_error(logits.data, theirs)
        ERRORS.setdefault(f"{model}-{lora}", {})["npgpt adapter in PEFT"] = err
        assert err <= TOL
        paths = merge_lora(ours)
        assert not lora_layers(ours) and ours.lora_config is None and len(paths) == 2 * len(kw["target_modules"])
        merged, _ = ours(ids)
        ERRORS[f"{model}-{lora}"]["merged vs unmerged"] = rel_error(merged.data, logits.data)
        assert rel_error(merged.data, logits.data) <= 1e-12
        hf_merged = dict(loaded.merge_and_unload().named_parameters())
        for n, p in ours.named_parameters():  # npgpt stores (in, out), transformers' nn.Linear (out, in)
            ref = hf_merged[n].T if n.endswith("_proj.weight") else hf_merged[n]
            assert rel_error(p.data, ref) <= 1e-12, n
    assert all(p.requires_grad for p in ours.parameters())


@pytest.mark.parametrize("gain", [1.0, 300.0])
def test_adapted_gated_mlp_equals_the_fused_op(gain):
    """With adapters on gate/up/down (B = 0) the MLP leaves F.swiglu_mlp for its unfused path (silu
    written with tanh); logits and every base gradient agree with the fused model's within rounding,
    also with gate pre-activations in the hundreds (gain), where sigmoid saturates."""
    from npgpt import GPTConfig  # noqa: PLC0415

    cfg = GPTConfig.for_arch("llama", n_layer=2, n_head=2, n_embd=16, vocab_size=31, block_size=8)
    model = GPT(cfg, dtype="float64", seed=1)
    for n, p in model.named_parameters():
        if "gate_proj" in n:
            p.data *= gain
    ids = np.random.default_rng(2).integers(0, 31, (2, 8))
    fused, loss = model(ids, _targets(ids))
    loss.backward()
    want = {n: p.grad.copy() for n, p in model.named_parameters()}
    add_lora(model, LoraConfig(r=2, target_modules=["gate_proj", "up_proj", "down_proj"]))
    base = [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
    for _, p in base:
        p.requires_grad, p.grad = True, None
    unfused, loss = model(ids, _targets(ids))
    loss.backward()
    ERRORS.setdefault(f"unfused gated MLP, gain {gain:g}", {})["logits"] = rel_error(unfused.data, fused.data)
    assert rel_error(unfused.data, fused.data) <= 1e-14
    errs = {n: rel_error(p.grad, want[n]) for n, p in base}
    ERRORS[f"unfused gated MLP, gain {gain:g}"]["gradients"] = max(errs.values())
    assert max(errs.values()) <= 1e-13, errs


def test_report(capsys):
    """The parity figures of this run (printed with -s; the asserts above are the tests)."""
    with capsys.disabled():
        for case, errs in ERRORS.items():
            print(f"\n  LoRA parity {case}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
