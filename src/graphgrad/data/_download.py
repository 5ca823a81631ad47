"""Download Fashion-MNIST, MNIST and CIFAR-10 from their official hosts, verified by SHA-256.

Standard library only (urllib). Each file is fetched to ``<name>.part`` beside its final
place; an interrupted download is resumed with an HTTP ``Range`` request (a server that
ignores the range and answers 200 is handled by starting over); the finished file is
checked against the SHA-256 in :data:`CHECKSUMS` and only then renamed into place
(atomically), so a file under its final name is always complete and verified. A file
already in place with the right hash is not downloaded again.

CIFAR-10's tarball is then extracted, safely: every member must be a plain file or folder
under ``cifar-10-batches-py/`` (no absolute paths, no ``..``, no links), and extraction uses
``tarfile``'s ``"data"`` filter as well.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import math
import os
import re
import shutil
import socket
import ssl
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from .._atomic import fsync_directory, sha256_file
from .._quote import excerpt
from ._cifar import (
    ARCHIVE_NAME,
    BATCH_FOLDER,
    META_FILE,
    TEST_BATCHES,
    TRAIN_BATCHES,
    check_archive_member,
)
from ._errors import ChecksumError, DataFormatError, DownloadError
from ._paths import default_data_root

__all__ = [
    "CHECKSUMS",
    "MAX_DOWNLOAD_BYTES",
    "SIZES",
    "SOURCES",
    "add_download_parser",
    "download",
    "download_command",
    "fetch_file",
    "read_checksum_file",
]

_CHUNK = 1 << 16
_USER_AGENT = "graphgrad-data/0.1 (+urllib)"


@dataclass(frozen=True)
class Source:
    """Where a data set's files come from and where they go."""

    subdir: str
    """Folder under the data root (``fashion-mnist``, ``mnist``, ``cifar10``)."""
    base_urls: tuple[str, ...]
    """URLs that the file names are appended to, tried in order (https first)."""
    files: tuple[str, ...]
    """The official file names."""

    @property
    def base_url(self) -> str:
        """The first (preferred) of :attr:`base_urls`."""
        return self.base_urls[0]


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

SOURCES: dict[str, Source] = {
    # Zalando Research's repository serves the files over https; their bucket's S3 *website*
    # endpoint (the link in their README) serves plain HTTP only, so it comes second. Either
    # way integrity comes from the SHA-256 check; https keeps the transport private too.
    "fashion-mnist": Source(
        "fashion-mnist",
        (
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        _IDX_FILES,
    ),
    # The mirror PyTorch maintains, then the one TensorFlow Datasets uses (yann.lecun.com no
    # longer serves the files reliably).
    "mnist": Source(
        "mnist",
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        _IDX_FILES,
    ),
    "cifar10": Source("cifar10", ("https://www.cs.toronto.edu/~kriz/",), (ARCHIVE_NAME,)),
}
"""Data set name -> :class:`Source`."""

SIZES: dict[str, dict[str, int]] = {
    # Bytes of each file as distributed (the sizes published beside the SHA-256 values below).
    # A download stops here: a server sending more is refused before it can fill the disk.
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": 26_421_880,
        "train-labels-idx1-ubyte.gz": 29_515,
        "t10k-images-idx3-ubyte.gz": 4_422_102,
        "t10k-labels-idx1-ubyte.gz": 5_148,
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": 9_912_422,
        "train-labels-idx1-ubyte.gz": 28_881,
        "t10k-images-idx3-ubyte.gz": 1_648_877,
        "t10k-labels-idx1-ubyte.gz": 4_542,
    },
    "cifar10": {ARCHIVE_NAME: 170_498_071},
}
"""Data set name -> {file name: size in bytes}; used with :data:`CHECKSUMS`."""

MAX_DOWNLOAD_BYTES = 1 << 30
"""The most bytes fetched for a file whose size is not known in advance (1 GiB)."""

CHECKSUMS: dict[str, dict[str, str]] = {
    # SHA-256 of the files as distributed. None of the three projects publishes SHA-256 sums
    # itself (Fashion-MNIST's README and torchvision give MD5s: 8d4fb7e6..., 25c81989...,
    # bef4ecab..., bb300cfd... for Fashion-MNIST; f68b3c2d..., d53e105e..., 9fb629c4...,
    # ec29112d... for MNIST; c58f3010... for CIFAR-10). The SHA-256 values below are the
    # ones that many independent public projects pin for these exact files (torchvision's
    # prototype datasets among them), cross-checked against each other, not hashed here.
    # Note: Debian's dataset-fashion-mnist package ships re-compressed .gz files with other
    # hashes (the same images); that is fine for reading, they are just not these files.
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    "cifar10": {
        ARCHIVE_NAME: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    },
}
"""Data set name -> {file name: SHA-256 hex}. Tests and mirrors may patch it, or pass
``checksums=`` to :func:`download`."""

_PINNED = {name: dict(table) for name, table in CHECKSUMS.items()}  # as shipped

_MAX_EXTRACTED_BYTES = 1 << 30  # the official archive holds 178 MB

_HEX64 = re.compile(r"[0-9a-f]{64}")


class _Progress:
    """A tqdm byte counter on stderr when tqdm is installed and wanted, else nothing."""

    def __init__(self, enabled: bool, total: int | None, initial: int, desc: str) -> None:
        self._bar: Any = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024
        )

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _open_part(path: Path, mode: str) -> Any:
    """Open a ``.part`` file without following a symbolic link planted in its place.

    ``mode`` is ``"rb"``, ``"ab"`` or ``"wb"``. ``O_NOFOLLOW`` makes the open itself fail on
    a link (POSIX); the ``lstat`` check covers systems without it.
    """
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise DownloadError(
            f"{path}: refusing to use it: it is a symbolic link or not a regular file "
            "(remove it and run the download again)"
        )
    flags = {
        "rb": os.O_RDONLY,
        "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    }[mode]
    try:
        fd = os.open(path, flags | _NOFOLLOW | getattr(os, "O_BINARY", 0), 0o644)
    except OSError as exc:
        raise DownloadError(f"{path}: cannot open the partial download: {exc.strerror}") from exc
    return os.fdopen(fd, mode)


def _hash_existing(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with _open_part(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest


def _content_range_start(value: str | None) -> int | None:
    """The first byte position in a ``Content-Range: bytes START-END/TOTAL`` header."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    return int(match.group(1)) if match else None


class _Watch:
    """The sockets of one download; all are shut down when its overall deadline passes.

    Shutting a socket down wakes a read blocked on it, so a server that trickles headers or
    body one byte at a time (each read within the per-read timeout) is still abandoned.
    """

    def __init__(self, seconds: float | None) -> None:
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        if seconds is not None:
            self._timer = threading.Timer(seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shutdown(sock)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTP(http.client.HTTPConnection):
    watch: _Watch | None = None

    def connect(self) -> None:
        super().connect()
        if self.watch is not None:
            self.watch.add(self.sock)


class _WatchedHTTPS(http.client.HTTPSConnection):
    watch: _Watch | None = None

    def connect(self) -> None:
        super().connect()
        if self.watch is not None:
            self.watch.add(self.sock)


def _factory(cls: type[http.client.HTTPConnection], watch: _Watch) -> Any:
    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = cls(host, **kwargs)
        conn.watch = watch  # type: ignore[attr-defined]
        return conn

    return make


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self._watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_factory(_WatchedHTTP, self._watch), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__(context=ssl.create_default_context())
        self._watch = watch

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _factory(_WatchedHTTPS, self._watch),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects, except from https to plain http."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if req.full_url.startswith("https:") and not newurl.startswith("https:"):
            raise urllib.error.URLError(f"refusing a redirect from https to {excerpt(newurl)}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(request: urllib.request.Request, timeout: float, watch: _Watch) -> Any:
    """Send ``request`` through an opener whose sockets ``watch`` can shut down."""
    opener = urllib.request.build_opener(_HTTPHandler(watch), _HTTPSHandler(watch), _NoDowngrade())
    return opener.open(request, timeout=timeout)


def fetch_file(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    *,
    size: int | None = None,
    timeout: float = 60.0,
    deadline: float | None = 3600.0,
    min_rate: float = 1024.0,
    rate_window: float = 30.0,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    progress: bool = False,
) -> bool:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if present; verify; rename.

    Args:
        url: an ``http://`` or ``https://`` URL.
        dest: the final path; its folder must exist.
        sha256: the expected SHA-256 (64 lowercase hex digits).
        size: the expected size in bytes, if known: a server announcing or sending another
            size is refused, and nothing past ``size`` bytes is written.
        timeout: seconds allowed for connecting and for each read.
        deadline: seconds allowed for the whole file (headers, body, retries); ``None``:
            no overall limit. The partial file is kept, so running again resumes.
        min_rate: the slowest accepted transfer, bytes per second, measured over each
            ``rate_window`` seconds; 0 accepts any rate.
        rate_window: seconds over which the rate is measured.
        max_bytes: the most bytes accepted when ``size`` is not known.
        progress: show a tqdm progress bar (if tqdm is installed).

    Returns:
        True if the file was downloaded, False if ``dest`` was already there with the
        right hash (nothing fetched).

    Raises:
        ChecksumError: the downloaded bytes have another hash; the ``.part`` file is
            deleted and ``dest`` is left as it was.
        DownloadError: a network or HTTP error, a transfer past the deadline or below the
            minimum rate, a body longer than expected (deleted), a ``.part`` that is a
            symbolic link (not followed); a partial ``.part`` is otherwise kept for resuming.
    """
    target = Path(dest)
    if target.is_file() and sha256_file(target) == sha256:
        return False
    part = target.with_name(target.name + ".part")
    limit = size if size is not None else max_bytes
    watch = _Watch(deadline)
    try:
        digest = _fetch(url, part, sha256, limit, size is not None, timeout, watch, progress,
                        min_rate, rate_window)  # fmt: skip
    finally:
        watch.cancel()
    actual = digest.hexdigest()
    if actual != sha256:
        part.unlink()
        raise ChecksumError(str(target), sha256, actual)
    os.replace(part, target)
    fsync_directory(target.parent)
    return True


def _fetch(
    url: str,
    part: Path,
    sha256: str,
    limit: int,
    exact: bool,
    timeout: float,
    watch: _Watch,
    progress: bool,
    min_rate: float,
    rate_window: float,
) -> hashlib._Hash:
    """Bring ``part`` to the whole body of ``url`` (at most ``limit`` bytes); its SHA-256."""
    resume = f"run it again to resume from {part}"
    for _attempt in range(3):
        if part.is_symlink():
            _open_part(part, "rb")  # raises, naming the link
        offset = part.stat().st_size if part.is_file() else 0
        if offset > limit:
            part.unlink()  # longer than the file can be: not a prefix of it
            offset = 0
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = _open(request, timeout, watch)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                # Range not satisfiable: the part file is probably already complete.
                digest = _hash_existing(part)
                if digest.hexdigest() == sha256:
                    return digest
                part.unlink()
                continue
            raise DownloadError(f"{url}: HTTP error {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if watch.expired:
                raise DownloadError(f"{url}: no reply within the deadline; {resume}") from exc
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"{url}: cannot connect: {reason}") from exc
        with response:
            status = response.status
            if offset and status == 206:
                start = _content_range_start(response.headers.get("Content-Range"))
                if start != offset:
                    part.unlink()  # a range we did not ask for: start over
                    continue
                digest, mode = _hash_existing(part), "ab"
            elif status == 200:
                # Fresh download, or a server that ignored our Range header: start over.
                digest, mode, offset = hashlib.sha256(), "wb", 0
            else:
                raise DownloadError(f"{url}: unexpected HTTP status {status}")
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            if total is not None and (total > limit or (exact and total != limit)):
                if mode == "ab":
                    part.unlink()
                want = f"the expected {limit:,}" if exact else f"the most accepted, {limit:,}"
                raise DownloadError(
                    f"{url}: the server announces {total:,} bytes, not {want}; nothing was "
                    "downloaded"
                )
            label = part.name.removesuffix(".part")
            _receive(response, part, mode, digest, offset, limit, exact, total, watch,
                     url, label, progress, min_rate, rate_window)  # fmt: skip
            return digest
    raise DownloadError(f"{url}: the server's range replies made no sense; gave up")


def _receive(
    response: Any,
    part: Path,
    mode: str,
    digest: hashlib._Hash,
    offset: int,
    limit: int,
    exact: bool,
    total: int | None,
    watch: _Watch,
    url: str,
    label: str,
    progress: bool,
    min_rate: float,
    rate_window: float,
) -> None:
    """Append the body to ``part`` in chunks, enforcing the size, deadline and minimum rate."""
    resume = f"run it again to resume from {part}"
    received = offset
    window_start, window_bytes = time.monotonic(), received
    try:
        with _open_part(part, mode) as f, _Progress(progress, total, offset, label) as bar:
            while True:
                chunk = response.read1(min(_CHUNK, limit - received + 1))
                if not chunk:
                    break
                if received + len(chunk) > limit:
                    f.close()
                    part.unlink()
                    raise DownloadError(
                        f"{url}: the server sent more than the "
                        + ("expected" if exact else "most accepted,")
                        + f" {limit:,} bytes; stopped there and deleted {part}"
                    )
                f.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                now = time.monotonic()
                if now - window_start >= rate_window:
                    rate = (received - window_bytes) / (now - window_start)
                    if rate < min_rate:
                        raise DownloadError(
                            f"{url}: too slow: {rate:,.0f} bytes/s over the last "
                            f"{now - window_start:.0f} s, below the minimum of {min_rate:,.0f} "
                            f"(--min-rate); {resume}"
                        )
                    window_start, window_bytes = now, received
            f.flush()
            os.fsync(f.fileno())
    except (OSError, http.client.HTTPException) as exc:
        if watch.expired:
            raise DownloadError(
                f"{url}: not finished within the deadline (--deadline), {received:,} bytes "
                f"received; {resume}"
            ) from exc
        raise DownloadError(
            f"{url}: download interrupted after {received} bytes ({exc}); {resume}"
        ) from exc
    if watch.expired:
        raise DownloadError(
            f"{url}: not finished within the deadline (--deadline), {received:,} bytes "
            f"received; {resume}"
        )
    expected = limit if exact else total
    if expected is not None and received != expected:
        raise DownloadError(
            f"{url}: connection closed after {received} of {expected} bytes; {resume}"
        )


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    path = PurePosixPath(member.name)
    parts = [p for p in path.parts if p != "."]
    if path.is_absolute() or ".." in parts or not parts or parts[0] != BATCH_FOLDER:
        raise DataFormatError(
            f"{archive}: refusing to extract member {excerpt(member.name)}: every member must lie "
            f"inside {BATCH_FOLDER}/"
        )
    if not (member.isfile() or member.isdir()):
        raise DataFormatError(
            f"{archive}: refusing to extract member {excerpt(member.name)}: not a plain file or "
            "folder"
        )


def extract_cifar(archive: Path, folder: Path) -> Path:
    """Extract ``cifar-10-batches-py`` from the official tarball into ``folder``.

    Extracts into a temporary folder, then renames the result into place, so an
    interrupted extraction leaves nothing half-done. Skipped when the batch folder already
    holds all seven files.

    Returns:
        ``folder / "cifar-10-batches-py"``.
    """
    target = folder / BATCH_FOLDER
    needed = (*TRAIN_BATCHES, *TEST_BATCHES, META_FILE)
    if all((target / n).is_file() for n in needed):
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = []
                total = 0
                for count, member in enumerate(tar, start=1):
                    check_archive_member(member, count, archive)
                    _check_member(member, archive)
                    total += member.size
                    if total > _MAX_EXTRACTED_BYTES:
                        raise DataFormatError(
                            f"{archive}: its members add up to more than "
                            f"{_MAX_EXTRACTED_BYTES:,} bytes; not extracting it"
                        )
                    members.append(member)
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - members were checked above
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataFormatError(f"{archive}: cannot extract: {exc}") from exc
        missing = [n for n in needed if not (tmp / BATCH_FOLDER / n).is_file()]
        if missing:
            raise DataFormatError(f"{archive}: no {BATCH_FOLDER}/{', '.join(missing)} inside")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / BATCH_FOLDER, target)
        fsync_directory(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download(
    name: str,
    root: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    progress: bool = True,
    *,
    checksums: Mapping[str, str] | None = None,
    sizes: Mapping[str, int] | None = None,
    timeout: float = 60.0,
    deadline: float | None = 3600.0,
    min_rate: float = 1024.0,
) -> Path:
    """Download a data set (if not already there) and return the folder that holds it.

    Args:
        name: ``"fashion-mnist"``, ``"mnist"`` or ``"cifar10"``.
        root: the data root; files go to ``root/<name>`` (``root/cifar10`` for CIFAR-10).
            Default: ``$GRAPHGRAD_DATA``, else ``~/.cache/graphgrad``, where the readers
            (``FashionMNIST()``, ``MNIST()``, ``CIFAR10()``) look by default.
        base_url: another host (a mirror, a test server) to take the files from, by their
            official names. Default: the official hosts in ``SOURCES[name].base_urls``,
            https first, each tried in turn when one fails.
        progress: show tqdm progress bars, when tqdm is installed.
        checksums: {file name: SHA-256} to use instead of ``CHECKSUMS[name]``.
        sizes: {file name: bytes}; default: ``SIZES[name]`` for each file checked against
            its official SHA-256, else unknown (the file is then cut off at
            :data:`MAX_DOWNLOAD_BYTES`).
        timeout: seconds allowed for connecting and for each read of every request.
        deadline: seconds allowed for each file in all (``None``: no limit).
        min_rate: slowest accepted transfer in bytes per second (measured over 30 s).

    Returns:
        The folder holding the files: ``root/fashion-mnist``, ``root/mnist`` or, for
        CIFAR-10, the extracted ``root/cifar10/cifar-10-batches-py``. Any of these can be
        passed as ``root=`` to the matching reader.

    Raises:
        ValueError: unknown name, a base URL that is not http(s), a bad timeout, deadline
            or rate, or a missing or malformed checksum.
        ChecksumError: a downloaded file has the wrong SHA-256 (nothing left in place).
        DownloadError: network or HTTP failure, too slow, past the deadline, longer than
            expected (partial files are kept to resume, except an overlong one).
        DataFormatError: the CIFAR-10 archive is corrupt, too large or has unsafe members.
    """
    if name not in SOURCES:
        raise ValueError(
            f"download: unknown data set {excerpt(name)}; choose from {sorted(SOURCES)}"
        )
    for what, value in (("timeout", timeout), ("deadline", deadline)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ValueError(
                f"download: {what} must be a finite number of seconds > 0, got {value!r}"
            )
    if not (min_rate >= 0 and math.isfinite(min_rate)):
        raise ValueError(f"download: min_rate must be finite and >= 0, got {min_rate!r}")
    source = SOURCES[name]
    table = CHECKSUMS[name] if checksums is None else checksums
    if sizes is None:
        # An official size belongs to its official SHA-256: a patched or replaced checksum
        # means other files, of sizes not known here.
        sizes = {
            f: n for f, n in SIZES[name].items() if table.get(f, "").lower() == _PINNED[name].get(f)
        }
    bases = source.base_urls if base_url is None else (base_url,)
    for base in bases:
        if not base.startswith(("http://", "https://")):
            raise ValueError(
                f"download: base URL must start with http:// or https://, got {excerpt(base)}"
            )
    bases = tuple(b if b.endswith("/") else b + "/" for b in bases)
    folder = (Path(root).expanduser() if root is not None else default_data_root()) / source.subdir
    expected: dict[str, str] = {}
    for filename in source.files:
        sha = table.get(filename)
        if sha is None or not _HEX64.fullmatch(sha.lower()):
            raise ValueError(
                f"download: no valid SHA-256 for {name}/{filename} (got {excerpt(sha)}); "
                "pass checksums={file name: sha256}"
            )
        expected[filename] = sha.lower()
    folder.mkdir(parents=True, exist_ok=True)
    for filename in source.files:
        failures: list[str] = []
        for k, base in enumerate(bases):
            try:
                fetch_file(
                    base + filename,
                    folder / filename,
                    expected[filename],
                    size=sizes.get(filename),
                    timeout=timeout,
                    deadline=deadline,
                    min_rate=min_rate,
                    progress=progress,
                )
                break
            except DownloadError as exc:
                if k + 1 == len(bases):
                    if failures:
                        raise DownloadError(f"{exc} (also tried: {'; '.join(failures)})") from exc
                    raise
                failures.append(str(exc))
    if name == "cifar10":
        return extract_cifar(folder / ARCHIVE_NAME, folder)
    return folder


def read_checksum_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``sha256sum``-style file: lines ``<64 hex digits>  <file name>``.

    Returns:
        {file name: SHA-256}. Blank lines and ``#`` comments are skipped.

    Raises:
        ValueError: the file cannot be read, is over 1 MB, or has a malformed line (named).
    """
    p = Path(path)
    try:
        if p.stat().st_size > 1 << 20:
            raise ValueError(f"{p}: a checksum file over 1 MB; not reading it")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read the checksum file: {exc}") from exc
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not _HEX64.fullmatch(parts[0].lower()):
            raise ValueError(f"{p}:{number}: expected '<sha256>  <file name>', got {excerpt(line)}")
        out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def add_download_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``download`` sub-command to a CLI's argparse ``subparsers``.

    ``graphgrad download fashion-mnist|mnist|cifar10 [--root DIR] [--base-url URL]
    [--checksums FILE] [--timeout S] [--deadline S] [--min-rate B] [--no-progress]``. The
    sub-parser's defaults set ``func`` (and ``handler``) to :func:`download_command`, which
    takes the parsed namespace and returns the exit code.
    """
    parser = subparsers.add_parser(
        "download",
        help="download a data set (fashion-mnist, mnist, cifar10), verified by SHA-256",
        description="Download a data set from its official host (https first), resuming "
        "interrupted downloads and verifying every file's size and SHA-256. Prints the folder "
        "holding it.",
    )
    parser.add_argument("name", choices=sorted(SOURCES), help="the data set")
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        metavar="DIR",
        help="data root (default: $GRAPHGRAD_DATA, else ~/.cache/graphgrad)",
    )
    parser.add_argument(
        "--base-url", default=None, metavar="URL", help="take the files from this mirror"
    )
    parser.add_argument(
        "--checksums",
        type=Path,
        default=None,
        metavar="FILE",
        help="SHA-256 sums to check instead of the official ones, one '<sha256>  <name>' a line "
        "(for a mirror that serves other files)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds allowed per connect or read (default 60)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds allowed per file in all, then give up; run again to resume (default 3600)",
    )
    parser.add_argument(
        "--min-rate",
        type=float,
        default=1024.0,
        metavar="B",
        help="give up below this many bytes per second over 30 s (default 1024)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=download_command, handler=download_command)
    return parser


def download_command(args: argparse.Namespace) -> int:
    """Run ``graphgrad download`` for parsed ``args``; return the exit code.

    Prints the data set's folder on success (0). On failure prints one line,
    ``graphgrad download: error: ...``, to stderr and returns 1.
    """
    try:
        sums_file = getattr(args, "checksums", None)
        path = download(
            args.name,
            root=getattr(args, "root", None),
            base_url=getattr(args, "base_url", None),
            progress=not getattr(args, "no_progress", False),
            checksums=read_checksum_file(sums_file) if sums_file is not None else None,
            timeout=getattr(args, "timeout", 60.0),
            deadline=getattr(args, "deadline", 3600.0),
            min_rate=getattr(args, "min_rate", 1024.0),
        )
    except (DownloadError, DataFormatError, OSError, ValueError) as exc:
        message = " ".join(str(exc).split())
        print(f"graphgrad download: error: {message}", file=sys.stderr)
        return 1
    print(path)
    return 0
