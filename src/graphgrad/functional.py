"""The functional API: ``grad``, ``value_and_grad`` and ``vjp`` turn functions into functions.

They compose: ``gg.grad(gg.grad(f))`` is the second derivative, because an inner ``grad``
whose input is part of an outer graph records its own backward pass (``create_graph``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _backend
from ._engine import run_backward
from ._state import STATE
from .errors import BackwardError, ShapeError
from .ops.elementwise import add
from .tensor import Tensor, constant, make_node, to_array


def _input(x: Any, who: str = "grad", k: int = 0) -> tuple[Tensor, bool]:
    """A fresh node to differentiate with respect to, and whether it hangs on an outer graph.
    Integer or boolean data is refused (as ``Tensor(..., requires_grad=True)`` refuses it)."""
    if isinstance(x, Tensor):
        if x.requires_grad and STATE.grad_enabled:
            # x + 0 is a new node that depends on x: gradients w.r.t. it flow on to the outer
            # graph when the inner backward records itself.
            node = make_node(add, (x, constant(_zero_like(x.data))))
            return node, True
        arr = x.data
    else:
        arr = to_array(x, None)
    if _backend.dtype_kind(arr.dtype) not in "fc":
        raise TypeError(
            f"{who}: argument {k} holds {arr.dtype} data, and only floating-point inputs can "
            f"be differentiated (JAX refuses them too; a cast to float32 would round integers "
            f"above 2**24): pass floats, such as 2.0 or np.array([1., 2.])"
        )
    return Tensor(arr, requires_grad=True), False


def _zero_like(a: Any) -> Any:
    """A 0-d zero of ``a``'s dtype on ``a``'s device."""
    if type(a) is np.ndarray:
        return np.zeros((), dtype=a.dtype)
    return _backend.asarray(0, _backend.device_of(a), a.dtype)


def _zeros_like(a: Any) -> Any:
    return _backend.namespace_of(a).zeros_like(a)


def _as_grad(g: Any, like: Any) -> Any:
    """The gradient array ``g`` with ``like``'s dtype, on ``like``'s device."""
    if type(like) is np.ndarray:
        return np.asarray(g, dtype=like.dtype)
    return _backend.asarray(g, _backend.device_of(like), like.dtype)


def _argnums(argnums: int | Sequence[int], n: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for a in nums:
        if not -n <= a < n:
            raise ValueError(f"argnums {a} is out of range for a function called with {n} args")
    return tuple(a % n for a in nums)


def _value_and_grads(
    f: Callable[..., Any], argnums: int | Sequence[int], args: tuple[Any, ...]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    nums = _argnums(argnums, len(args))
    call_args = list(args)
    nodes = []
    nested = False
    for a in nums:
        node, outer = _input(args[a], "grad", a)
        nested = nested or outer
        call_args[a] = node
        nodes.append(node)
    with _enabled():
        out = f(*call_args)
    if not isinstance(out, Tensor):
        raise TypeError(f"grad: the function must return a Tensor, got {type(out).__name__}")
    if out.data.ndim and any(k != 1 for k in out.data.shape):
        raise BackwardError(
            f"grad: the function must return a single number (a loss), got shape {out.shape}; "
            f"use gg.vjp for non-scalar outputs"
        )
    if not out.requires_grad:
        grads = [constant(_zeros_like(n.data)) for n in nodes]
        return out, tuple(grads)
    seed = _backend.namespace_of(out.data).ones_like(out.data)
    raw = run_backward(
        out,
        constant(seed) if nested else seed,
        retain_graph=nested,
        create_graph=nested,
        wrt=nodes,
    )
    assert raw is not None  # run_backward returns a list when wrt is given
    grads = []
    for n, g in zip(nodes, raw, strict=True):
        if g is None:
            grads.append(constant(_zeros_like(n.data)))
        elif isinstance(g, Tensor):
            grads.append(g)
        else:
            grads.append(constant(_as_grad(g, n.data)))
    return (out if nested else out.detach()), tuple(grads)


class _enabled:
    """Record the graph inside f even if the caller is under no_grad (grad needs it)."""

    def __enter__(self) -> None:
        self.prev = STATE.grad_enabled
        STATE.grad_enabled = True

    def __exit__(self, *exc: object) -> None:
        STATE.grad_enabled = self.prev


def grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """The gradient of a scalar function: ``gg.grad(f)(x)`` is df/dx at x.

    Args:
        f: a function of Tensors returning a one-element Tensor.
        argnums: which positional argument(s) to differentiate with respect to.

    Returns:
        A function with f's signature returning a Tensor of the argument's shape (a tuple of
        them when ``argnums`` is a tuple). Nest it for higher derivatives.
    """

    def grad_f(*args: Any) -> Any:
        _, g = _value_and_grads(f, argnums, args)
        return g if not isinstance(argnums, int) else g[0]

    grad_f.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    return grad_f


def value_and_grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """Like :func:`grad`, but the function returns ``(f(*args), gradient)``."""

    def vg_f(*args: Any) -> Any:
        v, g = _value_and_grads(f, argnums, args)
        return v, (g if not isinstance(argnums, int) else g[0])

    vg_f.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    return vg_f


def vjp(f: Callable[..., Any], *xs: Any) -> tuple[Tensor, Callable[[Any], tuple[Tensor, ...]]]:
    """Evaluate ``f(*xs)``; return ``(out, vjp_fn)`` where ``vjp_fn(v)`` is ``v^T J`` per x.

    ``v`` has the output's shape; ``vjp_fn`` may be called any number of times.
    """
    nodes = []
    nested = False
    for k, x in enumerate(xs):
        node, outer = _input(x, "vjp", k)
        nested = nested or outer
        nodes.append(node)
    with _enabled():
        out = f(*nodes)
    if not isinstance(out, Tensor):
        raise TypeError(f"vjp: the function must return a Tensor, got {type(out).__name__}")

    def vjp_fn(v: Any) -> tuple[Tensor, ...]:
        arr = v.data if isinstance(v, Tensor) else _as_grad(v, out.data)
        if arr.shape != out.shape:
            raise ShapeError(f"vjp: cotangent has shape {arr.shape}, output has {out.shape}")
        if not out.requires_grad:
            return tuple(constant(_zeros_like(n.data)) for n in nodes)
        seed = v if (nested and isinstance(v, Tensor)) else (constant(arr) if nested else arr)
        raw = run_backward(out, seed, retain_graph=True, create_graph=nested, wrt=nodes)
        assert raw is not None
        res = []
        for n, g in zip(nodes, raw, strict=True):
            if g is None:
                res.append(constant(_zeros_like(n.data)))
            else:
                res.append(g if isinstance(g, Tensor) else constant(_as_grad(g, n.data)))
        return tuple(res)

    return (out if nested else out.detach()), vjp_fn
