"""The playground against hostile or odd input: binary frames, huge integers, dead neurons,
errors that name their field, edited saved runs, and the epoch count at its boundaries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graphgrad.checkpoint import CheckpointError, meta_digest
from graphgrad.playground import ParamError, PlaygroundError, Session, load_run, save_run

GRAPHGRAD = str(Path(sys.executable).with_name("graphgrad"))
HUGE = 10**400  # json.loads reads it as an int; float() of it overflows

# ------------------------------------------------------------------------------ huge integers


@pytest.mark.parametrize("name", ["lr", "noise", "train_ratio", "reg_rate", "init_std"])
@pytest.mark.parametrize("sign", [1, -1])
def test_a_huge_integer_setting_is_out_of_range_not_an_overflow(name: str, sign: int) -> None:
    from graphgrad.playground import validate_params

    with pytest.raises(ParamError) as e:
        validate_params({name: sign * HUGE})
    assert e.value.field == name and "must be in" in str(e.value)
    assert len(str(e.value)) < 200  # the number is not spelled out


@pytest.mark.parametrize(("x", "y", "field"), [(HUGE, 0, "x"), (0, -HUGE, "y")], ids=["x", "y"])
def test_add_point_with_a_huge_integer_is_out_of_range(x: int, y: int, field: str) -> None:
    s = Session()
    n = len(s.y_train)
    with pytest.raises(PlaygroundError, match=f"{field} must be in") as e:
        s.add_point(x, y, 0)
    assert e.value.field == field and len(s.y_train) == n


# ------------------------------------------------------------------------------ dead neurons

DEAD = {"dataset": "spiral", "classes": 3, "activation": "relu", "layers": [8, 8],
        "features": ["x1", "x2", "x1^2", "sin_x2"], "optimizer": "adam", "lr": 0.01}  # fmt: skip


def _dead_session() -> Session:
    """Layer 1's unit 0 feeds only dead ReLUs of layer 2: its dL/do is exactly 0."""
    s = Session(DEAD)
    s.step(3)
    lin2 = s.model.linear_layers()[1]
    lin2.weight.data[:] = 0.1
    lin2.bias.data[:] = -1e6  # every unit of layer 2 is off for every input
    return s


def test_a_zero_upstream_gradient_shows_zeros_not_unknowns() -> None:
    s = _dead_session()
    v = s.neuron(1, 0, 3)
    assert v["dL_do"] == 0.0
    for node in v["graph"]["nodes"]:
        assert node["grad"] == 0.0, node
    rows = s.check_gradient(1, 0, 3)["rows"]
    assert [r["name"] for r in rows] == ["w1", "w2", "w3", "w4", "b"]
    for r in rows:
        assert r["analytic"] == 0.0 and r["numerical"] == 0.0 and r["abs_error"] == 0.0


def test_the_reported_dead_neuron_case_checks_its_gradient() -> None:
    s = Session(DEAD)
    s.step(200)
    v = s.neuron(1, 0, 3)
    assert all(n["grad"] is not None for n in v["graph"]["nodes"])
    rows = s.check_gradient(1, 0, 3)["rows"]
    assert all(isinstance(r["analytic"], float) for r in rows)
    assert all(r["rel_error"] < 1e-5 or abs(r["analytic"] - r["numerical"]) < 1e-8 for r in rows)


# ------------------------------------------------------------------------------ error fields


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.neuron(9, 0, 0), "layer"),
        (lambda s: s.neuron(1, 99, 0), "unit"),
        (lambda s: s.neuron(1, 0, -1), "sample"),
        (lambda s: s.check_gradient(1, 99, 0), "unit"),
        (lambda s: s.set_hidden_view(5, 0, 1), "layer"),
        (lambda s: s.set_hidden_view(1, 99, 1), "i"),
        (lambda s: s.set_hidden_view(1, 0, 99), "j"),
        (lambda s: s.add_point(5, 0, 0), "x"),
        (lambda s: s.add_point(0, "a", 0), "y"),
        (lambda s: s.add_point(0, 0, 7), "label"),
        (lambda s: s.load_csv(5), "text"),
        (lambda s: s.load_csv("0,0,0\n"), "text"),
    ],
)
def test_playground_errors_name_their_field(call: Any, field: str) -> None:
    with pytest.raises(PlaygroundError) as e:
        call(Session())
    assert e.value.field == field and field in str(e.value)


def test_a_fractional_csv_label_is_reported_as_such() -> None:
    rep = Session().load_csv("0,0,0\n0,0,1.5\n1,1,1\n2,2,1\n-1,-1,0\n0,1,x\n")
    assert rep["rows"] == 4
    assert [b["line"] for b in rep["bad"]] == [2, 6]
    assert all(b["reason"] == "label must be an integer 0..4" for b in rep["bad"])


# ------------------------------------------------------------------------------ epochs


def test_epoch_counts_completed_passes_over_the_training_set() -> None:
    s = Session({"batch_size": 10})  # 300 points, 150 for training
    assert len(s.y_train) == 150
    s.step(14)
    assert s.epoch == 0
    s.step(1)  # step 15: 150 points seen, one pass complete
    assert s.epoch == 1 == 15 * 10 // 150
    s.step(1)
    assert s.epoch == 1
    s.step(14)
    assert s.epoch == 2 and s.frame(full=False)["epoch"] == 2
    # a batch that does not divide the set: each pass is 3 batches of 40 (30 points left
    # out, reshuffled into the next pass)
    s.set_params({"batch_size": 40})
    s.reset()
    s.step(2)
    assert s.epoch == 0
    s.step(1)
    assert s.epoch == 1
    s.step(3)
    assert s.epoch == 2


def test_a_point_added_after_a_counted_pass_starts_the_next_pass() -> None:
    s = Session({"batch_size": 10})  # 150 training points
    s.step(15)
    assert s.epoch == 1
    for i in range(10):  # a batch's worth: the pass just counted must not take them
        s.add_point(0.1 * i, -0.5, 1)
    s.step(1)
    assert s.epoch == 1  # (the old count: 2, one batch after the pass it had counted)
    s.step(15)
    assert s.epoch == 2  # 16 batches of a fresh pass over 160 points
    assert sorted(s._order.tolist()) == list(range(160))  # the new points in the new pass
    s.step(1)
    assert s.epoch == 2
    s.step(14)
    assert s.epoch == 2
    s.add_point(0.5, 0.5, 0)  # mid-pass: it joins the pass under way (161 points)
    s.step(1)
    assert s.epoch == 3
    # added mid-pass, the point joins the pass under way, which is counted once, at its end
    s.step(5)
    s.add_point(0.25, 0.25, 0)
    assert s._order[-1] == 161
    s.step(10)
    assert s.epoch == 3
    s.step(1)  # 16 batches of 10 over 162 points: complete
    assert s.epoch == 4
    s.step(15)
    assert s.epoch == 4


# ------------------------------------------------------------------------------ saved runs


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    s = Session({"dataset": "spiral", "classes": 3, "layers": [3]})
    s.step(2)
    return save_run(s, tmp_path / "run")


def _edit(run: Path, change: Any) -> None:
    path = run / "checkpoint.json"
    meta = json.loads(path.read_text())
    change(meta["playground"])
    meta["meta_sha256"] = meta_digest(meta)
    path.write_text(json.dumps(meta))


def _set(key: str, *index: Any, value: Any) -> Any:
    def change(pg: dict[str, Any]) -> None:
        target = pg[key]
        for i in index[:-1]:
            target = target[i]
        if index:
            target[index[-1]] = value
        else:
            pg[key] = value

    return change


EDITS = [
    (_set("y_train", 0, value=7), "y_train[0]: labels must be integers 0..2"),
    (_set("y_train", 0, value=-1), "y_train[0]: labels must be integers 0..2"),
    (_set("y_train", 0, value=0.5), "y_train[0]: labels must be integers 0..2"),
    (_set("y_test", 1, value=True), "y_test[1]: labels must be integers 0..2"),
    (_set("y_test", 2, value="1"), "y_test[2]: labels must be integers 0..2"),
    (_set("x_train", 0, 1, value=None), "x_train[0][1]: expected a finite number"),
    (_set("x_test", 3, 0, value="0.5"), "x_test[3][0]: expected a finite number"),
    (_set("x_train", 0, 1, value=10**400), "x_train[0][1]: expected a finite number"),
    (_set("x_train", 2, value=[0.1]), "x_train[2]: expected 2 values"),
    (_set("x_train", value={"a": 1}), "x_train: expected a list"),
    (_set("y_train", value=[0, 1]), "y_train: expected 150 values"),
    (_set("weights", "0.weight", 0, 0, value=None), "weights['0.weight'][0][0]: expected a"),
    (_set("weights", "0.weight", 1, value=[1.0]), "weights['0.weight'][1]: expected 2 values"),
    (_set("weights", "2.bias", value=[0.0, 0.0]), "weights['2.bias']: expected 3 values"),
    (_set("weights", "0.bias", value=None), "weights['0.bias']: expected a list"),
    (_set("weights", "4.weight", value=[[0.0]]), "weights: unknown entry '4.weight'"),
    (_set("history", 0, value=[1, "a", 2]), "history[0]"),
]


@pytest.mark.parametrize(("change", "message"), EDITS)
def test_an_edited_saved_run_is_refused_naming_the_field(
    saved: Path, change: Any, message: str
) -> None:
    _edit(saved, change)
    with pytest.raises(CheckpointError) as e:
        load_run(saved)
    assert "the playground entry does not fit: " + message in str(e.value)


def test_a_missing_weight_is_refused(saved: Path) -> None:
    _edit(saved, lambda pg: pg["weights"].pop("2.bias"))
    with pytest.raises(CheckpointError, match=r"weights: missing '2.bias'"):
        load_run(saved)


def test_an_edited_custom_run_takes_labels_up_to_4(tmp_path: Path) -> None:
    s = Session()
    s.load_csv("0,0,0\n1,1,1\n2,2,4\n-1,-1,3\n0,1,2\n1,0,0\n")
    run = save_run(s, tmp_path / "run")
    assert np.array_equal(load_run(run).y_train, s.y_train)
    _edit(run, _set("y_train", 0, value=5))
    with pytest.raises(CheckpointError, match=r"y_train\[0\]: labels must be integers 0..4"):
        load_run(run)


def test_export_html_of_an_edited_run_is_one_line_not_unexpected(saved: Path) -> None:
    _edit(saved, _set("y_train", 0, value=7))
    out = saved.parent / "page.html"
    r = subprocess.run(
        [GRAPHGRAD, "export-html", str(saved), "-o", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "y_train[0]: labels must be integers 0..2" in r.stderr
    assert "unexpected" not in r.stderr and "Warning" not in r.stderr and not out.exists()


# ------------------------------------------------------------------------------ the server

pytest.importorskip("starlette", reason="needs the extra graphgrad[playground]")
pytest.importorskip("httpx2", reason="starlette's TestClient needs httpx2")
from starlette.testclient import TestClient  # noqa: E402

from graphgrad.playground import create_app  # noqa: E402
from playground_fixtures import open_session as _open  # noqa: E402
from playground_fixtures import until as _until  # noqa: E402


def test_a_binary_frame_gets_an_error_and_the_session_goes_on() -> None:
    client = TestClient(create_app())
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_bytes(b'{"type":"step"}')
        err = _until(ws, "error")
        assert err == {
            "type": "error",
            "field": "message",
            "message": "binary frames are not accepted; send JSON text",
        }
        ws.send_json({"type": "step", "n": 2})
        assert _until(ws, "frame")["step"] == 2


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "set", "params": {"lr": HUGE}}, "lr"),
        ({"type": "set", "params": {"init_std": -HUGE}}, "init_std"),
        ({"type": "add_point", "x": 0, "y": -HUGE, "label": 0}, "y"),
        ({"type": "add_point", "x": HUGE, "y": 0, "label": 0}, "x"),
        ({"type": "add_point", "x": 5, "y": 0, "label": 0}, "x"),
        ({"type": "neuron", "layer": 1, "unit": 99}, "unit"),
        ({"type": "check_gradient", "layer": 9, "unit": 0}, "layer"),
        ({"type": "hidden_view", "layer": 1, "i": 0, "j": 99}, "j"),
        ({"type": "csv", "text": 5}, "text"),
    ],
)
def test_errors_over_the_socket_name_their_field(message: dict[str, Any], field: str) -> None:
    client = TestClient(create_app())
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_text(json.dumps(message))
        err = _until(ws, "error")
        assert err["field"] == field and field in err["message"], err
        assert "internal error" not in err["message"]


def test_a_binary_frame_to_the_real_server_logs_no_traceback() -> None:
    """Through uvicorn, as the CLI serves it: no 'Exception in ASGI application'."""
    pytest.importorskip("uvicorn", reason="needs the extra graphgrad[playground]")
    code = """
import asyncio, json, logging, sys
sys.path.insert(0, "tests")
from playground_fixtures import running_server
import websockets

async def main(url):
    async with websockets.connect(url) as ws:
        kinds = set()
        while kinds != {"state", "frame"}:
            kinds.add(json.loads(await ws.recv())["type"])
        await ws.send(b'{"type":"step"}')
        print(json.loads(await ws.recv())["message"])
        await ws.send(json.dumps({"type": "step", "n": 3}))
        print(json.loads(await ws.recv())["step"])

with running_server() as base:
    asyncio.run(main(base.replace("http", "ws") + "/ws"))
"""
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["binary frames are not accepted; send JSON text", "3"]
    assert "Traceback" not in r.stderr and "Exception" not in r.stderr, r.stderr
