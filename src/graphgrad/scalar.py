"""Scalar units: graph nodes that hold one Python float, for teaching, inspection and speed.

``gg.Scalar(2.0, name="a")`` is a node of the same kind of computational graph as a Tensor:
it records the op that produced it (an :class:`~graphgrad.ops.Op` from the same registry, so
``op.name``, the formulas and the table of derivatives are shared), its inputs and a creation
number, and ``backward()`` visits the graph in reverse creation order, as the tensor engine
does. Values and gradients are Python floats: a node's value is its op's float forward and
its backward step is its op's own VJP rule, both from the registry, so a Scalar op is exactly
the op of the table (``graphgrad ops``) on one number.

Three differences from Tensors, each for a reason:

* every node keeps its gradient in ``.grad`` after ``backward()`` (a float), intermediate nodes
  included: the gradients are the pass's working storage (a slot per node is cheaper than a
  dict) and pictures of the graph show them. Leaves accumulate over calls, as Tensors do;
  intermediate nodes are reset by each pass.
* the nodes keep their inputs after ``backward()`` (a picture can be drawn after the pass), yet
  the engine's contract holds: a second backward through the same op nodes raises unless the
  first passed ``retain_graph=True``, as with Tensors.
* a node stores its (at most two) inputs in two slots, ``_a`` and ``_b``, not in a tuple: one
  tracked object per node instead of two halves the work of Python's cyclic garbage collector,
  which runs while a large graph is built even though the graph holds no cycles.

Nodes refer only to their inputs (no closures, no back references), so no reference cycles.

Two implementations, one behaviour. ``pip install`` compiles a C core with Cython,
:mod:`graphgrad._scalar_core`: typed C doubles in 64-byte nodes, the backward loop in C, nodes
kept out of the cyclic garbage collector, deep graphs freed without recursion, and the common
ops' forwards and rules written out in C. On the MLP of micrograd's demo it runs several times
faster than the pure-Python implementation, :mod:`graphgrad._scalar_py` (which runs the
registry's rules as they are), and over 10x faster than micrograd with its collector off. The
pure-Python implementation stays the reference: both make the same nodes and give the same
values and gradients, bit for bit (tests check it on random graphs and, for each op written out
in C, at the edges of its domain). The compiled core is used
when it is built, unless ``GRAPHGRAD_PURE_PYTHON=1`` is set in the environment; its build is
optional, so an install without Cython or a C compiler falls back to pure Python.
:data:`COMPILED` says which one runs, :data:`IMPLEMENTATION` which and why;
``python bench/bench_scalar.py`` times both. (The compiled nodes' fields are read-only where
a pass relies on them: ``_a``, ``_b``, ``_op``, ``_seq``.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _scalar_py
from ._scalar_py import FLOAT_FORWARD, FLOAT_XP, OP_METHODS, local_grads, registry_rules
from ._state import pure_python_requested

__all__ = [
    "COMPILED",
    "FLOAT_FORWARD",
    "FLOAT_XP",
    "IMPLEMENTATION",
    "OP_METHODS",
    "Scalar",
    "apply_op",
    "as_scalar",
    "local_grads",
    "registry_rules",
    "scalar_backward",
    "scalars",
    "topological",
]

#: The compiled core's interface version this module expects (a stale build is not used).
_CORE_API = 3


def _choose() -> tuple[Any, str]:
    """The implementation module and a line saying which one and why."""
    if pure_python_requested():
        return _scalar_py, "pure Python (GRAPHGRAD_PURE_PYTHON is set)"
    try:
        core = importlib.import_module("graphgrad._scalar_core")
    except ImportError:
        return _scalar_py, "pure Python (the compiled core graphgrad._scalar_core is not built)"
    except AttributeError:  # built against an older reference, which it reads as it loads
        return _scalar_py, "pure Python (graphgrad._scalar_core is a stale build: reinstall)"
    if getattr(core, "CORE_API", None) != _CORE_API:
        return _scalar_py, "pure Python (graphgrad._scalar_core is a stale build: reinstall)"
    return core, "compiled (graphgrad._scalar_core, Cython)"


_impl, IMPLEMENTATION = _choose()
#: True when the Scalar in use is the compiled core's, False for the pure-Python one.
COMPILED: bool = _impl is not _scalar_py

if TYPE_CHECKING:  # both implementations have the reference's interface
    from ._scalar_py import (
        Scalar,
        apply_op,
        as_scalar,
        scalar_backward,
        scalars,
        topological,
    )
else:
    Scalar = _impl.Scalar
    apply_op = _impl.apply_op
    as_scalar = _impl.as_scalar
    scalar_backward = _impl.scalar_backward
    scalars = _impl.scalars
    topological = _impl.topological
