"""The ops as functions on Tensors: the vocabulary the model is written in.

Each is a Function with a hand-written forward and backward in npgpt/ops/; its docstring there
holds the math, the shapes, what is saved, and the derivation of the backward.
"""

from .ops.activation import gelu, softmax
from .ops.attention import attention, grouped_query_attention
from .ops.dropout import dropout
from .ops.elementwise import add, div, exp, log, mul, neg, pow, sub, tanh
from .ops.embedding import embedding, position_embedding, sinusoidal_positions
from .ops.layernorm import layer_norm
from .ops.lora import lora_linear
from .ops.loss import cross_entropy
from .ops.matrix import linear, matmul
from .ops.mlp import mlp
from .ops.reduce import max, mean, sum
from .ops.rms_norm import rms_norm
from .ops.rope import rope, rope_cos_sin, rope_inv_freq
from .ops.shape import concatenate, getitem, reshape, split, transpose
from .ops.swiglu import swiglu_mlp
