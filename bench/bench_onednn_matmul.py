"""oneDNN's matmul primitive against its ``dnnl_sgemm`` (and NumPy's BLAS), in one process,
taking turns: the forward products ``y = x @ Wᵀ`` of the two MLP steps alone, then whole compiled
steps with the primitive on and off (issue 14; docs/speed.md, "oneDNN").

    python bench/bench_onednn_matmul.py --threads 1 --rounds 15   # pin it: taskset -c 0
    python bench/bench_onednn_matmul.py --threads 2 --rounds 11

Medians of per-round ratios (the primitive's time over ``dnnl_sgemm``'s); every variant of a
row runs once per round, the order reversed every other round. Needs oneDNN 3
(``pip install graphgrad[onednn]``).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import graphgrad as gg
from graphgrad import _blas, _fused

#: (name, M, N, K) of y (M, N) = x (M, K) @ Wᵀ, W (N, K): the steps' forward products
PRODUCTS = [
    ("3072 step, layer 1", 256, 512, 3072),
    ("3072 step, layer 2", 256, 512, 512),
    ("784 step, layer 1", 128, 256, 784),
    ("784 step, layer 2", 128, 256, 256),
]
STEPS = [((784, 256, 256, 10), 128), ((3072, 512, 512, 10), 256)]


_BUDGET = [0.2]  # seconds each timing takes (--quick: less)


def _time(fn: Callable[[], Any]) -> float:
    """Seconds per call of ``fn``, over about ``_BUDGET`` seconds (one warm call first)."""
    budget = _BUDGET[0]
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    n = max(3, int(budget / one))
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _turns(
    variants: dict[str, Callable[[], Any]],
    rounds: int,
    before: Callable[[str], Any] = lambda name: None,
) -> dict[str, list[float]]:
    """Each variant's seconds per call, one entry a round (``before(name)`` runs first, untimed
    but for the warm call)."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            before(name)
            times[name].append(_time(variants[name]))
    return times


def _row(label: str, times: dict[str, list[float]], base: str, unit: float, u: str) -> str:
    cells = [f"{statistics.median(t) * unit:.{2 if u == 'ms' else 1}f} {u}" for t in times.values()]
    ratios = [
        statistics.median(a / b for a, b in zip(t, times[base], strict=True))
        for t in times.values()
    ]
    return f"| {label} | " + " | ".join(cells + [f"{r:.3f}" for r in ratios]) + " |"


def _products(
    kernels: Any, address: int, sgemm: Any, M: int, N: int, K: int, rng: np.random.Generator
) -> dict[str, Callable[[], Any]]:
    """The three ways to make y = x @ Wᵀ, x (M, K), W (N, K), into one y."""
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    out = np.empty((M, N), np.float32)
    pa, pb, pc = (a.ctypes.data for a in (x, w, out))
    return {
        "primitive": lambda: kernels.gemm(address, x, False, w, True, out, 0.0, 2),
        "sgemm": lambda: sgemm(b"N", b"T", M, N, K, 1.0, pa, K, pb, K, 0.0, pc, N),
        "numpy": lambda: np.matmul(x, w.T, out=out),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="one round, short timings (CI)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 1
        _BUDGET[0] = 0.005
    found = _blas.find_onednn()
    if "error" in found or not found["matmul"].startswith("x @"):
        print(f"needs oneDNN 3: {found.get('error') or found['matmul']}", file=sys.stderr)
        return 2
    kernels = _fused.KERNELS
    lib = found["lib"]
    sgemm = lib.dnnl_sgemm
    sgemm.restype = ctypes.c_int
    sgemm.argtypes = [ctypes.c_char, ctypes.c_char] + [ctypes.c_longlong] * 3 + [
        ctypes.c_float, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p,
        ctypes.c_longlong, ctypes.c_float, ctypes.c_void_p, ctypes.c_longlong,
    ]  # fmt: skip
    gg.set_num_threads(args.threads)
    gg.set_blas("onednn")
    address = _blas.gemm_address(np.dtype(np.float32))
    assert address is not None
    rng = np.random.default_rng(0)
    print(f"oneDNN {found['version']} ({found['path']}), {args.threads} thread(s), "
          f"{args.rounds} rounds, medians")  # fmt: skip
    print("\n| y = x @ Wᵀ (M, N, K) | primitive | dnnl_sgemm | NumPy's BLAS "
          "| primitive / sgemm | sgemm / sgemm | NumPy / sgemm |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, M, N, K in PRODUCTS:
        variants = _products(kernels, address, sgemm, M, N, K, rng)
        times = _turns(variants, args.rounds)
        print(_row(f"{label} ({M}, {N}, {K})", times, "sgemm", 1e6, "µs"))
    print("\n| compiled step | primitive on | primitive off | on / off | off / off |")
    print("|---|---:|---:|---:|---:|")
    for sizes, batch in STEPS:
        x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], batch)
        steps = {}
        for name in ("on", "off"):
            model = gg.nn.MLP(
                sizes[0], sizes[1:-1], sizes[-1], "relu", rng=np.random.default_rng(1)
            )
            steps[name] = gg.compile_step(
                model, gg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            )

        def switch(name: str) -> None:  # the primitives are made again by the warm call
            if name == "on":
                _blas._onednn_matmul(lib, 3)  # as graphgrad sets it up when loading oneDNN
            else:
                kernels.dnnl_matmul_setup(None)

        step_variants: dict[str, Callable[[], Any]] = {
            name: functools.partial(st, x, y) for name, st in steps.items()
        }
        times = _turns(step_variants, args.rounds, switch)
        label = "-".join(map(str, sizes)) + f" b{batch}"
        print(_row(label, times, "off", 1e3, "ms"))
    _blas._onednn_matmul(lib, 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
