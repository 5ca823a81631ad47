"""The IDX format of MNIST and Fashion-MNIST, read with NumPy only.

An IDX file is a 4-byte magic ``00 00 TT NN`` (``TT``: element type code, ``NN``: number of
dimensions), then ``NN`` big-endian uint32 sizes, then the elements, big-endian, row-major.
The files are usually distributed gzip-compressed (``.gz``); :func:`read_idx` accepts both.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._errors import DataFormatError

__all__ = ["IDX_DTYPES", "MAX_IDX_BYTES", "parse_idx", "read_idx"]

IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX element type code -> big-endian NumPy dtype (the six codes of the format)."""

_GZIP_MAGIC = b"\x1f\x8b"

MAX_IDX_BYTES = 256 << 20
"""The largest IDX body read by default (256 MiB; MNIST's training images are 47 MB).
Checked against the header's claimed size before anything is allocated or decompressed."""

_DEFLATE_MAX_RATIO = 1032
"""No deflate stream expands more than about 1032-fold (zlib's documented maximum)."""

_MAX_NDIM = 32


def _header(head: bytes, source: str) -> tuple[np.dtype[np.generic], int]:
    """Check the 4-byte magic; return the dtype and the number of dimensions."""
    if len(head) < 4:
        raise DataFormatError(
            f"{source}: truncated: {len(head)} bytes, shorter than the 4-byte IDX magic"
        )
    zero, code, ndim = struct.unpack(">HBB", head[:4])
    if zero != 0:
        raise DataFormatError(
            f"{source}: not an IDX file: magic 0x{head[:4].hex()} does not start with two zero "
            "bytes (an IDX file starts 00 00, a type code, the number of dimensions)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x} ({d.name})" for c, d in IDX_DTYPES.items())
        raise DataFormatError(f"{source}: unknown IDX data type code 0x{code:02x}; known: {known}")
    if ndim == 0:
        raise DataFormatError(f"{source}: IDX header declares 0 dimensions")
    if ndim > _MAX_NDIM:
        raise DataFormatError(
            f"{source}: IDX header declares {ndim} dimensions, more than {_MAX_NDIM}"
        )
    return IDX_DTYPES[code], ndim


def _shape(sizes: bytes, ndim: int, available: int, source: str) -> tuple[int, ...]:
    header = 4 + 4 * ndim
    if len(sizes) < 4 * ndim:
        raise DataFormatError(
            f"{source}: truncated header: {ndim} dimensions need {header} header bytes, "
            f"the file has {available}"
        )
    return struct.unpack(f">{ndim}I", sizes[: 4 * ndim])


def parse_idx(data: bytes, source: str = "<bytes>") -> NDArray[np.generic]:
    """Decode the bytes of an uncompressed IDX file.

    Args:
        data: the whole file content.
        source: a name for the data (usually its path), used in error messages.

    Returns:
        A new, writable array in native byte order whose shape is the header's sizes and
        whose dtype is given by the type code (uint8 for MNIST images and labels).

    Raises:
        DataFormatError: wrong magic, unknown type code, a header or body shorter than the
            header promises, or bytes left over after the body.
    """
    dtype, ndim = _header(data[:4], source)
    header = 4 + 4 * ndim
    shape = _shape(data[4:header], ndim, len(data), source)
    expected = math.prod(shape) * dtype.itemsize
    _check_length(len(data) - header, expected, shape, dtype, source)
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header)
    # astype always copies: the result is writable and in native byte order.
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def _check_length(
    actual: int, expected: int, shape: tuple[int, ...], dtype: np.dtype[np.generic], source: str
) -> None:
    if actual < expected:
        raise DataFormatError(
            f"{source}: truncated: the header promises shape {shape} of {dtype.name}, "
            f"{expected} bytes of data, but only {actual} bytes follow the header"
        )
    if actual > expected:
        raise DataFormatError(
            f"{source}: {actual - expected} bytes of trailing data after the {expected} bytes "
            f"that the header (shape {shape} of {dtype.name}) promises"
        )


def _read_into(stream: Any, view: memoryview) -> int:
    """Fill ``view`` from ``stream`` in bounded reads; the number of bytes filled."""
    filled = 0
    while filled < len(view):
        n = stream.readinto(view[filled : filled + (1 << 20)])
        if not n:
            break
        filled += n
    return filled


def read_idx(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_IDX_BYTES
) -> NDArray[np.generic]:
    """Read an IDX file, gzip-compressed or not (detected from its first bytes).

    The header is read first and its claimed size checked against ``max_bytes`` and against
    the file (a plain file must be exactly that long; a gzip file cannot expand more than
    about 1032-fold); only then is the body read, decompressed incrementally into the
    array, and refused as soon as the stream runs past the claimed size.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.
        max_bytes: the largest body accepted, in bytes (default :data:`MAX_IDX_BYTES`).

    Returns:
        The array it holds; see :func:`parse_idx`. For MNIST images, uint8 (N, 28, 28);
        for labels, uint8 (N,).

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: a corrupt gzip stream, a ``.gz`` name on a file that is not gzip, a
            claimed size over ``max_bytes`` or more than the file can hold, or any IDX
            format error (see :func:`parse_idx`); the message names the file.
    """
    p = Path(path)
    source = str(p)
    with open(p, "rb") as raw:
        file_size = os.fstat(raw.fileno()).st_size
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed and p.suffix == ".gz":
            raise DataFormatError(
                f"{p}: named .gz but not gzip-compressed (it does not start with bytes 1f 8b)"
            )
        stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            head = stream.read(4)
            dtype, ndim = _header(head, source)
            sizes = stream.read(4 * ndim)
            shape = _shape(sizes, ndim, len(head) + len(sizes), source)
            count = math.prod(shape)
            expected = count * dtype.itemsize
            header = 4 + 4 * ndim
            if expected > max_bytes:
                raise DataFormatError(
                    f"{source}: the header claims shape {shape} of {dtype.name}, "
                    f"{expected:,} bytes, more than the limit of {max_bytes:,} "
                    "(pass max_bytes= to read larger files)"
                )
            if not compressed:
                _check_length(file_size - header, expected, shape, dtype, source)
            elif header + expected > file_size * _DEFLATE_MAX_RATIO:
                raise DataFormatError(
                    f"{source}: the header claims shape {shape} of {dtype.name}, "
                    f"{expected:,} bytes, more than a {file_size:,}-byte gzip file can hold"
                )
            body = np.empty(expected, dtype=np.uint8)
            got = _read_into(stream, memoryview(body.data))
            if got < expected:
                _check_length(got, expected, shape, dtype, source)
            if stream.read(1):
                raise DataFormatError(
                    f"{source}: trailing data after the {expected} bytes that the header "
                    f"(shape {shape} of {dtype.name}) promises"
                )
        except (OSError, EOFError, zlib.error) as exc:
            if not compressed:
                raise
            raise DataFormatError(f"{p}: corrupt gzip data: {exc}") from exc
    array = body.view(dtype)
    if not dtype.isnative:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array.reshape(shape)
