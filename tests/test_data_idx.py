"""IDX reading, and the MNIST / Fashion-MNIST data sets (fixtures + the real Debian files)."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from data_fixtures import idx_bytes, write_idx, write_mnist
from graphgrad.data import (
    FASHION_MNIST_CLASSES,
    MNIST,
    DataFormatError,
    DatasetNotFoundError,
    FashionMNIST,
    parse_idx,
    read_idx,
)

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the user's $GRAPHGRAD_DATA or ~/.cache/graphgrad."""
    monkeypatch.delenv("GRAPHGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# --- read_idx / parse_idx ---------------------------------------------------------------------

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_every_dtype(tmp_path: Path, dtype: Any, gz: bool) -> None:
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 1  # writable


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.int16, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4)))
def test_parse_round_trip_property(array: np.ndarray) -> None:
    np.testing.assert_array_equal(parse_idx(idx_bytes(array)), array)


def test_mnist_magic_numbers() -> None:
    images = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    labels = idx_bytes(np.zeros(2, np.uint8))
    assert struct.unpack(">I", images[:4])[0] == 2051
    assert struct.unpack(">I", labels[:4])[0] == 2049


def _err(tmp_path: Path, data: bytes, name: str = "bad-idx") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataFormatError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_wrong_magic(tmp_path: Path) -> None:
    assert "not an IDX file" in _err(tmp_path, b"\x01\x00\x08\x01" + b"\x00" * 8)


def test_unknown_dtype_code(tmp_path: Path) -> None:
    message = _err(tmp_path, b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    assert "unknown IDX data type code 0x07" in message


def test_truncated_body(tmp_path: Path) -> None:
    data = idx_bytes(np.arange(100, dtype=np.uint8).reshape(10, 10))
    message = _err(tmp_path, data[:-7])
    assert "truncated" in message and "100 bytes" in message and "93" in message


def test_truncated_header(tmp_path: Path) -> None:
    assert "truncated header" in _err(tmp_path, b"\x00\x00\x08\x03\x00\x00\x00\x02")
    assert "truncated" in _err(tmp_path, b"\x00\x00")


def test_trailing_garbage(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((2, 3), np.uint8)) + b"junk"
    assert "4 bytes of trailing data" in _err(tmp_path, data)


def test_zero_dims(tmp_path: Path) -> None:
    assert "0 dimensions" in _err(tmp_path, b"\x00\x00\x08\x00")


def test_corrupt_gzip(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32)), mtime=0)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    assert "corrupt gzip" in _err(tmp_path, bytes(flipped), "flipped.gz")
    assert "corrupt gzip" in _err(tmp_path, good[: len(good) // 2], "cut.gz")


def test_gz_name_without_gzip_content(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros(3, np.uint8))
    assert "not gzip-compressed" in _err(tmp_path, data, "labels.gz")


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# --- MNIST / FashionMNIST from fixture files -----------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_dataset_from_folder(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path / "d", n_train=30, n_test=20, gz=gz)
    train = FashionMNIST(tmp_path / "d")
    test = FashionMNIST(tmp_path / "d", train=False)
    assert len(train) == 30 and len(test) == 20
    assert train.images.dtype == np.uint8 and train.images.shape == (30, 28, 28)
    assert train.labels.dtype == np.int64 and train.labels.shape == (30,)
    np.testing.assert_array_equal(train.images, arrays["train_images"])
    np.testing.assert_array_equal(test.labels, arrays["t10k_labels"])
    assert train.classes == FASHION_MNIST_CLASSES and len(train.classes) == 10
    image, label = train[3]
    assert image.shape == (28, 28) and isinstance(label, int) and label == 3
    images, labels = train[np.array([0, 2])]
    assert images.shape == (2, 28, 28) and labels.tolist() == [0, 2]
    x = train.vectors()
    assert x.dtype == np.float32 and x.shape == (30, 784)
    np.testing.assert_allclose(x, arrays["train_images"].reshape(30, 784) / 255.0, rtol=1e-6)
    xv, yv = train.arrays()
    assert xv.shape == (30, 784) and yv is train.labels
    assert "train" in repr(train)


def test_mnist_class_names(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    ds = MNIST(tmp_path)
    assert ds.classes == tuple("0123456789")


def test_root_with_subfolder(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist")
    assert MNIST(tmp_path).folder == tmp_path / "mnist"


def test_env_var_subfolder_then_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    write_mnist(root / "fashion-mnist", n_train=12)
    monkeypatch.setenv("GRAPHGRAD_DATA", str(root))
    assert len(FashionMNIST()) == 12
    flat = tmp_path / "flat"
    write_mnist(flat, n_train=14)
    monkeypatch.setenv("GRAPHGRAD_DATA", str(flat))
    assert len(FashionMNIST()) == 14


def test_download_cache_folder_is_searched(tmp_path: Path) -> None:
    write_mnist(tmp_path / "xdg-cache" / "graphgrad" / "mnist", n_train=11)
    assert len(MNIST()) == 11


def test_missing_files_lists_paths_and_hints(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNIST(tmp_path / "empty")
    message = str(info.value)
    assert str(tmp_path / "empty") in message
    assert str(tmp_path / "empty" / "fashion-mnist") in message
    assert "graphgrad download fashion-mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(FileNotFoundError, match="graphgrad download mnist"):
        MNIST(tmp_path / "empty", train=False)


def test_count_mismatch_names_both_files(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=30)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(DataFormatError) as info:
        MNIST(tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz has 30 images" in message
    assert "train-labels-idx1-ubyte.gz has 29 labels" in message


def test_label_out_of_range(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=30)
    labels = np.zeros(30, np.uint8)
    labels[17], labels[20] = 10, 200
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataFormatError) as info:
        FashionMNIST(tmp_path)
    message = str(info.value)
    assert "train-labels-idx1-ubyte.gz" in message
    assert re.search(r"label 10 at index 17 is outside 0\.\.9", message)


def test_wrong_image_dims(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=30)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((30, 28, 27), np.uint8))
    with pytest.raises(DataFormatError, match=r"train-images.*\(N, 28, 28\).*\(30, 28, 27\)"):
        MNIST(tmp_path)


def test_wrong_label_dtype(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=30)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(30, np.int32))
    with pytest.raises(DataFormatError, match="1-D uint8"):
        MNIST(tmp_path)


# --- the real Fashion-MNIST, from Debian's dataset-fashion-mnist package --------------------

needs_debian = pytest.mark.skipif(
    not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)


@pytest.fixture(scope="module")
def real_train() -> FashionMNIST:
    return FashionMNIST(DEBIAN, train=True)


@needs_debian
def test_real_fashion_mnist_train(real_train: FashionMNIST) -> None:
    assert len(real_train) == 60000
    assert real_train.images.shape == (60000, 28, 28) and real_train.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(real_train.labels, minlength=10), [6000] * 10)
    assert real_train.classes[9] == "Ankle boot"
    # The first training image is an ankle boot (label 9): a well-known fact of the set.
    assert real_train[0][1] == 9


@needs_debian
def test_real_fashion_mnist_test_found_by_default() -> None:
    test = FashionMNIST(train=False)  # no root, no env var: falls back to Debian's folder
    assert test.folder == DEBIAN
    assert len(test) == 10000
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), [1000] * 10)
    x = test.vectors()
    assert x.shape == (10000, 784) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
