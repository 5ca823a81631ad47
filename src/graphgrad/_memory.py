"""glibc malloc settings that keep a training step's freed memory for the next step.

A training step allocates and frees the same arrays every time: activations, gradients,
products (a 784x256 float32 gradient is 0.8 MB). glibc's malloc serves blocks over its mmap
threshold (128 KiB at start, raised by itself up to 32 MiB as such blocks are freed) with
``mmap`` and gives them back to the kernel on ``free``; and once more than its trim threshold
of free memory sits at the top of the heap, it returns that too. Whether a step's frees cross
those lines depends on the whole process's heap layout (what else was allocated before), so
the same step can run with no page faults in one program and with hundreds in another: on
the 2-core test machine a 784-256-256-10 step at batch 128 took 1.0 ms in one process and
1.85 ms, with 420 minor page faults a step, in a process that also held the GEMM-only
benchmark's preallocated buffers. Each faulted page is zeroed by the kernel before the
product is written into it.

Arrays that a training step's kernels stream through (parameters, optimiser state, a compiled
plan's buffers) are allocated by :func:`empty`, :func:`zeros_like` and :func:`aligned`, which
start them on a 64-byte boundary, a cache line. NumPy's own arrays start wherever malloc puts
them, 16 bytes apart: then every AVX-512 load and every other AVX2 load of the kernels spans
two cache lines, and the chunks that threads split an array into share a cache line at each
border. On the Zen 4 test machine, an SGD-momentum update of a 256x256 float32 layer (in L2)
took 10.4 µs aligned and 13.6 µs 16 bytes off (AVX2 loops; 12.1 and 17.1 µs with AVX-512).

``import graphgrad`` therefore sets both thresholds with ``mallopt`` (both are needed: setting
either turns the automatic raise of the mmap threshold off): blocks up to 32 MiB come from the
heap, and up to 1 GiB of freed heap memory is kept. A step then reuses the memory the last
step freed and faults no pages. The price: a process keeps memory it freed (up to 1 GiB)
instead of returning it to the system; that is memory it held at its peak anyway, and the
next step asks for it again. ``GRAPHGRAD_MALLOC=system`` (read at import) leaves malloc as
it is; other C libraries than glibc are left alone. :func:`malloc_info` says what was done.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # NumPy is imported by the functions that use it: malloc is set up first
    import numpy as np

#: glibc's malloc settings graphgrad makes (``mallopt`` parameter name: (number, value)):
#: blocks up to 32 MiB come from the heap, and freed heap memory is kept up to 1 GiB.
MALLOC_SETTINGS = {"M_MMAP_THRESHOLD": (-3, 32 << 20), "M_TRIM_THRESHOLD": (-1, 1 << 30)}

#: The environment variable read at import; ``system`` leaves malloc alone.
ENV = "GRAPHGRAD_MALLOC"
_MODES = ("keep", "system")

_state: dict[str, object] = {"tuned": False, "reason": "not set yet"}


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep the memory a training step frees for the next step
    (the settings of :data:`MALLOC_SETTINGS`, process-wide). ``import graphgrad`` calls it
    unless ``GRAPHGRAD_MALLOC=system``. Returns False, doing nothing, where there is no glibc
    ``mallopt`` (other C libraries, other systems)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.values())
    if ok:
        _state.update(tuned=True, reason="mmap threshold 32 MiB, trim threshold 1 GiB")
    return ok


def malloc_info() -> dict[str, object]:
    """What graphgrad did to malloc: ``{"tuned": bool, "reason": str}``."""
    return dict(_state)


#: Where :func:`empty` starts its arrays: a multiple of this many bytes (a cache line). 0 or 1:
#: wherever NumPy puts them (for a benchmark's comparison).
ALIGN = 64


def empty(shape: int | tuple[int, ...], dtype: Any, order: str = "C") -> np.ndarray:
    """An uninitialised array, as ``np.empty`` (``order`` "C" or "F"), starting on an
    :data:`ALIGN`-byte boundary. It is a view of a slightly larger byte buffer (``base`` is
    that buffer)."""
    import numpy as np

    dt = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if order == "F":
        return empty(shape[::-1], dt).T
    nbytes = math.prod(shape) * dt.itemsize
    if ALIGN <= 1 or nbytes == 0:
        return np.empty(shape, dt)
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.__array_interface__["data"][0] % ALIGN
    return raw[start : start + nbytes].view(dt).reshape(shape)


#: A weight gradient whose rows are a multiple of this many bytes long is stored with its rows
#: ``GRAD_PAD`` bytes further apart (``.grad`` is then a view into a wider array): every row of
#: such an array starts in the same cache sets, and OpenBLAS wrote the (512, 3072) weight
#: gradient of a 3072-512-512-10 step at batch 256 1.08x faster padded (8.0 against 8.6 ms,
#: 1 thread, AMD EPYC Zen 4); whole compiled steps took 0.978-0.988 of the time on
#: 3072-512-512-10 and 3072-1024-1024-10 and 0.996 on 784-1024-1024-10, eager ones 0.966-0.983
#: on the two 3072 shapes, at 1 and 2 threads. Both steps pad (linear's weight-gradient rule,
#: a compiled plan's arrays), with the same bits as unpadded ones. Rows whose length is no
#: such multiple are left as they are.
GRAD_PAD_EVERY = 4096
GRAD_PAD = 64


def pads(rows: int, cols: int, itemsize: int) -> bool:
    """Whether a (rows, cols) weight gradient of ``itemsize``-byte numbers is stored padded
    (:func:`empty_grad`): two rows or more, each a multiple of :data:`GRAD_PAD_EVERY` bytes
    long. (Plain arithmetic: the eager backward pass asks it for every ``linear`` layer.)"""
    return rows >= 2 and cols > 0 and (cols * itemsize) % GRAD_PAD_EVERY == 0


def grad_row(rows: int, cols: int, itemsize: int) -> int:
    """The elements from one row's start to the next in a stored (rows, cols) weight gradient:
    ``cols``, or :data:`GRAD_PAD` bytes more where :func:`pads` says so."""
    return cols + GRAD_PAD // itemsize if pads(rows, cols, itemsize) else cols


def empty_grad(shape: tuple[int, int], dtype: Any) -> np.ndarray:
    """An uninitialised weight gradient (rows, cols): where :func:`pads` says so, a view of a
    wider array, its rows :data:`GRAD_PAD` bytes further apart (:func:`grad_row`), else
    :func:`empty`'s array."""
    import numpy as np

    rows, cols = shape
    ld = grad_row(rows, cols, np.dtype(dtype).itemsize)
    if ld == cols:
        return empty(shape, dtype)
    return empty((rows, ld), dtype)[:, :cols]


def rows_contiguous(a: np.ndarray) -> bool:
    """C-contiguous, or 2-D with contiguous rows lying further apart (a padded weight
    gradient, :func:`empty_grad`): what a GEMM writes with its row stride as ``ldc``."""
    return a.flags.c_contiguous or (
        a.ndim == 2
        and a.strides[1] == a.itemsize
        and a.strides[0] % a.itemsize == 0
        and a.strides[0] >= a.shape[1] * a.itemsize
    )


def is_aligned(a: np.ndarray) -> bool:
    """Whether ``a`` starts on an :data:`ALIGN`-byte boundary (always, with ALIGN 0 or 1)."""
    return ALIGN <= 1 or a.__array_interface__["data"][0] % ALIGN == 0


def _order(a: np.ndarray) -> str:
    """ "F" for an array only column-major contiguous (a transposed weight), else "C"."""
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def empty_like(a: np.ndarray) -> np.ndarray:
    """An uninitialised array of ``a``'s shape, dtype and layout (column-major stays so),
    starting on an :data:`ALIGN`-byte boundary."""
    return empty(a.shape, a.dtype, _order(a))


def zeros_like(a: np.ndarray) -> np.ndarray:
    """Zeros of ``a``'s shape, dtype and layout (:func:`empty_like`, filled)."""
    out = empty_like(a)
    out.fill(0)
    return out


def aligned(a: np.ndarray) -> np.ndarray:
    """``a`` itself where it is contiguous (row- or column-major), writeable and starts on an
    :data:`ALIGN`-byte boundary (or is empty), else a copy that does, in ``a``'s layout where
    that is column-major, else row-major (same shape, dtype and values)."""
    contiguous = a.flags.c_contiguous or a.flags.f_contiguous
    if contiguous and a.flags.writeable and (a.size == 0 or is_aligned(a)):
        return a
    out = empty_like(a)
    out[...] = a
    return out


def _init_from_environment() -> None:
    mode = os.environ.get(ENV, "").strip().lower() or "keep"
    if mode not in _MODES:
        import warnings

        warnings.warn(
            f"{ENV}={mode!r}: expected one of {', '.join(_MODES)}; using 'keep'", stacklevel=1
        )
        mode = "keep"
    if mode == "system":
        _state.update(tuned=False, reason=f"{ENV}=system: glibc's own settings")
    elif not keep_freed_memory():
        _state.update(tuned=False, reason="no glibc mallopt here: the C library's own settings")


_init_from_environment()
