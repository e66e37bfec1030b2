"""BPETokenizer in GPT-2 / Hugging Face directories (from_pretrained / save_pretrained), decode's
skip_special_tokens, and load_tokenizer on directories. The model side is in tests/test_hf.py."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npgpt.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer
from tests.tokenizers.strategies import CORPUS, hf_bpe_files, texts

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(CORPUS, 420, special_tokens=[EOT, "<|pad|>"])


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2-tok")
    tok.save_pretrained(folder)
    return folder


def test_decode_skips_special_tokens(tok):
    ids = tok.encode(f"{EOT}Hello<|pad|> world{EOT}", allowed_special="all")
    assert tok.decode(ids) == f"{EOT}Hello<|pad|> world{EOT}"
    assert tok.decode(ids, skip_special_tokens=True) == "Hello world"
    assert tok.decode(np.array(ids), skip_special_tokens=True) == "Hello world"
    assert tok.decode_bytes(ids, skip_special_tokens=True) == b"Hello world"
    with pytest.raises(ValueError, match="unknown token id 9999"):
        tok.decode([*ids, 9999], skip_special_tokens=True)
    char = CharTokenizer.train("abc")
    assert char.decode([0, 1, 2], skip_special_tokens=True) == "abc"


def test_files_and_what_they_hold(tok, saved):
    vocab = json.loads((saved / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["Ġ"] == ord(" ") and vocab[EOT] == tok.eot_id and len(vocab) == tok.vocab_size
    merges = (saved / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + len(tok.merges)
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["eos_token"] == EOT and config["add_prefix_space"] is False
    assert {e["content"] for e in config["added_tokens_decoder"].values()} == {EOT, "<|pad|>"}
    back = BPETokenizer.from_pretrained(saved)
    assert back.special_tokens == tok.special_tokens and back.eot_id == tok.eot_id
    assert (back.merges, back.byte_ids, back.merge_ids, back.pattern) == (tok.merges, tok.byte_ids, tok.merge_ids, tok.pattern)


@given(texts)
def test_read_back_encodes_as_the_original(tok, saved, text):
    back = BPETokenizer.from_pretrained(saved)  # Hugging Face's merge rule ("pair")
    assert back.encode(text) == tok.encode(text)
    assert back.decode(back.encode(text)) == text


@settings(max_examples=20)
@given(st.text(st.sampled_from("ab c\n'1é"), max_size=200), st.integers(257, 300))
def test_trained_tokenizers_keep_their_ids_under_the_pair_rule(tmp_path_factory, corpus, vocab_size):
    # A trained tokenizer merges by tiktoken's rule; its files are read with Hugging Face's. Small
    # alphabets make ties and repeated pieces, where the two rules could part: they must not.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small corpora run out of pairs
        trained = BPETokenizer.train(corpus, vocab_size)
    folder = tmp_path_factory.mktemp("drawn")
    trained.save_pretrained(folder)
    back = BPETokenizer.from_pretrained(folder)
    for text in (corpus, corpus[::-1], "aaaa bbbb abab"):
        assert back.encode(text) == trained.encode(text)


def test_files_written_by_the_tokenizers_library_round_trip(tmp_path):
    hf = pytest.importorskip("tokenizers")
    (tmp_path / "theirs").mkdir()
    hf_bpe_files(hf, [CORPUS], 600, tmp_path / "theirs")  # vocab.json + merges.txt, ids not in byte order
    ours = BPETokenizer.from_pretrained(tmp_path / "theirs")
    assert ours.byte_ids != list(range(256)) and ours.special_tokens == {EOT: 0}
    ours.save_pretrained(tmp_path / "ours")
    for name, read in (("vocab.json", json.loads), ("merges.txt", lambda t: t.splitlines()[1:])):
        assert read((tmp_path / "ours" / name).read_text("utf-8")) == read((tmp_path / "theirs" / name).read_text("utf-8"))
    assert BPETokenizer.from_pretrained(tmp_path / "ours").to_dict() == ours.to_dict()


def test_tokenizer_config_special_tokens(saved, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((saved / name).read_bytes())
    vocab = json.loads((saved / "vocab.json").read_text("utf-8"))
    del vocab["<|pad|>"]  # an added token only tokenizer_config.json names
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    entry = {"content": "<|pad|>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {"1000": entry}}))
    assert BPETokenizer.from_pretrained(tmp_path).special_tokens == {EOT: vocab[EOT], "<|pad|>": 1000}
    bad = [({"add_prefix_space": True}, "add_prefix_space is true"),
           ({"added_tokens_decoder": {"1000": {**entry, "special": False}}}, "is not special"),
           ({"added_tokens_decoder": {"300": entry}}, "clash with vocab.json"),
           ({"added_tokens_decoder": {"1000": {"content": EOT, "special": True}}}, "has id .* in vocab.json but 1000")]
    for config, message in bad:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match=message):
            BPETokenizer.from_pretrained(tmp_path)


def test_load_tokenizer_reads_directories(tok, saved, tmp_path):
    assert load_tokenizer(saved).to_dict() == BPETokenizer.from_pretrained(saved).to_dict()
    tok.save(tmp_path / "tokenizer.json")  # an npgpt training directory
    assert load_tokenizer(tmp_path).to_dict() == tok.to_dict()
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    with pytest.raises(ValueError, match="a Hugging Face tokenizer.json that npgpt cannot read: model.vocab must be"):
        load_tokenizer(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="a directory without a tokenizer"):
        load_tokenizer(tmp_path / "empty")


def test_two_tokens_with_the_same_bytes_cannot_be_written(tmp_path):
    # Hugging Face's rule allows two merges that make the same bytes; vocab.json cannot tell them apart.
    tok = BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)], special_tokens={}, merge_rule="pair")
    with pytest.raises(ValueError, match="would both be 'abc' in vocab.json"):
        tok.save_pretrained(tmp_path)
