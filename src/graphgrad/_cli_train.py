"""Subcommands ``train``, ``eval``, ``predict`` and ``init-study`` of the ``graphgrad`` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._cli_args import device_name, finite_float, int_at_least


def _hidden(text: str) -> list[int]:
    text = text.strip()
    if not text:
        return []
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        from ._quote import excerpt

        raise argparse.ArgumentTypeError(
            f"takes comma-separated integers like 256,256, got {excerpt(text)}"
        ) from None


def _cfg(key: str, text: str) -> str:
    """A help line for a train option: what it sets, its config key and its defaults."""
    from .config import TOY_DEFAULTS, RunConfig

    section, _, name = key.partition(".")
    default = getattr(getattr(RunConfig(), section), name)
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    elif isinstance(default, bool):
        default = str(default).lower()
    elif default == "":
        default = '""'
    toy = TOY_DEFAULTS.get(section, {}).get(name)
    if isinstance(toy, tuple):
        toy = ",".join(map(str, toy))
    extra = f"; toy data sets: {toy}" if toy is not None else ""
    return f"{text} [{key}; default: {default}{extra}]".replace("%", "%%")


_TRAIN_DESCRIPTION = """\
Train an MLP as a config file and/or the options below describe (options override the
file; options not given take the file's value, else the default shown), evaluate it after
every epoch, and write into --out: the resolved config.toml, run.json (seeds, versions),
a checkpoint after every epoch (checkpoints/epoch-NNNN; the newest --keep-checkpoints of
them are kept), metrics.json and PNG figures (curves, confusion matrix, first-layer
weights). --out must be a new or empty folder, unless --resume continues the run in it;
options that contradict each other (--hidden with --model linear, SGD's --momentum or
--nesterov with Adam) are refused. The defaults are the README's recipe (MLP
784-256-256-10, He init, Adam 1e-3, cosine schedule, 15 epochs, batch 128); toy data sets
(two_moons, circles, xor, blobs, spiral) default to a small net, a larger rate and small
batches.

Results (one line per epoch, the test accuracy) go to stdout; progress bars (only on a
terminal) and messages to stderr. A run holds --out/.lock while it lasts: a second run
into the same folder is refused."""

_TRAIN_EPILOG = """\
examples:
  graphgrad train --dataset fashion-mnist --epochs 15 --out runs/fmnist
  graphgrad train --config examples/configs/fashion_mlp_adam.toml --out runs/adam
  graphgrad train --dataset two_moons --out runs/moons
  graphgrad train --out runs/fmnist --resume --epochs 20

needs the 'train' extra (safetensors for checkpoints; matplotlib for figures, tqdm for
progress bars: without them, no figures and no bars): pip install 'graphgrad[train]'"""


def register(sub: Any) -> None:
    """Add ``train``, ``eval``, ``predict`` and ``init-study`` to the ``graphgrad`` command."""
    t = sub.add_parser(
        "train",
        help="train an MLP on an image or toy data set and write a run directory",
        description=_TRAIN_DESCRIPTION,
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "--config", type=Path, help="TOML run configuration (see graphgrad.config); default: none"
    )
    t.add_argument("--out", type=Path, required=True, help="the run directory (required)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint, or start a run that stopped "
        "before its first checkpoint again from epoch 0 (only --epochs, not below the epochs "
        "done, and --device may change)",
    )
    t.add_argument("--name", help="a label for the run [name; default: none]")
    g = t.add_argument_group("model")
    g.add_argument(
        "--model",
        dest="kind",
        choices=["mlp", "linear"],
        help=_cfg("model.kind", "mlp, or linear (no hidden layers)"),
    )
    g.add_argument("--hidden", type=_hidden, help=_cfg("model.hidden", "hidden sizes"))
    g.add_argument(
        "--activation",
        help=_cfg(
            "model.activation",
            "relu, tanh, sigmoid, identity (or linear), leaky_relu[:s], elu[:a], softplus",
        ),
    )
    g.add_argument(
        "--init",
        choices=["auto", "he", "lecun", "xavier", "normal"],
        help=_cfg(
            "model.init",
            "weight initialisation (he: sqrt(2/fan_in) in every layer; auto: He for "
            "ReLU-like activations, else LeCun)",
        ),
    )
    g.add_argument(
        "--init-std",
        type=finite_float(0.0, lo_open=True),
        help=_cfg("model.init_std", "σ for --init normal"),
    )
    g.add_argument(
        "--seed", type=int_at_least(0), help="sets both --init-seed and --data-seed [default: 0]"
    )
    g.add_argument(
        "--init-seed", type=int_at_least(0), help=_cfg("model.seed", "seed of the initial weights")
    )
    d = t.add_argument_group("data")
    d.add_argument(
        "--dataset",
        help=_cfg(
            "data.dataset", "fashion-mnist, mnist, cifar10, two_moons, circles, xor, blobs, spiral"
        ),
    )
    d.add_argument(
        "--data-root",
        help=_cfg("data.root", "folder holding the data files (empty: the usual places)"),
    )
    d.add_argument(
        "--data-seed",
        type=int_at_least(0),
        help=_cfg("data.seed", "seed of the shuffling and subsets"),
    )
    d.add_argument(
        "--train-subset",
        type=int_at_least(0),
        help=_cfg("data.train_subset", "train on this many samples only (0: all)"),
    )
    d.add_argument(
        "--test-subset",
        type=int_at_least(0),
        help=_cfg("data.test_subset", "evaluate on this many samples only (0: all)"),
    )
    d.add_argument(
        "--val-fraction",
        type=finite_float(0.0),
        help=_cfg("data.val_fraction", "hold out this share for validation"),
    )
    o = t.add_argument_group("optimiser and loop")
    o.add_argument("--optimizer", choices=["adam", "sgd"], help=_cfg("optim.name", "optimiser"))
    o.add_argument(
        "--lr",
        type=finite_float(0.0, lo_open=True),
        help=_cfg("optim.lr", "learning rate (the schedule's peak)"),
    )
    o.add_argument(
        "--momentum", type=finite_float(0.0), help=_cfg("optim.momentum", "SGD momentum")
    )
    o.add_argument(
        "--nesterov",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=_cfg("optim.nesterov", "Nesterov momentum for SGD"),
    )
    o.add_argument(
        "--weight-decay", type=finite_float(0.0), help=_cfg("optim.weight_decay", "L2 weight decay")
    )
    o.add_argument("--epochs", type=int_at_least(1), help=_cfg("train.epochs", "epochs"))
    o.add_argument(
        "--batch-size",
        type=int_at_least(1),
        help=_cfg("train.batch_size", "samples per optimiser step"),
    )
    o.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        help=_cfg("train.lr_schedule", "learning-rate schedule"),
    )
    o.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help=_cfg("train.dtype", "floating-point type of weights and data"),
    )
    o.add_argument(
        "--keep-checkpoints",
        type=int_at_least(1),
        help=_cfg(
            "train.keep_checkpoints",
            "a checkpoint is written after every epoch; keep this many of the newest",
        ),
    )
    o.add_argument(
        "--device",
        type=device_name,
        help=_cfg(
            "train.device",
            "where to train: cpu (NumPy), cuda or cuda:N (CuPy: pip install graphgrad[cuda]), "
            "array-api-strict (the array API portability check)",
        ),
    )
    t.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they are shown only on a terminal anyway)",
    )
    t.add_argument("--no-plots", action="store_true", help="no PNG figures")
    t.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI ranks: mpiexec -n N graphgrad train --distributed ... "
        "(--batch-size is per rank; rank 0 writes --out; needs graphgrad[distributed])",
    )
    t.set_defaults(handler=_train)

    fmt = argparse.ArgumentDefaultsHelpFormatter
    e = sub.add_parser(
        "eval",
        help="evaluate a trained model (run directory or checkpoint) on its data set",
        description="Load a checkpoint (a run directory's newest, or a checkpoint directory), "
        "verify it, and report loss, accuracy and per-class accuracy on the test (or train) "
        "split of the data set it was trained on. Needs the 'train' extra (safetensors).",
        formatter_class=fmt,
    )
    e.add_argument("checkpoint", type=Path, help="run directory or checkpoint directory")
    e.add_argument("--split", choices=["test", "train"], default="test", help="which split")
    e.add_argument(
        "--data-root",
        # "%(default).0s" prints nothing, and keeps ArgumentDefaultsHelpFormatter from adding
        # "(default: None)" after the real default
        help="folder holding the data files (default: as trained)%(default).0s",
    )
    e.add_argument(
        "--batch-size",
        type=int_at_least(1, 1_000_000),
        default=1000,
        help="samples per forward pass",
    )
    e.add_argument(
        "--device",
        type=device_name,
        default="cpu",
        help="where to evaluate: cpu, cuda, cuda:N, array-api-strict",
    )
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(handler=_eval)

    p = sub.add_parser(
        "predict",
        help="classify images with a trained model",
        description="Classify images: .npy arrays ((H, W), (N, H, W), (D,) or (N, D); uint8 "
        "0..255 or float 0..1), PNG files of the training image size, or test-set images by "
        "index (--test-index). Prints the top-k classes with their softmax probabilities. "
        "Needs the 'train' extra (safetensors; matplotlib for PNG files).",
        formatter_class=fmt,
    )
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoint directory")
    p.add_argument("inputs", nargs="*", type=Path, help=".npy or .png files")
    p.add_argument(
        "--test-index", type=int_at_least(0), nargs="+", default=[], help="test-set images"
    )
    p.add_argument("--data-root", help="folder holding the data files (for --test-index)")
    p.add_argument("--top-k", type=int_at_least(1), default=3, help="classes shown per input")
    p.add_argument(
        "--device",
        type=device_name,
        default="cpu",
        help="where to run the model: cpu, cuda, cuda:N, array-api-strict",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_predict)

    s = sub.add_parser(
        "init-study",
        help="signal propagation through a deep net for σ too small, right and too large "
        "(writes into docs/results by default)",
        description="Push S samples through a deep MLP initialised with N(0, σ) weights for σ "
        "too small, right (gain/sqrt(fan_in)) and too large; print a table and write, into "
        "--out, a plot of the standard deviation of the activations and of the gradients per "
        "layer (init_study_<activation>.png) and the table (init_study_<activation>.md). "
        "Needs the 'train' extra (matplotlib).",
        formatter_class=fmt,
    )
    s.add_argument("--depth", type=int_at_least(1, 10_000), default=50, help="layers")
    s.add_argument("--width", type=int_at_least(1, 8192), default=256, help="units per layer")
    s.add_argument(
        "--activation",
        default="relu",
        help="relu, tanh, sigmoid, identity (or linear), leaky_relu[:s], elu[:a], softplus",
    )
    s.add_argument(
        "--samples", type=int_at_least(1, 1_000_000), default=256, help="samples S pushed through"
    )
    s.add_argument(
        "--factor",
        type=finite_float(1.0, lo_open=True),
        default=2.0,
        help="too small/large = right ÷/× this",
    )
    s.add_argument("--seed", type=int_at_least(0), default=0, help="seed of inputs and weights")
    s.add_argument(
        "--out",
        type=Path,
        default=Path("docs/results"),
        help="folder the .png and .md are written into (created if missing)",
    )
    s.set_defaults(handler=_init_study)


def _err(msg: str) -> None:
    from .cli import one_line

    print(f"error: {one_line(msg)}", file=sys.stderr)


def _say(line: str) -> None:
    """A result line on stdout."""
    print(line, flush=True)


# -------------------------------------------------------------------------------- train


def resolve_config(args: argparse.Namespace) -> Any:
    """The run configuration: the file (or, with --resume, the run's config.toml), then the
    command-line options on top. Keys given nowhere take the defaults of the data set."""
    from .config import RunConfig, load_config, merge_overrides, read_config_file

    if args.config is not None:
        load_config(args.config)  # errors in the file name the file
        raw: dict[str, Any] = read_config_file(args.config)
    elif args.resume and (args.out / "config.toml").is_file():
        raw = load_config(args.out / "config.toml").to_dict()
    else:
        raw = {}
    seed = args.seed
    overrides = {
        "name": args.name,
        "model.kind": args.kind,
        "model.hidden": args.hidden,
        "model.activation": args.activation,
        "model.init": args.init,
        "model.init_std": args.init_std,
        "model.seed": args.init_seed if args.init_seed is not None else seed,
        "data.dataset": args.dataset,
        "data.root": args.data_root,
        "data.seed": args.data_seed if args.data_seed is not None else seed,
        "data.train_subset": args.train_subset,
        "data.test_subset": args.test_subset,
        "data.val_fraction": args.val_fraction,
        "optim.name": args.optimizer,
        "optim.lr": args.lr,
        "optim.momentum": args.momentum,
        "optim.nesterov": args.nesterov,
        "optim.weight_decay": args.weight_decay,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.lr_schedule": args.lr_schedule,
        "train.dtype": args.dtype,
        "train.keep_checkpoints": args.keep_checkpoints,
        "train.device": args.device,
    }
    source = (
        f"{args.config} with the command-line options" if args.config else "command-line options"
    )
    cfg = RunConfig.from_dict(merge_overrides(raw, overrides), source)
    _refuse_contradictions(args, cfg)
    return cfg


def _refuse_contradictions(args: argparse.Namespace, cfg: Any) -> None:
    """Options given on the command line that the resolved configuration would ignore.

    Raises:
        ConfigError: naming the option and what to do.
    """
    from .config import ConfigError

    def origin(option: str, given: Any, key: str, value: str) -> str:
        if given is not None:
            return f"{option} {value}"
        where = args.config or ("the run's config.toml" if args.resume else "the default")
        return f"{key} = {value!r} ({where})"

    if cfg.model.kind == "linear" and args.hidden:
        sizes = ",".join(map(str, args.hidden))
        kind = origin("--model", args.kind, "model.kind", "linear")
        raise ConfigError(
            f"--hidden {sizes} contradicts {kind}: a linear model has no hidden layers; drop "
            f"--hidden, or use --model mlp"
        )
    if cfg.optim.name != "sgd":
        given = [
            opt
            for opt, value in (
                ("--momentum", args.momentum),
                ("--nesterov" if args.nesterov else "--no-nesterov", args.nesterov),
            )
            if value is not None
        ]
        if given:
            name = origin("--optimizer", args.optimizer, "optim.name", cfg.optim.name)
            what, it = ("options", "them") if len(given) > 1 else ("an option", "it")
            raise ConfigError(
                f"{' and '.join(given)}: {what} of SGD, which {name} would ignore; drop {it}, "
                f"or use --optimizer sgd"
            )


def _train(args: argparse.Namespace) -> int:
    from ._extras import MissingExtraError
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataFormatError, DatasetNotFoundError
    from .train import (
        RunError,
        RunLockedError,
        TrainingDiverged,
        check_run_dependencies,
        run_training,
    )

    runner: Any = run_training
    world: Any = None
    failure: tuple[int, str] | None = None  # (exit status, message) of a start-up failure
    if args.distributed:
        from . import distributed

        try:
            world = distributed.init()
        except distributed.MPIUnavailableError as e:
            _err(str(e))
            return 2
        except ValueError as e:  # GRAPHGRAD_DIST_TIMEOUT is not a number: a usage error
            failure = (2, str(e))
            # start MPI anyway (with the default timeout), so that the ranks agree on it
            world = distributed.init(timeout=distributed.DEFAULT_TIMEOUT)
        runner = distributed.run_training
    cfg: Any = None
    if failure is None:
        try:
            check_run_dependencies(plots=not args.no_plots)
            cfg = resolve_config(args)
        except MissingExtraError as e:
            failure = (1, str(e))
        except (ConfigError, FileNotFoundError) as e:
            failure = (2, str(e))
    if failure is None:
        problem = _device_problem(cfg.train.device, "train.device")
        if problem is not None:
            failure = (1, problem)
        elif args.distributed and cfg.train.device != "cpu":
            failure = (2, f"--distributed trains on the cpu device only, not {cfg.train.device!r}")
    if world is not None:  # every rank learns how the others started before any goes on
        failure = _agree_on_start(world, failure)
    if failure is not None:
        if failure[1]:
            _err(failure[1])
        return failure[0]
    try:
        runner(
            cfg,
            args.out,
            resume=args.resume,
            progress=not args.no_progress,
            plots=not args.no_plots,
            log=_say,
        )
    except TrainingDiverged as e:
        _err(f"training diverged: {e} (status 'diverged' in {args.out / 'metrics.json'})")
        return 1
    except (
        RunError,
        RunLockedError,
        CheckpointError,
        ConfigError,
        DatasetNotFoundError,
        DataFormatError,
    ) as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        print(_interrupted(args.out), file=sys.stderr)
        return 130
    except OSError as e:
        _err(_os_error(e, f"writing the run into {args.out}"))
        return 1
    return 0


def _interrupted(out: Path) -> str:
    """What a run stopped by Ctrl-C left in ``out``, and the command that continues it."""
    import shlex

    from .checkpoint import latest_checkpoint

    again = f"graphgrad train --out {shlex.quote(str(out))} --resume"
    last = latest_checkpoint(out)
    if last is not None:
        return f"interrupted; the last checkpoint is {last}. Continue with: {again}"
    if (out / "config.toml").is_file():
        return (
            f"interrupted; no checkpoint was written yet. Continue with: {again} (it starts "
            f"the recorded configuration again from epoch 0)"
        )
    return "interrupted before the run started; nothing was written. Run the same command again"


def _device_ready(device: str, what: str) -> bool:
    """Whether ``device`` can be used; if not, the one-line error (what is missing and how to
    install it) is printed. Checked before any data is read or anything written."""
    problem = _device_problem(device, what)
    if problem is not None:
        _err(problem)
        return False
    return True


def _device_problem(device: str, what: str) -> str | None:
    """Why ``device`` cannot be used (``what: ...``: what is missing and how to install it),
    or None when it can."""
    from . import _backend
    from .errors import DeviceUnavailableError

    try:
        _backend.parse_device(device)
    except (DeviceUnavailableError, ValueError) as e:
        return f"{what}: {e}"
    return None


def _agree_on_start(world: Any, failure: tuple[int, str] | None) -> tuple[int, str] | None:
    """Every rank's start-up outcome (None, or (exit status, message)), shared by all ranks
    (one allgather), so that a rank that cannot start does not leave the others waiting for
    it. Returns None when every rank started; else the (status, message) this rank ends
    with: the status of the first rank that failed, on every rank; the message on rank 0
    only ("" elsewhere), printed once: a failure of rank 0 alone, or the same one on every
    rank, as one process would say it, else naming each rank that failed."""
    reports = world.allgather(failure)
    bad = [(r, f) for r, f in enumerate(reports) if f is not None]
    if not bad:
        return None
    status = bad[0][1][0]
    if not world.is_root:
        return status, ""
    messages = {f[1] for _r, f in bad}
    if (len(bad) == 1 and bad[0][0] == 0) or (len(bad) == world.size and len(messages) == 1):
        return status, bad[0][1][1]
    ranks = "; ".join(
        f"rank {r} (pid {world.peers[r][1]} on {world.peers[r][0]}): {f[1]}" for r, f in bad
    )
    return status, f"the distributed run could not start: {ranks}"


def _os_error(e: OSError, doing: str) -> str:
    import errno

    if e.errno == errno.ENOSPC:
        return f"no space left on the device while {doing}; nothing half-written was kept"
    where = f" ({e.filename})" if e.filename else ""
    return f"{e.strerror or e} while {doing}{where}"


# --------------------------------------------------------------------------------- eval


def _load(path: Path, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    from .train import model_from_checkpoint

    return model_from_checkpoint(path, device)


def _eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ._extras import MissingExtraError, require_extra
    from .checkpoint import CheckpointError
    from .data import DataFormatError, DatasetNotFoundError
    from .nn.functional import confusion_matrix
    from .train import evaluate, load_data

    if not _device_ready(args.device, "--device"):
        return 1
    try:
        require_extra("graphgrad eval (checkpoints)", ["safetensors"])
        model, cfg, _info = _load(args.checkpoint, args.device)
        dcfg = cfg.data if args.data_root is None else replace(cfg.data, root=args.data_root)
        if args.split == "test":
            dcfg = replace(dcfg, val_fraction=0.0)
        data = load_data(dcfg, np.dtype(cfg.train.dtype), with_train=args.split == "train")
    except (CheckpointError, DatasetNotFoundError, DataFormatError, MissingExtraError) as e:
        _err(str(e))
        return 1
    x, y = (data.x_test, data.y_test) if args.split == "test" else (data.x_train, data.y_train)
    res = evaluate(model, x, y, args.batch_size)
    cm = confusion_matrix(res.predictions, y, len(data.classes))
    per_class = {
        c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None)
        for i, c in enumerate(data.classes)
    }
    if args.json:
        out = {
            "split": args.split,
            "samples": len(y),
            "loss": res.loss,
            "accuracy": res.accuracy,
            "per_class_accuracy": per_class,
        }
        print(json.dumps(out, indent=1))
        return 0
    print(f"{cfg.data.dataset} {args.split}: {len(y):,} samples")
    print(f"loss {res.loss:.4f}  accuracy {100 * res.accuracy:.2f}%")
    width = max(len(c) for c in data.classes)
    for c, acc in per_class.items():
        print(f"  {c:<{width}}  {'-' if acc is None else f'{100 * acc:6.2f}%'}")
    return 0


# ------------------------------------------------------------------------------ predict


def _predict(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ._extras import MissingExtraError, require_extra
    from ._inputs import read_inputs
    from .checkpoint import CheckpointError
    from .data import DataFormatError, DatasetNotFoundError
    from .tensor import softmax
    from .train import load_data

    if not _device_ready(args.device, "--device"):
        return 1
    try:
        require_extra("graphgrad predict (checkpoints)", ["safetensors"])
        if any(str(p).lower().endswith(".png") for p in args.inputs):
            require_extra("graphgrad predict on PNG files", ["matplotlib"])
        model, cfg, info = _load(args.checkpoint, args.device)
    except (CheckpointError, MissingExtraError) as e:
        _err(str(e))
        return 1
    classes = list(info["classes"])
    image_shape = tuple(info["image_shape"]) if info.get("image_shape") else None
    d = int(info["in_features"])
    try:
        names, x = read_inputs(args.inputs, image_shape, d)
        parts = [x]
        if args.test_index:
            dcfg = cfg.data if args.data_root is None else replace(cfg.data, root=args.data_root)
            data = load_data(replace(dcfg, test_subset=0, val_fraction=0.0), with_train=False)
            bad = [i for i in args.test_index if not 0 <= i < len(data.y_test)]
            if bad:
                raise ValueError(f"--test-index {bad} outside 0..{len(data.y_test) - 1}")
            parts.append(data.x_test[args.test_index])
            names += [f"test[{i}] (true: {classes[data.y_test[i]]})" for i in args.test_index]
    except (ValueError, DatasetNotFoundError, DataFormatError) as e:
        _err(str(e))
        return 1
    xs = np.concatenate(parts).astype(np.dtype(cfg.train.dtype))
    if len(xs) == 0:
        _err("nothing to predict: give .npy/.png files or --test-index")
        return 2
    from ._backend import to_device, to_numpy

    model.eval()
    probs = to_numpy(softmax(model(to_device(xs, model.device))).data)
    bad_rows = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if len(bad_rows):  # (finite inputs: the model's weights or their scale overflow)
        _err(
            f"{names[bad_rows[0]]}: the model's output is not finite (NaN or inf) for "
            f"{len(bad_rows)} of {len(names)} inputs; check the checkpoint ({args.checkpoint})"
        )
        return 1
    k = max(1, min(args.top_k, len(classes)))
    results: list[dict[str, Any]] = []
    for name, pr in zip(names, probs, strict=True):
        top = np.argsort(-pr, kind="stable")[:k]
        results.append(
            {
                "input": name,
                "top": [{"class": classes[j], "probability": float(pr[j])} for j in top],
            }
        )
    if args.json:
        print(json.dumps(results, indent=1, allow_nan=False))
        return 0
    for r in results:
        tops = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        print(f"{r['input']}: {tops}")
    return 0


# --------------------------------------------------------------------------- init-study


def _init_study(args: argparse.Namespace) -> int:
    from ._extras import MissingExtraError, require_extra
    from .experiments.init_study import init_study, write_init_study
    from .nn.activations import get_activation

    try:
        require_extra("graphgrad init-study (figures)", ["matplotlib"])
    except MissingExtraError as e:
        _err(str(e))
        return 1
    try:
        get_activation(args.activation)
    except ValueError as e:
        _err(f"--activation: {e}")
        return 2
    out: Path = args.out
    for q in (out, *out.parents):
        if q.exists() and not q.is_dir():
            _err(f"--out: {q} is a file, not a folder")
            return 2
        if q.exists():
            break
    try:
        result = init_study(
            depth=args.depth,
            width=args.width,
            activation=args.activation,
            samples=args.samples,
            factor=args.factor,
            rng=np.random.default_rng(args.seed),
        )
    except ValueError as e:
        _err(str(e))
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = write_init_study(result, out)
    except OSError as e:
        _err(_os_error(e, f"writing into {out}"))
        return 1
    print(result["table"])
    for p in paths:
        print(f"wrote {p}")
    return 0
