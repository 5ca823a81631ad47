"""The playground page in a real browser: Playwright driving Debian's chromium (headless).

One server and one browser serve the whole module. Skipped only when chromium is absent
(``apt-get install chromium``; ``scripts/setup.sh`` installs it where it can).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

import graphgrad as gg

pytest.importorskip("starlette", reason="needs the extra graphgrad[playground]")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (test extra)")

from playground_fixtures import CHROMIUM, CHROMIUM_ARGS, running_server  # noqa: E402

if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)",
        allow_module_level=True,
    )

XOR = "#dataset=xor&noise=0&layers=6,6&activation=tanh&optimizer=adam&lr=0.05&steps_per_update=10"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1300, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(20_000)
    yield pg
    ctx.close()
    assert not errors, errors


def _open(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_function("window.pg && pg.params && pg.frame")


def test_page_loads_with_no_request_leaving_loopback(page: Any, server: str) -> None:
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.on("websocket", lambda w: urls.append(w.url))
    _open(page, server + "/")
    page.click("#step")
    page.wait_for_function("pg.frame.step === 1")
    assert page.locator("#net canvas.neuron").count() == 2 + 4 + 2 + 2  # inputs, 4, 2, outputs
    assert any(u.startswith("ws://127.0.0.1") for u in urls)
    for u in urls:
        parsed = urlparse(u)
        assert parsed.scheme in ("http", "ws", "data", "blob") and (
            parsed.scheme in ("data", "blob") or parsed.hostname == "127.0.0.1"
        ), u
    # the decision region is drawn: the output canvas holds both classes' colours
    colours = page.evaluate(
        """() => { const d = document.getElementById('out').getContext('2d')
                     .getImageData(0, 0, 400, 400).data; const s = new Set();
                   for (let i = 0; i < d.length; i += 4 * 97) s.add(d[i] > d[i + 2]);
                   return [...s]; }"""
    )
    assert sorted(colours) == [False, True]


def test_xor_learns_to_test_loss_below_0_1(page: Any, server: str) -> None:
    _open(page, server + "/" + XOR)
    assert page.evaluate("pg.params.dataset") == "xor"
    page.click("#play")
    # the frame that ends the wait, read in the same evaluation (frames keep arriving until
    # the pause below, and a later one's loss may be above 0.1 again: SGD's loss wobbles)
    step, loss = page.wait_for_function(
        "(pg.frame.test_loss < 0.1 || pg.frame.step >= 1500)"
        " && [pg.frame.step, pg.frame.test_loss]",
        timeout=60_000,
    ).json_value()
    page.click("#play")  # pause
    assert loss < 0.1, f"test loss {loss} after {step} steps"
    assert step <= 1500
    assert "test loss" in page.inner_text("#losses").lower()
    # the page's loss history stays bounded on a long run (thinned, the newest kept)
    n, last, new = page.evaluate(  # one synchronous run: no frame arrives in between
        """() => { pg.history = Array.from({length: 1000}, (_, i) => [i - 2000, 1, 1]);
                   const s = pg.frame.step + 1; onFrame({...pg.frame, step: s});
                   return [pg.history.length, pg.history[pg.history.length - 1][0], s]; }"""
    )
    assert n <= 1000 and last == new


def test_changing_layers_redraws_the_network(page: Any, server: str) -> None:
    _open(page, server + "/")
    neurons = page.locator("#net canvas.neuron")
    links = page.locator("#net line.link")
    assert (neurons.count(), links.count()) == (10, 2 * 4 + 4 * 2 + 2 * 2)
    page.click("#addlayer")  # a third hidden layer of 2
    page.wait_for_function("document.querySelectorAll('#net canvas.neuron').length === 12")
    assert links.count() == 2 * 4 + 4 * 2 + 2 * 2 + 2 * 2
    page.locator("#net button.laybtn").first.click()  # + on layer 1: 5 neurons
    page.wait_for_function("document.querySelectorAll('#net canvas.neuron').length === 13")
    assert page.evaluate("pg.params.layers") == [5, 2, 2]
    # the links' colours and widths follow the weights
    w = page.evaluate("pg.frame.weights[0].w")
    line = page.locator('#net line.link[data-layer="1"][data-from="1"][data-to="3"]')
    assert float(line.get_attribute("data-w")) == w[3][1]
    colour = "rgb(8,119,189)" if w[3][1] >= 0 else "rgb(245,147,34)"
    assert line.get_attribute("stroke") == colour
    # six hidden layers of 8: every neuron and button lies inside the network's panel
    page.evaluate("setParams({layers: [8, 8, 8, 8, 8, 8]})")
    page.wait_for_function("document.querySelectorAll('#net canvas.neuron').length === 52")
    right = page.evaluate("document.getElementById('net').getBoundingClientRect().right")
    items = page.evaluate(
        "[...document.querySelectorAll('#net canvas.neuron, #net button.laybtn')]"
        ".map((e) => e.getBoundingClientRect().right)"
    )
    assert max(items) <= right, (max(items), right)


def test_bad_learning_rate_shows_the_error(page: Any, server: str) -> None:
    _open(page, server + "/")
    for bad in ["20", "0", "-1", "abc"]:
        page.fill("#lr", bad)
        page.dispatch_event("#lr", "change")
        page.wait_for_function("document.getElementById('error').textContent.startsWith('lr')")
        assert "lr" in page.inner_text("#error")
        assert page.evaluate("pg.params.lr") == 0.03  # unchanged
        page.evaluate("document.getElementById('error').textContent = ''")
    page.fill("#lr", "0.5")
    page.dispatch_event("#lr", "change")
    page.wait_for_function("pg.params.lr === 0.5")
    assert page.inner_text("#error") == ""


def test_inside_view_equals_graphgrad(page: Any, server: str) -> None:
    _open(page, server + "/#dataset=moons&layers=3,2&activation=tanh&lr=0.1")
    page.click("#step")
    page.wait_for_function("pg.frame.step === 1")
    page.fill("#sample", "4")
    page.click('#net canvas[data-layer="2"][data-unit="1"]')
    page.wait_for_function("pg.neuronView && pg.neuronView.sample === 4")
    page.click("#showgrad")
    shown = page.evaluate(
        """() => [...document.querySelectorAll('#inside g.gnode')].map(g =>
             [g.dataset.label, Number(g.dataset.value), g.dataset.grad])"""
    )
    weights, x, y = page.evaluate("[pg.frame.weights, pg.neuronView.x, pg.neuronView.label]")
    # graphgrad, here: the same network on the same sample, forward and backward
    params = [gg.tensor(np.array(layer[k]), requires_grad=True) for layer in weights for k in "wb"]
    h = gg.tensor(np.array([x]))
    z1 = gg.linear(h, params[0], params[1])
    a1 = gg.tanh(z1)
    z2 = gg.linear(a1, params[2], params[3])
    a2 = gg.tanh(z2)
    loss = gg.cross_entropy(gg.linear(a2, params[4], params[5]), np.array([y]))
    loss.backward()
    values = {label: v for label, v, _ in shown}
    grads = {label: float(g) for label, _, g in shown if g not in ("null", "undefined")}
    assert values["o"] == pytest.approx(float(a2.data[0, 1]), rel=1e-12)
    assert values["z"] == pytest.approx(float(z2.data[0, 1]), rel=1e-12)
    for i in range(3):
        assert values[f"h1.{i}"] == pytest.approx(float(a1.data[0, i]), rel=1e-12)
        assert grads[f"w{i + 1}"] == pytest.approx(float(params[2].grad[1, i]), rel=1e-9)
    assert grads["b"] == pytest.approx(float(params[3].grad[1]), rel=1e-9)
    edges = page.locator("#inside g.gedge")
    assert edges.count() == 3 * 2 + 2 * 2 + 2 + 1  # w_i*x_i, two partial sums, + b, tanh
    assert page.locator("#inside g.gedge text").count() == edges.count()  # local gradients
    # readable: no label overlaps another or a node's box, and the page does not overflow
    boxes = page.evaluate(
        """() => [[...document.querySelectorAll('#inside g.gedge text')],
                  [...document.querySelectorAll('#inside g.gnode rect')]].map(els =>
                    els.map(e => { const r = e.getBoundingClientRect();
                                   return [r.left, r.top, r.right, r.bottom]; }))"""
    )

    def apart(a: list[float], b: list[float]) -> bool:
        return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]

    labels, rects = boxes
    for i, a in enumerate(labels):
        assert all(apart(a, b) for b in labels[i + 1 :] + rects), a
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # check gradient: numerical and analytic side by side
    page.click("#gradcheck")
    page.wait_for_function("pg.gradcheck !== null")
    rows = page.evaluate("pg.gradcheck.rows")
    assert [r["name"] for r in rows] == ["w1", "w2", "w3", "b"]
    for r in rows:
        assert r["analytic"] == pytest.approx(r["numerical"], rel=1e-5, abs=1e-9)
    assert page.locator("#gradtable tr").count() == 5


def test_kink_count_equals_the_count_from_the_weights(page: Any, server: str) -> None:
    # Adam, 200 steps: the kinks (all at x = 0 at the start, biases being 0) spread out
    _open(page, server + "/#dataset=sine&layers=7&activation=relu&features=x1&lr=0.05"
          "&optimizer=adam")  # fmt: skip
    page.fill("#batch_size", "20")
    page.dispatch_event("#batch_size", "change")
    page.wait_for_function("pg.params.batch_size === 20")
    page.click("#step")  # one step, then 199 in one message
    page.wait_for_function("pg.frame.step === 1")
    page.evaluate("send({type: 'step', n: 199})")
    page.wait_for_function("pg.frame.step === 200")
    shown = int(page.inner_text("#kinkcount"))
    w, marked = page.evaluate("[pg.frame.weights[0], pg.frame.curve.kinks]")
    wv, bv = np.array(w["w"])[:, 0], np.array(w["b"])
    where = -bv / wv
    expected = np.sort(where[(where > -3) & (where < 3)])
    assert shown == len(expected) == len(marked)
    assert np.allclose(marked, expected, atol=2e-3)
    assert np.ptp(expected) > 0.5  # spread out: the positions are a real check
    assert shown <= 7 and "H = 7" in page.inner_text("#kinks")


def test_shared_url_restores_the_same_state(page: Any, browser: Any, server: str) -> None:
    _open(page, server + "/")
    page.select_option("#dataset", "spiral")
    page.wait_for_function("pg.params.dataset === 'spiral'")
    page.fill("#classes", "4")
    page.dispatch_event("#classes", "change")
    page.wait_for_function("pg.params.classes === 4")
    # (the state that follows the classes change can redraw the box unchecked after a
    # click that came first: click again only while it shows unchecked)
    for _ in range(10):
        if page.evaluate("pg.params.features.length === 3"):
            break
        if not page.is_checked("#f_x1x2"):
            page.click("#f_x1x2")
        page.wait_for_timeout(500)
    page.wait_for_function("pg.params.features.length === 3")
    page.select_option("#activation", "relu")
    page.wait_for_function("pg.params.activation === 'relu'")
    page.click("#addlayer")
    # the state comes first, then the new network's frame: wait for both before reading
    page.wait_for_function("pg.params.layers.length === 3 && pg.frame.weights.length === 4")
    url = page.url
    params, weights, points = page.evaluate("[pg.params, pg.frame.weights, pg.points]")
    other = browser.new_page()
    try:
        _open(other, url)
        other.wait_for_function("pg.params.layers.length === 3 && pg.frame.weights.length === 4")
        p2, w2, pts2 = other.evaluate("[pg.params, pg.frame.weights, pg.points]")
        assert p2 == params and w2 == weights and pts2 == points
        assert other.input_value("#dataset") == "spiral" and other.is_checked("#f_x1x2")
    finally:
        other.close()


def test_exported_html_opens_from_a_file_without_server(page: Any, tmp_path: Any) -> None:
    from graphgrad.playground import Session, write_html

    s = Session({"dataset": "circles", "layers": [4], "lr": 0.3})
    s.step(50)
    out = tmp_path / "page.html"
    write_html(s, out)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(out.as_uri())
    page.wait_for_function("window.pg && pg.snapshot && pg.frame")
    assert all(u.startswith(("file:", "data:", "blob:")) for u in urls), urls
    assert page.evaluate("pg.frame.step") == 50
    colours = page.evaluate(
        """() => { const d = document.getElementById('out').getContext('2d')
                     .getImageData(0, 0, 400, 400).data; const s = new Set();
                   for (let i = 0; i < d.length; i += 4 * 97) s.add(d[i] > d[i + 2]);
                   return [...s]; }"""
    )
    assert sorted(colours) == [False, True]
    page.click('#net canvas[data-layer="1"][data-unit="2"]')
    page.wait_for_function("document.querySelectorAll('#inside g.gnode').length > 0")
    o = page.locator('#inside g.gnode[data-label="o"]')
    assert float(o.get_attribute("data-value")) == pytest.approx(
        s.neuron(1, 2, 0)["graph"]["nodes"][-1]["value"]
    )


def test_diverging_network_stops_and_the_page_says_so(page: Any, server: str) -> None:
    _open(
        page,
        server + "/#dataset=abs&features=x1&layers=8,8&activation=relu&lr=10&init=normal"
        "&init_std=3&steps_per_update=50",
    )
    page.click("#play")
    page.wait_for_function("document.getElementById('error').textContent.includes('diverged')")
    page.wait_for_function("pg.playing === false")
    assert "lower the learning rate" in page.inner_text("#error")
    page.click("#reset")  # a new run: the message goes
    page.wait_for_function("pg.frame.step === 0 && !pg.frame.diverged")
    assert page.inner_text("#error") == ""


def test_csv_upload_click_to_add_and_hidden_space(page: Any, server: str) -> None:
    _open(page, server + "/")
    rows = "x,y,label\n0.5,0.5,0\n-0.5,0.5,1\nbad,1,0\n0.5,-0.5,1\n-0.5,-0.5,0\n1,1,7\n"
    page.set_input_files(
        "#csvfile", files=[{"name": "d.csv", "mimeType": "text/csv", "buffer": rows.encode()}]
    )
    page.wait_for_function("document.getElementById('csvreport').textContent.includes('rows')")
    report = page.inner_text("#csvreport")
    assert report.startswith("4 rows read, 2 bad") and "line 4: not a number" in report
    assert "line 7: label" in report
    page.wait_for_function("pg.points.train.length + pg.points.test.length === 4")
    n = page.evaluate("pg.points.train.length")
    page.select_option("#addclass", "1")
    page.click("#out", position={"x": 300, "y": 100})
    page.wait_for_function(f"pg.points.train.length === {n + 1}")
    x, y = page.evaluate("pg.points.train[pg.points.train.length - 1]")
    assert (x, y) == (pytest.approx(1.5, abs=0.05), pytest.approx(1.5, abs=0.05))
    assert page.evaluate("pg.points.train_y[pg.points.train_y.length - 1]") == 1
    page.click("#hv_show")
    page.wait_for_function("pg.frame.hidden_view && pg.frame.hidden_view.layer === 1")
    assert page.evaluate("pg.frame.hidden_view.points.length") == n + 1
