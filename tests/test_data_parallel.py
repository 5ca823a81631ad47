"""The equivalence harness: the gradient of the mean loss four ways, (a)-(d), agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphgrad as gg
from graphgrad.experiments import data_parallel as dp

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("loss", [gg.cross_entropy, gg.mse_loss])
def test_sample_by_sample_batched_and_per_sample_mean_agree(
    loss: object, rng: np.random.Generator
) -> None:
    model = gg.nn.MLP(6, [9, 5], 4, "tanh", rng=rng, dtype=np.float64)
    x = rng.normal(size=(13, 6))
    y = rng.integers(0, 4, 13) if loss is gg.cross_entropy else rng.normal(size=(13, 4))
    b = dp.batched(model, loss, x, y)
    a = dp.sample_by_sample(model, loss, x, y)
    c = dp.per_sample_mean(model, loss, x, y)
    assert set(a) == set(b) == set(c) == {"0.weight", "0.bias", "2.weight", "2.bias",
                                          "4.weight", "4.bias"}  # fmt: skip
    assert dp.max_rel_diff(a, b) < 1e-13 and dp.max_rel_diff(c, b) < 1e-13
    assert max(float(np.abs(g).max()) for g in b.values()) > 1e-3  # not all zeros
    # The comparison can fail: a gradient from another batch differs.
    other = dp.batched(model, loss, x[:12], y[:12])
    assert dp.max_rel_diff(other, b) > 1e-3


def test_the_example_shows_all_four_agree_across_two_mpi_ranks() -> None:
    if not Path(sys.executable).with_name("mpiexec").exists():
        pytest.skip("needs the distributed extra: pip install 'graphgrad[distributed]'")
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "data_parallel.py"), "--samples", "24",
         "--hidden", "16,8", "--ranks", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| (d) 2 MPI ranks, 1 Allreduce |" in r.stdout
    assert "all agree" in r.stdout and "skipped" not in r.stdout


def test_the_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    """Not a timing test: the harness agrees and every peer produced a throughput."""
    mpiexec = Path(sys.executable).with_name("mpiexec")
    if not mpiexec.exists():
        pytest.skip("needs the distributed extra: pip install 'graphgrad[distributed]'")
    bench = ROOT / "bench" / "bench_distributed.py"
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, str(bench), "--quick", "--no-torch", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["harness"]["agree"] and res["harness"]["speedup_b_over_a"] > 0
    row = res["scaling"]["frameworks"]["graphgrad"]
    assert row["samples_per_second_1"] > 0 and row["samples_per_second_2"] > 0
    assert row["allreduce_ms_per_step"] > 0 and row["malloc_tuned"] and row["buckets"] is None
    rows = res["scaling"]["frameworks"]
    # the last bucket: the first weight, the biases, the 6 parameters' counts of ranks with a
    # gradient, the 3 statistics
    assert rows["graphgrad-overlap"]["buckets"] == [256 * 256 + 10 * 256,
                                                    784 * 256 + 256 + 256 + 10 + 6 + 3]  # fmt: skip
    assert not rows["graphgrad-system-malloc"]["malloc_tuned"]
    assert res["scaling"]["allreduce_alone_ms"] > 0
    r = subprocess.run([sys.executable, str(bench), "--phases", "--steps", "3"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| phase | 1 process | rank 0 | rank 1 |" in r.stdout
    assert all(f"| {name} | " in r.stdout for name in ("batch", "backward", "allreduce"))
    pytest.importorskip("torch")
    torch_out = tmp_path / "t.json"
    r = subprocess.run(
        [str(mpiexec), "-n", "2", sys.executable, str(bench), "--worker", "torch", "--steps", "3",
         "--out", str(torch_out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(torch_out.read_text())["samples_per_second"] > 0
