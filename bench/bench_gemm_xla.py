"""The MLP step's large matrix products one by one: NumPy's BLAS against XLA's own GEMMs.

JAX jit compiles a training step into one XLA program, so a comparison of whole steps mixes
two things: the GEMMs themselves (XLA brings its own kernels) and everything between them.
This script times the first one alone. For each of the five large products of a
784-256-256-10 step at batch 128 (or 3072-512-512-10 at 256 with ``--shape 3072``), in the
formulation the step uses (W is (out, in)), it times

* NumPy: ``np.matmul(a, b, out=...)`` in a loop of 100 calls (the BLAS NumPy links, as
  graphgrad's default uses it, rows layout);
* XLA: a ``jax.jit`` of ``lax.fori_loop`` doing the product 20 times (one dispatch for 20
  products, so the per-call dispatch is amortised; each iteration adds a scalar to the left
  operand so that XLA cannot hoist the product out of the loop: that add is included),

taking turns for 9 rounds; medians, and the median of the per-round ratios XLA / NumPy.
Pin it to one core for the 1-thread figures (``taskset -c 0``, with OMP_NUM_THREADS=1):
XLA ignores the thread variables.

Run: taskset -c 0 python bench/bench_gemm_xla.py [--shape 784|3072] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

SHAPES = {"784": (128, 784, 256), "3072": (256, 3072, 512)}


def products(batch: int, d: int, h: int) -> list[tuple[str, Any, bool, Any, bool]]:
    """(name, a, transpose a, b, transpose b) for the five large products of the step, each
    array stored as the step stores it (row-major; W is (out, in))."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, d), dtype=np.float32)
    w1 = rng.standard_normal((h, d), dtype=np.float32)
    w2 = rng.standard_normal((h, h), dtype=np.float32)
    g = rng.standard_normal((batch, h), dtype=np.float32)
    act = rng.standard_normal((batch, h), dtype=np.float32)
    return [
        ("forward, layer 1: x @ W1.T", x, False, w1, True),
        ("weight gradient, layer 1: G.T @ x", g, True, x, False),
        ("forward, layer 2: a @ W2.T", act, False, w2, True),
        ("weight gradient, layer 2: G.T @ a", g, True, act, False),
        ("input gradient, layer 2: G @ W2", g, False, w2, False),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="784")
    ap.add_argument("--quick", action="store_true", help="2 rounds, few calls (CI smoke run)")
    args = ap.parse_args(argv)
    try:
        import jax
        import jax.numpy as jnp
        from jax import lax
    except ImportError:
        print("bench_gemm_xla: jax is not installed (make bench-jax); nothing to compare")
        return 0
    rounds, calls, reps = (2, 3, 2) if args.quick else (9, 100, 20)
    batch, d, h = SHAPES[args.shape]
    print(f"{args.shape} step's products (batch {batch}), fp32; medians of {rounds} rounds")
    print(f"{'product':36s} {'NumPy µs':>9s} {'XLA µs':>9s} {'XLA / NumPy':>12s}")
    for name, a0, ta, b0, tb in products(batch, d, h):
        a, b = (a0.T if ta else a0), (b0.T if tb else b0)
        out = np.empty((a.shape[0], b.shape[1]), np.float32)
        ja, jb = jnp.asarray(a0), jnp.asarray(b0)

        def body(i: Any, c: Any, ja: Any = ja, jb: Any = jb, ta: bool = ta, tb: bool = tb) -> Any:
            p, q = ja + c, jb  # the add keeps XLA from hoisting the product out of the loop
            return c + ((p.T if ta else p) @ (q.T if tb else q))[0, 0] * 1e-30

        looped = jax.jit(lambda body=body: lax.fori_loop(0, reps, body, jnp.float32(0)))

        def numpy_call(a: Any = a, b: Any = b, out: Any = out) -> None:
            np.matmul(a, b, out=out)

        def xla_call(looped: Any = looped) -> None:
            looped().block_until_ready()

        numpy_call()
        xla_call()
        t_np, t_xla = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                numpy_call()
            t_np.append((time.perf_counter() - t0) / calls)
            t0 = time.perf_counter()
            for _ in range(max(1, calls // reps)):
                xla_call()
            t_xla.append((time.perf_counter() - t0) / max(1, calls // reps) / reps)
        ratio = statistics.median(x / n for x, n in zip(t_xla, t_np, strict=True))
        print(
            f"{name:36s} {statistics.median(t_np) * 1e6:9.1f} "
            f"{statistics.median(t_xla) * 1e6:9.1f} {ratio:12.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
