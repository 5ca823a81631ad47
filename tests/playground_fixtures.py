"""Shared pieces of the playground tests: a server on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(**app_kwargs: Any) -> Iterator[str]:
    """A uvicorn server for ``create_app(**app_kwargs)`` on 127.0.0.1; yields its base URL."""
    import uvicorn

    from graphgrad.playground import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(**app_kwargs), host="127.0.0.1", port=port, log_level="warning",
        ws="websockets-sansio", lifespan="off",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the playground server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def until(ws: Any, kind: str, limit: int = 50) -> dict[str, Any]:
    """The next message of type ``kind`` on a TestClient WebSocket (frames acknowledged on
    the way, as the page does)."""
    for _ in range(limit):
        m = ws.receive_json()
        if m["type"] == kind:
            return m
        if m["type"] == "frame":
            ws.send_json({"type": "ack"})
    raise AssertionError(f"no {kind!r} message")


def open_session(ws: Any) -> None:
    """Read a new session's first state and frame."""
    until(ws, "state")
    until(ws, "frame")
