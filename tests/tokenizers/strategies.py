"""Hypothesis strategies and small corpora shared by the tokenizer tests."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.paths import SHAKESPEARE

NO_SHAKESPEARE = f"Tiny Shakespeare not found at {SHAKESPEARE.resolve()}; the fixed corpus is still tested"

# Pieces that stress the split patterns: contractions, digits, whitespace runs of every kind,
# emoji (with modifiers and joiners), combining marks, CJK, control characters, U+FFFD.
_TRICKY = [
    " ", "  ", "\n", "\n\n", "\r\n", "\t", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'", "''",
    "0", "12", "2024", "3.14", "1,000,000",
    "e", "the", "The", " the", "café", "e\u0301", "a\u0308\u0304", "ß", "İ", "Ω",
    "中文", "日本語", "한국어", "ไทย", "עברית", "العربية",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "\ufe0f", "\u200b", "\ufffd",
    "\x00", "\x01", "\x7f", "\x9f", "!", "?!", "...", "--", "->", "{}", "$", "€", "\\",
]

chars = st.characters(codec="utf-8")  # every code point that UTF-8 can encode: no lone surrogates
texts = st.lists(st.one_of(st.sampled_from(_TRICKY), st.text(chars, max_size=6)), max_size=24).map("".join)

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "It's 2024; they'll say we've 3,141 reasons -- don't we? I'm sure you'd agree.\n"
    "    indented    text\twith\ttabs  and  double  spaces   \n"
    "Café, naïve, coöperate, façade; Straße; ΑΒΓ δεζ; Москва; 中文字符; 日本語のテキスト; 😀😀 👍🏽!\n"
    "def f(x):\n    return x ** 2  # square\n\nprint(f(12345678))\n"
) * 3


def shakespeare_text() -> str | None:
    return SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.exists() else None


def hf_bpe_files(hf, corpora, vocab_size: int, folder) -> tuple[str, str]:
    """vocab.json + merges.txt of a GPT-2 style BPE trained by the `tokenizers` library (`hf`) on
    `corpora`, with <|endoftext|> special, saved in `folder`; returns their paths."""
    model = hf.Tokenizer(hf.models.BPE())
    model.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = hf.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                     initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(corpora, trainer)
    vocab, merges = model.model.save(str(folder))
    return vocab, merges
