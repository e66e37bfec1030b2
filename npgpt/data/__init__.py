"""Data: corpora, token files (`npgpt prepare`), and batches."""

from .tokens import TokenData, prepare, sample_batch

__all__ = ["TokenData", "prepare", "sample_batch"]
