"""Elementwise ops: the lecture's table of local derivatives, one entry per op.

Each op is its NumPy forward plus one VJP rule per argument, ``rule(xp, g, ans, *inputs)``:
``g`` is dL/d(out), ``ans`` is out itself. Broadcasting is undone by the engine, not here.
The rules read as the lecture's formulas and use operators and ``xp`` functions only, so one
rule serves NumPy arrays, Tensors (higher order) and Python floats (scalar units); where a
NumPy pass can save memory traffic, an in-place variant is registered beside the rule
(``fast=``), used by an ordinary backward pass on arrays.

``scalar=`` gives an op's forward on Python floats where the NumPy forward would warn (the
float version raises an error naming the op instead) or where ``math`` is faster; without it
the scalar units run the NumPy forward on float64 numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _fused
from .._backend import NUMPY, NUMPY_TYPES, dtype_kind, namespace_of
from ._registry import HE_GAIN, LECUN_GAIN, defop, nondiff

_ND = np.ndarray  # the NumPy fast path of every forward: ``type(x) is _ND``
_F64 = np.float64  # what Op.float_forward hands the forwards (scalar units)

# Forwards compute with the namespace of their inputs: NumPy (checked first, by the type of
# the first input: ``tensor._apply`` has already refused inputs on different devices) or any
# array API namespace (CuPy, array_api_strict), by the standard's names. Rules compute masks
# on raw arrays with ``namespace_of`` too; NumPy-only fast paths (``fast=``, ``_fused``) are
# selected by ``type(x) is np.ndarray``.


def _same_array_kind(g: Any, ans: Any) -> bool:
    """Both are non-0-d arrays of one dtype and of one shape, so `t *= g` is exact."""
    return (
        type(ans) is np.ndarray
        and ans.ndim > 0
        and type(g) is np.ndarray
        and g.dtype == ans.dtype
        and g.shape == ans.shape
    )


def _astype(ns: Any, a: Any, dtype: Any) -> Any:
    """``a`` as ``dtype`` in namespace ``ns`` (NumPy: the method, which NumPy scalars have)."""
    return a.astype(dtype) if ns is NUMPY else ns.astype(a, dtype)


def _domain(op: str, msg: str) -> ValueError:
    return ValueError(f"{op}: {msg}")


# ---------------------------------------------------------------------------- arithmetic


def _g(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    return g


def _neg_g(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    return -g


@defop(
    "add",
    ("x1", "x2"),
    "x1 + x2",
    ("1", "1"),
    _g,
    _g,
    aliases=True,
    symbol="+",
    scalar=float.__add__,
)
def add(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.add(x, y)


@defop(
    "sub",
    ("x1", "x2"),
    "x1 - x2",
    ("1", "-1"),
    _g,
    _neg_g,
    aliases=True,
    symbol="-",
    scalar=float.__sub__,
)
def sub(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.subtract(x, y)


def _mul_dx(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    return g * y


def _mul_dy(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    return g * x


def _times_fast(g: Any, y: Any) -> Any:
    """``g * y`` when ``g`` is one number broadcast (as ``sum``'s rule hands down): ``y * c``,
    and for ``c == 1`` ``y`` itself, with no pass over memory (the engine never writes into an
    array that a rule returns unless the rule allocated it). ``None`` otherwise: the rule."""
    if (
        type(g) is np.ndarray
        and g.size  # an empty g has no first element (and nothing to multiply)
        and not any(g.strides)
        and type(y) is np.ndarray
        and y.shape == g.shape
        and y.dtype == g.dtype
    ):
        c = g.item(0)
        return y if c == 1 else np.multiply(y, y.dtype.type(c))
    return None


def _mul_dx_fast(g: Any, ans: Any, x: Any, y: Any) -> Any:
    return _times_fast(g, y)


def _mul_dy_fast(g: Any, ans: Any, x: Any, y: Any) -> Any:
    return _times_fast(g, x)


@defop(
    "mul",
    ("x1", "x2"),
    "x1 * x2",
    ("x2", "x1"),
    _mul_dx,
    _mul_dy,
    symbol="*",
    scalar=float.__mul__,
    fast=(_mul_dx_fast, _mul_dy_fast),
)
def mul(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.multiply(x, y)


def _div_dx(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    return g / y


def _div_dy(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    # -g x / y^2, divided by y twice: y * y overflows to inf for |y| > ~1.3e154 (and
    # underflows to 0 for |y| < ~1e-162), where the gradient itself is finite.
    return -((g * (x / y)) / y)


def _f_div(x: float, y: float) -> float:
    if y == 0.0:
        raise ZeroDivisionError(f"div: division by zero ({x:g} / 0)")
    return x / y


@defop(
    "div",
    ("x1", "x2"),
    "x1 / x2",
    ("1/x2", "-x1/x2^2"),
    _div_dx,
    _div_dy,
    symbol="/",
    scalar=_f_div,
)
def div(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.divide(x, y)


def _pow_dx(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    # d/dx x^y = y x^(y-1), taken as 0 where y == 0: x^0 is the constant 1, also at x = 0,
    # where the formula's 0 * 0^-1 would give NaN (polynomial features x^0, x^1, ... of a
    # zero input); PyTorch masks the same entries. Those entries read x as 1, so that no
    # infinity enters the graph a create_graph=True pass records.
    zero = xp.raw(y) == 0
    if isinstance(zero, np.ndarray | np.bool_) and not zero.any():
        return g * y * x ** (y - 1)  # (NumPy, no zero exponent: the formula as it is)
    keep = xp.const(~zero)
    return xp.where(keep, g * y * xp.where(keep, x, 1) ** (y - 1), 0)


def _pow_dy(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    # d/dy x^y = ln(x) x^y, defined for x > 0; taken as 0 where x <= 0.
    pos = xp.raw(x) > 0
    safe_x = xp.where(xp.const(pos), x, 1)
    return xp.where(xp.const(pos), g * xp.log(safe_x) * ans, 0)


def _f_pow(x: float, p: float) -> float:
    try:
        r = x**p
    except ZeroDivisionError:
        raise ZeroDivisionError(f"pow: 0 ** {p:g} divides by zero") from None
    except OverflowError:
        raise OverflowError(f"pow: {x:g} ** {p:g} overflows a float") from None
    if type(r) is complex:
        raise _domain("pow", f"{x:g} ** {p:g} is not real (negative base, non-integer power)")
    return float(r)


@defop(
    "pow",
    ("x", "p"),
    "x ** p",
    ("p * x^(p-1)", "ln(x) * x^p"),
    _pow_dx,
    _pow_dy,
    kinks="d/dp taken as 0 where x <= 0 (ln x undefined); d/dx of x^0 is 0, also at x = 0",
    symbol="**",
    scalar=_f_pow,
)
def pow(x: Any, y: Any) -> Any:
    if type(x) is _ND or type(x) is _F64:
        return np.power(x, y)
    return namespace_of(x, y).pow(x, y)


def _neg_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    return -g


@defop("neg", ("x",), "-x", ("-1",), _neg_vjp, symbol="-x", scalar=float.__neg__)
def neg(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.negative(x)


# ------------------------------------------------------------------- transcendental


def _exp_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    return g * ans


def _f_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        raise OverflowError(f"exp: exp({x:g}) overflows a float (limit ~ exp(709.78))") from None


@defop("exp", ("x",), "exp(x)", ("exp(x)",), _exp_vjp, scalar=_f_exp)
def exp(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.exp(x)


def _log_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    return g / x


def _f_log(x: float) -> float:
    if not x > 0.0:
        raise _domain("log", f"ln({x:g}) is undefined: x must be > 0")
    return math.log(x)


@defop(
    "log", ("x",), "ln(x)", ("1/x",), _log_vjp, kinks="x <= 0: outside the domain", scalar=_f_log
)
def log(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.log(x)


def _sqrt_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    return g / (2 * ans)


def _f_sqrt(x: float) -> float:
    if x < 0.0:
        raise _domain("sqrt", f"sqrt({x:g}) is undefined: x must be >= 0")
    return math.sqrt(x)


@defop(
    "sqrt", ("x",), "sqrt(x)", ("1/(2 sqrt(x))",), _sqrt_vjp, kinks="x = 0: +inf", scalar=_f_sqrt
)
def sqrt(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.sqrt(x)


def _abs_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    # Subgradient at 0: sign(0) = 0, so no gradient flows through abs at exactly 0.
    xr = xp.raw(x)
    return g * xp.const(namespace_of(xr).sign(xr))


@defop("abs", ("x",), "|x|", ("sign(x)",), _abs_vjp, kinks="x = 0: gradient 0", scalar=math.fabs)
def abs(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.abs(x)


# ---------------------------------------------------------------------- activations


def _sigmoid_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    return g * ans * (1 - ans)


def _sigmoid_fast(g: Any, ans: Any, x: Any) -> Any:
    if not _same_array_kind(g, ans):
        return None
    t = np.subtract(1, ans)  # in place: one temporary, not three
    t *= ans
    t *= g
    return t


def _f_sigmoid(x: float) -> float:
    # The registry's split: exp of a non-positive number only, so no overflow and full
    # relative precision on both sides (sigmoid(-40) = 4.2e-18, not 0).
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@defop(
    "sigmoid",
    ("x",),
    "1 / (1 + exp(-x))",
    ("s(x) (1 - s(x))",),
    _sigmoid_vjp,
    category="activation",
    note="computed from e = exp(-|x|) as 1/(1+e) for x >= 0, e/(1+e) for x < 0: no overflow, "
    "and full relative precision for negative x",
    scalar=_f_sigmoid,
    gain=LECUN_GAIN,
    fast=(_sigmoid_fast,),
)
def sigmoid(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    e = xp.exp(-xp.abs(x))
    return xp.divide(xp.where(x >= 0, 1, e), 1 + e)


def _tanh_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    return g * (1 - ans * ans)


def _tanh_fast(g: Any, ans: Any, x: Any) -> Any:
    if not _same_array_kind(g, ans):
        return None
    t = np.multiply(ans, ans)  # in place: one temporary, not three
    np.subtract(1, t, out=t)
    t *= g
    return t


@defop(
    "tanh",
    ("x",),
    "tanh(x)",
    ("1 - tanh(x)^2",),
    _tanh_vjp,
    category="activation",
    scalar=math.tanh,
    gain=LECUN_GAIN,
    fast=(_tanh_fast,),
)
def tanh(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.tanh(x)


def _relu_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    # Subgradient at 0: 0 (the derivative of the flat side), as in PyTorch and JAX.
    xr = xp.raw(x)
    return g * xp.const(_astype(namespace_of(xr), xr > 0, xp.raw(g).dtype))


def _relu_fast(g: Any, ans: Any, x: Any) -> Any:
    if type(g) is np.ndarray and type(x) is np.ndarray:
        return _fused.relu_grad(g, x)  # one pass (compiled), or g * (x > 0)
    return None


def _f_relu(x: float) -> float:
    return x if x > 0.0 else 0.0


@defop(
    "relu",
    ("x",),
    "max(0, x)",
    ("0 or 1",),
    _relu_vjp,
    kinks="x = 0: gradient 0",
    category="activation",
    scalar=_f_relu,
    gain=HE_GAIN,
    fast=(_relu_fast,),
)
def relu(x: Any) -> Any:
    if type(x) in NUMPY_TYPES:
        return _fused.relu(x)  # np.maximum(x, 0), on several threads for large float arrays
    return namespace_of(x).maximum(x, 0)


def _leaky_relu_vjp(xp: Any, g: Any, ans: Any, x: Any, slope: float = 0.01) -> Any:
    # At 0 the slope of the left side is used.
    xr = xp.raw(x)
    ns, dt = namespace_of(xr), xp.raw(g).dtype
    if ns is NUMPY:
        return g * xp.const(np.where(xr > 0, 1, slope).astype(dt))
    w = ns.where(xr > 0, ns.ones_like(xr, dtype=dt), ns.full_like(xr, slope, dtype=dt))
    return g * xp.const(w)


def _f_leaky(x: float, slope: float = 0.01) -> float:
    return x if x > 0.0 else x * slope


def _leaky_gain(slope: float | None = None) -> float:
    # He, for the leaky half: E[a(z)^2] = (1 + slope^2) Var z / 2.
    s = 0.01 if slope is None else float(slope)
    return math.sqrt(2.0 / (1.0 + s * s))


@defop(
    "leaky_relu",
    ("x",),
    "x if x > 0 else slope * x",
    ("1 or slope",),
    _leaky_relu_vjp,
    kinks="x = 0: slope",
    category="activation",
    scalar=_f_leaky,
    gain=_leaky_gain,
)
def leaky_relu(x: Any, slope: float = 0.01) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.where(x > 0, x, x * slope)


def _elu_vjp(xp: Any, g: Any, ans: Any, x: Any, alpha: float = 1.0) -> Any:
    # x <= 0: d/dx alpha (exp(x) - 1) = alpha exp(x) = ans + alpha (reuses the output).
    # At 0 the left side is used: alpha.
    pos = xp.const(xp.raw(x) > 0)
    return xp.where(pos, g, g * (ans + alpha))


def _f_elu(x: float, alpha: float = 1.0) -> float:
    return x if x > 0.0 else alpha * math.expm1(x)


@defop(
    "elu",
    ("x",),
    "x if x > 0 else alpha (exp(x) - 1)",
    ("1 or alpha exp(x)",),
    _elu_vjp,
    kinks="x = 0: alpha (left side)",
    category="activation",
    scalar=_f_elu,
    gain=HE_GAIN,  # treated as ReLU-like
)
def elu(x: Any, alpha: float = 1.0) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))


def _softplus_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    # d/dx ln(1 + e^x) = e^x / (1 + e^x) = exp(x - softplus(x)): the output is reused.
    return g * xp.exp(x - ans)


@defop(
    "softplus",
    ("x",),
    "ln(1 + exp(x))",
    ("sigmoid(x)",),
    _softplus_vjp,
    category="activation",
    note="computed as max(x, 0) + ln(1 + exp(-|x|)): no overflow for any x",
    gain=HE_GAIN,  # treated as ReLU-like
)
def softplus(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


# ---------------------------------------------------------------------- trigonometric


def _sin_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    return g * xp.cos(x)


@defop("sin", ("x",), "sin(x)", ("cos(x)",), _sin_vjp)
def sin(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.sin(x)


def _cos_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    return -g * xp.sin(x)


@defop("cos", ("x",), "cos(x)", ("-sin(x)",), _cos_vjp)
def cos(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.cos(x)


# ----------------------------------------------------------------- selection (max-like)


def _tie_weights(xp: Any, x: Any, y: Any, sign: int) -> Any:
    """1 where x wins, 0 where it loses, 1/2 at ties (the gradient is split evenly)."""
    xr, yr = xp.raw(x), xp.raw(y)
    ns = namespace_of(xr, yr)
    # comparisons, not the sign of x - y: inf - inf is NaN, and a tie of two infinities
    # would lose its whole gradient
    win = xr > yr if sign > 0 else xr < yr
    tie = xr == yr
    if ns is NUMPY:
        w = win + 0.5 * tie
        dtype = np.result_type(xr, yr)
        return xp.const(np.asarray(w).astype(dtype if dtype.kind == "f" else np.float64))
    dtype = ns.result_type(xr, yr)
    dtype = dtype if dtype_kind(dtype) == "f" else ns.float64
    return xp.const(_astype(ns, win, dtype) + 0.5 * _astype(ns, tie, dtype))


def _f_maximum(x: float, y: float) -> float:
    return x if x >= y else y


def _f_minimum(x: float, y: float) -> float:
    return x if x <= y else y


def _maximum_dx(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    return g * _tie_weights(xp, x, y, 1)


def _maximum_dy(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    return g * _tie_weights(xp, y, x, 1)


@defop(
    "maximum",
    ("x1", "x2"),
    "max(x1, x2)",
    ("1 if x1 > x2", "1 if x2 > x1"),
    _maximum_dx,
    _maximum_dy,
    kinks="x1 = x2: gradient split 1/2, 1/2",
    category="selection",
    scalar=_f_maximum,
)
def maximum(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.maximum(x, y)


def _minimum_dx(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    return g * _tie_weights(xp, x, y, -1)


def _minimum_dy(xp: Any, g: Any, ans: Any, x: Any, y: Any) -> Any:
    return g * _tie_weights(xp, y, x, -1)


@defop(
    "minimum",
    ("x1", "x2"),
    "min(x1, x2)",
    ("1 if x1 < x2", "1 if x2 < x1"),
    _minimum_dx,
    _minimum_dy,
    kinks="x1 = x2: gradient split 1/2, 1/2",
    category="selection",
    scalar=_f_minimum,
)
def minimum(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.minimum(x, y)


def _where_dx(xp: Any, g: Any, ans: Any, c: Any, x: Any, y: Any) -> Any:
    return xp.where(c, g, 0)


def _where_dy(xp: Any, g: Any, ans: Any, c: Any, x: Any, y: Any) -> Any:
    return xp.where(c, 0, g)


@defop(
    "where",
    ("cond", "x1", "x2"),
    "x1 if cond else x2",
    ("-", "1 if cond", "1 if not cond"),
    None,
    _where_dx,
    _where_dy,
    kinks="cond is boolean: not differentiable",
    category="selection",
)
def where(c: Any, x: Any, y: Any) -> Any:
    if type(x) is _ND or type(x) is _F64:
        return np.where(c, x, y)
    return namespace_of(c, x, y).where(c, x, y)


def _clip_vjp(xp: Any, g: Any, ans: Any, x: Any, lo: Any = None, hi: Any = None) -> Any:
    # Inside [lo, hi] (boundaries included, as in PyTorch) the gradient passes, outside it is 0.
    xr = xp.raw(x)
    ns = namespace_of(xr)
    inside = ns.ones_like(xr, dtype=ns.bool)
    if lo is not None:
        inside = inside & (xr >= lo)
    if hi is not None:
        inside = inside & (xr <= hi)
    return g * xp.const(_astype(ns, inside, xp.raw(g).dtype))


@defop(
    "clip",
    ("x",),
    "min(max(x, lo), hi)",
    ("1 if lo <= x <= hi else 0",),
    _clip_vjp,
    kinks="x = lo or x = hi: gradient 1",
    category="selection",
)
def clip(x: Any, lo: Any = None, hi: Any = None) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.clip(x, lo, hi)


# ------------------------------------------------------------------ not differentiable


@nondiff("lt", ("x1", "x2"), "x1 < x2")
def lt(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.less(x, y)


@nondiff("le", ("x1", "x2"), "x1 <= x2")
def le(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.less_equal(x, y)


@nondiff("gt", ("x1", "x2"), "x1 > x2")
def gt(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.greater(x, y)


@nondiff("ge", ("x1", "x2"), "x1 >= x2")
def ge(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.greater_equal(x, y)


@nondiff("eq", ("x1", "x2"), "x1 == x2")
def eq(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.equal(x, y)


@nondiff("ne", ("x1", "x2"), "x1 != x2")
def ne(x: Any, y: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x, y)
    return xp.not_equal(x, y)


@nondiff("sign", ("x",), "sign(x)", category="piecewise constant")
def sign(x: Any) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.sign(x)


@nondiff("argmax", ("x",), "argmax(x, axis)", category="piecewise constant")
def argmax(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    xp = np if type(x) is _ND or type(x) is _F64 else namespace_of(x)
    return xp.argmax(x, axis=axis, keepdims=keepdims)
