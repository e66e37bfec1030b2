"""The Llama family through the command line: `npgpt train --arch llama|qwen3` from scratch, and a tiny random
Llama / Qwen3 directory (tokenizer.json only, as real ones ship) sampled, prepared with, fine-tuned and
exported back; a GPT-2 directory as transformers 5 saves it (tokenizer.json, no vocab.json/merges.txt)
sampled, prepared with and fine-tuned (issue 15 point 6)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from npgpt.cli import main  # noqa: E402
from npgpt.models.gpt import GPT  # noqa: E402
from npgpt.tensor import no_grad  # noqa: E402
from npgpt.tokenizers.bpe import BPETokenizer  # noqa: E402
from npgpt.tokenizers.bpe_json import write_tokenizer_json  # noqa: E402
from npgpt.training.checkpoint import load_checkpoint  # noqa: E402
from npgpt.training.start import model_from_checkpoint  # noqa: E402
from tests.helpers import rel_error  # noqa: E402

TEXT = "".join(f"{i} little pigs went to market; {i % 5} stayed home.\n" for i in range(300))
EOT = "<|endoftext|>"
QUICK = ["--batch-size", "2", "--eval-iters", "1", "--eval-interval", "3", "--log-interval", "1", "--warmup-iters", "1",
         "--no-progress", "--no-plot"]


def _tiny(family: str, vocab: int, **kw):
    cls = {"llama": transformers.LlamaConfig, "qwen3": transformers.Qwen3Config}[family]
    config = cls(vocab_size=vocab, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=16, **kw)
    torch.manual_seed(3)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(params=["llama", "qwen3"])
def llama_dir(request, tmp_path):
    """A tiny random Llama-family directory with a tokenizer.json alone (Llama 3's split pattern)."""
    tok = BPETokenizer.train(TEXT, 300, pattern="gpt4", special_tokens=[EOT])
    folder = tmp_path / request.param
    _tiny(request.param, tok.vocab_size, tie_word_embeddings=request.param == "qwen3").save_pretrained(folder)
    write_tokenizer_json(tok, folder / "tokenizer.json")
    (tmp_path / "t.txt").write_text(TEXT)
    return folder, tok, request.param


def test_sample_prepare_finetune_and_export_a_llama_directory(llama_dir, tmp_path, capsys):
    folder, tok, family = llama_dir
    model = GPT.from_pretrained(folder)
    assert model.config.layout == "llama" and model.tokenizer is not None
    assert model.tokenizer.encode(TEXT[:200], allowed_special="all") == tok.encode(TEXT[:200], allowed_special="all")
    assert main(["sample", str(folder), "--max-new-tokens", "5", "--prompt", "3 little"]) == 0
    data, out, exported = str(tmp_path / "data"), str(tmp_path / "out"), tmp_path / "exported"
    assert main(["prepare", str(tmp_path / "t.txt"), "--out", data, "--tokenizer-file", str(folder)]) == 0
    assert main(["train", "--init-from", str(folder), "--data-dir", data, "--out-dir", out, "--max-iters", "3",
                 "--dtype", "float64", "--lr", "0.01", *QUICK]) == 0
    assert f"fine-tuning from the Hugging Face directory {folder}" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt.model_config["layout"] == "llama" and ckpt.model_config["qk_norm"] == (family == "qwen3")
    start = GPT.from_pretrained(folder, dtype="float64").state_dict()
    key = "model.layers.0.mlp.gate_proj.weight"
    assert not np.array_equal(ckpt.model_state[key], start[key])  # it trained
    assert main(["sample", out, "--max-new-tokens", "5"]) == 0
    assert main(["export", out, str(exported)]) == 0
    assert f"as a {family} directory" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(exported))
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float64).eval()
    assert hf.config.model_type == family
    ours = model_from_checkpoint(ckpt, dtype="float64").eval()
    x = np.random.default_rng(4).integers(0, tok.vocab_size, (2, 16))
    with no_grad(), torch.no_grad():
        assert rel_error(ours(x)[0].data, hf(torch.from_numpy(x)).logits) <= 1e-6  # HF's float32 RMSNorm/RoPE
    fast = transformers.AutoTokenizer.from_pretrained(exported)
    assert fast.encode(TEXT[:300], add_special_tokens=False) == tok.encode(TEXT[:300])


def test_a_gpt2_directory_saved_by_transformers5_has_only_tokenizer_json(tmp_path, capsys):
    """transformers 5 saves a GPT-2 tokenizer as tokenizer.json (no vocab.json / merges.txt): npgpt samples it,
    prepares text with it and fine-tunes it."""
    tok = BPETokenizer.train(TEXT, 300, special_tokens=[EOT])
    src, folder = tmp_path / "src", tmp_path / "gpt2"
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=tok.vocab_size, n_positions=16)
    torch.manual_seed(5)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(src)
    transformers.AutoTokenizer.from_pretrained(src).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        if (folder / name).exists():
            os.remove(folder / name)
    assert (folder / "tokenizer.json").exists()
    model = GPT.from_pretrained(folder)
    assert model.tokenizer is not None and model.tokenizer.encode(TEXT[:300]) == tok.encode(TEXT[:300])
    (tmp_path / "t.txt").write_text(TEXT)
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    assert main(["sample", str(folder), "--max-new-tokens", "5", "--prompt", "3 little"]) == 0
    assert main(["prepare", str(tmp_path / "t.txt"), "--out", data, "--tokenizer-file", str(folder)]) == 0
    meta = json.loads(open(os.path.join(data, "meta.json")).read())
    ids = np.concatenate([np.fromfile(os.path.join(data, f"{s}.bin"), dtype=meta["dtype"]) for s in ("train", "val")])
    assert ids.tolist() == tok.encode(TEXT)
    assert main(["train", "--init-from", str(folder), "--data-dir", data, "--out-dir", out, "--max-iters", "2",
                 "--dtype", "float64", *QUICK]) == 0
    assert load_checkpoint(out).iter_num == 2


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_train_a_llama_family_model_from_scratch(arch, tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    assert main(["prepare", str(tmp_path / "t.txt"), "--out", data]) == 0
    assert main(["train", "--arch", arch, "--data-dir", data, "--out-dir", out, "--max-iters", "6", "--n-layer", "2",
                 "--n-head", "4", "--n-kv-head", "2", "--n-embd", "16", "--block-size", "16", "--lr", "0.01",
                 "--dtype", "float64", *QUICK]) == 0
    ckpt = load_checkpoint(out, prefer="ckpt.safetensors")
    assert ckpt.model_config["layout"] == "llama" and ckpt.model_config["n_kv_head"] == 2
    assert "model.layers.1.self_attn.k_proj.weight" in ckpt.model_state
    assert ckpt.model_state["model.layers.1.self_attn.k_proj.weight"].shape == (16, 8)
    assert main(["sample", out, "--max-new-tokens", "5"]) == 0
    assert main(["export", out, str(tmp_path / "e"), "--no-tokenizer"]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "e").eval()
    assert hf.config.model_type == arch and hf.config.num_key_value_heads == 2
