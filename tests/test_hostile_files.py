"""Hostile files are refused with bounded memory: IDX and tar.gz bombs, pickles that expand,
expressions nested millions deep, .npy/PNG headers that lie, layered graphs too big to build.

Every hostile file is generated here, small on disk; each test measures the peak of the
memory Python and NumPy allocate (tracemalloc) while the file is refused.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data_fixtures import idx_bytes, py2_pickle, write_cifar
from graphgrad._inputs import InputFileError, read_inputs, read_npy, read_png
from graphgrad._quote import excerpt
from graphgrad.data import CIFAR10, DataFormatError, load_cifar_pickle, read_idx
from graphgrad.data._cifar import MAX_BATCH_BYTES, parse_batch
from graphgrad.data._download import extract_cifar
from graphgrad.expr import MAX_DEPTH, MAX_LENGTH, ExprError, parse
from graphgrad.paths import LayeredWorkError, layered, layered_table, layered_work
from graphgrad.viz.trace import collect

MiB = 1 << 20
BOUND = 16 * MiB  # peak allocation allowed while refusing a hostile file


def peak_while(fn: Callable[[], Any]) -> tuple[int, BaseException | None]:
    """Run ``fn``; return the peak traced allocation and the exception it raised (or None)."""
    tracemalloc.start()
    error: BaseException | None = None
    try:
        fn()
    except Exception as exc:
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


_ZEROS_MEMBER = gzip.compress(bytes(MiB), compresslevel=9, mtime=0)  # ~1 kB -> 1 MiB


def gzip_bomb(prefix: bytes, mib_of_zeros: int) -> bytes:
    """A valid multi-member gzip stream: ``prefix`` then ``mib_of_zeros`` MiB of zero bytes,
    about 1 kB on disk per MiB (gzip members may be concatenated)."""
    return gzip.compress(prefix, mtime=0) + _ZEROS_MEMBER * mib_of_zeros


def idx_header(shape: tuple[int, ...], code: int = 0x08) -> bytes:
    return struct.pack(">HBB", 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


# --- IDX ---------------------------------------------------------------------------------------


def test_idx_gz_claiming_a_gibibyte_is_refused_before_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip_bomb(idx_header((1024, 1024, 1024)), 1024))  # 1 GiB inside ~1 MB
    assert path.stat().st_size < 2 * MiB
    peak, error = peak_while(lambda: read_idx(path))
    assert isinstance(error, DataFormatError), error
    assert str(path) in str(error) and "1,073,741,824 bytes, more than the limit" in str(error)
    assert peak < BOUND, peak


def test_idx_gz_longer_than_its_header_stops_at_the_claim(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip_bomb(idx_header((10,)), 1024))  # claims 10 bytes, holds 1 GiB
    peak, error = peak_while(lambda: read_idx(path))
    assert isinstance(error, DataFormatError) and "trailing data" in str(error), error
    assert peak < BOUND, peak


def test_idx_gz_claim_beyond_what_deflate_can_hold(tmp_path: Path) -> None:
    path = tmp_path / "small.gz"
    path.write_bytes(gzip.compress(idx_header((200, 1024, 1024)) + bytes(100), mtime=0))
    peak, error = peak_while(lambda: read_idx(path))  # 200 MiB (under the limit) from ~100 bytes
    assert isinstance(error, DataFormatError), error
    assert "more than a" in str(error) and "gzip file can hold" in str(error)
    assert peak < BOUND, peak


def test_idx_raw_claims_checked_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "raw-idx"
    path.write_bytes(idx_header((100, 1024, 1024)) + bytes(100))  # claims 100 MiB
    peak, error = peak_while(lambda: read_idx(path))
    assert isinstance(error, DataFormatError) and "truncated" in str(error), error
    assert peak < BOUND, peak
    ok = tmp_path / "ok-idx"
    ok.write_bytes(idx_bytes(np.arange(1000, dtype=np.int32)))
    with pytest.raises(DataFormatError, match="more than the limit of 100"):
        read_idx(ok, max_bytes=100)
    np.testing.assert_array_equal(read_idx(ok, max_bytes=4000), np.arange(1000))


def test_idx_reading_stays_exact_for_real_files(tmp_path: Path) -> None:
    a = np.random.default_rng(0).normal(size=(7, 5, 3))
    for gz in (False, True):
        path = tmp_path / ("f.gz" if gz else "f")
        data = idx_bytes(a)
        path.write_bytes(gzip.compress(data) if gz else data)
        out = read_idx(path)
        assert out.dtype == np.float64 and out.dtype.isnative and out.flags.writeable
        np.testing.assert_array_equal(out, a)


# --- CIFAR-10: archives and pickles ------------------------------------------------------------


def _tar_bomb(member: str, gib: int = 1) -> bytes:
    info = tarfile.TarInfo(member)
    info.size = gib << 30
    return gzip_bomb(info.tobuf(format=tarfile.GNU_FORMAT), 1024 * gib)


def test_cifar_archive_member_of_a_gibibyte_is_refused_unread(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(_tar_bomb("cifar-10-batches-py/data_batch_1"))
    assert archive.stat().st_size < 2 * MiB
    peak, error = peak_while(lambda: CIFAR10(tmp_path))
    assert isinstance(error, DataFormatError), error
    assert "1,073,741,824 bytes, more than any CIFAR-10 batch" in str(error)
    assert peak < BOUND, peak
    # the download path's extraction refuses it the same way, and leaves nothing behind
    peak, error = peak_while(lambda: extract_cifar(archive, tmp_path))
    assert isinstance(error, DataFormatError) and "more than any CIFAR-10 batch" in str(error)
    assert peak < BOUND, peak
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]


def test_cifar_batch_file_over_the_bound_is_not_read(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    with open(tmp_path / "data_batch_3", "r+b") as f:
        f.truncate(MAX_BATCH_BYTES + 1)  # sparse: no disk used
    peak, error = peak_while(lambda: CIFAR10(tmp_path))
    assert isinstance(error, DataFormatError) and "data_batch_3" in str(error), error
    assert peak < BOUND, peak


def _shared_nest(levels: int, fan: int = 10) -> list[Any]:
    """``fan`` references to the same list at every level: fan**levels ints when walked."""
    inner: list[Any] = [0] * fan
    for _ in range(levels - 1):
        inner = [inner] * fan
    return inner


def test_pickle_of_shared_references_is_refused_before_expanding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batch = {
        b"data": rng.integers(0, 256, size=(10, 3072), dtype=np.uint8),
        b"labels": _shared_nest(7),  # 10 million labels when expanded
    }
    raw = py2_pickle(batch)
    assert len(raw) < 40_000
    peak, error = peak_while(lambda: parse_batch(raw, "evil_batch"))
    assert isinstance(error, DataFormatError), error
    assert "evil_batch" in str(error) and "expands to more than" in str(error)
    assert peak < BOUND, peak


def test_pickle_bounds_count_depth_and_cycles() -> None:
    flat = pickle.dumps(list(range(2000)), protocol=2)
    with pytest.raises(DataFormatError, match="more than 1,000"):
        load_cifar_pickle(flat, "flat", max_objects=1000)
    assert load_cifar_pickle(flat, "flat") == list(range(2000))
    deep: list[Any] = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(DataFormatError, match="nests deeper than 32 levels"):
        load_cifar_pickle(pickle.dumps(deep, protocol=2), "deep")
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    with pytest.raises(DataFormatError, match="contains itself"):
        load_cifar_pickle(pickle.dumps(cyclic, protocol=2), "cyclic")
    # shared references are counted at each use, also when the list is filled after use
    nested = _shared_nest(4, fan=40)  # 2.56 million
    with pytest.raises(DataFormatError, match="expands to more than"):
        load_cifar_pickle(pickle.dumps(nested, protocol=2), "nested")
    with pytest.raises(DataFormatError, match="not a valid pickle"):
        load_cifar_pickle(b"\x80\x02]q\x00(K\x01e", "truncated")


def test_labels_that_nest_lists_are_named(tmp_path: Path) -> None:
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, [2, 3]]}
    with pytest.raises(DataFormatError, match="must be a list of integers, got a list"):
        parse_batch(py2_pickle(batch), "b")


# --- expressions and the excerpt helper --------------------------------------------------------


def test_five_million_nested_parentheses_cost_one_scan() -> None:
    text = "(" * 5_000_000 + "a" + ")" * 5_000_000
    peak, error = peak_while(lambda: parse(text))
    assert isinstance(error, ExprError), error
    assert f"more than the limit of {MAX_LENGTH:,}" in str(error)
    assert peak < 1 * MiB, peak


def test_nesting_depth_is_bounded_before_parsing() -> None:
    ok = "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    assert parse(ok).names == ("a",)
    with pytest.raises(ExprError, match=f"column {MAX_DEPTH + 1}: parentheses nested more"):
        parse("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(ExprError, match="signs in a row"):
        parse("-" * (MAX_DEPTH + 1) + "a")
    assert parse("a - -b").names == ("a", "b")
    # a long sum within the limit parses, or (as a tree too deep for Python's own parser)
    # is one clean error
    assert parse("+".join(["a"] * 1000)).names == ("a",)
    with pytest.raises(ExprError, match="too deeply nested"):
        parse("+".join(["a"] * (MAX_LENGTH // 2)))


def test_excerpt_quotes_at_most_80_characters_around_the_fault() -> None:
    assert excerpt("a+b") == "'a+b'"
    text = "a+" * 20_000 + "$" + "+b" * 20_000
    out = excerpt(text, column=40_001)
    assert len(out) < 120 and "$" in out and out.startswith("…'") and "'…" in out
    assert "(80,001 characters)" in out
    assert excerpt(text).startswith("'a+a+") and excerpt("x" * 81, column=81).startswith("…'")
    assert excerpt("1j", quote=False) == "1j"


# --- predict's input files ---------------------------------------------------------------------


def _npy_claiming(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def test_npy_header_claiming_80_gb(tmp_path: Path) -> None:
    path = tmp_path / "huge.npy"
    path.write_bytes(_npy_claiming((10_000_000_000,)) + bytes(64))  # 80 GB of float64 claimed
    peak, error = peak_while(lambda: read_npy(path))
    assert isinstance(error, InputFileError) and "80,000,000,000 bytes" in str(error), error
    assert peak < BOUND, peak
    small = tmp_path / "short.npy"
    small.write_bytes(_npy_claiming((1000,)) + bytes(80))
    with pytest.raises(InputFileError, match="truncated: its header claims 8,000 bytes"):
        read_npy(small)
    np.save(tmp_path / "ok.npy", np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(read_npy(tmp_path / "ok.npy"), np.arange(6.0).reshape(2, 3))
    (tmp_path / "obj.npy").write_bytes(_npy_claiming((1,), "|O") + bytes(8))
    with pytest.raises(InputFileError, match="Python objects"):
        read_npy(tmp_path / "obj.npy")


def test_png_checked_before_decoding(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputFileError, match="not a PNG file"):
        read_png(tmp_path / "text.png")
    mpimg.imsave(tmp_path / "ok.png", np.zeros((28, 28)), cmap="gray")
    assert read_png(tmp_path / "ok.png", (28, 28)).shape[:2] == (28, 28)
    with pytest.raises(InputFileError, match=r"28x28 pixels .* expected 32x32"):
        read_png(tmp_path / "ok.png", (32, 32))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="cannot decode the PNG"):
        read_png(tmp_path / "cut.png")
    # a header claiming 100k x 100k pixels is refused from its 24 bytes
    huge = struct.pack(">II", 100_000, 100_000)
    (tmp_path / "bomb.png").write_bytes(data[:16] + huge + data[24:])
    peak, error = peak_while(lambda: read_png(tmp_path / "bomb.png"))
    assert isinstance(error, InputFileError) and "100000x100000" in str(error), error
    assert peak < BOUND, peak


def test_inputs_are_the_pixels_or_points_the_model_takes(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    image = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    np.save(tmp_path / "u8.npy", image)
    np.save(tmp_path / "unit.npy", image.astype(np.float32) / 255)
    mpimg.imsave(tmp_path / "img.png", image, cmap="gray", vmin=0, vmax=255)
    names, x = read_inputs([tmp_path / "u8.npy", tmp_path / "unit.npy"], (28, 28), 784)
    assert names == [str(tmp_path / "u8.npy"), str(tmp_path / "unit.npy")]
    assert x.shape == (2, 784) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], x[1], atol=1e-6)
    names, x = read_inputs([tmp_path / "img.png"], (28, 28), 784)
    assert x.shape == (1, 784) and x.min() >= 0.0 and x.max() <= 1.0
    # float pixels outside [0, 1]: 0..255 saved as float, or values no image has
    for name, array, found in [
        ("f255.npy", image.astype(np.float32), "[0, 255]"),
        ("big.npy", np.full((28, 28), 300.0), "[300, 300]"),
        ("neg.npy", -np.ones((2, 784)), "[-1, -1]"),
    ]:
        np.save(tmp_path / name, array)
        with pytest.raises(InputFileError) as info:
            read_inputs([tmp_path / name], (28, 28), 784)
        assert str(info.value) == (
            f"{tmp_path / name}: float pixels must be in [0, 1], found values in {found}; "
            f"divide 0..255 pixels by 255 (or save them as uint8)"
        )
    # a model of points (two moons): any finite coordinates; an image is named as one
    np.save(tmp_path / "points.npy", np.array([[-1.5, 2.0], [300.0, 0.5]]))
    names, x = read_inputs([tmp_path / "points.npy"], None, 2)
    assert names == [f"{tmp_path / 'points.npy'}[0]", f"{tmp_path / 'points.npy'}[1]"]
    assert x.tolist() == [[-1.5, 2.0], [300.0, 0.5]]
    with pytest.raises(InputFileError, match=r"img\.png: this model takes 2-vectors \(points\), "
                       r"not images; give a \.npy file of shape \(2,\) or \(N, 2\)"):  # fmt: skip
        read_inputs([tmp_path / "img.png"], None, 2)
    with pytest.raises(InputFileError, match=r"u8\.npy: shape \(28, 28\) does not hold "
                       r"2-vectors: this model takes points"):  # fmt: skip
        read_inputs([tmp_path / "u8.npy"], None, 2)
    np.save(tmp_path / "nan.npy", np.array([0.5, np.nan]))
    with pytest.raises(InputFileError, match="1 of its 2 values is not finite"):
        read_inputs([tmp_path / "nan.npy"], None, 2)


# --- layered path sums: the work is counted before anything is built ---------------------------


@pytest.mark.parametrize(("width", "depth"), [(1, 1), (2, 3), (3, 4)])
def test_layered_work_counts_the_edges_built(width: int, depth: int) -> None:
    built = 0
    for d in range(1, depth + 1):
        out, _ = layered(width, d)
        built += sum(len(n._inputs) for n in collect(out))
    assert layered_work(width, depth) == built


def test_layered_table_refuses_work_over_the_bound() -> None:
    peak, error = peak_while(lambda: layered_table(64, 200))
    assert isinstance(error, LayeredWorkError), error
    assert f"{layered_work(64, 200):,} graph edges" in str(error)
    assert "use a depth of at most" in str(error)
    assert peak < 1 * MiB, peak
    rows = layered_table(2, 3, max_edges=layered_work(2, 3))
    assert [r.depth for r in rows] == [1, 2, 3]
    with pytest.raises(LayeredWorkError):
        layered_table(2, 3, max_edges=layered_work(2, 3) - 1)


def test_excerpt_is_used_for_long_inputs_in_library_errors() -> None:
    from graphgrad.expr import parse_values

    with pytest.raises(ExprError) as info:
        parse_values("a=" + "9" * 40_000 + "x")
    assert len(str(info.value)) < 200
    with pytest.raises(DataFormatError) as info2:
        load_cifar_pickle(b"garbage" * 10_000, "x")
    assert len(str(info2.value)) < 300


def test_pickle_scan_reads_every_protocol_and_refuses_every_truncation() -> None:
    from graphgrad.data._cifar import _scan_pickle

    shared = [1.5, "é", b"\x00" * 300]
    obj = {
        "ints": [0, -1, 255, 65_536, 2**31, -(2**63), 2**100],
        "text": ["x" * 300, "y", b"z", bytearray(b"ab")],
        "nested": (shared, shared, {"k": (None, True, False)}, frozenset({1, 2})),
        "set": {3, 4},
        "array": np.arange(12, dtype=np.uint8).reshape(3, 4),
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        raw = pickle.dumps(obj, protocol=protocol)
        _scan_pickle(raw, "ok", 1000, 32)  # no false refusal, whatever the opcodes
        for cut in range(0, len(raw) - 1, max(1, len(raw) // 40)):
            with pytest.raises(DataFormatError, match="not a valid pickle"):
                _scan_pickle(raw[:cut], "cut", 1000, 32)
    batch = py2_pickle({b"labels": [1, 2], b"data": np.zeros((2, 3072), np.uint8)})
    assert load_cifar_pickle(batch)[b"labels"] == [1, 2]
