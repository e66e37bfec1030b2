"""SFT on the command line: pretrain -> prepare FILE.jsonl with the model's tokenizer (ChatML tokens
added) -> fine-tune (embedding and head grow) -> resume -> `npgpt chat` driven through a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from npgpt.cli import main
from npgpt.training import checkpoint as ck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "".join(f"{i} little pigs went to market; {i % 5} stayed home.\n" for i in range(150))
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "96", "--batch-size", "2",
        "--eval-iters", "2", "--eval-interval", "2", "--log-interval", "2", "--warmup-iters", "1", "--no-progress",
        "--no-plot", "--dtype", "float64"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sftcli")
    (d / "t.txt").write_text(TEXT)
    assert main(["prepare", str(d / "t.txt"), "--out", str(d / "pre"), "--tokenizer", "bpe", "--vocab-size", "280"]) == 0
    assert main(["train", "--data-dir", str(d / "pre"), "--out-dir", str(d / "base"), *TINY, "--max-iters", "2"]) == 0
    rows = [{"prompt": f"{i} little", "completion": f" pigs {i % 5}"} for i in range(8)]
    rows += [{"messages": [{"role": "user", "content": f"{i} went"}, {"role": "assistant", "content": "to market"}]}
             for i in range(4)]
    with open(d / "ex.jsonl", "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["prepare", str(d / "ex.jsonl"), "--out", str(d / "sft"), "--tokenizer-file",
                 str(d / "base" / "tokenizer.json"), "--block-size", "96"]) == 0
    assert main(["train", "--data-dir", str(d / "sft"), "--out-dir", str(d / "ft"), "--init-from", str(d / "base"),
                 *TINY, "--max-iters", "2"]) == 0
    return d


def test_fine_tune_grows_the_vocabulary_and_resumes(runs, capsys):
    with open(runs / "sft" / "meta.json") as f:
        meta = json.load(f)
    assert meta["format"] == "sft" and set(meta["added_tokens"]) == {"<|im_start|>", "<|im_end|>"}
    base = ck.load_checkpoint(str(runs / "base"))
    ft = ck.load_checkpoint(str(runs / "ft"), prefer=ck.LATEST)
    V = base.model_config["vocab_size"]
    assert ft.model_config["vocab_size"] == V + 2 == meta["vocab_size"]
    assert main(["train", "--init-from", "resume", "--out-dir", str(runs / "ft"), "--max-iters", "4", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert ck.load_checkpoint(str(runs / "ft"), prefer=ck.LATEST).iter_num == 4
    with open(runs / "ft" / "log.jsonl") as f:
        evals = [json.loads(line) for line in f if '"eval"' in line]
    assert all(np.isfinite(e["val_loss"]) for e in evals)


def chat(args, stdin):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "npgpt.cli", "chat", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


def test_chat_through_a_pipe(runs):
    r = chat([str(runs / "ft"), "--greedy", "--max-new-tokens", "5", "--system", "be brief"], "0 went\n\n3 went\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("> ") == 4  # two turns, a blank line, then end of input
    assert "end with Ctrl-D" in r.stderr and "dropped" not in r.stderr
    replies = [line for line in r.stdout.split("> ") if line.strip()]
    assert len(replies) == 2
    # a long reply budget leaves room for one turn only: the oldest goes, and the chat says so
    r = chat([str(runs / "ft"), "--max-new-tokens", "60", "--seed", "3", "--top-k", "5"], "0 went\n1 went\n2 went\n")
    assert r.returncode == 0, r.stderr
    assert "dropped the oldest turn to stay within the context window of 96 tokens" in r.stderr


def test_chat_refuses_bad_options(runs):
    r = chat([str(runs / "ft"), "--max-new-tokens", "0"], "")
    assert r.returncode == 2 and "max_new_tokens must be an integer >= 1" in r.stderr
