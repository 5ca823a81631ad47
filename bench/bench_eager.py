"""Where the eager training step's time goes beyond its kernels (issue 14; docs/speed.md,
"The eager step's own cost"), in one process, taking turns:

- **eager**: ``opt.zero_grad(); gg.cross_entropy(model(x), y).backward(); opt.step()``, the
  graph recorded and walked in Python;
- **kernels, no graph**: the same kernel and BLAS calls the eager step makes, on the same
  arrays, called one after the other from a plain Python function (no Tensors, no graph, no
  engine): what the eager step would cost if recording and walking the graph were free;
- **compiled**: ``gg.compile_step(model, opt)``, the same calls from one C loop over arrays
  allocated once.

    python bench/bench_eager.py --rounds 15        # pin it: taskset -c 0

eager / kernels is the graph's own cost; kernels / compiled what calling the kernels from
Python (fresh arrays, a Python call and its checks per kernel) costs against the plan. Medians
of per-round ratios, the order reversed every other round; SGD with momentum 0.9, float32,
ReLU MLPs, 1 thread. Before timing, three steps of each from the same weights must give the
same weights (to float32 rounding), or the script stops: the kernel list is the eager step's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from benchlib import calibrate

import graphgrad as gg
from graphgrad import _blas, _fused
from graphgrad.ops import _xp

#: (name, sizes, batch): the issue's 784 step, a tiny MLP (the lecture's toy nets), a deep one
SHAPES = [
    ("784-256-256-10 b128", (784, 256, 256, 10), 128),
    ("8-8-8-2 b4", (8, 8, 8, 2), 4),
    ("64x16-10 b32 (16 layers)", (64,) * 16 + (10,), 32),
]
LR, MU = 0.01, 0.9


def _setup(sizes: tuple[int, ...], batch: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    model = gg.nn.MLP(sizes[0], list(sizes[1:-1]), sizes[-1], "relu", rng=np.random.default_rng(1))
    opt = gg.optim.SGD(model.parameters(), lr=LR, momentum=MU)
    return model, opt, x, y


def eager_step(model: Any, opt: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], Any]:
    def step() -> None:
        opt.zero_grad()
        gg.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def kernel_step(
    model: Any, x: np.ndarray, y: np.ndarray, bufs: list[np.ndarray] | None = None
) -> Callable[[], Any]:
    """The eager step's calls without the graph: per layer the product, the bias add and the
    ReLU; the loss and its gradient; per layer backwards the input gradient, ReLU's VJP, the
    bias sum and the weight gradient; then one update call for every parameter (momentum
    buffers ``bufs``, in the order weight, bias, weight, ...; default: zeros)."""
    layers = model.linear_layers()
    ws = [lin.weight.data for lin in layers]
    bs = [lin.bias.data for lin in layers]
    params = [a for pair in zip(ws, bs, strict=True) for a in pair]
    if bufs is None:
        bufs = [np.zeros_like(a) for a in params]
    many = _fused.KERNELS.sgd_many
    mm, relu, relu_grad, sum_rows = _blas.matmul, _fused.relu, _fused.relu_grad, _xp.sum_rows
    n = len(layers)
    S = x.shape[0]

    def step() -> None:
        acts, pres = [x], []
        for k in range(n):
            z = mm(acts[-1], ws[k].T)
            if not _fused.add_bias(z, bs[k]):
                z += bs[k]
            pres.append(z)
            if k < n - 1:
                acts.append(relu(z))
        loss = _fused.xent_forward(pres[-1], y, keep=True)  # and its gradient, kept
        g = _fused.xent_backward(pres[-1], y, 1.0 / S, loss)
        assert g is not None
        grads: list[np.ndarray] = [None] * (2 * n)  # type: ignore[list-item]
        for k in range(n - 1, -1, -1):
            if k:
                d = mm(g, ws[k])
            grads[2 * k + 1] = sum_rows(g)
            grads[2 * k] = mm(g.T, acts[k])
            if k:
                g = relu_grad(d, pres[k - 1])
        left = many(params, grads, bufs, LR, MU, 0.0, False)
        assert not left, left

    return step


def check(sizes: tuple[int, ...], batch: int) -> None:
    """After one eager step each (which makes the momentum buffers), three more eager steps
    and three without the graph, from the same weights, give the same weights."""
    model_a, opt_a, x, y = _setup(sizes, batch)
    model_b, opt_b, _, _ = _setup(sizes, batch)
    eager_a = eager_step(model_a, opt_a, x, y)
    eager_a()
    eager_step(model_b, opt_b, x, y)()
    bufs = [opt_b.state[i]["momentum_buffer"] for i in range(len(opt_b.params))]
    kernels_b = kernel_step(model_b, x, y, bufs)
    for _ in range(3):
        eager_a()
        kernels_b()
    for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True):
        if not np.allclose(p.data, q.data, rtol=1e-5, atol=1e-6):
            sys.exit(f"bench_eager: the kernel list drifted from the eager step on {sizes}")


def _time(fn: Callable[[], Any], budget: float) -> float:
    """Seconds per call of ``fn`` over about ``budget`` seconds."""
    n = max(3, calibrate(fn, budget))
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def row(name: str, sizes: tuple[int, ...], batch: int, rounds: int, budget: float) -> str:
    """The table's row for one shape: the three steps, taking turns."""
    check(sizes, batch)
    model, opt, x, y = _setup(sizes, batch)
    compiled = gg.compile_step(model, opt)
    variants = {
        "eager": eager_step(model, opt, x, y),
        "kernels": kernel_step(model, x, y),
        "compiled": lambda: compiled(x, y),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for k in order:
            times[k].append(_time(variants[k], budget))

    def ratio(a: str, b: str) -> float:
        return statistics.median(p / q for p, q in zip(times[a], times[b], strict=True))

    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    return (
        f"| {name} | {med['eager']:.1f} µs | {med['kernels']:.1f} µs | "
        f"{med['compiled']:.1f} µs | {ratio('eager', 'kernels'):.3f} | "
        f"{ratio('kernels', 'compiled'):.3f} | {ratio('eager', 'compiled'):.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="few, short rounds (proves it runs)")
    args = ap.parse_args(argv)
    if not _fused.COMPILED:
        print("bench_eager: needs graphgrad's compiled kernels", file=sys.stderr)
        return 2
    gg.set_num_threads(1)
    rounds, budget = (2, 0.02) if args.quick else (args.rounds, 0.25)
    print(f"graphgrad {gg.__version__}, BLAS {gg.blas()}, 1 thread, {rounds} rounds\n")
    print(
        "| shape | eager | kernels, no graph | compiled | eager / kernels | "
        "kernels / compiled | eager / compiled |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, sizes, batch in SHAPES:
        print(row(name, sizes, batch, rounds, budget), flush=True)
    print("\nMedians of per-round times and ratios; every variant once a round, the order")
    print("reversed every other round.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
