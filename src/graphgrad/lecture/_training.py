"""The lecture's training topics: initialisation over several seeds against the variance
argument, numerical vs analytic gradients, and data parallelism."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._context import Context, figure, save
from ._page import Topic

__all__ = ["data_parallel", "init_seeds", "numerical"]


def _f(v: float) -> str:
    return f"{v:.4g}"


# ---------------------------------------------------------------------- initialisation


def init_seeds(ctx: Context) -> Topic:
    """σ too small, right and too large in a deep ReLU net, over several seeds, against the
    variance argument's prediction (σ/σ_right)^(l−1) for std(o_l)/std(o_1)."""
    from ..experiments.init_study import init_study

    depth, width, samples, seeds = (10, 32, 32, 5) if ctx.quick else (50, 256, 256, 10)
    factor = 2.0
    runs = [
        init_study(
            depth=depth,
            width=width,
            activation="relu",
            samples=samples,
            factor=factor,
            rng=np.random.default_rng(s),
        )
        for s in range(seeds)
    ]
    labels = [r["label"] for r in runs[0]["runs"]]
    scale = {"too small": 1 / factor, "right": 1.0, "too large": factor}
    layers = np.arange(1, depth + 1)
    fig = figure(11, 4.2)
    ax_a, ax_g = fig.subplots(1, 2)
    rows = [
        "| σ | predicted std(o_L)/std(o_1) | measured: median [min, max] over seeds "
        "| predicted std(∂L/∂o_1)/std(∂L/∂o_L) | measured: median [min, max] |",
        "|---|---:|---:|---:|---:|",
    ]
    numbers: dict[str, Any] = {
        "depth": depth,
        "width": width,
        "samples": samples,
        "seeds": seeds,
        "factor": factor,
        "right_sigma": runs[0]["right_sigma"],
    }
    for k, label in enumerate(labels):
        act = np.array([r["runs"][k]["activation_std"] for r in runs])  # (seeds, depth)
        grad = np.array([r["runs"][k]["gradient_std"] for r in runs])
        a_rel = act / act[:, :1]
        g_rel = grad / grad[:, -1:]
        pred = scale[label] ** (layers - 1.0)
        color = f"C{k}"
        for ax, rel, p in ((ax_a, a_rel, pred), (ax_g, g_rel, pred[::-1])):
            ax.fill_between(layers, rel.min(axis=0), rel.max(axis=0), color=color, alpha=0.2)
            ax.semilogy(
                layers,
                np.median(rel, axis=0),
                color=color,
                label=f"{label} (σ = {scale[label]:g}·σ_right), median",
            )
            ax.semilogy(layers, p, "--", color=color, lw=1)
        ra, rg = a_rel[:, -1], g_rel[:, 0]
        pa, pg = float(pred[-1]), float(pred[-1])
        rows.append(
            f"| {label}: {scale[label]:g}·σ_right | {_f(pa)} | {_f(float(np.median(ra)))} "
            f"[{_f(float(ra.min()))}, {_f(float(ra.max()))}] | {_f(pg)} | "
            f"{_f(float(np.median(rg)))} [{_f(float(rg.min()))}, {_f(float(rg.max()))}] |"
        )
        numbers[label] = {
            "predicted_ratio": pa,
            "activation_ratio": ra.tolist(),
            "gradient_ratio": rg.tolist(),
        }
    ax_a.set_title("forward: std(o_l) / std(o_1)")
    ax_g.set_title("backward: std(∂L/∂o_l) / std(∂L/∂o_L)")
    for ax in (ax_a, ax_g):
        ax.set_xlabel("layer l")
        ax.grid(alpha=0.3, which="both")
    ax_a.legend(fontsize=7)
    fig.suptitle(
        f"{depth} layers of {width} ReLU units, {seeds} seeds (band: min-max, dashed: "
        f"variance argument)"
    )
    figures = [save(ctx, fig, "init_seeds.png")]
    right = np.array(numbers["right"]["activation_ratio"])
    return Topic(
        key="init_seeds",
        title="Parameter initialisation: σ too small, right, too large",
        claim="Weights are critical (multiplicative effect on output): the signal vanishes or "
        "explodes if they are too small or too large, the deeper the network the bigger the "
        "problem. Sample weights from N(0, σ); the optimal σ depends on the number of "
        "connections and a(·) (for ReLU σ² = 2/fan_in keeps E[o_l²] constant, so "
        "std(o_l)/std(o_1) is predicted to be (σ/σ_right)^(l−1)).",
        related=[  # one seed; the table is over several
            f"graphgrad init-study --depth {depth} --width {width} --activation relu "
            f"--samples {samples} --factor {factor:g}"
        ],
        figures=figures,
        tables=["\n".join(rows)],
        notes=[
            "The variance argument predicts the mean over random weights; one network is one "
            f"draw: with the right σ the ratio std(o_{depth})/std(o_1) ranged from "
            f"{right.min():.2f} to {right.max():.2f} over {seeds} seeds (the band), around the "
            "prediction 1, while σ a factor 2 off moves it by 2^(L−1)."
        ],
        numbers=numbers,
        summary=f"right σ: std ratio {right.min():.2f}..{right.max():.2f} over {seeds} seeds "
        f"(predicted 1)",
    )


# --------------------------------------------------------------- numerical vs analytic


def numerical(ctx: Context) -> Topic:
    """Evaluations and time of forward/central differences vs backprop; the ε sweep."""
    from ..experiments.gradients import eps_sweep, numerical_vs_analytic, sweep_table
    from ..plots import plot_eps_sweep

    hidden, samples, coords = ((4,), 8, 20) if ctx.quick else ((32,), 32, 200)
    cost = numerical_vs_analytic(hidden=hidden, samples=samples, seed=ctx.seed)
    sweep = eps_sweep(hidden=hidden, samples=samples, coordinates=coords, seed=ctx.seed)
    plot_eps_sweep(sweep, ctx.out / "eps_sweep.png")
    dim = cost["parameters"]
    rows = [
        "| method | evaluations of L (counted) | formula | time | relative error vs backprop |",
        "|---|---:|---|---:|---:|",
        f"| backprop (analytic) | 1 forward + 1 backward | | "
        f"{1e3 * cost['analytic']['seconds']:.2f} ms | (reference) |",
    ]
    for m, formula in (("forward", "dim(θ) + 1"), ("central", "2·dim(θ)")):
        c = cost[m]
        rows.append(
            f"| {m} differences, ε = {cost['eps']:g} | {c['evaluations']:,} | {formula} = "
            f"{c['expected_evaluations']:,} | {c['seconds']:.2f} s | {c['rel_error']:.1e} |"
        )
    best = sweep["best"]
    return Topic(
        key="numerical",
        title="Numerical vs analytic gradients",
        claim="Numerical differentiation is trivial to implement but only an approximation "
        "(ε cannot be arbitrarily small) and too inefficient: it must evaluate L dim(θ) + 1 "
        "times; the central difference is preferable. The analytic gradient is accurate and "
        "needs a single evaluation.",
        commands=[
            f"python examples/numerical_vs_analytic.py --hidden {hidden[0]} --samples {samples} "
            f"--coordinates {coords} --out runs/numerical"
        ],
        figures=["eps_sweep.png"],
        tables=["\n".join(rows), sweep_table(sweep)],
        notes=[
            f"MLP {cost['architecture']}, dim(θ) = {dim:,}, {cost['data']}. ε sweep over "
            f"{sweep['coordinates']} random coordinates; best ε: "
            + ", ".join(f"{k} {v['eps']:.0e} ({v['error']:.1e})" for k, v in best.items())
        ],
        numbers={"cost": cost, "sweep": {k: sweep[k] for k in ("eps", "errors", "best")}},
        summary=f"dim(θ) = {dim:,}: central {cost['central']['evaluations']:,} evaluations "
        f"in {cost['central']['seconds']:.2f} s vs backprop "
        f"{1e3 * cost['analytic']['seconds']:.2f} ms",
    )


# -------------------------------------------------------------------- data parallelism


def _grads(params: list[Any]) -> np.ndarray:
    return np.concatenate([np.asarray(p.grad, dtype=np.float64).reshape(-1) for p in params])


def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def data_parallel(ctx: Context) -> Topic:
    """∇L as the mean of S per-sample gradients (a loop), batched in one pass, by
    ``gg.per_sample_grads`` and across MPI ranks where those are available."""
    import graphgrad

    from ..experiments.gradients import default_batch
    from ..nn.layers import MLP
    from ..tensor import Tensor, cross_entropy

    samples, hidden, repeats = (32, 32, 3) if ctx.quick else (256, 256, 5)
    x, y, desc = default_batch(samples, ctx.seed)
    model = MLP(784, [hidden], 10, "relu", rng=np.random.default_rng(ctx.seed), dtype=np.float64)
    params = model.parameters()

    def loop() -> np.ndarray:
        total = np.zeros(model.num_parameters())
        for s in range(samples):
            model.zero_grad()
            cross_entropy(model(Tensor(x[s : s + 1])), y[s : s + 1]).backward()
            total += _grads(params)
        return total / samples

    def batched() -> np.ndarray:
        model.zero_grad()
        cross_entropy(model(Tensor(x)), y).backward()
        return _grads(params)

    g_loop, g_batch = loop(), batched()
    t_loop, t_batch = _median_time(loop, repeats), _median_time(batched, repeats)
    scale = float(np.max(np.abs(g_batch)))
    rows = [
        "| ∇L(θ) computed | max abs difference to batched | time | speed-up over the loop |",
        "|---|---:|---:|---:|",
        f"| (a) loop: S = {samples} backward passes, averaged | "
        f"{float(np.max(np.abs(g_loop - g_batch))):.1e} | {1e3 * t_loop:.1f} ms | 1.0x |",
        f"| (b) batched: one vectorised pass over all S | 0 | {1e3 * t_batch:.2f} ms | "
        f"{t_loop / t_batch:.1f}x |",
    ]
    numbers: dict[str, Any] = {
        "samples": samples,
        "architecture": f"784-{hidden}-10 relu, float64",
        "data": desc,
        "max_abs_diff_loop": float(np.max(np.abs(g_loop - g_batch))),
        "max_abs_grad": scale,
        "seconds_loop": t_loop,
        "seconds_batched": t_batch,
        "speedup_batched_over_loop": t_loop / t_batch,
    }
    notes: list[str] = []

    per_sample = getattr(graphgrad, "per_sample_grads", None)
    if per_sample is None:
        notes.append(
            "(c) per-sample gradients in one call: skipped, this graphgrad has no "
            "`gg.per_sample_grads`."
        )
    else:
        try:
            res = per_sample(model, cross_entropy, x, y)
            t_ps = _median_time(lambda: per_sample(model, cross_entropy, x, y), repeats)
            if isinstance(res, dict):  # name -> (S, *shape), in the model's parameter order
                arrays = [res[name] for name, _ in model.named_parameters()]
            else:
                arrays = list(res)
            mean = np.concatenate(
                [
                    np.asarray(getattr(a, "data", a), dtype=np.float64).mean(axis=0).reshape(-1)
                    for a in arrays
                ]
            )
            d = float(np.max(np.abs(mean - g_batch)))
            rows.append(
                f"| (c) mean of `gg.per_sample_grads` (S gradients in one call) | {d:.1e} | "
                f"{1e3 * t_ps:.2f} ms | {t_loop / t_ps:.1f}x |"
            )
            numbers["max_abs_diff_per_sample"] = d
            numbers["seconds_per_sample"] = t_ps
        except (TypeError, ValueError, AttributeError, KeyError) as e:
            notes.append(f"(c) per-sample gradients: skipped, `gg.per_sample_grads` failed: {e}")

    mpi = _mpi_rows(ctx, samples, hidden)
    if isinstance(mpi, str):
        notes.append(mpi)
    else:
        d = float(np.max(np.abs(mpi["grad"] - g_batch)))
        rows.append(
            f"| (d) {mpi['ranks']} MPI ranks, S/{mpi['ranks']} samples each, Allreduce | "
            f"{d:.1e} | {1e3 * mpi['seconds']:.2f} ms | {t_loop / mpi['seconds']:.1f}x |"
        )
        notes.append(
            "(d) runs in separate processes started by mpiexec; its time is one step (each "
            "rank's backward pass on its shard and the Allreduce of the gradient), the median "
            "of 5, after start-up. On a model this small the communication dominates."
        )
        numbers["max_abs_diff_mpi"] = d
        numbers["mpi_ranks"] = mpi["ranks"]
        numbers["seconds_mpi"] = mpi["seconds"]
    notes.append(
        f"MLP 784-{hidden}-10 (ReLU, float64), {desc}; L = (1/S) Σ_s H_s; times are medians "
        f"of {repeats} runs on this machine."
    )
    return Topic(
        key="data_parallel",
        title="Data parallelism: ∇L is the average of the per-sample ∇H",
        claim="The loss is an average over S samples, L(θ) = 1/S Σ_s H(o^s, softmax(f(x^s; θ))), "
        "so ∇L(θ) is the average of the individual ∇H(θ). In practice the graph composition "
        "is not as fine (vectorisation) and ∇H(θ) is computed in parallel for all s (data "
        "parallelism).",
        commands=["graphgrad lecture --only data_parallel"],
        tables=["\n".join(rows)],
        notes=notes,
        numbers=numbers,
        summary=f"loop vs batched: max diff {numbers['max_abs_diff_loop']:.1e}, batched "
        f"{t_loop / t_batch:.1f}x faster",
    )


def _mpi_rows(ctx: Context, samples: int, hidden: int) -> dict[str, Any] | str:
    """Run the MPI worker on 2 ranks; a skip note when mpi4py or mpiexec is missing."""
    if importlib.util.find_spec("mpi4py") is None:
        return "(d) multi-rank: skipped, mpi4py is not installed (MPI is optional)."
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich wheel installs it there
    mpiexec = str(beside) if beside.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        return "(d) multi-rank: skipped, no `mpiexec` on the PATH."
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mpi.json"
        cmd = [
            mpiexec,
            "-n",
            "2",
            sys.executable,
            "-m",
            "graphgrad.lecture._mpi_worker",
            str(out),
            str(samples),
            str(hidden),
            str(ctx.seed),
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return "(d) multi-rank: skipped, mpiexec did not finish within 300 s."
        if res.returncode != 0 or not out.exists():
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"(d) multi-rank: skipped, mpiexec failed (exit {res.returncode}): {tail[0]}"
        data = json.loads(out.read_text())
    return {"grad": np.array(data["grad"]), "seconds": data["seconds"], "ranks": data["ranks"]}
