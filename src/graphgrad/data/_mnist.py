"""MNIST and Fashion-MNIST: 28x28 grey images in 10 classes, read from IDX files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from ._base import LabelledImages
from ._errors import DataFormatError, DatasetNotFoundError
from ._idx import read_idx
from ._paths import ENV_VAR, search_folders

__all__ = ["FASHION_MNIST_CLASSES", "MNIST", "MNIST_CLASSES", "FashionMNIST"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))

IMAGE_SHAPE = (28, 28)


def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it exists, else ``folder/name.gz`` if that exists, else None.

    The uncompressed file wins when both are there: it is read without decompressing.
    """
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


class _IdxImageDataset(LabelledImages):
    """A 10-class data set of 28x28 uint8 images stored as a pair of IDX files per split."""

    title: ClassVar[str]
    subdir: ClassVar[str]
    class_names: ClassVar[tuple[str, ...]]
    system_folders: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str]

    images: NDArray[np.uint8]
    """(N, 28, 28) uint8, 0 = background."""
    labels: NDArray[np.int64]
    """(N,) int64 class indices in 0..9."""
    classes: tuple[str, ...]
    """The 10 class names, indexed by label."""
    train: bool
    """True for the 60,000-image training split, False for the 10,000-image test split."""
    folder: Path
    """The folder the files were read from."""
    files: tuple[Path, Path]
    """The image file and the label file that were read."""

    def __init__(self, root: str | os.PathLike[str] | None = None, train: bool = True) -> None:
        """Read one split.

        Args:
            root: the folder holding the IDX files (``.gz`` or not), or a folder with a
                subfolder named after the data set (``fashion-mnist`` / ``mnist``). None
                searches ``$GRAPHGRAD_DATA``, the download folder and system folders.
            train: the training split (``train-*``) if True, else the test split (``t10k-*``).

        Raises:
            DatasetNotFoundError: the files are in none of the folders searched.
            DataFormatError: a file is malformed, the image and label counts differ, a
                label is outside 0..9, or the images are not 28x28.
        """
        prefix = "train" if train else "t10k"
        image_name = f"{prefix}-images-idx3-ubyte"
        label_name = f"{prefix}-labels-idx1-ubyte"
        folder, image_path, label_path = self._locate(root, image_name, label_name)

        images = read_idx(image_path)
        labels = read_idx(label_path)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise DataFormatError(
                f"{image_path}: expected uint8 images of shape (N, 28, 28), "
                f"got {images.dtype} of shape {images.shape}"
            )
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise DataFormatError(
                f"{label_path}: expected a 1-D uint8 array of labels, "
                f"got {labels.dtype} of shape {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataFormatError(
                f"image/label count mismatch: {image_path} has {len(images)} images but "
                f"{label_path} has {len(labels)} labels"
            )
        labels64 = labels.astype(np.int64)
        bad = np.flatnonzero(labels64 >= len(self.class_names))
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(
                f"{label_path}: label {int(labels64[i])} at index {i} is outside "
                f"0..{len(self.class_names) - 1} ({bad.size} bad labels in all)"
            )
        self.images = images.view(np.uint8)
        self.labels = labels64
        self.classes = self.class_names
        self.train = train
        self.folder = folder
        self.files = (image_path, label_path)

    @classmethod
    def _locate(
        cls, root: str | os.PathLike[str] | None, image_name: str, label_name: str
    ) -> tuple[Path, Path, Path]:
        tried: list[str] = []
        for folder in search_folders(root, cls.subdir, cls.system_folders):
            image_path = _find_file(folder, image_name)
            label_path = _find_file(folder, label_name)
            if image_path is not None and label_path is not None:
                return folder, image_path, label_path
            missing = [n for n, p in ((image_name, image_path), (label_name, label_path)) if not p]
            tried.append(f"  {folder}: no {' and no '.join(m + '[.gz]' for m in missing)}")
        where = "\n".join(tried)
        raise DatasetNotFoundError(
            f"{cls.title} files not found. Looked in:\n{where}\n"
            f"Get them with {cls.install_hint}, or give the folder that holds them: "
            f"root= in Python, --data-root on the command line, or {ENV_VAR}."
        )

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, {len(self)} images, from {self.folder})"


class FashionMNIST(_IdxImageDataset):
    """Fashion-MNIST (Zalando): 28x28 grey photos of clothing in 10 classes.

    60,000 training and 10,000 test images, 6,000 / 1,000 per class. ``images`` is uint8
    (N, 28, 28), ``labels`` int64 (N,), ``classes`` the 10 names ("T-shirt/top", ...
    "Ankle boot"). ``vectors()`` gives float32 (N, 784) in [0, 1].

    Files are looked for (first match wins) in ``root`` and ``root/fashion-mnist``; without
    ``root``, in ``$GRAPHGRAD_DATA/fashion-mnist`` and ``$GRAPHGRAD_DATA`` (or
    ``~/.cache/graphgrad/fashion-mnist`` when the variable is unset), then in
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package).
    """

    title = "Fashion-MNIST"
    subdir = "fashion-mnist"
    class_names = FASHION_MNIST_CLASSES
    system_folders = ("/usr/share/datasets/fashion-mnist",)
    install_hint = (
        "`graphgrad download fashion-mnist` or, on Debian/Ubuntu, "
        "`apt-get install dataset-fashion-mnist`"
    )


class MNIST(_IdxImageDataset):
    """MNIST handwritten digits: 28x28 grey images of the digits 0..9.

    60,000 training and 10,000 test images. ``images`` is uint8 (N, 28, 28), ``labels``
    int64 (N,), ``classes`` the names "0".."9". ``vectors()`` gives float32 (N, 784) in
    [0, 1].

    Files are looked for in ``root`` and ``root/mnist``; without ``root``, in
    ``$GRAPHGRAD_DATA/mnist`` and ``$GRAPHGRAD_DATA`` (or ``~/.cache/graphgrad/mnist``).
    """

    title = "MNIST"
    subdir = "mnist"
    class_names = MNIST_CLASSES
    install_hint = "`graphgrad download mnist`"
