"""The benchmark suite of issue 5 in one command; writes RESULTS.md and results.json.

Items (each times its peers in one process, taking turns, and reports medians and ratios):

1. ``mlp_step``: an MLP training step, 784-256-256-10 b128 and 3072-512-512-10 b256:
   graphgrad, PyTorch eager, NumPy by hand, GEMM-only, JAX jit (bench_mlp_step.py).
2. ``tiny``: forward + backward of an add of two 1-element tensors, graphgrad vs PyTorch, and
   the 1e6-float elementwise chain (bench_engine.py).
3. ``scalar``: scalar units vs micrograd on micrograd's demo workload (bench_scalar.py).
4. ``epoch``: a Fashion-MNIST epoch of the main job's model, graphgrad vs PyTorch
   (bench_epoch.py).
5. ``memory``: peak memory of a training step vs parameters + gradients + saved activations
   (bench_memory.py).

    python bench/run_all.py                      # full run: bench/RESULTS.md, bench/results.json
    python bench/run_all.py --quick --out /tmp/b # CI: proves it runs (times are not checked)

Exits 1 when an item fails or a check that the peers do the same work fails; missed time
targets are reported, never an error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import benchlib as B  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
ITEMS = ("mlp_step", "tiny", "scalar", "epoch", "memory")


# -------------------------------------------------------------------- items kept elsewhere


def run_tiny(quick: bool, threads: int) -> dict[str, Any]:
    """Item 2 from bench_engine.py's medians (it times at 1 torch thread by itself)."""
    import bench_engine

    with tempfile.TemporaryDirectory() as tmp, B.threads_limited(threads):
        path = Path(tmp) / "engine.json"
        bench_engine.main([*(["--quick"] if quick else []), "--json", str(path)])
        med = json.loads(path.read_text())
    tiny_key = next(k for k in med if k.startswith("tiny"))
    chain_key = next(k for k in med if "chain" in k)
    tiny, chain = med[tiny_key], med[chain_key]
    rows = [
        {"benchmark": "tiny add + backward (1-element tensors)", "unit": "µs", "median": tiny},
        {"benchmark": "1e6-float tanh chain, fwd + bwd", "unit": "ms", "median": chain},
    ]
    ratios = [
        B.ratio(
            rows[0]["benchmark"],
            "graphgrad / PyTorch",
            tiny["graphgrad"],
            tiny.get("pytorch"),
            "<= 0.5",
        ),
        B.ratio(
            rows[1]["benchmark"],
            "graphgrad / NumPy by hand",
            chain["graphgrad"],
            chain.get("numpy by hand"),
            None,
        ),
        B.ratio(
            rows[1]["benchmark"],
            "graphgrad / PyTorch",
            chain["graphgrad"],
            chain.get("pytorch"),
            None,
        ),
    ]
    return {
        "item": "tiny",
        "title": "Tiny-op dispatch (and an elementwise chain)",
        "rows": rows,
        "ratios": ratios,
        "checks": [],
        "notes": [
            "bench/bench_engine.py: 3 interleaved rounds, each the median of repeats of "
            "many calls; PyTorch at 1 thread (set by the script)."
        ],
    }


def run_scalar(quick: bool, threads: int) -> dict[str, Any]:
    """Item 3 with bench_scalar.py's pieces: the same models, turns and collector handling."""
    import bench_scalar as S

    iters = 3 if quick else 20
    xs, ys = S.moons(100, 0.1, 0)
    core = S.compiled_scalar()
    gg_cfgs = []
    if core is not None:
        gg_cfgs.append(S.Config("graphgrad compiled", core, S.graphgrad_mlp, True, xs, ys))
    pure = S.Config("graphgrad pure Python", S._scalar_py.Scalar, S.graphgrad_mlp, True, xs, ys)
    gg_cfgs.append(pure)
    notes = [
        f"micrograd's demo: MLP 2-16-16-1 on 100 two-moons points, SVM loss + L2, SGD; "
        f"{iters} timed iterations each (micrograd with gc on: every 4th turn), taking "
        "turns; graphgrad with Python's collector on, as a user runs it."
    ]
    mg: list[Any] = []
    if S.MicroMLP is not None:
        every = 4 if iters >= 8 else 1
        mg = [
            S.Config("micrograd (gc on, as is)", S.Value, S.micrograd_mlp, True, xs, ys, every),
            S.Config("micrograd (gc off)", S.Value, S.micrograd_mlp, False, xs, ys),
        ]
    else:
        notes.append("micrograd is not installed: no comparison.")
    with B.threads_limited(threads):
        S.interleaved(gg_cfgs + mg, iters)
    med = {c.label: statistics.median(c.times) * 1e3 for c in gg_cfgs + mg}
    default = gg_cfgs[0].label  # what gg.Scalar is: the compiled core where it is built
    checks = []
    if core is not None:
        checks.append(
            {
                "name": "graphgrad compiled and pure Python losses identical",
                "value": None,
                "passed": gg_cfgs[0].losses == pure.losses,
            }
        )
    ratios = []
    bench = "micrograd demo iteration"
    if mg:
        diff = max(abs(a - b) for a, b in zip(pure.losses, mg[1].losses, strict=True))
        checks.append(
            {
                "name": "same losses as micrograd, every iteration",
                "value": diff,
                "passed": diff < 1e-9,
            }
        )
        for c in mg:
            ratios.append(
                B.ratio(bench, f"{c.label} / {default}", med[c.label], med[default], ">= 10")
            )
        ratios.append(
            B.ratio(
                bench,
                f"{mg[1].label} / graphgrad pure Python",
                med[mg[1].label],
                med[pure.label],
                None,
            )
        )
    return {
        "item": "scalar",
        "title": "Scalar units vs micrograd (micrograd's demo workload)",
        "rows": [{"benchmark": bench, "unit": "ms/iter", "median": med}],
        "ratios": ratios,
        "checks": checks,
        "notes": notes,
    }


def _runner(name: str) -> Callable[[bool, int], dict[str, Any]]:
    if name == "tiny":
        return run_tiny
    if name == "scalar":
        return run_scalar
    module = {"mlp_step": "bench_mlp_step", "epoch": "bench_epoch", "memory": "bench_memory"}
    mod = __import__(module[name])
    run: Callable[..., dict[str, Any]] = mod.run
    return run


# ------------------------------------------------------------------------------ the report


def _fmt(v: Any) -> str:
    """A time, size or other value: 4 significant figures, thousands separated."""
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != 0 and not 1e-3 <= abs(v) < 1e7:
            return f"{v:.3e}"
        return f"{v:,.1f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _met(m: bool | None) -> str:
    return "–" if m is None else ("**met**" if m else "not met")


def render_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    pools = "; ".join(
        f"{p['internal_api']} {p['version']} ({p['user_api']}, {p['num_threads']} thread"
        f"{'s' if p['num_threads'] != 1 else ''}, {Path(p['filepath'] or '').name})"
        for p in m.get("threadpools") or []
    )
    lines = [
        "# Benchmark results (issue 5)",
        "",
        f"Generated by `{res['command']}` on {res['date']} in {res['seconds']:.0f} s"
        + (
            " (**quick mode**: few repeats, a subset of the epoch; not for quoting)"
            if res["quick"]
            else ""
        )
        + ". Regenerate with `make bench`. Every benchmark "
        "runs its peers side by side in one process, taking turns; times are medians; "
        "ratios are of medians from the same run.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} ({m['logical_cpus']} logical CPUs, {m['affinity_cpus']} usable) |",
        f"| platform | {m['platform']} |",
        f"| threads | {m['threads_requested']} for every peer (threadpoolctl, "
        f"torch.set_num_threads: {m.get('torch_threads')}) |",
        f"| BLAS / OpenMP pools (threadpoolctl) | {pools or 'unknown'} |",
        f"| versions | Python {m['python']}, NumPy {m['numpy']}, graphgrad {m['graphgrad']} "
        f"(scalar core: {m.get('graphgrad_scalar')}), torch {m['torch']}, jax {m['jax']}, "
        f"micrograd {m['micrograd']}, threadpoolctl {m['threadpoolctl']} |",
        "",
        "## Targets",
        "",
        "| item | benchmark | ratio | measured (medians) | target | | ratio of fastest rounds |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for item in res["items"]:
        for r in item.get("ratios", []):
            if r["target"]:
                lines.append(
                    f"| {item['item']} | {r['benchmark']} | {r['ratio']} | "
                    f"{_ratio(r['value'])} | {r['target']} | {_met(r['met'])} | "
                    f"{_ratio(r.get('value_of_mins'))} |"
                )
    for n, item in enumerate(res["items"], 1):
        lines += ["", f"## {n}. {item['title']}", ""]
        if item.get("error"):
            lines += ["**failed:**", "", "```", item["error"].rstrip(), "```"]
            continue
        rows = item.get("rows", [])
        peers: list[str] = []
        for row in rows:
            peers += [k for k in row["median"] if k not in peers]
        if rows:
            lines.append("| benchmark | unit | " + " | ".join(peers) + " |")
            lines.append("|---|---|" + "---:|" * len(peers))
            for row in rows:
                cells = [_fmt(row["median"].get(p)) for p in peers]
                lines.append(f"| {row['benchmark']} | {row['unit']} | " + " | ".join(cells) + " |")
                if "min" in row:
                    cells = [_fmt(row["min"].get(p)) for p in peers]
                    lines.append(f"| fastest round | {row['unit']} | " + " | ".join(cells) + " |")
            lines.append("")
        if item.get("ratios"):
            lines += [
                "| benchmark | ratio | value (medians) | target | | ratio of fastest rounds |",
                "|---|---|---:|---:|---|---:|",
            ]
            for r in item["ratios"]:
                lines.append(
                    f"| {r['benchmark']} | {r['ratio']} | {_ratio(r['value'])} | "
                    f"{r['target'] or '–'} | {_met(r['met'])} | {_ratio(r.get('value_of_mins'))} |"
                )
            lines.append("")
        cpu = [(row["benchmark"], row["timing"]) for row in rows if "timing" in row]
        if cpu:
            lines.append(
                "CPU seconds per wall second (threads really used): "
                + "; ".join(
                    f"{b}: " + ", ".join(f"{k} {t['cpu_over_wall']:.2f}" for k, t in tm.items())
                    for b, tm in cpu
                )
                + "."
            )
            lines.append("")
        for c in item.get("checks", []):
            val = c["value"]
            if isinstance(val, dict):
                shown = ": " + ", ".join(f"{k} {_fmt(v)}" for k, v in val.items())
            else:
                shown = "" if val is None else f": {_fmt(val)}"
            lines.append(f"- check {'passed' if c['passed'] else '**FAILED**'}: {c['name']}{shown}")
        for note in item.get("notes", []):
            lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repeats, epoch subset (CI)")
    ap.add_argument("--threads", type=int, default=1, help="threads for every peer (1)")
    ap.add_argument(
        "--out",
        type=Path,
        default=HERE,
        help="folder for RESULTS.md and results.json (default: bench/)",
    )
    ap.add_argument(
        "--only",
        default=",".join(ITEMS),
        help=f"comma-separated items to run (default: all of {','.join(ITEMS)})",
    )
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    bad = [s for s in only if s not in ITEMS]
    if bad:
        ap.error(f"unknown items {bad}; choose from {ITEMS}")
    t0 = time.perf_counter()
    items = []
    for name in only:
        print(f"== {name}", flush=True)
        t1 = time.perf_counter()
        try:
            rec = _runner(name)(args.quick, args.threads)
        except Exception:
            rec = {"item": name, "title": name, "error": traceback.format_exc()}
            print(rec["error"], file=sys.stderr)
        rec["seconds"] = time.perf_counter() - t1
        items.append(rec)
    cmd = (
        "python bench/run_all.py"
        + (" --quick" if args.quick else "")
        + (
            f" --threads {args.threads}"
            + (f" --only {args.only}" if len(only) < len(ITEMS) else "")
        )
    )
    res = {
        "command": cmd,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
        "seconds": time.perf_counter() - t0,
        "machine": B.machine_info(args.threads),
        "items": items,
    }
    B.write_json(args.out / "results.json", res)
    md = render_markdown(res)
    (args.out / "RESULTS.md").write_text(md)
    print(f"wrote {args.out / 'RESULTS.md'} and results.json in {res['seconds']:.0f} s")
    failed = [
        i["item"]
        for i in items
        if i.get("error") or not all(c["passed"] for c in i.get("checks", []))
    ]
    if failed:
        print(f"failed items or checks: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
