"""Fused elementwise updates: a compiled kernel where one is built, NumPy otherwise.

An SGD-with-momentum step is four passes over every parameter in NumPy (``v *= mu``,
``v += g``, ``t = lr * v``, ``w -= t``) and Adam's is eleven; the kernels in
``_kernels.pyx`` (Cython, compiled by ``pip install``) do each in one pass. The NumPy
functions below are the reference: they are what runs when the extension is not built or
``GRAPHGRAD_PURE_PYTHON=1`` is set, and the tests check that both give the same numbers.

``COMPILED`` says which is active. Every function takes C-contiguous float arrays of one
dtype and shape and updates its first arguments in place; other layouts take the NumPy path.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import warnings
from typing import Any

import numpy as np

from ._state import pure_python_requested


def openblas_libraries() -> list[Any]:
    """The OpenBLAS copies loaded in this process (NumPy's), as ctypes libraries: found in
    /proc/self/maps, so Linux only (elsewhere an empty list)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return []
    libs = []
    for path in sorted(paths):
        try:
            libs.append(ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0)))
        except OSError:
            continue
    return libs


def first_symbol(lib: Any, names: tuple[str, ...]) -> Any:
    """The first of ``names`` that the ctypes library ``lib`` exports (OpenBLAS's symbols
    carry a prefix and suffix that depend on its build), or None."""
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


_POOL_SETTERS = (
    "scipy_openblas_set_threads_callback_function64_",
    "scipy_openblas_set_threads_callback_function",
    "openblas_set_threads_callback_function64_",
    "openblas_set_threads_callback_function",
)
_CONFIG_GETTERS = (
    "scipy_openblas_get_config64_",
    "scipy_openblas_get_config",
    "openblas_get_config64_",
    "openblas_get_config",
)


def _max_threads(lib: Any) -> int:
    """OpenBLAS's MAX_THREADS (the size of its worker tables) from its configuration string,
    e.g. ``"OpenBLAS 0.3.31 USE64BITINT DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"``;
    0 if it does not say."""
    fn = first_symbol(lib, _CONFIG_GETTERS)
    if fn is None:
        return 0
    fn.argtypes, fn.restype = [], ctypes.c_char_p
    for word in (fn() or b"").decode(errors="replace").split():
        if word.startswith("MAX_THREADS="):
            value = word.split("=", 1)[1]
            return int(value) if value.isdigit() else 0
    return 0


def pool_setters() -> list[tuple[int, int]]:
    """(address of ``openblas_set_threads_callback_function``, MAX_THREADS) for each OpenBLAS
    copy loaded that has the callback (OpenBLAS 0.3.27 and later) and says its MAX_THREADS:
    see ``_blas.set_pool``."""
    found: list[tuple[int, int]] = []
    for lib in openblas_libraries():
        fn = first_symbol(lib, _POOL_SETTERS)
        if fn is None:
            continue
        addr, top = ctypes.cast(fn, ctypes.c_void_p).value, _max_threads(lib)
        if addr and top >= 2:
            found.append((addr, top))
    return found


def pool_env() -> str:
    """``GRAPHGRAD_BLAS_POOL`` as read at import ('' when unset): whose threads run
    OpenBLAS's products, see ``_blas.set_pool``."""
    return os.environ.get("GRAPHGRAD_BLAS_POOL", "").strip().lower()


def pool_wanted() -> bool:
    """Whether OpenBLAS's products will run on the kernels' OpenMP threads (``_blas.set_pool``
    at import): NumPy's OpenBLAS has the callback, and ``GRAPHGRAD_BLAS_POOL`` is not
    ``openblas``."""
    return pool_env() != "openblas" and bool(pool_setters())


#: GNU OpenMP's spin count between parallel loops when its threads run the BLAS's products
#: too (one pool): libgomp's documented default for an unset OMP_WAIT_POLICY, about 3 ms of
#: spinning. libgomp lowers its default when the threads fill the CPUs; then each loop after
#: a GEMM woke a sleeping worker, 50-70 us on a 2-vCPU VM, against 1.4 us while it spins.
SPIN_COUNT = "300000"


#: How GNU OpenMP's workers wait between parallel loops, as set when the kernels loaded.
OMP_WAIT = ["none (pure Python)"]


def _load_kernels() -> Any:
    """Import the compiled kernels, with GCC's OpenMP runtime told how to wait between
    parallel loops (unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT). With one pool
    (OpenBLAS's products on the kernels' threads, :func:`pool_wanted`) its workers spin for
    ``SPIN_COUNT`` rounds, so the kernel after a GEMM finds them awake. With two pools they
    sleep: a spinning worker takes the core the BLAS's own threads need next (measured on 2
    shared cores: a step 10x slower at 2 threads). libgomp reads the variable once, as the
    extension loads it; it is removed again at once, so libraries loaded later see the
    environment as it was. (If libgomp was loaded before, by another library, it keeps its
    own setting.)"""
    if pure_python_requested():
        return None
    mine = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
    name, value = (
        ("GOMP_SPINCOUNT", SPIN_COUNT) if pool_wanted() else ("OMP_WAIT_POLICY", "PASSIVE")
    )
    if mine:
        os.environ[name] = value
        OMP_WAIT[0] = f"{name}={value} (set by graphgrad)"
    else:
        OMP_WAIT[0] = ", ".join(
            f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ
        )
    try:
        from . import _kernels  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # pragma: no cover - depends on the build
        return None
    finally:
        if mine:
            del os.environ[name]
    return _kernels


_K: Any = _load_kernels()


#: The kernels' parallel threshold before anything chose one (elements): ``_kernels.pyx``'s.
DEFAULT_PAR_MIN: int = _K.PAR_MIN if _K is not None else 32768
#: The threshold meaning "never split": the kernels stay on the calling thread.
NEVER = sys.maxsize


def _par_min_from_environment() -> int | None:
    """``GRAPHGRAD_PAR_MIN=N``: the array size from which the kernels use several threads,
    forced (the softmax cross-entropy kernels use N/2 logits; nothing is measured then).
    Read once at import; a bad value is ignored with a warning. Returns N, or None."""
    raw = os.environ.get("GRAPHGRAD_PAR_MIN", "").strip()
    if not raw or _K is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        warnings.warn(
            f"GRAPHGRAD_PAR_MIN={raw!r}: need a positive integer; keeping {_K.PAR_MIN}",
            stacklevel=2,
        )
        return None
    return int(raw)


def _isa_from_environment() -> None:
    """``GRAPHGRAD_KERNEL_ISA=auto|baseline|avx2|avx512f``: the instruction set of the
    compiled loops, forced (``_kernels.DEFAULT_ISA``, "auto", otherwise). Read once at
    import; a name this build or CPU does not have is ignored with a warning."""
    raw = os.environ.get("GRAPHGRAD_KERNEL_ISA", "").strip().lower()
    if not raw or _K is None:
        return
    try:
        _K.set_isa(raw)
    except ValueError as e:
        warnings.warn(f"GRAPHGRAD_KERNEL_ISA={raw!r}: {e}; keeping {_K.get_isa()}", stacklevel=2)


_isa_from_environment()


def kernel_isa() -> dict[str, Any]:
    """The instruction set the compiled loops run (``isa``), the ones this CPU could run
    (``available``) and why (``reason``); ``{}`` without compiled kernels."""
    if _K is None or not hasattr(_K, "get_isa"):
        return {}
    isa = _K.get_isa()
    forced = os.environ.get("GRAPHGRAD_KERNEL_ISA", "").strip().lower()
    if forced == isa:
        reason = "GRAPHGRAD_KERNEL_ISA in the environment"
    elif isa == _K.DEFAULT_ISA:
        reason = "the default"
    else:
        reason = "set_isa()"
    info = {"isa": isa, "available": list(_K.isas()), "reason": reason}
    if isa == "auto":
        info["loops"] = dict(_K.auto_loops())
    return info


COMPILED: bool = _K is not None
#: ``GRAPHGRAD_PAR_MIN`` from the environment (an int), or None: then ``_blas`` measures the
#: threshold at the current thread count (``_blas.calibrate_par_min``).
FORCED_PAR_MIN: int | None = _par_min_from_environment()
_PAR_MIN: int = 0


def set_par_min(n: int) -> None:
    """Split the kernels' arrays between threads from ``n`` elements on (``NEVER``: keep
    every kernel serial); the softmax cross-entropy kernels from ``n // 2`` logits. Only
    speed depends on it: every kernel gives the same bits at any thread count and any
    threshold (elementwise loops; the cross-entropy's row losses added in order)."""
    global _PAR_MIN
    if _K is None:
        return
    _K.PAR_MIN = n  # module globals of the extension, read at each kernel call
    _K.XENT_PAR_MIN = max(1, n // 2)
    _PAR_MIN = n


def par_min() -> int:
    """The kernels' parallel threshold now, in elements (0 without compiled kernels)."""
    return _PAR_MIN


if _K is not None:
    set_par_min(FORCED_PAR_MIN if FORCED_PAR_MIN is not None else DEFAULT_PAR_MIN)

#: The compiled kernels module (graphgrad._kernels), or None: for the other users of its
#: loops (the BLAS switch's GEMM).
KERNELS: Any = _K

__all__ = [
    "COMPILED",
    "adam",
    "add_bias",
    "bad_label",
    "outer",
    "relu",
    "relu_grad",
    "sgd",
    "xent_backward",
    "xent_forward",
]


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _flat(*arrays: np.ndarray) -> list[np.ndarray] | None:
    """The arrays as 1-D views for a kernel, or None if a kernel cannot take them: all must
    be ndarrays of one shape and one native float dtype, and all C-contiguous or all
    Fortran-contiguous (column-major: ``linear``'s outputs in the "columns" layout), so that
    element i of every view is the same (row, column) of every array. Inputs may be read-only
    (the kernels take them as ``const``); callers check that the arrays they write are not.
    (Called several times per training step, so written for speed: ~0.5 µs for three.)"""
    if _K is None:
        return None
    a0 = arrays[0]
    if type(a0) is not np.ndarray:
        return None
    dt, shape = a0.dtype, a0.shape
    if dt not in _KERNEL_DTYPES:
        return None
    out = []
    if a0.flags.c_contiguous:
        for a in arrays:
            if type(a) is not np.ndarray or a.dtype != dt or a.shape != shape:
                return None
            if not a.flags.c_contiguous:
                return None
            out.append(a.ravel())
        return out
    if not a0.flags.f_contiguous:
        return None
    for a in arrays:  # column-major: a.T is C-contiguous, its ravel() a view
        if type(a) is not np.ndarray or a.dtype != dt or a.shape != shape:
            return None
        if not a.flags.f_contiguous:
            return None
        out.append(a.T.ravel())
    return out


def _padded_grad(g: np.ndarray, *arrays: np.ndarray) -> bool:
    """Whether ``g`` is a padded weight gradient the ``*_rows`` kernels take beside
    ``arrays`` (all C-contiguous, of g's shape and dtype): a 2-D array of a kernel dtype whose
    rows are contiguous and lie further apart than its width."""
    if _K is None or type(g) is not np.ndarray or g.ndim != 2 or g.dtype not in _KERNEL_DTYPES:
        return False
    if g.strides[1] != g.itemsize or g.strides[0] < g.shape[1] * g.itemsize:
        return False
    return all(
        type(a) is np.ndarray and a.shape == g.shape and a.dtype == g.dtype and a.flags.c_contiguous
        for a in arrays
    )


def sgd(
    w: np.ndarray,
    g: np.ndarray,
    v: np.ndarray | None,
    tmp: np.ndarray | None,
    lr: float,
    mu: float,
    wd: float,
    nesterov: bool,
    first: bool,
) -> None:
    """One SGD step on ``w`` in place (PyTorch's formulation); ``v`` is the momentum buffer
    (written, not read, when ``first``), ``tmp`` a scratch array like ``w`` for the NumPy
    path (``None``: allocated when needed).

    g' = g + wd w;  v = g' at the first step, then v = mu v + g';
    w -= lr (g' + mu v) with nesterov, else w -= lr v  (v = g' when mu = 0).
    """
    vw = v if v is not None else w  # (the kernels ignore it when mu == 0)
    writable = w.flags.writeable and vw.flags.writeable
    flat = _flat(w, g, vw)
    if flat is not None and writable:
        _K.sgd(flat[0], flat[1], flat[2], lr, mu, wd, nesterov, first)
        return
    if writable and _padded_grad(g, w, vw):
        _K.sgd_rows(w.ravel(), g, vw.ravel(), lr, mu, wd, nesterov, first)
        return
    if tmp is None:
        tmp = np.empty_like(w)
    if wd:
        g = g + wd * w
    if mu and v is not None:
        if first:
            np.copyto(v, g)
        else:
            v *= mu
            v += g
        g = g + mu * v if nesterov else v
    np.multiply(g, lr, out=tmp)
    np.subtract(w, tmp, out=w)


def adam(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    tmp: np.ndarray | None,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    step: int,
) -> None:
    """One Adam step (``step`` counts from 1) on ``w``, ``m``, ``v`` in place:

    g' = g + wd w;  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'²;
    w -= (m / (sqrt(v) / sqrt(1 - b2^t) + eps)) · lr / (1 - b1^t).
    """
    bc1 = 1.0 - b1**step
    bc2_sqrt = math.sqrt(1.0 - b2**step)
    writable = w.flags.writeable and m.flags.writeable and v.flags.writeable
    flat = _flat(w, g, m, v)
    if flat is not None and writable:
        _K.adam(*flat, lr, b1, b2, eps, wd, bc1, bc2_sqrt)
        return
    if writable and _padded_grad(g, w, m, v):
        _K.adam_rows(w.ravel(), g, m.ravel(), v.ravel(), lr, b1, b2, eps, wd, bc1, bc2_sqrt)
        return
    if tmp is None:
        tmp = np.empty_like(w)
    if wd:
        g = g + wd * w
    m *= b1
    np.multiply(g, 1.0 - b1, out=tmp)
    m += tmp
    v *= b2
    np.multiply(g, g, out=tmp)
    tmp *= 1.0 - b2
    v += tmp
    np.sqrt(v, out=tmp)
    tmp /= bc2_sqrt
    tmp += eps
    np.divide(m, tmp, out=tmp)
    tmp *= lr / bc1
    np.subtract(w, tmp, out=w)


#: Outputs with fewer elements than this take NumPy's ``y += b``: below it the kernel's call
#: costs more than it saves (measured: 1.66 against 1.26 µs on 4x16, equal near 2k elements,
#: 2.4 against 4.7 µs on 128x256).
ADD_BIAS_MIN = 4096


def add_bias(y: np.ndarray, b: np.ndarray) -> bool:
    """``y += b`` in place for a (S, n) float array ``y`` of at least ``ADD_BIAS_MIN``
    elements (row- or column-major, writeable) and a contiguous (n,) ``b`` of its dtype, by a
    kernel: one pass (NumPy's broadcast add costs ~2x on a layer's output). Returns False,
    doing nothing, for anything else."""
    if (
        _K is None
        or type(y) is not np.ndarray
        or y.size < ADD_BIAS_MIN
        or type(b) is not np.ndarray
        or y.ndim != 2
        or b.ndim != 1
        or y.dtype not in _KERNEL_DTYPES
        or b.dtype != y.dtype
        or b.shape[0] != y.shape[1]
        or not y.flags.writeable
        or not b.flags.c_contiguous
    ):
        return False
    if y.flags.c_contiguous:
        _K.add_bias(y, b, False)
    elif y.flags.f_contiguous:
        _K.add_bias(y.T, b, True)
    else:
        return False
    return True


def outer(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """``out[:] = a @ b`` for a column ``a`` (M, 1) and a row ``b`` (1, N) of one native float
    dtype, as ``np.matmul`` computes it (``0 + a_i * b_j``; see ``graphgrad._blas.outer``), by
    a kernel: ``b`` contiguous, ``out`` (M, N) of their dtype, writeable, its rows contiguous
    (possibly further apart). Returns False, doing nothing, for anything else."""
    if (
        _K is None
        or a.dtype not in _KERNEL_DTYPES
        or b.dtype != a.dtype
        or out.dtype != a.dtype
        or a.ndim != 2
        or b.ndim != 2
        or out.ndim != 2
        or a.shape[1] != 1
        or b.shape[0] != 1
        or out.shape != (a.shape[0], b.shape[1])
        or not out.flags.writeable
        or out.strides[1] != out.itemsize
        or b.strides[1] != b.itemsize
    ):
        return False
    _K.outer(a[:, 0], b[0], out)
    return True


def relu(x: np.ndarray) -> np.ndarray:
    """``np.maximum(x, 0)``, a new array; on several threads for large float arrays (the
    kernel, serial, from ``DEFAULT_PAR_MIN`` elements even where splitting never pays)."""
    if _K is not None and type(x) is np.ndarray and x.size >= min(_PAR_MIN, DEFAULT_PAR_MIN):
        out = np.empty_like(x)  # x's layout (C or Fortran order)
        flat = _flat(x, out)
        if flat is not None:
            _K.relu(flat[0], flat[1])
            return out
    return np.maximum(x, 0)


def relu_grad(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``g`` where ``x > 0``, else 0: ReLU's VJP (subgradient 0 at 0), a new array."""
    out = np.empty_like(g)  # g's layout (C or Fortran order)
    flat = _flat(g, x, out)
    if flat is not None:
        _K.relu_grad(flat[0], flat[1], flat[2])
        return out
    # (as the kernel: 0 where x <= 0 whatever g is, an infinite or NaN g included)
    return np.where(x > 0, g, g.dtype.type(0))


def _labels64(labels: np.ndarray) -> np.ndarray:
    return labels if labels.dtype == np.int64 else labels.astype(np.int64)


def _kernel_args(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Logits and labels as the cross-entropy kernels take them, or None if they cannot:
    float32/float64 logits (S, T), row-major (column-major ones, ``linear``'s outputs in the
    "columns" layout, are copied), and (S,) labels as contiguous int64. The kernels index
    rows with the labels unchecked, so every label is checked here first."""
    if _K is None or (x.dtype != np.float32 and x.dtype != np.float64):
        return None
    if x.ndim != 2 or x.shape[1] == 0 or labels.shape != (x.shape[0],):
        return None
    if not x.flags.c_contiguous:
        if not x.flags.f_contiguous:
            return None
        x = np.ascontiguousarray(x)
    lab = np.ascontiguousarray(_labels64(labels))
    if _K.first_bad_label(lab, x.shape[1]) >= 0:
        return None  # NumPy's indexing raises the error
    return x, lab


def bad_label(labels: np.ndarray, t: int) -> int:
    """The index of the first integer label outside [0, t), or -1."""
    if _K is not None and labels.ndim == 1:
        return int(_K.first_bad_label(np.ascontiguousarray(_labels64(labels)), t))
    bad = np.flatnonzero((labels < 0) | (labels >= t))
    return int(bad[0]) if bad.size else -1


def xent_forward(x: np.ndarray, labels: np.ndarray, keep: bool = False) -> np.ndarray | None:
    """Softmax cross-entropy of logits (S, T) and integer labels (S,), averaged over S, as a
    0-d array of x's dtype; ``None`` when no kernel can take the arrays (use NumPy).

    ``keep``: also compute, in the same pass, its gradient at the scale a backward pass from
    this loss asks for (1/S), and keep it for :func:`xent_backward`, which then returns it
    instead of a second pass over the logits (the last loss's only; the same numbers)."""
    args = _kernel_args(x, labels)
    if args is None:
        return None
    if not keep or not hasattr(_K, "xent_both"):
        return np.array(_K.xent_forward(*args), dtype=x.dtype)
    grad = np.empty_like(args[0])
    scale = 1.0 / x.shape[0]
    loss = np.array(_K.xent_both(*args, scale, grad), dtype=x.dtype)
    _XENT_KEPT[0] = (loss, x, labels, scale, grad)
    return loss


#: The gradient the last ``xent_forward(keep=True)`` computed: (loss, logits, labels, scale,
#: gradient), or None. One slot: a backward pass takes it (identity checks: its own loss,
#: logits and labels, at its scale) or computes the gradient anew (another loss's, a retained
#: graph's second pass, another thread's: the same numbers either way).
_XENT_KEPT: list[Any] = [None]


def xent_backward(
    x: np.ndarray, labels: np.ndarray, scale: float, loss: Any = None
) -> np.ndarray | None:
    """(softmax(x) - onehot(labels)) * scale for logits (S, T); ``None`` when no kernel can
    take the arrays (use NumPy). ``loss``: the forward's result, whose gradient
    ``xent_forward(keep=True)`` may have kept (then returned, and no longer kept)."""
    kept = _XENT_KEPT[0]
    if (
        kept is not None
        and kept[0] is loss
        and kept[1] is x
        and kept[2] is labels
        and kept[3] == scale
    ):
        _XENT_KEPT[0] = None
        return kept[4]
    args = _kernel_args(x, labels)
    if args is None:
        return None
    out = np.empty_like(args[0])
    _K.xent_backward(*args, scale, out)
    return out
