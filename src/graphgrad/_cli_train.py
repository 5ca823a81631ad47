"""Subcommands ``train``, ``eval``, ``predict`` and ``init-study`` of the ``graphgrad`` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _hidden(text: str) -> list[int]:
    text = text.strip()
    if not text:
        return []
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        from ._quote import excerpt

        raise argparse.ArgumentTypeError(
            f"--hidden takes comma-separated integers like 256,256, got {excerpt(text)}"
        ) from None


def register(sub: Any) -> None:
    """Add ``train``, ``eval``, ``predict`` and ``init-study`` to the ``graphgrad`` command."""
    t = sub.add_parser(
        "train",
        help="train an MLP on an image or toy data set and write a run directory",
        description="Train an MLP as a config file and/or the options below describe (options "
        "override the file), evaluate it after every epoch, and write into --out: the resolved "
        "config.toml, run.json (seeds, versions), a checkpoint per epoch, metrics.json and "
        "PNG figures (curves, confusion matrix, first-layer weights). Example: graphgrad train "
        "--dataset fashion-mnist --model mlp --hidden 256,256 --activation relu --epochs 15 "
        "--optimizer adam --lr 1e-3 --batch-size 128 --out runs/fmnist",
    )
    t.add_argument("--config", type=Path, help="TOML run configuration (see graphgrad.config)")
    t.add_argument("--out", type=Path, required=True, help="the run directory")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--name", help="a label for the run")
    g = t.add_argument_group("model")
    g.add_argument("--model", dest="kind", choices=["mlp", "linear"])
    g.add_argument("--hidden", type=_hidden, help="hidden sizes, e.g. 256,256")
    g.add_argument("--activation", help="relu, tanh, sigmoid, identity, leaky_relu[:s], elu[:a]")
    g.add_argument("--init", choices=["auto", "he", "lecun", "xavier", "normal"])
    g.add_argument("--init-std", type=float, help="σ for --init normal")
    g.add_argument("--seed", type=int, help="sets both --init-seed and --data-seed")
    g.add_argument("--init-seed", type=int, help="seed of the initial weights")
    d = t.add_argument_group("data")
    d.add_argument("--dataset", help="fashion-mnist, mnist, cifar10, two_moons, circles, ...")
    d.add_argument("--data-root", help="folder holding the data files")
    d.add_argument("--data-seed", type=int, help="seed of the shuffling and subsets")
    d.add_argument("--train-subset", type=int, help="train on this many samples only")
    d.add_argument("--test-subset", type=int, help="evaluate on this many samples only")
    d.add_argument("--val-fraction", type=float, help="hold out this share for validation")
    o = t.add_argument_group("optimiser and loop")
    o.add_argument("--optimizer", choices=["adam", "sgd"])
    o.add_argument("--lr", type=float)
    o.add_argument("--momentum", type=float)
    o.add_argument("--nesterov", action="store_true", default=None)
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--epochs", type=int)
    o.add_argument("--batch-size", type=int)
    o.add_argument("--lr-schedule", choices=["constant", "cosine"])
    o.add_argument("--dtype", choices=["float32", "float64"])
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--no-plots", action="store_true", help="no PNG figures")
    t.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI ranks: mpiexec -n N graphgrad train --distributed ... "
        "(--batch-size is per rank; rank 0 writes --out; needs graphgrad[distributed])",
    )
    t.set_defaults(handler=_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a trained model (run directory or checkpoint) on its data set",
        description="Load a checkpoint (a run directory's newest, or a checkpoint directory), "
        "verify it, and report loss, accuracy and per-class accuracy on the test (or train) "
        "split of the data set it was trained on.",
    )
    e.add_argument("checkpoint", type=Path, help="run directory or checkpoint directory")
    e.add_argument("--split", choices=["test", "train"], default="test")
    e.add_argument("--data-root", help="folder holding the data files (default: as trained)")
    e.add_argument("--batch-size", type=int, default=1000)
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(handler=_eval)

    p = sub.add_parser(
        "predict",
        help="classify images with a trained model",
        description="Classify images: .npy arrays ((H, W), (N, H, W), (D,) or (N, D); uint8 "
        "0..255 or float 0..1), PNG files of the training image size, or test-set images by "
        "index (--test-index). Prints the top-k classes with their softmax probabilities.",
    )
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoint directory")
    p.add_argument("inputs", nargs="*", type=Path, help=".npy or .png files")
    p.add_argument("--test-index", type=int, nargs="+", default=[], help="test-set images")
    p.add_argument("--data-root", help="folder holding the data files (for --test-index)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_predict)

    s = sub.add_parser(
        "init-study",
        help="signal propagation through a deep net for σ too small, right and too large",
        description="Push S samples through a deep MLP initialised with N(0, σ) weights for σ "
        "too small, right (gain/sqrt(fan_in)) and too large; plot the standard deviation of "
        "the activations and of the gradients per layer (vanishing, preserved, exploding).",
    )
    s.add_argument("--depth", type=int, default=50)
    s.add_argument("--width", type=int, default=256)
    s.add_argument("--activation", default="relu")
    s.add_argument("--samples", type=int, default=256)
    s.add_argument("--factor", type=float, default=2.0, help="too small/large = right ÷/× this")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, default=Path("docs/results"), help="output folder")
    s.set_defaults(handler=_init_study)


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


# -------------------------------------------------------------------------------- train


def resolve_config(args: argparse.Namespace) -> Any:
    """The run configuration: the file (or, with --resume, the run's config.toml), then the
    command-line options on top."""
    from .config import RunConfig, load_config

    if args.config is not None:
        base = load_config(args.config)
    elif args.resume and (args.out / "config.toml").is_file():
        base = load_config(args.out / "config.toml")
    else:
        base = RunConfig()
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
    }
    return base.with_overrides(overrides, "command-line options")


def _train(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataFormatError, DatasetNotFoundError
    from .train import RunError, TrainingDiverged, run_training

    runner: Any = run_training
    if args.distributed:
        from . import distributed

        try:
            distributed.init()
        except distributed.MPIUnavailableError as e:
            _err(str(e))
            return 2
        runner = distributed.run_training
    try:
        cfg = resolve_config(args)
    except (ConfigError, FileNotFoundError) as e:
        _err(str(e))
        return 2
    try:
        runner(
            cfg,
            args.out,
            resume=args.resume,
            progress=not args.no_progress,
            plots=not args.no_plots,
        )
    except TrainingDiverged as e:
        _err(f"training diverged: {e}")
        return 1
    except (RunError, CheckpointError, DatasetNotFoundError, DataFormatError) as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        from .checkpoint import latest_checkpoint

        last = latest_checkpoint(args.out)
        where = f"the last checkpoint is {last}" if last else "no checkpoint was written yet"
        print(
            f"interrupted; {where}. Continue with: graphgrad train --out {args.out} --resume",
            file=sys.stderr,
        )
        return 130
    return 0


# --------------------------------------------------------------------------------- eval


def _load(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    from .train import model_from_checkpoint

    return model_from_checkpoint(path)


def _eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .checkpoint import CheckpointError
    from .data import DataFormatError, DatasetNotFoundError
    from .nn.functional import confusion_matrix
    from .train import evaluate, load_data

    try:
        model, cfg, _info = _load(args.checkpoint)
        dcfg = cfg.data if args.data_root is None else replace(cfg.data, root=args.data_root)
        if args.split == "test":
            dcfg = replace(dcfg, val_fraction=0.0)
        data = load_data(dcfg, np.dtype(cfg.train.dtype), with_train=args.split == "train")
    except (CheckpointError, DatasetNotFoundError, DataFormatError) as e:
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


def _read_inputs(
    paths: list[Path], image_shape: tuple[int, ...] | None, d: int
) -> tuple[list[str], np.ndarray]:
    """Images from .npy/.png files as float32 (N, D) in [0, 1], with a name for each."""
    from ._inputs import read_npy, read_png

    names: list[str] = []
    rows = []
    for path in paths:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            arr = read_npy(path)  # header checked before the body is read
        elif suffix == ".png":
            arr = read_png(path, image_shape[-2:] if image_shape else None)
            if arr.ndim == 3 and image_shape is not None and len(image_shape) == 2:
                arr = arr[..., :3].mean(axis=-1)  # RGB(A) -> grey
            elif arr.ndim == 3:
                arr = arr[..., :3].transpose(2, 0, 1)  # HWC -> CHW
        else:
            raise ValueError(f"{path}: expected a .npy or .png file")
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / np.float32(255.0)
        elif arr.dtype.kind != "f":
            raise ValueError(f"{path}: expected uint8 or float pixels, got {arr.dtype}")
        fits_vector = arr.ndim in (1, 2) and arr.shape[-1] == d
        fits_image = image_shape is not None and arr.shape[-len(image_shape) :] == image_shape
        if not (fits_vector or fits_image) or arr.ndim > (len(image_shape or ()) + 1):
            want = f"{image_shape} images or {d}-vectors" if image_shape else f"{d}-vectors"
            raise ValueError(f"{path}: shape {arr.shape} does not hold {want}")
        block = arr.reshape(-1, d).astype(np.float32)
        names += [str(path)] if len(block) == 1 else [f"{path}[{j}]" for j in range(len(block))]
        rows.append(block)
    x = np.concatenate(rows) if rows else np.zeros((0, d), np.float32)
    return names, x


def _predict(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .checkpoint import CheckpointError
    from .data import DataFormatError, DatasetNotFoundError
    from .tensor import softmax
    from .train import load_data

    try:
        model, cfg, info = _load(args.checkpoint)
    except CheckpointError as e:
        _err(str(e))
        return 1
    classes = list(info["classes"])
    image_shape = tuple(info["image_shape"]) if info.get("image_shape") else None
    d = int(info["in_features"])
    try:
        names, x = _read_inputs(args.inputs, image_shape, d)
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
    model.eval()
    probs = softmax(model(xs)).data
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
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        tops = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        print(f"{r['input']}: {tops}")
    return 0


# --------------------------------------------------------------------------- init-study


def _init_study(args: argparse.Namespace) -> int:
    from .experiments.init_study import init_study, write_init_study

    result = init_study(
        depth=args.depth,
        width=args.width,
        activation=args.activation,
        samples=args.samples,
        factor=args.factor,
        rng=np.random.default_rng(args.seed),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    paths = write_init_study(result, args.out)
    print(result["table"])
    for p in paths:
        print(f"wrote {p}")
    return 0
