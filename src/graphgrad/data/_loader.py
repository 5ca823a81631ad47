"""Batching, splitting and standardising arrays: all vectorised, no per-item Python loops."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, cast, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import _backend
from .._state import check_int, default_generator
from ._toy import RngLike, as_generator

__all__ = ["ArrayDataset", "DataLoader", "Normalize", "standardize", "train_val_split"]


class IndexableDataset(Protocol):
    """What :class:`DataLoader` needs of a data set: a length, and ``dataset[index]`` for a
    slice and for an int64 index array, returning a whole batch at once (as
    :class:`ArrayDataset`, :class:`~graphgrad.data.MNIST` and the others do)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: Any) -> Any: ...


class ArrayDataset:
    """Equal-length arrays indexed together along their first axis.

    ``ds[i]`` and ``ds[index_array]`` return a tuple with one entry per array, so a batch of
    ``(X, y)`` is a single fancy-indexing operation per array.
    """

    arrays: tuple[NDArray[Any], ...]

    def __init__(self, *arrays: ArrayLike) -> None:
        """Args:
            *arrays: one or more arrays (anything ``np.asarray`` accepts) with the same
                length along axis 0; they are not copied when already arrays.

        Raises:
            ValueError: no arrays, a 0-d array, or lengths that differ (all are listed).
        """
        if not arrays:
            raise ValueError("ArrayDataset: need at least one array")
        converted = tuple(np.asarray(a) for a in arrays)
        for i, a in enumerate(converted):
            if a.ndim == 0:
                raise ValueError(f"ArrayDataset: array {i} is 0-d (a scalar); need axis 0")
        lengths = [len(a) for a in converted]
        if len(set(lengths)) > 1:
            shapes = ", ".join(f"array {i}: shape {a.shape}" for i, a in enumerate(converted))
            raise ValueError(f"ArrayDataset: arrays differ in length along axis 0 ({shapes})")
        self.arrays = converted

    def __len__(self) -> int:
        """Number of items (the common length of the arrays)."""
        return len(self.arrays[0])

    def __getitem__(self, index: Any) -> tuple[Any, ...]:
        """One entry per array: ``tuple(a[index] for a in arrays)``."""
        return tuple(a[index] for a in self.arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(str(a.shape) for a in self.arrays)
        return f"ArrayDataset({shapes})"


def _refuse_samples(data: Sequence[Any]) -> None:
    """Raise when ``data`` is a sequence of per-item tuples such as ``[(x0, y0), (x1, y1)]``
    (PyTorch's habit): taken as one array per entry, each pair would become an "array"
    and the batches would mix inputs with labels."""
    if not data or not all(isinstance(item, tuple) for item in data):
        return
    width = len(data[0])
    raise TypeError(
        f"DataLoader: data is a {type(data).__name__} of {len(data)} tuples (of "
        f"{width} entries each), which looks like PyTorch's list of (x, y) samples; graphgrad's "
        f"DataLoader takes one array per field, indexed along axis 0. Write "
        f"xs, ys = zip(*samples); DataLoader((np.stack(xs), np.asarray(ys)), batch_size=...) "
        f"(or DataLoader(ArrayDataset(np.stack(xs), np.asarray(ys)), ...)). If the tuples "
        f"really are the fields, pass them as NumPy arrays: DataLoader(tuple(np.asarray(a) "
        f"for a in data), ...)"
    )


def _epoch_permutation(seed: int, epoch: int, n: int) -> NDArray[np.int64]:
    """The shuffling order of epoch ``epoch``: ``default_rng([seed, epoch]).permutation(n)``."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64, copy=False)


class DataLoader:
    """Iterate over a data set in mini-batches of NumPy arrays.

    ``DataLoader((X, y), batch_size=64, shuffle=True, seed=0)`` yields ``(X_batch,
    y_batch)`` tuples; a single array yields single arrays; a data set object yields
    whatever ``dataset[index_array]`` returns. Each batch is one slice (in order) or one
    fancy-indexing operation (shuffled) per array.

    Reproducibility: the k-th pass over the loader (k = 0, 1, ...) is epoch k, and its order
    is ``np.random.default_rng([seed, k]).permutation(n)`` -- a function of the seed and the
    epoch only, so restarting at epoch k (``set_epoch(k)``) reproduces it exactly. Without
    a seed, one is drawn from fresh entropy at construction and kept in ``.seed``.

    ``len(loader)`` is the number of batches per epoch: ``ceil(n / batch_size)``, or
    ``n // batch_size`` with ``drop_last=True`` (which drops the short final batch).

    ``device="cuda"`` (or ``"array-api-strict"`` ...) gathers each batch on the host, as
    above, then copies it to the device: one host-to-device copy per array per batch, of the
    batch only (the data set stays in host memory).
    """

    def __init__(
        self,
        data: IndexableDataset | NDArray[Any] | Sequence[ArrayLike],
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        device: str | _backend.Device | None = None,
    ) -> None:
        """Args:
        data: an array, a tuple/list of equal-length arrays (one per field, e.g.
            ``(X, y)``), or a data set object with ``__len__`` and vectorised
            ``__getitem__`` (see :class:`IndexableDataset`). A list of per-item tuples
            ``[(x0, y0), (x1, y1), ...]`` (PyTorch's habit) is refused with a TypeError, as
            is any tuple/list whose entries are all tuples: give arrays instead.
        batch_size: items per batch, >= 1.
        shuffle: visit items in a new random order each epoch.
        seed: non-negative int seeding the per-epoch orders (see above).
        drop_last: omit the final batch when it is smaller than ``batch_size``.
        device: where the batches are delivered (default cpu: NumPy arrays as they are).

        Raises:
            graphgrad.errors.DeviceUnavailableError: the device's library or hardware is
                missing (checked here, before any batch).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise TypeError(f"DataLoader: batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
        ):
            raise ValueError(f"DataLoader: seed must be a non-negative int or None, got {seed!r}")
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, bool | np.bool_):
                raise TypeError(
                    f"DataLoader: {name} must be True or False, got {type(flag).__name__} {flag!r}"
                )
        self._single = isinstance(data, np.ndarray)
        dataset: IndexableDataset
        if isinstance(data, np.ndarray):
            dataset = ArrayDataset(data)
        elif isinstance(data, tuple | list):
            _refuse_samples(data)
            dataset = ArrayDataset(*data)
        elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
            dataset = cast(IndexableDataset, data)
        else:
            raise TypeError(
                "DataLoader: data must be an array, a tuple/list of arrays, or a data set "
                f"with __len__ and __getitem__, got {type(data).__name__}"
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        # No seed: draw one from the global generator (gg.manual_seed makes it reproducible),
        # so that the epochs still differ and .seed can reproduce them.
        self.seed = int(default_generator().integers(2**63)) if seed is None else int(seed)
        self.device = _backend.parse_device(device)
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will run (incremented by each ``iter()``)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (e.g. when resuming training)."""
        check_int("DataLoader.set_epoch", "epoch", epoch, 0)
        self._epoch = int(epoch)

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        """Yield the batches of the current epoch, then advance the epoch by one."""
        epoch = self._epoch
        self._epoch += 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[Any]:
        n = len(self.dataset)
        order = _epoch_permutation(self.seed, epoch, n) if self.shuffle else None
        for b in range(len(self)):
            start, stop = b * self.batch_size, min((b + 1) * self.batch_size, n)
            index: slice | NDArray[np.int64] = (
                slice(start, stop) if order is None else order[start:stop]
            )
            batch = self.dataset[index]
            if not self.device.is_cpu:
                batch = self._to_device(batch)
            yield batch[0] if self._single else batch

    def _to_device(self, batch: Any) -> Any:
        """The batch's arrays (a tuple/list of them, or one) copied to the device."""
        dev = self.device
        if isinstance(batch, tuple | list):
            return type(batch)(_backend.to_device(a, dev) for a in batch)
        return _backend.to_device(batch, dev)

    def __repr__(self) -> str:
        return (
            f"DataLoader({len(self.dataset)} items, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}"
            + ("" if self.device.is_cpu else f", device={str(self.device)!r}")
            + ")"
        )


def _split_indices(
    n: int, val_fraction: float, seed: RngLike
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in [0, 1], got {val_fraction!r}")
    n_val = math.floor(n * val_fraction + 0.5)
    perm = as_generator(seed, "train_val_split").permutation(n).astype(np.int64, copy=False)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@overload
def train_val_split(
    data: int, val_fraction: float = ..., seed: RngLike = ...
) -> tuple[NDArray[np.int64], NDArray[np.int64]]: ...
@overload
def train_val_split(
    data: NDArray[Any], val_fraction: float = ..., seed: RngLike = ...
) -> tuple[NDArray[Any], NDArray[Any]]: ...
@overload
def train_val_split(
    data: ArrayDataset, val_fraction: float = ..., seed: RngLike = ...
) -> tuple[ArrayDataset, ArrayDataset]: ...
@overload
def train_val_split(
    data: Sequence[ArrayLike], val_fraction: float = ..., seed: RngLike = ...
) -> tuple[tuple[NDArray[Any], ...], tuple[NDArray[Any], ...]]: ...
def train_val_split(
    data: int | NDArray[Any] | ArrayDataset | Sequence[ArrayLike],
    val_fraction: float = 0.1,
    seed: RngLike = None,
) -> Any:
    """Split items at random into a training part and a validation part.

    ``n * val_fraction`` items, rounded half up (``math.floor(n * val_fraction + 0.5)``:
    2.5 -> 3, where Python's ``round`` gives 2), chosen by the first places of
    ``as_generator(seed).permutation(n)``, go to validation; each part keeps the items'
    original order.

    Args:
        data: an item count n, an array, an :class:`ArrayDataset`, or a tuple/list of
            equal-length arrays.
        val_fraction: the validation share, in [0, 1].
        seed: an int seed >= 0 or a Generator (None: the global generator, which
            ``gg.manual_seed`` makes reproducible; a different split on each call).

    Returns:
        For n: ``(train_indices, val_indices)`` (int64). For an array: ``(train, val)``
        arrays. For an ArrayDataset: two ArrayDatasets. For arrays: ``((train arrays...),
        (val arrays...))``.
    """
    if isinstance(data, int | np.integer) and not isinstance(data, bool):
        if data < 0:
            raise ValueError(f"train_val_split: n must be >= 0, got {data}")
        return _split_indices(int(data), val_fraction, seed)
    if isinstance(data, np.ndarray):
        tr, va = _split_indices(len(data), val_fraction, seed)
        return data[tr], data[va]
    if isinstance(data, ArrayDataset):
        tr, va = _split_indices(len(data), val_fraction, seed)
        return ArrayDataset(*data[tr]), ArrayDataset(*data[va])
    if isinstance(data, tuple | list):
        ds = ArrayDataset(*data)
        tr, va = _split_indices(len(ds), val_fraction, seed)
        return ds[tr], ds[va]
    raise TypeError(
        "train_val_split: data must be an int, an array, an ArrayDataset or a tuple/list of "
        f"arrays, got {type(data).__name__}"
    )


def _reduced_axes(axis: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"Normalize: axis {a} is out of range for an array of {ndim} dims")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


def standardize(x: ArrayLike, mean: ArrayLike, std: ArrayLike) -> NDArray[np.float32]:
    """``(x - mean) / std`` as a new float32 array of x's shape.

    ``mean`` and ``std`` must broadcast against x without changing its shape, and ``std``
    must have no zeros.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    try:
        shape = np.broadcast_shapes(out.shape, m.shape, s.shape)
    except ValueError:
        shape = None
    if shape != out.shape:
        raise ValueError(
            f"standardize: mean {m.shape} and std {s.shape} do not broadcast to x {out.shape}"
        )
    if np.any(s == 0):
        raise ValueError("standardize: std contains zeros")
    out -= m
    out /= s
    return out


class Normalize:
    """Standardise features with statistics fitted on training data.

    ``Normalize().fit(X_train)`` computes per-feature mean and std over axis 0 (the batch
    axis); ``Normalize(axis=None)`` one global mean and std; ``Normalize(axis=(0, 2, 3))``
    per channel for (N, C, H, W) images. Calling it returns ``(x - mean) / std`` in float32.
    Features whose std is below ``eps`` (e.g. MNIST's always-black border pixels) get std 1:
    they are centred but not scaled, instead of divided by zero.

    The fitted ``mean`` and ``std`` have the data's shape without axis 0 when axis 0 was
    reduced (so they broadcast against a batch and against a single item), and are 0-d for
    ``axis=None``.
    """

    mean: NDArray[np.float64] | None
    std: NDArray[np.float64] | None

    def __init__(
        self,
        mean: ArrayLike | None = None,
        std: ArrayLike | None = None,
        *,
        axis: int | tuple[int, ...] | None = 0,
        eps: float = 1e-8,
    ) -> None:
        """Give ``mean`` and ``std`` directly, or leave them None and call :meth:`fit`."""
        if (mean is None) != (std is None):
            raise ValueError("Normalize: give both mean and std, or neither (then call fit)")
        self.axis = axis
        self.eps = eps
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        if self.std is not None and np.any(self.std == 0):
            raise ValueError("Normalize: std contains zeros")

    def fit(self, x: ArrayLike) -> Normalize:
        """Compute mean and std of ``x`` over ``axis`` (in float64); returns self."""
        arr = np.asarray(x)
        if arr.size == 0:
            raise ValueError(f"Normalize.fit: x is empty (shape {arr.shape})")
        axes = _reduced_axes(self.axis, arr.ndim)
        mean = arr.mean(axis=axes, dtype=np.float64, keepdims=True)
        std = arr.std(axis=axes, dtype=np.float64, keepdims=True)
        std = np.where(std < self.eps, 1.0, std)
        if self.axis is None:
            mean, std = mean.reshape(()), std.reshape(())
        elif 0 in axes:
            mean, std = mean.reshape(mean.shape[1:]), std.reshape(std.shape[1:])
        self.mean, self.std = mean, std
        return self

    def _stats(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        if self.mean is None or self.std is None:
            raise RuntimeError("Normalize: call fit(x_train) first, or pass mean and std")
        return self.mean, self.std

    def transform(self, x: ArrayLike) -> NDArray[np.float32]:
        """``(x - mean) / std`` as float32, x's shape."""
        mean, std = self._stats()
        return standardize(x, mean, std)

    __call__ = transform

    def fit_transform(self, x: ArrayLike) -> NDArray[np.float32]:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def inverse(self, z: ArrayLike) -> NDArray[np.float32]:
        """Undo :meth:`transform`: ``z * std + mean`` as float32."""
        mean, std = self._stats()
        out = np.array(z, dtype=np.float32, copy=True)
        out *= std.astype(np.float32)
        out += mean.astype(np.float32)
        return out

    def __repr__(self) -> str:
        fitted = "fitted" if self.mean is not None else "not fitted"
        return f"Normalize(axis={self.axis}, {fitted})"
