"""Subcommands ``playground`` (the live web page) and ``export-html`` of ``graphgrad``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

EXTRA_MESSAGE = (
    "graphgrad playground needs its server packages: pip install 'graphgrad[playground]'"
)


def register(subparsers: Any) -> None:
    """Add ``playground`` and ``export-html`` to the ``graphgrad`` command."""
    p = subparsers.add_parser(
        "playground",
        help="serve the playground page: networks learn live in the browser",
        description="Start a local server for the playground page and print its URL. "
        "Training runs in this process with graphgrad; each browser tab has its own run.",
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.add_argument(
        "--idle-timeout", type=float, default=600.0, metavar="S",
        help="pause a tab's training after S seconds without input (default 600)",
    )  # fmt: skip
    p.add_argument(
        "--session-timeout", type=float, default=3600.0, metavar="S",
        help="close and free a tab's session after S seconds without input (default 3600)",
    )  # fmt: skip
    p.add_argument(
        "--runs-dir", default="playground-runs", metavar="DIR",
        help="where the page's 'save run' button writes checkpoints (default ./playground-runs)",
    )  # fmt: skip
    p.set_defaults(handler=_playground)
    e = subparsers.add_parser(
        "export-html",
        help="write a saved playground run as one self-contained HTML page",
        description="Read a playground run saved as a checkpoint and write one HTML file that "
        "shows its decision region, neurons, weights and inside view with no server.",
    )
    e.add_argument("run", help="the run's checkpoint directory")
    e.add_argument("-o", "--output", required=True, help="the HTML file to write")
    e.set_defaults(handler=_export)


def _missing_extra() -> bool:
    for mod in ("starlette", "uvicorn", "websockets"):
        try:
            importlib.import_module(mod)
        except ImportError:
            return True
    return False


def _playground(args: argparse.Namespace) -> int:
    if _missing_extra():
        print(EXTRA_MESSAGE, file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"graphgrad playground: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    for name in ("idle_timeout", "session_timeout"):
        if not getattr(args, name) > 0:  # also refuses nan
            flag = "--" + name.replace("_", "-")
            print(f"graphgrad playground: {flag} must be > 0", file=sys.stderr)
            return 2
    import uvicorn

    from .playground._app import MAX_WS_FRAME_BYTES, create_app, loopback_hosts

    app = create_app(
        idle_timeout=args.idle_timeout,
        runs_dir=args.runs_dir,
        session_timeout=args.session_timeout,
        allowed_hosts=loopback_hosts(args.host),
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"
    print(f"graphgrad playground: {url}  (Ctrl-C to stop)", flush=True)
    if args.open:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, (url,)).start()
    try:
        uvicorn.run(
            app, host=args.host, port=args.port, log_level="warning", ws="websockets-sansio",
            ws_max_size=MAX_WS_FRAME_BYTES,
        )  # fmt: skip
    except OSError as e:
        print(
            f"graphgrad playground: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr
        )
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .playground import load_run, write_html

    try:
        session = load_run(args.run)
        write_html(session, args.output)
    except (CheckpointError, OSError) as e:
        print(f"graphgrad export-html: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0
