"""npgpt/ops/lora.py (the LoRA linear) against reference/ops.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import reference.ops as ref
from npgpt import Tensor, no_grad
from npgpt.gradcheck import check_op
from npgpt.ops.lora import lora_linear
from tests.helpers import assert_close, check_parity


def _args(rng, lead, cin, cout, r, bias=True, dropped=False):
    args = {"x": rng.standard_normal((*lead, cin)), "w": rng.standard_normal((cin, cout)),
            "lora_a": rng.standard_normal((r, cin)), "lora_b": rng.standard_normal((cout, r))}
    if bias:
        args["b"] = rng.standard_normal(cout)
    if dropped:  # an independent stand-in for dropout(x): the op must route its gradient apart from x's
        args["x_drop"] = rng.standard_normal((*lead, cin))
    return args


def _run(args, scale, **kw):
    options = {"scale": scale, **({} if "b" in args else {"b": None})}
    return check_parity(lora_linear, ref.lora_linear, args, options=options, **kw)


@given(lead=st.lists(st.integers(1, 3), max_size=2).map(tuple), cin=st.integers(1, 6), cout=st.integers(1, 6),
       r=st.integers(1, 4), bias=st.booleans(), dropped=st.booleans(), scale=st.sampled_from([0.5, 2.0, 16 / 8 ** 0.5]),
       seed=st.integers(0, 2**16))
@example(lead=(), cin=1, cout=1, r=1, bias=False, dropped=False, scale=1.0, seed=0)
@example(lead=(1, 1), cin=1, cout=1, r=1, bias=True, dropped=True, scale=2.0, seed=0)
@example(lead=(2, 3), cin=4, cout=12, r=8, bias=True, dropped=False, scale=2.0, seed=1)  # r larger than cin
def test_lora_linear_parity(xp, lead, cin, cout, r, bias, dropped, scale, seed):
    rng = np.random.default_rng(seed)
    _run(_args(rng, lead, cin, cout, r, bias, dropped), scale, xp=xp, seed=seed)


def test_lora_linear_float32(xp):
    _run(_args(np.random.default_rng(3), (2, 5), 8, 6, 4), 2.0, dtype="float32", xp=xp)


@pytest.mark.parametrize("grads", [("lora_a", "lora_b"), ("x",), ("lora_b",), ("x_drop", "lora_a"), ("w", "b")])
def test_lora_linear_partial_gradients(xp, grads):
    """The frozen base: only the adapters (or only x) asked for, as training with LoRA asks."""
    _run(_args(np.random.default_rng(4), (2, 3), 4, 5, 2, dropped=True), 1.5, xp=xp, grads=grads)


def test_lora_linear_is_linear_when_b_is_zero(xp):
    """PEFT's start: B = 0, so the layer is the base layer exactly (bit for bit)."""
    rng = np.random.default_rng(5)
    a = _args(rng, (2, 3), 4, 5, 2)
    a["lora_b"][:] = 0.0
    y = lora_linear(*(Tensor(xp.asarray(a[k])) for k in ("x", "w", "b", "lora_a", "lora_b")), 2.0)
    from npgpt.ops.matrix import linear
    base = linear(Tensor(xp.asarray(a["x"])), Tensor(xp.asarray(a["w"])), Tensor(xp.asarray(a["b"])))
    np.testing.assert_array_equal(y.numpy(), base.numpy())


def test_lora_linear_no_grad_equals_recorded():
    a = _args(np.random.default_rng(6), (2, 3), 4, 5, 3)
    names = ("x", "w", "b", "lora_a", "lora_b")
    recorded = lora_linear(*(Tensor(a[k], requires_grad=True) for k in names), 2.0)
    with no_grad():
        plain = lora_linear(*(Tensor(a[k]) for k in names), 2.0)
    np.testing.assert_array_equal(plain.numpy(), recorded.numpy())


def test_lora_linear_finite_differences():
    a = _args(np.random.default_rng(7), (2, 2), 3, 4, 2, dropped=True)
    r = check_op(lambda x, w, b, lora_a, lora_b, x_drop: lora_linear(x, w, b, lora_a, lora_b, 1.7, x_drop), a,
                 name="lora_linear")
    assert r.passed and r.checks > 0, r


def test_lora_linear_matches_peft_layer():
    """The twin is PEFT's own layer: a peft LoRA Linear (fan_in_fan_out off) around nn.Linear(W^T)."""
    peft = pytest.importorskip("peft")
    rng = np.random.default_rng(8)
    a = _args(rng, (2, 3), 5, 4, 3)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(a["w"].T))
        net[0].bias.copy_(torch.tensor(a["b"]))
    layer = peft.get_peft_model(net, peft.LoraConfig(r=3, lora_alpha=6, target_modules=["0"]))
    lora = layer.base_model.model[0]
    with torch.no_grad():
        lora.lora_A["default"].weight.copy_(torch.tensor(a["lora_a"]))
        lora.lora_B["default"].weight.copy_(torch.tensor(a["lora_b"]))
    expected = layer(torch.tensor(a["x"]))
    y = lora_linear(*(Tensor(a[k]) for k in ("x", "w", "b", "lora_a", "lora_b")), 6 / 3)
    assert_close(y.data, expected, tol=1e-12)


def test_lora_linear_bad_shapes():
    x, w = Tensor(np.zeros((2, 4))), Tensor(np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"lora_A \(2, 3\) and lora_B \(5, 2\) must be \(r, 4\)"):
        lora_linear(x, w, None, Tensor(np.zeros((2, 3))), Tensor(np.zeros((5, 2))), 1.0)
    with pytest.raises(ValueError, match=r"lora_B \(4, 2\)"):
        lora_linear(x, w, None, Tensor(np.zeros((2, 4))), Tensor(np.zeros((4, 2))), 1.0)
    with pytest.raises(ValueError, match=r"x \(2, 3\) @ w \(4, 5\)"):
        lora_linear(Tensor(np.zeros((2, 3))), w, None, Tensor(np.zeros((2, 3))), Tensor(np.zeros((5, 2))), 1.0)
    with pytest.raises(ValueError, match="scale must be a number"):
        lora_linear(x, w, None, Tensor(np.zeros((2, 4))), Tensor(np.zeros((5, 2))), "2")
