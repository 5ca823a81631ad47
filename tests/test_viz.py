"""Tracing graphs into plain data and rendering it: text, DOT, JSON, SVG/PNG, notebooks."""

from __future__ import annotations

import json

import numpy as np
import pytest

import graphgrad as gg
from graphgrad.errors import BackwardError
from graphgrad.viz import DotNotFoundError, Graph, dot_available, save, trace
from graphgrad.viz import formats as R

needs_dot = pytest.mark.skipif(not dot_available(), reason="Graphviz's dot is not installed")


def lecture_graph() -> Graph:
    a, b = gg.Scalar(2.0, name="a"), gg.Scalar(1.0, name="b")
    c = a + b
    c.name = "c"
    d = b + 1
    d.name = "d"
    e = c * d
    e.name = "e"
    e.backward()
    return trace(e)


def test_trace_is_plain_data_in_creation_order() -> None:
    g = lecture_graph()
    assert [n["label"] for n in g.nodes] == ["a", "b", "c", "1", "d", "e"]
    assert g.root == 5 and g.kind == "scalar"
    by = {n["label"]: n for n in g.nodes}
    assert {k: (by[k]["value"], by[k]["grad"]) for k in "abcde"} == {
        "a": (2.0, 2.0),
        "b": (1.0, 5.0),
        "c": (3.0, 2.0),
        "d": (2.0, 3.0),
        "e": (6.0, 1.0),
    }
    assert by["1"]["kind"] == "const" and by["1"]["grad"] is None
    assert (by["a"]["kind"], by["c"]["kind"], by["c"]["op"]) == ("input", "op", "add")
    assert (by["c"]["expr"], by["e"]["expr"]) == ("a + b", "c * d")
    edges = {(g.nodes[e["source"]]["label"], g.nodes[e["target"]]["label"]): e for e in g.edges}
    assert edges[("c", "e")]["local_grad"] == 2.0 and edges[("c", "e")]["local_grad_expr"] == "d"
    assert edges[("d", "e")]["local_grad"] == 3.0 and edges[("d", "e")]["local_grad_expr"] == "c"
    assert edges[("b", "c")]["local_grad"] == 1.0
    json.dumps(g.to_dict())  # only plain types
    assert g.node("b")["grad"] == 5.0
    with pytest.raises(KeyError, match="no node labelled 'z'"):
        g.node("z")


def test_text_table() -> None:
    text = lecture_graph().to_text()
    lines = text.splitlines()
    assert lines[0].split() == ["node", "op", "definition", "value", "grad", "∂e/∂node"]
    row_b = next(ln for ln in lines if ln.startswith("b "))
    assert row_b.split() == ["b", "input", "1", "5"]
    row_e = next(ln for ln in lines if ln.startswith("e "))
    assert row_e.split() == ["e", "mul", "e", "=", "c", "*", "d", "6", "1"]
    assert any(ln.split()[:4] == ["b", "->", "c", "∂c/∂b"] for ln in lines)


def test_dot_needs_nothing_and_shows_local_gradients() -> None:
    dot = lecture_graph().to_dot()
    assert dot.startswith("digraph graphgrad {") and dot.rstrip().endswith("}")
    assert 'label="∂e/∂c = 2"' in dot and 'label="∂e/∂d = 3"' in dot
    assert "n3 -> n4 [style=dashed];" in dot  # the constant 1 gets no gradient label
    assert '"e = c * d\\n[mul]\\nvalue 6\\n∂e/∂e = 1"' in dot
    assert "rankdir=BT" in dot


def test_dot_escapes_labels() -> None:
    x = gg.Scalar(1.0, name='say "hi"\\')
    g = trace(x * 2)
    assert 'say \\"hi\\"\\\\' in g.to_dot()


def test_json_round_trips_and_drops_non_finite() -> None:
    x = gg.Scalar(0.0, name="x")
    y = x**0.5
    y.backward()
    data = json.loads(trace(y).to_json())
    assert data["nodes"][0]["grad"] is None  # inf is not JSON: null
    assert {"name", "op", "value", "grad"} <= set(data["nodes"][0])
    assert {"source", "target", "local_grad"} <= set(data["edges"][0])


def test_explain_lists_the_sum_over_fan_out() -> None:
    text = lecture_graph().explain()
    assert "∂e/∂b = 1·2 + 1·3 = 5" in text
    assert "∂e/∂a = 1·2 = 2" in text
    assert "-> c: local ∂e/∂c = d = 2; product 2·1 = 2" in text
    order = [
        ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith((" ", "At", "Back"))
    ]
    assert order == ["e", "d", "c", "b", "a"]  # reverse topological order


def test_tensor_graph_shows_shapes_and_summaries() -> None:
    x = gg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True, name="x")
    w = gg.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, name="w")
    s = (x * w).sum()
    s.retain_grad()
    loss = s * 2.0
    g = trace(loss)
    assert g.kind == "tensor"
    by = {n["label"]: n for n in g.nodes}
    assert by["x"]["shape"] == (2, 3) and by["x"]["value_summary"] == "2x3: mean 2.5, in [0, 5]"
    assert by["x"]["value"] is None  # not one number
    mul = next(e for e in g.edges if e["target"] == g.nodes.index(by["n2"]))
    assert mul["local_grad"] is None and mul["local_grad_expr"] in ("w", "x")
    last = next(e for e in g.edges if e["target"] == g.root and e["arg"] == 0)
    assert last["local_grad"] == 2.0  # one element on both ends: a number
    assert "sum_i n2_i" in by["n3"]["expr"]
    loss.backward(retain_graph=True)
    g2 = trace(loss)
    assert g2.node("x")["grad_summary"] == "2x3: mean 4, in [2, 6]"  # 2 w, broadcast
    assert g2.node("n3")["grad"] == 2.0  # retained
    assert "shape 2x3" in g2.to_dot()


def test_freed_tensor_graph_is_a_clear_error() -> None:
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(BackwardError, match="freed by backward"):
        trace(loss)
    with pytest.raises(TypeError, match="expected a Scalar or a Tensor"):
        trace(3.0)


def test_million_node_graph_traces() -> None:
    x = gg.Scalar(0.5, name="x")
    y = x
    for _ in range(999_999):
        y = -y
    y.backward()
    g = trace(y)  # iterative: no RecursionError
    assert len(g.nodes) == 1_000_000 and len(g.edges) == 999_999
    assert g.nodes[0]["grad"] == -1.0 and g.edges[-1]["local_grad"] == -1.0


def test_save_by_suffix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = lecture_graph()
    for suffix in ("txt", "dot", "json"):
        path = tmp_path / f"g.{suffix}"
        save(g, str(path))
        assert path.read_text(encoding="utf-8").strip()
    with pytest.raises(ValueError, match="cannot tell the format"):
        save(g, str(tmp_path / "g.xyz"))
    with pytest.raises(ValueError, match="unknown format"):
        R.render(g, "gif")


def test_without_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R.shutil, "which", lambda name: None)
    g = lecture_graph()
    with pytest.raises(DotNotFoundError, match="install Graphviz"):
        g.to_svg()
    bundle = g._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert bundle["text/html"].startswith("<pre>") and "∂e/∂c" in bundle["text/html"]
    assert g.to_dot()  # DOT needs nothing


@needs_dot
def test_svg_png_and_notebook_display() -> None:
    g = lecture_graph()
    svg = g.to_svg()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "∂e/∂b = 5" in svg
    assert g.to_png()[:8] == b"\x89PNG\r\n\x1a\n"
    assert R.to_html(g).startswith("<svg")
    assert g._repr_mimebundle_()["image/svg+xml"].startswith("<svg")


# ---------------------------------------------------------------------- notebook display


def _chain(n: int) -> Graph:
    x = gg.tensor(np.ones(3), requires_grad=True)
    y = x
    for _ in range(n):
        y = y * 1.0001
    return trace(y.sum())


def test_notebook_display_has_one_entry_point_and_runs_dot_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IPython calls every ``_repr_*_`` method it finds: a graph with both an SVG and an HTML
    method ran Graphviz twice per display. Only ``_repr_mimebundle_`` is left."""
    reprs = {n for n in dir(Graph) if n.startswith("_repr_") and n.endswith("_")}
    assert reprs == {"_repr_mimebundle_"}
    calls: list[str] = []
    monkeypatch.setattr(R, "dot_available", lambda: True)
    monkeypatch.setattr(R, "run_dot", lambda text, fmt, **kw: calls.append(fmt) or b"<svg/>")
    assert lecture_graph()._repr_mimebundle_()["image/svg+xml"] == "<svg/>"
    assert calls == ["svg"]


def test_notebook_display_of_a_large_graph_is_a_placeholder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(R, "dot_available", lambda: True)
    monkeypatch.setattr(R, "run_dot", lambda *a, **k: pytest.fail("dot ran on a large graph"))
    g = _chain(R.DISPLAY_MAX_NODES)  # a few nodes over the limit
    assert len(g.nodes) > R.DISPLAY_MAX_NODES
    bundle = g._repr_mimebundle_()
    html = bundle["text/html"]
    assert "image/svg+xml" not in bundle and len(html) < 1000
    assert f"more than {R.DISPLAY_MAX_NODES} nodes" in html and "g.save('graph.svg')" in html
    assert R.to_html(g).startswith("<pre>Graph(tensor")  # the public HTML too
    monkeypatch.setattr(R, "run_dot", lambda *a, **k: b"<svg/>")
    assert R.to_html(g, max_svg_nodes=10**6) == "<svg/>"  # an explicit larger limit draws


def test_notebook_display_never_raises_and_caps_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "dot_available", lambda: True)

    def slow(*a: object, **k: object) -> bytes:
        raise RuntimeError("Graphviz's dot did not finish within 20 s")

    monkeypatch.setattr(R, "run_dot", slow)
    assert "did not finish" in lecture_graph()._repr_mimebundle_()["text/html"]
    huge = b"<svg>" + b" " * R.DISPLAY_MAX_SVG_BYTES + b"</svg>"
    monkeypatch.setattr(R, "run_dot", lambda *a, **k: huge)
    html = lecture_graph()._repr_mimebundle_()["text/html"]
    assert "too large to embed" in html and len(html) < 1000


@needs_dot
def test_notebook_display_with_graphviz_stays_small() -> None:
    g = _chain(R.DISPLAY_MAX_NODES // 2 - 5)  # under the limit: drawn
    svg = g._repr_mimebundle_()["image/svg+xml"]
    assert svg.startswith("<svg") and len(svg) <= R.DISPLAY_MAX_SVG_BYTES


# --------------------------------------------------------------- tracing during backward


def test_backward_trace_records_every_gradient(rng: np.random.Generator) -> None:
    x0, w0 = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    x = gg.tensor(x0, name="x")
    w = gg.tensor(w0, requires_grad=True, name="w")
    w.grad = np.ones_like(w0)  # an earlier gradient: leaves accumulate as usual
    h = gg.linear(x, w)
    h.name = "h"
    loss = (h * h).mean()
    loss.name = "L"
    g = loss.backward(trace=True)  # no retain_graph needed
    assert isinstance(g, Graph) and g.kind == "tensor" and g.meta["traced_during"] == "backward"
    # the same gradients as an independent backward through a retained graph
    w2 = gg.tensor(w0, requires_grad=True)
    h2 = gg.linear(x, w2).retain_grad()
    (h2 * h2).mean().backward()
    node = {n["label"]: n for n in g.nodes}
    assert node["L"]["grad"] == 1.0
    assert node["h"]["grad_summary"] == gg.viz.summarize(h2.grad)
    assert node["w"]["grad_summary"] == gg.viz.summarize(w2.grad)  # this pass only
    assert node["x"]["grad"] is None and node["x"]["grad_summary"] is None  # a constant
    np.testing.assert_allclose(w.grad, 1.0 + w2.grad)  # accumulated onto the earlier one
    assert h.grad is None and loss.grad is None  # intermediate nodes: no public .grad
    assert not h._retain
    # drawable by the renderers, freed graph or not
    text = g.to_text()
    assert "h" in text and gg.viz.summarize(h2.grad).split(":")[0] in text
    assert "∂" in g.explain() and g.to_dot().startswith("digraph")
    with pytest.raises(BackwardError, match="freed"):
        trace(loss)


def test_backward_trace_keeps_retain_grad_and_one_element_values() -> None:
    a = gg.tensor(2.0, requires_grad=True, name="a")
    b = gg.tensor(1.0, requires_grad=True, name="b")
    c = (a + b).retain_grad()
    c.name = "c"
    d = b + 1.0
    d.name = "d"
    e = c * d
    e.name = "e"
    g = e.backward(trace=True)
    by = {n["label"]: n for n in g.nodes}
    assert {k: (by[k]["value"], by[k]["grad"]) for k in "abcde"} == {
        "a": (2.0, 2.0),
        "b": (1.0, 5.0),
        "c": (3.0, 2.0),
        "d": (2.0, 3.0),
        "e": (6.0, 1.0),
    }  # the lecture's example, as the Scalar trace gives it
    assert float(c.grad) == 2.0 and d.grad is None
    assert gg.viz.trace_backward(gg.Scalar(1.0) * 3).kind == "scalar"
