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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import NonDifferentiableError

VJP = Callable[..., Any]


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
            )
        )

    return wrap


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
