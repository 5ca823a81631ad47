"""The compiled fused kernels against their NumPy twins (graphgrad/_fused.py).

The optimiser updates and ReLU's VJP must agree bit for bit (same operations, same order);
softmax cross-entropy to rounding. Each comparison runs the kernel, then the same call with
the kernels switched off (the path a machine without the extension takes).
"""

from __future__ import annotations

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _fused
from graphgrad._state import pure_python_requested

needs_kernels = pytest.mark.skipif(not _fused.COMPILED, reason="extension not built")


def test_extension_is_built_unless_pure_python_is_asked_for() -> None:
    # CI installs with a compiler: a silent build failure would make every speed figure lie.
    wanted = not pure_python_requested()
    assert _fused.COMPILED is wanted


def _both(monkeypatch: pytest.MonkeyPatch, fn, *arrays: np.ndarray, **kw):  # type: ignore[no-untyped-def]
    """Run fn on copies of the arrays with the kernels, then without; return both copies."""
    fast = [a.copy() for a in arrays]
    out_fast = fn(*fast, **kw)
    with monkeypatch.context() as m:
        m.setattr(_fused, "_K", None)
        slow = [a.copy() for a in arrays]
        out_slow = fn(*slow, **kw)
    return fast, slow, out_fast, out_slow


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mu", [0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 1e-2])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("first", [False, True])
def test_sgd_kernel_matches_numpy_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
    dtype: type,
    mu: float,
    wd: float,
    nesterov: bool,
    first: bool,
) -> None:
    if nesterov and not mu:
        pytest.skip("nesterov needs momentum")
    rng = np.random.default_rng(0)
    w, g, v = (rng.standard_normal((7, 5)).astype(dtype) for _ in range(3))

    def step(w: np.ndarray, g: np.ndarray, v: np.ndarray) -> None:
        _fused.sgd(w, g, v if mu else None, None, 0.05, mu, wd, nesterov, first)

    fast, slow, _, _ = _both(monkeypatch, step, w, g, v)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast[1], g)  # the gradient is never written


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd", [0.0, 1e-2])
@pytest.mark.parametrize("step", [1, 7])
def test_adam_kernel_matches_numpy_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, dtype: type, wd: float, step: int
) -> None:
    rng = np.random.default_rng(1)
    w, g, m = (rng.standard_normal(33).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(33)).astype(dtype)

    def update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray) -> None:
        _fused.adam(w, g, m, v, None, 1e-3, 0.9, 0.999, 1e-8, wd, step)

    fast, slow, _, _ = _both(monkeypatch, update, w, g, m, v)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_grad_kernel_matches_numpy(monkeypatch: pytest.MonkeyPatch, dtype: type) -> None:
    rng = np.random.default_rng(2)
    g = rng.standard_normal((9, 4)).astype(dtype)
    x = rng.standard_normal((9, 4)).astype(dtype)
    x[0, :] = 0.0  # the kink: subgradient 0
    _, _, fast, slow = _both(monkeypatch, _fused.relu_grad, g, x)
    np.testing.assert_array_equal(fast, slow)
    assert not fast[0].any()


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_kernels_match_numpy(monkeypatch: pytest.MonkeyPatch, dtype: type) -> None:
    rng = np.random.default_rng(3)
    x = (5 * rng.standard_normal((16, 7))).astype(dtype)
    y = rng.integers(0, 7, 16)
    tol = 1e-6 if dtype == np.float32 else 1e-13

    def run() -> tuple[np.ndarray, np.ndarray]:
        t = gg.Tensor(x, requires_grad=True)
        loss = gg.cross_entropy(t, y)
        (loss * 3.0).backward()
        assert t.grad is not None
        return loss.data, t.grad

    loss_fast, grad_fast = run()
    with monkeypatch.context() as m:
        m.setattr(_fused, "_K", None)
        loss_slow, grad_slow = run()
    assert loss_fast.dtype == loss_slow.dtype == dtype
    np.testing.assert_allclose(loss_fast, loss_slow, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad_fast, grad_slow, rtol=tol, atol=tol)


def test_cross_entropy_rejects_bad_labels_on_either_path(monkeypatch: pytest.MonkeyPatch) -> None:
    x = gg.Tensor(np.zeros((3, 4)), requires_grad=True)
    for k in (None, _fused._K):
        with monkeypatch.context() as m:
            m.setattr(_fused, "_K", k)
            with pytest.raises(ValueError, match="label 4 at index 1 is outside"):
                gg.cross_entropy(x, np.array([0, 4, 1]))
            with pytest.raises(ValueError, match="label -1 at index 2"):
                gg.cross_entropy(x, np.array([0, 3, -1]))


def test_kernels_decline_arrays_they_cannot_take() -> None:
    # Non-contiguous or mixed dtypes take the NumPy path and still give the right answer.
    g = np.arange(12.0).reshape(3, 4)[:, ::2]
    x = np.array([[1.0, -1.0], [-2.0, 2.0], [0.0, 3.0]])
    np.testing.assert_array_equal(_fused.relu_grad(g, x), g * (x > 0))
    x32 = np.ones((4, 3), np.float32)
    assert _fused.xent_forward(x32[:, ::2], np.zeros(4, np.int64)) is None
    assert _fused.xent_forward(x32, np.array([0, 1, 2, 3])) is None  # a label out of range


@needs_kernels
@pytest.mark.skipif(
    __import__("platform").machine() not in ("x86_64", "AMD64"), reason="x86 MXCSR flags"
)
def test_optimiser_kernels_flush_subnormals_and_restore_the_mode() -> None:
    # A unit that stopped receiving gradient: its running average decays into the subnormal
    # range, where each operation is ~100x slower. The kernels flush it to zero instead.
    tiny = np.finfo(np.float32).tiny
    m = np.full(8, tiny * 0.5, np.float32)  # subnormal
    v = np.full(8, tiny * 0.5, np.float32)
    w = np.ones(8, np.float32)
    g = np.zeros(8, np.float32)
    _fused.adam(w, g, m, v, None, 1e-3, 0.9, 0.999, 1e-8, 0.0, 3)
    assert not m.any() and not v.any()
    buf = np.full(8, tiny * 0.5, np.float32)
    _fused.sgd(w, g, buf, None, 0.1, 0.9, 0.0, False, False)
    assert not buf.any()
    # ... and only inside the kernel: NumPy afterwards still has subnormals.
    assert np.float32(tiny) * np.float32(0.5) != 0
