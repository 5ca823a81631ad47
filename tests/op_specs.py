"""The one table of gradient-check specs: every differentiable op in the registry has an entry.

A spec says how to call the op on input tensors, the domain each input is drawn from (kept off
kinks), the shapes to try (scalars, vectors, matrices, (1,n), (m,1) and broadcasting pairs),
and the tolerance. ``tests/test_ops_gradcheck.py`` turns the table into parametrised float64
central-difference checks; ``test_every_op_has_a_spec`` makes a spec mandatory for a new op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import graphgrad as gg

Shape = tuple[int, ...]

UNARY_SHAPES: list[tuple[Shape, ...]] = [((),), ((3,),), ((2, 3),), ((1, 3),), ((2, 1),)]
BINARY_SHAPES: list[tuple[Shape, ...]] = [
    ((), ()),
    ((3,), (3,)),
    ((2, 3), (2, 3)),
    ((1, 3), (1, 3)),
    ((2, 1), (2, 1)),
    ((2, 3), (3,)),
    ((3,), (2, 3)),
    ((2, 3), ()),
    ((), (2, 3)),
    ((2, 1), (1, 3)),
    ((1, 3), (2, 1)),
    ((2, 3), (2, 1)),
    ((4, 1, 3), (2, 3)),
]

#: Domains: each draws float64 values of a shape from a generator, away from kinks.


def _real(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    # |x| in [0.2, 2]: away from 0, where relu/abs/elu/leaky_relu have kinks
    mag = rng.uniform(0.2, 2.0, size=shape)
    return mag * rng.choice([-1.0, 1.0], size=shape)


def _pos(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    return rng.uniform(0.5, 2.0, size=shape)


def _zeros_in(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    # _real's values with every other one exactly 0 (x^0 at x = 0)
    v = _real(rng, shape)
    v.reshape(-1)[::2] = 0.0
    return v


def _clipsafe(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    # clip(-0.5, 0.5): keep values away from both boundaries
    v = rng.uniform(0.1, 0.4, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return np.where(rng.random(shape) < 0.5, v, v * 4)


DOMAINS: dict[str, Callable[[np.random.Generator, Shape], np.ndarray]] = {
    "real": _real,
    "pos": _pos,
    "clipsafe": _clipsafe,
    "zeros_in": _zeros_in,
}


@dataclass
class Spec:
    """How to gradient-check one op."""

    fn: Callable[..., gg.Tensor]
    domains: tuple[str, ...]
    shapes: list[tuple[Shape, ...]]
    atol: float = 1e-6
    rtol: float = 1e-5
    distinct: bool = False  # inputs must differ pairwise by > 0.1 (max/min ties are kinks)
    reduce_distinct: bool = False  # a reduction's elements must be distinct (ties are kinks)
    ids: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # what ``fn`` passes (consumer tests)


def _reductions(name: str) -> list[tuple[str, Callable[..., gg.Tensor], list[tuple[Shape, ...]]]]:
    f = getattr(gg, name)
    return [
        (f"{name}-all", lambda x: f(x), UNARY_SHAPES),
        (f"{name}-axis0", lambda x: f(x, axis=0), UNARY_SHAPES[1:]),
        (f"{name}-axis-1-keep", lambda x: f(x, axis=-1, keepdims=True), UNARY_SHAPES[1:]),
        (f"{name}-axes01", lambda x: f(x, axis=(0, 1)), [((2, 3),), ((1, 3),), ((2, 3, 2),)]),
    ]


# Constants an op is called with are made on its input's device (``x.device``), so that every
# spec also runs on array-api-strict (tests/test_array_api.py): NumPy arrays do not mix with
# tensors of another device.


def _where(x: gg.Tensor, y: gg.Tensor) -> gg.Tensor:
    shape = np.broadcast_shapes(x.shape, y.shape)
    cond = np.random.default_rng(7).random(shape) < 0.5
    return gg.where(gg.tensor(cond, device=x.device), x, y)


THREE_D: list[tuple[Shape, ...]] = [((2, 3, 2),), ((1, 2, 3),)]


def _powers(x: gg.Tensor) -> gg.Tensor:
    return gg.reshape(x, (-1, 1)) ** gg.tensor(np.arange(4.0), device=x.device)


def _ce_int(x: gg.Tensor) -> gg.Tensor:
    labels = np.arange(x.shape[0]) % x.shape[1]
    return gg.cross_entropy(x, gg.tensor(labels, device=x.device))


def _ce_soft(x: gg.Tensor) -> gg.Tensor:
    t = np.random.default_rng(3).random(x.shape)
    return gg.cross_entropy(x, gg.tensor(t / t.sum(axis=1, keepdims=True), device=x.device))


def _round_trip(x: gg.Tensor) -> gg.Tensor:
    """``x`` to another device and back (two ``to_device`` nodes): array-api-strict's fake
    ``device1`` from the CPU, the CPU from any other device."""
    home = x.device
    return x.to("array-api-strict:device1" if home.is_cpu else "cpu").to(home)


SPECS: dict[str, list[tuple[str, Spec]]] = {
    "add": [("add", Spec(lambda x, y: x + y, ("real", "real"), BINARY_SHAPES))],
    "sub": [("sub", Spec(lambda x, y: x - y, ("real", "real"), BINARY_SHAPES))],
    "mul": [("mul", Spec(lambda x, y: x * y, ("real", "real"), BINARY_SHAPES))],
    "div": [("div", Spec(lambda x, y: x / y, ("real", "real"), BINARY_SHAPES))],
    "pow": [
        ("pow", Spec(lambda x, p: x**p, ("pos", "real"), BINARY_SHAPES)),
        ("pow-const", Spec(lambda x: x**3, ("real",), UNARY_SHAPES)),
        # polynomial features x^0 .. x^3 of inputs that include exact zeros: x^0's
        # derivative is 0 there too, not 0 * 0^-1 = NaN
        ("pow-zero-base", Spec(_powers, ("zeros_in",), UNARY_SHAPES)),
    ],
    "neg": [("neg", Spec(lambda x: -x, ("real",), UNARY_SHAPES))],
    "exp": [("exp", Spec(gg.exp, ("real",), UNARY_SHAPES))],
    "log": [("log", Spec(gg.log, ("pos",), UNARY_SHAPES))],
    "sqrt": [("sqrt", Spec(gg.sqrt, ("pos",), UNARY_SHAPES))],
    "abs": [("abs", Spec(gg.abs, ("real",), UNARY_SHAPES))],
    "sigmoid": [("sigmoid", Spec(gg.sigmoid, ("real",), UNARY_SHAPES))],
    "tanh": [("tanh", Spec(gg.tanh, ("real",), UNARY_SHAPES))],
    "softplus": [("softplus", Spec(gg.softplus, ("real",), UNARY_SHAPES))],
    "sin": [("sin", Spec(gg.sin, ("real",), UNARY_SHAPES))],
    "cos": [("cos", Spec(gg.cos, ("real",), UNARY_SHAPES))],
    "relu": [("relu", Spec(gg.relu, ("real",), UNARY_SHAPES))],
    "leaky_relu": [("leaky_relu", Spec(lambda x: gg.leaky_relu(x, 0.1), ("real",), UNARY_SHAPES))],
    "elu": [("elu", Spec(lambda x: gg.elu(x, 1.3), ("real",), UNARY_SHAPES))],
    "maximum": [("maximum", Spec(gg.maximum, ("real", "real"), BINARY_SHAPES, distinct=True))],
    "minimum": [("minimum", Spec(gg.minimum, ("real", "real"), BINARY_SHAPES, distinct=True))],
    "where": [("where", Spec(_where, ("real", "real"), BINARY_SHAPES))],
    "clip": [
        (
            "clip",
            Spec(
                lambda x: gg.clip(x, -0.5, 0.5),
                ("clipsafe",),
                UNARY_SHAPES,
                params={"lo": -0.5, "hi": 0.5},
            ),
        )
    ],
    "sum": [(i, Spec(f, ("real",), s)) for i, f, s in _reductions("sum")],
    "mean": [(i, Spec(f, ("real",), s)) for i, f, s in _reductions("mean")],
    "max": [(i, Spec(f, ("real",), s, reduce_distinct=True)) for i, f, s in _reductions("max")],
    "min": [(i, Spec(f, ("real",), s, reduce_distinct=True)) for i, f, s in _reductions("min")],
    "logsumexp": [(i, Spec(f, ("real",), s)) for i, f, s in _reductions("logsumexp")],
    "softmax": [
        ("softmax-1", Spec(gg.softmax, ("real",), UNARY_SHAPES[1:])),
        ("softmax-0", Spec(lambda x: gg.softmax(x, axis=0), ("real",), UNARY_SHAPES[1:])),
        # several axes normalised together (scipy.special.softmax's meaning), None: all
        ("softmax-all", Spec(lambda x: gg.softmax(x, axis=None), ("real",), UNARY_SHAPES)),
        ("softmax-02", Spec(lambda x: gg.softmax(x, axis=(0, 2)), ("real",), THREE_D)),
    ],
    "log_softmax": [
        ("log_softmax-1", Spec(gg.log_softmax, ("real",), UNARY_SHAPES[1:])),
        ("log_softmax-0", Spec(lambda x: gg.log_softmax(x, 0), ("real",), UNARY_SHAPES[1:])),
        ("log_softmax-all", Spec(lambda x: gg.log_softmax(x, None), ("real",), UNARY_SHAPES)),
        ("log_softmax-02", Spec(lambda x: gg.log_softmax(x, (2, 0)), ("real",), THREE_D)),
    ],
    "cross_entropy": [
        ("ce-labels", Spec(_ce_int, ("real",), [((4, 3),), ((1, 5),), ((3, 1),)])),
        ("ce-soft", Spec(_ce_soft, ("real",), [((4, 3),), ((1, 5),)])),
        # target probabilities that need a gradient themselves (unnormalised ones too)
        (
            "ce-targets",
            Spec(gg.cross_entropy, ("real", "pos"), [((4, 3), (4, 3)), ((1, 5), (1, 5))]),
        ),
    ],
    "matmul": [
        (
            "matmul",
            Spec(
                gg.matmul,
                ("real", "real"),
                [
                    ((3,), (3,)),
                    ((2, 3), (3,)),
                    ((3,), (3, 4)),
                    ((2, 3), (3, 4)),
                    ((1, 3), (3, 1)),
                    ((5, 2, 3), (3, 4)),
                    ((5, 2, 3), (5, 3, 4)),
                    ((1, 2, 3), (4, 3, 2)),
                    ((3,), (5, 3, 4)),
                    ((5, 2, 3), (3,)),
                ],
            ),
        )
    ],
    "linear": [
        (
            "linear",
            Spec(
                gg.linear,
                ("real", "real", "real"),
                [((4, 3), (2, 3), (2,)), ((3,), (2, 3), (2,)), ((5, 4, 3), (2, 3), (2,))],
            ),
        ),
        (
            "linear-nobias",
            Spec(
                lambda x, w: gg.linear(x, w),
                ("real", "real"),
                [((4, 3), (2, 3)), ((3,), (2, 3)), ((5, 4, 3), (2, 3))],
            ),
        ),
    ],
    "reshape": [
        ("reshape", Spec(lambda x: x.reshape(-1), ("real",), UNARY_SHAPES)),
        ("reshape-3", Spec(lambda x: x.reshape(3, 2, 1), ("real",), [((2, 3),), ((6,),)])),
    ],
    "transpose": [
        ("T", Spec(lambda x: x.T, ("real",), UNARY_SHAPES)),
        ("transpose-axes", Spec(lambda x: x.transpose(1, 2, 0), ("real",), [((2, 3, 4),)])),
        ("swapaxes", Spec(lambda x: x.swapaxes(0, -1), ("real",), UNARY_SHAPES[1:])),
        ("swapaxes-3", Spec(lambda x: gg.swapaxes(x, 0, 2), ("real",), [((2, 3, 4),)])),
    ],
    "broadcast_to": [
        (
            "broadcast_to",
            Spec(
                lambda x: gg.broadcast_to(x, (2, 2, 3)),
                ("real",),
                UNARY_SHAPES[:2] + UNARY_SHAPES[3:4],
            ),
        ),
        ("broadcast_to-empty", Spec(lambda x: gg.broadcast_to(x, (2, 0, 3)), ("real",), [])),
    ],
    "to_device": [("to_device", Spec(_round_trip, ("real",), UNARY_SHAPES))],
    "sum_to": [
        ("sum_to", Spec(lambda x: gg.sum_to(x, (1, 3)), ("real",), [((2, 3),), ((4, 2, 3),)])),
    ],
    "getitem": [
        ("slice", Spec(lambda x: x[1:, ::2], ("real",), [((3, 4),)])),
        ("int", Spec(lambda x: x[1], ("real",), [((3,),), ((3, 4),)])),
        ("int-array-repeats", Spec(lambda x: x[[0, 2, 0, 0]], ("real",), [((3,),), ((3, 2),)])),
        ("bool-mask", Spec(lambda x: x[np.array([True, False, True])], ("real",), [((3,),)])),
        ("tuple-adv", Spec(lambda x: x[[0, 1, 1], [2, 0, 2]], ("real",), [((2, 3),)])),
        ("ellipsis-newaxis", Spec(lambda x: x[..., None, 0], ("real",), [((2, 3),)])),
        ("none-selected", Spec(lambda x: x[np.array([], dtype=np.int64)], ("real",), [])),
    ],
    "index_add": [
        (
            "index_add",
            Spec(lambda x: gg.index_add(x, np.array([0, 2, 0]), (4,)), ("real",), [((3,),)]),
        ),
        (
            "index_add-empty",
            Spec(lambda x: gg.index_add(x, np.array([], dtype=np.int64), (4,)), ("real",), []),
        ),
    ],
    "concatenate": [
        (
            "concat0",
            Spec(
                lambda x, y: gg.concatenate([x, y]),
                ("real", "real"),
                [((2, 3), (1, 3)), ((3,), (2,))],
            ),
        ),
        (
            "concat1",
            Spec(
                lambda x, y: gg.concatenate([x, y, x], axis=-1),
                ("real", "real"),
                [((2, 3), (2, 1))],
            ),
        ),
    ],
    "stack": [
        (
            "stack0",
            Spec(lambda x, y: gg.stack([x, y]), ("real", "real"), [((), ()), ((2, 3), (2, 3))]),
        ),
        (
            "stack-1",
            Spec(lambda x, y: gg.stack([x, y, y], axis=-1), ("real", "real"), [((3,), (3,))]),
        ),
    ],
}

#: Empty shapes (a zero-length axis) for every case of :data:`SPECS`, by case id: forward,
#: backward and second order must work on them, giving empty gradients for empty inputs (and
#: zeros for a non-empty input broadcast into an empty result), as NumPy's and PyTorch's
#: conventions give. Reductions of no elements: sum 0, mean NaN, logsumexp -inf; max and min of
#: no elements raise (NumPy and PyTorch both refuse), so their cases reduce only non-empty axes.
U_EMPTY: list[tuple[Shape, ...]] = [((0,),), ((0, 3),), ((3, 0),)]
B_EMPTY: list[tuple[Shape, ...]] = [
    ((0,), (0,)),
    ((0, 3), (0, 3)),
    ((0, 3), (3,)),
    ((3,), (0, 3)),
    ((0, 3), ()),
    ((), (0,)),
    ((2, 0), (2, 1)),
    ((1, 0), (2, 1)),
]
EMPTY: dict[str, list[tuple[Shape, ...]]] = {
    **{
        case: B_EMPTY for case in ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "where")
    },
    **{
        case: U_EMPTY
        for case in (
            "pow-const",
            "pow-zero-base",
            "neg",
            "exp",
            "log",
            "sqrt",
            "abs",
            "sigmoid",
            "tanh",
            "relu",
            "leaky_relu",
            "elu",
            "clip",
            "T",
            "reshape",
            "to_device",
        )
    },
    **{f"{r}-{k}": U_EMPTY for r in ("sum", "mean", "logsumexp") for k in ("all", "axis0")},
    **{f"{r}-axis-1-keep": U_EMPTY for r in ("sum", "mean", "logsumexp")},
    **{f"{r}-axes01": [((0, 3),), ((2, 0, 2),)] for r in ("sum", "mean", "logsumexp")},
    **{f"{r}-all": [] for r in ("max", "min")},  # no maximum of no numbers
    **{f"{r}-axis0": [((3, 0),)] for r in ("max", "min")},  # (3, 0) -> (0,)
    **{f"{r}-axis-1-keep": [((0, 3),)] for r in ("max", "min")},  # (0, 3) -> (0, 1)
    **{f"{r}-axes01": [((2, 3, 0),)] for r in ("max", "min")},  # (2, 3, 0) -> (0,)
    "softmax-1": [((0, 3),), ((3, 0),)],
    "softmax-0": [((0, 3),), ((3, 0),)],
    "log_softmax-1": [((0, 3),), ((3, 0),)],
    "log_softmax-0": [((0, 3),), ((3, 0),)],
    **{f"{r}-all": [((0, 3),), ((3, 0),), ((0,),)] for r in ("softmax", "log_softmax")},
    **{f"{r}-02": [((0, 3, 2),), ((2, 3, 0),)] for r in ("softmax", "log_softmax")},
    "ce-labels": [((0, 3),)],  # no samples: loss NaN, gradient empty
    "ce-soft": [((0, 3),)],
    "ce-targets": [((0, 3), (0, 3))],
    "matmul": [((0, 3), (3, 4)), ((2, 0), (0, 4)), ((3,), (3, 0)), ((5, 0, 3), (3, 2))],
    "linear": [((0, 3), (2, 3), (2,)), ((4, 0), (2, 0), (2,)), ((4, 3), (0, 3), (0,))],
    "linear-nobias": [((0, 3), (2, 3)), ((4, 0), (2, 0))],
    "reshape-3": [],  # (3, 2, 1) has 6 elements: no empty input reshapes to it
    "transpose-axes": [((2, 0, 4),)],
    "swapaxes": U_EMPTY,
    "swapaxes-3": [((2, 0, 4),)],
    "broadcast_to": [],  # to (2, 2, 3): see broadcast_to-empty below
    "broadcast_to-empty": [((0, 3),), ((1, 3),), ((3,),)],  # -> (2, 0, 3)
    "sum_to": [((0, 3),), ((4, 0, 3),)],
    "slice": [((3, 0),), ((0, 4),)],
    "int": [((3, 0),)],
    "int-array-repeats": [((3, 0),)],
    "bool-mask": [],  # a mask of 3 needs an axis of 3; see none-selected below
    "none-selected": [((3,),), ((0,),), ((3, 2),)],  # x[[]]: nothing picked
    "tuple-adv": [],  # needs indices 0..2 of a (2, 3)
    "ellipsis-newaxis": [((0, 3),)],
    "index_add": [],  # fixed indices into (4,); see index_add-empty
    "index_add-empty": [((0,),)],
    "concat0": [((0, 3), (1, 3)), ((0,), (2,)), ((0, 3), (0, 3))],
    "concat1": [((2, 0), (2, 1)), ((0, 3), (0, 1))],
    "stack0": [((0,), (0,)), ((0, 3), (0, 3))],
    "stack-1": [((0,), (0,))],
}
# Every case of an elementwise op of the registry takes the unary or binary empty shapes (a new
# elementwise op needs no entry above).
for _op in gg.REGISTRY.values():
    if _op.elementwise:
        for _case, _ in SPECS.get(_op.name, []):
            EMPTY.setdefault(_case, B_EMPTY if len(_op.arg_names) == 2 else U_EMPTY)

#: Ops that are deliberately not differentiable (their output never requires a gradient).
NON_DIFFERENTIABLE = {"lt", "le", "gt", "ge", "eq", "ne", "sign", "argmax"}


def sample(spec: Spec, shapes: tuple[Shape, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """Draw inputs for ``spec`` at ``shapes``, re-drawing until they are off every kink."""
    for _ in range(100):
        xs = [DOMAINS[d](rng, s) for d, s in zip(spec.domains, shapes, strict=True)]
        if (
            spec.distinct
            and len(xs) == 2
            and all(x.size for x in xs)
            and np.min(np.abs(np.subtract(*np.broadcast_arrays(xs[0], xs[1])))) < 0.1
        ):
            continue
        if spec.reduce_distinct:
            v = np.sort(xs[0].reshape(-1))
            if v.size > 1 and np.min(np.diff(v)) < 0.05:
                continue
        return xs
    raise RuntimeError("could not draw inputs off the kinks")


def scalar_inputs(op: str, count: int = 3, seed: int = 0) -> list[tuple[float, ...]]:
    """``count`` tuples of Python floats for op ``op``, drawn from its first spec's domains
    (off kinks): the inputs the consumer tests (Scalars, units, expressions) try."""
    spec = SPECS[op][0][1]
    rng = np.random.default_rng(seed)
    return [
        tuple(float(a) for a in sample(spec, ((),) * len(spec.domains), rng)) for _ in range(count)
    ]


def op_params(op: str) -> dict[str, Any]:
    """The parameters op ``op``'s first spec calls it with (``{}`` for most ops)."""
    return dict(SPECS[op][0][1].params)


def cases() -> list[tuple[str, str, Spec, tuple[Shape, ...]]]:
    """(op name, case id, spec, shapes) for every spec and shape in the table."""
    out = []
    for op, entries in SPECS.items():
        for case_id, spec in entries:
            for shapes in spec.shapes:
                out.append((op, f"{case_id}-{'x'.join(map(str, shapes))}", spec, shapes))
    return out


def empty_cases() -> list[tuple[str, str, Spec, tuple[Shape, ...]]]:
    """(op name, case id, spec, shapes) for every empty shape in :data:`EMPTY`."""
    out = []
    for op, entries in SPECS.items():
        for case_id, spec in entries:
            for shapes in EMPTY.get(case_id, []):
                out.append((op, f"{case_id}-{'x'.join(map(str, shapes))}", spec, shapes))
    return out


def as_args(arrays: list[np.ndarray]) -> Any:
    return [gg.Tensor(a, requires_grad=True) for a in arrays]
