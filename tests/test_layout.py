"""The layout of ``linear``'s products: "rows" (``x @ W.T``) or "columns" (``(W @ x.T).T``,
the same numbers in a column-major array), measured per BLAS and thread count like the
library, forced by ``GRAPHGRAD_LAYOUT``.

Both layouts must give the same values and gradients (to float rounding), the kernels must
read column-major arrays element for element as NumPy does, and the choice must follow the
figures. The calibration's logic runs with a fake clock, so no test depends on speed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _blas, _fused, checkpoint
from op_specs import SPECS, as_args, sample
from test_blas import graphgrad_info

LAYOUTS = ["rows", "columns"]


@pytest.fixture(params=LAYOUTS)
def layout(request: Any) -> Iterator[str]:
    previous = _blas.set_layout(request.param)
    try:
        yield request.param
    finally:
        _blas.set_layout(previous)


def _linear_cases() -> list[tuple[str, Any, Any]]:
    return [
        (f"{case}-{'x'.join(map(str, shapes))}", spec, shapes)
        for case, spec in SPECS["linear"]
        for shapes in spec.shapes
    ]


@pytest.mark.parametrize(("case", "spec", "shapes"), _linear_cases(), ids=lambda c: str(c))
def test_linear_is_gradient_checked_in_both_layouts(
    layout: str, case: str, spec: Any, shapes: Any, rng: np.random.Generator
) -> None:
    xs = sample(spec, shapes, rng)
    assert gg.gradcheck(spec.fn, xs, eps=1e-6, atol=spec.atol, rtol=spec.rtol).passed

    def vjp_sum(*ts: gg.Tensor) -> gg.Tensor:  # second order: the rules are differentiable
        _, back = gg.vjp(spec.fn, *ts)
        return sum((g * g).sum() for g in back(gg.ones(spec.fn(*ts).shape, dtype=np.float64)))

    gg.gradcheck(vjp_sum, xs, eps=1e-6, atol=1e-5, rtol=1e-4)


def _linear_and_grads(layout: str, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> list[Any]:
    previous = _blas.set_layout(layout)
    try:
        tx, tw, tb = as_args([x, w, b])
        y = gg.linear(tx, tw, tb)
        (gg.relu(y) * gg.tensor(np.arange(y.size).reshape(y.shape) % 3)).sum().backward()
        return [y.data, tx.grad, tw.grad, tb.grad]
    finally:
        _blas.set_layout(previous)


@pytest.mark.parametrize("shape", [(3, 5), (6, 5), (1, 5), (5, 1), (2, 3, 5)])
def test_both_layouts_give_the_same_values_and_gradients(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal((4, shape[-1])), rng.standard_normal(4)
    rows = _linear_and_grads("rows", x, w, b)
    cols = _linear_and_grads("columns", x, w, b)
    for r, c in zip(rows, cols, strict=True):
        assert r.shape == c.shape
        np.testing.assert_allclose(c, r, rtol=1e-13, atol=1e-13)
    assert rows[0].flags.c_contiguous  # "rows": row-major, as np.matmul makes it
    if len(shape) == 2 and 1 < shape[0] < 4:  # "columns", batch < width: (out, S) transposed
        assert cols[0].flags.f_contiguous and not cols[0].flags.c_contiguous
    elif len(shape) == 2 and shape[0] > 1:  # a batch as large as the width: row-major
        assert cols[0].flags.c_contiguous
    assert rows[2].flags.c_contiguous and cols[2].flags.c_contiguous  # weights' gradients


def test_an_input_gradient_comes_back_in_its_inputs_layout() -> None:
    # a column-major input (an earlier layer's output in "columns") gets a column-major
    # gradient, whatever this layer's own layout, so that the ReLU VJP before it sees one
    # layout; a row-major input a row-major one
    rng = np.random.default_rng(5)
    previous = _blas.set_layout("columns")
    try:
        for width in (3, 9):  # this layer: batch 6 >= width 3 (rows), < width 9 (columns)
            for make in (np.ascontiguousarray, np.asfortranarray):
                x = gg.Tensor(make(rng.standard_normal((6, 5))), requires_grad=True)
                w, b = gg.Tensor(rng.standard_normal((width, 5))), gg.Tensor(np.zeros(width))
                gg.linear(x, w, b).sum().backward()
                expect = x.data.flags.f_contiguous
                assert x.grad.flags.f_contiguous == expect, (width, make)
                np.testing.assert_allclose(x.grad, np.ones((6, width)) @ w.data, rtol=1e-13)
    finally:
        _blas.set_layout(previous)


def test_an_mlp_trains_to_the_same_weights_in_both_layouts() -> None:
    # float32 through the compiled kernels (ReLU, its VJP on column-major arrays, softmax
    # cross-entropy on column-major logits, SGD momentum): the same weights to fp32 rounding.
    rng = np.random.default_rng(0)
    x = rng.random((64, 20), dtype=np.float32)
    y = rng.integers(0, 5, 64)
    weights = {}
    for lay in LAYOUTS:
        previous = _blas.set_layout(lay)
        try:
            model = gg.nn.MLP(20, [300, 300], 5, rng=np.random.default_rng(3))
            opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            for _ in range(5):
                opt.zero_grad()
                gg.cross_entropy(model(gg.tensor(x)), y).backward()
                opt.step()
            weights[lay] = [p.data.copy() for p in model.parameters()]
        finally:
            _blas.set_layout(previous)
    for r, c in zip(weights["rows"], weights["columns"], strict=True):
        np.testing.assert_allclose(c, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused_backward", [False, True])
def test_a_column_major_weight_gets_its_gradient_and_update_in_its_own_layout(
    fused_backward: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A weight stored column-major (physically (in, out), e.g. a JAX kernel assigned as
    # ``lin.weight.data = kernel.T``): its gradient comes back column-major too, so that the
    # optimiser's compiled kernel takes W, its gradient and the momentum together (a row-major
    # gradient sent it to the four-pass NumPy path), and fused_backward's GEMM writes the
    # column-major momentum buffer in place. The same numbers as a row-major weight.
    rng = np.random.default_rng(1)
    x = rng.random((16, 12), dtype=np.float32)
    y = rng.integers(0, 4, 16)
    weights = {}
    for order in ("C", "F"):
        model = gg.nn.MLP(12, [40], 4, rng=np.random.default_rng(3))
        for lin in model.linear_layers():
            lin.weight.data = np.asarray(lin.weight.data, order=order)
        opt = gg.optim.SGD(model.parameters(), 0.1, momentum=0.9, fused_backward=fused_backward)
        calls: list[int] = []
        if _fused.KERNELS is not None:
            real_sgd, real_many = _fused.KERNELS.sgd, _fused.KERNELS.sgd_many

            def counted(*a: Any, calls: list[int] = calls, real: Any = real_sgd) -> Any:
                calls.append(1)
                return real(*a)

            def counted_many(*a: Any, calls: list[int] = calls, real: Any = real_many) -> Any:
                left = real(*a)
                calls.extend([1] * (len(a[0]) - len(left)))  # (those left take sgd)
                return left

            monkeypatch.setattr(_fused.KERNELS, "sgd", counted)
            monkeypatch.setattr(_fused.KERNELS, "sgd_many", counted_many)
        for _ in range(3):
            opt.zero_grad()
            gg.cross_entropy(model(gg.tensor(x)), y).backward()
            if not fused_backward:
                for lin in model.linear_layers():
                    assert lin.weight.grad.flags.f_contiguous == (order == "F")
            opt.step()
        monkeypatch.undo()
        if _fused.KERNELS is not None:  # every parameter, every step, through the kernel
            assert len(calls) == 3 * len(list(model.parameters())), order
        for lin in model.linear_layers():
            assert lin.weight.data.flags.f_contiguous == (order == "F")
        weights[order] = [p.data.copy() for p in model.parameters()]
    for c, f in zip(weights["C"], weights["F"], strict=True):
        np.testing.assert_allclose(f, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [7, 40_000])  # under and over the kernels' size threshold
def test_the_kernels_read_column_major_arrays_element_for_element(n: int) -> None:
    rng = np.random.default_rng(2)
    g = np.asfortranarray(rng.standard_normal((n // 7 + 1, 7)).astype(np.float32))
    x = np.asfortranarray(rng.standard_normal(g.shape).astype(np.float32))
    out = _fused.relu(x)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    assert out.flags.f_contiguous
    np.testing.assert_array_equal(_fused.relu_grad(g, x), g * (x > 0))
    # one array of each layout: element i of the flat views would not be the same (row,
    # column), so the kernels decline and NumPy answers
    assert _fused._flat(g, np.ascontiguousarray(x)) is None
    np.testing.assert_array_equal(_fused.relu_grad(g, np.ascontiguousarray(x)), g * (x > 0))
    np.testing.assert_array_equal(_fused.relu_grad(np.ascontiguousarray(g), x), g * (x > 0))


def test_softmax_cross_entropy_takes_column_major_logits() -> None:
    rng = np.random.default_rng(4)
    z = rng.standard_normal((9, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 9)
    f = np.asfortranarray(z)
    np.testing.assert_array_equal(_fused.xent_forward(f, labels), _fused.xent_forward(z, labels))
    np.testing.assert_array_equal(
        _fused.xent_backward(f, labels, 0.5), _fused.xent_backward(z, labels, 0.5)
    )


@pytest.mark.parametrize("lay", LAYOUTS)
def test_the_calibrations_pass_is_a_training_step_with_its_updates(lay: str) -> None:
    """The calibration times products and momentum-SGD updates (at 2 threads the updates
    decide it: products alone favoured "columns", whole steps "rows"): after one pass each
    weight gradient is G.T @ x and each momentum buffer, zero before, holds it."""
    sets = _blas._layout_sets(lay)
    layers = [layer for model in sets for layer in model]
    assert [len(model) for model in sets] == [3, 1]  # the 784 MLP, then the 512-wide layer
    assert len(layers) == len(_blas.LAYOUT_LAYERS)
    for (_first, cols, x, w, g, _dw, v), (m, k, n) in zip(layers, _blas.LAYOUT_LAYERS, strict=True):
        assert x.shape == (m, k) and w.shape == (n, k) and g.shape == (m, n)
        assert cols == (lay == "columns" and m < n)
        assert g.flags.f_contiguous == cols and not v.any()
    before = [layer[3].copy() for layer in layers]
    _blas._layout_pass(lay, sets)
    for (_first, _cols, x, w, g, dw, v), w0 in zip(layers, before, strict=True):
        want = np.asarray(g, np.float64).T @ np.asarray(x, np.float64)
        np.testing.assert_allclose(dw, want, rtol=1e-4, atol=1e-3)
        np.testing.assert_array_equal(v, dw)  # v = μ·0 + dW: the update ran
        np.testing.assert_allclose(w, w0, rtol=1e-6, atol=1e-6)  # lr 1e-9: where it started


class _FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, float]:
    """A fake machine: a pass in each layout takes the seconds in the returned dict."""
    clock, cost = _FakeClock(), {"rows": 2e-3, "columns": 1e-3}

    def one_pass(lay: str, sets: Any) -> None:
        clock.t += cost[lay]

    monkeypatch.setattr(_blas, "_clock", clock)
    monkeypatch.setattr(_blas, "_layout_pass", one_pass)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("GRAPHGRAD_LAYOUT", raising=False)
    previous = _blas.layout()
    _blas._calibrations.clear()
    yield cost
    _blas._calibrations.clear()
    _blas.set_layout(previous)


@pytest.mark.parametrize(
    ("rows", "columns", "chosen"),
    [(2e-3, 1e-3, "columns"), (1e-3, 2e-3, "rows"), (1e-3, 0.98e-3, "rows")],  # 2%: a tie
)
def test_the_layout_follows_the_figures(
    fake: dict[str, float], rows: float, columns: float, chosen: str
) -> None:
    fake.update(rows=rows, columns=columns)
    rec = _blas.calibrate_layout(refresh=True)
    assert rec["seconds"] == pytest.approx({"rows": rows, "columns": columns})
    assert rec["layout"] == chosen and rec["measured"]
    _blas.set_layout("auto")
    assert _blas.layout() == chosen and _blas.COLUMNS[0] == (chosen == "columns")
    assert (
        f"rows {rows * 1e3:.3f} ms, columns {columns * 1e3:.3f} ms" in _blas.layout_info()["reason"]
    )


def test_the_layout_is_cached_and_a_damaged_cache_measured_again(fake: dict[str, float]) -> None:
    rec = _blas.calibrate_layout()
    assert rec["measured"] and rec["cache_written"] and rec["layout"] == "columns"
    _blas._calibrations.clear()
    fake.update(rows=1e-3, columns=2e-3)  # the cache answers; nothing is measured
    again = _blas.calibrate_layout()
    assert not again["measured"] and again["layout"] == "columns"
    path = Path(rec["cache"])
    data = json.loads(path.read_text(encoding="utf-8"))
    data["layout"] = "rows"  # figures and choice disagree: not trusted
    path.write_text(json.dumps(data), encoding="utf-8")
    _blas._calibrations.clear()
    third = _blas.calibrate_layout()
    assert third["measured"] and third["layout"] == "rows"


@pytest.mark.parametrize("forced", LAYOUTS)
def test_graphgrad_layout_forces_it_and_graphgrad_info_says_so(forced: str) -> None:
    proc = graphgrad_info("--json", GRAPHGRAD_LAYOUT=forced)
    assert proc.returncode == 0, proc.stderr
    lay = json.loads(proc.stdout)["layout"]
    assert lay["layout"] == forced
    assert lay["reason"] == f"GRAPHGRAD_LAYOUT={forced} in the environment, nothing measured"


def test_an_unknown_layout_warns_naming_the_variable_and_measures() -> None:
    proc = graphgrad_info("--json", GRAPHGRAD_LAYOUT="diagonal")
    assert proc.returncode == 0, proc.stderr
    assert "GRAPHGRAD_LAYOUT='diagonal': expected 'rows' or 'columns'; measuring" in proc.stderr
    assert json.loads(proc.stdout)["layout"]["reason"].startswith("calibration at")


def test_set_layout_refuses_unknown_names_and_checkpoints_record_the_layout(layout: str) -> None:
    with pytest.raises(ValueError, match="set_layout: unknown layout 'diagonal'"):
        _blas.set_layout("diagonal")
    assert checkpoint.library_versions()["gemm_layout"] == layout
