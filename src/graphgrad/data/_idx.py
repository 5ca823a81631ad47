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

import numpy as np
from numpy.typing import NDArray

from ._errors import DataFormatError

__all__ = ["IDX_DTYPES", "parse_idx", "read_idx"]

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
    if len(data) < 4:
        raise DataFormatError(
            f"{source}: truncated: {len(data)} bytes, shorter than the 4-byte IDX magic"
        )
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataFormatError(
            f"{source}: not an IDX file: magic 0x{data[:4].hex()} does not start with two zero "
            "bytes (an IDX file starts 00 00, a type code, the number of dimensions)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x} ({d.name})" for c, d in IDX_DTYPES.items())
        raise DataFormatError(f"{source}: unknown IDX data type code 0x{code:02x}; known: {known}")
    if ndim == 0:
        raise DataFormatError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(
            f"{source}: truncated header: {ndim} dimensions need {header} header bytes, "
            f"the file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header
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
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header)
    # astype always copies: the result is writable and in native byte order.
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> NDArray[np.generic]:
    """Read an IDX file, gzip-compressed or not (detected from its first bytes).

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The array it holds; see :func:`parse_idx`. For MNIST images, uint8 (N, 28, 28);
        for labels, uint8 (N,).

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: a corrupt gzip stream, a ``.gz`` name on a file that is not gzip, or
            any IDX format error (see :func:`parse_idx`); the message names the file.
    """
    p = Path(path)
    raw = p.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFormatError(f"{p}: corrupt gzip data: {exc}") from exc
    elif p.suffix == ".gz":
        raise DataFormatError(
            f"{p}: named .gz but not gzip-compressed (it does not start with bytes 1f 8b)"
        )
    return parse_idx(raw, str(p))
