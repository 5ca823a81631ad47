"""The benchmark suite (bench/run_all.py) runs in quick mode and records every item.

Not a timing test: it checks that each item ran, produced positive medians, and that the
checks proving the peers do the same work (same losses and weights, same epoch loss, same
scalar losses) passed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ITEMS = {"mlp_step", "tiny", "scalar", "epoch", "memory"}


def test_quick_suite(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "RESULTS.md").read_text().startswith("# Benchmark results")
    assert res["quick"] is True
    assert res["machine"]["cpu"] and res["machine"]["numpy"]
    assert {i["item"] for i in res["items"]} == ITEMS
    for item in res["items"]:
        assert "error" not in item, item.get("error")
        if item["item"] == "epoch" and not item["rows"]:  # no Fashion-MNIST on this machine
            assert item["notes"][0].startswith("skipped")
            continue
        assert item["rows"], item["item"]
        for row in item["rows"]:
            assert any(k.startswith("graphgrad") for k in row["median"]), row
            assert all(v is None or v > 0 for v in row["median"].values()), row
        assert all(c["passed"] for c in item["checks"]), item["checks"]
    mlp = next(i for i in res["items"] if i["item"] == "mlp_step")
    for row in mlp["rows"]:
        assert {"graphgrad", "numpy by hand", "GEMM only"} <= set(row["median"])
        assert row["agreement"]["passed"]
        # graphgrad, PyTorch (if installed) and NumPy really agree after a few steps
        for d in row["agreement"]["max_abs_diff"].values():
            assert d["weights"] < 1e-4 and d["loss"] < 1e-4
    ratios = [r for i in res["items"] for r in i["ratios"] if r["target"]]
    assert ratios and all(r["value"] is None or r["value"] > 0 for r in ratios)


def test_step_profile_splits_a_real_step(tmp_path: Path) -> None:
    md = tmp_path / "PROFILE.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "profile_step.py"),
            "--quick",
            "--shape",
            "16,8,4",
            "--batch",
            "8",
            "--speedup",
            "1,2",
            "--md",
            str(md),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = md.read_text()
    for part in ("| GEMMs |", "| optimiser |", "| elementwise |", "| framework (the rest) |"):
        assert part in text, part
    # the clocked parts of graphgrad's step are positive and add up to less than the step
    split_part = text.split("## The compiled step")[0]  # the tables after name parts alike
    row = {
        ln.split("|")[1].strip(): ln.split("|")[2].strip()
        for ln in split_part.splitlines()
        if ln.startswith("| ") and ln.count("|") >= 3
    }
    parts = [float(row[p]) for p in ("GEMMs", "optimiser", "elementwise")]
    assert all(v > 0 for v in parts)
    assert sum(parts) < float(row["step (split run)"])
    assert "`_engine.py" in text  # the cProfile listing names the engine's pass
    # the compiled step's plan, one row per kernel call, each timed
    assert "16-8-4 b8: the compiled step, kernel call by kernel call" in text
    calls = [ln.split("|") for ln in text.splitlines() if ln.startswith("| 1 | gemm |")]
    assert calls and float(calls[0][4]) > 0 and float(calls[0][5]) > 0  # alone, in the step
    assert re.search(r"in the step: \d+ µs \(\d+ µs in the GEMMs, \d+ µs in the rest\)", text)
    # the non-GEMM part by thread count: the eager step's split, then the compiled plan's
    assert "16-8-4 b8: graphgrad's step by thread count" in text
    assert "16-8-4 b8: the compiled step by thread count" in text
    ups = re.findall(r"compiled step, non-GEMM speed-up 1 -> 2 threads: \*\*([\d.]+)x\*\*", text)
    assert len(ups) == 1 and float(ups[0]) > 0
    # and from whole plans: the plan, and a plan of its GEMMs alone, each timed at 1 and 2
    assert "16-8-4 b8: the compiled step by thread count, whole plans" in text
    rows = [ln.split("|") for ln in text.splitlines() if ln.startswith("| GEMM-only plan |")]
    assert len(rows) == 1 and float(rows[0][2]) > 0 and float(rows[0][3]) > 0
    whole = [ln.split("|") for ln in text.splitlines() if ln.startswith("| whole plan |")]
    assert len(whole) == 1 and float(whole[0][2]) > 0


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_step_profile_clocks_every_product_in_either_layout(layout: str) -> None:
    # A 16-8-4 MLP, batch 4: two forward products, two weight gradients, one input gradient.
    # In the "columns" layout that input gradient takes linear's fast path, (W.T @ G.T).T: the
    # GEMMs' clock must see it too, or it lands in the framework's part.
    import numpy as np

    import graphgrad as gg
    from graphgrad import _blas

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import profile_step as P
    finally:
        sys.path.remove(str(ROOT / "bench"))
    previous = _blas.set_layout(layout)
    try:
        x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
        y = np.array([0, 1, 2, 3])
        model = gg.nn.MLP(16, [8], 4, "relu", rng=np.random.default_rng(0))
        opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        clocks = P.Clocks()
        with clocks.installed():
            opt.zero_grad()
            gg.cross_entropy(model(x), y).backward()
        assert clocks.calls["GEMMs"] == 5, dict(clocks.calls)
        assert clocks.calls["elementwise"] >= 4  # bias adds, ReLU and its VJP, the loss
    finally:
        _blas.set_layout(previous)


def test_step_bench_runs_each_peer_in_its_own_process(tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    peers = (
        "graphgrad,graphgrad (NumPy BLAS),graphgrad fused_backward,GEMM only,GEMM + SGD,pytorch,"
        "graphgrad compiled,graphgrad compiled fused_backward,"
        "graphgrad[GRAPHGRAD_BLAS=numpy;GOMP_SPINCOUNT=1000],graphgrad[GRAPHGRAD_PAR_MIN=64]"
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_step_procs.py"),
            "--quick",
            "--threads",
            "1",
            "--shape",
            "20,16,16,4:8",
            "--rounds",
            "2",
            "--peers",
            peers,
            "--json",
            str(out),
            "--md",
            str(tmp_path / "step.md"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},  # it recalibrates
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 thread(s): BLAS:" in proc.stdout  # set_blas("auto") measured first
    # the table says when and on which CPU it ran (the CPU kind changes between sessions)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from benchlib import cpu_model
    finally:
        sys.path.remove(str(ROOT / "bench"))
    measured = (tmp_path / "step.md").read_text().splitlines()[4]
    assert measured.startswith("Measured ") and f"UTC on {cpu_model()} (" in measured
    (row,) = json.loads(out.read_text())
    assert row["agree"], row["losses"]
    assert {"graphgrad", "graphgrad fused_backward", "GEMM only"} <= set(row["ms"])
    assert all(v > 0 for v in row["ms"].values())
    assert set(row["spread"]) == set(row["ms"]) and all(v >= 1 for v in row["spread"].values())
    assert row["blas"]["graphgrad (NumPy BLAS)"] == "numpy"
    # the products of a 20-16-16-4 step at batch 8: 2*8*(2*(320 + 256 + 64) + 256 + 64) FLOPs
    assert row["gflop"] == pytest.approx(25_600 / 1e9)
    assert len(row["peak_gflops"]) == 2  # before and after the rounds
    if shutil.which("cc") or shutil.which("gcc"):
        assert all(v > 0 for v in row["peak_gflops"])
        assert "arithmetic limit" in proc.stdout
    # variants: a peer run with extra environment variables, and its ratio to its parent (the
    # same without the last variable) or, where that does not run, to the plain peer
    variant = "graphgrad[GRAPHGRAD_BLAS=numpy;GOMP_SPINCOUNT=1000]"
    assert row["blas"][variant] == "numpy" and row["ms"][variant] > 0
    labels = {r["ratio"] for r in row["ratios"]}
    assert f"{variant} / graphgrad" in labels
    assert "graphgrad[GRAPHGRAD_PAR_MIN=64] / graphgrad" in labels
    assert {"GEMM + SGD / GEMM only", "graphgrad compiled / GEMM + SGD"} <= labels
    assert row["agree"]  # a low parallel threshold changes no result
    assert any(r["ratio"] == "graphgrad fused_backward / graphgrad" for r in row["ratios"])
    assert any(
        r["ratio"] == "graphgrad compiled fused_backward / graphgrad compiled"
        for r in row["ratios"]
    )


def test_core_latency_probe() -> None:
    # bench/pingpong.c, built with the system's compiler: a positive one-way latency between
    # two CPUs this process may use, and None for a CPU it may not
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import benchlib as B
    finally:
        sys.path.remove(str(ROOT / "bench"))
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU")
    ns = B.core_latency_ns(cpus[0], cpus[1], trips=2000)
    assert ns is not None and 0 < ns < 1e6
    assert B.core_latency_ns(cpus[0], max(cpus) + 1000, trips=10) is None


def test_fma_peak_probe_and_step_flops() -> None:
    # bench/peak.c: a positive float32 FMA rate on the CPUs this process may use, and None
    # pinned to a CPU it may not; the FLOP count of a step's products, counted by hand
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import benchlib as B
    finally:
        sys.path.remove(str(ROOT / "bench"))
    # 784-256-256-10 at 128: forward and weight gradients 2*128*(784*256 + 256*256 + 256*10)
    # each, the gradients into the two hidden layers 2*128*(256*256 + 256*10)
    assert B.mlp_step_flops([784, 256, 256, 10], 128) == 2 * 68_812_800 + 17_432_576
    assert B.mlp_step_flops([5, 3], 2) == 2 * 2 * 5 * 3 * 2  # one layer: no input gradient
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    cpus = sorted(os.sched_getaffinity(0))
    one = B.fma_peak_gflops(1, cpus[:1], iters=100_000, repeats=1)
    assert one is not None and 0.1 < one < 1e5
    assert B.fma_peak_gflops(1, [max(cpus) + 1000], iters=1000, repeats=1) is None


def test_scaling_bench_quick(tmp_path: Path) -> None:
    md, png = tmp_path / "SCALING.md", tmp_path / "scaling.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_scaling.py"),
            "--quick",
            "--md",
            str(md),
            "--png",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 thread(s): BLAS:" in proc.stdout
    text = md.read_text()
    assert re.search(r"Measured \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+; graphgrad's BLAS: \w+", text)
    for sweep in ("### batch", "### width", "### depth"):
        assert sweep in text
    rows = [ln.split("|") for ln in text.splitlines() if ln.startswith("| ") and "ms" not in ln]
    assert len(rows) == 6  # two points per sweep
    for r in rows:
        assert float(r[3]) > 0  # graphgrad's time; PyTorch's is "–" where torch is missing
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert png.stat().st_size > 0


def test_variant_names_and_their_parents() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_step_procs as P
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert P.split_variant("graphgrad") == ("graphgrad", {})
    assert P.split_variant("graphgrad[A=1;B=x y]") == ("graphgrad", {"A": "1", "B": "x y"})
    running = {"graphgrad", "graphgrad[A=1]"}
    assert P.parent("graphgrad[A=1;B=2]", running) == "graphgrad[A=1]"
    assert P.parent("graphgrad[B=2;A=1]", running) == "graphgrad"  # no graphgrad[B=2]
    assert P.parent("graphgrad[A=1]", running) == "graphgrad"
    with pytest.raises(SystemExit, match="bad variant"):
        P.split_variant("graphgrad[A]")


def test_a_busy_hosts_run_says_so() -> None:
    # a peer whose rounds spread by more than NOISY_SPREAD marks the table as a busy host's
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_step_procs as P
    finally:
        sys.path.remove(str(ROOT / "bench"))
    quiet = {"shape": "784,256,256,10:128", "threads": 1, "spread": {"a": 1.05, "b": 1.2}}
    busy = {"shape": "784,256,256,10:128", "threads": 2, "spread": {"a": 1.3, "b": 2.67}}
    assert P.noisy([quiet]) == []
    assert P.noisy([quiet, busy]) == ["784-256-256-10 b128 at 2: a 1.30, b 2.67"]


def test_wake_bench_quick(tmp_path: Path) -> None:
    md = tmp_path / "WAKE.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_wake.py"), "--quick", "--md", str(md)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "compiled kernels are not in use" in proc.stderr + proc.stdout:
        pytest.skip("kernels not built")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = md.read_text().splitlines()
    rows = [ln.split("|")[1:-1] for ln in lines if ln[:3].strip("| ").isdigit()]
    assert [int(r[0]) for r in rows] == [16384, 65536, 262144]
    assert all(float(c) > 0 for r in rows for c in r[1:])
    text = md.read_text()
    assert "First size at which 2 threads beat 1" in text
    # the bandwidth probe: two pinned worker processes, or why not
    if len(os.sched_getaffinity(0)) >= 2:
        m = re.search(r"each on half the floats: ([\d.]+) and ([\d.]+) µs", text)
        assert m and float(m[1]) > 0 and float(m[2]) > 0, text
        assert re.search(r"Speed-up of the halves: \*\*\d+\.\d\dx\*\*", text), text
    else:
        assert "one CPU available" in text


def test_gemm_xla_bench_quick() -> None:
    # The five products, NumPy against XLA, each with a positive time and a ratio; without
    # jax it says so and compares nothing.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gemm_xla.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    try:
        import jax  # noqa: F401
    except ImportError:
        assert "jax is not installed" in proc.stdout
        return
    rows = [ln for ln in proc.stdout.splitlines() if ": " in ln and ln[:1].isalpha()]
    assert len(rows) == 5 and rows[0].startswith("forward, layer 1: x @ W1.T")
    assert all(float(v) > 0 for r in rows for v in r.split()[-3:])


def test_onednn_matmul_bench_quick() -> None:
    # the forward products three ways and the compiled steps with oneDNN's matmul primitive
    # on and off, each with a positive time and ratio; without oneDNN 3 it says so
    from graphgrad import _blas

    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_onednn_matmul.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = _blas.find_onednn()
    if "error" in found or not found["matmul"].startswith("x @"):
        assert proc.returncode == 2 and "needs oneDNN 3" in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for r in proc.stdout.splitlines() if r.startswith("| ") and "---" not in r]
    products = [r for r in rows if " step, layer " in r]
    steps = [r for r in rows if re.match(r"\| (784|3072)-", r)]
    assert len(products) == 4 and len(steps) == 2, proc.stdout
    for r in products + steps:
        cells = [c.strip() for c in r.strip("|").split("|")][1:]
        assert all(float(c.split()[0]) > 0 for c in cells), r


def test_eager_bench_quick() -> None:
    # the eager step, the same kernel calls without a graph (checked to give the eager step's
    # weights first) and the compiled step, on three shapes, each with a positive time and ratio
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_eager.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    from graphgrad import _fused

    if not _fused.COMPILED:
        assert proc.returncode == 2 and "compiled kernels" in proc.stderr
        return
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for r in proc.stdout.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "784-256-256-10 b128",
        "8-8-8-2 b4",
        "64x16-10 b32 (16 layers)",
    ], proc.stdout
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")][1:]
        assert all(float(c.split()[0]) > 0 for c in cells), r


def test_the_device_check_script_rehearses_every_part(tmp_path: Path) -> None:
    """scripts/device_check.sh, the one command for a lent GPU machine with many cores, in its
    --quick rehearsal with graphgrad as installed: the info, the step benchmark (each peer in
    its own process), the non-GEMM speed-ups and the GPU check on array-api-strict all run,
    within the budget, and write their reports."""
    out = tmp_path / "device"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device_check.sh"), "--quick", "--no-build", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable, "XDG_CACHE_HOME": str(tmp_path / "c")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "graphgrad" in (out / "info.txt").read_text()
    assert (out / "gpu.json").exists() and (out / "GPU.md").exists()
    rows = json.loads((out / "step_threads.json").read_text())
    assert [r["threads"] for r in rows] == [1, 2]
    for row in rows:
        assert row["agree"], row["losses"]
        assert {"graphgrad", "graphgrad compiled"} <= set(row["ms"])
    # at 2 threads: where the host put the two CPUs, measured before each round
    assert rows[0]["latency_ns"] == [] and len(rows[1]["latency_ns"]) == 2
    assert all(v is None or v > 0 for v in rows[1]["latency_ns"])
    assert "Where the host put the CPUs" in (out / "STEP_THREADS.md").read_text()
    speedups = (out / "SPEEDUP.md").read_text()
    assert "64-32-32-4 b16: the compiled step by thread count" in speedups
    assert "compiled step, non-GEMM speed-up 1 -> 2 threads" in speedups
    assert re.search(r"== done in \d+ s \(budget 480 s\)", proc.stdout)
    assert "cut short" not in proc.stdout
