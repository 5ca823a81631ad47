"""Creation functions beyond zeros/ones/randn: full, zeros_like, ones_like, full_like, arange,
linspace, eye; on the CPU and on array-api-strict (the standard's strict namespace), with the
array API's dtype rules, and clear errors naming the function."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import graphgrad as gg

strict = pytest.importorskip("array_api_strict")


def _host(t: gg.Tensor) -> np.ndarray:
    return t.to("cpu").numpy()


@pytest.mark.parametrize("device", ["cpu", "array-api-strict"])
def test_full_follows_the_array_api_dtype_rules(device: str) -> None:
    cases: list[tuple[Any, Any, str]] = [
        (2.5, None, str(gg.get_default_dtype())),
        (3, None, "int64"),
        (True, None, "bool"),
        (2, np.float64, "float64"),
    ]
    for value, dtype, name in cases:
        t = gg.full((2, 3), value, dtype=dtype, device=device)
        assert str(t.device) == device
        np.testing.assert_array_equal(_host(t), np.full((2, 3), value, dtype=name))
        assert _host(t).dtype == np.dtype(name)
    assert gg.full(4, 1.0).shape == (4,) and gg.full((), 1.0).shape == ()


@pytest.mark.parametrize("device", ["cpu", "array-api-strict"])
def test_the_like_functions_keep_shape_dtype_and_device(device: str) -> None:
    x = gg.tensor(np.arange(6, dtype=np.float64).reshape(2, 3), device=device)
    for fn, value in ((gg.zeros_like, 0), (gg.ones_like, 1)):
        t = fn(x)
        assert str(t.device) == device and t.shape == (2, 3)
        np.testing.assert_array_equal(_host(t), np.full((2, 3), value, np.float64))
    t = gg.full_like(x, 7, dtype=np.float32)
    assert _host(t).dtype == np.float32 and (_host(t) == 7).all()
    moved = gg.zeros_like(x, device="cpu")
    assert str(moved.device) == "cpu" and _host(moved).dtype == np.float64
    assert gg.zeros_like(np.ones((2, 2), np.int32)).dtype == np.int32  # arrays too


@pytest.mark.parametrize("device", ["cpu", "array-api-strict"])
def test_arange_linspace_and_eye_match_numpy(device: str) -> None:
    np.testing.assert_array_equal(_host(gg.arange(5, device=device)), np.arange(5))
    assert _host(gg.arange(5)).dtype == np.int64
    a = gg.arange(0, 1, 0.25, device=device)
    np.testing.assert_array_equal(_host(a), np.arange(0, 1, 0.25, dtype=gg.get_default_dtype()))
    np.testing.assert_array_equal(_host(gg.arange(5, 0, -2)), [5, 3, 1])
    np.testing.assert_allclose(_host(gg.linspace(0, 1, 5, device=device)), np.linspace(0, 1, 5))
    np.testing.assert_allclose(
        _host(gg.linspace(0, 1, 4, endpoint=False)), np.linspace(0, 1, 4, endpoint=False)
    )
    np.testing.assert_array_equal(_host(gg.eye(2, 3, k=1, device=device)), np.eye(2, 3, k=1))
    np.testing.assert_array_equal(_host(gg.eye(3)), np.eye(3))


def test_created_leaves_take_gradients() -> None:
    for t in (
        gg.full((2, 2), 1.5, dtype=np.float64, requires_grad=True),
        gg.ones_like(gg.zeros(3, dtype=np.float64), requires_grad=True),
        gg.linspace(0, 1, 3, dtype=np.float64, requires_grad=True),
        gg.eye(2, dtype=np.float64, requires_grad=True),
    ):
        (t * 3.0).sum().backward()
        np.testing.assert_array_equal(t.grad, np.full(t.shape, 3.0))


def test_bad_arguments_name_the_function() -> None:
    with pytest.raises(TypeError, match="full: fill_value must be a bool, int or float"):
        gg.full((2,), "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="full_like: fill_value"):
        gg.full_like(gg.zeros(2), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="full: negative dimension"):
        gg.full((2, -1), 0.0)
    with pytest.raises(ValueError, match="arange: step must not be 0"):
        gg.arange(0, 3, 0)
    with pytest.raises(TypeError, match="arange: start, stop and step must be numbers"):
        gg.arange("3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="linspace: num must be a non-negative integer"):
        gg.linspace(0, 1, -1)
    with pytest.raises(TypeError, match="eye: the shape must be integers"):
        gg.eye(2.5)  # type: ignore[arg-type]
