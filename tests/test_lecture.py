"""The lecture companion (``graphgrad lecture``), ``graph/paths --model softmax-classifier``,
gradcheck's kink message and Scalar graphs drawn before backward.

``graphgrad lecture --quick`` runs once per session through the installed entry point; the
tests read the page, the figures and ``lecture.json`` it wrote and check the numbers against
the lecture's (e = 6, de/da = 2, de/db = 5; 9 paths; at most H kinks).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad.lecture import topic_keys
from graphgrad.lecture.classifier import PARAMETERS, softmax_classifier
from graphgrad.viz import dot_available


def graphgrad_exe() -> str:
    """The installed ``graphgrad`` entry point next to this interpreter (else on the PATH)."""
    exe = Path(sys.executable).parent / "graphgrad"
    if exe.exists():
        return str(exe)
    found = shutil.which("graphgrad")
    assert found, "the graphgrad entry point is not installed"
    return found


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [graphgrad_exe(), *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def lecture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("lecture")
    proc = run_cli("lecture", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "lecture.json").read_text(encoding="utf-8"))
    return {"out": out, "stdout": proc.stdout, "data": data,
            "topics": {t["key"]: t for t in data["topics"]}}  # fmt: skip


# ------------------------------------------------------------------- the whole lecture


def test_every_topic_in_slide_order_with_its_figures_and_tables(lecture: dict[str, Any]) -> None:
    out: Path = lecture["out"]
    assert [t["key"] for t in lecture["data"]["topics"]] == topic_keys()
    assert len(topic_keys()) == 15
    for t in lecture["data"]["topics"]:
        assert t["claim"] and t["commands"], t["key"]
        assert t["figures"] or t["tables"], f"{t['key']}: neither a figure nor a table"
        for name in t["figures"]:
            path = out / name
            assert path.stat().st_size > 0, name
            head = path.read_bytes()[:400]
            if name.endswith(".png"):
                assert head.startswith(b"\x89PNG"), name
            elif name.endswith(".svg"):
                assert b"<svg" in path.read_bytes(), name
            else:
                assert name.endswith(".dot") and head.startswith(b"digraph"), name
        for table in t["tables"]:
            lines = table.strip().splitlines()
            assert len(lines) >= 3 and lines[1].startswith("|-"), (t["key"], table)
    # the figures the lecture promises
    promised = {
        "neuron": "neuron", "activations": "activations.png",
        "linear_templates": "linear_templates.png", "universal_1d": "universal_1d.png",
        "universal_2d": "universal_2d.png", "graph_example": "graph_example",
        "granularity": "granularity", "init_seeds": "init_seeds.png",
        "numerical": "eps_sweep.png", "worked_example": "worked_example",
        "softmax_classifier": "softmax_classifier", "paths_vs_backprop": "paths_vs_backprop.png",
        "gradient_flow": "gradient_flow",
    }  # fmt: skip
    topics = lecture["topics"]
    for key, stem in promised.items():
        if key == "linear_templates" and not topics[key]["figures"]:
            assert "Skipped" in topics[key]["notes"][0]  # Fashion-MNIST is not installed
            continue
        assert any(f.startswith(stem) for f in topics[key]["figures"]), key
        if not stem.endswith(".png") and dot_available():
            assert f"{stem}.svg" in topics[key]["figures"], key


def test_page_is_self_contained(lecture: dict[str, Any]) -> None:
    out: Path = lecture["out"]
    page = (out / "index.html").read_text(encoding="utf-8")
    md = (out / "README.md").read_text(encoding="utf-8")
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for t in lecture["data"]["topics"]:
        assert t["title"].split(":")[0].replace("&", "&amp;") in page
        assert t["title"] in md
        for name in t["figures"]:
            if name.endswith((".png", ".svg")):
                assert f'src="{name}"' in page and f"]({name})" in md
    assert "graphgrad lecture --quick" in md


def test_worked_example_numbers(lecture: dict[str, Any]) -> None:
    n = lecture["topics"]["worked_example"]["numbers"]
    assert (n["c"], n["d"], n["e"]) == (3.0, 2.0, 6.0)
    assert (n["de_da"], n["de_db"]) == (2.0, 5.0)
    assert (n["de_da_path_sums"], n["de_db_path_sums"]) == (2.0, 5.0)
    assert (n["paths_from_a"], n["paths_from_b"]) == (1, 2)
    assert "e = 6, de/da = 2, de/db = 5" in lecture["stdout"]


def test_path_counts(lecture: dict[str, Any]) -> None:
    topics = lecture["topics"]
    clf = topics["softmax_classifier"]["numbers"]
    assert clf["paths"] == 9  # the lecture's graph
    assert clf["paths_per_parameter"] == {"w11": 2, "w12": 2, "w21": 1, "w22": 1, "b1": 2, "b2": 1}
    assert clf["expr_paths_all_names"] == 15  # the expression, x1 and x2 counted as inputs
    assert clf["expr_paths_parameters"] == 9
    assert clf["nodes"] < clf["expr_nodes"]  # shared subexpressions are not duplicated
    assert clf["max_abs_diff_units_vs_tensor"] < 1e-12
    assert "9 paths from the 6 parameters" in lecture["stdout"]
    ex = topics["graph_example"]["numbers"]
    assert ex["paths"] == 4 and ex["nodes_shared"] == ex["nodes_duplicated"] - 1
    assert ex["do_dx_backprop"] == pytest.approx(ex["do_dx_central_difference"], rel=1e-7)
    assert ex["do_dx_path_sums"] == pytest.approx(ex["do_dx_backprop"], rel=1e-12)
    pv = topics["paths_vs_backprop"]["numbers"]
    for row in pv["layered"]:
        assert row["paths"] == 3 ** row["depth"] * 3
        assert row["max_abs_diff"] < 1e-12
    assert [g["paths"] for g in pv["graphs"]] == [3, 4, 9]


def test_kink_counts(lecture: dict[str, Any]) -> None:
    u = lecture["topics"]["universal_1d"]["numbers"]
    hs = [f["hidden"] for f in u["fits"]]
    assert hs[0] == 1 and hs[-1] == 32
    for f in u["fits"]:
        assert 0 <= f["kinks"] <= f["hidden"] and f["grid_kinks"] <= f["hidden"], f
    assert u["all_within_bound"] is True
    line = next(ln for ln in lecture["stdout"].splitlines() if "kinks <= H for all" in ln)
    printed = [(int(h), int(k)) for h, k in re.findall(r"H=(\d+): (\d+)", line)]
    assert printed == [(f["hidden"], f["kinks"]) for f in u["fits"]]
    assert all(k <= h for h, k in printed) and "fits: True (" in line
    act = lecture["topics"]["activations"]["numbers"]
    assert act["relu"]["a_prime_at_0"] == 0.0  # relu'(0) = 0
    assert act["leaky_relu:0.1"]["a_prime_at_0"] == pytest.approx(0.1)  # the slope
    assert act["elu:1.0"]["a_prime_at_0"] == 1.0  # alpha
    assert act["relu"]["kink"] == gg.REGISTRY["relu"].kinks


def test_other_numbers(lecture: dict[str, Any]) -> None:
    t = lecture["topics"]
    flow = t["gradient_flow"]["numbers"]
    assert (flow["add"]["dL_dx"], flow["add"]["dL_dy"]) == (2.0, 2.0)
    assert (flow["max"]["dL_dx"], flow["max"]["dL_dy"]) == (2.0, 0.0)
    assert (flow["multiply"]["dL_dx"], flow["multiply"]["dL_dy"]) == (-2.0, 6.0)
    assert t["granularity"]["numbers"]["max_abs_diff"] < 1e-12
    dp = t["data_parallel"]["numbers"]
    assert dp["max_abs_diff_loop"] < 1e-12 * max(1.0, dp["max_abs_grad"])
    notes = t["data_parallel"]["notes"]
    if "max_abs_diff_per_sample" in dp:  # gg.per_sample_grads exists
        assert dp["max_abs_diff_per_sample"] < 1e-12 * max(1.0, dp["max_abs_grad"])
    else:
        assert any(n.startswith("(c) per-sample gradients") for n in notes)
    if "max_abs_diff_mpi" in dp:  # mpi4py and mpiexec are installed
        assert dp["mpi_ranks"] == 2
        assert dp["max_abs_diff_mpi"] < 1e-12 * max(1.0, dp["max_abs_grad"])
    else:
        assert any(n.startswith("(d) multi-rank: skipped") for n in notes)
    counts = t["raw_pixels"]["numbers"]["first_layer_parameters"]
    assert list(counts.values()) == [785 * 256, 3073 * 256, 150529 * 256]
    results = t["raw_pixels"]["numbers"]["results"]
    if not any(r["dataset"] == "cifar10" and "missing" not in r for r in results):
        assert any("graphgrad download cifar10" in n for n in t["raw_pixels"]["notes"])
    num = t["numerical"]["numbers"]["cost"]
    dim = num["parameters"]
    assert num["forward"]["evaluations"] == dim + 1 and num["central"]["evaluations"] == 2 * dim
    init = t["init_seeds"]["numbers"]
    assert init["right"]["predicted_ratio"] == 1.0 and len(init["right"]["activation_ratio"]) > 1


def test_only_and_unknown_topic(tmp_path: Path) -> None:
    proc = run_cli("lecture", "--quick", "--out", str(tmp_path), "--only", "worked_example")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "lecture.json").read_text(encoding="utf-8"))
    assert [t["key"] for t in data["topics"]] == ["worked_example"]
    bad = run_cli("lecture", "--out", str(tmp_path / "x"), "--only", "nope")
    assert bad.returncode == 2 and "unknown topic(s) nope" in bad.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--only", ""], "--only names no topic; choose from neuron, activations,"),
        (["--only", " , "], "--only names no topic; choose from"),
        (["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    ],
)
def test_refused_before_any_work(tmp_path: Path, argv: list[str], message: str) -> None:
    proc = run_cli("lecture", "--quick", "--out", str(tmp_path / "x"), *argv)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout  # no topic ran
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (tmp_path / "x").exists()


def test_out_that_is_a_file_is_named(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for out in (a_file, a_file / "lecture"):
        proc = run_cli("lecture", "--only", "worked_example", "--out", str(out))
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert f"--out {out}: {a_file} is a file, not a folder" in proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and "Errno" not in proc.stderr
    assert a_file.read_text() == "mine"


def test_without_matplotlib_one_line_naming_the_extra(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('simulated: absent')\n")
    env = {**os.environ, "PYTHONPATH": str(fake)}
    proc = run_cli("lecture", "--quick", "--out", str(tmp_path / "out"), env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "pip install 'graphgrad[train]'" in proc.stderr
    assert not (tmp_path / "out").exists()  # said before any work started


# ------------------------------------------------------- graph/paths --model from the CLI


def test_graph_model_softmax_classifier() -> None:
    proc = run_cli("graph", "--model", "softmax-classifier", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    g = json.loads(proc.stdout)
    labels = [n["label"] for n in g["nodes"]]
    for name in ("x1", "x2", *PARAMETERS, "h11", "o1", "o2", "e1", "e2", "z", "p1", "H"):
        assert labels.count(name) == 1, name  # each subexpression once
    by = {n["label"]: n for n in g["nodes"]}
    assert by["x1"]["kind"] == "const" and by["w11"]["kind"] == "input"
    loss, params = softmax_classifier()
    loss.backward()
    assert by["H"]["value"] == pytest.approx(loss.data)
    assert by["w11"]["grad"] == pytest.approx(params["w11"].grad)
    # H = -ln(e1 / (e1 + e2)) at the defaults, and ∂H/∂o = softmax - onehot
    o = np.array([0.5 * 1 - 1 * -0.5 + 0.1, 0.5 * -1 + -1 * 0.5 - 0.2])
    p = np.exp(o) / np.exp(o).sum()
    assert loss.data == pytest.approx(-np.log(p[0]))
    assert params["b1"].grad == pytest.approx(p[0] - 1) and params["b2"].grad == pytest.approx(p[1])


def test_paths_model_prints_nine_paths() -> None:
    proc = run_cli("paths", "--model", "softmax-classifier", "--at", "x1=1,x2=2,y=2")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("paths"))
    assert "9 (w11: 1, w12: 1, w21: 2, w22: 2, b1: 1, b2: 2)" in line  # y = 2 this time


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["graph", "a*b", "--model", "softmax-classifier"], "either EXPR or --model"),
        (["graph", "--model", "softmax-classifier", "--at", "q=1"], "unknown name 'q'"),
        (["paths", "--model", "softmax-classifier", "--at", "y=3"], "must be 1 or 2"),
        (["graph"], "give an expression"),
    ],
)
def test_model_errors(argv: list[str], message: str) -> None:
    proc = run_cli(*argv)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- gradcheck at a kink


def test_gradcheck_names_the_kink_and_suggests_moving_the_point() -> None:
    x = np.array([1.0, 0.0, -2.0])
    res = gg.gradcheck(lambda t: t.relu().sum(), x, raise_exception=False)
    assert not res.passed and len(res.kinks) == 1
    text = str(res)
    assert "op 'relu'" in text and "gradcheck input 0[1] = 0" in text
    assert gg.REGISTRY["relu"].kinks in text  # the registry's convention, not a copy
    assert "Move the point off the kink" in text
    with pytest.raises(gg.GradcheckError, match="kink: op 'relu'"):
        gg.gradcheck(lambda t: t.relu().sum(), x)


def test_gradcheck_kink_of_an_intermediate_value() -> None:
    # 2x - 2 is 0 at x = 1: relu sees its kink through an intermediate node
    res = gg.gradcheck(lambda t: (t * 2 - 2).relu().sum(), np.array([1.0, 3.0]),
                       raise_exception=False)  # fmt: skip
    assert not res.passed
    assert res.kinks and "its argument x[0] (computed from the inputs) = 0" in res.kinks[0]


def test_gradcheck_off_the_kink_passes_without_a_kink_message() -> None:
    res = gg.gradcheck(lambda t: t.relu().sum(), np.array([1.0, 1e-3, -2.0]))
    assert res.passed and res.kinks == [] and "kink" not in str(res)
    # a failure that is not a kink says nothing about kinks
    bad = gg.gradcheck(lambda t: (t * t).sum(), np.array([1.0, 2.0]), eps=1.0, atol=0,
                       rtol=0, raise_exception=False)  # fmt: skip
    assert bad.kinks == []


# ------------------------------------------------- Scalar graphs drawn before backward


def test_scalar_graph_before_backward_shows_dash_like_a_tensor_graph() -> None:
    a, b = gg.Scalar(2.0, name="a"), gg.Scalar(1.0, name="b")
    e = (a + b) * (b + 1)
    e.name = "e"
    before = gg.viz.trace(e)
    assert all(n["grad"] is None for n in before.nodes)
    rows = before.to_text().split("\n\n")[0].splitlines()[2:]
    assert all(r.split()[-1] == "-" for r in rows if " const " not in r)
    assert "∂e/∂e = -" in before.to_dot()
    t = gg.tensor(2.0, requires_grad=True)
    assert all(n["grad"] is None for n in gg.viz.trace(t * 3).nodes)  # the same as Tensors
    e.backward()
    after = gg.viz.trace(e)
    assert after.node("b")["grad"] == 5.0 and after.node("e")["grad"] == 1.0
    assert "∂e/∂e = 1" in after.to_dot()


def test_without_graphviz_the_graph_is_given_as_dot_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphgrad import viz
    from graphgrad.lecture import run_lecture

    monkeypatch.setattr(viz, "dot_available", lambda: False)
    (topic,) = run_lecture(tmp_path, quick=True, only=["worked_example"])
    assert topic.figures == ["worked_example.dot"]
    assert (tmp_path / "worked_example.dot").read_text(encoding="utf-8").startswith("digraph")
    assert any("Graphviz" in n for n in topic.notes)
    assert "Graphviz" in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_gradcheck_kink_message_skips_constant_arguments() -> None:
    from graphgrad.gradcheck import kinks_hit

    # x ** 2 at x = -1: pow's convention for d/dp at x <= 0 does not concern a constant p
    assert kinks_hit(lambda t: (t**2).sum(), np.array([-1.0, 2.0])) == []
    # relu at 0 through a constant input is no concern either; through t it is
    c = np.array([0.0, 1.0])
    assert kinks_hit(lambda t: (gg.tensor(c).relu() * t).sum(), np.array([1.0, 2.0])) == []
    assert len(kinks_hit(lambda t: t.relu().sum(), c)) == 1
