"""The op registry: every primitive's forward and its vector-Jacobian products, side by side.

An :class:`Op` holds a NumPy forward function and one VJP rule per argument (``None`` for an
argument with no derivative). A VJP rule has the signature ``rule(xp, g, ans, *inputs, **params)``:

* ``g`` is the upstream gradient dL/d(ans), ``ans`` the op's own output (so ``exp``, ``tanh``
  and ``sigmoid`` reuse it), ``inputs`` the op's inputs, ``params`` its static parameters;
* ``xp`` is the namespace the rule computes with: :mod:`graphgrad.ops._xp` works on raw NumPy
  arrays (a normal backward pass, fast); the tensor namespace works on Tensors and so records
  a new graph (``create_graph=True``, higher-order gradients). Rules use operators plus ``xp``
  functions only, so one rule serves both.

Rules may return a gradient of a broadcast shape: the engine sums it back to the input's shape
once (``sum_to``), then checks the shape and names the op if it is still wrong.

The record is the single source of per-op facts: every consumer reads it rather than keeping a
table of its own. The public functions and methods (``gg.tanh``, ``Tensor.tanh``,
``Scalar.tanh``), the scalar units' float forwards, :func:`graphgrad.units`, the functions of
the expression language, the activation modules and their init gains are all derived from it
(tests check each consumer against the registry, naming the op and the consumer at fault).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import NonDifferentiableError

VJP = Callable[..., Any]

#: The categories whose ops act on each element on its own (their Scalar versions exist).
ELEMENTWISE = ("elementwise", "activation", "selection")


@dataclass(frozen=True, eq=False)
class Op:
    """A primitive: its name, its NumPy forward, its VJP rules and its documentation.

    Attributes:
        name: the op's name, shown in graphs, errors and the op table.
        forward: ``forward(*arrays, **params) -> ndarray``.
        vjps: one rule per argument (``None``: not differentiable in that argument).
        arg_names: the arguments' names, for the table and error messages.
        formula: the forward formula in the lecture's notation, e.g. ``"x1 * x2"``.
        derivatives: one local derivative per argument, e.g. ``("x2", "x1")``.
        kinks: the convention chosen where the function is not differentiable.
        aliases: the rules may return ``g`` itself or a view of it (the engine copies before
            handing such a gradient to a user-visible ``.grad``).
        vjp_any: for variadic ops (concatenate, stack): ``rule(xp, i, g, ans, *inputs, **params)``.
        differentiable: ``False`` for ops whose output never requires a gradient (comparisons).
        category: the section of the op table.
        note: why the op is fused, or anything else a reader of the table should know.
        vjp_into: argument index -> ``rule(g, inputs, out, beta) -> bool`` that adds the VJP
            into a caller's buffer, ``out = beta * out + vjp`` (one GEMM for ``linear``'s
            weight), returning False when it cannot; used by the engine's gradient sinks
            (``SGD(fused_backward=True)``), never needed for correctness.
        symbol: the Python operator that makes the op (``"+"`` for add, ``"-x"`` for neg);
            ``""`` for an op that is called by its name.
        scalar: the forward on Python floats (scalar units), raising an error that names the
            op where the NumPy forward would warn; ``None``: derived from ``forward``.
        gain: for an activation, its init gain (see :mod:`graphgrad.nn.init`) as a function of
            its parameter (``None`` where it has none).
        fast: optional in-place variants of the rules (same signature without ``xp``), used by
            an ordinary NumPy backward pass; one may return ``None`` to defer to the rule.
    """

    name: str
    forward: Callable[..., Any]
    vjps: tuple[VJP | None, ...]
    arg_names: tuple[str, ...]
    formula: str
    derivatives: tuple[str, ...]
    kinks: str = ""
    aliases: bool = False
    vjp_any: VJP | None = None
    differentiable: bool = True
    category: str = "elementwise"
    note: str = ""
    vjp_into: dict[int, Callable[..., bool]] | None = None
    symbol: str = ""
    scalar: Callable[..., float] | None = None
    gain: Callable[[float | None], float] | None = None
    fast: tuple[VJP | None, ...] = ()
    params: tuple[tuple[str, Any], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        # The static parameters (leaky_relu's slope, ...) are the forward's arguments after the
        # op's inputs, with their defaults: read from its signature, never written twice.
        sig = inspect.signature(self.forward)
        extra = list(sig.parameters.values())[len(self.arg_names) :]
        params = tuple(
            (p.name, None if p.default is p.empty else p.default)
            for p in extra
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        object.__setattr__(self, "params", params)

    @property
    def elementwise(self) -> bool:
        """True for a differentiable op on one or two numbers (a scalar unit can be it)."""
        return (
            self.differentiable
            and self.category in ELEMENTWISE
            and self.vjp_any is None
            and 1 <= len(self.arg_names) <= 2
        )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The op's parameters from positional ``args`` (after the inputs) and ``kwargs``, with
        defaults for the rest; a clear TypeError naming the op for anything else."""
        params = dict(self.params)
        if len(args) > len(params):
            raise TypeError(
                f"{self.name}() takes {len(self.arg_names)} input(s) and at most "
                f"{len(params)} parameter(s) ({', '.join(params) or 'none'}), "
                f"got {len(self.arg_names) + len(args)} positional arguments"
            )
        for (name, _), value in zip(self.params, args, strict=False):
            params[name] = value
        for name, value in kwargs.items():
            if name not in params:
                raise TypeError(
                    f"{self.name}() got an unexpected keyword argument {name!r}; its "
                    f"parameters: {', '.join(params) or 'none'}"
                )
            params[name] = value
        return params

    def summary(self) -> str:
        """A docstring from the record: formula, local derivatives, kinks and note."""
        derivs = ", ".join(
            f"d/d{a}: {d}" for a, d in zip(self.arg_names, self.derivatives, strict=False)
        )
        lines = [f"Elementwise {self.formula} (op '{self.name}'); local derivative {derivs}."]
        if self.params:
            lines.append(
                "Parameters: " + ", ".join(f"{n} (default {d!r})" for n, d in self.params) + "."
            )
        if self.kinks:
            lines.append(f"At kinks: {self.kinks}.")
        if self.note:
            lines.append(f"Note: {self.note}.")
        lines.append("Shapes broadcast (NumPy rules); a Scalar input gives a Scalar.")
        return "\n\n".join(lines)

    def float_forward(self) -> Callable[..., float]:
        """The forward on Python floats: ``scalar`` if declared, else the NumPy forward run on
        float64 numbers, NumPy's warnings (but underflow) turned into an error naming the op."""
        if self.scalar is not None:
            return self.scalar
        forward, name = self.forward, self.name

        def on_floats(*xs: float, **params: Any) -> float:
            with np.errstate(all="raise", under="ignore"):  # a tiny result is right
                try:
                    return float(forward(*[np.float64(x) for x in xs], **params))
                except FloatingPointError as e:
                    args = ", ".join(f"{x:g}" for x in xs)
                    raise ValueError(f"{name}({args}): {e}") from None

        on_floats.__name__ = f"{name}_on_floats"
        return on_floats

    def vjp(self, i: int, xp: Any, g: Any, ans: Any, inputs: Any, params: dict[str, Any]) -> Any:
        """The gradient of the loss w.r.t. argument ``i``, given the upstream gradient ``g``."""
        if self.vjp_any is not None:
            return self.vjp_any(xp, i, g, ans, *inputs, **params)
        rule = self.vjps[i] if i < len(self.vjps) else None
        if rule is None:
            arg = self.arg_names[i] if i < len(self.arg_names) else f"#{i}"
            raise NonDifferentiableError(
                f"op '{self.name}' has no derivative with respect to its argument '{arg}' "
                f"(it is declared non-differentiable there); detach that input or use a "
                f"differentiable op"
            )
        return rule(xp, g, ans, *inputs, **params)

    def differentiable_in(self, i: int) -> bool:
        """Whether the op has a derivative rule for argument ``i``."""
        if not self.differentiable:
            return False
        if self.vjp_any is not None:
            return True
        return i < len(self.vjps) and self.vjps[i] is not None


#: name -> Op, in registration order. ``graphgrad ops`` prints this table.
REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add ``op`` to the registry (names are unique) and return it."""
    if op.name in REGISTRY:
        raise ValueError(f"op '{op.name}' is registered twice")
    if op.vjp_any is None and op.differentiable and len(op.vjps) != len(op.arg_names):
        raise ValueError(f"op '{op.name}': {len(op.vjps)} rules for {len(op.arg_names)} args")
    REGISTRY[op.name] = op
    return op


def defop(
    name: str,
    arg_names: tuple[str, ...],
    formula: str,
    derivatives: tuple[str, ...],
    *vjps: VJP | None,
    kinks: str = "",
    aliases: bool = False,
    category: str = "elementwise",
    note: str = "",
    vjp_into: dict[int, Callable[..., bool]] | None = None,
    symbol: str = "",
    scalar: Callable[..., float] | None = None,
    gain: Callable[[float | None], float] | None = None,
    fast: tuple[VJP | None, ...] = (),
) -> Callable[[Callable[..., Any]], Op]:
    """Decorator: register the decorated NumPy forward as op ``name`` with the given rules."""

    def wrap(forward: Callable[..., Any]) -> Op:
        return register(
            Op(
                name=name,
                forward=forward,
                vjps=tuple(vjps),
                arg_names=arg_names,
                formula=formula,
                derivatives=derivatives,
                kinks=kinks,
                aliases=aliases,
                category=category,
                note=note,
                vjp_into=vjp_into,
                symbol=symbol,
                scalar=scalar,
                gain=gain,
                fast=fast,
            )
        )

    return wrap


def constant_gain(value: float) -> Callable[[float | None], float]:
    """An init gain that does not depend on the activation's parameter."""

    def gain(param: float | None = None) -> float:
        return value

    return gain


HE_GAIN = constant_gain(math.sqrt(2.0))
LECUN_GAIN = constant_gain(1.0)


def nondiff(
    name: str, arg_names: tuple[str, ...], formula: str, category: str = "comparison"
) -> Callable[[Callable[..., Any]], Op]:
    """Decorator: register a non-differentiable op (its output never requires a gradient)."""

    def wrap(forward: Callable[..., Any]) -> Op:
        return register(
            Op(
                name=name,
                forward=forward,
                vjps=tuple(None for _ in arg_names),
                arg_names=arg_names,
                formula=formula,
                derivatives=tuple("-" for _ in arg_names),
                differentiable=False,
                category=category,
            )
        )

    return wrap
