"""Path sums, backpropagation and central differences agree; their work is counted right."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import pytest

import graphgrad as gg
from graphgrad.paths import (
    PathLimitError,
    backprop_grad,
    count_paths,
    layered,
    layered_table,
    path_grad,
)
from graphgrad.scalar import Scalar

# ------------------------------------------------------------------ random small graphs
# A program is a list of (op, i, j): value k = op(values[i], values[j]). The same program runs
# on Scalars (to build a graph) and on floats (for central differences).


def _sig(x: Any) -> Any:
    return x.sigmoid() if isinstance(x, Scalar) else 0.5 * math.tanh(0.5 * x) + 0.5


def _tanh(x: Any) -> Any:
    return x.tanh() if isinstance(x, Scalar) else math.tanh(x)


def _exp(x: Any) -> Any:
    return (x * 0.3).exp() if isinstance(x, Scalar) else math.exp(x * 0.3)


def _log(x: Any) -> Any:
    return (1.0 + x * x).log() if isinstance(x, Scalar) else math.log(1.0 + x * x)


def _max(x: Any, y: Any) -> Any:
    return x.maximum(y) if isinstance(x, Scalar) else max(x, y)


def _relu(x: Any) -> Any:
    return x.relu() if isinstance(x, Scalar) else max(x, 0.0)


BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / (1.0 + y * y),
    "max": _max,
}
UNARY: dict[str, Callable[[Any], Any]] = {
    "tanh": _tanh,
    "sigmoid": _sig,
    "exp": _exp,
    "log": _log,
    "relu": _relu,
    "square": lambda x: x**2,
}


def random_program(rng: random.Random, n_inputs: int, n_ops: int) -> list[tuple[str, int, int]]:
    prog = []
    for k in range(n_ops):
        n = n_inputs + k
        lo = max(0, n - 4)  # mostly recent values: deep graphs with shared nodes (many paths)
        op = rng.choice(list(BINARY) + list(UNARY))
        prog.append((op, rng.randrange(lo, n), rng.randrange(0, n)))
    return prog


def run(prog: list[tuple[str, int, int]], xs: list[Any]) -> tuple[Any, list[Any]]:
    vals = list(xs)
    for op, i, j in prog:
        vals.append(BINARY[op](vals[i], vals[j]) if op in BINARY else UNARY[op](vals[i]))
    out = vals[-1]
    for v in vals[-3:-1]:
        out = out + v
    return out, vals


def central(prog: list[tuple[str, int, int]], xs: list[float], k: int, eps: float = 1e-6) -> float:
    up, down = list(xs), list(xs)
    up[k] += eps
    down[k] -= eps
    return float((run(prog, up)[0] - run(prog, down)[0]) / (2 * eps))


def near_kink(prog: list[tuple[str, int, int]], vals: list[Any]) -> bool:
    """Whether a max or relu sits (almost) on its kink, where central differences mislead."""
    for op, i, j in prog:
        if op == "max" and abs(vals[i] - vals[j]) < 1e-4:
            return True
        if op == "relu" and abs(vals[i]) < 1e-4:
            return True
    return False


@pytest.mark.parametrize("seed", range(25))
def test_three_methods_agree_on_random_graphs(seed: int) -> None:
    rng = random.Random(seed)
    n_in = rng.randint(1, 3)
    prog = random_program(rng, n_in, rng.randint(3, 12))
    values = [rng.uniform(-1.5, 1.5) for _ in range(n_in)]
    xs = [Scalar(v, name=f"x{k}") for k, v in enumerate(values)]
    out, _ = run(prog, xs)
    ps = path_grad(out, xs)
    bp = backprop_grad(out, xs)
    out.backward()
    kink = near_kink(prog, run(prog, values)[1])  # no numerical check on a kink (all else holds)
    for k, x in enumerate(xs):
        assert ps.grads[k] == pytest.approx(bp.grads[k], rel=1e-12, abs=1e-12)
        assert x.grad == pytest.approx(bp.grads[k], rel=1e-12, abs=1e-12)
        if not kink:
            assert x.grad == pytest.approx(central(prog, values, k), rel=1e-5, abs=1e-6)
    assert ps.paths == sum(count_paths(out, xs)) == sum(ps.paths_per_input)
    assert bp.edges == bp.multiplications == ps.edges


def test_random_graphs_are_mostly_off_kinks() -> None:
    on_kink = 0
    for seed in range(25):
        rng = random.Random(seed)
        n_in = rng.randint(1, 3)
        prog = random_program(rng, n_in, rng.randint(3, 12))
        values = [rng.uniform(-1.5, 1.5) for _ in range(n_in)]
        on_kink += near_kink(prog, run(prog, values)[1])
    assert on_kink <= 5  # so the numerical check above runs on most graphs


def test_lecture_example_counts() -> None:
    a, b = Scalar(2.0, name="a"), Scalar(1.0, name="b")
    e = (a + b) * (b + 1)
    ps = path_grad(e, [a, b])
    bp = backprop_grad(e, [a, b])
    assert ps.grads == bp.grads == [2.0, 5.0]
    assert ps.paths_per_input == [1, 2]  # a: e-c-a; b: e-c-b and e-d-b
    assert ps.multiplications == 3  # each path has 2 edges: one product each
    assert ps.additions == 1  # ∂e/∂b = 1·2 + 1·3
    assert bp.edges == 5  # a->c, b->c, b->d, c->e, d->e (not the constant 1 -> d)
    assert bp.additions == 1


def test_parallel_edges_are_separate_paths() -> None:
    x = Scalar(3.0)
    out = x * x * x  # d/dx = 3x² = 27
    ps = path_grad(out, [x])
    assert ps.paths == 3 and ps.grads == [27.0]
    assert backprop_grad(out, [x]).grads == [27.0]


def test_inputs_that_do_not_reach_the_output() -> None:
    x, y = Scalar(1.0), Scalar(2.0)
    out = x * 3
    assert path_grad(out, [x, y]).grads == [3.0, 0.0]
    assert count_paths(out, [x, y]) == [1, 0]
    assert backprop_grad(out, [x, y]).grads == [3.0, 0.0]
    assert path_grad(x, [x]).grads == [1.0]  # the output itself: one empty path


@pytest.mark.parametrize(("width", "depth"), [(2, 1), (2, 5), (3, 3), (4, 2)])
def test_layered_counts(width: int, depth: int) -> None:
    out, xs = layered(width, depth)
    per_input = count_paths(out, xs)
    assert per_input == [width**depth] * width
    bp = backprop_grad(out, xs)
    # each unit: width products, width - 1 additions (2 edges), tanh: 3w - 1 edges
    assert bp.edges == depth * width * (3 * width - 1) + 2 * (width - 1)


def test_layered_growth_exponential_vs_linear() -> None:
    rows = layered_table(3, 5)
    paths = [r.paths for r in rows]
    edges = [r.backprop_edges for r in rows]
    assert [b // a for a, b in itertools.pairwise(paths)] == [3] * 4  # x w per layer
    assert len({b - a for a, b in itertools.pairwise(edges)}) == 1  # + const per layer
    assert all(r.max_abs_diff is not None and r.max_abs_diff < 1e-12 for r in rows)
    assert all(r.path_multiplications is not None for r in rows)
    assert rows[-1].path_multiplications > 10 * rows[-1].backprop_multiplications  # type: ignore[operator]


def test_refuses_over_the_limit_with_the_count() -> None:
    out, xs = layered(4, 6)  # 4 inputs x 4^6 paths = 16,384
    with pytest.raises(
        PathLimitError, match=r"needs 16,384 paths, more than the limit of 1,000"
    ) as e:
        path_grad(out, xs, limit=1000)
    assert e.value.needed == 16384 and e.value.limit == 1000
    assert path_grad(out, xs, limit=16384).paths == 16384  # the user can raise the limit
    rows = layered_table(4, 6, limit=1000)
    assert rows[-1].path_multiplications is None and rows[-1].paths == 16384


def test_deep_chain_is_iterative() -> None:
    x = Scalar(0.5)
    y = x
    for _ in range(5000):  # far past Python's recursion limit
        y = y * 1.0001
    ps = path_grad(y, [x])
    assert ps.paths == 1 and ps.multiplications == 4999
    assert ps.grads[0] == pytest.approx(1.0001**5000, rel=1e-9)


def test_argument_errors() -> None:
    x = Scalar(1.0)
    with pytest.raises(TypeError, match=r"gg\.units"):
        path_grad(gg.tensor(1.0), [x])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="inputs must be Scalars"):
        backprop_grad(x * 2, [1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="twice"):
        path_grad(x * 2, [x, x])
    with pytest.raises(ValueError, match="width and depth"):
        layered(0, 3)
