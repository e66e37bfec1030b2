"""npgpt/tokenizers/bpe_json.py: Hugging Face tokenizer.json files made offline with the `tokenizers`
library (GPT-2's ByteLevel, Llama 3's and Qwen2's Split patterns), encoded as the library encodes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from npgpt.tokenizers import BPETokenizer, load_tokenizer

# Llama 3's split pattern (transformers' TikTokenConverter default) and Qwen2's (tokenization_qwen2.py)
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TRAIN = [
    "The quick brown fox jumps over the lazy dog. It's 2024; they'll say we'd've known.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n\tprint(i ** 2)  # squares\n",
    "Numbers: 1234567 3.14159 -42 0x1F 1e-9; dates 2024-06-01, 12:30:45.",
    "Привет, мир! Здравствуйте. 你好，世界。こんにちは世界。안녕하세요 세계. مرحبا بالعالم",
    "Emoji 😀🎉👍🏽 and 👨‍👩‍👧‍👦 families; café naïve résumé Ångström.",
    "    leading spaces,   runs   of   spaces,\n\n\nnewlines\r\nand tabs\t\t\there.",
] * 20
HELD_OUT = [
    "Hello, world! I'm here; you're there. DON'T SHOUT, it'S fine.",
    "x = [1, 22, 333, 4444, 55555]  # 123456789\n",
    "class Foo:\n    def __init__(self):\n        self.bar = {'a': 1}\n",
    "   \n\n  \t mixed   whitespace    \r\n\r\n",
    "Съешь же ещё этих мягких французских булок. 東京は日本の首都です。",
    "🤖🚀✨ emoji runs 👩🏾‍💻 and ZWJ; combining: e\u0301 a\u0308 (NFD) vs é ä",
    "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\nhello!<|im_end|><|endoftext|>",
    "special in the middle<|endoftext|>of text, and <|im_end|  not quite",
    "",
    " ",
    "a",
    "1234567890123",
]


def _trained(pattern, normalizer=None, ignore_merges=False, vocab_size=600, nonspecial=()):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges) if ignore_merges else models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    if pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN, trainer)
    if nonspecial:
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in nonspecial])
    return tok


KINDS = {
    "gpt2": dict(pattern=None),
    "llama3": dict(pattern=LLAMA3_PATTERN, ignore_merges=True),
    "qwen2": dict(pattern=QWEN2_PATTERN, normalizer=normalizers.NFC(), nonspecial=("<tool_call>", "</tool_call>")),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def pair(request, tmp_path_factory):
    hf = _trained(**KINDS[request.param])
    path = tmp_path_factory.mktemp(request.param) / "tokenizer.json"
    hf.save(str(path))
    return hf, BPETokenizer.from_tokenizer_json(path), path


def _hf_ids(hf, text):
    return hf.encode(text, add_special_tokens=False).ids


def test_held_out_texts_encode_as_the_library(pair):
    hf, ours, _ = pair
    for text in HELD_OUT + ["<tool_call>{\"name\": 1}</tool_call>"]:
        want = _hf_ids(hf, text)
        assert ours.encode(text, allowed_special="all") == want, text
        assert ours.decode(want) == hf.decode(want, skip_special_tokens=False), text
        assert ours.decode(want, skip_special_tokens=True) == hf.decode(want, skip_special_tokens=True), text


@given(text=st.text(st.characters(codec="utf-8"), max_size=40)
       | st.lists(st.sampled_from(["ab", " ", "  ", "\n", "12", "345", "'s", "Ж", "語", "😀", "\u0301", "<|im_end|>",
                                   "\t", "x", ".", "!!"]), max_size=15).map("".join))
def test_drawn_texts_encode_as_the_library(pair, text):
    hf, ours, _ = pair
    assert ours.encode(text, allowed_special="all") == _hf_ids(hf, text)


def test_write_back_loads_in_the_library_and_encodes_the_same(pair, tmp_path):
    hf, ours, _ = pair
    out = ours.save_tokenizer_json(tmp_path / "tokenizer.json")
    again = Tokenizer.from_file(out)
    back = BPETokenizer.from_tokenizer_json(out)
    assert back.to_dict() == ours.to_dict()
    for text in HELD_OUT:
        assert _hf_ids(again, text) == _hf_ids(hf, text), text
        assert back.encode(text, allowed_special="all") == _hf_ids(hf, text)


def test_npgpt_file_round_trip_keeps_the_options(pair, tmp_path):
    _, ours, _ = pair
    ours.save(tmp_path / "npgpt.json")
    back = load_tokenizer(tmp_path / "npgpt.json")
    assert back.to_dict() == ours.to_dict()
    assert back.encode(HELD_OUT[5] + HELD_OUT[6], allowed_special="all") == ours.encode(HELD_OUT[5] + HELD_OUT[6], allowed_special="all")


def test_load_tokenizer_reads_the_file_and_its_directory(pair):
    _, ours, path = pair
    assert load_tokenizer(path).to_dict() == ours.to_dict()
    assert load_tokenizer(path.parent).to_dict() == ours.to_dict()
    assert BPETokenizer.from_pretrained(path.parent).to_dict() == ours.to_dict()


def test_merges_as_strings_or_pairs(tmp_path):
    hf = _trained(None)
    d = json.loads(hf.to_str())
    d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]
    (tmp_path / "a.json").write_text(json.dumps(d))
    d["model"]["merges"] = [m.split(" ") for m in d["model"]["merges"]]
    (tmp_path / "b.json").write_text(json.dumps(d))
    a, b = (BPETokenizer.from_tokenizer_json(tmp_path / n) for n in ("a.json", "b.json"))
    assert a.to_dict() == b.to_dict()
    assert a.encode(HELD_OUT[1]) == _hf_ids(hf, HELD_OUT[1])


def test_isolated_split_keeps_the_text_between_matches(tmp_path):
    """A Split pattern that matches only letters: the library keeps digits and spaces as chunks of their own."""
    hf = _trained(r"\p{L}+")
    hf.save(str(tmp_path / "t.json"))
    ours = BPETokenizer.from_tokenizer_json(tmp_path / "t.json")
    for text in ["abc 123 def", "  12  ", "x1y2z3", "...!!!", ""] + HELD_OUT:
        assert ours.encode(text, allowed_special="all") == _hf_ids(hf, text), text


def test_gpt2_directory_saved_by_transformers_5(tmp_path):
    """transformers 5 writes tokenizer.json (no vocab.json / merges.txt): the directory loads and encodes the same."""
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

    hf = _trained(None)
    hf.save(str(tmp_path / "src.json"))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "src.json"), eos_token="<|endoftext|>")
    (tmp_path / "src").mkdir()
    fast.save_pretrained(tmp_path / "src")
    gpt2 = GPT2TokenizerFast.from_pretrained(tmp_path / "src")
    d = tmp_path / "gpt2"
    gpt2.save_pretrained(d)
    assert (d / "tokenizer.json").is_file() and not (d / "vocab.json").exists()
    ours = load_tokenizer(d)
    assert BPETokenizer.from_pretrained(d).to_dict() == ours.to_dict()
    for text in HELD_OUT:
        assert ours.encode(text, allowed_special="all") == gpt2(text, add_special_tokens=False)["input_ids"], text
    assert ours.eot_id == gpt2.eos_token_id


def _refused(tmp_path, change, message):
    d = json.loads(_trained(LLAMA3_PATTERN).to_str())
    change(d)
    (tmp_path / "t.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_tokenizer_json(tmp_path / "t.json")
    with pytest.raises(ValueError, match="a Hugging Face tokenizer.json that npgpt cannot read: .*" + message):
        load_tokenizer(tmp_path / "t.json")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["model"].update(type="WordPiece"), "model type 'WordPiece' is not supported"),
    (lambda d: d.update(normalizer={"type": "Lowercase"}), "normalizer 'Lowercase' is not supported"),
    (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer 'Whitespace' is not supported"),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(behavior="Removed"), "behavior='Removed' is not supported"),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(invert=True), "invert=True is not supported"),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=True), "add_prefix_space=True"),
    (lambda d: d["model"].update(byte_fallback=True), "byte_fallback=True is not supported"),
    (lambda d: d["model"].update(dropout=0.1), "dropout=0.1 is not supported"),
    (lambda d: d.update(decoder={"type": "WordPiece"}), "decoder 'WordPiece' is not supported"),
    (lambda d: d["added_tokens"][0].update(lstrip=True), "lstrip=true"),
    (lambda d: d["model"]["vocab"].update({"zzz_orphan": 5000}), "'zzz_orphan' .* is neither a byte"),
    (lambda d: d["model"]["merges"].append(["Ġ", "qqqq"]), "is not two vocab tokens"),
    (lambda d: d["model"]["vocab"].pop("Ġ"), r"no vocab token for byte\(s\) \[32\]"),
])
def test_refused_by_name(tmp_path, change, message):
    _refused(tmp_path, change, message)
