"""How the MLP step scales: time per step against batch size, width and depth, graphgrad
(the eager step, and the step compiled with ``gg.compile_step``, which ``Trainer`` runs)
against PyTorch eager, each in its own process, taking turns (``bench_step_procs.py``).

Three sweeps around a 784-512-512-10 MLP at batch 256 (fp32, ReLU, softmax cross-entropy,
SGD momentum 0.9): batch 1-1024; width (both hidden layers) 128-2048; depth (linear layers)
2-16 at width 512. Writes a Markdown table and, when matplotlib is installed, a plot
(time per step and graphgrad / PyTorch against each swept size).

First ``graphgrad info --recalibrate`` runs at that thread count (``--no-recalibrate`` keeps the
cached calibration), so that ``set_blas("auto")`` chooses from figures measured on this
machine now. About 3-4 minutes per thread count; ``--quick`` (two points per sweep, CI) about
half a minute.

Run:  python bench/bench_scaling.py [--quick] [--threads 1] [--md PATH] [--png PATH]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_step_procs as P  # bench/ is on sys.path when a script here runs

PEERS = ["graphgrad", "graphgrad compiled", "pytorch"]
COMPILED = "graphgrad compiled / pytorch"


def sweeps(quick: bool) -> dict[str, list[tuple[int, str]]]:
    """sweep name -> [(x, "sizes:batch")]."""
    batches = [1, 8, 32, 64, 128, 256, 512, 1024]  # 1 and 8: where the framework's cost shows
    widths = [128, 256, 512, 1024, 2048]
    depths = [2, 4, 8, 16]
    if quick:
        batches, widths, depths = batches[:2], widths[:2], depths[:2]
    return {
        "batch": [(b, f"784,512,512,10:{b}") for b in batches],
        "width": [(w, f"784,{w},{w},10:256") for w in widths],
        "depth": [(d, ",".join(["784", *["512"] * (d - 1), "10"]) + ":256") for d in depths],
    }


def run(quick: bool, threads: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    target_s, pause_s = (0.02, 0.0) if quick else (0.2, 0.3)
    out: dict[str, list[dict[str, Any]]] = {}
    for sweep, points in sweeps(quick).items():
        out[sweep] = []
        for x, shape in points:
            row = P.bench(shape, threads, rounds, target_s, pause_s, PEERS)
            row["x"] = x
            out[sweep].append(row)
            ms = row["ms"]
            g, c, t = (ms.get(k, float("nan")) for k in PEERS)
            print(
                f"{sweep:5s} {x:5d}: graphgrad {g:.3f} ms, compiled {c:.3f} ms, pytorch {t:.3f} ms",
                flush=True,
            )
    return out


def _machine(threads: int) -> str:
    """When, where and on which library the sweep ran (the BLAS ``set_blas("auto")`` picks at
    this thread count: the peers' processes read the same cached calibration)."""
    import time

    from benchlib import cpu_model

    import graphgrad as gg

    old = gg.set_num_threads(threads)
    try:
        blas = gg.blas()
    finally:
        gg.set_num_threads(old)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"Measured {when} on {cpu_model()}; graphgrad's BLAS: {blas} (set_blas('auto'))."


def render(res: dict[str, list[dict[str, Any]]], threads: int) -> str:
    lines = [
        f"Threads: {threads}. Each point: medians over rounds, each peer in its own process.",
        _machine(threads),
    ]
    for sweep, rows in res.items():
        lines += [
            "",
            f"### {sweep}",
            "",
            f"| {sweep} | shape | graphgrad ms | compiled ms | PyTorch ms | graphgrad / "
            f"PyTorch | compiled / PyTorch |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            ratio, cratio = (
                next((x["value"] for x in r["ratios"] if x["ratio"] == name), None)
                for name in ("graphgrad / pytorch", COMPILED)
            )
            t, c = r["ms"].get("pytorch"), r["ms"].get("graphgrad compiled")
            lines.append(
                f"| {r['x']} | {P._name(r['shape'])} | {r['ms']['graphgrad']:.3f} | "
                f"{'–' if c is None else f'{c:.3f}'} | "
                f"{'–' if t is None else f'{t:.3f}'} | "
                f"{'–' if ratio is None else f'{ratio:.2f}'} | "
                f"{'–' if cratio is None else f'{cratio:.2f}'} |"
            )
    return "\n".join(lines) + "\n"


def plot(res: dict[str, list[dict[str, Any]]], path: Path, threads: int) -> bool:
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install graphgrad[train])")
        return False
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex="col")
    for j, (sweep, rows) in enumerate(res.items()):
        xs = [r["x"] for r in rows]
        for peer in PEERS:
            ys = [r["ms"].get(peer, float("nan")) for r in rows]
            axes[0, j].plot(xs, ys, marker="o", label=peer)
        for name, color in (("graphgrad / pytorch", "C0"), (COMPILED, "C1")):
            ratio = [
                next((x["value"] for x in r["ratios"] if x["ratio"] == name), float("nan"))
                for r in rows
            ]
            axes[1, j].plot(xs, ratio, marker="o", color=color, label=name)
        axes[1, j].legend()
        axes[1, j].axhline(1.0, color="grey", lw=0.8)
        axes[0, j].set(
            xscale="log", yscale="log", title=f"step time vs {sweep}", ylabel="ms / step"
        )
        axes[1, j].set(xlabel=sweep, ylabel="graphgrad / PyTorch")
        axes[0, j].legend()
        for ax in axes[:, j]:
            ax.set_xticks(xs, [str(x) for x in xs], rotation=45 if len(xs) > 6 else 0)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axes[0, j].yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes[0, j].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle(f"MLP training step, fp32, {threads} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two points per sweep, 2 rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 9; quick 2)")
    ap.add_argument("--md", type=Path, help="write the table as Markdown here")
    ap.add_argument("--png", type=Path, help="write the plot here")
    ap.add_argument("--no-recalibrate", action="store_true", help="keep the cached calibration")
    a = ap.parse_args(argv)
    if not a.no_recalibrate:
        print(f"{a.threads} thread(s): {P.recalibrate(a.threads)}", flush=True)
    res = run(a.quick, a.threads, a.rounds or (2 if a.quick else 9))
    md = render(res, a.threads)
    print(md)
    if a.md:
        a.md.write_text(
            f"# Scaling of the MLP step\n\nGenerated by `python bench/bench_scaling.py "
            f"--threads {a.threads}`.\n\n{md}"
        )
    if a.png:
        plot(res, a.png, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
