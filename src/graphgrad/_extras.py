"""Optional dependencies: find out up front whether an extra is installed.

NumPy is graphgrad's only hard dependency. Training, checkpoints and figures need the
``train`` extra (tqdm, matplotlib, safetensors). A command checks for what it needs before it
does any work and, if something is missing, stops with one line naming the extra, instead of
failing half-way (after writing files, or after an epoch) with an ImportError.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from .errors import GraphgradError

__all__ = ["MissingExtraError", "has_module", "missing_modules", "require_extra"]


class MissingExtraError(GraphgradError, ImportError):
    """An optional package a command needs is not installed; the message names the extra."""


def has_module(name: str) -> bool:
    """Whether ``import name`` can find a module, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return False


def missing_modules(names: Iterable[str]) -> list[str]:
    """The names in ``names`` that cannot be imported, in the order given."""
    return [n for n in names if not has_module(n)]


def require_extra(what: str, names: Iterable[str], extra: str = "train") -> None:
    """Raise :class:`MissingExtraError` if any of ``names`` is missing.

    Args:
        what: the feature, for the message ("graphgrad train", "checkpoints").
        names: importable top-level module names.
        extra: the extra of pyproject.toml that installs them.
    """
    gone = missing_modules(names)
    if gone:
        raise MissingExtraError(
            f"{what} needs {', '.join(gone)} (the '{extra}' extra), which is not installed: "
            f"pip install 'graphgrad[{extra}]'"
        )
