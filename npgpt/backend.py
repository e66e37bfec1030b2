"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the one module that imports cupy and the one place the CPU and the GPU differ. Everything
else asks `get_xp(*arrays)` for the array module that owns its inputs and writes `xp.exp(x)`, so one
op serves both devices; where the two must differ, the difference is one named function here
(blocks_for_cache, reuses_scratch, uses_thread_pool, matmul_into, device_erf, reading_is_free).

Tests can register a *test device* (register_test_device): a CuPy-like array module that takes every
branch CuPy takes here, so the GPU path runs on machines without a GPU (tests/strict_device.py).
"""

from __future__ import annotations

import os
import sys

import numpy as np

DEVICES = ("cpu", "cuda")
DTYPES = {"float32": np.float32, "float64": np.float64}

_cupy = None  # the cupy module once it has been imported successfully
_test_devices: dict = {}  # name -> (array module, erf) registered by tests: see register_test_device


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


def register_test_device(name: str, xp, erf) -> None:
    """Tests only: make `name` a device whose arrays are `xp.ndarray` and whose array module is `xp`,
    a CuPy-like module (tests/strict_device.py: NumPy underneath, CuPy's refusals and 0-d results).
    Its arrays take every branch a CuPy array takes; `erf` stands in for cupyx's erf kernel."""
    if name in DEVICES:
        raise ValueError(f"{name!r} is a real device; a test device needs another name")
    _test_devices[name] = (xp, erf)


def unregister_test_device(name: str) -> None:
    """Undo register_test_device (no error when `name` is not registered)."""
    _test_devices.pop(name, None)


def devices() -> tuple[str, ...]:
    """Every device name this process accepts: DEVICES plus any registered test device."""
    return DEVICES + tuple(_test_devices)


def default_device() -> str:
    """$NPGPT_DEVICE when set, else 'cpu' (not yet checked: resolve_device checks)."""
    return os.environ.get("NPGPT_DEVICE") or "cpu"


def resolve_device(device: str | None = None) -> str:
    """The device to use: the argument, else $NPGPT_DEVICE, else 'cpu'. Checked, never guessed."""
    if device is None:
        device = default_device()
    if device not in devices():
        raise ValueError(f"unknown device {device!r}: expected one of {devices()}")
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


def _device_module(a):
    """The array module of a device array (CuPy's, or a test device's); None for anything else."""
    if isinstance(a, np.ndarray):
        return None
    if is_cupy_array(a):
        return sys.modules["cupy"]
    for xp, _ in _test_devices.values():
        if isinstance(a, xp.ndarray):
            return xp
    return None


def is_device_array(a) -> bool:
    """True for an array on a device (CuPy, or a registered test device standing in for it)."""
    return _device_module(a) is not None


def get_xp(*arrays):
    """The array module (numpy, cupy or a test device's) that owns these arrays; numpy when none
    is a device array."""
    for a in arrays:
        xp = _device_module(a)
        if xp is not None:
            return xp
    return np


def xp_for(device: str):
    """The array module for a device name."""
    device = resolve_device(device)
    if device == "cuda":
        return _import_cupy()
    return _test_devices[device][0] if device in _test_devices else np


def device_of(a) -> str:
    xp = _device_module(a)
    if xp is None:
        return "cpu"
    for name, (module, _) in _test_devices.items():
        if xp is module:
            return name
    return "cuda"


def to_device(a, device: str):
    """Copy an array to a device (no copy when it is already there)."""
    device = resolve_device(device)
    if device == "cpu":
        return to_numpy(a)
    if is_device_array(a) and device_of(a) != device:
        a = to_numpy(a)
    return xp_for(device).asarray(a)


def to_numpy(a) -> np.ndarray:
    """A NumPy array from a NumPy or device array (or anything np.asarray takes)."""
    if is_device_array(a):
        return a.get()
    return np.asarray(a)


# --- where the CPU and the GPU differ: one function per difference --------------------------------
def reading_is_free(device: str) -> bool:
    """Whether reading a number off `device` costs nothing (the CPU), or waits for the device to
    finish its queued work (a GPU: read such numbers in batches, at log steps)."""
    return device == "cpu"


def blocks_for_cache(xp) -> bool:
    """Whether an op should walk cache-sized blocks (rows, query chunks) of arrays of module `xp`:
    yes on the CPU; on a GPU an op is a few whole-array kernels, not many small launches."""
    return xp is np


def reuses_scratch(xp) -> bool:
    """Whether work arrays are kept per thread and reused (the CPU: a reused buffer is in cache and
    costs no page faults); on a GPU the memory pool already recycles, so a fresh array is asked for."""
    return xp is np


def uses_thread_pool(xp) -> bool:
    """Whether independent pieces of work (one per parameter) go to npgpt's CPU thread pool; on a
    GPU they are queued one after the other on the device."""
    return xp is np


def matmul_into(a, b, out) -> None:
    """out[...] = a @ b, where out may be a strided view into a larger array. NumPy writes the
    product straight there (no copy afterwards); CuPy's matmul `out=` is not relied on for
    non-contiguous views, so the product is made fresh and copied in."""
    xp = get_xp(a, b, out)
    if xp is np:
        xp.matmul(a, b, out=out)
    else:
        out[...] = a @ b


def device_erf(x):
    """erf of a device array by the device's own kernel (cupyx's for CuPy); None for a NumPy array,
    which npgpt.ops.erf computes itself."""
    xp = _device_module(x)
    if xp is None:
        return None
    for module, erf in _test_devices.values():
        if xp is module:
            return erf(x)
    import cupyx.scipy.special  # noqa: PLC0415 - lives beside cupy

    return cupyx.scipy.special.erf(x)


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


def rng(seed: int | None) -> np.random.Generator:
    """A seeded NumPy generator. Weights are drawn from it on the CPU and then moved, so CPU and
    GPU runs start from the same numbers."""
    return np.random.default_rng(seed)


def uniform(generator: np.random.Generator, shape, like):
    """Uniform [0, 1) numbers of `like`'s dtype and device, from a seeded NumPy generator.

    CPU: drawn from `generator` itself in float64, then cast to like's dtype.
    GPU (any device): drawn on the device, so a dropout mask never crosses the bus: `generator` gives one 63-bit
    seed (a host-side draw, no synchronisation), which seeds a CuPy generator for this one array.
    Either way the host generator's state decides every mask, so a run repeats exactly and a
    checkpoint's saved state resumes it; CPU and GPU masks differ for the same seed.
    """
    if is_device_array(like):
        seed = int(generator.integers(1 << 63))
        return get_xp(like).random.RandomState(seed).random_sample(shape, dtype=like.dtype)
    return generator.random(shape, dtype=np.float64).astype(like.dtype)
