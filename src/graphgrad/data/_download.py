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
import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from .._atomic import fsync_directory, sha256_file
from ._cifar import ARCHIVE_NAME, BATCH_FOLDER, META_FILE, TEST_BATCHES, TRAIN_BATCHES
from ._errors import ChecksumError, DataFormatError, DownloadError
from ._paths import default_data_root

__all__ = [
    "CHECKSUMS",
    "SOURCES",
    "add_download_parser",
    "download",
    "download_command",
    "fetch_file",
]

_CHUNK = 1 << 16
_USER_AGENT = "graphgrad-data/0.1 (+urllib)"


@dataclass(frozen=True)
class Source:
    """Where a data set's files come from and where they go."""

    subdir: str
    """Folder under the data root (``fashion-mnist``, ``mnist``, ``cifar10``)."""
    base_url: str
    """URL that the file names are appended to."""
    files: tuple[str, ...]
    """The official file names."""


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

SOURCES: dict[str, Source] = {
    # Zalando Research's own bucket. Its S3 *website* endpoint serves plain HTTP only;
    # integrity comes from the SHA-256 check, not from the transport.
    "fashion-mnist": Source(
        "fashion-mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", _IDX_FILES
    ),
    # The mirror PyTorch maintains (yann.lecun.com no longer serves the files reliably).
    "mnist": Source("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/", _IDX_FILES),
    "cifar10": Source("cifar10", "https://www.cs.toronto.edu/~kriz/", (ARCHIVE_NAME,)),
}
"""Data set name -> :class:`Source`."""

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


def _hash_existing(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest


def _content_range_start(value: str | None) -> int | None:
    """The first byte position in a ``Content-Range: bytes START-END/TOTAL`` header."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    return int(match.group(1)) if match else None


def fetch_file(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    *,
    timeout: float = 60.0,
    progress: bool = False,
) -> bool:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if present; verify; rename.

    Args:
        url: an ``http://`` or ``https://`` URL.
        dest: the final path; its folder must exist.
        sha256: the expected SHA-256 (64 lowercase hex digits).
        timeout: seconds allowed for connecting and for each read.
        progress: show a tqdm progress bar (if tqdm is installed).

    Returns:
        True if the file was downloaded, False if ``dest`` was already there with the
        right hash (nothing fetched).

    Raises:
        ChecksumError: the downloaded bytes have another hash; the ``.part`` file is
            deleted and ``dest`` is left as it was.
        DownloadError: a network or HTTP error; a partial ``.part`` is kept for resuming.
    """
    target = Path(dest)
    if target.is_file() and sha256_file(target) == sha256:
        return False
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    for _attempt in range(3):
        offset = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                # Range not satisfiable: the part file is probably already complete.
                digest = _hash_existing(part)
                if digest.hexdigest() == sha256:
                    break
                part.unlink()
                continue
            raise DownloadError(f"{url}: HTTP error {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
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
            received = offset
            try:
                with (
                    open(part, mode) as f,
                    _Progress(progress, total, offset, target.name) as bar,
                ):
                    while chunk := response.read(_CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"{url}: download interrupted after {received} bytes ({exc}); "
                    f"run it again to resume from {part}"
                ) from exc
            if total is not None and received != total:
                raise DownloadError(
                    f"{url}: connection closed after {received} of {total} bytes; "
                    f"run it again to resume from {part}"
                )
        break
    else:
        raise DownloadError(f"{url}: the server's range replies made no sense; gave up")
    actual = digest.hexdigest()
    if actual != sha256:
        part.unlink()
        raise ChecksumError(str(target), sha256, actual)
    os.replace(part, target)
    fsync_directory(target.parent)
    return True


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    path = PurePosixPath(member.name)
    parts = [p for p in path.parts if p != "."]
    if path.is_absolute() or ".." in parts or not parts or parts[0] != BATCH_FOLDER:
        raise DataFormatError(
            f"{archive}: refusing to extract member {member.name!r}: every member must lie "
            f"inside {BATCH_FOLDER}/"
        )
    if not (member.isfile() or member.isdir()):
        raise DataFormatError(
            f"{archive}: refusing to extract member {member.name!r}: not a plain file or folder"
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
                members = tar.getmembers()
                for member in members:
                    _check_member(member, archive)
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
    timeout: float = 60.0,
) -> Path:
    """Download a data set (if not already there) and return the folder that holds it.

    Args:
        name: ``"fashion-mnist"``, ``"mnist"`` or ``"cifar10"``.
        root: the data root; files go to ``root/<name>`` (``root/cifar10`` for CIFAR-10).
            Default: ``$GRAPHGRAD_DATA``, else ``~/.cache/graphgrad``, where the readers
            (``FashionMNIST()``, ``MNIST()``, ``CIFAR10()``) look by default.
        base_url: another host (a mirror, a test server) to take the files from, by their
            official names.
        progress: show tqdm progress bars, when tqdm is installed.
        checksums: {file name: SHA-256} to use instead of ``CHECKSUMS[name]``.
        timeout: seconds allowed for connecting and for each read of every request.

    Returns:
        The folder holding the files: ``root/fashion-mnist``, ``root/mnist`` or, for
        CIFAR-10, the extracted ``root/cifar10/cifar-10-batches-py``. Any of these can be
        passed as ``root=`` to the matching reader.

    Raises:
        ValueError: unknown name, a base URL that is not http(s), a bad timeout, or a
            missing or malformed checksum.
        ChecksumError: a downloaded file has the wrong SHA-256 (nothing left in place).
        DownloadError: network or HTTP failure (partial files are kept to resume).
        DataFormatError: the CIFAR-10 archive is corrupt or has unsafe members.
    """
    if name not in SOURCES:
        raise ValueError(f"download: unknown data set {name!r}; choose from {sorted(SOURCES)}")
    if not timeout > 0:
        raise ValueError(f"download: timeout must be > 0 seconds, got {timeout!r}")
    source = SOURCES[name]
    table = CHECKSUMS[name] if checksums is None else checksums
    base = source.base_url if base_url is None else base_url
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"download: base URL must start with http:// or https://, got {base!r}")
    if not base.endswith("/"):
        base += "/"
    folder = (Path(root).expanduser() if root is not None else default_data_root()) / source.subdir
    expected: dict[str, str] = {}
    for filename in source.files:
        sha = table.get(filename)
        if sha is None or not _HEX64.fullmatch(sha.lower()):
            raise ValueError(
                f"download: no valid SHA-256 for {name}/{filename} (got {sha!r}); "
                "pass checksums={file name: sha256}"
            )
        expected[filename] = sha.lower()
    folder.mkdir(parents=True, exist_ok=True)
    for filename in source.files:
        fetch_file(
            base + filename,
            folder / filename,
            expected[filename],
            timeout=timeout,
            progress=progress,
        )
    if name == "cifar10":
        return extract_cifar(folder / ARCHIVE_NAME, folder)
    return folder


def add_download_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``download`` sub-command to a CLI's argparse ``subparsers``.

    ``graphgrad download fashion-mnist|mnist|cifar10 [--root DIR] [--base-url URL]
    [--timeout S] [--no-progress]``. The sub-parser's defaults set ``func`` to
    :func:`download_command`, which takes the parsed namespace and returns the exit code.
    """
    parser = subparsers.add_parser(
        "download",
        help="download a data set (fashion-mnist, mnist, cifar10), verified by SHA-256",
        description="Download a data set from its official host, resuming interrupted "
        "downloads and verifying every file's SHA-256. Prints the folder holding it.",
    )
    parser.add_argument("name", choices=sorted(SOURCES), help="the data set")
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="data root (default: $GRAPHGRAD_DATA, else ~/.cache/graphgrad)",
    )
    parser.add_argument("--base-url", default=None, help="take the files from this mirror")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per connect/read (default 60)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=download_command)
    return parser


def download_command(args: argparse.Namespace) -> int:
    """Run ``graphgrad download`` for parsed ``args``; return the exit code.

    Prints the data set's folder on success (0). On failure prints one line,
    ``graphgrad download: error: ...``, to stderr and returns 1.
    """
    try:
        path = download(
            args.name,
            root=getattr(args, "root", None),
            base_url=getattr(args, "base_url", None),
            progress=not getattr(args, "no_progress", False),
            timeout=getattr(args, "timeout", 60.0),
        )
    except (DownloadError, DataFormatError, OSError, ValueError) as exc:
        message = " ".join(str(exc).split())
        print(f"graphgrad download: error: {message}", file=sys.stderr)
        return 1
    print(path)
    return 0
