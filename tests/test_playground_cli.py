"""``graphgrad playground`` and ``graphgrad export-html`` through the installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from graphgrad.playground import Session, save_run

GRAPHGRAD = str(Path(sys.executable).with_name("graphgrad"))


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRAPHGRAD, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_without_the_extra_one_line_names_it(tmp_path: Path) -> None:
    fake = tmp_path / "starlette"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('simulated: no starlette')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = _run("playground", "--port", "1", env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "graphgrad playground needs its server packages: pip install 'graphgrad[playground]'"
    )
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_playground_serves_the_page_on_loopback() -> None:
    pytest.importorskip("uvicorn", reason="needs the extra graphgrad[playground]")
    from playground_fixtures import free_port

    port = free_port()
    proc = subprocess.Popen(
        [GRAPHGRAD, "playground", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health") as r:
                    assert json.load(r) == {"ok": True, "sessions": 0}
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
            assert b"graphgrad playground" in r.read()
        # a name other than loopback's (DNS rebinding) is refused
        rebound = urllib.request.Request(
            f"http://127.0.0.1:{port}/", headers={"Host": "evil.example"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound)
        assert refused.value.code == 400
        refused.value.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_bad_port_is_refused() -> None:
    r = _run("playground", "--port", "70000")
    assert r.returncode == 2 and "--port" in r.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: Any) -> Path:
    s = Session({"dataset": "circles", "layers": [6], "lr": 0.3, "noise": 0.1})
    s.step(300)
    assert s.accuracy() is not None and s.accuracy() > 0.9  # type: ignore[operator]
    return save_run(s, tmp_path_factory.mktemp("pg") / "run")


def test_export_html_writes_one_page(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    r = _run("export-html", str(run_dir), "-o", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert '<script id="snapshot" type="application/json">' in html
    assert "<script src" not in html and '<link rel="stylesheet"' not in html
    r = _run("export-html", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.html"))
    assert r.returncode == 1 and "graphgrad export-html:" in r.stderr
    assert not (tmp_path / "x.html").exists()


def test_saved_run_is_a_checkpoint_graphgrad_eval_loads(run_dir: Path) -> None:
    r = _run("eval", str(run_dir), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    # fresh circles from graphgrad.data (raw coordinates): the folded first layer reads them
    assert res["accuracy"] > 0.9, res
