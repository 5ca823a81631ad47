"""The pure-Python implementation of scalar units (see :mod:`graphgrad.scalar`, which picks it
or the compiled core :mod:`graphgrad._scalar_core`, and documents both).

This module is the reference, and it holds no formula of its own: every Scalar op is an op of
the registry that acts on single numbers, its value is the op's float forward
(:data:`FLOAT_FORWARD`) and its backward step is the op's own VJP rules (``op.vjps``) run on
Python floats with :class:`FloatXP` as the namespace. The methods and operators of
:class:`Scalar` are made from the registry too (an op's ``symbol`` gives its operator). The
compiled core must give the same values and gradients, bit for bit (tests check both on random
graphs and at the edges of each op's domain); the helpers below that work on any node with
``_op``, ``_inputs``, ``_params``, ``data`` and ``grad`` (``FLOAT_FORWARD``, ``FLOAT_XP``,
``local_grads``, ``registry_rules``, ``op_methods``) serve both implementations.

It keeps the design notes of :mod:`graphgrad.scalar`: slotted nodes with two input slots
(``_a``, ``_b``), node construction written out in the few functions that make nodes, and a
backward pass that counts creation numbers down instead of sorting.

Nodes refer only to their inputs (no closures, no back references), so no reference cycles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from ._state import GRAD_ENABLED, next_seq
from .errors import BackwardError
from .ops import REGISTRY
from .ops._registry import Op

__all__ = [
    "FLOAT_FORWARD",
    "FLOAT_XP",
    "OPERATORS",
    "OP_METHODS",
    "Scalar",
    "apply_op",
    "as_scalar",
    "float_params",
    "local_grads",
    "op_methods",
    "registry_rules",
    "released_message",
    "scalar_backward",
    "scalars",
    "to_float",
    "topological",
]

_new = object.__new__
_next = next_seq

#: Python's operator methods of each op ``symbol`` of the registry (the reflected one second).
OPERATORS: dict[str, tuple[str, ...]] = {
    "+": ("__add__", "__radd__"),
    "-": ("__sub__", "__rsub__"),
    "*": ("__mul__", "__rmul__"),
    "/": ("__truediv__", "__rtruediv__"),
    "**": ("__pow__", "__rpow__"),
    "-x": ("__neg__",),
}


class Scalar:
    """A graph node holding one float: ``data``, and ``grad`` (dL/d this node) after backward.

    Args:
        value: a real number (``int``, ``float`` or a NumPy real scalar).
        name: a label shown in pictures of the graph and in ``--explain``.
        requires_grad: ``False`` marks a constant (numbers mixed into an expression become
            such constants). Constants are drawn as constants and are not inputs of path sums.

    Operators ``+ - * / **`` and unary ``-`` work with Scalars and Python numbers on either side;
    every elementwise op of the registry is a method by its name (``s.exp()``, ``s.relu()``,
    ``s.leaky_relu(0.1)``, ``s.softplus()``, ``s.maximum(t)``, ...) and a module-level function
    (``gg.exp(s)``). Values and gradients are Python floats.
    """

    __slots__ = (
        "_a",
        "_b",
        "_data",
        "_m",
        "_op",
        "_p",
        "_released",
        "_seq",
        "grad",
        "name",
        "requires_grad",
    )

    _data: float
    grad: float
    name: str | None
    requires_grad: bool
    _op: Op | None
    _a: Scalar | None
    _b: Scalar | None
    _p: dict[str, float] | None
    _seq: int
    _m: object
    _released: bool

    def __init__(self, value: Any, name: str | None = None, requires_grad: bool = True) -> None:
        self._data = to_float(value, "Scalar")
        self.grad = 0.0
        self.name = name
        self.requires_grad = bool(requires_grad)
        self._op = self._a = self._b = self._p = self._m = None  # a leaf: no op, no inputs
        self._seq = _next()
        self._released = False

    # The value: read through a C-level getter (no Python frame); set through
    # _set_data, which converts as the compiled core's C double does (an int or NumPy
    # number becomes a float; a str or None is refused with the same TypeError).
    data = property(attrgetter("_data"), lambda self, v: _set_data(self, v))

    # -------------------------------------------------------------------------- facts
    @property
    def op(self) -> str | None:
        """The name of the op that made this node (``None`` for a leaf)."""
        return self._op.name if self._op is not None else None

    @property
    def is_leaf(self) -> bool:
        """True for nodes made by the user, constants, and results computed under no_grad."""
        return self._op is None

    @property
    def _inputs(self) -> tuple[Scalar, ...]:
        """The input nodes, in argument order (the tensor engine's name for them)."""
        a, b = self._a, self._b
        if a is None:
            return ()
        return (a,) if b is None else (a, b)

    @property
    def _params(self) -> dict[str, float]:
        """The op's static parameters (``slope`` of leaky_relu, ``alpha`` of elu)."""
        return self._p if self._p is not None else {}

    @property
    def shape(self) -> tuple[int, ...]:
        """``()``: a Scalar is a 0-d quantity."""
        return ()

    def item(self) -> float:
        """The value as a Python float."""
        return self.data

    def __float__(self) -> float:
        return self.data

    def __repr__(self) -> str:
        extra = f", name={self.name!r}" if self.name else ""
        if self._op is not None:
            extra += f", op={self._op.name}"
        elif not self.requires_grad:
            extra += ", requires_grad=False"
        return f"Scalar({self.data:.6g}, grad={self.grad:.6g}{extra})"

    # ----------------------------------------------------------------------- backward
    def backward(self, grad: float = 1.0, retain_graph: bool = False) -> None:
        """Backpropagate from this node: every node it depends on gets dL/d(node) in ``.grad``.

        The Tensor engine's contract: leaves accumulate (call ``s.grad = 0.0``, or ``zero_grad``
        of your model, between steps); a second backward through the same op nodes raises
        :class:`~graphgrad.errors.BackwardError` unless the first passed ``retain_graph=True``.
        Intermediate nodes get this pass's value. ``grad`` is dL/d(self), 1 by default. The
        nodes keep their inputs either way, so pictures can be drawn after the pass.
        """
        scalar_backward(self, grad, retain_graph)

    def zero_grad(self) -> None:
        """Set this node's ``.grad`` to 0."""
        self.grad = 0.0

    def __copy__(self) -> Scalar:
        # A copy is a new node with the same fields (the same inputs) and a new creation
        # number, so that its inputs stay older than it, as backward's order needs.
        fields = (self.data, self.grad, self.name, self.requires_grad, self._op, self._a, self._b)
        return _restore(*fields, self._p)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy.deepcopy: a leaf (a parameter, a constant) only. A node made by an
        # op would carry its whole graph, ops included, recursively.
        if self._op is not None:
            raise TypeError(NOT_PICKLABLE)
        return _restore, (self.data, self.grad, self.name, self.requires_grad, *_NO_OP)

    def __pos__(self) -> Scalar:
        return self

    # The operators (``+ - * / **``, unary ``-``) and one method per elementwise op called by
    # name (``exp``, ``relu``, ``leaky_relu(slope)``, ``softplus``, ``maximum(other)``, ...)
    # are made from the registry below (``_install_ops``); these lines only declare their types.
    if TYPE_CHECKING:

        def __add__(self, other: Any) -> Scalar: ...
        def __radd__(self, other: Any) -> Scalar: ...
        def __sub__(self, other: Any) -> Scalar: ...
        def __rsub__(self, other: Any) -> Scalar: ...
        def __mul__(self, other: Any) -> Scalar: ...
        def __rmul__(self, other: Any) -> Scalar: ...
        def __truediv__(self, other: Any) -> Scalar: ...
        def __rtruediv__(self, other: Any) -> Scalar: ...
        def __pow__(self, other: Any) -> Scalar: ...
        def __rpow__(self, other: Any) -> Scalar: ...
        def __neg__(self) -> Scalar: ...
        def __getattr__(self, name: str) -> Callable[..., Scalar]: ...


# ------------------------------------------------------------------------------ plumbing


#: The error of pickling or deep-copying a node made by an op (both implementations).
NOT_PICKLABLE = (
    "cannot pickle or deep-copy a Scalar made by an op (a node of a graph): save the values "
    "of the leaves (parameters' .data) instead, and rebuild the graph by running the model"
)
_NO_OP = (None, None, None, None)


def _set_data(node: Scalar, value: Any) -> None:
    """``node.data = value`` as the compiled core's ``double`` field takes it: a float, or
    anything with ``__float__`` or ``__index__`` (int, bool, NumPy numbers) as a float; else
    the TypeError the compiled core raises."""
    if type(value) is not float:
        t = type(value)
        if not (hasattr(t, "__float__") or hasattr(t, "__index__")) or isinstance(value, complex):
            raise TypeError(f"must be real number, not {t.__name__}")
        value = float(value)
    node._data = value


def to_float(value: Any, what: str) -> float:
    """``value`` as a float; a TypeError naming ``what`` for anything but a real number."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{what}: expected a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _lift(x: Any, what: str) -> Scalar:
    """A Python number as a constant Scalar; anything else is a clear TypeError."""
    if type(x) is Scalar:
        return x
    if type(x) is float or (
        isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)
    ):
        return _restore(float(x), 0.0, None, False, None, None, None, None)
    hint = " (Scalars and Tensors do not mix; use float(s))" if hasattr(x, "shape") else ""
    raise TypeError(f"unsupported operand for '{what}' with a Scalar: {type(x).__name__}{hint}")


def _restore(
    data: float,
    grad: float,
    name: str | None,
    requires_grad: bool,
    op: Op | None,
    a: Scalar | None,
    b: Scalar | None,
    params: dict[str, float] | None,
) -> Scalar:
    """A node of these fields and a new creation number: the generic constructor (a copy's
    rebuild by :meth:`Scalar.__reduce__`, constants, nodes of the generic path)."""
    out = _new(Scalar)
    out._data = data
    out.grad = grad
    out.name = name
    out.requires_grad = requires_grad
    out._op = op
    out._a = a
    out._b = b
    out._p = params
    out._seq = _next()
    out._m = None
    out._released = False
    return out


def as_scalar(x: Any) -> Scalar:
    """``x`` if it is a Scalar, else a constant Scalar holding the number ``x``."""
    return _lift(x, "as_scalar")


def _detached(out: Scalar) -> None:
    """Make ``out`` a constant leaf (an op evaluated under ``no_grad``)."""
    out.requires_grad = False
    out._op = None
    out._a = None
    out._b = None


#: op -> its forward on Python floats (declared on the op, or derived from its NumPy
#: forward). A Scalar can be made by exactly these ops: the registry's elementwise ops.
FLOAT_FORWARD: dict[Op, Callable[..., float]] = {
    op: op.float_forward() for op in REGISTRY.values() if op.elementwise
}


def float_params(op: Op, params: dict[str, Any]) -> dict[str, Any] | None:
    """``op``'s parameters as floats (``None`` stays: "no bound"), ``None`` for none; a
    TypeError naming the op and the parameter for anything but a real number."""
    if not params:
        return None
    return {k: v if v is None else to_float(v, f"{op.name} {k}") for k, v in params.items()}


def _unit(
    op: Op, a: Scalar, b: Scalar | None = None, params: dict[str, float] | None = None
) -> Scalar:
    """Apply ``op`` to one or two Scalars: the generic way to make a node."""
    fwd = FLOAT_FORWARD.get(op)
    if fwd is None:
        raise NotImplementedError(
            f"op '{op.name}' has no Scalar version; Scalars support "
            f"{', '.join(o.name for o in FLOAT_FORWARD)}"
        )
    if b is not None:
        value = fwd(a.data, b.data, **params) if params else fwd(a.data, b.data)
    else:
        value = fwd(a.data, **params) if params else fwd(a.data)
    if GRAD_ENABLED.get():
        return _restore(value, 0.0, None, True, op, a, b, params)
    return _restore(value, 0.0, None, False, None, None, None, params)  # a constant leaf


def apply_op(op: Op, *inputs: Any, **params: Any) -> Scalar:
    """Make a node of op ``op`` (a registry Op, e.g. ``gg.REGISTRY['minimum']``) on Scalars."""
    if not 1 <= len(inputs) <= 2:
        raise TypeError(f"apply_op: Scalar ops take one or two inputs, got {len(inputs)}")
    args = [_lift(x, op.name) for x in inputs]
    return _unit(op, args[0], args[1] if len(args) == 2 else None, float_params(op, params))


# ------------------------------------------------------- methods made from the registry


def _binary_operator(op: Op, what: str) -> tuple[Callable[..., Scalar], Callable[..., Scalar]]:
    """``Scalar.__add__`` and ``Scalar.__radd__`` for op ``add`` (and so on): the op's float
    forward, a number on either side lifted to a constant. The node is made here, not by a
    shared helper: a Python call per node is a measurable part of a scalar graph's cost."""
    fwd = FLOAT_FORWARD[op]

    def method(self: Scalar, other: Any) -> Scalar:
        if type(other) is not Scalar:
            other = _lift(other, what)
        out = _new(Scalar)
        out._data = fwd(self.data, other.data)
        out.grad = 0.0
        out.name = None
        out._p = None
        out._m = None
        out._released = False
        out._seq = _next()
        if GRAD_ENABLED.get():
            out.requires_grad = True
            out._op = op
            out._a = self
            out._b = other
        else:
            _detached(out)
        return out

    def reflected(self: Scalar, other: Any) -> Scalar:
        return method(_lift(other, what), self)

    return method, reflected


def _unary_method(op: Op) -> Callable[..., Scalar]:
    """``Scalar.exp`` for op ``exp`` (and so on, for a one-input op with no parameter)."""
    fwd = FLOAT_FORWARD[op]

    def method(self: Scalar) -> Scalar:
        if GRAD_ENABLED.get():
            return _restore(fwd(self.data), 0.0, None, True, op, self, None, None)
        return _restore(fwd(self.data), 0.0, None, False, None, None, None, None)

    return method


def op_methods(apply: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """name -> method for every elementwise op called by its name (not an operator), made
    with ``apply`` (an implementation's ``apply_op``): ``s.softplus()``, ``s.minimum(t)``,
    ``s.leaky_relu(0.1)`` (parameters by position or name, as the op's forward takes them)."""
    methods = {}
    for op in FLOAT_FORWARD:
        if not op.symbol:
            methods[op.name] = _op_method(op, apply)
    return methods


def _op_method(op: Op, apply: Callable[..., Any]) -> Callable[..., Any]:
    """``Scalar.<op name>``: the op applied to this node (and ``other``), parameters after."""
    if len(op.arg_names) == 1:

        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return apply(op, self, **op.bind(args, kwargs))

    else:

        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not args:
                raise TypeError(f"{op.name}() needs a second operand")
            return apply(op, self, args[0], **op.bind(args[1:], kwargs))

    method.__name__ = method.__qualname__ = op.name
    method.__doc__ = op.summary()
    return method


#: The methods of the elementwise ops called by name, by ``op_methods`` (the compiled core
#: serves the ones it does not write out in C from its own ``op_methods(apply_op)``).
OP_METHODS: dict[str, Callable[..., Any]] = op_methods(apply_op)


def _install_ops() -> None:
    """Give :class:`Scalar` a method per elementwise op of the registry: its operators by the
    op's ``symbol``; by name otherwise (a fast method for an op with one input and no
    parameter, the generic one of :data:`OP_METHODS` for the rest)."""
    for op in FLOAT_FORWARD:
        if op.symbol in OPERATORS:
            names = OPERATORS[op.symbol]
            made: tuple[Callable[..., Scalar], ...] = (
                (_unary_method(op),) if len(names) == 1 else _binary_operator(op, op.symbol)
            )
        elif len(op.arg_names) == 1 and not op.params:
            names, made = (op.name,), (_unary_method(op),)
        else:
            names, made = (op.name,), (OP_METHODS[op.name],)
        for name, method in zip(names, made, strict=True):
            method.__name__ = name
            method.__qualname__ = f"Scalar.{name}"
            method.__doc__ = op.summary()
            setattr(Scalar, name, method)


# ------------------------------------------------------------------------------ backward

_seq_key = attrgetter("_seq")


def topological(root: Scalar) -> list[Scalar]:
    """The op nodes ``root`` depends on (itself included), newest first: reverse topological
    order, by creation number as in the tensor engine. Iterative; each node once."""
    if root._op is None:
        return []
    token = object()  # marks the nodes seen by this walk (cheaper than a set of ids)
    order = [root]
    root._m = token
    stack = [root]
    pop = stack.pop
    push = stack.append
    keep = order.append
    while stack:
        n = pop()
        a = n._a
        if a._op is not None and a._m is not token:  # type: ignore[union-attr]
            a._m = token  # type: ignore[union-attr]
            keep(a)  # type: ignore[arg-type]
            push(a)  # type: ignore[arg-type]
        b = n._b
        if b is not None and b._op is not None and b._m is not token:
            b._m = token
            keep(b)
            push(b)
    order.sort(key=_seq_key, reverse=True)
    return order


#: What a rule on Python floats raises where NumPy would give inf or nan (``0 ** -0.5``, a
#: division by an underflowed ``x * x``), and a NumPy warning turned into an error.
_EDGE = (ArithmeticError, RuntimeWarning)
_RETRY = (*_EDGE, TypeError)  # and no rule for an input: registry_rules names the op


def scalar_backward(root: Scalar, seed: float = 1.0, retain_graph: bool = False) -> None:
    """Reverse mode over a Scalar graph: the scalar twin of the tensor engine's ``run_backward``.

    The same order as the tensor engine: nodes are visited newest first, by creation number
    (reverse creation order is a reverse topological order: no recursion, no sort). Where the
    tensor engine keeps a heap of those numbers, this pass counts them down, because the nodes
    of a scalar graph are numbered almost without gaps: ``pending`` maps the creation number of
    each node reached but not yet visited to the node, and the pass takes numbers ``s, s-1, ...``
    from it (jumping to the largest pending number across long gaps). Each visited node's
    gradient is complete (its consumers are newer) and it hands ``g * (local derivative)`` to
    its inputs' ``.grad``: the op's own VJP rules of the registry, run on Python floats with
    :class:`FloatXP` (at the edges of a domain, where Python raises, on NumPy float64 numbers:
    :func:`registry_rules`).

    The contract of the tensor engine: leaves accumulate; each op node visited is marked
    released unless ``retain_graph``, and a later pass that reaches it raises
    :class:`BackwardError` (the nodes keep their inputs, so the graph can still be drawn).
    """
    if type(root) is not Scalar:
        raise TypeError(f"scalar_backward: expected a Scalar, got {type(root).__name__}")
    seed = to_float(seed, "backward grad")
    if root._op is None:  # a leaf: d root / d root = seed
        if not root.requires_grad:
            raise BackwardError(
                "backward() called on a constant Scalar (requires_grad=False, or computed under "
                "no_grad()): there is nothing to differentiate"
            )
        root.grad += seed
        return
    root.grad = seed
    s = root._seq
    pending: dict[int, Any] = {s: root}
    take = pending.pop
    release = not retain_graph
    xp = FloatXP
    misses = 0
    while pending:
        n = take(s, None)
        s -= 1
        if n is None:  # a number that is not part of this graph
            misses += 1
            if misses > 64 + 4 * len(pending):
                s = max(pending)
                misses = 0
            continue
        misses = 0
        a = n._a
        b = n._b
        # Reached for the first time: an intermediate node starts this pass at 0.
        if a._op is not None and a._seq not in pending:
            pending[a._seq] = a
            a.grad = 0.0
        if b is not None and b._op is not None and b._seq not in pending:
            pending[b._seq] = b
            b.grad = 0.0
        if n._released:  # (after placing its inputs, as the compiled core does)
            raise BackwardError(released_message(n._op))
        n._released = release
        g = n.grad
        rules = n._op.vjps
        p = n._p
        try:  # the registry's rules: rule(xp, g, ans, *inputs, **params)
            if b is None:
                da = rules[0](xp, g, n.data, a.data, **p) if p else rules[0](xp, g, n.data, a.data)
                a.grad += da
            else:
                x = a.data
                y = b.data
                if p:
                    da = rules[0](xp, g, n.data, x, y, **p)
                    db = rules[1](xp, g, n.data, x, y, **p)
                else:
                    da = rules[0](xp, g, n.data, x, y)
                    db = rules[1](xp, g, n.data, x, y)
                a.grad += da
                b.grad += db
        except _RETRY:  # an edge of a domain, or an input with no rule
            for inp, d in zip(n._inputs, registry_rules(n, g), strict=True):
                inp.grad += d


def released_message(op: Op) -> str:
    """The error of a second backward through a node whose graph a first backward released."""
    return (
        f"backward through op '{op.name}' a second time: its graph was freed by the first "
        f"backward(); pass retain_graph=True to the first call to keep it"
    )


def local_grads(node: Scalar) -> tuple[float, ...]:
    """∂node/∂input for each input of an op node, in argument order (the edges' labels).

    The registry's own VJP rules run with upstream gradient 1 (the derivative column of the op
    table evaluated at this node), as the backward pass runs them: pictures show what the
    rules compute.
    """
    if node._op is None:
        return ()
    return registry_rules(node, 1.0)


def registry_rules(node: Scalar, g: float) -> tuple[float, ...]:
    """``g`` times each local derivative of ``node``, by the registry's VJP rules: the numbers
    the backward pass hands to ``node``'s inputs (in both implementations).

    The rules run on Python floats; where one raises (``0 ** -0.5``, a division by an
    underflowed number), they run again on NumPy float64 numbers, so they follow NumPy's
    conventions at the edges of their domains (``inf``, not an exception), as on Tensors.
    """
    op = node._op
    assert op is not None
    inputs = node._inputs
    for i in range(len(inputs)):
        if not op.differentiable_in(i):
            raise BackwardError(f"op '{op.name}' has no derivative in its argument #{i}")
    params = node._params
    xs = tuple(x.data for x in inputs)
    try:
        return tuple(
            float(op.vjp(i, FloatXP, g, node.data, xs, params)) for i in range(len(inputs))
        )
    except _EDGE:
        pass
    args = tuple(np.float64(x) for x in xs)
    with np.errstate(all="ignore"):
        return tuple(
            float(op.vjp(i, FloatXP, g, np.float64(node.data), args, params))
            for i in range(len(inputs))
        )


# --------------------------------------------------------------- the float VJP namespace


def _where(c: Any, a: Any, b: Any) -> Any:
    return a if c else b


def _identity_to(x: Any, shape: Any) -> Any:
    return x


def _no_array_op(name: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"'{name}' has no meaning for Scalars (floats)")

    fail.__name__ = name
    return fail


class FloatXP:
    """The namespace the registry's VJP rules compute with on Python floats.

    ``raw`` gives a NumPy float64 scalar, because a few rules call array methods on the raw
    value (``(x > 0).astype(dtype)``); ``const`` turns the result back into a Python float.
    Shape functions are identities or errors: a Scalar has shape ``()``. Every elementwise op
    of the registry is here by its name, as its float forward (``xp.cos``, ``xp.exp``).
    """

    raw = staticmethod(np.float64)
    const = staticmethod(float)
    sum_to = staticmethod(_identity_to)
    broadcast_to = staticmethod(_identity_to)
    reshape = staticmethod(_identity_to)
    where = staticmethod(_where)
    transpose = staticmethod(_no_array_op("transpose"))
    swap_last = staticmethod(_no_array_op("swap_last"))
    matmul = staticmethod(_no_array_op("matmul"))
    sum = staticmethod(_no_array_op("sum"))
    sum_rows = staticmethod(_no_array_op("sum_rows"))
    softmax = staticmethod(_no_array_op("softmax"))
    log_softmax = staticmethod(_no_array_op("log_softmax"))
    getitem = staticmethod(_no_array_op("getitem"))
    index_add = staticmethod(_no_array_op("index_add"))
    to_device = staticmethod(_no_array_op("to_device"))


for _op, _fwd in FLOAT_FORWARD.items():  # every elementwise op by name: xp.exp, xp.cos, ...
    if not hasattr(FloatXP, _op.name):
        setattr(FloatXP, _op.name, staticmethod(_fwd))

FLOAT_XP = FloatXP

_install_ops()


def scalars(values: Iterable[Any], name: str | None = None) -> list[Scalar]:
    """Leaves from numbers: ``scalars([0.5, -1.0], name="w")`` names them ``w[0]``, ``w[1]``."""
    return [Scalar(v, name=None if name is None else f"{name}[{i}]") for i, v in enumerate(values)]
