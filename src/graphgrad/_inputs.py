"""Read a user's input files (``.npy`` arrays, PNG images) with bounded memory.

``graphgrad predict`` takes files from anywhere; a file can claim anything. Both readers look
at the header first and refuse, with one line naming the file, what is malformed or larger
than the limit, before the body is allocated or decoded:

- ``.npy``: the header's shape and dtype give the body's size; it must be within
  :data:`MAX_INPUT_BYTES` and agree with the file's length (a 128-byte file claiming 80 GB is
  refused at once). Object arrays (pickles) are refused.
- PNG: the 8-byte signature, then the ``IHDR`` chunk's width and height, which must be within
  :data:`MAX_PIXELS` (and equal the expected size when one is given) before anything is
  decompressed; a truncated or corrupt image is a one-line error, not a traceback.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_PIXELS",
    "InputFileError",
    "read_inputs",
    "read_npy",
    "read_png",
]

MAX_INPUT_BYTES = 256 << 20
"""The largest ``.npy`` body read (256 MiB)."""
MAX_PIXELS = 1 << 24
"""The most pixels a PNG may have (16.7 million, 4096 x 4096)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class InputFileError(ValueError):
    """An input file that cannot be read: malformed, truncated or too large; names the file."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


def read_npy(path: str | os.PathLike[str], *, max_bytes: int = MAX_INPUT_BYTES) -> np.ndarray:
    """Load a ``.npy`` file after checking its header against ``max_bytes`` and its length.

    Returns:
        The array, of the shape and dtype in the header.

    Raises:
        InputFileError: not a ``.npy`` file, an object (pickled) dtype, a body over
            ``max_bytes``, a file shorter or longer than its header says, unreadable, an
            empty array (nothing to predict), or a value that is NaN or infinite.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            except (ValueError, SyntaxError, TypeError, EOFError) as exc:
                raise InputFileError(f"{p}: not a .npy file: {_one_line(exc)}") from None
            offset = f.tell()
            if dtype.hasobject:
                raise InputFileError(f"{p}: holds Python objects (a pickle); not loading it")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > max_bytes:
                raise InputFileError(
                    f"{p}: its header claims a {dtype} array of shape {shape}, "
                    f"{nbytes:,} bytes, more than the limit of {max_bytes:,}"
                )
            if size - offset != nbytes:
                what = "truncated" if size - offset < nbytes else "trailing data"
                raise InputFileError(
                    f"{p}: {what}: its header claims {nbytes:,} bytes of data "
                    f"(a {dtype} array of shape {shape}), the file holds {size - offset:,}"
                )
            body = f.read(nbytes)
    except OSError as exc:
        raise InputFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if math.prod(shape) == 0:
        raise InputFileError(
            f"{p}: the file holds 0 images or vectors (an empty array of shape {shape}); "
            f"nothing to predict"
        )
    flat = np.frombuffer(body, dtype=dtype)
    arr = flat.reshape(tuple(shape), order="F" if fortran else "C").copy()
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            n = int(bad.sum())
            raise InputFileError(
                f"{p}: {n:,} of its {arr.size:,} values {'is' if n == 1 else 'are'} not finite "
                f"(NaN or infinity), the first at index {first}; inputs must be finite numbers"
            )
    return arr


def png_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` from a PNG's ``IHDR`` chunk, reading 24 bytes.

    Raises:
        InputFileError: not a PNG (wrong signature), no ``IHDR`` first, or unreadable.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise InputFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if head[:8] != _PNG_SIGNATURE:
        raise InputFileError(
            f"{p}: not a PNG file (it starts with bytes {head[:8].hex(' ') or 'nothing'}, "
            f"a PNG with {_PNG_SIGNATURE.hex(' ')})"
        )
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise InputFileError(f"{p}: truncated or malformed PNG: no IHDR chunk first")
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def read_png(
    path: str | os.PathLike[str],
    size: tuple[int, ...] | None = None,
    *,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode a PNG (with matplotlib) after checking its header.

    Args:
        path: the file.
        size: the ``(height, width)`` it must have, if known: checked before decoding.
        max_pixels: the most pixels accepted.

    Returns:
        The image as matplotlib reads it: float32 in [0, 1], (H, W) or (H, W, 3|4).

    Raises:
        InputFileError: not a PNG, another size than ``size``, too many pixels, truncated or
            corrupt.
        ImportError: matplotlib is not installed (the message names the extra).
    """
    p = Path(path)
    height, width = png_size(p)
    if size is not None and (height, width) != tuple(size):
        raise InputFileError(
            f"{p}: the image is {height}x{width} pixels (height x width); expected "
            f"{size[0]}x{size[1]}"
        )
    if height * width > max_pixels or not height or not width:
        raise InputFileError(
            f"{p}: the image claims {height}x{width} pixels; at most {max_pixels:,} accepted"
        )
    try:
        import matplotlib.image as mpimg
    except ImportError:  # pragma: no cover - the train extra installs it
        raise ImportError("reading PNG needs matplotlib: pip install 'graphgrad[train]'") from None
    try:
        image: Any = mpimg.imread(p)
    except Exception as exc:  # a hostile file can make the decoder raise nearly anything
        raise InputFileError(f"{p}: cannot decode the PNG: {_one_line(exc)}") from None
    return np.asarray(image)


def read_inputs(
    paths: Sequence[str | os.PathLike[str]], image_shape: tuple[int, ...] | None, d: int
) -> tuple[list[str], np.ndarray]:
    """The inputs of a model from ``.npy``/``.png`` files, as ``graphgrad predict`` takes them:
    float32 ``(N, d)``, and a name for each row (``x.npy``, or ``x.npy[3]`` for a stack).

    Args:
        paths: the files.
        image_shape: the model's image shape, ``(H, W)`` or ``(C, H, W)``; ``None`` for a
            model of ``d``-vectors (points, such as two moons).
        d: the model's number of input features.

    Pixels are uint8 0..255 (scaled by 1/255) or float in [0, 1], as the model was trained
    on; a float image outside [0, 1] (such as 0..255 saved as float) is refused, as is a
    value that is NaN or infinite, an empty array, a PNG for a model of points, and a shape
    that holds neither the model's images nor its vectors.

    Raises:
        InputFileError: naming the file and what is wrong with it.
    """
    names: list[str] = []
    rows = []
    for path in map(Path, paths):
        suffix = path.suffix.lower()
        if suffix == ".npy":
            arr = read_npy(path)  # header checked before the body is read; finite, not empty
        elif suffix == ".png":
            if image_shape is None:
                raise InputFileError(
                    f"{path}: this model takes {d}-vectors (points), not images; give a .npy "
                    f"file of shape ({d},) or (N, {d})"
                )
            arr = read_png(path, image_shape[-2:])
            if arr.ndim == 3 and len(image_shape) == 2:
                arr = arr[..., :3].mean(axis=-1)  # RGB(A) -> grey
            elif arr.ndim == 3:
                arr = arr[..., :3].transpose(2, 0, 1)  # HWC -> CHW
        else:
            raise InputFileError(f"{path}: expected a .npy or .png file")
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / np.float32(255.0)
        elif arr.dtype.kind != "f":
            raise InputFileError(f"{path}: expected uint8 or float pixels, got {arr.dtype}")
        elif image_shape is not None:
            lo, hi = float(arr.min()), float(arr.max())
            if lo < 0.0 or hi > 1.0:
                raise InputFileError(
                    f"{path}: float pixels must be in [0, 1], found values in [{lo:g}, {hi:g}]; "
                    f"divide 0..255 pixels by 255 (or save them as uint8)"
                )
        fits_vector = arr.ndim in (1, 2) and arr.shape[-1] == d  # (d,) or (N, d)
        fits_image = (  # one image or a stack of them
            image_shape is not None
            and arr.ndim in (len(image_shape), len(image_shape) + 1)
            and arr.shape[-len(image_shape) :] == image_shape
        )
        if not (fits_vector or fits_image):
            if image_shape is not None:
                want = f"{image_shape} images or {d}-vectors"
            else:
                want = f"{d}-vectors: this model takes points, shape ({d},) or (N, {d}), not images"
            raise InputFileError(f"{path}: shape {arr.shape} does not hold {want}")
        block = arr.reshape(-1, d).astype(np.float32)
        names += [str(path)] if len(block) == 1 else [f"{path}[{j}]" for j in range(len(block))]
        rows.append(block)
    x = np.concatenate(rows) if rows else np.zeros((0, d), np.float32)
    return names, x
