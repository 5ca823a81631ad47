"""``graphgrad train`` refuses what would lose or mislabel a run: a folder that already holds
files, options that contradict each other, a resume that would shorten a run; ``--resume``
continues a run interrupted before its first checkpoint; an edited checkpoint that claims
format version 1 is refused. Every refusal is one line, before anything is written."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import textwrap
from pathlib import Path

import pytest

from graphgrad.cli import main
from test_cli_day_one import assert_one_line_failure, gg
from test_train import write_fake_fashion_mnist

FAST = ["--no-progress", "--no-plots"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("guards") / "data")


def small(root: Path, *more: str) -> list[str]:
    """A fake Fashion-MNIST run small enough to train in a fraction of a second."""
    return ["--data-root", str(root), "--hidden", "8", "--batch-size", "50", *FAST, *more]


@pytest.fixture(scope="module")
def finished(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed two-epoch run."""
    out = tmp_path_factory.mktemp("guards-run") / "run"
    assert main(["train", *small(data_root, "--epochs", "2"), "--out", str(out)]) == 0
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines and "Traceback" not in err, err
    assert lines[-1].startswith("error: "), err
    return lines[-1]


# ------------------------------------------------------- a folder that holds files (7)


def test_results_without_checkpoints_are_not_overwritten(
    finished: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "checkpoints")
    before = snapshot(out)
    capsys.readouterr()
    assert main(["train", *small(data_root, "--epochs", "1"), "--out", str(out)]) == 1
    line = error_line(capsys)
    assert "already holds a run's files" in line and "metrics.json" in line, line
    assert "another --out" in line
    assert snapshot(out) == before


def test_a_folder_of_other_files_is_refused_and_left_alone(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["train", *small(data_root, "--epochs", "1"), "--out", str(out)]) == 1
    line = error_line(capsys)
    assert "is not empty (notes.txt)" in line and "new or empty folder for --out" in line
    assert snapshot(out) == {"notes.txt": b"mine"}
    # --resume there: nothing to resume, nothing written either
    assert main(["train", "--out", str(out), "--resume", *FAST]) == 1
    assert "nothing to resume" in error_line(capsys)
    assert snapshot(out) == {"notes.txt": b"mine"}


def test_a_folder_with_only_dot_files_takes_a_run(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    out.mkdir()
    (out / ".gitkeep").write_text("")
    assert main(["train", *small(data_root, "--epochs", "1"), "--out", str(out)]) == 0
    assert (out / "metrics.json").is_file() and (out / ".gitkeep").is_file()


# ------------------------------------------- --resume after Ctrl-C in the first epoch (8)


def _interrupt_in_first_epoch(tmp: Path) -> dict[str, str]:
    """An environment where the installed command gets Ctrl-C in its first training epoch."""
    shim = tmp / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import graphgrad.train as T
            def _ctrl_c(self, loader, epochs):
                raise KeyboardInterrupt
            T.Trainer._train_epoch = _ctrl_c
            """
        )
    )
    return {"PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}


def test_the_suggested_resume_command_works(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ki 2"  # a space: the suggested command quotes it
    args = ["train", *small(data_root, "--epochs", "2"), "--out", str(out)]
    proc = gg(*args, env=_interrupt_in_first_epoch(tmp_path))
    assert proc.returncode == 130, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "no checkpoint was written yet" in last and "from epoch 0" in last, last
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "run.json"]
    # the same folder without --resume: refused, pointing at --resume
    assert_one_line_failure(gg(*args), "stopped before its first checkpoint", "--resume")
    command = shlex.split(last.split("Continue with: ", 1)[1].split(" (", 1)[0])
    assert command[:2] == ["graphgrad", "train"] and "--resume" in command
    proc = gg(*command[1:], *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "stopped before its first checkpoint" in proc.stderr and "epoch 0" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and [h["epoch"] for h in metrics["history"]] == [1, 2]
    # the recorded configuration is what was trained
    assert metrics["config"]["model"]["hidden"] == [8]


def test_interrupted_before_anything_was_written(tmp_path: Path) -> None:
    """Ctrl-C while the data load: no folder, and no --resume suggested."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import graphgrad.train as T\n"
        "def _ctrl_c(*a, **k):\n    raise KeyboardInterrupt\n"
        "T.load_data = _ctrl_c\n"
    )
    out = tmp_path / "r"
    env = {"PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}
    proc = gg("train", "--dataset", "two_moons", "--out", str(out), *FAST, env=env)
    assert proc.returncode == 130
    assert "nothing was written" in proc.stderr and "--resume" not in proc.stderr
    assert not out.exists()


# ------------------------------------------------ a resume that would shorten the run (10)


def test_resume_with_fewer_epochs_than_done_changes_nothing(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = snapshot(out)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "1", *FAST]) == 1
    line = error_line(capsys)
    assert "has trained 2 epochs already" in line and "must be at least 2" in line, line
    assert snapshot(out) == before


# ------------------------------------------------------------ contradicting options (9, 15)


CONTRADICTIONS = {
    "nesterov without momentum": (
        ["--optimizer", "sgd", "--nesterov", "--momentum", "0"],
        ["optim.nesterov", "optim.momentum"],
    ),
    "--hidden with --model linear": (
        ["--model", "linear", "--hidden", "8"],
        ["--hidden 8 contradicts --model linear"],
    ),
    "SGD options with Adam": (
        ["--optimizer", "adam", "--nesterov", "--momentum", "0"],
        ["--momentum and --nesterov", "--optimizer adam"],
    ),
    "--momentum with the default Adam": (["--momentum", "0.5"], ["--momentum", "'adam'"]),
    "an MLP without hidden layers": (["--hidden", ""], ["model.hidden is empty", "linear"]),
}


@pytest.mark.parametrize("case", sorted(CONTRADICTIONS))
def test_contradicting_options_are_refused_before_anything_is_written(
    case: str, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options, needles = CONTRADICTIONS[case]
    out = tmp_path / "r"
    args = ["--data-root", str(data_root), "--epochs", "1", *FAST, *options]
    assert main(["train", *args, "--out", str(out)]) == 2
    line = error_line(capsys)
    for needle in needles:
        assert needle in line, line
    assert not out.exists()


def test_nesterov_without_momentum_in_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text('[optim]\nname = "sgd"\nnesterov = true\nmomentum = 0\n')
    out = tmp_path / "r"
    assert main(["train", "--config", str(cfg), "--dataset", "two_moons", "--out", str(out),
                 *FAST]) == 2  # fmt: skip
    line = error_line(capsys)
    assert "n.toml" in line and "optim.nesterov" in line and "optim.momentum" in line, line
    assert not out.exists()


def test_the_other_contradiction_in_a_config_file(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "lin.toml"
    cfg.write_text('[model]\nkind = "linear"\n')
    out = tmp_path / "r"
    assert main(["train", "--config", str(cfg), *small(data_root), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert "--hidden 8 contradicts model.kind = 'linear'" in line and "lin.toml" in line, line


def test_a_linear_run_records_no_hidden_layers(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "lin"
    args = ["--data-root", str(data_root), "--epochs", "1", "--model", "linear", *FAST]
    assert main(["train", *args, "--out", str(out)]) == 0
    assert "hidden = []" in (out / "config.toml").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["sizes"] == [784, 10] and metrics["config"]["model"]["hidden"] == []


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("--train-subset", "data.train_subset = 201 is more than the 200 training samples"),
        ("--test-subset", "data.test_subset = 201 is more than the 50 test samples"),
    ],
)
def test_a_subset_larger_than_the_data_is_refused(
    option: str,
    needle: str,
    data_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "r"
    assert main(["train", *small(data_root, "--epochs", "1", option, "201"), "--out",
                 str(out)]) == 1  # fmt: skip
    line = error_line(capsys)
    assert needle in line and "0 for all" in line, line
    assert not out.exists()


# ---------------------------------------------------------- --resume: help and error (19)


def test_resume_help_and_error_name_the_same_options(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    helptext = " ".join(gg("train", "--help").stdout.split())
    assert "only --epochs, not below the epochs done, and --device may change" in helptext
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--lr", "0.5",
                 *FAST]) == 1  # fmt: skip
    line = error_line(capsys)
    assert "only train.epochs and train.device may change" in line and "optim.lr" in line
    # what the help allows: more epochs, on the device given
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--device", "cpu",
                 *FAST]) == 0  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3


# -------------------------------------------------- a checkpoint edited to "version": 1 (3)


def test_an_edit_hidden_behind_version_1_is_refused(finished: Path, tmp_path: Path) -> None:
    """The reviewer's sed: version 2 -> 1 and relu -> tanh in checkpoint.json."""
    copy = tmp_path / "vb"
    shutil.copytree(finished, copy)
    j = copy / "checkpoints" / "epoch-0002" / "checkpoint.json"
    text = j.read_text()
    assert '"version": 2,' in text and '"activation": "relu",' in text
    j.write_text(
        text.replace('"version": 2,', '"version": 1,').replace(
            '"activation": "relu",', '"activation": "tanh",'
        )
    )
    line = assert_one_line_failure(gg("eval", str(copy)), "checkpoint.json", "version 1")
    assert "meta_sha256" in line and "edited" in line
