"""Both Scalar implementations: the compiled core and the pure-Python reference agree exactly.

``graphgrad.scalar`` runs the compiled core (``graphgrad._scalar_core``, built by
``pip install``) when it is built, and the pure-Python reference (``graphgrad._scalar_py``)
otherwise or when ``GRAPHGRAD_PURE_PYTHON=1``. These tests check the switch, run random
programs of every Scalar op on both implementations in one process and compare values,
gradients, errors and orders bit for bit, and run the Scalar tests again on the pure path in
a subprocess, so that CI tests both paths.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import importlib.util
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import graphgrad as gg
from graphgrad import _scalar_py, scalar
from graphgrad._state import next_seq, pure_python_requested
from graphgrad.ops import elementwise as E
from op_specs import op_params, scalar_inputs

ROOT = Path(__file__).resolve().parent.parent
BUILT = importlib.util.find_spec("graphgrad._scalar_core") is not None
PURE_FORCED = pure_python_requested()
needs_core = pytest.mark.skipif(not BUILT, reason="the compiled core is not built")


def _core() -> ModuleType:
    return importlib.import_module("graphgrad._scalar_core")


def implementations() -> list[ModuleType]:
    return [_scalar_py, _core()] if BUILT else [_scalar_py]


# ------------------------------------------------------------------------- the switch


def test_the_active_implementation_is_reported() -> None:
    if PURE_FORCED or not BUILT:
        assert scalar.COMPILED is False
        assert scalar.Scalar is _scalar_py.Scalar
        assert scalar.IMPLEMENTATION.startswith("pure Python")
    else:
        assert scalar.COMPILED is True
        assert scalar.Scalar is _core().Scalar
        assert scalar.IMPLEMENTATION.startswith("compiled")
    assert gg.Scalar is scalar.Scalar
    assert scalar.scalar_backward is (_core() if scalar.COMPILED else _scalar_py).scalar_backward


def test_the_environment_variable_forces_pure_python() -> None:
    code = "import graphgrad as gg, graphgrad.scalar as s; print(s.COMPILED, gg.Scalar.__module__)"
    env = {**os.environ, "GRAPHGRAD_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "graphgrad._scalar_py"]


@pytest.mark.skipif(PURE_FORCED, reason="already the pure path")
def test_the_scalar_tests_pass_on_the_pure_python_path() -> None:
    """CI runs everything else on the compiled core: the Scalar tests once more on pure Python."""
    # without the kernels MKL cannot be selected: a GRAPHGRAD_BLAS=mkl of the run would warn
    env = {k: v for k, v in os.environ.items() if k != "GRAPHGRAD_BLAS"}
    env["GRAPHGRAD_PURE_PYTHON"] = "1"
    tests = [str(ROOT / "tests" / f) for f in ("test_scalar.py", "test_scalar_core.py")]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *tests, "-x", "-p", "no:cacheprovider"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert " passed" in run.stdout


# ------------------------------------------------------------- random programs, both ways

UNARY = ["neg", "exp", "log", "tanh", "sigmoid", "relu", "leaky_relu", "elu", "sqrt", "abs"]
BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum"]
OPERATORS = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
    "pow": lambda x, y: x**y,
}
NUMBERS = [0.0, 1, 2, -1.5, 0.5, 3.0, 1e-3, -7, 2.5]


def program(seed: int, n_ops: int = 400) -> list[tuple[Any, ...]]:
    """A random program of Scalar ops: leaves, every op, numbers on either side, no_grad."""
    rng = random.Random(seed)

    def recent(n: int) -> int:  # mostly one of the last few nodes
        return n - 1 - min(int(rng.expovariate(0.15)), n - 1)

    steps: list[tuple[Any, ...]] = [("leaf", rng.uniform(-2, 2), True) for _ in range(4)]
    for _ in range(n_ops):
        n = len(steps)
        u = rng.random()
        if u < 0.05:
            steps.append(("leaf", rng.choice([rng.uniform(-3, 3), 0.0, 1.0]), rng.random() < 0.7))
        elif u < 0.45:
            side = rng.choice(["nodes", "nodes", "number_right", "number_left"])
            steps.append(
                ("binary", rng.choice(BINARY), recent(n), recent(n), side, rng.choice(NUMBERS))
            )
        else:
            param = rng.choice([None, 0.2, 2.0])
            steps.append(("unary", rng.choice(UNARY), recent(n), param, rng.random() < 0.05))
    return steps


def make(impl: ModuleType, nodes: list[Any], step: tuple[Any, ...]) -> Any:
    S = impl.Scalar
    kind = step[0]
    if kind == "leaf":
        return S(step[1], requires_grad=step[2])
    if kind == "binary":
        _, op, i, j, side, number = step
        x, y = nodes[i], nodes[j]
        if op in OPERATORS:
            f = OPERATORS[op]
            if side == "number_right":
                return f(x, number)
            if side == "number_left":
                return f(number, x)
            return f(x, y)
        other = number if side.startswith("number") else y
        if op == "maximum":
            return x.maximum(other)
        return impl.apply_op(E.minimum, x, other)
    _, op, i, param, under_no_grad = step
    x = nodes[i]
    if under_no_grad:
        with gg.no_grad():
            return make(impl, nodes, ("unary", op, i, param, False))
    if op == "neg":
        return -x
    if op == "sqrt":
        return impl.apply_op(E.sqrt, x)
    if op == "abs":
        return impl.apply_op(E.abs, x)
    if op in ("leaky_relu", "elu") and param is not None:
        return getattr(x, op)(param)
    return getattr(x, op)()


def execute(
    impl: ModuleType, steps: list[tuple[Any, ...]], gap_at: int = -1
) -> tuple[list[Any], list[str]]:
    """Run ``steps``; a step that raises is logged and replaced by a leaf (on both sides).
    At step ``gap_at``, millions of creation numbers are skipped (as by unrelated nodes)."""
    nodes: list[Any] = []
    log: list[str] = []
    for k, step in enumerate(steps):
        if k == gap_at:
            for _ in range(2_500_000):
                next_seq()
        try:
            node = make(impl, nodes, step)
        except (ValueError, ZeroDivisionError, OverflowError) as exc:
            log.append(f"{k}: {type(exc).__name__}: {exc}")
            node = impl.Scalar(0.5)
        nodes.append(node)
    return nodes, log


def bits(x: float) -> str:
    return "nan" if math.isnan(x) else x.hex()


def snapshot(impl: ModuleType, nodes: list[Any]) -> list[tuple[Any, ...]]:
    index = {id(n): i for i, n in enumerate(nodes)}
    rank = {id(n): r for r, n in enumerate(sorted(nodes, key=lambda n: n._seq))}
    return [
        (
            bits(n.data),
            bits(n.grad),
            n.requires_grad,
            n.op,
            rank[id(n)],
            tuple(index.get(id(x), -1) for x in n._inputs),
            tuple(sorted(n._params.items())),
        )
        for n in nodes
    ]


def backward_all(impl: ModuleType, nodes: list[Any], roots: list[int]) -> list[str]:
    log = []
    for r, seed in zip(roots, [1.0, 0.5, -2.0, 1.0], strict=False):
        try:
            impl.scalar_backward(nodes[r], seed)
        except Exception as exc:  # compared between the implementations below
            log.append(f"{r}: {type(exc).__name__}: {exc}")
    return log


@needs_core
@pytest.mark.parametrize("seed", range(12))
def test_random_programs_agree_bit_for_bit(seed: int) -> None:
    """Seeds 10 and 11 skip millions of creation numbers halfway (the core's sparse path)."""
    steps = program(seed)
    rng = random.Random(1000 + seed)
    roots = [-1, rng.randrange(len(steps)), rng.randrange(len(steps)), -1]
    results = []
    for impl in implementations():
        nodes, forward_log = execute(impl, steps, gap_at=len(steps) // 2 if seed >= 10 else -1)
        for n in nodes[-200:-1]:  # a root that reaches most of the graph
            nodes.append(nodes[-1] + n)
        before = snapshot(impl, nodes)
        backward_log = backward_all(impl, nodes, roots)
        index = {id(n): i for i, n in enumerate(nodes)}
        topo = [index[id(n)] for n in impl.topological(nodes[-1])]
        edges = [tuple(bits(v) for v in scalar.local_grads(n)) for n in nodes]
        results.append((before, forward_log, snapshot(impl, nodes), backward_log, topo, edges))
    pure, compiled = results
    names = ("forward", "forward errors", "after backward", "backward errors", "order", "edges")
    for name, p, c in zip(names, pure, compiled, strict=True):
        assert p == c, f"{name} differ between the implementations"
    assert sum(n[1] != bits(0.0) for n in pure[2]) > 100  # the programs do reach gradients


@needs_core
def test_the_benchmark_mlp_agrees_bit_for_bit() -> None:
    """micrograd's demo MLP (one node per multiply, add and relu), one SGD step on each."""
    results = []
    for impl in implementations():
        S = impl.Scalar
        rng = random.Random(7)
        sizes = [2, 8, 8, 1]
        layers = [
            [
                ([S(rng.uniform(-1, 1)) for _ in range(sizes[i])], S(0.0))
                for _ in range(sizes[i + 1])
            ]
            for i in range(len(sizes) - 1)
        ]
        params = [p for layer in layers for w, b in layer for p in (*w, b)]
        points = [
            ([rng.uniform(-1, 1), rng.uniform(-1, 1)], rng.choice([-1, 1])) for _ in range(20)
        ]
        for step in range(2):
            losses = []
            for x, y in points:
                h: list[Any] = [S(v) for v in x]
                for depth, layer in enumerate(layers):
                    act = [sum((wi * hi for wi, hi in zip(w, h, strict=True)), b) for w, b in layer]
                    h = [a.relu() for a in act] if depth < len(layers) - 1 else act
                losses.append((1 + -y * h[0]).relu())
            total = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in params)
            for p in params:
                p.grad = 0.0
            total.backward()
            for p in params:
                p.data -= (1.0 - 0.9 * step / 100) * p.grad
        results.append([(bits(p.data), bits(p.grad)) for p in params] + [bits(total.data)])
    assert results[0] == results[1]


# ------------------------------------------------------------- the compiled core itself


@needs_core
def test_compiled_nodes_are_not_tracked_by_the_garbage_collector() -> None:
    S = _core().Scalar
    x = S(1.0)
    y = (x * 2).relu() + x
    assert not gc.is_tracked(x) and not gc.is_tracked(y)


def test_deep_chains_through_either_input_are_freed_without_recursion() -> None:
    x = scalar.Scalar(0.5)
    c = scalar.Scalar(1.0000001, requires_grad=False)
    y = x
    for i in range(300_000):
        y = c * y if i % 2 else y * c  # the chain runs through _b, then _a
    y.backward()
    assert x.grad == pytest.approx(1.0000001**300_000, rel=1e-9)
    del y


def test_a_node_far_older_than_the_rest_of_its_graph() -> None:
    """Creation numbers far apart: the compiled core's slot array gives way to a sort."""
    results = []
    for impl in implementations():
        x = impl.Scalar(2.0)
        h = x * 3
        for _ in range(2_500_000):  # numbers taken by nodes of no interest (cheaply)
            next_seq()
        y = h * h + x
        y.backward()
        index = {id(n): i for i, n in enumerate((x, h, y, y._a))}
        results.append((x.grad, h.grad, [index[id(n)] for n in impl.topological(y)]))
    for got in results:
        assert got == (2 * 6.0 * 3 + 1, 12.0, [2, 3, 1])


def test_creation_numbers_are_shared_with_tensors() -> None:
    a = scalar.Scalar(1.0)
    t = gg.tensor(1.0)
    b = a * 2
    n = next_seq()
    assert a._seq < t._seq < b._seq < n
    assert b._b is not None and t._seq < b._b._seq < b._seq  # the constant 2, then the product


def test_copies_are_new_nodes_of_the_same_op() -> None:
    x = scalar.Scalar(3.0, name="x")
    y = x * x
    c = copy.copy(y)
    assert c is not y and c.op == "mul" and c._inputs == (x, x) and c.data == 9.0
    assert c._seq > y._seq  # a new number: its inputs stay older
    c.backward()
    assert x.grad == 6.0


# ------------------------------------------- the compiled core's inline rules = the registry's

EDGE_VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-200, -1e-170, 1e300, math.inf, math.nan]
SEEDS = [1.0, -0.5, 0.0, -0.0, 1e308, math.inf, -math.inf, math.nan]
EDGE_PARAMS = {"leaky_relu": {"slope": 0.1}, "elu": {"alpha": 2.0}}


def _edge_cases(impl: ModuleType, op: gg.ops.Op) -> list[tuple[str, ...]]:
    """Forward value (or error) and the inputs' gradients (bits), from every edge input, seed
    and starting gradient (a leaf at -0.0 shows whether a rule adds +0.0 or nothing)."""
    out = []
    arity = len(op.arg_names)
    inputs = (
        [(v,) for v in EDGE_VALUES]
        if arity == 1
        else [(v, w) for v in EDGE_VALUES for w in EDGE_VALUES]
    )
    for args in inputs:
        for params in ({}, EDGE_PARAMS.get(op.name, {})):
            xs = [impl.Scalar(v) for v in args]
            try:
                y = impl.apply_op(op, *xs, **params)
            except (ValueError, ZeroDivisionError, OverflowError) as exc:
                out.append((repr(args), f"{type(exc).__name__}: {exc}"))
                continue
            for seed in SEEDS:
                for start in (0.0, -0.0):
                    for x in xs:
                        x.grad = start
                    impl.scalar_backward(y, seed, retain_graph=True)
                    grads = tuple(bits(x.grad) for x in xs)
                    out.append((repr(args), repr(params), bits(y.data), bits(seed), *grads))
    return out


@needs_core
@pytest.mark.parametrize("name", _core().INLINE_OPS if BUILT else [])
def test_inline_rules_equal_the_registry_rules_bit_for_bit(name: str) -> None:
    """The compiled core writes the common ops' forwards and rules out in C, for speed; the
    reference runs the registry's float forward and VJP rules. They agree on every bit, on
    kinks, signed zeros, infinities, nan, underflow and domain edges (0 ** 0.5's derivative)."""
    op = gg.REGISTRY[name]
    pure, compiled = (_edge_cases(impl, op) for impl in implementations())
    assert len(pure) == len(compiled)
    for p, c in zip(pure, compiled, strict=True):
        assert p == c, f"op {name!r}: the compiled core's inline copy differs from the registry"


@pytest.mark.parametrize("op", list(_scalar_py.FLOAT_FORWARD), ids=lambda op: op.name)
def test_the_pure_path_runs_the_registry_rules(op: gg.ops.Op, monkeypatch: Any) -> None:
    """The reference's backward step is the op's ``vjps``, whatever the op: a copy of the op
    whose rules are spied on gets exactly what the spies return."""
    calls: list[int] = []

    def spy(i: int, rule: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            calls.append(i)
            return rule(*args, **kwargs)

        return run

    twin = dataclasses.replace(op, vjps=tuple(spy(i, r) for i, r in enumerate(op.vjps)))
    monkeypatch.setitem(_scalar_py.FLOAT_FORWARD, twin, _scalar_py.FLOAT_FORWARD[op])
    params = op_params(op.name)
    for args in scalar_inputs(op.name):
        calls.clear()
        xs = [_scalar_py.Scalar(v) for v in args]
        out = _scalar_py.apply_op(twin, *xs, **params)
        out.backward(0.5)
        assert calls == list(range(len(args)))
        ref = [_scalar_py.Scalar(v) for v in args]
        _scalar_py.apply_op(op, *ref, **params).backward(0.5)
        assert [bits(x.grad) for x in xs] == [bits(x.grad) for x in ref]


def test_the_pure_path_writes_no_rule_out() -> None:
    """No derivative formula, and no op singled out, in the reference's source."""
    source = Path(_scalar_py.__file__).read_text()
    for word in ("math.", "1 - y", "g * y", "_TANH", "_RELU", "_MUL", "pow_local"):
        assert word not in source, f"graphgrad/_scalar_py.py writes a rule out: {word!r}"
