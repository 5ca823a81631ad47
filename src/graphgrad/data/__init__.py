"""Data for graphgrad: real image sets, toy sets, loaders, downloads. NumPy + stdlib only.

Readers:
    :class:`FashionMNIST`, :class:`MNIST` (IDX files, ``.gz`` or raw), :class:`CIFAR10`
    (the official python batches, unpickled safely), :func:`read_idx`.
Toy sets (a seed or a Generator gives the same data every time):
    :func:`two_moons`, :func:`circles`, :func:`xor`, :func:`blobs`, :func:`spiral`
    (X float64 (n, 2), y int64 (n,)); :func:`sine_1d`, :func:`regression_1d` (x, y float64
    (n, 1)).
Batching and preprocessing:
    :class:`ArrayDataset`, :class:`DataLoader`, :func:`train_val_split`,
    :class:`Normalize`, :func:`standardize`.
Downloads:
    :func:`download` (``graphgrad download NAME``: :func:`add_download_parser`,
    :func:`download_command`).
"""

from ._cifar import CIFAR10, CIFAR10_CLASSES, load_cifar_pickle, to_layout
from ._download import (
    CHECKSUMS,
    SIZES,
    SOURCES,
    add_download_parser,
    download,
    download_command,
    fetch_file,
    read_checksum_file,
)
from ._errors import ChecksumError, DataFormatError, DatasetNotFoundError, DownloadError
from ._idx import parse_idx, read_idx
from ._loader import ArrayDataset, DataLoader, Normalize, standardize, train_val_split
from ._mnist import FASHION_MNIST_CLASSES, MNIST, MNIST_CLASSES, FashionMNIST
from ._paths import ENV_VAR, default_data_root
from ._toy import blobs, circles, regression_1d, sine_1d, spiral, two_moons, xor

__all__ = [
    "CHECKSUMS",
    "CIFAR10",
    "CIFAR10_CLASSES",
    "ENV_VAR",
    "FASHION_MNIST_CLASSES",
    "MNIST",
    "MNIST_CLASSES",
    "SIZES",
    "SOURCES",
    "ArrayDataset",
    "ChecksumError",
    "DataFormatError",
    "DataLoader",
    "DatasetNotFoundError",
    "DownloadError",
    "FashionMNIST",
    "Normalize",
    "add_download_parser",
    "blobs",
    "circles",
    "default_data_root",
    "download",
    "download_command",
    "fetch_file",
    "load_cifar_pickle",
    "parse_idx",
    "read_checksum_file",
    "read_idx",
    "regression_1d",
    "sine_1d",
    "spiral",
    "standardize",
    "to_layout",
    "train_val_split",
    "two_moons",
    "xor",
]
