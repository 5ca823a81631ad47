"""The scalar benchmark runs, and its graphgrad and micrograd models compute the same losses.

Not a timing test: it checks that the benchmark compares like with like (same weights, same
graph, same losses; graphgrad's compiled and pure-Python implementations exactly) and that the
million-node chain machinery works, on a tiny setting.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from graphgrad import scalar

pytest.importorskip("micrograd")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench_scalar


def test_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_scalar.main(["--iters", "1", "--chain", "3000"]) == 0
    out = capsys.readouterr().out
    assert f"graphgrad.scalar runs: {scalar.IMPLEMENTATION}" in out
    diff = re.search(r"largest \|graphgrad - micrograd\| over \d+ iterations = (\S+)", out)
    assert diff is not None and float(diff.group(1)) < 1e-9
    assert re.search(r"graphgrad pure Python +vs micrograd gc on : +[\d.]+x", out)
    assert re.search(r"graphgrad pure Python +vs micrograd gc off: +[\d.]+x", out)
    assert "chain of 3,000 scalar nodes: graphgrad pure Python forward" in out
    assert "micrograd, chain of 2,000: RecursionError" in out
    if bench_scalar.compiled_scalar() is not None:
        assert "graphgrad compiled and pure Python losses identical: True" in out
        assert re.search(r"graphgrad compiled +vs micrograd gc off: +[\d.]+x", out)
        assert "chain of 3,000 scalar nodes: graphgrad compiled forward" in out
