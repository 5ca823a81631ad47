"""Atomic file writes and file hashing.

A reader of ``path`` sees either the old file or the complete new one, never a half-written
file: the new content goes to a temporary file in the same directory, is flushed and
fsync'ed, and is then moved over ``path`` with :func:`os.replace` (atomic on POSIX and on
Windows when both names are on one volume). If writing fails, the temporary file is
removed and ``path`` is left exactly as it was.

Used for checkpoints, downloads and anything else the project writes that a crash must not
corrupt. Pure standard library.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO, overload

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_directory",
    "sha256_file",
]

_CHUNK = 1 << 20  # 1 MiB: large enough to hash at disk speed, small enough to stay in cache


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry to disk so a rename inside it survives a power cut.

    A no-op where directories cannot be opened (Windows) or fsync'ed.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(target: Path) -> tuple[int, Path]:
    """Create a new, empty temporary file beside ``target``; return its fd and path.

    ``os.open`` with mode 0o666 lets the process umask decide the permissions, exactly as
    for a file created by ``open(path, "w")`` (``tempfile.mkstemp`` would force 0o600).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{target}: could not create a unique temporary file beside it")


@overload
def atomic_open(
    path: str | os.PathLike[str], mode: Literal["wb"] = ...
) -> contextlib.AbstractContextManager[BinaryIO]: ...
@overload
def atomic_open(
    path: str | os.PathLike[str], mode: Literal["w", "wt"], *, encoding: str = ...
) -> contextlib.AbstractContextManager[TextIO]: ...
def atomic_open(
    path: str | os.PathLike[str], mode: str = "wb", *, encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[IO[Any]]:
    """Open ``path`` for writing so that it is replaced atomically when the block ends.

    Usage::

        with atomic_open("model.npz") as f:   # binary; mode="w" for text
            f.write(data)

    The data go to a temporary file ``.<name>.<random>.tmp`` in the same directory. On a
    normal exit the file is flushed, fsync'ed and renamed over ``path`` (and the directory
    is fsync'ed); on an exception it is deleted, ``path`` is untouched, and the exception
    propagates. If ``path`` already exists, its permission bits are kept.

    Args:
        path: the file to write; its directory must exist.
        mode: ``"wb"`` (binary, default), or ``"w"``/``"wt"`` (text, newlines untranslated).
        encoding: text encoding, for text modes only.
    """
    if mode not in ("wb", "w", "wt"):
        raise ValueError(f"atomic_open: mode must be 'wb', 'w' or 'wt', got {mode!r}")
    return _atomic_open(Path(path), mode, encoding)


def _check_target(target: Path) -> None:
    """Refuse, before a temporary file exists, a ``target`` that cannot be a file: a directory,
    or one whose folder is missing or is a file. The errors carry ``errno``, a ``strerror``
    that says what is wrong and ``filename=target`` (never the temporary file's name)."""
    parent = target.parent
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "it is a directory, not a file", str(target))
    if not parent.is_dir():
        if parent.exists():
            why = f"{parent} is a file, not a folder"
            raise NotADirectoryError(errno.ENOTDIR, why, str(target))
        why = f"the folder {parent} does not exist"
        raise FileNotFoundError(errno.ENOENT, why, str(target))


@contextlib.contextmanager
def _atomic_open(target: Path, mode: str, encoding: str) -> Iterator[IO[Any]]:
    _check_target(target)
    fd, tmp = _create_temp(target)
    try:
        handle: IO[Any]
        if mode == "wb":
            handle = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding, newline="")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding`` (UTF-8 by default).

    Newlines are written as given (no ``\\r\\n`` translation), so the bytes on disk do not
    depend on the platform.
    """
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 of the file at ``path`` as 64 lowercase hex digits.

    Reads in 1 MiB chunks, so memory use does not grow with the file.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
