"""Day one for a user of the ``graphgrad`` command, through the installed entry point.

Every failure is one line on stderr and a non-zero exit, never a traceback; a diverged run
says so; config values are finite and in range; a run folder is locked; the optional
extras are checked before any work; results on stdout, diagnostics on stderr; ``--help``
documents every option; the defaults are the documented recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from graphgrad.checkpoint import CHECKPOINT_JSON, meta_digest
from graphgrad.config import (
    TOY_DEFAULTS,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    load_config,
)

GRAPHGRAD = str(Path(sys.executable).with_name("graphgrad"))
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "configs"

# A toy run small enough to train in a fraction of a second.
TOY = ["--dataset", "two_moons", "--epochs", "1", "--no-plots"]


def gg(
    *args: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``graphgrad`` command."""
    full = {k: v for k, v in os.environ.items() if k != "GRAPHGRAD_DEBUG"}
    full.update(env or {})
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [GRAPHGRAD, *args], capture_output=True, text=True, env=full, timeout=120, **kw
    )


def assert_one_line_failure(
    proc: subprocess.CompletedProcess[str], *needles: str, after_start: bool = False
) -> str:
    """Exit != 0, no traceback, and the failure is one line on stderr: the only line, or
    (``after_start``: a run that failed after it had started) the last one after the
    run's diagnostics. Returns that line."""
    err = proc.stderr
    assert proc.returncode != 0, (proc.stdout, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if after_start:
        assert lines and all("error" not in line for line in lines[:-1]), err
    else:
        assert len(lines) == 1, err
    for n in needles:
        assert n in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished toy run (two moons, 1 epoch) with its checkpoint."""
    out = tmp_path_factory.mktemp("day1") / "run"
    proc = gg("train", *TOY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def _shim(tmp: Path, body: str) -> dict[str, str]:
    """Environment whose Python imports ``sitecustomize.py`` with ``body`` first."""
    d = tmp / "shim"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(textwrap.dedent(body))
    return {"PYTHONPATH": str(d)}


def plain_install(tmp: Path, *blocked: str) -> dict[str, str]:
    """As if graphgrad had been installed without the ``train`` extra: importing any of
    ``blocked`` fails, exactly as for a package that is not there."""
    return _shim(
        tmp,
        f"""
        import importlib.abc, sys
        BLOCKED = {sorted(blocked)!r}
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, _Block())
        """,
    )


# ------------------------------------------------------------------ no traceback, ever


def _deep_toml(tmp: Path) -> list[str]:
    p = tmp / "deep.toml"
    p.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    return ["train", "--config", str(p), "--out", str(tmp / "r")]


def _config_file(text: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        p = tmp / "bad.toml"
        p.write_text(text)
        return ["train", "--config", str(p), "--out", str(tmp / "r"), *TOY]

    return make


def _not_utf8(tmp: Path) -> list[str]:
    p = tmp / "latin1.toml"
    p.write_bytes(b'name = "caf\xe9"\n')
    return ["train", "--config", str(p), "--out", str(tmp / "r")]


def _a_file(tmp: Path) -> Path:
    f = tmp / "a_file"
    f.write_text("not a folder")
    return f


BAD_INVOCATIONS: dict[str, Callable[[Path], list[str]]] = {
    "no subcommand option": lambda t: ["train", "--frobnicate"],
    "train without --out": lambda t: ["train", *TOY],
    "--config is a directory": lambda t: ["train", "--config", str(t), "--out", str(t / "r")],
    "--config missing": lambda t: ["train", "--config", str(t / "no.toml"), "--out", str(t)],
    "--out is a file": lambda t: ["train", *TOY, "--out", str(_a_file(t))],
    "--out below a file": lambda t: ["train", *TOY, "--out", str(_a_file(t) / "run")],
    "TOML nested 100k deep": _deep_toml,
    "hidden=[100000000]": lambda t: ["train", *TOY, "--hidden", "100000000", "--out", str(t)],
    "config hidden=[100000000]": _config_file("[model]\nhidden = [100000000]\n"),
    "--lr nan": lambda t: ["train", *TOY, "--lr", "nan", "--out", str(t / "r")],
    "--lr inf": lambda t: ["train", *TOY, "--lr", "inf", "--out", str(t / "r")],
    "--weight-decay inf": lambda t: ["train", *TOY, "--weight-decay", "inf", "--out", str(t)],
    "--init-std inf": lambda t: ["train", *TOY, "--init-std", "inf", "--out", str(t / "r")],
    "--epochs 0": lambda t: ["train", *TOY, "--epochs", "0", "--out", str(t / "r")],
    "--batch-size -1": lambda t: ["train", *TOY, "--batch-size", "-1", "--out", str(t / "r")],
    "--hidden 0": lambda t: ["train", *TOY, "--hidden", "0", "--out", str(t / "r")],
    "leaky_relu:nan": lambda t: ["train", *TOY, "--activation", "leaky_relu:nan", "--out", str(t)],
    "elu:1e400": lambda t: ["train", *TOY, "--activation", "elu:1e400", "--out", str(t / "r")],
    "config eps=inf": _config_file("[optim]\neps = inf\n"),
    "config weight_decay=nan": _config_file("[optim]\nweight_decay = nan\n"),
    "config weight_decay=inf": _config_file("[optim]\nweight_decay = inf\n"),
    "config init_std=inf": _config_file('[model]\ninit = "normal"\ninit_std = inf\n'),
    "config not UTF-8": _not_utf8,
    "--val-fraction leaves nothing to train on": lambda t: [
        "train",
        *TOY,
        "--val-fraction",
        "0.9999",
        "--out",
        str(t / "r"),
    ],
    "ops --format html": lambda t: ["ops", "--format", "html"],
    "demo --steps 0": lambda t: ["demo", "--steps", "0"],
    "graph unbalanced": lambda t: ["graph", "(a+"],
    "graph -o into a missing folder": lambda t: [
        "graph",
        "a*b",
        "--at",
        "a=1,b=2",
        "-o",
        str(t / "no" / "g.txt"),
    ],
    "paths --limit -1": lambda t: ["paths", "a*b", "--at", "a=1,b=2", "--limit", "-1"],
    "download --timeout inf": lambda t: [
        "download",
        "fashion-mnist",
        "--timeout",
        "inf",
        "--root",
        str(t),
    ],
    "eval --batch-size -5": lambda t: ["eval", str(t), "--batch-size", "-5"],
    "eval --batch-size 0": lambda t: ["eval", str(t), "--batch-size", "0"],
    "eval of no checkpoint": lambda t: ["eval", str(t)],
    "predict --top-k 0": lambda t: ["predict", str(t), "--top-k", "0"],
    "init-study --depth 0": lambda t: ["init-study", "--depth", "0", "--out", str(t)],
    "init-study --width 0": lambda t: ["init-study", "--width", "0", "--out", str(t)],
    "init-study --samples 0": lambda t: ["init-study", "--samples", "0", "--out", str(t)],
    "init-study --factor inf": lambda t: ["init-study", "--factor", "inf", "--out", str(t)],
    "init-study unknown activation": lambda t: [
        "init-study",
        "--activation",
        "swish",
        "--out",
        str(t),
    ],
    "init-study --out is a file": lambda t: [
        "init-study",
        "--depth",
        "2",
        "--width",
        "4",
        "--out",
        str(_a_file(t)),
    ],
}


@pytest.mark.parametrize("case", sorted(BAD_INVOCATIONS))
def test_no_traceback_ever(case: str, tmp_path: Path) -> None:
    proc = gg(*BAD_INVOCATIONS[case](tmp_path))
    assert_one_line_failure(proc)


class TestSpecificMessages:
    """Each listed case is fixed at its root, with a message that names what is wrong."""

    def test_config_directory(self, tmp_path: Path) -> None:
        proc = gg("train", "--config", str(tmp_path), "--out", str(tmp_path / "r"))
        assert_one_line_failure(proc, "is a directory")
        assert not (tmp_path / "r").exists()

    def test_deep_toml(self, tmp_path: Path) -> None:
        assert_one_line_failure(gg(*_deep_toml(tmp_path)), "nested too deeply")

    def test_model_size_bounded_up_front(self, tmp_path: Path) -> None:
        proc = gg("train", *TOY, "--hidden", "100000000", "--out", str(tmp_path / "r"))
        assert_one_line_failure(proc, "model.hidden", "100000000")
        proc = gg("train", "--hidden", "1000000", "--out", str(tmp_path / "r"))
        assert_one_line_failure(proc, "model.hidden", "784-1000000-10", "parameters", "limit")
        assert not (tmp_path / "r").exists()

    def test_out_is_a_file(self, tmp_path: Path) -> None:
        f = _a_file(tmp_path)
        assert_one_line_failure(gg("train", *TOY, "--out", str(f)), "is a file")
        assert_one_line_failure(gg("train", *TOY, "--out", str(f / "x")), "is a file")
        assert f.read_text() == "not a folder"

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
    def test_out_read_only(self, tmp_path: Path) -> None:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            proc = gg("train", *TOY, "--out", str(ro / "run"))
            assert_one_line_failure(proc, "run")
        finally:
            ro.chmod(0o755)

    def test_out_read_only_as_the_kernel_says_it(self, tmp_path: Path) -> None:
        """The same for root (who may write anywhere): the file system refuses, as a
        read-only mount would (EROFS), through a shim."""
        ro = tmp_path / "ro"
        ro.mkdir()
        env = _shim(
            tmp_path,
            f"""
            import errno, os
            RO = {str(ro)!r}
            _mkdir, _access = os.mkdir, os.access
            def mkdir(path, *a, **k):
                if str(path).startswith(RO + "/"):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
                return _mkdir(path, *a, **k)
            def access(path, mode, *a, **k):
                if str(path).startswith(RO) and mode & os.W_OK:
                    return False
                return _access(path, mode, *a, **k)
            os.mkdir, os.access = mkdir, access
            """,
        )
        proc = gg("train", *TOY, "--out", str(ro / "run"), env=env)
        assert_one_line_failure(proc, "cannot create the run directory", "Read-only file system")
        proc = gg("train", *TOY, "--out", str(ro), env=env)
        assert_one_line_failure(proc, "is not writable")

    def test_eval_batch_size(self, trained: Path) -> None:
        for bad in ("-5", "0"):
            proc = gg("eval", str(trained), "--batch-size", bad)
            assert_one_line_failure(proc, "--batch-size", bad)
        assert gg("eval", str(trained), "--batch-size", "7").returncode == 0

    def test_init_study_bad_sizes(self, tmp_path: Path) -> None:
        proc = gg("init-study", "--depth", "0", "--out", str(tmp_path / "o"))
        assert_one_line_failure(proc, "--depth")
        proc = gg("init-study", "--activation", "swish", "--out", str(tmp_path / "o"))
        assert_one_line_failure(proc, "unknown activation 'swish'")
        assert not (tmp_path / "o").exists()  # refused before any work

    @pytest.mark.parametrize("spec", ["leaky_relu:nan", "elu:inf", "leaky_relu:-5"])
    def test_init_study_activation_parameter_as_train_checks_it(
        self, tmp_path: Path, spec: str
    ) -> None:
        rule = "parameter must be a finite number in [0, 1e3], got "
        train = gg("train", *TOY, "--activation", spec, "--out", str(tmp_path / "r"))
        assert_one_line_failure(train, "model.activation", rule)
        proc = gg("init-study", "--activation", spec, "--depth", "2", "--width", "4",
                  "--out", str(tmp_path / "o"))  # fmt: skip
        line = assert_one_line_failure(proc, f"activation '{spec}'", rule)
        assert proc.returncode == 2 and proc.stdout == "" and "Warning" not in line
        assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()

    def test_unexpected_errors_get_a_hint_and_debug_shows_the_traceback(
        self, tmp_path: Path
    ) -> None:
        env = _shim(
            tmp_path,
            """
            import graphgrad._cli_core as core
            def boom(args):
                raise ZeroDivisionError("something nobody expected")
            core._ops = boom
            """,
        )
        proc = gg("ops", env=env)
        line = assert_one_line_failure(proc, "ZeroDivisionError", "something nobody expected")
        assert "--debug" in line and "GRAPHGRAD_DEBUG=1" in line
        for debug in (
            gg("--debug", "ops", env=env),
            gg("ops", env={**env, "GRAPHGRAD_DEBUG": "1"}),
        ):
            assert debug.returncode != 0 and "Traceback" in debug.stderr


# --------------------------------------------------------------------------- divergence


class TestDivergence:
    """A run whose last update blows the weights up ends with status "diverged"."""

    def test_diverging_on_the_last_step(self, tmp_path: Path) -> None:
        cfg = tmp_path / "div.toml"
        cfg.write_text(
            '[data]\ndataset = "two_moons"\ntoy_samples = 64\n'
            '[optim]\nname = "sgd"\nlr = 1000.0\nmomentum = 0.0\nweight_decay = 1000.0\n'
            "[train]\nepochs = 1\nbatch_size = 32\n"
        )
        out = tmp_path / "run"
        proc = gg("train", "--config", str(cfg), "--out", str(out), "--no-plots")
        line = assert_one_line_failure(proc, "training diverged", after_start=True)
        assert "after epoch 1" in line
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["status"] == "diverged"
        assert metrics["history"] == []
        assert not (out / "checkpoints" / "epoch-0001").exists()  # no NaN weights saved


# --------------------------------------------------------------------- config validation


def _numeric_fields() -> list[tuple[str, dataclasses.Field[object]]]:
    out = []
    for section, cls in (
        ("model", ModelConfig),
        ("data", DataConfig),
        ("optim", OptimConfig),
        ("train", TrainConfig),
    ):
        for f in dataclasses.fields(cls):
            rule = f.metadata.get("rule")
            if rule is not None and not rule.choices:
                out.append((section, f))
    return out


NUMERIC_FIELDS = _numeric_fields()


class TestEveryNumericField:
    def test_the_loop_sees_every_numeric_field(self) -> None:
        numeric = {
            f"{s}.{f.name}"
            for s, cls in (
                ("model", ModelConfig),
                ("data", DataConfig),
                ("optim", OptimConfig),
                ("train", TrainConfig),
            )
            for f in dataclasses.fields(cls)
            if str(f.type) in ("int", "float") or str(f.type).startswith("tuple[")
        }
        assert numeric == {f"{s}.{f.name}" for s, f in NUMERIC_FIELDS}

    @pytest.mark.parametrize(
        ("section", "fld"), NUMERIC_FIELDS, ids=[f"{s}.{f.name}" for s, f in NUMERIC_FIELDS]
    )
    def test_non_finite_and_out_of_range_values_are_refused(
        self, section: str, fld: dataclasses.Field[object]
    ) -> None:
        rule = fld.metadata["rule"]
        is_int = str(fld.type) == "int" or "int" in str(fld.type)
        bad: list[object] = []
        if not is_int:
            bad += [float("nan"), float("inf"), float("-inf")]
        if rule.lo is not None:
            bad.append(rule.lo - 1 if is_int else (rule.lo if rule.lo_open else rule.lo - 1e-3))
        if rule.hi is not None:
            bad.append(rule.hi + 1 if is_int else (rule.hi if rule.hi_open else rule.hi * 2))
        assert bad, f"{section}.{fld.name} has no bound"
        default = getattr(getattr(RunConfig(), section), fld.name)
        for v in bad:
            value: object = v
            if isinstance(default, tuple):
                value = [v] * (rule.length or 1)
            with pytest.raises(ConfigError, match=rf"exp\.toml: {section}\.{fld.name}"):
                RunConfig.from_dict({section: {fld.name: value}}, "exp.toml")

    @pytest.mark.parametrize("spec", ["leaky_relu:nan", "elu:inf", "elu:-1", "leaky_relu:1e9"])
    def test_activation_parameters(self, spec: str) -> None:
        with pytest.raises(ConfigError, match=r"model\.activation"):
            RunConfig.from_dict({"model": {"activation": spec}}, "exp.toml")

    def test_defaults_are_valid(self) -> None:
        RunConfig().validate()
        RunConfig.from_dict({"data": {"dataset": "spiral"}})


# ------------------------------------------------------------------------ run-folder lock


class TestRunFolderLock:
    def test_second_run_refused_then_stale_lock_recovered(self, tmp_path: Path) -> None:
        out = tmp_path / "run"
        out.mkdir()
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; from graphgrad._runlock import run_lock\n"
                f"with run_lock({str(out)!r}):\n"
                "    print('locked', flush=True); time.sleep(60)",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            proc = gg("train", *TOY, "--out", str(out))
            assert_one_line_failure(proc, "in use by another graphgrad run", f"pid {holder.pid}")
            assert not (out / "config.toml").exists()
        finally:
            holder.send_signal(signal.SIGKILL)  # dies holding the lock: its file stays behind
            holder.wait()
            assert holder.stdout is not None
            holder.stdout.close()
        assert (out / ".lock").exists()
        proc = gg("train", *TOY, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert not (out / ".lock").exists()


# ------------------------------------------------------------------ a plain install (extras)


class TestPlainInstall:
    """Without the train extra: one line naming it, before any work; or a graceful degrade."""

    def test_train_refuses_before_writing(self, tmp_path: Path) -> None:
        env = plain_install(tmp_path, "tqdm", "safetensors", "matplotlib")
        proc = gg("train", *TOY, "--out", str(tmp_path / "r"), env=env)
        assert_one_line_failure(proc, "safetensors", "pip install 'graphgrad[train]'")
        assert not (tmp_path / "r").exists()

    def test_train_without_tqdm_and_matplotlib_degrades(self, tmp_path: Path) -> None:
        env = plain_install(tmp_path, "tqdm", "matplotlib")
        out = tmp_path / "r"
        proc = gg("train", "--dataset", "two_moons", "--epochs", "1", "--out", str(out), env=env)
        assert proc.returncode == 0, proc.stderr
        assert "no figures: matplotlib is not installed" in proc.stderr
        assert "test accuracy" in proc.stdout
        assert (out / "metrics.json").is_file() and not (out / "curves.png").exists()

    def test_eval_predict_init_study(self, tmp_path: Path, trained: Path) -> None:
        env = plain_install(tmp_path, "tqdm", "safetensors", "matplotlib")
        for args in (["eval", str(trained)], ["predict", str(trained), "--test-index", "0"]):
            assert_one_line_failure(gg(*args, env=env), "safetensors", "graphgrad[train]")
        proc = gg(
            "init-study", "--depth", "2", "--width", "4", "--out", str(tmp_path / "o"), env=env
        )
        assert_one_line_failure(proc, "matplotlib", "graphgrad[train]")
        assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- filesystem


class TestFullDisk:
    def test_enospc_is_one_line_and_leaves_nothing_half_written(self, tmp_path: Path) -> None:
        env = _shim(
            tmp_path,
            """
            import errno, os
            def _full(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync = _full
            """,
        )
        out = tmp_path / "r"
        proc = gg("train", *TOY, "--out", str(out), env=env)
        assert_one_line_failure(proc, "no space left")
        left = sorted(p.name for p in out.rglob("*"))
        assert not [n for n in left if n.endswith(".tmp")], left
        assert "config.toml" not in left and "metrics.json" not in left


# ---------------------------------------------------------------------- checkpoint edits


def _edit(run: Path, tmp: Path, change: Callable[[dict[str, object]], None], reseal: bool) -> Path:
    import shutil

    copy = tmp / "copy"
    shutil.copytree(run, copy)
    j = next((copy / "checkpoints").iterdir()) / CHECKPOINT_JSON
    meta = json.loads(j.read_text())
    change(meta)
    if reseal:  # a deliberate edit that also recomputes the digest
        meta["meta_sha256"] = meta_digest(meta)
    j.write_text(json.dumps(meta))
    return copy


def _set_shape(m: dict[str, object]) -> None:
    m["shapes"]["0.weight"] = [3, 2]  # type: ignore[index]


def _set_epochs(m: dict[str, object]) -> None:
    m["epoch"] = -4


def _set_hidden(m: dict[str, object]) -> None:
    m["config"]["model"]["hidden"] = [10**9]  # type: ignore[index]


def _set_in_features(m: dict[str, object]) -> None:
    m["model"]["in_features"] = 5  # type: ignore[index]


class TestEditedCheckpoint:
    @pytest.mark.parametrize("change", [_set_shape, _set_epochs, _set_hidden, _set_in_features])
    def test_any_edit_breaks_the_digest(
        self, trained: Path, tmp_path: Path, change: Callable[[dict[str, object]], None]
    ) -> None:
        copy = _edit(trained, tmp_path, change, reseal=False)
        assert_one_line_failure(gg("eval", str(copy)), "meta_sha256", "edited")

    @pytest.mark.parametrize(
        ("change", "needle"),
        [
            (_set_shape, "shape of 0.weight"),
            (_set_epochs, "epoch must be an integer >= 0"),
            (_set_hidden, "model.hidden[0] must be an integer in [1, 10,000,000]"),
            (_set_in_features, "do not fit the model"),
        ],
    )
    def test_resealed_edits_are_validated(
        self,
        trained: Path,
        tmp_path: Path,
        change: Callable[[dict[str, object]], None],
        needle: str,
    ) -> None:
        copy = _edit(trained, tmp_path, change, reseal=True)
        assert_one_line_failure(gg("eval", str(copy)), needle)


# ---------------------------------------------------------------------- pipes and terminals


class TestPipesAndTerminals:
    def test_broken_pipe_exits_quietly(self) -> None:
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written (`| head -0`)
        try:
            proc = subprocess.run(
                [GRAPHGRAD, "paths", "--layered", "3", "6"],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        finally:
            os.close(write)
        assert proc.returncode == 141 and proc.stderr == ""

    def test_progress_bars_on_a_terminal(self, tmp_path: Path) -> None:
        import fcntl
        import pty
        import struct
        import termios
        import threading

        leader, follower = pty.openpty()
        # a terminal 80 columns wide (a fresh pty has 0, where tqdm draws nothing)
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        seen: list[bytes] = []

        def drain() -> None:  # keep the terminal's buffer from filling up
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    return
                if not chunk:
                    return
                seen.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            proc = subprocess.run(
                [GRAPHGRAD, "train", *TOY, "--out", str(tmp_path / "r")],
                stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120,
            )  # fmt: skip
        finally:
            os.close(follower)
            reader.join(timeout=10)
            os.close(leader)
        assert proc.returncode == 0
        assert b"epoch 1/1" in b"".join(seen) and b"batch" in b"".join(seen)

    def test_png_refused_on_a_terminal(self) -> None:
        import pty

        leader, follower = pty.openpty()
        try:
            proc = subprocess.run(
                [GRAPHGRAD, "graph", "(a+b)*(b+1)", "--at", "a=2,b=1", "--format", "png"],
                stdout=follower,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        finally:
            os.close(follower)
            os.close(leader)
        assert proc.returncode == 2
        assert "PNG is binary: give -o FILE" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------- log streams


class TestLogStreams:
    def test_results_on_stdout_diagnostics_on_stderr_no_bars_off_a_terminal(
        self, tmp_path: Path
    ) -> None:
        proc = gg(
            "train",
            "--dataset",
            "two_moons",
            "--epochs",
            "2",
            "--no-plots",
            "--out",
            str(tmp_path / "r"),
        )
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.splitlines()
        assert [line.split()[1] for line in out[:2]] == ["1/2", "2/2"]
        assert out[-1].startswith("test accuracy")
        assert "training " in proc.stderr and "test accuracy" not in proc.stderr
        assert "\r" not in proc.stderr and "batch/s" not in proc.stderr

    def test_trainer_log_none_is_silent(
        self, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        import numpy as np

        from graphgrad.data import two_moons
        from graphgrad.nn import MLP
        from graphgrad.optim import Adam
        from graphgrad.train import Trainer

        x, y = two_moons(64, rng=np.random.default_rng(0))
        model = MLP(2, [8], 2, rng=np.random.default_rng(0))
        caplog.set_level("DEBUG")
        Trainer(model, Adam(model.parameters()), batch_size=16, log=None).fit(
            x.astype(np.float32), y, 2, eval_data=(x.astype(np.float32), y)
        )
        assert capsys.readouterr() == ("", "") and caplog.records == []


# ----------------------------------------------------------------------------- --help


class TestHelp:
    def test_every_option_has_help_and_defaults_are_shown(self) -> None:
        from graphgrad.cli import build_parser

        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, p in sub.choices.items():
            for action in p._actions:
                if action.help is None:
                    pytest.fail(f"graphgrad {name} {action.option_strings or action.dest}: no help")
        text = " ".join(gg("train", "--help").stdout.split())  # as one line
        for needle in (
            "default: 0.001",
            "default: cosine",
            "default: 15",
            "--no-nesterov",
            "--keep-checkpoints",
            "toy data sets: 0.03",
        ):
            assert needle in text, needle
        assert "(default: 1000)" in " ".join(gg("eval", "--help").stdout.split())
        assert "docs/results" in " ".join(gg("init-study", "--help").stdout.split())

    def test_nesterov_can_be_turned_off(self, tmp_path: Path) -> None:
        cfg = tmp_path / "n.toml"
        cfg.write_text('[optim]\nname = "sgd"\nlr = 0.05\nnesterov = true\n')
        out = tmp_path / "r"
        proc = gg(
            "train",
            "--config",
            str(cfg),
            "--no-nesterov",
            "--keep-checkpoints",
            "2",
            *TOY,
            "--epochs",
            "2",
            "--out",
            str(out),
        )
        assert proc.returncode == 0, proc.stderr
        saved = load_config(out / "config.toml")
        assert saved.optim.nesterov is False and saved.train.keep_checkpoints == 2
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
            "epoch-0001",
            "epoch-0002",
        ]


# ----------------------------------------------------------------------------- defaults


class TestDefaults:
    def test_defaults_are_the_readme_recipe(self) -> None:
        recipe = load_config(EXAMPLES / "fashion_mlp_adam.toml")
        assert RunConfig().diff(recipe) == ["name: '' -> 'fashion-mlp-adam'"]

    def test_toy_defaults_learn_two_moons(self, tmp_path: Path) -> None:
        out = tmp_path / "moons"
        proc = gg("train", "--dataset", "two_moons", "--no-plots", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["test"]["accuracy"] > 0.95
        saved = metrics["config"]
        assert saved["optim"]["lr"] == TOY_DEFAULTS["optim"]["lr"]
        # an explicit value wins over the toy default
        assert (
            RunConfig.from_dict({"data": {"dataset": "xor"}, "optim": {"lr": 0.5}}).optim.lr == 0.5
        )


def test_missing_data_files_name_the_cli_option(tmp_path: Path) -> None:
    env = {"GRAPHGRAD_DATA": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = gg("train", "--dataset", "mnist", "--out", str(tmp_path / "r"), env=env)
    line = assert_one_line_failure(proc, "MNIST files not found. Looked in: ", "--data-root")
    assert ":;" not in line


def test_help_names_every_activation_and_one_default() -> None:
    from graphgrad.nn.activations import ACTIVATIONS

    for sub in ("train", "init-study"):
        text = " ".join(gg(sub, "--help").stdout.split())
        for name in ACTIVATIONS:
            assert name in text, (sub, name)
    text = " ".join(gg("eval", "--help").stdout.split())
    assert "(default: as trained)" in text and "as trained) (default: None)" not in text
