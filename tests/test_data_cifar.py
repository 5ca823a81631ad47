"""CIFAR-10 batches: round trips, layouts, safety of the unpickler, malformed files."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from data_fixtures import CIFAR_NAMES, cifar_batch, make_tarball, py2_pickle, write_cifar
from graphgrad.data import (
    CIFAR10,
    CIFAR10_CLASSES,
    DataFormatError,
    DatasetNotFoundError,
    load_cifar_pickle,
    to_layout,
)


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAPHGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def cifar(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path / "cifar-10-batches-py"
    return folder, write_cifar(folder, per_batch=4, n_test=5)


def test_train_and_test_round_trip(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, arrays = cifar
    train = CIFAR10(folder)
    test = CIFAR10(folder, train=False)
    assert len(train) == 20 and len(test) == 5
    assert train.images.dtype == np.uint8 and train.images.shape == (20, 3072)
    assert train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.images, arrays["train_data"])
    np.testing.assert_array_equal(train.labels, arrays["train_labels"])
    np.testing.assert_array_equal(test.images, arrays["test_data"])
    np.testing.assert_array_equal(test.labels, arrays["test_labels"])
    assert train.classes == CIFAR10_CLASSES
    image, label = test[1]
    assert image.shape == (3072,) and label == int(arrays["test_labels"][1])
    x, y = train.arrays()
    assert x.dtype == np.float32 and x.shape == (20, 3072) and x.min() >= 0 and x.max() <= 1
    assert y is train.labels


def test_found_from_parent_folder(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = cifar
    assert CIFAR10(folder.parent).source == folder


def test_layouts_agree(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, arrays = cifar
    flat = CIFAR10(folder, layout="flat").images
    chw = CIFAR10(folder, layout="chw").images
    hwc = CIFAR10(folder, layout="hwc").images
    assert chw.shape == (20, 3, 32, 32) and hwc.shape == (20, 32, 32, 3)
    assert chw.flags.c_contiguous and hwc.flags.c_contiguous
    rng = np.random.default_rng(0)
    for _ in range(50):
        i, c, h, w = rng.integers(20), rng.integers(3), rng.integers(32), rng.integers(32)
        assert flat[i, c * 1024 + h * 32 + w] == chw[i, c, h, w] == hwc[i, h, w, c]
    # The first 1024 values of a row are the red plane.
    np.testing.assert_array_equal(hwc[:, :, :, 0].reshape(20, 1024), arrays["train_data"][:, :1024])
    np.testing.assert_array_equal(to_layout(hwc, "flat"), flat)
    np.testing.assert_array_equal(to_layout(chw, "hwc"), hwc)
    vec = CIFAR10(folder, layout="hwc").vectors()
    np.testing.assert_allclose(vec, flat / 255.0, rtol=1e-6)


def test_bad_layout(cifar: tuple[Path, dict[str, np.ndarray]]) -> None:
    with pytest.raises(ValueError, match="layout"):
        CIFAR10(cifar[0], layout="nhwc")  # type: ignore[arg-type]


def test_meta_missing_falls_back_to_official_names(tmp_path: Path) -> None:
    write_cifar(tmp_path, meta=False)
    assert CIFAR10(tmp_path).classes == CIFAR10_CLASSES


def test_meta_names_are_used(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    names = [n.upper() for n in CIFAR_NAMES]
    (tmp_path / "batches.meta").write_bytes(py2_pickle({b"label_names": names}))
    assert CIFAR10(tmp_path).classes[0] == "AIRPLANE"


def test_python3_protocol2_pickles_load(tmp_path: Path) -> None:
    """Batches re-saved by Python 3 (bytes via _codecs.encode) load too."""
    write_cifar(tmp_path)
    batch = cifar_batch(4, np.random.default_rng(5))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    test = CIFAR10(tmp_path, train=False)
    np.testing.assert_array_equal(test.images, batch[b"data"])
    # str keys (a Python 3 pickle written with str keys) work as well
    str_keyed = {"data": batch[b"data"], "labels": batch[b"labels"]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(str_keyed, protocol=4))
    assert len(CIFAR10(tmp_path, train=False)) == 4


def test_reading_from_the_tarball(tmp_path: Path) -> None:
    src = tmp_path / "src"
    arrays = write_cifar(src)
    root = tmp_path / "root"
    root.mkdir()
    make_tarball(src, root / "cifar-10-python.tar.gz")
    train = CIFAR10(root)
    assert train.source == root / "cifar-10-python.tar.gz"
    np.testing.assert_array_equal(train.images, arrays["train_data"])
    assert not (root / "cifar-10-batches-py").exists()  # read in memory, not extracted


def test_env_var_and_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path / "data" / "cifar10" / "cifar-10-batches-py")
    monkeypatch.setenv("GRAPHGRAD_DATA", str(tmp_path / "data"))
    assert len(CIFAR10(train=False)) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10(tmp_path / "empty")
    message = str(info.value)
    assert str(tmp_path / "empty") in message and "graphgrad download cifar10" in message
    assert "data_batch_1" in message


# --- malformed and malicious files -----------------------------------------------------------


def _bad_batch(tmp_path: Path, obj: object, raw: bytes | None = None) -> str:
    write_cifar(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(raw if raw is not None else py2_pickle(obj))
    with pytest.raises(DataFormatError) as info:
        CIFAR10(tmp_path, train=False)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_key(tmp_path: Path) -> None:
    message = _bad_batch(tmp_path, {b"data": np.zeros((2, 3072), np.uint8)})
    assert "missing key b'labels'" in message and "'data'" in message


def test_data_length_not_multiple_of_3072(tmp_path: Path) -> None:
    message = _bad_batch(tmp_path, {b"data": np.zeros(3000, np.uint8), b"labels": [1]})
    assert "not a multiple of 3072" in message


def test_data_wrong_row_length(tmp_path: Path) -> None:
    message = _bad_batch(tmp_path, {b"data": np.zeros((3, 2048), np.uint8), b"labels": [1, 2]})
    assert "(3, 2048)" in message


def test_data_wrong_dtype(tmp_path: Path) -> None:
    message = _bad_batch(tmp_path, {b"data": np.zeros((1, 3072), np.int32), b"labels": [1]})
    assert "uint8" in message


def test_label_out_of_range(tmp_path: Path) -> None:
    obj = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 10, -1]}
    assert "label 10 at index 1 is outside 0..9" in _bad_batch(tmp_path, obj)


def test_count_mismatch(tmp_path: Path) -> None:
    obj = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 2]}
    message = _bad_batch(tmp_path, obj)
    assert "3 images" in message and "2 labels" in message


def test_labels_not_integers(tmp_path: Path) -> None:
    obj = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [b"cat", b"dog"]}
    assert "list of integers" in _bad_batch(tmp_path, obj)


def test_not_a_dict(tmp_path: Path) -> None:
    assert "expected a pickled dict" in _bad_batch(tmp_path, [1, 2, 3])


def test_garbage_is_not_a_pickle(tmp_path: Path) -> None:
    assert "pickle" in _bad_batch(tmp_path, None, raw=b"\x80\x02garbage that is not a pickle")


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_calling_os_system_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    raw = pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2)
    message = _bad_batch(tmp_path, None, raw=raw)
    assert "refusing to load global" in message and "system" in message
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize(
    "raw",
    [
        pickle.dumps(eval, protocol=2),  # builtins.eval
        b"\x80\x02cbuiltins\ngetattr\nq\x00.",
        b"\x80\x02cnumpy\nload\nq\x00.",  # a numpy function that is not allowed
        b"\x80\x02c_codecs\nencode\n(X\x01\x00\x00\x00aX\x09\x00\x00\x00hex_codecq\x00tR.",
    ],
)
def test_other_globals_are_refused(raw: bytes) -> None:
    with pytest.raises(DataFormatError, match="<test>"):
        load_cifar_pickle(raw, "<test>")


def test_corrupt_tarball(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(DataFormatError, match=r"cifar-10-python\.tar\.gz"):
        CIFAR10(tmp_path)


def test_tarball_without_batches(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.html").write_text("hi")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "other", arcname="cifar-10-batches-py")
    with pytest.raises(DatasetNotFoundError, match="data_batch_1"):
        CIFAR10(tmp_path)
