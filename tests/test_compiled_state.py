"""The compiled step and the optimiser's state: existing state kept (its values), the
first-step decision taken at run time, describe() without side effects, .grad of the
parameters the plan does not update, the bias sum of a layer of one output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _fused

needs_kernels = pytest.mark.skipif(_fused.KERNELS is None, reason="no compiled kernels")


def _batches(n: int, d: int = 4, t: int = 3, s: int = 16) -> list[tuple[np.ndarray, Any]]:
    rng = np.random.default_rng(1)
    return [
        (rng.standard_normal((s, d)).astype(np.float32), rng.integers(0, t, s)) for _ in range(n)
    ]


def _eager(m: Any, opt: Any, x: Any, y: Any) -> None:
    loss = gg.cross_entropy(m(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _make(kind: str, **kw: Any) -> tuple[Any, Any]:
    m = gg.nn.MLP(4, [8], 3, rng=np.random.default_rng(0))
    if kind == "sgd":
        return m, gg.optim.SGD(m.parameters(), lr=0.1, **kw)
    return m, gg.optim.Adam(m.parameters(), lr=0.01, **kw)


def _train(m: Any, opt: Any, step: Any, data: Any, use_plan: Callable[[int], bool]) -> None:
    """Batch k of ``data`` by the plan where ``use_plan(k)`` (checked to run there), else by
    the eager step."""
    for k, (x, y) in enumerate(data):
        if use_plan(k):
            step(x, y)
            assert step.engine == "kernels"
        else:
            _eager(m, opt, x, y)


def _weights(m: Any) -> list[np.ndarray]:
    return [p.data.copy() for p in m.parameters()]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))


MUTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "float64": lambda b: b.astype(np.float64),
    "fortran": np.asfortranarray,
    "strided": lambda b: np.repeat(b, 2, axis=-1)[..., ::2],
}


@needs_kernels
@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("how", sorted(MUTATIONS))
def test_existing_state_of_another_layout_or_dtype_is_kept_not_zeroed(kind: str, how: str) -> None:
    data = _batches(5)
    keys = ("momentum_buffer",) if kind == "sgd" else ("exp_avg", "exp_avg_sq")
    out = []
    for compiled in (False, True):
        m, opt = _make(kind, momentum=0.9) if kind == "sgd" else _make(kind)
        step = gg.compile_step(m, opt)
        for k, (x, y) in enumerate(data):
            if k == 2:
                for st in opt.state.values():
                    for key in keys:
                        st[key] = MUTATIONS[how](st[key])
            if compiled:
                step(x, y)
            else:
                _eager(m, opt, x, y)
        out.append(_weights(m))
    assert _same(*out)


@needs_kernels
def test_read_only_state_raises_as_the_eager_step_does() -> None:
    m, opt = _make("sgd", momentum=0.9)
    step = gg.compile_step(m, opt)
    (x, y), (x2, y2) = _batches(2)
    step(x, y)
    for st in opt.state.values():
        b = st["momentum_buffer"].copy()
        b.flags.writeable = False
        st["momentum_buffer"] = b
    with pytest.raises(ValueError, match="read-only"):
        step(x2, y2)


@needs_kernels
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_state_from_another_device_is_carried_over(kind: str) -> None:
    xp = pytest.importorskip("array_api_strict")
    data = _batches(6)
    out = []
    for compiled in (False, True):
        m, opt = _make(kind, momentum=0.9) if kind == "sgd" else _make(kind)
        m.to("array-api-strict")
        for x, y in data[:3]:
            dev = "array-api-strict"
            _eager(m, opt, gg.tensor(x, device=dev), gg.tensor(y, device=dev))
        assert xp is not None
        m.to("cpu")
        _train(m, opt, gg.compile_step(m, opt), data[3:], lambda _, c=compiled: c)
        out.append(_weights(m))
    assert _same(*out)


@needs_kernels
@pytest.mark.parametrize(
    "kw",
    [
        dict(momentum=0.9),
        dict(momentum=0.9, nesterov=True),
        dict(momentum=0.9, fused_backward=True),
    ],
)
def test_describe_then_eager_steps_then_the_compiled_step(kw: dict[str, Any]) -> None:
    data = _batches(4)
    out = []
    for describe in (None, True):
        m, opt = _make("sgd", **kw)
        step = gg.compile_step(m, opt)
        if describe:
            step.describe(batch=16)
            assert opt.state == {}  # describe() leaves the optimiser alone
        _train(m, opt, step, data, lambda k, d=describe: k == 3 and bool(d))
        out.append(_weights(m))
    assert _same(*out)


@needs_kernels
def test_describe_leaves_adam_state_alone() -> None:
    m, opt = _make("adam")
    step = gg.compile_step(m, opt)
    assert "Adam" in step.describe(batch=16)
    assert opt.state == {}


@needs_kernels
def test_a_skipped_nonfinite_step_then_an_eager_fallback_then_the_plan() -> None:
    data = _batches(4)
    data[0][0][0, 0] = np.nan
    m, opt = _make("sgd", momentum=0.9)
    for x, y in data:
        loss = gg.cross_entropy(m(x), y)
        if np.isfinite(float(loss.data)):
            opt.zero_grad()
            loss.backward()
            opt.step()
    want = _weights(m)
    m, opt = _make("sgd", momentum=0.9)
    step = gg.compile_step(m, opt)
    engines = []
    for i, (x, y) in enumerate(data):
        step(np.asfortranarray(x) if i == 1 else x, y, skip_nonfinite=True)
        engines.append(step.engine)
    assert engines == ["kernels", "eager", "kernels", "kernels"]
    assert _same(_weights(m), want)


@needs_kernels
def test_describe_sees_a_changed_model() -> None:
    m = gg.nn.Sequential(gg.nn.Linear(4, 8), gg.nn.ReLU(), gg.nn.Linear(8, 3))
    step = gg.compile_step(m, gg.optim.SGD(m.parameters(), lr=0.1))
    assert "ReLU" in step.describe(batch=16) or "relu" in step.describe(batch=16)
    m._modules["1"] = gg.nn.Tanh()
    text = step.describe(batch=16)
    assert "tanh" in text.lower()
    assert "relu" not in text.lower()


@needs_kernels
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_params_the_plan_does_not_update_get_grad_none(kind: str) -> None:
    out = []
    for compiled in (False, True):
        m, _ = _make(kind)
        extra = gg.tensor(np.ones(3, np.float32), requires_grad=True)
        extra.grad = np.ones(3, np.float32)
        params = [*m.parameters(), extra]
        opt = gg.optim.SGD(params, lr=0.1, momentum=0.9) if kind == "sgd" else gg.optim.Adam(params)
        _train(m, opt, gg.compile_step(m, opt), _batches(3), lambda _, c=compiled: c)
        assert extra.grad is None
        out.append(_weights(m))
    assert _same(*out)


@needs_kernels
def test_a_layer_of_one_output_with_a_bias_matches_the_eager_step() -> None:
    # NumPy sums a (S, 1) bias gradient with a dot product, not the GEMV the plan calls
    out = []
    for compiled in (False, True):
        m = gg.nn.Sequential(
            gg.nn.Linear(3, 5, rng=np.random.default_rng(0), dtype=np.float64),
            gg.nn.Tanh(),
            gg.nn.Linear(5, 1, rng=np.random.default_rng(1), dtype=np.float64),
            gg.nn.Tanh(),
            gg.nn.Linear(1, 4, rng=np.random.default_rng(2), dtype=np.float64),
        )
        opt = gg.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        step = gg.compile_step(m, opt)
        r = np.random.default_rng(3)
        for _ in range(5):
            x, y = r.standard_normal((200, 3)), r.integers(0, 4, 200)
            if compiled:
                step(x, y)
            else:
                _eager(m, opt, x, y)
        out.append(_weights(m))
    assert _same(*out)
