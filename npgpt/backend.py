"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the one module that imports cupy. Everything else asks `get_xp(*arrays)` for the array
module that owns its inputs and writes `xp.exp(x)`, so one op serves both devices.
"""

from __future__ import annotations

import os
import sys

import numpy as np

DEVICES = ("cpu", "cuda")
DTYPES = {"float32": np.float32, "float64": np.float64}

_cupy = None  # the cupy module once it has been imported successfully


def _import_cupy():
    """Import cupy and check that a GPU is there; raise a RuntimeError that says what is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy  # noqa: PLC0415 - the only cupy import in npgpt
    except ImportError as e:
        raise RuntimeError(
            "device 'cuda' needs CuPy, which is not installed: pip install 'npgpt[gpu]' "
            "(or the cupy-cudaXXx wheel matching your CUDA)"
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # cupy raises CUDARuntimeError when no driver is present
        raise RuntimeError(f"device 'cuda' needs an NVIDIA GPU, but CUDA reports none ({e})") from e
    if n < 1:
        raise RuntimeError("device 'cuda' needs an NVIDIA GPU, but CUDA reports none")
    _cupy = cupy
    return cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _import_cupy()
    except RuntimeError:
        return False
    return True


def select_cuda_device(index: int) -> int:
    """Make GPU `index % (number of GPUs)` CuPy's current device for this process (a data-parallel
    rank calls it with its rank on the machine before building its model); returns that GPU's id."""
    cupy = _import_cupy()
    gpu = int(index) % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(gpu).use()
    return gpu


def default_device() -> str:
    """$NPGPT_DEVICE when set, else 'cpu' (not yet checked: resolve_device checks)."""
    return os.environ.get("NPGPT_DEVICE") or "cpu"


def resolve_device(device: str | None = None) -> str:
    """The device to use: the argument, else $NPGPT_DEVICE, else 'cpu'. Checked, never guessed."""
    if device is None:
        device = default_device()
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "cuda":
        _import_cupy()
    return device


def resolve_dtype(dtype) -> np.dtype:
    """'float32' (default) or 'float64', or the matching NumPy dtype."""
    if dtype is None:
        dtype = "float32"
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}: expected one of {tuple(DTYPES)}")
    return np.dtype(DTYPES[name])


def is_cupy_array(a) -> bool:
    """True for a CuPy array, whether or not npgpt has used CUDA yet: an array made by the user
    means cupy is imported, so its type is looked up in sys.modules (never importing cupy here)."""
    if isinstance(a, np.ndarray):
        return False
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(a, cupy.ndarray)


def get_xp(*arrays):
    """The array module (numpy or cupy) that owns these arrays; numpy when none is a cupy array."""
    for a in arrays:
        if is_cupy_array(a):
            return sys.modules["cupy"]
    return np


def xp_for(device: str):
    """The array module for a device name."""
    return _import_cupy() if resolve_device(device) == "cuda" else np


def device_of(a) -> str:
    return "cuda" if is_cupy_array(a) else "cpu"


def to_device(a, device: str):
    """Copy an array to 'cpu' or 'cuda' (no copy when it is already there)."""
    device = resolve_device(device)
    if device == "cuda":
        return _import_cupy().asarray(a)
    return to_numpy(a)


def to_numpy(a) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array (or anything np.asarray takes)."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def scatter_add(target, indices, values) -> None:
    """target[indices] += values, correct when indices repeat (the embedding backward).

    NumPy's `target[idx] += v` keeps only one contribution per repeated index; `add.at`
    accumulates all of them. NumPy and CuPy (13 and later) both have `xp.add.at`: one call; on
    NumPy, rows of values with at least as many indices as target rows (ids that repeat, as in a
    char vocabulary; not GPT-2's 50,257) go through `_scatter_add_sorted` instead.
    """
    xp = get_xp(target)
    rows = xp is np and isinstance(indices, np.ndarray) and indices.ndim == 1 and indices.dtype.kind in "iu"
    rows = (rows and getattr(values, "shape", ())[:1] == indices.shape and values.ndim == target.ndim == 2
            and 0 < target.shape[0] <= indices.size)
    if rows and indices.min() >= 0:  # a negative index and its positive twin would be two runs of one row
        _scatter_add_sorted(target, indices, values)
    else:
        xp.add.at(target, indices, values)


def _scatter_add_sorted(target, indices, values) -> None:
    """target[indices] += values for rows (N, C), by sorting: the indices in a stable order, each
    run of equal ones summed in that order by add.reduceat, one add per distinct row (a speed
    trick: NumPy's add.at walks one index at a time: 5.1 -> 1.3 ms for 768 ids into 65 rows of 384)."""
    order = np.argsort(indices, kind="stable")  # (N,)
    ids = indices[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))  # first row of each run
    target[ids[starts]] += np.add.reduceat(values[order], starts, axis=0)  # distinct rows: no repeats


def cuda_erf(x):
    """erf of a CuPy array, by CuPy's own kernel (npgpt.ops.erf handles NumPy arrays)."""
    import cupyx.scipy.special  # noqa: PLC0415 - lives beside cupy

    return cupyx.scipy.special.erf(x)


def rng(seed: int | None) -> np.random.Generator:
    """A seeded NumPy generator. Weights are drawn from it on the CPU and then moved, so CPU and
    GPU runs start from the same numbers."""
    return np.random.default_rng(seed)


def uniform(generator: np.random.Generator, shape, like):
    """Uniform [0, 1) numbers of `like`'s dtype and device, from a seeded NumPy generator.

    CPU: drawn from `generator` itself in float64, then cast to like's dtype.
    GPU: drawn on the device, so a dropout mask never crosses the bus: `generator` gives one 63-bit
    seed (a host-side draw, no synchronisation), which seeds a CuPy generator for this one array.
    Either way the host generator's state decides every mask, so a run repeats exactly and a
    checkpoint's saved state resumes it; CPU and GPU masks differ for the same seed.
    """
    if is_cupy_array(like):
        seed = int(generator.integers(1 << 63))
        return get_xp(like).random.RandomState(seed).random_sample(shape, dtype=like.dtype)
    return generator.random(shape, dtype=np.float64).astype(like.dtype)
