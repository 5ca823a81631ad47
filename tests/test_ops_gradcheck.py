"""Every differentiable op: float64 central differences over broadcasting shapes, one table."""

from __future__ import annotations

import numpy as np
import pytest

import graphgrad as gg
from op_specs import EMPTY, NON_DIFFERENTIABLE, SPECS, cases, empty_cases, sample

CASES = cases()


def test_array_api_strict_is_installed() -> None:
    """tests/test_array_api.py runs this table on array-api-strict; it skips without the
    package, so its absence fails here (it is in the ``test`` extra)."""
    import importlib.util

    assert importlib.util.find_spec("array_api_strict") is not None, (
        "array-api-strict is missing: pip install -e '.[test]' (or pip install array-api-strict); "
        "without it tests/test_array_api.py is skipped"
    )


def test_every_op_has_a_spec() -> None:
    registered = set(gg.REGISTRY)
    missing = {n for n, op in gg.REGISTRY.items() if op.differentiable} - set(SPECS)
    assert not missing, f"ops without a gradient-check spec: {sorted(missing)}"
    undeclared = {n for n, op in gg.REGISTRY.items() if not op.differentiable}
    assert undeclared == NON_DIFFERENTIABLE
    assert set(SPECS) <= registered, f"specs for unknown ops: {set(SPECS) - registered}"


@pytest.mark.parametrize(("op", "case", "spec", "shapes"), CASES, ids=[c[1] for c in CASES])
def test_gradcheck(op: str, case: str, spec, shapes, rng: np.random.Generator) -> None:
    xs = sample(spec, shapes, rng)
    result = gg.gradcheck(spec.fn, xs, eps=1e-6, atol=spec.atol, rtol=spec.rtol)
    assert result.passed
    # the op under test really was used, and gradients have the inputs' shapes
    out = spec.fn(*[gg.Tensor(x, requires_grad=True) for x in xs])
    assert out.requires_grad


@pytest.mark.parametrize(("op", "case", "spec", "shapes"), CASES, ids=[c[1] for c in CASES])
def test_second_order(op: str, case: str, spec, shapes, rng: np.random.Generator) -> None:
    """Each rule is itself differentiable: check x -> v^T J(x) (create_graph) numerically."""
    xs = sample(spec, shapes, rng)
    out0 = spec.fn(*[gg.Tensor(x) for x in xs])
    v = rng.standard_normal(out0.shape)

    def vjp_sum(*ts: gg.Tensor) -> gg.Tensor:
        _, back = gg.vjp(spec.fn, *ts)
        gs = back(gg.Tensor(v))
        total = None
        for g in gs:
            s = (g * g).sum()  # a nonlinear function of every input gradient
            total = s if total is None else total + s
        return total

    gg.gradcheck(vjp_sum, xs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_float32_grads_stay_float32(rng: np.random.Generator) -> None:
    for _op, case, spec, shapes in CASES:
        drawn = sample(spec, shapes, rng)
        xs = [gg.Tensor(a.astype(np.float32), requires_grad=True) for a in drawn]
        out = spec.fn(*xs)
        out.sum().backward() if out.size != 1 else out.backward()
        for x in xs:
            assert x.grad is not None and x.grad.dtype == np.float32, (case, x.grad)
            assert x.grad.shape == x.shape, case


# ------------------------------------------------------------------------- empty shapes

EMPTY_CASES = empty_cases()


def test_every_case_declares_its_empty_shapes() -> None:
    """A new spec case must say how it behaves on a zero-length axis (or why it cannot)."""
    ids = {case_id for entries in SPECS.values() for case_id, _ in entries}
    assert ids == set(EMPTY), (
        f"cases without empty shapes: {sorted(ids - set(EMPTY))}; "
        f"unknown cases: {sorted(set(EMPTY) - ids)}"
    )
    assert len(EMPTY_CASES) >= 100


@pytest.mark.parametrize(
    ("op", "case", "spec", "shapes"), EMPTY_CASES, ids=[c[1] for c in EMPTY_CASES]
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_shapes(op: str, case: str, spec, shapes, dtype, rng: np.random.Generator) -> None:
    """Forward and backward on a zero-length axis: no error, no warning (warnings are errors
    here), every gradient of its input's shape and dtype; a non-empty input broadcast into an
    empty result gets zeros, and gradcheck (float64) and the second order agree."""
    xs = [x.astype(dtype) for x in sample(spec, shapes, rng)]
    leaves = [gg.Tensor(x, requires_grad=True) for x in xs]
    out = spec.fn(*leaves)
    assert out.requires_grad, case
    out.backward(np.ones(out.shape, dtype=out.dtype))
    for x, leaf in zip(xs, leaves, strict=True):
        assert leaf.grad is not None, case
        assert leaf.grad.shape == x.shape and leaf.grad.dtype == dtype, (case, leaf.grad)
        if x.size and 0 in out.shape:  # a non-empty input reaching an empty output
            assert not leaf.grad.any(), (case, leaf.grad)
    if dtype is np.float64:
        assert gg.gradcheck(spec.fn, xs, eps=1e-6, atol=spec.atol, rtol=spec.rtol).passed
        test_second_order(op, case, spec, shapes, rng)
