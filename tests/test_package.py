"""What a user meets first: the subpackages import with the package, one version everywhere,
the license the metadata names."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import graphgrad as gg

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("data", "nn", "optim", "viz")


def test_subpackages_are_attributes_after_a_plain_import() -> None:
    """``import graphgrad as gg; gg.data`` in a fresh interpreter (no earlier import of it)."""
    code = (
        "import graphgrad as gg; "
        + "; ".join(f"print(gg.{name}.__name__)" for name in SUBPACKAGES)
        + "; print(len(gg.data.two_moons(10, rng=0)[0]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [f"graphgrad.{n}" for n in SUBPACKAGES] + ["10"]
    assert set(SUBPACKAGES) <= set(gg.__all__)


def test_one_version_source() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    attr = meta["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, name = attr.rsplit(".", 1)
    assert getattr(__import__(module, fromlist=[name]), name) == gg.__version__
    assert importlib.metadata.version("graphgrad") == gg.__version__
    exe = Path(sys.executable).with_name("graphgrad")
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"graphgrad {gg.__version__}"


def test_license_file_matches_the_metadata() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["license"] == "MIT"
    assert meta["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    assert importlib.metadata.metadata("graphgrad")["License-Expression"] == "MIT"
