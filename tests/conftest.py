"""Shared fixtures: hypothesis profiles and the `xp` fixture (NumPy and the strict CuPy stand-in
always, CuPy where a GPU is). The stand-in's device "strict" (tests/strict_device.py) is registered
for the whole test run."""

from __future__ import annotations

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
