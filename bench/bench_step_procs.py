"""The MLP training step with every peer in a process of its own, taking turns.

Two thread pools in one process spin against each other, so in-process ratios at several
threads mislead; here each peer (graphgrad as installed, graphgrad's step compiled with
``gg.compile_step``, graphgrad on NumPy's BLAS, graphgrad with ``SGD(fused_backward=True)``
eager and compiled, the GEMM-only bound on graphgrad's BLAS, PyTorch eager, JAX jit) runs in
its own worker process. The parent starts them all, then, round after round (the order
rotated each round), asks one worker at a time for ``number`` steps and reads back the time;
the other workers sit idle, blocked on their input, with a pause between turns so the last
peer's spinning threads go to sleep. 1-thread runs are pinned to CPU 0 (``taskset -c 0``: XLA
ignores the thread variables); n-thread runs get CPUs 0..n-1. Ratios are medians of the
per-round ratios (both peers of a ratio timed in the same round).

The step is bench_mlp_step.py's (forward, softmax cross-entropy, backward, SGD momentum 0.9,
fp32), from the same weights and batch; every worker reports its loss after 3 steps, and the
parent checks that they agree.

Peers in variants: ``NAME[VAR=VALUE;VAR=VALUE]`` runs peer NAME with those environment
variables (e.g. ``graphgrad[GRAPHGRAD_BLAS=mkl;GOMP_SPINCOUNT=100000]``) and reports its time
over its parent's, the same peer without the last variable where that peer runs too (here
``graphgrad[GRAPHGRAD_BLAS=mkl]``), else the plain peer: the A/B of a setting, in the same
rounds.

Before each thread count the parent runs ``graphgrad info --recalibrate`` once, pinned as the
workers are, so that ``set_blas("auto")`` chooses from figures measured on this (quiet)
machine rather than from a calibration cached earlier (``--no-recalibrate`` keeps the cache).

Run:  python bench/bench_step_procs.py [--quick] [--threads 1,2] [--md PATH] [--json PATH]
      [--shape 784,256,256,10:128 ...] [--peers graphgrad,pytorch,...] [--no-recalibrate]
      [--pause SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHAPES = ["784,256,256,10:128", "3072,512,512,10:256"]
PEERS = [
    "graphgrad",
    "graphgrad compiled",
    "graphgrad (NumPy BLAS)",
    "graphgrad fused_backward",
    "graphgrad compiled fused_backward",
    "GEMM only",
    "GEMM + SGD",
    "pytorch",
    "jax jit",
]
#: (numerator, denominator, target): the ratios reported, targets from the issue.
RATIOS = [
    ("graphgrad", "pytorch", "<= 0.90"),
    ("graphgrad", "jax jit", "<= 0.95"),
    ("graphgrad", "GEMM only", "<= 1.05 (1 thread)"),
    ("graphgrad compiled", "pytorch", "<= 0.90"),
    ("graphgrad compiled", "jax jit", "<= 0.95"),
    ("graphgrad compiled", "GEMM only", "<= 1.05 (1 thread)"),
    ("graphgrad compiled", "graphgrad", None),
    ("graphgrad (NumPy BLAS)", "pytorch", None),
    ("graphgrad (NumPy BLAS)", "graphgrad", None),  # where auto chose numpy: an A/A test
    ("graphgrad fused_backward", "graphgrad", None),
    ("graphgrad fused_backward", "pytorch", None),
    ("graphgrad compiled fused_backward", "graphgrad compiled", None),
    ("graphgrad compiled fused_backward", "jax jit", None),
    # the floor under graphgrad / JAX: a step of nothing but the BLAS's products
    ("GEMM only", "jax jit", None),
    # the floor under a step that updates its weights after its backward (momentum SGD: each
    # weight, its gradient and its momentum read, the weight and the momentum written)
    ("graphgrad compiled", "GEMM + SGD", None),
    ("GEMM + SGD", "GEMM only", None),
]


# ------------------------------------------------------------------------------- worker


def split_variant(peer: str) -> tuple[str, dict[str, str]]:
    """``"graphgrad[A=1;B=2]"`` -> ``("graphgrad", {"A": "1", "B": "2"})``; a plain name has no
    variables."""
    if not peer.endswith("]") or "[" not in peer:
        return peer, {}
    base, _, rest = peer[:-1].partition("[")
    env = {}
    for item in rest.split(";"):
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise SystemExit(f"bench_step_procs: bad variant {peer!r}: want NAME[VAR=VALUE;...]")
        env[name.strip()] = value.strip()
    return base, env


def parent(peer: str, running: Any) -> str:
    """The peer a variant is compared with: the same variant without its last variable when
    that one is in ``running``, else the plain peer."""
    base, env = split_variant(peer)
    items = list(env.items())[:-1]
    up = f"{base}[{';'.join(f'{a}={b}' for a, b in items)}]" if items else base
    return up if up in running else base


def _worker(peer: str, sizes: list[int], batch: int, threads: int) -> None:
    """Build the peer, then serve 'run N' (reply: seconds) and 'loss' on stdin/stdout."""
    sys.path.insert(0, str(HERE))
    peer, _ = split_variant(peer)  # the parent set the variant's variables
    if peer == "graphgrad (NumPy BLAS)":
        os.environ["GRAPHGRAD_BLAS"] = "numpy"
    import bench_mlp_step as M
    import numpy as np

    import graphgrad as gg

    gg.set_num_threads(threads)
    w0 = M.init_weights(sizes, seed=0)
    x, y = M.make_batch(sizes[0], sizes[-1], batch, seed=0)
    obj: Any
    if peer.startswith("graphgrad"):
        obj = M.GraphgradPeer(w0, x, y)
        if peer == "graphgrad compiled":
            obj = M.GraphgradCompiledPeer(w0, x, y)
        elif peer == "graphgrad compiled fused_backward":
            obj = M.GraphgradCompiledPeer(w0, x, y, fused_backward=True)
        elif peer == "graphgrad fused_backward":
            obj.opt = gg.optim.SGD(
                obj.model.parameters(), lr=M.LR, momentum=M.MU, fused_backward=True
            )
    elif peer == "GEMM only":
        obj = _GgGemmPeer(M, w0, x, y)
    elif peer == "GEMM + SGD":
        obj = _GgGemmPeer(M, w0, x, y, update=True)
    elif peer == "pytorch":
        import torch

        torch.set_num_threads(threads)
        obj = M.TorchPeer(w0, x, y)
    elif peer == "jax jit":
        obj = M.JaxPeer(w0, x, y, threads)
    else:
        raise SystemExit(f"unknown peer {peer!r}")
    losses = []
    for _ in range(3):
        obj.step()
        obj.sync()
        losses.append(obj.last_loss())
    print(json.dumps({"ready": True, "loss": losses[-1], "blas": gg.blas()}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        n = int(cmd[1])
        t0 = time.perf_counter()
        for _ in range(n):
            obj.step()
        obj.sync()
        print(json.dumps({"s": time.perf_counter() - t0}), flush=True)
    del np


class _GgGemmPeer:
    """The 8 GEMMs of the step through graphgrad's BLAS (MKL when selected) in graphgrad's
    layout of linear's products (``_blas.layout()``: "columns" computes ``x @ W.T`` as
    ``(W @ x.T).T``, and the input gradients likewise), preallocated. With ``update=True``
    ("GEMM + SGD") each weight also takes its momentum-SGD update (graphgrad's kernel,
    ``_fused.sgd``, momentum 0.9) once its layer's products are made, as in the compiled step:
    the products and the weights' memory traffic, nothing else (no bias, activation, loss).
    Its learning rate is 1e-9, so that the weights stay where they started."""

    def __init__(self, M: Any, w0: Any, x: Any, y: Any, update: bool = False) -> None:
        import numpy as np

        from graphgrad import _blas, _fused

        self.inner = M.GemmPeer(w0, x, y)
        self.mm = _blas.matmul_into
        self.columns = _blas.layout() == "columns"
        p = self.inner
        # "columns": activations and their gradients column-major, kept as their (n, S)
        # row-major transposes
        self.aT = [np.empty(a.shape[::-1], a.dtype) for a in p.a]
        self.gT = [np.ascontiguousarray(g.T) for g in p.g]
        self.daT = [np.empty(d.shape[::-1], d.dtype) for d in p.da]
        self.v = [np.zeros_like(w) for w in p.W] if update else []
        self.sgd = _fused.sgd

    def _update(self, k: int) -> None:
        if self.v:
            p = self.inner
            self.sgd(p.W[k], p.dW[k], self.v[k], None, 1e-9, 0.9, 0.0, False, False)

    def step(self) -> None:
        p, mm = self.inner, self.mm
        n = len(p.W)
        if self.columns:
            aT, gT, daT = self.aT, self.gT, self.daT
            mm(p.W[0], p.x.T, aT[0], 0.0)
            for k in range(1, n):
                mm(p.W[k], aT[k - 1], aT[k], 0.0)
            for k in range(n - 1, -1, -1):
                mm(gT[k], aT[k - 1].T if k else p.x, p.dW[k], 0.0)
                if k:
                    mm(p.W[k].T, gT[k], daT[k - 1], 0.0)
                self._update(k)
            return
        mm(p.x, p.W[0].T, p.a[0], 0.0)
        for k in range(1, n):
            mm(p.a[k - 1], p.W[k].T, p.a[k], 0.0)
        for k in range(n - 1, -1, -1):
            mm(p.g[k].T, p.a[k - 1] if k else p.x, p.dW[k], 0.0)
            if k:
                mm(p.g[k], p.W[k], p.da[k - 1], 0.0)
            self._update(k)

    def sync(self) -> None:
        pass

    def last_loss(self) -> float:
        return float("nan")


# ------------------------------------------------------------------------------- parent


def _available(peer: str) -> bool:
    mod = {"pytorch": "torch", "jax jit": "jax"}.get(split_variant(peer)[0])
    if mod is None:
        return True
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _cpus(threads: int) -> list[int]:
    """The first ``threads`` CPUs this process may run on, the ones the workers are pinned to
    (empty where the affinity cannot be read)."""
    return sorted(os.sched_getaffinity(0))[:threads] if hasattr(os, "sched_getaffinity") else []


def _pinned(cmd: list[str], threads: int) -> list[str]:
    cpus = _cpus(threads)
    if cpus and shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
    return cmd


def _start(peer: str, shape: str, threads: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--worker", peer, "--shape", shape, "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **split_variant(peer)[1]}
    return subprocess.Popen(
        _pinned(cmd, threads), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )


def recalibrate(threads: int) -> str:
    """``graphgrad info --recalibrate`` at ``threads`` threads, pinned as the workers are:
    ``set_blas("auto")``'s choice measured now. Returns its BLAS line."""
    cmd = [sys.executable, "-m", "graphgrad", "info", "--recalibrate"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("GRAPHGRAD_BLAS", None)
    out = subprocess.run(
        _pinned(cmd, threads), env=env, capture_output=True, text=True, timeout=300, check=True
    ).stdout
    return next((ln for ln in out.splitlines() if ln.startswith("BLAS:")), out.strip())


#: One-way core-to-core latency above which the two CPUs count as far apart: on the README's
#: 2-vCPU AMD EPYC VM the host moved them between ~40-70 ns (near) and ~200 ns (far).
FAR_NS = 120.0


def _latency() -> float | None:
    """The core-to-core latency between the first two CPUs the workers run on (ns), or None
    (bench/pingpong.c cannot be built or run here)."""
    cpus = _cpus(2)
    if len(cpus) < 2:
        return None
    return _benchlib().core_latency_ns(cpus[0], cpus[1])


def _benchlib() -> Any:
    sys.path.insert(0, str(HERE))
    try:
        import benchlib
    finally:
        sys.path.remove(str(HERE))
    return benchlib


def _measured(started: time.struct_time) -> str:
    """When and on which CPU the run was taken: the sandbox's CPU kind changes between
    sessions, so every table says it."""
    fmt = "%Y-%m-%d %H:%M"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"Measured {time.strftime(fmt, started)} to {time.strftime(fmt, time.gmtime())} UTC "
        f"on {_benchlib().cpu_model()} ({usable} CPUs usable)."
    )


def _peak(threads: int, iters: int) -> float | None:
    """The float32 FMA peak (GFLOPS) of the CPUs the workers run on, all ``threads`` at once
    (bench/peak.c), or None where it cannot be measured."""
    return _benchlib().fma_peak_gflops(threads, _cpus(threads) or None, iters=iters)


def _ask(p: subprocess.Popen[str], line: str) -> dict[str, Any]:
    assert p.stdin is not None and p.stdout is not None
    if line:
        p.stdin.write(line + "\n")
        p.stdin.flush()
    reply = p.stdout.readline()
    if not reply:
        raise RuntimeError(f"worker {p.args!r} exited ({p.wait()})")
    return dict(json.loads(reply))


def bench(
    shape: str,
    threads: int,
    rounds: int,
    target_s: float,
    pause_s: float,
    peers: Sequence[str],
    peak_iters: int = 20_000_000,
) -> dict[str, Any]:
    """Time ``peers`` on ``shape`` at ``threads`` threads, one process each, taking turns;
    the CPUs' FMA peak is measured before and after the rounds (``peak_iters`` iterations of
    bench/peak.c's loop)."""
    peaks = [_peak(threads, peak_iters)]
    procs = {k: _start(k, shape, threads) for k in peers if _available(k)}
    try:
        ready = {k: _ask(p, "") for k, p in procs.items()}
        number = {}
        for k, p in procs.items():  # calibrate: about target_s of steps per turn
            one = _ask(p, "run 2")["s"] / 2
            number[k] = max(1, round(target_s / max(one, 1e-6)))
        times: dict[str, list[float]] = {k: [] for k in procs}
        latency: list[float | None] = []  # core-to-core, before each round (2+ threads)
        names = list(procs)
        for r in range(rounds):
            if threads >= 2:
                latency.append(_latency())
            for k in names[r % len(names) :] + names[: r % len(names)]:
                time.sleep(pause_s)
                times[k].append(_ask(procs[k], f"run {number[k]}")["s"] / number[k])
    finally:
        for p in procs.values():
            if p.poll() is None and p.stdin is not None:
                p.stdin.write("quit\n")
                p.stdin.flush()
        for p in procs.values():
            p.wait(timeout=60)
    peaks.append(_peak(threads, peak_iters))
    sizes, batch = shape.split(":")
    ref_loss = ready["graphgrad"]["loss"] if "graphgrad" in ready else None
    ratios = []
    pairs = list(RATIOS)
    for k in times:  # each variant against its parent
        if split_variant(k)[1]:
            pairs.append((k, parent(k, times), None))
    known = bool(latency) and all(v is not None for v in latency)
    for num, den, target in pairs:
        if num in times and den in times:
            per_round = [a / b for a, b in zip(times[num], times[den], strict=True)]
            rec: dict[str, Any] = {
                "ratio": f"{num} / {den}",
                "value": statistics.median(per_round),
                "fastest": min(times[num]) / min(times[den]),  # the fastest rounds' ratio
                "target": target,
            }
            if known:  # the same ratio over the rounds of each placement of the CPUs
                for side, keep in (("near", True), ("far", False)):
                    sel = [
                        v
                        for v, ns in zip(per_round, latency, strict=True)
                        if ns is not None and (ns < FAR_NS) == keep
                    ]
                    rec[side] = statistics.median(sel) if sel else None
                    rec[f"n_{side}"] = len(sel)
            ratios.append(rec)
    return {
        "shape": shape,
        "threads": threads,
        "rounds": rounds,
        "ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
        # each peer's slowest round over its fastest: a peer whose steps changed speed
        # between turns (a 2-thread step on a noisy VM) shows it here
        "spread": {k: max(v) / min(v) for k, v in times.items() if min(v) > 0},
        "latency_ns": latency,
        # the step's matrix products (GFLOP) and the FMA peak before and after the rounds
        "gflop": _benchlib().mlp_step_flops([int(v) for v in sizes.split(",")], int(batch)) / 1e9,
        "peak_gflops": peaks,
        "ratios": ratios,
        "losses": {k: v["loss"] for k, v in ready.items()},
        "blas": {k: v["blas"] for k, v in ready.items()},
        "agree": ref_loss is None
        or all(v["loss"] != v["loss"] or abs(v["loss"] - ref_loss) < 1e-4 for v in ready.values()),
    }


def _name(shape: str) -> str:
    sizes, batch = shape.split(":")
    return sizes.replace(",", "-") + f" b{batch}"


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


#: A peer whose slowest round took more than this times its fastest ran on a busy host (on a
#: quiet one the rounds agree within 1.02-1.10 at 1 thread, docs/speed.md)
NOISY_SPREAD = 1.25


def noisy(rows: list[dict[str, Any]]) -> list[str]:
    """ "<shape> at <threads>: <peer> <spread>, ..." for each row with a peer whose rounds
    spread by more than :data:`NOISY_SPREAD`."""
    out = []
    for r in rows:
        high = [(k, v) for k, v in r.get("spread", {}).items() if v > NOISY_SPREAD]
        if high:
            peers = ", ".join(f"{k} {v:.2f}" for k, v in high)
            out.append(f"{_name(r['shape'])} at {r['threads']}: {peers}")
    return out


def render(rows: list[dict[str, Any]]) -> str:
    peers = [k for k in PEERS if any(k in r["ms"] for r in rows)]
    peers += [k for r in rows for k in r["ms"] if k not in peers]  # variants
    peers = list(dict.fromkeys(peers))
    labels = [f"{n} / {d}" for n, d, _ in RATIOS]
    labels += [x["ratio"] for r in rows for x in r["ratios"]]
    labels = list(dict.fromkeys(labels))
    labels = [lab for lab in labels if any(x["ratio"] == lab for r in rows for x in r["ratios"])]
    head = "| shape, threads | " + " | ".join(peers) + " | " + " | ".join(labels) + " |"
    out = [head, "|---|" + "---:|" * (len(peers) + len(labels))]
    for r in rows:
        cells = [f"{r['ms'][k]:.2f} ms" if k in r["ms"] else "–" for k in peers]
        rv = {x["ratio"]: x["value"] for x in r["ratios"]}
        cells += [f"{rv[lab]:.2f}" if lab in rv else "–" for lab in labels]
        out.append(f"| {_name(r['shape'])}, {r['threads']} | " + " | ".join(cells) + " |")
    fast = [  # the same ratios from each peer's fastest round, beside the medians
        f"{_name(r['shape'])} at {r['threads']}: "
        + ", ".join(f"{x['ratio']} {x['fastest']:.2f}" for x in r["ratios"] if "fastest" in x)
        for r in rows
    ]
    out.append("")
    out.append(
        "Ratios of the fastest rounds (information, beside the medians above): " + "; ".join(fast)
    )
    spread = [
        f"{_name(r['shape'])} at {r['threads']}: "
        + ", ".join(f"{k} {v:.2f}" for k, v in r.get("spread", {}).items())
        for r in rows
    ]
    out.append("")
    out.append(
        "Spread, each peer's slowest round over its fastest (near 1: its rounds agree; a "
        "peer far above the others changed speed between turns, and its ratios say less): "
        + "; ".join(spread)
    )
    busy = noisy(rows)
    if busy:
        out.append("")
        out.append(
            f"**A busy host**: rounds spread by more than {NOISY_SPREAD}x ("
            + "; ".join(busy)
            + "): the host changed speed during this run; measure again before quoting it."
        )
    lat_rows = [r for r in rows if r.get("latency_ns")]
    if lat_rows:
        lines = []
        for r in lat_rows:
            ns = r["latency_ns"]
            if not all(v is not None for v in ns):
                lines.append(f"{_name(r['shape'])} at {r['threads']}: not measured")
                continue
            far = sum(v >= FAR_NS for v in ns)
            split = ", ".join(
                f"{x['ratio']} near {_fmt(x['near'])} ({x['n_near']}), far "
                f"{_fmt(x['far'])} ({x['n_far']})"
                for x in r["ratios"]
                if x["target"] and "near" in x
            )
            lines.append(
                f"{_name(r['shape'])} at {r['threads']}: {min(ns):.0f}-{max(ns):.0f} ns, "
                f"far in {far} of {len(ns)} rounds; {split}"
            )
        out.append("")
        out.append(
            "Where the host put the CPUs: the one-way core-to-core latency between the first "
            f"two, before each round (bench/pingpong.c; far: >= {FAR_NS:.0f} ns), and the "
            "target ratios over the near and the far rounds (medians, rounds in brackets): "
            + "; ".join(lines)
        )
    arith = []
    for r in rows:
        peaks = [v for v in r.get("peak_gflops", []) if v]
        if not peaks or "gflop" not in r:
            continue
        peak = max(peaks)
        shares = ", ".join(
            f"{k} {r['gflop'] / (ms / 1e3) / peak:.0%}" for k, ms in r["ms"].items() if ms > 0
        )
        arith.append(
            f"{_name(r['shape'])} at {r['threads']} ({r['gflop'] * 1e3:.1f} MFLOP a step, peak "
            f"{peak:.0f} GFLOPS): {shares}"
        )
    if arith:
        out.append("")
        out.append(
            "How near each step runs to the CPUs' arithmetic limit: the step's matrix "
            "products (forward, weight gradients and the gradients into hidden layers, "
            "2·S·d_in·d_out FLOPs each) per second of the median step, as a share of the "
            "float32 FMA peak of the same CPUs, all threads at once (bench/peak.c, the higher "
            "of its figures before and after the rounds); elementwise work is not counted: "
            + "; ".join(arith)
        )
    out.append("")
    out.append(
        "Ratios: medians of per-round ratios; times: medians of per-round means. "
        "Targets: graphgrad / PyTorch <= 0.90, graphgrad / JAX <= 0.95, graphgrad / "
        "GEMM-only (same BLAS) <= 1.05 at 1 thread. GEMM only / jax jit: the step's "
        "products alone against JAX's whole step, the lowest graphgrad / JAX any step on "
        "this BLAS can reach. GEMM + SGD: the products and each weight's momentum-SGD update "
        "(graphgrad's kernel), nothing else; GEMM + SGD / GEMM only: what reading and writing "
        "the weights and their momentum costs, which no step that updates its weights after "
        "its backward avoids (a floor under graphgrad / GEMM only)."
    )
    used = {
        f"{k} at {r['threads']}: {v}"
        for r in rows
        for k, v in r.get("blas", {}).items()
        if k.startswith("graphgrad") and v
    }
    out.append("graphgrad's BLAS (set_blas('auto') unless forced): " + ", ".join(sorted(used)))
    aa = [  # graphgrad and graphgrad (NumPy BLAS) are one configuration where auto chose numpy
        f"{_name(r['shape'])} at {r['threads']}: {x['value']:.2f}"
        for r in rows
        for x in r["ratios"]
        if x["ratio"] == "graphgrad (NumPy BLAS) / graphgrad"
        and r["blas"].get("graphgrad") == r["blas"].get("graphgrad (NumPy BLAS)") == "numpy"
    ]
    if aa:
        out.append(
            "Noise (an A/A test): graphgrad (NumPy BLAS) / graphgrad, where both ran NumPy's "
            "BLAS, the same configuration in two processes: " + ", ".join(aa)
        )
    bad = [f"{_name(r['shape'])} at {r['threads']}" for r in rows if not r["agree"]]
    out.append(
        "Losses after 3 steps agree across peers (1e-4)."
        if not bad
        else f"LOSSES DISAGREE: {', '.join(bad)}"
    )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rounds (proves it runs)")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (1,2)")
    ap.add_argument("--shape", action="append", help="sizes:batch, e.g. 784,256,256,10:128")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated peer names")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 15; quick 2)")
    ap.add_argument(
        "--pause",
        type=float,
        default=None,
        help="seconds of quiet before each turn, so the last peer's spinning threads sleep "
        "(default 0.3; quick 0)",
    )
    ap.add_argument("--md", type=Path, help="write the table as Markdown here")
    ap.add_argument("--json", type=Path, help="write the records as JSON here")
    ap.add_argument(
        "--no-recalibrate",
        action="store_true",
        help="keep set_blas('auto')'s cached calibration instead of measuring it again first",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        sizes, batch = a.shape[0].split(":")
        _worker(a.worker, [int(s) for s in sizes.split(",")], int(batch), int(a.threads))
        return 0
    rounds = a.rounds or (2 if a.quick else 15)
    target_s, pause_s = (0.02, 0.0) if a.quick else (0.25, 0.3)
    if a.pause is not None:
        pause_s = a.pause
    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    rows = []
    started = time.gmtime()
    for threads in [int(t) for t in a.threads.split(",")]:
        if not a.no_recalibrate:
            print(f"{threads} thread(s): {recalibrate(threads)}", flush=True)
        for shape in a.shape or SHAPES:
            peak_iters = 200_000 if a.quick else 20_000_000
            row = bench(shape, threads, rounds, target_s, pause_s, peers, peak_iters)
            rows.append(row)
            print(render([row]).splitlines()[2], flush=True)
    md = render(rows)
    print(md)
    if a.md:
        a.md.write_text(
            "# MLP step, each peer in its own process\n\nGenerated by `python "
            f"bench/bench_step_procs.py --threads {a.threads}`.\n\n"
            f"{_measured(started)}\n\n{md}"
        )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
