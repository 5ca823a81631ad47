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
import os
import sys

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
