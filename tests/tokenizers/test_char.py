"""CharTokenizer: vocabulary, round trips, errors, files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npgpt.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer, tokenizer_from_dict
from tests.tokenizers.strategies import chars


def test_vocabulary_is_sorted_distinct_characters():
    tok = CharTokenizer.train("hello world")
    assert tok.chars == sorted(set("hello world"))
    assert tok.vocab_size == 8
    assert tok.encode("hello") == [tok.chars.index(c) for c in "hello"]
    assert tok.eot_id is None


def test_empty_text_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.train("")


@given(st.text(chars, min_size=1))
def test_round_trip(text):
    tok = CharTokenizer.train(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(np.array(ids, dtype=np.int64)) == text


def test_unknown_character_names_it_and_its_position():
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=r"'z'.*position 3"):
        tok.encode("abcz!")


@pytest.mark.parametrize("bad", [3, 100, -1])
def test_unknown_id_names_it_and_the_vocab_size(bad):
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=rf"{bad}.*vocab size 3"):
        tok.decode([0, bad])


def test_special_keywords_are_accepted_and_ignored():
    tok = CharTokenizer.train("ab")
    assert tok.encode("ab", allowed_special="all", disallowed_special=()) == [0, 1]


def test_save_load_round_trip(tmp_path):
    tok = CharTokenizer.train("héllo\n😀\x00")
    path = tmp_path / "tok.json"
    tok.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["type"] == "char"
    assert os.listdir(tmp_path) == ["tok.json"]  # no temporary file left behind
    for loaded in (CharTokenizer.load(path), Tokenizer.load(path), load_tokenizer(path),
                   tokenizer_from_dict(tok.to_dict())):
        assert isinstance(loaded, CharTokenizer)
        assert loaded.chars == tok.chars


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "tok.json"
    CharTokenizer.train("ab").save(path)
    CharTokenizer.train("xyz").save(path)
    assert load_tokenizer(path).vocab_size == 3


@pytest.mark.parametrize("content", [
    b"not json", b"\xff\xfe", b"[1, 2]", b'{"type": "word"}', b'{"type": "char"}',
    b'{"type": "char", "chars": ["a", "a"]}', b'{"type": "char", "chars": ["ab"]}',
    b'{"type": "char", "chars": []}',
])
def test_corrupt_file_names_the_file(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(path)


def test_loading_the_wrong_kind_is_an_error(tmp_path):
    path = tmp_path / "bpe.json"
    BPETokenizer.train("aaab", 257).save(path)
    with pytest.raises(ValueError, match="bpe.json.*not a CharTokenizer"):
        CharTokenizer.load(path)
