"""Argument types shared by the subcommands: integers and floats checked for range and
finiteness when parsed, so that ``--batch-size -5``, ``--lr nan`` or ``--timeout inf`` are
one-line usage errors (exit 2) instead of failures deep inside the work."""

from __future__ import annotations

import argparse
import math
from typing import Any

__all__ = ["device_name", "finite_float", "int_at_least"]


def int_at_least(lo: int, hi: int | None = None) -> Any:
    """An argparse type: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:80]!r}") from None
        if v < lo or (hi is not None and v > hi):
            span = f">= {lo}" if hi is None else f"in {lo}..{hi:,}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {v}")
        return v

    parse.__name__ = "integer"
    return parse


def finite_float(lo: float | None = None, lo_open: bool = False) -> Any:
    """An argparse type: a finite float (``> lo`` or ``>= lo`` when given)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:80]!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text[:80]!r}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise argparse.ArgumentTypeError(
                f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}"
            )
        return v

    parse.__name__ = "number"
    return parse


def device_name(text: str) -> str:
    """An argparse type: a device's name as ``train.device`` spells it (``cpu``, ``cuda``,
    ``cuda:N``, ``array-api-strict[:device1]``); whether it is there is checked before any work."""
    from .config import DEVICE_PATTERN

    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected cpu, cuda, cuda:N or array-api-strict, got {text[:80]!r}"
        )
    return text


device_name.__name__ = "device"
