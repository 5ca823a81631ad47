"""CIFAR-10 from the official "python version" batches, unpickled safely.

The official archive ``cifar-10-python.tar.gz`` holds a folder ``cifar-10-batches-py`` with
``data_batch_1`` .. ``data_batch_5`` (10,000 training images each), ``test_batch`` (10,000
test images) and ``batches.meta``. Each batch is a Python 2 pickle of a dict whose key
``b"data"`` is a uint8 NumPy array of shape (10000, 3072) -- each row the 1024 red values,
then the 1024 green, then the 1024 blue, each plane row-major over the 32x32 image -- and
whose key ``b"labels"`` is a list of 10,000 ints in 0..9. ``batches.meta`` holds the class
names under ``b"label_names"``.

Unpickling can run arbitrary code: a pickle may name any importable callable (``os.system``
say) and call it. :class:`_RestrictedUnpickler` therefore refuses every global except the
few that such files need (see ``_ALLOWED_GLOBALS``; protocol-5 arrays' ``_frombuffer`` only
with a plain numeric buffer); a file naming anything else raises
:class:`DataFormatError` before anything is called.

A pickle can also be small and still expand into something enormous: a list holding the same
list many times, itself held many times, is a few kilobytes on disk and billions of elements
to anything that walks it (``np.asarray`` does). So before unpickling, :func:`_scan_pickle`
reads the opcodes (without building anything) and counts the objects the pickle would make,
counting a shared reference as often as it is reachable, and how deeply they nest; past
:data:`MAX_PICKLE_OBJECTS` or :data:`MAX_PICKLE_DEPTH` the file is refused. Batch files and
archive members over :data:`MAX_BATCH_BYTES` are refused before they are read.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import pickletools
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .._quote import excerpt
from ._base import LabelledImages
from ._errors import DataFormatError, DatasetNotFoundError
from ._paths import ENV_VAR, search_folders

__all__ = ["CIFAR10", "CIFAR10_CLASSES", "load_cifar_pickle"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
BATCH_FOLDER = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META_FILE = "batches.meta"
SIDE = 32
PIXELS = SIDE * SIDE * 3  # 3072 values per image

MAX_BATCH_BYTES = 256 << 20
"""The largest batch file read (an official one is 31 MB; all 50,000 training images in one
batch would be 154 MB)."""
MAX_ARCHIVE_MEMBERS = 1000
"""The most entries read from a tarball (the official one has 9)."""
MAX_PICKLE_OBJECTS = 2_000_000
"""The most opcodes a batch pickle may have, and the most objects it may make, shared
references counted each time they are reachable (a batch of 10,000 images in the official
format has about 30,000 opcodes)."""
MAX_PICKLE_DEPTH = 32
"""The deepest nesting allowed in a batch pickle (the official format nests 6 deep, counting
the array's constructor arguments)."""

Layout = Literal["flat", "chw", "hwc"]
_LAYOUTS = ("flat", "chw", "hwc")


def _numpy_reconstruct() -> Callable[..., Any]:
    """NumPy's private array constructor used by ndarray pickles, without importing
    ``numpy.core`` (deprecated in NumPy 2, where importing it warns)."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            fn: Callable[..., Any] = importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
        return fn
    raise ImportError("cannot find numpy's multiarray._reconstruct")  # pragma: no cover


def _latin1_encode(text: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` that only turns a str into bytes via latin-1.

    Python 3 writes ``bytes`` into a protocol-2 pickle as ``_codecs.encode(text, "latin1")``
    (protocol 2 has no bytes opcode). The official files, written by Python 2, never use it,
    but re-saved or generated batches do; this version can do nothing else.
    """
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(
            "_codecs.encode is only allowed as encode(str, 'latin1') (how Python 3 pickles bytes)"
        )
    return text.encode("latin-1")


def _safe_frombuffer(buf: object, dtype: object, shape: object, order: object) -> Any:
    """Stand-in for ``numpy._core.numeric._frombuffer``, how NumPy pickles an array with
    protocol 5 (``pickle.HIGHEST_PROTOCOL``): ``frombuffer(buf, dtype).reshape(shape,
    order=order)``. It accepts only an in-band ``bytes``/``bytearray`` buffer, a plain
    numeric dtype (bool, int, uint, float, complex; no object, structured or sub-array
    dtype), a shape tuple of non-negative ints whose size matches the buffer exactly, and
    order ``'C'`` or ``'F'``; anything else raises UnpicklingError. Returns a writable copy."""
    if not isinstance(buf, bytes | bytearray):
        raise pickle.UnpicklingError(
            f"_frombuffer: the buffer must be bytes or bytearray, got {type(buf).__name__}"
        )
    if (
        not isinstance(dtype, np.dtype)
        or dtype.kind not in "biufc"
        or dtype.fields is not None
        or dtype.subdtype is not None
    ):
        raise pickle.UnpicklingError(
            f"_frombuffer: the dtype must be a plain numeric NumPy dtype, got {dtype!r}"
        )
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise pickle.UnpicklingError(
            f"_frombuffer: the shape must be a tuple of non-negative ints, got {shape!r}"
        )
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"_frombuffer: order must be 'C' or 'F', got {order!r}")
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != len(buf):
        raise pickle.UnpicklingError(
            f"_frombuffer: shape {shape} of {dtype} needs {count * dtype.itemsize} bytes, "
            f"the buffer has {len(buf)}"
        )
    flat = np.frombuffer(buf, dtype=dtype)
    return flat.reshape(shape, order=order).copy(order="K")


_RECONSTRUCT = _numpy_reconstruct()
# Exactly what a pickled uint8 ndarray needs: the array constructor, the ndarray type and
# the dtype type. NumPy < 2 names the constructor numpy.core.multiarray._reconstruct, NumPy 2
# numpy._core.multiarray._reconstruct; both map to the one function. Plus _codecs.encode,
# restricted to latin-1 (see _latin1_encode), and NumPy's protocol-5 array constructor
# _frombuffer, restricted to plain numeric buffers (see _safe_frombuffer). Lists, dicts,
# bytes and ints need no global.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    # Protocol 5 (pickle.HIGHEST_PROTOCOL) arrays, checked by _safe_frombuffer.
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build NumPy arrays, dicts, lists, bytes and numbers only."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR-10 batch may contain only "
                "dicts, lists, bytes, numbers and NumPy arrays"
            ) from None


_MARK = -2  # a MARK on the simulated stack
_LEAF = -1  # an object with no parts (number, string, global)

# What the scan does with each opcode: the kinds below, from pickletools' table of opcodes.
(_GENERIC, _MUTATE, _PUT, _MEMOIZE, _GET, _PUSH_MARK, _DUP, _STOP, _SKIP, _VALUE) = range(10)
_KINDS = {
    **dict.fromkeys(("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"), _MUTATE),
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), _PUT),
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), _GET),
    "MEMOIZE": _MEMOIZE,
    "MARK": _PUSH_MARK,
    "DUP": _DUP,
    "STOP": _STOP,
    "PROTO": _SKIP,
    "FRAME": _SKIP,
}


@dataclass(frozen=True)
class _Op:
    name: str
    kind: int
    arg: int  # bytes of argument (>= 0), or one of pickletools' variable-length codes (< 0)
    lines: int  # newline-terminated argument lines (GLOBAL and INST have two)
    below: int  # stack items consumed below the mark (or in all, without one)
    marked: bool  # consumes a MARK and everything above it
    pushes: bool
    container: bool  # makes a new container even without inputs (EMPTY_LIST ...)


def _kind(op: pickletools.OpcodeInfo) -> int:
    """The scan's kind of ``op``; _VALUE for a plain value pushed from nothing (the fast path:
    a number or a string)."""
    kind = _KINDS.get(op.name, _GENERIC)
    plain = not op.stack_before and len(op.stack_after) == 1
    if kind == _GENERIC and plain and op.name not in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
        return _VALUE
    return kind


_OPS: dict[int, _Op] = {
    ord(op.code): _Op(
        name=op.name,
        kind=_kind(op),
        arg=op.arg.n if op.arg is not None else 0,
        lines=2 if op.name in ("GLOBAL", "INST") else 1,
        below=(
            op.stack_before.index(pickletools.markobject)
            if pickletools.markobject in op.stack_before
            else len(op.stack_before)
        ),
        marked=pickletools.markobject in op.stack_before,
        pushes=bool(op.stack_after),
        container=op.name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"),
    )
    for op in pickletools.opcodes
}
_LENGTH_BYTES = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}


def _scan_pickle(data: bytes, source: str, max_objects: int, max_depth: int) -> None:
    """Refuse a pickle that would make too many objects or nest too deeply, without loading it.

    Walks the opcodes (their argument sizes and stack effects come from :mod:`pickletools`'
    table) and replays them on a stack of node ids: each container or call result is a node
    that records its parts (by id, so a memo reference shares the node) and how many plain
    values it holds. Then it counts, from the result, how many objects a walk over the
    result would visit (a node reachable twice counts twice) and how deep it goes, without
    walking it: one pass over the nodes.

    Raises:
        DataFormatError: over ``max_objects`` opcodes or objects, deeper than ``max_depth``,
            a structure that contains itself, or opcodes that do not form a valid pickle.
    """
    parts: list[list[int]] = []  # node -> child nodes
    leaves: list[int] = []  # node -> number of plain values inside it
    stack: list[int] = []
    memo: dict[int, int] = {}
    root = _LEAF

    def new_node(items: list[int]) -> int:
        parts.append([i for i in items if i >= 0])
        leaves.append(sum(1 for i in items if i < 0))
        return len(parts) - 1

    end = len(data)
    pos = count = 0
    try:
        while True:
            count += 1
            if count > max_objects:
                raise DataFormatError(
                    f"{source}: refusing the pickle: more than {max_objects:,} opcodes"
                )
            if pos >= end:
                raise ValueError("it ends before its STOP opcode")
            op = _OPS.get(data[pos])
            if op is None:
                raise ValueError(f"unknown opcode 0x{data[pos]:02x} at byte {pos}")
            pos += 1
            start = pos
            if op.arg > 0:
                pos += op.arg
            elif op.arg == pickletools.UP_TO_NEWLINE:
                for _ in range(op.lines):
                    nl = data.find(b"\n", pos)
                    if nl < 0:
                        raise ValueError(f"{op.name} at byte {start - 1} has no newline")
                    pos = nl + 1
            elif op.arg < 0:
                width, signed = _LENGTH_BYTES[op.arg]
                length = int.from_bytes(data[pos : pos + width], "little", signed=signed)
                if length < 0:
                    raise ValueError(f"{op.name} at byte {start - 1} has a negative length")
                pos += width + length
            if pos > end:
                raise ValueError(f"{op.name} at byte {start - 1} runs past the end")
            kind = op.kind
            if kind == _VALUE:
                stack.append(_LEAF)
            elif kind in (_PUT, _GET):
                text = data[start:pos]
                key = int(text) if op.arg < 0 else int.from_bytes(text, "little")
                if kind == _PUT:
                    memo[key] = stack[-1]
                else:
                    stack.append(memo[key])
            elif kind == _MEMOIZE:
                memo[len(memo)] = stack[-1]
            elif kind == _PUSH_MARK:
                stack.append(_MARK)
            elif kind == _DUP:
                stack.append(stack[-1])
            elif kind == _STOP:
                root = stack.pop()
                break
            elif kind in (_GENERIC, _MUTATE):
                sliced: list[int] = []
                if op.marked:
                    at = len(stack) - 1 - stack[::-1].index(_MARK)
                    sliced = stack[at + 1 :]
                    del stack[at:]
                if op.below > len(stack):
                    raise IndexError("the stack runs empty")
                below = stack[len(stack) - op.below :]
                del stack[len(stack) - op.below :]
                if kind == _MUTATE:
                    target = below[0]
                    if target < 0:
                        target = new_node([])
                    for item in below[1:] + sliced:
                        if item >= 0:
                            parts[target].append(item)
                        else:
                            leaves[target] += 1
                    stack.append(target)
                elif op.pushes:
                    inputs = below + sliced
                    stack.append(new_node(inputs) if inputs or op.container else _LEAF)
    except DataFormatError:
        raise
    except (ValueError, IndexError, KeyError) as exc:
        raise DataFormatError(f"{source}: not a valid pickle: {exc}") from None

    # Objects and depth reachable from the result, a shared node counted at each use:
    # post-order over the nodes (iterative), refusing cycles.
    if root < 0:
        return
    size = [0] * len(parts)
    depth = [0] * len(parts)
    state = bytearray(len(parts))  # 0 new, 1 in progress, 2 done
    todo = [root]
    while todo:
        n = todo[-1]
        if state[n] == 0:
            state[n] = 1
            for c in parts[n]:
                if state[c] == 1:
                    raise DataFormatError(f"{source}: refusing the pickle: it contains itself")
                if state[c] == 0:
                    todo.append(c)
            continue
        todo.pop()
        if state[n] == 2:
            continue
        total = 1 + leaves[n]
        deepest = 1 if leaves[n] else 0
        for c in parts[n]:
            total += size[c]
            deepest = max(deepest, depth[c])
            if total > max_objects:
                break
        size[n] = min(total, max_objects + 1)
        depth[n] = deepest + 1
        state[n] = 2
        if size[n] > max_objects:
            raise DataFormatError(
                f"{source}: refusing the pickle: it expands to more than {max_objects:,} "
                "objects (shared references counted at each use)"
            )
        if depth[n] > max_depth:
            raise DataFormatError(
                f"{source}: refusing the pickle: it nests deeper than {max_depth} levels"
            )


def load_cifar_pickle(
    data: bytes,
    source: str = "<bytes>",
    *,
    max_objects: int = MAX_PICKLE_OBJECTS,
    max_depth: int = MAX_PICKLE_DEPTH,
) -> Any:
    """Unpickle a CIFAR-10 batch safely (Python 2 pickles: ``encoding="bytes"``).

    Args:
        data: the file content.
        source: a name for it (usually its path), used in error messages.
        max_objects: the most objects it may make, a shared reference counted at each use.
        max_depth: the deepest nesting allowed.

    Returns:
        The unpickled object; dict keys written by Python 2 come back as bytes.

    Raises:
        DataFormatError: the pickle names a global outside the allowed few (e.g.
            ``os.system``), would make more than ``max_objects`` objects or nest deeper
            than ``max_depth``, or is not a valid pickle.
    """
    _scan_pickle(data, source, max_objects, max_depth)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataFormatError(f"{source}: unsafe or invalid pickle: {exc}") from exc
    except Exception as exc:  # a corrupt pickle can raise nearly anything; name the file
        raise DataFormatError(f"{source}: not a valid pickle: {type(exc).__name__}: {exc}") from exc


def _as_str_keys(obj: Any, source: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _get(d: dict[str, Any], key: str, source: str) -> Any:
    if key not in d:
        present = excerpt(", ".join(repr(k) for k in sorted(d)) or "none", quote=False)
        raise DataFormatError(f"{source}: missing key b{key!r} (keys present: {present})")
    return d[key]


def parse_batch(raw: bytes, source: str) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Decode one batch file: returns uint8 (N, 3072) images and int64 (N,) labels.

    Raises:
        DataFormatError: unsafe pickle, missing key, data not uint8 rows of 3072 values,
            labels not integers in 0..9, or image and label counts that differ.
    """
    d = _as_str_keys(load_cifar_pickle(raw, source), source)
    data = _get(d, "data", source)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(f"{source}: b'data' must be a uint8 NumPy array, got {kind}")
    if (
        data.ndim not in (1, 2)
        or data.size % PIXELS
        or (data.ndim == 2 and data.shape[1] != PIXELS)
    ):
        raise DataFormatError(
            f"{source}: b'data' has shape {data.shape} ({data.size} values): expected "
            f"(N, {PIXELS}), each row 32x32 pixels x 3 colour planes; {data.size} is "
            + ("" if data.size % PIXELS == 0 else "not ")
            + f"a multiple of {PIXELS}"
        )
    data = data.reshape(-1, PIXELS)
    raw_labels = _get(d, "labels", source)
    if not isinstance(raw_labels, list | tuple | np.ndarray):
        raise DataFormatError(
            f"{source}: b'labels' must be a list of integers, got {type(raw_labels).__name__}"
        )
    if not isinstance(raw_labels, np.ndarray):
        # Check the elements before NumPy walks them: a nested list would be expanded.
        for v in raw_labels:
            if not isinstance(v, int) or isinstance(v, bool):
                raise DataFormatError(
                    f"{source}: b'labels' must be a list of integers, got a "
                    f"{type(v).__name__} among them"
                )
    try:
        labels = np.asarray(raw_labels) if len(raw_labels) else np.zeros(0, np.int64)
    except (ValueError, TypeError) as exc:
        raise DataFormatError(f"{source}: b'labels' must be a list of integers: {exc}") from exc
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataFormatError(
            f"{source}: b'labels' must be a list of integers, got {labels.dtype} "
            f"values of shape {labels.shape}"
        )
    if len(labels) != len(data):
        raise DataFormatError(
            f"{source}: image/label count mismatch: {len(data)} images in b'data' but "
            f"{len(labels)} labels in b'labels'"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= len(CIFAR10_CLASSES)))
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(
            f"{source}: label {int(labels[i])} at index {i} is outside 0..9 "
            f"({bad.size} bad labels in all)"
        )
    return data, labels.astype(np.int64)


def parse_meta(raw: bytes, source: str) -> tuple[str, ...]:
    """Decode ``batches.meta``: the 10 class names (bytes in the file) as str."""
    d = _as_str_keys(load_cifar_pickle(raw, source), source)
    names = _get(d, "label_names", source)
    if (
        not isinstance(names, list)
        or len(names) != len(CIFAR10_CLASSES)
        or not all(isinstance(n, bytes | str) for n in names)
    ):
        raise DataFormatError(f"{source}: b'label_names' must be a list of 10 names")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)


def _from_folder(folder: Path, names: Iterable[str]) -> dict[str, tuple[bytes, str]]:
    """Read the named files of ``folder`` that exist: name -> (content, path shown)."""
    out: dict[str, tuple[bytes, str]] = {}
    for name in names:
        path = folder / name
        if path.is_file():
            _check_size(path.stat().st_size, str(path))
            out[name] = (path.read_bytes(), str(path))
    return out


def _check_size(size: int, source: str) -> None:
    if size > MAX_BATCH_BYTES:
        raise DataFormatError(
            f"{source}: {size:,} bytes, more than any CIFAR-10 batch "
            f"(the limit is {MAX_BATCH_BYTES:,}); not reading it"
        )


def check_archive_member(member: tarfile.TarInfo, count: int, archive: Path) -> None:
    """Refuse the ``count``-th (1-based) entry of a tarball when it or the count is too large.

    Called for each entry as it is read, before its data is: so a huge member in a small
    compressed archive is refused without decompressing it.
    """
    if count > MAX_ARCHIVE_MEMBERS:
        raise DataFormatError(
            f"{archive}: more than {MAX_ARCHIVE_MEMBERS} entries; not a CIFAR-10 archive"
        )
    _check_size(member.size, f"{archive}:{excerpt(member.name)}")


def _from_archive(archive: Path, names: Iterable[str]) -> dict[str, tuple[bytes, str]]:
    """Read the named files of ``cifar-10-batches-py/`` inside the official tarball.

    One sequential pass over the gzip stream; nothing is written to disk.
    """
    wanted = {f"{BATCH_FOLDER}/{name}": name for name in names}
    out: dict[str, tuple[bytes, str]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for count, member in enumerate(tar, start=1):
                check_archive_member(member, count, archive)
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is not None:
                    out[name] = (handle.read(member.size), f"{archive}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{archive}: cannot read the archive: {exc}") from exc
    return out


class CIFAR10(LabelledImages):
    """CIFAR-10: 32x32 colour images in 10 classes (50,000 training, 10,000 test).

    Attributes:
        images: uint8; shape (N, 3072) for ``layout="flat"`` (the file's order: R plane,
            G plane, B plane, each row-major), (N, 3, 32, 32) for ``"chw"``, (N, 32, 32, 3)
            for ``"hwc"``. ``flat[i, c*1024 + h*32 + w] == chw[i, c, h, w] == hwc[i, h, w, c]``.
        labels: int64 (N,), in 0..9.
        classes: the 10 class names, from ``batches.meta`` (the official names if absent).
        layout, train: as passed.
        source: the folder or archive read.

    Files are looked for in ``root``, ``root/cifar-10-batches-py`` and a
    ``cifar-10-python.tar.gz`` in ``root`` (read directly, without extracting); with
    ``root=None``, in ``$GRAPHGRAD_DATA/cifar10`` and ``$GRAPHGRAD_DATA`` (or
    ``~/.cache/graphgrad/cifar10``), each the same three ways.
    """

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    classes: tuple[str, ...]
    layout: Layout
    train: bool
    source: Path

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        train: bool = True,
        layout: Layout = "flat",
    ) -> None:
        """Read one split.

        Raises:
            ValueError: unknown ``layout``.
            DatasetNotFoundError: the batch files are in none of the places searched.
            DataFormatError: a malformed or unsafe batch file; the message names it.
        """
        if layout not in _LAYOUTS:
            raise ValueError(f"CIFAR10: layout must be one of {_LAYOUTS}, got {layout!r}")
        batches = TRAIN_BATCHES if train else TEST_BATCHES
        source, files = self._locate(root, batches)
        parts = [parse_batch(*files[name]) for name in batches]
        flat = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        self.labels = np.concatenate([p[1] for p in parts])
        self.classes = parse_meta(*files[META_FILE]) if META_FILE in files else CIFAR10_CLASSES
        self.images = to_layout(flat, layout)
        self.layout = layout
        self.train = train
        self.source = source

    @staticmethod
    def _locate(
        root: str | os.PathLike[str] | None, batches: tuple[str, ...]
    ) -> tuple[Path, dict[str, tuple[bytes, str]]]:
        names = (*batches, META_FILE)
        tried: list[str] = []
        for folder in search_folders(root, "cifar10"):
            for candidate in (folder, folder / BATCH_FOLDER):
                present = [n for n in batches if (candidate / n).is_file()]
                if len(present) == len(batches):
                    return candidate, _from_folder(candidate, names)
                missing = [n for n in batches if n not in present]
                tried.append(f"  {candidate}: no {', '.join(missing)}")
            archive = folder / ARCHIVE_NAME
            if archive.is_file():
                files = _from_archive(archive, names)
                missing = [n for n in batches if n not in files]
                if not missing:
                    return archive, files
                tried.append(f"  {archive}: no {BATCH_FOLDER}/{', '.join(missing)}")
            else:
                tried.append(f"  {archive}: no such file")
        where = "\n".join(tried)
        raise DatasetNotFoundError(
            f"CIFAR-10 files not found. Looked in:\n{where}\n"
            f"Get them with `graphgrad download cifar10`, or give the folder that holds "
            f"{BATCH_FOLDER} or {ARCHIVE_NAME}: root= in Python, --data-root on the command "
            f"line, or {ENV_VAR}."
        )

    def _flat_images(self) -> NDArray[np.uint8]:
        return self.images if self.layout == "flat" else to_layout(self.images, "flat")

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"CIFAR10({split}, {len(self)} images, layout={self.layout!r}, from {self.source})"


def to_layout(images: NDArray[np.uint8], layout: Layout) -> NDArray[np.uint8]:
    """Convert CIFAR images between layouts; the input layout is inferred from its shape.

    Args:
        images: (N, 3072), (N, 3, 32, 32) or (N, 32, 32, 3).
        layout: ``"flat"`` -> (N, 3072), ``"chw"`` -> (N, 3, 32, 32), ``"hwc"`` ->
            (N, 32, 32, 3). The result is C-contiguous (a view when no copy is needed).
    """
    n = len(images)
    if images.shape[1:] == (PIXELS,):
        chw = images.reshape(n, 3, SIDE, SIDE)
    elif images.shape[1:] == (3, SIDE, SIDE):
        chw = images
    elif images.shape[1:] == (SIDE, SIDE, 3):
        chw = images.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"to_layout: not a batch of CIFAR images: shape {images.shape}")
    if layout == "flat":
        return np.ascontiguousarray(chw).reshape(n, PIXELS)
    if layout == "chw":
        return np.ascontiguousarray(chw)
    if layout == "hwc":
        return np.ascontiguousarray(chw.transpose(0, 2, 3, 1))
    raise ValueError(f"to_layout: layout must be one of {_LAYOUTS}, got {layout!r}")
