"""The ``graphgrad`` command (also ``python -m graphgrad``).

Each feature module contributes its subcommands through a ``register(subparsers)`` function
listed in :data:`SUBCOMMAND_MODULES`; a handler returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that add subcommands. Each has ``register(subparsers) -> None``; the parsers it adds
#: set ``handler=callable(args) -> int`` with ``set_defaults``.
SUBCOMMAND_MODULES = [
    "graphgrad._cli_core",
    "graphgrad._cli_graph",
    "graphgrad._cli_train",
    "graphgrad._cli_lecture",
    "graphgrad._cli_data",
    "graphgrad._cli_playground",
    "graphgrad._cli_info",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="graphgrad",
        description="Neural networks as computational graphs, trained by backpropagation.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"graphgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
