"""The registry is the single source of per-op facts: every consumer serves every op it should.

One test per consumer, parametrised over the registry, so a new op that a consumer misses fails
a test whose id names the consumer and the op (``test_scalar_method[compiled-softplus]``).
The consumers: the public functions and Tensor methods, Scalars in both implementations, scalar
units (``gg.units``), the expression language of ``graphgrad graph``, the activation modules
and their init gains, and the ops' module names. Inputs and parameters come from the op's row
of the gradient-check spec table, so adding an op asks for nothing here.
"""

from __future__ import annotations

import inspect
import math
import sys
from types import ModuleType

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import expr, nn
from graphgrad.scalar import FLOAT_FORWARD, FLOAT_XP, local_grads, registry_rules
from graphgrad.tensor import OP_FUNCTIONS
from graphgrad.units import EXPANSIONS, SUPPORTED_OPS
from op_specs import SPECS, op_params, scalar_inputs
from twins import scalar_implementations

ELEMENTWISE = [op for op in gg.REGISTRY.values() if op.elementwise]
BY_NAME = [op for op in ELEMENTWISE if not op.symbol]  # called by name, not by an operator
ACTIVATIONS = [op for op in gg.REGISTRY.values() if op.category == "activation"]


IMPLS = list(scalar_implementations().items())


def _ids(op: gg.ops.Op) -> str:
    return op.name


def _arrays(op: gg.ops.Op) -> list[np.ndarray]:
    return [np.asarray(v, dtype=np.float64) for v in zip(*scalar_inputs(op.name), strict=True)]


def test_every_elementwise_op_has_a_spec_row() -> None:
    missing = [op.name for op in ELEMENTWISE if op.name not in SPECS]
    assert not missing, f"elementwise ops without a spec row (tests/op_specs.py): {missing}"


# ------------------------------------------------------------------- functions and methods


@pytest.mark.parametrize("op", ELEMENTWISE, ids=_ids)
def test_public_function(op: gg.ops.Op) -> None:
    fn = getattr(gg, op.name, None)
    assert fn is not None, f"consumer 'gg.{op.name}' (public function): missing for op {op.name!r}"
    assert fn is OP_FUNCTIONS[op.name]
    params = op_params(op.name)
    xs = [gg.Tensor(a, requires_grad=True) for a in _arrays(op)]
    out = fn(*xs, **params)
    assert out._op is op, f"gg.{op.name} did not record op {op.name!r}"
    want = op.forward(*[x.data for x in xs], **params)
    np.testing.assert_allclose(out.data, want, rtol=1e-15, err_msg=f"gg.{op.name}")
    assert fn.__doc__ and op.formula in fn.__doc__


@pytest.mark.parametrize("op", BY_NAME, ids=_ids)
def test_tensor_method(op: gg.ops.Op) -> None:
    method = getattr(gg.Tensor, op.name, None)
    assert method is not None, f"consumer 'Tensor.{op.name}' (method): missing for op {op.name!r}"
    params = op_params(op.name)
    xs = [gg.Tensor(a) for a in _arrays(op)]
    got = getattr(xs[0], op.name)(*xs[1:], **params)
    np.testing.assert_array_equal(got.data, OP_FUNCTIONS[op.name](*xs, **params).data)


@pytest.mark.parametrize("impl", [m for _, m in IMPLS], ids=[n for n, _ in IMPLS])
@pytest.mark.parametrize("op", ELEMENTWISE, ids=_ids)
def test_scalar_op(op: gg.ops.Op, impl: ModuleType) -> None:
    """Value from the op's float forward, gradients from its rule, in both implementations;
    a method for ops called by name, the public function giving a Scalar."""
    where = f"consumer 'Scalar' ({impl.__name__}) for op {op.name!r}"
    assert op in FLOAT_FORWARD, f"{where}: no float forward"
    params = op_params(op.name)
    for args in scalar_inputs(op.name):
        xs = [impl.Scalar(v) for v in args]
        if op.symbol:
            out = impl.apply_op(op, *xs, **params)
        else:
            method = getattr(xs[0], op.name, None)
            assert method is not None, f"{where}: no method Scalar.{op.name}"
            out = method(*xs[1:], **params)
        assert out._op is op, where
        assert out.data == FLOAT_FORWARD[op](*args, **params), where
        ref = op.forward(*[np.float64(v) for v in args], **params)
        assert out.data == pytest.approx(float(ref), rel=1e-14, abs=1e-300), where
        labels = local_grads(out)  # the edge labels of `graphgrad graph`: upstream 1
        out.backward(0.5, retain_graph=True)
        # exactly what the registry's rules give (the compiled core's inline copies included)
        assert [x.grad for x in xs] == list(registry_rules(out, 0.5)), where
        for x in xs:
            x.grad = 0.0
        out.backward(1.0)
        assert [x.grad for x in xs] == list(labels), f"{where}: edge labels != backward"
    if impl.Scalar is gg.Scalar:  # the public function dispatches on the active implementation
        xs = [impl.Scalar(v) for v in scalar_inputs(op.name)[0]]
        assert isinstance(OP_FUNCTIONS[op.name](*xs, **params), impl.Scalar), where


# ----------------------------------------------------------------------------- scalar units


@pytest.mark.parametrize("op", ELEMENTWISE, ids=_ids)
def test_units(op: gg.ops.Op) -> None:
    assert op.name in SUPPORTED_OPS, f"consumer 'gg.units': op {op.name!r} is not supported"
    params = op_params(op.name)
    xs = [gg.Tensor(a, requires_grad=True) for a in _arrays(op)]
    out = OP_FUNCTIONS[op.name](*xs, **params)
    loss = (out * gg.Tensor(np.linspace(0.5, 1.5, out.size).reshape(out.shape))).sum()
    u = gg.units(loss)
    u.backward()
    loss.backward()
    for x in xs:
        np.testing.assert_allclose(u.values(x), x.data, rtol=0, err_msg=op.name)
        np.testing.assert_allclose(
            u.grad(x), x.grad, rtol=1e-12, atol=1e-300, err_msg=f"gg.units, op {op.name!r}"
        )


def test_unit_expansions_name_registry_ops() -> None:
    """The ops that are not elementwise expand by a table keyed by registry names."""
    for name in EXPANSIONS:
        assert name in gg.REGISTRY, f"gg.units expands {name!r}, which is not a registry op"
        assert not gg.REGISTRY[name].elementwise, f"{name!r} is elementwise: no entry needed"
    assert len(set(SUPPORTED_OPS)) == len(SUPPORTED_OPS)


# ------------------------------------------------------------------- expression language


@pytest.mark.parametrize("op", BY_NAME, ids=_ids)
def test_expression_function(op: gg.ops.Op) -> None:
    assert op.name in expr.FUNCTIONS, (
        f"consumer 'expression language' (graphgrad graph): no function for op {op.name!r}"
    )
    names = "abcdefgh"[: len(op.arg_names)]
    args = list(names) + [repr(v) for v in op_params(op.name).values()]
    text = f"{op.name}({', '.join(args)})"
    for values in scalar_inputs(op.name):
        out, leaves = expr.evaluate(text, dict(zip(names, values, strict=True)))
        assert out._op is op, text
        assert out.data == FLOAT_FORWARD[op](*values, **op_params(op.name)), text
        out.backward()
        assert all(math.isfinite(leaf.grad) for leaf in leaves.values()), text


def test_graph_help_lists_every_function(capsys: pytest.CaptureFixture[str]) -> None:
    """`graphgrad graph --help` lists the language's functions from the registry."""
    from graphgrad import cli

    with pytest.raises(SystemExit):
        cli.main(["graph", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in expr.FUNCTIONS:
        assert expr.signature(name) in text, f"graphgrad graph --help does not list {name!r}"


# --------------------------------------------------------------- activations, init gains


@pytest.mark.parametrize("op", ACTIVATIONS, ids=_ids)
def test_activation_module(op: gg.ops.Op) -> None:
    cls = nn.ACTIVATIONS.get(op.name)
    assert cls is not None, f"consumer 'nn activations': op {op.name!r} has no module"
    module = nn.get_activation(op.name)
    assert isinstance(module, cls) and module.name == op.name
    x = gg.Tensor(np.linspace(-2.0, 2.0, 9))
    np.testing.assert_array_equal(module(x).data, OP_FUNCTIONS[op.name](x).data)
    if op.params:  # its parameter, by name:value as configs write it
        spec = f"{op.name}:0.25"
        np.testing.assert_array_equal(
            nn.get_activation(spec)(x).data, OP_FUNCTIONS[op.name](x, 0.25).data
        )


@pytest.mark.parametrize("op", ACTIVATIONS, ids=_ids)
def test_init_gain(op: gg.ops.Op) -> None:
    assert op.gain is not None, f"consumer 'init gain': op {op.name!r} declares no gain"
    g = nn.init.gain(op.name)
    assert math.isfinite(g) and g > 0
    assert nn.init.init_std((4, 8), op.name) == pytest.approx(g / math.sqrt(8))


# --------------------------------------------------------------------- the VJP namespaces


def test_vjp_namespaces_offer_the_same_names() -> None:
    """A rule computes with whichever namespace it is given: NumPy's (``ops._xp``, a backward
    pass), the recording one (``TensorXP``, ``create_graph=True``) or the float one
    (``FloatXP``, scalar units). Each offers every function of NumPy's, and every elementwise
    op by its name (``xp.cos``)."""
    from graphgrad.ops import _xp
    from graphgrad.tensor import TensorXP

    # The contract is the portable twin's public methods (``ArrayXP``, what a rule may call on
    # any array namespace) plus every elementwise op by name; NumPy's module must offer each
    # one too, so the two cannot drift apart.
    contract = {
        n for n, v in vars(_xp.ArrayXP).items() if inspect.isfunction(v) and not n.startswith("_")
    }
    assert {"sum_to", "broadcast_to", "matmul", "sum_rows", "index_add"} <= contract
    names = contract | {op.name for op in ELEMENTWISE}
    portable = _xp.ArrayXP(np)
    namespaces = (("ops._xp", _xp), ("ArrayXP", portable), ("TensorXP", TensorXP))
    for label, ns in (*namespaces, ("FloatXP", FLOAT_XP)):
        missing = sorted(n for n in names if not hasattr(ns, n))
        assert not missing, f"VJP namespace {label} lacks {missing}"


@pytest.mark.parametrize("op", [op for op in gg.REGISTRY.values() if op.differentiable], ids=_ids)
def test_rules_do_not_test_their_namespace(op: gg.ops.Op) -> None:
    """One rule serves every namespace: a speed-up that holds for NumPy arrays only is a
    ``fast=`` variant registered beside the rule, never a test of ``xp`` inside it."""
    for rule in (*op.vjps, op.vjp_any):
        if rule is not None:
            text = inspect.getsource(rule)
            assert "xp is " not in text and "isinstance(xp" not in text, (
                f"op {op.name!r}: rule {rule.__name__} tests its namespace (use a fast= variant)"
            )


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize("op", list(gg.REGISTRY.values()), ids=_ids)
def test_registry_name_is_the_module_name(op: gg.ops.Op) -> None:
    module = sys.modules[op.forward.__module__]
    assert getattr(module, op.name, None) is op, (
        f"op {op.name!r} is not {module.__name__}.{op.name}"
    )
    if op.differentiable:
        assert hasattr(gg, op.name), f"op {op.name!r} has no public function gg.{op.name}"


def test_a_new_op_reaches_every_consumer() -> None:
    """softplus, sin and cos were added as their rule and record, their spec rows and nothing
    else: they are served everywhere above, and documented by the op table."""
    for name in ("softplus", "sin", "cos"):
        op = gg.REGISTRY[name]
        assert op in FLOAT_FORWARD and name in OP_FUNCTIONS and name in expr.FUNCTIONS
        assert name in gg.ops_table()
    assert "softplus" in nn.ACTIVATIONS
