"""Numerical vs analytic gradients of a real MLP (784-32-10 on Fashion-MNIST images).

1. Backprop vs forward differences (dim(θ)+1 loss evaluations) and central differences
   (2·dim(θ) evaluations): the evaluation counts, the times and the agreement.
2. A sweep of ε = 1e-1 ... 1e-12: the error of forward and central differences against the
   analytic gradient, in float32 and float64 (truncation error vs round-off error).

    python examples/numerical_vs_analytic.py

Writes docs/results/numerical_vs_analytic.md and eps_sweep.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from graphgrad._atomic import atomic_write_text
from graphgrad.experiments.gradients import eps_sweep, numerical_vs_analytic, sweep_table
from graphgrad.plots import plot_eps_sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--coordinates", type=int, default=200, help="θ_p sampled for the sweep")
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    args = ap.parse_args()

    cost = numerical_vs_analytic(hidden=(args.hidden,), samples=args.samples)
    a, f, c = cost["analytic"], cost["forward"], cost["central"]
    rows = [
        "| method | loss evaluations | time | rel. error vs backprop |",
        "|---|---:|---:|---:|",
        f"| backprop (analytic) | 1 forward + 1 backward | {1e3 * a['seconds']:.2f} ms | - |",
        f"| forward differences | {f['evaluations']:,} = dim(θ)+1 | {f['seconds']:.2f} s "
        f"| {f['rel_error']:.2e} |",
        f"| central differences | {c['evaluations']:,} = 2·dim(θ) | {c['seconds']:.2f} s "
        f"| {c['rel_error']:.2e} |",
    ]
    cost_table = "\n".join(rows)
    print(f"{cost['architecture']}, dim(θ) = {cost['parameters']:,}, {cost['data']}, "
          f"ε = {cost['eps']:g}")  # fmt: skip
    print(cost_table)

    sweep = eps_sweep(hidden=(args.hidden,), samples=args.samples, coordinates=args.coordinates)
    s_table = sweep_table(sweep)
    print(s_table)
    best = ", ".join(
        f"{k}: ε = {v['eps']:.0e} (error {v['error']:.1e})" for k, v in sweep["best"].items()
    )
    print("best:", best)

    args.out.mkdir(parents=True, exist_ok=True)
    plot_eps_sweep(sweep, args.out / "eps_sweep.png")
    atomic_write_text(
        args.out / "numerical_vs_analytic.md",
        "# Numerical vs analytic gradients\n\n"
        f"MLP {cost['architecture']}, dim(θ) = {cost['parameters']:,}; cross-entropy on "
        f"{cost['data']}; ε = {cost['eps']:g}. Command: `python "
        f"examples/numerical_vs_analytic.py --hidden {args.hidden} --samples {args.samples}`"
        ".\n\n"
        f"{cost_table}\n\n"
        f"Backprop is {f['seconds'] / a['seconds']:,.0f}x faster than forward differences "
        f"and {c['seconds'] / a['seconds']:,.0f}x faster than central differences here, "
        "and the gap grows with dim(θ).\n\n"
        "## Choosing ε\n\n"
        f"Relative error ‖numerical − analytic‖/‖analytic‖ over {sweep['coordinates']} "
        f"randomly chosen parameters of the same network (reference: the float64 analytic "
        "gradient). Large ε: truncation error, O(ε) for forward and O(ε²) for central "
        "differences (and, with ReLU, steps across kinks). Small ε: round-off, about "
        "machine-epsilon · |L| / ε, so float32 (machine epsilon 1.2e-7) breaks down near "
        "ε = 1e-4 and float64 (2.2e-16) near 1e-8; below that θ + ε rounds back to θ and "
        "the float32 difference is 0 (relative error 1).\n\n"
        f"Best ε: {best}.\n\n{s_table}\n\n![eps sweep](eps_sweep.png)\n\n"
        "```json\n" + json.dumps(sweep["best"], indent=1) + "\n```\n",
    )
    print(f"wrote {args.out / 'numerical_vs_analytic.md'} and eps_sweep.png")


if __name__ == "__main__":
    main()
