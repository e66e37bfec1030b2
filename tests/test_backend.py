"""npgpt/backend.py: array modules by type, devices, scatter-add; the ops' CPU-only row blocks."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from npgpt import backend
from npgpt.ops._util import row_blocks


@pytest.fixture
def fake_cupy(monkeypatch):
    """A stand-in `cupy` module in sys.modules, as if the user had imported CuPy and made an array
    before npgpt touched CUDA (npgpt's own cupy import has not run)."""
    mod = types.ModuleType("cupy")

    class ndarray:  # noqa: N801 - CuPy's name
        dtype = np.dtype(np.float32)
        shape = (2,)

    mod.ndarray = ndarray
    monkeypatch.setitem(sys.modules, "cupy", mod)
    return mod


def test_a_cupy_array_is_recognised_by_its_type(fake_cupy):
    a = fake_cupy.ndarray()
    assert backend.is_cupy_array(a)
    assert backend.get_xp(np.ones(2), a) is fake_cupy
    assert backend.device_of(a) == "cuda"
    assert backend.get_xp(np.ones(2)) is np and not backend.is_cupy_array(np.ones(2))


def test_without_cupy_everything_is_numpy(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    assert backend.get_xp(np.ones(2), [1.0], 3.0) is np
    assert backend.device_of(np.ones(2)) == "cpu"


def test_scatter_add_keeps_every_repeated_contribution():
    t = np.zeros((3, 2))
    backend.scatter_add(t, np.array([0, 2, 0, 0]), np.ones((4, 2)))
    np.testing.assert_array_equal(t, [[3, 3], [0, 0], [1, 1]])


def test_row_blocks_cover_all_rows_on_cpu_and_one_block_elsewhere(fake_cupy):
    blocks = row_blocks(np, 10, 7, 20)  # 2 rows of 7 fit in 20
    assert blocks == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert row_blocks(np, 3, 100, 10) == [(0, 1), (1, 2), (2, 3)]  # at least one row per block
    assert row_blocks(fake_cupy, 10, 7, 20) == [(0, 10)]


def test_uniform_on_cpu_draws_from_the_generator_in_float64():
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    u = backend.uniform(g1, (3, 4), np.ones(1, np.float32))
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u, g2.random((3, 4)).astype(np.float32))


def test_importing_every_npgpt_module_imports_no_torch():
    """A standing promise: PyTorch is for tests and reference/ only. (hf_weights imports it inside the
    one function that reads a pytorch_model.bin, as issue 8 asks, and only when that file is read.)"""
    import pkgutil
    import subprocess

    import npgpt

    names = [m.name for m in pkgutil.walk_packages(npgpt.__path__, "npgpt.")]
    code = ("import importlib, sys\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            "bad = sorted(m for m in ('torch', 'transformers', 'hypothesis', 'pytest') if m in sys.modules)\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
