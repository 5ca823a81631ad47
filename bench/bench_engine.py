"""Engine overhead, side by side in one process, interleaved; medians and ratios.

1. tiny op: c = a + b on 1-element tensors, then c.backward()   (graphgrad vs PyTorch)
2. elementwise chain on 1,000,000 float32: y = tanh(x * w + b) * x, sum, backward
   (graphgrad vs hand-written NumPy forward + backward vs PyTorch)

Run: python bench/bench_engine.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import graphgrad as gg


def _median_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="few repeats (CI smoke run)")
    ap.add_argument("--json", type=Path, default=None, help="also write the medians here")
    args = ap.parse_args(argv)
    number, repeat = (200, 3) if args.quick else (5000, 15)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None  # type: ignore[assignment]

    a = gg.tensor([1.0], requires_grad=True)
    b = gg.tensor([2.0], requires_grad=True)

    def gg_tiny() -> None:
        a.grad = b.grad = None
        (a + b).backward(gg_seed)

    gg_seed = np.ones(1, np.float32)
    results: dict[str, float] = {}
    rows = []
    peers = {"graphgrad": gg_tiny}
    if torch is not None:
        ta = torch.tensor([1.0], requires_grad=True)
        tb = torch.tensor([2.0], requires_grad=True)
        t_seed = torch.ones(1)

        def torch_tiny() -> None:
            ta.grad = tb.grad = None
            (ta + tb).backward(t_seed)

        peers["pytorch"] = torch_tiny
    for _ in range(3):  # interleave the peers
        for name, fn in peers.items():
            results.setdefault(name, [])  # type: ignore[arg-type]
            results[name].append(_median_us(fn, number, repeat))  # type: ignore[attr-defined]
    med = {k: statistics.median(v) for k, v in results.items()}  # type: ignore[arg-type]
    rows.append(("tiny add + backward (µs)", med))

    n = 1_000_000
    rng = np.random.default_rng(0)
    xs = rng.standard_normal(n).astype(np.float32)
    ws = rng.standard_normal(n).astype(np.float32)
    bs = rng.standard_normal(n).astype(np.float32)
    x = gg.Tensor(xs, requires_grad=True)
    w = gg.Tensor(ws, requires_grad=True)
    bb = gg.Tensor(bs, requires_grad=True)

    def gg_chain() -> None:
        x.grad = w.grad = bb.grad = None
        (gg.tanh(x * w + bb) * x).sum().backward()

    def np_chain() -> None:
        u = xs * ws + bs
        t = np.tanh(u)
        _ = np.sum(t * xs)
        gt = xs  # d/dt of sum(t * x) = x
        gx_direct = t
        gu = gt * (1 - t * t)
        _gx = gx_direct + gu * ws
        _gw = gu * xs
        _gb = gu

    peers2: dict[str, Callable[[], None]] = {"graphgrad": gg_chain, "numpy by hand": np_chain}
    if torch is not None:
        tx = torch.from_numpy(xs).requires_grad_()
        tw = torch.from_numpy(ws).requires_grad_()
        tbb = torch.from_numpy(bs).requires_grad_()

        def torch_chain() -> None:
            tx.grad = tw.grad = tbb.grad = None
            (torch.tanh(tx * tw + tbb) * tx).sum().backward()

        peers2["pytorch"] = torch_chain
    res2: dict[str, list[float]] = {k: [] for k in peers2}
    n2, r2 = (2, 3) if args.quick else (5, 9)
    for _ in range(3):
        for name, fn in peers2.items():
            res2[name].append(_median_us(fn, n2, r2) / 1000)
    chain = {k: statistics.median(v) for k, v in res2.items()}
    rows.append(("1e6-float chain fwd+bwd (ms)", chain))

    print(f"numpy {np.__version__}" + (f", torch {torch.__version__} (1 thread)" if torch else ""))
    for title, m in rows:
        print(f"\n{title}")
        for k, v in m.items():
            print(f"  {k:16s} {v:10.2f}")
        base = m["graphgrad"]
        for k, v in m.items():
            if k != "graphgrad":
                print(f"  graphgrad / {k}: {base / v:.2f}")
    if args.json:
        args.json.write_text(json.dumps({title: m for title, m in rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
