"""Subcommand ``download``: fetch a data set from its official host, verified by SHA-256."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add ``download`` to the ``graphgrad`` command."""
    from .data._download import add_download_parser

    add_download_parser(sub)
