"""The op table on array-api-strict, the array API standard's strict reference namespace.

Every case of ``tests/op_specs.py`` runs on array-api-strict's fake ``device1`` and must give
NumPy's values, first-order gradients and second-order gradients (float64): that proves no
forward or rule calls a NumPy-only function (array-api-strict refuses anything outside the
standard, mixed devices included). Then devices as users see them: ``Tensor.to`` round trips
with gradients, mixing devices in one op, ``parse_device``'s errors.

CI installs array-api-strict (the ``test`` extra): ``importorskip`` only guards a bare
install, and ``test_strict_is_installed_in_ci`` fails when CI would skip this file.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _backend
from op_specs import EMPTY, SPECS, cases, empty_cases, sample

strict = pytest.importorskip("array_api_strict")

DEV = "array-api-strict:device1"
CASES = cases()
EMPTY_CASES = empty_cases()


def test_strict_is_installed_in_ci() -> None:
    # Reached only when the import above worked; CI sets CI=true, and a skip there would hide
    # the whole table. (Locally this is a plain check of the version floor.)
    if os.environ.get("CI"):
        assert strict.__version__ >= "2.3"
    assert tuple(int(p) for p in strict.__version__.split(".")[:2]) >= (2, 3)


def _on(device: str | None, arrays: list[np.ndarray]) -> list[gg.Tensor]:
    return [gg.tensor(a, requires_grad=True, device=device) for a in arrays]


def _host(a: object) -> np.ndarray:
    return _backend.to_numpy(a.data if isinstance(a, gg.Tensor) else a)


def _first_order(spec, xs, v, device):
    leaves = _on(device, xs)
    out = spec.fn(*leaves)
    out.backward(gg.tensor(v, device=device))
    return out, leaves


def _second_order(spec, xs, v, device):
    """d/dx sum_i |J_i(x)^T v|^2 (a nonlinear function of every input gradient)."""
    leaves = _on(device, xs)
    _, back = gg.vjp(spec.fn, *leaves)
    gs = back(gg.tensor(v, device=device))
    total = None
    for g in gs:
        s = (g * g).sum()
        total = s if total is None else total + s
    if total.requires_grad:  # else J does not depend on x (add, sub, ...): no gradient
        total.backward()
    return total, leaves


def _compare(case: str, what: str, got: object, want: object) -> None:
    g, w = _host(got), _host(want)
    assert g.shape == w.shape, f"{case}: {what} shape {g.shape} != NumPy's {w.shape}"
    np.testing.assert_allclose(
        g, w, rtol=1e-10, atol=1e-12, err_msg=f"{case}: {what} differs from NumPy's"
    )


@pytest.mark.parametrize(("op", "case", "spec", "shapes"), CASES, ids=[c[1] for c in CASES])
def test_spec_on_strict(op: str, case: str, spec, shapes, rng: np.random.Generator) -> None:
    xs = sample(spec, shapes, rng)
    out_np = spec.fn(*_on(None, xs))
    v = rng.standard_normal(out_np.shape)
    ref_out, ref_leaves = _first_order(spec, xs, v, None)
    out, leaves = _first_order(spec, xs, v, DEV)
    # computed on strict's device1, not on NumPy
    assert isinstance(out.data, strict._array_object.Array), f"{case}: {type(out.data)}"
    assert str(out.device) == DEV, f"{case}: output on {out.device}"
    _compare(case, "value", out, ref_out)
    for k, (leaf, ref) in enumerate(zip(leaves, ref_leaves, strict=True)):
        assert leaf.grad is not None, f"{case}: no gradient for input {k}"
        assert _backend.device_of(leaf.grad) == leaf.device, f"{case}: grad {k} device"
        _compare(case, f"gradient {k}", leaf.grad, ref.grad)
    # second order: the rules run on Tensors (create_graph) on strict too
    ref_total, ref_leaves = _second_order(spec, xs, v, None)
    total, leaves = _second_order(spec, xs, v, DEV)
    _compare(case, "second-order value", total, ref_total)
    for k, (leaf, ref) in enumerate(zip(leaves, ref_leaves, strict=True)):
        if ref.grad is None:
            assert leaf.grad is None, f"{case}: second-order gradient {k} where NumPy has none"
            continue
        _compare(case, f"second-order gradient {k}", leaf.grad, ref.grad)


@pytest.mark.parametrize(
    ("op", "case", "spec", "shapes"), EMPTY_CASES, ids=[c[1] for c in EMPTY_CASES]
)
def test_empty_spec_on_strict(op, case, spec, shapes, rng: np.random.Generator) -> None:
    xs = sample(spec, shapes, rng)
    v = np.ones(spec.fn(*_on(None, xs)).shape)
    ref_out, ref_leaves = _first_order(spec, xs, v, None)
    out, leaves = _first_order(spec, xs, v, DEV)
    _compare(case, "value", out, ref_out)
    for k, (leaf, ref) in enumerate(zip(leaves, ref_leaves, strict=True)):
        _compare(case, f"gradient {k}", leaf.grad, ref.grad)


def test_table_is_covered() -> None:
    assert {c[0] for c in CASES} == set(SPECS)
    assert len(CASES) > 150 and len(EMPTY_CASES) >= 100 and EMPTY


# ------------------------------------------------------------------------ Tensor.to


def test_to_round_trip_carries_gradients_back() -> None:
    x = gg.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = x.to(DEV)
    assert str(y.device) == DEV and y.op == "to_device"
    z = (y * y).sum().to("cpu")
    z.backward()
    np.testing.assert_array_equal(x.grad, 2 * x.data)
    assert type(x.grad) is np.ndarray  # back on the leaf's own device

    w = gg.tensor(np.arange(4.0), requires_grad=True, device="array-api-strict:device2")
    u = w.to(DEV).to("cpu")  # strict device2 -> device1 -> NumPy
    (u * u).sum().backward()
    assert _backend.device_of(w.grad) == w.device
    np.testing.assert_array_equal(_host(w.grad), 2 * np.arange(4.0))


def test_to_same_device_is_self_and_numpy_rules() -> None:
    x = gg.tensor([1.0, 2.0], device=DEV)
    assert x.to(DEV) is x and x.to(x.device) is x
    with pytest.raises(TypeError, match=r"\.to\('cpu'\)\.numpy\(\)"):
        x.numpy()
    with pytest.raises(TypeError, match=r"\.to\('cpu'\)"):
        np.asarray(x)
    assert x.to("cpu").numpy().tolist() == [1.0, 2.0]
    assert gg.tensor(2.5, device=DEV).item() == 2.5
    assert "device='array-api-strict:device1'" in repr(x)
    assert x.dtype == strict.float32  # Python floats: the default dtype, as on the CPU


def test_a_strict_array_keeps_its_namespace() -> None:
    a = strict.asarray([1.0, 2.0], dtype=strict.float64, device=strict.Device("device2"))
    t = gg.Tensor(a, requires_grad=True)
    assert str(t.device) == "array-api-strict:device2" and t.dtype == strict.float64
    (t * 3.0).sum().backward()
    assert _host(t.grad).tolist() == [3.0, 3.0]


def test_creation_functions_take_a_device() -> None:
    z = gg.zeros((2, 3), device=DEV)
    o = gg.ones(3, dtype=np.float64, device=DEV, requires_grad=True)
    assert z.shape == (2, 3) and str(z.device) == DEV and z.dtype == strict.float32
    assert o.dtype == strict.float64 and o.requires_grad
    assert gg.zeros(2).device == gg.Device("cpu") and gg.ones(2).numpy().tolist() == [1, 1]


def test_python_numbers_and_lists_join_the_tensor_device() -> None:
    x = gg.tensor([1.0, 2.0], requires_grad=True, device=DEV)
    y = 2 * x + [1.0, 1.0] - 0.5
    assert str(y.device) == DEV
    y.sum().backward()
    assert _host(x.grad).tolist() == [2.0, 2.0]
    assert _host(x[[1, 0, 1]].data).tolist() == [2.0, 1.0, 2.0]  # list index: moved over


# ---------------------------------------------------------------------- mixing devices


@pytest.mark.parametrize(
    ("a", "b"),
    [("cpu", DEV), (DEV, "cpu"), (DEV, "array-api-strict:device2")],
)
def test_mixing_devices_names_op_devices_and_shapes(a: str, b: str) -> None:
    x = gg.tensor(np.ones((2, 3)), device=a)
    y = gg.tensor(np.ones(3), device=b)
    with pytest.raises(gg.DeviceMismatchError) as info:
        _ = x * y
    msg = str(info.value)
    assert msg.startswith("mul:") and a in msg and b in msg
    assert "(2, 3)" in msg and "(3,)" in msg
    with pytest.raises(gg.DeviceMismatchError, match="matmul"):
        gg.matmul(x, gg.tensor(np.ones((3, 2)), device=b))


def test_a_numpy_array_with_a_strict_tensor_is_an_error_not_a_copy() -> None:
    x = gg.tensor([1.0, 2.0], device=DEV)
    with pytest.raises(gg.DeviceMismatchError, match=r"add: .*array-api-strict:device1.*cpu"):
        _ = x + np.ones(2)
    with pytest.raises(gg.DeviceMismatchError, match="cross_entropy"):
        gg.cross_entropy(gg.tensor(np.ones((2, 3)), device=DEV), np.array([0, 1]))


def test_labels_are_checked_on_any_device() -> None:
    x = gg.tensor(np.ones((2, 3)), device=DEV)
    with pytest.raises(ValueError, match="label 3 at index 1"):
        gg.cross_entropy(x, gg.tensor(np.array([0, 3]), device=DEV))


def test_backward_seed_on_another_device_is_an_error() -> None:
    x = gg.tensor([1.0, 2.0], requires_grad=True, device=DEV)
    with pytest.raises(gg.DeviceMismatchError, match="backward"):
        (x * 2).backward(gg.tensor([1.0, 1.0]))


# ----------------------------------------------------------------------- parse_device


def test_parse_device_forms() -> None:
    assert _backend.parse_device(None) is _backend.CPU
    assert _backend.parse_device("cpu") is _backend.CPU
    d1 = _backend.parse_device(DEV)
    assert str(d1) == DEV and d1.index == 1 and d1.xp is strict
    assert str(_backend.parse_device("array-api-strict")) == "array-api-strict"
    assert _backend.parse_device(d1) is d1 and d1 == gg.Device("array-api-strict", 1)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "array-api-strict:device3", "CPU:0", ""])
def test_parse_device_rejects_unknown_strings(bad: str) -> None:
    with pytest.raises(ValueError, match="valid forms are 'cpu', 'cuda', 'cuda:N'"):
        _backend.parse_device(bad)


def test_cuda_without_cupy_says_how_to_install() -> None:
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - a machine with CuPy
        pytest.skip("CuPy is installed here")
    with pytest.raises(gg.DeviceUnavailableError) as info:
        gg.tensor([1.0], device="cuda")
    msg = str(info.value)
    assert "\n" not in msg
    assert "pip install graphgrad[cuda]" in msg and "cupy-cuda12x" in msg
    assert "cupy-cuda13x" in msg and "CuPy is not installed" in msg
    with pytest.raises(gg.DeviceUnavailableError, match=r"cuda:1"):
        gg.zeros(2, device="cuda:1")


def test_strict_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "array_api_strict", None)  # import raises ImportError
    monkeypatch.setattr(_backend, "_DEVICES", {("cpu", None): _backend.CPU})
    with pytest.raises(gg.DeviceUnavailableError, match="pip install array-api-strict"):
        _backend.parse_device("array-api-strict")


# ------------------------------------------------------------------------ index_add twin


def test_generic_index_add_sums_repeats_and_keeps_nan_local() -> None:
    xp = strict
    g = xp.asarray([1.0, 2.0, float("nan"), 4.0])
    out = gg.ops._xp.generic(xp).index_add(g, xp.asarray([0, 2, 3, 0]), (5,))
    assert np.array_equal(_host(out), np.array([5.0, 0.0, 2.0, np.nan, 0.0]), equal_nan=True)


def test_info_has_a_devices_line(capsys: pytest.CaptureFixture[str]) -> None:
    from graphgrad import cli

    assert cli.main(["info"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("devices:")]
    assert len(line) == 1 and "cpu: NumPy" in line[0]
    assert f"array-api-strict: {strict.__version__}" in line[0]
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert "cuda: not installed: pip install graphgrad[cuda]" in line[0]


def test_anomaly_mode_and_functional_api_on_strict() -> None:
    x = gg.tensor([1.0, -1.0], requires_grad=True, device=DEV)
    with gg.detect_anomaly(), pytest.raises(gg.AnomalyError, match="op 'log'"):
        gg.log(x)
    g = gg.grad(lambda t: (t * t * t).sum())(x)
    assert str(g.device) == DEV and _host(g).tolist() == [3.0, 3.0]
    # a second derivative through the recording namespace, on strict
    gg2 = gg.grad(lambda t: gg.grad(lambda u: (u * u * u).sum())(t).sum())(x)
    assert _host(gg2).tolist() == [6.0, -6.0]
