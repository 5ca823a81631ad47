"""The ``graph`` and ``paths`` subcommands, with golden DOT/JSON files for the lecture's example.

Regenerate the golden files after an intended change of the output with
``GRAPHGRAD_REGEN_GOLDEN=1 pytest tests/test_cli_graph.py`` and review the diff.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from graphgrad.cli import main
from graphgrad.expr import FUNCTIONS
from graphgrad.viz import dot_available

GOLDEN = Path(__file__).parent / "golden"
LECTURE = ["(a+b)*(b+1)", "--at", "a=2,b=1"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["dot", "json"])
def test_golden_files(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    code, out, err = run(capsys, "graph", *LECTURE, "--format", fmt)
    assert code == 0 and err == ""
    path = GOLDEN / f"lecture_example.{fmt}"
    if os.environ.get("GRAPHGRAD_REGEN_GOLDEN"):
        path.write_text(out, encoding="utf-8")
    assert out == path.read_text(encoding="utf-8"), (
        f"regenerate with GRAPHGRAD_REGEN_GOLDEN=1 ({path})"
    )


def test_json_has_the_lecture_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "graph", *LECTURE, "--format", "json")
    data = json.loads(out)
    nodes = {n["name"]: n for n in data["nodes"] if n["name"]}
    assert {k: (nodes[k]["op"], nodes[k]["value"], nodes[k]["grad"]) for k in "abcde"} == {
        "a": (None, 2.0, 2.0),
        "b": (None, 1.0, 5.0),
        "c": ("add", 3.0, 2.0),
        "d": ("add", 2.0, 3.0),
        "e": ("mul", 6.0, 1.0),
    }
    assert (nodes["c"]["expr"], nodes["d"]["expr"]) == ("a + b", "b + 1")
    ids = {n["id"]: n["label"] for n in data["nodes"]}
    local = {(ids[e["source"]], ids[e["target"]]): e["local_grad"] for e in data["edges"]}
    assert local[("c", "e")] == 2.0 and local[("d", "e")] == 3.0  # ∂e/∂c = d, ∂e/∂d = c


def test_text_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "graph", *LECTURE)
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["node", "op", "definition"]
    assert any(
        ln.split() == ["e", "mul", "e", "=", "c", "*", "d", "6", "1"] for ln in out.splitlines()
    )


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "graph", *LECTURE, "--explain")
    assert code == 0
    assert "∂e/∂b = 1·2 + 1·3 = 5" in out and "∂e/∂a = 1·2 = 2" in out
    assert out.index("d = b + 1") < out.index("c = a + b")  # reverse topological order


def test_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    code, out, err = run(capsys, "graph", *LECTURE, "-o", str(path))
    assert code == 0 and out == "" and "wrote" in err
    assert json.loads(path.read_text(encoding="utf-8"))["nodes"][5]["value"] == 6.0
    code, _, err = run(capsys, "graph", *LECTURE, "-o", str(tmp_path / "g.xyz"))
    assert code == 2 and "cannot tell the format" in err
    code, _, err = run(capsys, "graph", *LECTURE, "-o", str(tmp_path / "no" / "g.dot"))
    assert code == 1 and "cannot write" in err


@pytest.mark.skipif(not dot_available(), reason="Graphviz's dot is not installed")
def test_svg_and_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "graph", *LECTURE, "--format", "svg")
    assert code == 0 and "<svg" in out
    path = tmp_path / "g.png"
    assert run(capsys, "graph", *LECTURE, "-o", str(path))[0] == 0
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_svg_without_dot(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    code, _, err = run(capsys, "graph", *LECTURE, "--format", "svg")
    assert code == 1 and "install Graphviz" in err and "format 'dot'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["graph", "(a+b", "--at", "a=2,b=1"],
            "in '(a+b' at column 5: '(' at column 1 is never closed",
        ),
        (["graph", "a*z", "--at", "a=2,b=1"], "unknown name 'z'; names given values: a, b"),
        (["graph", "a.b", "--at", "a=2"], "at column 2: expected an operator"),
        (["graph", "a*b", "--at", "a=2,b"], "--at: expected NAME=NUMBER"),
        (["graph", "log(a)", "--at", "a=-1"], "cannot evaluate: log"),
        (["paths", "a*z", "--at", "a=1"], "unknown name 'z'"),
        (["paths"], "give an expression"),
        (["paths", "a", "--layered", "2", "2"], "not both"),
        (["paths", "--layered", "0", "2"], "1 <= WIDTH"),
        (["paths", "a", "--at", "a=1", "--limit", "-1"], "--limit must be >= 0"),
    ],
)
def test_errors_are_one_line_and_exit_nonzero(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code != 0 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


BAD_EXPRESSIONS = [
    "(a+b",
    "a + * b",
    "a.b",
    "a[0]",
    "a < b",
    "a // b",
    "a b",
    "2a",
    "a +",
    ")",
    "a)",
    "",
    "foo(a)",
    "__import__('os')",
    "exp a",
    "exp()",
    "exp(a",
    "maximum(a)",
    "exp(a, b)",
    "leaky_relu(a, b)",
    "a, b",
    "'text'",
    "lambda: 1",
    "a if a else a",
    "1j",
    "a $ b",
    "a # c",
    "z * a",
    "log(a - 2)",
    "a / (b - 1)",
]


def test_parser_errors_golden(capsys: pytest.CaptureFixture[str]) -> None:
    lines = []
    for text in BAD_EXPRESSIONS:
        code, out, err = run(capsys, "graph", text, "--at", "a=2,b=1")
        assert code == 2 and out == "" and len(err.splitlines()) == 1, text
        lines.append(err)
    # the list of functions comes from the op registry: a new op must not change this file
    got = "".join(lines).replace(", ".join(FUNCTIONS), "<the functions of graphgrad.expr>")
    path = GOLDEN / "parser_errors.txt"
    if os.environ.get("GRAPHGRAD_REGEN_GOLDEN"):
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8"), (
        f"regenerate with GRAPHGRAD_REGEN_GOLDEN=1 ({path})"
    )


@pytest.mark.parametrize("sub", ["graph", "paths"])
def test_help(capsys: pytest.CaptureFixture[str], sub: str) -> None:
    with pytest.raises(SystemExit) as e:
        main([sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"graphgrad {sub}" in out


def test_paths_expression(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "paths", *LECTURE)
    assert code == 0
    rows = {ln.split("  ")[0].strip(): ln.split() for ln in out.splitlines() if ln.strip()}
    assert rows["∂e/∂a"][1:] == ["2", "2"] and rows["∂e/∂b"][1:] == ["5", "5"]
    assert rows["paths"][1] == "3" and rows["edges touched"][-1] == "5"
    assert rows["multiplications"][1:] == ["3", "5"]


def test_paths_refused_over_limit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "paths", "(a+b)*(b+1)", "--at", "a=2,b=1", "--limit", "2")
    assert code == 0
    assert "path sums: refused: path enumeration needs 3 paths, more than the limit of 2" in out


def test_paths_layered_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "paths", "--layered", "3", "5", "--limit", "200")
    assert code == 0
    lines = [ln.split() for ln in out.splitlines() if ln[:1].isdigit()]
    assert [ln[0] for ln in lines] == ["1", "2", "3", "4", "5"]
    assert [int(ln[1].replace(",", "")) for ln in lines] == [3, 9, 27, 81, 243]  # 3^d per input
    edges = [int(ln[4 if ln[3] != "refused" else 6].replace(",", "")) for ln in lines]
    assert len({b - a for a, b in itertools.pairwise(edges)}) == 1  # linear in depth
    assert "refused (> limit)" in out.splitlines()[-1]  # 729 paths > 200


def test_module_runs_as_a_program() -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "graphgrad", "graph", *LECTURE, "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        encoding="utf-8",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["nodes"][-1]["value"] == 6.0


# --- numbers that are not finite: refused, as exp(1000) and --at a=inf are -----------------

NOT_FINITE = [
    (["graph", "1e400*a", "--at", "a=0"], "the number 1e400 overflows a float"),
    (["graph", "1e400-1e400+a", "--at", "a=1"], "the number 1e400 overflows a float"),
    (["graph", "1" + "0" * 400 + "*a", "--at", "a=1"], "overflows a float"),
    (["graph", "a*b", "--at", "a=1e200,b=1e200"], "mul: 1e+200 * 1e+200 overflows a float"),
    (["paths", "a*b", "--at", "a=1e200,b=1e200"], "mul: 1e+200 * 1e+200 overflows a float"),
    (["graph", "a/b", "--at", "a=1,b=1e-310"], "div: 1 / 1e-310 overflows a float"),
    (["graph", "log(a)", "--at", "a=5e-324"], "the local derivative ∂b/∂a of b = log("),
    (["paths", "sqrt(a)", "--at", "a=0"], "the local derivative ∂b/∂a of b = sqrt(0) is inf"),
    (["graph", "(a*1e300)*b", "--at", "a=1e-300,b=1e10"], "the gradient ∂d/∂a is inf"),
    (["paths", "(a*1e300)*b", "--at", "a=1e-300,b=1e10"], "the gradient ∂d/∂a by backprop"),
    (
        ["graph", "--model", "softmax-classifier", "--at", "x1=1e300"],
        "--model softmax-classifier: exp: exp(1e+300) overflows a float",
    ),
]


@pytest.mark.parametrize(("argv", "message"), NOT_FINITE)
def test_non_finite_values_and_derivatives_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "", out
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert f"graphgrad {argv[0]}: error: " in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["graph", "inf*a", "--at", "a=1,inf=2"], "--at: 'inf' cannot be a variable name"),
        (["paths", "a*NaN", "--at", "a=1"], "at column 3: 'NaN' cannot be a variable name"),
        (["graph", "Infinity", "--at", "a=1"], "'Infinity' cannot be a variable name"),
    ],
)
def test_names_that_read_as_numbers_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and message in err and "reads as a number" in err, err


@pytest.mark.parametrize("sub", ["graph", "paths"])
def test_an_expression_without_variables_has_nothing_to_differentiate(
    capsys: pytest.CaptureFixture[str], sub: str
) -> None:
    code, out, err = run(capsys, sub, "5")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"graphgrad {sub}: error: in '5': the expression has no variables" in err
    assert "backward()" not in err


def test_explain_writes_text_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    svg = tmp_path / "ex.svg"
    code, out, err = run(capsys, "graph", *LECTURE, "--explain", "-o", str(svg))
    assert code == 2 and out == "" and not svg.exists()
    assert "--explain writes text" in err and "ex.svg" in err and "svg" in err
    code, out, err = run(capsys, "graph", *LECTURE, "--explain", "--format", "json")
    assert code == 2 and out == "" and "--explain writes text, not json" in err
    txt = tmp_path / "ex.txt"
    assert run(capsys, "graph", *LECTURE, "--explain", "-o", str(txt))[0] == 0
    assert "∂e/∂b = 1·2 + 1·3 = 5" in txt.read_text(encoding="utf-8")


def test_output_errors_name_the_path_and_the_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    cases = {
        str(tmp_path / "nodir" / "x.svg"): f"the folder {tmp_path / 'nodir'} does not exist",
        str(tmp_path): "it is a directory",
        str(a_file / "x.txt"): f"{a_file} is a file, not a folder",
    }
    for path, why in cases.items():
        code, out, err = run(capsys, "graph", *LECTURE, "-o", path)
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
        assert f"cannot write '{path}': {why}" in err, err
        assert "None" not in err and "format" not in err and ".tmp" not in err
    assert a_file.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["a_file"]
