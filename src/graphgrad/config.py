"""Run configuration: one TOML file describes an experiment completely.

A file has four tables; every key is optional and takes the default shown::

    name = "fashion-mlp"        # a label for the run

    [model]
    kind = "mlp"                # "mlp" or "linear" (no hidden layers)
    hidden = [256, 256]         # H_1, H_2, ... (at least one for "mlp"; ignored for
                                # "linear", whose resolved configuration records [])
    activation = "relu"         # identity, sigmoid, tanh, relu, leaky_relu[:slope], elu[:alpha]
    init = "he"                 # he: σ = sqrt(2 / fan_in) for every layer (the recipe);
                                # auto: gain(activation) / sqrt(fan_in) (He if ReLU-like,
                                # LeCun otherwise and for the output layer); lecun, xavier,
                                # normal
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
    toy_samples = 1000          # samples drawn for a toy data set (4 .. 10,000,000)

    [optim]
    name = "adam"               # "adam" or "sgd"
    lr = 0.001
    momentum = 0.9              # SGD only
    nesterov = false            # SGD only; true needs momentum > 0
    weight_decay = 0.0
    betas = [0.9, 0.999]        # Adam only
    eps = 1e-8                  # Adam only

    [train]
    epochs = 15
    batch_size = 128
    eval_batch_size = 1000
    lr_schedule = "cosine"      # or "constant"; cosine: lr · (1 + cos(π t / T)) / 2 at step t
    dtype = "float32"           # or "float64"
    keep_checkpoints = 1        # a checkpoint is written after every epoch; the newest
                                # keep_checkpoints of them are kept, older ones deleted
    device = "cpu"              # where to train: cpu (NumPy), cuda or cuda:N (CuPy, the
                                # cuda extra), array-api-strict[:device1] (the portability
                                # check); a run may be resumed on another device

These defaults are the README's recipe for the image data sets (MLP 784-256-256-10, He
initialisation, Adam 1e-3, cosine schedule, 15 epochs: 89.9% on Fashion-MNIST). A toy data
set (``data.dataset`` one of :data:`TOY_DATASETS`) takes :data:`TOY_DEFAULTS` instead for
every key the file does not give: a small net, a larger rate, small batches.

Every field is checked where it is declared: its type, finiteness and range (or choices) sit
in the field's metadata, and :meth:`RunConfig.validate` walks all fields. Unknown tables or
keys, values of the wrong type, NaN/Inf and out-of-range values raise :class:`ConfigError`
naming the file and the field. :meth:`RunConfig.to_toml` writes the resolved configuration
(every key, defaults filled in); reading it back gives an equal configuration.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GraphgradError

__all__ = [
    "DATASETS",
    "DATASET_SHAPES",
    "DEVICE_PATTERN",
    "LR_SCHEDULES",
    "MAX_PARAMETERS",
    "TOY_DATASETS",
    "TOY_DEFAULTS",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "check_model_size",
    "load_config",
    "merge_overrides",
    "model_parameters",
    "read_config_file",
]

#: Image data sets (files read from disk).
IMAGE_DATASETS = ("fashion-mnist", "mnist", "cifar10")
#: Toy data sets, drawn from ``data.seed`` (2-D points in several classes).
TOY_DATASETS = ("two_moons", "circles", "xor", "blobs", "spiral")
DATASETS = IMAGE_DATASETS + TOY_DATASETS
#: Learning-rate schedules (see :func:`graphgrad.train.lr_factor`).
LR_SCHEDULES = ("constant", "cosine")
#: Input features D and classes T of each data set (for the model-size bound).
DATASET_SHAPES: dict[str, tuple[int, int]] = {
    "fashion-mnist": (784, 10),
    "mnist": (784, 10),
    "cifar10": (3072, 10),
    **{name: (2, 8) for name in TOY_DATASETS},  # at most 8 classes (an upper bound)
}
#: The most parameters a model may have (400 MB of float32 weights, 1.6 GB with Adam's state
#: and the gradients): a typo such as ``hidden = [100000000]`` is refused before allocation.
MAX_PARAMETERS = 100_000_000
#: Defaults of a toy data set, for every key the configuration does not give.
TOY_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"hidden": (32, 32)},
    "optim": {"lr": 0.03},
    "train": {"epochs": 20, "batch_size": 32, "eval_batch_size": 1000},
}


class ConfigError(GraphgradError, ValueError):
    """A configuration file or value is invalid; the message names the file and field."""


@dataclass(frozen=True)
class _Rule:
    """What a field accepts: choices, or a numeric range ``lo .. hi`` (bounds open or closed).

    For tuple fields the range applies to each item and ``length`` fixes the length.
    """

    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    length: int | None = None

    def describe(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        return f"in {left}{_num(self.lo, '-inf')}, {_num(self.hi, 'inf')}{right}"

    def accepts(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


def _num(v: float | None, missing: str) -> str:
    if v is None:
        return missing
    return f"{int(v):,}" if float(v).is_integer() and abs(v) >= 1e4 else f"{v:g}"


def _f(default: Any, **rule: Any) -> Any:
    """A dataclass field with its validation rule in the metadata."""
    return field(default=default, metadata={"rule": _Rule(**rule)})


_MAX_COUNT = 10_000_000  # batch sizes, samples, hidden units

#: The spellings ``train.device`` accepts (whether the device exists is checked when a run
#: starts, so that a configuration written on a GPU machine still reads on another one).
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d{1,3})?|array-api-strict(:device[12])?")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture and its initialisation."""

    kind: str = _f("mlp", choices=("mlp", "linear"))
    hidden: tuple[int, ...] = _f((256, 256), lo=1, hi=_MAX_COUNT)
    activation: str = "relu"  # checked by get_activation (name and finite parameter)
    init: str = _f("he", choices=("auto", "he", "lecun", "xavier", "normal"))
    init_std: float = _f(0.0, lo=0.0, hi=1e3)
    seed: int = _f(0, lo=0, hi=2**63 - 1)

    def __post_init__(self) -> None:
        if self.kind == "linear":  # no hidden layers: what is recorded is what is trained
            object.__setattr__(self, "hidden", ())


@dataclass(frozen=True)
class DataConfig:
    """The data set, its subset and the shuffling seed."""

    dataset: str = _f("fashion-mnist", choices=DATASETS)
    root: str = ""
    seed: int = _f(0, lo=0, hi=2**63 - 1)
    train_subset: int = _f(0, lo=0, hi=2**63 - 1)
    test_subset: int = _f(0, lo=0, hi=2**63 - 1)
    val_fraction: float = _f(0.0, lo=0.0, hi=1.0, hi_open=True)
    toy_samples: int = _f(1000, lo=4, hi=_MAX_COUNT)


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser and its hyper-parameters."""

    name: str = _f("adam", choices=("adam", "sgd"))
    lr: float = _f(1e-3, lo=0.0, lo_open=True, hi=1e3)
    momentum: float = _f(0.9, lo=0.0, hi=1.0, hi_open=True)
    nesterov: bool = False
    weight_decay: float = _f(0.0, lo=0.0, hi=1e3)
    betas: tuple[float, float] = _f((0.9, 0.999), lo=0.0, hi=1.0, hi_open=True, length=2)
    eps: float = _f(1e-8, lo=0.0, lo_open=True, hi=1.0)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    epochs: int = _f(15, lo=1, hi=1_000_000)
    batch_size: int = _f(128, lo=1, hi=_MAX_COUNT)
    eval_batch_size: int = _f(1000, lo=1, hi=_MAX_COUNT)
    lr_schedule: str = _f("cosine", choices=LR_SCHEDULES)
    dtype: str = _f("float32", choices=("float32", "float64"))
    keep_checkpoints: int = _f(1, lo=1, hi=1_000_000)
    device: str = "cpu"  # checked by validate (the spelling; whether it exists: at run time)


def model_parameters(in_features: int, hidden: tuple[int, ...], out_features: int) -> int:
    """Weights and biases of an MLP D-H_1-...-T (exact Python integers, no overflow)."""
    sizes = [int(in_features), *map(int, hidden), int(out_features)]
    return sum((a + 1) * b for a, b in itertools.pairwise(sizes))


def check_model_size(
    in_features: int, hidden: tuple[int, ...], out_features: int, where: str
) -> None:
    """Refuse a model above :data:`MAX_PARAMETERS` before anything is allocated.

    Raises:
        ConfigError: naming ``where``, the sizes and the count.
    """
    n = model_parameters(in_features, hidden, out_features)
    if n > MAX_PARAMETERS:
        sizes = "-".join(map(str, [in_features, *hidden, out_features]))
        raise ConfigError(
            f"{where}: a {sizes} model has {n:,} parameters, more than the limit of "
            f"{MAX_PARAMETERS:,}; choose smaller hidden sizes"
        )


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

        Keys not given take the defaults, :data:`TOY_DEFAULTS` first for a toy data set.

        Raises:
            ConfigError: unknown table or key, wrong type or invalid value; the message
                names ``source`` and the field.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a table of settings, got {_describe(data)}")
        top = dict(data)
        given = top.get("data", {})
        dataset = given.get("dataset") if isinstance(given, Mapping) else None
        defaults = TOY_DEFAULTS if dataset in TOY_DATASETS else {}
        sections: dict[str, Any] = {}
        for fld in dataclasses.fields(cls):
            if fld.name == "name":
                continue
            sub = top.pop(fld.name, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{source}: [{fld.name}] must be a table, got {sub!r}")
            values = {**defaults.get(fld.name, {}), **sub}
            sections[fld.name] = _build(_SECTION_TYPES[fld.name], values, source, fld.name)
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
        return RunConfig.from_dict(merge_overrides(self.to_dict(), overrides), source)

    def diff(self, other: RunConfig) -> list[str]:
        """``"section.key: mine -> theirs"`` for every field that differs."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a) if a.get(k) != b.get(k)]

    # ------------------------------------------------------------------ validation
    def validate(self, source: str = "<config>") -> None:
        """Check every field against the rule declared with it (finite, in range, one of the
        choices), then the few rules that involve two fields.

        Raises:
            ConfigError: naming ``source`` and the field at fault.
        """
        from ._quote import excerpt
        from .nn.activations import get_activation, param_problem

        for section in _SECTION_TYPES:
            obj = getattr(self, section)
            for fld in dataclasses.fields(obj):
                rule = fld.metadata.get("rule")
                if rule is not None:
                    _check(rule, getattr(obj, fld.name), f"{source}: {section}.{fld.name}")

        def bad(fld: str, why: str) -> ConfigError:
            return ConfigError(f"{source}: {fld} {why}")

        m = self.model
        try:
            act = get_activation(m.activation)
        except ValueError as e:
            raise bad("model.activation", f"is invalid: {e}") from None
        problem = param_problem(act)  # (the check init-study applies too)
        if problem is not None:
            raise bad("model.activation", problem)
        if m.init == "normal" and not m.init_std > 0:
            raise bad("model.init_std", "must be > 0 when model.init = 'normal'")
        if m.init != "normal" and m.init_std != 0:  # it would be ignored without a word
            raise bad(
                "model.init_std",
                f"is {m.init_std:g}, but model.init = {m.init!r} chooses σ itself; "
                "set model.init = 'normal' (--init normal) to use it",
            )
        if m.kind == "mlp" and not m.hidden:
            raise bad(
                "model.hidden",
                "is empty, but model.kind = 'mlp' needs at least one hidden layer; give sizes "
                "such as [256], or set model.kind = 'linear' for a model without hidden layers",
            )
        o = self.optim
        if o.name == "sgd" and o.nesterov and o.momentum == 0:
            raise bad(
                "optim.nesterov",
                "= true needs optim.momentum > 0 (Nesterov's is a momentum method), got "
                "optim.momentum = 0; set optim.momentum (e.g. 0.9) or optim.nesterov = false",
            )
        if not DEVICE_PATTERN.fullmatch(self.train.device):
            raise bad(
                "train.device",
                f"must be cpu, cuda, cuda:N, array-api-strict or array-api-strict:device1, "
                f"got {excerpt(self.train.device)}",
            )
        d_in, t_out = DATASET_SHAPES[self.data.dataset]
        hidden = () if m.kind == "linear" else m.hidden
        check_model_size(d_in, hidden, t_out, f"{source}: model.hidden")


def _check(rule: _Rule, value: Any, where: str) -> None:
    if isinstance(value, tuple):
        if rule.length is not None and len(value) != rule.length:
            raise ConfigError(
                f"{where} must be {rule.length} numbers {rule.describe()}, got {list(value)}"
            )
        for i, v in enumerate(value):
            if not rule.accepts(v):
                kind = "an integer" if isinstance(v, int) else "a finite number"
                raise ConfigError(
                    f"{where}[{i}] must be {kind} {rule.describe()}, got {v} (in {list(value)})"
                )
        return
    if rule.choices:
        if value not in rule.choices:
            raise ConfigError(f"{where} must be {rule.describe()}, got {value!r}")
        return
    if not rule.accepts(value):
        kind = "an integer" if isinstance(value, int) else "a finite number"
        raise ConfigError(f"{where} must be {kind} {rule.describe()}, got {value}")


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A nested dict: ``base`` with ``{"section.key": value}`` set (``None`` values skipped)."""
    d = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not key:
            d[section] = value
        else:
            sub = d.setdefault(section, {})
            if not isinstance(sub, dict):
                sub = d[section] = {}
            sub[key] = value
    return d


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


#: Largest configuration file read (a real one is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed TOML of a configuration file, not yet validated.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: a directory, unreadable, too large, not UTF-8, not valid TOML, or
            nested too deeply; the message names the file.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise ConfigError(f"{p}: is a directory, not a TOML configuration file")
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{p}: {size:,} bytes is too large for a configuration file "
                f"(limit {MAX_CONFIG_BYTES:,})"
            )
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such configuration file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(
            f"{p}: not a configuration file: arrays or tables nested too deeply"
        ) from None


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read and validate a TOML run configuration.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not valid TOML, or an invalid field; the message names the file.
    """
    return RunConfig.from_dict(read_config_file(path), str(Path(path)))
