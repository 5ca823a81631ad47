"""Where an MLP training step's time goes: graphgrad vs PyTorch, part by part (issue 5).

The step is bench_mlp_step.py's (fp32, forward, softmax cross-entropy, backward, SGD with
momentum 0.9, 1 thread). The time of a real step is split, inside the step, into

    step = GEMMs + optimiser + elementwise + framework

* graphgrad: clocks wrapped around the calls that do each part (``_blas.matmul`` and
  ``_blas.matmul_into``, which every 2-D product goes through: GEMMs; ``opt.step()``:
  optimiser; the bias add, the ReLU forward and VJP, bias gradients and the softmax
  cross-entropy kernels: elementwise); framework = the rest (graph recording, the backward
  pass, Python calls).
  The clocks add ~2 µs per clocked call (about 20 per step): compare the two step rows;
* graphgrad + MKL (when the ``mkl`` wheel is installed): the same, with
  ``gg.set_blas("mkl")``, so that its GEMMs run in the library PyTorch's run in;
* PyTorch: ``torch.profiler``'s own CPU time of ``aten::addmm``/``aten::mm`` (GEMMs) and the
  total of ``Optimizer.step`` (optimiser); rest = the unprofiled step (timed just before)
  minus these (PyTorch's elementwise work is in the rest).

The splits run in rounds, the libraries taking turns; each part is the median over the
rounds.

Also shown: the 8 GEMMs alone, in a hot loop, as bench_mlp_step.py's "GEMM only" peer times
them (inside a step they run with colder caches), and a cProfile listing of graphgrad's step.

With ``--speedup 1,2``: the non-GEMM part of graphgrad's step (step minus GEMMs: optimiser,
elementwise kernels, framework) at 1 and at 2 threads (``gg.set_num_threads``), alternating
in rounds, and its speed-up (median of per-round ratios); the issue's target is >= 1.6x.
The same for the compiled step: its non-GEMM instructions timed in their places.

Then the compiled step (``gg.compile_step``, what ``Trainer`` runs) kernel call by kernel
call: each instruction of its plan timed alone, then in its place in whole steps, then the
whole plan.

Run: python bench/profile_step.py [--shape 784,256,256,10 --batch 128] [--quick] [--md PATH]
     [--speedup 1,2] [--parts split,plan,speedup]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import itertools
import os
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import benchlib as B  # bench/ is on sys.path when a script here runs
import numpy as np

import graphgrad as gg
from graphgrad import _blas, _fused
from graphgrad.ops import _xp
from graphgrad.ops import elementwise as E

LR, MU = 0.01, 0.9
PARTS = ("GEMMs", "optimiser", "elementwise", "framework (the rest)")
TARGET_SPEEDUP = 1.6  # the target for the non-GEMM part from 1 to 2 threads


class Clocks:
    """Seconds spent per part, by timing wrappers installed while ``installed()`` is open."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        spent, calls, clock = self.spent, self.calls, time.perf_counter

        def timed(*args: Any, **kw: Any) -> Any:
            calls[part] += 1
            t0 = clock()
            try:
                return fn(*args, **kw)
            finally:
                spent[part] += clock() - t0

        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        patches: list[tuple[Any, str, str]] = [
            # every 2-D product of the step goes through these two (the layout's fast paths
            # too: clocking ``_xp.matmul`` instead left the input gradients that "columns"
            # computes as (W.T @ G.T).T in the framework's part)
            (_blas, "matmul", "GEMMs"),
            (_blas, "matmul_into", "GEMMs"),
            (_fused, "add_bias", "elementwise"),
            (E.relu, "forward", "elementwise"),
            (_fused, "relu_grad", "elementwise"),
            (_fused, "xent_forward", "elementwise"),
            (_fused, "xent_backward", "elementwise"),
            (_xp, "sum_rows", "elementwise"),
        ]
        saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
        try:
            for obj, name, part in patches:
                object.__setattr__(obj, name, self.wrap(part, getattr(obj, name)))
            yield
        finally:
            for obj, name, old in saved:
                object.__setattr__(obj, name, old)


def _data(sizes: list[int], batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return x, y


def graphgrad_step(
    sizes: list[int], x: np.ndarray, y: np.ndarray
) -> tuple[Any, Callable[[], None]]:
    model = gg.nn.MLP(sizes[0], sizes[1:-1], sizes[-1], "relu", rng=np.random.default_rng(0))
    opt = gg.optim.SGD(model.parameters(), lr=LR, momentum=MU)

    def step() -> None:
        opt.zero_grad()
        gg.cross_entropy(model(x), y).backward()
        opt.step()

    return opt, step


def torch_step(sizes: list[int], x: np.ndarray, y: np.ndarray) -> tuple[Any, Callable[[], None]]:
    import torch

    torch.manual_seed(0)
    mods: list[Any] = []
    for k, (i, o) in enumerate(itertools.pairwise(sizes)):
        mods.append(torch.nn.Linear(i, o))
        if k < len(sizes) - 2:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MU)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    f = torch.nn.functional

    def step() -> None:
        opt.zero_grad()
        f.cross_entropy(net(xt), yt).backward()
        opt.step()

    return opt, step


def gemms_alone(sizes: list[int], x: np.ndarray) -> Callable[[], None]:
    """The 8 products of the step, NumPy layouts as graphgrad's rules use them, hot loop."""
    rng = np.random.default_rng(1)
    Ws = [rng.standard_normal((o, i)).astype(np.float32) for i, o in itertools.pairwise(sizes)]
    acts = [x]
    for W in Ws:
        acts.append(acts[-1] @ W.T)
    grads = [np.ones_like(a) for a in acts[1:]]

    def run() -> None:
        for k, W in enumerate(Ws):
            np.matmul(acts[k], W.T)
        for k in range(len(Ws) - 1, -1, -1):
            np.matmul(grads[k].T, acts[k])
            if k:
                np.matmul(grads[k], Ws[k])

    return run


def split_graphgrad(step: Callable[[], None], opt: Any, n: int) -> dict[str, float]:
    """Mean ms per step of each part, over ``n`` steps with the clocks installed."""
    clocks = Clocks()
    opt.step = clocks.wrap("optimiser", opt.step)  # an instance attribute shadows the method
    try:
        with clocks.installed():
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            total = time.perf_counter() - t0
    finally:
        del opt.step
    out = {p: clocks.spent[p] / n * 1e3 for p in PARTS[:3]}
    out["framework (the rest)"] = total / n * 1e3 - sum(out.values())
    out["step"] = total / n * 1e3
    return out


def split_torch(step: Callable[[], None], n: int, step_ms: float) -> dict[str, float]:
    """GEMM and optimiser ms per step from torch.profiler; the rest from the unprofiled step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    gemm = opt = 0.0
    for ev in prof.key_averages():
        if ev.key in ("aten::addmm", "aten::mm"):
            gemm += ev.self_cpu_time_total
        elif ev.key.startswith("Optimizer.step#"):
            opt += ev.cpu_time_total
    out = {"GEMMs": gemm / n / 1e3, "optimiser": opt / n / 1e3}
    out["framework (the rest)"] = step_ms - out["GEMMs"] - out["optimiser"]
    out["step"] = step_ms
    return out


def _with_mkl(fn: Callable[[], None]) -> Callable[[], None]:
    def step() -> None:
        with gg.using_blas("mkl"):
            fn()

    return step


LIBS = ("graphgrad", "graphgrad + MKL", "pytorch")
TITLES = {"graphgrad": "graphgrad", "graphgrad + MKL": "graphgrad + MKL", "pytorch": "PyTorch"}


def run(sizes: list[int], batch: int, quick: bool) -> tuple[str, dict[str, Any]]:
    x, y = _data(sizes, batch)
    g_opt, g_step = graphgrad_step(sizes, x, y)
    peers: dict[str, Callable[[], Any]] = {"graphgrad": g_step}
    m_step = m_opt = None
    if "error" not in _blas.find_mkl():
        m_opt, m_plain = graphgrad_step(sizes, x, y)
        m_step = peers["graphgrad + MKL"] = _with_mkl(m_plain)
    t_step = None
    with contextlib.suppress(ImportError):
        _, t_step = torch_step(sizes, x, y)
        peers["pytorch"] = t_step
    peers["GEMMs alone"] = gemms_alone(sizes, x)
    rounds, target = (3, 0.02) if quick else (21, 0.1)
    res = B.interleave(peers, rounds=rounds, target_s=target)
    ms = {k: v["median_s"] * 1e3 for k, v in res.items()}
    # The splits: rounds taking turns, each n steps per library; medians over the rounds.
    n, split_rounds = (10, 1) if quick else (50, 11)
    runs: dict[str, list[dict[str, float]]] = {lib: [] for lib in LIBS}
    for _ in range(split_rounds):
        runs["graphgrad"].append(split_graphgrad(g_step, g_opt, n))
        if m_step is not None:
            runs["graphgrad + MKL"].append(split_graphgrad(m_step, m_opt, n))
        if t_step is not None:
            t0 = time.perf_counter()
            for _ in range(n):
                t_step()
            t_ms = (time.perf_counter() - t0) / n * 1e3
            runs["pytorch"].append(split_torch(t_step, n, t_ms))
    splits = {
        lib: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        for lib, rs in runs.items()
        if rs
    }
    libs = [lib for lib in LIBS if lib in splits]
    name = f"{'-'.join(map(str, sizes))} b{batch}"
    lines = [
        f"### {name} (ms per step)",
        "",
        "| part | " + " | ".join(TITLES[lib] for lib in libs) + " |",
        "|---|" + "---:|" * len(libs),
    ]
    for part in (*PARTS, "step (split run)"):
        key = "step" if part.startswith("step") else part
        cells = []
        for lib in libs:
            v = splits[lib].get(key)
            cell = "–" if v is None else f"{v:.3f}"
            if lib == "pytorch" and part == "framework (the rest)":
                cell += " (with elementwise)"
            cells.append(cell)
        lines.append(f"| {part} | {' | '.join(cells)} |")
    lines.append(
        f"| **step, unclocked (median of {rounds} rounds)** | "
        + " | ".join(f"{ms[lib]:.3f}" for lib in libs)
        + " |"
    )
    lines.append(
        "| the 8 GEMMs alone, hot loop (NumPy) | "
        + " | ".join([f"{ms['GEMMs alone']:.3f}"] + [""] * (len(libs) - 1))
        + " |"
    )
    lines.append("")
    g = splits["graphgrad"]
    if "pytorch" in splits:
        t = splits["pytorch"]
        for lib in libs[:-1]:
            g = splits[lib]
            lines.append(
                f"{TITLES[lib]} / PyTorch: step {ms[lib] / ms['pytorch']:.2f}; GEMMs inside "
                f"the step {g['GEMMs'] / t['GEMMs']:.2f}; everything else "
                f"{(g['step'] - g['GEMMs']) / (t['step'] - t['GEMMs']):.2f}."
            )
        lines.append("")
    lines.append(f"graphgrad step / the 8 GEMMs alone: {ms['graphgrad'] / ms['GEMMs alone']:.2f}.")
    # a cProfile of graphgrad's step, by own time, in µs per step
    prof = cProfile.Profile()
    reps = 20 if quick else 200
    prof.enable()
    for _ in range(reps):
        g_step()
    prof.disable()
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:12]
    lines += [
        "",
        "cProfile of graphgrad's step, by own time (µs per step; the profiler adds overhead):",
        "",
        "| function | calls / step | own µs | with callees µs |",
        "|---|---:|---:|---:|",
    ]
    for (file, line, func), (_cc, nc, tt, ct, _callers) in top:
        where = f"{Path(file).name}:{line} {func}" if line else func
        lines.append(
            f"| `{where}` | {nc / reps:g} | {tt / reps * 1e6:.1f} | {ct / reps * 1e6:.1f} |"
        )
    lines.append("")
    return "\n".join(lines), {"shape": name, "ms": ms, "split": splits}


def nongemm_speedup(sizes: list[int], batch: int, counts: list[int], quick: bool) -> str:
    """The non-GEMM part of graphgrad's step at each thread count in ``counts``, taking turns
    (rounds alternate the order), and its speed-up from the first count to each other."""
    x, y = _data(sizes, batch)
    opt, step = graphgrad_step(sizes, x, y)
    rounds, n = (2, 3) if quick else (15, 20)
    before = gg.get_num_threads()
    parts: dict[int, dict[str, list[float]]] = {k: defaultdict(list) for k in counts}
    blas_at: dict[int, str] = {}
    par_at: dict[int, str] = {}
    try:
        for k in counts:
            gg.set_num_threads(k)  # under set_blas("auto"), the BLAS calibrated for k threads
            blas_at[k] = gg.blas()
            n_par = _blas.par_min_info()["par_min"]  # chosen for k threads (measured/forced)
            par_at[k] = "never" if n_par is None else f"above {n_par} elements"
            for _ in range(3):
                step()
        for r in range(rounds):
            for k in counts if r % 2 == 0 else counts[::-1]:
                gg.set_num_threads(k)
                sp = split_graphgrad(step, opt, n)
                sp["non-GEMM"] = sp["step"] - sp["GEMMs"]
                sp["kernels (optimiser + elementwise)"] = sp["optimiser"] + sp["elementwise"]
                for part, v in sp.items():
                    parts[k][part].append(v)
    finally:
        gg.set_num_threads(before)
    name = "-".join(map(str, sizes)) + f" b{batch}"
    rows = (
        "non-GEMM",
        "kernels (optimiser + elementwise)",
        "optimiser",
        "elementwise",
        "framework (the rest)",
        "GEMMs",
        "step",
    )
    lines = _by_threads(
        f"### {name}: graphgrad's step by thread count (ms, medians of {rounds} rounds)",
        counts,
        parts,
        {r: r for r in rows},
        ".3f",
        "non-GEMM speed-up",
    )
    env = {k: os.environ[k] for k in _TUNING if k in os.environ}
    lines += [
        "",
        "non-GEMM = step - GEMMs: the kernels (optimiser, ReLU, softmax cross-entropy, bias "
        "sums; split over threads: "
        + ", ".join(f"{par_at[k]} at {k} thread(s)" for k in counts)
        + ") and the "
        "framework's Python (graph recording, the backward pass: one thread, so it bounds the "
        "speed-up). Target: non-GEMM >= 1.6x from 1 to 2 threads. BLAS: "
        + ", ".join(f"{blas_at[k]} at {k} thread(s)" for k in counts)
        + f"; settings: {env or 'defaults'}.",
        "",
    ]
    return "\n".join(lines)


#: Environment settings that change the threading, shown with the speed-up table.
_TUNING = (
    "GRAPHGRAD_BLAS",
    "GRAPHGRAD_PAR_MIN",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "MKL_THREADING_LAYER",
    "KMP_BLOCKTIME",
)


def _compiled_plan(sizes: list[int], batch: int) -> tuple[Any, list[str], Any, Any, str]:
    """The compiled step's plan for this shape and batch, its instructions' text, the batch
    (x, y), and why there is no plan ("" when there is one)."""
    built, x, y, why = _compiled_built(sizes, batch)
    if built is None:
        return None, [], x, y, why
    return built.plan, built.text, x, y, ""


def _compiled_built(sizes: list[int], batch: int) -> tuple[Any, Any, Any, str]:
    """The compiled step's plan record (``compiled._Built``: a benchmark may look inside)
    for this shape and batch, the batch (x, y), and why there is none ("" when there is)."""
    x, y = _data(sizes, batch)
    model = gg.nn.MLP(sizes[0], sizes[1:-1], sizes[-1], "relu", rng=np.random.default_rng(0))
    step = gg.compile_step(model, gg.optim.SGD(model.parameters(), lr=1e-6, momentum=MU))
    step(x, y)
    if step.engine != "kernels":
        return None, x, y, step.why_eager or "no plan"
    return step._plans[batch], x, y, ""


def in_step(plan: Any, x: Any, y: Any, steps: int) -> list[float]:
    """Each instruction of ``plan`` timed in its place: ``steps`` whole steps run one
    instruction at a time, in order (so each finds the caches and the BLAS's threads as the
    instructions before it left them); per instruction the median, in µs."""
    count = len(plan)
    times: list[list[float]] = [[] for _ in range(count)]
    empty: list[float] = []
    clock = time.perf_counter
    for _ in range(steps):
        for k in range(count):
            t0 = clock()
            plan.run(x, y, 1e-6, 0.0, k, k + 1)
            t1 = clock()
            plan.run(x, y, 1e-6, 0.0, k, k)  # the call alone: its checks, the clock's cost
            times[k].append(t1 - t0)
            empty.append(clock() - t1)
    # each instruction's own time: the call's cost (0.2-0.3 us here, the same at every
    # thread count) left out, since it would dilute the thread counts' ratios
    call = statistics.median(empty)
    return [max(statistics.median(t) - call, 0.0) * 1e6 for t in times]


def _is_gemm(line: str) -> bool:
    return line.split()[1] == "gemm"


def plan_profile(sizes: list[int], batch: int, quick: bool) -> str:
    """The compiled step (``gg.compile_step``) kernel call by kernel call: each instruction
    of its plan run alone, many times (the fastest of 5 rounds); each in its place in whole
    steps (:func:`in_step`); then the whole plan."""
    plan, text, x, y, why = _compiled_plan(sizes, batch)
    if plan is None:
        return f"(no plan: {why})\n"

    def best(start: int, stop: int, n: int) -> float:
        times = []
        for _ in range(2 if quick else 5):
            t0 = time.perf_counter()
            for _ in range(n):
                plan.run(x, y, 1e-6, 0.0, start, stop)
            times.append((time.perf_counter() - t0) / n)
        return min(times) * 1e6

    whole = best(0, -1, 3 if quick else 20)
    n = max(3, int(2000 / max(whole, 1.0))) if not quick else 3
    each = [best(i, i + 1, max(n, 3)) for i in range(len(text))]
    placed = in_step(plan, x, y, 3 if quick else max(20, int(200_000 / max(whole, 1.0))))
    total, total_placed = sum(each), sum(placed)
    name = f"{'-'.join(map(str, sizes))} b{batch}"
    lines = [
        f"### {name}: the compiled step, kernel call by kernel call",
        "",
        "Each instruction of the plan run alone, again and again (its arrays stay in cache), "
        "the fastest of 5 rounds; then in its place: whole steps run one instruction at a "
        "time, in order, the median per instruction (it finds the caches as the "
        "instructions before it left them); then the whole plan.",
        "",
        "| # | kernel | what | µs alone | µs in the step | share in the step |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for t, tp, line in zip(each, placed, text, strict=True):
        num, kernel, what = line.split(None, 2)
        lines.append(
            f"| {num} | {kernel} | {what} | {t:.1f} | {tp:.1f} | {tp / total_placed:.1%} |"
        )
    gemm = sum(t for t, line in zip(each, text, strict=True) if _is_gemm(line))
    gemm_placed = sum(t for t, line in zip(placed, text, strict=True) if _is_gemm(line))
    lines += [
        "",
        f"Sum of the calls alone: {total:.0f} µs ({gemm:.0f} µs in the GEMMs, "
        f"{gemm / total:.0%}); in the step: {total_placed:.0f} µs ({gemm_placed:.0f} µs in "
        f"the GEMMs, {total_placed - gemm_placed:.0f} µs in the rest); the whole plan: "
        f"{whole:.0f} µs.",
        "",
    ]
    return "\n".join(lines)


def compiled_nongemm_speedup(sizes: list[int], batch: int, counts: list[int], quick: bool) -> str:
    """The compiled step's non-GEMM instructions, timed in their places (:func:`in_step`), at
    each thread count in ``counts``, taking turns; their speed-up from the first count."""
    plan, text, x, y, why = _compiled_plan(sizes, batch)
    name = "-".join(map(str, sizes)) + f" b{batch}"
    if plan is None:
        return f"### {name}: the compiled step by thread count\n\n(no plan: {why})\n"
    rounds, steps = (2, 3) if quick else (9, 30)
    before = gg.get_num_threads()
    gemm_rows = [_is_gemm(line) for line in text]
    rest = [i for i, g in enumerate(gemm_rows) if not g]
    parts: dict[int, dict[str, list[float]]] = {k: defaultdict(list) for k in counts}
    try:
        for k in counts[::-1]:  # warm: the BLAS's threads started, the caches filled
            gg.set_num_threads(k)
            warm = in_step(plan, x, y, 3)
        big = max(rest, key=lambda i: warm[i])  # the slowest at the first count
        for r in range(rounds):
            for k in counts if r % 2 == 0 else counts[::-1]:
                gg.set_num_threads(k)
                t = in_step(plan, x, y, steps)
                parts[k]["non-GEMM"].append(sum(t[i] for i in rest))
                parts[k]["slowest"].append(t[big])
                parts[k]["GEMMs"].append(sum(t[i] for i, g in enumerate(gemm_rows) if g))
                parts[k]["step"].append(sum(t))
    finally:
        gg.set_num_threads(before)
    labels = {
        "non-GEMM": "non-GEMM instructions",
        "slowest": f"of which #{big + 1}: {text[big].split(None, 2)[2]}",
        "GEMMs": "GEMMs",
        "step": "step (the sum)",
    }
    lines = _by_threads(
        f"### {name}: the compiled step by thread count (µs, instructions in their places, "
        f"medians of {rounds} rounds)",
        counts,
        parts,
        labels,
        ".0f",
        "compiled step, non-GEMM speed-up",
    )
    return "\n".join([*lines, ""])


def compiled_whole_speedup(sizes: list[int], batch: int, counts: list[int], quick: bool) -> str:
    """The compiled step's non-GEMM part from whole plans: at each thread count in
    ``counts``, taking turns, the whole plan and a plan of its GEMM instructions alone (the
    same calls on the same arrays, in the same order) each run as one call, again and again;
    non-GEMM = whole - GEMMs. Unlike :func:`in_step`, nothing runs between the instructions
    (no Python, no clock), so the threads and caches are as in a real step; but the GEMMs of
    the second plan find the caches as other GEMMs left them."""
    built, x, y, why = _compiled_built(sizes, batch)
    name = "-".join(map(str, sizes)) + f" b{batch}"
    title = f"### {name}: the compiled step by thread count, whole plans"
    if built is None:
        return f"{title}\n\n(no plan: {why})\n"
    K = _fused.KERNELS
    gemms = K.Plan(
        [ins for ins in built.instrs if ins[0] == "gemm"],
        list(built.plan.keep),
        built.plan.x_bytes,
        built.plan.n_labels,
        built.plan.n_classes,
    )
    whole = built.plan
    rounds = 2 if quick else 15

    def timed(p: Any, n: int) -> float:
        p.run(x, y, 1e-6, 0.0)
        t0 = time.perf_counter()
        for _ in range(n):
            p.run(x, y, 1e-6, 0.0)
        return (time.perf_counter() - t0) / n * 1e6

    before = gg.get_num_threads()
    parts: dict[int, dict[str, list[float]]] = {k: defaultdict(list) for k in counts}
    try:
        gg.set_num_threads(counts[0])
        n = 2 if quick else max(5, int(200_000 / max(timed(whole, 3), 1.0)))
        for r in range(rounds):
            for k in counts if r % 2 == 0 else counts[::-1]:
                gg.set_num_threads(k)
                pair = (whole, gemms) if r % 2 == 0 else (gemms, whole)
                t = {id(p): timed(p, n) for p in pair}
                parts[k]["step"].append(t[id(whole)])
                parts[k]["GEMMs"].append(t[id(gemms)])
                parts[k]["non-GEMM"].append(t[id(whole)] - t[id(gemms)])
    finally:
        gg.set_num_threads(before)
    labels = {
        "non-GEMM": "non-GEMM (whole plan - GEMM-only plan)",
        "GEMMs": "GEMM-only plan",
        "step": "whole plan",
    }
    lines = _by_threads(
        f"{title} (µs, medians of {rounds} rounds; kernels split from "
        f"{_fused.par_min()} elements at the last count)",
        counts,
        parts,
        labels,
        ".0f",
        "compiled step (whole plans), non-GEMM speed-up",
    )
    return "\n".join([*lines, ""])


def _by_threads(
    title: str,
    counts: list[int],
    parts: dict[int, dict[str, list[float]]],
    labels: dict[str, str],
    fmt: str,
    verdict: str,
) -> list[str]:
    """A Markdown table: a row per part (``labels``: part -> row label) with its median at
    each thread count and its speed-up from the first count (the median of per-round
    ratios), then the "non-GEMM" row's verdict against the target."""
    base = counts[0]
    lines = [
        title,
        "",
        "| part | "
        + " | ".join(f"{k} thread(s)" for k in counts)
        + " | "
        + " | ".join(f"speed-up {base} -> {k}" for k in counts[1:])
        + " |",
        "|---|" + "---:|" * (2 * len(counts) - 1),
    ]
    verdicts = []
    for part, label in labels.items():
        cells = [format(statistics.median(parts[k][part]), fmt) for k in counts]
        ups = []
        for k in counts[1:]:
            per_round = [
                a / b for a, b in zip(parts[base][part], parts[k][part], strict=True) if b > 0
            ]
            up = statistics.median(per_round) if per_round else None
            ups.append("–" if up is None else f"{up:.2f}x")
            if part == "non-GEMM" and up is not None:
                verdicts.append(
                    f"{verdict} {base} -> {k} threads: **{up:.2f}x** (target >= "
                    f"{TARGET_SPEEDUP}x: {'met' if up >= TARGET_SPEEDUP else 'NOT met'})."
                )
        lines.append(f"| {label} | " + " | ".join(cells + ups) + " |")
    return [*lines, "", *verdicts]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", action="append", help="layer sizes, e.g. 784,256,256,10")
    ap.add_argument("--batch", action="append", type=int, help="batch size per --shape")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="few rounds (CI smoke run)")
    ap.add_argument("--md", type=Path, default=None, help="also write the tables here")
    ap.add_argument(
        "--speedup", default=None, help="thread counts, e.g. 1,2: the non-GEMM part's speed-up"
    )
    ap.add_argument(
        "--parts",
        default="split,plan,speedup",
        help="which tables: split (the step part by part, with cProfile), plan (the compiled "
        "step kernel by kernel), speedup (with --speedup); comma-separated, default all",
    )
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= {"split", "plan", "speedup"}:
        sys.exit(f"profile_step: unknown part in --parts {args.parts!r}")
    shapes = args.shape or ["784,256,256,10", "3072,512,512,10"]
    batches = args.batch or [128, 256][: len(shapes)]
    if len(batches) != len(shapes):
        sys.exit("profile_step: give one --batch per --shape")
    text = [
        "# Where an MLP step's time goes",
        "",
        f"Generated by `python bench/profile_step.py` (fp32, SGD momentum {MU}, "
        f"{args.threads} thread(s) for every library). The split is measured inside real "
        "steps; see the script's docstring for how.",
        "",
    ]
    with B.threads_limited(args.threads):
        for shape, batch in zip(shapes, batches, strict=True):
            if "split" not in parts:
                break
            md, _ = run([int(s) for s in shape.split(",")], batch, args.quick)
            print(md)
            text.append(md)
        if "plan" in parts:
            text += ["## The compiled step, kernel by kernel", ""]
        for shape, batch in zip(shapes, batches, strict=True):
            if "plan" not in parts:
                break
            md = plan_profile([int(s) for s in shape.split(",")], batch, args.quick)
            print(md)
            text.append(md)
    if args.speedup and "speedup" in parts:
        counts = [int(k) for k in args.speedup.split(",")]
        text += ["## The non-GEMM part by thread count", ""]
        for shape, batch in zip(shapes, batches, strict=True):
            md = nongemm_speedup([int(s) for s in shape.split(",")], batch, counts, args.quick)
            print(md)
            text.append(md)
            md = compiled_nongemm_speedup(
                [int(s) for s in shape.split(",")], batch, counts, args.quick
            )
            print(md)
            text.append(md)
            md = compiled_whole_speedup(
                [int(s) for s in shape.split(",")], batch, counts, args.quick
            )
            print(md)
            text.append(md)
    if args.md is not None:
        args.md.write_text("\n".join(text))


if __name__ == "__main__":
    main()
