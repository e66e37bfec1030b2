"""npgpt/ops/erf.py: erf in float64 (against mpmath at 30 digits) and float32 (against torch in float64)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import torch

from npgpt.ops.erf import erf


def test_erf_float64_accuracy():
    x = np.concatenate([np.linspace(-7, 7, 20001), np.geomspace(1e-300, 6, 500), -np.geomspace(1e-300, 6, 500)])
    y = erf(x)
    assert y.dtype == np.float64 and y.shape == x.shape
    # The reference is erf to 30 digits (mpmath, which torch's sympy dependency installs), not
    # torch.special.erf: that once disagreed by 3e-11 relative in one fresh-venv run of the suite.
    mpmath.mp.dps = 30
    expected = np.array([float(mpmath.erf(mpmath.mpf(float(v)))) for v in x])
    rel = np.abs(y - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    assert rel.max() <= 1e-15
    assert erf(np.float32([0.5])).dtype == np.float32
    assert erf(np.array(1.0)).shape == () and float(erf(np.array(1.0))) == math.erf(1.0)
    np.testing.assert_array_equal(erf(np.array([np.inf, -np.inf])), [1.0, -1.0])
    z = erf(np.array([np.nan, 0.0, -0.0, 6.0, -6.5]))
    assert np.isnan(z[0]) and list(z[1:]) == [0.0, 0.0, 1.0, -1.0] and np.signbit(z[2])


def test_erf_float64_walks_blocks_with_the_same_bits():
    """The float64 table walk gives the same bits in one block and in blocks of 5 (its scratch is
    reused from block to block), on an array written in place."""
    import npgpt.ops.erf as E

    x = np.random.default_rng(2).uniform(-7, 7, 1003)
    whole = erf(x)
    saved = E.BLOCK64
    try:
        E.BLOCK64 = 5
        y = x.copy()
        erf(y, out=y)
    finally:
        E.BLOCK64 = saved
    np.testing.assert_array_equal(y, whole)


def test_erf_float32_accuracy():
    """The vectorised float32 erf: absolute error below 3.5e-8 everywhere (a quarter of float32's
    spacing at 1), relative error below 5e-7 (a few ulps) down to the smallest normals, odd in the
    sign of zero, and NaN in, NaN out."""
    x64 = np.concatenate([np.linspace(-9, 9, 400001), np.geomspace(1e-38, 9, 20000), -np.geomspace(1e-38, 9, 20000)])
    x = x64.astype(np.float32)
    y = erf(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    expected = torch.special.erf(torch.from_numpy(x.astype(np.float64))).numpy()
    err = np.abs(y.astype(np.float64) - expected)
    assert err.max() < 3.5e-8
    nonzero = expected != 0
    assert (err[nonzero] / np.abs(expected[nonzero])).max() < 5e-7
    special = erf(np.float32([0.0, -0.0, np.inf, -np.inf, np.nan]))
    np.testing.assert_array_equal(special[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.array_equal(np.signbit(special[:4]), [False, True, False, True]) and np.isnan(special[4])


def test_normal_cdf_float32_accuracy():
    """Exact GELU's float32 Phi (erf.normal_cdf_float32, from exp(-x^2/2) and a polynomial): within
    6e-7 relative (a few ulps) against mpmath for x >= -3, within 1e-5 relative down to Phi ~ 1e-30
    (the float32 exp(-x^2/2) of a large argument carries x^2's rounding), 1/2 at +-0, NaN for NaN."""
    from npgpt.ops.erf import normal_cdf_float32

    x = np.concatenate([np.linspace(-11, 16, 20001), np.geomspace(1e-38, 11, 500), -np.geomspace(1e-38, 11, 500)])
    x = x.astype(np.float32)
    e = np.exp(np.float32(-0.5) * x * x)
    phi = normal_cdf_float32(x, e, np.empty_like(x), np.empty_like(x), np.empty(x.shape, np.int32))
    assert phi.dtype == np.float32
    mpmath.mp.dps = 30
    expected = np.array([float(mpmath.ncdf(mpmath.mpf(float(v)))) for v in x])
    rel = np.abs(phi - expected) / expected
    assert rel[x >= -3].max() < 6e-7
    assert rel.max() < 1e-5
    special = np.float32([0.0, -0.0, np.nan, np.inf, -np.inf])
    out = normal_cdf_float32(special, np.exp(np.float32(-0.5) * special * special), np.empty(5, np.float32),
                             np.empty(5, np.float32), np.empty(5, np.int32))
    np.testing.assert_allclose(out[:2], 0.5, rtol=1.2e-7)
    assert np.isnan(out[2]) and out[3] == 1.0 and out[4] == 0.0
