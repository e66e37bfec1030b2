"""GPT-2 / Hugging Face directories against transformers, both ways, in float64 and offline.

Random GPT2LMHeadModels at small odd shapes (biases and layernorms drawn away from 0 and 1) are saved
by transformers, loaded by npgpt, and compared: logits, loss and every parameter's gradient by name.
The other way, npgpt's save_pretrained directories load in transformers (model and tokenizer).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from npgpt import GPT, GPTConfig, backend
from npgpt.generation.loading import model_from_checkpoint
from npgpt.tokenizers import BPETokenizer, CharTokenizer
from tests.helpers import edit_config_json, rel_error
from tests.tokenizers.strategies import CORPUS

transformers = pytest.importorskip("transformers")

TOL = 1e-9
EOT = "<|endoftext|>"
SHAPES = {  # name -> GPT2Config keywords
    "odd": dict(n_layer=3, n_head=3, n_embd=48, vocab_size=97, n_positions=29),
    "narrow": dict(n_layer=2, n_head=2, n_embd=26, vocab_size=53, n_positions=17, activation_function="gelu",
                   layer_norm_epsilon=1e-3),
    "untied": dict(n_layer=2, n_head=3, n_embd=36, vocab_size=61, n_positions=23, tie_word_embeddings=False,
                   activation_function="gelu_pytorch_tanh"),
}


def random_hf(seed: int = 0, **kw):
    """A float64 GPT2LMHeadModel in eval mode with O(1) weights, biases and layernorms."""
    torch.manual_seed(seed)
    kw = {"bos_token_id": None, "eos_token_id": None, **kw}  # GPT-2's 50256 lies outside these vocabularies
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw)).double().eval()
    g = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            mean = 1.0 if "ln_" in name and name.endswith(".weight") else 0.0
            p.copy_(torch.from_numpy(g.normal(mean, 0.3, tuple(p.shape))))
    return model


def save_hf(model, folder, fmt: str) -> str:
    """transformers' own directory (model.safetensors), or the same with a pytorch_model.bin instead."""
    model.save_pretrained(folder)
    if fmt == "bin":  # what older transformers wrote: a pickled state dict, tied tensors both present
        os.remove(os.path.join(folder, "model.safetensors"))
        torch.save(model.state_dict(), os.path.join(folder, "pytorch_model.bin"))
    return str(folder)


def hf_targets(ids):
    """transformers shifts labels itself (position t predicts ids[t + 1], the last predicts nothing):
    npgpt's targets are ids[:, 1:] with -100 (ignored) at the last position."""
    return np.concatenate([ids[:, 1:], np.full((ids.shape[0], 1), -100)], axis=1)


@pytest.fixture(scope="module", params=[(s, f) for s in SHAPES for f in ("safetensors", "bin")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def pair(request, tmp_path_factory):
    shape, fmt = request.param
    hf = random_hf(1, **SHAPES[shape])
    folder = save_hf(hf, tmp_path_factory.mktemp(shape), fmt)
    return hf, folder


def test_logits_loss_and_gradients_match_transformers(pair):
    hf, folder = pair
    model = GPT.from_pretrained(folder, dtype="float64")
    c = hf.config
    assert not model.training and model.dtype == np.float64 and model.tokenizer is None
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd, model.config.vocab_size,
            model.config.block_size, model.config.tie_embeddings, model.config.norm_eps, model.config.dropout) == \
        (c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.n_positions, c.tie_word_embeddings, c.layer_norm_epsilon, 0.1)
    ids = np.random.default_rng(2).integers(0, c.vocab_size, (3, c.n_positions))
    logits, loss = model(ids, hf_targets(ids))
    out = hf(torch.from_numpy(ids), labels=torch.from_numpy(ids))
    # transformers' ForCausalLMLoss upcasts the logits with .float(), i.e. to float32 even for a
    # float64 model: its loss agrees to float32's precision, and the same loss recomputed in float64
    # (same shift: labels padded with -100, then [..., 1:]) to 1e-9, with the gradients through it.
    assert rel_error(loss.data, out.loss) <= 1e-6
    shifted = torch.nn.functional.pad(torch.from_numpy(ids), (0, 1), value=-100)[..., 1:]
    hf_loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, c.vocab_size), shifted.reshape(-1), ignore_index=-100)
    loss.backward()
    hf_loss.backward()
    errors = {"logits": rel_error(logits.data, out.logits), "loss": rel_error(loss.data, hf_loss)}
    theirs = dict(hf.named_parameters())
    assert sorted(n for n, _ in model.named_parameters()) == sorted(theirs)
    for name, p in model.named_parameters():
        errors[name] = rel_error(p.grad, theirs[name].grad)  # Conv1D grads are (in, out) too
    report = "\n".join(f"  {e:.3e}  {n}" for n, e in sorted(errors.items(), key=lambda kv: -kv[1]))
    assert max(errors.values()) <= TOL, f"worst error per name:\n{report}"
    assert float(loss.data) > 1.0  # O(1) weights: a loss far from trivial


def _logits(model, ids):
    return model(ids)[0].data


def test_prefixless_keys_mask_buffers_and_a_copied_head(pair, tmp_path):
    """The hub's gpt2 layout: no `transformer.` prefix, attn.bias / attn.masked_bias buffers, and
    (from old saves) lm_head.weight beside a tied wte."""
    hf, folder = pair
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    P = hf.config.n_positions
    old = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in state.items()}
    for i in range(hf.config.n_layer):
        old[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, P, P), np.uint8))
        old[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file({k: np.ascontiguousarray(v) for k, v in old.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((open(os.path.join(folder, "config.json")).read()))
    ids = np.random.default_rng(3).integers(0, hf.config.vocab_size, (2, P))
    a = GPT.from_pretrained(folder, dtype="float64")
    b = GPT.from_pretrained(tmp_path, dtype="float64")
    assert np.array_equal(_logits(a, ids), _logits(b, ids))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_checkpoints(fmt, tmp_path):
    hf = random_hf(4, **SHAPES["odd"])
    hf.save_pretrained(tmp_path / "one")
    whole = load_file(str(tmp_path / "one" / "model.safetensors"))
    names = sorted(whole)
    ext, index_name = (".safetensors", "model.safetensors.index.json") if fmt == "safetensors" else \
        (".bin", "pytorch_model.bin.index.json")
    shards = {f"model-0000{i + 1}-of-00002{ext}": names[i::2] for i in range(2)}
    folder = tmp_path / "sharded"
    folder.mkdir()
    for file, keys in shards.items():
        if fmt == "safetensors":
            save_file({k: whole[k] for k in keys}, str(folder / file), metadata={"format": "pt"})
        else:
            torch.save({k: torch.from_numpy(whole[k]) for k in keys}, folder / file)
    index = {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (folder / index_name).write_text(json.dumps(index))
    (folder / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    a, b = GPT.from_pretrained(tmp_path / "one", dtype="float64"), GPT.from_pretrained(folder, dtype="float64")
    for (n, x), (m, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert n == m and np.array_equal(x, y)
    index["weight_map"][names[0]] = "../elsewhere" + ext
    (folder / index_name).write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not a file name in the same directory"):
        GPT.from_pretrained(folder)
    index["weight_map"][names[0]] = "model-00003-of-00002" + ext
    (folder / index_name).write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="lists the shard model-00003-of-00002.*, which is missing"):
        GPT.from_pretrained(folder)


def test_bfloat16_checkpoint(tmp_path):
    hf = random_hf(5, **SHAPES["narrow"]).to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path, dtype="float32")
    for name, p in hf.named_parameters():
        assert np.array_equal(model.state_dict()[name], p.detach().float().numpy()), name


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh", "gelu",
                                        "gelu_python"])
def test_every_gelu_name(activation, tmp_path):
    hf = random_hf(6, n_layer=1, n_head=2, n_embd=10, vocab_size=11, n_positions=7, activation_function=activation)
    hf.save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path, dtype="float64")
    assert model.config.activation == ("gelu" if activation in ("gelu", "gelu_python") else "gelu_tanh")
    ids = np.random.default_rng(7).integers(0, 11, (2, 7))
    assert rel_error(_logits(model, ids), hf(torch.from_numpy(ids)).logits) <= TOL


def random_npgpt(seed: int, **kw) -> GPT:
    model = GPT(GPTConfig(**kw), seed=seed, dtype="float64")
    g = np.random.default_rng(seed)
    model.load_state_dict({k: g.normal(1.0 if "ln_" in k and k.endswith(".weight") else 0.0, 0.3, v.shape)
                           for k, v in model.state_dict().items()})
    return model.eval()


@pytest.mark.parametrize("kw", [
    dict(vocab_size=97, block_size=29, n_layer=3, n_head=3, n_embd=48),
    dict(vocab_size=53, block_size=17, n_layer=2, n_head=2, n_embd=26, activation="gelu", norm_eps=1e-3, dropout=0.2),
    dict(vocab_size=61, block_size=23, n_layer=2, n_head=3, n_embd=36, tie_embeddings=False),
    dict(vocab_size=41, block_size=9, n_layer=2, n_head=2, n_embd=20, intermediate_size=50),
], ids=["odd", "narrow-exact-gelu", "untied", "n_inner"])
def test_save_pretrained_loads_in_transformers(kw, tmp_path):
    model = random_npgpt(8, **kw)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, dtype=torch.float64).eval()
    c = model.config
    assert (hf.config.n_positions, hf.config.layer_norm_epsilon, hf.config.tie_word_embeddings, hf.config.resid_pdrop) == \
        (c.block_size, c.norm_eps, c.tie_embeddings, c.dropout)
    ids = np.random.default_rng(9).integers(0, c.vocab_size, (2, c.block_size))
    assert rel_error(_logits(model, ids), hf(torch.from_numpy(ids)).logits) <= TOL
    back = GPT.from_pretrained(tmp_path, dtype="float64")
    assert back.config == c
    for (n, x), (m, y) in zip(model.state_dict().items(), back.state_dict().items()):
        assert n == m and np.array_equal(x, y)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and an NVIDIA GPU (make test-gpu on a GPU machine)")
def test_gpt2_directories_on_the_gpu(tmp_path):
    random_hf(15, **SHAPES["untied"]).save_pretrained(tmp_path / "a")
    cpu = GPT.from_pretrained(tmp_path / "a", dtype="float64")
    gpu = GPT.from_pretrained(tmp_path / "a", dtype="float64", device="cuda")
    assert backend.device_of(gpu.lm_head.weight.data) == "cuda"
    ids = np.random.default_rng(16).integers(0, 61, (2, 23))
    assert rel_error(backend.to_numpy(_logits(gpu, ids)), _logits(cpu, ids)) <= 1e-10
    gpu.save_pretrained(tmp_path / "b")
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- tokenizer files


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(CORPUS, 400, special_tokens=[EOT])


def hf_tokenizers(folder):
    return [transformers.GPT2Tokenizer.from_pretrained(folder), transformers.GPT2TokenizerFast.from_pretrained(folder)]


def test_tokenizer_files_load_in_transformers(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    ours = BPETokenizer.from_pretrained(tmp_path)
    assert ours.merge_rule == "pair" and ours.special_tokens == {EOT: tok.eot_id}
    text = CORPUS + f"{EOT}Once upon a time{EOT}\n  é😀 it's 3.14"
    ids = tok.encode(text, allowed_special="all")
    assert ours.encode(text, allowed_special="all") == ids
    for theirs in hf_tokenizers(tmp_path):
        assert theirs.encode(text) == ids
        assert theirs.eos_token_id == tok.eot_id
        for skip in (False, True):
            assert theirs.decode(ids, skip_special_tokens=skip) == ours.decode(ids, skip_special_tokens=skip)
    assert ours.decode(ids, skip_special_tokens=True) == text.replace(EOT, "")


def test_tokenizer_round_trip_is_exact(tok, tmp_path):
    tok.save_pretrained(tmp_path / "a")
    first = BPETokenizer.from_pretrained(tmp_path / "a")
    first.save_pretrained(tmp_path / "b")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert BPETokenizer.from_pretrained(tmp_path / "b").to_dict() == first.to_dict()
    assert (first.merges, first.byte_ids, first.merge_ids) == (tok.merges, tok.byte_ids, tok.merge_ids)


def test_tokenizer_without_endoftext(tmp_path):
    plain = BPETokenizer.train(CORPUS, 300)
    plain.save_pretrained(tmp_path)
    assert BPETokenizer.from_pretrained(tmp_path).special_tokens == {}
    for theirs in hf_tokenizers(tmp_path):
        assert theirs.encode(CORPUS) == plain.encode(CORPUS)


def test_model_with_its_tokenizer(tok, tmp_path):
    model = random_npgpt(10, vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8)
    model.save_pretrained(tmp_path, tokenizer=tok)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["eos_token_id"] == config["bos_token_id"] == tok.eot_id
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["model_max_length"] == 16
    back = GPT.from_pretrained(tmp_path)
    assert back.tokenizer.encode(CORPUS) == tok.encode(CORPUS)
    back.save_pretrained(tmp_path / "again")  # the attached tokenizer goes along
    assert (tmp_path / "again" / "vocab.json").read_bytes() == (tmp_path / "vocab.json").read_bytes()


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("kw, message", [
    (dict(pos_encoding="sinusoidal"), r"pos_encoding='sinusoidal' \(GPT-2 has learned positions only\)"),
    (dict(bias=False), r"bias=False"),
    (dict(bias=False, pos_encoding="sinusoidal"), r"pos_encoding='sinusoidal'.*; bias=False"),
])
def test_models_gpt2_cannot_express_are_refused(kw, message, tmp_path):
    model = GPT(GPTConfig(vocab_size=11, block_size=5, n_layer=1, n_head=1, n_embd=4, **kw))
    with pytest.raises(ValueError, match="cannot be saved as a GPT-2 checkpoint: " + message):
        model.save_pretrained(tmp_path)
    assert not os.listdir(tmp_path)


def test_tokenizers_gpt2_cannot_hold_are_refused(tmp_path):
    model = GPT(GPTConfig(vocab_size=300, block_size=5, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ValueError, match="byte-level BPE tokenizer; this one is a CharTokenizer"):
        model.save_pretrained(tmp_path, tokenizer=CharTokenizer.train("abc"))
    with pytest.raises(ValueError, match="GPT-2's pattern"):
        model.save_pretrained(tmp_path, tokenizer=BPETokenizer.train(CORPUS, 280, pattern="gpt4"))
    with pytest.raises(ValueError, match="the tokenizer has 400 ids, more than the model's vocab_size 300"):
        model.save_pretrained(tmp_path, tokenizer=BPETokenizer.train(CORPUS, 400))
    assert not os.listdir(tmp_path)  # refused before anything is written


def _hf_dir(tmp_path, **config_changes):
    random_hf(11, n_layer=1, n_head=2, n_embd=10, vocab_size=11, n_positions=7).save_pretrained(tmp_path)
    return edit_config_json(tmp_path, **config_changes)


@pytest.mark.parametrize("change, message", [
    (dict(activation_function="relu"), r"activation_function 'relu' is not supported; npgpt runs the tanh GELU"),
    (dict(activation_function="gelu_10"), r"activation_function 'gelu_10' is not supported"),
    (dict(model_type="mistral"), r"model_type 'mistral'; npgpt reads gpt2, llama, qwen2, qwen3 checkpoints"),
    (dict(n_inner=7), r"(?s)do not fit config.json's model.*mlp.c_fc.weight: expected \(10, 7\), got \(10, 40\)"),
    (dict(scale_attn_by_inverse_layer_idx=True), r"scale_attn_by_inverse_layer_idx=True"),
    (dict(n_head=3), r"n_embd=10 must be divisible by n_head=3"),
    (dict(tie_word_embeddings=False), r"tie_word_embeddings is false, but the checkpoint has no lm_head.weight"),
    (dict(vocab_size=12), r"(?s)do not fit config.json's model.*transformer.wte.weight: expected \(12, 10\), got \(11, 10\)"),
], ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else "")
def test_configs_npgpt_cannot_run_are_refused(change, message, tmp_path):
    folder = _hf_dir(tmp_path, **change)
    with pytest.raises(ValueError, match=message):
        GPT.from_pretrained(folder)


def test_three_different_dropout_rates_load(tmp_path):
    """transformers loads a config whose resid/embd/attn_pdrop differ; so does npgpt (issue 15 point 7):
    the one rate is resid_pdrop, and in eval mode (sampling) dropout does nothing."""
    folder = _hf_dir(tmp_path, resid_pdrop=0.2, embd_pdrop=0.1, attn_pdrop=0.0)
    model = GPT.from_pretrained(folder)
    assert model.config.dropout == 0.2 and not model.training
    assert GPT.from_pretrained(folder, dropout=0.0).config.dropout == 0.0


def test_missing_and_corrupt_files(tmp_path):
    folder = _hf_dir(tmp_path / "m")
    os.remove(folder / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="no weights: expected model.safetensors, .*pytorch_model.bin"):
        GPT.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ValueError, match="model.safetensors: not a safetensors file"):
        GPT.from_pretrained(folder)
    os.remove(folder / "config.json")
    with pytest.raises(FileNotFoundError, match="no config.json; not a GPT-2"):
        GPT.from_pretrained(folder)
    with pytest.raises(ValueError, match="a file; expected a GPT-2 directory"):
        GPT.from_pretrained(folder / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        GPT.from_pretrained(str(tmp_path / "nowhere" / "deeper" / "still"))
    with pytest.raises(FileNotFoundError, match=r"no vocab.json or merges.txt"):
        BPETokenizer.from_pretrained(folder)


def test_a_head_that_is_not_the_tied_embedding_is_refused(tmp_path):
    folder = _hf_dir(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["lm_head.weight"] = state["transformer.wte.weight"] + 1.0
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="tie_word_embeddings is true, but lm_head.weight differs from wte.weight"):
        GPT.from_pretrained(folder)


def test_bin_without_torch(tmp_path, monkeypatch):
    """A pytorch_model.bin reads without PyTorch (npgpt.torch_pickle), to the same arrays torch.load gives."""
    hf = random_hf(12, n_layer=1, n_head=1, n_embd=4, vocab_size=5, n_positions=3)
    folder = save_hf(hf, tmp_path, "bin")
    expected = {k: v.numpy() for k, v in torch.load(os.path.join(folder, "pytorch_model.bin"), weights_only=True).items()}
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, as if not installed
    from npgpt.models.hf_weights import read_bin

    got = read_bin(os.path.join(folder, "pytorch_model.bin"))
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k].dtype == expected[k].dtype and np.array_equal(got[k], expected[k]), k
    GPT.from_pretrained(folder)


def test_hub_names_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(RuntimeError, match=r"'gpt2' is not a local directory.*needs huggingface_hub.*npgpt\[hf\]"):
        GPT.from_pretrained("gpt2")


def test_hub_names_offline(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(RuntimeError, match=r"cannot download 'npgpt-tests/no-such-model'.*HF_HUB_OFFLINE is set"):
        GPT.from_pretrained("npgpt-tests/no-such-model")


def test_hub_names_download_through_snapshot_download(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    folder = _hf_dir(tmp_path / "snapshot")
    calls = []

    def fake(name, allow_patterns):  # what a download would leave: a local snapshot folder
        calls.append((name, allow_patterns))
        return str(folder)

    monkeypatch.setattr(hub, "snapshot_download", fake)
    model = GPT.from_pretrained("someone/tiny-gpt2")
    assert calls[0][0] == "someone/tiny-gpt2" and "*.safetensors" in calls[0][1] and len(calls) == 1
    assert model.config.n_embd == 10


# ---------------------------------------------------------------- fine-tuning a GPT-2 directory

TEXT = "".join(f"{i} little pigs went to market; {i % 5} stayed home.\n" for i in range(300))
QUICK = ["--batch-size", "2", "--eval-iters", "1", "--eval-interval", "3", "--log-interval", "1", "--warmup-iters", "1",
         "--no-progress", "--no-plot"]


@pytest.fixture
def gpt2_dir(tmp_path):
    """A tiny GPT-2 directory: random transformers weights and a BPE tokenizer trained by npgpt."""
    tok = BPETokenizer.train(TEXT, 300, special_tokens=[EOT])
    folder = tmp_path / "gpt2"
    random_hf(13, n_layer=2, n_head=2, n_embd=16, vocab_size=tok.vocab_size, n_positions=16).save_pretrained(folder)
    tok.save_pretrained(folder)
    (tmp_path / "t.txt").write_text(TEXT)
    return folder, tok


def test_finetune_a_gpt2_directory_and_export_it(gpt2_dir, tmp_path, capsys):
    from npgpt.training.checkpoint import load_checkpoint
    from npgpt.cli import main

    folder, tok = gpt2_dir
    data, out, exported = str(tmp_path / "data"), str(tmp_path / "out"), tmp_path / "exported"
    assert main(["prepare", str(tmp_path / "t.txt"), "--out", data, "--tokenizer-file", str(folder)]) == 0
    meta = json.loads(open(os.path.join(data, "meta.json")).read())
    ids = np.concatenate([np.fromfile(os.path.join(data, f"{s}.bin"), dtype=meta["dtype"]) for s in ("train", "val")])
    assert ids.tolist() == transformers.GPT2Tokenizer.from_pretrained(folder).encode(TEXT)

    assert main(["train", "--init-from", str(folder), "--data-dir", data, "--out-dir", out, "--max-iters", "3",
                 "--dtype", "float64", "--lr", "0.01", *QUICK]) == 0
    assert f"fine-tuning from the Hugging Face directory {folder}" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    start = GPT.from_pretrained(folder, dtype="float64")
    assert ckpt.iter_num == 3 and GPTConfig.from_dict({**ckpt.model_config, "dropout": 0.1}) == start.config  # the shape is the directory's
    assert ckpt.model_config["block_size"] == 16 and "block_size" not in ckpt.train_config and ckpt.tokenizer == tok.from_pretrained(folder).to_dict()
    assert not np.array_equal(ckpt.model_state["transformer.h.0.mlp.c_fc.weight"],
                              start.state_dict()["transformer.h.0.mlp.c_fc.weight"])  # it trained
    assert main(["train", "--init-from", str(folder), "--data-dir", data, "--out-dir", str(tmp_path / "zero"),
                 "--max-iters", "0", "--dtype", "float64", *QUICK]) == 0
    zero = load_checkpoint(str(tmp_path / "zero"), prefer="ckpt.safetensors").model_state
    assert all(np.array_equal(zero[k], v) for k, v in start.state_dict().items())  # it started from the directory

    assert main(["sample", out, "--max-new-tokens", "5"]) == 0
    assert main(["export", out, str(exported)]) == 0
    assert "exported" in capsys.readouterr().out
    hf = transformers.GPT2LMHeadModel.from_pretrained(exported, dtype=torch.float64).eval()
    model = model_from_checkpoint(ckpt, dtype="float64").eval()
    x = np.random.default_rng(14).integers(0, tok.vocab_size, (2, 16))
    assert rel_error(_logits(model, x), hf(torch.from_numpy(x)).logits) <= TOL
    assert transformers.GPT2Tokenizer.from_pretrained(exported).encode(TEXT[:300]) == tok.encode(TEXT[:300])
    assert main(["train", "--init-from", "resume", "--data-dir", data, "--out-dir", out, "--max-iters", "4",
                 "--dtype", "float64", "--lr", "0.01", *QUICK]) == 0  # a fine-tuned run resumes as any other
    resumed = load_checkpoint(out, prefer="ckpt.safetensors")
    assert resumed.iter_num == 4 and resumed.model_config["block_size"] == 16


def test_finetune_refuses_data_from_another_tokenizer(gpt2_dir, tmp_path, capsys):
    from npgpt.cli import main

    folder, _ = gpt2_dir
    data = str(tmp_path / "char-data")
    assert main(["prepare", str(tmp_path / "t.txt"), "--out", data]) == 0
    assert main(["train", "--init-from", str(folder), "--data-dir", data, "--out-dir", str(tmp_path / "o"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "prepared with a different char tokenizer" in err and f"--tokenizer-file {folder}" in err
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        os.remove(folder / name)
    assert main(["train", "--init-from", str(folder), "--data-dir", data, "--out-dir", str(tmp_path / "o"), *QUICK]) == 2
    assert "has no tokenizer files" in capsys.readouterr().err


def test_export_of_a_char_tokenizer_checkpoint(tmp_path, capsys):
    from npgpt.cli import main

    (tmp_path / "t.txt").write_text(TEXT)
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    assert main(["prepare", str(tmp_path / "t.txt"), "--out", data]) == 0
    assert main(["train", "--data-dir", data, "--out-dir", out, "--max-iters", "1", "--n-layer", "1", "--n-head", "1",
                 "--n-embd", "8", "--block-size", "8", *QUICK]) == 0
    assert main(["export", out, str(tmp_path / "e")]) == 2
    assert "char tokenizer" in capsys.readouterr().err and not os.path.exists(tmp_path / "e")
    assert main(["export", out, str(tmp_path / "e"), "--no-tokenizer"]) == 0
    assert sorted(os.listdir(tmp_path / "e")) == ["config.json", "model.safetensors"]
    assert transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "e").config.n_embd == 8
