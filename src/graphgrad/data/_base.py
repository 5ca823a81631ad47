"""What every labelled image data set shares: indexing, length, and float vectors in [0, 1]."""

from __future__ import annotations

from typing import overload

import numpy as np
from numpy.typing import NDArray

Index = slice | NDArray[np.integer] | NDArray[np.bool_] | list[int]


class LabelledImages:
    """Mixin for data sets with ``images`` (uint8, N first) and ``labels`` (int64 (N,)).

    Subclasses give ``_flat_images()``: the images as (N, D) uint8 rows in the file's order.
    """

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]

    def _flat_images(self) -> NDArray[np.uint8]:
        return self.images.reshape(len(self.images), -1)

    def __len__(self) -> int:
        """Number of images."""
        return len(self.labels)

    @overload
    def __getitem__(self, index: int | np.integer) -> tuple[NDArray[np.uint8], int]: ...
    @overload
    def __getitem__(self, index: Index) -> tuple[NDArray[np.uint8], NDArray[np.int64]]: ...
    def __getitem__(
        self, index: int | np.integer | Index
    ) -> tuple[NDArray[np.uint8], int] | tuple[NDArray[np.uint8], NDArray[np.int64]]:
        """``(image, label)`` (label an int) for an integer index; ``(images, labels)``
        arrays for a slice or an index array."""
        if isinstance(index, int | np.integer):
            return self.images[index], int(self.labels[index])
        return self.images[index], self.labels[index]

    def vectors(self) -> NDArray[np.float32]:
        """All images as flat float32 vectors scaled to [0, 1]: shape (N, D), D = 784 for
        (Fashion-)MNIST, 3072 for CIFAR-10. A new array on every call: keep the result."""
        flat = self._flat_images()
        x = flat.reshape(len(flat), -1).astype(np.float32)
        x /= np.float32(255.0)
        return x

    def arrays(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``(vectors(), labels)``: float32 (N, D) in [0, 1] and int64 (N,)."""
        return self.vectors(), self.labels
