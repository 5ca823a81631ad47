"""Shared test settings: float64 random inputs from one seeded generator per test."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

# The calibrations that importing graphgrad makes (set_blas("auto")'s BLAS, the kernels'
# parallel threshold, linear's layout) go to a cache of this test run's own, set before any
# test module imports graphgrad and inherited by the commands the tests start: measured while
# the suite keeps the CPUs busy, and at the odd thread counts the tests use, they must never
# become the user's choices in ~/.cache/graphgrad. The tests of the cache set their own.
_CACHE = tempfile.mkdtemp(prefix="graphgrad-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
