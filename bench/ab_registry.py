"""Speed guard of issue 10 (one op table): this tree against commit 6de42ab, old and new in turns.

The issue asks that the scalar-units and tiny-op figures do not regress by more than 5% against
the state before it started (6de42ab). This script extracts that commit's ``src`` and ``bench``
(``git archive 6de42ab setup.py src bench``) into a directory, builds its compiled parts there,
then times, in separate processes pinned to one CPU (``taskset -c 0``, one thread everywhere),
old and new alternately (the order flips every round, so a drifting machine slows both alike),
each timing its own CPU time (``time.process_time``: other processes' load counts less):

* ``scalar``: one iteration of micrograd's demo MLP on graphgrad's compiled Scalar (the step of
  ``bench/bench_scalar.py``, each side's own), median over the process's iterations;
* ``tiny``: ``(a + b).backward()`` on 1-element tensors (``bench/bench_engine.py``'s tiny op),
  median microseconds;
* ``scalar-pure``: the same MLP step on the pure-Python Scalar (the fallback without a
  compiler; reported, not guarded).

Each round gives one new/old ratio per benchmark; the medians of those ratios are printed (and
the guard: a median above 1.05 for ``scalar`` or ``tiny`` is a regression).

Usage::

    python bench/ab_registry.py            # 7 rounds (about 3 minutes)
    python bench/ab_registry.py --quick    # 2 short rounds: checks that it runs
    python bench/ab_registry.py --json out.json --base 6de42ab --dir /tmp/gg-6de42ab
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ("scalar", "tiny", "scalar-pure")
GUARDED = ("scalar", "tiny")
ONE_THREAD = {
    k: "1"
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
}


# -------------------------------------------------------------------------- the old tree


def extract(base: str, dest: Path) -> Path:
    """``base``'s setup.py, pyproject.toml, src and bench in ``dest``, its extensions built
    in place (kept between runs: a second run reuses the build)."""
    marker = dest / ".ab_built"
    if marker.exists() and marker.read_text() == base:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", base, "setup.py", "pyproject.toml", "src", "bench"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    try:
        import Cython  # noqa: F401  (setup.py builds the extensions only where it is there)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "cython>=3"], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=dest,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not list((dest / "src" / "graphgrad").glob("_scalar_core*.so")):
        raise SystemExit(f"ab_registry: {base}'s compiled core did not build in {dest}")
    marker.write_text(base)
    return dest


# ------------------------------------------------------------------------ one measurement


def child(bench: str, tree: Path, quick: bool) -> float:
    """Run in a fresh process with ``tree/src`` first on the path: one benchmark's median."""
    import gc
    import random

    import numpy as np

    import graphgrad as gg

    src = (tree / "src").resolve()
    if not Path(gg.__file__).resolve().is_relative_to(src):
        raise SystemExit(f"ab_registry: imported {gg.__file__}, not the tree {src}")
    if bench == "tiny":
        a = gg.tensor([1.0], requires_grad=True)
        b = gg.tensor([2.0], requires_grad=True)
        seed = np.ones(1, np.float32)
        number, repeat = (500, 5) if quick else (5000, 25)
        times = []
        for _ in range(repeat + 1):  # the first repeat warms up
            t0 = time.process_time()
            for _ in range(number):
                a.grad = b.grad = None
                (a + b).backward(seed)
            times.append((time.process_time() - t0) / number * 1e6)
        return statistics.median(times[1:])
    sys.path.insert(0, str(tree / "bench"))
    import bench_scalar as bs  # the side's own benchmark

    if bench == "scalar":
        from graphgrad import _scalar_core as impl
    else:
        from graphgrad import _scalar_py as impl
    xs, ys = bs.moons(100, 0.1, 0)
    random.seed(1337)
    node = impl.Scalar
    step = bs.make_step(bs.graphgrad_mlp(node), node, xs, ys)
    iters = (3 if quick else 40) if bench == "scalar" else (2 if quick else 6)
    times = []
    for k in range(iters + 1):  # iteration 0 warms up
        t0 = time.process_time()
        step(k)
        times.append(time.process_time() - t0)
        gc.collect()
    return statistics.median(times[1:]) * 1e3


def measure(bench: str, tree: Path, quick: bool, pin: bool) -> float:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(tree / "src")}
    env.pop("GRAPHGRAD_PURE_PYTHON", None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", bench, "--tree", str(tree)]
    if quick:
        cmd.append("--quick")
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode:
        raise SystemExit(f"ab_registry: {bench} on {tree} failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 short rounds: checks that it runs")
    p.add_argument("--rounds", type=int, default=None, help="old/new pairs per benchmark")
    p.add_argument("--base", default="6de42ab", help="the commit to compare with")
    p.add_argument("--dir", type=Path, default=None, help="where to extract and build it")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--only", choices=BENCHES, action="append", help="this benchmark only (repeatable)"
    )
    p.add_argument("--child", choices=BENCHES, help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(child(args.child, args.tree, args.quick))
        return 0
    rounds = args.rounds or (2 if args.quick else 7)
    if rounds < 1:
        p.error("--rounds must be >= 1")
    pin = shutil.which("taskset") is not None
    if not pin:
        print("ab_registry: taskset not found: processes are not pinned", file=sys.stderr)
    base_dir = args.dir or Path(tempfile.gettempdir()) / f"graphgrad-ab-{args.base}"
    t0 = time.perf_counter()
    old = extract(args.base, base_dir)
    new = ROOT
    print(f"old: {args.base} built in {old} ({time.perf_counter() - t0:.0f} s); new: {new}")
    benches = [b for b in BENCHES if not args.only or b in args.only]
    results: dict[str, dict[str, list[float]]] = {b: {"old": [], "new": []} for b in benches}
    for r in range(rounds):
        for bench in benches:
            sides = [("old", old), ("new", new)]
            for side, tree in sides if r % 2 == 0 else sides[::-1]:
                results[bench][side].append(measure(bench, tree, args.quick, pin))
        print(f"  round {r + 1}/{rounds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    unit = {"scalar": "ms/iter", "tiny": "µs", "scalar-pure": "ms/iter"}
    summary = {}
    print(f"\nnew/old, median of {rounds} per-round ratios (below 1: new is faster)")
    bad = []
    for bench in benches:
        o, n = results[bench]["old"], results[bench]["new"]
        ratios = [b / a for a, b in zip(o, n, strict=True)]
        med = statistics.median(ratios)
        summary[bench] = {"old": o, "new": n, "ratios": ratios, "median_ratio": med}
        flag = ""
        if bench in GUARDED:
            flag = "  REGRESSION (> 1.05)" if med > 1.05 else "  ok (<= 1.05)"
            if med > 1.05:
                bad.append(bench)
        print(
            f"  {bench:<12} old {statistics.median(o):8.3f} {unit[bench]:<8} new "
            f"{statistics.median(n):8.3f} {unit[bench]:<8} ratio {med:.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}){flag}"
        )
    if args.json:
        args.json.write_text(json.dumps({"base": args.base, "rounds": rounds, **summary}) + "\n")
    if args.quick:
        print("(--quick: too few rounds to judge; run without --quick on a quiet machine)")
    return 1 if bad and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
