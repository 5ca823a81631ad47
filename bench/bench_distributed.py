"""Data parallelism: the equivalence harness's speeds, and training throughput on 1 vs N ranks.

Part 1, the harness (MLP 784-256-256-10, float32, one BLAS thread): the gradient of the mean
loss over S samples computed (a) sample by sample, S forward + backward passes averaged,
(b) batched in one pass, (c) as the mean of the per-sample gradients (gg.per_sample_grads),
(d) across N MPI ranks (graphgrad.distributed.data_parallel_grads, one Allreduce). It checks
they agree and prints the speed-up of (b) over (a) and the throughput of (d) over (b).

Part 2, scaling: training samples per second on the MLP 784-256-256-10, per-rank batch 128,
SGD momentum 0.9, one BLAS thread per rank (OMP/OPENBLAS/MKL_NUM_THREADS=1 and
threadpoolctl / torch.set_num_threads(1)), synthetic data. Peers, each in its own processes
launched by the same ``mpiexec``, taking turns (the order rotated each round):

* graphgrad, 1 rank: the plain ``Trainer``; N ranks: ``graphgrad.distributed
  .DistributedTrainer`` (one Allreduce of one flat float32 buffer per step);
* PyTorch, 1 rank: a plain loop; N ranks: ``DistributedDataParallel`` over gloo (TCP on
  127.0.0.1; the rank comes from mpiexec's PMI_RANK).

Each run trains two passes of ``--steps`` steps and times the second. Scaling = samples/s on
N ranks / on 1 rank, per round, median over rounds; efficiency = scaling / N. graphgrad's
time inside Allreduce (rank 0, per step; it includes waiting for the slower rank) is
reported too. Targets: graphgrad's scaling >= 1.7 at N = 2 and >= PyTorch DDP's.

Run: python bench/bench_distributed.py [--quick] [--ranks 2] [--rounds 3] [--steps 100]
                                       [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SIZES = (784, 256, 256, 10)
BATCH = 128
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _limit_threads() -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - the bench extra brings it
        return
    threadpool_limits(limits=1)


def _data(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.random((samples, SIZES[0]), dtype=np.float32), g.integers(0, SIZES[-1], samples)


# ----------------------------------------------------------------------------- workers


def worker_graphgrad(steps: int, out: Path) -> None:
    import graphgrad as gg
    from graphgrad.train import Trainer

    _limit_threads()
    size = int(os.environ.get("PMI_SIZE", "1"))
    x, y = _data(steps * size * BATCH)
    model = gg.nn.MLP(SIZES[0], list(SIZES[1:-1]), SIZES[-1], rng=np.random.default_rng(0))
    opt = gg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    kw: dict[str, Any] = {"batch_size": BATCH, "progress": False, "log": lambda _l: None}
    rank = 0
    if size > 1:
        from graphgrad import distributed as dist

        world = dist.init(timeout=0)
        rank = world.rank
        trainer: Trainer = dist.DistributedTrainer(model, opt, world=world, **kw)
    else:
        trainer = Trainer(model, opt, **kw)
    trainer.fit(x, y, epochs=2)
    h = trainer.history[-1]
    if rank == 0:
        out.write_text(json.dumps({
            "samples_per_second": h["samples_per_second"],
            "step_ms": 1e3 * h["seconds"] / steps,
            "allreduce_ms": 1e3 * h.get("allreduce_seconds", 0.0) / steps,
            "loss": h["train_loss"],
        }))  # fmt: skip


def worker_torch(steps: int, out: Path, port: int) -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(1)
    _limit_threads()
    rank, size = int(os.environ.get("PMI_RANK", "0")), int(os.environ.get("PMI_SIZE", "1"))
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for k in range(len(SIZES) - 1):
        layers.append(nn.Linear(SIZES[k], SIZES[k + 1]))
        if k < len(SIZES) - 2:
            layers.append(nn.ReLU())
    model: nn.Module = nn.Sequential(*layers)
    if size > 1:
        import torch.distributed as tdist
        from torch.nn.parallel import DistributedDataParallel

        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                 world_size=size)  # fmt: skip
        model = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xa, ya = _data(steps * size * BATCH)
    x, y = torch.from_numpy(xa), torch.from_numpy(ya)
    seconds = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        for b in range(steps):
            start = (b * size + rank) * BATCH
            xb, yb = x[start : start + BATCH], y[start : start + BATCH]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        seconds = time.perf_counter() - t0
    if size > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    if rank == 0:
        out.write_text(json.dumps({
            "samples_per_second": steps * size * BATCH / seconds,
            "step_ms": 1e3 * seconds / steps,
        }))  # fmt: skip


def worker_harness(samples: int, out: Path) -> None:
    """(d) under mpiexec: the fastest of a few data_parallel_grads calls (slowest rank)."""
    import graphgrad as gg
    from graphgrad import distributed as dist

    _limit_threads()
    world = dist.init(timeout=0)
    x, y = _data(samples)
    model = gg.nn.MLP(SIZES[0], list(SIZES[1:-1]), SIZES[-1], rng=np.random.default_rng(0))
    best = float("inf")
    grads: dict[str, np.ndarray] = {}
    for _ in range(5):
        world.barrier()
        t0 = time.perf_counter()
        grads = dist.data_parallel_grads(model, gg.cross_entropy, x, y, world)
        best = min(best, max(world.allgather(time.perf_counter() - t0)))
    if world.is_root:
        np.savez(out, seconds=best, **grads)


# ----------------------------------------------------------------------------- driver


def _mpiexec() -> str:
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("bench_distributed: no mpiexec; pip install 'graphgrad[distributed]'")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(n: int, args: Sequence[str], out: Path) -> dict[str, Any]:
    cmd = [_mpiexec(), "-n", str(n), sys.executable, __file__, *args, "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                       env={**os.environ, **ONE_THREAD})  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    if out.suffix == ".npz":
        with np.load(out) as f:
            return {k: f[k] for k in f.files}
    return dict(json.loads(out.read_text()))


def harness(samples: int, ranks: int, tmp: Path) -> dict[str, Any]:
    import graphgrad as gg
    from graphgrad.experiments import data_parallel as dp

    _limit_threads()
    x, y = _data(samples)
    model = gg.nn.MLP(SIZES[0], list(SIZES[1:-1]), SIZES[-1], rng=np.random.default_rng(0))
    loss = gg.cross_entropy
    g_b, t_b = dp.timed(lambda: dp.batched(model, loss, x, y), repeat=5)
    g_a, t_a = dp.timed(lambda: dp.sample_by_sample(model, loss, x, y), repeat=1)
    g_c, t_c = dp.timed(lambda: dp.per_sample_mean(model, loss, x, y), repeat=3)
    d = _launch(ranks, ["--worker", "harness", "--samples", str(samples)], tmp / "d.npz")
    t_d = float(d.pop("seconds"))
    diffs = {"a": dp.max_rel_diff(g_a, g_b), "c": dp.max_rel_diff(g_c, g_b),
             "d": dp.max_rel_diff(d, g_b)}  # fmt: skip
    return {
        "samples": samples, "ranks": ranks,
        "seconds": {"a": t_a, "b": t_b, "c": t_c, "d": t_d},
        "max_rel_diff_from_b": diffs,
        "agree": all(v < 1e-4 for v in diffs.values()),  # float32
        "speedup_b_over_a": t_a / t_b,
        "throughput_d_over_b": t_b / t_d,
    }  # fmt: skip


def scaling(ranks: int, rounds: int, steps: int, tmp: Path, torch_too: bool) -> dict[str, Any]:
    peers = [("graphgrad", 1), ("graphgrad", ranks)]
    if torch_too:
        peers += [("torch", 1), ("torch", ranks)]
    runs: dict[str, list[dict[str, Any]]] = {f"{f} x{n}": [] for f, n in peers}
    for r in range(rounds):
        order = peers[r % len(peers) :] + peers[: r % len(peers)]
        for framework, n in order:
            extra = ["--port", str(_free_port())] if framework == "torch" else []
            res = _launch(n, ["--worker", framework, "--steps", str(steps), *extra],
                          tmp / f"{framework}-{n}-{r}.json")  # fmt: skip
            runs[f"{framework} x{n}"].append(res)
    out: dict[str, Any] = {"ranks": ranks, "rounds": rounds, "steps": steps, "frameworks": {}}
    for framework in dict.fromkeys(f for f, _ in peers):
        one, many = runs[f"{framework} x1"], runs[f"{framework} x{ranks}"]
        pairs = zip(one, many, strict=True)
        ratios = [m["samples_per_second"] / o["samples_per_second"] for o, m in pairs]
        row = {
            "samples_per_second_1": statistics.median(o["samples_per_second"] for o in one),
            f"samples_per_second_{ranks}": statistics.median(m["samples_per_second"] for m in many),
            "scaling": statistics.median(ratios),
            "efficiency": statistics.median(ratios) / ranks,
            "step_ms_1": statistics.median(o["step_ms"] for o in one),
            f"step_ms_{ranks}": statistics.median(m["step_ms"] for m in many),
        }
        if framework == "graphgrad":
            row["allreduce_ms_per_step"] = statistics.median(m["allreduce_ms"] for m in many)
            row["allreduce_share"] = row["allreduce_ms_per_step"] / row[f"step_ms_{ranks}"]
        out["frameworks"][framework] = row
    return out


def render(h: dict[str, Any], s: dict[str, Any]) -> str:
    n = s["ranks"]
    lines = [
        f"## The harness: gradient of the mean loss over S = {h['samples']} samples, MLP "
        f"784-256-256-10, float32, 1 thread",
        "",
        "| method | time | max rel. difference from (b) |",
        "|---|---:|---:|",
    ]
    names = {"a": "(a) sample by sample, S passes averaged", "b": "(b) batched, one pass",
             "c": "(c) mean of per-sample gradients, one pass",
             "d": f"(d) {h['ranks']} MPI ranks, one Allreduce"}  # fmt: skip
    for k, name in names.items():
        diff = h["max_rel_diff_from_b"].get(k, 0.0)
        lines.append(f"| {name} | {1e3 * h['seconds'][k]:.2f} ms | {diff:.1e} |")
    lines += [
        "",
        f"speed-up of (b) over (a): **{h['speedup_b_over_a']:.0f}x**; throughput of (d) over "
        f"(b): **{h['throughput_d_over_b']:.2f}x**; all agree: {h['agree']}",
        "",
        f"## Scaling: training samples/s, 784-256-256-10, batch {BATCH} per rank, 1 BLAS thread "
        f"per rank, 1 vs {n} ranks ({s['rounds']} rounds of {s['steps']} steps, medians)",
        "",
        f"| framework | 1 rank | {n} ranks | scaling | efficiency | Allreduce per step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for fw, row in s["frameworks"].items():
        ar = (
            f"{row['allreduce_ms_per_step']:.2f} ms ({100 * row['allreduce_share']:.0f}% of "
            f"{row[f'step_ms_{n}']:.2f} ms)"
            if "allreduce_ms_per_step" in row
            else "-"
        )
        name = "graphgrad (MPI Allreduce)" if fw == "graphgrad" else "PyTorch DDP (gloo)"
        lines.append(
            f"| {name} | {row['samples_per_second_1']:,.0f} | "
            f"{row[f'samples_per_second_{n}']:,.0f} | **{row['scaling']:.2f}x** | "
            f"{100 * row['efficiency']:.0f}% | {ar} |"
        )
    gg_row, torch_row = s["frameworks"]["graphgrad"], s["frameworks"].get("torch")
    target = f"target: graphgrad >= 1.7x at 2 ranks{' and >= PyTorch DDP' if torch_row else ''}"
    met = gg_row["scaling"] >= 1.7 and (
        torch_row is None or gg_row["scaling"] >= torch_row["scaling"]
    )
    lines += ["", f"{target}: {'met' if met else 'NOT met'} (on this machine, now)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few steps, one round (CI)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100, help="timed steps per run")
    ap.add_argument("--samples", type=int, default=128, help="S of the harness")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch DDP")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--worker", choices=["graphgrad", "torch", "harness"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "graphgrad":
        worker_graphgrad(args.steps, args.out)
        return 0
    if args.worker == "torch":
        worker_torch(args.steps, args.out, args.port)
        return 0
    if args.worker == "harness":
        worker_harness(args.samples, args.out)
        return 0
    if args.quick:
        args.rounds, args.steps, args.samples = 1, 10, 32
    torch_too = not args.no_torch
    if torch_too:
        try:
            import torch  # noqa: F401
        except ImportError:
            torch_too = False
    with tempfile.TemporaryDirectory() as tmp:
        h = harness(args.samples, args.ranks, Path(tmp))
        s = scaling(args.ranks, args.rounds, args.steps, Path(tmp), torch_too)
    print(render(h, s))
    if args.json:
        args.json.write_text(json.dumps({"quick": args.quick, "harness": h, "scaling": s},
                                        indent=1) + "\n")  # fmt: skip
    return 0 if h["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
