"""`npgpt prepare / train / sample / plot / demo`: flags from TrainConfig, config files, resume, exit codes."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from npgpt.training import checkpoint as ck
from npgpt.cli import main
from npgpt.training.loop import TrainConfig, read_log

TEXT = "".join(f"{i} little pigs went to market; {i % 5} stayed home.\n" for i in range(200))
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4",
        "--eval-iters", "2", "--eval-interval", "5", "--log-interval", "5", "--warmup-iters", "2", "--no-progress", "--no-plot"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def data(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    assert main(["prepare", str(tmp_path / "t.txt"), "--out", str(tmp_path / "d")]) == 0
    assert "prepared" in capsys.readouterr().out
    return str(tmp_path / "d")


def test_flags_cover_every_field_and_override_files(tmp_path, data, capsys):
    from npgpt.cli import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in TrainConfig.__dataclass_fields__:
        assert "--" + f.replace("_", "-") in help_text, f
    assert "--no-decay-lr" in help_text
    toml = tmp_path / "c.toml"
    toml.write_text('max_iters = 7\nlr = 0.005\nn_layer = 1\ndropout = 0\nlr_decay_iters = 20\n')
    out = str(tmp_path / "o")
    assert main(["train", "--config", str(toml), "--data-dir", data, "--out-dir", out, *TINY, "--lr", "0.002"]) == 0
    cfg = ck.load_checkpoint(out, prefer=ck.LATEST).train_config
    assert (cfg["max_iters"], cfg["lr"], cfg["n_layer"], cfg["lr_decay_iters"], cfg["plot"]) == (7, 0.002, 1, 20, False)
    assert isinstance(cfg["dropout"], float)
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"max_iters": 3, "lr_decay_iters": None, "out_dir": str(tmp_path / "j")}))
    assert main(["train", "--config", str(js), "--data-dir", data, *TINY]) == 0
    assert ck.load_checkpoint(str(tmp_path / "j"), prefer=ck.LATEST).iter_num == 3


@pytest.mark.parametrize("content, message", [
    ('max_iters = 5\nlearning_rate = 0.1\nbatchsize = 3\n', r"c\.toml: unknown key\(s\) batchsize, learning_rate; known keys: out_dir"),
    ('max_iters = "5"\n', r"c\.toml: max_iters must be int, got '5'"),
    ('decay_lr = 1\n', r"c\.toml: decay_lr must be bool, got 1"),
    ('max_iters = \n', r"c\.toml: cannot parse"),
])
def test_bad_config_files(tmp_path, capsys, content, message):
    (tmp_path / "c.toml").write_text(content)
    assert main(["train", "--config", str(tmp_path / "c.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npgpt train: error: ")
    import re

    assert re.search(message, err), err


def test_bad_flag_values(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--max-iters", "ten"])
    assert "--max-iters expects int, got 'ten'" in capsys.readouterr().err
    assert main(["train", "--batch-size", "0", "--data-dir", str(tmp_path)]) == 2
    assert "npgpt train: error: --batch-size must be >= 1, got 0" in capsys.readouterr().err
    assert main(["train", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "missing: no such data directory; make it with `npgpt prepare" in capsys.readouterr().err
    assert main(["train", "--data-dir", str(tmp_path)]) == 2
    assert "no meta.json" in capsys.readouterr().err
    assert main(["prepare", "nonsense_corpus"]) == 2
    assert "known corpora: stdlib, shakespeare_char" in capsys.readouterr().err


def test_resume_keeps_the_checkpoint_config(tmp_path, data, capsys):
    out = str(tmp_path / "o")
    assert main(["train", "--data-dir", data, "--out-dir", out, *TINY, "--max-iters", "6", "--lr", "0.003",
                 "--lr-decay-iters", "12", "--dropout", "0.1"]) == 0
    assert main(["train", "--init-from", "resume", "--out-dir", out, "--max-iters", "12", "--no-plot"]) == 0
    saved = ck.load_checkpoint(out, prefer=ck.LATEST)
    assert saved.iter_num == 12 and saved.train_config["lr"] == 0.003 and saved.train_config["n_embd"] == 16
    assert saved.train_config["dropout"] == 0.1 and saved.train_config["data_dir"] == data
    starts = [r for r in read_log(out) if r["event"] == "start"]
    assert [s["iter"] for s in starts] == [0, 6]


def test_sample_and_plot(tmp_path, data, capsys):
    out = str(tmp_path / "o")
    assert main(["train", "--data-dir", data, "--out-dir", out, *TINY, "--max-iters", "5"]) == 0
    capsys.readouterr()
    assert main(["sample", out, "--prompt", "3 little", "--max-new-tokens", "30", "--num-samples", "2", "--seed", "4"]) == 0
    text = capsys.readouterr().out
    assert text.count("3 little") == 2 and "---------------" in text
    assert main(["sample", out, "--temperature", "0"]) == 2
    assert "temperature must be a finite number > 0" in capsys.readouterr().err
    assert main(["sample", out, "--top-k", "0"]) == 2
    assert "top_k must be an integer >= 1" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "nothing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    assert main(["plot", out]) == 0 and os.path.isfile(os.path.join(out, "loss.png"))
    assert main(["plot", str(tmp_path)]) == 2


def test_sample_options(tmp_path, data, capsys, monkeypatch):
    out = str(tmp_path / "o")
    assert main(["train", "--data-dir", data, "--out-dir", out, *TINY, "--max-iters", "5"]) == 0
    capsys.readouterr()

    def run(*flags):
        assert main(["sample", out, "--max-new-tokens", "25", *flags]) == 0, capsys.readouterr().err
        return capsys.readouterr().out

    (tmp_path / "p.txt").write_text("7 little pigs", encoding="utf-8")
    from_file = run("--prompt-file", str(tmp_path / "p.txt"), "--seed", "3")
    assert from_file.startswith("7 little pigs") and from_file == run("--prompt", "7 little pigs", "--seed", "3")
    assert from_file == run("--prompt", "7 little pigs", "--seed", "3", "--no-cache")
    assert from_file != run("--prompt", "7 little pigs", "--seed", "4")
    greedy = run("--prompt", "1 little", "--greedy")
    assert greedy == run("--prompt", "1 little", "--greedy", "--temperature", "5", "--top-p", "0.1", "--no-cache")
    assert greedy != run("--prompt", "1 little", "--greedy", "--repetition-penalty", "3")
    assert main(["sample", out, "--prompt", "1 little", "--greedy", "--max-length", "12"]) == 0
    assert capsys.readouterr().out == greedy[:12] + "\n"  # prompt + 4 new characters
    assert run("--prompt", "1", "--do-sample", "--top-k", "none", "--top-p", "0.9", "--seed", "3").startswith("1")
    three = run("--prompt", "2", "--num-samples", "3", "--seed", "5")
    assert three.count("\n---------------\n") == 2

    class Terminal(io.StringIO):  # records every write: the text arrives token by token
        writes = 0

        def write(self, s):
            Terminal.writes += 1
            return super().write(s)

    monkeypatch.setattr(sys, "stdout", Terminal())
    assert main(["sample", out, "--prompt", "2", "--max-new-tokens", "30"]) == 0
    assert Terminal.writes > 30
    monkeypatch.undo()

    for flags, message in [
        (["--top-p", "0"], r"top_p must be a number in \(0, 1\]"),
        (["--repetition-penalty", "0"], "repetition_penalty must be a finite number > 0"),
        (["--greedy", "--num-samples", "2"], "greedy decoding gives one text"),
        (["--eos"], "no end-of-text token to stop at"),
        (["--max-length", "0", "--prompt", "12"], "max_length must be an integer >= the prompt's length 2"),
        (["--prompt-file", str(tmp_path / "none.txt")], "none.txt"),
    ]:
        assert main(["sample", out, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("npgpt sample: error: ") and err.count("\n") == 1 and re.search(message, err), err
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    assert main(["sample", out, "--prompt-file", str(tmp_path / "bad.txt")]) == 2
    assert "bad.txt: not UTF-8 text" in capsys.readouterr().err
    for flags in (["--prompt", "a", "--prompt-file", "p"], ["--greedy", "--do-sample"], ["--max-length", "3", "--max-new-tokens", "3"]):
        with pytest.raises(SystemExit):
            main(["sample", out, *flags])
        assert "not allowed with argument" in capsys.readouterr().err


def test_ctrl_c_exit_code_130(tmp_path, data):
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "npgpt.cli", "train", "--data-dir", data, "--out-dir", str(out), *TINY,
         "--max-iters", "1000000", "--eval-interval", "1000000"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "log.jsonl").exists() or '"event": "step"' not in (out / "log.jsonl").read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never logged a step"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "interrupted: saved step" in stdout
    saved = ck.load_checkpoint(str(out), prefer=ck.LATEST)
    assert saved.iter_num >= 5


def test_demo_wiring(tmp_path, capsys, monkeypatch):
    """The demo's steps end to end, on a tiny model (the real one takes minutes: `make train`)."""
    from npgpt.cli import demo

    monkeypatch.setattr(demo, "DEMO", {**demo.DEMO, "n_layer": 1, "n_embd": 16, "n_head": 2, "eval_iters": 2})
    assert main(["demo", "--root", str(tmp_path), "--max-iters", "3"]) == 0
    out = capsys.readouterr().out
    assert "stdlib" in out and "a sample from" in out and "\ndef " in out
    assert os.path.isfile(tmp_path / "demo" / ck.BEST) and os.path.isfile(tmp_path / "demo-data" / "train.bin")
