"""The playground's server and sessions without a browser: every validation rule, the WebSocket
protocol (errors never crash it), sessions per tab, idle timeout, static files, and the
numbers the page shows (inside view, gradient check, kinks) against graphgrad's own."""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad.playground import ParamError, Params, PlaygroundError, Session, validate_params
from graphgrad.playground._session import MAX_HISTORY

# ------------------------------------------------------------------------------ validation

BAD = [
    ("colour", "red", "colour"),  # unknown field
    ("dataset", "mnist", "dataset"),
    ("dataset", 3, "dataset"),
    ("classes", 1, "classes"),
    ("classes", 6, "classes"),
    ("classes", 2.5, "classes"),
    ("classes", True, "classes"),
    ("noise", -0.1, "noise"),
    ("noise", 1.5, "noise"),
    ("noise", float("nan"), "noise"),
    ("n_points", 9, "n_points"),
    ("n_points", 2001, "n_points"),
    ("train_ratio", 0.05, "train_ratio"),
    ("train_ratio", 0.95, "train_ratio"),
    ("seed", -1, "seed"),
    ("seed", 2**31, "seed"),
    ("features", [], "features"),
    ("features", ["x3"], "features"),
    ("features", ["x1", "x1"], "features"),
    ("features", "x1", "features"),
    ("layers", [2] * 7, "layers"),
    ("layers", [0], "layers"),
    ("layers", [9], "layers"),
    ("layers", ["2"], "layers"),
    ("layers", 2, "layers"),
    ("activation", "gelu", "activation"),
    ("init", "orthogonal", "init"),
    ("init_std", 0, "init_std"),
    ("init_std", 10.5, "init_std"),
    ("lr", 0, "lr"),
    ("lr", -0.1, "lr"),
    ("lr", 10.001, "lr"),
    ("lr", float("nan"), "lr"),
    ("lr", float("inf"), "lr"),
    ("lr", "0.1", "lr"),
    ("lr", True, "lr"),
    ("lr", None, "lr"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", 2001, "batch_size"),
    ("optimizer", "rmsprop", "optimizer"),
    ("reg", "l3", "reg"),
    ("reg_rate", -0.1, "reg_rate"),
    ("reg_rate", 1.1, "reg_rate"),
    ("steps_per_update", 0, "steps_per_update"),
    ("steps_per_update", 101, "steps_per_update"),
    ("grid", 9, "grid"),
    ("grid", 201, "grid"),
]


@pytest.mark.parametrize(("name", "value", "field"), BAD)
def test_validate_rejects(name: str, value: Any, field: str) -> None:
    base = Params()
    with pytest.raises(ParamError) as e:
        validate_params({name: value}, base)
    assert e.value.field == field
    assert field in str(e.value)
    assert base == Params()  # unchanged


@pytest.mark.parametrize(
    "update",
    [
        {"lr": 10}, {"lr": 1e-6}, {"layers": []}, {"layers": [8] * 6}, {"layers": [1]},
        {"classes": 5, "dataset": "spiral"}, {"noise": 0}, {"noise": 1},
        {"features": ["sin_x2", "x1"]}, {"init": "normal", "init_std": 10},
    ],
)  # fmt: skip
def test_validate_accepts_the_range_ends(update: dict[str, Any]) -> None:
    p = validate_params(update)
    for k, v in update.items():
        if k != "features":
            assert getattr(p, k) == v
    assert validate_params({"features": ["sin_x2", "x1"]}).features == ["x1", "sin_x2"]


def test_validate_rejects_a_non_object() -> None:
    with pytest.raises(ParamError, match="params"):
        validate_params([1, 2])


# ------------------------------------------------------------------------------ sessions


def _model_loss(s: Session, layer: int, unit: int, sample: int) -> tuple[Any, Any, Any]:
    """graphgrad's own forward/backward on one sample, written out here: (a, z, dL/dW)."""
    lin = s.model.linear_layers()
    x = s.x_train[sample : sample + 1]
    h = gg.tensor(np.stack([x[:, 0], x[:, 1]], axis=1))  # features x1, x2
    z = None
    for k, layer_k in enumerate(lin, 1):
        zk = gg.linear(h, layer_k.weight, layer_k.bias)
        if k == layer:
            z = zk
        h = zk if k == len(lin) else gg.tanh(zk)
        if k == layer:
            a = h
    s.model.zero_grad()
    loss = gg.cross_entropy(h, np.array([s.y_train[sample]]))
    loss.backward()
    grad_w = lin[layer - 1].weight.grad[unit].copy()
    grad_b = lin[layer - 1].bias.grad[unit].copy()
    s.model.zero_grad()
    assert z is not None
    return a.data[0, unit], z.data[0, unit], (grad_w, grad_b, float(loss.data))


@pytest.mark.parametrize(("layer", "unit"), [(1, 0), (2, 1), (3, 1)])
def test_inside_view_equals_graphgrad(layer: int, unit: int) -> None:
    s = Session({"dataset": "xor", "layers": [3, 2], "activation": "tanh", "lr": 0.1})
    s.step(20)
    view = s.neuron(layer, unit, 5)
    nodes = {n["label"]: n for n in view["graph"]["nodes"]}
    a, z, (gw, gb, loss) = _model_loss(s, layer, unit, 5)
    assert nodes["o"]["value"] == pytest.approx(a, rel=1e-12, abs=1e-14)
    assert nodes["z" if layer < 3 else "o"]["value"] == pytest.approx(z, rel=1e-12, abs=1e-14)
    for i, g in enumerate(gw, 1):
        assert nodes[f"w{i}"]["grad"] == pytest.approx(g, rel=1e-9, abs=1e-14)
    assert nodes["b"]["grad"] == pytest.approx(gb, rel=1e-9, abs=1e-14)
    assert view["loss"] == pytest.approx(loss, rel=1e-12)
    # an input's gradient along this neuron: dL/dx1 = w1 dL/dp1
    x1 = view["graph"]["nodes"][0]
    assert x1["label"] in ("x1", f"h{layer - 1}.0") and x1["grad"] == pytest.approx(
        nodes["w1"]["value"] * nodes["p1"]["grad"], rel=1e-12
    )
    # the local gradient on the edge w1 -> p1 is x1, on b -> z is 1
    ids = {n["label"]: n["id"] for n in view["graph"]["nodes"]}
    local = {(e["source"], e["target"]): e["local_grad"] for e in view["graph"]["edges"]}
    x1 = view["graph"]["nodes"][ids["w1"]]["value"]
    assert local[(ids["w1"], ids["p1"])] == pytest.approx(
        nodes[view["graph"]["nodes"][0]["label"]]["value"]
    )
    assert x1 == pytest.approx(s.model.linear_layers()[layer - 1].weight.data[unit, 0])


def test_check_gradient_numerical_matches_analytic() -> None:
    s = Session({"dataset": "spiral", "classes": 3, "layers": [4, 3], "activation": "elu"})
    s.step(5)
    rows = s.check_gradient(2, 2, 7)["rows"]
    assert [r["name"] for r in rows] == ["w1", "w2", "w3", "w4", "b"]
    lin = s.model.linear_layers()
    s.model.zero_grad()
    with gg.enable_grad():
        out = s.model(gg.tensor(s.x_train[7:8]))
        gg.cross_entropy(out, s.y_train[7:8]).backward()
    gw, grad_b = lin[1].weight.grad[2].copy(), lin[1].bias.grad[2]
    s.model.zero_grad()
    for r, g in zip(rows, [*gw, grad_b], strict=True):
        assert r["analytic"] == pytest.approx(g, rel=1e-9, abs=1e-13)
        assert r["numerical"] == pytest.approx(g, rel=1e-5, abs=1e-8)


def test_kinks_equal_the_count_from_the_weights() -> None:
    s = Session({"dataset": "sine", "layers": [6], "activation": "relu", "features": ["x1"]})
    s.step(30)
    lin = s.model.linear_layers()[0]
    w, b = lin.weight.data[:, 0], lin.bias.data
    where = -b / w
    expected = np.sort(where[(where > -3) & (where < 3)])
    k = s.kinks()
    assert len(k) == len(expected)
    assert np.allclose(k, expected, atol=1e-3)
    assert s.frame()["curve"]["kink_count"] == len(expected) <= 6
    # biases start at 0 (every kink at x = 0): move them so that some leave [-3, 3] and two
    # lie close together, so the count is not simply the number of units
    lin.weight.data[:, 0] = [1.0, -2.0, 0.5, 1.0, 1.0, -0.25]
    lin.bias.data[:] = [2.5, -1.0, 2.0, -3.5, -0.6, 0.5]  # kinks at -2.5, -0.5, -4, 3.5, 0.6, 2
    k = s.kinks()
    assert len(k) == 4 and np.allclose(k, [-2.5, -0.5, 0.6, 2.0], atol=1e-3)
    assert s.frame()["curve"]["kink_count"] == 4


def test_nan_loss_stops_and_says_so() -> None:
    s = Session({"dataset": "abs", "layers": [8, 8], "activation": "relu", "lr": 10,
                 "features": ["x1"], "init": "normal", "init_std": 3})  # fmt: skip
    s.step(200)
    assert s.diverged is not None and "diverged" in s.diverged
    steps = s.step_count
    s.step(5)
    assert s.step_count == steps  # stopped
    assert s.frame()["diverged"] == s.diverged


def test_set_params_keeps_weights_for_lr_and_rebuilds_for_layers() -> None:
    s = Session()
    w0 = s.model.linear_layers()[0].weight.data.copy()
    s.step(3)
    s.set_params({"lr": 0.5})
    assert s.step_count == 3 and s.opt.lr == 0.5
    s.set_params({"layers": [3]})
    assert s.step_count == 0 and len(s.model.linear_layers()) == 2
    with pytest.raises(ParamError):
        s.set_params({"layers": [3], "lr": 0})
    assert s.params.layers == [3] and s.params.lr == 0.5
    s2 = Session()
    assert np.array_equal(s2.model.linear_layers()[0].weight.data, w0)  # same seed, same weights


def test_add_point_and_its_validation() -> None:
    s = Session()
    n = len(s.y_train)
    s.add_point(0.5, -1.0, 1)
    assert len(s.y_train) == n + 1 and s.y_train[-1] == 1
    for args, msg in [((4.0, 0.0, 0), "x must be in"), ((0.0, float("nan"), 0), "finite"),
                      ((0.0, 0.0, 2), "label"), (("a", 0.0, 0), "x must be")]:  # fmt: skip
        with pytest.raises(PlaygroundError, match=msg):
            s.add_point(*args)


def test_csv_upload_reports_bad_rows_and_limits() -> None:
    s = Session()
    text = "x,y,label\n0.1,0.2,0\n0.3,-0.5,1\nfoo,1,0\n0.5,0.5\n1,1,9\n-1,-1,1\n2,2,0\n9,0,1\n"
    rep = s.load_csv(text)
    assert rep["rows"] == 4 and rep["bad_rows"] == 4
    assert [b["line"] for b in rep["bad"]] == [4, 5, 6, 9]
    assert "not a number" in rep["bad"][0]["reason"] and "3 fields" in rep["bad"][1]["reason"]
    assert len(s.y_train) + len(s.y_test) == 4
    with pytest.raises(PlaygroundError, match="larger than"):
        s.load_csv("0,0,0\n" * 40_000)
    with pytest.raises(PlaygroundError, match="good rows"):
        s.load_csv("a,b,c\n1,2\n")
    with pytest.raises(PlaygroundError, match="unreadable"):
        s.load_csv("0,0,0\n" + "1" * 140_000 + ",2,0\n")  # a field over csv's limit


def test_save_load_run_and_export(tmp_path: Any) -> None:
    from graphgrad.playground import export_html, load_run, save_run

    s = Session({"dataset": "moons", "layers": [5], "lr": 0.1})
    s.step(10)
    s.add_point(0.0, 0.0, 1)
    save_run(s, tmp_path / "run")
    r = load_run(tmp_path / "run")
    for a, b in zip(s.model.parameters(), r.model.parameters(), strict=True):
        assert np.array_equal(a.data, b.data)
    assert np.array_equal(r.x_train, s.x_train) and r.step_count == 10
    assert r.frame()["boundary"]["cls"] == s.frame()["boundary"]["cls"]
    html = export_html(r)
    assert '<script id="snapshot"' in html
    assert set(re.findall(r"https?://[^\"' ]+", html)) == {"http://www.w3.org/2000/svg"}
    snap = json.loads(
        html.split('<script id="snapshot" type="application/json">')[1].split("</script>")[0]
    )
    assert set(snap["neurons"]) == {"1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1"}


# ------------------------------------------------------------------------------ the server

starlette = pytest.importorskip("starlette", reason="needs the extra graphgrad[playground]")
pytest.importorskip("httpx2", reason="starlette's TestClient needs httpx2")
from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from graphgrad.playground import create_app  # noqa: E402
from graphgrad.playground._app import loopback_hosts  # noqa: E402
from playground_fixtures import open_session as _open  # noqa: E402
from playground_fixtures import until as _until  # noqa: E402


def test_page_and_static_files_only_from_the_package() -> None:
    client = TestClient(create_app())
    r = client.get("/")
    assert r.status_code == 200 and "graphgrad playground" in r.text
    assert client.get("/static/index.html").status_code == 200
    bad_paths = [
        "/static/../_app.py", "/static/..%2f_app.py", "/static/%2e%2e/_app.py",
        "/static/..%2f..%2f..%2fpyproject.toml", "/static//etc/passwd", "/_app.py",
    ]  # fmt: skip
    for bad in bad_paths:
        r = client.get(bad)
        assert r.status_code == 404, bad
        assert "import" not in r.text


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("{not json", "message"),
        ("[1, 2]", "type"),
        ('{"type": 3}', "type"),
        ('{"type": "fly"}', "type"),
        ('{"type": "set", "params": {"lr": 0}}', "lr"),
        ('{"type": "set", "params": {"lr": NaN}}', "lr"),
        ('{"type": "set", "params": {"lr": 1e999}}', "lr"),
        ('{"type": "set", "params": {"layers": [1,2,3,4,5,6,7]}}', "layers"),
        ('{"type": "set", "params": {"speed": 2}}', "speed"),
        ('{"type": "set", "params": 5}', "params"),
        ('{"type": "set", "params": {}, "extra": 1}', "extra"),
        ('{"type": "step", "n": 0}', "n"),
        ('{"type": "step", "n": "5"}', "n"),
        ('{"type": "neuron", "layer": 9, "unit": 0, "sample": 0}', "layer"),
        ('{"type": "neuron", "layer": 1, "unit": 0, "sample": -1}', "sample"),
        ('{"type": "add_point", "x": 1e9, "y": 0, "label": 0}', "x"),
        ('{"type": "csv", "text": 5}', "text"),
        ('{"type": "hidden_view", "layer": 5, "i": 0, "j": 1}', "layer"),
        ('{"type": "step", "n": 1' + "0" * 5000 + "}", "message"),  # int() refuses 4300+ digits
        ('{"type": "set", "params": {"seed": 1' + "0" * 5000 + "}}", "message"),
    ],
)
def test_bad_messages_get_an_error_reply_and_the_session_goes_on(message: str, field: Any) -> None:
    client = TestClient(create_app())
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_text(message)
        err = _until(ws, "error")
        assert err["message"]
        if field is not None:
            assert err["field"] == field and field in err["message"]
        ws.send_json({"type": "step", "n": 2})
        assert _until(ws, "frame")["step"] == 2


def test_tabs_are_independent_and_a_closed_tab_frees_its_session() -> None:
    app = create_app()
    client = TestClient(app)
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        _open(a)
        _open(b)
        assert len(app.state.sessions) == 2
        a.send_json({"type": "set", "params": {"dataset": "xor", "lr": 0.2}})
        _until(a, "state")
        _until(a, "frame")
        a.send_json({"type": "step", "n": 3})
        assert _until(a, "frame")["step"] == 3
        b.send_json({"type": "step", "n": 1})
        fb = _until(b, "frame")
        assert fb["step"] == 1
        b.send_json({"type": "pause"})
        assert _until(b, "state")["params"]["dataset"] == "circles"
    deadline = time.monotonic() + 5
    while app.state.sessions and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(app.state.sessions) == 0
    assert client.get("/api/health").json()["sessions"] == 0


def test_play_streams_frames_and_an_idle_session_stops() -> None:
    client = TestClient(create_app(idle_timeout=0.5))
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_json({"type": "play"})
        assert _until(ws, "state")["playing"] is True
        steps = []
        t0 = time.monotonic()
        while True:
            m = ws.receive_json()
            if m["type"] == "frame":
                steps.append(m["step"])
                ws.send_json({"type": "ack"})  # acks are not user input: the timeout runs
            elif m["type"] == "idle":
                break
            assert time.monotonic() - t0 < 30
        assert len(steps) >= 2 and steps == sorted(steps)
        assert "no input" in m["message"]
        assert _until(ws, "state")["playing"] is False


def test_diverging_network_stops_over_the_socket() -> None:
    client = TestClient(create_app())
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        params = {"dataset": "abs", "layers": [8, 8], "activation": "relu", "lr": 10,
                  "init": "normal", "init_std": 3}  # fmt: skip
        ws.send_json({"type": "set", "params": params})
        _until(ws, "frame")
        ws.send_json({"type": "step", "n": 200})
        f = _until(ws, "frame")
        assert f["diverged"] and "diverged" in f["diverged"]
        assert f["train_loss"] is None or not math.isfinite(f["train_loss"]) or f["diverged"]
        ws.send_json({"type": "play"})
        assert "diverged" in _until(ws, "error")["message"]


def test_inside_view_and_gradcheck_over_the_socket() -> None:
    client = TestClient(create_app())
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_json({"type": "neuron", "layer": 1, "unit": 2, "sample": 3})
        v = _until(ws, "neuron")
        assert {n["label"] for n in v["graph"]["nodes"]} >= {"x1", "x2", "w1", "w2", "b", "z", "o"}
        ws.send_json({"type": "check_gradient", "layer": 1, "unit": 2, "sample": 3})
        rows = _until(ws, "gradcheck")["rows"]
        assert all(r["rel_error"] < 1e-5 or abs(r["analytic"]) < 1e-9 for r in rows)
        ws.send_json({"type": "hidden_view", "layer": 1, "i": 0, "j": 1})
        hv = _until(ws, "frame")["hidden_view"]
        assert len(hv["lines"]) == 26 and len(hv["points"]) == 150


def test_save_button_writes_a_checkpoint_export_html_reads(tmp_path: Any) -> None:
    from graphgrad.playground import load_run

    client = TestClient(create_app(runs_dir=tmp_path / "runs"))
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_json({"type": "step", "n": 4})
        _until(ws, "frame")
        ws.send_json({"type": "save"})
        path = _until(ws, "saved")["path"]
    assert path.startswith(str(tmp_path / "runs"))
    assert load_run(path).step_count == 4
    with TestClient(create_app()).websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_json({"type": "save"})
        assert "runs-dir" in _until(ws, "error")["message"]


def test_features_and_neuron_maps_are_the_networks_own() -> None:
    import base64

    from graphgrad.playground._session import NEURON_GRID

    s = Session({"dataset": "circles", "features": ["x1", "x2", "x1^2", "x2^2", "x1x2",
                 "sin_x1", "sin_x2"], "layers": [3], "grid": 37})  # fmt: skip
    s.step(5)
    lin = s.model.linear_layers()[0]
    assert lin.weight.shape == (3, 7)
    f = s.frame()
    maps = f["neurons"][0]
    assert len(maps) == 3
    # neuron j's map: tanh(w_j . phi(x) + b_j) at the lattice points it samples, scaled by max
    t = np.linspace(-3, 3, 37)[np.round(np.linspace(0, 36, NEURON_GRID)).astype(int)]
    xx, yy = np.meshgrid(t, -t)
    x1, x2 = xx.ravel(), yy.ravel()
    phi = np.stack([x1, x2, x1 * x1, x2 * x2, x1 * x2, np.sin(x1), np.sin(x2)], axis=1)
    h = np.tanh(phi @ lin.weight.data.T + lin.bias.data)
    for j, m in enumerate(maps):
        q = np.frombuffer(base64.b64decode(m["map"]), dtype=np.uint8).astype(float)
        assert m["max"] == pytest.approx(np.abs(h[:, j]).max(), rel=1e-5)  # drawn in float32
        expected = np.clip(127.5 + 127.5 * h[:, j] / m["max"] + 0.5, 0, 255) // 1
        assert np.max(np.abs(q - expected)) <= 1
    cls = np.frombuffer(base64.b64decode(f["boundary"]["cls"]), dtype=np.uint8)
    assert cls.shape == (37 * 37,) and set(np.unique(cls)) <= {0, 1}


def test_an_unexpected_error_is_replied_and_the_session_goes_on(monkeypatch: Any) -> None:
    def broken(self: Session, *args: Any) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Session, "neuron", broken)
    client = TestClient(create_app())
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_json({"type": "neuron", "layer": 1, "unit": 0, "sample": 0})
        err = _until(ws, "error")
        assert err["message"] == "internal error: RuntimeError: simulated bug"
        ws.send_json({"type": "step", "n": 1})
        assert _until(ws, "frame")["step"] == 1


def test_hidden_space_is_the_layer_as_the_network_computes_it() -> None:
    s = Session({"dataset": "moons", "layers": [4, 3], "activation": "relu"})
    s.step(5)
    s.set_hidden_view(2, 2, 0)
    hv = s.frame()["hidden_view"]
    lin = s.model.linear_layers()
    t = np.linspace(-3, 3, 13)
    line = np.stack([np.linspace(-3, 3, 49), np.full(49, t[4])], 1)  # the 5th horizontal line
    h1 = np.maximum(line @ lin[0].weight.data.T + lin[0].bias.data, 0)
    h2 = np.maximum(h1 @ lin[1].weight.data.T + lin[1].bias.data, 0)
    assert np.allclose(hv["lines"][13 + 4], h2[:, [2, 0]], atol=1e-4)
    with pytest.raises(PlaygroundError, match="layer"):
        s.set_hidden_view(3, 0, 1)
    with pytest.raises(PlaygroundError, match="j must be"):
        s.set_hidden_view(2, 0, 3)


def test_an_abandoned_tab_is_told_and_its_session_freed() -> None:
    app = create_app(session_timeout=0.6)
    client = TestClient(app)
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_json({"type": "step", "n": 1})  # user input restarts the clock
        _until(ws, "frame")
        assert len(app.state.sessions) == 1
        err = _until(ws, "error")
        assert err["field"] == "session" and "reload the page" in err["message"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.reason == "idle"
    assert len(app.state.sessions) == 0


def test_loss_history_stays_bounded() -> None:
    s = Session({"dataset": "xor", "layers": [2], "batch_size": 50})
    for _ in range(MAX_HISTORY + 5):
        s.step(1)
    assert MAX_HISTORY // 2 <= len(s.history) <= MAX_HISTORY
    steps = [h[0] for h in s.history]
    assert steps == sorted(steps) and steps[-1] == s.step_count == MAX_HISTORY + 5
    assert steps[0] <= 2  # thinned evenly, the start of the run still shown


def test_other_sites_pages_and_other_host_names_are_refused() -> None:
    app = create_app(allowed_hosts=[*(loopback_hosts("127.0.0.1") or []), "testserver"])
    client = TestClient(app)
    # a page from another site opening a socket to the playground (cross-site WebSocket)
    evil = {"origin": "http://evil.example"}
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/ws", headers=evil),
    ):
        pass
    assert refused.value.code == 1008 and len(app.state.sessions) == 0
    with client.websocket_connect("/ws", headers={"origin": "http://testserver"}) as ws:
        _open(ws)  # the page's own origin
    # DNS rebinding: the attacker's name resolving to 127.0.0.1 arrives as its Host
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200
    assert loopback_hosts("0.0.0.0") is None  # listening everywhere: the user chose so


def test_saves_per_tab_are_distinct_and_bounded(tmp_path: Any, monkeypatch: Any) -> None:
    from graphgrad.playground import _app

    monkeypatch.setattr(_app, "MAX_SAVES_PER_TAB", 2)
    client = TestClient(create_app(runs_dir=tmp_path))
    with client.websocket_connect("/ws") as ws:
        _open(ws)
        paths = []
        for _ in range(2):  # within one second: still two runs
            ws.send_json({"type": "save"})
            paths.append(_until(ws, "saved")["path"])
        ws.send_json({"type": "save"})
        err = _until(ws, "error")
    assert len(set(paths)) == 2 and err["field"] == "save" and "at most 2" in err["message"]
    assert len(list(tmp_path.iterdir())) == 2


def test_from_a_1d_set_back_to_2d_the_features_take_x2_again() -> None:
    s = Session({"dataset": "sine"})
    assert s.params.features == ["x1"]
    s.set_params({"dataset": "circles"})
    assert s.params.features == ["x1", "x2"] and s.model.linear_layers()[0].weight.shape[1] == 2
    s.set_params({"dataset": "abs"})
    s.load_csv("0,0,0\n1,1,1\n2,2,1\n-1,-1,0\n")  # a CSV is 2-D too
    assert s.params.features == ["x1", "x2"]
    # a link that asks for x1 alone keeps it
    assert validate_params({"dataset": "xor", "features": ["x1"]}, s.params).features == ["x1"]
    assert validate_params(
        {"dataset": "xor", "features": ["x1"]}, Params(dataset="sine")
    ).features == ["x1"]
