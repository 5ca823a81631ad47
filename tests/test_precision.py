"""Relative precision of the activations over their whole range, in float32 and float64.

The reference is computed in extended precision (``np.longdouble``, 64-bit mantissa on x86) by
the textbook formulas, where nothing cancels. A result must be within a few units in the last
place of its dtype, relative to the true value: the tails, where sigmoid is tiny, included
(``sigmoid(-25)`` is 1.4e-11, not 0; ``-log(sigmoid(-25))`` is 25, not inf).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _scalar_py
from twins import scalar_implementations

XS = [-700.0, -100.0, -40.0, -25.0, -17.0, -5.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 5.0, 17.0, 25.0]
XS += [40.0, 100.0, 700.0]
L = np.longdouble


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # exp of a non-positive number: no overflow
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


REFERENCE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softplus": lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, x * L("0.01")),
}

ULPS = 4  # allowed error, in units in the last place of the dtype


def _check(name: str, got: np.ndarray, x: np.ndarray, dtype: type) -> None:
    info = np.finfo(dtype)
    want = REFERENCE[name](x.astype(L))
    tiny = np.abs(want) < info.tiny  # below the dtype's normal range: only 0 or tiny is right
    bad = ~tiny & (np.abs(got.astype(L) - want) > ULPS * info.eps * np.abs(want))
    bad |= tiny & (np.abs(got) > info.tiny)
    assert not bad.any(), (
        f"{name} in {np.dtype(dtype).name}: at x = {x[bad].tolist()} got {got[bad].tolist()}, "
        f"want {want[bad].astype(np.float64).tolist()}"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(REFERENCE))
def test_tensor_activations_are_precise_everywhere(name: str, dtype: type) -> None:
    x = np.array(XS, dtype=dtype)
    with np.errstate(all="raise", under="ignore"):  # no overflow anywhere in the range
        got = getattr(gg, name)(gg.Tensor(x)).data
    assert got.dtype == dtype
    _check(name, got, x, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_sigmoid_of_a_large_negative_number(dtype: type) -> None:
    x = gg.Tensor(np.array([-17.0, -25.0, -40.0], dtype=dtype), requires_grad=True)
    loss = -gg.log(gg.sigmoid(x))  # the logistic loss of a confident mistake
    np.testing.assert_allclose(loss.data, [17.0, 25.0, 40.0], rtol=1e-6)
    loss.sum().backward()
    # d/dx -ln s(x) = -(1 - s(x)) = -1 to within a rounding here
    np.testing.assert_allclose(x.grad, -1.0, rtol=1e-6)


IMPLS = scalar_implementations()


@pytest.mark.parametrize("impl", IMPLS.values(), ids=list(IMPLS))
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softplus", "elu", "relu", "leaky_relu"])
def test_scalar_activations_are_precise_everywhere(impl: ModuleType, name: str) -> None:
    got = np.array([getattr(impl.Scalar(x), name)().data for x in XS])
    _check(name, got, np.array(XS), np.float64)


@pytest.mark.parametrize("impl", IMPLS.values(), ids=list(IMPLS))
def test_scalar_sigmoid_twins_agree_bit_for_bit(impl: ModuleType) -> None:
    for x in [*XS, -1e-300, 3e-8, -36.7, 36.7]:
        s = impl.Scalar(x).sigmoid()
        assert s.data == _scalar_py.Scalar(x).sigmoid().data
        s.backward()


@pytest.mark.parametrize("x", [-17.0, -25.0, -40.0, -700.0])
def test_sigmoid_derivative_keeps_relative_precision_on_the_left(x: float) -> None:
    t = gg.Tensor(np.float64(x), requires_grad=True)
    gg.sigmoid(t).backward()
    s = _sigmoid(np.array(x, dtype=L))
    want = s * (1 - s)
    assert abs(L(t.grad) - want) <= ULPS * np.finfo(np.float64).eps * want
