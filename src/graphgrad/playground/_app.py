"""The playground's server: a Starlette app with the page, its static files and one WebSocket.

Each WebSocket connection (one browser tab) owns one :class:`~._session.Session`. The page
sends JSON messages; every reply is JSON with a ``type``:

=====================  ==============================================  ====================
message ``type``       fields                                          reply
=====================  ==============================================  ====================
``set``                ``params``: a partial parameter object          ``state`` + ``frame``
``play`` / ``pause``                                                   ``state``, frames
``step``               ``n`` (1..1000, default 1)                      ``frame``
``reset``                                                              ``frame``
``regenerate``         new seed for the data                           ``state`` + ``frame``
``ack``                the page drew the last frame (flow control)     --
``neuron``             ``layer``, ``unit``, ``sample``                 ``neuron``
``check_gradient``     ``layer``, ``unit``, ``sample``                 ``gradcheck``
``hidden_view``        ``layer``, ``i``, ``j`` (or ``layer: null``)    ``frame``
``add_point``          ``x``, ``y``, ``label``                         ``frame``
``csv``                ``text``                                        ``csv`` + ``frame``
``export``                                                             ``export`` (``html``)
``save``               the run as a checkpoint in ``runs_dir``          ``saved`` (``path``)
=====================  ==============================================  ====================

Anything else (malformed JSON, an unknown type or field, a value out of range) gets
``{"type": "error", "field": ..., "message": ...}`` and the session goes on; so does a binary
frame (``field`` ``"message"``: the protocol is JSON text). Training runs
while ``playing``: an update (``steps_per_update`` steps and a frame) whenever fewer than
``FRAMES_IN_FLIGHT`` frames await the page's ``ack``, in a
worker thread so other tabs stay responsive. A session with no message from its user for
``idle_timeout`` seconds stops training (``{"type": "idle"}``); one with no message at all
(not even an ``ack``) from its user for ``session_timeout`` seconds is told so and closed, which
frees it, as does a closed tab. A message longer than ``MAX_MESSAGE_BYTES`` gets an error; the
WebSocket layer refuses frames over ``MAX_WS_FRAME_BYTES`` outright.

A web page from another site may open a WebSocket to 127.0.0.1 (browsers do not stop it) or
reach the server under its own name by DNS rebinding: the socket refuses an ``Origin`` other
than the page's own, and ``allowed_hosts`` (the CLI passes the loopback names and ``--host``)
refuses requests for any other ``Host``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._export import STATIC_DIR
from ._params import ParamError
from ._session import PlaygroundError, Session

__all__ = ["STATIC_DIR", "create_app", "loopback_hosts"]

MAX_MESSAGE_BYTES = 400_000
#: uvicorn's ``ws_max_size``: larger frames close the socket before they are buffered.
MAX_WS_FRAME_BYTES = 1_000_000
MAX_SESSIONS = 32
FRAMES_IN_FLIGHT = 4
#: "save" writes a checkpoint on the server's disk: a tab may do it this many times.
MAX_SAVES_PER_TAB = 20
BINARY = "binary frames are not accepted; send JSON text"


def _json(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False, default=_default)


def _default(o: Any) -> Any:
    raise TypeError(f"not JSON: {type(o).__name__}")


def _clean(obj: Any) -> Any:
    """NaN and infinities become None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


class _Conn:
    """One tab: its session, whether it plays, and flow control."""

    def __init__(self, ws: WebSocket, idle_timeout: float, runs_dir: Path | None) -> None:
        self.ws = ws
        self.runs_dir = runs_dir
        self.session = Session()
        self.playing = False
        # flow control: at most FRAMES_IN_FLIGHT frames sent and not yet acknowledged, so
        # the next update is computed while the page draws the last one
        self.credits = FRAMES_IN_FLIGHT
        self.ready = asyncio.Event()
        self.last_user = time.monotonic()
        self.idle_timeout = idle_timeout
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.saves = 0

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send_text(_json(_clean(obj)))

    async def state(self) -> None:
        s = self.session
        await self.send(
            {
                "type": "state",
                "params": s.params.to_dict(),
                "playing": self.playing,
                "custom_data": s.custom is not None,
            }
        )

    async def frame(self, full: bool = True) -> None:
        async with self.lock:
            f = await asyncio.to_thread(self.session.frame, full)
        await self.send(f)

    async def train_loop(self) -> None:
        """While playing: wait for the page's ack, one update in a thread, send the frame."""
        try:
            while self.playing:
                if self.credits <= 0:
                    self.ready.clear()
                    try:
                        await asyncio.wait_for(self.ready.wait(), timeout=5.0)
                    except TimeoutError:  # a lost ack: go on
                        self.credits = 1
                self.credits -= 1
                if not self.playing:
                    break
                if time.monotonic() - self.last_user > self.idle_timeout:
                    self.playing = False
                    await self.send(
                        {
                            "type": "idle",
                            "message": f"paused: no input for {self.idle_timeout:g} s",
                        }
                    )
                    await self.state()
                    break
                async with self.lock:
                    f = await asyncio.to_thread(self._update)
                await self.send(f)
                if self.session.diverged:
                    self.playing = False
                    await self.state()
        except (WebSocketDisconnect, RuntimeError):
            self.playing = False

    def _update(self) -> dict[str, Any]:
        self.session.step()
        return self.session.frame(full=False)

    async def handle(self, text: str) -> None:
        if len(text) > MAX_MESSAGE_BYTES:
            raise ParamError("message", f"longer than {MAX_MESSAGE_BYTES} bytes")
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError) as e:  # ValueError: also a number of 4300+ digits
            raise ParamError("message", f"malformed JSON: {e}") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise ParamError("type", "expected an object with a string field 'type'")
        kind = msg["type"]
        if kind == "ack":
            self.credits = min(FRAMES_IN_FLIGHT, self.credits + 1)
            self.ready.set()
            return
        self.last_user = time.monotonic()
        s = self.session

        def fields(*allowed: str) -> None:
            extra = sorted(set(msg) - {"type", *allowed})
            if extra:
                raise ParamError(extra[0], f"unknown field for message '{kind}'")

        if kind == "set":
            fields("params")
            async with self.lock:
                s.set_params(msg.get("params"))
            await self.state()
            await self.frame()
        elif kind == "play":
            fields()
            if s.diverged:
                raise ParamError("play", s.diverged)
            if not self.playing:
                self.playing = True
                self.credits = FRAMES_IN_FLIGHT
                self.task = asyncio.create_task(self.train_loop())
            await self.state()
        elif kind == "pause":
            fields()
            self.playing = False
            await self.state()
        elif kind == "step":
            fields("n")
            n = msg.get("n", 1)
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
                raise ParamError("n", f"expected an integer in [1, 1000], got {n!r}")
            async with self.lock:
                await asyncio.to_thread(s.step, n)
            await self.frame(full=False)
        elif kind == "reset":
            fields()
            self.playing = False
            async with self.lock:
                s.reset()
            await self.state()
            await self.frame()
        elif kind == "regenerate":
            fields()
            async with self.lock:
                s.set_params({"seed": (s.params.seed * 1103515245 + 12345) % (2**31)})
            await self.state()
            await self.frame()
        elif kind in ("neuron", "check_gradient"):
            fields("layer", "unit", "sample")
            fn = s.neuron if kind == "neuron" else s.check_gradient
            async with self.lock:
                out = await asyncio.to_thread(
                    fn, msg.get("layer"), msg.get("unit"), msg.get("sample", 0)
                )
            await self.send(out)
        elif kind == "hidden_view":
            fields("layer", "i", "j")
            if msg.get("layer") is None:
                s.hidden_view = None
            else:
                s.set_hidden_view(msg.get("layer"), msg.get("i", 0), msg.get("j", 1))
            await self.frame(full=False)
        elif kind == "add_point":
            fields("x", "y", "label")
            async with self.lock:
                s.add_point(msg.get("x"), msg.get("y"), msg.get("label", 0))
            await self.frame()
        elif kind == "csv":
            fields("text")
            async with self.lock:
                report = s.load_csv(msg.get("text"))
            await self.send(report)
            await self.state()
            await self.frame()
        elif kind == "export":
            fields()
            from ._export import export_html

            async with self.lock:
                html = await asyncio.to_thread(export_html, s)
            await self.send({"type": "export", "html": html})
        elif kind == "save":
            fields()
            if self.runs_dir is None:
                raise ParamError("save", "this server saves no runs (start it with --runs-dir)")
            from ._export import save_run

            if self.saves >= MAX_SAVES_PER_TAB:
                raise ParamError("save", f"at most {MAX_SAVES_PER_TAB} saved runs per tab")
            self.saves += 1  # in the name too: two saves in one second are two runs
            name = time.strftime("run-%Y%m%d-%H%M%S") + f"-{id(self) % 10000:04d}-{self.saves}"
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            async with self.lock:
                path = await asyncio.to_thread(save_run, s, self.runs_dir / name)
            await self.send({"type": "saved", "path": str(path)})
        else:
            raise ParamError("type", f"unknown message type {kind!r}")


def loopback_hosts(host: str) -> list[str] | None:
    """The ``Host`` names a server bound to ``host`` answers: the loopback names and ``host``
    itself; None (any) when it listens on every interface (0.0.0.0, ::)."""
    if host in ("0.0.0.0", "::", ""):
        return None
    return sorted({"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"})


def create_app(
    idle_timeout: float = 600.0,
    runs_dir: str | Path | None = None,
    session_timeout: float = 3600.0,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The playground's Starlette app. ``app.state.sessions`` holds the open sessions.

    Args:
        idle_timeout: seconds without a user message after which a tab's training pauses.
        runs_dir: where the page's "save" button writes checkpoints (None: saving is off).
        session_timeout: seconds without a user message after which a tab's session is
            closed and freed (so abandoned tabs do not hold the ``MAX_SESSIONS`` places).
        allowed_hosts: the ``Host`` names served (None: any; see :func:`loopback_hosts`).
    """
    runs = Path(runs_dir) if runs_dir is not None else None

    async def index(request: Request) -> Response:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "sessions": len(app.state.sessions)})

    async def ws_endpoint(ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != ws.headers.get("host"):
            await ws.close(code=1008)  # another site's page: refused before any session
            return
        await ws.accept()
        if len(app.state.sessions) >= MAX_SESSIONS:
            await ws.send_text(_json({"type": "error", "field": "session",
                                      "message": "too many open sessions"}))  # fmt: skip
            await ws.close()
            return
        conn = _Conn(ws, idle_timeout, runs)
        app.state.sessions.add(conn)
        try:
            await conn.state()
            await conn.frame()
            while True:
                left = conn.last_user + session_timeout - time.monotonic()
                try:
                    message = await asyncio.wait_for(ws.receive(), timeout=max(left, 0.001))
                except TimeoutError:
                    conn.playing = False
                    msg = (
                        f"session closed after {session_timeout:g} s without input; "
                        "reload the page to start again (the link keeps the settings)"
                    )
                    await conn.send({"type": "error", "field": "session", "message": msg})
                    await ws.close(code=1000, reason="idle")
                    break
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
                text = message.get("text")
                if text is None:  # a binary frame (receive_text() would raise KeyError)
                    await conn.send({"type": "error", "field": "message", "message": BINARY})
                    continue
                try:
                    await conn.handle(text)
                except (ParamError, PlaygroundError) as e:
                    await conn.send({"type": "error", "field": e.field, "message": str(e)})
                except WebSocketDisconnect:
                    raise
                except Exception as e:  # a bug must not end the tab's session, nor the server
                    msg = f"internal error: {type(e).__name__}: {e}"
                    await conn.send({"type": "error", "field": None, "message": msg})
        except WebSocketDisconnect:
            pass
        finally:
            conn.playing = False
            conn.ready.set()
            if conn.task is not None:
                conn.task.cancel()
            app.state.sessions.discard(conn)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/health", health),
            WebSocketRoute("/ws", ws_endpoint),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[]
        if allowed_hosts is None
        else [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))],
    )
    app.state.sessions = set()
    return app
