"""bench/train_vs_torch.py runs end to end on a small subset (needs torch and the real data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import require_real_fashion_mnist

ROOT = Path(__file__).resolve().parent.parent


def test_bench_small(tmp_path: Path) -> None:
    require_real_fashion_mnist()
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_vs_torch.py"), "--epochs", "1",
         "--train-subset", "2000", "--hidden", "32", "--threads", "1", "--out", str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    result = json.loads((tmp_path / "train_vs_torch.json").read_text())
    assert result["logits_max_abs_diff"] < 1e-5
    assert result["accuracy_gap_points"] < 3.0  # same start, batches and steps
    assert (tmp_path / "train_vs_torch.md").is_file()
