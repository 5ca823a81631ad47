"""Edge cases of DataLoader input shapes and CIFAR-10 batches pickled with protocol 5."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data_fixtures import cifar_batch, write_cifar
from graphgrad.data import (
    CIFAR10,
    ArrayDataset,
    DataFormatError,
    DataLoader,
    load_cifar_pickle,
    train_val_split,
)
from graphgrad.data import _toy as toy

_FROMBUFFER = np.ndarray.__reduce_ex__(np.zeros(1, np.uint8), 5)[0]


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAPHGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# ----------------------------------------------------------- PyTorch-style sample lists


@pytest.mark.parametrize(
    "samples",
    [
        [(np.float32(0.5), 1), (np.float32(-2.0), 0)],
        [(np.float32(0.5), 1), (np.float32(-2.0), 0), (np.float32(3.0), 1)],
        [(np.ones(4, np.float32), 1), (np.zeros(4, np.float32), 0), (np.ones(4), 2)],
        ((np.ones(2), 0), (np.zeros(2), 1)),
    ],
)
def test_list_of_sample_tuples_is_refused_clearly(samples: object) -> None:
    with pytest.raises(TypeError, match=r"DataLoader: .*\(x, y\) samples.*np\.stack"):
        DataLoader(samples, batch_size=2)  # type: ignore[arg-type]


def test_the_suggested_rewrite_batches_correctly() -> None:
    samples = [(np.float32(0.5), 1), (np.float32(-2.0), 0), (np.float32(3.0), 1)]
    xs, ys = zip(*samples, strict=True)
    batches = list(DataLoader((np.stack(xs), np.asarray(ys)), batch_size=2))
    np.testing.assert_array_equal(batches[0][0], [0.5, -2.0])
    np.testing.assert_array_equal(batches[0][1], [1, 0])
    ds = ArrayDataset(np.stack(xs), np.asarray(ys))
    assert len(list(DataLoader(ds, batch_size=2))) == 2


# ----------------------------------------------------------- CIFAR-10, pickle protocol 5


def test_protocol5_batches_load(tmp_path: Path) -> None:
    arrays = write_cifar(tmp_path)
    batch = cifar_batch(6, np.random.default_rng(7))
    raw = pickle.dumps(batch, protocol=5)
    assert b"_frombuffer" in raw  # NumPy writes protocol-5 arrays with _frombuffer
    (tmp_path / "test_batch").write_bytes(raw)
    for i in range(1, 6):  # the training batches re-saved with HIGHEST_PROTOCOL too
        old = load_cifar_pickle((tmp_path / f"data_batch_{i}").read_bytes())
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(old, pickle.HIGHEST_PROTOCOL))
    test = CIFAR10(tmp_path, train=False)
    np.testing.assert_array_equal(test.images, batch[b"data"])
    np.testing.assert_array_equal(test.labels, batch[b"labels"])
    np.testing.assert_array_equal(CIFAR10(tmp_path).images, arrays["train_data"])


def test_protocol5_fortran_and_float_arrays_round_trip() -> None:
    a = np.asfortranarray(np.arange(12.0, dtype=np.float32).reshape(3, 4))
    out = load_cifar_pickle(pickle.dumps({b"x": a}, protocol=5))[b"x"]
    np.testing.assert_array_equal(out, a)
    assert out.dtype == np.float32 and out.flags.writeable


class _Hostile:
    def __init__(self, *args: object) -> None:
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (_FROMBUFFER, self.args)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((b"\x00" * 8, np.dtype(object), (1,), "C"), "plain numeric"),
        ((b"\x00" * 8, np.dtype([("a", "<i4"), ("b", "<i4")]), (1,), "C"), "plain numeric"),
        ((b"\x00" * 8, "uint8", (8,), "C"), "plain numeric"),
        (([0] * 8, np.dtype(np.uint8), (8,), "C"), "bytes or bytearray"),
        ((b"\x00" * 8, np.dtype(np.uint8), (10**6, 10**6), "C"), "needs"),
        ((b"\x00" * 8, np.dtype(np.uint8), (2, -4), "C"), "non-negative ints"),
        ((b"\x00" * 8, np.dtype(np.uint8), (8.0,), "C"), "non-negative ints"),
        ((b"\x00" * 8, np.dtype(np.uint8), (8,), "K"), "order"),
    ],
)
def test_hostile_frombuffer_is_refused(args: tuple[object, ...], why: str) -> None:
    raw = pickle.dumps({b"data": _Hostile(*args)}, protocol=5)
    with pytest.raises(DataFormatError, match=rf"<test>: unsafe or invalid pickle: .*{why}"):
        load_cifar_pickle(raw, "<test>")


# ------------------------------------------------- arguments that would be misread silently


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: DataLoader(np.zeros(4), 2).set_epoch(2.7), TypeError, "set_epoch: epoch"),
        (lambda: DataLoader(np.zeros(4), 2).set_epoch(-1), ValueError, "set_epoch: epoch"),
        (lambda: DataLoader(np.zeros(4), 2, shuffle="no"), TypeError, "shuffle must be True"),
        (lambda: DataLoader(np.zeros(4), 2, drop_last=1), TypeError, "drop_last must be True"),
        (lambda: toy.spiral(turns=float("nan")), ValueError, "spiral: turns"),
        (lambda: toy.spiral(turns="1"), TypeError, "spiral: turns"),
        (lambda: toy.blobs(centers=[[0.0, np.nan]]), ValueError, "blobs: centers must be finite"),
        (lambda: toy.blobs(centers=[[0.0, np.inf]]), ValueError, "blobs: centers must be finite"),
        (lambda: toy.two_moons(rng=-1), ValueError, "two_moons: an rng seed must be >= 0"),
        (lambda: toy.xor(rng=1.5), TypeError, "xor: rng must be"),
        (lambda: train_val_split(10, 0.5, -3), ValueError, "train_val_split: an rng seed"),
    ],
)
def test_misread_arguments_are_refused(call: Any, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        call()


def test_numpy_bools_are_taken_as_bools() -> None:
    loader = DataLoader(np.arange(5), 2, shuffle=np.bool_(False), drop_last=np.bool_(True))
    assert loader.shuffle is False and loader.drop_last is True
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]


def test_val_share_rounds_half_up_as_documented() -> None:
    train, val = train_val_split(5, 0.5, 0)  # 2.5 items: 3 (Python's round would give 2)
    assert len(val) == 3 and len(train) == 2
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(5))
