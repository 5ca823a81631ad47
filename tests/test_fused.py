"""The compiled fused kernels against their NumPy twins (graphgrad/_fused.py).

The optimiser updates and ReLU's VJP must agree bit for bit (same operations, same order);
softmax cross-entropy to rounding. Each comparison runs the kernel, then the same call with
the kernels switched off (the path a machine without the extension takes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _fused
from graphgrad._state import pure_python_requested
from test_blas import graphgrad_info

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
def test_relu_grad_twin_is_zero_where_x_is_not_positive_even_for_inf_nan_g(
    monkeypatch: pytest.MonkeyPatch, dtype: type
) -> None:
    # the NumPy twin was g * (x > 0): inf * 0 = NaN and -1 * 0 = -0.0 where the kernel
    # (and torch) give 0
    g = np.array([np.inf, np.nan, -np.inf, 1.0, np.nan, 2.0, np.inf, 3.0, -1.0, -2.0], dtype)
    x = np.array([-1.0, -1.0, 0.0, np.nan, 1.0, -0.0, 1.0, np.inf, -1.0, 0.0], dtype)
    _, _, fast, slow = _both(monkeypatch, _fused.relu_grad, g, x)
    assert slow.dtype == fast.dtype == dtype
    assert fast.tobytes() == slow.tobytes()
    assert not np.isnan(slow[:4]).any()


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


# --- read-only, non-contiguous and 0-d inputs (both modes: scripts/test.sh runs this file
# again with GRAPHGRAD_PURE_PYTHON=1) ------------------------------------------------------


def _readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


_LAYOUTS = {
    "read-only": _readonly,
    "non-contiguous": lambda a: np.repeat(a, 2, axis=-1)[..., ::2] if a.ndim else a,
    "frombuffer": lambda a: np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape),
    "broadcast_to": lambda a: np.broadcast_to(a, a.shape),
}


@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_twins_take_readonly_strided_and_0d_inputs(
    monkeypatch: pytest.MonkeyPatch, layout: str, shape: tuple, dtype: type
) -> None:
    rng = np.random.default_rng(4)
    g0, x0, w0, v0, m0 = (rng.standard_normal(shape).astype(dtype) for _ in range(5))
    x0[...] = np.where(np.abs(x0) < 0.3, 0.0, x0)  # some kinks
    make = _LAYOUTS[layout]
    g, x = make(g0), make(x0)
    ref = g0 * (x0 > 0).astype(dtype)
    np.testing.assert_array_equal(_fused.relu_grad(g, x), ref)
    results = []
    for k in (_fused._K, None):
        with monkeypatch.context() as m:
            m.setattr(_fused, "_K", k)
            w, v, mm, vv = w0.copy(), v0.copy(), m0.copy(), np.abs(v0)
            _fused.sgd(w, g, v, None, 0.1, 0.9, 0.0, False, False)
            _fused.adam(w, g, mm, vv, None, 1e-3, 0.9, 0.999, 1e-8, 0.0, 2)
            results.append((w, v, mm, vv, _fused.relu_grad(g, x)))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_on_readonly_logits(monkeypatch: pytest.MonkeyPatch, dtype: type) -> None:
    rng = np.random.default_rng(5)
    x = _readonly(rng.standard_normal((6, 4)).astype(dtype))
    y = _readonly(rng.integers(0, 4, 6))
    out = []
    for k in (_fused._K, None):
        with monkeypatch.context() as m:
            m.setattr(_fused, "_K", k)
            t = gg.Tensor(x, requires_grad=True)
            loss = gg.cross_entropy(t, y)
            loss.backward()
            out.append((loss.data, t.grad))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_users_readonly_cases() -> None:
    # relu's backward on a 0-d tensor: the upstream gradient of sum() is a read-only view.
    x = gg.Tensor(np.float32(2.0), requires_grad=True)
    x.relu().sum().backward()
    assert x.grad == 1.0
    # backward(grad=<read-only array>)
    a = gg.Tensor(np.array([1.0, -1.0, 3.0], np.float32), requires_grad=True)
    y = a.relu()
    y.backward(grad=_readonly(np.ones(3, np.float32)))
    np.testing.assert_array_equal(a.grad, [1, 0, 1])
    # leaves on np.frombuffer / np.broadcast_to / a memory map, used as inputs
    buf = np.arange(-3, 3, dtype=np.float32).tobytes()
    for data in (np.frombuffer(buf, np.float32), np.broadcast_to(np.float32(1.5), (6,))):
        leaf = gg.Tensor(data)
        w = gg.Tensor(np.ones(6, np.float32), requires_grad=True)
        (leaf * w).relu().sum().backward()
        np.testing.assert_array_equal(w.grad, data * (data > 0))


def test_memory_mapped_leaf(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1.0, -2.0, 0.5], [3.0, -1.0, 2.0]], np.float32))
    data = np.load(path, mmap_mode="r")
    x = gg.Tensor(data)
    logits = gg.Tensor(np.asarray(data), requires_grad=True)
    gg.cross_entropy(logits, np.array([0, 2])).backward()
    assert logits.grad is not None and np.isfinite(logits.grad).all()
    assert float(x.relu().sum().item()) == pytest.approx(6.5)


def test_optimiser_step_with_readonly_grad() -> None:
    for make in (
        lambda p: gg.optim.SGD([p], lr=0.1, momentum=0.9),
        lambda p: gg.optim.Adam([p], lr=0.1),
    ):
        p = gg.Tensor(np.ones(4, np.float32), requires_grad=True)
        opt = make(p)
        for _ in range(2):
            p.grad = _readonly(np.full(4, 0.5, np.float32))
            opt.step()
        assert (p.data < 1).all()


def test_optimiser_on_a_readonly_parameter_names_it() -> None:
    p = gg.Tensor(np.frombuffer(np.ones(3, np.float32).tobytes(), np.float32), requires_grad=True)
    opt = gg.optim.SGD([p], lr=0.1)
    p.grad = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"SGD: parameter #0 is a read-only array"):
        opt.step()


# --- threads: the kernels give the same bits at any thread count -------------------------


#: The threshold the split tests force: the one this machine measured may be "never"
#: (``_blas.calibrate_par_min``), and a test of the split must split whatever was measured.
SPLIT = 32768


@pytest.fixture
def kernel_threads() -> Iterator[Callable[[int], None]]:
    before, threshold = gg.get_num_threads(), _fused.par_min()

    def use(k: int) -> None:
        with warnings.catch_warnings():  # more threads than CPUs: "the BLAS gets N thread(s)"
            warnings.simplefilter("ignore", RuntimeWarning)
            gg.set_num_threads(k)  # applies this machine's threshold for k threads...
        _fused.set_par_min(SPLIT)  # ...replaced by the forced one

    yield use
    gg.set_num_threads(before)
    _fused.set_par_min(threshold)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_give_the_same_bits_at_any_thread_count(
    monkeypatch: pytest.MonkeyPatch, kernel_threads: Callable[[int], None], dtype: type
) -> None:
    # Large enough to be split between threads (the forced threshold), with an odd tail.
    n = 3 * SPLIT + 17
    rng = np.random.default_rng(6)
    w0, g, v0, m0 = (rng.standard_normal(n).astype(dtype) for _ in range(4))
    x = rng.standard_normal(n).astype(dtype)
    x[::7] = 0.0
    x[5] = np.nan
    logits = (3 * rng.standard_normal((4099, 10))).astype(dtype)
    labels = rng.integers(0, 10, 4099)

    def run() -> list[np.ndarray]:
        w, v, m, vv = w0.copy(), v0.copy(), m0.copy(), np.abs(v0)
        out = []
        for mu, wd, nest, first in (
            (0.9, 0.0, False, False),
            (0.9, 1e-2, True, False),
            (0.0, 0.0, False, False),
            (0.9, 0.0, False, True),
        ):
            _fused.sgd(w, g, v if mu else None, None, 0.05, mu, wd, nest, first)
            out += [w.copy(), v.copy()]
        for wd in (0.0, 1e-2):
            _fused.adam(w, g, m, vv, None, 1e-3, 0.9, 0.999, 1e-8, wd, 3)
            out += [w.copy(), m.copy(), vv.copy()]
        out.append(_fused.relu(x))
        out.append(_fused.relu_grad(g, x))
        if _fused._K is None:  # the NumPy references of the reductions
            z = logits - logits.max(axis=1, keepdims=True)
            z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
            xb = np.exp(z)
            xb[np.arange(len(labels)), labels] -= 1
            return [*out, -z[np.arange(len(labels)), labels].mean(), xb * 0.5]
        xf = _fused.xent_forward(logits, labels)
        xb = _fused.xent_backward(logits, labels, 0.5)
        return [*out, xf, xb]

    runs = {}
    for k in (1, 2, 3, 16):  # 3 and 16 (a 16-core machine's count): uneven chunks
        kernel_threads(k)
        runs[k] = run()
    with monkeypatch.context() as mp:
        mp.setattr(_fused, "_K", None)  # the NumPy twins
        twin = run()
    for k in (2, 3, 16):
        for a, b in zip(runs[1], runs[k], strict=True):
            np.testing.assert_array_equal(a, b)  # any thread count: the same bits
    for a, c in zip(runs[1][:-2], twin[:-2], strict=True):
        np.testing.assert_array_equal(a, c)  # elementwise: as NumPy
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, c in zip(runs[1][-2:], twin[-2:], strict=True):
        np.testing.assert_allclose(a, c, rtol=tol, atol=tol)


def test_relu_twin_matches_numpy(kernel_threads: Callable[[int], None]) -> None:
    kernel_threads(2)  # above the threshold: the kernel, split
    rng = np.random.default_rng(7)
    x = rng.standard_normal(SPLIT + 5).astype(np.float32)
    x[:3] = [np.nan, -0.0, 0.0]
    if _fused._K is not None:
        assert _fused._K.split_count(x.size) == (2 if _fused._K.OPENMP else 1)
    r = _fused.relu(x)
    np.testing.assert_array_equal(r, np.maximum(x, 0))
    assert not np.signbit(r[1])  # max(-0.0, 0) is +0.0 in NumPy


@needs_kernels
def test_the_parallel_threshold_can_be_set_from_the_environment() -> None:
    if not getattr(_fused._K, "OPENMP", False):
        pytest.skip("kernels built without OpenMP")
    code = (
        "import graphgrad as gg; from graphgrad import _fused as F; gg.set_num_threads(2); "
        "print(F.par_min(), F._K.XENT_PAR_MIN, F._K.split_count(999), F._K.split_count(1000)); "
        "print(F.FORCED_PAR_MIN, gg.set_num_threads(3), F.par_min())"
    )
    env = {**os.environ, "GRAPHGRAD_PAR_MIN": "1000"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    # forced: kept at another thread count too (nothing measured)
    assert proc.stdout.split() == ["1000", "500", "1", "2", "1000", "2", "1000"]
    env["GRAPHGRAD_PAR_MIN"] = "many"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[4] == "None"  # ignored: the threshold is measured as usual
    assert "GRAPHGRAD_PAR_MIN='many': need a positive integer" in proc.stderr


@needs_kernels
def test_relu_keeps_its_serial_kernel_where_splitting_never_pays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = _fused._K

    def spy(x: np.ndarray, out: np.ndarray) -> None:
        calls.append(x.size)
        real.relu(x, out)

    monkeypatch.setattr(_fused, "_K", types.SimpleNamespace(relu=spy))
    threshold = _fused.par_min()
    try:
        _fused.set_par_min(_fused.NEVER)  # what a machine where the split loses measures
        x = np.random.default_rng(8).standard_normal(_fused.DEFAULT_PAR_MIN + 5)
        np.testing.assert_array_equal(_fused.relu(x), np.maximum(x, 0))
        assert calls == [x.size]
    finally:
        monkeypatch.undo()
        _fused.set_par_min(threshold)


ISAS = list(_fused.KERNELS.isas()) if _fused.COMPILED else []


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_instruction_set_gives_the_same_bits(dtype: type, threads: int) -> None:
    # The loops are compiled for the baseline, AVX2 and AVX-512 (x86): each instruction set
    # this CPU runs must give NumPy's bits on normal numbers, whole vectors and their tails
    # (sizes around 4, 8 and 16 lanes), and the baseline's bits on subnormal ones (flushed to
    # zero by every instruction set alike), NaN and -0.0. At one thread and at two: SGD
    # momentum's loop prefetches the lines it writes only where there is more than one.
    rng = np.random.default_rng(7)
    sizes = [1, 3, 15, 16, 17, 33, 1003]

    def run(normal: bool) -> list[np.ndarray]:
        out = []
        for n in sizes:
            w, g, v, m = (rng.standard_normal(n).astype(dtype) for _ in range(4))
            vv = np.abs(v)
            x = rng.standard_normal(n).astype(dtype)
            x[::5] = 0.0
            if not normal:
                tiny = np.finfo(dtype).tiny
                v[::3] = tiny / 8  # subnormal momentum, decaying further
                x[::4] = np.nan
                x[1::4] = -0.0
            for mu, wd, nest, first in ((0.9, 0.0, False, False), (0.0, 0.0, False, False)):
                _fused.sgd(w, g, v if mu else None, None, 0.05, mu, wd, nest, first)
                out += [w.copy(), v.copy()]
            _fused.adam(w, g, m, vv, None, 1e-3, 0.9, 0.999, 1e-8, 0.0, 3)
            out += [w, m, vv, _fused.relu(x), _fused.relu_grad(g, x)]
            for order in "CF":  # linear's bias add, in both layouts, n wide (vector tails)
                rows = _fused.ADD_BIAS_MIN // n + 1  # large enough for the kernel
                y = np.asarray(rng.standard_normal((rows, n)).astype(dtype), order=order)
                b = x.copy()
                if _fused._K is None:
                    y += b
                else:
                    assert _fused.add_bias(y, b)
                out.append(y)
        return out

    previous = _fused.KERNELS.get_isa()
    previous_threads = _fused.KERNELS.get_num_threads()
    _fused.KERNELS.set_num_threads(threads)  # the kernels' own count: no BLAS calibration
    results: dict[str, list[np.ndarray]] = {}
    try:
        for isa in [*ISAS, "auto"]:  # auto: Adam from the widest, the rest from AVX2
            _fused.KERNELS.set_isa(isa)
            assert _fused.KERNELS.get_isa() == isa
            for normal in (True, False):
                rng = np.random.default_rng(7 + normal)
                results[f"{isa} {normal}"] = run(normal)
    finally:
        _fused.KERNELS.set_isa(previous)
        _fused.KERNELS.set_num_threads(previous_threads)
    saved = _fused._K
    try:
        _fused._K = None  # the NumPy twins
        rng = np.random.default_rng(8)
        twin = run(True)
    finally:
        _fused._K = saved
    assert ISAS[0] == "baseline"
    for isa in [*ISAS, "auto"]:
        for a, b in zip(results[f"{isa} True"], twin, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=isa)
        for a, b in zip(results[f"{isa} False"], results["baseline False"], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=isa)


@needs_kernels
def test_a_small_bias_add_is_left_to_numpy() -> None:
    # Below ADD_BIAS_MIN elements the kernel's call costs more than NumPy's add: declined,
    # the array untouched (linear then adds with NumPy).
    y = np.ones((4, 16), np.float32)
    assert y.size < _fused.ADD_BIAS_MIN
    assert not _fused.add_bias(y, np.ones(16, np.float32))
    np.testing.assert_array_equal(y, 1.0)


@needs_kernels
def test_set_isa_refuses_what_it_does_not_have_and_the_variable_warns() -> None:
    with pytest.raises(ValueError, match=r"unknown instruction set 'neon'; known: auto, baselin"):
        _fused.KERNELS.set_isa("neon")
    assert _fused.KERNELS.get_isa() == _fused.KERNELS.DEFAULT_ISA
    env = {**os.environ, "GRAPHGRAD_KERNEL_ISA": "neon"}
    r = subprocess.run(
        [sys.executable, "-c", "import graphgrad._fused as f; print(f.kernel_isa()['isa'])"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "GRAPHGRAD_KERNEL_ISA='neon'" in r.stderr and "keeping" in r.stderr
    assert r.stdout.strip() == _fused.KERNELS.DEFAULT_ISA
    loops = _fused.KERNELS.auto_loops()
    assert loops["adam"] == ISAS[-1] and loops["sgd"] == ("avx2" if "avx2" in ISAS else ISAS[0])
    r = graphgrad_info()  # the installed entry point; the default, "auto", loop by loop
    assert r.returncode == 0, r.stderr
    assert f"the kernels' loops run auto: adam in {ISAS[-1]}" in r.stdout
    r = graphgrad_info(GRAPHGRAD_KERNEL_ISA="baseline")
    assert r.returncode == 0, r.stderr
    assert "the kernels' loops run baseline (GRAPHGRAD_KERNEL_ISA in the environment" in r.stdout
    r = graphgrad_info(GRAPHGRAD_KERNEL_ISA="neon")
    assert r.returncode == 0 and "GRAPHGRAD_KERNEL_ISA='neon'" in r.stderr


@needs_kernels
def test_the_row_kernels_refuse_arrays_that_do_not_fit_naming_themselves() -> None:
    # sgd_rows and adam_rows take a padded gradient beside flat arrays of its size: another
    # length, or a gradient whose rows are not contiguous, is a ValueError naming the kernel
    K = _fused.KERNELS
    w, g = np.zeros(8, np.float32), np.ones((2, 4), np.float32)
    short, transposed = np.zeros(7, np.float32), np.ones((4, 2), np.float32).T
    with pytest.raises(ValueError, match="sgd_rows: arrays of 8 and 7 elements for a 2x4 g"):
        K.sgd_rows(w, g, short, 0.1, 0.9, 0.0, False, False)
    with pytest.raises(ValueError, match=r"sgd_rows: g's rows must be contiguous"):
        K.sgd_rows(w, transposed, w, 0.1, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="adam_rows: arrays of 8 and 7 elements"):
        K.adam_rows(w, g, short, w.copy(), 0.1, 0.9, 0.99, 1e-8, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="adam_rows: v has 7 elements, w 8"):
        K.adam_rows(w, g, w.copy(), short, 0.1, 0.9, 0.99, 1e-8, 0.0, 1.0, 1.0)


@needs_kernels
@pytest.mark.skipif(sys.platform != "linux", reason="NumPy's BLAS is found in /proc/self/maps")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_eager_bias_sum_is_numpys_ones_at_g(
    monkeypatch: pytest.MonkeyPatch, dtype: type
) -> None:
    # ops._xp.sum_rows calls the GEMV NumPy's ``ones @ g`` calls, directly: the same bits,
    # and NumPy's own product where it cannot (no kernels, a column-major or empty g)
    from graphgrad.ops import _xp

    rng = np.random.default_rng(0)
    fn, _ = _xp._gemv(np.dtype(dtype))
    assert fn is not None  # NumPy's OpenBLAS on Linux: the direct call is what runs here
    cases = [(128, 256), (2, 5), (256, 10), (1, 7), (1000, 33), (0, 4), (5, 0)]
    # one column (NumPy makes a dot product there), and a few small widths
    cases += [(200, 1)] * 20 + [(3, 1), (1, 1), (200, 2), (200, 3), (57, 4)]
    for s, n in cases:
        for g in (
            rng.standard_normal((s, n)).astype(dtype),
            np.asfortranarray(rng.standard_normal((s, n)).astype(dtype)),
        ):
            want = np.ones(s, dtype) @ g
            got = _xp.sum_rows(g)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), (s, n, g.flags.f_contiguous)
            with monkeypatch.context() as m:
                m.setattr(_fused, "KERNELS", None)
                assert _xp.sum_rows(g).tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linears_direct_vjps_give_the_rules_bits(dtype: type) -> None:
    # the fast= VJPs of ``linear`` skip the rule's calls for 2-D NumPy arrays: the same
    # products, so the same bits as the rules, and the rules where they decline
    from graphgrad.ops import _xp
    from graphgrad.ops._registry import REGISTRY

    op = REGISTRY["linear"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 12)).astype(dtype)
    for w in (
        rng.standard_normal((8, 12)).astype(dtype),
        np.asfortranarray(rng.standard_normal((8, 12)).astype(dtype)),
    ):
        b = rng.standard_normal(8).astype(dtype)
        g = rng.standard_normal((16, 8)).astype(dtype)
        ans = x @ w.T + b
        for i in range(3):
            fast = op.fast[i](g, ans, x, w, b)
            rule = op.vjp(i, _xp, g, ans, [x, w, b], {})
            if fast is None:
                assert i == 1 and not w.flags.c_contiguous  # the column-major W: the rule
                continue
            assert fast.shape == rule.shape and fast.tobytes() == rule.tobytes(), i


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_loss_pass_keeps_its_gradient_for_the_backward_pass(dtype: type) -> None:
    # with gradients on, cross_entropy's forward computes the loss and its gradient in one
    # pass over the logits and keeps the gradient for the backward pass, which returns it
    # instead of a second pass: the same bits as the two passes
    rng = np.random.default_rng(4)
    x = (4 * rng.standard_normal((33, 9))).astype(dtype)
    y = rng.integers(0, 9, 33)
    lab = np.asarray(y)
    want_loss = _fused.KERNELS.xent_forward(x, lab)
    want = np.empty_like(x)
    _fused.KERNELS.xent_backward(x, lab, 1.0 / 33, want)

    t = gg.Tensor(x, requires_grad=True)
    loss = gg.cross_entropy(t, y)
    kept = _fused._XENT_KEPT[0]
    assert kept is not None and kept[0] is loss.data
    assert loss.data.tobytes() == np.array(want_loss, dtype=dtype).tobytes()
    loss.backward(retain_graph=True)
    assert t.grad is not None and t.grad.tobytes() == want.tobytes()
    assert t.grad is kept[4]  # handed over, not computed again
    assert _fused._XENT_KEPT[0] is None
    t.grad = None
    loss.backward()  # the retained graph's second pass computes it anew: the same bits
    assert t.grad is not None and t.grad.tobytes() == want.tobytes()

    # another loss between a forward and its backward: the first computes anew
    t.grad = None
    a = gg.cross_entropy(t, y)
    b = gg.cross_entropy(t * 2.0, y)
    a.backward()
    assert t.grad is not None and t.grad.tobytes() == want.tobytes()
    assert _fused._XENT_KEPT[0] is not None and _fused._XENT_KEPT[0][0] is b.data

    # a seed other than 1: computed anew at its scale, the kept one left alone
    t.grad = None
    c = gg.cross_entropy(t, y)
    c.backward(np.array(3.0, dtype))
    scaled = np.empty_like(x)
    _fused.KERNELS.xent_backward(x, lab, 3.0 / 33, scaled)
    assert t.grad is not None and t.grad.tobytes() == scaled.tobytes()

    # no gradients: no second array made, nothing kept
    _fused._XENT_KEPT[0] = None
    with gg.no_grad():
        gg.cross_entropy(t, y)
    assert _fused._XENT_KEPT[0] is None


# --- a column times a row: the weight gradient of a batch of one sample -------------------


def _outer_cases(dtype: type) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Columns (M, 1) and rows (1, N) around the vectors' widths and tails, with zeros of
    both signs, NaN and infinities, in the layouts linear's gradients give: a column that is
    a row's transpose, one with elements apart, one running backwards."""
    rng = np.random.default_rng(11)
    for M, N in [(2, 2), (3, 17), (16, 15), (33, 8), (257, 784), (10, 256)]:
        a = rng.standard_normal((M, 1)).astype(dtype)
        b = rng.standard_normal((1, N)).astype(dtype)
        a[::3], a[1::5], b[0, ::4] = 0.0, -0.0, -0.0
        b[0, 1::7] = np.inf
        a[-1] = np.nan
        yield a, b
        yield np.ascontiguousarray(a.T).T, b  # (M, 1) view of a row
        wide = np.repeat(a, 3, axis=0)
        yield wide[::3], b  # elements 3 apart
        yield a[::-1], b  # a negative stride


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outer_kernel_gives_numpys_matmul_bit_for_bit_in_every_instruction_set(
    monkeypatch: pytest.MonkeyPatch, dtype: type
) -> None:
    # np.matmul of (M, 1) and (1, N) runs NumPy's own loop, 0 + a_i * b_j per element (no
    # BLAS): the kernel must give its bytes (+0.0 where the product is -0.0, the same NaN),
    # in each instruction set, and so must the NumPy twin (multiply, then + 0.0).
    from graphgrad import _blas

    previous = _fused.KERNELS.get_isa()
    try:
        with np.errstate(invalid="ignore"):
            for isa in [*ISAS, "auto"]:
                _fused.KERNELS.set_isa(isa)
                for a, b in _outer_cases(dtype):
                    want = np.matmul(a, b)
                    out = np.full(want.shape, 7.0, dtype)
                    assert _fused.outer(a, b, out), (isa, a.shape, a.strides)
                    assert out.tobytes() == want.tobytes(), (isa, a.shape, a.strides)
            with monkeypatch.context() as m:
                m.setattr(_fused, "_K", None)
                for a, b in _outer_cases(dtype):
                    got = _blas.outer(a, b)
                    assert got.tobytes() == np.matmul(a, b).tobytes(), (a.shape, a.strides)
    finally:
        _fused.KERNELS.set_isa(previous)


@needs_kernels
def test_outer_kernel_writes_padded_rows_and_declines_what_it_cannot_take() -> None:
    # A weight gradient whose rows lie further apart (_memory.empty_grad): the kernel writes
    # each row and leaves the padding alone. Declined, out untouched: another dtype, a row
    # with elements apart, a read-only or column-major out, shapes that do not fit.
    rng = np.random.default_rng(12)
    a = rng.standard_normal((5, 1)).astype(np.float32)
    b = rng.standard_normal((1, 6)).astype(np.float32)
    base = np.full((5, 8), 9.0, np.float32)
    assert _fused.outer(a, b, base[:, :6])
    assert base[:, :6].tobytes() == np.ascontiguousarray(np.matmul(a, b)).tobytes()
    np.testing.assert_array_equal(base[:, 6:], 9.0)
    ro = np.zeros((5, 6), np.float32)
    ro.flags.writeable = False
    for args in [
        (a.astype(np.float64), b, np.zeros((5, 6), np.float32)),
        (a, np.repeat(b, 2, axis=1)[:, ::2], np.zeros((5, 6), np.float32)),
        (a, b, ro),
        (a, b, np.zeros((5, 6), np.float32, order="F")),
        (a, b, np.zeros((5, 7), np.float32)),
        (a[:4], b, np.zeros((5, 6), np.float32)),
    ]:
        out = args[2]
        before = out.copy()
        assert not _fused.outer(*args)
        np.testing.assert_array_equal(out, before)
    with pytest.raises(ValueError, match="rows must be contiguous"):  # the kernel's own check
        _fused.KERNELS.outer(a[:, 0], b[0], np.zeros((6, 5), np.float32).T)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outer_kernel_gives_the_same_bits_at_any_thread_count(
    kernel_threads: Callable[[int], None], dtype: type
) -> None:
    # Rows split between threads above the threshold: the same bytes as one thread's.
    rng = np.random.default_rng(13)
    a = rng.standard_normal((3 * SPLIT // 64 + 5, 1)).astype(dtype)
    b = rng.standard_normal((1, 64)).astype(dtype)
    a[::4] = -0.0
    results = []
    for k in (1, 2, 3):
        kernel_threads(k)
        out = np.empty((a.shape[0], 64), dtype)
        assert _fused.outer(a, b, out)
        results.append(out.tobytes())
    assert results[0] == results[1] == results[2] == np.matmul(a, b).tobytes()


_SHORT_CALLS: list[tuple[str, Callable[[Any], object], type, str]] = [
    ("sgd", lambda K: K.sgd(np.ones(4096, "f4"), np.ones(1, "f4"), np.ones(4096, "f4"),
                            0.1, 0.9, 0.0, False, False), ValueError, "sgd: g has 1"),
    ("sgd v", lambda K: K.sgd(np.ones(4096), np.ones(4096), np.ones(2), 0.1, 0.9, 0.0,
                              False, False), ValueError, "sgd: v has 2"),
    ("adam", lambda K: K.adam(np.ones(4096), np.ones(4096), np.ones(4096), np.ones(3), 0.1,
                              0.9, 0.99, 1e-8, 0.0, 1.0, 1.0), ValueError, "adam: v has 3"),
    ("relu", lambda K: K.relu(np.ones(4096, "f4"), np.empty(1, "f4")), ValueError, "relu: out"),
    ("relu_grad", lambda K: K.relu_grad(np.ones(5), np.ones(4), np.ones(5)), ValueError,
     "relu_grad: x has 4"),
    ("add_bias", lambda K: K.add_bias(np.ones((4, 10), "f4"), np.ones(3, "f4"), False),
     ValueError, "add_bias: b has 3"),
    ("xent rows", lambda K: K.xent_forward(np.ones((64, 10), "f4"), np.zeros(1, np.int64)),
     ValueError, "1 labels for 64 rows"),
    ("xent label", lambda K: K.xent_forward(np.ones((4, 10), "f4"), np.full(4, 10**12)),
     IndexError, "label 1000000000000 of row 0"),
    ("xent_backward", lambda K: K.xent_backward(np.ones((4, 10)), np.zeros(4, np.int64), 1.0,
                                                np.empty((2, 10))), ValueError, "out is 2x10"),
]  # fmt: skip


@needs_kernels
@pytest.mark.parametrize(("call", "error", "words"), [c[1:] for c in _SHORT_CALLS],
                         ids=[c[0] for c in _SHORT_CALLS])  # fmt: skip
def test_kernels_refuse_arrays_that_do_not_fit(call: Any, error: type, words: str) -> None:
    """The loops take their length from the first array: a shorter one beside it was read
    and written past its end (a segfault, or silently wrong numbers)."""
    with pytest.raises(error, match=words):
        call(_fused.KERNELS)
