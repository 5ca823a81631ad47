"""Checkpoints: weights in safetensors, everything else in JSON, written atomically, verified.

A checkpoint is a directory::

    model.safetensors       the parameters, named as ``model.named_parameters()`` (``0.weight``
                            ...), float arrays in PyTorch's layout (Linear weight (out, in)):
                            ``torch.nn.Sequential.load_state_dict(safetensors.torch.load_file(..))``
                            loads it as is
    optimizer.safetensors   the optimiser's per-parameter arrays (momentum, Adam's m and v),
                            named ``<parameter name>/<entry>``
    checkpoint.json         epoch, step, optimiser type, hyper-parameters and step counts, the
                            seeds, the resolved config, the history so far, library versions,
                            and the SHA-256 and size of both files

The directory is written under a temporary name beside its final one and renamed into place
when complete, so a checkpoint that exists is whole; an interrupted save leaves at most a
``.tmp`` folder, which the next save removes. On load, each file's SHA-256 is checked against
``checkpoint.json``; a mismatch raises :class:`CheckpointError` naming the file.

Training runs keep their checkpoints in ``<run>/checkpoints/epoch-NNNN``;
:func:`latest_checkpoint` finds the newest.
"""

from __future__ import annotations

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

from ._atomic import atomic_write_bytes, atomic_write_text, fsync_directory, sha256_file
from ._blas import blas, get_num_threads
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
VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


class CheckpointError(GraphgradError, ValueError):
    """A checkpoint is missing, corrupt, or does not fit; the message names the file."""


def _safetensors_numpy() -> Any:
    try:
        import safetensors.numpy as stn
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "checkpoints need the 'safetensors' package: pip install 'graphgrad[train]'"
        ) from None
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
    return out


# ------------------------------------------------------------------------- weights


def save_weights(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata_: Mapping[str, str] | None = None,
) -> None:
    """Write ``name -> array`` to a safetensors file, atomically."""
    stn = _safetensors_numpy()
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
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
        weights: parameter name -> array (from ``model.safetensors``).
        optimizer: the optimiser's state dict (``Optimizer.load_state_dict`` takes it), or
            None if none was saved. Indices follow the order of ``param_names``.
        meta: the whole of ``checkpoint.json``.
    """

    path: Path
    weights: dict[str, np.ndarray]
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

    Returns:
        The directory.
    """
    final = Path(directory)
    parent = final.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{final}: directory {parent} does not exist")
    tmp = parent / f".{final.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        named = list(model.named_parameters())
        save_weights(tmp / MODEL_FILE, {n: p.data for n, p in named}, {"format": FORMAT})
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "epoch": int(epoch),
            "step": int(step),
            "param_names": [n for n, _ in named],
            "shapes": {n: list(p.shape) for n, p in named},
            "dtype": str(named[0][1].data.dtype) if named else "float32",
        }
        files = [MODEL_FILE]
        if optimizer is not None:
            meta["optimizer"] = _save_optimizer(tmp / OPTIMIZER_FILE, optimizer, named)
            files.append(OPTIMIZER_FILE)
        meta.update(extra or {})
        meta["versions"] = library_versions()
        meta["files"] = {
            f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size} for f in files
        }
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


def _save_optimizer(path: Path, optimizer: Any, named: list[tuple[str, Any]]) -> dict[str, Any]:
    names = {id(p): n for n, p in named}
    sd = optimizer.state_dict()
    arrays: dict[str, np.ndarray] = {}
    steps: dict[str, int] = {}
    for i, entry in sd["state"].items():
        pname = names.get(id(optimizer.params[i]), f"#{i}")
        for k, v in entry.items():
            if isinstance(v, np.ndarray):
                arrays[f"{pname}/{k}"] = v
            else:
                steps[f"{pname}/{k}"] = int(v)
    save_weights(path, arrays, {"format": FORMAT})
    return {"type": sd["type"], "hyper": sd["hyper"], "scalars": steps}


def _read_meta(path: Path) -> dict[str, Any]:
    jpath = path / CHECKPOINT_JSON
    if not jpath.is_file():
        raise CheckpointError(f"{jpath}: no such file (not a checkpoint directory?)")
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{jpath}: not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{jpath}: not a graphgrad checkpoint (format {FORMAT!r} expected)")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{jpath}: checkpoint format version {meta.get('version')!r}, this graphgrad "
            f"reads version {VERSION}"
        )
    return meta


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify a checkpoint directory (or the newest one of a run directory).

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
    weights = load_weights(cdir / MODEL_FILE)
    names = meta.get("param_names", [])
    if sorted(names) != sorted(weights):
        raise CheckpointError(
            f"{cdir / MODEL_FILE}: tensors {sorted(weights)} do not match the parameters "
            f"recorded in {CHECKPOINT_JSON}: {sorted(names)}"
        )
    optimizer = None
    if "optimizer" in meta and OPTIMIZER_FILE in files:
        optimizer = _load_optimizer(cdir / OPTIMIZER_FILE, meta["optimizer"], names)
    return Checkpoint(cdir, weights, optimizer, meta)


def _load_optimizer(path: Path, info: dict[str, Any], names: list[str]) -> dict[str, Any]:
    arrays = load_weights(path)
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
