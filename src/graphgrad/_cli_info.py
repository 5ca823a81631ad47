"""Subcommand ``info``: versions, the BLAS in use and why, threads, compiled extensions."""

from __future__ import annotations

import argparse
import json
import platform
from importlib import metadata
from typing import Any


def register(sub: Any) -> None:
    """Add ``info`` to the ``graphgrad`` command."""
    p = sub.add_parser(
        "info",
        help="print versions, the BLAS in use (and why), thread count and compiled extensions",
        description="Print what this installation runs with: Python, NumPy and graphgrad "
        "versions, the library doing the matrix products (NumPy's BLAS, MKL or oneDNN) and why it "
        "was chosen, the thread count (gg.set_num_threads, OMP_NUM_THREADS) and which compiled "
        "extensions are in use, from which array size the compiled kernels split their "
        "work between threads (measured at the thread count, or GRAPHGRAD_PAR_MIN), whether "
        "linear's products are computed row-major (x @ W.T) or column-major ((W @ x.T).T; "
        "measured, or GRAPHGRAD_LAYOUT), "
        "whether glibc's malloc keeps freed memory for the next step (GRAPHGRAD_MALLOC), and "
        "which instruction set the kernels' loops run (auto, baseline, AVX2 or AVX-512; "
        "GRAPHGRAD_KERNEL_ISA).",
        epilog="examples:\n  graphgrad info\n  GRAPHGRAD_BLAS=numpy graphgrad info --json\n"
        "  OMP_NUM_THREADS=1 graphgrad info\n  graphgrad info --recalibrate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="time the installed BLAS libraries, the layout of linear's products and the "
        "kernels' parallel threshold again (on a quiet machine) and replace the cached "
        "choices for this configuration",
    )
    p.set_defaults(handler=_run)


def collect() -> dict[str, Any]:
    """Everything ``graphgrad info`` prints, as a dict."""
    import numpy as np

    from . import _backend, _blas, _fused, _memory, compiled, scalar

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("graphgrad", "mkl", "onednn-cpu-gomp", "threadpoolctl", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    kernels = _fused.KERNELS
    return {
        "versions": versions,
        "platform": platform.platform(),
        "cpu": _blas.cpu_vendor() or "unknown",
        "cpu_model": _blas.cpu_model(),
        "blas": _blas.blas_info(),
        "threads": _blas.get_num_threads(),
        "kernels_par_min": _blas.par_min_info(),
        "malloc": _memory.malloc_info(),
        "layout": _blas.layout_info(),
        "devices": _backend.devices_info(),
        "compiled": {
            "graphgrad._kernels": _fused.COMPILED,
            "graphgrad._scalar_core": bool(scalar.COMPILED),
            "openmp": bool(kernels is not None and getattr(kernels, "OPENMP", False)),
        },
        "kernel_isa": _fused.kernel_isa(),
        "compiled_steps": compiled.plans_info(),
    }


def _run(args: argparse.Namespace) -> int:
    if args.recalibrate:
        from . import _blas

        if not _blas.installed():
            print(f"recalibrate: nothing to choose between ({_blas.none_installed_reason()})")
        else:
            rec = _blas.calibrate(refresh=True)
            if _blas.blas_info()["requested"] == "auto":
                _blas.set_blas("auto")
            if not args.json:
                print(
                    f"recalibrated at {rec['key']['threads']} thread(s): "
                    f"{_blas.figures(rec['seconds'])} -> {rec['choice']} for "
                    f"set_blas('auto') ({rec['cache']})"
                    + (
                        f"; {_blas.LABELS[_blas.decide(rec['seconds'])]} measured faster, "
                        "chosen only if a measurement at least "
                        f"{_blas.CONFIRM_AFTER_S / 60:.0f} minutes later agrees"
                        if rec.get("pending")
                        else ""
                    )
                )
        _blas.recalibrate_layout()
        lay = _blas.layout_info()
        if not args.json and "calibration" in lay:
            print(f"recalibrated the layout of linear's products: {lay['reason']}")
        _blas.recalibrate_par_min()
        p = _blas.par_min_info()
        if not args.json and "calibration" in p:
            n = p["par_min"]
            print(
                f"recalibrated the kernels' parallel threshold at "
                f"{p['calibration']['threads']} thread(s): "
                + ("never split" if n is None else f"split from {n} elements")
                + f" ({p['calibration']['cache']})"
            )
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    b = info["blas"]
    lines = [
        "versions:  " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"platform:  {info['platform']} (CPU: {info['cpu']}, {info['cpu_model']})",
        f"BLAS:      {b['blas']} (requested {b['requested']!r}: {b['reason']})",
    ]
    if b.get("library"):
        lines.append(f"           {b['library']}")
    if b.get("mkl_threading"):
        lines.append(f"           MKL's threading layer: {b['mkl_threading']}")
    if b.get("onednn_threading"):
        lines.append(f"           oneDNN's threads: {b['onednn_threading']}")
        lines.append(f"           oneDNN's matmul primitive: {b['onednn_matmul']}")
    if b.get("calibration"):
        lines.append(f"           calibration cached in {b['calibration']['cache']}")
    lines.append(
        f"threads:   {info['threads']} (gg.set_num_threads; default OMP_NUM_THREADS, else "
        "the CPUs available)"
    )
    if b["blas_threads"] < info["threads"]:
        lines.append(
            f"           the BLAS gets {b['blas_threads']}: this process may run on that many "
            "CPUs (more BLAS threads than CPUs spin waiting for each other)"
        )
    lines.append(f"pool:      {b['pool']}: {b['pool_reason']}")
    lines.append(f"           OpenMP's idle threads: {b['omp_wait']}")
    p = info["kernels_par_min"]
    n = p["par_min"]
    if n is None or not n or info["threads"] < 2 or not info["compiled"]["openmp"]:
        where = "serial at every size"
    else:
        where = f"split between threads from {n} elements"
    lines.append(f"parallel:  kernels {where} ({p['reason']})")
    if p.get("calibration"):
        lines.append(f"           calibration cached in {p['calibration']['cache']}")
    lay = info["layout"]
    lines.append(f"layout:    linear's products {lay['layout']} ({lay['reason']})")
    if lay.get("calibration"):
        lines.append(f"           calibration cached in {lay['calibration']['cache']}")
    m = info["malloc"]
    lines.append(
        "memory:    glibc malloc keeps freed memory for the next step ("
        + m["reason"]
        + "; GRAPHGRAD_MALLOC=system leaves it alone)"
        if m["tuned"]
        else f"memory:    malloc left as it is ({m['reason']})"
    )
    comp = info["compiled"]
    lines.append(
        "compiled:  "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in comp.items())
        + ("" if comp["graphgrad._kernels"] else " (pure Python/NumPy twins in use)")
    )
    isa = info["kernel_isa"]
    if isa:
        what = isa["isa"]
        if "loops" in isa:  # auto: say which loop runs which
            by: dict[str, list[str]] = {}
            for loop, name in isa["loops"].items():
                by.setdefault(name, []).append(loop)
            what = "auto: " + "; ".join(f"{', '.join(v)} in {k}" for k, v in by.items())
        lines.append(
            f"vectors:   the kernels' loops run {what} ({isa['reason']}; this CPU runs "
            + ", ".join(isa["available"])
            + "; GRAPHGRAD_KERNEL_ISA chooses)"
        )
    steps = info["compiled_steps"]
    lines.append(
        "steps:     Trainer, DistributedTrainer, graphgrad train and the playground compile "
        f"MLP steps (gg.compile_step; activations: {', '.join(steps['activations'])})"
        if steps["available"]
        else f"steps:     eager only ({steps['reason']})"
    )
    lines.append("devices:   " + "; ".join(f"{k}: {v}" for k, v in info["devices"].items()))
    print("\n".join(lines))
    return 0
