"""gg.set_blas: 2-D float matrix products in NumPy's BLAS or Intel MKL ("auto", the default,
picks MKL on an Intel CPU where it is installed); gg.set_num_threads; ``graphgrad info``.

The MKL tests run where the ``mkl`` wheel is installed; scripts/test.sh installs it on x86-64
and sets GRAPHGRAD_REQUIRE_MKL=1, so there a missing MKL fails instead of skipping.
"""

from __future__ import annotations

import json
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
    before = gg.blas()
    with pytest.raises(ZeroDivisionError), gg.using_blas("numpy"):
        1 / 0  # noqa: B018
    assert gg.blas() == before


def _expected_auto() -> str:
    return "mkl" if MKL and _blas.cpu_vendor() == "GenuineIntel" else "numpy"


def test_default_is_auto_and_unknown_names_are_refused() -> None:
    if os.environ.get("GRAPHGRAD_BLAS"):
        pytest.skip("GRAPHGRAD_BLAS is set")
    assert gg.blas() == _expected_auto()
    info = gg.blas_info()
    assert info["blas"] == gg.blas() and info["requested"] == "auto" and info["reason"]
    assert info["threads"] == gg.get_num_threads()
    with pytest.raises(ValueError, match=r"unknown BLAS 'openblas'.*'auto', 'numpy' or 'mkl'"):
        gg.set_blas("openblas")
    assert gg.blas() == _expected_auto()


@pytest.mark.parametrize(
    ("vendor", "found", "chosen", "why"),
    [
        ("GenuineIntel", {"sgemm": 1, "dgemm": 2}, "mkl", "Intel CPU"),
        ("AuthenticAMD", {"sgemm": 1, "dgemm": 2}, "numpy", "not an Intel one (AuthenticAMD)"),
        ("GenuineIntel", {"error": "libmkl_rt was not found"}, "numpy", "MKL unavailable"),
    ],
)
def test_auto_picks_mkl_only_on_intel_with_mkl_installed(
    monkeypatch: pytest.MonkeyPatch, vendor: str, found: dict, chosen: str, why: str
) -> None:
    monkeypatch.setattr(_blas, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(_blas, "_mkl", found)
    with gg.using_blas("auto"):
        assert gg.blas() == chosen
        assert why in gg.blas_info()["reason"]


def test_using_blas_restores_the_request() -> None:
    before = gg.blas_info()["requested"]
    with gg.using_blas("numpy"):
        assert gg.blas_info() | {"threads": 0} == {
            "blas": "numpy",
            "requested": "numpy",
            "reason": "set_blas('numpy')",
            "threads": 0,
        }
    assert gg.blas_info()["requested"] == before


def test_missing_mkl_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gg.blas()
    monkeypatch.setattr(
        _blas, "_mkl", {"error": "Intel MKL (libmkl_rt) was not found: pip install mkl"}
    )
    with pytest.raises(RuntimeError, match=r"set_blas\('mkl'\): .*pip install mkl"):
        gg.set_blas("mkl")
    assert gg.blas() == before  # unchanged


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
    assert gg.blas() == _expected_auto() or os.environ.get("GRAPHGRAD_BLAS")


def _blas_in_subprocess(
    value: str, code: str = "import graphgrad as gg; print(gg.blas())", **env_: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRAPHGRAD_BLAS": value, **env_}
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


def test_environment_variable_numpy_forces_numpys_blas() -> None:
    proc = _blas_in_subprocess("numpy", "import graphgrad as gg; print(gg.blas_info())")
    assert proc.returncode == 0, proc.stderr
    assert "'blas': 'numpy'" in proc.stdout and "GRAPHGRAD_BLAS=numpy" in proc.stdout


def _blas_threads() -> dict[str, int]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return {
        d["internal_api"]: d["num_threads"]
        for d in threadpoolctl.threadpool_info()
        if d["user_api"] == "blas"
    }


def test_set_num_threads_governs_blas_and_kernels() -> None:
    before = gg.get_num_threads()
    try:
        for n in (1, 2):
            assert gg.set_num_threads(n) in (before, 1)
            assert gg.get_num_threads() == n
            assert set(_blas_threads().values()) == {n}  # NumPy's OpenBLAS and MKL, if loaded
            if _blas._fused._K is not None:
                assert _blas._fused._K.get_num_threads() == n
    finally:
        gg.set_num_threads(before)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="set_num_threads: need a positive integer"):
            gg.set_num_threads(bad)  # type: ignore[arg-type]


def test_omp_num_threads_is_the_default() -> None:
    code = "import graphgrad as gg; print(gg.get_num_threads(), gg.blas_info()['threads'])"
    proc = _blas_in_subprocess("auto", code, OMP_NUM_THREADS="3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "3"]


_DETERMINISM = """
import numpy as np, graphgrad as gg
gg.set_num_threads({n})
rng = np.random.default_rng(0)
model = gg.nn.MLP(300, [256, 256], 10, "relu", rng=rng)
opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
x = rng.standard_normal((256, 300)).astype(np.float32)
y = rng.integers(0, 10, 256)
for _ in range(3):
    opt.zero_grad()
    gg.cross_entropy(model(x), y).backward()
    opt.step()
import hashlib
print(hashlib.sha256(b"".join(p.data.tobytes() for p in model.parameters())).hexdigest())
"""


@pytest.mark.parametrize("blas", ["auto", "numpy"])
def test_runs_repeat_bit_for_bit_for_a_fixed_configuration(blas: str) -> None:
    # Same library, same thread count: the same weights to the last bit, run after run.
    outs = []
    for _ in range(2):
        proc = _blas_in_subprocess(blas, _DETERMINISM.format(n=2))
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout.split()[-1])
    assert outs[0] == outs[1]


def test_graphgrad_info_command() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "graphgrad")
    env = {**os.environ, "GRAPHGRAD_BLAS": "numpy", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([exe, "info"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"numpy {np.__version__}" in out and "graphgrad " in out
    assert "BLAS:      numpy (requested 'numpy': GRAPHGRAD_BLAS=numpy in the environment)" in out
    assert "threads:   1 " in out and "graphgrad._kernels" in out
    proc = subprocess.run(
        [exe, "info", "--json"],
        env={**os.environ, "GRAPHGRAD_BLAS": "auto"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["blas"]["blas"] == _expected_auto() and info["blas"]["requested"] == "auto"
    assert info["compiled"]["graphgrad._kernels"] is _blas._fused.COMPILED
