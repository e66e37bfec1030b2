"""npgpt/ops/mlp.py (fused linear -> GELU -> linear) against reference/ops.py.

The parity tests run at npgpt's block sizes and at tiny ones (the `blocks` fixture, tests/conftest.py);
tests/test_fastpath.py runs the MLP with a hidden layer of several of npgpt's own GELU row blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor
from npgpt.ops.activation import gelu
from npgpt.ops.matrix import linear
from npgpt.ops.mlp import mlp
from tests.helpers import assert_close, check_parity


def _args(rng, lead, C, H, Cout, b_fc=True, b_proj=True):
    return {
        "x": rng.standard_normal((*lead, C)),
        "w_fc": rng.standard_normal((C, H)) / np.sqrt(C),
        "b_fc": rng.standard_normal(H) if b_fc else None,
        "w_proj": rng.standard_normal((H, Cout)) / np.sqrt(H),
        "b_proj": rng.standard_normal(Cout) if b_proj else None,
    }


def _run(args, **kw):
    """check_parity wants arrays only: the absent biases travel as options (None on both sides)."""
    present = {k: v for k, v in args.items() if v is not None}
    absent = {k: None for k, v in args.items() if v is None}
    return check_parity(mlp, ref.mlp, present, options={**absent, **kw.pop("options", {})}, **kw)


@given(B=st.integers(1, 3), T=st.integers(1, 4), C=st.integers(1, 6), H=st.integers(1, 10), Cout=st.integers(1, 6),
       b_fc=st.booleans(), b_proj=st.booleans(), approximate=st.sampled_from(["tanh", "none"]), seed=st.integers(0, 2**16))
@example(B=1, T=1, C=1, H=1, Cout=1, b_fc=True, b_proj=True, approximate="tanh", seed=0)
@example(B=2, T=3, C=5, H=20, Cout=5, b_fc=False, b_proj=False, approximate="tanh", seed=1)  # GPT-2 shape, bias=False
@example(B=1, T=2, C=3, H=12, Cout=3, b_fc=True, b_proj=False, approximate="none", seed=2)
def test_mlp_parity(xp, blocks, B, T, C, H, Cout, b_fc, b_proj, approximate, seed):
    rng = np.random.default_rng(seed)
    _run(_args(rng, (B, T), C, H, Cout, b_fc, b_proj), xp=xp, seed=seed, options={"approximate": approximate})


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_mlp_float32_and_2d_input(xp, blocks, approximate):
    rng = np.random.default_rng(3)
    _run(_args(rng, (2, 4), 8, 32, 8), dtype="float32", xp=xp, options={"approximate": approximate})
    _run(_args(rng, (5,), 4, 16, 4), xp=xp, options={"approximate": approximate})


@pytest.mark.parametrize("grads", [("x",), ("w_fc", "b_proj"), ("w_proj",)])
def test_mlp_partial_gradients(xp, blocks, grads):
    _run(_args(np.random.default_rng(4), (2, 3), 4, 8, 4), xp=xp, grads=grads)


def test_mlp_equals_the_unfused_ops():
    rng = np.random.default_rng(5)
    a = {k: Tensor(v, requires_grad=True) for k, v in _args(rng, (2, 3), 4, 16, 4).items()}
    b = {k: Tensor(v.data, requires_grad=True) for k, v in a.items()}
    dy = rng.standard_normal((2, 3, 4))
    mlp(**a).backward(dy)
    linear(gelu(linear(b["x"], b["w_fc"], b["b_fc"])), b["w_proj"], b["b_proj"]).backward(dy)
    for k in a:
        assert_close(a[k].grad, b[k].grad, what=f"grad of {k}")


def test_mlp_bad_inputs():
    x, w_fc, w_proj = Tensor(np.zeros((2, 4))), Tensor(np.zeros((4, 8))), Tensor(np.zeros((8, 4)))
    with pytest.raises(ValueError, match=r"x \(2, 3\), w_fc \(4, 8\), w_proj \(8, 4\)"):
        mlp(Tensor(np.zeros((2, 3))), w_fc, None, w_proj, None)
    with pytest.raises(ValueError, match=r"w_proj \(7, 4\)"):
        mlp(x, w_fc, None, Tensor(np.zeros((7, 4))), None)
    with pytest.raises(ValueError, match=r"b_fc of shape \(4,\), expected \(8,\)"):
        mlp(x, w_fc, Tensor(np.zeros(4)), w_proj, None)
    with pytest.raises(ValueError, match=r"b_proj of shape \(8,\), expected \(4,\)"):
        mlp(x, w_fc, None, w_proj, Tensor(np.zeros(8)))
    with pytest.raises(ValueError, match="approximate"):
        mlp(x, w_fc, None, w_proj, None, approximate="erf")
    with pytest.raises(ValueError, match="int64"):
        mlp(Tensor(np.zeros((2, 4), dtype=np.int64)), w_fc, None, w_proj, None)
