"""npgpt/training/lora.py against PEFT, in float64 and offline: tiny random GPT2LMHeadModels.

For each config the same random adapters sit in PEFT's model and npgpt's (the PEFT-written adapter
directory loaded by npgpt's load_adapter); logits and every adapter gradient agree within 1e-10,
npgpt's adapter directory loads in peft.PeftModel.from_pretrained and gives npgpt's logits, merged
equals unmerged, and training moves the adapters only.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import npgpt.functional as F
from npgpt import GPT, GPTConfig
from npgpt.lora import (LoraConfig, add_lora, load_adapter, lora_layers, merge_lora, read_adapter_config,
                        save_adapter)
from npgpt.training.optim import configure_optimizer
from tests.helpers import rel_error, save_random_peft_adapter

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
from tests.test_hf import hf_targets, random_hf  # noqa: E402 - after the skips

TOL = 1e-10
CASES = {  # name -> (GPT2Config keywords, PEFT LoraConfig keywords)
    "attn+proj": (dict(n_layer=2, n_head=2, n_embd=16, vocab_size=37, n_positions=11),
                  dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"])),
    "all-rslora-untied": (dict(n_layer=2, n_head=3, n_embd=18, vocab_size=29, n_positions=9, tie_word_embeddings=False,
                               activation_function="gelu"),
                          dict(r=3, lora_alpha=5, target_modules=["c_attn", "c_fc", "c_proj"], use_rslora=True)),
    "regex": (dict(n_layer=3, n_head=1, n_embd=8, vocab_size=23, n_positions=7),
              dict(r=2, lora_alpha=3, target_modules=r"transformer\.h\.[12]\.(attn\.c_attn|mlp\.c_fc)")),
}
ERRORS: dict = {}  # case -> worst error per quantity, printed by test_report


def _peft_pair(case: str, tmp_path):
    """(PEFT model with random adapters, npgpt model with those adapters, loaded from PEFT's files, ids)."""
    shape, lora = CASES[case]
    hf = random_hf(3, **shape)
    base_dir = tmp_path / "base"
    hf.save_pretrained(base_dir)
    pm = peft.get_peft_model(hf, peft.LoraConfig(**lora, lora_dropout=0.0, fan_in_fan_out=True))
    save_random_peft_adapter(pm, tmp_path / "peft_adapter")
    model = GPT.from_pretrained(base_dir, dtype="float64")
    load_adapter(model, tmp_path / "peft_adapter")
    ids = np.random.default_rng(5).integers(0, shape["vocab_size"], (2, shape["n_positions"]))
    return pm.eval(), model, ids


def _loss_np(model, ids):
    logits, _ = model(ids)
    V = logits.shape[-1]
    loss = F.cross_entropy(F.reshape(logits, (-1, V)), hf_targets(ids).reshape(-1))
    return logits, loss


def _loss_torch(pm, ids):
    out = pm(input_ids=torch.from_numpy(ids))
    shifted = torch.nn.functional.pad(torch.from_numpy(ids), (0, 1), value=-100)[..., 1:]
    loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), shifted.reshape(-1))
    return out.logits, loss


@pytest.mark.parametrize("case", list(CASES))
def test_logits_and_adapter_gradients_match_peft(case, tmp_path):
    pm, model, ids = _peft_pair(case, tmp_path)
    peft_lora = {n.replace("base_model.model.", "").replace(".default", ""): p
                 for n, p in pm.named_parameters() if p.requires_grad}
    ours = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(ours) == sorted(peft_lora) and ours  # the same adapters, by name; nothing else trains
    assert all(n.endswith((".lora_A.weight", ".lora_B.weight")) for n in ours)
    logits, loss = _loss_np(model, ids)
    tlogits, tloss = _loss_torch(pm, ids)
    loss.backward()
    tloss.backward()
    errors = {"logits": rel_error(logits.data, tlogits), "loss": rel_error(loss.data, tloss)}
    for n, p in ours.items():
        errors[n] = rel_error(p.grad, peft_lora[n].grad)
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)  # the base takes none
    ERRORS[case] = {"logits": errors["logits"], "gradients": max(v for k, v in errors.items() if "lora_" in k)}
    report = "\n".join(f"  {e:.3e}  {n}" for n, e in sorted(errors.items(), key=lambda kv: -kv[1]))
    assert max(errors.values()) <= TOL, f"worst error per name:\n{report}"
    assert float(loss.data) > 1.0


@pytest.mark.parametrize("case", list(CASES))
def test_npgpt_adapter_loads_in_peft_and_merges(case, tmp_path):
    shape, lora = CASES[case]
    pm, _, ids = _peft_pair(case, tmp_path)
    base = GPT.from_pretrained(tmp_path / "base", dtype="float64")
    cfg = LoraConfig(r=lora["r"], alpha=lora["lora_alpha"], target_modules=lora["target_modules"],
                     use_rslora=lora.get("use_rslora", False))
    add_lora(base, cfg, seed=7)
    g = np.random.default_rng(8)
    for layer in lora_layers(base).values():  # B away from zero
        layer.lora_B.weight.data[...] = g.normal(0.0, 0.5, layer.lora_B.weight.shape)
    save_adapter(base, tmp_path / "ours")
    written = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert written["fan_in_fan_out"] is True and written["peft_type"] == "LORA"
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base", torch_dtype=torch.float64).eval()
    loaded = peft.PeftModel.from_pretrained(hf, tmp_path / "ours").eval()
    with torch.no_grad():
        theirs = loaded(input_ids=torch.from_numpy(ids)).logits
    logits, _ = base(ids)
    err = rel_error(logits.data, theirs)
    ERRORS.setdefault(case, {})["npgpt adapter in PEFT"] = err
    assert err <= TOL
    # merged == unmerged, and npgpt's merged weights are PEFT's merge_and_unload's
    paths = merge_lora(base)
    assert not lora_layers(base) and base.lora_config is None and paths
    merged, _ = base(ids)
    ERRORS[case]["merged vs unmerged"] = rel_error(merged.data, logits.data)
    assert rel_error(merged.data, logits.data) <= 1e-12
    hf_merged = dict(loaded.merge_and_unload().named_parameters())
    for n, p in base.named_parameters():
        assert rel_error(p.data, hf_merged[n]) <= 1e-12, n
    assert all(p.requires_grad for p in base.parameters())


def test_training_moves_only_the_adapters(tmp_path):
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=8, vocab_size=19, block_size=6), dtype="float64", seed=1)
    base = {n: p.data.copy() for n, p in model.named_parameters()}
    before, _ = model(np.arange(6)[None] % 19)
    add_lora(model, LoraConfig(r=2, alpha=4, target_modules=["c_attn", "c_proj"], dropout=0.1), seed=2)
    start, _ = model(np.arange(6)[None] % 19)
    np.testing.assert_array_equal(start.data, before.data)  # B = 0: the adapted model is the base exactly
    opt = configure_optimizer(model, lr=1e-2, weight_decay=0.1)
    held = [p for g in opt.param_groups for p in g["params"]]
    adapters = [p for n, p in model.named_parameters() if "lora_" in n]
    assert {id(p) for p in held} == {id(p) for p in adapters} and len(adapters) == 2 * 2 * 3
    model.train()
    ids = np.random.default_rng(3).integers(0, 19, (4, 6))
    for _ in range(3):
        _, loss = model(ids, np.roll(ids, -1, axis=1))
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        if "lora_" in n:
            continue
        np.testing.assert_array_equal(p.data, base[n], err_msg=n)
    assert all(np.abs(layer.lora_B.weight.data).max() > 0 for layer in lora_layers(model).values())


def test_a_is_drawn_as_peft_draws_it():
    """kaiming_uniform_(a=sqrt(5)) over (r, in): U(-1/sqrt(in), 1/sqrt(in)); B zero."""
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=64, vocab_size=11, block_size=4), dtype="float64")
    layers = add_lora(model, LoraConfig(r=64, alpha=16, target_modules=["c_fc"]))
    a = layers["transformer.h.0.mlp.c_fc"].lora_A.weight.data
    t = torch.empty(64, 64, dtype=torch.float64)
    torch.nn.init.kaiming_uniform_(t, a=5 ** 0.5)
    bound = 1 / 8
    assert a.shape == (64, 64) and np.abs(a).max() <= bound and np.abs(a).max() > 0.95 * bound
    assert t.abs().max().item() <= bound  # torch's own draw lies within the same bound
    assert abs(a.std() - bound / 3 ** 0.5) < 0.01  # the std of U(-b, b)
    assert not layers["transformer.h.0.mlp.c_fc"].lora_B.weight.data.any()


def test_target_matching_is_peft_s():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=8, vocab_size=11, block_size=4))
    layers = add_lora(model, LoraConfig(r=1, target_modules=["c_proj"]))
    assert list(layers) == ["transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj",
                            "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_proj"]
    names = [n for n, _ in model.named_parameters()]
    assert names.index("transformer.h.0.attn.c_proj.lora_A.weight") < names.index("transformer.h.0.ln_2.weight")
    assert names[:5] == [n for n, _ in GPT(model.config).named_parameters()][:5]
    fresh = GPT(model.config)
    assert list(add_lora(fresh, LoraConfig(r=1))) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    fresh = GPT(model.config)
    assert list(add_lora(fresh, LoraConfig(r=1, target_modules=r".*h\.1\..*c_attn"))) == ["transformer.h.1.attn.c_attn"]
    # a suffix must be a whole name: "proj" is no module's name
    with pytest.raises(ValueError, match="match no module.*c_attn, c_fc, c_proj"):
        add_lora(GPT(model.config), LoraConfig(r=1, target_modules=["proj"]))
    with pytest.raises(ValueError, match="not Linear layers: transformer.h.0.ln_1"):
        add_lora(GPT(model.config), LoraConfig(r=1, target_modules=["ln_1"]))
    with pytest.raises(ValueError, match="adapters already"):
        add_lora(model, LoraConfig(r=1))


@pytest.mark.parametrize("kw, message", [
    (dict(r=0), "r must be an integer >= 1"), (dict(r=2.0), "r must be an integer"),
    (dict(r=2, alpha=0), "alpha must be a number > 0"), (dict(r=2, dropout=1.0), "dropout must be a probability"),
    (dict(r=2, target_modules=[]), "list of module names or a regex"), (dict(r=2, target_modules="("), "not a valid regex"),
    (dict(r=2, use_rslora=1), "use_rslora must be true or false"),
])
def test_bad_configs(kw, message):
    with pytest.raises(ValueError, match=message):
        LoraConfig(**kw)


def test_scales():
    assert LoraConfig(r=8, alpha=16).scale == 2.0
    assert LoraConfig(r=16, alpha=16, use_rslora=True).scale == 4.0
    assert LoraConfig(r=4).alpha == 4.0  # none: alpha = r


def test_bad_adapter_directories(tmp_path):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=11, block_size=4))
    with pytest.raises(ValueError, match="no adapter_config.json"):
        load_adapter(model, tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                              "target_modules": ["c_attn"], "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora=True"):
        read_adapter_config(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(ValueError, match="npgpt loads LORA adapters"):
        read_adapter_config(tmp_path)
    other = GPT(model.config)
    add_lora(other, LoraConfig(r=2, target_modules=["c_fc"]))
    save_adapter(other, tmp_path / "fc")
    cfg = json.loads((tmp_path / "fc" / "adapter_config.json").read_text())
    cfg["target_modules"] = ["c_attn"]
    (tmp_path / "fc" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not fit this model's adapters: missing.*unexpected"):
        load_adapter(GPT(model.config), tmp_path / "fc")
    os.makedirs(tmp_path / "theirs")
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an npgpt LoRA adapter's"):
        save_adapter(other, tmp_path / "theirs")


def test_report(capsys):
    """The parity figures of this run (printed with -s; the asserts above are the tests)."""
    with capsys.disabled():
        for case, errs in ERRORS.items():
            print(f"\n  LoRA parity {case}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
