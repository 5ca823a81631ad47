"""Checkpoints: weights in safetensors, everything else in JSON, written atomically, verified.

A checkpoint is a directory::

    model.safetensors       the parameters, named as ``model.named_parameters()`` (``0.weight``
                            ...), float arrays in PyTorch's layout (Linear weight (out, in)):
                            ``torch.nn.Sequential.load_state_dict(safetensors.torch.load_file(..))``
                            loads it as is
    optimizer.safetensors   the optimiser's per-parameter arrays (momentum, Adam's m and v),
                            named ``<parameter name>/<entry>``; ``checkpoint.json`` records the
                            optimiser's parameters, by name, in its own order
                            (``optimizer.param_names``), so that an optimiser over a subset
                            of the model's parameters, or in another order, resumes exactly
    checkpoint.json         epoch, step, optimiser type, hyper-parameters and step counts, the
                            device the model was on (``"cpu"``, ``"cuda:0"`` ...), the
                            seeds, the resolved config, the history so far, library versions,
                            the SHA-256 and size of both files, and ``meta_sha256``: the
                            SHA-256 of all its other entries (canonical JSON), so that an
                            edit of checkpoint.json itself is detected too

The directory is written under a temporary name beside its final one and renamed into place
when complete, so a checkpoint that exists is whole; an interrupted save leaves at most a
``.tmp`` folder, which the next save removes. On load, ``checkpoint.json``'s own digest and
each file's SHA-256 are checked, and the entries are validated (epoch and step >= 0, shapes
that match the weights); a mismatch raises :class:`CheckpointError` naming the file.
(Version 1 checkpoints, written before ``meta_sha256`` existed, are read without it; one
that holds an entry only version 2 writes, ``meta_sha256`` among them, is refused as edited.)

Devices: a model on a GPU (or any array API device) is saved through host memory; the files
are the same as from the CPU. :func:`load_checkpoint` gives NumPy arrays unless
``map_location`` names a device; ``model.load_state_dict`` and ``optimizer.load_state_dict``
copy onto the device of the model they load into, so a checkpoint written on one device is
resumed on any other.

Training runs keep their checkpoints in ``<run>/checkpoints/epoch-NNNN``;
:func:`latest_checkpoint` finds the newest.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import _backend
from ._atomic import atomic_write_bytes, atomic_write_text, fsync_directory, sha256_file
from ._blas import blas, find_onednn, get_num_threads, layout
from ._extras import require_extra
from .errors import GraphgradError

__all__ = [
    "CHECKPOINT_JSON",
    "FORMAT",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "Checkpoint",
    "CheckpointError",
    "latest_checkpoint",
    "library_versions",
    "load_checkpoint",
    "load_weights",
    "prune_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_weights",
]

FORMAT = "graphgrad-checkpoint"
VERSION = 2
#: Versions this module reads (1: no ``meta_sha256``).
READABLE_VERSIONS = (1, 2)
#: Largest ``checkpoint.json`` read (the history of a long run is well under this).
MAX_META_BYTES = 64 << 20
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


class CheckpointError(GraphgradError, ValueError):
    """A checkpoint is missing, corrupt, or does not fit; the message names the file."""


def _safetensors_numpy() -> Any:
    require_extra("checkpoints", ["safetensors"])
    import safetensors.numpy as stn

    return stn


def library_versions() -> dict[str, str]:
    """Versions of Python, NumPy, graphgrad and the optional packages that are installed."""
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("graphgrad", "safetensors", "tqdm", "matplotlib", "torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out["platform"] = platform.platform()
    # where the matrix products ran: MKL rounds differently from NumPy's OpenBLAS
    out["blas"] = blas()
    out["threads"] = str(get_num_threads())  # a BLAS's sums may round differently per count
    out["gemm_layout"] = layout()  # linear's products as x @ W.T or (W @ x.T).T: rounding too
    if out["blas"] == "onednn":  # which products its matmul primitive took (it rounds apart)
        out["onednn_matmul"] = find_onednn()["matmul"]
    return out


# ------------------------------------------------------------------------- weights


def save_weights(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata_: Mapping[str, str] | None = None,
) -> None:
    """Write ``name -> array`` to a safetensors file, atomically (arrays on a device are
    copied to host memory first). 0-d arrays keep their shape ``()``."""
    stn = _safetensors_numpy()
    # np.require, not np.ascontiguousarray: that one makes a 0-d array 1-d (shape (1,))
    arrays = {k: np.require(_backend.to_numpy(v), requirements="C") for k, v in tensors.items()}
    data = stn.save(arrays, metadata=dict(metadata_) if metadata_ else None)
    atomic_write_bytes(path, data)


def load_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a safetensors file into ``name -> array``.

    Raises:
        CheckpointError: the file is missing or not a valid safetensors file.
    """
    stn = _safetensors_numpy()
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file")
    try:
        return dict(stn.load(p.read_bytes()))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{p}: not a valid safetensors file: {e}") from None


# ----------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """A loaded, verified checkpoint.

    Attributes:
        path: its directory.
        weights: parameter (and buffer) name -> array (from ``model.safetensors``): NumPy
            arrays, or arrays on the device given to :func:`load_checkpoint` as
            ``map_location``.
        optimizer: the optimiser's state dict (``Optimizer.load_state_dict`` takes it), or
            None if none was saved. Indices are the saved optimiser's own parameter indices
            (its ``params`` order, recorded in ``meta["optimizer"]["param_names"]``); for
            checkpoints written before that was recorded, the order of ``param_names``.
        meta: the whole of ``checkpoint.json``.
    """

    path: Path
    weights: dict[str, Any]
    optimizer: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        """Epochs completed when it was saved."""
        return int(self.meta.get("epoch", 0))

    @property
    def step(self) -> int:
        """Optimiser steps taken when it was saved."""
        return int(self.meta.get("step", 0))

    @property
    def device(self) -> str:
        """The device the model was on when saved (``"cpu"`` for checkpoints from before
        devices were recorded)."""
        d = self.meta.get("device", "cpu")
        return d if isinstance(d, str) else "cpu"

    @property
    def config(self) -> dict[str, Any] | None:
        """The run's resolved configuration, if saved."""
        cfg = self.meta.get("config")
        return cfg if isinstance(cfg, dict) else None


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: Any,
    optimizer: Any = None,
    *,
    epoch: int = 0,
    step: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory (see the module doc), replacing one that exists.

    Args:
        directory: the checkpoint's directory; its parent must exist.
        model: a :class:`~graphgrad.nn.Module`.
        optimizer: an :class:`~graphgrad.optim.Optimizer` over the model's parameters, or None.
        epoch, step: training progress.
        extra: more JSON-able entries for ``checkpoint.json`` (config, seeds, history ...).
            NumPy scalars and arrays in them are stored as Python numbers and lists. The
            entries save_checkpoint writes itself (:data:`RESERVED_KEYS`: ``epoch``, ``step``,
            ``param_names`` ...) are refused.

    Returns:
        The directory.

    Raises:
        ValueError: ``extra`` holds a reserved key (nothing is written).
        TypeError: an ``extra`` entry is not JSON-able (nothing is written).
    """
    extra_entries = _check_extra(extra)
    final = Path(directory)
    parent = final.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{final}: directory {parent} does not exist")
    tmp = parent / f".{final.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        named = list(model.named_parameters())
        buffers = list(model.named_buffers()) if hasattr(model, "named_buffers") else []
        tensors = {n: p.data for n, p in named}
        tensors.update(buffers)
        save_weights(tmp / MODEL_FILE, tensors, {"format": FORMAT})
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "epoch": int(epoch),
            "step": int(step),
            "param_names": [n for n, _ in named],
            "shapes": {n: list(a.shape) for n, a in tensors.items()},
            "dtype": _backend.dtype_name(named[0][1].data.dtype) if named else "float32",
            "device": str(model.device) if hasattr(model, "device") else "cpu",
        }
        if buffers:
            meta["buffer_names"] = [n for n, _ in buffers]
        files = [MODEL_FILE]
        if optimizer is not None:
            meta["optimizer"] = _save_optimizer(tmp / OPTIMIZER_FILE, optimizer, named)
            files.append(OPTIMIZER_FILE)
        meta.update(extra_entries)
        meta["versions"] = library_versions()
        meta["files"] = {
            f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size} for f in files
        }
        meta["meta_sha256"] = meta_digest(meta)
        atomic_write_text(tmp / CHECKPOINT_JSON, json.dumps(meta, indent=1) + "\n")
        fsync_directory(tmp)
        if final.exists():
            old = parent / f".{final.name}.{secrets.token_hex(4)}.old"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        fsync_directory(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


#: The ``checkpoint.json`` entries :func:`save_checkpoint` writes itself; ``extra`` may not
#: hold them.
RESERVED_KEYS = (
    "format",
    "version",
    "epoch",
    "step",
    "param_names",
    "shapes",
    "dtype",
    "device",
    "buffer_names",
    "optimizer",
    "versions",
    "files",
    "meta_sha256",
)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"an object of type {type(value).__name__} is not JSON-able")


def _check_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``extra`` as plain JSON values (NumPy scalars and arrays as numbers and lists), or an
    error naming the reserved or non-JSON-able keys."""
    if not extra:
        return {}
    reserved = [k for k in extra if k in RESERVED_KEYS]
    if reserved:
        raise ValueError(
            f"save_checkpoint: extra holds {', '.join(map(repr, reserved))}, reserved for the "
            f"entries save_checkpoint writes itself ({', '.join(RESERVED_KEYS)}); rename them "
            f"(epoch and step go in save_checkpoint's own arguments)"
        )
    out: dict[str, Any] = {}
    for k, v in extra.items():
        if not isinstance(k, str):
            raise TypeError(f"save_checkpoint: extra key {k!r:.60} is not a string")
        try:
            out[k] = json.loads(json.dumps(v, default=_json_default))
        except (TypeError, ValueError, RecursionError) as e:
            raise TypeError(
                f"save_checkpoint: extra[{k!r}] cannot be written as JSON: {e}"
            ) from None
    return out


def _save_optimizer(path: Path, optimizer: Any, named: list[tuple[str, Any]]) -> dict[str, Any]:
    names = {id(p): n for n, p in named}
    # the optimiser's own parameter order, by name ("#i": a parameter not in the model)
    order = [names.get(id(p), f"#{i}") for i, p in enumerate(optimizer.params)]
    sd = optimizer.state_dict()
    arrays: dict[str, np.ndarray] = {}
    steps: dict[str, int] = {}
    for i, entry in sd["state"].items():
        pname = order[i]
        for k, v in entry.items():
            if isinstance(v, np.ndarray):
                arrays[f"{pname}/{k}"] = v
            else:
                steps[f"{pname}/{k}"] = int(v)
    save_weights(path, arrays, {"format": FORMAT})
    return {"type": sd["type"], "hyper": sd["hyper"], "scalars": steps, "param_names": order}


def meta_digest(meta: Mapping[str, Any]) -> str:
    """SHA-256 of a checkpoint.json mapping without its ``meta_sha256`` entry, over the
    canonical JSON (sorted keys, no spaces): the same for any formatting of the file."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _nonneg_int(meta: Mapping[str, Any], key: str, jpath: Path) -> None:
    v = meta.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise CheckpointError(f"{jpath}: {key} must be an integer >= 0, got {v!r}")


#: Entries that only version 2 writes (``versions`` entries: library versions recorded since).
#: A version-1 file holding one of them is a version-2 file whose version was edited, which
#: would otherwise pass without its digest being checked.
_V2_ONLY = ("meta_sha256", "device", "buffer_names")
_V2_ONLY_VERSIONS = ("gemm_layout", "onednn_matmul")


def _check_version_1(meta: Mapping[str, Any], jpath: Path) -> None:
    """Refuse a ``"version": 1`` file that carries what only version 2 writes, or that lacks
    what version 1 always wrote (its files' SHA-256, the parameter names and shapes)."""
    versions = meta.get("versions")
    found = [k for k in _V2_ONLY if k in meta]
    if isinstance(versions, Mapping):
        found += [f"versions.{k}" for k in _V2_ONLY_VERSIONS if k in versions]
    if found:
        raise CheckpointError(
            f"{jpath}: says format version 1 but holds {', '.join(found)}, which only version 2 "
            f"writes (the file was edited or is corrupt); restore it as graphgrad wrote it"
        )
    kinds = {"files": dict, "param_names": list, "shapes": dict}
    missing = [k for k, kind in kinds.items() if not isinstance(meta.get(k), kind)]
    if missing:
        raise CheckpointError(
            f"{jpath}: a format version 1 checkpoint without {', '.join(missing)} (the file was "
            f"edited or is corrupt)"
        )


def _read_meta(path: Path) -> dict[str, Any]:
    jpath = path / CHECKPOINT_JSON
    if not jpath.is_file():
        raise CheckpointError(f"{jpath}: no such file (not a checkpoint directory?)")
    size = jpath.stat().st_size
    if size > MAX_META_BYTES:
        raise CheckpointError(f"{jpath}: {size:,} bytes, larger than any checkpoint.json")
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{jpath}: not valid JSON: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{jpath}: not valid JSON: nested too deeply") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{jpath}: not a graphgrad checkpoint (format {FORMAT!r} expected)")
    version = meta.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:  # not true, not 1.0
        raise CheckpointError(
            f"{jpath}: checkpoint format version {version!r:.40}, this graphgrad "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if version == 1:
        _check_version_1(meta, jpath)
    else:
        recorded = meta.get("meta_sha256")
        if recorded != meta_digest(meta):
            raise CheckpointError(
                f"{jpath}: its content does not match its recorded digest meta_sha256 "
                f"(the file was edited or is corrupt)"
            )
    _nonneg_int(meta, "epoch", jpath)
    _nonneg_int(meta, "step", jpath)
    names = meta.get("param_names", [])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{jpath}: param_names must be a list of names")
    return meta


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | _backend.Device | None = None
) -> Checkpoint:
    """Read and verify a checkpoint directory (or the newest one of a run directory).

    Args:
        path: the checkpoint or run directory.
        map_location: put the weights and the optimiser's arrays on this device (``"cpu"``,
            ``"cuda"``, ``"array-api-strict"`` ...); None: NumPy arrays in host memory. (Loading
            into a model with ``load_state_dict`` copies onto the model's device anyway.)

    Raises:
        CheckpointError: no checkpoint there, invalid ``checkpoint.json``, a file whose
            SHA-256 or size differs from the one recorded, or an unreadable safetensors file.
    """
    cdir = resolve_checkpoint(path)
    meta = _read_meta(cdir)
    files = meta.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise CheckpointError(f"{cdir / CHECKPOINT_JSON}: no 'files' entry for {MODEL_FILE}")
    for name, info in files.items():
        if name not in (MODEL_FILE, OPTIMIZER_FILE) or not isinstance(info, dict):
            raise CheckpointError(
                f"{cdir / CHECKPOINT_JSON}: unexpected 'files' entry {name!r:.60} (expected "
                f"{MODEL_FILE} and {OPTIMIZER_FILE} with their sha256)"
            )
        fpath = cdir / name
        if not fpath.is_file():
            raise CheckpointError(f"{fpath}: missing (listed in {CHECKPOINT_JSON})")
        digest = sha256_file(fpath)
        if digest != info.get("sha256"):
            raise CheckpointError(
                f"{fpath}: SHA-256 mismatch: the file is {digest[:16]}..., "
                f"{CHECKPOINT_JSON} recorded {str(info.get('sha256'))[:16]}... "
                f"(the file was modified or is corrupt)"
            )
    dev = None if map_location is None else _backend.parse_device(map_location)
    weights = load_weights(cdir / MODEL_FILE)
    names = meta.get("param_names", [])
    buffer_names = meta.get("buffer_names", [])
    if not (isinstance(buffer_names, list) and all(isinstance(n, str) for n in buffer_names)):
        raise CheckpointError(f"{cdir / CHECKPOINT_JSON}: buffer_names must be a list of names")
    if sorted([*names, *buffer_names]) != sorted(weights):
        raise CheckpointError(
            f"{cdir / MODEL_FILE}: tensors {sorted(weights)} do not match the parameters "
            f"recorded in {CHECKPOINT_JSON}: {sorted(names)}"
        )
    shapes = meta.get("shapes")
    if isinstance(shapes, dict):
        for n, arr in weights.items():
            if shapes.get(n) == [] and arr.shape == (1,):  # a 0-d array saved as (1,) before
                weights[n] = arr = arr.reshape(())
            if shapes.get(n) != list(arr.shape):
                raise CheckpointError(
                    f"{cdir / CHECKPOINT_JSON}: shape of {n} recorded as {shapes.get(n)!r:.60}, "
                    f"but {MODEL_FILE} holds {list(arr.shape)}"
                )
    optimizer = None
    if "optimizer" in meta and OPTIMIZER_FILE in files:
        optimizer = _load_optimizer(cdir / OPTIMIZER_FILE, meta["optimizer"], names)
    if dev is not None and not dev.is_cpu:
        weights = {n: _backend.to_device(a, dev) for n, a in weights.items()}
        if optimizer is not None:
            for entry in optimizer["state"].values():
                for k, v in entry.items():
                    if isinstance(v, np.ndarray):
                        entry[k] = _backend.to_device(v, dev)
    return Checkpoint(cdir, weights, optimizer, meta)


def _load_optimizer(path: Path, info: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The optimiser's state dict, indexed by the saved optimiser's own parameter order
    (``info["param_names"]``; checkpoints from before it was recorded: the model's order)."""
    arrays = load_weights(path)
    order = info.get("param_names")
    if order is not None:
        if not (
            isinstance(order, list)
            and all(isinstance(n, str) for n in order)
            and len(set(order)) == len(order)
        ):
            raise CheckpointError(
                f"{path.parent / CHECKPOINT_JSON}: optimizer.param_names must be a list of "
                f"distinct names"
            )
        names = order
    index = {n: i for i, n in enumerate(names)}
    state: dict[int, dict[str, Any]] = {}

    def slot(key: str) -> tuple[int, str]:
        pname, _, entry = key.rpartition("/")
        if pname.startswith("#"):
            return int(pname[1:]), entry
        if pname not in index:
            raise CheckpointError(f"{path}: state {key!r} names no parameter of the model")
        return index[pname], entry

    for key, arr in arrays.items():
        i, entry = slot(key)
        state.setdefault(i, {})[entry] = arr
    for key, value in dict(info.get("scalars", {})).items():
        i, entry = slot(key)
        state.setdefault(i, {})[entry] = int(value)
    return {"type": info.get("type"), "hyper": info.get("hyper", {}), "state": state}


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest ``<run_dir>/checkpoints/epoch-NNNN`` directory, or None."""
    base = Path(run_dir) / "checkpoints"
    if not base.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for child in base.iterdir():
        m = _EPOCH_DIR.match(child.name)
        if m and child.is_dir() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), child)
    return best[1] if best else None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from a checkpoint directory, a run directory (its newest
    checkpoint) or a ``checkpoint.json`` / ``model.safetensors`` path inside one.

    Raises:
        CheckpointError: nothing that looks like a checkpoint there.
    """
    p = Path(path)
    if p.is_file() and p.name in (CHECKPOINT_JSON, MODEL_FILE, OPTIMIZER_FILE):
        p = p.parent
    if (p / CHECKPOINT_JSON).is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is not None:
        return latest
    raise CheckpointError(
        f"{p}: no checkpoint here (expected {CHECKPOINT_JSON}, or a run directory with "
        f"checkpoints/epoch-NNNN)"
    )


def prune_checkpoints(run_dir: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the ``keep`` newest epoch checkpoints of a run, and stale temp folders."""
    base = Path(run_dir) / "checkpoints"
    if not base.is_dir():
        return
    epochs = sorted(
        (int(m.group(1)), c)
        for c in base.iterdir()
        if (m := _EPOCH_DIR.match(c.name)) and c.is_dir()
    )
    for _, c in epochs[: max(0, len(epochs) - keep)]:
        shutil.rmtree(c, ignore_errors=True)
    for c in base.iterdir():
        if c.name.startswith(".") and (c.name.endswith(".tmp") or c.name.endswith(".old")):
            shutil.rmtree(c, ignore_errors=True)
