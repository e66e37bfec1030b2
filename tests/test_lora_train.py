"""`npgpt train --lora-*`, resume, `npgpt export [--merge]` and `npgpt sample` on a LoRA run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from npgpt.cli import main
from npgpt.generation.loading import load_model
from npgpt.training import checkpoint as ck
from npgpt.training.config import TrainConfig
from npgpt.training.lora import LoraConfig, lora_layers
from tests.helpers import rel_error
from tests.test_cli import TEXT, TINY

LORA = ["--lora-r", "4", "--lora-alpha", "8", "--lora-targets", "c_attn,c_proj", "--lora-dropout", "0.1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A BPE data directory and a small float64 base run trained on it."""
    tmp = tmp_path_factory.mktemp("lora")
    (tmp / "t.txt").write_text(TEXT)
    assert main(["prepare", str(tmp / "t.txt"), "--out", str(tmp / "d"), "--tokenizer", "bpe", "--vocab-size", "300"]) == 0
    assert main(["train", "--data-dir", str(tmp / "d"), "--out-dir", str(tmp / "base"), *TINY, "--max-iters", "4",
                 "--dtype", "float64", "--dropout", "0"]) == 0
    return tmp


def _lora_run(tmp, out, *extra):
    return main(["train", "--data-dir", str(tmp / "d"), "--out-dir", str(out), "--init-from", str(tmp / "base"), *TINY,
                 "--dtype", "float64", *LORA, *extra])


def test_lora_run_resumes_bit_exact_and_keeps_the_base(base, tmp_path):
    assert _lora_run(base, tmp_path / "whole", "--max-iters", "6") == 0
    assert _lora_run(base, tmp_path / "half", "--max-iters", "3") == 0
    assert main(["train", "--out-dir", str(tmp_path / "half"), "--init-from", "resume", "--max-iters", "6",
                 "--no-progress", "--no-plot"]) == 0
    whole, half = (ck.load_checkpoint(tmp_path / n, prefer=ck.LATEST) for n in ("whole", "half"))
    assert whole.iter_num == half.iter_num == 6
    assert sorted(whole.model_state) == sorted(half.model_state)
    for k, v in whole.model_state.items():
        np.testing.assert_array_equal(v, half.model_state[k], err_msg=k)
    start = ck.load_checkpoint(base / "base")
    adapters = [k for k in whole.model_state if ".lora_" in k]
    assert len(adapters) == 2 * 3 and all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in adapters)
    for k, v in start.model_state.items():  # the base weights are the start's, bit for bit
        np.testing.assert_array_equal(whole.model_state[k], v, err_msg=k)
    assert any(np.abs(whole.model_state[k]).max() > 0 for k in adapters if "lora_B" in k)
    # the optimizer held the adapters only, and its state resumed exactly too
    assert len(whole.optimizer_state["state"]) == len(adapters)
    for i, s in whole.optimizer_state["state"].items():
        np.testing.assert_array_equal(s["exp_avg"], half.optimizer_state["state"][i]["exp_avg"])
    assert whole.train_config["lora"] == {"r": 4, "alpha": 8.0, "dropout": 0.1, "target_modules": ["c_attn", "c_proj"],
                                          "use_rslora": False}


def test_export_adapter_loads_in_peft_and_merged_in_transformers(base, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    assert _lora_run(base, tmp_path / "run", "--max-iters", "3") == 0
    assert main(["export", str(base / "base"), str(tmp_path / "base_hf")]) == 0
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "adapter")]) == 0
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "merged"), "--merge"]) == 0
    assert "PEFT adapter directory" in capsys.readouterr().out
    model, _ = load_model(str(tmp_path / "run"), dtype="float64")
    model.eval()  # the adapters have dropout 0.1: compare without it
    assert lora_layers(model)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, model.config.block_size))
    ours, _ = model(ids)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base_hf", torch_dtype=torch.float64).eval()
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()(input_ids=torch.from_numpy(ids)).logits
        merged = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "merged", torch_dtype=torch.float64).eval()(
            input_ids=torch.from_numpy(ids)).logits
    assert rel_error(ours.data, theirs) <= 1e-10
    assert rel_error(ours.data, merged) <= 1e-12
    assert main(["sample", str(tmp_path / "run"), "--max-new-tokens", "5", "--prompt", "3 little", "--dtype", "float64"]) == 0
    assert main(["export", str(base / "base"), str(tmp_path / "m2"), "--merge"]) != 0  # nothing to merge
    assert "holds no LoRA adapters to merge" in capsys.readouterr().err


def test_fine_tuning_from_a_lora_run_merges_it(base, tmp_path, capsys):
    assert _lora_run(base, tmp_path / "run", "--max-iters", "2") == 0
    assert main(["train", "--data-dir", str(base / "d"), "--out-dir", str(tmp_path / "full"), "--init-from",
                 str(tmp_path / "run"), *TINY, "--dtype", "float64", "--max-iters", "1"]) == 0
    assert "merged the LoRA adapters" in capsys.readouterr().out
    assert not any(".lora_" in k for k in ck.load_checkpoint(tmp_path / "full").model_state)


def test_lora_flags_and_files(base, tmp_path, capsys):
    with pytest.raises(ValueError, match="LoRA adapts a trained model"):
        TrainConfig.from_values({"lora_r": 4})
    with pytest.raises(ValueError, match="--lora-alpha given without --lora-r"):
        TrainConfig.from_values({"lora_alpha": 4.0, "init_from": "x"})
    c = TrainConfig.from_values({"lora_r": 4, "lora_targets": ("c_fc",), "lora_rslora": True, "init_from": "x"})
    assert c.lora == LoraConfig(r=4, target_modules=("c_fc",), use_rslora=True)
    assert TrainConfig.from_values({"lora": c.lora.to_dict(), "init_from": "x"}) == c
    toml = tmp_path / "c.toml"
    toml.write_text('[lora]\nr = 2\nalpha = 4\ntarget_modules = "transformer\\\\.h\\\\.0\\\\.attn\\\\.c_attn"\n')
    assert main(["train", "--data-dir", str(base / "d"), "--out-dir", str(tmp_path / "run"), "--init-from",
                 str(base / "base"), *TINY, "--max-iters", "1", "--config", str(toml)]) == 0
    saved = ck.load_checkpoint(tmp_path / "run").train_config["lora"]
    assert saved["target_modules"] == r"transformer\.h\.0\.attn\.c_attn" and saved["r"] == 2
    assert main(["train", "--out-dir", str(tmp_path / "run"), "--init-from", "resume", "--max-iters", "2",
                 "--lora-r", "3"]) != 0
    assert "differs from the LoRA adapters" in capsys.readouterr().err
    assert main(["train", "--data-dir", str(base / "d"), "--out-dir", str(tmp_path / "x"), *TINY, "--lora-r", "2"]) != 0
    assert "LoRA adapts a trained model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--lora-targets", "c_attn,,c_proj"])
    assert "module names separated by commas" in capsys.readouterr().err
