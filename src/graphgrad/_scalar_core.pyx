# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""The compiled core of scalar units: :class:`graphgrad.scalar.Scalar` as a C type (Cython).

The same nodes, values and gradients as the pure-Python reference :mod:`graphgrad._scalar_py`,
bit for bit: every value and every gradient is made by the same float operations in the same
order (the extension is built with ``-ffp-contract=off`` so that no ``a + b * c`` becomes a
fused multiply-add). Only the machinery differs, all of it for speed (the passes over a graph wait on memory more
than they compute):

* a node is a 64-byte C struct: ``data`` and ``grad`` as C doubles, the inputs ``_a`` and
  ``_b``, and one word packing the creation number, an op code (the registry ``Op`` follows
  from it) and ``requires_grad``; the fields most nodes never set (``name``, op parameters,
  the Op of a registry-only op, the walk mark ``_m``) live in a side object made on demand.
  Up to 65,536 freed nodes (4 MiB) are kept for reuse, so a training loop does not hand its
  memory back and forth to the system each step;
* nodes are not tracked by Python's cyclic garbage collector (``no_gc``): a node refers only to
  its inputs, which are older than it, so a graph holds no cycles and the collector would find
  nothing; building a large graph then never starts a collection. (Do not store a node in its
  own ``name``: that cycle would never be collected.)
* ``backward()`` is one pass over a slot array indexed by creation number, newest first (the
  numbers of one graph are nearly dense): a node's rule runs when the scan reaches it, which
  is the reference's order; where an input is too far back for the array, the pass goes on
  with a heap;
* freeing a deep graph does not recurse: a node that holds the last reference to an input hands
  it to a stack, which the outermost deallocation empties (CPython's "trashcan" does this for
  collector-tracked objects only).

The rarer forwards and rules (``pow``, the registry-only ops, errors) call the reference
module's own functions, so their values and messages are the same by construction.
"""

cimport cython
from cpython.contextvars cimport PyContextVar_Get
from cpython.object cimport PyObject
from libc.math cimport exp, expm1, isinf, log, pow, tanh
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memset

import itertools

import numpy as np

from . import _scalar_py as _py
from ._state import GRAD_ENABLED, next_seq
from .errors import BackwardError
from .ops import REGISTRY as E

cdef extern from "Python.h":
    ctypedef struct PyTypeObject:
        PyObject* tp_dict
    void PyType_Modified(PyTypeObject* t)
    PyObject* _Py_True "Py_True"
    Py_ssize_t _refcnt "Py_REFCNT" (PyObject* o)
    void _incref "Py_INCREF" (PyObject* o)
    void _decref "Py_DECREF" (PyObject* o)

cdef extern from *:
    """
    /* itertools.count's object (Modules/itertoolsmodule.c, CPython 3.11 to 3.13): cnt is the
       next number while it fits a Py_ssize_t and the step is 1. */
    typedef struct { PyObject_HEAD Py_ssize_t cnt; PyObject *long_cnt; PyObject *long_step; }
        gg_countobject;
    static Py_ssize_t *gg_count_cell(PyObject *counter, Py_ssize_t expect, Py_ssize_t size) {
    #if defined(PYPY_VERSION) || defined(Py_LIMITED_API) || defined(Py_GIL_DISABLED)
        return NULL;
    #else
        gg_countobject *c = (gg_countobject *)counter;
        if (size != (Py_ssize_t)sizeof(gg_countobject)) return NULL;
        if (c->cnt != expect || c->long_cnt != NULL) return NULL;
        return &c->cnt;
    #endif
    }
    #if defined(__GNUC__) || defined(__clang__)
    #define gg_prefetch(p) __builtin_prefetch(p)
    #else
    #define gg_prefetch(p) ((void)0)
    #endif
    """
    void gg_prefetch(const void* p) noexcept nogil
    Py_ssize_t* gg_count_cell(PyObject* counter, Py_ssize_t expect, Py_ssize_t size) noexcept
    const Py_ssize_t PY_SSIZE_T_MAX

#: The version of this core's interface; graphgrad.scalar refuses a stale build.
CORE_API = 3

# ----------------------------------------------------------------------------- op codes

cdef enum:  # a node's _code: 0 for a leaf, else its op (C_OTHER: the registry's rule)
    C_LEAF = 0
    C_MUL = 1
    C_ADD = 2
    C_RELU = 3
    C_TANH = 4
    C_SUB = 5
    C_NEG = 6
    C_EXP = 7
    C_SIGMOID = 8
    C_DIV = 9
    C_LOG = 10
    C_POW = 11
    C_LEAKY = 12
    C_ELU = 13
    C_MAXIMUM = 14
    C_OTHER = 15

cdef object _ADD = E["add"]
cdef object _SUB = E["sub"]
cdef object _MUL = E["mul"]
cdef object _DIV = E["div"]
cdef object _POW = E["pow"]
cdef object _NEG = E["neg"]
cdef object _EXP = E["exp"]
cdef object _LOG = E["log"]
cdef object _TANH = E["tanh"]
cdef object _SIGMOID = E["sigmoid"]
cdef object _RELU = E["relu"]
cdef object _LEAKY = E["leaky_relu"]
cdef object _ELU = E["elu"]
cdef object _MAXIMUM = E["maximum"]

cdef dict _CODES = {
    E["add"]: C_ADD, E["sub"]: C_SUB, E["mul"]: C_MUL, E["div"]: C_DIV, E["pow"]: C_POW, E["neg"]: C_NEG,
    E["exp"]: C_EXP, E["log"]: C_LOG, E["tanh"]: C_TANH, E["sigmoid"]: C_SIGMOID, E["relu"]: C_RELU,
    E["leaky_relu"]: C_LEAKY, E["elu"]: C_ELU, E["maximum"]: C_MAXIMUM,
}

cdef dict _FLOAT_FORWARD = _py.FLOAT_FORWARD
cdef object _to_float = _py.to_float
cdef object _registry_rules = _py.registry_rules
cdef object _float_params = _py.float_params
cdef object _released_message = _py.released_message
cdef tuple _REALS = (int, float, np.integer, np.floating)

# ------------------------------------------------------------- creation numbers, grad mode

# The shared counter of graph nodes, an itertools.count in graphgrad._state (tensors number
# their nodes from it too). Each node takes a number, and making a Python int for it, only to
# store it as a C integer, would be a good part of an op's cost: where the counter is a plain
# count(n) whose layout is the one known above (checked now, against its repr), the next
# number is read and bumped in place, as count's own __next__ does; else next() is called.
cdef object _counter = getattr(next_seq, "__self__", None)
cdef bint _count_is_itertools = type(_counter) is itertools.count
cdef object _next_seq = next_seq
cdef object _GRAD_ENABLED = GRAD_ENABLED
cdef Py_ssize_t* _count_cell = NULL


cdef void _find_count_cell():
    global _count_cell
    if not _count_is_itertools:
        return
    text = repr(_counter)  # "count(n)": step 1, n a Py_ssize_t
    if not (text.startswith("count(") and text.endswith(")") and text[6:-1].isdigit()):
        return
    n = int(text[6:-1])
    if n >= PY_SSIZE_T_MAX - 1:
        return
    _count_cell = gg_count_cell(<PyObject*>_counter, n, type(_counter).__basicsize__)
    if _count_cell != NULL and (next(_counter) != n or _count_cell[0] != n + 1):
        _count_cell = NULL  # not the layout it seemed: leave the counter to next()


_find_count_cell()


cdef inline long long _seq() except? -1:
    cdef Py_ssize_t n
    if _count_cell != NULL:
        n = _count_cell[0]
        if n < PY_SSIZE_T_MAX - 1:
            _count_cell[0] = n + 1
            return n
    if _count_is_itertools:
        return next(_counter)
    return _next_seq()


# Whether ops record the graph in the calling thread: the context variable
# ``graphgrad._state.GRAD_ENABLED``, read through the C API (it caches the value per thread
# and context, so this costs a pointer comparison or two, not a Python call).
cdef inline bint _recording() except -1:
    cdef PyObject* value = NULL
    if PyContextVar_Get(_GRAD_ENABLED, NULL, &value) < 0:
        return -1
    _decref(value)  # True and False are never freed: the pointer stays comparable
    return value == _Py_True


cdef inline double _as_double(object value, str what) except? -1.0:
    if type(value) is float:
        return <double>value
    return _to_float(value, what)


# ------------------------------------------------------------------------ deallocation

# Inputs whose last reference a dying node holds: freed by the outermost deallocation, one at
# a time, instead of by nested calls (a million-deep chain would overflow the C stack).
cdef PyObject** _grave = NULL
cdef Py_ssize_t _grave_len = 0
cdef Py_ssize_t _grave_cap = 0
cdef bint _burying = False


cdef inline bint _bury(PyObject* p) noexcept:
    """Push a new reference to ``p`` on the stack; False (nothing pushed) if out of memory."""
    global _grave, _grave_cap, _grave_len
    cdef PyObject** grown
    cdef Py_ssize_t cap
    if _grave_len == _grave_cap:
        cap = 2 * _grave_cap + 64
        grown = <PyObject**>realloc(_grave, cap * sizeof(PyObject*))
        if grown == NULL:
            return False
        _grave = grown
        _grave_cap = cap
    _incref(p)
    _grave[_grave_len] = p
    _grave_len += 1
    return True


# ---------------------------------------------------------------------------- the node


@cython.final
@cython.no_gc
@cython.auto_pickle(False)
cdef class _Extra:
    """The fields of a node that most nodes leave unset: name, params, the Op of an op with
    no code here, and the mark of Python walks."""
    cdef object op
    cdef object name
    cdef object p
    cdef object m


# The Op of each code (the registry's objects).
cdef tuple _OPS = (
    None, E["mul"], E["add"], E["relu"], E["tanh"], E["sub"], E["neg"], E["exp"], E["sigmoid"], E["div"], E["log"], E["pow"],
    E["leaky_relu"], E["elu"], E["maximum"],
)

#: The ops whose forward and rule this core writes out in C (the rest run the registry's
#: rule through the reference's ``registry_rules``); tests check each one against the
#: registry, bit for bit, at the edges of its domain too.
INLINE_OPS = tuple(op.name for op in _OPS[1:])


@cython.final
@cython.no_gc
@cython.auto_pickle(False)
@cython.freelist(65536)
cdef class Scalar:
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

    # 64 bytes with Python's object header: the passes touch as little memory as they can.
    cdef public double data
    cdef public double grad
    cdef readonly Scalar _a
    cdef readonly Scalar _b
    cdef long long _w  # creation number << 16 | op code << 8 | released << 1 | requires_grad
    cdef _Extra _x  # the rarely set fields, or None

    def __init__(self, value, name=None, requires_grad=True):
        # A leaf: __new__ left _a and _b None, and no method ever changes them, so the
        # structure of a graph cannot change while a pass walks it (it keeps borrowed pointers).
        self.data = _as_double(value, "Scalar")
        self.grad = 0.0
        self._w = _word(_seq(), C_LEAF, requires_grad)
        self._x = None
        if name is not None:
            self.name = name

    @property
    def _seq(self):
        """The creation number (shared with tensors): newer nodes have larger numbers."""
        return self._w >> 16

    @property
    def requires_grad(self):
        """False for a constant."""
        return bool(self._w & 1)

    @requires_grad.setter
    def requires_grad(self, value):
        self._w = (self._w & ~1) | (1 if value else 0)

    @property
    def _op(self):
        """The registry Op that made this node (``None`` for a leaf)."""
        cdef int code = _code(self)
        if code == C_LEAF:
            return None
        if code == C_OTHER:
            return self._x.op
        return _OPS[code]

    @property
    def name(self):
        """A label shown in pictures of the graph and in ``--explain``."""
        return self._x.name if self._x is not None else None

    @name.setter
    def name(self, value):
        _extra(self).name = value

    @property
    def _p(self):
        return self._x.p if self._x is not None else None

    @property
    def _m(self):
        """A mark for walks in Python (graphgrad.viz.trace), as in the reference."""
        return self._x.m if self._x is not None else None

    @_m.setter
    def _m(self, value):
        _extra(self).m = value

    def __copy__(self):
        # A copy is a new node with the same fields (the same inputs) and a new creation
        # number; no node is ever changed in place, as a pass may be walking it.
        return _restore(
            self.data, self.grad, self.name, self.requires_grad, self._op, self._a, self._b,
            self._p,
        )

    def __reduce__(self):
        # pickle and copy.deepcopy: a leaf only, as the reference (a node made by an op
        # would carry its whole graph, ops included, recursively)
        if self._op is not None:
            raise TypeError(_py.NOT_PICKLABLE)
        return _restore, (self.data, self.grad, self.name, self.requires_grad, None, None, None,
                          None)

    def __dealloc__(self):
        global _burying, _grave_len
        # (No local reference to a buried node: it would be freed, recursively, on return.)
        cdef PyObject* p = <PyObject*>self._a
        if _refcnt(p) == 1 and _bury(p):
            _prefetch_inputs(p)  # freed soon: its inputs' counts are read then
            self._a = None  # the stack holds the last reference now
        p = <PyObject*>self._b
        if _refcnt(p) == 1 and _bury(p):
            _prefetch_inputs(p)
            self._b = None
        if _burying:
            return
        _burying = True
        while _grave_len:
            _grave_len -= 1
            _decref(_grave[_grave_len])  # may push the freed node's own inputs
        _burying = False

    # -------------------------------------------------------------------------- facts
    @property
    def op(self):
        """The name of the op that made this node (``None`` for a leaf)."""
        op = self._op
        return op.name if op is not None else None

    @property
    def is_leaf(self):
        """True for nodes made by the user, constants, and results computed under no_grad."""
        return _code(self) == C_LEAF

    @property
    def _inputs(self):
        """The input nodes, in argument order (the tensor engine's name for them)."""
        if self._a is None:
            return ()
        return (self._a,) if self._b is None else (self._a, self._b)

    @property
    def _params(self):
        """The op's static parameters (``slope`` of leaky_relu, ``alpha`` of elu)."""
        p = self._p
        return p if p is not None else {}

    @property
    def shape(self):
        """``()``: a Scalar is a 0-d quantity."""
        return ()

    def item(self):
        """The value as a Python float."""
        return self.data

    def __float__(self):
        return self.data

    def __repr__(self):
        extra = f", name={self.name!r}" if self.name else ""
        if _code(self) != C_LEAF:
            extra += f", op={self._op.name}"
        elif not self.requires_grad:
            extra += ", requires_grad=False"
        return f"Scalar({self.data:.6g}, grad={self.grad:.6g}{extra})"

    # ----------------------------------------------------------------------- backward
    def backward(self, grad=1.0, retain_graph=False):
        """Backpropagate from this node: every node it depends on gets dL/d(node) in ``.grad``.

        The Tensor engine's contract: leaves accumulate (call ``s.grad = 0.0``, or ``zero_grad``
        of your model, between steps); a second backward through the same op nodes raises
        :class:`~graphgrad.errors.BackwardError` unless the first passed ``retain_graph=True``.
        Intermediate nodes get this pass's value. ``grad`` is dL/d(self), 1 by default. The
        nodes keep their inputs either way, so pictures can be drawn after the pass.
        """
        scalar_backward(self, grad, retain_graph)


    def zero_grad(self):
        """Set this node's ``.grad`` to 0."""
        self.grad = 0.0

    # ---------------------------------------------------------------------- operators
    def __add__(self, other):
        cdef Scalar o = <Scalar>other if type(other) is Scalar else _lift(other, "+")
        return _node(self.data + o.data, C_ADD, _ADD, self, o, None)

    def __radd__(self, other):
        cdef Scalar c = _lift(other, "+")
        return _node(c.data + self.data, C_ADD, _ADD, c, self, None)

    def __sub__(self, other):
        cdef Scalar o = <Scalar>other if type(other) is Scalar else _lift(other, "-")
        return _node(self.data - o.data, C_SUB, _SUB, self, o, None)

    def __rsub__(self, other):
        cdef Scalar c = _lift(other, "-")
        return _node(c.data - self.data, C_SUB, _SUB, c, self, None)

    def __mul__(self, other):
        cdef Scalar o = <Scalar>other if type(other) is Scalar else _lift(other, "*")
        return _node(self.data * o.data, C_MUL, _MUL, self, o, None)

    def __rmul__(self, other):
        cdef Scalar c = _lift(other, "*")
        return _node(c.data * self.data, C_MUL, _MUL, c, self, None)

    def __truediv__(self, other):
        cdef Scalar o = <Scalar>other if type(other) is Scalar else _lift(other, "/")
        return _div(self, o)

    def __rtruediv__(self, other):
        cdef Scalar c = _lift(other, "/")
        return _div(c, self)

    def __pow__(self, other, mod=None):
        if mod is not None:
            return NotImplemented
        cdef Scalar o = <Scalar>other if type(other) is Scalar else _lift(other, "**")
        return _unit(_POW, self, o, None)

    def __rpow__(self, other, mod=None):
        if mod is not None:
            return NotImplemented
        cdef Scalar c = _lift(other, "**")
        return _unit(_POW, c, self, None)

    def __neg__(self):
        return _node(-self.data, C_NEG, _NEG, self, None, None)

    def __pos__(self):
        return self

    # ---------------------------------------------------------------------- functions
    def exp(self):
        """e^x; local derivative e^x (the output is reused)."""
        cdef double x = self.data
        cdef double y = exp(x)
        if isinf(y) and not isinf(x):
            _FLOAT_FORWARD[_EXP](x)  # raises the reference's OverflowError
        return _node(y, C_EXP, _EXP, self, None, None)

    def log(self):
        """ln x (x > 0); local derivative 1/x."""
        cdef double x = self.data
        if not x > 0.0:
            _FLOAT_FORWARD[_LOG](x)  # raises the reference's ValueError
        return _node(log(x), C_LOG, _LOG, self, None, None)

    def tanh(self):
        """tanh x; local derivative 1 - tanh(x)^2."""
        return _node(tanh(self.data), C_TANH, _TANH, self, None, None)

    def sigmoid(self):
        """1 / (1 + e^-x); local derivative s(x)(1 - s(x))."""
        # The registry's split: exp of a non-positive number only (no overflow, full
        # relative precision for negative x).
        cdef double x = self.data
        cdef double e
        if x >= 0.0:
            e = 1.0 / (1.0 + exp(-x))
        else:
            e = exp(x)
            e = e / (1.0 + e)
        return _node(e, C_SIGMOID, _SIGMOID, self, None, None)

    def relu(self):
        """max(0, x); local derivative 1 if x > 0 else 0 (0 at the kink)."""
        cdef double x = self.data
        return _node(x if x > 0.0 else 0.0, C_RELU, _RELU, self, None, None)

    def leaky_relu(self, slope=0.01):
        """x if x > 0 else slope * x; local derivative 1 or ``slope`` (``slope`` at 0)."""
        cdef double s = _to_float(slope, "leaky_relu slope")
        cdef double x = self.data
        return _node(x if x > 0.0 else x * s, C_LEAKY, _LEAKY, self, None, {"slope": s})

    def elu(self, alpha=1.0):
        """x if x > 0 else alpha (e^x - 1); local derivative 1 or alpha e^x (alpha at 0)."""
        cdef double al = _to_float(alpha, "elu alpha")
        cdef double x = self.data
        return _node(x if x > 0.0 else al * expm1(x), C_ELU, _ELU, self, None, {"alpha": al})

    def maximum(self, other):
        """max(self, other); the larger input gets the gradient, a tie splits it 1/2, 1/2."""
        cdef Scalar o = <Scalar>other if type(other) is Scalar else _lift(other, "maximum")
        cdef double x = self.data
        cdef double y = o.data
        return _node(x if x >= y else y, C_MAXIMUM, _MAXIMUM, self, o, None)


# ------------------------------------------------------------------------------ plumbing


cdef inline void _prefetch_inputs(PyObject* x) noexcept:
    """Ask the CPU for node ``x``'s inputs ahead of use: the passes wait on memory."""
    gg_prefetch(<PyObject*>(<Scalar>x)._a)
    gg_prefetch(<PyObject*>(<Scalar>x)._b)


cdef inline long long _word(long long seq, int code, bint requires_grad) except? -1:
    if seq >= (<long long>1) << 47:
        raise OverflowError("graphgrad: creation numbers beyond 2**47")
    return (seq << 16) | (code << 8) | requires_grad


cdef inline int _code(Scalar n) noexcept:
    return (n._w >> 8) & 0xFF


cdef inline long long _number(Scalar n) noexcept:
    return n._w >> 16


cdef _Extra _extra(Scalar n):
    """``n``'s extra fields, made on first use."""
    if n._x is None:
        n._x = _Extra.__new__(_Extra)
    return n._x


cdef inline Scalar _node(double value, int code, object op, Scalar a, Scalar b, object params):
    """A new node: ``op`` applied to ``a`` (and ``b``) gave ``value``."""
    cdef Scalar out = Scalar.__new__(Scalar)
    out.data = value
    if params is not None:
        _extra(out).p = params
    if _recording():
        out._w = _word(_seq(), code, True)
        out._a = a
        out._b = b
        if code == C_OTHER:
            _extra(out).op = op
    else:  # a constant leaf (an op evaluated under no_grad)
        out._w = _word(_seq(), C_LEAF, False)
    return out


cdef Scalar _lift(object x, str what):
    """A Python number as a constant Scalar; anything else is a clear TypeError."""
    cdef double v
    cdef Scalar c
    if type(x) is Scalar:
        return <Scalar>x
    if type(x) is float:
        v = <double>x
    elif isinstance(x, _REALS) and not isinstance(x, bool):
        v = float(x)
    else:
        hint = " (Scalars and Tensors do not mix; use float(s))" if hasattr(x, "shape") else ""
        raise TypeError(
            f"unsupported operand for '{what}' with a Scalar: {type(x).__name__}{hint}"
        )
    c = Scalar.__new__(Scalar)
    c.data = v
    c._w = _word(_seq(), C_LEAF, False)
    return c


cdef Scalar _div(Scalar a, Scalar b):
    cdef double y = b.data
    if y == 0.0:
        _FLOAT_FORWARD[_DIV](a.data, y)  # raises the reference's ZeroDivisionError
    return _node(a.data / y, C_DIV, _DIV, a, b, None)


cdef Scalar _unit(object op, Scalar a, Scalar b, object params):
    """Apply ``op`` to one or two Scalars by the reference's float forward (the generic path)."""
    fwd = _FLOAT_FORWARD.get(op)
    if fwd is None:
        raise NotImplementedError(
            f"op '{op.name}' has no Scalar version; Scalars support "
            f"{', '.join(o.name for o in _FLOAT_FORWARD)}"
        )
    if b is not None:
        value = fwd(a.data, b.data)
    else:
        value = fwd(a.data, **params) if params else fwd(a.data)
    return _node(value, _CODES.get(op, C_OTHER), op, a, b, params)


def as_scalar(x):
    """``x`` if it is a Scalar, else a constant Scalar holding the number ``x``."""
    return _lift(x, "as_scalar")


def apply_op(op, *inputs, **params):
    """Make a node of op ``op`` (a registry Op, e.g. ``gg.REGISTRY['minimum']``) on Scalars."""
    if not 1 <= len(inputs) <= 2:
        raise TypeError(f"apply_op: Scalar ops take one or two inputs, got {len(inputs)}")
    args = [_lift(x, op.name) for x in inputs]
    return _unit(op, args[0], args[1] if len(args) == 2 else None, _float_params(op, params))


# The methods of the registry's other elementwise ops (sqrt, softplus, sin, ...), made by the
# reference's generator with this core's apply_op; Scalar.__getattr__ serves them.
cdef dict _OP_METHODS = _py.op_methods(apply_op)


cdef void _install_op_methods():
    """The registry's other elementwise ops (sqrt, softplus, sin, ...) become real methods of
    Scalar: the reference's generated functions, put in the type's own dict. (A ``__getattr__``
    would do it too, but a type with one loses CPython's fast method call and slot lookup for
    every attribute: ``s.relu()`` measured 27 -> 51 ns.)"""
    cdef dict d = <dict>(<PyTypeObject*>Scalar).tp_dict
    for name, method in _OP_METHODS.items():
        if name not in d:
            d[name] = method
    PyType_Modified(<PyTypeObject*>Scalar)


_install_op_methods()


def scalars(values, name=None):
    """Leaves from numbers: ``scalars([0.5, -1.0], name="w")`` names them ``w[0]``, ``w[1]``."""
    return [Scalar(v, name=None if name is None else f"{name}[{i}]") for i, v in enumerate(values)]


def _restore(data, grad, name, requires_grad, op, a, b, params):
    """A node rebuilt from the fields :meth:`Scalar.__reduce__` gives; its inputs, rebuilt
    first, have older creation numbers, as a graph needs."""
    cdef int code = _CODES.get(op, C_OTHER) if op is not None else C_LEAF
    if op is not None and (
        a is None or (b is None and code in (C_MUL, C_ADD, C_SUB, C_DIV, C_POW, C_MAXIMUM))
    ):
        raise ValueError(f"_restore: op '{op.name}' is missing an input")
    cdef Scalar out = Scalar.__new__(Scalar)
    out.data = data
    out.grad = grad
    out._w = _word(_seq(), code, requires_grad)
    out._a = a
    out._b = b
    if name is not None:
        out.name = name
    if params is not None:
        _extra(out).p = params
    if code == C_OTHER:
        _extra(out).op = op
    return out


# ------------------------------------------------------------------------------ backward

ctypedef struct _Nodes:  # a growable array of borrowed node pointers
    PyObject** items
    Py_ssize_t len
    Py_ssize_t cap


cdef int _reserve(_Nodes* v, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = v.cap
    cdef PyObject** grown
    if need <= cap:
        return 0
    while cap < need:
        cap = 2 * cap + 1024
    grown = <PyObject**>realloc(v.items, cap * sizeof(PyObject*))
    if grown == NULL:
        raise MemoryError()
    v.items = grown
    v.cap = cap
    return 0


cdef void _release(_Nodes* v) noexcept:
    free(v.items)
    v.items = NULL
    v.len = v.cap = 0


# The work arrays of a pass, kept between passes (a fresh array for every pass would cost a
# page fault per 4 KiB); a pass that finds them in use (another thread) makes its own.
cdef _Nodes _found_buf
cdef _Nodes _slots_buf
cdef bint _bufs_busy = False
cdef Py_ssize_t _KEEP = 1 << 18  # larger work arrays are freed after the pass
cdef Py_ssize_t _DENSE_ANY = 1 << 21  # slots any dense walk may use (16 MiB)


ctypedef struct _Walk:  # the state of a dense walk
    long long hi  # the root's number: slot k holds number hi - k
    Py_ssize_t top  # the highest slot filled
    Py_ssize_t count  # the slots filled
    Py_ssize_t zeroed  # the slots known to be NULL or filled
    bint reset


cdef inline int _reach(_Walk* w, _Nodes* slots, Py_ssize_t k, Scalar x) except -1:
    """Place input ``x`` of slot ``k - 1``'s node, once: 1 on success, 0 if the walk must give up."""
    cdef Py_ssize_t kx, grow
    if x is None or _code(x) == C_LEAF:
        return 1
    kx = <Py_ssize_t>(w.hi - _number(x))
    if kx < k:  # an input not older than its consumer
        return 0
    if kx >= w.zeroed:
        if kx >= _DENSE_ANY and kx > 8 * w.count:
            return 0
        grow = max(kx + 1, 2 * w.zeroed)
        _reserve(slots, grow)
        memset(slots.items + w.zeroed, 0, (grow - w.zeroed) * sizeof(PyObject*))
        w.zeroed = grow
    if slots.items[kx] == NULL:
        slots.items[kx] = <PyObject*>x
        _prefetch_inputs(<PyObject*>x)  # read when the scan reaches x
        w.count += 1
        if w.reset:
            x.grad = 0.0
        if kx > w.top:
            w.top = kx
    return 1


cdef int _walk_start(_Walk* w, Scalar root, bint reset, _Nodes* slots) except -1:
    """A walk from ``root``: slot 0 holds it, the first 4096 slots are zeroed."""
    w.hi = _number(root)
    w.top = 0
    w.count = 1
    w.zeroed = 4096
    w.reset = reset
    _reserve(slots, w.zeroed)
    memset(slots.items, 0, w.zeroed * sizeof(PyObject*))
    slots.items[0] = <PyObject*>root
    return 0


cdef bint _walk_dense(Scalar root, bint reset, _Nodes* slots) except -1:
    """Place the op nodes ``root`` depends on in ``slots``: slot k holds the node numbered
    ``root._seq - k`` (NULL where that number is not in the graph), so the slots are newest
    first. Each node is placed when first reached (its gradient zeroed if ``reset``); slot k's
    inputs are older, so scanning the slots in order finds every node, with no queue and no
    marks. False where the numbers are too sparse for an array (a node far older than the rest)
    or out of order (not made by this module): the caller walks again with marks and a sort.

    Pointers are borrowed: the caller holds ``root``, and so every node it reaches."""
    cdef _Walk w
    cdef Py_ssize_t k = 0
    cdef PyObject* p
    cdef Scalar n
    _walk_start(&w, root, reset, slots)
    while k <= w.top:
        p = slots.items[k]
        k += 1
        if p == NULL:
            continue
        n = <Scalar>p
        if not _reach(&w, slots, k, n._a) or not _reach(&w, slots, k, n._b):
            return False
    slots.len = w.top + 1
    return True


cdef int _place(Scalar root, bint reset, _Nodes* found, _Nodes* slots) except -1:
    """``slots`` as :func:`_walk_dense` leaves them, whatever the numbers: dense, or by a marking
    walk and a sort."""
    if not _walk_dense(root, reset, slots):
        _collect(root, reset, found)
        _order(found, slots)
    return 0


cdef int _collect(Scalar root, bint reset, _Nodes* found) except -1:
    """The op nodes ``root`` depends on (itself first), each once, as borrowed pointers: the
    caller holds ``root``, and so every node it reaches. ``reset`` zeroes their gradients (the
    pass's working storage). The walk for sparse numbers: a set of addresses marks the nodes
    seen (a node has no room for marks)."""
    cdef Py_ssize_t i = 0
    cdef Scalar n, x
    cdef set seen = {<size_t><PyObject*>root}
    found.len = 0
    _reserve(found, 1)
    found.items[0] = <PyObject*>root
    found.len = 1
    while i < found.len:  # the array is its own queue
        n = <Scalar>found.items[i]
        i += 1
        for x in (n._a, n._b):
            if x is not None and _code(x) != C_LEAF and <size_t><PyObject*>x not in seen:
                seen.add(<size_t><PyObject*>x)
                if reset:
                    x.grad = 0.0
                _reserve(found, found.len + 1)
                found.items[found.len] = <PyObject*>x
                found.len += 1
    return 0


ctypedef struct _Keyed:
    long long seq
    PyObject* node


cdef int _newest_first(const void* x, const void* y) noexcept nogil:
    cdef long long s = (<const _Keyed*>x).seq
    cdef long long t = (<const _Keyed*>y).seq
    return (s < t) - (s > t)


cdef int _order(_Nodes* found, _Nodes* slots) except -1:
    """Put ``found``'s nodes in ``slots``, newest first by creation number: ``slots.len``
    entries, some of them NULL (skip those). The numbers of one graph are nearly dense, so
    usually a slot per number and no comparisons; a sort where they are not."""
    cdef Py_ssize_t n = found.len, i, span
    cdef long long hi = _number(<Scalar>found.items[0]), lo = hi, s
    cdef _Keyed* keyed
    for i in range(1, n):
        s = _number(<Scalar>found.items[i])
        if s < lo:
            lo = s
        elif s > hi:
            hi = s
    span = <Py_ssize_t>(hi - lo + 1)
    if span <= 4 * n + 4096:
        _reserve(slots, span)
        memset(slots.items, 0, span * sizeof(PyObject*))
        for i in range(n):
            slots.items[hi - _number(<Scalar>found.items[i])] = found.items[i]
        slots.len = span
        return 0
    keyed = <_Keyed*>malloc(n * sizeof(_Keyed))
    if keyed == NULL:
        raise MemoryError()
    for i in range(n):
        keyed[i].seq = _number(<Scalar>found.items[i])
        keyed[i].node = found.items[i]
    qsort(keyed, n, sizeof(_Keyed), _newest_first)
    try:
        _reserve(slots, n)
    except MemoryError:
        free(keyed)
        raise
    for i in range(n):
        slots.items[i] = keyed[i].node
    slots.len = n
    free(keyed)
    return 0


cdef bint _take_bufs() noexcept:
    """Claim the shared work arrays; False if another pass holds them."""
    global _bufs_busy
    if _bufs_busy:
        return False
    _bufs_busy = True
    return True


cdef void _give_bufs(bint shared, _Nodes* found, _Nodes* slots) noexcept:
    global _bufs_busy
    if shared:
        if found.cap > _KEEP:
            _release(found)
        if slots.cap > _KEEP:
            _release(slots)
        _bufs_busy = False
    else:
        _release(found)
        _release(slots)


def topological(Scalar root not None):
    """The op nodes ``root`` depends on (itself included), newest first: reverse topological
    order, by creation number as in the tensor engine. Iterative; each node once."""
    if _code(root) == C_LEAF:
        return []
    cdef _Nodes own_found, own_slots
    cdef bint shared = _take_bufs()
    cdef _Nodes* found = &_found_buf if shared else &own_found
    cdef _Nodes* slots = &_slots_buf if shared else &own_slots
    cdef Py_ssize_t i
    cdef list out = []
    if not shared:
        own_found.items = own_slots.items = NULL
        own_found.len = own_found.cap = own_slots.len = own_slots.cap = 0
    try:
        _place(root, False, found, slots)
        for i in range(slots.len):
            if slots.items[i] != NULL:
                out.append(<object>slots.items[i])
    finally:
        _give_bufs(shared, found, slots)
    return out


def scalar_backward(root, seed=1.0, retain_graph=False):
    """Reverse mode over a Scalar graph: the scalar twin of the tensor engine's ``run_backward``.

    The compiled twin of the reference's pass: the op nodes ``root`` depends on are visited
    newest first by creation number, each hands ``g * (local derivative)`` to its inputs'
    ``.grad`` (intermediate nodes start the pass at 0, leaves accumulate), with the same float
    operations in the same order, so the gradients agree bit for bit; and the same contract:
    each op node visited is marked released unless ``retain_graph``, and a later pass that
    reaches a released node raises ``BackwardError``.
    """
    if type(root) is not Scalar:
        raise TypeError(f"scalar_backward: expected a Scalar, got {type(root).__name__}")
    cdef Scalar r = <Scalar>root
    cdef double s = _as_double(seed, "backward grad")
    if _code(r) == C_LEAF:  # a leaf: d root / d root = seed
        if not r.requires_grad:
            raise BackwardError(
                "backward() called on a constant Scalar (requires_grad=False, or computed under "
                "no_grad()): there is nothing to differentiate"
            )
        r.grad += s
        return
    cdef _Nodes own_found, own_slots
    cdef bint shared = _take_bufs()
    cdef _Nodes* found = &_found_buf if shared else &own_found
    cdef _Nodes* slots = &_slots_buf if shared else &own_slots
    if not shared:
        own_found.items = own_slots.items = NULL
        own_found.len = own_found.cap = own_slots.len = own_slots.cap = 0
    try:
        r.grad = s
        _backward(r, slots, not retain_graph)
    finally:
        _give_bufs(shared, found, slots)


cdef inline int _spend(Scalar n, bint release) except -1:
    """Raise if a backward released ``n`` before; mark it released if this one does."""
    if n._w & 2:
        raise BackwardError(_released_message(n._op))
    if release:
        n._w |= 2
    return 0


cdef int _backward(Scalar root, _Nodes* slots, bint release) except -1:
    """One pass, newest first: the slot array of :func:`_walk_dense`, filled as the pass goes
    (slot k's node is complete when the scan reaches it: its consumers are newer, in lower
    slots), each node placed at first reach (its gradient zeroed) and then its rule run. Where
    an input is too far back for the array, the pass goes on with a heap of the nodes pending."""
    cdef _Walk w
    cdef Py_ssize_t k = 0
    cdef PyObject* p
    cdef Scalar n
    _walk_start(&w, root, True, slots)
    while k <= w.top:
        p = slots.items[k]
        if k + 8 < w.zeroed:
            gg_prefetch(slots.items[k + 8])  # the nodes ahead are far apart in memory
        k += 1
        if p == NULL:
            continue
        n = <Scalar>p
        if not _reach(&w, slots, k, n._a) or not _reach(&w, slots, k, n._b):
            return _backward_heap(n, slots, k, w.top, release)
        _spend(n, release)
        _rule(n)
    return 0


cdef int _heap_push(_Keyed** heap, Py_ssize_t* size, Py_ssize_t* cap, Scalar x) except -1:
    """Push ``x`` on a binary max-heap keyed by creation number."""
    cdef Py_ssize_t i, parent, c = cap[0]
    cdef _Keyed* grown
    cdef _Keyed item
    if size[0] == c:
        c = 2 * c + 1024
        grown = <_Keyed*>realloc(heap[0], c * sizeof(_Keyed))
        if grown == NULL:
            raise MemoryError()
        heap[0] = grown
        cap[0] = c
    item.seq = _number(x)
    item.node = <PyObject*>x
    i = size[0]
    size[0] += 1
    while i > 0:
        parent = (i - 1) // 2
        if heap[0][parent].seq >= item.seq:
            break
        heap[0][i] = heap[0][parent]
        i = parent
    heap[0][i] = item
    return 0


cdef PyObject* _heap_pop(_Keyed* heap, Py_ssize_t* size) noexcept:
    """Pop the newest node of a non-empty max-heap."""
    cdef PyObject* top = heap[0].node
    cdef Py_ssize_t n = size[0] - 1, i = 0, child
    cdef _Keyed last = heap[n]
    size[0] = n
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and heap[child + 1].seq > heap[child].seq:
            child += 1
        if last.seq >= heap[child].seq:
            break
        heap[i] = heap[child]
        i = child
    if n > 0:
        heap[i] = last
    return top


cdef int _backward_heap(
    Scalar first, _Nodes* slots, Py_ssize_t k, Py_ssize_t top, bint release
) except -1:
    """The rest of a pass whose graph is too sparse for the slot array: ``first`` (its rule
    not run yet, its inputs maybe placed) and the nodes pending in slots ``k..top`` go on a
    heap, marked as seen (in a set of addresses); then newest first, as before."""
    cdef _Keyed* heap = NULL
    cdef Py_ssize_t size = 0, cap = 0, i
    cdef Scalar n, x
    cdef set seen = {<size_t><PyObject*>first}
    try:
        _heap_push(&heap, &size, &cap, first)
        for i in range(k, top + 1):
            if slots.items[i] != NULL:
                x = <Scalar>slots.items[i]
                seen.add(<size_t><PyObject*>x)
                _heap_push(&heap, &size, &cap, x)
        while size:
            n = <Scalar>_heap_pop(heap, &size)
            for x in (n._a, n._b):
                if x is not None and _code(x) != C_LEAF and <size_t><PyObject*>x not in seen:
                    seen.add(<size_t><PyObject*>x)
                    x.grad = 0.0
                    _heap_push(&heap, &size, &cap, x)
            _spend(n, release)
            _rule(n)
    finally:
        free(heap)
    return 0


cdef inline int _rule(Scalar n) except -1:
    """Hand ``n.grad`` times each local derivative of op node ``n`` to its inputs' ``.grad``:
    the same formulas, in the same float operations, as the reference's pass."""
    cdef Scalar a, b
    cdef double g, y, x, d
    cdef int code
    g = n.grad
    a = n._a
    b = n._b
    code = _code(n)
    if code == C_MUL:
        a.grad += g * b.data
        b.grad += g * a.data
    elif code == C_ADD:
        a.grad += g
        b.grad += g
    elif code == C_RELU:
        a.grad += g * (1.0 if a.data > 0.0 else 0.0)
    elif code == C_TANH:
        y = n.data
        a.grad += g * (1.0 - y * y)
    elif code == C_SUB:
        a.grad += g
        b.grad += -g
    elif code == C_NEG:
        a.grad += -g
    elif code == C_EXP:
        a.grad += g * n.data
    elif code == C_SIGMOID:
        y = n.data
        a.grad += g * y * (1.0 - y)
    elif code == C_DIV:  # (C's division gives inf where Python's raises: as NumPy's)
        x = a.data
        d = b.data
        a.grad += g / d
        b.grad += -((g * (x / d)) / d)  # as the registry's rule: no d * d to overflow
    elif code == C_LOG:
        a.grad += g / a.data
    elif code == C_POW:  # (C's pow, as NumPy's: inf for 0 ** negative, not an exception)
        x = a.data
        # 0 where p == 0, as the registry's rule: x^0 is the constant 1 (no 0 * inf at x = 0)
        a.grad += g * b.data * pow(x, b.data - 1.0) if b.data != 0.0 else 0.0
        b.grad += g * log(x) * n.data if x > 0.0 else 0.0  # ln(x) x^p; 0 where x <= 0
    elif code == C_LEAKY:
        if a.data > 0.0:
            a.grad += g
        else:
            a.grad += g * <double>_param(n, "slope", 0.01)
    elif code == C_ELU:
        if a.data > 0.0:
            a.grad += g
        else:
            a.grad += g * (n.data + <double>_param(n, "alpha", 1.0))
    elif code == C_MAXIMUM:  # weights 1 (wins), 0 (loses), 1/2 (ties; 0 for nan)
        a.grad += g * _tie_weight(a.data, b.data)
        b.grad += g * _tie_weight(b.data, a.data)
    else:
        _other(n, g)
    return 0


cdef inline double _tie_weight(double a, double b) noexcept:
    """The registry's share of maximum's gradient for input ``a`` against ``b``: 1 if
    ``a > b``, 1/2 at a tie (two equal infinities included), else 0 (nan included)."""
    return 1.0 if a > b else (0.5 if a == b else 0.0)


cdef object _param(Scalar n, str key, object default):
    """The op parameter ``key`` of ``n`` (``default`` where it has none), as the reference."""
    if n._x is None or n._x.p is None:
        return default
    return n._x.p.get(key, default)


cdef _other(Scalar n, double g):
    """An op without an inline rule: the registry's own VJP rule, on floats."""
    cdef tuple lgs = tuple(_registry_rules(n, g))
    n._a.grad += <double>lgs[0]
    if n._b is not None:
        n._b.grad += <double>lgs[1]
