"""Data: corpora, token files and SFT examples (`npgpt prepare`), and batches."""

import os

from .sft import prepare_sft
from .tokens import TokenData, sample_batch
from .tokens import prepare as prepare_text


def prepare(source: str, out_dir: str, **options) -> dict:
    """`npgpt prepare`: a `.jsonl` file of examples -> an SFT data directory (prepare_sft), anything
    else (a text file, a named corpus) -> a token data directory (tokens.prepare)."""
    if source.endswith(".jsonl") and os.path.isfile(source):
        sft = {k: v for k, v in options.items() if k not in ("data_path", "url")}
        return prepare_sft(source, out_dir, **sft)
    return prepare_text(source, out_dir, **options)


__all__ = ["TokenData", "prepare", "prepare_sft", "prepare_text", "sample_batch"]
