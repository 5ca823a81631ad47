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
* **Gradients.** Each rank's backward pass is seeded with n_r / L, so its gradients come out
  weighted, and writes the weight gradients straight into one contiguous buffer (the
  parameters, then per parameter the number of ranks that had a gradient for it, then the
  step's loss sum, correct count and sample count: a parameter none had one for, and a
  frozen one, keep ``.grad`` None, as in one process); one in-place
  ``Allreduce`` sums it and the optimiser gets views of it, without a copy
  (:class:`GradientReducer`). When all ranks share a node, the buffer is instead each rank's
  slot of one MPI-3 shared-memory window, and each rank sums its part of the slots, in rank
  order, into a shared result that every rank reads (:class:`NodeReduction`; ``reduce=``
  chooses). With ``overlap=True`` the buffer is summed in buckets, each
  started (``Iallreduce``) during the backward pass as soon as its gradients are complete.
* **Memory.** :func:`init` has glibc's malloc keep freed memory (:func:`keep_freed_memory`,
  which ``import graphgrad`` calls too; again here, once MPI has started): under MPI each
  step otherwise faults its temporaries' pages back in from the kernel.
* **Output.** Rank 0 alone prints, writes checkpoints (atomically, as always), metrics and
  figures; the history records ``world_size`` and ``global_batch_size``. Other ranks never
  touch the run directory, so it need not be shared between machines. ``--resume`` reads the
  checkpoint on rank 0 and broadcasts weights and optimiser state: any world size resumes
  (the cosine schedule follows the fraction of the epochs done, whatever the world size).
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

from . import _engine, _memory
from ._memory import MALLOC_SETTINGS, keep_freed_memory
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
    lr_factor,
    progress_bar,
    show_progress,
)

__all__ = [
    "INSTALL_HINT",
    "MALLOC_SETTINGS",
    "DistributedError",
    "DistributedTrainer",
    "GradientReducer",
    "MPIUnavailableError",
    "NodeReduction",
    "World",
    "data_parallel_grads",
    "evaluate_sharded",
    "init",
    "keep_freed_memory",
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
    """A distributed run cannot start or go on: the message names the rank(s) at fault.

    Attributes:
        on_every_rank: every rank raised it at the same point (no rank waits for another):
            :func:`run_training` stops cleanly, rank 0 reporting it.
    """

    on_every_rank = False


class _SetupFailed(Exception):
    """Another rank reported a failure during set-up; this rank stops quietly."""


def _on_every_rank(message: str) -> DistributedError:
    """A :class:`DistributedError` that every rank raises at the same point."""
    error = DistributedError(message)
    error.on_every_rank = True
    return error


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
        allreduce_seconds: time spent in gradient reductions so far (MPI Allreduce calls, or
            the node shared-memory reductions of :class:`NodeReduction`, waiting included).
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
        self.malloc_tuned = False  # set by init(): keep_freed_memory() took effect
        self.threads_note = ""  # set by init(): the threads each rank got, and why
        self._nodes: tuple[Any, Any] | None = None  # (node communicator, leaders' or None)
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

    def iallreduce_(self, buf: np.ndarray) -> Any:
        """Start summing the contiguous array ``buf`` over all ranks in place (a non-blocking
        MPI Iallreduce); returns the request for :meth:`wait_all`. Every rank must start the
        same reductions in the same order."""
        t0 = time.perf_counter()
        req = self.comm.Iallreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        self.allreduce_seconds += time.perf_counter() - t0
        self.allreduce_calls += 1
        return req

    def test_all(self, requests: Sequence[Any]) -> bool:
        """Give MPI a chance to progress ``requests`` (``MPI_Testall``); True if all are done."""
        t0 = time.perf_counter()
        done = bool(self._mpi.Request.Testall(list(requests)))
        self.allreduce_seconds += time.perf_counter() - t0
        return done

    def wait_all(self, requests: Sequence[Any]) -> None:
        """Wait until the reductions ``requests`` (from :meth:`iallreduce_`) are done."""
        if not requests:
            return
        t0 = time.perf_counter()
        with self.waiting("Iallreduce"):
            self._mpi.Request.Waitall(list(requests))
        self.allreduce_seconds += time.perf_counter() - t0

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

    def nodes(self) -> tuple[Any, Any]:
        """(the communicator of the ranks on this rank's node, the communicator of each node's
        first rank: None on the other ranks). Split once (``Split_type(COMM_TYPE_SHARED)``),
        collectively: every rank must call it the first time."""
        if self._nodes is None:
            with self.waiting("Split_type"):
                node = self.comm.Split_type(self._mpi.COMM_TYPE_SHARED, key=self.rank)
            self.group_by_node(node)
        assert self._nodes is not None
        return self._nodes

    def group_by_node(self, node: Any) -> None:
        """Use the communicator ``node`` (a part of this world whose ranks share memory) as
        this rank's node instead of MPI's split; collective. For tests (two "nodes" on one
        machine) and for grouping the ranks yourself."""
        first = int(node.Get_rank()) == 0
        with self.waiting("Split"):
            leaders = self.comm.Split(0 if first else self._mpi.UNDEFINED, self.rank)
        self._nodes = (node, leaders if first else None)

    @property
    def single_node(self) -> bool:
        """All ranks share one node (its shared memory); collective the first time."""
        return int(self.nodes()[0].Get_size()) == self.size

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
        self.training = False  # the watchdog must not cut the report short (it would exit 124)
        if self._watchdog is not None:
            self._watchdog.where = None
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            traceback.print_exception(exc, file=sys.stderr)
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else (
            f"failed: {type(exc).__name__}: {exc}" if exc is not None else "failed"
        )  # fmt: skip
        _stderr_line(f"graphgrad: {self.label()} {why}; stopping all {self.size} ranks")
        for stream in (sys.stdout, sys.stderr):  # what this rank printed before, too
            with contextlib.suppress(Exception):
                stream.flush()
        # mpiexec's proxy forwards the pipes as it reads them; an abort right after the write
        # once cut the last line off in a test (the traceback came through, the line naming
        # the rank did not): give it a moment to read them
        time.sleep(0.2)
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


def init(
    comm: Any = None,
    *,
    timeout: float | None = None,
    abort_on_error: bool = True,
    tune_malloc: bool = True,
) -> World:
    """Start (or return) the MPI world of this process.

    Args:
        comm: an mpi4py communicator; default ``MPI.COMM_WORLD``.
        timeout: seconds without progress after which this rank stops the job (see the
            module doc); default ``GRAPHGRAD_DIST_TIMEOUT`` or 300; 0 disables it.
        abort_on_error: install a ``sys.excepthook`` that turns an uncaught exception on any
            rank into a message naming the rank and ``MPI_Abort`` (else the other ranks
            would wait for this one forever).
        tune_malloc: call :func:`keep_freed_memory` once MPI has started (it undoes the
            page faults a step costs under MPI); ``World.malloc_tuned`` says if it took.

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
    world.malloc_tuned = keep_freed_memory() if tune_malloc else False
    world.threads_note = _share_the_cpus(world)
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


def _share_the_cpus(world: World) -> str:
    """Give each rank its share of its node's CPUs, unless the thread count was chosen
    (``gg.set_num_threads``, ``OMP_NUM_THREADS``); returns what was done, for the log.

    By default a process takes every CPU it may run on. N ranks on one node then run N times
    as many BLAS and kernel threads as there are cores, which spin waiting for each other:
    two ranks of 2 threads each on 2 cores trained a 784-256-256-10 MLP 35-130x slower than
    with one thread each."""
    from . import _blas

    local = sum(1 for host, _ in world.peers if host == world.host)
    if local < 2:
        return ""
    if _blas.threads_chosen():
        n = _blas.get_num_threads()
        return f"{n} thread(s) per rank, as chosen ({local} ranks on this node)"
    cpus = _blas.cpus_available()
    n = max(1, cpus // local)
    if n < _blas.get_num_threads():
        _blas.set_default_threads(n)  # still a default: not "chosen"
    return (
        f"{n} thread(s) per rank: {cpus} CPUs shared by {local} ranks on this node "
        "(gg.set_num_threads or OMP_NUM_THREADS to choose)"
    )


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


#: How a :class:`GradientReducer` sums its buffer: ``"auto"`` (the node-local shared-memory
#: reduction when every rank is on one node and the buffer has :data:`SHM_MIN_BYTES` or more,
#: else MPI Allreduce), ``"shm"`` (:class:`NodeReduction`) or ``"allreduce"``.
REDUCE_MODES = ("auto", "shm", "allreduce")

#: The buffer size from which ``reduce="auto"`` uses the shared-memory reduction.
SHM_MIN_BYTES = 64 << 10

_PAGE = 4096  # each slot of the shared window starts on its own page
_ALIGN = 64  # the ranks' chunks of the sum start on their own cache line


def allocate_shared(node: Any, nbytes: int) -> Any:
    """One MPI-3 shared-memory window of ``nbytes`` bytes for the ranks of ``node`` (all
    allocated by its rank 0, one piece); collective over ``node``. :class:`NodeReduction`
    calls it through this module, so a test can replace it to simulate a refusal."""
    mpi = _import_mpi()
    first = int(node.Get_rank()) == 0
    return mpi.Win.Allocate_shared(nbytes if first else 0, 1, comm=node)


class NodeReduction:
    """Sums equal-length arrays over the ranks through the shared memory of their node.

    One MPI-3 shared window holds a slot per rank of the node and one result area. Each rank
    writes its array into its own :attr:`slot` (a NumPy view of the window: the gradient
    buffer itself, so nothing is copied in). :meth:`reduce` then waits until every rank of
    the node has written (a barrier), rank r adds its 1/n part of the n slots **in rank
    order** into the :attr:`result` area, and a second barrier makes the whole sum visible
    to all: every rank reads the very same bits, whatever the timing. Spread over several
    nodes, each node's first rank then sums the node results with one MPI Allreduce among
    them (in place, in the result area) and a third barrier shares it on the node.

    The memory model is MPI-3's "unified" one: the window is locked once for all ranks
    (``Lock_all``) and every barrier is wrapped in ``Win.Sync`` (a memory barrier) so the
    stores before it are visible to the loads after it.

    Args:
        world: the ranks (every one must construct the reduction: collective).
        length: elements per rank.
        dtype: their type.

    Raises:
        DistributedError: the window could not be allocated on some rank (naming them);
            every rank raises it.
    """

    def __init__(self, world: World, length: int, dtype: Any) -> None:
        self.world = world
        self.dtype = np.dtype(dtype)
        self.length = int(length)
        node, leaders = world.nodes()
        self.node, self.leaders = node, leaders
        self.multi_node = int(node.Get_size()) != world.size
        n, me = int(node.Get_size()), int(node.Get_rank())
        stride = -(-max(self.length * self.dtype.itemsize, 1) // _PAGE) * _PAGE
        win, error = None, None
        try:
            with world.waiting("the allocation of the shared window"):
                win = allocate_shared(node, stride * (n + 1))
            mem, _unit = win.Shared_query(0)
            raw = np.frombuffer(mem, dtype=np.uint8, count=stride * (n + 1))
        except Exception as e:  # any refusal: every rank reports it and all fall back
            error = f"{type(e).__name__}: {e}"
        errors = world.allgather(error)
        bad = [(r, m) for r, m in enumerate(errors) if m is not None]
        if bad:
            if win is not None:
                with contextlib.suppress(Exception):
                    win.Free()
            lines = "; ".join(f"rank {r}: {m}" for r, m in bad)
            raise DistributedError(f"no shared-memory window for the reduction ({lines})")
        assert win is not None
        self.win = win
        win.Lock_all(world._mpi.MODE_NOCHECK)
        views = [
            raw[i * stride : i * stride + self.length * self.dtype.itemsize].view(self.dtype)
            for i in range(n + 1)
        ]
        self.slots, self.result = views[:n], views[n]
        self.slot = self.slots[me]
        per = _ALIGN // self.dtype.itemsize or 1
        cuts = [min(self.length, -(-(self.length * r // n) // per) * per) for r in range(n + 1)]
        cuts[-1] = self.length
        self.chunk = (cuts[me], cuts[me + 1])

    def _sync(self) -> None:
        """Every rank of the node gets here; the stores before are visible after."""
        self.win.Sync()
        self.node.Barrier()
        self.win.Sync()

    def reduce(self) -> np.ndarray:
        """Sum the ranks' :attr:`slot` arrays into :attr:`result` (returned; shared: read it,
        do not write it). Every rank must call it; it counts in ``world.allreduce_seconds``."""
        w = self.world
        t0 = time.perf_counter()
        with w.waiting("the shared-memory reduction"):
            self._sync()
            a, b = self.chunk
            if b > a:
                out, slots = self.result[a:b], self.slots
                if len(slots) == 1:
                    np.copyto(out, slots[0][a:b])
                else:
                    np.add(slots[0][a:b], slots[1][a:b], out=out)
                    for s in slots[2:]:
                        np.add(out, s[a:b], out=out)
            self._sync()
            if self.multi_node:
                if self.leaders is not None:
                    self.leaders.Allreduce(w._mpi.IN_PLACE, self.result, op=w._mpi.SUM)
                self._sync()
        w.allreduce_seconds += time.perf_counter() - t0
        w.allreduce_calls += 1
        return self.result

    def close(self) -> None:
        """Free the window (collective; the arrays must not be used after)."""
        win, self.win = self.win, None
        if win is not None:
            win.Unlock_all()
            win.Free()


class GradientReducer:
    """Averages the parameters' gradients over the ranks through one contiguous buffer.

    The buffer holds every parameter's gradient, one count per parameter (below), then ``extra``
    scalars (statistics to sum along, e.g. loss, correct, samples). A weight whose rows are a
    multiple of 4096 bytes long (a 3072-input layer's) gets its rows further apart in the
    buffer, as the eager and compiled steps store such a gradient (``graphgrad._memory.pads``:
    OpenBLAS writes it faster); the gaps hold zeros, summed with the rest, and ``.grad`` is a
    view that skips them. A step is :meth:`backward` (or gradients already in ``.grad``), then
    :meth:`finish`, which sums the buffer over the ranks in place and makes each parameter's
    ``.grad`` a view of its slice (no copy). A parameter without a gradient on this rank (an
    empty shard, an unused parameter) contributes zeros; one without a gradient on every rank
    (unused in the step, or frozen: ``requires_grad=False``) keeps ``.grad`` None after
    :meth:`finish`, as one process's backward pass leaves it (the optimisers skip it: no weight
    decay or momentum moves it). For that the buffer holds, after the gradients, one count per
    parameter of the ranks that had a gradient for it, summed with the rest (:attr:`flags`).

    :meth:`backward` seeds the backward pass with ``weight`` (n_r / L) instead of 1, so the
    gradients come out already weighted (the chain rule is linear in the seed), and the
    gradients that an op can write into a given array (``Op.vjp_into``: the weight of
    ``linear``) are written straight into their slice of the buffer during the pass, through
    the engine's gradient sinks (``graphgrad._engine.GRAD_SINKS``, installed for that call
    only). The others (biases) reach ``.grad`` as usual and are copied in by :meth:`finish`.

    With ``overlap=True`` the buffer is reduced in buckets with non-blocking
    ``Iallreduce`` calls, each started during the backward pass as soon as the gradients in
    it are complete, and waited for by :meth:`finish`: the summing of the last layers'
    gradients runs while the first layers' are still being computed. Which parameters are
    complete when is learnt on the first step (reduced the blocking way): every rank records
    how many contributions each parameter's gradient gets through the sinks, rank 0's record
    is broadcast, and the buckets are the parameters in the order they completed, up to
    ``bucket_bytes`` each, then one last bucket with the parameters whose gradient only
    reaches ``.grad`` at the end of the pass and the extra scalars, joined by the bucket that
    completes last (it would overlap with nothing but them). Every rank starts the
    same buckets in the same order. This assumes every step uses each parameter the same
    number of times (a static graph, as PyTorch DDP's ``static_graph``); a step that does
    not raises :class:`DistributedError`.

    Without overlap, when every rank is on one node the buffer can be summed through the
    node's shared memory instead of MPI (``reduce="shm"``, :class:`NodeReduction`): the
    buffer is then this rank's slot of a shared window, the sum lands in a shared result
    area, and ``.grad`` after :meth:`finish` is a view of the result (read it, do not write
    into it: every rank reads the same memory; ``extra`` gets a copy of the summed scalars).
    The sum is taken in rank order, so every rank gets the same bits. The first :meth:`backward` or
    :meth:`reduce` of a step drops the ``.grad`` views left by the last step.

    Args:
        params: the parameters, in the same order on every rank.
        world: the ranks.
        extra: how many scalars follow the gradients.
        overlap: reduce in buckets during the backward pass (see above).
        bucket_bytes: the size a bucket may grow to before the next one starts.
        reduce: ``"auto"`` (shared memory when all ranks share a node and the buffer has
            :data:`SHM_MIN_BYTES` or more, and not with overlap; else Allreduce), ``"shm"``
            or ``"allreduce"``. When the shared window cannot be had, the reducer uses
            Allreduce and says why in :attr:`reduce_note`. Every rank must pass the same
            arguments: the choice and the window are made collectively by :meth:`setup`, at
            the first step.

    Attributes:
        reduction: ``"shm"`` or ``"allreduce"``, what is used (``"allreduce"`` until
            :meth:`setup`).
        reduce_note: why ``"shm"`` was asked for (or chosen) but not used; else None.
        flags: (len(params),) this rank's part of the per-parameter counts: 1 where the step
            gave this rank a gradient for the parameter, else 0 (written by :meth:`finish`).
        extra: (extra,) the scalars summed along (after :meth:`finish`: their sums).
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        world: World,
        extra: int = 0,
        *,
        overlap: bool = False,
        bucket_bytes: int = 1 << 20,
        reduce: str = "auto",
    ) -> None:
        self.params = list(params)
        self.world = world
        dtypes = {p.data.dtype for p in self.params}
        if len(dtypes) > 1:
            raise ValueError(
                f"GradientReducer: parameters of mixed dtypes {sorted(map(str, dtypes))}"
            )
        if bucket_bytes < 1:
            raise ValueError(f"GradientReducer: bucket_bytes must be >= 1, got {bucket_bytes}")
        if reduce not in REDUCE_MODES:
            raise ValueError(
                f"GradientReducer: reduce must be one of {REDUCE_MODES}, got {reduce!r}"
            )
        if reduce == "shm" and overlap:
            raise ValueError(
                "GradientReducer: overlap=True reduces buckets with MPI Iallreduce; "
                "reduce='shm' needs overlap=False"
            )
        self.dtype = np.dtype(dtypes.pop() if dtypes else np.float64)  # (no parameters)
        self.overlap = bool(overlap)
        self.bucket_bytes = int(bucket_bytes)
        self.n_extra = int(extra)
        # after the gradients: one count per parameter (ranks that had a gradient), then extra
        self._tail = len(self.params) + self.n_extra
        # each parameter's slot of the buffer: its size, or, for a weight whose rows are a
        # multiple of 4096 bytes long, rows padded as the steps pad such a gradient
        # (_memory.pads: OpenBLAS writes it faster), the padding zeros summed with the rest
        self._row_len = [_padded_row(p.shape, self.dtype.itemsize) for p in self.params]
        self._slot = [
            p.data.size if ld is None else p.shape[0] * ld
            for p, ld in zip(self.params, self._row_len, strict=True)
        ]
        self.size = sum(self._slot)
        self.reduction = "allreduce"
        self.reduce_note: str | None = None
        self._shm: NodeReduction | None = None
        self._reduce = reduce
        self._set_up = False  # setup() ran (the shared window is made at the first step)
        self.buffer = np.zeros(self.size + self._tail, dtype=self.dtype)
        self.result = self.buffer
        self._tail_views()
        self._layout(list(range(len(self.params))))
        self._sinks = [_BufferSink(self, k) for k in range(len(self.params))]
        n = len(self.params)
        self._count = [0] * n  # contributions written into the buffer by the sinks this step
        self._late = [False] * n  # a contribution took the ordinary path (.grad) this step
        self._done_at = [0] * n  # when the last sink contribution arrived (recording step)
        self._clock = 0
        self._plan: list[int] | None = None  # sink contributions per parameter (overlap)
        self._buckets: list[tuple[int, int, list[int]]] = []  # [a, b) of buffer, params
        self._waiting = [0] * 0  # per bucket: parameters not complete yet
        self._bucket_of: list[int] = []
        self._next = 0  # the next bucket to start (buckets start in order)
        self._requests: list[Any] = []
        self._live = False  # inside backward()..finish() of an overlapped step
        self._recording = False  # this step's backward() sets the buckets (overlap)
        self._started = False  # backward() or reduce() began this step
        #: how the buckets were laid out (None: one Allreduce per step); for reports.
        self.bucket_sizes: list[int] | None = None

    def _tail_views(self) -> None:
        """:attr:`flags` and :attr:`extra`: the buffer's parts after the gradients."""
        at = self.size + len(self.params)
        self.flags = self.buffer[self.size : at]
        self.extra = self.buffer[at:]

    def _layout(self, order: list[int]) -> None:
        """Place the parameters in the buffer in ``order``; ``.views[k]`` is parameter k's
        (for a padded slot, its rows further apart, as ``_memory.empty_grad`` makes them)."""
        self.offsets = [0] * len(self.params)
        self.views: list[np.ndarray] = [self.buffer[:0]] * len(self.params)
        self.result_views: list[np.ndarray] = [self.result[:0]] * len(self.params)
        at = 0
        for k in order:
            p, n, ld = self.params[k], self._slot[k], self._row_len[k]
            self.offsets[k] = at
            for views, whole in ((self.views, self.buffer), (self.result_views, self.result)):
                slot = whole[at : at + n]
                views[k] = (
                    slot.reshape(p.shape) if ld is None else slot.reshape(-1, ld)[:, : p.shape[1]]
                )
            at += n

    @property
    def node_reduction(self) -> NodeReduction | None:
        """The :class:`NodeReduction` in use (``reduction == "shm"``), else None."""
        return self._shm

    def setup(self) -> str:
        """Choose the reduction and, for ``"shm"``, make the shared window (collective: the
        first step does it on every rank, or call it on every rank before); returns
        :attr:`reduction`. Deferred to then so that a rank failing before its first step
        (e.g. rank 0's checks) leaves no rank waiting inside the window's allocation."""
        if self._set_up:
            return self.reduction
        self._set_up = True
        w, n = self.world, self.size + self._tail
        if self._reduce == "shm" or (
            self._reduce == "auto"
            and not self.overlap
            and w.size > 1
            and n * self.dtype.itemsize >= SHM_MIN_BYTES
            and w.single_node
        ):
            try:
                shm = NodeReduction(w, n, self.dtype)
            except DistributedError as e:
                self.reduce_note = f"{e}; summing the gradients with MPI Allreduce instead"
                return self.reduction
            order = sorted(range(len(self.params)), key=lambda k: self.offsets[k])
            shm.slot[...] = self.buffer
            self._shm, self.reduction = shm, "shm"
            self.buffer, self.result = shm.slot, shm.result
            self._tail_views()
            self._layout(order)
        return self.reduction

    # ------------------------------------------------------------------ a step
    def backward(self, loss: Tensor, weight: float) -> None:
        """``loss.backward()`` seeded with ``weight``, the gradients written into the buffer
        where an op can (see the class doc); with overlap, buckets start during the pass."""
        self._start_step(live=self._plan is not None)
        self._recording = self.overlap and self._plan is None
        keys = [id(p) for p in self.params]
        sinks = _engine.GRAD_SINKS
        saved = {k: sinks[k] for k in keys if k in sinks}  # e.g. a fused_backward SGD's
        for k, sink in zip(keys, self._sinks, strict=True):
            sinks[k] = sink
        try:
            loss.backward(np.full(loss.shape, weight, dtype=loss.data.dtype))
        finally:
            for k in keys:
                del sinks[k]
            sinks.update(saved)

    def reduce(self, weight: float) -> np.ndarray:
        """Reduce gradients that are already in ``.grad`` (an ordinary ``backward()``),
        scaled by ``weight``, with one blocking Allreduce; returns ``extra``."""
        self._start_step(live=False)
        self._recording = False
        for k, p in enumerate(self.params):
            if p.grad is not None:
                np.multiply(np.asarray(p.grad), self.dtype.type(weight), out=self.views[k])
                self._count[k] = 1
                p.grad = None
        return self.finish()

    def written(self) -> None:
        """The step's gradients were written straight into the buffer's slices, already
        weighted (a compiled plan, :meth:`graphgrad.CompiledStep.reduced_step`): count them
        as this rank's contribution, for :meth:`finish` (no overlap: the buffer is reduced
        in one piece)."""
        if self.overlap:
            raise DistributedError("GradientReducer.written: not with overlap=True")
        self._start_step(live=False)
        self._recording = False
        for k in range(len(self.params)):
            self._count[k] = 1

    def _start_step(self, live: bool) -> None:
        if self._live:
            raise DistributedError(
                "GradientReducer: a new step began before finish() of the last one"
            )
        if not self._set_up:
            self.setup()
        shared = self._shm is not None
        for k, p in enumerate(self.params):
            self._count[k] = 0
            self._late[k] = False
            if shared and p.grad is self.result_views[k]:
                p.grad = None  # the last step's sum: shared, never written into
        self._live, self._started = live, True
        if live:
            self._waiting = [len(members) for _a, _b, members in self._buckets]
            self._next = 0
            self._requests = []

    def take(self, k: int, op: Any, i: int, g: Any, args: Any, params: Any) -> bool:
        """Parameter ``k``'s gradient sink (the engine's protocol): write the op's gradient
        for it into its slice of the buffer (β = 0 first, then 1: contributions add up)."""
        if self._requests:  # let the reductions already started move on (MPI progresses
            self.world.test_all(self._requests)  # only inside MPI calls)
        rules = op.vjp_into
        rule = rules.get(i) if rules else None
        if (
            rule is None
            or params
            or not rule(g, args, self.views[k], 1.0 if self._count[k] else 0.0)
        ):
            self._late[k] = True  # the engine computes it the ordinary way, into .grad
            return False
        self._count[k] += 1
        self._clock += 1
        self._done_at[k] = self._clock
        plan = self._plan
        if self._live and plan is not None and self._bucket_of[k] < len(self._buckets) - 1:
            if self._count[k] > plan[k]:  # an early parameter's: its bucket may have started
                raise DistributedError(self._changed(k))
            if self._count[k] == plan[k]:
                b = self._bucket_of[k]
                self._waiting[b] -= 1
                if b == self._next and self._waiting[b] == 0:
                    self._start_ready()
        return True

    def _start_ready(self) -> None:
        """Start every complete bucket from the next one on, in order."""
        while self._next < len(self._buckets) - 1 and self._waiting[self._next] == 0:
            a, b, _members = self._buckets[self._next]
            self._requests.append(self.world.iallreduce_(self.buffer[a:b]))
            self._next += 1

    def finish(self) -> np.ndarray:
        """Sum the buffer over the ranks (or wait for the buckets), then point the ``.grad``
        of every parameter that had a gradient on some rank at its slice (the others keep
        None); returns ``extra`` (summed too). Without a :meth:`backward` since the last call
        (an empty shard) this rank contributes zeros, or what is in ``.grad``."""
        if not self._started:  # no backward() this step (an empty shard): zeros
            self._start_step(live=self._plan is not None)
            self._recording = self.overlap and self._plan is None  # the others record now
        live, self._live, self._started = self._live, False, False
        flags = self.flags
        for k, p in enumerate(self.params):
            g, view = p.grad, self.views[k]
            flags[k] = 1 if g is not None or self._count[k] else 0
            if live and self._plan is not None and self._bucket_of[k] < len(self._buckets) - 1:
                # an early parameter: complete when its bucket started, or unused this step
                if g is not None or self._count[k] not in (0, self._plan[k]):
                    self.world.wait_all(self._requests)
                    raise DistributedError(self._changed(k))
                if self._count[k] == 0:
                    view[...] = 0
                    self._waiting[self._bucket_of[k]] -= 1
                continue
            if g is None:
                if self._count[k] == 0:
                    view[...] = 0
            elif self._count[k] == 0:
                np.copyto(view, np.asarray(g))
            else:
                np.add(view, np.asarray(g), out=view)
        counts = self.result[self.size : self.size + len(self.params)]
        if live:
            self._start_ready()  # buckets held back by an unused parameter
            a, b, _members = self._buckets[-1]
            self._requests.append(self.world.iallreduce_(self.buffer[a:b]))
            self.world.wait_all(self._requests)
            self._requests = []
            had = counts > 0
        elif self._shm is not None:
            result = self._shm.reduce()
            had = counts > 0  # read now: the shared result changes at the next step
            # into this rank's own slot: nobody reads it until the next step
            self.extra[...] = result[self.size + len(self.params) :]
        else:
            self.world.allreduce_(self.buffer)
            had = counts > 0
            if self._recording:
                self._recording = False
                self._make_plan()
        for k, p in enumerate(self.params):
            # no gradient on any rank (unused, frozen): None, as one process leaves it
            p.grad = self.result_views[k] if had[k] else None
        return self.extra

    def close(self) -> None:
        """Free the shared window, if any (collective); the reducer goes on with a private
        buffer and MPI Allreduce. ``.grad`` views of the last sum become copies."""
        shm, self._set_up = self._shm, True
        if shm is None:
            return
        order = sorted(range(len(self.params)), key=lambda k: self.offsets[k])
        for k, p in enumerate(self.params):
            if p.grad is self.result_views[k]:
                p.grad = np.array(p.grad)
        self.buffer = np.array(self.buffer)
        self.result = self.buffer
        self._tail_views()
        self._layout(order)
        self._shm, self.reduction = None, "allreduce"
        self.reduce_note = "close() freed the shared window; summing with MPI Allreduce"
        shm.close()

    def _changed(self, k: int) -> str:
        return (
            f"GradientReducer(overlap=True): parameter #{k} {tuple(self.params[k].shape)} got "
            f"its gradient from a different set of ops than at the first step (which set the "
            "buckets); overlap needs every step to use each parameter the same way: use "
            "overlap=False"
        )

    def _make_plan(self) -> None:
        """After the first (blocking) step: the buckets, from rank 0's record of it."""
        early = [k for k in range(len(self.params)) if self._count[k] and not self._late[k]]
        early.sort(key=lambda k: self._done_at[k])
        mine = ([self._count[k] if k in early else 0 for k in range(len(self.params))], early)
        plan, early = self.world.broadcast(mine)
        late = [k for k in range(len(self.params)) if k not in early]
        buckets: list[list[int]] = []
        limit = max(1, self.bucket_bytes // self.dtype.itemsize)
        for k in early:
            n = self._slot[k]
            if buckets and sum(self._slot[j] for j in buckets[-1]) + n <= limit:
                buckets[-1].append(k)
            else:
                buckets.append([k])
        # The last bucket: the bucket that completes last (nothing but the late gradients
        # would run beside it: one Iallreduce fewer), the late parameters, the scalars.
        last = buckets.pop() if buckets else []
        buckets.append(last + late)
        g = [np.array(self.views[k]) for k in range(len(self.params))]
        self._layout([k for members in buckets for k in members])
        self.buffer[: self.size] = 0  # the padded slots' gaps (the extra scalars stay)
        for k in range(len(self.params)):
            self.views[k][...] = g[k]
        self._buckets, self._bucket_of = [], [0] * len(self.params)
        a = 0
        for i, members in enumerate(buckets):
            b = a + sum(self._slot[k] for k in members)
            if i == len(buckets) - 1:
                b += self._tail  # the counts and the extra scalars
            self._buckets.append((a, b, members))
            for k in members:
                self._bucket_of[k] = i
            a = b
        self.bucket_sizes = [b - a for a, b, _members in self._buckets]
        self._plan = plan


def _padded_row(shape: tuple[int, ...], itemsize: int) -> int | None:
    """The row length (elements) of a padded gradient slot for a parameter of ``shape``
    (:func:`graphgrad._memory.grad_row`), or None where its gradient is not padded."""
    if len(shape) != 2:
        return None
    ld = _memory.grad_row(shape[0], shape[1], itemsize)
    return None if ld == shape[1] else ld


class _BufferSink:
    """The engine's gradient sink for one parameter of a :class:`GradientReducer`."""

    __slots__ = ("_k", "_reducer")

    def __init__(self, reducer: GradientReducer, k: int) -> None:
        self._reducer, self._k = reducer, k

    def alive(self) -> bool:
        return True

    def take(self, inp: Any, op: Any, i: int, g: Any, args: Any, params: Any) -> bool:
        return self._reducer.take(self._k, op, i, g, args, params)


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
    parameter name -> array of the parameter's shape (copies; zeros for a parameter that got
    no gradient on any rank: unused, or ``requires_grad=False``; ``.grad`` is reset to None)."""
    w = world if world is not None else init()
    lo, hi = shard_bounds(len(y), w.rank, w.size)
    model.zero_grad()
    trained = [p for p in model.parameters() if p.requires_grad]
    reducer = GradientReducer(trained, w, reduce="allreduce")  # one call: no window
    if hi > lo:
        reducer.backward(loss_fn(model(x[lo:hi]), y[lo:hi]), (hi - lo) / len(y))
    reducer.finish()
    out = {
        name: np.zeros(p.shape, dtype=p.data.dtype) if p.grad is None else np.array(p.grad)
        for name, p in model.named_parameters()
    }
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

    The gradients are averaged through a :class:`GradientReducer`: one reduction of one
    buffer per step (``reduce``: through the node's shared memory, or one MPI Allreduce;
    ``"auto"`` picks shared memory when all ranks share a node and the buffer has 64 KiB or
    more), or with ``overlap=True`` buckets of up to ``bucket_bytes`` reduced with
    ``Iallreduce`` while the backward pass goes on (a static graph is assumed; see there).
    All give the same weights to float rounding. ``SGD(fused_backward=True)`` cannot be
    used (it would step on each rank's own gradient). Parameters with ``requires_grad=False``
    (frozen when the trainer is made) are left out of the reduction, and a parameter that
    gets no gradient on any rank in a step (unused) keeps ``.grad`` None: as in one process,
    the optimiser leaves both alone (no weight decay or momentum moves them).

    The cosine schedule (``lr_schedule="cosine"``) is a function of the progress through the
    epochs, (epoch + steps done in it / steps per epoch) / epochs: the same rates as the
    Trainer's step / total steps while the steps per epoch stay the same, and a run resumed
    on another number of ranks (other steps per epoch) continues from where it was.

    ``fit`` first checks that every rank was given the same run: the number of samples, a
    sample's shape and dtype, the evaluation data's size, ``batch_size``, ``epochs``,
    ``data_seed``, the schedule and the reduction; where they differ, every rank raises
    :class:`DistributedError` naming the field and the ranks (instead of waiting for each
    other in a collective).

    The gradients are summed with MPI from NumPy arrays: the model must be on the cpu
    device (``device`` None or ``"cpu"``; another raises ``ValueError``).

    Where the Trainer would compile its steps (``compiled=True``, the default; not with
    ``overlap``), each rank's step is a compiled plan in two parts
    (:meth:`graphgrad.CompiledStep.reduced_step`): forward, loss and backward, the gradients
    written straight into the reducer's buffer; then, after the reduction, the update from
    the summed gradients: the same numbers as the eager step, bit for bit.

    Each history record also has ``world_size``, ``global_batch_size`` and
    ``allreduce_seconds`` (this rank's time inside the gradient reductions in the epoch,
    waiting for the slower rank included).
    """

    def __init__(self, model: Module, optimizer: Optimizer, *, world: World | None = None,
                 overlap: bool = False, bucket_bytes: int = 1 << 20, reduce: str = "auto",
                 **kwargs: Any) -> None:  # fmt: skip
        from . import _backend

        device = kwargs.get("device")
        where = _backend.parse_device(device) if device is not None else model.device
        if not where.is_cpu:
            raise ValueError(
                f"DistributedTrainer trains on the cpu device only, not {str(where)!r} (the "
                "ranks sum their gradients with MPI from NumPy arrays); pass device=None or "
                "'cpu', with the model on the cpu device"
            )
        world = world if world is not None else init()
        if getattr(optimizer, "fused_backward", False):
            raise ValueError(
                "DistributedTrainer: SGD(fused_backward=True) adds each rank's own gradient "
                "into its momentum during backward, before the ranks' gradients are averaged; "
                "use fused_backward=False"
            )
        if not world.is_root:
            kwargs.update(run_dir=None, progress=False, log=lambda _line: None)
        super().__init__(model, optimizer, **kwargs)
        self.world = world
        self.world_size = world.size
        self.overlap = bool(overlap)
        self.checkpoint_extra.setdefault("distributed", {})
        # frozen parameters (requires_grad=False) are not reduced: they never get a gradient
        trained = [p for p in model.parameters() if p.requires_grad]
        self.reducer = GradientReducer(trained, world, extra=3, overlap=overlap,
                                        bucket_bytes=bucket_bytes, reduce=reduce)  # fmt: skip
        if self.overlap and self._compiled is not None:
            self._compiled = None  # overlap reduces buckets as the eager backward makes them
            self.why_eager = (
                "overlap=True: the buckets are reduced while the eager backward pass makes "
                "their gradients"
            )

    def _run_fields(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epochs: int,
        eval_data: tuple[np.ndarray, np.ndarray] | None,
    ) -> dict[str, Any]:
        """What every rank's ``fit`` must agree on (with a :class:`World` allgather)."""
        return {
            "len(y)": len(y),
            "x.shape[1:]": tuple(np.shape(x)[1:]),
            "x.dtype": str(getattr(x, "dtype", type(x).__name__)),
            "epochs": epochs,
            "batch_size": self.batch_size,
            "data_seed": self.data_seed,
            "len(eval_data y)": None if eval_data is None else len(eval_data[1]),
            "lr_schedule": self.lr_schedule,
            "base_lr": self.base_lr,
            "overlap": self.overlap,
            "reduce": self.reducer._reduce,
            "reduced parameters (elements)": self.reducer.size,
        }

    def _local_problem(self, x: np.ndarray, y: np.ndarray) -> str | None:
        """This rank's own reason not to train, or None."""
        if len(x) != len(y):
            return f"fit: {len(x)} inputs but {len(y)} labels"
        reduced = {id(p) for p in self.reducer.params}
        for name, p in self.model.named_parameters():
            if p.requires_grad != (id(p) in reduced):
                return (
                    f"fit: parameter {name}'s requires_grad is {p.requires_grad} now but was "
                    f"{not p.requires_grad} when the DistributedTrainer was made (which set "
                    "the parameters the ranks reduce); make a new DistributedTrainer after "
                    "freezing or unfreezing parameters"
                )
        return None

    def _check_same_run(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epochs: int,
        eval_data: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        """Every rank's data and arguments for this ``fit`` must be the same (else the ranks
        would wait for each other in a collective until the watchdog stops the job): one
        allgather; where they differ, every rank raises naming the ranks and the field."""
        w = self.world
        problem = self._local_problem(x, y)
        mine = (self._run_fields(x, y, epochs, eval_data), problem)
        if w.size == 1:
            if problem is not None:
                raise ValueError(problem)
            return
        reports = w.allgather(mine)
        bad = [(r, m) for r, (_fields, m) in enumerate(reports) if m is not None]
        if bad:
            if problem is not None:
                raise ValueError(problem)
            lines = "; ".join(f"rank {r}: {m}" for r, m in bad)
            raise _on_every_rank(f"DistributedTrainer.fit: another rank cannot train: {lines}")
        differ = []
        for field in mine[0]:
            by_value: dict[str, list[int]] = {}
            for r, (fields, _m) in enumerate(reports):
                by_value.setdefault(repr(fields.get(field)), []).append(r)
            if len(by_value) > 1:
                parts = ", ".join(f"{v} on {_ranks(rs)}" for v, rs in by_value.items())
                differ.append(f"{field}: {parts}")
        if differ:
            raise _on_every_rank(
                "DistributedTrainer.fit: the ranks were given different runs ("
                + "; ".join(differ)
                + "); every rank must pass the same data and arguments"
            )

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
        """As :meth:`Trainer.fit`, on every rank at once (each passes the whole data: x (S, ...),
        y (S,), the same on every rank).

        Raises:
            DistributedError: on every rank, when the ranks were given different data or
                arguments (naming the field and the ranks), or another rank's input is
                invalid.
            ValueError: on the rank whose x and y differ in length, or whose parameters'
                ``requires_grad`` changed since the trainer was made (the others raise
                :class:`DistributedError` naming it).
        """
        w = self.world
        if not w.setup_agreed:
            w.agree(None)
        self._check_same_run(x, y, epochs, eval_data)
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
        self.reducer.setup()  # collective: every rank is here (the window, if any)
        if w.is_root:
            how = {"shm": "through the node's shared memory", "allreduce": "by MPI Allreduce"}
            self.log(
                f"distributed: {w.describe()}; {self.batch_size} samples per rank and step; "
                f"gradients summed {how[self.reducer.reduction]}"
            )
            if self.reducer.reduce_note:
                self.log(f"distributed: {self.reducer.reduce_note}")
            if w.threads_note:
                self.log(f"distributed: {w.threads_note}")
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

    def _schedule_lr(self, schedule: str, base_lr: float, at: int, total: int) -> None:
        """The optimiser's rate at step ``at`` of ``total`` (``epochs`` × steps per epoch at
        this world size): the fraction ``at / total`` of the run is done."""
        if schedule != "constant":
            self.optimizer.lr = base_lr * lr_factor(schedule, at, total)

    def _reduce(self, loss_sum: float, hits: float, n: int, e: int, b: int, steps: int,
                global_batch: int) -> None:  # fmt: skip
        """Sum this step's gradients (already in the reducer's buffer) and statistics (this
        rank's loss sum, correct count and samples) over the ranks, and stop every rank if
        the loss is not finite."""
        extra = self.reducer.extra
        extra[0], extra[1], extra[2] = loss_sum, hits, n
        self.reducer.finish()
        step_loss = float(self.reducer.extra[0])
        if not math.isfinite(step_loss):  # the same sum on every rank: all stop
            raise TrainingDiverged(
                f"the training loss is {step_loss / global_batch} at epoch {e}, step "
                f"{b + 1} of {steps} (optimizer step {self.step + 1}); training stopped. "
                f"{self._advice()}"
            )

    def _distributed_epoch(self, x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, Any]:
        model, opt, loss_fn, w = self.model, self.optimizer, self.loss_fn, self.world
        reducer = self.reducer
        compiled = self._compiled
        # the reducer's gradient slices (laid out once it is set up, before the epochs):
        # where a compiled step writes this rank's gradients and reads their sums
        write = dict(zip(map(id, reducer.params), reducer.views, strict=True))
        read = dict(zip(map(id, reducer.params), reducer.result_views, strict=True))
        global_batch = self.batch_size * w.size
        steps = math.ceil(len(y) / global_batch)
        # The schedule's position: epochs done plus the fraction of this one, in this world
        # size's steps (at0 + b of total). Not self.step: a run resumed on another number of
        # ranks took its steps at another number per epoch.
        total = epochs * steps
        at0 = self.epoch * steps
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
                n = len(batch)
                opt.zero_grad()
                stepped = False
                if len(idx) and compiled is not None:
                    # the compiled step: gradients into the buffer, the sum, then the update
                    yb = y[idx]

                    def between(loss: float, yb: np.ndarray = yb, b: int = b, n: int = n) -> bool:
                        assert compiled is not None and compiled.logits is not None
                        reducer.written()
                        hits = _hits(compiled.logits, yb)
                        self._reduce(loss * len(yb), hits, len(yb), e, b, steps, n)
                        self._schedule_lr(schedule, base_lr, at0 + b, total)  # update reads it
                        return True

                    value = compiled.reduced_step(x[idx], yb, weight=len(idx) / n, write=write,
                                                  read=read, between=between)  # fmt: skip
                    stepped = value is not None
                if stepped:
                    self.step += 1
                else:
                    stats = (0.0, 0.0)
                    if len(idx):
                        yb = y[idx]
                        logits = model(x[idx])
                        loss = loss_fn(logits, yb)
                        stats = (float(loss.data) * len(idx), 0.0)
                        reducer.backward(loss, len(idx) / n)  # weighted, into the buffer
                        del loss
                        stats = (stats[0], _hits(logits.data, yb))
                    self._reduce(stats[0], stats[1], len(idx), e, b, steps, n)
                    self._schedule_lr(schedule, base_lr, at0 + b, total)
                    opt.step()
                    self.step += 1
                w.progress()
                seen += n
                loss_sum += float(reducer.extra[0])
                correct += float(reducer.extra[1])
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


def _ranks(ranks: list[int]) -> str:
    """``rank 1`` or ``ranks 0, 2``."""
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def _hits(logits: np.ndarray, labels: np.ndarray) -> float:
    """How many rows of ``logits`` have their largest entry at ``labels``."""
    return float(np.count_nonzero(np.argmax(logits, axis=1) == labels))


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
        # First the other ranks load the data and build their trainer, and every rank learns
        # how that went, before rank 0 writes anything: a rank that cannot start then leaves
        # no half-made run directory (config.toml, run.json) in the way of the next attempt.
        error: Exception | None = None
        if not w.is_root:
            try:
                dtype = np.dtype(cfg.train.dtype)
                data = T.load_data(cfg.data, dtype)
                model = T.build_model(cfg.model, data.num_features, data.num_classes, dtype)
                optimizer = T.build_optimizer(cfg.optim, model.parameters())
                trainer = factory(
                    model, optimizer, batch_size=cfg.train.batch_size, data_seed=cfg.data.seed,
                    eval_batch_size=cfg.train.eval_batch_size,
                    lr_schedule=cfg.train.lr_schedule, base_lr=cfg.optim.lr,
                )  # fmt: skip
            except Exception as e:
                error = e
        w.agree(error)  # raises on every rank if any failed (rank 0 names them)
        w.setup_agreed = False  # rank 0's own set-up is agreed next: at its fit, or failure
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
        trainer.fit(data.x_train, data.y_train, cfg.train.epochs, (data.x_eval, data.y_eval),
                    data.eval_split)  # fmt: skip
        return None
    except BaseException as e:
        if isinstance(e, _SetupFailed | TrainingDiverged) or getattr(e, "on_every_rank", False):
            # Every rank saw it at the same point: a clean stop; rank 0 says why.
            if w.is_root:
                raise
            raise SystemExit(1) from None
        if w.training and w.size > 1:  # the others wait for this rank in a collective
            w.abort(e, 130 if isinstance(e, KeyboardInterrupt) else 1)
        raise
