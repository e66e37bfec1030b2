"""BPETokenizer on its own: training rules, edge cases, encode/decode, special tokens, files.
Exactness against tiktoken and Hugging Face lives in test_bpe_interop.py."""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npgpt.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, load_tokenizer
from npgpt.tokenizers.bpe_merge import merge_by_scan, merge_with_heap
from tests.tokenizers.strategies import CORPUS, texts

EOT = "<|endoftext|>"


@pytest.fixture(scope="module", params=["gpt2", "gpt4"])
def tok(request):
    return BPETokenizer.train(CORPUS, 512, pattern=request.param, special_tokens=[EOT, "<|pad|>"])


def train_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BPETokenizer.train(*args, **kwargs)


# ---------------------------------------------------------------- round trips


@given(texts)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert tok.encode_ordinary(text) == ids


def test_training_compresses_and_ids_follow_the_rules(tok):
    assert len(tok.merges) == 512 - 256 - 2 and tok.vocab_size == 512
    assert tok.special_tokens == {EOT: 510, "<|pad|>": 511}  # after the merges
    assert tok.eot_id == 510
    ids = tok.encode(CORPUS)
    assert len(ids) < len(CORPUS.encode("utf-8")) / 2
    assert tok.encode("a") == [ord("a")]  # base vocabulary: id = byte value


# ---------------------------------------------------------------- training rules


def test_training_is_deterministic():
    a = BPETokenizer.train(CORPUS, 400, pattern="gpt4")
    b = BPETokenizer.train(CORPUS, 400, pattern="gpt4")
    assert a.merges == b.merges and a.to_dict() == b.to_dict()


def test_most_frequent_pair_wins():
    tok = BPETokenizer.train("zz ab ab", 257, pattern=r"\S+")
    assert tok.merges == [(ord("a"), ord("b"))]


def test_tie_break_is_smallest_pair():
    # (z, z), (y, x) and (a, b) occur once each; (a, b) is the smallest (left, right), though last seen.
    tok = BPETokenizer.train("zz yx ab", 257, pattern=r"\S+")
    assert tok.merges == [(ord("a"), ord("b"))]
    tok = BPETokenizer.train("zz yx ab", 258, pattern=r"\S+")
    assert tok.merges == [(ord("a"), ord("b")), (ord("y"), ord("x"))]


def test_merges_never_cross_chunks():
    tok = train_quiet("ab ab ab cd cd", 300, pattern=r"\S+")
    assert all(b" " not in tok.token_bytes(i) for i in range(256, 256 + len(tok.merges)))


def test_overlapping_pairs_merge_left_to_right():
    tok = train_quiet("aaa", 258, pattern=r"\S+")  # (a, a) -> 256, then (256, a) -> 257
    assert tok.merges == [(97, 97), (256, 97)]
    # aaaaa -> [aa]aaa -> aa[aa]a -> "aaaa" is no token, (aa, a) is "aaa" -> aa[aaa]
    assert tok.encode("aaaaa") == [256, 257]


def test_special_text_is_not_learned():
    tok = train_quiet(f"ab{EOT}ab{EOT}", 300, pattern=r".+", special_tokens=[EOT])
    assert all(b"<|" not in tok.token_bytes(i) for i in range(256, 256 + len(tok.merges)))


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_is_optional(monkeypatch, progress):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # importing tqdm.auto now fails
    assert len(BPETokenizer.train(CORPUS, 300, progress=progress).merges) == 44


def test_progress_bar_with_tqdm():
    pytest.importorskip("tqdm")
    assert len(BPETokenizer.train(CORPUS, 300, progress=True).merges) == 44


# ---------------------------------------------------------------- edge cases


def test_empty_text_gives_the_byte_vocabulary():
    tok = BPETokenizer.train("", 256)
    assert tok.merges == [] and tok.vocab_size == 256
    with pytest.warns(UserWarning, match="only enough pairs for 0 merges"):
        tok = BPETokenizer.train("", 1000, special_tokens=[EOT])
    assert tok.vocab_size == 257 and tok.eot_id == 256
    assert tok.encode("hi") == [104, 105]


def test_fewer_pairs_than_merges_stops_early():
    with pytest.warns(UserWarning, match="only enough pairs for 2 merges, not 744"):
        tok = BPETokenizer.train("abc", 1000, pattern=r"\S+")
    assert tok.vocab_size == 258 and tok.encode("abc") == [257]


@pytest.mark.parametrize("vocab_size, specials", [(255, None), (0, None), (256, [EOT]), (-5, None)])
def test_vocab_size_below_bytes_plus_specials(vocab_size, specials):
    with pytest.raises(ValueError, match="below 256"):
        BPETokenizer.train(CORPUS, vocab_size, special_tokens=specials)


@pytest.mark.parametrize("specials", [["", "x"], [EOT, EOT], [3]])
def test_bad_special_tokens(specials):
    with pytest.raises(ValueError, match="special tokens"):
        BPETokenizer.train(CORPUS, 300, special_tokens=specials)


def test_patterns_by_name_and_bad_patterns():
    assert BPETokenizer([], "gpt2").pattern == GPT2_PATTERN
    assert BPETokenizer([], "GPT4").pattern == GPT4_PATTERN == BPETokenizer([], "cl100k").pattern
    with pytest.raises(ValueError, match="invalid split pattern"):
        BPETokenizer([], "(unclosed")
    grouped = BPETokenizer.train("ab ab", 257, pattern=r"(\S)+|\s")  # capture groups: whole matches count
    assert grouped.encode("ab ab") == [256, 32, 256]


def test_lone_surrogates_become_replacement_characters(tok):
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"


# ---------------------------------------------------------------- the two merge loops


@settings(max_examples=40)
@given(st.lists(st.sampled_from(list(range(97, 101)) + [256, 257]), max_size=60))
def test_heap_merge_equals_scan_merge(ids):
    # (a, b) -> 256 rank 0, (256, c) -> 257 rank 1, (b, c) -> 258 rank 2, (a, a) -> 259 rank 3
    pairs = {(97, 98): (0, 256), (256, 99): (1, 257), (98, 99): (2, 258), (97, 97): (3, 259),
             (259, 259): (4, 260), (257, 257): (5, 261)}
    assert merge_with_heap(list(ids), pairs) == merge_by_scan(list(ids), pairs)


def test_long_chunks_encode_fast_and_right(tok):
    text = " " * 20000 + "x" + "a" * 5000 + "1" * 3000
    assert tok.decode(tok.encode(text)) == text


# ---------------------------------------------------------------- special tokens


def test_special_tokens_follow_tiktoken_rules(tok):
    text = f"hi{EOT}there<|pad|>"
    with pytest.raises(ValueError, match="disallowed special token"):
        tok.encode(text)
    with pytest.raises(ValueError, match="pad"):
        tok.encode(text, allowed_special={EOT})
    every = tok.encode(text, allowed_special="all")
    assert every == tok.encode("hi") + [tok.eot_id] + tok.encode("there") + [tok.special_tokens["<|pad|>"]]
    some = tok.encode(text, allowed_special={EOT}, disallowed_special=())
    assert some == tok.encode("hi") + [tok.eot_id] + tok.encode_ordinary("there<|pad|>")
    assert tok.encode(text, disallowed_special=()) == tok.encode_ordinary(text)
    assert tok.encode(text, allowed_special="none") == tok.encode_ordinary(text)
    assert tok.encode(text, disallowed_special="none") == tok.encode_ordinary(text)
    with pytest.raises(ValueError, match="disallowed"):
        tok.encode(text, allowed_special="none_raise")
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(text, allowed_special=EOT)
    assert tok.decode(every) == text


# ---------------------------------------------------------------- decoding


def test_decode_accepts_numpy_and_replaces_bad_utf8(tok):
    ids = tok.encode("héllo")
    assert tok.decode(np.array(ids, dtype=np.int32)) == "héllo"
    assert tok.decode_bytes([0xC3]) == b"\xc3"
    assert tok.decode([0xC3, ord("x")]) == "\ufffdx"


@pytest.mark.parametrize("bad", [512, 10**9, -1])
def test_unknown_id_names_it_and_the_vocab_size(tok, bad):
    for f in (tok.decode, tok.decode_bytes):
        with pytest.raises(ValueError, match=rf"{bad}.*vocab size 512"):
            f([1, bad])


# ---------------------------------------------------------------- files


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "bpe.json"
    tok.save(path)
    d = json.loads(path.read_text(encoding="utf-8"))
    assert d["type"] == "bpe" and d["pattern"] == tok.pattern and d["merges"][0] == list(tok.merges[0])
    assert os.listdir(tmp_path) == ["bpe.json"]
    for loaded in (BPETokenizer.load(path), load_tokenizer(path)):
        assert loaded.to_dict() == tok.to_dict()
        assert loaded.encode(CORPUS) == tok.encode(CORPUS)


def _valid():
    return BPETokenizer.train("aaab", 258, special_tokens=[EOT]).to_dict()


@pytest.mark.parametrize("corrupt", [
    lambda d: d.pop("merges"),
    lambda d: d.update(merges=[[0, 999]]),
    lambda d: d.update(merges=[[0, 1, 2]]),
    lambda d: d.update(merges="abc"),
    lambda d: d.update(merges=[[0.5, 1]]),
    lambda d: d.update(pattern="(("),
    lambda d: d.update(special_tokens={EOT: 97}),
    lambda d: d.update(byte_ids=[0] * 256),
    lambda d: d.update(merge_ids=[5, 6]),
    lambda d: d.update(merge_rule="magic"),
    lambda d: d.update(version=99),
])
def test_corrupt_file_names_the_file(tmp_path, corrupt):
    d = _valid()
    corrupt(d)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json"):
        BPETokenizer.load(path)


def test_garbage_file_names_the_file(tmp_path):
    path = tmp_path / "garbage.json"
    path.write_bytes(b"\x00\x01binary")
    with pytest.raises(ValueError, match="garbage.json"):
        load_tokenizer(path)
