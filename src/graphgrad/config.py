"""Run configuration: one TOML file describes an experiment completely.

A file has four tables; every key is optional and takes the default shown::

    name = "fashion-mlp"        # a label for the run

    [model]
    kind = "mlp"                # "mlp" or "linear" (no hidden layers)
    hidden = [256, 256]         # H_1, H_2, ... (ignored for "linear")
    activation = "relu"         # identity, sigmoid, tanh, relu, leaky_relu[:slope], elu[:alpha]
    init = "auto"               # auto (He if ReLU-like, else LeCun), he, lecun, xavier, normal
    init_std = 0.0              # σ for init = "normal"
    seed = 0                    # the generator the weights are drawn from

    [data]
    dataset = "fashion-mnist"   # fashion-mnist, mnist, cifar10; toys: two_moons, circles,
                                # xor, blobs, spiral
    root = ""                   # folder with the files ("" = the usual places)
    seed = 0                    # shuffling: epoch e visits default_rng([seed, e]).permutation
    train_subset = 0            # use only this many training samples (0 = all)
    test_subset = 0             # evaluate on only this many test samples (0 = all)
    val_fraction = 0.0          # share of the training set held out for per-epoch evaluation
    toy_samples = 1000          # samples drawn for a toy data set

    [optim]
    name = "adam"               # "adam" or "sgd"
    lr = 0.001
    momentum = 0.9              # SGD only
    nesterov = false            # SGD only
    weight_decay = 0.0
    betas = [0.9, 0.999]        # Adam only
    eps = 1e-8                  # Adam only

    [train]
    epochs = 15
    batch_size = 128
    eval_batch_size = 1000
    lr_schedule = "constant"    # or "cosine": lr · (1 + cos(π t / T)) / 2 at step t of T
    dtype = "float32"           # or "float64"
    keep_checkpoints = 1        # how many epoch checkpoints to keep

Unknown tables or keys, and values of the wrong type, raise :class:`ConfigError` naming the
file and the field. :meth:`RunConfig.to_toml` writes the resolved configuration (every key,
defaults filled in); reading it back gives an equal configuration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GraphgradError

__all__ = [
    "DATASETS",
    "LR_SCHEDULES",
    "TOY_DATASETS",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
]

#: Image data sets (files read from disk).
IMAGE_DATASETS = ("fashion-mnist", "mnist", "cifar10")
#: Toy data sets, drawn from ``data.seed`` (2-D points in several classes).
TOY_DATASETS = ("two_moons", "circles", "xor", "blobs", "spiral")
DATASETS = IMAGE_DATASETS + TOY_DATASETS
#: Learning-rate schedules (see :func:`graphgrad.train.lr_factor`).
LR_SCHEDULES = ("constant", "cosine")


class ConfigError(GraphgradError, ValueError):
    """A configuration file or value is invalid; the message names the file and field."""


@dataclass(frozen=True)
class ModelConfig:
    """The architecture and its initialisation."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    init: str = "auto"
    init_std: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """The data set, its subset and the shuffling seed."""

    dataset: str = "fashion-mnist"
    root: str = ""
    seed: int = 0
    train_subset: int = 0
    test_subset: int = 0
    val_fraction: float = 0.0
    toy_samples: int = 1000


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser and its hyper-parameters."""

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    epochs: int = 15
    batch_size: int = 128
    eval_batch_size: int = 1000
    lr_schedule: str = "constant"
    dtype: str = "float32"
    keep_checkpoints: int = 1


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run: model, data, optimiser, training loop."""

    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists): JSON- and TOML-ready."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<config>") -> RunConfig:
        """Build and validate a configuration from a nested mapping (a parsed TOML file).

        Raises:
            ConfigError: unknown table or key, wrong type or invalid value; the message
                names ``source`` and the field.
        """
        top = dict(data)
        sections: dict[str, Any] = {}
        for fld in dataclasses.fields(cls):
            if fld.name == "name":
                continue
            sub = top.pop(fld.name, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{source}: [{fld.name}] must be a table, got {sub!r}")
            sections[fld.name] = _build(_SECTION_TYPES[fld.name], sub, source, fld.name)
        name = top.pop("name", "")
        if not isinstance(name, str):
            raise ConfigError(f"{source}: name must be a string, got {name!r}")
        if top:
            known = ", ".join(["name", *_SECTION_TYPES])
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(sorted(top))} at the top level "
                f"(known: {known})"
            )
        cfg = cls(name=name, **sections)
        cfg.validate(source)
        return cfg

    def to_toml(self) -> str:
        """The resolved configuration as TOML text (every key written)."""
        d = self.to_dict()
        lines = [f"name = {_toml_value(d.pop('name'))}"]
        for section, values in d.items():
            lines.append("")
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        return "\n".join(lines) + "\n"

    def with_overrides(
        self, overrides: Mapping[str, Any], source: str = "<overrides>"
    ) -> RunConfig:
        """A copy with ``{"section.key": value}`` replaced (``None`` values are skipped)."""
        d = self.to_dict()
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            if not key:
                d[section] = value
            else:
                d.setdefault(section, {})[key] = value
        return RunConfig.from_dict(d, source)

    def diff(self, other: RunConfig) -> list[str]:
        """``"section.key: mine -> theirs"`` for every field that differs."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a) if a.get(k) != b.get(k)]

    # ------------------------------------------------------------------ validation
    def validate(self, source: str = "<config>") -> None:
        """Check values (not only types).

        Raises:
            ConfigError: naming ``source`` and the field at fault.
        """
        from .nn.activations import get_activation
        from .nn.init import SCHEMES

        def bad(fld: str, why: str) -> ConfigError:
            return ConfigError(f"{source}: {fld} {why}")

        m, d, o, t = self.model, self.data, self.optim, self.train
        if m.kind not in ("mlp", "linear"):
            raise bad("model.kind", f"must be 'mlp' or 'linear', got {m.kind!r}")
        if any(h < 1 for h in m.hidden):
            raise bad("model.hidden", f"sizes must be >= 1, got {list(m.hidden)}")
        try:
            get_activation(m.activation)
        except ValueError as e:
            raise bad("model.activation", f"is invalid: {e}") from None
        if m.init not in (*SCHEMES, "normal"):
            raise bad("model.init", f"must be one of {[*SCHEMES, 'normal']}, got {m.init!r}")
        if m.init == "normal" and not m.init_std > 0:
            raise bad("model.init_std", "must be > 0 when model.init = 'normal'")
        if d.dataset not in DATASETS:
            raise bad("data.dataset", f"must be one of {list(DATASETS)}, got {d.dataset!r}")
        for key in ("seed", "train_subset", "test_subset"):
            if getattr(d, key) < 0:
                raise bad(f"data.{key}", f"must be >= 0, got {getattr(d, key)}")
        if m.seed < 0:
            raise bad("model.seed", f"must be >= 0, got {m.seed}")
        if not 0.0 <= d.val_fraction < 1.0:
            raise bad("data.val_fraction", f"must be in [0, 1), got {d.val_fraction}")
        if d.toy_samples < 4:
            raise bad("data.toy_samples", f"must be >= 4, got {d.toy_samples}")
        if o.name not in ("adam", "sgd"):
            raise bad("optim.name", f"must be 'adam' or 'sgd', got {o.name!r}")
        if not (o.lr > 0 and math.isfinite(o.lr)):
            raise bad("optim.lr", f"must be a finite number > 0, got {o.lr}")
        if not 0.0 <= o.momentum < 1.0:
            raise bad("optim.momentum", f"must be in [0, 1), got {o.momentum}")
        if o.weight_decay < 0:
            raise bad("optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
        if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
            raise bad("optim.betas", f"must be two numbers in [0, 1), got {list(o.betas)}")
        if not o.eps > 0:
            raise bad("optim.eps", f"must be > 0, got {o.eps}")
        for key in ("epochs", "batch_size", "eval_batch_size", "keep_checkpoints"):
            if getattr(t, key) < 1:
                raise bad(f"train.{key}", f"must be >= 1, got {getattr(t, key)}")
        if t.lr_schedule not in LR_SCHEDULES:
            raise bad(
                "train.lr_schedule", f"must be one of {list(LR_SCHEDULES)}, got {t.lr_schedule!r}"
            )
        if t.dtype not in ("float32", "float64"):
            raise bad("train.dtype", f"must be 'float32' or 'float64', got {t.dtype!r}")


_SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


def _describe(value: Any) -> str:
    from ._quote import excerpt

    return f"{excerpt(repr(value), quote=False)} ({type(value).__name__})"


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """Check/convert a TOML value to the field's annotated type."""
    if annotation == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_describe(value)}")
        return value
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_describe(value)}")
        return value
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_describe(value)}")
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {_describe(value)}")
        return float(value)
    if annotation.startswith("tuple["):
        inner = "int" if "int" in annotation else "float"
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {_describe(value)}")
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    raise AssertionError(annotation)  # pragma: no cover


def _build(cls: type, values: Mapping[str, Any], source: str, section: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} in [{section}] "
            f"(known: {', '.join(fields)})"
        )
    kwargs = {
        k: _coerce(v, str(fields[k].type), f"{source}: {section}.{k}") for k, v in values.items()
    }
    return cls(**kwargs)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)  # shortest round-trip form, e.g. 0.001 or 1e-08: valid TOML floats
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: same escapes as JSON
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read and validate a TOML run configuration.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not valid TOML, or an invalid field; the message names the file.
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text: {e}") from None
    return RunConfig.from_dict(raw, str(p))
