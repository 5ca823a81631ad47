"""Shared pieces of the benchmark suite: thread limits, interleaved timing, machine info.

Every benchmark times its peers in one process, taking turns (round-robin, the order rotated
each round), so a machine whose speed drifts (other jobs, turbo, a shared VM) slows them
alike; it reports the median of the per-round means. ``cpu/wall`` (process CPU seconds per
wall second while a peer runs) shows how many threads a peer really used.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Row = dict[str, Any]


# ------------------------------------------------------------------------------ threads


@contextlib.contextmanager
def threads_limited(n: int) -> Iterator[None]:
    """BLAS/OpenMP pools (threadpoolctl), graphgrad's (``gg.set_num_threads``: its BLAS and
    its compiled kernels) and PyTorch's intra-op pool limited to ``n``."""
    import graphgrad as gg

    gg_old = gg.set_num_threads(n)
    torch: Any
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        torch = None
    old = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        limiter: Any = contextlib.nullcontext()
    else:
        limiter = threadpool_limits(limits=n)
    try:
        with limiter:
            yield
    finally:
        gg.set_num_threads(gg_old)
        if torch is not None and old is not None:
            torch.set_num_threads(old)


@contextlib.contextmanager
def pinned(n: int) -> Iterator[None]:
    """Confine the calling thread, and the threads it starts meanwhile, to ``n`` CPUs.

    XLA's CPU client (JAX) ignores the thread flags that older releases honoured and sizes its
    pools from the CPUs it may run on; starting it inside this block gives it ``n`` (its
    threads keep the mask after the block restores the caller's)."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(old)[: max(1, n)])
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


# ------------------------------------------------------------------------------- timing


def calibrate(
    fn: Callable[[], object],
    target_s: float,
    sync: Callable[[], object] | None = None,
    max_number: int = 100_000,
) -> int:
    """How many calls of ``fn`` take about ``target_s`` (at least 1)."""
    fn()
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    one = max(time.perf_counter() - t0, 1e-7)
    return int(min(max_number, max(1, round(target_s / one))))


def interleave(
    peers: Mapping[str, Callable[[], object]],
    rounds: int,
    target_s: float,
    sync: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, dict[str, float]]:
    """Time every peer in turns: ``rounds`` rounds, each peer runs ``number`` calls per round
    (``number`` calibrated to about ``target_s`` seconds). ``sync[name]`` (optional) is called
    after a peer's calls and inside its timing (e.g. JAX's ``block_until_ready``).

    Returns, per peer: ``median_s`` (median over rounds of the mean seconds per call),
    ``min_s``, ``max_s``, ``cpu_over_wall``, ``number``, ``rounds``.
    """
    sync = sync or {}
    names = list(peers)
    number = {k: calibrate(peers[k], target_s, sync.get(k)) for k in names}
    for k in names:  # warm once more after calibration
        peers[k]()
        if k in sync:
            sync[k]()
    per_call: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            fn, n, s = peers[k], number[k], sync.get(k)
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                fn()
            if s is not None:
                s()
            t = time.perf_counter() - t0
            c = time.process_time() - c0
            per_call[k].append(t / n)
            cpu[k].append(c / t if t > 0 else float("nan"))
    return {
        k: {
            "median_s": statistics.median(v),
            "min_s": min(v),
            "max_s": max(v),
            "cpu_over_wall": statistics.median(cpu[k]),
            "number": number[k],
            "rounds": rounds,
        }
        for k, v in per_call.items()
    }


# ------------------------------------------------------------------------ result records


def ratio(
    benchmark: str,
    name: str,
    num: float | None,
    den: float | None,
    target: str | None,
    mins: tuple[float | None, float | None] | None = None,
) -> Row:
    """A ratio row: ``value = num / den`` (of medians) and whether it meets ``target``
    ("<= 0.85"); with ``mins``, also the ratio of the fastest rounds (``value_of_mins``), a
    second view that a busy machine disturbs less."""
    value = num / den if num is not None and den else None
    met: bool | None = None
    if value is not None and target:
        op, bound = target.split()
        met = value <= float(bound) if op == "<=" else value >= float(bound)
    row = {"benchmark": benchmark, "ratio": name, "value": value, "target": target, "met": met}
    if mins is not None:
        row["value_of_mins"] = mins[0] / mins[1] if mins[0] is not None and mins[1] else None
    return row


def script_main(
    doc: str,
    run: Callable[[bool, int], dict[str, Any]],
    argv: Sequence[str] | None,
    quick_help: str = "few rounds (CI smoke run)",
    threads_help: str = "BLAS/torch/XLA threads (1)",
) -> int:
    """The command line shared by the suite's items: ``--quick``, ``--threads``, ``--json``;
    exit status 1 if a check (same work done by every peer) failed."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--threads", type=int, default=1, help=threads_help)
    ap.add_argument("--json", type=Path, default=None, help="write the record here")
    args = ap.parse_args(argv)
    rec = run(args.quick, args.threads)
    if args.json:
        write_json(args.json, rec)
    return 0 if all(c["passed"] for c in rec["checks"]) else 1


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_jsonable) + "\n")
    tmp.replace(path)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


# -------------------------------------------------------------------------- machine info


# ----------------------------------------------------------- where the host put the CPUs

_C_TOOLS: dict[tuple[str, ...], Path | None] = {}  # built once per process (None: cannot)


def _c_tool(name: str, flags: Sequence[str] = ()) -> Path | None:
    """bench/``name``.c built with the system's C compiler (``-O2 -pthread`` and ``flags``)
    into a temporary directory, once per process; None where there is no compiler or the
    build fails."""
    key = (name, *flags)
    if key not in _C_TOOLS:
        import shutil
        import subprocess
        import tempfile

        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        src = Path(__file__).resolve().parent / f"{name}.c"
        exe = Path(tempfile.mkdtemp(prefix=f"gg-{name}-")) / name
        ok = cc is not None and (
            subprocess.run(
                [cc, "-O2", *flags, "-pthread", str(src), "-o", str(exe)],
                capture_output=True,
                timeout=120,
            ).returncode
            == 0
        )
        _C_TOOLS[key] = exe if ok else None
    return _C_TOOLS[key]


def core_latency_ns(cpu_a: int, cpu_b: int, trips: int = 50_000) -> float | None:
    """One-way core-to-core latency between two CPUs, in ns (bench/pingpong.c: one cache
    line passed back and forth ``trips`` times); None where it cannot be measured (no C
    compiler, a CPU this process may not use). On the 2-vCPU AMD EPYC VM of the README the
    host moved the vCPUs between cores ~40-60 ns apart and cores ~200 ns apart, and a 2-thread
    MLP step took 0.47-0.51 ms in the first placement and 0.74-0.84 ms in the second."""
    import subprocess

    exe = _c_tool("pingpong")
    if exe is None:
        return None
    proc = subprocess.run(
        [str(exe), str(cpu_a), str(cpu_b), str(trips)], capture_output=True, text=True
    )
    try:
        return float(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        return None


def fma_peak_gflops(
    threads: int = 1, cpus: Sequence[int] | None = None, iters: int = 20_000_000, repeats: int = 3
) -> float | None:
    """The float32 FMA peak of ``threads`` threads running at once (bench/peak.c: chains of
    independent fused multiply-adds on the widest vectors, nothing from memory), in GFLOPS,
    the best of ``repeats``; pinned to ``cpus`` (``taskset``) when given. None where it cannot
    be built or run. The arithmetic limit of a step made of matrix products: a step's GEMM
    FLOPs (:func:`mlp_step_flops`) over its time, divided by this, is how close it runs."""
    import shutil
    import subprocess

    exe = _c_tool("peak", ["-march=native"]) or _c_tool("peak")
    if exe is None:
        return None
    cmd = [str(exe), str(threads), str(iters), str(repeats)]
    if cpus is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    try:
        return float(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        return None


def mlp_step_flops(sizes: Sequence[int], batch: int) -> int:
    """The floating-point operations of an MLP training step's matrix products: layer sizes
    ``sizes`` (d_0, ..., d_L), ``batch`` samples S. Forward y_l = a_(l-1) W_l^T and the
    weight gradients dW_l = G_l^T a_(l-1) are 2 S d_(l-1) d_l each, for every layer; the
    gradient that flows back into a layer's input, G_l W_l, is needed for every layer but the
    first (nothing wants the gradient of the data). Elementwise work (bias, activation, loss,
    update) is not counted: a few FLOPs per element, against d FLOPs per element in a
    product."""
    prods = [a * b for a, b in itertools.pairwise(sizes)]
    return 2 * batch * (2 * sum(prods) + sum(prods[1:]))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict[str, Any]:
    """Platform, CPU, core count, library versions and BLAS/OpenMP pools (threadpoolctl)."""
    import graphgrad

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "graphgrad": graphgrad.__version__,
        "threads_requested": threads,
    }
    try:
        from graphgrad import scalar

        info["graphgrad_scalar"] = scalar.IMPLEMENTATION
    except (ImportError, AttributeError):
        pass
    try:  # loaded here so that threadpoolctl lists MKL's pool too
        from graphgrad import _blas

        found = _blas.find_mkl()
        info["graphgrad_mkl"] = found.get("path") or found.get("error")
        info["graphgrad_blas"] = _blas.blas_info()  # set_blas("auto")'s choice and figures
    except ImportError:  # pragma: no cover
        pass
    for mod in ("torch", "jax", "jaxlib", "micrograd", "threadpoolctl"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "installed")
        except ImportError:
            info[mod] = None
    try:
        from threadpoolctl import threadpool_info

        with threads_limited(threads):
            info["threadpools"] = [
                {
                    k: d.get(k)
                    for k in (
                        "user_api",
                        "internal_api",
                        "version",
                        "num_threads",
                        "threading_layer",
                        "filepath",
                    )
                }
                for d in threadpool_info()
            ]
            if info.get("torch"):
                import torch

                info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        info["threadpools"] = None
    return info
