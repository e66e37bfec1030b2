"""The differentiable ops, one family per file. Each is a Function subclass plus a snake_case wrapper."""

from .elementwise import add, div, exp, log, mul, neg, pow, sub, tanh
from .matrix import linear, matmul
from .reduce import max, mean, sum
from .shape import concatenate, getitem, reshape, split, transpose

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "tanh",
    "matmul", "linear",
    "sum", "mean", "max",
    "reshape", "transpose", "getitem", "split", "concatenate",
]
