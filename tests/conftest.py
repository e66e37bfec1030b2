"""Shared fixtures: hypothesis profiles, the `xp` fixture (NumPy and the strict CuPy stand-in always,
CuPy where a GPU is; the stand-in's device "strict", tests/strict_device.py, is registered for the
whole test run), and the block-size and thread fixtures that put the CPU's fast paths under the
parity tests (at the end)."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, settings

from tests import strict_device

# Tests never reach the network: huggingface_hub (under transformers) reads this when first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# quick: make test and CI; derandomized, so every run draws the same examples, and no deadline, so a
# slow or busy machine is never a failure. thorough: make test-thorough, random and many more examples.
settings.register_profile(
    "quick", max_examples=100, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

strict_device.enable()


def _cupy_or_skip():
    from npgpt.backend import cuda_available, xp_for

    if not cuda_available():
        pytest.skip("CuPy cases need CuPy and an NVIDIA GPU; none here (make test-gpu on a GPU machine)")
    return xp_for("cuda")


# module scope, so hypothesis @given tests can take it (a function-scoped fixture fails its health check)
@pytest.fixture(scope="module", params=["numpy", "strict", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module an op test runs on: NumPy, the strict CuPy stand-in, or CuPy."""
    if request.param == "numpy":
        import numpy

        return numpy
    if request.param == "strict":
        return strict_device.module
    return _cupy_or_skip()


# --- Block sizes and threads: the CPU's fast paths under the parity tests ---------------------------
# The ops walk row blocks (npgpt/ops/_util.row_blocks), attention walks query rows in chunks, and
# npgpt.parallel hands blocks to a thread pool only above MIN_WORK elements per thread. At the small
# shapes hypothesis draws, each op would run as one block on one thread; "tiny blocks" shrinks every
# knob so those same shapes cross many block and chunk seams, on two threads.
TINY_BLOCKS = {  # (module, constant) -> tiny value; monkeypatch raises if a constant is renamed away
    ("npgpt.ops._util", "MAX_BLOCK_ELEMENTS"): 7,  # caps every op's row-block budget (elements)
    ("npgpt.ops.attention", "_Q_CHUNK"): 2,  # query rows per chunk
    ("npgpt.ops.erf", "BLOCK"): 5,  # float32 erf's flat blocks (exact GELU in float32)
    ("npgpt.ops.erf", "BLOCK64"): 5,  # float64 erf's flat blocks (exact GELU in float64)
    ("npgpt.parallel", "MIN_WORK"): 1,  # any problem goes to the pool
}
TINY_BLOCK_THREADS = 2
_tiny = [0]  # how many tiny_blocks_active() are open (the `threads` fixture wants none)


@contextlib.contextmanager
def tiny_blocks_active():
    """Every block-size knob at its tiny value and the pool at two threads, then all restored."""
    import importlib

    from npgpt import parallel

    mp = pytest.MonkeyPatch()
    _tiny[0] += 1
    try:
        for (module, name), value in TINY_BLOCKS.items():
            mp.setattr(importlib.import_module(module), name, value)  # raising=True: a missing knob fails loudly
        parallel.set_num_threads(TINY_BLOCK_THREADS)
        yield
    finally:
        parallel.set_num_threads(None)
        mp.undo()
        _tiny[0] -= 1


@pytest.fixture(scope="module", params=["default blocks", "tiny blocks"])
def blocks(request):
    """Runs a test (hypothesis ones too: module scope) at npgpt's block sizes and at tiny ones."""
    if request.param == "default blocks":
        yield request.param
        return
    with tiny_blocks_active():
        yield request.param


@pytest.fixture
def tiny_blocks():
    with tiny_blocks_active():
        yield


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    """npgpt.parallel's pool at 1 and at 2 threads, at npgpt's own block sizes."""
    from npgpt import parallel

    # a module-scoped `blocks` fixture stays set up between its tests, so a test of the default sizes
    # in the same module could run under tiny ones: such tests live where `blocks` is not used
    assert not _tiny[0], "tiny blocks are active: move this test out of the module that uses `blocks`"
    parallel.set_num_threads(request.param)
    yield request.param
    parallel.set_num_threads(None)


@pytest.fixture
def walked_blocks(monkeypatch):
    """{op module: most blocks one parallel.run / run_chains / run_serial call walked}, filled as the test runs,
    so a fast-path test can assert its shapes really crossed block seams (and says so when a change
    of block sizes leaves them inside one block)."""
    from npgpt import parallel

    seen: dict[str, int] = {}

    def spy(real):
        def wrapper(fn, blocks, *args, **kwargs):
            blocks = list(blocks)
            module = getattr(fn, "__module__", "?")
            seen[module] = max(seen.get(module, 0), len(blocks))
            return real(fn, blocks, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(parallel, "run", spy(parallel.run))
    monkeypatch.setattr(parallel, "run_serial", spy(parallel.run_serial))
    monkeypatch.setattr(parallel, "run_chains", spy(parallel.run_chains))
    return seen
