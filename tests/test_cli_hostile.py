"""The installed ``graphgrad`` command against hostile input, and every documented subcommand.

Everything runs ``.venv/bin/graphgrad`` in a subprocess, as a user would; servers are on
127.0.0.1 and every file is generated here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_fixtures import idx_bytes, serve
from graphgrad._quote import WIDTH
from graphgrad.cli import main
from graphgrad.data import FashionMNIST
from graphgrad.paths import layered_work
from test_train import write_fake_fashion_mnist

ROOT = Path(__file__).resolve().parent.parent
GRAPHGRAD = Path(sys.executable).with_name("graphgrad")
if not GRAPHGRAD.exists():  # pragma: no cover - an install without the venv layout
    GRAPHGRAD = Path(shutil.which("graphgrad") or "graphgrad")

# Runs the command and reports the child's peak resident memory (kB on Linux).
_MEASURE = (
    "import json, resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps([r.returncode, r.stdout, r.stderr, rss]))\n"
)


def gg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRAPHGRAD), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def gg_measured(*args: str) -> tuple[int, str, str, int]:
    """Run ``graphgrad ARGS``; return code, stdout, stderr and its peak RSS in kB."""
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(GRAPHGRAD), *args],
                       capture_output=True, text=True, timeout=150, check=True)  # fmt: skip
    code, out, err, rss = json.loads(r.stdout)
    return int(code), out, err, int(rss)


def assert_one_line_error(r: subprocess.CompletedProcess[str] | tuple[int, str, str, int]) -> str:
    code, err = (r.returncode, r.stderr) if not isinstance(r, tuple) else (r[0], r[2])
    assert code != 0, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


# --- every subcommand named anywhere exists ----------------------------------------------------

# `graphgrad NAME` in code: after a backtick, a quote, "$ " or at the start of a (code) line.
_MENTION = re.compile(r"(?:^[ \t>]*|[`'\"]|\$ )graphgrad ([a-z][a-z0-9-]*)", re.MULTILINE)


def _mentioned_subcommands() -> dict[str, str]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted((ROOT / "src" / "graphgrad").rglob("*.py"))
    found: dict[str, str] = {}
    for f in files:
        for m in _MENTION.finditer(f.read_text(encoding="utf-8")):
            found.setdefault(m.group(1), str(f.relative_to(ROOT)))
    return found


def test_every_subcommand_named_in_docs_and_messages_exists() -> None:
    r = gg("--help")
    assert r.returncode == 0
    listing = r.stdout.split("COMMAND", 2)[-1].split("\noptions:")[0]
    available = set(re.findall(r"^ {2,6}([a-z][a-z0-9-]*)(?: |$)", listing, re.MULTILINE))
    assert {"train", "graph"} <= available, r.stdout
    mentioned = _mentioned_subcommands()
    assert {"download", "train", "graph", "paths"} <= set(mentioned)  # the scan finds them
    missing = {name: where for name, where in mentioned.items() if name not in available}
    assert not missing, f"named but not a subcommand of `graphgrad`: {missing}"


def test_the_scan_would_catch_a_missing_subcommand() -> None:
    text = "run `graphgrad download cifar10` then\n    graphgrad frobnicate --x\n"
    assert [m.group(1) for m in _MENTION.finditer(text)] == ["download", "frobnicate"]
    assert not _MENTION.search("import graphgrad as gg; (graphgrad with MKL)")


# --- graphgrad download, end to end ------------------------------------------------------------


def _fashion_files(n: int = 20) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    files = {}
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images), mtime=0)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels), mtime=0)
    return files


def test_download_through_the_installed_command(tmp_path: Path) -> None:
    files = _fashion_files()
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    with serve(files) as server:
        args = ["download", "fashion-mnist", "--root", str(tmp_path / "data"), "--checksums",
                str(sums), "--base-url", server.base_url, "--no-progress"]  # fmt: skip
        r = gg(*args)
        assert r.returncode == 0, r.stderr
        folder = Path(r.stdout.strip())
        assert folder == tmp_path / "data" / "fashion-mnist"
        assert len(FashionMNIST(folder)) == 20
        # a second run finds everything in place and fetches nothing
        before = len(server.log)
        assert gg(*args).returncode == 0 and len(server.log) == before
        # the official checksums do not match these files: one line, exit 1
        r = gg("download", "fashion-mnist", "--root", str(tmp_path / "other"), "--base-url",
               server.base_url, "--no-progress")  # fmt: skip
        err = assert_one_line_error(r)
        assert err.startswith("graphgrad download: error: ") and r.returncode == 1
    r = gg("download", "imagenet")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = gg("download", "cifar10", "--root", str(tmp_path), "--base-url", dead, "--timeout", "2")
    assert "cannot connect" in assert_one_line_error(r) and r.returncode == 1
    assert "--deadline" in gg("download", "--help").stdout


# --- predict: files that lie ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile-cli")
    root = write_fake_fashion_mnist(base / "data", n_train=60, n_test=20)
    out = base / "run"
    rc = main(
        ["train", "--dataset", "fashion-mnist", "--data-root", str(root), "--model", "mlp",
         "--hidden", "8", "--epochs", "1", "--batch-size", "32", "--out", str(out),
         "--no-progress", "--no-plots", "--seed", "0"]
    )  # fmt: skip
    assert rc == 0
    return out


def test_predict_refuses_lying_files_in_one_line_with_bounded_memory(
    run_dir: Path, tmp_path: Path
) -> None:
    import matplotlib.image as mpimg

    ok = tmp_path / "ok.npy"
    np.save(ok, np.zeros((28, 28), np.uint8))
    code, out, err, base_rss = gg_measured("predict", str(run_dir), str(ok))
    assert code == 0 and "ok.npy:" in out, err

    header = repr({"descr": "<f8", "fortran_order": False, "shape": (10_000_000_000,)}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    huge = tmp_path / "huge.npy"  # 80 GB claimed by a 192-byte file
    huge.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(64))
    text = tmp_path / "text.png"
    text.write_text("hello")
    mpimg.imsave(tmp_path / "full.png", np.zeros((28, 28)), cmap="gray")
    data = (tmp_path / "full.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    expected = {huge: "80,000,000,000 bytes", text: "not a PNG file", cut: "cannot decode the PNG"}
    for path, words in expected.items():
        r = gg_measured("predict", str(run_dir), str(path))
        err = assert_one_line_error(r)
        assert str(path) in err and words in err, err
        assert r[3] < base_rss + 64 * 1024, (path, r[3], base_rss)  # kB


def test_predict_refuses_values_that_are_not_finite_and_empty_files(
    run_dir: Path, tmp_path: Path
) -> None:
    image = np.zeros((3, 28, 28), np.float32)
    image[1, 2, 3] = np.inf
    cases = {
        "nan.npy": (np.full((28, 28), np.nan), "784 of its 784 values are not finite"),
        "inf.npy": (image, "1 of its 2,352 values is not finite (NaN or infinity), the "
                    "first at index (1, 2, 3)"),
        "empty.npy": (np.zeros((0, 28, 28), np.uint8), "the file holds 0 images or vectors "
                      "(an empty array of shape (0, 28, 28))"),
    }  # fmt: skip
    for name, (array, words) in cases.items():
        path = tmp_path / name
        np.save(path, array)
        for json_flag in ([], ["--json"]):
            r = gg("predict", str(run_dir), str(path), *json_flag)
            err = assert_one_line_error(r)
            assert r.stdout == "" and f"{path}: {words}" in err, err
            assert "nan%" not in err and "nothing to predict: give" not in err


def test_predict_refuses_float_pixels_outside_0_1_and_reads_them_inside(
    run_dir: Path, tmp_path: Path
) -> None:
    image = np.linspace(0, 1, 784, dtype=np.float32).reshape(28, 28)
    for name, array, found in [
        ("f255.npy", image * 255, "[0, 255]"),
        ("neg.npy", image - 1, "[-1, 0]"),
    ]:
        path = tmp_path / name
        np.save(path, array)
        r = gg("predict", str(run_dir), str(path), "--json")
        err = assert_one_line_error(r)
        want = f"{path}: float pixels must be in [0, 1], found values in {found}"
        assert r.stdout == "" and want in err and "divide 0..255 pixels by 255" in err, err
    ok = tmp_path / "ok.npy"
    np.save(ok, image)
    u8 = tmp_path / "u8.npy"
    np.save(u8, np.round(image * 255).astype(np.uint8))
    r = gg("predict", str(run_dir), str(ok), str(u8), "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [g["input"] for g in got] == [str(ok), str(u8)]
    assert got[0]["top"][0]["class"] == got[1]["top"][0]["class"]


def test_predict_on_a_model_of_points_names_what_it_takes(tmp_path: Path) -> None:
    out = tmp_path / "moons"
    rc = main(["train", "--dataset", "two_moons", "--epochs", "1", "--out", str(out),
               "--no-progress", "--no-plots", "--seed", "0"])  # fmt: skip
    assert rc == 0
    pts = tmp_path / "pts.npy"
    np.save(pts, np.array([[0.0, 0.5], [1.0, -0.3]], np.float32))
    r = gg("predict", str(out), str(pts), "--json")
    assert r.returncode == 0, r.stderr
    assert [g["input"] for g in json.loads(r.stdout)] == [f"{pts}[0]", f"{pts}[1]"]
    png = tmp_path / "img.png"
    plt = pytest.importorskip("matplotlib.pyplot")
    plt.imsave(png, np.zeros((28, 28)), cmap="gray")
    err = assert_one_line_error(gg("predict", str(out), str(png)))
    assert f"{png}: this model takes 2-vectors (points), not images" in err, err


# --- errors quote at most ~80 characters of the input ------------------------------------------


def test_long_inputs_give_short_one_line_errors(tmp_path: Path) -> None:
    long_expr = "a+" * 20_000 + "$"
    cases = [
        ("graph", long_expr, "--at", "a=1"),
        ("paths", long_expr, "--at", "a=1"),
        ("graph", "(a+b)*" * 1000 + "c)", "--at", "a=1,b=2,c=3"),
        ("graph", "a", "--at", "a=" + "1" * 40_000 + "x"),
        ("graph", "a", "--at", "a=1", "-o", "x" * 40_000),
        ("download", "mnist", "--base-url", "ftp://" + "h" * 40_000, "--root", str(tmp_path)),
        ("train", "--hidden", "1," * 20_000 + "x", "--out", str(tmp_path / "r")),
        ("train", "--activation", "r" * 40_000, "--dataset", "two_moons", "--out", str(tmp_path)),
    ]
    for args in cases:
        r = gg(*args)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        # one error line (argparse puts its usage lines above it), of ordinary length
        [line] = [ln for ln in r.stderr.splitlines() if "error:" in ln]
        assert len(line) < WIDTH + 200, (args[:2], len(line), line[:300])
        assert len(r.stderr) < 4000
    # a short expression is still quoted whole, the fault's column named
    err = assert_one_line_error(gg("graph", "a + $", "--at", "a=1"))
    assert "'a + $' at column 5" in err


def test_deep_parentheses_through_the_command() -> None:
    # 60,000 deep: as much as one command-line argument can hold (5 million: test_hostile_files)
    code, _, err, rss = gg_measured("graph", "(" * 60_000 + "a" + ")" * 60_000)
    assert code == 2 and "more than the limit of 10,000" in err and len(err) < 400, err[:400]
    assert rss < 400 * 1024, rss  # kB


# --- paths --layered: work counted first -------------------------------------------------------


def test_paths_layered_at_the_cli_maximum_refuses_with_the_count() -> None:
    r = gg("paths", "--layered", "64", "200", timeout=60)
    err = assert_one_line_error(r)
    assert r.returncode == 2 and r.stdout == ""
    assert f"{layered_work(64, 200):,} graph edges" in err and "depth of at most" in err
    r = gg("paths", "--layered", "3", "4")
    assert r.returncode == 0 and r.stdout.count("\n") > 4
