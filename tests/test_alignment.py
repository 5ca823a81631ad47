"""Arrays that a step's kernels stream through start on a cache line (64 bytes).

NumPy's arrays start wherever malloc puts them, 16 bytes apart, so without graphgrad's
allocator most of these checks would fail: a model has several parameters, each with an
even chance or worse of an aligned start.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _memory


def offset(a: Any) -> int:
    return int(np.asarray(a).__array_interface__["data"][0] % 64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
@pytest.mark.parametrize("shape", [(), (0,), (1,), (3,), (5, 0), (7, 13), (256, 784), (2, 3, 5)])
def test_empty_and_zeros_start_on_a_cache_line(shape: tuple[int, ...], dtype: Any) -> None:
    junk = [np.empty(k, np.uint8) for k in (16, 48, 80)]  # so malloc's next block moves
    a = _memory.empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    assert a.flags.writeable and (a.size == 0 or offset(a) == 0)
    z = _memory.zeros_like(np.ones(shape, dtype))
    assert z.shape == shape and z.dtype == dtype and not z.any()
    assert z.size == 0 or offset(z) == 0
    del junk


def test_aligned_copies_only_what_is_off_a_cache_line() -> None:
    buf = np.arange(100, dtype=np.float32)
    start = (-buf.__array_interface__["data"][0] % 64) // 4
    on = buf[start : start + 32]
    off = buf[start + 4 : start + 36]  # 16 bytes later
    assert _memory.aligned(on) is on
    moved = _memory.aligned(off)
    assert moved is not off and offset(moved) == 0 and np.array_equal(moved, off)
    strided = buf[start::2][:20]
    assert np.array_equal(_memory.aligned(strided), strided)
    assert _memory.aligned(strided).flags.c_contiguous
    fortran = np.asfortranarray(np.arange(35.0).reshape(5, 7))[:, :]
    for a in (_memory.aligned(fortran), _memory.zeros_like(fortran), _memory.empty_like(fortran)):
        assert a.flags.f_contiguous and not a.flags.c_contiguous and offset(a) == 0
    assert np.array_equal(_memory.aligned(fortran), fortran)
    frozen = np.ones(16, np.float32)
    frozen.flags.writeable = False
    assert _memory.aligned(frozen).flags.writeable  # parameters are updated in place


def test_align_zero_leaves_placement_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_memory, "ALIGN", 0)
    a = _memory.empty((5, 7), np.float32)
    assert a.flags.owndata and a.shape == (5, 7)  # a plain np.empty
    b = np.arange(5.0)[1:]
    assert _memory.aligned(b) is b


def test_parameters_optimiser_state_and_plan_buffers_are_aligned() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 20)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    for opt_cls, keys in (
        (gg.optim.SGD, ("momentum_buffer",)),
        (gg.optim.Adam, ("exp_avg", "exp_avg_sq")),
    ):
        model = gg.nn.MLP(20, [24, 8], 3, rng=np.random.default_rng(1))
        kw = {"momentum": 0.9} if opt_cls is gg.optim.SGD else {}
        opt = opt_cls(model.parameters(), 1e-2, **kw)
        assert [offset(p.data) for p in model.parameters()] == [0] * 6
        step = gg.compile_step(model, opt)
        step(x, y)
        assert step.engine == "kernels" or step.why_eager
        states = [st[k] for st in opt.state.values() for k in keys]
        assert len(states) == 6 * len(keys) and [offset(s) for s in states] == [0] * len(states)
        if step.engine == "kernels":
            plan = step._plans[32].plan
            kept = [a for a in plan.keep if type(a) is np.ndarray and a.size and a is not x]
            assert len(kept) > 10 and {offset(a) for a in kept if a.dtype == np.float32} == {0}


def test_the_eager_update_and_a_restored_optimiser_keep_aligned_state() -> None:
    model = gg.nn.MLP(20, [24], 3, rng=np.random.default_rng(1))
    opt = gg.optim.SGD(model.parameters(), 1e-2, momentum=0.9)
    x = gg.tensor(np.ones((4, 20), np.float32))
    loss = gg.cross_entropy(model(x), np.array([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    assert [offset(st["momentum_buffer"]) for st in opt.state.values()] == [0] * 4
    saved = opt.state_dict()
    again = gg.optim.SGD(model.parameters(), 1e-2, momentum=0.9)
    again.load_state_dict(saved)
    bufs = [st["momentum_buffer"] for st in again.state.values()]
    assert [offset(b) for b in bufs] == [0] * 4
    for b, st in zip(bufs, opt.state.values(), strict=True):
        assert np.array_equal(b, st["momentum_buffer"]) and b is not st["momentum_buffer"]


def test_an_aligned_model_trains_to_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the arrays start changes no result: the same model built with NumPy's own
    placement gives the same weights, bit for bit, after compiled steps."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 30)).astype(np.float32)
    y = rng.integers(0, 4, 64)

    def trained(align: int) -> list[np.ndarray]:
        monkeypatch.setattr(_memory, "ALIGN", align)
        model = gg.nn.MLP(30, [40, 20], 4, rng=np.random.default_rng(1))
        step = gg.compile_step(model, gg.optim.SGD(model.parameters(), 0.05, momentum=0.9))
        for _ in range(5):
            step(x, y)
        return [np.array(p.data) for p in model.parameters()]

    for a, b in zip(trained(64), trained(0), strict=True):
        assert np.array_equal(a, b)
