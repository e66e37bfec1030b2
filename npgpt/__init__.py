"""npgpt: a GPT written from scratch on NumPy, every backward by hand and checked against PyTorch."""

from .backend import cuda_available
from .models.gpt import GPT, GPTConfig
from .tensor import Tensor, as_tensor, no_grad

__version__ = "0.1.0"

__all__ = ["Tensor", "as_tensor", "no_grad", "cuda_available", "__version__", "GPT", "GPTConfig"]
