"""The Scalar implementations a test should cover: the pure-Python reference, and the compiled
core where it is built (an install without a compiler has the reference alone)."""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType

from graphgrad import _scalar_py


def scalar_implementations() -> dict[str, ModuleType]:
    """``{"pure": _scalar_py, "compiled": _scalar_core}`` (the latter where it is built)."""
    out: dict[str, ModuleType] = {"pure": _scalar_py}
    with contextlib.suppress(ImportError):
        out["compiled"] = importlib.import_module("graphgrad._scalar_core")
    return out
