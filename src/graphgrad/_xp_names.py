"""Keeps the two VJP namespaces (NumPy and Tensor) in step: same function names in both."""

from __future__ import annotations

from typing import Any

from .ops import _xp

NAMES = (
    "raw",
    "const",
    "sum_to",
    "broadcast_to",
    "reshape",
    "transpose",
    "swap_last",
    "matmul",
    "sum",
    "sum_rows",
    "exp",
    "log",
    "where",
    "softmax",
    "log_softmax",
    "getitem",
    "index_add",
    "to_device",
)


def check(tensor_ns: Any) -> None:
    """Raise at import time if a name is missing from either namespace."""
    for name in NAMES:
        if not hasattr(_xp, name) or not hasattr(tensor_ns, name):
            raise ImportError(f"VJP namespace function '{name}' is missing")
