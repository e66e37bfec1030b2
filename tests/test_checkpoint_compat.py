"""Checkpoints written by earlier npgpt still load, sample the same text and resume the same run.

tests/fixtures/v1/ holds two training runs written by checkpoint format 1 (npgpt at de4dadc, before
the one-model-description redesign), with what that code computed from them (expected.json, made
by tests/fixtures/make_v1.py): the logits for a fixed input, the greedy text, and where a resumed
run ends. Today's code must reproduce each bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from npgpt.generation.loading import load_model
from npgpt.generation.sample import sample
from npgpt.training import checkpoint as ck
from npgpt.training.loop import resume_config, train

V1 = os.path.join(os.path.dirname(__file__), "fixtures", "v1")
EXPECTED = json.load(open(os.path.join(V1, "expected.json")))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_v1_checkpoint_loads_with_its_model_once(name):
    c = ck.load_checkpoint(os.path.join(V1, name, "run", ck.LATEST))
    assert "n_layer" not in c.train_config and "dropout" not in c.train_config, "the model lives in model_config only"
    assert "ln_eps" not in c.model_config and c.model_config["norm_eps"] == 1e-5
    model, tok = load_model(os.path.join(V1, name, "run", ck.LATEST), dtype="float64")
    logits, _ = model(np.array(EXPECTED[name]["ids"]))
    np.testing.assert_array_equal(logits.data, np.array(EXPECTED[name]["logits"]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_v1_checkpoint_samples_the_same_text(name):
    text = sample(os.path.join(V1, name, "run"), prompt="def ", max_new_tokens=20, do_sample=False, dtype="float64")[0]
    assert text == EXPECTED[name]["greedy"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_v1_checkpoint_resumes_the_same_run(name, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(os.path.join(V1, name, "run"), out)
    data = os.path.join(V1, name, "data")
    cfg = resume_config(str(out), {"max_iters": 9, "data_dir": data, "plot": False, "progress": False})
    assert cfg.model.n_layer == {"char": 2, "bpe": 1}[name]
    res = train(cfg, log=lambda *a: None)
    want = EXPECTED[name]
    assert res.iter_num == want["resumed_iter"] and res.best_val_loss == want["resumed_best_val_loss"]
    model, _ = load_model(str(out / ck.LATEST), dtype="float64")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v).ravel()[:6], want["resumed_weights"][k], err_msg=k)
    resaved = ck.load_checkpoint(str(out / ck.LATEST))
    assert "n_layer" not in resaved.train_config and resaved.model_config["n_layer"] == cfg.model.n_layer
