"""Downloads against a loopback HTTP server: fresh, resumed, range-ignoring, corrupt, cached.

No test reaches beyond 127.0.0.1: an autouse fixture makes any other host fail.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import socket
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data_fixtures import FileServer, idx_bytes, make_tarball, serve, write_cifar
from graphgrad.data import (
    CHECKSUMS,
    CIFAR10,
    SIZES,
    SOURCES,
    ChecksumError,
    DataFormatError,
    DownloadError,
    FashionMNIST,
    _download,
    download,
    fetch_file,
)

TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket connection beyond 127.0.0.1 fails the test (whatever opener is used)."""
    real = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[0] != "127.0.0.1":
            raise AssertionError(f"test tried to reach {address}")
        real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.delenv("GRAPHGRAD_DATA", raising=False)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _idx_files(n: int = 20) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    files = {}
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images), mtime=0)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels), mtime=0)
    return files


@pytest.fixture
def idx_server() -> Iterator[FileServer]:
    with serve(_idx_files()) as server:
        yield server


def _sums(files: dict[str, bytes]) -> dict[str, str]:
    return {name: _sha(data) for name, data in files.items()}


def test_fresh_download(tmp_path: Path, idx_server: FileServer) -> None:
    folder = download(
        "fashion-mnist",
        tmp_path,
        idx_server.base_url,
        progress=False,
        checksums=_sums(idx_server.files),
        timeout=TIMEOUT,
    )
    assert folder == tmp_path / "fashion-mnist"
    for name, data in idx_server.files.items():
        assert (folder / name).read_bytes() == data
    assert not list(folder.glob("*.part"))
    assert sorted(r.path for r in idx_server.log) == sorted(idx_server.files)
    assert all(r.range is None and r.status == 200 for r in idx_server.log)
    assert len(FashionMNIST(folder)) == 20  # the readers take the returned folder


def test_already_present_is_not_fetched_again(tmp_path: Path, idx_server: FileServer) -> None:
    sums = _sums(idx_server.files)
    download("mnist", tmp_path, idx_server.base_url, False, checksums=sums, timeout=TIMEOUT)
    seen = len(idx_server.log)
    download("mnist", tmp_path, idx_server.base_url, False, checksums=sums, timeout=TIMEOUT)
    assert len(idx_server.log) == seen
    # A present file with the wrong content is fetched again and replaced.
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"tampered")
    download("mnist", tmp_path, idx_server.base_url, False, checksums=sums, timeout=TIMEOUT)
    assert [r.path for r in idx_server.log[seen:]] == ["t10k-labels-idx1-ubyte.gz"]
    assert bad.read_bytes() == idx_server.files["t10k-labels-idx1-ubyte.gz"]


def _big_file() -> bytes:
    return np.random.default_rng(1).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()


def test_resume_sends_range_and_fetches_only_the_rest(tmp_path: Path) -> None:
    data = _big_file()
    with serve({"blob": data}) as server:
        dest = tmp_path / "blob"
        (tmp_path / "blob.part").write_bytes(data[:123_456])
        assert fetch_file(server.base_url + "blob", dest, _sha(data), timeout=TIMEOUT) is True
    assert dest.read_bytes() == data
    assert not (tmp_path / "blob.part").exists()
    [request] = server.log
    assert request.range == "bytes=123456-" and request.status == 206
    assert request.sent == len(data) - 123_456


def test_server_ignoring_range_restarts(tmp_path: Path) -> None:
    data = _big_file()
    with serve({"blob": data}, honour_range=False) as server:
        (tmp_path / "blob.part").write_bytes(b"stale bytes from another version")
        fetch_file(server.base_url + "blob", tmp_path / "blob", _sha(data), timeout=TIMEOUT)
    assert (tmp_path / "blob").read_bytes() == data
    [request] = server.log
    assert request.range is not None and request.status == 200 and request.sent == len(data)


def test_interrupted_download_keeps_part_then_resumes(tmp_path: Path) -> None:
    data = _big_file()
    with serve({"blob": data}) as server:
        server.cut_after = 100_000
        with pytest.raises(DownloadError, match="resume"):
            fetch_file(server.base_url + "blob", tmp_path / "blob", _sha(data), timeout=TIMEOUT)
        assert (tmp_path / "blob.part").stat().st_size == 100_000
        assert not (tmp_path / "blob").exists()
        server.cut_after = None
        fetch_file(server.base_url + "blob", tmp_path / "blob", _sha(data), timeout=TIMEOUT)
    assert (tmp_path / "blob").read_bytes() == data
    assert server.log[-1].range == "bytes=100000-" and server.log[-1].sent == len(data) - 100_000


def test_complete_part_file_answered_416(tmp_path: Path) -> None:
    data = b"complete already"
    with serve({"f": data}) as server:
        (tmp_path / "f.part").write_bytes(data)
        fetch_file(server.base_url + "f", tmp_path / "f", _sha(data), timeout=TIMEOUT)
    assert (tmp_path / "f").read_bytes() == data
    assert [r.status for r in server.log] == [416]


def test_checksum_mismatch(tmp_path: Path, idx_server: FileServer) -> None:
    sums = _sums(idx_server.files)
    wrong = "0" * 64
    sums["train-labels-idx1-ubyte.gz"] = wrong
    with pytest.raises(ChecksumError) as info:
        download("mnist", tmp_path, idx_server.base_url, False, checksums=sums, timeout=TIMEOUT)
    error = info.value
    target = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    actual = _sha(idx_server.files["train-labels-idx1-ubyte.gz"])
    assert error.expected == wrong and error.actual == actual
    assert str(target) in str(error) and wrong in str(error) and actual in str(error)
    assert not target.exists()
    assert not target.with_name(target.name + ".part").exists()


def test_checksum_table_can_be_patched(
    tmp_path: Path, idx_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CHECKSUMS, "mnist", _sums(idx_server.files))
    folder = download("mnist", tmp_path, idx_server.base_url, progress=False, timeout=TIMEOUT)
    assert (folder / "t10k-images-idx3-ubyte.gz").is_file()


def test_progress_bar_path(
    tmp_path: Path, idx_server: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    download("mnist", tmp_path, idx_server.base_url, progress=True,
             checksums=_sums(idx_server.files), timeout=TIMEOUT)  # fmt: skip
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_http_errors(tmp_path: Path, idx_server: FileServer) -> None:
    with pytest.raises(DownloadError, match="HTTP error 404"):
        fetch_file(idx_server.base_url + "missing", tmp_path / "m", "0" * 64, timeout=TIMEOUT)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot connect"):
        fetch_file(f"http://127.0.0.1:{port}/x", tmp_path / "x", "0" * 64, timeout=TIMEOUT)


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        download("imagenet", tmp_path)
    with pytest.raises(ValueError, match="http"):
        download("mnist", tmp_path, base_url="file:///etc/")
    with pytest.raises(ValueError, match="no valid SHA-256"):
        download("mnist", tmp_path, base_url="http://127.0.0.1:1/", checksums={})
    with pytest.raises(ValueError, match="timeout"):
        download("mnist", tmp_path, timeout=0)


def test_official_tables() -> None:
    assert set(SOURCES) == set(CHECKSUMS) == {"fashion-mnist", "mnist", "cifar10"}
    for name, source in SOURCES.items():
        assert set(CHECKSUMS[name]) == set(source.files)
        for sha in CHECKSUMS[name].values():
            assert len(sha) == 64 and int(sha, 16) >= 0 and sha == sha.lower()
    assert set(SIZES) == set(SOURCES)
    for name, source in SOURCES.items():
        assert set(SIZES[name]) == set(source.files)
        # https first wherever the host offers it; plain http only as a later fallback
        assert source.base_urls[0].startswith("https://")
        assert all(u.endswith("/") for u in source.base_urls)
    assert SOURCES["fashion-mnist"].base_urls[-1].startswith("http://fashion-mnist.s3-website")
    assert SOURCES["mnist"].base_url == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert SOURCES["cifar10"].base_url + SOURCES["cifar10"].files[0] == (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    )


# --- CIFAR-10: tarball download and safe extraction ------------------------------------------


def test_cifar10_download_and_extract(tmp_path: Path) -> None:
    arrays = write_cifar(tmp_path / "src")
    tarball = make_tarball(tmp_path / "src", tmp_path / "fixture.tar.gz")
    with serve({"cifar-10-python.tar.gz": tarball}) as server:
        sums = {"cifar-10-python.tar.gz": _sha(tarball)}
        root = tmp_path / "root"
        folder = download("cifar10", root, server.base_url, False, checksums=sums, timeout=TIMEOUT)
        assert folder == root / "cifar10" / "cifar-10-batches-py"
        np.testing.assert_array_equal(CIFAR10(folder).images, arrays["train_data"])
        np.testing.assert_array_equal(CIFAR10(root, train=False).labels, arrays["test_labels"])
        assert not [p for p in (root / "cifar10").iterdir() if p.name.startswith(".extract")]
        download("cifar10", root, server.base_url, False, checksums=sums, timeout=TIMEOUT)
        assert len(server.log) == 1  # second call: archive verified, extraction skipped


def _evil_tarball(member: tarfile.TarInfo, payload: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"x"))
        member.size = len(payload) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return buf.getvalue()


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../escaped.txt"),
        tarfile.TarInfo("/tmp/absolute.txt"),
        tarfile.TarInfo("cifar-10-batches-py/../../escaped.txt"),
        tarfile.TarInfo("elsewhere/file.txt"),
        _link("cifar-10-batches-py/link", "/etc/passwd"),
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "outside-folder", "symlink"],
)
def test_unsafe_tarball_members_are_refused(tmp_path: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    tarball = _evil_tarball(member)
    with serve({"cifar-10-python.tar.gz": tarball}) as server:
        sums = {"cifar-10-python.tar.gz": _sha(tarball)}
        root = tmp_path / "deep" / "root"
        with pytest.raises(DataFormatError, match="refusing to extract") as info:
            download("cifar10", root, server.base_url, False, checksums=sums, timeout=TIMEOUT)
    assert name in str(info.value)
    assert not (tmp_path / "deep" / "escaped.txt").exists()
    assert not (tmp_path / "deep" / "root" / "escaped.txt").exists()
    assert not (root / "cifar10" / "cifar-10-batches-py").exists()
    assert not [p for p in (root / "cifar10").iterdir() if p.name.startswith(".extract")]


# --- hostile servers: overlong bodies, trickles, planted links, mirrors --------------------------


class RawServer:
    """A loopback TCP server answering every connection with ``reply`` (bytes), sent in
    ``step``-byte pieces ``delay`` seconds apart, for at most ``for_seconds``; counts what it
    sent. For servers no well-behaved HTTP library would write."""

    def __init__(self, reply: bytes, step: int = 1 << 16, delay: float = 0.0,
                 for_seconds: float = 20.0) -> None:  # fmt: skip
        self.reply, self.step, self.delay, self.for_seconds = reply, step, delay, for_seconds
        self.sent = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096) or b"\r\n\r\n"
                start = time.monotonic()
                try:
                    for i in range(0, len(self.reply), self.step):
                        if self._stop.is_set() or time.monotonic() - start > self.for_seconds:
                            break
                        conn.sendall(self.reply[i : i + self.step])
                        self.sent += len(self.reply[i : i + self.step])
                        if self.delay:
                            time.sleep(self.delay)
                except OSError:
                    pass  # the client hung up: what we want it to do

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=25)
        self._sock.close()


def _reply(body: bytes, length: int | None) -> bytes:
    head = "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode() + body


def test_body_longer_than_the_expected_size_stops_there(tmp_path: Path) -> None:
    good = b"x" * 1000
    body = good + bytes(64 << 20)  # 64 MiB more than the file has
    dest = tmp_path / "f"
    with RawServer(_reply(body, None)) as server:  # no Content-Length: delimited by close
        with pytest.raises(DownloadError, match="sent more than the expected 1,000 bytes"):
            fetch_file(server.url + "f", dest, _sha(good), size=1000, timeout=TIMEOUT)
        assert server.sent < 32 << 20  # the client hung up long before the end (64 MiB)
    assert not dest.exists() and not (tmp_path / "f.part").exists()
    # a Content-Length that disagrees with the expected size: refused before any body
    with (
        RawServer(_reply(body, len(body))) as server,
        pytest.raises(DownloadError, match="announces 67,109,864 bytes, not the expected"),
    ):
        fetch_file(server.url + "f", dest, _sha(good), size=1000, timeout=TIMEOUT)
    assert not (tmp_path / "f.part").exists()
    # size unknown: cut off at max_bytes
    with (
        RawServer(_reply(body, None)) as server,
        pytest.raises(DownloadError, match="more than the most accepted, 2,000 bytes"),
    ):
        fetch_file(server.url + "f", dest, _sha(good), max_bytes=2000, timeout=TIMEOUT)
    assert not (tmp_path / "f.part").exists()


def test_trickling_body_is_abandoned_below_the_minimum_rate(tmp_path: Path) -> None:
    body = bytes(10_000)
    with RawServer(_reply(body, len(body)), step=1, delay=0.02) as server:  # ~50 bytes/s
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match=r"too slow: .* below the minimum of 1,000"):
            fetch_file(server.url + "f", tmp_path / "f", _sha(body), timeout=TIMEOUT,
                       min_rate=1000, rate_window=0.5)  # fmt: skip
        assert time.monotonic() - t0 < 10  # never the 200 s the trickle would take
    assert (tmp_path / "f.part").is_file()  # kept for resuming


def test_trickling_headers_are_abandoned_at_the_deadline(tmp_path: Path) -> None:
    # each byte arrives within the per-read timeout, so only an overall deadline ends this
    with RawServer(b"HTTP/1.0 200 OK\r\nX-Slow: " + b"y" * 5000, step=1, delay=0.05) as server:
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match="deadline"):
            fetch_file(server.url + "f", tmp_path / "f", "0" * 64, timeout=TIMEOUT, deadline=1.0)
        assert time.monotonic() - t0 < 10


def test_planted_part_symlink_is_not_followed(tmp_path: Path, idx_server: FileServer) -> None:
    name = "train-labels-idx1-ubyte.gz"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / (name + ".part")).symlink_to(victim)
    with pytest.raises(DownloadError, match="symbolic link"):
        fetch_file(idx_server.base_url + name, folder / name, _sha(idx_server.files[name]),
                   timeout=TIMEOUT)  # fmt: skip
    assert victim.read_text() == "precious"
    assert not (folder / name).exists() and idx_server.log == []


def test_mirrors_are_tried_in_order(
    tmp_path: Path, idx_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    mirrors = (dead, idx_server.base_url)
    monkeypatch.setitem(SOURCES, "mnist", dataclasses.replace(SOURCES["mnist"], base_urls=mirrors))
    folder = download("mnist", tmp_path, progress=False, checksums=_sums(idx_server.files),
                      timeout=TIMEOUT)  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == sorted(idx_server.files)


def test_https_is_never_redirected_to_http() -> None:
    request = urllib.request.Request("https://example.org/file")
    handler = _download._NoDowngrade()
    with pytest.raises(urllib.error.URLError, match="refusing a redirect from https"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://example.org/file")
    ok = handler.redirect_request(request, None, 302, "Found", {}, "https://mirror.org/file")
    assert ok is not None and ok.full_url == "https://mirror.org/file"


def test_official_sizes_apply_only_to_official_hashes(
    tmp_path: Path, idx_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int | None] = []
    real = _download.fetch_file

    def spy(*args: Any, **kwargs: Any) -> bool:
        seen.append(kwargs.get("size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(_download, "fetch_file", spy)
    download("mnist", tmp_path, idx_server.base_url, False, checksums=_sums(idx_server.files),
             timeout=TIMEOUT)  # fmt: skip
    assert seen == [None] * 4
    with pytest.raises(DownloadError):  # the fixture's files are not the official ones
        download("mnist", tmp_path / "b", idx_server.base_url, False, timeout=TIMEOUT)
    assert seen[4] == SIZES["mnist"]["train-images-idx3-ubyte.gz"]


def test_checksum_file(tmp_path: Path) -> None:
    from graphgrad.data import read_checksum_file

    good = tmp_path / "SHA256SUMS"
    good.write_text(f"# sums\n{'A' * 64}  a.gz\n\n{'b' * 64} *b.gz\n")
    assert read_checksum_file(good) == {"a.gz": "a" * 64, "b.gz": "b" * 64}
    bad = tmp_path / "bad"
    bad.write_text(f"{'a' * 64}  a.gz\nnot-a-sum " + "x" * 40_000 + "\n")
    with pytest.raises(ValueError, match=r"bad:2: expected '<sha256>  <file name>'") as info:
        read_checksum_file(bad)
    assert len(str(info.value)) < 300
    with pytest.raises(ValueError, match="cannot read"):
        read_checksum_file(tmp_path / "missing")
