"""Numerical gradients, exactly as the lecture defines them, and ``gradcheck``.

forward difference:  dL/dθ_p ≈ (L(θ + ε·1_p) − L(θ)) / ε            dim(θ) + 1 evaluations
central difference:  dL/dθ_p ≈ (L(θ + ε·1_p) − L(θ − ε·1_p)) / 2ε     2·dim(θ) evaluations
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._backend import to_numpy
from ._engine import run_backward
from ._state import no_grad
from .errors import GradcheckError, GradcheckWarning
from .tensor import Tensor, constant


def _as_arrays(inputs: Any) -> tuple[list[np.ndarray], bool]:
    single = isinstance(inputs, Tensor | np.ndarray | float | int)
    items = [inputs] if single else list(inputs)
    arrays = []
    for x in items:
        a = to_numpy(x.data) if isinstance(x, Tensor) else np.asarray(x)  # checked on the CPU
        if a.dtype.kind not in "fc":
            a = a.astype(np.float64)
        # C order: the perturbation loops write through reshape(-1), a view only of a
        # C-contiguous array (of a transposed or Fortran-ordered one it is a copy)
        arrays.append(np.array(a, copy=True, order="C"))
    return arrays, single


def _scalar(f: Callable[..., Any], arrays: Sequence[np.ndarray]) -> float:
    with no_grad():
        out = f(*[constant(a) for a in arrays])
    val = out.data if isinstance(out, Tensor) else np.asarray(out)
    if val.size != 1:
        raise ValueError(
            f"numerical_grad: f must return one number (a loss), got shape {val.shape}"
        )
    return float(val.reshape(()))


def numerical_grad(
    f: Callable[..., Any],
    inputs: Any,
    eps: float = 1e-6,
    method: str = "central",
) -> Any:
    """dL/dθ by finite differences, one input element θ_p at a time.

    Args:
        f: maps Tensors (one per input) to a one-element Tensor L.
        inputs: an array/Tensor, or a sequence of them (θ).
        eps: the step ε.
        method: ``"central"`` (L(θ+ε1_p) − L(θ−ε1_p)) / 2ε, or ``"forward"`` (L(θ+ε1_p) − L(θ)) / ε.

    Returns:
        An array of each input's shape (a list of them if ``inputs`` was a sequence).
        ``f`` is evaluated 2·dim(θ) times (central) or dim(θ)+1 times (forward).
    """
    if method not in ("central", "forward"):
        raise ValueError(f"numerical_grad: method must be 'central' or 'forward', got {method!r}")
    arrays, single = _as_arrays(inputs)
    base = _scalar(f, arrays) if method == "forward" else 0.0
    grads = []
    for a in arrays:
        g = np.zeros(a.shape, dtype=np.float64)
        flat = a.reshape(-1)  # a view: perturbing it perturbs the input
        gflat = g.reshape(-1)
        for p in range(flat.size):
            old = flat[p]
            flat[p] = old + eps
            plus = _scalar(f, arrays)
            if method == "central":
                flat[p] = old - eps
                minus = _scalar(f, arrays)
                gflat[p] = (plus - minus) / (2 * eps)
            else:
                gflat[p] = (plus - base) / eps
            flat[p] = old
        grads.append(g)
    return grads[0] if single else grads


@dataclass
class GradcheckResult:
    """What gradcheck found: the largest errors per input and whether they pass."""

    passed: bool
    max_abs_error: list[float] = field(default_factory=list)
    max_rel_error: list[float] = field(default_factory=list)
    analytic: list[np.ndarray] = field(default_factory=list)
    numerical: list[np.ndarray] = field(default_factory=list)
    reentrant: bool = True
    kinks: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        rows = [
            f"  input {i}: max |analytic - numerical| = {a:.3e}, max relative error = {r:.3e}"
            for i, (a, r) in enumerate(zip(self.max_abs_error, self.max_rel_error, strict=True))
        ]
        for i, a in enumerate(self.analytic):
            bad = np.argwhere(~np.isfinite(a))
            if len(bad):  # (NaN and inf compare false: name them, not a huge error)
                out_j, in_k = (int(v) for v in bad[0])
                num = self.numerical[i][out_j, in_k] if i < len(self.numerical) else np.nan
                rows.append(
                    f"  input {i}: the analytic gradient is {a[out_j, in_k]} at element {in_k} "
                    f"(output element {out_j}; numerical: {num:.6g}), "
                    f"{len(bad)} non-finite entries in all"
                )
        head = "gradcheck passed" if self.passed else "gradcheck FAILED"
        if not self.reentrant:
            head += " (backward run twice gave different results)"
        return "\n".join([head, *rows, *(f"  {k}" for k in self.kinks)])


def _jacobians_analytic(
    f: Callable[..., Any], arrays: list[np.ndarray]
) -> tuple[list[np.ndarray], tuple[int, ...]]:
    leaves = [Tensor(a, requires_grad=True) for a in arrays]
    out = f(*leaves)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: f must return a Tensor, got {type(out).__name__}")
    jac = [np.zeros((out.size, a.size)) for a in arrays]
    if not out.requires_grad:
        return jac, out.shape
    for j in range(out.size):
        seed = np.zeros(out.shape, dtype=out.data.dtype)
        seed.reshape(-1)[j] = 1
        res = run_backward(out, seed, retain_graph=True, wrt=leaves)
        for i, g in enumerate(res or []):
            if g is not None:
                jac[i][j] = np.asarray(g, dtype=np.float64).reshape(-1)
    return jac, out.shape


def _jacobians_numerical(
    f: Callable[..., Any], arrays: list[np.ndarray], eps: float
) -> list[np.ndarray]:
    def vec() -> np.ndarray:
        with no_grad():
            out = f(*[constant(a) for a in arrays])
        return np.array(out.data, dtype=np.float64, copy=True).reshape(-1)  # views alias input

    jacs = []
    for a in arrays:
        flat = a.reshape(-1)
        cols = []
        for p in range(flat.size):
            old = flat[p]
            flat[p] = old + eps
            plus = vec()
            flat[p] = old - eps
            minus = vec()
            flat[p] = old
            cols.append((plus - minus) / (2 * eps))
        n_out = vec().size
        jacs.append(np.stack(cols, axis=1) if cols else np.zeros((n_out, 0)))
    return jacs


def gradcheck(
    f: Callable[..., Any],
    inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> GradcheckResult:
    """Compare backprop's Jacobian of ``f`` with central differences, element by element.

    ``f`` may return a tensor of any shape: every row of its Jacobian is checked (one backward
    pass per output element). An element passes when ``|a - n| <= atol + rtol * |n|``.
    Backward is run twice and must give the same Jacobian (rules must not mutate their inputs).

    Warns with :class:`GradcheckWarning` when an input is not float64 (finite differences in
    float32 are too coarse for a meaningful verdict).

    Returns a :class:`GradcheckResult`; raises :class:`GradcheckError` on failure unless
    ``raise_exception=False``.
    """
    arrays, _ = _as_arrays(inputs)
    for i, a in enumerate(arrays):
        if a.dtype != np.float64:
            warnings.warn(
                f"gradcheck: input {i} is {a.dtype}, not float64; finite differences will be "
                f"inaccurate",
                GradcheckWarning,
                stacklevel=2,
            )
    analytic, _ = _jacobians_analytic(f, arrays)
    again, _ = _jacobians_analytic(f, arrays)
    reentrant = all(  # (NaN where the first run had NaN is the same result)
        np.array_equal(x, y, equal_nan=True) for x, y in zip(analytic, again, strict=True)
    )
    numerical = _jacobians_numerical(f, arrays, eps)
    abs_err, rel_err, ok = [], [], reentrant
    for a, n in zip(analytic, numerical, strict=True):
        diff = np.abs(a - n)
        abs_err.append(float(diff.max()) if diff.size else 0.0)
        rel = diff / np.maximum(np.abs(n), 1e-12)
        rel_err.append(float(rel.max()) if rel.size else 0.0)
        ok = ok and bool(np.all(diff <= atol + rtol * np.abs(n)))
    result = GradcheckResult(ok, abs_err, rel_err, analytic, numerical, reentrant)
    if not ok:
        result.kinks = kinks_hit(f, arrays, eps)
    if not ok and raise_exception:
        raise GradcheckError(str(result))
    return result


# ---------------------------------------------------------------------- kinks


def kinks_hit(
    f: Callable[..., Any], inputs: Any, eps: float = 1e-6, max_elements: int = 10_000
) -> list[str]:
    """Which ops of ``f``'s graph are evaluated at (or within a step of) a kink, where the
    derivative is not defined: one sentence per op argument, naming the op, its convention at
    the kink (the registry's ``kinks`` fact), the element and what to do.

    An op with a declared kink is tested element by element: its one-sided slopes with step
    ``10 * eps`` must agree (and be finite). Central differences straddling a kink average the
    two sides while backprop takes the declared convention, so gradcheck fails there even though
    the rule is right. Arguments with more than ``max_elements`` elements are not tested.
    """
    from .viz.trace import collect

    arrays, _ = _as_arrays(inputs)
    leaves = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = f(*leaves)
    if not isinstance(out, Tensor):
        return []
    leaf_index = {id(t): i for i, t in enumerate(leaves)}
    h = 10.0 * eps
    found = []
    for node in collect(out):
        op = node._op
        if op is None or not op.kinks or not op.differentiable:
            continue
        args = [np.array(x.data, dtype=np.float64, order="C") for x in node._inputs]
        for k, x in enumerate(args):
            if not op.differentiable_in(k) or x.size > max_elements:
                continue
            if not node._inputs[k].requires_grad:  # a constant: not perturbed by the check
                continue
            where = _kink_elements(op, args, k, node._params, h)
            if where is None:
                continue
            idx = np.unravel_index(where, x.shape) if x.ndim else ()
            at = f"[{', '.join(str(int(i)) for i in idx)}]" if x.ndim else ""
            arg = op.arg_names[k] if k < len(op.arg_names) else f"#{k}"
            source = node._inputs[k]
            whose = (
                f"gradcheck input {leaf_index[id(source)]}{at}"
                if id(source) in leaf_index
                else f"its argument {arg}{at} (computed from the inputs)"
            )
            found.append(
                f"kink: op '{op.name}' ({op.formula}) is evaluated at its kink: {whose} = "
                f"{x.reshape(-1)[where]:.6g}, where the derivative is not defined (convention: "
                f"{op.kinks}); central differences average the two sides there. Move the point "
                f"off the kink by more than eps (e.g. add 1e-3) and check again."
            )
    return found


def _kink_elements(
    op: Any, args: list[np.ndarray], k: int, params: dict[str, Any], h: float
) -> int | None:
    """The flat index of the first element of argument ``k`` at which ``op``'s one-sided
    slopes differ (or are not finite); ``None`` if there is none."""
    base = np.asarray(op.forward(*args, **params), dtype=np.float64)
    x = args[k]
    flat = x.reshape(-1)
    with np.errstate(all="ignore"):
        for p in range(flat.size):
            old = flat[p]
            flat[p] = old + h
            plus = np.asarray(op.forward(*args, **params), dtype=np.float64)
            flat[p] = old - h
            minus = np.asarray(op.forward(*args, **params), dtype=np.float64)
            flat[p] = old
            right, left = (plus - base) / h, (base - minus) / h
            if not (np.all(np.isfinite(right)) and np.all(np.isfinite(left))):
                return p
            if np.any(np.abs(right - left) > 1e-3 * (1.0 + np.abs(right) + np.abs(left))):
                return p
    return None
