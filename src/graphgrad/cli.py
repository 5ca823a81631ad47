"""The ``graphgrad`` command (also ``python -m graphgrad``).

Each feature module contributes its subcommands through a ``register(subparsers)`` function
listed in :data:`SUBCOMMAND_MODULES`; a handler returns the process exit code.

Every failure ends in one line on stderr and a non-zero exit, never a traceback: usage errors
exit 2 (``graphgrad CMD: error: ...``), graphgrad's own errors 1, and anything unexpected is
caught by the last-resort handler in :func:`main`, which prints one line and a hint: run with
``--debug`` (or ``GRAPHGRAD_DEBUG=1``) to see the traceback. A closed pipe (``graphgrad ops |
head -2``) ends the command quietly, as Unix tools do.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

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

#: Exit status after a closed pipe: 128 + SIGPIPE, what a shell reports for a Unix tool.
EXIT_BROKEN_PIPE = 141


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: the error and where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = Parser(
        prog="graphgrad",
        description="Neural networks as computational graphs, trained by backpropagation.",
        epilog="Every command has --help. Set GRAPHGRAD_DEBUG=1 (or pass --debug) to see the "
        "traceback of an unexpected error.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"graphgrad {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an unexpected error (also: GRAPHGRAD_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():  # --debug is accepted after the subcommand too
        if "--debug" not in p._option_string_actions:
            p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


def one_line(text: object) -> str:
    """A message on one line (line breaks become '; ', or ' ' after a line ending in ':')."""
    out = ""
    for part in str(text).strip().splitlines():
        part = part.strip()
        if part:
            out += ("" if not out else " " if out.endswith(":") else "; ") + part
    return out


def _debug(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("GRAPHGRAD_DEBUG", "") not in ("", "0")


def _setup_logging() -> None:
    """Diagnostics of the library (logger ``graphgrad``) as plain lines on stderr."""
    log = logging.getLogger("graphgrad")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def describe_unexpected(exc: BaseException) -> str:
    """One line for an exception no handler expected: its type and first line."""
    first = one_line(exc)
    if len(first) > 300:
        first = first[:300] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from .errors import GraphgradError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug(argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return 2
        _setup_logging()
        rc = int(handler(args))
        sys.stdout.flush()
        return rc
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except SystemExit:
        raise
    except Exception as e:
        if debug:
            raise
        if isinstance(e, GraphgradError):
            print(f"graphgrad: error: {one_line(e)}", file=sys.stderr)
        elif isinstance(e, OSError) and e.errno == errno.ENOSPC:
            where = f" writing {e.filename}" if e.filename else ""
            print(f"graphgrad: error: no space left on the device{where}", file=sys.stderr)
        elif isinstance(e, OSError) and e.strerror:
            where = f"{e.filename}: " if e.filename else ""
            print(f"graphgrad: error: {where}{e.strerror}", file=sys.stderr)
        else:
            print(
                f"graphgrad: unexpected error: {describe_unexpected(e)} (a bug or an unhandled "
                f"case; rerun with --debug or GRAPHGRAD_DEBUG=1 for the traceback)",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
