"""Compiled training steps (graphgrad.compiled) against the eager step, bit for bit.

Every test trains two copies of one model side by side, one with the eager step (forward,
``cross_entropy``, ``zero_grad``, ``backward``, ``opt.step()``), one with ``compile_step``,
and compares losses, logits, gradients, weights and optimiser state exactly: the plan makes
the same BLAS calls and runs the same kernels as the eager step, so any difference is a bug.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _blas, _fused, _memory
from graphgrad.compiled import CompiledStep, CompileError, compile_step
from graphgrad.train import Trainer, TrainingDiverged

needs_kernels = pytest.mark.skipif(not _fused.COMPILED, reason="extension not built")

Maker = Callable[[], tuple[gg.nn.Module, gg.optim.Optimizer]]


def _mlp(
    sizes: tuple[int, ...] = (12, 16, 9, 5),
    dtype: Any = np.float32,
    activation: str = "relu",
    bias: bool = True,
) -> gg.nn.Module:
    return gg.nn.MLP(
        sizes[0],
        list(sizes[1:-1]),
        sizes[-1],
        activation,
        bias=bias,
        rng=np.random.default_rng(7),
        dtype=dtype,
    )


OPTIMISERS: dict[str, Callable[[Any], gg.optim.Optimizer]] = {
    "sgd": lambda ps: gg.optim.SGD(ps, lr=0.1),
    "momentum": lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9),
    "nesterov+wd": lambda ps: gg.optim.SGD(
        ps, lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-2
    ),
    "wd": lambda ps: gg.optim.SGD(ps, lr=0.1, weight_decay=1e-2),
    "fused_backward": lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9, fused_backward=True),
    "adam": lambda ps: gg.optim.Adam(ps, lr=1e-2),
    "adam+wd": lambda ps: gg.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
}


def _pair(model_fn: Callable[[], gg.nn.Module], opt: str) -> tuple[Any, Any, Any, Any]:
    m1, m2 = model_fn(), model_fn()
    return m1, OPTIMISERS[opt](m1.parameters()), m2, OPTIMISERS[opt](m2.parameters())


def _eager_step(model: Any, opt: Any, x: Any, y: Any) -> tuple[float, np.ndarray]:
    logits = model(x)
    loss = gg.cross_entropy(logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.data), logits.data


def _bits(a: Any) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _assert_same(m1: Any, o1: Any, m2: Any, o2: Any) -> None:
    for (name, p), q in zip(m1.named_parameters(), m2.parameters(), strict=True):
        assert _bits(p.data) == _bits(q.data), f"{name} differs"
        if p.grad is None or q.grad is None:
            assert p.grad is None and q.grad is None, f"{name}.grad: one is None"
        else:
            assert _bits(p.grad) == _bits(q.grad), f"{name}.grad differs"
    s1, s2 = o1.state_dict()["state"], o2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for i in s1:
        for key, v in s1[i].items():
            assert _bits(v) == _bits(s2[i][key]), f"optimiser state {i}.{key} differs"


def _batches(
    d: tuple[int, ...], t: int, sizes: list[int], dtype: Any, seed: int = 3
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((s, *d)).astype(dtype), rng.integers(0, t, s)) for s in sizes]


def _train_both(
    m1: Any,
    o1: Any,
    m2: Any,
    o2: Any,
    batches: list[Any],
    engine: str = "kernels",
    step: CompiledStep | None = None,
) -> CompiledStep:
    step = step or compile_step(m2, o2)
    for x, y in batches:
        l1, z1 = _eager_step(m1, o1, x, y)
        l2 = step(x, y)
        assert step.engine == engine, step.why_eager
        assert l1 == l2 or (np.isnan(l1) and np.isnan(l2))
        assert step.logits is not None and _bits(z1) == _bits(step.logits)
        _assert_same(m1, o1, m2, o2)
    return step


@needs_kernels
@pytest.mark.parametrize("opt", sorted(OPTIMISERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_plan_trains_exactly_as_the_eager_step(opt: str, dtype: Any) -> None:
    m1, o1, m2, o2 = _pair(lambda: _mlp(dtype=dtype), opt)
    # batch sizes change (the last batch of an epoch), and come back: a plan per size
    _train_both(m1, o1, m2, o2, _batches((12,), 5, [8, 8, 5, 8, 3], dtype))


@needs_kernels
@pytest.mark.parametrize(
    "model_fn",
    [
        pytest.param(lambda: _mlp(activation="identity"), id="identity"),
        pytest.param(lambda: _mlp(bias=False), id="no-bias"),
        pytest.param(lambda: _mlp((12, 7)), id="one-layer"),
        pytest.param(lambda: _mlp((12, 64, 48, 32, 5)), id="deep"),
        pytest.param(
            lambda: gg.nn.Sequential(
                gg.nn.Flatten(),
                gg.nn.Linear(12, 6, rng=np.random.default_rng(1)),
                gg.nn.Identity(),
                gg.nn.ReLU(),
                gg.nn.Linear(6, 4, rng=np.random.default_rng(2)),
            ),
            id="flatten+identity",
        ),
        pytest.param(
            lambda: gg.nn.Sequential(
                gg.nn.Linear(12, 16, rng=np.random.default_rng(1)),
                gg.nn.Identity(),
                gg.nn.Linear(16, 9, bias=False, rng=np.random.default_rng(2)),
                gg.nn.ReLU(),
                gg.nn.Linear(9, 5, rng=np.random.default_rng(3)),
            ),
            id="bias-then-none",
        ),
    ],
)
@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("opt", ["momentum", "fused_backward"])
def test_every_model_shape_trains_exactly(
    model_fn: Callable[[], Any], layout: str, opt: str
) -> None:
    # in both layouts of linear's products (the machine's calibration picks one). A layer
    # without a bias is the linear op with two inputs in the eager step (the same products,
    # layouts and fusion), so the plan mirrors it too: no eager fallback for any of these
    previous = _blas.set_layout(layout)
    try:
        m1, o1, m2, o2 = _pair(model_fn, opt)
        t = m1[len(m1) - 1].out_features
        d = (3, 4) if type(m1[0]) is gg.nn.Flatten else (12,)
        step = _train_both(
            m1, o1, m2, o2, _batches(d, t, [6, 6, 4, 40], np.float32), engine="kernels"
        )
        assert step.why_eager == ""
    finally:
        _blas.set_layout(previous)


@needs_kernels
@pytest.mark.parametrize("threads", [2, 3, 16])
def test_large_arrays_split_between_threads_give_the_same_bits(threads: int) -> None:
    # a low threshold splits every kernel (and the cross-entropy's rows) between the threads:
    # 2 as here, and the uneven chunks of 3 and of a 16-core machine (more threads than this
    # machine's CPUs: slower). The compiled and the eager step agree, and both agree with
    # serial kernels at the same thread count (the same BLAS calls)
    before = (gg.get_num_threads(), _fused.par_min())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "the BLAS gets N thread(s)"
        gg.set_num_threads(threads)
    try:
        batches = _batches((40,), 10, [64, 64, 17], np.float32)
        for opt in ("momentum", "adam"):
            weights = []
            for par_min in (64, 1 << 40):  # split, then serial
                _fused.set_par_min(par_min)
                assert _fused.KERNELS.split_count(40 * 96) == (threads if par_min == 64 else 1)
                m1, o1, m2, o2 = _pair(lambda: _mlp((40, 96, 64, 10)), opt)
                _train_both(m1, o1, m2, o2, batches)
                weights.append([_bits(p.data) for p in m2.parameters()])
            assert weights[0] == weights[1]
    finally:
        gg.set_num_threads(before[0])
        _fused.set_par_min(before[1])


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_padded_weight_gradients_give_the_same_bits(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every weight gradient padded (GRAD_PAD_EVERY = 1): the GEMMs write rows 64 bytes apart
    # and the updates read them row by row, in chunks (a low threshold) that start and end
    # inside rows; every optimiser steps as the eager step does, bit for bit
    monkeypatch.setattr(_memory, "GRAD_PAD_EVERY", 1)
    before = (gg.get_num_threads(), _fused.par_min())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "the BLAS gets N thread(s)"
        gg.set_num_threads(threads)
    _fused.set_par_min(64)
    try:
        batches = _batches((40,), 10, [64, 17, 64], np.float32)
        for opt in sorted(OPTIMISERS):
            m1, o1, m2, o2 = _pair(lambda: _mlp((40, 96, 33, 10)), opt)
            _train_both(m1, o1, m2, o2, batches)
            W1 = m2.parameters()[0]
            if opt != "fused_backward":  # (its .grad stays None)
                assert W1.grad is not None and W1.grad.shape == (96, 40)
                assert W1.grad.strides == ((40 + 16) * 4, 4)  # 64 bytes more a row
    finally:
        gg.set_num_threads(before[0])
        _fused.set_par_min(before[1])


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_with_rows_of_4096_bytes_are_padded(dtype: Any) -> None:
    # rows a multiple of 4096 bytes long fall into the same cache sets: such a weight
    # gradient is stored 64 bytes wider a row (.grad a view), the others contiguous
    width = 4096 // np.dtype(dtype).itemsize  # 1024 floats, 512 doubles
    m1, o1, m2, o2 = _pair(lambda: _mlp((width, 24, 8, 3), dtype=dtype), "momentum")
    _train_both(m1, o1, m2, o2, _batches((width,), 3, [16, 16], dtype))
    W1, _, W2, *_ = m2.parameters()
    assert W1.grad.strides[0] == 4096 + 64 and not W1.grad.flags.c_contiguous
    assert W2.grad.flags.c_contiguous  # rows of 24 values
    assert np.array_equal(W1.grad, m1.parameters()[0].grad)


@needs_kernels
@pytest.mark.parametrize("blas", ["numpy", "mkl", "onednn"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_eager_step_pads_those_gradients_too(
    blas: str, dtype: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # linear's weight gradient with rows of 4096 bytes comes out padded in the eager step as
    # well (the same BLAS call into a wider array), and the optimisers update from it with
    # their kernels (sgd_rows, adam_rows), never NumPy's loops: the same bits as an eager
    # step that does not pad, for every optimiser, and on MKL and oneDNN
    if blas != "numpy" and "error" in _blas.find(blas):
        pytest.skip(f"{blas}: {_blas.find(blas)['error']}")
    width = 4096 // np.dtype(dtype).itemsize
    rows_calls: list[str] = []
    real = _fused._K

    class Spy:
        def __getattr__(self, name: str) -> Any:
            if name in ("sgd_rows", "adam_rows"):
                rows_calls.append(name)
            return getattr(real, name)

    # a batch of one sample too: its weight gradient is a column times a row (_blas.outer),
    # written into the padded rows as well
    batches = _batches((width,), 3, [16, 1, 16, 9], dtype)
    with _blas.using_blas(blas):
        for opt in sorted(OPTIMISERS):
            if opt == "fused_backward":
                continue  # its weights' gradients go into the momentum buffer
            runs = []
            for every in (4096, 1 << 60):  # padded, then not
                monkeypatch.setattr(_memory, "GRAD_PAD_EVERY", every)
                monkeypatch.setattr(_fused, "_K", Spy() if every == 4096 else real)
                model = _mlp((width, 24, 8, 3), dtype=dtype)
                o = OPTIMISERS[opt](model.parameters())
                for x, y in batches:
                    _eager_step(model, o, x, y)
                W1 = model.parameters()[0]
                assert W1.grad.flags.c_contiguous == (every != 4096)
                runs.append([_bits(p.data) for p in model.parameters()])
                runs[-1] += [_bits(v) for st in o.state.values() for v in st.values()]
            assert runs[0] == runs[1], opt
        assert rows_calls and set(rows_calls) <= {"sgd_rows", "adam_rows"}


@needs_kernels
def test_the_learning_rate_is_read_at_every_call() -> None:
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    step = compile_step(m2, o2)
    for k, (x, y) in enumerate(_batches((12,), 5, [8] * 4, np.float32)):
        o1.lr = o2.lr = 0.1 / (k + 1)  # a schedule sets opt.lr between steps
        _eager_step(m1, o1, x, y)
        step(x, y)
    _assert_same(m1, o1, m2, o2)


@needs_kernels
def test_eager_and_compiled_steps_can_take_turns() -> None:
    m1, o1, m2, o2 = _pair(_mlp, "adam")
    step = compile_step(m2, o2)
    for k, (x, y) in enumerate(_batches((12,), 5, [8] * 6, np.float32)):
        _eager_step(m1, o1, x, y)
        if k % 2:
            _eager_step(m2, o2, x, y)
        else:
            step(x, y)
    _assert_same(m1, o1, m2, o2)
    assert o2.state[0]["step"] == 6


@needs_kernels
def test_replaced_weights_and_state_are_seen() -> None:
    # load_state_dict puts new arrays in place: a plan over the old ones must not run
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    batches = _batches((12,), 5, [8] * 3, np.float32)
    step = _train_both(m1, o1, m2, o2, batches[:1])
    other = _mlp()
    other.load_state_dict({k: v * 0.5 for k, v in m1.state_dict().items()})
    for m in (m1, m2):
        m.load_state_dict(other.state_dict())
    state = o1.state_dict()
    o2.load_state_dict(state)
    o1.load_state_dict(state)
    for x, y in batches[1:]:
        _eager_step(m1, o1, x, y)
        step(x, y)
        assert step.engine == "kernels"
    _assert_same(m1, o1, m2, o2)


@needs_kernels
def test_changed_hyperparameters_rebuild_the_plan() -> None:
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    batches = _batches((12,), 5, [8] * 4, np.float32)
    step = _train_both(m1, o1, m2, o2, batches[:2])
    for o in (o1, o2):
        o.momentum, o.weight_decay = 0.5, 1e-3
    for x, y in batches[2:]:
        _eager_step(m1, o1, x, y)
        step(x, y)
    _assert_same(m1, o1, m2, o2)


@needs_kernels
@pytest.mark.parametrize("opt", ["momentum", "fused_backward"])
@pytest.mark.parametrize("library", ["mkl", "onednn"])
def test_the_selected_librarys_products_when_one_is_selected(library: str, opt: str) -> None:
    # the plan calls MKL's or oneDNN's GEMM, by its own convention, as the eager step does:
    # the same bits (float32 and, for MKL, float64; oneDNN leaves float64 to NumPy's BLAS),
    # also where the weight gradients are added into the momentum buffers (fused_backward:
    # the small ones by NumPy's own cblas_?gemm with beta = momentum)
    if "error" in _blas.find(library):
        pytest.skip(f"{library}: {_blas.find(library)['error']}")
    # 64-128-96-5 at batch 128: the products into and out of the hidden layers have 2**20
    # multiply-adds or more, the output layer's fewer (MKL and oneDNN leave those to NumPy's
    # BLAS: MKL_MIN_MNK, ONEDNN_MIN_MNK)
    sizes = (64, 128, 96, 5)
    with _blas.using_blas(library):
        for dtype in (np.float32, np.float64):
            m1, o1, m2, o2 = _pair(lambda dtype=dtype: _mlp(sizes, dtype=dtype), opt)
            step = _train_both(m1, o1, m2, o2, _batches((64,), 5, [128, 128, 100], dtype))
            gemms = [i for i in step._plans[128].instrs if i[0] == "gemm"]
            numpy_blas = _blas.numpy_cblas()
            numpy_conv = _blas.GEMM_CBLAS64 if numpy_blas["ilp64"] else _blas.GEMM_CBLAS
            numpy_call = (numpy_blas[np.dtype(dtype)], numpy_conv)
            lib = _blas.gemm_call(np.dtype(dtype))
            assert lib is not None or (library, dtype) == ("onednn", np.float64)
            # by the product's size: M, N, K = n0, n1, n2
            want = [_blas.gemm_call(np.dtype(dtype), (i[5][0], i[5][1], i[5][2])) for i in gemms]
            assert [(i[3], i[2][2]) for i in gemms] == [w or numpy_call for w in want]
            assert len(gemms) == 8
            if lib is not None:  # the library's GEMM ran: all of them, or the large ones
                n_lib = sum(w is not None for w in want)
                assert n_lib == 5, want
            # the bias sums stay NumPy's GEMV, called by NumPy's convention
            sums = [i for i in step._plans[128].instrs if i[0] == "sum_rows"]
            assert len(sums) == 3 and all(i[2][2] == numpy_conv for i in sums)


@needs_kernels
@pytest.mark.parametrize("opt", ["momentum", "fused_backward", "adam"])
def test_the_columns_layout_is_mirrored_exactly(opt: str) -> None:
    # "columns": layers whose batch is smaller than their width compute (W @ x.T).T, a
    # column-major output, and their input gradients in their input's layout; batch 3 < 5
    # classes makes the logits column-major too (NumPy copies them for the cross-entropy)
    previous = _blas.set_layout("columns")
    try:
        m1, o1, m2, o2 = _pair(lambda: _mlp((12, 64, 48, 5)), opt)
        step = _train_both(m1, o1, m2, o2, _batches((12,), 5, [8, 3, 50, 70, 8], np.float32))
        assert "y1ᵀ = W1 @ xᵀ" in step.describe(8)
        assert "y3 in row-major order (a copy)" in step.describe(3)
        assert "y1ᵀ" not in step.describe(70)
    finally:
        _blas.set_layout(previous)


@needs_kernels
@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("float64 input", "the input is float64"),
        ("not contiguous", "not C-contiguous"),
        ("list input", "not a NumPy array"),
    ],
)
def test_what_the_plan_cannot_mirror_runs_the_eager_step(case: str, why: str) -> None:
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    ((x, y),) = _batches((12,), 5, [6], np.float32)
    if case == "float64 input":
        x = x.astype(np.float64)
    elif case == "not contiguous":
        x = np.asfortranarray(x)
    else:
        x = x.tolist()  # type: ignore[assignment]
    step = _train_both(m1, o1, m2, o2, [(x, y)], engine="eager")
    assert why in step.why_eager
    # and the next ordinary batch takes the plan again
    _train_both(m1, o1, m2, o2, _batches((12,), 5, [6], np.float32))


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("act", ["relu", "tanh", "elu"])
def test_a_batch_of_one_sample_takes_a_plan_of_numpys_gemv_calls(
    dtype: Any, layout: str, act: str
) -> None:
    # For one sample NumPy's matmul calls GEMV (a row times a matrix: the forward products
    # and the input gradients) and runs its own loop for a column times a row (the weight
    # gradients: _blas.outer). The plan mirrors those calls: the same bits as the eager step
    # for every optimiser but fused_backward (its GEMMs with beta = μ: the eager step runs),
    # in both layouts, batches of one between larger ones, weight gradients padded (rows of
    # 4096 bytes) or not.
    width = 4096 // np.dtype(dtype).itemsize
    previous = _blas.set_layout(layout)
    try:
        with _blas.using_blas("numpy"):
            for opt in sorted(OPTIMISERS):
                for sizes in [(12, 16, 9, 5), (width, 24, 3)]:
                    m1, o1, m2, o2 = _pair(lambda s=sizes: _mlp(s, dtype, act), opt)
                    step = compile_step(m2, o2)
                    for k, batch in enumerate(_batches(sizes[:1], sizes[-1], [1, 1, 4, 1], dtype)):
                        engine = "eager" if opt == "fused_backward" and k != 2 else "kernels"
                        _train_both(m1, o1, m2, o2, [batch], engine, step)
                    if opt == "fused_backward":
                        assert "with SGD(fused_backward=True)" in step.why_eager
                        continue
                    ops = [i[0] for i in step._plans[1].instrs]
                    L = len(sizes) - 1
                    assert ops.count("gemv") == 2 * L - 1 and ops.count("outer") == L
                    assert "gemm" not in ops
    finally:
        _blas.set_layout(previous)


@needs_kernels
def test_a_batch_of_one_sample_is_mirrored_call_for_call() -> None:
    # The plan's GEMV calls are those NumPy's matmul makes (its vector @ matrix): for
    # x @ W1ᵀ (ColMajor, Trans) over W1 as stored, lda its row length; for G @ W
    # (RowMajor, Trans), the same lda; describe() says so.
    m = _mlp((12, 16, 9, 5))
    step = compile_step(m, OPTIMISERS["momentum"](m.parameters()))
    with _blas.using_blas("numpy"):
        ((x, y),) = _batches((12,), 5, [1], np.float32)
        step(x, y)
        assert step.engine == "kernels"
        gemv = [i for i in step._plans[1].instrs if i[0] == "gemv"]
        # (order, trans), (K, N, lda, incx, incy): 3 forward products, 2 input gradients
        assert [(i[2][:2], i[5][:5]) for i in gemv] == [
            ((102, 112), (12, 16, 12, 1, 1)),
            ((102, 112), (16, 9, 16, 1, 1)),
            ((102, 112), (9, 5, 9, 1, 1)),
            ((101, 112), (5, 9, 9, 1, 1)),
            ((101, 112), (9, 16, 16, 1, 1)),
        ]
        text = step.describe(1)
        # its kernels stay on one thread (a split lost more than it saved at 2 threads);
        # larger batches' plans split them
        assert step._plans[1].plan.serial
        step(*_batches((12,), 5, [4], np.float32)[0])
        assert not step._plans[4].plan.serial
    assert "y1 = x @ W1ᵀ   (1, 16)   (a row times a matrix: GEMV)" in text
    assert "dW1 = G1ᵀ @ x   (16, 12)   (a column times a row: the outer kernel)" in text


@needs_kernels
@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_layers_of_width_one_take_plans_of_numpys_calls(layout: str) -> None:
    # A layer of width one (a 1-D input, a one-neuron hidden layer) makes products with a side
    # of one: NumPy calls GEMV for a matrix times a column and runs its own loop for a column
    # times a row, and the plan mirrors both, bit for bit. What it does not mirror runs the
    # eager step and says why: NumPy's dot products (a layer of one input and one output, one
    # sample through a layer of width one), fused_backward's GEMMs with beta = μ.
    previous = _blas.set_layout(layout)
    try:
        # (a layer of one output with a bias: NumPy sums its bias gradient with a dot
        # product, which no plan mirrors: the eager step, below)
        for sizes in [(1, 16, 3)]:
            m1, o1, m2, o2 = _pair(lambda s=sizes: _mlp(s, activation="tanh"), "momentum")
            step = _train_both(m1, o1, m2, o2, _batches(sizes[:1], sizes[-1], [6, 40], np.float32))
            text = step.describe(6)
            assert "(a matrix times a column: GEMV)" in text or sizes[0] == 1
            assert "(a column times a row: the outer kernel)" in text or sizes[0] == 1
            one = _batches(sizes[:1], sizes[-1], [1], np.float32)
            _train_both(m1, o1, m2, o2, one, "eager", step)
            assert "a batch of one sample through a layer of width one" in step.why_eager
        for sizes, opt, why in [
            ((3, 1, 1, 2), "momentum", "a layer of one input and one output"),
            ((12, 1, 5), "momentum", "a layer of one output with a bias"),
            ((12, 16, 1, 9, 5), "momentum", "a layer of one output with a bias"),
            ((12, 1, 5), "fused_backward", "a layer of width one with SGD(fused_backward=True)"),
        ]:
            m1, o1, m2, o2 = _pair(lambda s=sizes: _mlp(s), opt)
            batches = _batches(sizes[:1], sizes[-1], [6], np.float32)
            step = _train_both(m1, o1, m2, o2, batches, "eager")
            assert why in step.why_eager
    finally:
        _blas.set_layout(previous)


@needs_kernels
def test_a_batch_of_one_sample_with_fused_backward_runs_the_eager_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SGD(fused_backward=True) adds the weight gradient inside a GEMM with beta = μ, which no
    # plan of one sample mirrors: such a batch goes straight to the eager step, without the
    # checks for a plan (they cost 6-9% of such a step), with its numbers; a later ordinary
    # batch still takes its plan, checked.
    m1, o1, m2, o2 = _pair(_mlp, "fused_backward")
    step = compile_step(m2, o2)
    checked: list[int] = []
    real = step._why_not
    monkeypatch.setattr(step, "_why_not", lambda x, y: checked.append(len(x)) or real(x, y))
    _train_both(m1, o1, m2, o2, _batches((12,), 5, [1, 1], np.float32), "eager", step)
    assert checked == [] and "fused_backward" in step.why_eager
    (six, one) = _batches((12,), 5, [6, 1], np.float32, seed=4)
    _train_both(m1, o1, m2, o2, [six], step=step)
    assert checked == [6]
    _train_both(m1, o1, m2, o2, [one], "eager", step)
    assert checked == [6] and "a batch of one sample" in step.why_eager


@needs_kernels
@pytest.mark.parametrize("library", ["mkl", "onednn"])
def test_a_batch_of_one_sample_takes_numpys_calls_whatever_the_library(library: str) -> None:
    # MKL and oneDNN get no product with a side of one (NumPy's GEMV is faster there): a
    # batch of one sample makes NumPy's calls in the eager step and in its plan, the same
    # bits, even for layers whose products of larger batches go to the library.
    if "error" in _blas.find(library):
        pytest.skip(f"{library}: {_blas.find(library)['error']}")
    with _blas.using_blas(library):
        m1, o1, m2, o2 = _pair(lambda: _mlp((1024, 1024, 5)), "momentum")
        step = compile_step(m2, o2)
        _train_both(m1, o1, m2, o2, _batches((1024,), 5, [1, 1], np.float32), step=step)
        ops = [i[0] for i in step._plans[1].instrs]
        assert "gemm" not in ops and ops.count("gemv") == 3 and ops.count("outer") == 2
        _train_both(m1, o1, m2, o2, _batches((1024,), 5, [4], np.float32, seed=5), step=step)
        gemms = [i for i in step._plans[4].instrs if i[0] == "gemm"]
        lib = _blas.gemm_call(np.dtype(np.float32))
        assert lib is not None and (gemms[0][3], gemms[0][2][2]) == lib  # 4 x 1024 x 1024


def test_a_label_out_of_range_raises_the_eager_error() -> None:
    model = _mlp()
    opt = OPTIMISERS["momentum"](model.parameters())
    step = compile_step(model, opt)
    x = np.zeros((4, 12), np.float32)
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"cross_entropy: label 5 at index 2 is outside \[0, 5\)"):
        step(x, np.array([0, 1, 5, 2]))
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters(), strict=True))


def _without_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a build without the compiled kernels: none, and so no MKL selected (its products
    go through the kernels' gemm; set_blas refuses it there), whatever this machine chose."""
    monkeypatch.setattr(_fused, "KERNELS", None)
    monkeypatch.setattr(_blas, "_calls", {})


@pytest.mark.parametrize("compiled", [True, False])
def test_skip_nonfinite_leaves_the_model_as_it_was(
    monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    if compiled and not _fused.COMPILED:
        pytest.skip("extension not built")
    if not compiled:
        _without_kernels(monkeypatch)
    model = _mlp()
    opt = OPTIMISERS["adam"](model.parameters())
    step = compile_step(model, opt)
    (x, y), (x2, y2) = _batches((12,), 5, [8, 8], np.float32)
    step(x, y)
    before = [p.data.copy() for p in model.parameters()]
    state = {i: {k: np.copy(v) for k, v in s.items()} for i, s in opt.state.items()}
    x2[3, 4] = np.nan
    loss = step(x2, y2, skip_nonfinite=True)
    assert np.isnan(loss)
    assert step.engine == ("kernels" if compiled else "eager")
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters(), strict=True))
    for i, s in opt.state.items():
        for k, v in s.items():
            assert np.array_equal(state[i][k], v), (i, k)


def test_without_the_kernels_the_eager_step_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_kernels(monkeypatch)
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    step = _train_both(m1, o1, m2, o2, _batches((12,), 5, [8, 8], np.float32), engine="eager")
    assert "not built" in step.why_eager
    assert "not built" in step.describe(8)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: (_mlp(activation="softplus"), "SGD", None),
            r"module 1 \(Softplus\) cannot be compiled",
        ),
        (
            lambda: (gg.nn.Sequential(gg.nn.ReLU(), gg.nn.Linear(3, 2)), "SGD", None),
            r"module 0 \(ReLU\) must follow a Linear",
        ),
        (lambda: (_mlp(), "SGD", gg.mse_loss), "the loss must be gg.cross_entropy"),
        (lambda: (_mlp(), "other", None), "the optimiser must be gg.optim.SGD or"),
        (
            lambda: (
                gg.nn.Sequential(gg.nn.Linear(3, 4), gg.nn.Linear(5, 2)),
                "SGD",
                None,
            ),
            "layer 1 takes 5 features but layer 0 gives 4",
        ),
        (
            lambda: (
                gg.nn.Sequential(gg.nn.Linear(3, 4), gg.nn.Linear(4, 2, dtype=np.float64)),
                "SGD",
                None,
            ),
            "must share one dtype",
        ),
        (lambda: (gg.nn.Sequential(gg.nn.Flatten()), "SGD", None), "has no Linear layer"),
    ],
)
def test_what_cannot_be_compiled_is_named(build: Callable[[], Any], match: str) -> None:
    model, kind, loss = build()

    class Other(gg.optim.SGD):
        pass

    params = model.parameters() or [gg.Tensor(np.zeros(1), requires_grad=True)]
    opt = gg.optim.SGD(params, lr=0.1) if kind == "SGD" else Other(params, lr=0.1)
    with pytest.raises(CompileError, match=match):
        if loss is None:
            compile_step(model, opt)
        else:
            compile_step(model, opt, loss)


@needs_kernels
def test_describe_lists_every_kernel_call() -> None:
    model = _mlp((784, 256, 256, 10))
    step = compile_step(model, gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    previous = _blas.set_layout("rows")  # the lines below are the "rows" layout's products
    try:
        text = step.describe(128)
    finally:
        _blas.set_layout(previous)
    lines = text.splitlines()
    assert len(lines) == len(step._plans[128].plan)  # one line per instruction
    assert sum(" gemm " in line for line in lines) == 8  # 3 forward, 3 dW, 2 dx
    assert "y1 = x @ W1ᵀ   (128, 256)" in text
    assert "G1 = D2 where y1 > 0, else 0" in text
    assert "W1 -= lr v_W1" in text
    assert repr(step) == "CompiledStep(784-256-256-10, activations: relu, relu, SGD, float32)"
    assert "(a row times a matrix: GEMV)" in step.describe(1)


@needs_kernels
def test_a_plan_refuses_an_input_of_another_size() -> None:
    model = _mlp()
    step = compile_step(model, gg.optim.SGD(model.parameters(), lr=0.1))
    x, y = _batches((12,), 5, [8], np.float32)[0]
    step(x, y)
    plan = step._plans[8].plan
    with pytest.raises(ValueError, match="the plan takes 384 bytes of input and 8 labels"):
        plan.run(x[:4], y[:4].astype(np.int64), 0.1, 0.0)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_gemv_is_numpys_ones_at_g(dtype: Any) -> None:
    from graphgrad import _kernels  # type: ignore[attr-defined,unused-ignore]

    found = _blas.numpy_cblas()
    fn = found["gemv"][np.dtype(dtype)]
    rng = np.random.default_rng(0)
    for s, n in [(128, 256), (2, 5), (256, 10), (1000, 33), (3, 3), (64, 2048)]:
        g = rng.standard_normal((s, n)).astype(dtype)
        ones = np.ones(s, dtype)
        out = np.empty(n, dtype)
        _kernels.sum_rows(fn, g, ones, out, found["ilp64"])
        assert _bits(out) == _bits(ones @ g), (s, n)


@needs_kernels
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_trainer_steps_compiled_with_the_same_history(schedule: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 12)).astype(np.float32)
    y = rng.integers(0, 5, 50)
    runs = []
    for compiled in (True, False):
        model = _mlp()
        opt = OPTIMISERS["momentum"](model.parameters())
        tr = Trainer(
            model,
            opt,
            batch_size=16,
            progress=False,
            log=None,
            lr_schedule=schedule,
            compiled=compiled,
        )
        assert tr.step_engine == ("compiled" if compiled else "eager")
        hist = tr.fit(x, y, epochs=3, eval_data=(x, y))
        runs.append(
            (model, opt, [(h["train_loss"], h["train_accuracy"], h["eval_loss"]) for h in hist])
        )
        assert tr.step == 12
    (m1, o1, h1), (m2, o2, h2) = runs
    assert h1 == h2
    _assert_same(m2, o2, m1, o1)


def test_the_trainer_says_why_a_model_steps_eagerly() -> None:
    model = _mlp(activation="softplus")
    tr = Trainer(
        model, gg.optim.SGD(model.parameters(), lr=0.1), batch_size=4, progress=False, log=None
    )
    assert tr.step_engine == "eager"
    if _fused.COMPILED:
        assert "module 1 (Softplus) cannot be compiled" in tr.why_eager
    else:
        assert "the compiled kernels are not built" in tr.why_eager


@needs_kernels
def test_the_trainer_stops_on_a_nan_loss_before_its_update() -> None:
    model = _mlp()
    opt = OPTIMISERS["momentum"](model.parameters())
    tr = Trainer(model, opt, batch_size=8, progress=False, log=None)
    x = np.ones((8, 12), np.float32)
    x[0, 0] = np.inf
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(TrainingDiverged, match="the training loss is nan at epoch 1"):
        tr.fit(x, np.zeros(8, np.int64), epochs=1)
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters(), strict=True))


@needs_kernels
def test_anomaly_mode_and_no_grad_take_the_eager_step() -> None:
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    batches = _batches((12,), 5, [8, 8], np.float32)
    with gg.detect_anomaly():
        step = _train_both(m1, o1, m2, o2, batches[:1], engine="eager")
    assert "anomaly mode" in step.why_eager
    with gg.no_grad(), pytest.raises(gg.BackwardError):
        step(*batches[1])
    assert "gradients are off" in step.why_eager


@needs_kernels
def test_a_plan_keeps_every_array_it_touches_alive() -> None:
    import gc

    model = _mlp()
    opt = OPTIMISERS["momentum"](model.parameters())
    step = compile_step(model, opt)
    x, y = _batches((12,), 5, [8], np.float32)[0]
    step(x, y)
    plan = step._plans[8].plan
    arrays = {id(p.data) for p in model.parameters()}
    arrays |= {id(v) for st in opt.state.values() for v in st.values()}
    del step, opt, model  # the model, its Tensors and the optimiser go; their arrays stay
    gc.collect()
    assert arrays <= {id(a) for a in plan.keep}
    plan.run(x, y.astype(np.int64), 0.1, 0.0)  # runs on arrays it still owns


@needs_kernels
def test_a_model_changed_after_compiling_is_trained_as_it_is_now() -> None:
    # a layer appended, then an uncompilable one: never the old structure, silently
    m1, o1, m2, o2 = _pair(_mlp, "sgd")
    step = _train_both(m1, o1, m2, o2, _batches((12,), 5, [8], np.float32))
    for m in (m1, m2):
        m.append(gg.nn.ReLU()).append(gg.nn.Linear(5, 4, rng=np.random.default_rng(5)))
    o1.params += list(m1[len(m1) - 1].parameters())
    o2.params += list(m2[len(m2) - 1].parameters())
    _train_both(m1, o1, m2, o2, _batches((12,), 4, [8], np.float32), step=step)
    assert "y4 = a3 @ W4ᵀ" in step.describe(8)
    for m in (m1, m2):
        m.append(gg.nn.get_activation("softplus"))
    batches = _batches((12,), 4, [8], np.float32)
    _train_both(m1, o1, m2, o2, batches, engine="eager", step=step)
    assert "the model changed: compile_step: module 7 (Softplus) cannot" in step.why_eager


@needs_kernels
@pytest.mark.parametrize("name", ["weight", "bias"])
def test_a_replaced_parameter_tensor_is_trained_as_the_model_has_it(name: str) -> None:
    # lin.weight = Tensor(...) after compiling: the plan must not go on reading (and
    # updating) the old Tensor's array while the eager step uses the new one
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    step = _train_both(m1, o1, m2, o2, _batches((12,), 5, [8], np.float32))
    for m, o in ((m1, o1), (m2, o2)):
        lin = m.linear_layers()[1]
        old = getattr(lin, name)
        new = gg.Tensor(np.full(old.shape, 0.05, np.float32), requires_grad=True)
        setattr(lin, name, new)
        o.params[[id(q) for q in o.params].index(id(old))] = new
    _train_both(m1, o1, m2, o2, _batches((12,), 5, [8, 8], np.float32), step=step)


def _one_step_both(
    m1: Any, o1: Any, m2: Any, o2: Any, step: Any, x: Any, y: Any, error: Any = None
) -> None:
    """One eager step on (m1, o1) and one compiled step: the same loss, logits, parameters,
    gradients and state, bit for bit; or, with ``error``, the same error from both."""
    if error is not None:
        with pytest.raises(error) as e1:
            _eager_step(m1, o1, x, y)
        with pytest.raises(error) as e2:
            step(x, y)
        assert str(e1.value) == str(e2.value)
        return
    l1, z1 = _eager_step(m1, o1, x, y)
    assert step(x, y) == l1 and _bits(step.logits) == _bits(z1)
    _assert_same(m1, o1, m2, o2)


def _mutations() -> dict[str, Callable[[Any, Any, Any], Any]]:
    """Changes made between two steps, after the step has run its plan (its guard armed):
    each gets (model, optimiser, step) and applies itself to both twins' halves; those that
    last (a context) return a context manager."""

    def new_data(m: Any, o: Any, s: Any) -> None:
        lin = m.linear_layers()[0]
        lin.weight.data = lin.weight.data * 0.5

    def new_tensor(m: Any, o: Any, s: Any) -> None:
        lin = m.linear_layers()[1]
        old, new = lin.bias, gg.Tensor(np.full(lin.bias.shape, 0.1, np.float32), requires_grad=True)
        lin.bias = new
        o.params[[id(q) for q in o.params].index(id(old))] = new

    def new_state(m: Any, o: Any, s: Any) -> None:
        st = o.state[0]
        st["momentum_buffer"] = st["momentum_buffer"] * 0.5

    def new_state_dict(m: Any, o: Any, s: Any) -> None:
        o.state = {i: {k: v.copy() for k, v in st.items()} for i, st in o.state.items()}

    def set_attr(name: str, value: Any) -> Callable[[Any, Any, Any], None]:
        return lambda m, o, s: setattr(o, name, value)

    def frozen(m: Any, o: Any, s: Any) -> None:
        m.linear_layers()[0].weight.requires_grad = False

    def appended(m: Any, o: Any, s: Any) -> None:
        m.append(gg.nn.ReLU()).append(gg.nn.Linear(5, 5, rng=np.random.default_rng(5)))
        o.params += list(m[len(m) - 1].parameters())

    def swapped(m: Any, o: Any, s: Any) -> None:  # the same name -> module map, another order
        mods = m._modules  # 12-12-12-5: layers 0 and 1 swap places, 1 running first
        for key in ("0", "1", "4"):
            mods[key] = mods.pop(key)

    other_layout = "rows" if _blas.layout() == "columns" else "columns"
    other_blas = "numpy" if _blas.gemm_addresses() else "mkl"

    def dropped(m: Any, o: Any, s: Any) -> None:  # the last layer no longer trained
        del o.params[-2:]

    def new_list(m: Any, o: Any, s: Any) -> None:
        o.params = o.params[:-1]

    def new_optimizer(m: Any, o: Any, s: Any) -> None:  # another object, the same state dict
        if s is not None:
            again = gg.optim.SGD(o.params, lr=o.lr, momentum=o.momentum)
            again.state = o.state
            s.optimizer = again

    return {
        "another optimiser given to the step": new_optimizer,
        "BLAS changed": lambda m, o, s, to=other_blas: gg.set_blas(to) and None,
        "p.data replaced": new_data,
        "parameters dropped from the optimiser": dropped,
        "the optimiser's list replaced": new_list,
        "a parameter Tensor replaced": new_tensor,
        "momentum buffer replaced": new_state,
        "optimiser state replaced": new_state_dict,
        "momentum changed": set_attr("momentum", 0.5),
        "weight decay changed": set_attr("weight_decay", 1e-3),
        "nesterov on": set_attr("nesterov", True),
        "a parameter frozen": frozen,
        "a layer appended": appended,
        "modules reordered": swapped,
        "layout changed": lambda m, o, s, to=other_layout: _blas.set_layout(to) and None,
        "anomaly mode": lambda m, o, s: gg.detect_anomaly(),
        "no_grad": lambda m, o, s: gg.no_grad(),
    }


@needs_kernels
@pytest.mark.parametrize("change", sorted(_mutations()))
def test_a_change_between_steps_is_seen_before_the_plan_runs_again(change: str) -> None:
    # after a step that ran its plan, the next call checks a snapshot of what the checks read
    # (compiled._arm); each change here must send it down the checked path, which then does
    # what the eager step does (bit for bit), never the old plan
    m1, o1, m2, o2 = _pair(lambda: _mlp((12, 12, 12, 5)), "momentum")
    batches = _batches((12,), 5, [8, 8, 8], np.float32)
    step = _train_both(m1, o1, m2, o2, batches[:2])
    guard = step._guard
    assert guard is not None and guard.hits == 1  # the second call took the guarded path
    if change == "BLAS changed" and "error" in _blas.find_mkl():
        pytest.skip(f"MKL: {_blas.find_mkl()['error']}")
    layout, blas = _blas.layout(), gg.blas_info()["requested"]
    try:
        mutate = _mutations()[change]
        contexts = [mutate(m, o, s) for m, o, s in ((m1, o1, None), (m2, o2, step))]
        x, y = batches[2]
        with contextlib.ExitStack() as stack:
            for c in contexts:
                if c is not None:
                    stack.enter_context(c)
            error = RuntimeError if change == "no_grad" else None  # the eager step's own
            _one_step_both(m1, o1, m2, o2, step, x, y, error)
        assert guard.hits == 1, "the guard ran the old plan"
        assert step._guard is not guard
    finally:
        gg.set_blas(blas)
        _blas.set_layout(layout)


@needs_kernels
@pytest.mark.parametrize(
    "change", ["betas", "eps", "weight decay", "one step count", "all step counts", "exp_avg"]
)
def test_a_change_to_adam_between_steps_is_seen(change: str) -> None:
    # Adam's guard passes t = step + 1 and advances the counts, as the checked path
    m1, o1, m2, o2 = _pair(_mlp, "adam")
    batches = _batches((12,), 5, [8, 8, 8, 8], np.float32)
    step = _train_both(m1, o1, m2, o2, batches[:3])
    guard = step._guard
    assert guard is not None and guard.hits == 2
    assert [st["step"] for st in o2.state.values()] == [3] * 6
    for o in (o1, o2):
        if change == "betas":
            o.betas = (0.8, 0.99)
        elif change == "eps":
            o.eps = 1e-6
        elif change == "weight decay":
            o.weight_decay = 1e-2
        elif change == "one step count":  # the eager step's own bias corrections per parameter
            o.state[2]["step"] = 7
        elif change == "all step counts":
            for st in o.state.values():
                st["step"] = 10
        else:
            o.state[0]["exp_avg"] = o.state[0]["exp_avg"] * 0.5
    _one_step_both(m1, o1, m2, o2, step, *batches[3])
    if change == "all step counts":  # still one count: the same plan runs, at t = 11
        assert guard.hits == 3 and all(st["step"] == 11 for st in o2.state.values())
    else:
        assert guard.hits == 2, "the guard ran the old plan"


@needs_kernels
@pytest.mark.parametrize(
    "batch",
    ["another size", "float64", "strided", "int32 labels", "strided labels", "out of range"],
)
def test_a_batch_unlike_the_last_takes_the_checked_path(batch: str) -> None:
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    batches = _batches((12,), 5, [8, 8], np.float32)
    step = _train_both(m1, o1, m2, o2, batches)
    guard = step._guard
    assert guard is not None and guard.hits == 1
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((8, 12)).astype(np.float32), rng.integers(0, 5, 8)
    if batch == "another size":
        x, y = x[:6].copy(), y[:6].copy()
    elif batch == "float64":
        x = x.astype(np.float64)
    elif batch == "strided":
        x = np.repeat(x, 2, axis=1)[:, ::2]
    elif batch == "int32 labels":
        y = y.astype(np.int32)
    elif batch == "strided labels":
        y = np.repeat(y, 2)[::2]
    else:
        y[3] = 5
    _one_step_both(m1, o1, m2, o2, step, x, y, ValueError if batch == "out of range" else None)
    assert guard.hits == 1, "the guard ran the plan on a batch it was not armed for"


@needs_kernels
def test_a_guarded_step_is_the_checked_step() -> None:
    # many steps in a row take the guarded path, with the same bits as the eager step, and
    # .grad set at every step even where the user cleared it
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    batches = _batches((12,), 5, [8] * 6, np.float32)
    step = _train_both(m1, o1, m2, o2, batches[:3])
    for x, y in batches[3:]:
        o2.zero_grad()
        _train_both(m1, o1, m2, o2, [(x, y)], step=step)
    assert step._guard is not None and step._guard.hits == 5
    x, y = batches[0]
    x = x.copy()
    x[0, 0] = np.inf  # skip_nonfinite: no update, as the checked path
    before = [p.data.copy() for p in m2.parameters()]
    assert not np.isfinite(step(x, y, skip_nonfinite=True))
    assert all(np.array_equal(a, p.data) for a, p in zip(before, m2.parameters(), strict=True))


@needs_kernels
@pytest.mark.parametrize("labels", [np.uint8, np.int32, "tensor"])
def test_tensor_batches_and_narrow_labels_take_the_guarded_path(labels: Any) -> None:
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    step = compile_step(m2, o2)
    for k, (x, y) in enumerate(_batches((12,), 5, [8] * 4, np.float32)):
        l1, z1 = _eager_step(m1, o1, x, y)
        if labels == "tensor":
            xs, ys = gg.tensor(x), gg.tensor(y)
        else:
            xs, ys = x, y.astype(labels)
        assert step(xs, ys) == l1 and _bits(step.logits) == _bits(z1)
        _assert_same(m1, o1, m2, o2)
        assert step._guard is not None and step._guard.hits == k


@needs_kernels
def test_parameters_outside_the_optimiser_add_up_their_gradients() -> None:
    # an optimiser over the last layer only: the others are not updated, and nothing zeroes
    # their .grad, so the eager step's backward adds each step's gradient to it
    m1, m2 = _mlp(), _mlp()
    o1 = gg.optim.SGD(m1.linear_layers()[-1].parameters(), lr=0.1, momentum=0.9)
    o2 = gg.optim.SGD(m2.linear_layers()[-1].parameters(), lr=0.1, momentum=0.9)
    step = _train_both(m1, o1, m2, o2, _batches((12,), 5, [8] * 4, np.float32))
    assert step._guard is None  # such plans take the checked path
    w = m2.linear_layers()[0].weight
    w.grad = None  # cleared by hand: the next step's gradient alone, as eager
    m1.linear_layers()[0].weight.grad = None
    _train_both(m1, o1, m2, o2, _batches((12,), 5, [8], np.float32, seed=4), step=step)


@needs_kernels
def test_a_step_with_its_guard_is_freed_at_once() -> None:
    # the guard holds the plan (megabytes of arrays) and what the checks read, but not the
    # step: no reference cycle, so the memory goes when the last reference does
    m = _mlp()
    o = OPTIMISERS["momentum"](m.parameters())
    step = compile_step(m, o)
    for x, y in _batches((12,), 5, [8, 8], np.float32):
        step(x, y)
    assert step._guard is not None and step._guard.hits == 1
    ref = weakref.ref(step)
    gc.disable()
    try:
        del step
        assert ref() is None
    finally:
        gc.enable()


@needs_kernels
def test_a_frozen_parameter_is_left_alone() -> None:
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    for m in (m1, m2):
        m[0].weight.requires_grad = False
    step = _train_both(m1, o1, m2, o2, _batches((12,), 5, [8, 8], np.float32), engine="eager")
    assert "frozen" in step.why_eager


def test_two_threads_cannot_share_a_step() -> None:
    import threading

    model = _mlp()
    step = compile_step(model, OPTIMISERS["sgd"](model.parameters()))
    x, y = _batches((12,), 5, [8], np.float32)[0]
    step._busy.acquire()  # as if another thread were inside the call
    try:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                step(x, y)
            except RuntimeError as e:
                errors.append(e)

        t = threading.Thread(target=call)
        t.start()
        t.join()
    finally:
        step._busy.release()
    assert len(errors) == 1 and "called from two threads at once" in str(errors[0])
    step(x, y)  # and alone it runs


@needs_kernels
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "elu", "leaky_relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_every_lecture_activation_trains_exactly(activation: str, dtype: Any, layout: str) -> None:
    # NumPy's own tanh/exp/expm1 loops and graphgrad's arithmetic around them: the same bits,
    # on inputs large enough to reach the saturated and overflowing ends of exp and tanh
    previous = _blas.set_layout(layout)
    try:
        for opt in ("momentum", "adam"):
            m1, o1, m2, o2 = _pair(lambda: _mlp((12, 64, 48, 5), dtype, activation), opt)
            batches = _batches((12,), 5, [8, 3, 70, 8], dtype)
            batches = [(x * 30, y) for x, y in batches]
            step = _train_both(m1, o1, m2, o2, batches)
        assert "a1 = " + activation in step.describe(8)
    finally:
        _blas.set_layout(previous)


@pytest.mark.parametrize("ufunc", [np.tanh, np.exp, np.expm1, np.minimum])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_loops_are_found_and_give_numpys_bits(ufunc: Any, dtype: Any) -> None:
    from graphgrad.compiled import numpy_loop

    found = numpy_loop(ufunc, dtype)
    assert found is not None and found[0] != 0  # (checked against the ufunc when found)
    assert numpy_loop(np.add, np.int8) is None  # no float loop of that dtype: refused
    assert numpy_loop(len, dtype) is None


@needs_kernels
@pytest.mark.parametrize(
    "params",
    [
        {"dataset": "spiral", "classes": 3, "layers": [8, 6], "activation": "tanh"},
        {"dataset": "xor", "layers": [4], "activation": "relu", "optimizer": "adam"},
        {"dataset": "moons", "layers": [5, 5], "activation": "elu", "optimizer": "momentum"},
    ],
)
def test_the_playground_steps_compiled_exactly(params: dict[str, Any]) -> None:
    from graphgrad.playground._session import Session

    fast, slow = Session(params), Session(params)
    slow._compiled_step = lambda: None  # type: ignore[method-assign]  # the eager step
    assert fast._compiled_step() is not None
    for _ in range(3):
        fast.step(7)
        slow.step(7)
    assert fast.step_count == slow.step_count == 21
    for p, q in zip(fast.model.parameters(), slow.model.parameters(), strict=True):
        assert _bits(p.data) == _bits(q.data)
    assert (fast.train_loss, fast.test_loss) == (slow.train_loss, slow.test_loss)
    # regression (mse) and penalties keep the eager step
    assert Session({"dataset": "sine", "features": ["x1"]})._compiled_step() is None
    assert Session({**params, "reg": "l2", "reg_rate": 0.01})._compiled_step() is None


@needs_kernels
@pytest.mark.parametrize("how", ["one Tensor", "one array"])
def test_tied_weights_take_the_eager_step(how: str) -> None:
    # two layers with one weight: the eager step adds both gradients, a plan would not
    def model_fn() -> Any:
        m = gg.nn.Sequential(
            gg.nn.Linear(6, 6, rng=np.random.default_rng(1)),
            gg.nn.ReLU(),
            gg.nn.Linear(6, 6, rng=np.random.default_rng(2)),
        )
        if how == "one Tensor":
            m[2].weight = m[0].weight
        else:
            m[2].weight.data = m[0].weight.data.view()  # another array, the same memory
        return m

    m1, o1, m2, o2 = _pair(model_fn, "sgd")
    step = _train_both(m1, o1, m2, o2, _batches((6,), 6, [5, 5], np.float32), engine="eager")
    assert "share a parameter" in step.why_eager


def test_graphgrad_info_says_whether_steps_are_compiled() -> None:
    import json

    from test_blas import graphgrad_info

    proc = graphgrad_info()
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("steps:"))
    info = json.loads(graphgrad_info("--json").stdout)["compiled_steps"]
    if _fused.COMPILED:
        assert info["available"] and "tanh" in info["activations"]
        assert "compile MLP steps" in line and "tanh, sigmoid, elu, leaky_relu" in line
    else:
        assert not info["available"] and "eager only" in line
    off = graphgrad_info(GRAPHGRAD_PURE_PYTHON="1")
    assert "steps:     eager only (the compiled kernels are not built" in off.stdout


@needs_kernels
def test_adam_with_different_step_counts_takes_the_eager_step() -> None:
    # a plan has one step count t for Adam's bias corrections: parameters that took different
    # numbers of steps (a layer added later) take the eager step, which counts each one
    m1, o1, m2, o2 = _pair(_mlp, "adam")
    batches = _batches((12,), 5, [8, 8, 8], np.float32)
    _train_both(m1, o1, m2, o2, batches[:1])
    for o in (o1, o2):
        o.state[0]["step"] = 7
    step = _train_both(m1, o1, m2, o2, batches[1:], engine="eager")
    assert "different numbers of steps" in step.why_eager
    assert not step._plans  # decided before any plan was built


def _reduced_eager_step(model: Any, opt: Any, x: Any, y: Any, weight: float) -> float:
    """The eager step of data parallelism on one process: backward seeded with the weight
    (as ``GradientReducer.backward``), the sum over processes the identity."""
    logits = model(x)
    loss = gg.cross_entropy(logits, y)
    opt.zero_grad()
    loss.backward(np.full(loss.shape, weight, dtype=loss.data.dtype))
    opt.step()
    return float(loss.data)


def _reduced_both(
    m1: Any, o1: Any, m2: Any, o2: Any, step: CompiledStep, x: Any, y: Any, into: dict[str, Any]
) -> None:
    """One reduced step of m2 (gradients into ``into["write"]``, between() doubles them into
    ``into["read"]`` and sets the learning rate, as a schedule does, at ``into["weight"]``)
    and the eager step it stands for on m1; the two must agree bit for bit."""
    weight, write, read = into["weight"], into["write"], into["read"]
    lr = o1.lr * 0.9  # a new rate every step: the update must read it after between()
    logits = m1(x)
    loss = gg.cross_entropy(logits, y)
    o1.zero_grad()
    loss.backward(np.full(loss.shape, weight, dtype=loss.data.dtype))
    for p in m1.parameters():
        p.grad = np.asarray(p.grad) + np.asarray(p.grad)
    o1.lr = lr
    o1.step()
    seen: list[float] = []

    def between(loss: float) -> bool:
        seen.append(loss)
        o2.lr = lr
        for p in m2.parameters():
            np.add(write[id(p)], write[id(p)], out=read[id(p)])
            p.grad = read[id(p)]
        return True

    value = step.reduced_step(x, y, weight=weight, write=write, read=read, between=between)
    assert step.engine == "kernels", step.why_eager
    assert [value] == [float(loss.data)] == seen
    assert step.logits is not None and _bits(step.logits) == _bits(logits.data)
    _assert_same(m1, o1, m2, o2)


def _reducer_arrays(model: Any) -> dict[str, Any]:
    return {
        "weight": 0.5,
        "write": {id(p): np.empty_like(p.data) for p in model.parameters()},
        "read": {id(p): np.empty_like(p.data) for p in model.parameters()},
    }


@needs_kernels
@pytest.mark.parametrize("opt", ["momentum", "nesterov+wd", "adam"])
@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_a_reduced_step_writes_weighted_gradients_and_updates_from_the_sums(
    opt: str, layout: str
) -> None:
    # gradients into the "reducer's" arrays, then between() (here: the sum over one process,
    # a copy into the read arrays, doubled), then the update from those: the eager step with
    # the same weighted seed and the same doubled gradients gives the same bits
    before = _blas.set_layout(layout)
    try:
        m1, o1, m2, o2 = _pair(lambda: _mlp((12, 40, 24, 5), activation="tanh"), opt)
        step = compile_step(m2, o2)
        into = _reducer_arrays(m2)
        for (x, y), weight in zip(
            _batches((12,), 5, [16, 16, 9, 16], np.float32), [0.5, 0.5, 0.25, 1.0], strict=True
        ):
            _reduced_both(m1, o1, m2, o2, step, x, y, {**into, "weight": weight})
        assert len(step._plans) == 3  # one per (batch size, weight)
    finally:
        _blas.set_layout(before)


@needs_kernels
def test_a_reduced_step_that_is_told_not_to_update_changes_nothing() -> None:
    model = _mlp()
    opt = OPTIMISERS["adam"](model.parameters())
    step = compile_step(model, opt)
    write = {id(p): np.empty_like(p.data) for p in model.parameters()}
    (x, y), (x2, y2) = _batches((12,), 5, [8, 8], np.float32)
    assert step.reduced_step(x, y, weight=1.0, write=write, read=write, between=lambda _l: True)
    before = [p.data.copy() for p in model.parameters()]
    state = {i: {k: np.copy(v) for k, v in s.items()} for i, s in opt.state.items()}
    value = step.reduced_step(x2, y2, weight=1.0, write=write, read=write, between=lambda _l: False)
    assert value is not None and step.engine == "kernels"
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters(), strict=True))
    for i, st in opt.state.items():
        for k, v in st.items():
            assert np.array_equal(state[i][k], v), (i, k)


@needs_kernels
def test_a_reduced_step_that_cannot_run_says_why_and_runs_nothing() -> None:
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    step = compile_step(m2, o2)
    ((x, y),) = _batches((12,), 5, [8], np.float32)
    good = {id(p): np.empty_like(p.data) for p in m2.parameters()}
    calls: list[float] = []
    for write, read, why in [
        ({**good, id(m2.parameters()[0]): np.empty((3, 3), np.float32)}, good, "does not fit"),
        (good, {**good, id(m2.parameters()[1]): np.empty(16)}, "does not fit"),  # float64
        (good, {}, "does not fit"),
    ]:
        value = step.reduced_step(x, y, weight=1.0, write=write, read=read, between=calls.append)
        assert value is None and step.engine == "eager" and why in step.why_eager
    ((x0, y0),) = _batches((12,), 5, [0], np.float32)
    assert (
        step.reduced_step(x0, y0, weight=1.0, write=good, read=good, between=calls.append) is None
    )
    assert "an empty batch" in step.why_eager
    assert not calls
    _assert_same(m1, o1, m2, o2)


_ACTIVATION_LAYERS: dict[str, Callable[[], gg.nn.Module]] = {
    "relu": gg.nn.ReLU,
    "tanh": gg.nn.Tanh,
    "sigmoid": gg.nn.Sigmoid,
    "leaky_relu": gg.nn.LeakyReLU,
    "elu": gg.nn.ELU,
    "identity": gg.nn.Identity,
}


def _random_model(
    sizes: list[int], biases: list[bool], acts: list[str], dtype: Any, seed: int
) -> gg.nn.Module:
    r = np.random.default_rng(seed)
    layers: list[gg.nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(gg.nn.Linear(sizes[k], sizes[k + 1], bias=biases[k], rng=r, dtype=dtype))
        if k < len(sizes) - 2:
            layers.append(_ACTIVATION_LAYERS[acts[k]]())
    return gg.nn.Sequential(*layers)


def _draw_model(
    rng: np.random.Generator, optimisers: list[str]
) -> tuple[Callable[[], Any], list[int], Any, str, str, int]:
    """A random model to build (1-4 layers, some without bias, any activation, float32 or
    float64; an input or a hidden layer of width one now and then), its sizes and dtype, a
    layout, one of ``optimisers`` and the model's seed."""
    depth = int(rng.integers(1, 5))
    sizes = [int(rng.choice([1, 3, 5, 12, 17, 33]))]
    sizes += [int(rng.choice([1, 2, 4, 7, 16, 31, 40])) for _ in range(depth - 1)]
    sizes += [int(rng.choice([2, 4, 7, 16, 31, 40]))]  # classes
    biases = [bool(rng.random() < 0.7) for _ in range(depth)]
    acts = [str(rng.choice(list(_ACTIVATION_LAYERS))) for _ in range(depth - 1)]
    dtype = [np.float32, np.float64][int(rng.integers(2))]
    layout = str(rng.choice(["rows", "columns"]))
    opt = str(rng.choice(optimisers))
    seed = int(rng.integers(1 << 30))
    build = functools.partial(_random_model, sizes, biases, acts, dtype, seed)
    return build, sizes, dtype, layout, opt, seed


def _eager_expected(sizes: list[int], opt: str, S: int) -> bool:
    """Whether a batch of S takes the eager step, by CompiledStep's rules for products with a
    side of one: NumPy's dot products (one sample through a layer of width one, a layer of one
    input and one output), fused_backward with one sample or a layer of width one."""
    narrow = min(sizes) == 1
    one_one = any(a == b == 1 for a, b in itertools.pairwise(sizes))
    return (S == 1 and narrow) or one_one or (opt == "fused_backward" and (S == 1 or narrow))


@needs_kernels
@pytest.mark.parametrize("block", range(4))
def test_random_models_train_exactly(block: int) -> None:
    # Random models, 15 per block: 1-4 layers, some without bias, every activation and
    # optimiser, float32 and float64, both layouts, layers of width one, batch sizes 1-130
    # (NumPy's GEMV calls and its own loop, the GEMMs' small-matrix and blocked paths). Every
    # one steps as the eager step does, bit for bit (what no plan mirrors by the eager step
    # itself, _eager_expected): losses,
    # logits, weights, gradients and optimiser state, all from a plan. (When the eager step
    # made a bias-free layer a plain matmul, a plan that mirrored it as linear failed 57 of
    # 150 such models; both now run it as the linear op.)
    rng = np.random.default_rng(1000 + block)
    for _ in range(15):
        build, sizes, dtype, layout, opt, seed = _draw_model(rng, list(OPTIMISERS))
        previous = _blas.set_layout(layout)
        try:
            m1, o1, m2, o2 = _pair(build, opt)
            batches = _batches(
                (sizes[0],),
                sizes[-1],
                [int(s) for s in rng.choice([1, 2, 5, 16, 40, 130], 3)],
                dtype,
                seed=seed,
            )
            step = compile_step(m2, o2)
            for x, y in batches:
                eager = _eager_expected(sizes, opt, len(x)) or any(
                    ly.linear.out_features == 1 and ly.linear.bias is not None
                    for ly in step._layers
                )  # (a layer of one output with a bias: NumPy's dot product for its bias)
                _train_both(m1, o1, m2, o2, [(x, y)], "eager" if eager else "kernels", step)
        finally:
            _blas.set_layout(previous)


def _reduced_changes() -> dict[str, Callable[[Any, dict[str, Any]], None]]:
    def new_dicts(m: Any, into: dict[str, Any]) -> None:
        into["write"], into["read"] = dict(into["write"]), dict(into["read"])

    def entry(key: str) -> Callable[[Any, dict[str, Any]], None]:
        def replace(m: Any, into: dict[str, Any]) -> None:
            p = m.parameters()[0]
            into[key][id(p)] = np.empty_like(p.data)  # in place: the plan's array is gone

        return replace

    def weight(m: Any, into: dict[str, Any]) -> None:
        into["weight"] = 0.25

    def p_data(m: Any, into: dict[str, Any]) -> None:
        p = m.parameters()[2]
        p.data = p.data.copy()

    return {
        "new dicts": new_dicts,
        "a write entry replaced": entry("write"),
        "a read entry replaced": entry("read"),
        "another weight": weight,
        "p.data replaced": p_data,
    }


@needs_kernels
@pytest.mark.parametrize("opt", ["momentum", "adam"])
@pytest.mark.parametrize("change", sorted(_reduced_changes()))
def test_reduced_steps_take_their_guard_until_something_changes(opt: str, change: str) -> None:
    # a reduced (data-parallel) step arms a guard too: the next reduced step with the same
    # model, optimiser, batch shape, weight and reducer arrays runs the plan without the
    # checks; each change here must take the checked path (a new plan where the arrays or
    # the weight changed), and every step is the eager one, bit for bit
    m1, o1, m2, o2 = _pair(lambda: _mlp((12, 12, 12, 5)), opt)
    step = compile_step(m2, o2)
    into = _reducer_arrays(m2)
    batches = _batches((12,), 5, [8] * 5, np.float32)
    for x, y in batches[:3]:
        _reduced_both(m1, o1, m2, o2, step, x, y, into)
    guard = step._guard
    assert guard is not None and guard.hits == 2
    _reduced_changes()[change](m2, into)  # (the eager twin reads the same weight)
    _reduced_both(m1, o1, m2, o2, step, *batches[3], into)
    assert guard.hits == 2, "the guard ran the old plan"
    guard = step._guard
    assert guard is not None and guard.hits == 0  # armed again by the checked call
    _reduced_both(m1, o1, m2, o2, step, *batches[4], into)
    assert guard.hits == 1


@needs_kernels
def test_plain_and_reduced_steps_do_not_take_each_others_guard() -> None:
    # each kind of call leaves the step as a guarded call of its kind expects (its logits,
    # its plan's arrays); the other kind takes the checked path
    m1, o1, m2, o2 = _pair(_mlp, "momentum")
    step = compile_step(m2, o2)
    into = _reducer_arrays(m2)
    batches = _batches((12,), 5, [8] * 6, np.float32)
    _one_step_both(m1, o1, m2, o2, step, *batches[0], None)
    _one_step_both(m1, o1, m2, o2, step, *batches[1], None)
    plain = step._guard
    assert plain is not None and plain.hits == 1
    _reduced_both(m1, o1, m2, o2, step, *batches[2], into)
    _reduced_both(m1, o1, m2, o2, step, *batches[3], into)
    reduced = step._guard
    assert plain.hits == 1 and reduced is not plain and reduced.hits == 1
    _one_step_both(m1, o1, m2, o2, step, *batches[4], None)
    assert reduced.hits == 1 and step._guard is not reduced
    _reduced_both(m1, o1, m2, o2, step, *batches[5], into)
    assert reduced.hits == 1


@needs_kernels
def test_random_models_take_reduced_steps_exactly() -> None:
    # Random models (as above) in data-parallel steps: four reduced steps each, two weights,
    # so that the guard runs some of them; every one is the eager step's, bit for bit.
    # (fused_backward is left out: DistributedTrainer refuses it.)
    rng = np.random.default_rng(77)
    optimisers = [name for name in OPTIMISERS if name != "fused_backward"]
    for _ in range(12):
        while True:  # a model and a batch size that a plan takes
            build, sizes, dtype, layout, opt, seed = _draw_model(rng, optimisers)
            S = int(rng.choice([1, 2, 5, 16, 40]))
            if not _eager_expected(sizes, opt, S):
                break
        previous = _blas.set_layout(layout)
        try:
            m1, o1, m2, o2 = _pair(build, opt)
            step = compile_step(m2, o2)
            into = _reducer_arrays(m2)
            batches = _batches((sizes[0],), sizes[-1], [S] * 4, dtype, seed=seed)
            weights, hits = [0.5, 0.5, 0.5, 0.25], [0, 1, 2, 0]  # the last: a new plan
            for (x, y), weight, hit in zip(batches, weights, hits, strict=True):
                _reduced_both(m1, o1, m2, o2, step, x, y, {**into, "weight": weight})
                assert step._guard is not None and step._guard.hits == hit
        finally:
            _blas.set_layout(previous)


def _resized_mlp() -> tuple[gg.nn.MLP, gg.optim.SGD, np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    y = np.random.default_rng(0).integers(0, 4, 16)
    m = gg.nn.MLP(6, [5], 4, rng=np.random.default_rng(1))
    return m, gg.optim.SGD(m.parameters(), 0.1), x, y


def _resize(m: gg.nn.MLP) -> None:
    """Give the hidden layer 3 units by assigning new arrays (in_features/out_features stay)."""
    r = np.random.default_rng(7)
    m[0].weight.data = r.standard_normal((3, 6)).astype(np.float32)
    m[0].bias.data = np.zeros(3, np.float32)
    m[2].weight.data = r.standard_normal((4, 3)).astype(np.float32)


@needs_kernels
@pytest.mark.parametrize("fresh", [False, True])
def test_resized_parameter_arrays_take_the_eager_step(fresh: bool) -> None:
    m, opt, x, y = _resized_mlp()
    step = compile_step(m, opt)
    step(x, y)
    assert step.engine == "kernels"
    _resize(m)
    if fresh:
        step = compile_step(m, opt)
    want = float(gg.cross_entropy(m(x), y).data)
    assert step(x, y) == want
    assert step.engine == "eager"
    assert "layer 0's weight has shape (3, 6)" in step.why_eager
    assert "(5, 6)" in step.why_eager
    assert m[0].weight.shape == (3, 6)  # the eager step updated the arrays as they are
