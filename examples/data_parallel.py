"""∇H(θ) computed in parallel for all s: four ways to the gradient of the mean loss, compared.

(a) sample by sample: S forward + backward passes, averaged
(b) batched: one forward + backward pass over the (S, D) batch
(c) per-sample gradients in one vectorised pass (gg.per_sample_grads), then their mean
(d) data parallel: N MPI ranks, S/N samples each, one Allreduce (graphgrad.distributed)

    python examples/data_parallel.py                     # MLP 784-256-256-10, S = 64, N = 2
    python examples/data_parallel.py --ranks 4 --dtype float32

(d) starts ``mpiexec -n N`` on this same script (needs ``pip install 'graphgrad[distributed]'``).
The inputs are Fashion-MNIST test images when installed, random pixels otherwise. Exits with
status 1 if any method differs from (b) by more than the float tolerance.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import graphgrad as gg
from graphgrad.experiments import data_parallel as dp
from graphgrad.experiments.gradients import default_batch


def setup(args: argparse.Namespace) -> tuple[Any, np.ndarray, np.ndarray, str]:
    x, y, source = default_batch(args.samples, seed=0)
    dtype = np.dtype(args.dtype)
    model = gg.nn.MLP(784, args.hidden, 10, "relu", rng=np.random.default_rng(0), dtype=dtype)
    return model, x.astype(dtype), y, source


def worker(args: argparse.Namespace) -> None:
    """Run under mpiexec: (d) on every rank; rank 0 saves the gradient and its time."""
    from graphgrad import distributed as dist

    world = dist.init()
    model, x, y, _ = setup(args)
    times = []
    for _ in range(3):
        world.barrier()
        grads, seconds = dp.timed(lambda: dist.data_parallel_grads(model, gg.cross_entropy, x, y,
                                                                   world), repeat=1)  # fmt: skip
        times.append(max(world.allgather(seconds)))  # the slowest rank sets the pace
    if world.is_root:
        np.savez(args.worker, seconds=min(times), **grads)


def data_parallel(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], float] | str:
    """(d) in ``args.ranks`` processes; the gradient and its time, or why it did not run."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        from graphgrad.distributed import INSTALL_HINT

        return INSTALL_HINT
    mpiexec = Path(sys.executable).with_name("mpiexec")
    launcher = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    if launcher is None:
        return "no mpiexec found (pip install mpich)"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "grads.npz"
        cmd = [launcher, "-n", str(args.ranks), sys.executable, __file__, "--worker", str(out),
               "--samples", str(args.samples), "--hidden", ",".join(map(str, args.hidden)),
               "--dtype", args.dtype]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return f"mpiexec failed ({r.returncode}): {r.stderr.strip()[-2000:]}"
        with np.load(out) as f:
            seconds = float(f["seconds"])
            return {k: f[k] for k in f.files if k != "seconds"}, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=64, help="S")
    ap.add_argument("--hidden", type=lambda s: [int(h) for h in s.split(",")], default=[256, 256])
    ap.add_argument("--ranks", type=int, default=2, help="N for (d); 0 skips it")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args)
        return 0

    model, x, y, source = setup(args)
    sizes = "-".join(map(str, model.sizes))
    print(f"MLP {sizes} ({model.num_parameters():,} parameters), S = {len(y)} samples of "
          f"{source}, {args.dtype}")  # fmt: skip
    loss = gg.cross_entropy
    ref, t_b = dp.timed(lambda: dp.batched(model, loss, x, y))
    rows = [("(b) batched: 1 forward + backward pass", t_b, 0.0)]
    g_a, t_a = dp.timed(lambda: dp.sample_by_sample(model, loss, x, y), repeat=1)
    rows.insert(0, (f"(a) sample by sample: {len(y)} passes, averaged", t_a,
                    dp.max_rel_diff(g_a, ref)))  # fmt: skip
    g_c, t_c = dp.timed(lambda: dp.per_sample_mean(model, loss, x, y))
    rows.append(("(c) mean of per-sample gradients (1 pass)", t_c, dp.max_rel_diff(g_c, ref)))
    skipped = None
    if args.ranks > 0:
        got = data_parallel(args)
        if isinstance(got, str):
            skipped = got
        else:
            g_d, t_d = got
            rows.append(
                (f"(d) {args.ranks} MPI ranks, 1 Allreduce", t_d, dp.max_rel_diff(g_d, ref))
            )
    tol = 1e-10 if args.dtype == "float64" else 1e-4
    print("\n| method | time | max rel. difference from (b) |\n|---|---:|---:|")
    for name, seconds, diff in rows:
        print(f"| {name} | {1e3 * seconds:.2f} ms | {diff:.1e} |")
    print(f"\n(b) is {t_a / t_b:.0f}x faster than (a); tolerance {tol:g}")
    if skipped:
        print(f"(d) skipped: {skipped}")
    bad = [name for name, _, diff in rows if diff > tol]
    if bad:
        print(f"DISAGREE: {', '.join(bad)}")
        return 1
    print("all agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
