"""What a parallel region costs: graphgrad's kernels at 1 and at N threads, array by array size.

Each kernel call at N threads wakes the OpenMP workers, which then wait for the next region
as the wait policy says: graphgrad makes GCC's libgomp sleep (``OMP_WAIT_POLICY=PASSIVE``,
unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set), so that its workers never spin on
the cores the BLAS's threads need; a sleeping worker must then be woken for every region. On
a virtual machine that wake-up can cost tens of microseconds, more than a small kernel's
whole work. This prints, per size, the fastest of many back-to-back calls of the ReLU VJP and
the SGD-momentum update at 1 thread and at N threads, the same with a GEMM (NumPy's BLAS or
MKL) between the calls, and the size from which N threads win: the evidence for
``PAR_MIN`` (``GRAPHGRAD_PAR_MIN``) and the wait policy.

Then the ceiling no wait policy can lift: how far the memory bandwidth scales with cores. The
SGD-momentum update of a large layer (reads v, g, w; writes v, w) is memory-bound, and it is
most of a compiled step's non-GEMM time (``bench/profile_step.py``). One process runs it, pinned
to one CPU, on arrays of ``BW_SIZE`` floats (the 3072-512 layer's weights: 6 MiB each); then
two processes run it at the same moment, each on its own CPU and on half as many floats of its
own (the same bytes in all, as a split between 2 threads would touch). The one's time over the
slower half's is the most any split of that update between 2 threads could gain, whatever the
threads cost to wake. Run it under each setting to compare:

    python bench/bench_wake.py
    GOMP_SPINCOUNT=10000 python bench/bench_wake.py
    GRAPHGRAD_BLAS=mkl python bench/bench_wake.py

Run:  python bench/bench_wake.py [--threads 2] [--quick] [--md PATH] [--no-bandwidth]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import graphgrad as gg
from graphgrad import _blas, _fused

SIZES = [8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576]
TUNING = ("GRAPHGRAD_BLAS", "GRAPHGRAD_PAR_MIN", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
#: Floats per array in the bandwidth probe: the 3072-512-512-10 step's first weight matrix.
BW_SIZE = 3072 * 512


def fastest_us(fn: Callable[[], None], number: int, repeat: int) -> float:
    """The fastest mean over ``repeat`` runs of ``number`` calls, in microseconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best * 1e6


def _gemm_then(a: np.ndarray, b: np.ndarray, kernel: Callable[[], None]) -> None:
    _blas.matmul(a, b)  # the BLAS's threads wake, work, then wait (spin or sleep)
    kernel()


def run(threads: int, sizes: list[int], repeat: int) -> list[dict[str, float]]:
    kernels = _fused.KERNELS
    if kernels is None:
        raise SystemExit("bench_wake: graphgrad's compiled kernels are not in use")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 256), dtype=np.float32)
    b = rng.standard_normal((256, 256), dtype=np.float32)
    saved = kernels.PAR_MIN
    rows = []
    try:
        for n in sizes:
            x = rng.standard_normal(n, dtype=np.float32)
            g, w, v, out = x.copy(), x.copy(), x.copy(), np.empty_like(x)
            number = max(10, min(2000, 4_000_000 // n))

            relu_grad = functools.partial(kernels.relu_grad, g, x, out)
            sgd = functools.partial(kernels.sgd, w, g, v, 1e-9, 0.9, 0.0, False, False)
            gemm_then_relu_grad = functools.partial(_gemm_then, a, b, relu_grad)

            row: dict[str, float] = {"n": n}
            for k in (1, threads):
                gg.set_num_threads(k)
                kernels.PAR_MIN = 1  # split whatever the size: the cost is what we measure
                row[f"relu_grad {k}t"] = fastest_us(relu_grad, number, repeat)
                row[f"sgd {k}t"] = fastest_us(sgd, number, repeat)
                row[f"gemm+relu_grad {k}t"] = fastest_us(gemm_then_relu_grad, number, repeat)
                kernels.PAR_MIN = saved
            rows.append(row)
    finally:
        kernels.PAR_MIN = saved
    return rows


def render(rows: list[dict[str, float]], threads: int) -> str:
    cols = ["relu_grad", "sgd", "gemm+relu_grad"]
    head = "| elements | " + " | ".join(f"{c} 1t | {c} {threads}t" for c in cols) + " |"
    lines = [head, "|---:|" + "---:|" * (2 * len(cols))]
    for r in rows:
        cells = [f"{r[f'{c} {k}t']:.1f}" for c in cols for k in (1, threads)]
        lines.append(f"| {int(r['n'])} | " + " | ".join(cells) + " |")
    wins = {
        c: next((int(r["n"]) for r in rows if r[f"{c} {threads}t"] < r[f"{c} 1t"]), None)
        for c in cols
    }
    env = {k: os.environ[k] for k in TUNING if k in os.environ}
    lines += [
        "",
        "µs per call, the fastest of the repeats. First size at which "
        f"{threads} threads beat 1: "
        + ", ".join(f"{c} {'none' if n is None else n}" for c, n in wins.items())
        + f". BLAS: {gg.blas()}; settings: {env or 'defaults'}; PAR_MIN now "
        f"{_fused.KERNELS.PAR_MIN}.",
    ]
    return "\n".join(lines) + "\n"


def bandwidth_worker(cpu: int, n: int, repeat: int) -> None:
    """One probe process: pinned to ``cpu``, one thread, SGD-momentum over ``n`` floats. It
    prints "ready", waits for a line on stdin (so that two start together), then prints the
    µs of each of ``repeat`` calls, one per line."""
    os.sched_setaffinity(0, {cpu})
    gg.set_num_threads(1)
    kernels = _fused.KERNELS
    assert kernels is not None
    rng = np.random.default_rng(cpu)
    w, g, v = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
    for _ in range(3):  # the pages touched, the caches warm
        kernels.sgd(w, g, v, 1e-9, 0.9, 0.0, False, False)
    print("ready", flush=True)
    sys.stdin.readline()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        kernels.sgd(w, g, v, 1e-9, 0.9, 0.0, False, False)
        times.append((time.perf_counter() - t0) * 1e6)
    print("\n".join(f"{t:.3f}" for t in times), flush=True)


def _probe(cpus: list[int], n: int, repeat: int) -> list[float]:
    """Start one worker per CPU, release them together; each one's median µs per call."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--bandwidth-worker", f"{c},{n},{repeat}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for c in cpus
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("bench_wake: a bandwidth worker failed to start")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p in procs:
        if p.returncode != 0:
            raise SystemExit(f"bench_wake: a bandwidth worker exited with {p.returncode}")
    return [statistics.median(float(t) for t in out.split()) for out in outs]


def bandwidth(n: int, repeat: int) -> str:
    """The memory-bandwidth ceiling for 2 threads, as Markdown (or why it was not measured)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "Bandwidth probe: one CPU available to this process; nothing to compare.\n"
    alone = _probe(cpus[:1], n, repeat)[0]
    halves = _probe(cpus[:2], n // 2, repeat)
    mib = 5 * n * 4 / 2**20  # bytes moved per call: v, g, w read; v, w written
    return (
        f"Memory bandwidth, SGD-momentum over {n} floats ({mib:.0f} MiB moved a call, hot in "
        f"cache as far as it fits), one thread a process, medians of {repeat} calls: one "
        f"process alone {alone:.0f} µs ({mib / 1024 / (alone / 1e6):.0f} GiB/s); two at once "
        f"on CPUs {cpus[0]} and {cpus[1]}, each on half the floats: {halves[0]:.0f} and "
        f"{halves[1]:.0f} µs. Speed-up of the halves: **{alone / max(halves):.2f}x**, the most "
        "a 2-thread split of this update can gain here, before any cost of waking threads.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="three sizes, few repeats (CI)")
    ap.add_argument("--md", type=Path, help="also write the table here")
    ap.add_argument("--no-bandwidth", action="store_true", help="skip the bandwidth probe")
    ap.add_argument("--bandwidth-worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.bandwidth_worker:
        cpu, n, repeat = map(int, a.bandwidth_worker.split(","))
        bandwidth_worker(cpu, n, repeat)
        return 0
    sizes = SIZES[1:6:2] if a.quick else SIZES
    before = gg.get_num_threads()
    try:
        rows = run(a.threads, sizes, 2 if a.quick else 15)
    finally:
        gg.set_num_threads(before)
    md = render(rows, a.threads)
    if not a.no_bandwidth:
        md += "\n" + bandwidth(BW_SIZE // 8 if a.quick else BW_SIZE, 20 if a.quick else 300)
    print(md)
    if a.md:
        a.md.write_text(
            f"# Parallel-region cost\n\nGenerated by `python bench/bench_wake.py`.\n\n{md}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
