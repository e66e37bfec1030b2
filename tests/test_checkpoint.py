"""Checkpoints: round trip, atomic replacement under a crash mid-write, and clear errors for bad files."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
from safetensors.numpy import save_file

from npgpt.training import checkpoint as ck
from npgpt.generation.loading import model_from_checkpoint
from npgpt.models.gpt import GPT, GPTConfig
from npgpt.training.optim import configure_optimizer
from npgpt.tokenizers.char import CharTokenizer

CFG = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.1)


def trained(seed=0, steps=2):
    model = GPT(CFG, seed=seed)
    opt = configure_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99))
    g = np.random.default_rng(seed)
    for _ in range(steps):
        x = g.integers(0, 11, size=(2, 8))
        _, loss = model(x, np.roll(x, -1, axis=1))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def save(path, model, opt, it=2):
    rng = {"batches": np.random.default_rng(5).bit_generator.state, "dropout": model.dropout_generator.bit_generator.state}
    return ck.save_checkpoint(str(path), model=model, optimizer=opt, iter_num=it, best_val_loss=1.5,
                              train_config={"lr": 0.01, "out_dir": "x"}, rng=rng,
                              tokenizer=CharTokenizer.train("abcdefghijk"))


def test_roundtrip_everything(tmp_path):
    model, opt = trained()
    path = save(tmp_path / ck.LATEST, model, opt, it=7)
    c = ck.load_checkpoint(str(tmp_path), prefer=ck.LATEST)
    assert c.path == path and c.iter_num == 7 and c.best_val_loss == 1.5
    assert c.train_config == {"lr": 0.01, "out_dir": "x"} and GPTConfig.from_dict(c.model_config) == CFG
    for name, a in model.state_dict().items():
        assert c.model_state[name].dtype == a.dtype and np.array_equal(c.model_state[name], a), name
    fresh = GPT(CFG, seed=9)
    opt2 = configure_optimizer(fresh, lr=1.0, weight_decay=0.0)
    opt2.load_state_dict(c.optimizer_state)
    sd1, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd1["param_groups"] == sd2["param_groups"]
    assert sd1["state"].keys() == sd2["state"].keys()
    for k in sd1["state"]:
        for n, v in sd1["state"][k].items():
            assert np.array_equal(v, sd2["state"][k][n]), (k, n)
    g = np.random.default_rng(0)
    g.bit_generator.state = c.rng["dropout"]
    assert g.random() == model.dropout_generator.random()
    assert c.load_tokenizer().decode([0, 10]) == "ak"
    rebuilt = model_from_checkpoint(c, dropout=0.0)
    assert rebuilt.config.dropout == 0.0
    for name, a in model.state_dict().items():
        assert np.array_equal(rebuilt.state_dict()[name], a), name


def test_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
    model, opt = trained(steps=1)
    path = save(tmp_path / ck.LATEST, model, opt, it=1)
    before = pathlib.Path(path).read_bytes()
    model2, opt2 = trained(steps=3)

    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, payload):
            self.f.write(payload[: len(payload) // 2])
            self.f.flush()
            raise RuntimeError("killed mid-write (simulated)")

    monkeypatch.setattr(ck.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(RuntimeError, match="killed mid-write"):
        save(tmp_path / ck.LATEST, model2, opt2, it=3)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [ck.LATEST]  # the half-written temp file is gone
    assert pathlib.Path(path).read_bytes() == before
    c = ck.load_checkpoint(path)
    assert c.iter_num == 1 and np.array_equal(c.model_state["transformer.wte.weight"], model.transformer.wte.weight.data)


def test_a_write_stopped_before_its_rename_leaves_the_old_file(tmp_path, monkeypatch):
    """Stopped between the write and the rename: the real name still holds the old checkpoint and
    the temporary file is cleaned up (a hard kill, which runs no cleanup, would leave only it)."""
    model, opt = trained(steps=1)
    path = save(tmp_path / ck.LATEST, model, opt, it=1)

    def no_rename(src, dst):
        raise KeyboardInterrupt  # the process dies here; nothing after runs

    monkeypatch.setattr(ck.os, "replace", no_rename)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / ck.LATEST, *trained(steps=2), it=2)
    monkeypatch.undo()
    assert ck.load_checkpoint(path).iter_num == 1
    assert os.listdir(tmp_path) == [ck.LATEST]


def test_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the result must get what open() would give."""
    umask = os.umask(0o022)
    try:
        model, opt = trained(steps=1)
        path = save(tmp_path / ck.LATEST, model, opt, it=1)
        assert os.stat(path).st_mode & 0o777 == 0o644
        os.chmod(path, 0o640)  # replacing a file keeps its mode
        save(tmp_path / ck.LATEST, model, opt, it=2)
        assert os.stat(path).st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def test_truncated_corrupt_foreign_files(tmp_path):
    model, opt = trained(steps=1)
    path = save(tmp_path / "good.safetensors", model, opt)
    raw = pathlib.Path(path).read_bytes()

    trunc = tmp_path / "truncated.safetensors"
    trunc.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ValueError, match=r"truncated\.safetensors: not a readable npgpt checkpoint.*(truncated|corrupt)"):
        ck.load_checkpoint(str(trunc))
    short = tmp_path / "short.safetensors"
    short.write_bytes(raw[:5])
    with pytest.raises(ValueError, match=r"short\.safetensors: .*too short"):
        ck.load_checkpoint(str(short))
    cut_header = tmp_path / "cut_header.safetensors"
    cut_header.write_bytes(raw[:200])
    with pytest.raises(ValueError, match=r"cut_header\.safetensors: .*header claims"):
        ck.load_checkpoint(str(cut_header))

    flipped = bytearray(raw)
    flipped[-3] ^= 0xFF  # a byte in the tensor data: the header stays valid
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"corrupt\.safetensors: .*does not match its checksum"):
        ck.load_checkpoint(str(bad))

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(ValueError, match=r"garbage\.safetensors: .*not valid JSON"):
        ck.load_checkpoint(str(garbage))

    foreign = tmp_path / "foreign.safetensors"
    save_file({"transformer.wte.weight": np.zeros((3, 2), np.float32)}, str(foreign))
    with pytest.raises(ValueError, match=r"foreign\.safetensors: a safetensors file, but not an npgpt checkpoint"):
        ck.load_checkpoint(str(foreign))
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a checkpoint at all")
    with pytest.raises(ValueError, match=r"notes\.txt: not a readable npgpt checkpoint"):
        ck.load_checkpoint(str(text))

    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match=r"empty_dir: no checkpoint here \(expected best\.safetensors or ckpt\.safetensors\)"):
        ck.load_checkpoint(str(tmp_path / "empty_dir"))
    with pytest.raises(ValueError, match="no such checkpoint"):
        ck.load_checkpoint(str(tmp_path / "nope.safetensors"))


def test_prefers_best_or_latest(tmp_path):
    model, opt = trained(steps=1)
    save(tmp_path / ck.BEST, model, opt, it=1)
    save(tmp_path / ck.LATEST, model, opt, it=5)
    assert ck.load_checkpoint(str(tmp_path)).iter_num == 1
    assert ck.load_checkpoint(str(tmp_path), prefer=ck.LATEST).iter_num == 5
    os.unlink(tmp_path / ck.BEST)
    assert ck.load_checkpoint(str(tmp_path)).iter_num == 5


def test_metadata_is_plain_json_and_no_pickle(tmp_path):
    model, opt = trained(steps=1)
    raw = pathlib.Path(save(tmp_path / "c.safetensors", model, opt)).read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    state = json.loads(header["__metadata__"]["state"])
    assert header["__metadata__"]["format"] == "npgpt-checkpoint"
    assert state["optimizer"]["state"]["0"]["exp_avg"] == {"__tensor__": "optim/state/0/exp_avg"}
    root = pathlib.Path(ck.__file__).parent.parent  # all of npgpt/
    for src in root.rglob("*.py"):
        text = src.read_text()
        assert "allow_pickle=True" not in text and "pickle.load(" not in text and "pickle.loads(" not in text, src
        if src.name != "torch_pickle.py":  # the one reader of pickles: pytorch_model.bin, names allow-listed
            assert "import pickle" not in text, src
    restricted = (root / "models" / "torch_pickle.py").read_text()
    assert "def find_class(self, module, name):" in restricted and "_ALLOWED[(module, name)]" in restricted
