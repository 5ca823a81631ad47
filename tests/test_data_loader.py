"""ArrayDataset, DataLoader, train_val_split, Normalize/standardize."""

from __future__ import annotations

import numpy as np
import pytest

from graphgrad.data import ArrayDataset, DataLoader, Normalize, standardize, train_val_split


def _xy(n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    return x, np.arange(n, dtype=np.int64)


def test_array_dataset() -> None:
    x, y = _xy()
    ds = ArrayDataset(x, y)
    assert len(ds) == 10
    xi, yi = ds[4]
    np.testing.assert_array_equal(xi, x[4])
    assert yi == 4
    xb, yb = ds[np.array([1, 3])]
    assert xb.shape == (2, 3) and yb.tolist() == [1, 3]
    assert "(10, 3)" in repr(ds)


def test_array_dataset_errors() -> None:
    with pytest.raises(ValueError, match=r"array 0: shape \(10, 3\), array 1: shape \(9,\)"):
        ArrayDataset(np.zeros((10, 3)), np.zeros(9))
    with pytest.raises(ValueError, match="at least one"):
        ArrayDataset()
    with pytest.raises(ValueError, match="0-d"):
        ArrayDataset(np.float64(1.0))


@pytest.mark.parametrize(
    ("n", "bs", "drop", "expected"),
    [(10, 3, False, 4), (10, 3, True, 3), (9, 3, True, 3), (0, 4, False, 0)],
)
def test_len_is_number_of_batches(n: int, bs: int, drop: bool, expected: int) -> None:
    x, y = _xy(n)
    loader = DataLoader((x, y), batch_size=bs, drop_last=drop)
    assert len(loader) == expected
    assert len(list(loader)) == expected


def test_in_order_batches_cover_everything() -> None:
    x, y = _xy(10)
    batches = list(DataLoader((x, y), batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)


def test_shuffled_epochs_are_permutations_and_reproducible() -> None:
    x, y = _xy(50)
    loader = DataLoader((x, y), batch_size=8, shuffle=True, seed=123)
    epochs = [np.concatenate([yb for _, yb in loader]) for _ in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(50))
    assert not np.array_equal(epochs[0], epochs[1])
    # A fresh loader with the same seed repeats epoch after epoch.
    again = DataLoader((x, y), batch_size=8, shuffle=True, seed=123)
    for order in epochs:
        np.testing.assert_array_equal(np.concatenate([yb for _, yb in again]), order)
    # set_epoch jumps straight to an epoch; the documented formula gives its order.
    again.set_epoch(2)
    assert again.epoch == 2
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in again]), epochs[2])
    np.testing.assert_array_equal(epochs[1], np.random.default_rng([123, 1]).permutation(50))
    # Items stay paired across arrays.
    for xb, yb in DataLoader((x, y), batch_size=7, shuffle=True, seed=5):
        np.testing.assert_array_equal(xb, x[yb])


def test_no_seed_still_shuffles_and_records_seed() -> None:
    x, y = _xy(40)
    loader = DataLoader((x, y), batch_size=40, shuffle=True)
    assert isinstance(loader.seed, int) and loader.seed >= 0
    first = next(iter(loader))[1]
    replay = DataLoader((x, y), batch_size=40, shuffle=True, seed=loader.seed)
    np.testing.assert_array_equal(next(iter(replay))[1], first)


def test_single_array_yields_arrays_and_dataset_objects_work() -> None:
    x, _ = _xy(10)
    batches = list(DataLoader(x, batch_size=4))
    assert all(isinstance(b, np.ndarray) for b in batches)
    assert batches[0].shape == (4, 3)
    ds = ArrayDataset(*_xy(10))
    first = next(iter(DataLoader(ds, batch_size=3, shuffle=True, seed=0)))
    assert isinstance(first, tuple) and first[0].shape == (3, 3)


def test_loader_argument_errors() -> None:
    x, y = _xy()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DataLoader((x, y), batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        DataLoader((x, y), batch_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        DataLoader((x, y), batch_size=2, seed=-1)
    with pytest.raises(TypeError, match="data must be"):
        DataLoader(42, batch_size=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ in length"):
        DataLoader((x, y[:5]), batch_size=2)


def test_train_val_split_forms() -> None:
    tr, va = train_val_split(100, 0.2, seed=0)
    assert len(tr) == 80 and len(va) == 20 and tr.dtype == np.int64
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(100))
    assert (np.diff(tr) > 0).all() and (np.diff(va) > 0).all()
    _, va2 = train_val_split(100, 0.2, seed=0)
    np.testing.assert_array_equal(va, va2)
    x, y = _xy(10)
    (xtr, ytr), (_, yva) = train_val_split((x, y), 0.3, seed=1)
    assert len(ytr) == 7 and len(yva) == 3
    np.testing.assert_array_equal(xtr, x[ytr])
    xa, xb = train_val_split(x, 0.5, seed=1)
    assert xa.shape == xb.shape == (5, 3)
    da, db = train_val_split(ArrayDataset(x, y), 0.1, seed=2)
    assert isinstance(da, ArrayDataset) and len(da) == 9 and len(db) == 1
    assert len(train_val_split(10, 0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(10, 1.5, seed=0)
    with pytest.raises(TypeError, match="data must be"):
        train_val_split("abc", 0.5, seed=0)


def test_normalize_per_feature_and_global() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[1.0, -2.0, 5.0], scale=[0.5, 2.0, 3.0], size=(1000, 3))
    norm = Normalize().fit(x)
    assert norm.mean is not None and norm.mean.shape == (3,)
    z = norm(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-4)
    np.testing.assert_allclose(norm(x[0]), z[0], rtol=1e-6)  # a single item broadcasts
    np.testing.assert_allclose(norm.inverse(z), x, rtol=1e-5, atol=1e-5)
    g = Normalize(axis=None).fit(x)
    assert g.mean is not None and g.mean.shape == ()
    zg = g.fit_transform(x)
    assert abs(float(zg.mean())) < 1e-5 and abs(float(zg.std()) - 1.0) < 1e-4


def test_normalize_constant_features_and_channels() -> None:
    x = np.zeros((20, 4), np.uint8)
    x[:, 1] = np.arange(20)
    z = Normalize().fit_transform(x)  # column 0 is constant: centred, not divided by 0
    assert np.isfinite(z).all() and (z[:, 0] == 0).all()
    images = np.random.default_rng(0).random((8, 3, 4, 4))
    per_channel = Normalize(axis=(0, 2, 3)).fit(images)
    assert per_channel.mean is not None and per_channel.mean.shape == (3, 1, 1)
    zc = per_channel(images)
    np.testing.assert_allclose(zc.mean(axis=(0, 2, 3)), 0.0, atol=1e-6)


def test_normalize_errors() -> None:
    with pytest.raises(RuntimeError, match="call fit"):
        Normalize()(np.zeros(3))
    with pytest.raises(ValueError, match="both mean and std"):
        Normalize(mean=0.0)
    with pytest.raises(ValueError, match="out of range"):
        Normalize(axis=3).fit(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        Normalize().fit(np.zeros((0, 3)))


def test_standardize() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    z = standardize(x, mean=[1.0, 2.0], std=2.0)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, [[0, 0], [1, 1]])
    assert x[0, 0] == 1.0  # input untouched
    xf = np.ones(3, np.float32)
    standardize(xf, 1.0, 1.0)
    assert (xf == 1).all()
    with pytest.raises(ValueError, match="do not broadcast"):
        standardize(x, mean=np.zeros(3), std=1.0)
    with pytest.raises(ValueError, match="do not broadcast"):
        standardize(np.zeros(2), mean=np.zeros((2, 2)), std=1.0)
    with pytest.raises(ValueError, match="zeros"):
        standardize(x, 0.0, [1.0, 0.0])
