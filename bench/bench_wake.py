"""What a parallel region costs: graphgrad's kernels at 1 and at N threads, array by array size.

Each kernel call at N threads wakes the OpenMP workers, which then wait for the next region
as the wait policy says: graphgrad makes GCC's libgomp sleep (``OMP_WAIT_POLICY=PASSIVE``,
unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set), so that its workers never spin on
the cores the BLAS's threads need; a sleeping worker must then be woken for every region. On
a virtual machine that wake-up can cost tens of microseconds, more than a small kernel's
whole work. This prints, per size, the fastest of many back-to-back calls of the ReLU VJP and
the SGD-momentum update at 1 thread and at N threads, the same with a GEMM (NumPy's BLAS or
MKL) between the calls, and the size from which N threads win: the evidence for
``PAR_MIN`` (``GRAPHGRAD_PAR_MIN``) and the wait policy. Run it under each setting to compare:

    python bench/bench_wake.py
    GOMP_SPINCOUNT=10000 python bench/bench_wake.py
    GRAPHGRAD_BLAS=mkl python bench/bench_wake.py

Run:  python bench/bench_wake.py [--threads 2] [--quick] [--md PATH]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import graphgrad as gg
from graphgrad import _blas, _fused

SIZES = [8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576]
TUNING = ("GRAPHGRAD_BLAS", "GRAPHGRAD_PAR_MIN", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="three sizes, few repeats (CI)")
    ap.add_argument("--md", type=Path, help="also write the table here")
    a = ap.parse_args(argv)
    sizes = SIZES[1:6:2] if a.quick else SIZES
    before = gg.get_num_threads()
    try:
        rows = run(a.threads, sizes, 2 if a.quick else 15)
    finally:
        gg.set_num_threads(before)
    md = render(rows, a.threads)
    print(md)
    if a.md:
        a.md.write_text(
            f"# Parallel-region cost\n\nGenerated by `python bench/bench_wake.py`.\n\n{md}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
