"""Downloads against a loopback HTTP server: fresh, resumed, range-ignoring, corrupt, cached.

No test reaches beyond 127.0.0.1: an autouse fixture makes any other host fail.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import socket
import tarfile
import urllib.parse
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
    add_download_parser,
    download,
    fetch_file,
)

TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = urllib.request.urlopen

    def guarded(request: Any, *args: Any, **kwargs: Any) -> Any:
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        host = urllib.parse.urlsplit(url).hostname
        if host != "127.0.0.1":
            raise AssertionError(f"test tried to reach {url}")
        assert kwargs.get("timeout") is not None, "every request must have a timeout"
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
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


# --- the CLI handler ---------------------------------------------------------------------------


def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphgrad")
    add_download_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_success_and_failure(
    tmp_path: Path,
    idx_server: FileServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(CHECKSUMS, "fashion-mnist", _sums(idx_server.files))
    argv = ["download", "fashion-mnist", "--root", str(tmp_path), "--base-url",
            idx_server.base_url, "--no-progress", "--timeout", "5"]  # fmt: skip
    args = _cli().parse_args(argv)
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "fashion-mnist") and err == ""

    bad = dict(_sums(idx_server.files), **{"train-images-idx3-ubyte.gz": "f" * 64})
    monkeypatch.setitem(CHECKSUMS, "mnist", bad)
    args = _cli().parse_args(["download", "mnist", "--root", str(tmp_path), "--base-url",
                              idx_server.base_url, "--no-progress"])  # fmt: skip
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("graphgrad download: error: ")
    assert "SHA-256 mismatch" in err and "f" * 64 in err


def test_cli_rejects_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _cli().parse_args(["download", "imagenet"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    argv = ["download", "cifar10", "--root", str(tmp_path), "--base-url", url, "--no-progress"]
    args = _cli().parse_args([*argv, "--timeout", "2"])
    assert args.func(args) == 1
    assert "cannot connect" in capsys.readouterr().err
