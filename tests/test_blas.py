"""gg.set_blas: 2-D float matrix products in NumPy's BLAS (default) or Intel MKL (optional).

The MKL tests run where the ``mkl`` wheel is installed; scripts/test.sh installs it on x86-64
and sets GRAPHGRAD_REQUIRE_MKL=1, so there a missing MKL fails instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _blas

MKL = "error" not in _blas._find_mkl()
needs_mkl = pytest.mark.skipif(not MKL, reason="Intel MKL (pip install mkl) is not installed")


def test_mkl_is_present_where_required() -> None:
    if os.environ.get("GRAPHGRAD_REQUIRE_MKL"):
        assert MKL, _blas._find_mkl().get("error")


@pytest.fixture
def mkl() -> Iterator[None]:
    with gg.using_blas("mkl"):
        yield


def test_using_blas_restores_the_previous_library_after_an_error() -> None:
    with pytest.raises(ZeroDivisionError), gg.using_blas("numpy"):
        1 / 0  # noqa: B018
    assert gg.blas() == "numpy"


def test_default_is_numpy_and_unknown_names_are_refused() -> None:
    assert gg.blas() == "numpy"
    assert gg.blas_info() == {"blas": "numpy"}
    with pytest.raises(ValueError, match=r"unknown BLAS 'openblas'.*'numpy' or 'mkl'"):
        gg.set_blas("openblas")
    assert gg.blas() == "numpy"


def test_missing_mkl_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        _blas, "_mkl", {"error": "Intel MKL (libmkl_rt) was not found: pip install mkl"}
    )
    with pytest.raises(RuntimeError, match=r"set_blas\('mkl'\): .*pip install mkl"):
        gg.set_blas("mkl")
    assert gg.blas() == "numpy"


def _layouts(a: np.ndarray) -> list[np.ndarray]:
    return [a, np.asfortranarray(a)]


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mkn", [(3, 4, 5), (1, 7, 1), (6, 1, 2), (1, 1, 1), (128, 784, 256)])
def test_mkl_products_match_numpy_in_every_layout(mkl: None, dtype: Any, mkn: tuple) -> None:
    m, k, n = mkn
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-4 * np.sqrt(k) if dtype == np.float32 else 1e-12 * np.sqrt(k)
    for aa in _layouts(a):
        for bb in _layouts(b):
            out = _blas.matmul(aa, bb)
            assert out.dtype == dtype and out.shape == (m, n) and out.flags.c_contiguous
            np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record the calls that reach the MKL kernel."""
    calls: list[tuple[Any, ...]] = []
    real = _blas._fused.KERNELS

    def gemm(*args: Any) -> None:
        calls.append(args)
        real.gemm(*args)

    monkeypatch.setattr(
        _blas, "_fused", types.SimpleNamespace(KERNELS=types.SimpleNamespace(gemm=gemm))
    )
    return calls


@needs_mkl
def test_mkl_takes_2d_floats_and_leaves_the_rest_to_numpy(
    mkl: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy(monkeypatch)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal((6, 3)).astype(np.float32)
    _blas.matmul(a, b)
    _blas.matmul(a.T.T, np.asfortranarray(b))
    ro = b.copy()
    ro.setflags(write=False)  # read-only operands (e.g. memory-mapped weights) are fine
    np.testing.assert_allclose(_blas.matmul(a, ro), a @ b, rtol=1e-5, atol=1e-5)
    assert len(calls) == 3
    others = [
        (a[:, ::2], b[::2]),  # strided views: neither C- nor F-contiguous
        (a.astype(np.int64), b.astype(np.int64)),  # integers
        (a, b.astype(np.float64)),  # mixed dtypes
        (np.stack([a, a]), b),  # batched
        (a[0], b),  # 1-D
        (a[:, :0], b[:0]),  # empty
    ]
    for x, y in others:
        np.testing.assert_allclose(_blas.matmul(x, y), np.matmul(x, y), rtol=1e-6, atol=1e-6)
    assert len(calls) == 3


@needs_mkl
def test_shape_errors_are_unchanged_with_mkl(mkl: None) -> None:
    with pytest.raises(gg.ShapeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        gg.matmul(gg.Tensor(np.ones((2, 3))), gg.Tensor(np.ones((4, 5))))
    with pytest.raises(gg.ShapeError, match="linear"):
        gg.linear(gg.Tensor(np.ones((2, 3))), gg.Tensor(np.ones((4, 5))), gg.Tensor(np.zeros(4)))


@needs_mkl
def test_gradients_through_mkl_pass_gradcheck(mkl: None) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4))
    w = rng.standard_normal((3, 4))
    b = rng.standard_normal(3)
    y = rng.standard_normal((4, 3))
    gg.gradcheck(lambda x, w, b: gg.tanh(gg.linear(x, w, b)).sum(), [x, w, b])
    gg.gradcheck(lambda x, y: (gg.matmul(x, y) ** 2).sum(), [x, y])
    gg.gradcheck(lambda x, y: (x.T @ x @ y).sum(), [x, y])


def _train(blas: str, steps: int = 3) -> list[np.ndarray]:
    with gg.using_blas(blas):
        rng = np.random.default_rng(0)
        model = gg.nn.MLP(20, [16, 16], 4, "relu", rng=rng)
        opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = rng.standard_normal((32, 20)).astype(np.float32)
        y = rng.integers(0, 4, 32)
        for _ in range(steps):
            opt.zero_grad()
            gg.cross_entropy(model(x), y).backward()
            opt.step()
        return [p.data.copy() for p in model.parameters()]


@needs_mkl
def test_training_with_mkl_matches_numpy_blas() -> None:
    for a, b in zip(_train("numpy"), _train("mkl"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert gg.blas() == "numpy"


def _blas_in_subprocess(value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRAPHGRAD_BLAS": value}
    code = "import graphgrad as gg; print(gg.blas())"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


@needs_mkl
def test_environment_variable_selects_mkl() -> None:
    proc = _blas_in_subprocess("mkl")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "mkl"


def test_bad_environment_value_warns_and_keeps_numpy() -> None:
    proc = _blas_in_subprocess("cublas")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "numpy"
    assert "GRAPHGRAD_BLAS=cublas" in proc.stderr and "unknown BLAS" in proc.stderr
