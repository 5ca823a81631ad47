"""Where data sets live: the default data root and the folders searched for a data set."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "default_data_root", "search_folders"]

ENV_VAR = "GRAPHGRAD_DATA"
"""Environment variable naming the data root (one subfolder per data set)."""


def default_data_root() -> Path:
    """Return the folder that holds downloaded data sets, one subfolder each.

    ``$GRAPHGRAD_DATA`` if set, else ``$XDG_CACHE_HOME/graphgrad`` (``~/.cache/graphgrad``
    when ``XDG_CACHE_HOME`` is unset). The folder need not exist.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "graphgrad"


def search_folders(
    root: str | os.PathLike[str] | None, subdir: str, system: tuple[str, ...] = ()
) -> list[Path]:
    """List, in order, the folders in which to look for the data set stored under ``subdir``.

    With an explicit ``root``: ``root`` itself, then ``root/subdir``. Without one:
    ``$GRAPHGRAD_DATA/subdir`` and ``$GRAPHGRAD_DATA`` when the variable is set, otherwise
    ``~/.cache/graphgrad/subdir`` (where :func:`graphgrad.data.download` puts files by
    default); then the ``system`` folders (e.g. those of Debian's data set packages).
    """
    if root is not None:
        base = Path(root).expanduser()
        return [base, base / subdir]
    env = os.environ.get(ENV_VAR)
    if env:
        base = Path(env).expanduser()
        folders = [base / subdir, base]
    else:
        folders = [default_data_root() / subdir]
    folders.extend(Path(s) for s in system)
    return folders
