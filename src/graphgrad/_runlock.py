"""An exclusive lock on a run directory, so two runs never write into the same folder.

``run_lock(run_dir)`` holds ``run_dir/.lock`` for the duration of a ``with`` block. The lock
is an advisory ``flock`` on that file, taken without waiting: the kernel drops it when the
holder exits however it ends (kill -9 included), so a lock left by a dead process is simply
taken over. The file records the holder's pid, host and start time so that a second run can
say who holds the folder. On platforms without ``fcntl`` (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import GraphgradError

__all__ = ["LOCK_FILE", "RunLockedError", "run_lock"]

LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunLockedError(GraphgradError, RuntimeError):
    """Another process holds the run directory; the message names it (pid, host)."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        pid, host = info.get("pid"), info.get("host")
        since = info.get("started")
    except (OSError, ValueError):
        return "another process"
    when = f", since {since}" if since else ""
    return f"pid {pid} on {host}{when}"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` (the directory must exist) until the block ends.

    Raises:
        RunLockedError: another live process holds it.
    """
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None:  # pragma: no cover
        yield path
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{run_dir} is in use by another graphgrad run ({_holder(path)}); wait for it "
                f"to finish or choose another --out"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The holder before us may have deleted the file between our open and our lock:
        # then we locked an orphan; start again on the file that is there now.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # closing releases the flock
