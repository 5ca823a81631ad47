"""Data-parallel training on MPI: ∇H(θ) computed in parallel for all samples.

The gradient of the mean loss over a mini-batch is the mean of the samples' gradients, so N
processes ("ranks") can each take a share of the batch, compute the gradient of their share,
and average: with shard sizes n_r of a global batch of L = Σ n_r samples,

    ∇L(θ) = Σ_r (n_r / L) · ∇L_r(θ),

one sum over the ranks (MPI ``Allreduce``) per optimiser step. Every rank then holds the same
gradient and takes the same optimiser step, so the weights stay identical on every rank
without ever being sent again. N ranks with B samples each therefore train exactly as one
process with batch N·B (to float rounding: the sums are taken in another order).

Run it with MPI's launcher (``pip install 'graphgrad[distributed]'`` brings ``mpi4py`` and
the ``mpich`` wheel, whose ``mpiexec`` needs no system MPI)::

    mpiexec -n 2 graphgrad train --distributed --dataset fashion-mnist --batch-size 64 ...

or from Python, in a script started with ``mpiexec -n N python script.py``::

    from graphgrad import distributed as dist
    world = dist.init()
    trainer = dist.DistributedTrainer(model, optimizer, batch_size=64, world=world)
    trainer.fit(x_train, y_train, epochs=5)       # every rank: the same arrays, same seeds

What is shared and how:

* **Shards.** Epoch e visits the samples in the order ``default_rng([data_seed, e])
  .permutation(S)`` (the single-process rule); global batch k is positions [k·N·B, (k+1)·N·B)
  of it, and rank r takes the r-th of N near-equal contiguous parts of that batch
  (:func:`shard_bounds`). No data is sent: every rank loads the whole data set.
* **Gradients.** After the backward pass each rank packs its gradients, already weighted by
  n_r / L, into one contiguous buffer (the parameters in order, then the step's loss sum,
  correct count and sample count) and calls one in-place ``Allreduce`` on it; the summed
  buffer is handed to the optimiser as views, without a copy (:class:`GradientReducer`).
* **Output.** Rank 0 alone prints, writes checkpoints (atomically, as always), metrics and
  figures; the history records ``world_size`` and ``global_batch_size``. Other ranks never
  touch the run directory, so it need not be shared between machines. ``--resume`` reads the
  checkpoint on rank 0 and broadcasts weights and optimiser state: any world size resumes.
* **Faults.** An exception on any rank prints ``graphgrad: rank r of N ... failed: ...`` with
  its traceback and calls ``MPI_Abort``, which stops every rank; a rank killed outright is
  reported by ``mpiexec`` (its PID, which rank 0 lists at the start); a rank that makes no
  progress for ``timeout`` seconds (default 300, or ``GRAPHGRAD_DIST_TIMEOUT``) stops the
  job with a message naming itself and where it waits. No failure leaves the others hanging.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import socket
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GraphgradError
from .nn.module import Module
from .optim import Optimizer
from .tensor import Tensor, cross_entropy
from .train import (
    EvalResult,
    RunError,
    RunResult,
    Trainer,
    TrainingDiverged,
    evaluate,
    progress_bar,
    show_progress,
)

__all__ = [
    "INSTALL_HINT",
    "DistributedError",
    "DistributedTrainer",
    "GradientReducer",
    "MPIUnavailableError",
    "World",
    "data_parallel_grads",
    "evaluate_sharded",
    "init",
    "run_training",
    "shard_bounds",
]

#: What to do when mpi4py is missing (one line, shown by ``graphgrad train --distributed``).
INSTALL_HINT = (
    "distributed training needs MPI for Python: pip install 'graphgrad[distributed]' (mpi4py "
    "and the mpich wheel, no system MPI needed), then: mpiexec -n 2 graphgrad train "
    "--distributed ..."
)

#: Seconds without progress after which a rank stops the job (0 or less: never).
DEFAULT_TIMEOUT = 300.0


class MPIUnavailableError(GraphgradError, ImportError):
    """mpi4py (or the MPI library under it) cannot be imported."""


class DistributedError(RunError):
    """A distributed run cannot start or go on: the message names the rank(s) at fault."""


class _SetupFailed(Exception):
    """Another rank reported a failure during set-up; this rank stops quietly."""


# ----------------------------------------------------------------------------- the world


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:  # not installed, or no MPI library under it
        detail = "" if isinstance(e, ImportError) and e.name == "mpi4py" else f" ({e})"
        raise MPIUnavailableError(INSTALL_HINT + detail) from None
    return MPI


class World:
    """The N processes of one job (``MPI.COMM_WORLD`` or a sub-communicator).

    Attributes:
        rank: this process's number, 0 .. size-1.
        size: N, the number of ranks.
        is_root: rank 0, the one that prints and writes files.
        allreduce_seconds: time spent inside gradient Allreduce calls so far.
        allreduce_calls: how many there were.
    """

    def __init__(self, comm: Any, mpi: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.comm = comm
        self._mpi = mpi
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.allreduce_seconds = 0.0
        self.allreduce_calls = 0
        self.setup_agreed = False
        self.training = False
        self._watchdog = _Watchdog(self, timeout) if timeout and timeout > 0 else None
        # Who is who, for the messages about a rank that died: mpiexec reports PIDs.
        self.peers: list[tuple[str, int]] = [
            tuple(p) for p in comm.allgather((self.host, self.pid))
        ]

    @property
    def is_root(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    def describe(self) -> str:
        """One line: the ranks with their PIDs and hosts."""
        ranks = ", ".join(f"{r}: pid {pid} on {host}" for r, (host, pid) in enumerate(self.peers))
        return f"{self.size} MPI rank(s) ({ranks})"

    def label(self) -> str:
        """``rank r of N (pid P on host)``."""
        return f"rank {self.rank} of {self.size} (pid {self.pid} on {self.host})"

    # ------------------------------------------------------------------ collectives
    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        """Sum the contiguous array ``buf`` over all ranks, in place (one MPI Allreduce)."""
        t0 = time.perf_counter()
        with self.waiting("Allreduce"):
            self.comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        self.allreduce_seconds += time.perf_counter() - t0
        self.allreduce_calls += 1
        return buf

    def broadcast(self, obj: Any, root: int = 0) -> Any:
        """``obj`` of rank ``root`` on every rank (pickled)."""
        with self.waiting("Bcast"):
            return self.comm.bcast(obj, root=root)

    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (pickled)."""
        with self.waiting("Allgather"):
            return list(self.comm.allgather(obj))

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        with self.waiting("Barrier"):
            self.comm.Barrier()

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """Mark a collective call for the watchdog (a rank waiting on others is not stuck)."""
        dog = self._watchdog
        if dog is None:
            yield
            return
        dog.enter(what)
        try:
            yield
        finally:
            dog.leave()

    def progress(self) -> None:
        """Tell the watchdog this rank is moving (called once per step)."""
        if self._watchdog is not None:
            self._watchdog.last = time.monotonic()

    # ------------------------------------------------------------------ failure
    def agree(self, error: BaseException | None) -> None:
        """Set-up is over on this rank (``error`` None) or failed; learn how every rank did.

        Raises:
            DistributedError: on rank 0, when any rank failed (naming each).
            _SetupFailed: on the other ranks, when any rank failed.
        """
        self.setup_agreed = True
        if error is not None and self.size == 1:
            raise error
        mine = None if error is None else f"{type(error).__name__}: {error}"
        reports = self.allgather(mine)
        bad = [(r, m) for r, m in enumerate(reports) if m is not None]
        if not bad:
            return
        if not self.is_root:
            raise _SetupFailed(bad)
        if error is not None and len(bad) == 1:
            raise error  # rank 0's own error, as a single process would raise it
        lines = "; ".join(
            f"rank {r} ({self.peers[r][1]} on {self.peers[r][0]}): {m}" for r, m in bad
        )
        raise DistributedError(f"the distributed run could not start: {lines}")

    def abort(self, exc: BaseException | None = None, code: int = 1) -> None:
        """Print why this rank fails and stop every rank of the job (``MPI_Abort``)."""
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            traceback.print_exception(exc, file=sys.stderr)
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else (
            f"failed: {type(exc).__name__}: {exc}" if exc is not None else "failed"
        )  # fmt: skip
        _stderr_line(f"graphgrad: {self.label()} {why}; stopping all {self.size} ranks")
        self.comm.Abort(code)


def _stderr_line(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode())


class _Watchdog:
    """A daemon thread that stops the job when this rank makes no progress for ``timeout``
    seconds inside :meth:`DistributedTrainer.fit` or a collective call, naming the rank and
    what it waits in (a collective, or its own work, with the line). A rank inside a
    collective waits ``timeout + 10`` s, so that a stuck peer reports first."""

    def __init__(self, world: World, timeout: float) -> None:
        self.world = world
        self.timeout = float(timeout)
        self.last = time.monotonic()
        self.where: str | None = None
        self.thread = threading.Thread(target=self._run, name="graphgrad-watchdog", daemon=True)
        self.thread.start()

    def enter(self, what: str) -> None:
        self.where = what
        self.last = time.monotonic()

    def leave(self) -> None:
        self.where = None
        self.last = time.monotonic()

    def _run(self) -> None:
        tick = min(1.0, self.timeout / 10)
        while True:
            time.sleep(tick)
            where = self.where
            if not (where or self.world.training):  # only training and collectives are timed
                self.last = time.monotonic()
                continue
            limit = self.timeout + (10.0 if where else 0.0)
            idle = time.monotonic() - self.last
            if idle <= limit:
                continue
            w = self.world
            if where:
                what = f"waited {idle:.0f} s in {where} for the other ranks (one is stuck or dead)"
            else:
                frame = sys._current_frames().get(threading.main_thread().ident or -1)
                at = (
                    f" at {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
                    if frame is not None
                    else ""
                )
                what = f"made no progress for {idle:.0f} s{at}"
            _stderr_line(
                f"graphgrad: {w.label()} {what}; stopping the job (timeout {self.timeout:g} s, "
                f"set GRAPHGRAD_DIST_TIMEOUT to change it)"
            )
            os._exit(124)


_WORLD: World | None = None


def init(comm: Any = None, *, timeout: float | None = None, abort_on_error: bool = True) -> World:
    """Start (or return) the MPI world of this process.

    Args:
        comm: an mpi4py communicator; default ``MPI.COMM_WORLD``.
        timeout: seconds without progress after which this rank stops the job (see the
            module doc); default ``GRAPHGRAD_DIST_TIMEOUT`` or 300; 0 disables it.
        abort_on_error: install a ``sys.excepthook`` that turns an uncaught exception on any
            rank into a message naming the rank and ``MPI_Abort`` (else the other ranks
            would wait for this one forever).

    Raises:
        MPIUnavailableError: mpi4py is not installed (the message says how to install it).
    """
    global _WORLD
    if _WORLD is not None and comm is None:
        return _WORLD
    mpi = _import_mpi()
    if timeout is None:
        env = os.environ.get("GRAPHGRAD_DIST_TIMEOUT", "")
        try:
            timeout = float(env) if env else DEFAULT_TIMEOUT
        except ValueError:
            raise ValueError(f"GRAPHGRAD_DIST_TIMEOUT must be seconds, got {env!r}") from None
    world = World(comm if comm is not None else mpi.COMM_WORLD, mpi, timeout)
    if abort_on_error and world.size > 1:
        previous = sys.excepthook

        def hook(tp: type[BaseException], exc: BaseException, tb: Any) -> None:
            del tp, tb
            world.abort(exc, 130 if isinstance(exc, KeyboardInterrupt) else 1)
            previous(type(exc), exc, exc.__traceback__)  # pragma: no cover - Abort exits

        sys.excepthook = hook
    if comm is None:
        _WORLD = world
    return world


# ----------------------------------------------------------------------------- sharding


def shard_bounds(total: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s part of ``total`` items split into ``size`` contiguous,
    near-equal parts (sizes differ by at most one; the first ranks get the smaller ones)."""
    return total * rank // size, total * (rank + 1) // size


def epoch_order(num_samples: int, data_seed: int, epoch: int) -> np.ndarray:
    """The order epoch ``epoch`` visits the samples in: ``default_rng([data_seed, epoch])
    .permutation(num_samples)``, the same rule as :class:`~graphgrad.data.DataLoader`."""
    return np.random.default_rng([data_seed, epoch]).permutation(num_samples).astype(np.int64)


# ----------------------------------------------------------------------------- gradients


class GradientReducer:
    """Averages the parameters' gradients over the ranks with one Allreduce per step.

    One contiguous buffer holds every parameter's gradient, in the order given, followed by
    ``extra`` scalars (statistics to sum along, e.g. loss, correct, samples). :meth:`reduce`
    packs the local gradients scaled by ``weight`` (n_r / L), sums the buffer over the ranks
    in place and makes each parameter's ``.grad`` a view of its slice (no copy). A parameter
    without a gradient on this rank (an empty shard) contributes zeros.

    Args:
        params: the parameters, in the same order on every rank.
        world: the ranks.
        extra: how many scalars follow the gradients.
    """

    def __init__(self, params: Sequence[Tensor], world: World, extra: int = 0) -> None:
        self.params = list(params)
        self.world = world
        dtypes = {p.data.dtype for p in self.params}
        if len(dtypes) != 1:
            raise ValueError(
                f"GradientReducer: parameters of mixed dtypes {sorted(map(str, dtypes))}"
            )
        self.dtype = dtypes.pop()
        self.offsets = np.cumsum([0, *(p.data.size for p in self.params)])
        self.size = int(self.offsets[-1])
        self.buffer = np.empty(self.size + extra, dtype=self.dtype)
        self.extra = self.buffer[self.size :]

    def reduce(self, weight: float) -> np.ndarray:
        """Pack ``weight ·`` local gradients, Allreduce, unpack as views; returns ``extra``."""
        buf, w = self.buffer, self.dtype.type(weight)
        for p, a, b in zip(self.params, self.offsets[:-1], self.offsets[1:], strict=True):
            g = p.grad
            if g is None:
                buf[a:b] = 0
            else:
                np.multiply(np.asarray(g).reshape(-1), w, out=buf[a:b])
        self.world.allreduce_(buf)
        for p, a, b in zip(self.params, self.offsets[:-1], self.offsets[1:], strict=True):
            p.grad = buf[a:b].reshape(p.shape)
        return self.extra


def data_parallel_grads(
    model: Module,
    loss_fn: Callable[[Tensor, Any], Tensor],
    x: np.ndarray,
    y: np.ndarray,
    world: World | None = None,
) -> dict[str, np.ndarray]:
    """The gradient of the mean loss over the whole batch (x (S, ...), y (S, ...)), each rank
    computing it for its share (:func:`shard_bounds`) and one Allreduce summing the shares
    weighted by n_r / S. Every rank passes the same arrays and gets the same result:
    parameter name -> array of the parameter's shape (copies; ``.grad`` is reset to None)."""
    w = world if world is not None else init()
    lo, hi = shard_bounds(len(y), w.rank, w.size)
    model.zero_grad()
    if hi > lo:
        loss_fn(model(x[lo:hi]), y[lo:hi]).backward()
    reducer = GradientReducer(model.parameters(), w)
    reducer.reduce((hi - lo) / len(y))
    out = {name: np.array(p.grad) for name, p in model.named_parameters()}
    model.zero_grad()
    return out


# ----------------------------------------------------------------------------- training


def evaluate_sharded(
    model: Module,
    x: np.ndarray,
    y: np.ndarray,
    world: World,
    batch_size: int = 1000,
    loss_fn: Callable[[Tensor, Any], Tensor] = cross_entropy,
) -> EvalResult:
    """:func:`~graphgrad.train.evaluate` with the samples split over the ranks; every rank
    gets the result for the whole of (x (S, D), y (S,)), predictions included."""
    lo, hi = shard_bounds(len(y), world.rank, world.size)
    part = (
        evaluate(model, x[lo:hi], y[lo:hi], batch_size, loss_fn)
        if hi > lo
        else EvalResult(0.0, 0.0, np.empty(0, np.int64))
    )
    n = hi - lo
    sums = np.array([part.loss * n, part.accuracy * n], dtype=np.float64)
    with world.waiting("Allreduce"):
        world.comm.Allreduce(world._mpi.IN_PLACE, sums, op=world._mpi.SUM)
    preds = np.concatenate(world.allgather(part.predictions))
    total = max(len(y), 1)
    return EvalResult(float(sums[0] / total), float(round(sums[1]) / total), preds)


class DistributedTrainer(Trainer):
    """A :class:`~graphgrad.train.Trainer` whose steps are shared by the ranks of ``world``.

    ``batch_size`` is B, the samples per rank and step: a step uses a global batch of N·B
    samples (fewer at the end of an epoch), and the run matches a single-process Trainer
    with ``batch_size = N·B`` and the same seeds, to float rounding. Every rank must pass
    the same model (same seed), optimiser, data and arguments; only rank 0 logs and writes
    checkpoints (``run_dir`` and ``log`` are ignored elsewhere). Evaluation is split over
    the ranks. ``fit`` starts by broadcasting rank 0's weights, optimiser state and progress,
    so a run resumed on rank 0 (:meth:`resume_from`) continues on every rank.

    Each history record also has ``world_size``, ``global_batch_size`` and
    ``allreduce_seconds`` (this rank's time inside the gradient Allreduce in the epoch).
    """

    def __init__(self, model: Module, optimizer: Optimizer, *, world: World | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        world = world if world is not None else init()
        if not world.is_root:
            kwargs.update(run_dir=None, progress=False, log=lambda _line: None)
        super().__init__(model, optimizer, **kwargs)
        self.world = world
        self.world_size = world.size
        self.checkpoint_extra.setdefault("distributed", {})
        self._reducer = GradientReducer(model.parameters(), world, extra=3)

    def _sync_state(self) -> None:
        """Rank 0's weights, optimiser state, epoch, step and history on every rank."""
        w = self.world
        state = (
            (
                self.model.state_dict(),
                self.optimizer.state_dict(),
                self.epoch,
                self.step,
                self.history,
            )
            if w.is_root
            else None
        )
        weights, opt_state, epoch, step, history = w.broadcast(state)
        if not w.is_root:
            self.model.load_state_dict(weights)
            self.optimizer.load_state_dict(opt_state)
            self.epoch, self.step, self.history = epoch, step, history

    def _check_in_step(self) -> None:
        """Every rank must hold the same weights (they take the same steps from the same
        summed gradients): compare a checksum of them across the ranks once per epoch."""
        crc = 0
        for p in self.model.parameters():
            crc = zlib.crc32(np.ascontiguousarray(p.data).tobytes(), crc)
        sums = self.world.allgather(crc)
        differ = [r for r, c in enumerate(sums) if c != sums[0]]
        if differ:
            raise DistributedError(
                f"after epoch {self.epoch} the weights of rank(s) {differ} differ from rank 0's "
                "although every rank applied the same summed gradients; stopping"
            )

    def save_checkpoint(self) -> Path:
        self.checkpoint_extra["distributed"] = {
            "world_size": self.world.size,
            "batch_size_per_rank": self.batch_size,
            "global_batch_size": self.batch_size * self.world.size,
        }
        return super().save_checkpoint()

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epochs: int,
        eval_data: tuple[np.ndarray, np.ndarray] | None = None,
        eval_split: str = "eval",
    ) -> list[dict[str, Any]]:
        """As :meth:`Trainer.fit`, on every rank at once (each passes the whole data)."""
        w = self.world
        if not w.setup_agreed:
            w.agree(None)
        if len(x) != len(y):
            raise ValueError(f"fit: {len(x)} inputs but {len(y)} labels")
        w.training = True  # stays set if fit raises: run_training then stops every rank
        history = self._fit(x, y, epochs, eval_data, eval_split)
        w.training = False
        return history

    def _fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epochs: int,
        eval_data: tuple[np.ndarray, np.ndarray] | None,
        eval_split: str,
    ) -> list[dict[str, Any]]:
        w = self.world
        self._sync_state()
        if w.is_root:
            self.log(f"distributed: {w.describe()}; {self.batch_size} samples per rank and step")
        while self.epoch < epochs:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                record = self._distributed_epoch(x, y, epochs)
            self._check_in_step()
            self._check_weights()  # the same weights on every rank: all stop together
            if eval_data is not None:
                ev = evaluate_sharded(self.model, *eval_data, w, self.eval_batch_size, self.loss_fn)
                self._check_eval_loss(ev.loss, eval_split)
                record.update(eval_loss=ev.loss, eval_accuracy=ev.accuracy, eval_split=eval_split)
            self.history.append(record)
            self.log(_line(record, epochs))
            if self.run_dir is not None and w.is_root:
                self.save_checkpoint()
            for cb in self.callbacks:
                cb(self, record)
            w.progress()
        return self.history

    def _distributed_epoch(self, x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, Any]:
        model, opt, loss_fn, w = self.model, self.optimizer, self.loss_fn, self.world
        global_batch = self.batch_size * w.size
        steps = math.ceil(len(y) / global_batch)
        total = epochs * steps
        schedule, base_lr = self.lr_schedule, self.base_lr
        order = epoch_order(len(y), self.data_seed, self.epoch)
        model.train()
        e = self.epoch + 1
        bar = progress_bar(steps, f"epoch {e}/{epochs}", self.progress and w.is_root)
        seen, correct, loss_sum = 0, 0.0, 0.0
        reduce_before = w.allreduce_seconds
        t0 = time.perf_counter()
        try:
            for b in range(steps):
                batch = order[b * global_batch : (b + 1) * global_batch]
                lo, hi = shard_bounds(len(batch), w.rank, w.size)
                idx = batch[lo:hi]
                opt.zero_grad()
                stats = (0.0, 0.0)
                if len(idx):
                    logits = model(x[idx])
                    loss = loss_fn(logits, y[idx])
                    loss.backward()
                    hits = np.count_nonzero(np.argmax(logits.data, axis=1) == y[idx])
                    stats = (float(loss.data) * len(idx), float(hits))
                extra = self._reducer.extra
                extra[0], extra[1], extra[2] = stats[0], stats[1], len(idx)
                self._reducer.reduce(len(idx) / len(batch))
                step_loss, step_hits = float(extra[0]), float(extra[1])
                if not math.isfinite(step_loss):  # the same sum on every rank: all stop
                    raise TrainingDiverged(
                        f"the training loss is {step_loss / len(batch)} at epoch {e}, step "
                        f"{b + 1} of {steps} (optimizer step {self.step + 1}); training stopped. "
                        f"{self._advice()}"
                    )
                self._optimizer_step(schedule, base_lr, total)
                w.progress()
                seen += len(batch)
                loss_sum += step_loss
                correct += step_hits
                show_progress(bar, b, seen, loss_sum, t0)
        finally:
            if bar is not None:
                bar.close()
        return {
            **self._epoch_record(seen, loss_sum, round(correct), t0),
            "world_size": w.size,
            "global_batch_size": global_batch,
            "allreduce_seconds": w.allreduce_seconds - reduce_before,
        }


def _line(r: dict[str, Any], epochs: int) -> str:
    from .train import epoch_line

    return epoch_line(r, epochs) + f"  [{r['world_size']} ranks]"


# ----------------------------------------------------------------------------- whole runs


def run_training(
    cfg: Any,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
    world: World | None = None,
) -> RunResult | None:
    """:func:`graphgrad.train.run_training` on every rank of an MPI job.

    Call it on every rank with the same arguments (``mpiexec -n N graphgrad train
    --distributed`` does). Rank 0's configuration is used everywhere; rank 0 runs the usual
    job (checks, ``config.toml``, ``run.json``, checkpoints, ``metrics.json``, figures)
    while the other ranks only load the data, build the same model and share every step.
    ``cfg.train.batch_size`` is the batch of each rank.

    Returns:
        The :class:`~graphgrad.train.RunResult` on rank 0; None on the other ranks.

    Raises:
        MPIUnavailableError: mpi4py is missing (before anything else is done).
        On rank 0, what :func:`graphgrad.train.run_training` raises, and
        :class:`DistributedError` when another rank could not start (naming it). The other
        ranks then end with ``SystemExit(1)``. An unexpected error on any rank during
        training stops the whole job with ``MPI_Abort`` (see :meth:`World.abort`).
    """
    from . import train as T
    from .config import RunConfig

    w = world if world is not None else init()
    cfg = RunConfig.from_dict(w.broadcast(cfg.to_dict() if w.is_root else None), "rank 0's config")
    factory = functools.partial(DistributedTrainer, world=w)
    try:
        if w.is_root:
            try:
                return T.run_training(
                    cfg, out, resume=resume, progress=progress, plots=plots, log=log,
                    trainer_class=factory,
                )  # fmt: skip
            except BaseException as e:
                if not w.setup_agreed:  # failed before training started: tell the others
                    w.agree(e)
                raise
        try:
            dtype = np.dtype(cfg.train.dtype)
            data = T.load_data(cfg.data, dtype)
            model = T.build_model(cfg.model, data.num_features, data.num_classes, dtype)
            optimizer = T.build_optimizer(cfg.optim, model.parameters())
            trainer = factory(
                model, optimizer, batch_size=cfg.train.batch_size, data_seed=cfg.data.seed,
                eval_batch_size=cfg.train.eval_batch_size, lr_schedule=cfg.train.lr_schedule,
                base_lr=cfg.optim.lr,
            )  # fmt: skip
        except Exception as e:
            w.agree(e)  # raises: this rank failed
            raise
        trainer.fit(data.x_train, data.y_train, cfg.train.epochs, (data.x_eval, data.y_eval),
                    data.eval_split)  # fmt: skip
        return None
    except (_SetupFailed, TrainingDiverged):
        # Every rank saw it at the same point: a clean stop; rank 0 says why.
        if w.is_root:
            raise
        raise SystemExit(1) from None
    except BaseException as e:
        if w.training and w.size > 1:  # the others wait for this rank in a collective
            w.abort(e, 130 if isinstance(e, KeyboardInterrupt) else 1)
        raise
