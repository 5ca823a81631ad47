"""Habits from PyTorch that would silently compute something else in graphgrad (which follows
NumPy), each refused with an error naming both conventions; modes that are per thread."""

from __future__ import annotations

import asyncio
import inspect
import operator
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad.tensor import Tensor

# ----------------------------------------------------------------------------- transpose


def _two_axes_calls() -> list[tuple[str, Callable[[Tensor], Tensor]]]:
    return [
        ("x.transpose(0, 1)", lambda x: x.transpose(0, 1)),
        ("x.transpose((0, 1))", lambda x: x.transpose((0, 1))),
        ("x.transpose(-2, -1)", lambda x: x.transpose(-2, -1)),
        ("x.transpose(0, -1)", lambda x: x.transpose(0, -1)),
        ("gg.transpose(x, (0, 1))", lambda x: gg.transpose(x, (0, 1))),
        ("gg.transpose(x, [np.int64(0), 1])", lambda x: gg.transpose(x, [np.int64(0), 1])),
    ]


@pytest.mark.parametrize(("text", "call"), _two_axes_calls(), ids=lambda v: str(v))
def test_torch_style_transpose_of_a_matrix_raises(text: str, call: Callable) -> None:
    x = gg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    with pytest.raises(gg.ShapeError, match=r"follows NumPy.*PyTorch.*swapaxes\(0, 1\)"):
        call(x)


def test_transpose_keeps_numpys_meaning_where_both_agree(rng: np.random.Generator) -> None:
    a = rng.standard_normal((2, 3, 4))
    x = gg.tensor(a)
    np.testing.assert_array_equal(x[0].transpose(1, 0).data, a[0].T)
    np.testing.assert_array_equal(x.transpose(2, 0, 1).data, a.transpose(2, 0, 1))
    np.testing.assert_array_equal(x.transpose((2, 0, 1)).data, a.transpose((2, 0, 1)))
    np.testing.assert_array_equal(x.transpose().data, a.transpose())
    np.testing.assert_array_equal(x.T.data, a.T)
    np.testing.assert_array_equal(x.transpose(0, 1, 2).data, a)  # an explicit identity
    # a 1-D tensor: NumPy accepts one axis (it used to be a TypeError here)
    v = gg.tensor([1.0, 2.0])
    np.testing.assert_array_equal(v.transpose(0).data, [1.0, 2.0])
    np.testing.assert_array_equal(gg.transpose(v, 0).data, [1.0, 2.0])
    np.testing.assert_array_equal(gg.tensor(3.0).transpose().data, 3.0)


def test_two_axes_of_a_3d_tensor_name_swapaxes() -> None:
    x = gg.tensor(np.zeros((2, 3, 4)))
    with pytest.raises(gg.ShapeError, match=r"not a permutation.*NumPy.*x\.swapaxes\(0, 2\)"):
        x.transpose(0, 2)


def test_transpose_axes_out_of_range_are_refused() -> None:
    x = gg.tensor(np.zeros((2, 3)))
    for bad in ((0, 3), (5, 1), (0, -3)):  # (0, 3) used to wrap to (0, 1) silently
        with pytest.raises(gg.ShapeError, match="out of range"):
            x.transpose(*bad)


def test_swapaxes_is_numpys_and_torchs_transpose(rng: np.random.Generator) -> None:
    a = rng.standard_normal((2, 3, 4))
    for i, j in ((0, 1), (0, 2), (-1, 1), (1, 1)):
        np.testing.assert_array_equal(gg.tensor(a).swapaxes(i, j).data, np.swapaxes(a, i, j))
        np.testing.assert_array_equal(gg.swapaxes(a, i, j).data, np.swapaxes(a, i, j))
    with pytest.raises(gg.ShapeError, match="swapaxes: axis 3"):
        gg.swapaxes(a, 0, 3)


# ------------------------------------------------------------ max/min: values, not pairs

REDUCE_PAIRS: list[tuple[str, Callable[..., Tensor]]] = [
    ("gg.max", gg.max),
    ("gg.min", gg.min),
    ("Tensor.max", Tensor.max),
    ("Tensor.min", Tensor.min),
]


@pytest.mark.parametrize(("text", "f"), REDUCE_PAIRS, ids=[r[0] for r in REDUCE_PAIRS])
@pytest.mark.parametrize("keepdims", [False, True])
def test_unpacking_max_like_torch_raises(text: str, f: Callable, keepdims: bool) -> None:
    out = gg.tensor([[0.1, 0.9, 0.0], [0.7, 0.2, 0.1]])  # a batch of 2: unpacks into 2
    with pytest.raises(TypeError, match=r"NumPy.*\(values, indices\).*gg\.argmax\(x, axis\)"):
        _, _pred = f(out, 1, keepdims) if keepdims else f(out, 1)
    with pytest.raises(TypeError, match="argmax"):
        list(f(out, axis=0))
    with pytest.raises(TypeError, match="argmax"):
        for _ in f(out, -1):
            pass
    for i in (0, 1, -1, np.int64(1)):  # torch's out.max(1)[1] is the indices
        with pytest.raises(TypeError, match=r"follows NumPy.*\(values, indices\).*gg\.argmax"):
            f(out, 1, keepdims)[i] if keepdims else f(out, 1)[i]


def test_the_values_of_max_still_behave_as_a_tensor(rng: np.random.Generator) -> None:
    a = rng.standard_normal((2, 3))
    x = gg.tensor(a, requires_grad=True)
    m = gg.max(x, 1)
    assert isinstance(m, Tensor) and len(m) == 2 and m.shape == (2,)
    np.testing.assert_array_equal(m.data, a.max(axis=1))
    assert float(gg.getitem(m, 1)) == a[1].max() == float(m.data[1])
    np.testing.assert_array_equal(m[:1].data, a[:1].max(axis=1))  # slices index as usual
    np.testing.assert_array_equal(m[np.array([1, 0])].data, a.max(axis=1)[::-1])
    assert [float(v) for v in (m * 1)] == list(a.max(axis=1))
    m.sum().backward()
    np.testing.assert_array_equal(x.grad, (a == a.max(axis=1, keepdims=True)).astype(float))
    np.testing.assert_array_equal(gg.argmax(x, 1).data, a.argmax(axis=1))
    assert float(gg.max(x)) == a.max()  # no axis: one number


@pytest.mark.parametrize(("name", "pairwise"), [("max", "maximum"), ("min", "minimum")])
def test_torch_style_max_of_two_tensors_names_maximum(name: str, pairwise: str) -> None:
    f = getattr(gg, name)
    a, b = gg.tensor([1.0, 5.0]), gg.tensor([3.0, 0.0])
    for other in (b, b.data, 2.5):
        with pytest.raises(TypeError, match=rf"gg\.{pairwise}\(x, y\)"):
            f(a, other)


# ------------------------------------------------------------------ in-place operators

INPLACE: list[tuple[str, Callable[[Any, Any], Any], Callable[[Any, Any], Any]]] = [
    ("+=", operator.iadd, operator.add),
    ("-=", operator.isub, operator.sub),
    ("*=", operator.imul, operator.mul),
    ("/=", operator.itruediv, operator.truediv),
    ("**=", operator.ipow, operator.pow),
]


def test_every_arithmetic_operator_has_its_inplace_form() -> None:
    """Without ``__iop__`` Python turns ``x op= y`` into ``x = x op y`` silently."""
    binary = [n[2:-2] for n in vars(Tensor) if n.startswith("__") and f"__r{n[2:]}" in vars(Tensor)]
    assert {"add", "sub", "mul", "truediv", "pow", "matmul"} <= set(binary)
    missing = [n for n in binary if f"__i{n}__" not in vars(Tensor)]
    assert not missing, f"Tensor lacks the in-place forms of: {missing}"


@pytest.mark.parametrize(("sym", "iop", "op"), INPLACE, ids=[i[0] for i in INPLACE])
def test_inplace_on_a_leaf_that_requires_grad_raises(sym: str, iop: Callable, op: Callable) -> None:
    w = gg.tensor([1.0, 2.0], requires_grad=True, name="w")
    before = w.data.copy()
    with pytest.raises(gg.InPlaceError, match=rf"x {re.escape(sym)} .*'w'.*requires grad.*no_grad"):
        iop(w, 2.0)
    np.testing.assert_array_equal(w.data, before)  # untouched
    with pytest.raises(gg.InPlaceError):
        w[0] = 5.0
    w2 = gg.tensor(np.eye(2), requires_grad=True)
    with pytest.raises(gg.InPlaceError, match="@="):
        w2 @= np.eye(2)


@pytest.mark.parametrize(("sym", "iop", "op"), INPLACE, ids=[i[0] for i in INPLACE])
def test_inplace_under_no_grad_updates_the_same_leaf(sym: str, iop: Callable, op: Callable) -> None:
    a = np.array([1.5, 2.0])
    w = gg.tensor(a.copy(), requires_grad=True)
    obj, buf = w, w.data
    with gg.no_grad():
        res = iop(w, 2.0)
    assert res is obj and res.data is buf and res.requires_grad and res.is_leaf
    np.testing.assert_array_equal(res.data, op(a, 2.0))


def test_an_sgd_step_written_in_place_trains_the_parameter() -> None:
    w = gg.tensor([3.0], requires_grad=True)
    opt_view = [w]  # what an optimiser would hold
    for _ in range(50):
        loss = ((w - 1.0) ** 2).sum()
        loss.backward()
        with gg.no_grad():
            w -= 0.1 * w.grad
        w.grad = None
    assert opt_view[0] is w and abs(float(w.data[0]) - 1.0) < 1e-3


@pytest.mark.parametrize(("sym", "iop", "op"), INPLACE, ids=[i[0] for i in INPLACE])
def test_inplace_on_a_constant_never_changes_a_graph_that_used_it(
    sym: str, iop: Callable, op: Callable
) -> None:
    a = np.array([1.5, 2.0])
    x = gg.tensor(a.copy())
    w = gg.tensor([3.0, 4.0], requires_grad=True)
    y = (w * x).sum()  # saves x's values for the gradient of w
    alias = x
    x = iop(x, 2.0)  # what the statement `x op= 2` does
    np.testing.assert_array_equal(x.data, op(a, 2.0))
    np.testing.assert_array_equal(alias.data, a)  # a new tensor: the graph's x is intact
    y.backward()
    np.testing.assert_array_equal(w.grad, a)  # dy/dw = the x it was computed with
    with gg.no_grad():  # outside any recording: NumPy's in-place update
        z = iop(alias, 2.0)
    assert z is alias
    np.testing.assert_array_equal(alias.data, op(a, 2.0))


@pytest.mark.parametrize(("sym", "iop", "op"), INPLACE, ids=[i[0] for i in INPLACE])
def test_inplace_on_a_graph_node_records_a_new_node(
    sym: str, iop: Callable, op: Callable, rng: np.random.Generator
) -> None:
    a = rng.uniform(0.5, 2.0, 3)
    w1, w2 = gg.tensor(a, requires_grad=True), gg.tensor(a, requires_grad=True)
    h = w1 * 1.0
    h = iop(h, 2.0)
    ref = op(w2 * 1.0, 2.0)
    h.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(w1.grad, w2.grad)
    # a constant accumulator that receives a graph node becomes a node (x = x + loss)
    acc = gg.tensor(0.0)
    acc = iop(acc, w1.sum())
    assert acc.requires_grad and not acc.is_leaf


def test_inplace_errors_name_shapes_and_dtypes() -> None:
    """In place (under no_grad) the shape and the dtype cannot change."""
    c = gg.tensor(np.zeros(3))
    i = gg.tensor(np.array([1, 2]))
    m = gg.tensor(np.eye(2))
    with gg.no_grad():
        with pytest.raises(gg.ShapeError, match=r"shape \(2, 3\) but x has shape \(3,\)"):
            c += np.ones((2, 3))
        with pytest.raises(TypeError, match="float64 result in x's int64 data"):
            i /= 2
        buf = m.data
        m @= np.array([[0.0, 1.0], [1.0, 0.0]])
    assert m.data is buf
    np.testing.assert_array_equal(m.data, [[0.0, 1.0], [1.0, 0.0]])


def test_setitem_follows_the_same_rules() -> None:
    c = gg.tensor(np.zeros(3))
    c[1] = 5.0
    np.testing.assert_array_equal(c.data, [0.0, 5.0, 0.0])
    w = gg.tensor(np.zeros(3), requires_grad=True)
    with gg.no_grad():
        w[gg.tensor(np.array([0, 2]))] = 1.0
    np.testing.assert_array_equal(w.data, [1.0, 0.0, 1.0])
    h = w * 2
    with pytest.raises(TypeError, match=r"computed by op 'mul'.*gg\.where"):
        h[0] = 1.0
    with pytest.raises(gg.InPlaceError, match="cut it from the graph"):
        c[0] = w[0]  # the values of a node that requires grad


# ---------------------------------------------------- requires_grad needs float data


@pytest.mark.parametrize(
    "data",
    [[1, 2], 3, [[1], [2]], [True, False], np.array([1, 2]), np.arange(3, dtype=np.uint8)],
    ids=repr,
)
def test_integer_data_cannot_require_grad(data: Any) -> None:
    with pytest.raises(TypeError, match=r"floating-point.*PyTorch and JAX.*\[1\., 2\.\]"):
        gg.tensor(data, requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        gg.Tensor(data, requires_grad=True)


def test_float_data_or_a_float_dtype_can_require_grad() -> None:
    assert gg.tensor([1.0, 2.0], requires_grad=True).dtype == gg.get_default_dtype()
    assert gg.tensor([1, 2], requires_grad=True, dtype=np.float64).dtype == np.float64
    assert gg.tensor(np.arange(3.0), requires_grad=True).dtype == np.float64
    assert gg.tensor([1, 2]).dtype.kind == "i"  # without requires_grad: NumPy's dtype


# ------------------------------------------------------------- modes are per thread


def _in_thread(fn: Callable[[], Any]) -> Any:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as e:  # handed back to the test
            box.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def test_no_grad_in_one_thread_does_not_stop_another() -> None:
    """An evaluation thread inside no_grad while a training thread runs backward."""
    inside = threading.Event()
    done = threading.Event()
    seen: dict[str, Any] = {}

    def evaluator() -> None:
        with gg.no_grad():
            seen["eval_enabled"] = gg.is_grad_enabled()
            inside.set()
            done.wait(timeout=60)
            seen["eval_records"] = (gg.tensor([1.0], requires_grad=True) * 2).requires_grad
            seen["eval_scalar_records"] = (gg.Scalar(1.0) * 2).requires_grad

    def trainer() -> None:
        inside.wait(timeout=60)
        ok = 0
        for _ in range(200):
            w = gg.tensor([1.0, 2.0], requires_grad=True)
            (w * w).sum().backward()
            s = gg.Scalar(3.0)
            (s * s).backward()
            ok += w.grad is not None and s.grad == 6.0
        seen["train_ok"] = ok
        seen["train_enabled"] = gg.is_grad_enabled()
        done.set()

    threads = [threading.Thread(target=evaluator), threading.Thread(target=trainer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert seen == {
        "eval_enabled": False,
        "eval_records": False,
        "eval_scalar_records": False,
        "train_ok": 200,
        "train_enabled": True,
    }


def test_no_grad_in_one_async_task_does_not_stop_another() -> None:
    async def evaluate(inside: asyncio.Event, done: asyncio.Event) -> bool:
        with gg.no_grad():
            inside.set()
            await done.wait()  # the other task runs while this one is inside no_grad
            return gg.is_grad_enabled()

    async def train(inside: asyncio.Event, done: asyncio.Event) -> bool:
        await inside.wait()
        w = gg.tensor([2.0], requires_grad=True)
        (w * w).sum().backward()
        done.set()
        return gg.is_grad_enabled() and float(w.grad[0]) == 4.0

    async def main() -> list[bool]:
        inside, done = asyncio.Event(), asyncio.Event()
        return list(await asyncio.gather(evaluate(inside, done), train(inside, done)))

    assert asyncio.run(main()) == [False, True]
    assert gg.is_grad_enabled()


def test_a_new_thread_starts_from_the_defaults() -> None:
    with gg.no_grad(), gg.detect_anomaly():
        gg.set_default_dtype(np.float64)
        try:
            state = _in_thread(
                lambda: (
                    gg.is_grad_enabled(),
                    gg.get_default_dtype(),
                    gg.tensor([1.0]).dtype,
                    gg.tensor(1.0, requires_grad=True) * 1.0,
                )
            )
            assert state[:3] == (True, np.float32, np.float32)
            assert state[3].requires_grad
            # and this thread kept its own settings
            assert not gg.is_grad_enabled() and gg.tensor([1.0]).dtype == np.float64
        finally:
            gg.set_default_dtype(np.float32)


def test_set_default_dtype_in_a_thread_leaves_others_alone() -> None:
    def worker() -> tuple[Any, Any]:
        gg.set_default_dtype(np.float64)
        return gg.get_default_dtype(), gg.tensor([0.5]).dtype

    assert _in_thread(worker) == (np.float64, np.float64)
    assert gg.get_default_dtype() == np.float32 and gg.tensor([0.5]).dtype == np.float32


def test_anomaly_mode_is_per_thread() -> None:
    with gg.detect_anomaly():
        x = gg.tensor([0.0], requires_grad=True)
        with pytest.raises(gg.AnomalyError):
            gg.log(x)
        # in another thread the same op is not checked (NumPy's warning, silenced here)

        def other() -> float:
            with np.errstate(divide="ignore"):
                return float(gg.log(gg.tensor([0.0], requires_grad=True)).data[0])

        assert _in_thread(other) == -np.inf


# --------------------------------------------------------------------------- the seed


def test_manual_seed_makes_layers_reproducible() -> None:
    gg.manual_seed(7)
    a = gg.nn.MLP(4, [8], 3)
    b_first = gg.nn.Linear(3, 2).weight.data.copy()
    gg.manual_seed(7)
    b = gg.nn.MLP(4, [8], 3)
    assert b_first.shape == (2, 3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)
    np.testing.assert_array_equal(gg.nn.Linear(3, 2).weight.data, b_first)
    gg.manual_seed(8)
    c = gg.nn.MLP(4, [8], 3)
    assert not np.array_equal(next(iter(a.parameters())).data, next(iter(c.parameters())).data)
    # an explicit rng is not affected by the global seed
    w1 = gg.nn.Linear(3, 2, rng=np.random.default_rng(1)).weight.data
    gg.manual_seed(99)
    np.testing.assert_array_equal(gg.nn.Linear(3, 2, rng=np.random.default_rng(1)).weight.data, w1)
    # toy data sets and data loaders given no rng or seed draw from it too
    gg.manual_seed(3)
    moons = gg.data.two_moons(20)
    gg.manual_seed(3)
    np.testing.assert_array_equal(gg.data.two_moons(20)[0], moons[0])
    gg.manual_seed(3)
    s1 = gg.data.DataLoader(np.arange(10.0), batch_size=2, shuffle=True).seed
    gg.manual_seed(3)
    assert gg.data.DataLoader(np.arange(10.0), batch_size=2, shuffle=True).seed == s1


def test_manual_seed_is_shared_by_threads_and_checks_its_argument() -> None:
    gg.manual_seed(5)
    expected = gg.nn.Linear(2, 2).weight.data
    _in_thread(lambda: gg.manual_seed(5))
    np.testing.assert_array_equal(gg.nn.Linear(2, 2).weight.data, expected)
    # concurrent draws do not corrupt the generator
    gg.manual_seed(6)
    _ = [_in_thread(lambda: gg.nn.Linear(50, 50)) for _ in range(4)]
    for bad, err in ((-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)):
        with pytest.raises(err, match="manual_seed"):
            gg.manual_seed(bad)  # type: ignore[arg-type]


# ------------------------------------- every positional-axis call, against PyTorch's reading

try:  # a reference only: without PyTorch these comparisons are skipped, nothing else
    import torch
except ImportError:  # pragma: no cover
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

A = np.arange(24.0).reshape(2, 3, 4) % 7 - 3.0  # ties included

#: Each public function or method taking axes, called as a PyTorch user would write it:
#: (graphgrad call, PyTorch call). The PyTorch result of a (values, indices) pair is compared
#: by its values; None: graphgrad raises instead (the readings differ).
TORCH_READINGS: dict[str, list[tuple[Callable[[Tensor], Any], Callable[[Any], Any] | None]]] = {
    "full": [(lambda x: gg.full(x.shape, 2.5), lambda t: torch.full(t.shape, 2.5))],  # size first
    "sum": [
        (lambda x: x.sum(1), lambda t: t.sum(1)),
        (lambda x: gg.sum(x, 1, True), lambda t: t.sum(1, True)),
    ],
    "mean": [
        (lambda x: x.mean(2), lambda t: t.mean(2)),
        (lambda x: gg.mean(x, -1, True), lambda t: t.mean(-1, True)),
    ],
    "max": [
        (lambda x: x.max(1), lambda t: t.max(1).values),
        (lambda x: gg.max(x, 0, True), lambda t: t.max(0, True).values),
    ],
    "min": [
        (lambda x: x.min(1), lambda t: t.min(1).values),
        (lambda x: gg.min(x, 2), lambda t: torch.min(t, 2).values),
    ],
    "argmax": [
        (lambda x: x.argmax(1), lambda t: t.argmax(1)),
        (lambda x: gg.argmax(x, 2), lambda t: torch.argmax(t, 2)),
    ],
    "logsumexp": [
        (lambda x: x.logsumexp(1), lambda t: t.logsumexp(1)),
        (lambda x: gg.logsumexp(x, 0, True), lambda t: torch.logsumexp(t, 0, True)),
    ],
    "softmax": [
        (lambda x: x.softmax(1), lambda t: t.softmax(1)),
        (lambda x: gg.softmax(x, 0), lambda t: torch.softmax(t, 0)),
    ],
    "log_softmax": [
        (lambda x: x.log_softmax(1), lambda t: t.log_softmax(1)),
        (lambda x: gg.log_softmax(x, 2), lambda t: torch.log_softmax(t, 2)),
    ],
    "concatenate": [(lambda x: gg.concatenate([x, x], 1), lambda t: torch.cat([t, t], 1))],
    "zeros": [(lambda x: gg.zeros((2, 3)), lambda t: torch.zeros((2, 3)))],
    "ones": [(lambda x: gg.ones(x.shape), lambda t: torch.ones(t.shape))],
    "randn": [(lambda x: gg.randn(2, 3) * 0.0, lambda t: torch.randn(2, 3) * 0.0)],
    "stack": [(lambda x: gg.stack([x, x], 2), lambda t: torch.stack([t, t], 2))],
    "swapaxes": [
        (lambda x: x.swapaxes(0, 2), lambda t: t.swapaxes(0, 2)),
        (lambda x: gg.swapaxes(x, 1, 2), lambda t: torch.swapaxes(t, 1, 2)),
    ],
    "transpose": [
        (lambda x: x.transpose(0, 1), None),  # 3-D: NumPy needs all axes, torch swaps two
        (lambda x: x[0].transpose(0, 1), None),  # 2-D: NumPy's identity, torch's swap
        (lambda x: x[0].transpose(1, 0), lambda t: t[0].transpose(1, 0)),  # both swap
        (lambda x: x.transpose(), lambda t: t.permute(2, 1, 0)),  # .T-like reversal
    ],
    "reshape": [
        (lambda x: x.reshape(4, 6), lambda t: t.reshape(4, 6)),
        (lambda x: x.reshape((-1,)), lambda t: t.reshape((-1,))),
    ],
    "broadcast_to": [
        (lambda x: x[:1].broadcast_to((2, 2, 3, 4)), lambda t: t[:1].broadcast_to((2, 2, 3, 4)))
    ],
}


def _axis_taking_names() -> set[str]:
    names = set()
    for name in gg.__all__:
        f = getattr(gg, name)
        if callable(f) and not isinstance(f, type):
            params = inspect.signature(f).parameters
            if {"axis", "axes", "axis1", "shape"} & set(params) and name not in ("sum_to",):
                names.add(name)
    for name, f in vars(Tensor).items():
        params = inspect.signature(f).parameters if callable(f) else {}
        if not name.startswith("_") and {"axis", "axes", "axis1", "shape"} & set(params):
            names.add(name)
    return names


def test_every_axis_taking_function_is_in_the_table() -> None:
    """A new function or method taking axes must say how PyTorch's reading of it compares."""
    missing = _axis_taking_names() - set(TORCH_READINGS) - {"index_add"}
    assert not missing, f"add to TORCH_READINGS: {sorted(missing)}"


@needs_torch
@pytest.mark.parametrize("name", sorted(TORCH_READINGS))
def test_positional_axes_agree_with_pytorch_or_raise(name: str) -> None:
    x, t = gg.tensor(A), torch.from_numpy(A)
    for ours, theirs in TORCH_READINGS[name]:
        if theirs is None:
            with pytest.raises((gg.ShapeError, TypeError), match="NumPy"):
                ours(x)
            continue
        got, want = ours(x), theirs(t)
        np.testing.assert_array_equal(got.data, want.numpy(), err_msg=name)


# ------------------------------------------ PyTorch's keywords, methods and size(), named


@pytest.mark.parametrize(
    ("call", "torch_kw", "numpy_kw"),
    [
        (lambda x: x.sum(dim=1), "dim", "axis"),
        (lambda x: gg.sum(x, dim=1), "dim", "axis"),
        (lambda x: x.mean(dim=0, keepdim=True), "dim", "axis"),
        (lambda x: gg.mean(x, 0, keepdim=True), "keepdim", "keepdims"),
        (lambda x: x.max(dim=1), "dim", "axis"),
        (lambda x: gg.min(x, dim=1), "dim", "axis"),
        (lambda x: x.argmax(dim=1), "dim", "axis"),
        (lambda x: gg.argmax(x, dim=1), "dim", "axis"),
        (lambda x: gg.logsumexp(x, dim=1), "dim", "axis"),
        (lambda x: x.softmax(dim=1), "dim", "axis"),
        (lambda x: gg.log_softmax(x, dim=1), "dim", "axis"),
        (lambda x: gg.concatenate([x, x], dim=0), "dim", "axis"),
        (lambda x: gg.stack([x, x], dim=0), "dim", "axis"),
    ],
)
def test_torch_keywords_name_numpys(call: Callable, torch_kw: str, numpy_kw: str) -> None:
    x = gg.tensor(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match=rf"{torch_kw}= is PyTorch's.*follows NumPy.*{numpy_kw}="):
        call(x)


def test_size_is_numpys_count_and_calling_it_names_shape() -> None:
    x = gg.tensor(np.zeros((2, 3)))
    assert x.size == 6 and isinstance(x.size, int) and str(x.size) == "6"
    with pytest.raises(TypeError, match=r"number of elements \(6\).*PyTorch's.*x\.shape"):
        x.size()
    with pytest.raises(TypeError, match=r"axis 1: x\.shape\[1\]"):
        x.size(1)


@pytest.mark.parametrize(
    ("name", "spelling"),
    [("view", "reshape"), ("permute", "transpose"), ("unsqueeze", "None"), ("dim", "ndim")],
)
def test_torch_methods_name_the_numpy_spelling(name: str, spelling: str) -> None:
    x = gg.tensor(np.zeros((2, 3)))
    with pytest.raises(AttributeError, match=rf"Tensor\.{name}\(\) is PyTorch's.*{spelling}"):
        getattr(x, name)
    assert not hasattr(x, name)


def test_other_missing_attributes_keep_pythons_message() -> None:
    x = gg.tensor(np.zeros(2))
    with pytest.raises(AttributeError, match=r"^'Tensor' object has no attribute 'nope'$"):
        x.nope  # noqa: B018
    assert x.grad is None and not hasattr(x, "nope")
    # (no __getattr__ on the class: it would slow every attribute read of every tensor)
    assert "__getattr__" not in vars(Tensor)


@pytest.mark.parametrize("axis", [1.0, True, np.bool_(False), "1", (0, 1.0)])
def test_an_axis_must_be_an_int(axis: Any) -> None:
    x = gg.tensor(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"sum: axis must be an int, a tuple of ints or None"):
        x.sum(axis=axis)


def _softmax_ref(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    e = np.exp(a - a.max(axis=axes, keepdims=True))
    return e / e.sum(axis=axes, keepdims=True)


@pytest.mark.parametrize(("axis", "axes"), [((0, 2), (0, 2)), ([2, 0], (0, 2)), (None, (0, 1, 2))])
def test_softmax_normalises_over_every_axis_given(axis: Any, axes: tuple[int, ...]) -> None:
    a = np.random.default_rng(0).normal(size=(2, 3, 4))
    want = _softmax_ref(a, axes)
    np.testing.assert_allclose(gg.softmax(a, axis=axis).data, want, rtol=1e-13)
    np.testing.assert_allclose(gg.log_softmax(a, axis).data, np.log(want), rtol=1e-12)
    np.testing.assert_allclose(gg.softmax(a, axis).data.sum(axis=axes), 1.0, rtol=1e-13)


def test_concatenate_axis_none_flattens_as_numpy_does() -> None:
    a = np.arange(6.0).reshape(2, 3)
    x = gg.tensor(a, requires_grad=True)
    out = gg.concatenate([x, x * 2.0], axis=None)
    np.testing.assert_array_equal(out.data, np.concatenate([a, a * 2], axis=None))
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 3.0))
    for bad in ((0, 1), 0.0):
        with pytest.raises(TypeError, match="concatenate: an axis must be an int"):
            gg.concatenate([x, x], axis=bad)
    with pytest.raises(TypeError, match="stack: an axis must be an int, got NoneType"):
        gg.stack([x, x], axis=None)  # type: ignore[arg-type]


def test_clip_takes_numpys_min_max_and_constant_tensor_bounds() -> None:
    x = gg.tensor(np.array([-2.0, 0.5, 3.0]), requires_grad=True)
    np.testing.assert_array_equal(gg.clip(x, min=0.0).data, [0.0, 0.5, 3.0])
    np.testing.assert_array_equal(x.clip(max=1.0).data, [-2.0, 0.5, 1.0])
    lo = gg.tensor(np.array([-3.0, 1.0, 0.0]))
    np.testing.assert_array_equal(gg.clip(x, lo, 2.0).data, [-2.0, 1.0, 2.0])
    with pytest.raises(TypeError, match="bound lo is a Tensor that requires grad"):
        gg.clip(x, gg.tensor(np.zeros(3), requires_grad=True))
    with pytest.raises(TypeError, match="clip: give lo once"):
        gg.clip(x, 0.0, min=1.0)
