"""Where graphgrad's matrix products run: NumPy's BLAS (default) or Intel MKL (optional).

NumPy's wheels bundle OpenBLAS. PyTorch's CPU wheels link Intel's MKL, whose single-precision
GEMM is 5-20% faster on the Intel CPUs measured here (``bench/PROFILE.md``), and the matrix
products are most of an MLP step. ``gg.set_blas("mkl")`` (or ``GRAPHGRAD_BLAS=mkl`` in the
environment) sends the 2-D float32/float64 products of ``matmul``, ``linear`` and their VJP
rules to MKL's ``cblas_?gemm`` when the ``mkl`` wheel is installed (``pip install mkl`` or
``pip install graphgrad[mkl]``); every other product (batched, 1-D, integer, strided views)
still goes to ``np.matmul``. It is opt-in because MKL rounds differently from OpenBLAS
(results agree to float precision, not bit for bit) and starts its own thread pool
(``threadpoolctl`` and ``MKL_NUM_THREADS`` limit it).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _fused

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_INT_MAX = 2**31 - 1

_mkl: dict[str, Any] = {}  # loaded once: {"path", "sgemm", "dgemm"} or {"error": message}
_active: dict[Any, int] = {}  # dtype -> cblas_?gemm address while MKL is selected


def _find_mkl() -> dict[str, Any]:
    if _mkl:
        return _mkl
    if _fused.KERNELS is None or not hasattr(_fused.KERNELS, "gemm"):
        _mkl["error"] = (
            "graphgrad's compiled kernels, which call MKL, are not in use (not built, or "
            "GRAPHGRAD_PURE_PYTHON is set)"
        )
        return _mkl
    candidates = []
    for root in dict.fromkeys((sys.prefix, sys.base_prefix)):
        candidates += sorted(glob.glob(os.path.join(root, "lib", "libmkl_rt.so*")))
        candidates += sorted(glob.glob(os.path.join(root, "Library", "bin", "mkl_rt*.dll")))
    candidates += ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            sgemm, dgemm = lib.cblas_sgemm, lib.cblas_dgemm
        except (OSError, AttributeError):
            continue
        # The kernel passes 32-bit ints (LP64). MKL_INTERFACE_LAYER=ILP64 in the environment
        # would make MKL read them as 64-bit: ask for LP64, and refuse if MKL keeps ILP64.
        layer = getattr(lib, "MKL_Set_Interface_Layer", None)
        if layer is not None:
            layer.argtypes, layer.restype = [ctypes.c_int], ctypes.c_int
            if layer(0) != 0:  # 0: MKL_INTERFACE_LP64
                _mkl["error"] = f"{path} uses the ILP64 interface (MKL_INTERFACE_LAYER?)"
                return _mkl
        addr = ctypes.cast
        _mkl.update(
            path=getattr(lib, "_name", path),
            sgemm=addr(sgemm, ctypes.c_void_p).value,
            dgemm=addr(dgemm, ctypes.c_void_p).value,
        )
        return _mkl
    _mkl["error"] = "Intel MKL (libmkl_rt) was not found: pip install mkl"
    return _mkl


def set_blas(name: str) -> str:
    """Select the library for 2-D matrix products: ``"numpy"`` (NumPy's own BLAS, the
    default) or ``"mkl"`` (Intel MKL, needs ``pip install mkl``). Returns the previous name.

    Raises:
        RuntimeError: ``"mkl"`` was asked for and cannot be loaded (the message says why).
        ValueError: an unknown name.
    """
    previous = blas()
    if name == "numpy":
        _active.clear()
    elif name == "mkl":
        found = _find_mkl()
        if "error" in found:
            raise RuntimeError(f"set_blas('mkl'): {found['error']}")
        _active.clear()
        _active[_F32] = found["sgemm"]
        _active[_F64] = found["dgemm"]
    else:
        raise ValueError(f"set_blas: unknown BLAS {name!r}; choose 'numpy' or 'mkl'")
    return previous


@contextlib.contextmanager
def using_blas(name: str) -> Iterator[None]:
    """``with gg.using_blas("mkl"): ...``: :func:`set_blas` for the block, the previous
    library restored after it (also on an exception)."""
    previous = set_blas(name)
    try:
        yield
    finally:
        set_blas(previous)


def blas() -> str:
    """The library 2-D matrix products use now: ``"numpy"`` or ``"mkl"``."""
    return "mkl" if _active else "numpy"


def blas_info() -> dict[str, Any]:
    """The selected library and, for MKL, the shared library loaded."""
    info: dict[str, Any] = {"blas": blas()}
    if _active:
        info["library"] = _mkl.get("path")
    return info


def _c_layout(a: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """``a`` as a C-contiguous matrix and whether it is transposed, or None."""
    if a.flags.c_contiguous:
        return a, False
    if a.flags.f_contiguous:
        return a.T, True
    return None


def matmul(a: Any, b: Any) -> Any:
    """``np.matmul(a, b)``; 2-D float products go to MKL when it is selected."""
    if _active and type(a) is np.ndarray and type(b) is np.ndarray:
        fn = _active.get(a.dtype)
        if (
            fn is not None
            and a.ndim == 2
            and b.ndim == 2
            and b.dtype == a.dtype
            and a.shape[1] == b.shape[0]
            and a.size > 0
            and b.size > 0
            and max(*a.shape, b.shape[1]) <= _INT_MAX
        ):
            la, lb = _c_layout(a), _c_layout(b)
            if la is not None and lb is not None:
                out = np.empty((a.shape[0], b.shape[1]), a.dtype)
                _fused.KERNELS.gemm(fn, la[0], la[1], lb[0], lb[1], out)
                return out
    return np.matmul(a, b)


_env = os.environ.get("GRAPHGRAD_BLAS", "").strip().lower()
if _env and _env != "numpy":
    try:
        set_blas(_env)
    except (RuntimeError, ValueError) as e:  # an import must not fail over a preference
        warnings.warn(f"GRAPHGRAD_BLAS={_env}: {e}; using NumPy's BLAS", stacklevel=1)
