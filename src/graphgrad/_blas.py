"""Where graphgrad's matrix products run (NumPy's BLAS, Intel MKL or oneDNN), and on how many
threads.

NumPy's wheels bundle OpenBLAS. PyTorch's CPU wheels link Intel's MKL, whose single-precision
GEMM was 5-20% faster on the Intel CPUs measured here (``bench/PROFILE.md``) and need not be
elsewhere; the matrix products are most of an MLP step. The default,
``set_blas("auto")``, does not guess: where the ``mkl`` wheel is installed (``pip install
graphgrad[mkl]``) it times both libraries on the GEMMs of a typical MLP step (fp32, both
transposes, the current thread count; a fraction of a second, once per machine) and uses the
faster one (:func:`calibrate`; another library only when a second measurement, 10 minutes or
more after the first, finds it faster too: until then NumPy's BLAS). The result is cached in
``$XDG_CACHE_HOME/graphgrad/blas/`` (``~/.cache/...``), keyed by CPU model, thread count and
library versions, so a fixed configuration always gets the same library (once its choice is
made) and runs repeat bit for bit; ``graphgrad info``
shows the choice and the figures behind it, ``graphgrad info --recalibrate`` measures again.
``gg.set_blas("numpy")`` or ``GRAPHGRAD_BLAS=numpy`` in the environment keeps NumPy's BLAS,
``"mkl"`` insists on MKL (neither measures anything).

oneDNN (``pip install graphgrad[onednn]``: the ``onednn-cpu-gomp`` wheel, or a distribution's
``libdnnl``) is the third candidate: its ``dnnl_sgemm`` JIT-compiles AVX-512 kernels that ran
the step's float32 products 5-15% faster than NumPy's OpenBLAS on an AMD EPYC (Zen 4) at one
thread, and with oneDNN 3 its matmul primitive takes the products ``x @ Wᵀ`` (another 5-10% at
one thread, up to 1.5x at two: ``_onednn_matmul``). It has no float64 GEMM: with
``set_blas("onednn")`` float64 products stay with NumPy's BLAS. Only a build whose threads
are GNU OpenMP's (the runtime graphgrad's kernels use) is loaded, so that it shares their
pool; ``"auto"`` times it beside the others where installed.

With MKL selected the 2-D float32/float64 products of ``matmul``, ``linear`` and their VJP
rules of at least 2**20 multiply-adds go to MKL's ``cblas_?gemm`` (with oneDNN, the float32
ones to ``dnnl_sgemm`` or its matmul primitive); every other product (smaller, batched, 1-D,
integer, strided views, a side of one) still goes to ``np.matmul``. MKL and
oneDNN round differently from OpenBLAS (results agree to float precision, not bit for bit),
so the choice is recorded in metrics and checkpoints.

One thread pool: MKL is told to run its threads in GCC's OpenMP runtime, the one graphgrad's
kernels use (``MKL_THREADING_LAYER=GNU``, unless that variable is set), instead of Intel's
libiomp5, so that the GEMMs and the kernels do not keep two sets of threads spinning against
each other on the same cores (:func:`_one_thread_pool`).

``set_num_threads(n)`` is the one thread setting: it sizes the BLAS's thread pool (MKL's or
OpenBLAS's own call, no extra dependency) and graphgrad's compiled kernels together; the
default is ``OMP_NUM_THREADS`` when set, else the CPUs this process may run on. Under
``"auto"`` a new thread count chooses the library again (the calibration is per count).

The kernels' parallel threshold (the array size from which they split their work between
threads) is measured the same way, per thread count and BLAS, and cached beside the BLAS
choice (:func:`calibrate_par_min`); ``GRAPHGRAD_PAR_MIN=N`` forces it. It never changes a
result: the kernels give the same bits at any thread count.

So is the layout of ``linear``'s products (:func:`calibrate_layout`): ``x @ W.T`` row-major,
or, for layers whose batch is smaller than their width, ``(W @ x.T).T`` column-major, where the
BLAS runs that faster; ``GRAPHGRAD_LAYOUT`` forces it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import hashlib
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import _fused, _memory
from ._atomic import atomic_write_text

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_INT_MAX = 2**31 - 1

_mkl: dict[str, Any] = {}  # loaded once: {"lib", "path", "sgemm", "dgemm"} or {"error": msg}
_onednn: dict[str, Any] = {}  # loaded once: {"lib", "path", "sgemm", "version"} or {"error"}
#: The GEMMs' calling conventions (``_kernels.GEMM_*``): the CBLAS ``cblas_?gemm`` (LP64 and
#: ILP64) and oneDNN's ``dnnl_sgemm``.
GEMM_CBLAS, GEMM_CBLAS64, GEMM_DNNL = 0, 1, 2
#: dtype -> (address, calling convention, fewest multiply-adds M*N*K taken) of the selected
#: library's GEMMs (empty for NumPy's BLAS). Each entry is one tuple, read once per product,
#: so that a product running while another thread selects another library never pairs one
#: library's address with another's convention (it finds the old tuple, the new one, or
#: none: np.matmul). Changed in place, so that a compiled step's guard can hold the dict.
_calls: dict[Any, tuple[int, int, int]] = {}
#: oneDNN's sgemm costs a few microseconds more per call than OpenBLAS's, so on small
#: products it loses: on the Zen 4 at 1 thread (192 products, M and N from 10 to 256, K from
#: 10 to 784, three transposes, 2026-12-03) its time over OpenBLAS's had a median of 1.36
#: (up to 3.07) below 2**18 multiply-adds and 1.06 (0.30-1.94) from 2**18 to 2**20, and was
#: at most 1.00 from 2**20 on (median 0.79-0.88). Under oneDNN, 2-D float32 products of fewer
#: multiply-adds than this run on NumPy's BLAS: the 784-256-256-10 step's three 10-wide ones
#: (327,680), not the 3072-512-512-10 step's (1,310,720).
ONEDNN_MIN_MNK = 1 << 20
#: MKL's GEMM has the same fixed cost: on an Intel Xeon at 1 thread (the same 192 products,
#: 2026-12-03) MKL's time over OpenBLAS's had a median of 1.90 (1.39-2.31) below 2**16
#: multiply-adds, 1.44 from 2**16 to 2**18, 1.26 from 2**18 to 2**19, 0.94 (0.57-1.33) from
#: 2**19 to 2**20, and was at most 0.94 from 2**20 on (median 0.67-0.78); oneDNN's there:
#: 2.09, 1.52, 1.29, 0.96 and at most 1.01. Under MKL, 2-D float products of fewer
#: multiply-adds run on NumPy's BLAS too.
MKL_MIN_MNK = 1 << 20
_selected = ["numpy"]  # the library in use: "numpy", or one of LIBRARIES
#: The libraries ``set_blas`` can select besides NumPy's BLAS, each with the package that
#: brings it (graphgrad's extras of the same names install them).
LIBRARIES = {"mkl": "mkl", "onednn": "onednn-cpu-gomp"}
#: How ``graphgrad info`` and the calibration's reasons name each library.
LABELS = {"numpy": "NumPy's BLAS", "mkl": "MKL", "onednn": "oneDNN"}


#: MKL_Set_Threading_Layer's codes (mkl_service.h).
MKL_THREADING_LAYERS = {0: "INTEL", 1: "SEQUENTIAL", 2: "PGI", 3: "GNU", 4: "TBB"}


def _one_thread_pool(lib: Any) -> str:
    """Put MKL's threads in the OpenMP runtime graphgrad's kernels use (GCC's libgomp, MKL's
    "GNU" threading layer), before MKL's first computation, so that one thread pool serves
    the GEMMs and the kernels; with Intel's libiomp5 (MKL's usual default) the two pools
    would each keep a thread per core, spinning after their loops on the cores the other
    pool needs next. (MKL 2026 picks the GNU layer by itself once libgomp is loaded, which
    the kernels have done by then, and then ignores ``MKL_THREADING_LAYER``; the explicit
    request is for older versions.) Not requested when ``MKL_THREADING_LAYER`` is set or the
    kernels are built without OpenMP. Returns the layer ("GNU", "INTEL"...) or a note."""
    fn = getattr(lib, "MKL_Set_Threading_Layer", None)
    if fn is None:  # pragma: no cover - every MKL since 10.3 has it
        return "unknown"
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    env = os.environ.get("MKL_THREADING_LAYER")
    if env is not None:
        return f"MKL_THREADING_LAYER={env}, as MKL applies it"
    if not getattr(_fused.KERNELS, "OPENMP", False):
        return "MKL's default (the kernels are built without OpenMP)"
    layer = fn(3)  # MKL_THREADING_GNU; returns the layer now in force
    return MKL_THREADING_LAYERS.get(layer, str(layer))


def _no_kernels(library: str, attribute: str) -> str:
    """Why ``library`` cannot be called (graphgrad's compiled kernels, which call it, lack
    ``attribute``: not built, or turned off), or ''."""
    if _fused.KERNELS is None or not hasattr(_fused.KERNELS, attribute):
        return (
            f"graphgrad's compiled kernels, which call {library}, are not in use (not built, or "
            "GRAPHGRAD_PURE_PYTHON is set)"
        )
    return ""


def _candidates(patterns: tuple[str, ...], names: tuple[str, ...]) -> list[str]:
    """Where to load a library from: the files matching ``patterns`` in this environment (and
    the base Python's), then ``names`` as the system's loader finds them."""
    found = []
    for root in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for pattern in patterns:
            found += sorted(glob.glob(os.path.join(root, pattern)))
    return found + list(names)


def find_mkl() -> dict[str, Any]:
    """Intel MKL loaded (once): ``{"lib", "path", "sgemm", "dgemm", "threading"}``, or
    ``{"error": why}`` where it cannot be used."""
    if _mkl:
        return _mkl
    why = _no_kernels("MKL", "gemm")
    if why:
        _mkl["error"] = why
        return _mkl
    candidates = _candidates(
        (os.path.join("lib", "libmkl_rt.so*"), os.path.join("Library", "bin", "mkl_rt*.dll")),
        ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"),
    )
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
            threading=_one_thread_pool(lib),
        )
        return _mkl
    _mkl["error"] = "Intel MKL (libmkl_rt) was not found: pip install mkl"
    return _mkl


class _DnnlVersion(ctypes.Structure):
    """oneDNN's ``dnnl_version_t`` (dnnl_types.h)."""

    _fields_ = [
        ("major", ctypes.c_int),
        ("minor", ctypes.c_int),
        ("patch", ctypes.c_int),
        ("hash", ctypes.c_char_p),
        ("cpu_runtime", ctypes.c_uint),
        ("gpu_runtime", ctypes.c_uint),
    ]


#: oneDNN's CPU runtimes (``DNNL_RUNTIME_*``, dnnl_types.h).
ONEDNN_RUNTIMES = {0: "none", 1: "sequential", 2: "OpenMP", 4: "TBB", 8: "threadpool"}


def find_onednn() -> dict[str, Any]:
    """oneDNN loaded (once): ``{"lib", "path", "sgemm", "version", "threading"}`` (``sgemm``:
    the address of ``dnnl_sgemm``), or ``{"error": why}`` where it cannot be used. Looked for
    in this environment's ``lib`` (where the ``onednn-cpu-gomp`` wheel puts it), then where
    the system keeps libraries (``libdnnl.so.3``, ``.so.2``). Only a build that runs its
    threads in OpenMP (GNU libgomp's, the kernels' pool: their thread count is set with
    ``omp_set_num_threads``) or sequentially is used: a TBB, SYCL or Intel OpenMP build (the
    ``onednn`` and ``onednn-cpu-iomp`` wheels) would keep a second pool of threads spinning
    against the kernels'."""
    if _onednn:
        return _onednn
    why = _no_kernels("oneDNN", "GEMM_DNNL")
    if why:
        _onednn["error"] = why
        return _onednn
    refused = ""
    for path in _candidates(
        (os.path.join("lib", "libdnnl.so.3*"),), ("libdnnl.so.3", "libdnnl.so.2")
    ):
        try:
            lib = ctypes.CDLL(path)
            sgemm, version = lib.dnnl_sgemm, lib.dnnl_version
        except (OSError, AttributeError):
            continue
        version.restype = ctypes.POINTER(_DnnlVersion)
        v = version().contents
        runtime = ONEDNN_RUNTIMES.get(v.cpu_runtime, str(v.cpu_runtime))
        if runtime == "OpenMP" and getattr(lib, "kmp_set_blocktime", None) is not None:
            runtime = "Intel's or LLVM's OpenMP"  # libiomp5 (onednn-cpu-iomp), libomp: not GNU's
        if runtime not in ("OpenMP", "sequential"):
            refused = (
                f"{path} runs its threads in {runtime}, a second thread pool beside "
                "graphgrad's OpenMP one: pip install onednn-cpu-gomp (oneDNN on GNU OpenMP)"
            )
            continue
        setter = getattr(lib, "omp_set_num_threads", None)  # libgomp's, through oneDNN's
        if setter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
        _onednn.update(
            lib=lib,
            path=getattr(lib, "_name", path),
            sgemm=ctypes.cast(sgemm, ctypes.c_void_p).value,
            version=f"{v.major}.{v.minor}.{v.patch}",
            threading="GNU OpenMP" if runtime == "OpenMP" else runtime,
            set_threads=setter,
            matmul=_onednn_matmul(lib, v.major),
        )
        return _onednn
    _onednn["error"] = refused or (
        "oneDNN (libdnnl) was not found: pip install onednn-cpu-gomp (graphgrad[onednn])"
    )
    return _onednn


#: oneDNN 3's C functions the matmul primitive is run with, in ``_kernels.dnnl_matmul_setup``'s
#: order (the last is libgomp's, which oneDNN reads its thread count from).
ONEDNN_MATMUL_FUNCTIONS = (
    "dnnl_engine_create",
    "dnnl_stream_create",
    "dnnl_memory_desc_create_with_strides",
    "dnnl_memory_desc_destroy",
    "dnnl_matmul_primitive_desc_create",
    "dnnl_primitive_desc_query",
    "dnnl_primitive_desc_destroy",
    "dnnl_primitive_create",
    "dnnl_primitive_destroy",
    "dnnl_memory_create",
    "dnnl_memory_set_data_handle",
    "dnnl_memory_destroy",
    "dnnl_primitive_execute",
    "dnnl_stream_wait",
    "omp_get_max_threads",
)


def _onednn_matmul(lib: Any, major: int) -> str:
    """Hand oneDNN's matmul primitive to the kernels, for the products ``x @ Wᵀ`` (the
    forward pass's), which it ran up to 1.5x faster than ``dnnl_sgemm`` (docs/speed.md): the
    products it takes, or why none (every product then goes to ``dnnl_sgemm``)."""
    if major < 3:
        return f"none: oneDNN {major}.x (its C API for the matmul primitive is 3.x's)"
    if not hasattr(_fused.KERNELS, "dnnl_matmul_setup"):
        return "none: graphgrad's compiled kernels predate it (rebuild: pip install -e .)"
    try:
        fns = [ctypes.cast(getattr(lib, f), ctypes.c_void_p).value for f in ONEDNN_MATMUL_FUNCTIONS]
    except AttributeError as e:
        return f"none: {e}"
    _fused.KERNELS.dnnl_matmul_setup(fns)
    return "x @ Wᵀ (the forward products)"


def find(name: str) -> dict[str, Any]:
    """:func:`find_mkl` or :func:`find_onednn` by the library's name (``LIBRARIES``)."""
    return find_mkl() if name == "mkl" else find_onednn()


def installed() -> list[str]:
    """The libraries of ``LIBRARIES`` that can be loaded here, in that order."""
    return [name for name in LIBRARIES if "error" not in find(name)]


def _gemms(name: str) -> tuple[dict[Any, int], int, int]:
    """A loaded library's GEMM addresses by dtype, their calling convention and the fewest
    multiply-adds (M*N*K) of a product it takes (smaller ones: NumPy's BLAS)."""
    if name == "mkl":
        return {_F32: _mkl["sgemm"], _F64: _mkl["dgemm"]}, GEMM_CBLAS, MKL_MIN_MNK
    return {_F32: _onednn["sgemm"]}, GEMM_DNNL, ONEDNN_MIN_MNK


def _use(name: str) -> None:
    """Route the 2-D products to ``name``'s GEMMs (``"numpy"``: to ``np.matmul``); the
    library must be loaded."""
    calls: dict[Any, tuple[int, int, int]] = {}
    if name != "numpy":
        addresses, conv, min_mnk = _gemms(name)
        calls = {dt: (fn, conv, min_mnk) for dt, fn in addresses.items()}
    _calls.clear()
    _calls.update(calls)
    _selected[0] = name


def _cpuinfo(field: str) -> str:
    """The first ``field`` line of /proc/cpuinfo (Linux), or ""."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """The CPU vendor string (``GenuineIntel``, ``AuthenticAMD``...), or "" if unknown."""
    return _cpuinfo("vendor_id")


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU model name (``AMD EPYC 9555 64-Core Processor``...), or a coarser description
    (``platform.processor()``, the machine type) where it is not known."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


# ------------------------------------------------------------------- "auto": a calibration
#
# Which BLAS is faster depends on the CPU, the thread count and the library versions (MKL is
# faster on the Intel machines measured so far, OpenBLAS on some AMD ones), so "auto" does not
# guess: it times the candidates on the GEMMs of a typical MLP step, once per machine and
# configuration, and caches the result. The figures are kept in the cache file and shown by
# ``graphgrad info``; with a cache the choice is fixed, so runs repeat bit for bit.

#: The calibration's products, (m, k, n) of ``x @ W.T`` for a layer: a 784-256-256-10 MLP at
#: batch 128 and a 512-wide layer at batch 256. Each layer is timed as its step uses it:
#: forward ``x @ W.T`` (n x k weight, transposed), weight gradient ``g.T @ x`` (transposed
#: left operand) and input gradient ``g @ W``.
CALIBRATION_LAYERS = ((128, 784, 256), (128, 256, 256), (128, 256, 10), (256, 512, 512))
#: MKL or oneDNN is chosen only when it is at least this much faster (a 3% tie goes to
#: NumPy's BLAS: no extra library, and results bit-identical with plain NumPy).
CALIBRATION_MARGIN = 0.03
#: MKL or oneDNN is chosen only when two measurements at least this far apart (seconds) both
#: find it faster: a first win leaves the record "pending" (NumPy's BLAS meanwhile), measured
#: again at the first start this much later; 0 measures again at once. A switch changes every
#: result's rounding for good, and on the 2-vCPU AMD EPYC VM the host's load moved the
#: figures for minutes at a time: two measurements in a row at 2 threads found MKL 11% faster
#: (4.4 against 4.9 ms a pass) where four runs soon after found NumPy's BLAS 1-4% faster (3.4
#: ms), and compiled steps ran 1.02-1.09x slower with MKL in the same rounds.
CONFIRM_AFTER_S = 600.0
_CAL_ROUNDS, _CAL_BUDGET_S = 9, 0.4
_LOCK_WAIT_S = 5.0
_CACHE_FORMAT = 1

_clock = time.perf_counter  # the calibration's clock (tests substitute a fake one)

#: A calibration during which other processes kept more than this share of this process's
#: CPUs busy is marked ``busy``: its figures may be the other processes', not the libraries'.
BUSY_LIMIT = 0.25
#: A busy calibration is measured again once it is this old (seconds), at the next import or
#: thread-count change; a quiet one stays until its key changes.
BUSY_RETRY_S = 600.0
_own_cpu_s = time.process_time  # this process's CPU time, all threads (tests substitute it)


def _cpu_jiffies(path: str = "/proc/stat") -> tuple[int, int] | None:
    """(busy, total) clock ticks so far of the CPUs this process may run on, from Linux's
    ``/proc/stat`` (busy: user, nice, system, irq, softirq and steal, the time a VM's host
    gave the CPU to someone else); None where that cannot be read."""
    try:
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except (OSError, AttributeError, ValueError):
        return None
    busy = total = 0
    seen = False
    for line in lines:
        fields = line.split()
        if not fields or fields[0] not in cpus or len(fields) < 9:
            continue
        try:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[1:9])
        except ValueError:
            return None
        b = user + nice + system + irq + softirq + steal
        busy += b
        total += b + idle + iowait
        seen = True
    return (busy, total) if seen else None


def _others_share(measure_now: Any) -> tuple[Any, float | None]:
    """``measure_now()``'s result, and the share of this process's CPUs that other processes
    (or a VM's host) kept busy meanwhile: ticks busy minus this process's own CPU time, over
    all ticks; None where ``/proc/stat`` cannot be read or too little time passed."""
    before, own = _cpu_jiffies(), _own_cpu_s()
    result = measure_now()
    after, own = _cpu_jiffies(), _own_cpu_s() - own
    if before is None or after is None:
        return result, None
    total = after[1] - before[1]
    if total < 10:  # under ~0.1 s of one CPU at 100 ticks a second: no figure
        return result, None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    others = (after[0] - before[0]) - own * hz
    return result, min(1.0, max(0.0, others / total))


def _calibration_set() -> list[tuple[np.ndarray, np.ndarray]]:
    """The (a, b) operand pairs of the calibration, fp32, fixed values."""
    rng = np.random.default_rng(0)
    pairs = []
    for m, k, n in CALIBRATION_LAYERS:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        g = rng.standard_normal((m, n), dtype=np.float32)
        pairs += [(x, w.T), (g.T, x), (g, w)]
    return pairs


def measure(libraries: list[str], clock: Any = None) -> dict[str, float]:
    """Seconds per pass over the calibration's GEMMs (``CALIBRATION_LAYERS``, fp32, the
    current thread count) for each library in ``libraries`` (``"numpy"``, ``"mkl"``,
    ``"onednn"``): the
    libraries take turns, round after round (the order alternating), for at most 9 rounds or
    about 0.4 s; each figure is the fastest round's (other work on the machine only ever
    adds time, so the minimum is the steadiest estimate of a library's own speed). ``clock``
    (default ``time.perf_counter``) is only replaced by tests."""
    clock = clock or _clock
    pairs = _calibration_set()
    saved = _selected[0]
    times: dict[str, list[float]] = {lib: [] for lib in libraries}
    try:
        for lib in libraries:  # warm up: thread pools started, code paged in
            _use(lib)
            for a, b in pairs:
                matmul(a, b)
        start = clock()
        for r in range(_CAL_ROUNDS):
            for lib in libraries if r % 2 == 0 else libraries[::-1]:
                _use(lib)
                t0 = clock()
                for a, b in pairs:
                    matmul(a, b)
                times[lib].append(clock() - t0)
            if r >= 2 and clock() - start > _CAL_BUDGET_S:
                break
    finally:
        _use(saved)
    return {lib: min(ts) for lib, ts in times.items()}


def decide(seconds: dict[str, float]) -> str:
    """The library one measurement's figures favour: the fastest of the others (MKL, oneDNN)
    when it is faster than NumPy's BLAS by more than ``CALIBRATION_MARGIN``, else NumPy's
    (:func:`calibrate` takes another library only when two measurements,
    ``CONFIRM_AFTER_S`` apart, both favour it)."""
    others = [lib for lib in seconds if lib != "numpy"]
    best = min(others, key=seconds.__getitem__, default=None)
    if best is not None and seconds[best] < seconds["numpy"] * (1 - CALIBRATION_MARGIN):
        return best
    return "numpy"


def confirmed(earlier: dict[str, float], seconds: dict[str, float]) -> str | None:
    """The library two measurements (``earlier``, then ``seconds``) choose between them: of
    the libraries faster than NumPy's BLAS by more than ``CALIBRATION_MARGIN`` in both, the
    one with the smaller product of its two times over NumPy's BLAS's (the latest
    measurement's favourite where they tie); None where no library won both. Two libraries
    often run within a few per cent of each other (MKL and oneDNN on an Intel Xeon: 0.1-6%
    apart, which of them ahead changing between measurements), so a win is confirmed by
    either library beating NumPy's BLAS again, not only by the same one coming first."""
    both = [
        lib
        for lib in seconds
        if lib != "numpy"
        and lib in earlier
        and all(s[lib] < s["numpy"] * (1 - CALIBRATION_MARGIN) for s in (earlier, seconds))
    ]
    if not both:
        return None
    latest = decide(seconds)

    def score(lib: str) -> tuple[float, bool]:
        return (earlier[lib] / earlier["numpy"]) * (seconds[lib] / seconds["numpy"]), lib != latest

    return min(both, key=score)


def cache_dir() -> Path:
    """Where the calibration is cached: ``$XDG_CACHE_HOME/graphgrad/blas`` (``~/.cache/...``
    when ``XDG_CACHE_HOME`` is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "graphgrad" / "blas"


def _library_version() -> str:
    """MKL's path and version string (asked once, kept in ``_mkl``)."""
    if "version" in _mkl:
        return str(_mkl["version"])
    lib = _mkl.get("lib")
    fn = getattr(lib, "MKL_Get_Version_String", None)
    if fn is None:
        return str(_mkl.get("path", ""))
    buf = ctypes.create_string_buffer(256)
    fn(buf, 256)
    _mkl["version"] = f"{_mkl.get('path', '')} {buf.value.decode(errors='replace').strip()}"
    return str(_mkl["version"])


#: Environment variables that change the libraries' GEMM kernels or threading: part of the
#: calibration's key (OPENBLAS_CORETYPE=Haswell, say, makes OpenBLAS skip AVX-512 kernels).
_KERNEL_VARIABLES = (
    "OPENBLAS_CORETYPE",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "MKL_DYNAMIC",
    "MKL_THREADING_LAYER",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
)


def calibration_key() -> dict[str, Any]:
    """What a cached calibration holds for: CPU model, thread count (and the BLAS's, at most
    the CPUs available), library versions (NumPy and its BLAS, MKL and its threading layer,
    oneDNN, graphgrad) and the environment variables that change the libraries' kernels or threads.
    Another key means a new measurement."""
    from ._version import __version__

    cfg = getattr(getattr(np, "__config__", None), "CONFIG", None)
    blas_cfg = cfg.get("Build Dependencies", {}).get("blas", {}) if isinstance(cfg, dict) else {}
    return {
        "cpu": cpu_model(),
        "threads": _threads[0],
        "blas_threads": blas_threads(),  # fewer where the process may use fewer CPUs
        "numpy": np.__version__,
        "numpy_blas": f"{blas_cfg.get('name', '?')} {blas_cfg.get('version', '?')}",
        "mkl": _library_version(),
        "mkl_threading": _mkl.get("threading", ""),
        "onednn": (
            ""
            if "error" in find_onednn()
            else f"{_onednn['path']} {_onednn['version']} matmul: {_onednn['matmul']}"
        ),
        "graphgrad": __version__,
        "pool": _pool["state"],  # whose threads run OpenBLAS's products (see set_pool)
        "omp_wait": _fused.OMP_WAIT[0],  # how its idle threads wait: wake-ups cost or not
        # variables that change which GEMM kernels the libraries run
        "env": {k: os.environ[k] for k in _KERNEL_VARIABLES if k in os.environ},
    }


def _cache_path(key: dict[str, Any], kind: str = "blas") -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"{kind}-{digest}.json"


def _seconds_ok(seconds: Any, names: Any) -> bool:
    """A record's ``seconds``: a dict of exactly ``names``, each a positive finite float."""
    return (
        isinstance(seconds, dict)
        and set(seconds) == set(names)
        and all(type(v) is float and math.isfinite(v) and v > 0 for v in seconds.values())
    )


def _blas_record_ok(rec: dict[str, Any]) -> bool:
    """A BLAS calibration record's own figures: NumPy's BLAS and every library installed,
    positive finite seconds, and the choice they make: NumPy's BLAS where the measurement
    (``seconds``) finds it as fast; where it finds another library faster, NumPy's BLAS with
    ``pending`` (no earlier win yet), or the library :func:`confirmed` takes with
    ``earlier``, an earlier measurement that found it faster too."""
    names = ("numpy", *installed())
    if not _seconds_ok(rec["seconds"], names):
        return False
    pending, earlier = rec.get("pending"), rec.get("earlier")
    winner = decide(rec["seconds"])
    if winner == "numpy":
        return rec["choice"] == "numpy" and pending is None and earlier is None
    if pending is not None:
        return pending is True and earlier is None and rec["choice"] == "numpy"
    return (
        isinstance(earlier, dict)
        and _seconds_ok(earlier.get("seconds"), names)
        and type(earlier.get("measured_at_s")) is float
        and rec["choice"] == confirmed(earlier["seconds"], rec["seconds"])
    )


def _load_cached(path: Path, key: dict[str, Any], valid: Any = _blas_record_ok) -> Any:
    """The cached record at ``path`` if it is there, whole, for ``key`` and consistent
    (``valid(record)``); else None (a missing, unreadable, corrupt, foreign or inconsistent
    file is measured again)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        ok = rec["format"] == _CACHE_FORMAT and rec["key"] == key and bool(valid(rec))
        busy, at = rec.get("busy"), rec.get("measured_at_s")
        ok = ok and all(
            v is None or (type(v) is float and math.isfinite(v) and v >= 0) for v in (busy, at)
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None
    return rec if ok else None


def _stale(rec: dict[str, Any], max_age_s: float | None = None) -> bool:
    """A cached record to be measured again: measured while the machine was busy,
    ``BUSY_RETRY_S`` ago or more, or (with ``max_age_s``) that long ago or more."""
    busy, at = rec.get("busy"), rec.get("measured_at_s")
    age = None if at is None else time.time() - at
    if max_age_s is not None and (age is None or age >= max_age_s):
        return True
    if rec.get("pending") and (age is None or age >= CONFIRM_AFTER_S):
        return True  # another library measured faster once: measured again, to confirm
    return busy is not None and (age is None or age >= BUSY_RETRY_S)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX ``flock``), so that processes starting together
    measure one at a time and the later ones read the first one's result. Waits at most
    ``_LOCK_WAIT_S`` (a measurement takes under a second; a holder that is stopped must not
    hang every later import), then goes on without it, as where locking is not possible:
    never an error."""
    try:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except (ImportError, OSError):
        yield
        return
    try:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


_calibrations: dict[str, dict[str, Any]] = {}  # this process's, by cache path


def _cached_measurement(
    key: dict[str, Any],
    kind: str,
    measure_now: Any,
    valid: Any,
    refresh: bool,
    max_age_s: float | None = None,
) -> dict[str, Any]:
    """The one cache mechanism of the calibrations: the record cached for ``key`` (file
    ``<kind>-<sha of key>.json`` in :func:`cache_dir`) when it is valid (and, with
    ``max_age_s``, younger than that), else ``measure_now(previous)`` (a dict of figures and
    the choice; ``previous``: the valid record cached before, stale or refreshed, or None)
    timed now, under a file lock, and cached atomically. ``refresh=True`` measures again.
    The record gains ``cache`` (the file), ``measured`` (True when measured now) and, then,
    ``cache_written``. Never raises over the cache: an unwritable cache directory leaves the
    result in memory only."""
    path = _cache_path(key, kind)
    memo = _calibrations.get(str(path))
    if memo is not None and not refresh:
        return memo
    rec: dict[str, Any] | None = None
    directory_ok = path.is_absolute()  # not with HOME unset: never into the working directory
    try:
        if directory_ok:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        directory_ok = False
    lock = _file_lock(path.with_name(path.name + ".lock")) if directory_ok else None
    with lock or contextlib.nullcontext():
        previous = _load_cached(path, key, valid)
        if not refresh and previous is not None and not _stale(previous, max_age_s):
            rec = previous  # (a stale one: measured while other work ran, or long ago)
            rec["measured"] = False
        if rec is None:
            figures, others = _others_share(functools.partial(measure_now, previous))
            rec = {
                "format": _CACHE_FORMAT,
                "key": key,
                **figures,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "measured_at_s": time.time(),
            }
            if others is not None and others > BUSY_LIMIT:
                rec["busy"] = round(others, 3)
            written = False
            if directory_ok:
                try:
                    atomic_write_text(path, json.dumps(rec, indent=1, sort_keys=True) + "\n")
                    written = True
                except OSError:
                    pass
            rec["measured"] = True
            rec["cache_written"] = written
    rec["cache"] = str(path)
    _calibrations[str(path)] = rec
    return rec


def _how(rec: dict[str, Any]) -> str:
    """How a calibration record came: measured now (cached or not) or read from the cache,
    and whether other work kept the CPUs busy meanwhile."""
    if not rec["measured"]:
        how = "measured earlier, cached"
    elif not rec.get("cache_written"):
        how = "measured now, not cached (cache directory not writable)"
    else:
        how = "measured now"
    busy = rec.get("busy")
    if busy is not None:
        how += (
            f", while other processes kept {busy:.0%} of its CPUs busy (measured again "
            f"{BUSY_RETRY_S / 60:.0f} minutes later, or with `graphgrad info --recalibrate`)"
        )
    return how


def _summary(rec: dict[str, Any], *figures: str) -> dict[str, Any]:
    """A calibration record for ``*_info()``: copies of its ``figures`` fields (default
    ``seconds``), and ``cache``, ``measured_now``, ``threads``."""
    out = {f: rec[f].copy() for f in figures or ("seconds",)}
    out.update(cache=rec["cache"], measured_now=rec["measured"], threads=rec["key"]["threads"])
    out["busy"] = rec.get("busy")  # others' share of the CPUs meanwhile, when above BUSY_LIMIT
    return out


def calibrate(refresh: bool = False) -> dict[str, Any]:
    """NumPy's BLAS and the other libraries installed (MKL, oneDNN) timed on the calibration
    GEMMs at the current thread count: the cached record when there is a valid one for this
    configuration (:func:`calibration_key`), else a new measurement (under a second), cached
    atomically. ``refresh=True`` measures again. A measurement that finds another library
    faster makes a library the choice only when a measurement at least ``CONFIRM_AFTER_S``
    earlier found one faster too, and some library won both (:func:`confirmed` picks it;
    ``earlier``: a pending record's, or, measuring a confirmed choice again, its own or the
    one that confirmed it); else the record is
    ``pending``, NumPy's BLAS the choice, and it is measured again at the first call (a
    start, a new thread count) that long after. Returns the record: ``choice``, ``seconds``
    per library, ``pending`` or ``earlier`` where another library measured faster, ``key``,
    ``cache`` (the file), ``measured`` (True when measured now) and, then,
    ``cache_written``. Never raises over the cache: an unwritable cache directory leaves the
    result in memory only.

    Raises:
        RuntimeError: neither MKL nor oneDNN can be loaded (nothing to choose between).
    """
    names = installed()
    if not names:
        raise RuntimeError(f"calibrate: nothing to choose between ({none_installed_reason()})")
    libraries = ["numpy", *names]

    def measure_now(previous: dict[str, Any] | None) -> dict[str, Any]:
        won = _earlier_win(previous)
        seconds = measure(libraries)
        winner = decide(seconds)
        if winner != "numpy" and won is None and CONFIRM_AFTER_S <= 0:
            won = {"seconds": seconds, "measured_at_s": time.time()}
            seconds = measure(libraries)  # the second measurement, at once
            winner = decide(seconds)
        if winner == "numpy":
            return {"choice": "numpy", "seconds": seconds}
        chosen = None if won is None else confirmed(won["seconds"], seconds)
        if chosen is None:
            return {"choice": "numpy", "seconds": seconds, "pending": True}
        return {"choice": chosen, "seconds": seconds, "earlier": won}

    return _cached_measurement(calibration_key(), "blas", measure_now, _blas_record_ok, refresh)


def _earlier_win(previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """The latest measurement at least ``CONFIRM_AFTER_S`` old that found a library faster
    than NumPy's BLAS, from the record cached before (``{"seconds", "measured_at_s"}``): its
    own (pending, or a confirmed choice measured again) or, for a confirmed choice measured
    again sooner, the one that confirmed it; else None. A new measurement in which a library
    beats NumPy's BLAS again confirms a choice (:func:`confirmed`)."""
    for rec in (previous, (previous or {}).get("earlier")):
        if rec is None or decide(rec["seconds"]) == "numpy":
            continue
        at = rec.get("measured_at_s")
        if at is not None and time.time() - at >= CONFIRM_AFTER_S:
            return {"seconds": rec["seconds"], "measured_at_s": at}
    return None


def none_installed_reason() -> str:
    """Why neither MKL nor oneDNN can be used here (their errors)."""
    return "; ".join(f"{LABELS[name]}: {find(name)['error']}" for name in LIBRARIES)


def figures(seconds: dict[str, float]) -> str:
    """A calibration's seconds as ``"oneDNN 3.100 ms, NumPy's BLAS 3.400 ms"`` (fastest
    first)."""
    order = sorted(seconds, key=seconds.__getitem__)
    return ", ".join(f"{LABELS.get(lib, lib)} {seconds[lib] * 1e3:.3f} ms" for lib in order)


def _auto() -> tuple[str, str, dict[str, Any] | None]:
    """What ``"auto"`` selects, why, and the calibration record (None when nothing was
    measured: neither MKL nor oneDNN is installed, so NumPy's BLAS is the only candidate)."""
    if not installed():
        return "numpy", f"the only BLAS installed ({none_installed_reason()})", None
    try:
        rec = calibrate()
    except Exception as e:  # a failed measurement must not fail an import
        return "numpy", f"the calibration failed ({type(e).__name__}: {e}); NumPy's BLAS", None
    how = _how(rec)
    reason = (
        f"calibration at {rec['key']['threads']} thread(s), {how}: {figures(rec['seconds'])} "
        "per pass over an MLP step's GEMMs"
    )
    if rec.get("pending"):
        due = time.strftime(
            "%H:%M UTC", time.gmtime(float(rec.get("measured_at_s") or 0.0) + CONFIRM_AFTER_S)
        )
        reason += (
            f"; {LABELS[decide(rec['seconds'])]} measured faster, NumPy's BLAS until a second "
            f"measurement at least {CONFIRM_AFTER_S / 60:.0f} minutes later (at a start from "
            f"{due}, or `graphgrad info --recalibrate` then) finds it, or another library, "
            "faster too"
        )
    earlier = rec.get("earlier")
    if earlier is not None:
        gap = (rec.get("measured_at_s") or earlier["measured_at_s"]) - earlier["measured_at_s"]
        reason += f"; {gap / 60:.0f} minutes earlier: {figures(earlier['seconds'])}"
    reason += (
        f" (another library chosen only if >{CALIBRATION_MARGIN:.0%} faster than NumPy's BLAS "
        "in both; of two such, the faster over both)"
    )
    return rec["choice"], reason, rec


# ------------------------------------------------- the kernels' parallel threshold, measured
#
# Above ``PAR_MIN`` elements graphgrad's compiled kernels (optimiser updates, ReLU and its VJP,
# softmax cross-entropy) split their arrays between threads. Whether that pays depends on the
# machine: a parallel region must wake the OpenMP workers, which sleep between regions, while
# the BLAS's own workers may still be spinning on the other cores after the last GEMM (on a
# 2-vCPU AMD EPYC VM the split kernels were twice as slow as serial ones at every step size;
# on a 2-core Xeon faster). So the threshold is measured, like the BLAS: the ReLU VJP and the
# SGD-momentum update timed serial and split at the current thread count over
# ``PAR_MIN_SIZES``, each call right after a GEMM of an MLP step (the BLAS's workers as a real
# step leaves them), cached with the BLAS calibration's key plus the library in use. The
# threshold never changes a result: the kernels give the same bits at any thread count.

#: Array sizes (elements) at which the kernels are timed serial and split.
PAR_MIN_SIZES = (32768, 65536, 131072, 262144, 524288, 1048576, 2097152)
#: The split kernels must be at least this much faster to count as a win.
PAR_MIN_MARGIN = 0.05
#: A threshold record is measured again once it is this old (seconds): unlike the BLAS and
#: the layout, the threshold never changes a result, and what it measures moves with the
#: machine's load and, on a VM, with where the host puts its CPUs (on the 2-vCPU sandbox a
#: record that said "never" kept the kernels serial after the split had come to win: whole
#: 2-thread steps took 0.92-0.96 of the serial ones' time with it, 2026-12-03).
PAR_MIN_MAX_AGE_S = 86400.0
_PAR_ROUNDS, _PAR_BUDGET_S = 9, 0.3
_probe: Any = None  # the kernels timed (None: _fused.KERNELS; tests substitute fake ones)


def measure_par_min(clock: Any = None) -> dict[str, list[float]]:
    """Seconds per call of the ReLU VJP plus the SGD-momentum update (fp32) at each of
    ``PAR_MIN_SIZES``, on one thread (``serial``) and split between the current thread count
    (``split``). Each kernel call follows a GEMM of an MLP step's hidden layer (128 x 256 by
    256 x 256, fp32, the BLAS in use) and is timed alone. Rounds alternate the order of the
    two modes, for at most 9 rounds or about 0.3 s; each figure is the fastest round's."""
    clock = clock or _clock
    k = _probe or _fused.KERNELS
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 256), dtype=np.float32)
    b = rng.standard_normal((256, 256), dtype=np.float32)
    top = PAR_MIN_SIZES[-1]
    x = rng.standard_normal(top, dtype=np.float32)
    g, w, v, out = x.copy(), x.copy(), x.copy(), np.empty_like(x)
    best = {m: [math.inf] * len(PAR_MIN_SIZES) for m in ("serial", "split")}
    saved = k.PAR_MIN
    try:

        def once(mode: str, i: int) -> float:
            n = PAR_MIN_SIZES[i]
            k.PAR_MIN = 1 if mode == "split" else _fused.NEVER
            total = 0.0
            matmul(a, b)  # the BLAS's workers as a step leaves them
            t0 = clock()
            k.relu_grad(g[:n], x[:n], out[:n])
            total += clock() - t0
            matmul(a, b)
            t0 = clock()
            k.sgd(w[:n], g[:n], v[:n], 1e-12, 0.9, 0.0, False, False)
            total += clock() - t0
            return total

        for i in range(len(PAR_MIN_SIZES)):  # warm up: pages touched, workers started
            once("serial", i)
            once("split", i)
        start = clock()
        for r in range(_PAR_ROUNDS):
            for mode in ("serial", "split") if r % 2 == 0 else ("split", "serial"):
                for i in range(len(PAR_MIN_SIZES)):
                    best[mode][i] = min(best[mode][i], once(mode, i))
            if r >= 2 and clock() - start > _PAR_BUDGET_S:
                break
    finally:
        k.PAR_MIN = saved
    return best


def decide_par_min(serial: list[float], split: list[float]) -> int | None:
    """The smallest of ``PAR_MIN_SIZES`` from which the split kernels win (faster by more
    than ``PAR_MIN_MARGIN``) at that size and every larger one measured; None ("never")
    when they do not win at the largest."""
    chosen = None
    for n, t1, tn in reversed(list(zip(PAR_MIN_SIZES, serial, split, strict=True))):
        if not tn < t1 * (1 - PAR_MIN_MARGIN):
            break
        chosen = n
    return chosen


def _par_min_record_ok(rec: dict[str, Any]) -> bool:
    figures = [rec["serial"], rec["split"]]
    return (
        rec["sizes"] == list(PAR_MIN_SIZES)
        and all(type(f) is list and len(f) == len(PAR_MIN_SIZES) for f in figures)
        and all(type(t) is float and math.isfinite(t) and t > 0 for f in figures for t in f)
        and rec["par_min"] == decide_par_min(rec["serial"], rec["split"])
    )


def calibrate_par_min(refresh: bool = False) -> dict[str, Any]:
    """The kernels' parallel threshold for the current thread count and BLAS: the cached
    record (``par_min``: elements, or None for "never"; ``serial`` and ``split`` seconds per
    size; ``cache``; ``measured``) when there is a valid one, else measured now (a fraction
    of a second, :func:`measure_par_min`) and cached beside the BLAS calibration, keyed by
    :func:`calibration_key` plus the library in use, for ``PAR_MIN_MAX_AGE_S`` (a day).
    ``refresh=True`` measures again."""
    k = _probe or _fused.KERNELS
    if k is None or not getattr(k, "OPENMP", False):
        raise RuntimeError("calibrate_par_min: the kernels are not built with OpenMP")
    key = {**calibration_key(), "kind": "par_min", "blas": blas()}

    def measure_now(_previous: dict[str, Any] | None) -> dict[str, Any]:
        t = measure_par_min()
        return {
            "sizes": list(PAR_MIN_SIZES),
            **t,
            "par_min": decide_par_min(t["serial"], t["split"]),
        }

    return _cached_measurement(
        key, "parmin", measure_now, _par_min_record_ok, refresh, PAR_MIN_MAX_AGE_S
    )


_par_min_choice: dict[str, Any] = {"par_min": 0, "reason": "not chosen yet", "calibration": None}


def _describe_par_min(rec: dict[str, Any]) -> str:
    how = _how(rec)
    pairs = ", ".join(
        f"{n // 1024}k {t1 * 1e6:.0f}/{tn * 1e6:.0f}"
        for n, t1, tn in zip(rec["sizes"], rec["serial"], rec["split"], strict=True)
    )
    return (
        f"calibration at {rec['key']['threads']} thread(s) with "
        f"{LABELS.get(rec['key']['blas'], rec['key']['blas'])}, {how}: ReLU VJP + "
        f"SGD-momentum us serial/split after a GEMM: {pairs}"
    )


def _apply_par_min(refresh: bool = False) -> None:
    """Set the kernels' parallel threshold (``_fused.set_par_min``): ``GRAPHGRAD_PAR_MIN``
    when set, else at one thread the default (the kernels are serial anyway), else the
    calibration's for this thread count and BLAS (None: never split). A calibration that
    fails keeps the default, with the reason."""
    k = _fused.KERNELS
    cal = None
    if k is None:
        n, reason = 0, "no compiled kernels in use"
    elif _fused.FORCED_PAR_MIN is not None:
        n = _fused.FORCED_PAR_MIN
        reason = f"GRAPHGRAD_PAR_MIN={n} in the environment, nothing measured"
    elif not getattr(k, "OPENMP", False):
        n, reason = _fused.DEFAULT_PAR_MIN, "kernels built without OpenMP: always serial"
    elif _threads[0] < 2:
        n, reason = _fused.DEFAULT_PAR_MIN, "1 thread: the kernels run serially, nothing measured"
    else:
        try:
            cal = calibrate_par_min(refresh)
        except Exception as e:  # a failed measurement must not fail an import
            n = _fused.DEFAULT_PAR_MIN
            reason = f"the calibration failed ({type(e).__name__}: {e}); the default"
        else:
            n = _fused.NEVER if cal["par_min"] is None else cal["par_min"]
            reason = _describe_par_min(cal)
    _fused.set_par_min(n)
    _par_min_choice.update(par_min=n, reason=reason, calibration=cal)


def recalibrate_par_min() -> None:
    """Measure the kernels' parallel threshold again (``graphgrad info --recalibrate``) where
    it is measured at all (not forced, several threads, OpenMP kernels), and apply it."""
    _apply_par_min(refresh=True)


def par_min_info() -> dict[str, Any]:
    """The kernels' parallel threshold: ``par_min`` (elements; None: never split, the
    kernels stay serial, or no compiled kernels), ``reason`` (measured figures, forced, or
    one thread) and, when measured, ``calibration`` (``serial``/``split`` seconds per size,
    ``cache``, ``measured_now``, ``threads``)."""
    n = _par_min_choice["par_min"]
    info: dict[str, Any] = {
        "par_min": None if n in (0, _fused.NEVER) else n,
        "reason": _par_min_choice["reason"],
    }
    cal = _par_min_choice["calibration"]
    if cal is not None:
        info["calibration"] = _summary(cal, "sizes", "serial", "split")
    return info


# ------------------------------------------- the layout of linear's products, measured
#
# ``linear``'s forward ``x @ W.T`` (W is (out, in), as in PyTorch) can also be computed as
# ``(W @ x.T).T``: the same numbers, written as the (out, S) transpose of the (S, out) result,
# so the result is a column-major (Fortran-ordered) array. Its upstream gradient is then
# column-major too, the weight gradient ``G.T @ x`` reads it as a row-major G.T, and the input
# gradient ``G @ W`` comes back in the input's layout (``(W.T @ G.T).T`` for a column-major
# input). A BLAS runs these other transposes at another speed. On a 2-vCPU AMD EPYC (Zen 5)
# with NumPy's OpenBLAS at 1 thread, whole steps of 784-512-512-10 MLPs were 27% faster that
# way at batch 32 and 4% at batch 128, but 3-6% slower at batch 512-1024, 6% slower for
# 128-wide layers and 20% slower for a 784-10 softmax regression: it pays where the batch is
# smaller than the layer's width. So "columns" computes exactly those layers that way (batch <
# width); the others stay row-major. Whether that beats "rows" everywhere depends on the BLAS,
# the CPU and the thread count, so it is measured like the library: a training step over the
# calibration's layers timed both ways with the BLAS in use, cached beside the other
# calibrations, "columns" chosen only when it is more than LAYOUT_MARGIN faster.
# ``GRAPHGRAD_LAYOUT=rows|columns`` forces it. The step includes the weights' momentum-SGD
# updates: on a 2-vCPU Intel Xeon with oneDNN at 2 threads the products alone ran 4-5% faster
# in "columns", but with the updates "rows" was 15-20% faster, and whole compiled steps took
# 0.88 (784-256-256-10) and 0.96 (3072-512-512-10) of their time in "columns": there both
# cores read all of W1 in ``W1 @ x.T``, and each line the update then writes waits for the
# other core to drop its copy. (SGD-momentum's write prefetches, in ``_kernels``, later took
# most of that wait away: "columns" then cost 1.03-1.07x in whole steps at 2 threads, and the
# calibration's two figures came within 2% of each other.)
# Results agree to float rounding (a GEMM in another order of operands may round
# differently), so metrics and checkpoints record it.

#: The two layouts: "rows" (``x @ W.T``, row-major outputs) and "columns" (``(W @ x.T).T``
#: for a layer whose batch is smaller than its width).
LAYOUTS = ("rows", "columns")
#: "columns" must be at least this much faster to be chosen.
LAYOUT_MARGIN = 0.03
_LAYOUT_ROUNDS, _LAYOUT_BUDGET_S = 9, 0.3
#: Which layers "columns" computes column-major (part of a cached record: another rule, a new
#: measurement): those whose batch is smaller than their width.
_LAYOUT_RULE = (
    "columns where batch < width; input gradients in their input's layout; timed over the "
    "forward, the backward and the momentum-SGD updates"
)
#: The layout in use: ``COLUMNS[0]`` is True for "columns" (a list, set in place; read by
#: ``ops.linalg``'s ``linear`` on every call).
COLUMNS = [False]


#: The layout calibration's layers, (m, k, n) of ``x @ W.T``: the 784-256-256-10 MLP at batch
#: 128, then a 512-wide hidden layer at batch 256; the first layer's input needs no gradient.
LAYOUT_LAYERS = ((128, 784, 256), (128, 256, 256), (128, 256, 10), (256, 512, 512))


#: The layout calibration's learning rate and momentum: its weights take real momentum-SGD
#: updates (``_fused.sgd``), so small that they stay where they started.
_LAYOUT_LR, _LAYOUT_MU = 1e-9, 0.9


def _layout_sets(layout: str) -> list[list[tuple[Any, ...]]]:
    """The layout calibration's arrays in ``layout``: ``LAYOUT_LAYERS`` as models (a change of
    batch starts another), each a list of layers ``(first, cols, x, W, G, dW, v)``: input,
    weight, upstream gradient, weight gradient, momentum buffer (fp32, from a fixed seed). In
    "columns" a layer whose batch is smaller than its width has a column-major G, and the
    layer after it a column-major input, as ``linear`` makes them."""
    rng = np.random.default_rng(0)
    models: list[list[tuple[Any, ...]]] = []
    prev_cols = False
    for i, (m, k, n) in enumerate(LAYOUT_LAYERS):
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        g = rng.standard_normal((m, n), dtype=np.float32)
        first = i == 0 or LAYOUT_LAYERS[i - 1][0] != m
        cols = layout == "columns" and m < n
        if first:
            models.append([])
        elif prev_cols:  # (only in "columns")
            x = np.asfortranarray(x)
        g = np.asfortranarray(g) if cols else g
        models[-1].append((first, cols, x, w, g, np.empty_like(w), np.zeros_like(w)))
        prev_cols = cols
    return models


def _layout_pass(layout: str, sets: list[list[tuple[Any, ...]]]) -> None:
    """One training step's worth of work per model of the layout calibration (see
    :func:`measure_layout`), as ``linear``, its gradient rules and ``SGD(momentum=0.9)`` do it
    in ``layout``: the forward products layer by layer, then from the last layer back its
    weight gradient, its input gradient (not the first layer's) and its weight's momentum-SGD
    update. The updates count: at more than one thread each thread updates its own part of a
    weight, and the next forward product reads the weights in another order in each layout."""
    for model in sets:
        for _first, cols, x, w, _g, _dw, _v in model:
            if cols:
                matmul(w, x.T)
            else:
                matmul(x, w.T)
        for first, _cols, x, w, g, dw, v in reversed(model):
            matmul(g.T, x, out=dw)
            if not first:  # in the input's layout (a column-major input only in "columns")
                if x.flags.c_contiguous:
                    matmul(g, w)
                else:
                    matmul(w.T, g.T)
            _fused.sgd(w, dw, v, None, _LAYOUT_LR, _LAYOUT_MU, 0.0, False, False)


def measure_layout(clock: Any = None) -> dict[str, float]:
    """Seconds per pass over ``LAYOUT_LAYERS`` as a training step runs them (the forward
    products; from the last layer back, the weight gradient, the input gradient but for the
    first layer, and the weight's momentum-SGD update; fp32, the BLAS in use, the current
    thread count) in each of ``LAYOUTS``. In "columns" a layer whose batch is smaller than
    its width computes its forward as ``(W @ x.T).T`` (a column-major output, and a
    column-major upstream gradient), and an input gradient comes back in its input's layout,
    as ``linear`` and its rule do. The two take turns for at most 9 rounds or about 0.3 s;
    each figure is the fastest round's."""
    clock = clock or _clock
    sets = {lay: _layout_sets(lay) for lay in LAYOUTS}
    best = {lay: math.inf for lay in LAYOUTS}
    for lay in LAYOUTS:  # warm up
        _layout_pass(lay, sets[lay])
    start = clock()
    for r in range(_LAYOUT_ROUNDS):
        for lay in LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]:
            t0 = clock()
            _layout_pass(lay, sets[lay])
            best[lay] = min(best[lay], clock() - t0)
        if r >= 2 and clock() - start > _LAYOUT_BUDGET_S:
            break
    return best


def decide_layout(seconds: dict[str, float]) -> str:
    """ "columns" when it is faster than "rows" by more than ``LAYOUT_MARGIN``, else "rows"."""
    return "columns" if seconds["columns"] < seconds["rows"] * (1 - LAYOUT_MARGIN) else "rows"


def _layout_record_ok(rec: dict[str, Any]) -> bool:
    return (
        rec["layers"] == [list(layer) for layer in LAYOUT_LAYERS]
        and rec.get("rule") == _LAYOUT_RULE
        and _seconds_ok(rec["seconds"], LAYOUTS)
        and rec["layout"] == decide_layout(rec["seconds"])
    )


def calibrate_layout(refresh: bool = False) -> dict[str, Any]:
    """The layout of ``linear``'s products for the current thread count and BLAS: the cached
    record (``layout``, ``seconds`` per layout, ``cache``, ``measured``) when there is a valid
    one, else measured now (:func:`measure_layout`, a fraction of a second) and cached, keyed
    by :func:`calibration_key` plus the library in use. ``refresh=True`` measures again."""
    key = {**calibration_key(), "kind": "layout", "blas": blas()}

    def measure_now(_previous: dict[str, Any] | None) -> dict[str, Any]:
        seconds = measure_layout()
        layers = [list(layer) for layer in LAYOUT_LAYERS]
        return {
            "layers": layers,
            "rule": _LAYOUT_RULE,
            "seconds": seconds,
            "layout": decide_layout(seconds),
        }

    return _cached_measurement(key, "layout", measure_now, _layout_record_ok, refresh)


_layout_choice: dict[str, Any] = {"layout": "rows", "reason": "not chosen yet", "calibration": None}


def _apply_layout(refresh: bool = False) -> None:
    """Set the layout: ``GRAPHGRAD_LAYOUT`` when set, else the calibration's for this thread
    count and BLAS. A calibration that fails keeps "rows", with the reason."""
    cal = None
    env = os.environ.get("GRAPHGRAD_LAYOUT", "").strip().lower()
    if env in LAYOUTS:
        lay, reason = env, f"GRAPHGRAD_LAYOUT={env} in the environment, nothing measured"
    else:
        if env:
            warnings.warn(
                f"GRAPHGRAD_LAYOUT={env!r}: expected 'rows' or 'columns'; measuring instead",
                stacklevel=2,
            )
        try:
            cal = calibrate_layout(refresh)
        except Exception as e:  # a failed measurement must not fail an import
            lay, reason = "rows", f"the calibration failed ({type(e).__name__}: {e}); rows"
        else:
            lay = cal["layout"]
            how = _how(cal)
            s = cal["seconds"]
            reason = (
                f"calibration at {cal['key']['threads']} thread(s) with "
                f"{LABELS.get(cal['key']['blas'], cal['key']['blas'])}, {how}: rows "
                f"{s['rows'] * 1e3:.3f} ms, columns {s['columns'] * 1e3:.3f} ms "
                f"per step of linear's products and momentum-SGD updates (columns only if "
                f">{LAYOUT_MARGIN:.0%} faster)"
            )
    _use_layout(lay, reason, cal)


def _use_layout(lay: str, reason: str, cal: dict[str, Any] | None) -> None:
    COLUMNS[0] = lay == "columns"
    _layout_choice.update(layout=lay, reason=reason, calibration=cal)


def set_layout(name: str) -> str:
    """Use layout ``name`` for ``linear``'s products: ``"rows"``, ``"columns"`` or ``"auto"``
    (``GRAPHGRAD_LAYOUT`` if set, else the calibration's). Returns the previous layout
    (``"rows"`` or ``"columns"``). For tests and benchmarks; users set ``GRAPHGRAD_LAYOUT``.

    Raises:
        ValueError: an unknown name.
    """
    previous = layout()
    if name == "auto":
        _apply_layout()
    elif name in LAYOUTS:
        _use_layout(name, f"set_layout({name!r})", None)
    else:
        raise ValueError(f"set_layout: unknown layout {name!r}; choose 'rows', 'columns' or 'auto'")
    return previous


def recalibrate_layout() -> None:
    """Measure the layout again (``graphgrad info --recalibrate``) unless it is forced."""
    _apply_layout(refresh=True)


def layout() -> str:
    """The layout of ``linear``'s products in use: ``"rows"`` or ``"columns"``."""
    return "columns" if COLUMNS[0] else "rows"


def layout_info() -> dict[str, Any]:
    """The layout in use (``layout``), why (``reason``) and, when measured, ``calibration``
    (``seconds`` per layout, ``cache``, ``measured_now``, ``threads``)."""
    info: dict[str, Any] = {"layout": layout(), "reason": _layout_choice["reason"]}
    cal = _layout_choice["calibration"]
    if cal is not None:
        info["calibration"] = _summary(cal)
    return info


def _apply_measured() -> None:
    """The choices measured per library and thread count, for the ones now in force (cached,
    or measured once): the kernels' parallel threshold (timed after a GEMM of this library)
    and the layout of linear's products."""
    _apply_par_min()
    _apply_layout()


_choice: dict[str, Any] = {"requested": "numpy", "reason": "NumPy's BLAS selected"}


def set_blas(name: str) -> str:
    """Select the library for 2-D matrix products: ``"auto"`` (the default: the fastest of
    those installed, as measured here, see :func:`calibrate`; NumPy's BLAS where no other is
    installed), ``"numpy"`` (NumPy's own BLAS), ``"mkl"`` (Intel MKL, ``pip install mkl``)
    or ``"onednn"`` (oneDNN's float32 GEMM, ``pip install onednn-cpu-gomp``; float64 products
    stay with NumPy's BLAS). Returns the previous request, so that ``set_blas(previous)``
    restores it.

    Raises:
        RuntimeError: ``"mkl"`` or ``"onednn"`` was asked for and cannot be loaded (the
            message says why).
        ValueError: an unknown name.
    """
    previous = _choice["requested"]
    calibration = None
    if name == "auto":
        chosen, reason, calibration = _auto()
    elif name == "numpy" or name in LIBRARIES:
        chosen, reason = name, f"set_blas({name!r})"
    else:
        raise ValueError(
            f"set_blas: unknown BLAS {name!r}; choose 'auto', 'numpy', 'mkl' or 'onednn'"
        )
    if chosen != "numpy":
        found = find(chosen)
        if "error" in found:
            raise RuntimeError(f"set_blas({chosen!r}): {found['error']}")
    _use(chosen)
    if chosen == "mkl":
        _set_mkl_threads(blas_threads())
    elif chosen == "onednn":
        _set_onednn_threads(blas_threads())
    _choice.update(requested=name, reason=reason, calibration=calibration)
    _apply_measured()
    return previous


@contextlib.contextmanager
def using_blas(name: str) -> Iterator[None]:
    """``with gg.using_blas("onednn"): ...``: :func:`set_blas` for the block, the previous
    library restored after it (also on an exception)."""
    previous = set_blas(name)
    try:
        yield
    finally:
        set_blas(previous)


def blas() -> str:
    """The library 2-D matrix products use now: ``"numpy"``, ``"mkl"`` or ``"onednn"``."""
    return _selected[0]


def blas_info() -> dict[str, Any]:
    """The library in use (``blas``), what was asked for (``requested``: ``"auto"``,
    ``"numpy"``, ``"mkl"`` or ``"onednn"``), why that library (``reason``), the thread count
    (``threads``)
    and the BLAS's (``blas_threads``: at most the CPUs available), whose threads run NumPy's
    OpenBLAS products (``pool``: ``"graphgrad"`` or ``"openblas"``, see :func:`set_pool`;
    ``pool_reason``) and, for MKL and oneDNN, the shared library loaded (``library``) and
    the threads they run on (``mkl_threading``, ``onednn_threading``); for oneDNN, which
    products its matmul primitive takes (``onednn_matmul``; the rest: ``dnnl_sgemm``)."""
    info: dict[str, Any] = {
        "blas": blas(),
        "requested": _choice["requested"],
        "reason": _choice["reason"],
        "threads": _threads[0],
        "blas_threads": blas_threads(),
        "pool": _pool["state"],
        "pool_reason": _pool["reason"],
        "omp_wait": _fused.OMP_WAIT[0],
    }
    if _selected[0] != "numpy":
        info["library"] = find(_selected[0]).get("path")
    if _mkl.get("threading"):  # MKL loaded (selected or calibrated): its OpenMP runtime
        info["mkl_threading"] = _mkl["threading"]
    if _onednn.get("threading"):
        info["onednn_threading"] = _onednn["threading"]
        info["onednn_matmul"] = _onednn["matmul"]
    cal = _choice.get("calibration")
    if cal is not None:
        info["calibration"] = _summary(cal)
    return info


# ------------------------------------------------------------------------------- threads

_threads = [1]  # graphgrad's thread count (a list: set in place)
_warned_cap: dict[int, int] = {}  # set_num_threads(n) -> the BLAS count it was capped at, warned


def cpus_available() -> int:
    """The CPUs this process may run on (its affinity mask: ``taskset``, a container's
    cpuset), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is a positive integer, else the CPUs this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return cpus_available()


def blas_threads(n: int | None = None) -> int:
    """The threads the BLAS gets for a setting of ``n`` (default: the current one): ``n``, at
    most the CPUs this process may run on. More BLAS threads than CPUs take turns on them,
    and OpenBLAS's workers wait for work by spinning: measured on a 2-vCPU AMD EPYC with the
    process on one CPU and 2 OpenBLAS threads, a 128x784 by 784x256 GEMM took 8-24 ms
    instead of 0.24 ms."""
    return min(_threads[0] if n is None else n, cpus_available())


def _set_mkl_threads(n: int) -> None:
    lib = _mkl.get("lib")
    if lib is not None:
        # MKL's GNU threading layer runs on GNU OpenMP's threads, which a forked child does
        # not have: there MKL keeps one thread, as the kernels do (a parallel GEMM would wait
        # for the missing workers forever)
        lib.MKL_Set_Num_Threads(ctypes.c_int(1 if _pool["forked"] else n))


def _set_onednn_threads(n: int) -> None:
    setter = _onednn.get("set_threads")
    if setter is not None:
        # oneDNN's OpenMP build runs omp_get_max_threads() threads: GNU OpenMP's count for the
        # calling thread, which graphgrad's kernels leave alone (they pass theirs to each
        # loop). One in a forked child, as for MKL.
        setter(1 if _pool["forked"] else n)


_OPENBLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


_openblas_libraries = _fused.openblas_libraries


def _openblas_setters() -> list[Any]:
    """The ``openblas_set_num_threads`` functions of the OpenBLAS copies loaded in this process
    (NumPy's; Linux only; elsewhere threadpoolctl if installed)."""
    found = (_fused.first_symbol(lib, _OPENBLAS_SETTERS) for lib in _openblas_libraries())
    return [fn for fn in found if fn is not None]


_POOL_CHOICES = ("graphgrad", "openblas")
#: whose threads run NumPy's OpenBLAS products: "graphgrad" (the kernels' OpenMP threads, by
#: OpenBLAS's threads callback) or "openblas" (its own); what was asked for; why; whether this
#: is a forked child
_pool: dict[str, Any] = {
    "state": "openblas",
    "requested": "graphgrad",
    "reason": "not set up yet",
    "forked": False,
}
_POOL_ON = (
    "OpenBLAS's products run on graphgrad's OpenMP threads, the kernels' (one pool; "
    "GRAPHGRAD_BLAS_POOL=openblas for OpenBLAS's own)"
)


def set_pool(name: str) -> str:
    """Whose threads run the parallel jobs of NumPy's OpenBLAS: ``"graphgrad"`` (the default
    where it can: the OpenMP threads graphgrad's kernels split on, through OpenBLAS's threads
    callback) or ``"openblas"`` (OpenBLAS's own pool). Returns the previous request.

    One pool means the kernel after a GEMM (a ReLU VJP, an optimiser update) finds its
    threads awake instead of waking sleeping ones, and no idle pool spins on the cores
    another one needs: on a 2-vCPU AMD EPYC the SGD-momentum update of 1.57M floats right
    after a GEMM took 171-187 µs split between the pool's two threads against 287-384 µs on
    one, while with OpenBLAS's own threads the split took 2.4 ms. The jobs and their split
    are OpenBLAS's, so every product gives the same bits either way. The jobs of one product
    run at a time (two Python threads multiplying at once take turns), in worker slots that
    OpenBLAS's own threads do not use (its parallel LU, in ``numpy.linalg.solve``, still runs
    on them), so at most half of OpenBLAS's MAX_THREADS BLAS threads: above that, OpenBLAS's
    own threads run the products. ``GRAPHGRAD_BLAS_POOL=openblas`` keeps OpenBLAS's own
    threads from the start; so do graphgrad's kernels built without OpenMP and an OpenBLAS
    without the callback (before 0.3.27). A forked child goes back to OpenBLAS's threads (GNU
    OpenMP's do not survive ``fork()``). ``blas_info()["pool"]`` says which runs now, and
    ``["pool_reason"]`` why.

    Raises:
        ValueError: an unknown name, or ``"graphgrad"`` where it can never be (the message
            says why).
    """
    if name not in _POOL_CHOICES:
        raise ValueError(f"set_pool: {name!r} is not one of {', '.join(_POOL_CHOICES)}")
    if name == "graphgrad":
        why = _pool_impossible(_fused.pool_setters())
        if why:
            raise ValueError(f"set_pool('graphgrad'): {why}")
    previous, before = _pool["requested"], _pool["state"]
    _pool["requested"] = name
    if name == "openblas":
        _pool["reason"] = "set_pool('openblas')"  # for "graphgrad", _sync_pool says why
    _sync_pool()
    if _pool["state"] != before:
        _apply_measured()  # the kernels' split size and the layout were measured per pool
    return previous


def _pool_impossible(setters: list[tuple[int, int]]) -> str:
    """Why the pool can never be used in this process (``setters``: ``_fused.pool_setters()``),
    or ''."""
    kernels = _fused.KERNELS
    if kernels is None or not hasattr(kernels, "install_blas_pool"):
        return "graphgrad's compiled kernels are not built"
    if not kernels.OPENMP:
        return "graphgrad's kernels were built without OpenMP"
    if _pool["forked"]:
        return (
            "a forked child: GNU OpenMP's threads do not survive fork(), so OpenBLAS's own "
            "threads run the products and the kernels run on one thread"
        )
    if not setters:
        return (
            "NumPy's BLAS has no threads callback (OpenBLAS 0.3.27 or later has one, with "
            "MAX_THREADS in its configuration)"
        )
    return ""


def _sync_pool() -> None:
    """Install or remove the callback as the request, the build, a fork and the thread count
    allow (called by set_pool, set_num_threads, at import and in a forked child); under the
    request "openblas" it only removes it."""
    kernels = _fused.KERNELS
    setters = _fused.pool_setters() if kernels is not None else []
    why = ""
    if _pool["requested"] == "graphgrad":
        why = _pool_impossible(setters)
        top = min((t for _, t in setters), default=0)
        if not why and blas_threads() > top // 2:
            why = (
                f"{blas_threads()} BLAS threads, more than half of OpenBLAS's MAX_THREADS "
                f"({top}): the pool's jobs take worker slots OpenBLAS's own threads would use"
            )
        _pool["reason"] = why or _POOL_ON
    if _pool["requested"] == "graphgrad" and not why:
        for addr, top in setters:
            kernels.install_blas_pool(addr, True, top)
        _pool["state"] = "graphgrad"
    elif _pool["state"] == "graphgrad":
        for addr, _ in setters:
            kernels.install_blas_pool(addr, False)
        _pool["state"] = "openblas"


def _pool_after_fork_in_child() -> None:
    # GNU OpenMP's worker threads are gone in a forked child, and a parallel region there
    # would wait for them forever: the products go back to OpenBLAS's own threads (which
    # restart after a fork) and the kernels run on the calling thread.
    _pool["forked"] = True
    _set_mkl_threads(1)
    _set_onednn_threads(1)
    if _fused.KERNELS is not None and hasattr(_fused.KERNELS, "install_blas_pool"):
        _sync_pool()
        _fused.KERNELS.set_num_threads(1)


def _init_pool() -> None:
    env = _fused.pool_env()
    if env not in ("", *_POOL_CHOICES):
        warnings.warn(
            f"GRAPHGRAD_BLAS_POOL={env!r} is not one of graphgrad, openblas; using the default",
            stacklevel=1,
        )
    if env == "openblas":
        _pool["requested"] = "openblas"
        _pool["reason"] = "GRAPHGRAD_BLAS_POOL=openblas in the environment"
    else:
        _sync_pool()  # set_blas, next, measures what depends on it
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_pool_after_fork_in_child)


def set_num_threads(n: int) -> int:
    """Use ``n`` threads for the matrix products (the selected BLAS: MKL's or NumPy's
    OpenBLAS's own thread pool) and for graphgrad's compiled kernels (optimiser updates, ReLU,
    softmax cross-entropy, bias sums). Returns the previous count.

    Elementwise kernels give the same bits at any thread count, and so do the kernels' sums
    (per-row or per-column partials, added in a fixed order); a BLAS's GEMM may round
    differently at another thread count, so runs repeat bit for bit for a fixed count.
    Under ``set_blas("auto")`` a new count chooses the library again (its calibration for
    that count: cached, or measured once).

    Raises:
        ValueError: ``n`` is not a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: need a positive integer, got {n!r}")
    _threads_chosen[0] = True
    previous = _threads[0]
    _threads[0] = n
    if _fused.KERNELS is not None and hasattr(_fused.KERNELS, "set_num_threads"):
        # any n works: with more OpenMP threads than CPUs libgomp spins only briefly before
        # sleeping (its throttled count); a forked child keeps one thread (see set_pool)
        _fused.KERNELS.set_num_threads(1 if _pool["forked"] else n)
    nb = blas_threads(n)
    if nb < n and _warned_cap.get(n) != nb:
        _warned_cap[n] = nb
        warnings.warn(
            f"set_num_threads({n}): this process may run on {nb} CPU(s) (its CPU affinity), "
            f"so the BLAS gets {nb} thread(s); graphgrad's kernels get {n}. More BLAS "
            "threads than CPUs spin while they wait for each other (a GEMM ran 30-100x "
            "slower).",
            RuntimeWarning,
            stacklevel=2,
        )
    if "lib" in _mkl:
        _set_mkl_threads(nb)
    if "lib" in _onednn:
        _set_onednn_threads(nb)
    setters = _openblas_setters()
    for fn in setters:
        fn.argtypes, fn.restype = [ctypes.c_int], None
        fn(nb)
    if not setters:
        try:
            import threadpoolctl
        except ImportError:
            pass
        else:
            threadpoolctl.threadpool_limits(nb, user_api="blas")
    _sync_pool()  # at most half of OpenBLAS's MAX_THREADS for the pool (see set_pool)
    if n != previous and _choice["requested"] == "auto":
        set_blas("auto")  # the calibration is per thread count: cached, or measured once
    elif n != previous:
        _apply_measured()  # per thread count too
    return previous


#: whether the thread count was chosen (gg.set_num_threads called, or OMP_NUM_THREADS set)
#: rather than defaulted to the CPUs available: distributed.init() divides a default one
#: between the ranks on a node
_threads_chosen = [False]


def set_default_threads(n: int) -> int:
    """:func:`set_num_threads` for a default count (``distributed.init()``'s share of a
    node's CPUs): :func:`threads_chosen` stays as it was. Returns the previous count."""
    chosen = _threads_chosen[0]
    try:
        return set_num_threads(n)
    finally:
        _threads_chosen[0] = chosen


def threads_chosen() -> bool:
    """Whether the thread count was chosen (``gg.set_num_threads``, or ``OMP_NUM_THREADS``)
    rather than defaulted to the CPUs this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return _threads_chosen[0] or (env.isdigit() and int(env) > 0)


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


def matmul(a: Any, b: Any, out: np.ndarray | None = None) -> Any:
    """``np.matmul(a, b)``; 2-D float products go to MKL or oneDNN when it is selected (oneDNN:
    float32 only), but not those with a side of one (a batch of one sample's): NumPy calls
    GEMV for a row times a matrix, which ran 1.1-4.2x faster than oneDNN's and 1.3-1.4x faster
    than MKL's GEMM on a 3072 x 512 layer of one sample (Zen 4, 1 thread), and a column times
    a row goes to :func:`outer`. ``out``: a 2-D
    array of the product's shape and dtype to write it into, its rows contiguous but
    possibly further apart (a padded weight gradient, :func:`graphgrad._memory.empty_grad`):
    the same BLAS call, with that row stride."""
    if type(a) is np.ndarray and type(b) is np.ndarray:
        sa, sb = a.shape, b.shape
        if len(sa) == 2 and len(sb) == 2:
            call = _calls.get(a.dtype) if _calls else None
            if (
                call is not None
                # gemm_call's rule, inline (the hot path): size first, most small products
                # stop there; no side of one
                and sa[0] * sa[1] * sb[1] >= call[2]
                and sa[0] > 1
                and sa[1] > 1
                and sb[1] > 1
                and b.dtype == a.dtype
                and sa[1] == sb[0]
                and a.size > 0
                and b.size > 0
                and max(*sa, sb[1]) <= _INT_MAX
            ):
                la, lb = _c_layout(a), _c_layout(b)
                if la is not None and lb is not None:
                    if out is None:
                        out = np.empty((a.shape[0], b.shape[1]), a.dtype)
                    _fused.KERNELS.gemm(call[0], la[0], la[1], lb[0], lb[1], out, 0.0, call[1])
                    return out
            if (
                sa[1] == 1
                and sb[0] == 1
                and sa[0] > 1
                and sb[1] > 1
                and a.dtype == b.dtype
                and (a.dtype == _F32 or a.dtype == _F64)
            ):
                return outer(a, b, out)
    return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)


def outer(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b)`` for a column ``a`` (M, 1) and a row ``b`` (1, N) of one float dtype,
    M, N > 1, bit for bit, into ``out`` (M, N) if given: a broadcast multiply, then + 0.0.

    NumPy gives such a product to no BLAS: its own scalar loop sums ``0 + a_m * b_n`` element
    by element. The compiled kernel (``_fused.outer``) makes each element the same way in one
    vectorised pass; without it, a broadcast multiply then ``+ 0.0``, which turns a product's
    -0.0 into the +0.0 of NumPy's sum from 0 and changes nothing else (a NaN stays the same
    NaN). A 256 x 784 float32 weight gradient of a batch of one sample, Zen 4, 1 thread:
    NumPy's loop 224-353 µs, the multiply and the add 97, the kernel 12."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    if not _fused.outer(a, b, out):
        np.multiply(a, b, out=out)
        np.add(out, 0.0, out=out)
    return out


_NUMPY_CBLAS_NAMES = (  # (sgemm, dgemm, ILP64): the wheels' prefixed symbols first
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", True),
    ("cblas_sgemm64_", "cblas_dgemm64_", True),
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm", False),
)


@functools.cache
def numpy_cblas() -> dict[Any, Any]:
    """The ``cblas_sgemm``/``cblas_dgemm`` of the OpenBLAS NumPy loaded (ILP64 in NumPy's
    wheels; from ``/proc/self/maps``, so Linux only), found once: ``{float32: address,
    float64: address, "ilp64": bool, "gemv": {float32: address, float64: address}}`` (the
    ``cblas_?gemv`` beside them, or ``{}``), or ``{}``. :func:`matmul_into` calls the GEMMs
    with beta != 0, so that the product is added inside the GEMM as MKL's is, instead of a
    matmul, a scale and an add; ``graphgrad.compiled``'s plans call both as NumPy does.
    (Read only: the same dict is returned every time.)"""
    for lib in _openblas_libraries():
        for sname, dname, ilp64 in _NUMPY_CBLAS_NAMES:
            sfn, dfn = getattr(lib, sname, None), getattr(lib, dname, None)
            if sfn is not None and dfn is not None:
                addr = ctypes.cast
                sv = getattr(lib, sname.replace("gemm", "gemv"), None)
                dv = getattr(lib, dname.replace("gemm", "gemv"), None)
                gemv = (
                    {}
                    if sv is None or dv is None
                    else {
                        _F32: addr(sv, ctypes.c_void_p).value,
                        _F64: addr(dv, ctypes.c_void_p).value,
                    }
                )
                return {
                    _F32: addr(sfn, ctypes.c_void_p).value,
                    _F64: addr(dfn, ctypes.c_void_p).value,
                    "ilp64": ilp64,
                    "gemv": gemv,
                }
    return {}


def gemm_addresses() -> dict[Any, tuple[int, int, int]]:
    """The dict :func:`gemm_call` reads (dtype -> (address, calling convention, fewest
    multiply-adds) of MKL's or oneDNN's GEMM while one is selected, else empty), itself:
    changed in place whenever the selection changes, so a compiled step's guard can tell
    whether its entry is still the same object."""
    return _calls


def gemm_address(dtype: Any) -> int | None:
    """The address of the GEMM ``matmul`` calls for 2-D products of ``dtype`` now: MKL's
    ``cblas_?gemm`` (LP64) or oneDNN's ``dnnl_sgemm`` while it is selected, else None
    (``np.matmul``, NumPy's own BLAS)."""
    call = _calls.get(dtype)
    return None if call is None else call[0]


def gemm_call(dtype: Any, shape: tuple[int, int, int] | None = None) -> tuple[int, int] | None:
    """``(address, calling convention)`` of the GEMM ``matmul`` calls for 2-D products of
    ``dtype`` now (``GEMM_CBLAS``: MKL's; ``GEMM_DNNL``: oneDNN's), or None where they go to
    ``np.matmul``; with ``shape`` ``(M, N, K)``, for a product of that shape: None also for
    one with a side of one (NumPy's GEMV or its own loop is faster there) or of fewer
    multiply-adds than the library takes (``ONEDNN_MIN_MNK``, ``MKL_MIN_MNK``). The rule
    ``matmul`` applies inline, and the compiled plans through this."""
    call = _calls.get(dtype)
    if call is None:
        return None
    if shape is not None:
        m, n, k = shape
        if m * n * k < call[2] or min(m, n, k) < 2:
            return None
    return call[0], call[1]


def matmul_into(a: Any, b: Any, out: np.ndarray, beta: float) -> bool:
    """``out = a @ b + beta * out`` in place for 2-D float arrays of ``out``'s dtype, the
    product added inside one GEMM call (MKL's or oneDNN's when selected, else, for beta != 0, the
    ``cblas_?gemm`` of NumPy's own OpenBLAS: the product is never stored on its own), else
    ``np.matmul`` then ``out *= beta; out += product``. ``out``: C-contiguous, or with its
    rows further apart (a padded gradient). Returns False, doing nothing, when the arrays do
    not fit (other dtypes or ranks, shapes that do not match)."""
    if not (
        type(a) is np.ndarray
        and type(b) is np.ndarray
        and a.ndim == 2
        and b.ndim == 2
        and a.dtype == out.dtype == b.dtype
        and out.dtype in (_F32, _F64)
        and out.shape == (a.shape[0], b.shape[1])
        and a.shape[1] == b.shape[0]
        and _memory.rows_contiguous(out)
        and out.flags.writeable
    ):
        return False
    fn: int | None = None
    conv = GEMM_CBLAS
    call = gemm_call(out.dtype, (a.shape[0], b.shape[1], a.shape[1]))
    if call is not None:
        fn, conv = call  # else a small product or one with a side of one, or none chosen
    if fn is None and beta != 0 and _fused.KERNELS is not None:
        found = numpy_cblas()
        fn = found.get(out.dtype)
        conv = GEMM_CBLAS64 if found.get("ilp64") else GEMM_CBLAS
    if (
        fn is not None
        and a.size > 0
        and b.size > 0
        and (conv != GEMM_CBLAS or max(*a.shape, b.shape[1]) <= _INT_MAX)
    ):
        la, lb = _c_layout(a), _c_layout(b)
        if la is not None and lb is not None:
            _fused.KERNELS.gemm(fn, la[0], la[1], lb[0], lb[1], out, beta, conv)
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
    _init_pool()
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
