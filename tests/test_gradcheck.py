"""npgpt/gradcheck.py and the `npgpt gradcheck` command."""

from __future__ import annotations

import numpy as np
import pytest

import npgpt.functional as F
from npgpt.cli import main
from npgpt.function import Function
from npgpt.gradcheck import _cases, check_op, op_names, run_all


class Square(Function):
    """y = x^2 with dx = factor * 2x * dy: correct for factor 1, broken otherwise."""

    factor = 1.0

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dy):
        return (self.factor * 2 * self.x * dy,)


class SquareMissingTwo(Square):
    factor = 0.5


class SquareSlightlyOff(Square):
    factor = 1.0 + 1e-4


class CumsumForgetsLeak(Function):
    """y = cumsum(x); the broken backward returns dy itself instead of the reversed cumsum of dy."""

    def forward(self, x):
        return np.cumsum(x, axis=-1)

    def backward(self, dy):
        return (dy,)


def test_every_op_passes():
    results = run_all()
    failed = [(r.name, r.worst_rel, r.note) for r in results if not r.passed]
    skipped = [r.name for r in results if r.note]
    assert not failed, failed
    assert not skipped, f"ops missing from npgpt.functional: {skipped}"
    assert all(r.checks > 0 for r in results)


def test_every_functional_op_has_an_entry():
    covered = {c[1] for c in _cases(np.random.default_rng(0))}
    assert set(op_names()) <= covered, set(op_names()) - covered
    for core in ("add", "mul", "div", "pow", "exp", "log", "tanh", "sum", "mean", "max", "matmul", "linear",
                 "reshape", "transpose", "getitem", "concatenate", "attention", "cross_entropy"):
        assert core in op_names()


def test_correct_op_passes_and_broken_ones_fail():
    x = {"x": np.random.default_rng(0).standard_normal((3, 4))}
    assert check_op(lambda x: Square.apply(x), x).passed
    bad = check_op(lambda x: SquareMissingTwo.apply(x), x)
    assert not bad.passed and bad.worst_rel > 0.1
    slight = check_op(lambda x: SquareSlightlyOff.apply(x), x)  # a 1e-4 relative error is far above the tolerance
    assert not slight.passed and 1e-6 < slight.worst_rel < 1e-2


@pytest.mark.parametrize("jacobian", [True, False])
def test_gradient_sent_to_the_wrong_element_is_caught(jacobian):
    x = {"x": np.random.default_rng(1).standard_normal((2, 5))}
    res = check_op(lambda x: CumsumForgetsLeak.apply(x), x, jacobian=jacobian, n_dirs=0 if jacobian else 3)
    assert res.checks > 0 and not res.passed


def test_multiple_outputs_and_integer_inputs():
    r = np.random.default_rng(2)
    assert check_op(lambda x: F.split(x, [2, 1, 3], axis=-1), {"x": r.standard_normal((2, 6))}).passed
    res = check_op(lambda logits, targets: F.cross_entropy(logits, targets),
                   {"logits": r.standard_normal((4, 3)), "targets": np.array([0, 2, -100, 1])})
    assert res.passed and "targets(4,)" in res.shapes


def test_main_gradcheck_prints_the_table(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["op", "shapes"]
    for op in ("attention", "cross_entropy", "matmul", "layer_norm", "dropout"):
        assert op in out
    assert "FAIL" not in out and "0 failed" in out


def test_main_gradcheck_fails_on_a_broken_op(capsys, monkeypatch):
    monkeypatch.setattr(F, "tanh", lambda x: SquareMissingTwo.apply(x))
    assert main(["gradcheck", "--only", "tanh"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_main_rejects_unknown_ops(capsys):
    assert main(["gradcheck", "--only", "no_such_op"]) == 2
    assert "no_such_op" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
