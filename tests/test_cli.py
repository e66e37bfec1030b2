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
    from npgpt.flags import flat_fields

    for name, *_ in flat_fields(TrainConfig):  # nested fields flat, behind their prefix (--lora-r)
        assert "--" + name.replace("_", "-") in help_text, name
    assert "--lora-targets" in help_text and "--lora-rslora" in help_text
    assert "--no-decay-lr" in help_text
    toml = tmp_path / "c.toml"
    toml.write_text('max_iters = 7\nlr = 0.005\nn_layer = 1\ndropout = 0\nlr_decay_iters = 20\n')
    out = str(tmp_path / "o")
    assert main(["train", "--config", str(toml), "--data-dir", data, "--out-dir", out, *TINY, "--lr", "0.002"]) == 0
    saved = ck.load_checkpoint(out, prefer=ck.LATEST)
    cfg, model = saved.train_config, saved.model_config
    assert (cfg["max_iters"], cfg["lr"], model["n_layer"], cfg["lr_decay_iters"], cfg["plot"]) == (7, 0.002, 1, 20, False)
    assert isinstance(model["dropout"], float) and "n_layer" not in cfg, "the model is stored once"
    tables = tmp_path / "t.toml"  # the model's fields may also come as a [model] table
    tables.write_text('max_iters = 2\n[model]\nn_layer = 2\ntie_embeddings = false\n')
    out2 = str(tmp_path / "o2")
    assert main(["train", "--config", str(tables), "--data-dir", data, "--out-dir", out2, *TINY]) == 0
    m2 = ck.load_checkpoint(out2, prefer=ck.LATEST).model_config
    assert (m2["n_layer"], m2["tie_embeddings"]) == (1, False), "the table is read; flags (--n-layer 1) win"
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
    assert saved.iter_num == 12 and saved.train_config["lr"] == 0.003 and saved.model_config["n_embd"] == 16
    assert saved.model_config["dropout"] == 0.1 and saved.train_config["data_dir"] == data
    assert main(["train", "--init-from", "resume", "--out-dir", out, "--max-iters", "13", "--n-layer", "5"]) == 2
    assert "--n-layer 5 differs from the model" in capsys.readouterr().err
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
    # a second run continues the first, never wipes it (issue 15 point 1)
    before = ck.load_checkpoint(str(tmp_path / "demo"), prefer=ck.LATEST)
    log_lines = len(read_log(str(tmp_path / "demo")))
    assert main(["demo", "--root", str(tmp_path), "--max-iters", "5"]) == 0
    out = capsys.readouterr().out
    assert f"already holds a run at step {before.iter_num}: continuing it to step 5" in out
    after = ck.load_checkpoint(str(tmp_path / "demo"), prefer=ck.LATEST)
    assert after.iter_num == 5 and len(read_log(str(tmp_path / "demo"))) > log_lines


# --- issue 15: nothing a user has is lost, bad data is caught where it enters -------------------------
def err_of(capsys, argv, code=2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_scratch_run_never_overwrites_a_run(tmp_path, data, capsys):
    out = str(tmp_path / "o")
    assert main(["train", "--data-dir", data, "--out-dir", out, *TINY, "--max-iters", "5"]) == 0
    kept = {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))}
    err = err_of(capsys, ["train", "--data-dir", data, "--out-dir", out, *TINY, "--max-iters", "2"])
    assert "already holds a training run (ckpt.safetensors, best.safetensors)" in err
    assert "--init-from resume" in err and "new --out-dir" in err and "--overwrite" in err
    err = err_of(capsys, ["train", "--data-dir", data, "--out-dir", out, *TINY, "--init-from", out])  # fine-tune into it
    assert "already holds a training run" in err
    assert {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))} == kept
    err = err_of(capsys, ["train", "--init-from", "resume", "--out-dir", out, "--overwrite"])
    assert "give one or the other" in err
    assert main(["train", "--data-dir", data, "--out-dir", out, *TINY, "--max-iters", "2", "--overwrite"]) == 0
    assert "removed the old run's files" in capsys.readouterr().out
    assert ck.load_checkpoint(out, prefer=ck.LATEST).iter_num == 2
    assert [r["iter"] for r in read_log(out) if r["event"] == "start"] == [0]  # nothing of the old log


def test_resume_from_another_directory_and_moved_data(tmp_path, data, capsys, monkeypatch):
    """data_dir is stored absolute: a resume works from any working directory; when the data moved,
    the error names --data-dir."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", str(tmp_path / "t.txt"), "--out", "rel"]) == 0
    assert main(["train", "--data-dir", "rel", "--out-dir", "o", *TINY, "--max-iters", "3"]) == 0
    assert ck.load_checkpoint("o").train_config["data_dir"] == str(tmp_path / "rel")
    monkeypatch.chdir(work)
    assert main(["train", "--init-from", "resume", "--out-dir", "../o", "--max-iters", "5"]) == 0
    os.rename(tmp_path / "rel", tmp_path / "moved")
    err = err_of(capsys, ["train", "--init-from", "resume", "--out-dir", "../o", "--max-iters", "7"])
    assert f"{tmp_path / 'rel'}', which is not there now" in err and "pass --data-dir DIR" in err
    assert main(["train", "--init-from", "resume", "--out-dir", "../o", "--max-iters", "7",
                 "--data-dir", str(tmp_path / "moved")]) == 0


def test_bad_token_files_are_one_line_errors(tmp_path, data, capsys):
    import numpy as np

    meta = json.loads(open(os.path.join(data, "meta.json")).read())
    train_bin = os.path.join(data, "train.bin")
    ids = np.fromfile(train_bin, dtype=meta["dtype"])
    ids[7] = meta["vocab_size"] + 3
    ids.tofile(train_bin)
    out = str(tmp_path / "o")
    err = err_of(capsys, ["train", "--data-dir", data, "--out-dir", out, *TINY, "--max-iters", "2"])
    assert f"train.bin: token id {meta['vocab_size'] + 3} at position 7 is outside the vocabulary of {meta['vocab_size']}" in err
    assert err.count("\n") == 1 and not os.path.exists(out)


def test_a_tokenizer_json_that_disagrees_with_meta_json(tmp_path, data, capsys):
    (tmp_path / "other.txt").write_text("quite another alphabet: XYZ!?\n" * 10)
    assert main(["prepare", str(tmp_path / "other.txt"), "--out", str(tmp_path / "d2")]) == 0
    tok = os.path.join(data, "tokenizer.json")
    os.replace(tmp_path / "d2" / "tokenizer.json", tok)
    err = err_of(capsys, ["train", "--data-dir", data, "--out-dir", str(tmp_path / "o"), *TINY, "--max-iters", "2"])
    assert "tokenizer.json: not the tokenizer these tokens were made with" in err
    meta_path = os.path.join(data, "meta.json")  # an older meta.json without the sha256: type and vocab size
    meta = json.loads(open(meta_path).read())
    del meta["tokenizer"]["sha256"]
    open(meta_path, "w").write(json.dumps(meta))
    err = err_of(capsys, ["train", "--data-dir", data, "--out-dir", str(tmp_path / "o"), *TINY, "--max-iters", "2"])
    assert "tokenizer.json: a char tokenizer of vocab" in err and f"of vocab {meta['vocab_size']}" in err


def test_prepare_refuses_conflicting_tokenizer_flags_and_foreign_directories(tmp_path, data, capsys):
    src = str(tmp_path / "t.txt")
    tok = os.path.join(data, "tokenizer.json")
    err = err_of(capsys, ["prepare", src, "--out", str(tmp_path / "x"), "--tokenizer-file", tok, "--tokenizer", "bpe",
                          "--vocab-size", "300"])
    assert "--tokenizer-file reuses the tokenizer of" in err and "--tokenizer and --vocab-size" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's own file")
    err = err_of(capsys, ["prepare", src, "--out", str(tmp_path / "mine")])
    assert "holds files that are not an npgpt data directory's (notes.txt)" in err
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_export_messages_and_a_whole_directory(tmp_path, data, capsys):
    from npgpt.models.gpt import GPT

    assert main(["prepare", str(tmp_path / "t.txt"), "--out", str(tmp_path / "b"), "--tokenizer", "bpe",
                 "--vocab-size", "300"]) == 0
    run = str(tmp_path / "o")
    assert main(["train", "--data-dir", str(tmp_path / "b"), "--out-dir", run, *TINY, "--max-iters", "2"]) == 0
    exp = str(tmp_path / "exp")
    assert main(["export", run, exp]) == 0
    assert "vocab.json" in os.listdir(exp)
    assert main(["export", run, exp, "--no-tokenizer"]) == 0
    assert sorted(os.listdir(exp)) == ["config.json", "model.safetensors"]  # no stale tokenizer files
    capsys.readouterr()
    err = err_of(capsys, ["export", exp, str(tmp_path / "exp2")])
    assert "a GPT-2 / Hugging Face directory already" in err and "--init-from" in err and "--out-dir" not in err
    err = err_of(capsys, ["export", run, run])  # into the training directory itself
    assert "holds files that are not an npgpt GPT-2 export's" in err
    assert ck.load_checkpoint(run).iter_num == 2
    GPT.from_pretrained(exp)


def test_sample_names_hub_names(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = err_of(capsys, ["sample", "gpt2-nonexistent-xyz", "--max-new-tokens", "1"])
    assert "hub" in err.lower() and "gpt2-nonexistent-xyz" in err


def test_argparse_errors_are_short_and_seeds_named(capsys):
    for argv, line in [(["train", "--seed", "-1"], "npgpt train: error: --seed must be >= 0, got -1"),
                       (["sample", "x", "--seed", "-1"], "npgpt sample: error: argument --seed: expects an integer >= 0"),
                       (["sample"], "npgpt sample: error: the following arguments are required: checkpoint"),
                       (["trian"], "npgpt: error: argument COMMAND: invalid choice: 'trian'")]:
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(line), (argv, err)
        assert "usage:" not in err and err.count("\n") <= 2
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: 1.0, which changes nothing)" in help_text and "hub name" in help_text


def test_diverging_before_the_first_save_says_no_checkpoint(tmp_path, data, capsys):
    out = str(tmp_path / "o")
    err = err_of(capsys, ["train", "--data-dir", data, "--out-dir", out, *TINY, "--max-iters", "20", "--lr", "1e9",
                          "--grad-clip", "0", "--min-lr", "0", "--eval-interval", "1000"], code=1)
    assert "saved no checkpoint yet" in err and "hold the last good state" not in err
