"""Models: the one model description (GPTConfig), the model (GPT), and Hugging Face checkpoints both ways."""

from .gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
