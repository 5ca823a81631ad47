"""Helpers that build small data files in the official formats, and a loopback HTTP server.

Used by the test_data_* and test_download tests; nothing here touches the network beyond
127.0.0.1.
"""

from __future__ import annotations

import gzip
import http.server
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: NDArray[Any]) -> bytes:
    """Encode an array as an uncompressed IDX file."""
    code = IDX_CODES[array.dtype.newbyteorder("=")]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: NDArray[Any], gz: bool | None = None) -> Path:
    """Write an IDX file, gzip-compressed when the name ends in .gz (or gz=True)."""
    data = idx_bytes(array)
    if gz if gz is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def write_mnist(
    folder: Path, n_train: int = 30, n_test: int = 20, gz: bool = True, seed: int = 0
) -> dict[str, NDArray[Any]]:
    """Write a tiny MNIST-format data set (balanced labels 0..9); return its arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    out: dict[str, NDArray[Any]] = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        out[f"{prefix}_images"], out[f"{prefix}_labels"] = images, labels
    return out


# The pure-Python pickler (its dispatch table can be extended); typed loosely on purpose.
_PurePickler: Any = pickle._Pickler


class Py2Pickler(_PurePickler):
    """Writes pickles as Python 2's cPickle (protocol 2) did, like the official CIFAR-10
    batches: byte and text strings as BINSTRING opcodes (read back as bytes with
    ``encoding="bytes"``), and NumPy's array constructor as numpy.core.multiarray."""

    dispatch: ClassVar[dict[type, Any]] = _PurePickler.dispatch.copy()

    def save_str8(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = obj.__module__
        if module == "numpy._core.multiarray":
            module = "numpy.core.multiarray"
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[type] = save_global


def py2_pickle(obj: Any) -> bytes:
    """Pickle ``obj`` the way the official (Python 2) CIFAR-10 files are pickled."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_batch(n: int, rng: np.random.Generator, label: str = "batch") -> dict[bytes, Any]:
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
               b"dog", b"frog", b"horse", b"ship", b"truck"]  # fmt: skip


def write_cifar(
    folder: Path, per_batch: int = 4, n_test: int = 5, seed: int = 0, meta: bool = True
) -> dict[str, NDArray[Any]]:
    """Write a tiny cifar-10-batches-py folder (Python 2 style pickles); return its arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train = [cifar_batch(per_batch, rng, f"training batch {i} of 5") for i in range(1, 6)]
    test = cifar_batch(n_test, rng, "testing batch 1 of 1")
    for i, batch in enumerate(train, start=1):
        (folder / f"data_batch_{i}").write_bytes(py2_pickle(batch))
    (folder / "test_batch").write_bytes(py2_pickle(test))
    if meta:
        meta_dict = {b"label_names": CIFAR_NAMES, b"num_cases_per_batch": per_batch,
                     b"num_vis": 3072}  # fmt: skip
        (folder / "batches.meta").write_bytes(py2_pickle(meta_dict))
    return {
        "train_data": np.concatenate([b[b"data"] for b in train]),
        "train_labels": np.concatenate([b[b"labels"] for b in train]).astype(np.int64),
        "test_data": test[b"data"],
        "test_labels": np.asarray(test[b"labels"], dtype=np.int64),
    }


def make_tarball(folder: Path, archive: Path, arcname: str = "cifar-10-batches-py") -> bytes:
    """Pack ``folder`` as ``arcname/`` into a .tar.gz at ``archive``; return its bytes."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive.read_bytes()


@dataclass
class LoggedRequest:
    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class FileServer:
    """State of the loopback server: files served and the requests seen."""

    files: dict[str, bytes]
    honour_range: bool = True
    cut_after: int | None = None  # send only this many body bytes, then drop the connection
    log: list[LoggedRequest] = field(default_factory=list)
    base_url: str = ""


def _make_handler(state: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            data = state.files.get(name)
            if data is None:
                self.send_error(404)
                state.log.append(LoggedRequest(name, rng, 404, 0))
                return
            start, status = 0, 200
            if rng and state.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    state.log.append(LoggedRequest(name, rng, 416, 0))
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if state.cut_after is not None:
                body = body[: state.cut_after]
            self.wfile.write(body)
            state.log.append(LoggedRequest(name, rng, status, len(body)))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve(files: dict[str, bytes], honour_range: bool = True) -> Iterator[FileServer]:
    """Serve ``files`` ({url path: content}) on 127.0.0.1 (random port) in a thread."""
    state = FileServer(files, honour_range)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
