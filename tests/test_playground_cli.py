"""``graphgrad playground`` and ``graphgrad export-html`` through the installed entry point."""

from __future__ import annotations

import json
import os
import socket
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


def test_port_zero_prints_the_port_it_got() -> None:
    pytest.importorskip("uvicorn", reason="needs the extra graphgrad[playground]")
    proc = subprocess.Popen(
        [GRAPHGRAD, "playground", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket listens: it answers at once
        url = line.split()[2]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/"), line
        with urllib.request.urlopen(url + "api/health", timeout=30) as r:
            assert json.load(r) == {"ok": True, "sessions": 0}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_a_port_taken_or_an_address_not_here_is_one_line_and_no_url() -> None:
    pytest.importorskip("uvicorn", reason="needs the extra graphgrad[playground]")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _run("playground", "--port", str(port))
    assert r.returncode == 1 and r.stdout == "", r.stdout  # nothing claims it is ready
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    # an address of no interface here (TEST-NET-1: nothing is looked up, nothing is sent)
    r = _run("playground", "--host", "192.0.2.1", "--port", "0")
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.strip().count("\n") == 0 and "cannot listen on 192.0.2.1:0: " in r.stderr


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


def test_export_html_never_writes_into_the_run_or_over_a_directory(
    run_dir: Path, tmp_path: Path
) -> None:
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    for out in (run_dir / "checkpoint.json", run_dir, run_dir / ".." / run_dir.name / "p.html"):
        r = _run("export-html", str(run_dir), "-o", str(out))
        assert r.returncode == 2 and r.stdout == "", r.stdout
        assert r.stderr.count("\n") == 1 and "the run" in r.stderr and "being exported" in r.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # untouched
    r = _run("export-html", str(run_dir), "-o", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"-o {tmp_path} is a directory" in r.stderr and ".tmp" not in r.stderr
    r = _run("export-html", str(run_dir), "-o", str(tmp_path / "no" / "p.html"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert f"the folder {tmp_path / 'no'} does not exist" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_saved_run_is_a_checkpoint_graphgrad_eval_loads(run_dir: Path) -> None:
    r = _run("eval", str(run_dir), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    # fresh circles from graphgrad.data (raw coordinates): the folded first layer reads them
    assert res["accuracy"] > 0.9, res
