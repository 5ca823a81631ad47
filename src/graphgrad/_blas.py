"""Where graphgrad's matrix products run (NumPy's BLAS or Intel MKL), and on how many threads.

NumPy's wheels bundle OpenBLAS. PyTorch's CPU wheels link Intel's MKL, whose single-precision
GEMM is 5-20% faster on the Intel CPUs measured here (``bench/PROFILE.md``), and the matrix
products are most of an MLP step. The default, ``set_blas("auto")``, picks MKL when the ``mkl``
wheel is installed (``pip install graphgrad[mkl]``) and the CPU is an Intel one (MKL's fast
paths are Intel's), NumPy's BLAS otherwise; ``gg.set_blas("numpy")`` or ``GRAPHGRAD_BLAS=numpy``
in the environment keeps NumPy's BLAS, ``"mkl"`` insists on MKL. With MKL selected the 2-D
float32/float64 products of ``matmul``, ``linear`` and their VJP rules go to MKL's
``cblas_?gemm``; every other product (batched, 1-D, integer, strided views) still goes to
``np.matmul``. MKL rounds differently from OpenBLAS (results agree to float precision, not bit
for bit), so the choice is recorded in metrics and checkpoints; for a fixed configuration
(library, thread count, CPU) runs repeat bit for bit. ``graphgrad info`` shows the choice and why.

``set_num_threads(n)`` is the one thread setting: it sizes the BLAS's thread pool (MKL's or
OpenBLAS's own call, no extra dependency) and graphgrad's compiled kernels together; the
default is ``OMP_NUM_THREADS`` when set, else the CPUs this process may run on.
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

_mkl: dict[str, Any] = {}  # loaded once: {"lib", "path", "sgemm", "dgemm"} or {"error": msg}
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
            lib=lib,
            path=getattr(lib, "_name", path),
            sgemm=addr(sgemm, ctypes.c_void_p).value,
            dgemm=addr(dgemm, ctypes.c_void_p).value,
        )
        return _mkl
    _mkl["error"] = "Intel MKL (libmkl_rt) was not found: pip install mkl"
    return _mkl


def cpu_vendor() -> str:
    """The CPU vendor string (``GenuineIntel``, ``AuthenticAMD``...), or "" if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def _auto() -> tuple[str, str]:
    """What ``"auto"`` selects, and why."""
    vendor = cpu_vendor()
    if vendor != "GenuineIntel":
        return "numpy", f"the CPU is not an Intel one ({vendor or 'vendor unknown'})"
    found = _find_mkl()
    if "error" in found:
        return "numpy", f"MKL unavailable: {found['error']}"
    return "mkl", "Intel CPU and the mkl wheel is installed"


_choice: dict[str, str] = {"requested": "numpy", "reason": "NumPy's BLAS selected"}


def set_blas(name: str) -> str:
    """Select the library for 2-D matrix products: ``"auto"`` (the default: MKL on an Intel
    CPU where the ``mkl`` wheel is installed, else NumPy's BLAS), ``"numpy"`` (NumPy's own
    BLAS) or ``"mkl"`` (Intel MKL, needs ``pip install mkl``). Returns the previous request
    (``"auto"``, ``"numpy"`` or ``"mkl"``), so that ``set_blas(previous)`` restores it.

    Raises:
        RuntimeError: ``"mkl"`` was asked for and cannot be loaded (the message says why).
        ValueError: an unknown name.
    """
    previous = _choice["requested"]
    if name == "auto":
        chosen, reason = _auto()
    elif name in ("numpy", "mkl"):
        chosen, reason = name, f"set_blas({name!r})"
    else:
        raise ValueError(f"set_blas: unknown BLAS {name!r}; choose 'auto', 'numpy' or 'mkl'")
    if chosen == "numpy":
        _active.clear()
    else:
        found = _find_mkl()
        if "error" in found:
            raise RuntimeError(f"set_blas('mkl'): {found['error']}")
        _active.clear()
        _active[_F32] = found["sgemm"]
        _active[_F64] = found["dgemm"]
        _set_mkl_threads(_threads[0])
    _choice.update(requested=name, reason=reason)
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
    """The library in use (``blas``), what was asked for (``requested``: ``"auto"``,
    ``"numpy"`` or ``"mkl"``), why that library (``reason``), the thread count and, for MKL,
    the shared library loaded."""
    info: dict[str, Any] = {
        "blas": blas(),
        "requested": _choice["requested"],
        "reason": _choice["reason"],
        "threads": _threads[0],
    }
    if _active:
        info["library"] = _mkl.get("path")
    return info


# ------------------------------------------------------------------------------- threads

_threads = [1]  # graphgrad's thread count (a list: set in place)


def _default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is a positive integer, else the CPUs this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _set_mkl_threads(n: int) -> None:
    lib = _mkl.get("lib")
    if lib is not None:
        lib.MKL_Set_Num_Threads(ctypes.c_int(n))


_OPENBLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def _openblas_setters() -> list[Any]:
    """The ``openblas_set_num_threads`` functions of the OpenBLAS copies loaded in this process
    (NumPy's; found in /proc/self/maps, so Linux only; elsewhere threadpoolctl if installed)."""
    found: list[Any] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return found
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0))
        except OSError:
            continue
        for name in _OPENBLAS_SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                found.append(fn)
                break
    return found


def set_num_threads(n: int) -> int:
    """Use ``n`` threads for the matrix products (the selected BLAS: MKL's or NumPy's
    OpenBLAS's own thread pool) and for graphgrad's compiled kernels (optimiser updates, ReLU,
    softmax cross-entropy, bias sums). Returns the previous count.

    Elementwise kernels give the same bits at any thread count, and so do the kernels' sums
    (per-row or per-column partials, added in a fixed order); a BLAS's GEMM may round
    differently at another thread count, so runs repeat bit for bit for a fixed count.

    Raises:
        ValueError: ``n`` is not a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: need a positive integer, got {n!r}")
    previous = _threads[0]
    _threads[0] = n
    if _fused.KERNELS is not None and hasattr(_fused.KERNELS, "set_num_threads"):
        _fused.KERNELS.set_num_threads(n)
    if "lib" in _mkl:
        _set_mkl_threads(n)
    setters = _openblas_setters()
    for fn in setters:
        fn.argtypes, fn.restype = [ctypes.c_int], None
        fn(n)
    if not setters:
        try:
            import threadpoolctl
        except ImportError:
            pass
        else:
            threadpoolctl.threadpool_limits(n, user_api="blas")
    return previous


def get_num_threads() -> int:
    """The thread count set by :func:`set_num_threads` (default: ``OMP_NUM_THREADS``, else
    the CPUs this process may run on)."""
    return _threads[0]


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


def matmul_into(a: Any, b: Any, out: np.ndarray, beta: float) -> bool:
    """``out = a @ b + beta * out`` in place for 2-D float arrays of ``out``'s dtype, the
    product added inside one GEMM call when MKL is selected (the product is never stored on
    its own), else ``np.matmul`` then ``out *= beta; out += product``. Returns False, doing
    nothing, when the arrays do not fit (other dtypes or ranks, shapes that do not match)."""
    if not (
        type(a) is np.ndarray
        and type(b) is np.ndarray
        and a.ndim == 2
        and b.ndim == 2
        and a.dtype == out.dtype == b.dtype
        and out.dtype in (_F32, _F64)
        and out.shape == (a.shape[0], b.shape[1])
        and a.shape[1] == b.shape[0]
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        return False
    fn = _active.get(out.dtype)
    if fn is not None and a.size > 0 and b.size > 0 and max(*a.shape, b.shape[1]) <= _INT_MAX:
        la, lb = _c_layout(a), _c_layout(b)
        if la is not None and lb is not None:
            _fused.KERNELS.gemm(fn, la[0], la[1], lb[0], lb[1], out, beta)
            return True
    if beta == 0:  # the same BLAS call, writing into out: no product array, no copy
        np.matmul(a, b, out=out)
        return True
    product = np.matmul(a, b)
    if beta != 1:
        out *= beta
    out += product
    return True


def _init_from_environment() -> None:
    _threads[0] = _default_threads()
    if _fused.KERNELS is not None and hasattr(_fused.KERNELS, "set_num_threads"):
        _fused.KERNELS.set_num_threads(_threads[0])
    env = os.environ.get("GRAPHGRAD_BLAS", "").strip().lower() or "auto"
    try:
        set_blas(env)
    except (RuntimeError, ValueError) as e:  # an import must not fail over a preference
        warnings.warn(f"GRAPHGRAD_BLAS={env}: {e}; using NumPy's BLAS", stacklevel=1)
        set_blas("numpy")
        _choice["reason"] = f"GRAPHGRAD_BLAS={env} failed: {e}"
    else:
        if env != "auto":
            _choice["reason"] = f"GRAPHGRAD_BLAS={env} in the environment"


_init_from_environment()
