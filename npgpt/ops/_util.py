"""Small helpers shared by the ops."""

from __future__ import annotations

from .. import parallel
from ..backend import blocks_for_cache


def unbroadcast(grad, shape: tuple[int, ...]):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting.

    Broadcasting copies an input along new leading axes and along axes of size 1, so the input's
    gradient is the sum over those copies.
    """
    if tuple(grad.shape) == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    if lead:
        grad = grad.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """axis (None, int or tuple) as a sorted tuple of non-negative axes, checked against ndim."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor of {ndim} dimensions")
        out.append(a % max(ndim, 1))
    return tuple(sorted(set(out)))


def sum_rows(xp, a):
    """sum_rows(a) = a.sum(axis=0) for a 2-D a, as ones @ a (a speed trick: a matrix-vector product
    runs on the BLAS's threads, a.sum(axis=0) on one core; its bits do not depend on the thread count)."""
    return xp.ones(a.shape[0], dtype=a.dtype) @ a


def check_float(name: str, *arrays) -> None:
    """Raise ValueError unless every array is floating point (the ops differentiate floats only)."""
    for a in arrays:
        if a.dtype.kind != "f":
            raise ValueError(f"{name} needs floating-point inputs, got dtype {a.dtype} (shape {tuple(a.shape)})")


# None here; tests set it small (tests/conftest.py, tiny blocks) so a few-element array walks many
# row blocks and the parity suite checks the block seams cheaply. Read at call time; nothing in npgpt sets it.
MAX_BLOCK_ELEMENTS: int | None = None


def row_blocks(xp, n: int, per_row: int, budget: int) -> list[tuple[int, int]]:
    """(i0, i1) ranges over n rows, each about `budget` elements (at least one row; at most
    MAX_BLOCK_ELEMENTS when that is set), so a block's temporaries stay in a CPU core's cache.
    A CPU strategy only: for CuPy arrays one range covers all rows, since on the GPU an op should be
    a few whole-array kernels, not many small launches."""
    if not blocks_for_cache(xp):
        return [(0, n)]
    if MAX_BLOCK_ELEMENTS is not None:
        budget = min(budget, MAX_BLOCK_ELEMENTS)
    step = max(1, budget // max(per_row, 1))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def in_row_blocks(xp, rows, n: int, per_row: int, budget: int) -> list:
    """[rows(i0, i1) for each row block of an (n, per_row) array] (row_blocks of `budget` elements),
    each thread walking one contiguous run of the blocks (parallel.run_chains: one GIL hand-off per
    thread, not per block); results in block order, so sums over them do not depend on the threads."""
    return parallel.run_chains(rows, row_blocks(xp, n, per_row, budget), n * per_row)
