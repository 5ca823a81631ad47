"""Subcommands ``playground`` (the live web page) and ``export-html`` of ``graphgrad``."""

from __future__ import annotations

import argparse
import importlib
import socket
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
    p.add_argument(
        "--port", type=int, default=8765, help="port (default 8765; 0: a free one, printed)"
    )
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
    from .cli import one_line

    try:
        sock = _listen(args.host, args.port)
    except OSError as e:
        why = e.strerror or one_line(e)
        print(
            f"graphgrad playground: error: cannot listen on {_host_port(args.host, args.port)}: "
            f"{why}",
            file=sys.stderr,
        )
        return 1
    url = f"http://{_host_port(args.host, sock.getsockname()[1])}/"  # the real port for --port 0
    print(f"graphgrad playground: {url}  (Ctrl-C to stop)", flush=True)
    if args.open:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, (url,)).start()
    config = uvicorn.Config(
        app, log_level="warning", ws="websockets-sansio", ws_max_size=MAX_WS_FRAME_BYTES
    )
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, so that the URL printed afterwards is
    one that answers (and names the port the system chose for ``--port 0``).

    Raises:
        OSError: the name does not resolve (``socket.gaierror``), the port is taken, or the
            address is not this machine's.
    """
    infos = socket.getaddrinfo(  # "" (as uvicorn reads it): every interface
        host or None,
        port,
        type=socket.SOCK_STREAM,
        proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE,
    )
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first, as uvicorn binds
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock  # not inheritable: a browser started by --open does not hold the port


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoint import CheckpointError
    from .cli import one_line
    from .playground import load_run, write_html

    out, run = Path(args.output).resolve(), Path(args.run).resolve()
    if out == run or run in out.parents:  # would overwrite (part of) the run it reads
        print(
            f"graphgrad export-html: error: -o {args.output} is "
            f"{'' if out == run else 'inside '}the run {args.run} being exported; write the "
            f"page outside it, e.g. -o {run.name}.html",
            file=sys.stderr,
        )
        return 2
    if out.is_dir():
        print(
            f"graphgrad export-html: error: -o {args.output} is a directory; give a file "
            f"name, e.g. -o {Path(args.output) / (run.name + '.html')}",
            file=sys.stderr,
        )
        return 2
    try:
        session = load_run(args.run)
        write_html(session, args.output)
    except CheckpointError as e:
        print(f"graphgrad export-html: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        why = e.strerror or one_line(e)
        print(f"graphgrad export-html: error: cannot write {args.output}: {why}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0
