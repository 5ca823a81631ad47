"""Training: the loop, per-epoch evaluation, history, checkpoints, exact resume, full runs.

Per mini-batch of S samples the loop does what the lecture describes: forward pass,
L(θ) = (1/S) Σ_s H(o^s, softmax(f(x^s; θ))), backward pass, one optimiser step::

    trainer = Trainer(model, optimizer, batch_size=128, data_seed=0, run_dir="runs/a")
    history = trainer.fit(x_train, y_train, epochs=15, eval_data=(x_test, y_test))

Reproducibility: the weights come from ``model.seed``; epoch e visits the training set in the
order ``default_rng([data_seed, e]).permutation(S)`` (the :class:`~graphgrad.data.DataLoader`'s
rule), so no random state has to be carried between epochs. A checkpoint after each epoch
holds the weights, the optimiser state, the step counts and the history; resuming from it
reproduces an uninterrupted run bit for bit.

:func:`run_training` is the whole job behind ``graphgrad train``: data, model, optimiser,
training, final evaluation, ``metrics.json``, figures.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _backend
from . import checkpoint as ckpt
from ._atomic import atomic_write_text
from ._extras import has_module, require_extra
from ._runlock import RunLockedError, run_lock
from ._state import check_int, no_grad
from .compiled import CompiledStep, CompileError, plans_unavailable
from .config import (
    TOY_DATASETS,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    check_model_size,
)
from .errors import GraphgradError
from .nn.functional import confusion_matrix
from .nn.layers import MLP
from .nn.module import Module
from .optim import Optimizer, make_optimizer
from .tensor import Tensor, cross_entropy

__all__ = [
    "DataSplits",
    "EvalResult",
    "RunError",
    "RunLockedError",
    "RunResult",
    "Trainer",
    "TrainingDiverged",
    "build_model",
    "build_optimizer",
    "check_run_dependencies",
    "evaluate",
    "fit",
    "load_data",
    "lr_factor",
    "model_from_checkpoint",
    "run_training",
]

LossFn = Callable[[Tensor, Any], Tensor]

#: Diagnostics (resuming, what is trained, figures skipped) go through this logger; the
#: per-epoch lines and the final result go to the ``log`` callable (by default this logger
#: too, at INFO). ``graphgrad train`` prints results on stdout and the logger on stderr.
logger = logging.getLogger("graphgrad.train")


def _log_info(line: str) -> None:
    logger.info(line)


class TrainingDiverged(GraphgradError, FloatingPointError):
    """The training loss became NaN or infinite; training stopped."""


class RunError(GraphgradError, RuntimeError):
    """A run cannot start or resume (a run directory in the way, a config that differs ...)."""


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Loss and accuracy over a data set, and the predicted class of every sample."""

    loss: float
    accuracy: float
    predictions: np.ndarray


def evaluate(
    model: Module,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 1000,
    loss_fn: LossFn = cross_entropy,
) -> EvalResult:
    """Mean loss and accuracy of ``model`` on (x (S, D), y (S,)), in batches, under no_grad.

    The model is put in eval mode and restored to its previous mode afterwards. The batches
    are copied to the model's device (``model.device``); the predictions come back as NumPy.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"evaluate: batch_size must be an integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    if len(x) != len(y):
        raise ValueError(f"evaluate: {len(x)} inputs but {len(y)} labels")
    was_training = model.training
    dev = model.device
    model.eval()
    total, correct = 0.0, 0
    preds = np.empty(len(y), dtype=np.int64)
    try:
        with no_grad():
            for start in range(0, len(y), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                if not dev.is_cpu:
                    xb, yb_dev = _backend.to_device(xb, dev), _backend.to_device(yb, dev)
                else:
                    yb_dev = yb
                logits = model(xb)
                total += float(loss_fn(logits, _labels(yb_dev)).data) * len(yb)
                p = _argmax_rows(logits.data)
                preds[start : start + len(yb)] = p
                correct += int(np.count_nonzero(p == _backend.to_numpy(yb)))
    finally:
        model.train(was_training)
    n = max(len(y), 1)
    return EvalResult(total / n, correct / n, preds)


# --------------------------------------------------------------------------------- trainer


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The multiplier of the base learning rate at optimiser step ``step`` (0-based) of
    ``total_steps``: 1 for ``"constant"``; (1 + cos(π · step / total_steps)) / 2 for
    ``"cosine"`` (1 at the first step, decaying smoothly towards 0 at the last)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    raise ValueError(f"unknown lr_schedule {schedule!r}; expected 'constant' or 'cosine'")


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on a terminal; None when disabled, when stderr is not a terminal (a log
    file gets no redraws) or when tqdm (the ``train`` extra) is not installed."""
    if not enabled or not has_module("tqdm"):
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=None)
    if bar.disable:
        bar.close()
        return None
    return bar


def _labels(y: Any) -> Any:
    """Labels as the loss takes them: a NumPy array as it is, a device array in a Tensor (so
    that it stays on its device)."""
    return y if type(y) is np.ndarray else Tensor(y)


def _argmax_rows(x: Any) -> np.ndarray:
    """The index of the largest entry of each row of (S, T) ``x``, as NumPy int64 (S,)."""
    if type(x) is np.ndarray:
        return np.argmax(x, axis=1)
    xp = _backend.namespace_of(x)
    return _backend.to_numpy(xp.argmax(x, axis=1)).astype(np.int64, copy=False)


def _count_correct(x: Any, labels: Any) -> int:
    """How many rows of logits ``x`` (S, T) have their largest entry at ``labels`` (S,),
    computed where ``x`` lives (one number comes back)."""
    if type(x) is np.ndarray:
        return int(np.count_nonzero(np.argmax(x, axis=1) == labels))
    xp = _backend.namespace_of(x)
    return int(xp.count_nonzero(xp.argmax(x, axis=1) == labels))


def _not_finite(model: Module) -> str | None:
    """The name of the first parameter holding NaN or Inf, or None."""
    for name, p in model.named_parameters():
        w = p.data
        if type(w) is np.ndarray:
            if not np.isfinite(w).all():
                return name
            continue
        xp = _backend.namespace_of(w)
        if not bool(xp.all(xp.isfinite(w))):
            return name
    return None


class Trainer:
    """Mini-batch training of a classifier with per-epoch evaluation and checkpoints.

    Args:
        model: maps x (S, D) to logits (S, T).
        optimizer: over ``model.parameters()``.
        batch_size: S per step (the last batch of an epoch may be smaller).
        data_seed: seeds the shuffling: epoch e uses ``default_rng([data_seed, e])``.
        loss_fn: ``loss_fn(logits, labels)`` -> a 0-d Tensor (default: cross-entropy).
        eval_batch_size: batch size for evaluation (no gradients, so larger).
        run_dir: write a checkpoint to ``run_dir/checkpoints/epoch-NNNN`` after every epoch.
        keep_checkpoints: how many epoch checkpoints to keep.
        checkpoint_extra: more entries for each ``checkpoint.json`` (config, seeds ...).
        progress: show a tqdm progress bar per epoch (loss and throughput) when stderr is a
            terminal and tqdm is installed.
        log: called with one line per epoch (default: the ``graphgrad.train`` logger at
            INFO level, shown only where logging is configured); None for silence.
        callbacks: ``cb(trainer, record)`` after each epoch (and its checkpoint).
        lr_schedule: ``"constant"`` or ``"cosine"`` (over all steps of ``fit``'s epochs;
            see :func:`lr_factor`). Resuming an interrupted run reproduces it exactly; a
            cosine run extended to more epochs follows the new, longer schedule.
        base_lr: the learning rate the schedule scales (default: the optimiser's lr now).
        device: train there (``"cpu"``, ``"cuda"``, ``"array-api-strict"`` ...): the model is
            moved there (in place; the optimiser's state follows) and every batch is copied
            there; None: wherever the model is (``model.device``).
        compiled: on the cpu device, take each step with :func:`graphgrad.compile_step`
            where it compiles the model, loss and optimiser (the same numbers bit for bit,
            without the graph's overhead); False: always the eager step.

    Attributes:
        epoch: epochs completed.
        step: optimiser steps taken.
        step_engine: ``"compiled"`` if the steps run a compiled plan, else ``"eager"``;
            ``why_eager`` says why not (the :class:`~graphgrad.compiled.CompileError`).
        history: one dict per completed epoch: ``epoch, step, train_loss, train_accuracy,
            eval_loss, eval_accuracy, eval_split, seconds, samples_per_second, lr``.
    """

    def __init__(
        self,
        model: Module,
        optimizer: Optimizer,
        *,
        batch_size: int,
        data_seed: int = 0,
        loss_fn: LossFn = cross_entropy,
        eval_batch_size: int = 1000,
        run_dir: str | os.PathLike[str] | None = None,
        keep_checkpoints: int = 1,
        checkpoint_extra: dict[str, Any] | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = _log_info,
        callbacks: Sequence[Callable[[Trainer, dict[str, Any]], None]] = (),
        lr_schedule: str = "constant",
        base_lr: float | None = None,
        device: str | _backend.Device | None = None,
        compiled: bool = True,
    ) -> None:
        lr_factor(lr_schedule, 0, 1)  # validates the name
        for name, value, lo in (
            ("batch_size", batch_size, 1),
            ("data_seed", data_seed, 0),
            ("eval_batch_size", eval_batch_size, 1),
            ("keep_checkpoints", keep_checkpoints, 1),  # (0 would delete the one just written)
        ):
            check_int("Trainer", name, value, lo)
        if device is not None:
            model.to(device)
        self.device = model.device
        self.model = model
        self.optimizer = optimizer
        self.batch_size = int(batch_size)
        self.data_seed = int(data_seed)
        self.loss_fn = loss_fn
        self.eval_batch_size = int(eval_batch_size)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.keep_checkpoints = int(keep_checkpoints)
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.progress = progress
        self.log: Callable[[str], None] = log if log is not None else _silent
        self.callbacks = list(callbacks)
        self.lr_schedule = lr_schedule
        self.base_lr = float(base_lr if base_lr is not None else optimizer.lr)
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.last_checkpoint: Path | None = None
        self._compiled: CompiledStep | None = None
        self.why_eager = "compiled=False" if not compiled else plans_unavailable()
        if compiled and not self.device.is_cpu:
            self.why_eager = f"the model is on {self.device}: plans run on the cpu device"
        elif not self.why_eager:
            try:
                self._compiled = CompiledStep(model, optimizer, loss_fn)
            except CompileError as e:
                self.why_eager = str(e)

    @property
    def step_engine(self) -> str:
        """``"compiled"`` if the steps run a compiled plan, else ``"eager"``."""
        return "compiled" if self._compiled is not None else "eager"

    # ------------------------------------------------------------------ state
    def resume_from(self, checkpoint: ckpt.Checkpoint | str | os.PathLike[str]) -> None:
        """Load weights, optimiser state, epoch, step and history from a checkpoint."""
        c = (
            checkpoint
            if isinstance(checkpoint, ckpt.Checkpoint)
            else ckpt.load_checkpoint(checkpoint)
        )
        self.model.load_state_dict(c.weights)
        if c.optimizer is None:
            raise ckpt.CheckpointError(f"{c.path}: holds no optimizer state; cannot resume")
        self.optimizer.load_state_dict(c.optimizer)
        self.epoch, self.step = c.epoch, c.step
        self.history = list(c.meta.get("history", []))
        self.last_checkpoint = c.path

    def save_checkpoint(self) -> Path:
        """Write ``run_dir/checkpoints/epoch-NNNN`` now (and prune older ones)."""
        if self.run_dir is None:
            raise RunError("Trainer.save_checkpoint: no run_dir was given")
        base = self.run_dir / "checkpoints"
        base.mkdir(parents=True, exist_ok=True)
        extra = {
            **self.checkpoint_extra,
            "history": self.history,
            "rng": {
                "data_seed": self.data_seed,
                "shuffle": "epoch e: numpy.random.default_rng([data_seed, e]).permutation(S)",
                "next_epoch": self.epoch,
            },
        }
        path = ckpt.save_checkpoint(
            base / f"epoch-{self.epoch:04d}",
            self.model,
            self.optimizer,
            epoch=self.epoch,
            step=self.step,
            extra=extra,
        )
        ckpt.prune_checkpoints(self.run_dir, self.keep_checkpoints)
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------ training
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epochs: int,
        eval_data: tuple[np.ndarray, np.ndarray] | None = None,
        eval_split: str = "eval",
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are complete (counting those already done).

        Args:
            x: (S, D) training inputs.
            y: (S,) integer labels.
            epochs: the total number of epochs (after :meth:`resume_from`, the remaining
                ones are run).
            eval_data: (x, y) evaluated after every epoch.
            eval_split: its name in the history and logs ("val", "test").

        Returns:
            The history (also in ``self.history``).

        Raises:
            TrainingDiverged: the training loss, a weight or the evaluation loss became NaN
                or infinite (the message says where; no checkpoint of the diverged weights is
                written, the last one is from before).
        """
        from .data import DataLoader

        if len(x) != len(y):
            raise ValueError(f"fit: {len(x)} inputs but {len(y)} labels")
        loader = DataLoader(
            (x, y), self.batch_size, shuffle=True, seed=self.data_seed, device=self.device
        )
        while self.epoch < epochs:
            loader.set_epoch(self.epoch)
            # Overflow/NaN are caught by the loss check with a clear message (TrainingDiverged);
            # NumPy's RuntimeWarnings on the way there would only add noise.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                record = self._train_epoch(loader, epochs)
            self._check_weights()
            if eval_data is not None:
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    ev = evaluate(self.model, *eval_data, self.eval_batch_size, self.loss_fn)
                self._check_eval_loss(ev.loss, eval_split)
                record.update(eval_loss=ev.loss, eval_accuracy=ev.accuracy, eval_split=eval_split)
            self.history.append(record)
            self.log(epoch_line(record, epochs))
            if self.run_dir is not None:
                self.save_checkpoint()
            for cb in self.callbacks:
                cb(self, record)
        return self.history

    def _check_weights(self) -> None:
        """Raise TrainingDiverged if a weight holds NaN/Inf (after an epoch's last update)."""
        bad = _not_finite(self.model)
        if bad is not None:
            raise TrainingDiverged(
                f"parameter {bad} holds NaN/Inf after epoch {self.epoch} (optimizer step "
                f"{self.step}): the last updates diverged; training stopped. {self._advice()}"
            )

    def _check_eval_loss(self, loss: float, split: str) -> None:
        """Raise TrainingDiverged if an evaluation loss is NaN/Inf."""
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the {split} loss is {loss} after epoch {self.epoch} (optimizer step "
                f"{self.step}); training stopped. {self._advice()}"
            )

    def _advice(self) -> str:
        return (
            f"The last checkpoint is from before ({self.last_checkpoint or 'none written'}). "
            f"Try a smaller learning rate (now {self.optimizer.lr:g})."
        )

    def _train_epoch(self, loader: Any, epochs: int) -> dict[str, Any]:
        if not self.device.is_cpu:
            return self._train_epoch_on_device(loader, epochs)
        model, opt, loss_fn = self.model, self.optimizer, self.loss_fn
        compiled = self._compiled  # each step one call of a compiled plan: the same numbers
        schedule, base_lr, total = self.lr_schedule, self.base_lr, epochs * len(loader)
        at0 = self.epoch * len(loader)  # the schedule's place: this epoch's first batch
        model.train()
        e = self.epoch + 1
        bar = progress_bar(len(loader), f"epoch {e}/{epochs}", self.progress)
        seen, correct, loss_sum = 0, 0, 0.0
        t0 = time.perf_counter()
        try:
            for b, (xb, yb) in enumerate(loader):
                loss: Tensor | None = None
                if compiled is not None:
                    self._set_lr(schedule, base_lr, at0 + b, total)
                    value = compiled(xb, yb, skip_nonfinite=True)  # no update if not finite
                    logits = compiled.logits
                else:
                    out = model(xb)
                    loss = loss_fn(out, _labels(yb))
                    value, logits = float(loss.data), out.data
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"the training loss is {value} at epoch {e}, batch {b + 1} of "
                        f"{len(loader)} (optimizer step {self.step + 1}); training stopped. "
                        f"{self._advice()}"
                    )
                if loss is not None:
                    opt.zero_grad()
                    loss.backward()
                    self._optimizer_step(schedule, base_lr, at0 + b, total)
                else:
                    self.step += 1
                n = int(yb.shape[0])
                seen += n
                loss_sum += value * n
                correct += _count_correct(logits, yb)
                show_progress(bar, b, seen, loss_sum, t0)
        finally:
            if bar is not None:
                bar.close()
        return self._epoch_record(seen, loss_sum, correct, t0)

    def _train_epoch_on_device(self, loader: Any, epochs: int) -> dict[str, Any]:
        """The epoch on a device other than the CPU, without a host synchronisation per step:
        each step's loss and count of correct predictions stay on the device and come back
        together at the end of the epoch (and every 20 steps for a progress bar). A NaN/Inf
        loss is then reported with its batch, as on the CPU, but only after the epoch: the
        steps after it ran on diverged weights, and no checkpoint is written of them."""
        model, opt, loss_fn = self.model, self.optimizer, self.loss_fn
        schedule, base_lr, total = self.lr_schedule, self.base_lr, epochs * len(loader)
        at0 = self.epoch * len(loader)
        model.train()
        e = self.epoch + 1
        first_step = self.step
        bar = progress_bar(len(loader), f"epoch {e}/{epochs}", self.progress)
        losses: list[Any] = []
        counts: list[Any] = []
        sizes: list[int] = []
        seen = 0
        xp: Any = None
        t0 = time.perf_counter()
        try:
            for b, (xb, yb) in enumerate(loader):
                logits = model(xb)
                loss = loss_fn(logits, _labels(yb))
                opt.zero_grad()
                loss.backward()
                self._optimizer_step(schedule, base_lr, at0 + b, total)
                xp = xp or _backend.namespace_of(logits.data)
                losses.append(loss.data)
                counts.append(xp.count_nonzero(xp.argmax(logits.data, axis=1) == yb))
                sizes.append(int(yb.shape[0]))
                seen += sizes[-1]
                if bar is not None:
                    running = float(losses[-1]) * seen if b % 20 == 0 else 0.0
                    show_progress(bar, b, seen, running, t0)
        finally:
            if bar is not None:
                bar.close()
        if not losses:
            return self._epoch_record(0, 0.0, 0, t0)
        values = _backend.to_numpy(xp.stack(losses)).astype(np.float64)
        correct = int(_backend.to_numpy(xp.stack(counts)).sum())
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            b = int(bad[0])
            raise TrainingDiverged(
                f"the training loss is {values[b]} at epoch {e}, batch {b + 1} of "
                f"{len(loader)} (optimizer step {first_step + b + 1}); training stopped. "
                f"{self._advice()}"
            )
        n = np.asarray(sizes, dtype=np.float64)
        return self._epoch_record(int(n.sum()), float(values @ n), correct, t0)

    def _set_lr(self, schedule: str, base_lr: float, at: int, total: int) -> None:
        """The optimiser's rate at batch ``at`` of the run's ``total`` (epochs x batches per
        epoch of this loader): the schedule follows the share of the run done, so a run
        resumed with another batch size goes on where it was (not from its step count,
        which counts the old batches)."""
        if schedule != "constant":
            self.optimizer.lr = base_lr * lr_factor(schedule, at, total)

    def _optimizer_step(self, schedule: str, base_lr: float, at: int, total: int) -> None:
        """One update at the schedule's rate for batch ``at`` of ``total``."""
        self._set_lr(schedule, base_lr, at, total)
        self.optimizer.step()
        self.step += 1

    def _epoch_record(
        self, seen: int, loss_sum: float, correct: float, t0: float
    ) -> dict[str, Any]:
        """Close the epoch: count it and return its history record (no evaluation yet)."""
        seconds = time.perf_counter() - t0
        self.epoch += 1
        return {
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "eval_loss": None,
            "eval_accuracy": None,
            "eval_split": None,
            "seconds": seconds,
            "samples_per_second": seen / max(seconds, 1e-9),
            "lr": self.optimizer.lr,
        }


def show_progress(bar: Any, b: int, seen: int, loss_sum: float, t0: float) -> None:
    """Advance the epoch's progress bar (if any) by one step; every 20 steps, show the running
    loss and the samples per second."""
    if bar is not None:
        bar.update(1)
        if b % 20 == 0:
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", samples_s=f"{rate:,.0f}")


def _silent(line: str) -> None:
    """A log that drops every line."""


def epoch_line(r: dict[str, Any], epochs: int) -> str:
    text = (
        f"epoch {r['epoch']}/{epochs}  train loss {r['train_loss']:.4f} "
        f"acc {100 * r['train_accuracy']:.2f}%"
    )
    if r.get("eval_accuracy") is not None:
        text += f"  {r['eval_split']} loss {r['eval_loss']:.4f} acc {100 * r['eval_accuracy']:.2f}%"
    return text + f"  {r['seconds']:.1f} s ({r['samples_per_second']:,.0f} samples/s)"


def fit(
    model: Module,
    optimizer: Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    data_seed: int = 0,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    loss_fn: LossFn = cross_entropy,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place for ``epochs`` epochs; returns the history.

    A :class:`Trainer` without checkpoints or progress bars (see it for the arguments).
    """
    trainer = Trainer(
        model,
        optimizer,
        batch_size=batch_size,
        data_seed=data_seed,
        loss_fn=loss_fn,
        progress=progress,
        log=log if log is not None else (lambda _line: None),
    )
    return trainer.fit(x, y, epochs, eval_data)


# ------------------------------------------------------------------------- data, model


@dataclass
class DataSplits:
    """Arrays for a run: training, per-epoch evaluation and final test data.

    Attributes:
        x_train, y_train: (S, D) float, (S,) int64.
        x_eval, y_eval: evaluated after each epoch: a validation split or the test set.
        eval_split: ``"val"`` or ``"test"``.
        x_test, y_test: the test set.
        classes: the T class names.
        image_shape: (28, 28), (3, 32, 32), or None for non-image data.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    eval_split: str
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    image_shape: tuple[int, ...] | None
    source: str = ""

    @property
    def num_features(self) -> int:
        """D."""
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        """T."""
        return len(self.classes)


def _subset(n: int, k: int, seed: int, salt: int) -> np.ndarray:
    """k of n indices, chosen by ``default_rng([seed, salt])``, in increasing order."""
    return np.sort(np.random.default_rng([seed, salt]).permutation(n)[:k])


def load_data(
    cfg: DataConfig,
    dtype: Any = np.float32,
    *,
    with_train: bool = True,
    check_subsets: bool = False,
) -> DataSplits:
    """Load the data set a config names, as float (S, D) inputs in [0, 1] and int64 labels.

    Image pixels are scaled by 1/255; toy sets are drawn from ``default_rng([seed, 1000])``
    (training) and ``[seed, 1001]`` (test). Subsets and the validation split are chosen by
    generators derived from ``cfg.seed`` too, so the data are a function of the config.

    Args:
        check_subsets: refuse a ``train_subset`` or ``test_subset`` larger than the split it
            is drawn from (a new run does; otherwise such a subset is the whole split).

    Raises:
        graphgrad.data.DatasetNotFoundError: the files are not there (the message says how
            to get them).
        ConfigError: with ``check_subsets``, a subset larger than its split.
    """
    from . import data as D

    image_shape: tuple[int, ...] | None
    if cfg.dataset in TOY_DATASETS:
        fn = getattr(D, cfg.dataset)
        x_tr, y_tr = fn(cfg.toy_samples, rng=np.random.default_rng([cfg.seed, 1000]))
        x_te, y_te = fn(max(cfg.toy_samples // 4, 4), rng=np.random.default_rng([cfg.seed, 1001]))
        t = int(max(y_tr.max(), y_te.max())) + 1
        classes: tuple[str, ...] = tuple(str(i) for i in range(t))
        image_shape, source = None, f"{cfg.dataset} (toy, seed {cfg.seed})"
    else:
        root = cfg.root or None
        if cfg.dataset == "cifar10":
            cls: Any = D.CIFAR10
            image_shape = (3, 32, 32)
        else:
            cls = D.FashionMNIST if cfg.dataset == "fashion-mnist" else D.MNIST
            image_shape = (28, 28)
        test = cls(root, train=False)
        x_te, y_te = test.arrays()
        if with_train:
            train = cls(root, train=True)
            x_tr, y_tr = train.arrays()
        else:
            x_tr, y_tr = x_te[:0], y_te[:0]
        classes = tuple(test.classes)
        source = str(getattr(test, "folder", getattr(test, "source", "")))
    if check_subsets:
        toy = " (data.toy_samples sets how many are drawn)" if cfg.dataset in TOY_DATASETS else ""
        splits = [("test_subset", cfg.test_subset, len(y_te), "test")]
        if with_train:
            splits.insert(0, ("train_subset", cfg.train_subset, len(y_tr), "training"))
        for key, want, have, split in splits:
            if want > have:
                raise ConfigError(
                    f"data.{key} = {want:,} is more than the {have:,} {split} samples of "
                    f"{cfg.dataset}{toy}; give at most {have:,}, or 0 for all of them"
                )
    if cfg.train_subset and cfg.train_subset < len(y_tr):
        idx = _subset(len(y_tr), cfg.train_subset, cfg.seed, 2)
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    if cfg.test_subset and cfg.test_subset < len(y_te):
        idx = _subset(len(y_te), cfg.test_subset, cfg.seed, 3)
        x_te, y_te = x_te[idx], y_te[idx]
    x_tr = np.ascontiguousarray(x_tr, dtype=dtype)
    x_te = np.ascontiguousarray(x_te, dtype=dtype)
    y_tr, y_te = y_tr.astype(np.int64, copy=False), y_te.astype(np.int64, copy=False)
    if cfg.val_fraction > 0 and with_train:
        tr, va = D.train_val_split(
            len(y_tr), cfg.val_fraction, np.random.default_rng([cfg.seed, 4])
        )
        if len(tr) == 0 or len(va) == 0:
            raise ConfigError(
                f"data.val_fraction = {cfg.val_fraction} splits {len(y_tr):,} training samples "
                f"into {len(tr):,} for training and {len(va):,} for validation; both need some"
            )
        x_ev, y_ev = x_tr[va], y_tr[va]
        x_tr, y_tr = x_tr[tr], y_tr[tr]
        split = "val"
    else:
        x_ev, y_ev, split = x_te, y_te, "test"
    return DataSplits(x_tr, y_tr, x_ev, y_ev, split, x_te, y_te, classes, image_shape, source)


def build_model(
    cfg: ModelConfig,
    in_features: int,
    out_features: int,
    dtype: Any = np.float32,
    device: str | _backend.Device | None = None,
) -> MLP:
    """The MLP a config describes, its weights drawn from ``default_rng(cfg.seed)`` (on the
    host, then copied to ``device``: the same weights on every device).

    Raises:
        ConfigError: more than :data:`~graphgrad.config.MAX_PARAMETERS` parameters (checked
            before anything is allocated).
    """
    hidden: tuple[int, ...] = () if cfg.kind == "linear" else cfg.hidden
    check_model_size(in_features, hidden, out_features, "model")
    return MLP(
        in_features,
        hidden,
        out_features,
        cfg.activation,
        init=cfg.init,
        std=cfg.init_std if cfg.init == "normal" else None,
        rng=np.random.default_rng(cfg.seed),
        dtype=dtype,
        device=device,
    )


def build_optimizer(cfg: OptimConfig, params: Sequence[Tensor]) -> Optimizer:
    """The optimiser a config describes."""
    return make_optimizer(
        cfg.name,
        params,
        cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        nesterov=cfg.nesterov,
    )


def model_from_checkpoint(
    checkpoint: ckpt.Checkpoint | str | os.PathLike[str],
    device: str | _backend.Device | None = None,
) -> tuple[MLP, RunConfig, dict[str, Any]]:
    """Rebuild the model saved in a checkpoint (or a run directory's newest one), on
    ``device`` (default cpu, wherever it was saved from).

    Returns:
        (model with the saved weights, the run's config, the ``model`` entry of
        ``checkpoint.json``: sizes, classes, image shape).
    """
    c = checkpoint if isinstance(checkpoint, ckpt.Checkpoint) else ckpt.load_checkpoint(checkpoint)
    where = str(c.path / ckpt.CHECKPOINT_JSON)
    if c.config is None or not isinstance(c.meta.get("model"), dict):
        raise ckpt.CheckpointError(
            f"{where}: no config/model entry; it was not written by graphgrad train"
        )
    try:
        cfg = RunConfig.from_dict(c.config, where)
    except ConfigError as e:
        raise ckpt.CheckpointError(f"invalid config in the checkpoint: {e}") from None
    info = c.meta["model"]
    dims = []
    for key in ("in_features", "out_features"):
        v = info.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000_000:
            raise ckpt.CheckpointError(f"{where}: model.{key} must be an integer >= 1, got {v!r}")
        dims.append(v)
    classes = info.get("classes")
    if not (isinstance(classes, list) and len(classes) == dims[1]):
        raise ckpt.CheckpointError(
            f"{where}: model.classes must list {dims[1]} class names, got {classes!r:.80}"
        )
    try:
        check_model_size(dims[0], () if cfg.model.kind == "linear" else cfg.model.hidden,
                         dims[1], where)  # fmt: skip
    except ConfigError as e:
        raise ckpt.CheckpointError(str(e)) from None
    dtype = np.dtype(cfg.train.dtype)
    dev = _backend.parse_device(device)
    model = build_model(cfg.model, dims[0], dims[1], dtype)
    want = {n: tuple(p.shape) for n, p in model.named_parameters()}
    got = {n: tuple(np.shape(a)) for n, a in c.weights.items()}
    if want != got:
        diff = [f"{n}: {got.get(n)} vs {want.get(n)}" for n in sorted({*want, *got})
                if want.get(n) != got.get(n)]  # fmt: skip
        raise ckpt.CheckpointError(
            f"{c.path / ckpt.MODEL_FILE}: the weights do not fit the model that {where} "
            f"describes (saved vs expected shape): {'; '.join(diff[:4])}"
        )
    model.load_state_dict(c.weights)
    if not dev.is_cpu:
        model.to(dev)
    return model, cfg, info


# -------------------------------------------------------------------------- whole runs


@dataclass
class RunResult:
    """What :func:`run_training` produced."""

    run_dir: Path
    model: MLP
    history: list[dict[str, Any]]
    test: EvalResult
    checkpoint: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def _prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and its parents), or raise RunError saying why it cannot be."""
    for p in (run_dir, *run_dir.parents):
        if p.exists() and not p.is_dir():
            what = "--out" if p == run_dir else f"{p} (a parent of {run_dir})"
            raise RunError(f"{what} is a file, not a directory; choose another --out")
        if p.exists():
            break
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the run directory {run_dir}: {e.strerror or e}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunError(f"the run directory {run_dir} is not writable; choose another --out")


def check_run_dependencies(plots: bool = True) -> None:
    """What :func:`run_training` needs, checked before any work: safetensors (checkpoints);
    matplotlib only for figures (without it the figures are skipped, with a message);
    tqdm is optional (no progress bars without it).

    Raises:
        graphgrad._extras.MissingExtraError: naming the ``train`` extra.
    """
    require_extra("training (checkpoints)", ["safetensors"])


def run_training(
    cfg: RunConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    plots: bool = True,
    log: Callable[[str], None] | None = _log_info,
    trainer_class: Callable[..., Trainer] = Trainer,
) -> RunResult:
    """Train, evaluate and report as ``cfg`` says; everything goes into the directory ``out``.

    ``out`` receives ``config.toml`` (the resolved config: ``graphgrad train --config
    out/config.toml`` reproduces the run), ``run.json`` (seeds, library versions, data),
    ``checkpoints/epoch-NNNN/`` after every epoch (the newest ``train.keep_checkpoints`` are
    kept), ``metrics.json`` (history, test results, confusion matrix, ``status``) and the
    figures ``curves.png``, ``confusion_matrix.png`` and, for images, ``first_layer.png``.
    While the run lasts, ``out/.lock`` keeps a second run out of the folder.

    Args:
        cfg: the run's configuration.
        out: the run directory.
        resume: continue from the newest checkpoint in ``out`` (of a run that stopped
            before its first checkpoint: start its ``config.toml`` again from epoch 0); only
            ``train.epochs`` (not below the epochs done) and ``train.device`` may differ
            from the config the run was started with. Without it, ``out`` must be new or
            empty (dot files aside).
        progress: tqdm progress bars (on a terminal, if tqdm is installed).
        plots: write the PNG figures (skipped with a message if matplotlib is missing).
        log: receives the results: one line per epoch and the final test line (default:
            the ``graphgrad.train`` logger at INFO); None for silence. Diagnostics go to
            that logger.
        trainer_class: builds the Trainer (``graphgrad.distributed`` passes its own).

    Raises:
        RunError: ``out`` cannot be created or written, is not empty or already holds a
            run (without ``resume``), nothing to resume, a config that differs from the
            checkpoint's, or fewer ``train.epochs`` than the checkpoint has done. All checked
            before anything is written.
        ConfigError: a data subset larger than its split (a new run).
        RunLockedError: another process is training into ``out``.
        TrainingDiverged: NaN/Inf training, evaluation or test loss, or weights;
            ``metrics.json`` records ``status: "diverged"`` and the history until then.
        MissingExtraError: safetensors (the ``train`` extra) is not installed.
        graphgrad.errors.DeviceUnavailableError: ``train.device`` names a device whose
            library or hardware is missing (checked before anything is read or written).
    """
    say: Callable[[str], None] = log if log is not None else _silent
    check_run_dependencies(plots)
    _backend.parse_device(cfg.train.device)
    if plots and not has_module("matplotlib"):
        logger.warning("no figures: matplotlib is not installed (pip install 'graphgrad[train]')")
        plots = False
    run_dir = Path(out)
    created = not run_dir.exists()
    _prepare_run_dir(run_dir)
    try:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(run_lock(run_dir))
            except OSError as e:  # RunLockedError is no OSError: it passes
                raise RunError(f"cannot write into {run_dir}: {e.strerror or e}") from None
            return _run_locked(cfg, run_dir, resume, progress, plots, say, trainer_class)
    except BaseException:
        if created:  # a run that failed before writing anything leaves no empty folder
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    raise AssertionError("unreachable")  # pragma: no cover (mypy: ExitStack may swallow)


#: What a run writes into its directory (besides ``.lock`` and temporary dot files).
RUN_FILES = (
    "config.toml",
    "run.json",
    "metrics.json",
    "checkpoints",
    "curves.png",
    "confusion_matrix.png",
    "first_layer.png",
)


def _listing(names: Sequence[str], limit: int = 3) -> str:
    from ._quote import excerpt

    shown = ", ".join(excerpt(n, width=40, quote=False) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _changed_fields(saved: RunConfig, cfg: RunConfig) -> list[str]:
    """The differences a resumed run may not have (all but train.epochs and train.device)."""
    return [d for d in saved.diff(cfg) if not d.startswith(("train.epochs:", "train.device:"))]


def _refuse_changes(run_dir: Path, saved: RunConfig, cfg: RunConfig) -> None:
    changed = _changed_fields(saved, cfg)
    if changed:
        raise RunError(
            f"{run_dir}: cannot resume with a different configuration (only "
            f"train.epochs and train.device may change): {'; '.join(changed)}"
        )


def _stopped_before_first_checkpoint(run_dir: Path) -> RunConfig | None:
    """The recorded configuration of a run in ``run_dir`` that stopped (Ctrl-C, kill) before
    it wrote its first checkpoint: ``config.toml`` and ``run.json`` as a run writes them
    before training, no ``metrics.json`` (a run that ended wrote one) and no epoch
    checkpoint. None if ``run_dir`` holds no such run."""
    from .config import load_config

    if ckpt.latest_checkpoint(run_dir) is not None or (run_dir / "metrics.json").exists():
        return None
    toml, record = run_dir / "config.toml", run_dir / "run.json"
    if not (toml.is_file() and record.is_file()):
        return None
    try:
        if record.stat().st_size > 16 << 20:  # a run's run.json is a few kB
            return None
        info = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not (isinstance(info, dict) and isinstance(info.get("config"), dict)):
        return None
    return load_config(toml)  # ConfigError names the file if it is not valid


def _check_fresh_run_dir(run_dir: Path) -> None:
    """Refuse to start a run in a folder that holds anything but dot files (the lock)."""
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is not None:
        raise RunError(
            f"{run_dir} already holds a run (checkpoint {latest.name}); pass --resume to "
            f"continue it, or choose another --out"
        )
    entries = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    ours = [n for n in entries if n in RUN_FILES]
    if ours:
        try:
            stopped = _stopped_before_first_checkpoint(run_dir) is not None
        except ConfigError:
            stopped = False
        if stopped:
            raise RunError(
                f"{run_dir} already holds a run that stopped before its first checkpoint "
                f"({_listing(ours)}); pass --resume to start it again from epoch 0, or choose "
                f"another --out"
            )
        raise RunError(
            f"{run_dir} already holds a run's files ({_listing(ours)}), and no checkpoint to "
            f"resume from; choose another --out (nothing in it was changed)"
        )
    if entries:
        raise RunError(
            f"{run_dir} is not empty ({_listing(entries)}) and holds no graphgrad run; choose "
            f"a new or empty folder for --out"
        )


def _run_locked(
    cfg: RunConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    plots: bool,
    say: Callable[[str], None],
    trainer_class: Callable[..., Trainer],
) -> RunResult:
    latest = ckpt.latest_checkpoint(run_dir)
    start: ckpt.Checkpoint | None = None
    if resume and latest is not None:
        start = ckpt.load_checkpoint(latest)
        if start.config is not None:
            _refuse_changes(
                run_dir, RunConfig.from_dict(start.config, str(latest / ckpt.CHECKPOINT_JSON)), cfg
            )
        if cfg.train.epochs < start.epoch:
            raise RunError(
                f"{run_dir} has trained {start.epoch} epochs already (checkpoint {latest.name}); "
                f"train.epochs (--epochs) is {cfg.train.epochs} but must be at least "
                f"{start.epoch} to resume it; nothing was changed"
            )
    elif resume:
        recorded = _stopped_before_first_checkpoint(run_dir)
        if recorded is None:
            raise RunError(
                f"{run_dir}: nothing to resume: it holds no checkpoints/epoch-NNNN, nor the "
                f"config.toml and run.json of a run that stopped before its first checkpoint; "
                f"check --out"
            )
        _refuse_changes(run_dir, recorded, cfg)
        logger.info(
            f"resuming {run_dir}: it stopped before its first checkpoint, so its recorded "
            f"configuration (config.toml) starts again from epoch 0"
        )
    else:
        _check_fresh_run_dir(run_dir)
    dtype = np.dtype(cfg.train.dtype)
    device = _backend.parse_device(cfg.train.device)
    data = load_data(cfg.data, dtype, check_subsets=not resume)
    model = build_model(cfg.model, data.num_features, data.num_classes, dtype, device)
    atomic_write_text(run_dir / "config.toml", cfg.to_toml())
    optimizer = build_optimizer(cfg.optim, model.parameters())
    seeds = {"model.seed": cfg.model.seed, "data.seed": cfg.data.seed}
    model_info = {
        "in_features": data.num_features,
        "out_features": data.num_classes,
        "sizes": list(model.sizes),
        "activation": model.activation_name,
        "classes": list(data.classes),
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "dataset": cfg.data.dataset,
    }
    versions = ckpt.library_versions()
    _write_json(
        run_dir / "run.json",
        {
            "config": cfg.to_dict(),
            "seeds": seeds,
            "device": str(device),
            "versions": versions,
            "model": model_info,
            "num_parameters": model.num_parameters(),
            "data": {
                "source": data.source,
                "train_samples": len(data.y_train),
                "eval_samples": len(data.y_eval),
                "eval_split": data.eval_split,
                "test_samples": len(data.y_test),
            },
        },
    )
    trainer = trainer_class(
        model,
        optimizer,
        batch_size=cfg.train.batch_size,
        data_seed=cfg.data.seed,
        eval_batch_size=cfg.train.eval_batch_size,
        run_dir=run_dir,
        keep_checkpoints=cfg.train.keep_checkpoints,
        lr_schedule=cfg.train.lr_schedule,
        base_lr=cfg.optim.lr,
        checkpoint_extra={"config": cfg.to_dict(), "seeds": seeds, "model": model_info},
        progress=progress,
        log=say,
        device=device,
    )
    if start is not None:
        trainer.resume_from(start)
        logger.info(
            f"resuming {run_dir} from {start.path.name} (epoch {start.epoch}, step {start.step})"
        )
    logger.info(
        f"training {model.num_parameters():,} parameters {list(model.sizes)} on "
        f"{len(data.y_train):,} samples of {cfg.data.dataset} on {device}; evaluating on "
        f"{len(data.y_eval):,} ({data.eval_split})"
    )
    steps = "a compiled plan" if trainer.step_engine == "compiled" else "the eager step"
    logger.info(
        f"each step: {steps}"
        + (f" ({trainer.why_eager})" if trainer.step_engine != "compiled" else "")
    )
    base = {
        "config": cfg.to_dict(),
        "seeds": seeds,
        "versions": versions,
        "model": model_info,
        "device": str(device),
        "step_engine": trainer.step_engine,
    }
    try:
        trainer.fit(
            data.x_train,
            data.y_train,
            cfg.train.epochs,
            (data.x_eval, data.y_eval),
            data.eval_split,
        )
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            test = evaluate(model, data.x_test, data.y_test, cfg.train.eval_batch_size)
        if not math.isfinite(test.loss):
            raise TrainingDiverged(
                f"the test loss is {test.loss} after {trainer.epoch} epochs; the run did not "
                f"complete. {trainer._advice()}"
            )
    except TrainingDiverged as e:
        _write_json(
            run_dir / "metrics.json",
            {**base, "status": "diverged", "error": str(e), "history": trainer.history},
        )
        raise
    cm = confusion_matrix(test.predictions, data.y_test, data.num_classes)
    secs = [h["seconds"] for h in trainer.history]
    metrics = {
        **base,
        "status": "completed",
        "world_size": getattr(trainer, "world_size", 1),
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "test": {"loss": test.loss, "accuracy": test.accuracy, "samples": len(data.y_test)},
        "train": {
            "loss": trainer.history[-1]["train_loss"] if trainer.history else None,
            "accuracy": trainer.history[-1]["train_accuracy"] if trainer.history else None,
        },
        "timing": {
            "mean_epoch_seconds": float(np.mean(secs)) if secs else None,
            "total_seconds": float(np.sum(secs)),
        },
        "history": trainer.history,
        "classes": list(data.classes),
        "confusion_matrix": cm.tolist(),
        "checkpoint": str(trainer.last_checkpoint) if trainer.last_checkpoint else None,
    }
    _write_json(run_dir / "metrics.json", metrics)
    say(
        f"test accuracy {100 * test.accuracy:.2f}% (loss {test.loss:.4f}) on "
        f"{len(data.y_test):,} samples; results in {run_dir}"
    )
    if plots:
        _write_plots(run_dir, cfg, model, trainer.history, cm, data)
    return RunResult(run_dir, model, trainer.history, test, trainer.last_checkpoint, metrics)


def _write_plots(
    run_dir: Path,
    cfg: RunConfig,
    model: MLP,
    history: list[dict[str, Any]],
    cm: np.ndarray,
    data: DataSplits,
) -> None:
    try:
        from . import plots
    except ImportError as e:  # pragma: no cover
        logger.warning(f"no figures: {e}")
        return
    title = f"{cfg.name or run_dir.name}: {'-'.join(map(str, model.sizes))} {model.activation_name}"
    try:
        plots.plot_history(history, run_dir / "curves.png", title)
        plots.plot_confusion_matrix(cm, data.classes, run_dir / "confusion_matrix.png", title)
        if data.image_shape is not None and len(model.sizes) >= 2:
            first = _backend.to_numpy(model.linear_layers()[0].weight.data)
            templates = len(model.sizes) == 2  # a linear classifier: one template per class
            plots.plot_first_layer(
                first, run_dir / "first_layer.png", data.image_shape,
                title="class templates w_t" if templates
                else f"first layer: {min(64, len(first))} of {len(first)} units",
                labels=data.classes if templates else None,
            )  # fmt: skip
    except ImportError as e:
        logger.warning(f"no figures: {e}")
