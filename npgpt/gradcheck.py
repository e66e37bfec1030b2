"""Finite-difference gradient checks for every op, in float64, with no PyTorch.

For an op y = f(x) and a fixed random projection w, the scalar L(x) = <w, f(x)> has the gradient
g = backward(w). Two checks compare g with central differences:

  directional   along random unit directions d (one input at a time):
                    (L(x + h d) - L(x - h d)) / 2h   vs   <g, d>
  full Jacobian for tiny inputs, element by element: column j from (f(x + h e_j) - f(x - h e_j)) / 2h,
                row i from backward(e_i); this also catches gradient that leaks to the wrong element.

Error analysis (float64, eps = 2.2e-16). The central difference of a smooth L has
  truncation   h^2 / 6 * |L'''|      (the h^2 term of the Taylor series; the h term cancels)
  rounding     ~ eps * S / h         (S = sum |w * y|: the size of what L adds up; each evaluation
                                      of L is off by about eps * S, and the difference divides by 2h)
The sum is smallest near h = (3 eps S / |L'''|)^(1/3), about 1e-5 for S and L''' of order 1, where
both terms are ~1e-11. We take H = 1e-5. The registry's inputs are O(1), so S and |L'''| stay below
~1e3 and the expected error below ~1e-8; RTOL = 1e-6 leaves a margin of 100 on that, while a wrong
derivation (a missing term, a wrong factor, a transposed product) is off by 1e-3 or (far) more.
The test is err <= RTOL * max(1, |<g, d>|) + 10 * eps * S / h, so a caller's op with large values
is not failed for rounding alone. The reported rel error is err / max(1, |<g, d>|), the measure
tests/helpers.py uses: absolute for values up to 1, relative beyond.

Ops with kinks (max) and random masks (dropout) are checked away from the kinks (distinct random
values, a gap far above h) and with the generator reseeded on every call, so the mask is fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import functional as F
from .tensor import Tensor

EPS = float(np.finfo(np.float64).eps)
H = 1e-5
RTOL = 1e-6
JACOBIAN_MAX_IN = 48  # full Jacobian for inputs of at most this many elements ...
JACOBIAN_MAX_OUT = 256  # ... and outputs of at most this many


@dataclass
class CheckResult:
    name: str
    shapes: str
    worst_abs: float
    worst_rel: float
    checks: int
    passed: bool
    note: str = ""


def _outputs(y) -> list:
    return list(y) if isinstance(y, (list, tuple)) else [y]


def _call(fn, arrays: dict, wrt: tuple, grad: bool):
    tensors = {k: (Tensor(a, requires_grad=grad and k in wrt) if a.dtype.kind == "f" else a) for k, a in arrays.items()}
    return tensors, _outputs(fn(**tensors))


def _flat(ys) -> np.ndarray:
    return np.concatenate([np.asarray(y.data, dtype=np.float64).reshape(-1) for y in ys])


def check_op(fn, inputs: dict, *, wrt=None, name: str = "op", n_dirs: int = 3, h: float = H,
             rtol: float = RTOL, jacobian: bool | None = None, seed: int = 0) -> CheckResult:
    """Check fn's hand-written gradients against central differences.

    fn(**tensors) returns a Tensor or a list of Tensors. inputs: name -> array; floating arrays are
    cast to float64 and those named in `wrt` (default: all floating ones) are differentiated;
    integer arrays (ids, targets) pass to fn as they are. jacobian: None = when the input is tiny.
    """
    arrays = {k: (np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a)) for k, a in inputs.items()}
    wrt = tuple(k for k, a in arrays.items() if a.dtype.kind == "f") if wrt is None else tuple(wrt)
    shapes = " ".join(f"{k}{tuple(a.shape)}" for k, a in arrays.items())
    r = np.random.default_rng(seed)

    tensors, ys = _call(fn, arrays, wrt, grad=True)
    ws = [r.standard_normal(y.shape) for y in ys]
    for y, w in zip(ys, ws):
        y.backward(w)
    grads = {k: (tensors[k].grad if tensors[k].grad is not None else np.zeros_like(arrays[k])) for k in wrt}

    def L(k, x):
        _, out = _call(fn, {**arrays, k: x}, wrt, grad=False)
        return sum(float(np.sum(w * o.data)) for w, o in zip(ws, out))

    S = sum(float(np.sum(np.abs(w * y.data))) for w, y in zip(ws, ys))
    worst_abs = worst_rel = 0.0
    passed, checks = True, 0

    def record(err, scale, allowed):
        nonlocal worst_abs, worst_rel, passed, checks
        err = float(err) if np.isfinite(err) else math.inf
        worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, err / max(1.0, scale))
        passed = passed and err <= allowed
        checks += 1

    for k in wrt:
        x = arrays[k]
        for _ in range(n_dirs):
            d = r.standard_normal(x.shape)
            d /= np.linalg.norm(d) or 1.0
            num = (L(k, x + h * d) - L(k, x - h * d)) / (2 * h)
            ana = float(np.sum(grads[k] * d))
            record(abs(num - ana), abs(ana), rtol * max(1.0, abs(ana)) + 10 * EPS * S / h)

        n_out = sum(y.size for y in ys)
        if jacobian or (jacobian is None and x.size <= JACOBIAN_MAX_IN and n_out <= JACOBIAN_MAX_OUT):
            J_num = np.empty((n_out, x.size))
            for j in range(x.size):
                e = np.zeros(x.size)
                e[j] = h
                e = e.reshape(x.shape)
                J_num[:, j] = (_flat(_call(fn, {**arrays, k: x + e}, wrt, False)[1]) - _flat(_call(fn, {**arrays, k: x - e}, wrt, False)[1])) / (2 * h)
            J_ana = np.empty_like(J_num)
            sizes = [y.size for y in ys]
            for i in range(n_out):  # one backward per output element, each on a fresh graph
                tensors_i, ys_i = _call(fn, arrays, wrt, grad=True)
                onehot = np.zeros(n_out)
                onehot[i] = 1.0
                for y, part in zip(ys_i, np.split(onehot, np.cumsum(sizes)[:-1])):
                    y.backward(part.reshape(y.shape))
                g = tensors_i[k].grad
                J_ana[i] = 0.0 if g is None else np.asarray(g).reshape(-1)
            scale = float(np.max(np.abs(J_ana), initial=0.0))
            ymax = float(np.max(np.abs(_flat(ys)), initial=0.0))
            record(np.max(np.abs(J_num - J_ana), initial=0.0), scale, rtol * max(1.0, scale) + 10 * EPS * ymax / h)
    return CheckResult(name, shapes, worst_abs, worst_rel, checks, passed)


def _seeded(seed: int = 0):
    """A fresh generator on every call, so a dropout mask is the same in every evaluation."""
    return np.random.default_rng(seed)


def _cases(r):
    """(label, op name in npgpt.functional, fn, inputs, wrt) for every op: small shapes, O(1) values."""
    n = r.standard_normal
    pos = lambda *s: 0.5 + r.random(s)  # noqa: E731 - away from 0 for log, div, fractional pow
    ids = np.array([[1, 0, 3], [3, 3, 2]])
    tg = np.array([[2, -100, 0], [4, 4, 1]])
    return [
        ("add", "add", F.add, {"a": n((3, 4)), "b": n((4,))}, None),
        ("sub", "sub", F.sub, {"a": n((2, 3)), "b": n((2, 1))}, None),
        ("mul", "mul", F.mul, {"a": n((3, 4)), "b": n((3, 1))}, None),
        ("div", "div", F.div, {"a": n((3, 4)), "b": pos(4)}, None),
        ("neg", "neg", F.neg, {"x": n((3, 4))}, None),
        ("pow 1.7", "pow", lambda x: F.pow(x, 1.7), {"x": pos(3, 4)}, None),
        ("pow 3", "pow", lambda x: F.pow(x, 3), {"x": n((3, 4))}, None),
        ("exp", "exp", F.exp, {"x": n((3, 4))}, None),
        ("log", "log", F.log, {"x": pos(3, 4)}, None),
        ("tanh", "tanh", F.tanh, {"x": n((3, 4))}, None),
        ("sum axis=1", "sum", lambda x: F.sum(x, axis=1), {"x": n((2, 3, 4))}, None),
        ("sum all", "sum", F.sum, {"x": n((2, 3))}, None),
        ("mean axes=(0,2)", "mean", lambda x: F.mean(x, axis=(0, 2), keepdims=True), {"x": n((2, 3, 4))}, None),
        ("max axis=-1", "max", lambda x: F.max(x, axis=-1), {"x": n((3, 5))}, None),
        ("matmul batched", "matmul", F.matmul, {"a": n((2, 3, 4)), "b": n((4, 5))}, None),
        ("matmul vector", "matmul", F.matmul, {"a": n((4,)), "b": n((4, 3))}, None),
        ("linear", "linear", F.linear, {"x": n((2, 3, 4)), "w": n((4, 5)), "b": n((5,))}, None),
        ("linear no bias", "linear", F.linear, {"x": n((3, 4)), "w": n((4, 2))}, None),
        ("lora_linear", "lora_linear", lambda x, w, b, a, bm: F.lora_linear(x, w, b, a, bm, 2.5),
         {"x": n((2, 3, 4)), "w": n((4, 5)), "b": n((5,)), "a": n((2, 4)), "bm": n((5, 2))}, None),
        ("lora_linear dropout", "lora_linear", lambda x, w, a, bm: F.lora_linear(
            x, w, None, a, bm, 0.5, F.dropout(x, 0.3, True, generator=_seeded())),
         {"x": n((3, 4)), "w": n((4, 3)), "a": n((3, 4)), "bm": n((3, 3))}, None),
        ("reshape", "reshape", lambda x: F.reshape(x, (6, 2)), {"x": n((3, 4))}, None),
        ("transpose", "transpose", lambda x: F.transpose(x, (1, 0, 2)), {"x": n((2, 3, 4))}, None),
        ("getitem slice", "getitem", lambda x: F.getitem(x, (slice(None), slice(1, 3))), {"x": n((3, 4))}, None),
        ("getitem repeats", "getitem", lambda x: F.getitem(x, np.array([0, 2, 0, 0])), {"x": n((3, 4))}, None),
        ("split", "split", lambda x: F.split(x, [1, 3], axis=1), {"x": n((3, 4))}, None),
        ("concatenate", "concatenate", lambda a, b: F.concatenate([a, b], axis=1), {"a": n((3, 2)), "b": n((3, 4))}, None),
        ("embedding (table)", "embedding", lambda ids, w: F.embedding(ids, w), {"ids": ids, "w": n((5, 3))}, ("w",)),
        ("position_embedding", "position_embedding", lambda wpe: F.position_embedding(3, wpe), {"wpe": n((5, 4))}, None),
        ("layer_norm", "layer_norm", lambda x, w, b: F.layer_norm(x, w, b), {"x": n((2, 3, 5)), "w": n((5,)), "b": n((5,))}, None),
        ("layer_norm no bias", "layer_norm", lambda x, w: F.layer_norm(x, w), {"x": n((4, 3)), "w": n((3,))}, None),
        ("rms_norm", "rms_norm", lambda x, w: F.rms_norm(x, w, 1e-5), {"x": n((2, 3, 5)), "w": n((5,))}, None),
        ("rms_norm over heads", "rms_norm", lambda x, w: F.rms_norm(x, w), {"x": n((1, 2, 3, 4)), "w": n((4,))}, None),
        ("rope", "rope", lambda x: F.rope(x, *F.rope_cos_sin(np.arange(2, 5), F.rope_inv_freq(6), "float64")),
         {"x": n((2, 2, 3, 6))}, None),
        ("rope head size 2", "rope", lambda x: F.rope(x, *F.rope_cos_sin(np.arange(7, 9), F.rope_inv_freq(2), "float64")),
         {"x": n((1, 3, 2, 2))}, None),
        ("gelu tanh", "gelu", lambda x: F.gelu(x, approximate="tanh"), {"x": 2 * n((3, 4))}, None),
        ("gelu exact", "gelu", lambda x: F.gelu(x, approximate="none"), {"x": 2 * n((3, 4))}, None),
        ("softmax axis=-1", "softmax", lambda x: F.softmax(x, axis=-1), {"x": n((3, 4))}, None),
        ("softmax axis=0", "softmax", lambda x: F.softmax(x, axis=0), {"x": n((3, 4))}, None),
        ("dropout p=0.3", "dropout", lambda x: F.dropout(x, 0.3, True, generator=_seeded()), {"x": n((4, 5))}, None),
        ("mlp tanh", "mlp", lambda x, w_fc, b_fc, w_proj, b_proj: F.mlp(x, w_fc, b_fc, w_proj, b_proj),
         {"x": n((2, 2, 3)), "w_fc": n((3, 8)), "b_fc": n((8,)), "w_proj": n((8, 3)), "b_proj": n((3,))}, None),
        ("mlp exact", "mlp", lambda x, w_fc, b_fc, w_proj, b_proj: F.mlp(x, w_fc, b_fc, w_proj, b_proj, approximate="none"),
         {"x": n((2, 3)), "w_fc": n((3, 4)), "b_fc": n((4,)), "w_proj": n((4, 3)), "b_proj": n((3,))}, None),
        ("swiglu_mlp", "swiglu_mlp", lambda x, w_gate, w_up, w_down: F.swiglu_mlp(x, w_gate, w_up, w_down),
         {"x": n((2, 2, 3)), "w_gate": n((3, 5)), "w_up": n((3, 5)), "w_down": n((5, 3))}, None),
        ("swiglu_mlp biases", "swiglu_mlp", lambda x, w_gate, w_up, w_down, b_gate, b_up, b_down:
         F.swiglu_mlp(x, w_gate, w_up, w_down, b_gate, b_up, b_down),
         {"x": n((2, 3)), "w_gate": n((3, 4)), "w_up": n((3, 4)), "w_down": n((4, 2)), "b_gate": n((4,)), "b_up": n((4,)),
          "b_down": n((2,))}, None),
        ("attention", "attention", lambda qkv: F.attention(qkv, 2), {"qkv": n((1, 3, 12))}, None),
        ("attention B=2 NH=3", "attention", lambda qkv: F.attention(qkv, 3), {"qkv": n((2, 5, 18))}, None),
        ("attention dropout", "attention", lambda qkv: F.attention(qkv, 2, 0.3, True, _seeded()), {"qkv": n((2, 4, 12))}, None),
        ("gqa", "grouped_query_attention", lambda q, k, v: F.grouped_query_attention(q, k, v),
         {"q": n((1, 4, 3, 2)), "k": n((1, 2, 3, 2)), "v": n((1, 2, 3, 2))}, None),
        ("gqa MQA B=2", "grouped_query_attention", lambda q, k, v: F.grouped_query_attention(q, k, v),
         {"q": n((2, 3, 4, 3)), "k": n((2, 1, 4, 3)), "v": n((2, 1, 4, 3))}, None),
        ("gqa dropout", "grouped_query_attention", lambda q, k, v: F.grouped_query_attention(q, k, v, 0.3, True, _seeded()),
         {"q": n((1, 4, 4, 2)), "k": n((1, 2, 4, 2)), "v": n((1, 2, 4, 2))}, None),
        ("cross_entropy", "cross_entropy", lambda logits: F.cross_entropy(logits, tg), {"logits": 2 * n((2, 3, 5))}, None),
    ]


# Names in npgpt.functional that take no differentiable input, with the reason they are not checked.
EXEMPT = {"sinusoidal_positions": "a constant table of T and C: nothing to differentiate",
          "rope_inv_freq": "constant inverse frequencies of the rope config: nothing to differentiate",
          "rope_cos_sin": "constant cos/sin tables of positions: nothing to differentiate"}


def op_names() -> list[str]:
    """The public functions of npgpt.functional: the ops run_all must cover."""
    return sorted(n for n in vars(F) if not n.startswith("_") and callable(getattr(F, n)) and n not in EXEMPT)


def run_all(seed: int = 0, only=None) -> list[CheckResult]:
    """Check every op of npgpt.functional; an op without a registry entry fails, and so does a
    registry entry whose op is missing from npgpt.functional."""
    cases = _cases(np.random.default_rng(seed))
    covered = {c[1] for c in cases}
    unknown = set(only or ()) - covered - {c[0] for c in cases} - set(op_names())
    if unknown:
        raise ValueError(f"gradcheck: unknown op(s) {sorted(unknown)}; known: {sorted(covered | set(op_names()))}")
    results = []
    for label, op, fn, inputs, wrt in cases:
        if only and op not in only and label not in only:
            continue
        if not hasattr(F, op):
            results.append(CheckResult(label, "", math.inf, math.inf, 0, False, "missing from npgpt.functional"))
            continue
        try:
            results.append(check_op(fn, inputs, wrt=wrt, name=label, seed=seed))
        except Exception as e:  # a broken op is a failed row, not a crashed table
            results.append(CheckResult(label, "", math.inf, math.inf, 0, False, f"raised {type(e).__name__}: {e}"))
    for op in op_names():
        if op not in covered and (not only or op in only):
            results.append(CheckResult(op, "", math.inf, math.inf, 0, False, "no gradcheck entry: add one to _cases"))
    return results


def format_table(results: list[CheckResult]) -> str:
    rows = [("op", "shapes", "worst abs", "worst rel", "checks", "result")]
    for c in results:
        verdict = "PASS" if c.passed else "FAIL"
        if c.note:
            verdict = ("SKIP" if c.passed else "FAIL") + f" ({c.note})"
        rows.append((c.name, c.shapes, f"{c.worst_abs:.1e}", f"{c.worst_rel:.1e}", str(c.checks), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    failed = sum(not c.passed for c in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed (float64, h = {H:g}, rtol = {RTOL:g})")
    return "\n".join(lines)
