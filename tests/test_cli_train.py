"""``graphgrad train / eval / predict / init-study`` end to end on fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from graphgrad import _fused
from graphgrad.cli import main
from test_train import write_fake_fashion_mnist

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "configs"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    root = write_fake_fashion_mnist(base / "data")
    out = base / "run"
    rc = main(
        ["train", "--dataset", "fashion-mnist", "--data-root", str(root), "--model", "mlp",
         "--hidden", "32", "--activation", "relu", "--epochs", "2", "--lr", "0.01",
         "--batch-size", "32", "--out", str(out), "--no-progress", "--seed", "3"]
    )  # fmt: skip
    assert rc == 0
    return out


def test_train_writes_the_run(run_dir: Path) -> None:
    for name in ("config.toml", "run.json", "metrics.json", "curves.png", "confusion_matrix.png",
                 "first_layer.png"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "epoch-0002" / "model.safetensors").is_file()
    text = (run_dir / "config.toml").read_text()
    assert "hidden = [32]" in text and "seed = 3" in text
    # a ReLU MLP with Adam: each step one call of a compiled plan (where the kernels are built)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step_engine"] == ("compiled" if _fused.COMPILED else "eager")


def test_eval_reproduces_the_test_accuracy(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert out["accuracy"] == metrics["test"]["accuracy"] and out["samples"] == 50
    assert set(out["per_class_accuracy"]) >= {"T-shirt/top", "Ankle boot"}
    assert main(["eval", str(run_dir / "checkpoints" / "epoch-0002")]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_predict_files_and_test_images(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = np.zeros((2, 28, 28), np.uint8)
    images[1, 2:6, 2:6] = 250  # the fixture's class 0 pattern
    np.save(tmp_path / "two.npy", images)
    np.save(tmp_path / "one.npy", np.zeros(784, np.float32))
    capsys.readouterr()
    args = ["predict", str(run_dir), str(tmp_path / "two.npy"), str(tmp_path / "one.npy")]
    assert main([*args, "--test-index", "0", "3", "--top-k", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in res][:3] == [
        f"{tmp_path / 'two.npy'}[0]",
        f"{tmp_path / 'two.npy'}[1]",
        str(tmp_path / "one.npy"),
    ]
    assert res[3]["input"].startswith("test[0] (true: ")
    for r in res:
        assert len(r["top"]) == 2
        assert r["top"][0]["probability"] >= r["top"][1]["probability"]


def test_predict_png(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.image as mpimg

    img = np.zeros((28, 28, 3), np.float32)
    mpimg.imsave(tmp_path / "x.png", img)
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(tmp_path / "x.png")]) == 0
    assert "x.png:" in capsys.readouterr().out


def test_predict_errors_name_the_file(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((5, 30), np.float32))
    assert main(["predict", str(run_dir), str(tmp_path / "bad.npy")]) == 1
    assert "bad.npy: shape (5, 30) does not hold (28, 28) images" in capsys.readouterr().err
    assert main(["predict", str(run_dir)]) == 2
    assert "nothing to predict" in capsys.readouterr().err
    assert main(["predict", str(run_dir), "--test-index", "999"]) == 1
    assert "outside 0..49" in capsys.readouterr().err


def test_eval_of_something_that_is_no_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(tmp_path)]) == 1
    assert "no checkpoint here" in capsys.readouterr().err


def test_bad_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "exp.toml"
    cfg.write_text("[optim]\nlr = 'fast'\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "exp.toml: optim.lr must be a number" in capsys.readouterr().err


def test_missing_data_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--data-root", str(tmp_path / "empty"), "--epochs", "1", "--out",
               str(tmp_path / "r"), "--no-progress"])  # fmt: skip
    assert rc == 1
    assert "Fashion-MNIST files not found" in capsys.readouterr().err


def test_config_file_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "spiral"
    cfg = str(EXAMPLES / "spiral_quick.toml")
    assert main(["train", "--config", cfg, "--epochs", "2", "--out", str(out),
                 "--no-progress", "--no-plots"]) == 0  # fmt: skip
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3",
                 "--no-progress", "--no-plots"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["config"]["name"] == "spiral-quick"


def test_init_study_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["init-study", "--depth", "8", "--width", "16", "--samples", "32", "--out",
               str(tmp_path)])  # fmt: skip
    assert rc == 0
    assert (tmp_path / "init_study_relu.png").is_file()
    md = (tmp_path / "init_study_relu.md").read_text()
    assert "| right:" in md and "preserved" in md
    assert "too small" in capsys.readouterr().out
