"""BPETokenizer exact against tiktoken (trained ranks, .tiktoken files) and Hugging Face
(`tokenizers` / `transformers` GPT-2 files). Everything offline: tokenizers are trained here."""

from __future__ import annotations

import base64
import inspect
import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npgpt.tokenizers import BPETokenizer
from npgpt.tokenizers.bpe_import import bytes_to_unicode
from tests.tokenizers.strategies import CORPUS, NO_SHAKESPEARE, hf_bpe_files, shakespeare_text, texts

tiktoken = pytest.importorskip("tiktoken")
EOT = "<|endoftext|>"
SPECIALS = [EOT, "<|fim|>"]


def as_tiktoken(tok: BPETokenizer):
    return tiktoken.Encoding(name="npgpt-test", pat_str=tok.pattern, mergeable_ranks=tok.to_tiktoken_ranks(),
                             special_tokens=dict(tok.special_tokens))


@pytest.fixture(scope="module", params=["gpt2", "gpt4"])
def pair(request):
    tok = BPETokenizer.train(CORPUS, 500, pattern=request.param, special_tokens=SPECIALS)
    return tok, as_tiktoken(tok)


@pytest.fixture(scope="module", params=["gpt2", "gpt4"])
def shakespeare_pair(request):
    text = shakespeare_text()
    if text is None:
        pytest.skip(NO_SHAKESPEARE)
    tok = BPETokenizer.train(text, 4096, pattern=request.param, special_tokens=[EOT])
    return tok, as_tiktoken(tok), text


# ---------------------------------------------------------------- tiktoken


@given(texts)
def test_same_ids_as_tiktoken(pair, text):
    tok, enc = pair
    assert tok.encode(text) == enc.encode(text)
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)


def test_same_ids_as_tiktoken_on_the_corpus(pair):
    tok, enc = pair
    assert tok.encode(CORPUS) == enc.encode(CORPUS)
    assert tok.encode(" " * 3000 + "x" + "1" * 700) == enc.encode(" " * 3000 + "x" + "1" * 700)


def test_same_ids_as_tiktoken_on_shakespeare(shakespeare_pair):
    tok, enc, text = shakespeare_pair
    assert tok.vocab_size == 4096
    assert tok.encode(text) == enc.encode(text)


@given(texts)
def test_shakespeare_tokenizer_on_drawn_text(shakespeare_pair, text):
    tok, enc, _ = shakespeare_pair
    assert tok.encode(text) == enc.encode(text)


@settings(max_examples=15)
@given(st.text(st.sampled_from("ab c\n'1é😀"), max_size=200), st.integers(257, 300), st.sampled_from(["gpt2", "gpt4"]))
def test_tiktoken_agrees_with_tokenizers_trained_on_drawn_text(corpus, vocab_size, pattern):
    # Small alphabets make many ties and repeated pieces: the tie rule and the duplicate-bytes rule.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small corpora run out of pairs
        tok = BPETokenizer.train(corpus, vocab_size, pattern=pattern)
    enc = as_tiktoken(tok)
    for text in (corpus, corpus[::-1], "aaaa bbbb abab"):
        assert tok.encode(text) == enc.encode(text)


@pytest.mark.parametrize("text", [f"a{EOT}b<|fim|>c", f"{EOT}{EOT}", f"<|endof{EOT}text|>", "<|fim|> plain"])
def test_special_tokens_as_tiktoken(pair, text):
    tok, enc = pair
    with pytest.raises(ValueError):
        enc.encode(text)
    with pytest.raises(ValueError):
        tok.encode(text)
    for kwargs in ({"allowed_special": "all"}, {"disallowed_special": ()},
                   {"allowed_special": {EOT}, "disallowed_special": ()},
                   {"allowed_special": {"<|fim|>"}, "disallowed_special": ()}):
        assert tok.encode(text, **kwargs) == enc.encode(text, **kwargs), kwargs
    for allowed in ({EOT}, {"<|fim|>"}):
        try:
            expected = enc.encode(text, allowed_special=allowed)
        except ValueError:
            with pytest.raises(ValueError):
                tok.encode(text, allowed_special=allowed)
        else:
            assert tok.encode(text, allowed_special=allowed) == expected


def test_lone_surrogates_as_tiktoken(pair):
    tok, enc = pair
    assert tok.encode("x\ud83dy\udc00") == enc.encode("x\ud83dy\udc00")


def test_tiktoken_file_round_trip(pair, tmp_path):
    tok, enc = pair
    path = tmp_path / "npgpt.tiktoken"
    lines = [base64.b64encode(b) + b" " + str(r).encode() for b, r in sorted(tok.to_tiktoken_ranks().items(), key=lambda kv: kv[1])]
    path.write_bytes(b"\n".join(lines) + b"\n")
    loaded = BPETokenizer.from_tiktoken_file(path, tok.pattern, special_tokens=tok.special_tokens)
    assert loaded.to_tiktoken_ranks() == tok.to_tiktoken_ranks()
    assert loaded.merges == tok.merges  # ranks of a trained tokenizer rebuild its merges
    assert loaded.encode(CORPUS, allowed_special="all") == enc.encode(CORPUS, allowed_special="all")


def test_tiktoken_ranks_with_shuffled_byte_ranks():
    # cl100k-style: single bytes are not ranked by byte value, so ids are not bytes.
    base = BPETokenizer.train(CORPUS, 400, pattern="gpt4")
    ranks = base.to_tiktoken_ranks()
    perm = {bytes([b]): (b * 37 + 11) % 256 for b in range(256)}
    shuffled = {tok: perm.get(tok, rank) for tok, rank in ranks.items()}
    tok = BPETokenizer.from_tiktoken_ranks(shuffled, "gpt4")
    enc = tiktoken.Encoding(name="shuffled", pat_str=tok.pattern, mergeable_ranks=shuffled, special_tokens={})
    assert tok.encode(CORPUS) == enc.encode(CORPUS)
    assert tok.decode(enc.encode(CORPUS)) == CORPUS


@pytest.mark.parametrize("content", [b"not base64!! 3\n", b"YQ== x\n", b"YQ==\n", b"YQ== 0\nYg== 0\n", b"YQ== 0\n"])
def test_corrupt_tiktoken_file_names_the_file(tmp_path, content):
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.tiktoken"):
        BPETokenizer.from_tiktoken_file(path, "gpt2")


# ---------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory):
    hf = pytest.importorskip("tokenizers")
    return hf_bpe_files(hf, [shakespeare_text() or CORPUS, CORPUS], 700, tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def hf_pair(hf_files):
    """Ours, and transformers' GPT2TokenizerFast built from the same two files."""
    transformers = pytest.importorskip("transformers")
    vocab, merges = hf_files
    params = inspect.signature(transformers.GPT2TokenizerFast.__init__).parameters
    if "vocab_file" in params:  # transformers 4
        theirs = transformers.GPT2TokenizerFast(vocab_file=vocab, merges_file=merges)
    else:  # transformers 5 takes the paths as vocab= and merges=
        theirs = transformers.GPT2TokenizerFast(vocab=vocab, merges=merges)
    return BPETokenizer.from_hf(vocab, merges), theirs


def test_byte_to_unicode_matches_hugging_face():
    hf = pytest.importorskip("tokenizers")
    table = bytes_to_unicode()
    assert sorted(table.values()) == sorted(hf.pre_tokenizers.ByteLevel.alphabet())
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"


@given(texts)
def test_same_ids_as_hugging_face(hf_pair, text):
    ours, theirs = hf_pair
    assert ours.encode(text) == theirs.encode(text)
    assert ours.decode(ours.encode(text)) == text


def test_same_ids_as_hugging_face_on_the_corpus(hf_pair):
    ours, theirs = hf_pair
    text = shakespeare_text() or CORPUS
    assert ours.encode(text) == theirs.encode(text)
    assert ours.decode(theirs.encode(text)) == text


def test_hugging_face_special_tokens_keep_their_ids(hf_files, hf_pair):
    ours, theirs = hf_pair
    vocab = json.load(open(hf_files[0], encoding="utf-8"))
    assert ours.special_tokens == {EOT: vocab[EOT]} and ours.eot_id == vocab[EOT]
    text = f"Hello{EOT} world{EOT}"
    assert ours.encode(text, allowed_special="all") == theirs.encode(text)
    assert ours.vocab_size == len(vocab)


def test_hugging_face_files_with_the_tokenizers_library(hf_files):
    hf = pytest.importorskip("tokenizers")
    vocab, merges = hf_files
    theirs = hf.Tokenizer(hf.models.BPE.from_file(vocab, merges))
    theirs.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    ours = BPETokenizer.from_hf(vocab, merges, special_tokens=[EOT])
    assert ours.encode(CORPUS) == theirs.encode(CORPUS).ids


def test_hugging_face_save_load_round_trip(hf_pair, tmp_path):
    ours, _ = hf_pair
    ours.save(tmp_path / "hf.json")
    loaded = BPETokenizer.load(tmp_path / "hf.json")
    assert loaded.merge_rule == "pair" and loaded.encode(CORPUS) == ours.encode(CORPUS)


def test_corrupt_hugging_face_files_name_the_file(hf_files, tmp_path):
    vocab, merges = hf_files
    bad_merges = tmp_path / "bad_merges.txt"
    bad_merges.write_text("#version: 0.2\nĠ t\nnot-a-merge\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad_merges.txt.*line 3"):
        BPETokenizer.from_hf(vocab, bad_merges)
    bad_vocab = tmp_path / "bad_vocab.json"
    bad_vocab.write_text('{"a": 0}', encoding="utf-8")
    with pytest.raises(ValueError, match="bad_vocab.json"):
        BPETokenizer.from_hf(bad_vocab, merges)
    bad_vocab.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="bad_vocab.json"):
        BPETokenizer.from_hf(bad_vocab, merges)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        BPETokenizer.from_hf(vocab, merges, special_tokens=["<|nope|>"])
