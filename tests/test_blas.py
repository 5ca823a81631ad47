"""gg.set_blas: 2-D float matrix products in NumPy's BLAS or Intel MKL ("auto", the default,
times both where MKL is installed and keeps the faster, cached per machine and configuration);
gg.set_num_threads; ``graphgrad info``.

The calibration's logic (choice, cache, corruption, overrides) is tested with a fake clock and
a fake GEMM, so no test depends on how fast anything runs.

The MKL tests run where the ``mkl`` wheel is installed; scripts/test.sh installs it on x86-64
and sets GRAPHGRAD_REQUIRE_MKL=1, so there a missing MKL fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _blas

MKL = "error" not in _blas.find_mkl()
needs_mkl = pytest.mark.skipif(not MKL, reason="Intel MKL (pip install mkl) is not installed")
ONEDNN = "error" not in _blas.find_onednn()
needs_onednn = pytest.mark.skipif(
    not ONEDNN, reason="oneDNN (pip install onednn-cpu-gomp) is not installed"
)


def test_mkl_is_present_where_required() -> None:
    if os.environ.get("GRAPHGRAD_REQUIRE_MKL"):
        assert MKL, _blas.find_mkl().get("error")
        assert ONEDNN, _blas.find_onednn().get("error")


#: MKL and oneDNN, each where installed: the tests of what a library does once selected
LIBRARIES = [pytest.param("mkl", marks=needs_mkl), pytest.param("onednn", marks=needs_onednn)]


@pytest.fixture
def mkl() -> Iterator[None]:
    with gg.using_blas("mkl"):
        yield


@pytest.fixture(params=LIBRARIES)
def library(request: pytest.FixtureRequest) -> Iterator[str]:
    with gg.using_blas(request.param):
        yield request.param


def test_using_blas_restores_the_previous_library_after_an_error() -> None:
    before = gg.blas()
    with pytest.raises(ZeroDivisionError), gg.using_blas("numpy"):
        1 / 0  # noqa: B018
    assert gg.blas() == before


def _expected_auto() -> str:
    """What "auto" picks here: NumPy's BLAS without MKL, else the cached calibration's choice
    for this configuration (the same file a subprocess reads)."""
    return _blas.calibrate()["choice"] if MKL or ONEDNN else "numpy"


def test_default_is_auto_and_unknown_names_are_refused() -> None:
    if os.environ.get("GRAPHGRAD_BLAS"):
        pytest.skip("GRAPHGRAD_BLAS is set")
    assert gg.blas() == _expected_auto()
    info = gg.blas_info()
    assert info["blas"] == gg.blas() and info["requested"] == "auto" and info["reason"]
    assert info["threads"] == gg.get_num_threads()
    assert ("calibration" in info) is (MKL or ONEDNN)
    with pytest.raises(ValueError, match=r"unknown BLAS 'openblas'.*'auto', 'numpy', 'mkl' or "):
        gg.set_blas("openblas")
    assert gg.blas() == _expected_auto()


# ---------------------------------------------------------------- the calibration, faked


class FakeMachine:
    """A machine where MKL is "installed", the GEMM does nothing and the clock advances by
    ``cost[library in use]`` at every reading, so a pass over the calibration set appears to
    take ``cost * len(pairs)`` ticks for that library.

    It is also the kernels the parallel threshold is timed on (``_blas._probe``): a kernel
    call on ``n`` elements does nothing but make the next clock reading advance by
    ``kernel_cost(n, split)`` instead (``split``: above ``PAR_MIN`` at several threads)."""

    OPENMP = True

    def __init__(self, cost: dict[str, float]) -> None:
        self.cost = cost
        self.now = 0.0
        self.gemms = 0
        self.order: list[str] = []  # the library in use at each GEMM
        self.PAR_MIN = 32768
        self.kernel_cost: Any = lambda n, split: 1e-6  # a tie: never split
        self.kernel_calls: list[tuple[int, bool]] = []
        self._kernel_time: float | None = None

    def clock(self) -> float:
        if self._kernel_time is not None:  # a kernel ran since the last reading
            self.now += self._kernel_time
            self._kernel_time = None
        else:
            self.now += self.cost[_blas.blas()] * 1e-3
        return self.now

    def matmul(self, a: Any, b: Any) -> None:
        self.gemms += 1
        self.order.append(_blas.blas())

    @property
    def blas_gemms(self) -> int:
        """The GEMMs of BLAS calibrations (the threshold's precede each kernel call)."""
        return self.gemms - len(self.kernel_calls)

    def _kernel(self, n: int) -> None:
        split = n >= self.PAR_MIN and gg.get_num_threads() > 1
        self.kernel_calls.append((n, split))
        self._kernel_time = (self._kernel_time or 0.0) + self.kernel_cost(n, split)

    def relu_grad(self, g: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
        self._kernel(len(out))

    def sgd(self, w: np.ndarray, *args: Any) -> None:
        self._kernel(len(w))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[FakeMachine]:
    machine = FakeMachine({"numpy": 1.0, "mkl": 1.0})
    before = _blas.blas_info()["requested"]
    _blas.set_blas("numpy")  # not the process's library, whose addresses the fakes replace
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GRAPHGRAD_LAYOUT", "rows")  # its calibration is tests/test_layout.py's
    monkeypatch.setattr(
        _blas, "_mkl", {"lib": None, "path": "fake-mkl", "sgemm": 1, "dgemm": 2, "threading": ""}
    )
    # oneDNN "not installed" (the tests of three libraries install a fake one themselves)
    monkeypatch.setattr(_blas, "_onednn", {"error": "not installed (a test's fake machine)"})
    monkeypatch.setattr(_blas, "_clock", machine.clock)
    monkeypatch.setattr(_blas, "matmul", machine.matmul)
    monkeypatch.setattr(_blas, "_calibrations", {})
    monkeypatch.setattr(_blas, "_probe", machine)
    # no reading of the real CPUs' load: work running beside the tests would mark the fake
    # measurements busy (and so stale); the tests of that substitute a FakeStat
    monkeypatch.setattr(_blas, "_cpu_jiffies", lambda path="/proc/stat": None)
    monkeypatch.setattr(_blas._fused, "FORCED_PAR_MIN", None)
    # MKL's win measured again at once (the tests of the 10-minute wait set it themselves)
    monkeypatch.setattr(_blas, "CONFIRM_AFTER_S", 0.0)
    try:
        yield machine
    finally:
        _blas.set_blas("numpy")  # never leave the fake MKL's addresses active
        monkeypatch.undo()
        _blas.set_blas(before)  # and the threshold this process had, for its BLAS


def _new_process() -> None:
    """Forget this process's calibrations, as a new process would (the cache file stays)."""
    _blas._calibrations.clear()


@pytest.mark.parametrize(
    ("numpy_cost", "mkl_cost", "chosen"),
    [(2.0, 1.0, "mkl"), (1.0, 2.0, "numpy"), (1.0, 1.0, "numpy"), (1.0, 0.98, "numpy")],
)
def test_auto_takes_the_library_the_calibration_measures_faster(
    fake: FakeMachine, numpy_cost: float, mkl_cost: float, chosen: str
) -> None:
    fake.cost.update(numpy=numpy_cost, mkl=mkl_cost)
    gg.set_blas("auto")
    assert gg.blas() == chosen
    info = gg.blas_info()
    pairs = 3 * len(_blas.CALIBRATION_LAYERS)
    # each timed pass reads the clock twice: the second reading's tick is the pass's time
    assert info["calibration"]["seconds"] == {
        "numpy": pytest.approx(numpy_cost * 1e-3),
        "mkl": pytest.approx(mkl_cost * 1e-3),
    }
    assert info["calibration"]["measured_now"] is True
    assert "calibration at" in info["reason"] and "measured now" in info["reason"]
    assert fake.gemms >= 2 * pairs * 4  # warm-up and at least three rounds per library
    # MKL only after a second measurement agrees (here the same figures again)
    assert ("minutes earlier: MKL" in info["reason"]) == (chosen == "mkl")


def test_measure_alternates_and_stops_at_its_budget(fake: FakeMachine) -> None:
    fake.cost.update(numpy=300.0, mkl=100.0)  # 0.3 s and 0.1 s per clock reading
    gg.set_blas("numpy")
    fake.order.clear()  # (set_blas timed the kernels' threshold, each after a GEMM)
    seconds = _blas.measure(["numpy", "mkl"])
    assert seconds == {"numpy": pytest.approx(0.3), "mkl": pytest.approx(0.1)}
    pairs = 3 * len(_blas.CALIBRATION_LAYERS)
    passes = [fake.order[i] for i in range(0, len(fake.order), pairs)]
    # warm-up numpy, mkl; then rounds alternate the order; the 0.4 s budget ends it at 3 rounds
    assert passes == ["numpy", "mkl", "numpy", "mkl", "mkl", "numpy", "numpy", "mkl"]
    assert gg.blas() == "numpy"  # the library in use before is restored


def test_the_calibration_is_cached_and_reused(fake: FakeMachine) -> None:
    fake.cost.update(numpy=2.0, mkl=1.0)
    gg.set_blas("auto")
    (path,) = (_blas.cache_dir()).glob("blas-*.json")
    assert str(_blas.cache_dir()).startswith(os.environ["XDG_CACHE_HOME"])
    rec = json.loads(path.read_text())
    assert rec["choice"] == "mkl" and rec["key"] == _blas.calibration_key()
    assert rec["key"]["threads"] == gg.get_num_threads() and rec["key"]["cpu"]
    _new_process()
    fake.cost.update(numpy=1.0, mkl=2.0)  # would now choose numpy, if it measured again
    fake.gemms = 0
    gg.set_blas("auto")
    assert gg.blas() == "mkl" and fake.gemms == 0  # the cached choice: deterministic
    assert "cached" in gg.blas_info()["reason"]
    assert gg.blas_info()["calibration"]["measured_now"] is False
    # refresh=True (graphgrad info --recalibrate) measures again and replaces the file
    assert _blas.calibrate(refresh=True)["choice"] == "numpy"
    assert json.loads(path.read_text())["choice"] == "numpy"


def test_another_thread_count_is_another_calibration(fake: FakeMachine) -> None:
    before = gg.get_num_threads()
    try:
        fake.cost.update(numpy=2.0, mkl=1.0)
        gg.set_num_threads(1)
        gg.set_blas("auto")
        assert gg.blas() == "mkl" and gg.blas_info()["calibration"]["threads"] == 1
        fake.cost.update(numpy=1.0, mkl=2.0)
        gg.set_num_threads(2)  # under "auto", a new count chooses again: measured for 2
        assert gg.blas() == "numpy" and gg.blas_info()["calibration"]["threads"] == 2
        gg.set_num_threads(1)  # back to 1: the cached choice for 1
        assert gg.blas() == "mkl"
        assert len(list(_blas.cache_dir().glob("blas-*.json"))) == 2
    finally:
        gg.set_num_threads(before)


@pytest.mark.parametrize(
    "damage",
    [
        lambda rec: "{not json",
        lambda rec: json.dumps(rec)[: len(json.dumps(rec)) // 2],  # truncated
        lambda rec: "",
        lambda rec: json.dumps([rec]),
        lambda rec: json.dumps({**rec, "choice": "numpy"}),  # contradicts its own figures
        lambda rec: json.dumps({**rec, "choice": "cublas"}),
        lambda rec: json.dumps({**rec, "seconds": {"numpy": -1.0, "mkl": 1.0}}),
        lambda rec: json.dumps({**rec, "seconds": {"numpy": "fast", "mkl": 1.0}}),
        lambda rec: json.dumps({**rec, "seconds": {"mkl": 1.0}}),
        lambda rec: json.dumps({**rec, "key": {**rec["key"], "cpu": "another CPU"}}),
        lambda rec: json.dumps({**rec, "format": 99}),
        lambda rec: json.dumps({k: v for k, v in rec.items() if k != "key"}),
        lambda rec: json.dumps({**rec, "busy": "very"}),
        lambda rec: json.dumps({**rec, "busy": -0.5}),
        lambda rec: json.dumps({**rec, "measured_at_s": "yesterday"}),
        # MKL on one measurement (as older versions cached it), or on a damaged earlier one
        lambda rec: json.dumps({k: v for k, v in rec.items() if k != "earlier"}),
        lambda rec: json.dumps({**rec, "earlier": {**rec["earlier"], "seconds": {"numpy": 1.0}}}),
        lambda rec: json.dumps(
            {**rec, "earlier": {**rec["earlier"], "seconds": {"numpy": 0.001, "mkl": 0.002}}}
        ),
        lambda rec: json.dumps({**rec, "earlier": {**rec["earlier"], "measured_at_s": "then"}}),
        lambda rec: json.dumps({**rec, "pending": True}),  # pending, yet chosen
    ],
)
def test_a_damaged_cache_is_measured_again_never_an_error(fake: FakeMachine, damage: Any) -> None:
    fake.cost.update(numpy=2.0, mkl=1.0)
    gg.set_blas("auto")
    (path,) = _blas.cache_dir().glob("blas-*.json")
    rec = json.loads(path.read_text())
    path.write_text(damage(rec))
    _new_process()
    fake.gemms = 0
    gg.set_blas("auto")
    assert gg.blas() == "mkl" and fake.gemms > 0  # measured again
    assert gg.blas_info()["calibration"]["measured_now"] is True
    assert json.loads(path.read_text())["choice"] == "mkl"  # and the file repaired


def test_mkl_is_chosen_only_when_a_second_measurement_agrees(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (CONFIRM_AFTER_S = 0: the second measurement at once.) MKL faster in the first
    # measurement, NumPy's BLAS in the second (the host's load moved the first): NumPy's BLAS
    measured = _blas.measure
    calls: list[dict[str, float]] = []

    def measure(libraries: list[str], clock: Any = None) -> dict[str, float]:
        calls.append(measured(libraries, clock))
        fake.cost.update(numpy=1.0, mkl=2.0)  # from the second measurement on
        return calls[-1]

    monkeypatch.setattr(_blas, "measure", measure)
    fake.cost.update(numpy=2.0, mkl=1.0)
    gg.set_blas("auto")
    assert len(calls) == 2 and gg.blas() == "numpy"
    rec = json.loads(next(_blas.cache_dir().glob("blas-*.json")).read_text())
    assert rec["choice"] == "numpy" and "pending" not in rec and "earlier" not in rec
    assert rec["seconds"] == {"numpy": pytest.approx(1e-3), "mkl": pytest.approx(2e-3)}
    # NumPy's BLAS faster the first time: one measurement, no second
    calls.clear()
    assert _blas.calibrate(refresh=True)["choice"] == "numpy" and len(calls) == 1


def test_a_first_mkl_win_waits_for_a_second_one_ten_minutes_later(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_blas, "CONFIRM_AFTER_S", 600.0)
    fake.cost.update(numpy=2.0, mkl=1.0)
    gg.set_blas("auto")
    # one measurement found MKL faster: pending, NumPy's BLAS meanwhile, and said so
    assert gg.blas() == "numpy"
    (path,) = _blas.cache_dir().glob("blas-*.json")
    first = json.loads(path.read_text())
    assert first["pending"] is True and first["choice"] == "numpy"
    reason = gg.blas_info()["reason"]
    assert "NumPy's BLAS until a second measurement at least 10 minutes later" in reason
    # a start within the 10 minutes takes the pending record as it is
    _new_process()
    fake.gemms = 0
    gg.set_blas("auto")
    assert fake.gemms == 0 and gg.blas() == "numpy"
    # the first start 10 minutes later measures again; MKL faster again: MKL, for good
    aged = first["measured_at_s"] - 601.0
    path.write_text(json.dumps({**first, "measured_at_s": aged}))
    _new_process()
    gg.set_blas("auto")
    assert fake.gemms > 0 and gg.blas() == "mkl"
    rec = json.loads(path.read_text())
    assert "pending" not in rec and rec["choice"] == "mkl"
    assert rec["earlier"] == {"seconds": first["seconds"], "measured_at_s": aged}
    assert "10 minutes earlier: MKL 1.000 ms, NumPy's BLAS 2.000 ms" in gg.blas_info()["reason"]
    path.write_text(json.dumps({**rec, "measured_at_s": aged - 10 * 600.0}))
    _new_process()
    fake.gemms = 0
    gg.set_blas("auto")
    assert fake.gemms == 0 and gg.blas() == "mkl"  # a confirmed choice stays, however old
    # pending again, and 10 minutes later NumPy's BLAS is faster: NumPy's BLAS, for good
    path.write_text(json.dumps({**first, "measured_at_s": aged}))
    fake.cost.update(numpy=1.0, mkl=2.0)
    _new_process()
    gg.set_blas("auto")
    assert gg.blas() == "numpy"
    rec = json.loads(path.read_text())
    assert "pending" not in rec and "earlier" not in rec
    # a second win less than 10 minutes after the first (graphgrad info --recalibrate at
    # once) starts the wait again rather than confirming
    path.write_text(json.dumps(first))
    fake.cost.update(numpy=2.0, mkl=1.0)
    assert _blas.calibrate(refresh=True)["pending"] is True


def test_measuring_a_confirmed_choice_again_keeps_it_if_it_wins_again(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `graphgrad info --recalibrate` (the step benchmarks run it first) on a confirmed MKL:
    # a new win counts with the record's own measurement when that is 10 minutes old, else
    # with the one that confirmed it; a loss gives NumPy's BLAS
    monkeypatch.setattr(_blas, "CONFIRM_AFTER_S", 600.0)
    fake.cost.update(numpy=2.0, mkl=1.0)
    gg.set_blas("auto")
    (path,) = _blas.cache_dir().glob("blas-*.json")
    first = json.loads(path.read_text())
    path.write_text(json.dumps({**first, "measured_at_s": first["measured_at_s"] - 1200.0}))
    confirmed = _blas.calibrate(refresh=True)
    assert confirmed["choice"] == "mkl"
    # at once: the earlier win that confirmed it is 20 minutes old, so MKL stays
    again = _blas.calibrate(refresh=True)
    assert again["choice"] == "mkl" and "pending" not in again
    assert again["earlier"]["measured_at_s"] == first["measured_at_s"] - 1200.0
    # its own measurement 10 minutes old: that one confirms
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "measured_at_s": rec["measured_at_s"] - 700.0}))
    again = _blas.calibrate(refresh=True)
    assert again["choice"] == "mkl"
    assert again["earlier"]["measured_at_s"] == rec["measured_at_s"] - 700.0
    # a confirmed choice whose wins are all recent is pending again
    rec = json.loads(path.read_text())
    recent = {**rec["earlier"], "measured_at_s": time.time()}
    path.write_text(json.dumps({**rec, "earlier": recent}))
    assert _blas.calibrate(refresh=True)["pending"] is True
    # and a loss gives NumPy's BLAS, however old the wins
    fake.cost.update(numpy=1.0, mkl=2.0)
    rec = _blas.calibrate(refresh=True)
    assert rec["choice"] == "numpy" and "pending" not in rec and "earlier" not in rec


@pytest.fixture
def three(fake: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    """The fake machine with oneDNN "installed" beside MKL."""
    monkeypatch.setattr(
        _blas,
        "_onednn",
        {
            "lib": None,
            "path": "fake-dnnl",
            "sgemm": 3,
            "version": "3.2.0",
            "threading": "",
            "matmul": "",
        },
    )
    fake.cost["onednn"] = 1.0
    return fake


@pytest.mark.parametrize(
    ("costs", "chosen"),
    [
        ({"numpy": 2.0, "mkl": 1.5, "onednn": 1.0}, "onednn"),
        ({"numpy": 2.0, "mkl": 1.0, "onednn": 1.5}, "mkl"),
        ({"numpy": 1.0, "mkl": 1.5, "onednn": 0.98}, "numpy"),  # under the 3% margin
        ({"numpy": 1.0, "mkl": 2.0, "onednn": 2.0}, "numpy"),
    ],
)
def test_auto_takes_the_fastest_of_three_libraries(
    three: FakeMachine, costs: dict[str, float], chosen: str
) -> None:
    three.cost.update(costs)
    gg.set_blas("auto")
    assert gg.blas() == chosen
    assert (
        _blas.gemm_call(np.dtype(np.float32))
        == {
            "numpy": None,
            "mkl": (1, _blas.GEMM_CBLAS),
            "onednn": (3, _blas.GEMM_DNNL),
        }[chosen]
    )
    assert _blas.gemm_address(np.dtype(np.float64)) == (2 if chosen == "mkl" else None)
    rec = _blas.calibrate()
    assert set(rec["seconds"]) == {"numpy", "mkl", "onednn"}
    assert set(three.order) == {"numpy", "mkl", "onednn"}  # each library timed
    reason = gg.blas_info()["reason"]
    assert _blas.figures(rec["seconds"]) in reason
    # the figures fastest first, each library named
    assert reason.index(_blas.LABELS[min(costs, key=costs.__getitem__)]) < reason.index(
        _blas.LABELS[max(costs, key=costs.__getitem__)]
    )


def _pending_then_aged(
    three: FakeMachine, monkeypatch: pytest.MonkeyPatch, **costs: float
) -> tuple[Any, dict[str, Any]]:
    """A first measurement at ``costs`` with the 10-minute wait on: the record (pending,
    NumPy's BLAS in use) and its file, the record then made 601 seconds old, as a start 10
    minutes later finds it. Returns the file and the aged record, with ``reason``: what
    ``blas_info`` said while it was pending."""
    monkeypatch.setattr(_blas, "CONFIRM_AFTER_S", 600.0)
    three.cost.update(costs)
    gg.set_blas("auto")
    (path,) = _blas.cache_dir().glob("blas-*.json")
    first = json.loads(path.read_text())
    assert first["pending"] is True and gg.blas() == "numpy"
    aged = {**first, "measured_at_s": first["measured_at_s"] - 601.0}
    path.write_text(json.dumps(aged))
    return path, {**aged, "reason": gg.blas_info()["reason"]}


def test_a_win_is_confirmed_by_either_library_beating_numpy_again(
    three: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # oneDNN faster in the first measurement, MKL in the one 10 minutes later, both well ahead
    # of NumPy's BLAS each time (MKL and oneDNN on an Intel Xeon, 0.1-6% apart): the win is
    # confirmed, and of the two the faster over both measurements is taken, here oneDNN
    # (1.0/2.0 * 1.2/2.0 = 0.30 against MKL's 1.5/2.0 * 1.0/2.0 = 0.375), not the latest
    # favourite; the old rule (the same library first twice) kept NumPy's BLAS for good
    path, first = _pending_then_aged(three, monkeypatch, numpy=2.0, mkl=1.5, onednn=1.0)
    assert "oneDNN measured faster, NumPy's BLAS until" in first["reason"]
    assert "finds it, or another library, faster too" in first["reason"]
    # when the next measurement can confirm it: 10 minutes after the first (aged by 601 s)
    due = time.strftime("%H:%M UTC", time.gmtime(first["measured_at_s"] + 601.0 + 600.0))
    assert f"(at a start from {due}, or `graphgrad info --recalibrate` then)" in first["reason"]
    aged = first["measured_at_s"]
    three.cost.update(mkl=1.0, onednn=1.2)
    _new_process()
    gg.set_blas("auto")
    rec = json.loads(path.read_text())
    assert "pending" not in rec and rec["choice"] == "onednn" and gg.blas() == "onednn"
    assert rec["earlier"] == {"seconds": first["seconds"], "measured_at_s": aged}
    assert "the faster over both" in gg.blas_info()["reason"]
    # the cached record is taken as it is by the next start
    _new_process()
    gg.set_blas("auto")
    assert gg.blas() == "onednn" and _blas.calibrate()["measured"] is False
    # a record naming another library than its two measurements choose is measured again
    path.write_text(json.dumps({**rec, "choice": "mkl"}))
    _new_process()
    three.gemms = 0
    gg.set_blas("auto")
    assert three.gemms > 0 and json.loads(path.read_text())["pending"] is True


@pytest.mark.parametrize(
    ("first", "second", "chosen"),
    [
        # a tie over both measurements: the latest measurement's favourite
        ({"mkl": 1.5, "onednn": 1.0}, {"mkl": 1.0, "onednn": 1.5}, "mkl"),
        ({"mkl": 1.0, "onednn": 1.5}, {"mkl": 1.5, "onednn": 1.0}, "onednn"),
        # the same library first twice: that one
        ({"mkl": 1.0, "onednn": 1.9}, {"mkl": 1.0, "onednn": 1.9}, "mkl"),
        # each library ahead of NumPy's BLAS (by more than the margin) only once: no choice
        ({"mkl": 2.0, "onednn": 1.0}, {"mkl": 1.0, "onednn": 1.95}, None),
        # the first measurement's favourite slower than NumPy's BLAS in the second
        ({"mkl": 1.0, "onednn": 2.0}, {"mkl": 2.5, "onednn": 1.0}, None),
    ],
)
def test_confirmed_takes_a_library_that_won_both_measurements(
    first: dict[str, float], second: dict[str, float], chosen: str | None
) -> None:
    assert _blas.confirmed({"numpy": 2.0, **first}, {"numpy": 2.0, **second}) == chosen


def test_a_win_of_one_library_then_of_another_alone_stays_pending(
    three: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # oneDNN ahead of NumPy's BLAS in the first measurement and MKL not; MKL ahead in the
    # second and oneDNN not: no library won both, so the record stays pending (for MKL now)
    # and NumPy's BLAS is used; MKL ahead again 10 minutes later: MKL, for good
    path, _first = _pending_then_aged(three, monkeypatch, numpy=2.0, mkl=2.0, onednn=1.0)
    three.cost.update(mkl=1.0, onednn=2.0)
    _new_process()
    gg.set_blas("auto")
    rec = json.loads(path.read_text())
    assert rec["pending"] is True and "earlier" not in rec and gg.blas() == "numpy"
    assert "MKL measured faster, NumPy's BLAS until" in gg.blas_info()["reason"]
    path.write_text(json.dumps({**rec, "measured_at_s": rec["measured_at_s"] - 601.0}))
    _new_process()
    gg.set_blas("auto")
    assert gg.blas() == "mkl" and json.loads(path.read_text())["choice"] == "mkl"


def test_a_record_without_a_library_now_installed_is_measured_again(
    three: FakeMachine,
) -> None:
    # a record must hold every library installed: one that lacks oneDNN's figure (written
    # with another set of libraries under the same key) is measured again, never trusted
    three.cost.update(numpy=2.0, mkl=1.0, onednn=1.5)
    gg.set_blas("auto")
    (path,) = _blas.cache_dir().glob("blas-*.json")
    rec = json.loads(path.read_text())
    del rec["seconds"]["onednn"]
    path.write_text(json.dumps(rec))
    _new_process()
    three.gemms = 0
    gg.set_blas("auto")
    assert three.blas_gemms > 0
    assert "onednn" in json.loads(path.read_text())["seconds"]


class FakeStat:
    """``/proc/stat`` as ``_blas._cpu_jiffies`` reads it, and this process's CPU time: over
    each measurement (between two readings) 100 ticks of its CPUs pass, ``busy`` of them
    busy, ``own`` seconds of CPU time this process's."""

    def __init__(self) -> None:
        self.busy, self.own = 0, 0.0
        self.busy_ticks = self.ticks = self.reads = 0
        self.cpu_s = 0.0

    def jiffies(self) -> tuple[int, int]:
        self.reads += 1
        if self.reads % 2 == 0:  # the reading after a measurement
            self.ticks += 100
            self.busy_ticks += self.busy
            self.cpu_s += self.own
        return self.busy_ticks, self.ticks

    def own_cpu_s(self) -> float:
        return self.cpu_s


def test_a_calibration_on_a_busy_machine_is_marked_and_measured_again_later(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Other processes on this process's CPUs make a calibration time them, not the libraries:
    # the record says so (graphgrad info shows it), and it is measured again once it is
    # BUSY_RETRY_S old, while a quiet record stays until its key changes.
    stat = FakeStat()
    monkeypatch.setattr(_blas, "_cpu_jiffies", stat.jiffies)
    monkeypatch.setattr(_blas, "_own_cpu_s", stat.own_cpu_s)
    tick = 1 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
    stat.busy, stat.own = 90, 40 * tick  # 90 of 100 ticks busy, 40 of them ours: others 50%
    fake.cost.update(numpy=2.0, mkl=1.0)
    gg.set_blas("auto")
    (path,) = _blas.cache_dir().glob("blas-*.json")
    rec = json.loads(path.read_text())
    assert rec["busy"] == pytest.approx(0.5, abs=0.02) and rec["measured_at_s"] <= time.time()
    info = gg.blas_info()
    assert info["calibration"]["busy"] == rec["busy"]
    assert "measured now, while other processes kept 50% of its CPUs busy" in info["reason"]
    # a new process within BUSY_RETRY_S takes the record as it is
    _new_process()
    fake.gemms = 0
    gg.set_blas("auto")
    assert fake.gemms == 0 and "measured earlier, cached, while other" in gg.blas_info()["reason"]
    # one BUSY_RETRY_S later it measures again: the machine is quiet now, and MKL is slower
    path.write_text(json.dumps({**rec, "measured_at_s": time.time() - _blas.BUSY_RETRY_S - 1}))
    _new_process()
    stat.busy, stat.own = 45, 40 * tick  # others 5%: quiet
    fake.cost.update(numpy=1.0, mkl=2.0)
    gg.set_blas("auto")
    assert fake.gemms > 0 and gg.blas() == "numpy"
    rec = json.loads(path.read_text())
    assert "busy" not in rec and gg.blas_info()["calibration"]["busy"] is None
    assert "while other" not in gg.blas_info()["reason"]
    # a quiet record is never measured again on its own, however old
    path.write_text(json.dumps({**rec, "measured_at_s": time.time() - 10 * _blas.BUSY_RETRY_S}))
    _new_process()
    fake.gemms = 0
    gg.set_blas("auto")
    assert fake.gemms == 0 and gg.blas() == "numpy"


def test_cpu_ticks_are_read_for_this_process_cpus_only(tmp_path: Any) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    stat = tmp_path / "stat"
    lines = ["cpu  999 999 999 999 999 999 999 999 0 0"]  # the sum over all CPUs: not used
    for i in cpus:
        lines.append(f"cpu{i} 10 1 5 100 4 2 3 7 0 0")  # busy 10+1+5+2+3+7, idle 100+4
    lines.append(f"cpu{max(cpus) + 1} 500 0 0 0 0 0 0 0 0 0")  # not ours
    lines.append("intr 12345 0 0")
    stat.write_text("\n".join(lines) + "\n")
    assert _blas._cpu_jiffies(str(stat)) == (28 * len(cpus), 132 * len(cpus))
    stat.write_text("cpu 1 2 3\n")
    assert _blas._cpu_jiffies(str(stat)) is None  # no line for this process's CPUs
    assert _blas._cpu_jiffies(str(tmp_path / "missing")) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux's /proc/stat")
def test_other_processes_on_this_process_cpus_are_seen() -> None:
    # Real processes spinning on every CPU this process may use, while it waits: the share
    # of its CPUs that others kept busy is far above BUSY_LIMIT.
    spin = "import time\nend = time.time() + 20\nwhile time.time() < end: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in os.sched_getaffinity(0)]
    try:
        time.sleep(0.3)
        _, share = _blas._others_share(lambda: time.sleep(0.6))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert share is not None and share > _blas.BUSY_LIMIT


def test_an_unwritable_cache_still_chooses(fake: FakeMachine, tmp_path: Any) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    os.environ["XDG_CACHE_HOME"] = str(blocker)  # restored by the fixture's monkeypatch
    fake.cost.update(numpy=2.0, mkl=1.0)
    gg.set_blas("auto")
    assert gg.blas() == "mkl"
    assert "not cached" in gg.blas_info()["reason"]


def test_forcing_a_library_measures_nothing(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    for value, chosen in (("numpy", "numpy"), ("mkl", "mkl")):
        monkeypatch.setenv("GRAPHGRAD_BLAS", value)
        _blas._init_from_environment()
        assert gg.blas() == chosen and fake.blas_gemms == 0
        assert gg.blas_info()["reason"] == f"GRAPHGRAD_BLAS={value} in the environment"
        assert "calibration" not in gg.blas_info()
    assert not list(_blas.cache_dir().glob("blas-*.json"))
    monkeypatch.setenv("GRAPHGRAD_BLAS", "auto")
    fake.cost.update(numpy=2.0, mkl=1.0)
    _blas._init_from_environment()
    assert gg.blas() == "mkl" and fake.blas_gemms > 0


def test_without_mkl_auto_is_numpy_and_measures_nothing(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_blas, "_mkl", {"error": "Intel MKL (libmkl_rt) was not found"})
    gg.set_blas("auto")
    assert gg.blas() == "numpy" and fake.blas_gemms == 0
    assert "the only BLAS installed" in gg.blas_info()["reason"]
    assert "calibration" not in gg.blas_info()


@pytest.mark.skipif(not (MKL or ONEDNN), reason="neither MKL nor oneDNN is installed")
def test_the_real_calibration_gives_positive_figures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # no timing asserted: only that a real measurement runs, is cached and loads back
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_blas, "_calibrations", {})
    rec = _blas.calibrate()
    assert rec["measured"] and set(rec["seconds"]) == {"numpy", *_blas.installed()}
    assert all(v > 0 for v in rec["seconds"].values())
    # the measurement's choice, except that a first win of another library waits for a second
    favoured = _blas.decide(rec["seconds"])
    assert rec["choice"] == "numpy" and rec.get("pending", False) == (favoured != "numpy")
    if MKL:
        assert "MKL" in rec["key"]["mkl"] or "mkl" in rec["key"]["mkl"]
    if ONEDNN:
        found = _blas.find_onednn()
        assert rec["key"]["onednn"].endswith(f"{found['version']} matmul: {found['matmul']}")
    _blas._calibrations.clear()
    again = _blas.calibrate()
    assert not again["measured"] and again["seconds"] == rec["seconds"]


def test_using_blas_restores_the_request() -> None:
    before = gg.blas_info()["requested"]
    with gg.using_blas("numpy"):
        skip = ("mkl_threading", "onednn_threading", "onednn_matmul", "pool", "pool_reason")
        skip += ("omp_wait",)
        info = {k: v for k, v in gg.blas_info().items() if k not in skip}
        assert info | {"threads": 0, "blas_threads": 0} == {
            "blas": "numpy",
            "requested": "numpy",
            "reason": "set_blas('numpy')",
            "threads": 0,
            "blas_threads": 0,
        }
    assert gg.blas_info()["requested"] == before


def test_missing_mkl_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gg.blas()
    monkeypatch.setattr(
        _blas, "_mkl", {"error": "Intel MKL (libmkl_rt) was not found: pip install mkl"}
    )
    with pytest.raises(RuntimeError, match=r"set_blas\('mkl'\): .*pip install mkl"):
        gg.set_blas("mkl")
    assert gg.blas() == before  # unchanged


def test_missing_onednn_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gg.blas()
    monkeypatch.setattr(_blas, "_onednn", {})
    monkeypatch.setattr(_blas.glob, "glob", lambda pattern: [])  # not in this environment
    real = _blas.ctypes.CDLL

    def cdll(path: str, *args: Any, **kw: Any) -> Any:
        if "dnnl" in str(path):
            raise OSError(f"{path}: cannot open shared object file")
        return real(path, *args, **kw)

    monkeypatch.setattr(_blas.ctypes, "CDLL", cdll)
    with pytest.raises(
        RuntimeError,
        match=r"set_blas\('onednn'\): oneDNN \(libdnnl\) was not found: pip "
        r"install onednn-cpu-gomp \(graphgrad\[onednn\]\)",
    ):
        gg.set_blas("onednn")
    assert gg.blas() == before


class _FakeDnnl:
    """A libdnnl whose ``dnnl_version`` reports the CPU runtime ``runtime`` (2, OpenMP: Intel's
    libiomp5 or LLVM's libomp when ``iomp``, whose ``kmp_set_blocktime`` it then resolves)."""

    def __init__(self, runtime: int, iomp: bool = False) -> None:
        self.runtime = runtime
        if iomp:
            self.kmp_set_blocktime = object()

    @property
    def dnnl_sgemm(self) -> Any:
        return object()

    @property
    def dnnl_version(self) -> Any:
        runtime = self.runtime

        class Version:
            restype = None

            def __call__(self) -> Any:
                return _blas.ctypes.pointer(_blas._DnnlVersion(3, 2, 0, None, runtime, 0))

        return Version()


@pytest.mark.parametrize(
    ("runtime", "iomp", "name"),
    [
        (4, False, "TBB"),
        (8, False, "threadpool"),
        (512, False, "512"),
        (2, True, "Intel's or LLVM's OpenMP"),
    ],
)
def test_a_onednn_on_another_thread_pool_is_refused(
    monkeypatch: pytest.MonkeyPatch, runtime: int, iomp: bool, name: str
) -> None:
    # a TBB (or SYCL, threadpool, Intel OpenMP) build would keep its own threads spinning
    # against the kernels' GNU OpenMP ones: refused, with the wheel that runs on GNU OpenMP
    monkeypatch.setattr(_blas, "_onednn", {})
    monkeypatch.setattr(_blas.ctypes, "CDLL", lambda path, *a, **k: _FakeDnnl(runtime, iomp))
    found = _blas.find_onednn()
    assert found.keys() == {"error"}
    assert re.search(f"runs its threads in {name}, a second thread pool", found["error"])
    assert found["error"].endswith("pip install onednn-cpu-gomp (oneDNN on GNU OpenMP)")
    assert "onednn" not in _blas.installed()


def _layouts(a: np.ndarray) -> list[np.ndarray]:
    return [a, np.asfortranarray(a)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mkn", [(3, 4, 5), (1, 7, 1), (6, 1, 2), (1, 1, 1), (128, 784, 256)])
def test_products_match_numpy_in_every_layout(library: str, dtype: Any, mkn: tuple) -> None:
    m, k, n = mkn
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-4 * np.sqrt(k) if dtype == np.float32 else 1e-12 * np.sqrt(k)
    for aa in _layouts(a):
        for bb in _layouts(b):
            out = _blas.matmul(aa, bb)
            assert out.dtype == dtype and out.shape == (m, n) and out.flags.c_contiguous
            np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record the calls that reach the GEMM kernel (MKL's, oneDNN's)."""
    calls: list[tuple[Any, ...]] = []
    real = _blas._fused.KERNELS

    def gemm(*args: Any) -> None:
        calls.append(args)
        real.gemm(*args)

    monkeypatch.setattr(
        _blas, "_fused", types.SimpleNamespace(KERNELS=types.SimpleNamespace(gemm=gemm))
    )
    return calls


def test_the_library_takes_2d_floats_and_leaves_the_rest_to_numpy(
    library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy(monkeypatch)
    rng = np.random.default_rng(1)
    # 2**20 multiply-adds: as large as a product oneDNN takes (ONEDNN_MIN_MNK)
    a = rng.standard_normal((128, 64)).astype(np.float32)
    b = rng.standard_normal((64, 128)).astype(np.float32)
    _blas.matmul(a, b)
    _blas.matmul(a.T.T, np.asfortranarray(b))
    ro = b.copy()
    ro.setflags(write=False)  # read-only operands (e.g. memory-mapped weights) are fine
    np.testing.assert_allclose(_blas.matmul(a, ro), a @ b, rtol=1e-5, atol=1e-5)
    assert len(calls) == 3
    others = [
        (a[:, ::2], b[::2]),  # strided views: neither C- nor F-contiguous
        (a.astype(np.int64), b.astype(np.int64)),  # integers
        (a, b.astype(np.float64)),  # mixed dtypes
        (np.stack([a, a]), b),  # batched
        (a[0], b),  # 1-D
        (a[:, :0], b[:0]),  # empty
    ]
    for x, y in others:
        np.testing.assert_allclose(_blas.matmul(x, y), np.matmul(x, y), rtol=1e-5, atol=1e-5)
    assert len(calls) == 3
    conv = {"mkl": _blas.GEMM_CBLAS, "onednn": _blas.GEMM_DNNL}[library]
    assert all(c[-1] == conv for c in calls)  # each call by its library's convention
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_allclose(_blas.matmul(a64, b64), a64 @ b64, rtol=1e-12)
    # float64: MKL's dgemm; oneDNN has none, so NumPy's BLAS
    assert len(calls) == (4 if library == "mkl" else 3)
    # 64 multiply-adds fewer (under ONEDNN_MIN_MNK, MKL_MIN_MNK): NumPy's BLAS, bit for bit,
    # and, for beta=1, NumPy's own cblas_sgemm
    small = np.ascontiguousarray(b[:, :127])
    assert np.array_equal(_blas.matmul(a, small), np.matmul(a, small))
    out = np.zeros((128, 127), np.float32)
    assert _blas.matmul_into(a, small, out, 1.0)
    np.testing.assert_allclose(out, a @ small, rtol=1e-5, atol=1e-5)
    assert len(calls) == (5 if library == "mkl" else 4)
    assert calls[-1][0] == _blas.numpy_cblas()[np.dtype(np.float32)]
    assert _blas.gemm_call(np.dtype(np.float32), (128, 127, 64)) is None
    assert _blas.gemm_call(np.dtype(np.float32), (128, 128, 64)) == (
        _blas.gemm_address(np.dtype(np.float32)),
        conv,
    )
    # a side of one, however large the product: NumPy's, in matmul_into too (its own
    # cblas_sgemm for beta=1), as matmul leaves it to NumPy
    assert _blas.gemm_call(np.dtype(np.float32), (1 << 12, 1 << 12, 1)) is None
    col, row = rng.standard_normal((2048, 1)), rng.standard_normal((1, 1024))
    col, row = col.astype(np.float32), row.astype(np.float32)
    wide = np.zeros((2048, 1024), np.float32)
    assert _blas.matmul_into(col, row, wide, 1.0)
    np.testing.assert_allclose(wide, col * row, rtol=1e-6)
    assert len(calls) == (6 if library == "mkl" else 5)
    assert calls[-1][0] == _blas.numpy_cblas()[np.dtype(np.float32)]


def test_shape_errors_are_unchanged_with_the_library(library: str) -> None:
    with pytest.raises(gg.ShapeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        gg.matmul(gg.Tensor(np.ones((2, 3))), gg.Tensor(np.ones((4, 5))))
    with pytest.raises(gg.ShapeError, match="linear"):
        gg.linear(gg.Tensor(np.ones((2, 3))), gg.Tensor(np.ones((4, 5))), gg.Tensor(np.zeros(4)))


def test_gradients_through_the_library_pass_gradcheck(library: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4))
    w = rng.standard_normal((3, 4))
    b = rng.standard_normal(3)
    y = rng.standard_normal((4, 3))
    gg.gradcheck(lambda x, w, b: gg.tanh(gg.linear(x, w, b)).sum(), [x, w, b])
    gg.gradcheck(lambda x, y: (gg.matmul(x, y) ** 2).sum(), [x, y])
    gg.gradcheck(lambda x, y: (x.T @ x @ y).sum(), [x, y])


def _train(blas: str, steps: int = 3) -> list[np.ndarray]:
    with gg.using_blas(blas):
        rng = np.random.default_rng(0)
        model = gg.nn.MLP(20, [16, 16], 4, "relu", rng=rng)
        opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = rng.standard_normal((32, 20)).astype(np.float32)
        y = rng.integers(0, 4, 32)
        for _ in range(steps):
            opt.zero_grad()
            gg.cross_entropy(model(x), y).backward()
            opt.step()
        return [p.data.copy() for p in model.parameters()]


@pytest.mark.parametrize("library", LIBRARIES)
def test_training_with_the_library_matches_numpy_blas(library: str) -> None:
    for a, b in zip(_train("numpy"), _train(library), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert gg.blas() == _expected_auto() or os.environ.get("GRAPHGRAD_BLAS")


def _blas_in_subprocess(
    value: str, code: str = "import graphgrad as gg; print(gg.blas())", **env_: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRAPHGRAD_BLAS": value, **env_}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("library", LIBRARIES)
def test_environment_variable_selects_the_library(library: str) -> None:
    proc = _blas_in_subprocess(library)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == library


def test_bad_environment_value_warns_and_keeps_numpy() -> None:
    proc = _blas_in_subprocess("cublas")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "numpy"
    assert "GRAPHGRAD_BLAS=cublas" in proc.stderr and "unknown BLAS" in proc.stderr


def test_environment_variable_numpy_forces_numpys_blas() -> None:
    proc = _blas_in_subprocess("numpy", "import graphgrad as gg; print(gg.blas_info())")
    assert proc.returncode == 0, proc.stderr
    assert "'blas': 'numpy'" in proc.stdout and "GRAPHGRAD_BLAS=numpy" in proc.stdout


def _blas_threads() -> dict[str, int]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return {
        d["internal_api"]: d["num_threads"]
        for d in threadpoolctl.threadpool_info()
        if d["user_api"] == "blas"
    }


def test_set_num_threads_governs_blas_and_kernels() -> None:
    before = gg.get_num_threads()
    try:
        for n in range(1, min(2, _blas.cpus_available()) + 1):
            assert gg.set_num_threads(n) in (before, 1)
            assert gg.get_num_threads() == n
            assert set(_blas_threads().values()) == {n}  # NumPy's OpenBLAS and MKL, if loaded
            if _blas._fused._K is not None:
                assert _blas._fused._K.get_num_threads() == n
    finally:
        gg.set_num_threads(before)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="set_num_threads: need a positive integer"):
            gg.set_num_threads(bad)  # type: ignore[arg-type]


def test_the_blas_gets_no_more_threads_than_the_process_has_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # More BLAS threads than CPUs spin waiting for each other (measured: a GEMM 30-100x
    # slower), so the BLAS's pool stops at the CPUs this process may use, with a warning
    # (once per setting); graphgrad's kernels, whose idle OpenMP workers sleep, get the count.
    cpus = _blas.cpus_available()
    monkeypatch.setattr(_blas, "_warned_cap", {})
    before = gg.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning) as caught:
            gg.set_num_threads(cpus + 2)
        (w,) = caught
        assert str(w.message).startswith(
            f"set_num_threads({cpus + 2}): this process may run on {cpus} CPU(s)"
        )
        assert f"the BLAS gets {cpus} thread(s); graphgrad's kernels get {cpus + 2}" in str(
            w.message
        )
        assert w.filename == __file__  # the warning points at the caller's line
        assert gg.get_num_threads() == cpus + 2
        assert gg.blas_info()["threads"] == cpus + 2
        assert gg.blas_info()["blas_threads"] == cpus == _blas.blas_threads()
        assert _blas.calibration_key()["blas_threads"] == cpus
        assert set(_blas_threads().values()) == {cpus}
        if _blas._fused._K is not None:
            assert _blas._fused._K.get_num_threads() == cpus + 2
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gg.set_num_threads(cpus + 2)  # said once already: quiet
    finally:
        gg.set_num_threads(before)


def test_omp_num_threads_is_the_default() -> None:
    code = "import graphgrad as gg; print(gg.get_num_threads(), gg.blas_info()['threads'])"
    proc = _blas_in_subprocess("auto", code, OMP_NUM_THREADS="3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "3"]


_DETERMINISM = """
import numpy as np, graphgrad as gg
gg.set_num_threads({n})
rng = np.random.default_rng(0)
model = gg.nn.MLP(300, [256, 256], 10, "relu", rng=rng)
opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
x = rng.standard_normal((256, 300)).astype(np.float32)
y = rng.integers(0, 10, 256)
for _ in range(3):
    opt.zero_grad()
    gg.cross_entropy(model(x), y).backward()
    opt.step()
import hashlib
print(hashlib.sha256(b"".join(p.data.tobytes() for p in model.parameters())).hexdigest())
"""


@pytest.mark.parametrize("blas", ["auto", "numpy", *LIBRARIES])
def test_runs_repeat_bit_for_bit_for_a_fixed_configuration(blas: str) -> None:
    # Same library, same thread count: the same weights to the last bit, run after run.
    outs = []
    for _ in range(2):
        proc = _blas_in_subprocess(blas, _DETERMINISM.format(n=2))
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout.split()[-1])
    assert outs[0] == outs[1]


def test_graphgrad_info_command() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "graphgrad")
    env = {**os.environ, "GRAPHGRAD_BLAS": "numpy", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([exe, "info"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"numpy {np.__version__}" in out and "graphgrad " in out
    assert "BLAS:      numpy (requested 'numpy': GRAPHGRAD_BLAS=numpy in the environment)" in out
    assert "threads:   1 " in out and "graphgrad._kernels" in out
    proc = subprocess.run(
        [exe, "info", "--json"],
        env={**os.environ, "GRAPHGRAD_BLAS": "auto"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["blas"]["blas"] == _expected_auto() and info["blas"]["requested"] == "auto"
    if MKL or ONEDNN:  # the figures behind the choice, from the cache this process also reads
        cal = info["blas"]["calibration"]
        assert cal["seconds"] == _blas.calibrate()["seconds"] and cal["cache"]
        assert "calibration at" in info["blas"]["reason"]
        if info["compiled"]["openmp"] and MKL:  # MKL's threads in the kernels' libgomp
            assert info["blas"]["mkl_threading"] == "GNU"
        if ONEDNN:
            assert info["blas"]["onednn_threading"] == "GNU OpenMP"
            assert info["blas"]["onednn_matmul"] == _blas.find_onednn()["matmul"]
            text = graphgrad_info().stdout
            assert f"oneDNN's matmul primitive: {_blas.find_onednn()['matmul']}" in text
    else:
        assert "the only BLAS installed" in info["blas"]["reason"]
    assert info["compiled"]["graphgrad._kernels"] is _blas._fused.COMPILED


_POOLS = """
import numpy as np, graphgrad as gg, threadpoolctl
from graphgrad import _blas
gg.set_blas("mkl")
a = np.ones((256, 256), np.float32)
_blas.matmul(a, a)
gg.relu(gg.Tensor(np.ones(100000, np.float32)))
print(_blas.find_mkl()["threading"])
for d in threadpoolctl.threadpool_info():
    print(d["user_api"], d["filepath"], d.get("threading_layer", "-"))
"""


@needs_mkl
@pytest.mark.skipif(
    not getattr(_blas._fused.KERNELS, "OPENMP", False), reason="kernels built without OpenMP"
)
def test_mkl_and_the_kernels_share_one_openmp_pool() -> None:
    pytest.importorskip("threadpoolctl")
    env = {k: v for k, v in os.environ.items() if k != "MKL_THREADING_LAYER"}
    proc = subprocess.run(
        [sys.executable, "-c", _POOLS], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    layer, *pools = proc.stdout.splitlines()
    assert layer == "GNU"
    openmp = [p for p in pools if p.startswith("openmp ")]
    assert len(openmp) == 1 and "libgomp" in openmp[0], pools  # no libiomp5 beside it
    assert any(p.startswith("blas ") and "mkl" in p and p.endswith(" gnu") for p in pools)


@pytest.mark.skipif(not (MKL and ONEDNN), reason="needs both MKL and oneDNN")
def test_products_while_another_thread_switches_libraries() -> None:
    # each product reads its library's address, calling convention and size limit as one
    # tuple: a switch between MKL (CBLAS) and oneDNN (dnnl_sgemm) from another thread must
    # never make a product call one library with the other's arguments (a crash)
    import threading

    rng = np.random.default_rng(3)
    a = rng.standard_normal((128, 96)).astype(np.float32)
    b = rng.standard_normal((96, 128)).astype(np.float32)
    want = a @ b
    before = gg.blas_info()["requested"]
    stop = threading.Event()
    errors: list[float] = []

    def multiply() -> None:
        while not stop.is_set():
            errors.append(float(np.abs(_blas.matmul(a, b) - want).max()))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns between almost every bytecode
    worker = threading.Thread(target=multiply)
    worker.start()
    try:
        for i in range(300):
            gg.set_blas(("mkl", "onednn", "numpy")[i % 3])
        i = 0
        while len(errors) < 3000 and worker.is_alive():  # the switch alone, set_blas's
            _blas._use(("mkl", "onednn")[i % 2])  # last step: many more of them
            i += 1
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(interval)
        gg.set_blas(before)
    assert errors and max(errors) < 1e-3


_ONEDNN_POOL = """
import ctypes, numpy as np, graphgrad as gg, threadpoolctl
from graphgrad import _blas
gg.set_blas("onednn")
omp = ctypes.CDLL("libgomp.so.1")
a = np.ones((256, 256), np.float32)
for n in (1, 2, 1):
    gg.set_num_threads(n)
    _blas.matmul(a, a)
    gg.relu(gg.Tensor(np.ones(100000, np.float32)))
    print(n, omp.omp_get_max_threads())  # the count oneDNN's next product runs on
print(_blas.find_onednn()["threading"])
for d in threadpoolctl.threadpool_info():
    print(d["user_api"], d["filepath"])
"""


@needs_onednn
@pytest.mark.skipif(
    not getattr(_blas._fused.KERNELS, "OPENMP", False), reason="kernels built without OpenMP"
)
def test_onednn_runs_on_the_kernels_openmp_threads_at_their_count() -> None:
    pytest.importorskip("threadpoolctl")
    proc = subprocess.run(
        [sys.executable, "-c", _ONEDNN_POOL],
        env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    cpus = _blas.cpus_available()
    assert lines[:3] == ["1 1", f"2 {min(2, cpus)}", "1 1"]  # set_num_threads governs it
    assert lines[3] == "GNU OpenMP"
    openmp = [p for p in lines[4:] if p.startswith("openmp ")]
    assert len(openmp) == 1 and "libgomp" in openmp[0], lines  # one OpenMP runtime


@pytest.fixture
def onednn_matmul() -> Iterator[Any]:
    """oneDNN selected, its matmul primitive set up (oneDNN 3); the kernels' module."""
    if not ONEDNN or not _blas.find_onednn()["matmul"].startswith("x @"):
        pytest.skip(f"oneDNN 3 is not installed: {_blas.find_onednn()}")
    kernels = _blas._fused.KERNELS
    with gg.using_blas("onednn"):
        yield kernels
    _blas._onednn_matmul(_blas.find_onednn()["lib"], 3)  # on again, whatever the test did


def _runs(kernels: Any) -> int:
    _on, _made, runs = kernels.dnnl_matmul_stats()
    return int(runs)


def test_onednn_takes_the_forward_products_with_its_matmul_primitive(onednn_matmul: Any) -> None:
    # x @ Wᵀ (W used transposed, x not) goes to the matmul primitive, the other products (and
    # those under ONEDNN_MIN_MNK) to dnnl_sgemm or NumPy's BLAS, all of them right
    k = onednn_matmul
    rng = np.random.default_rng(4)
    x = rng.standard_normal((256, 300)).astype(np.float32)
    w = rng.standard_normal((200, 300)).astype(np.float32)
    g = rng.standard_normal((256, 200)).astype(np.float32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    before = _runs(k)
    y = _blas.matmul(x, w.T)
    assert _runs(k) == before + 1
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.sqrt(300))
    assert np.array_equal(_blas.matmul(x, w.T), y)  # the same bits again
    layer = gg.nn.Linear(300, 200, rng=np.random.default_rng(0))
    layer(gg.Tensor(x))  # a Linear's forward: the same product
    assert _runs(k) == before + 3
    for product, want in (
        (lambda: _blas.matmul(g.T, x), g.T.astype(np.float64) @ x),  # dW = Gᵀ @ x: sgemm
        (lambda: _blas.matmul(g, w), g.astype(np.float64) @ w),  # dX = G @ W: sgemm
        (
            lambda: _blas.matmul(x[:8, :10], w[:10, :10].T),
            x[:8, :10] @ w[:10, :10].T.astype(np.float64),
        ),
    ):
        np.testing.assert_allclose(product(), want, rtol=1e-4, atol=1e-3)
    assert _runs(k) == before + 3  # none of them by the primitive
    from graphgrad import checkpoint

    with gg.using_blas("numpy"):
        assert "onednn_matmul" not in checkpoint.library_versions()
    versions = checkpoint.library_versions()  # what metrics and checkpoints record
    assert (
        versions["blas"] == "onednn"
        and versions["onednn_matmul"] == "x @ Wᵀ (the forward products)"
    )
    k.dnnl_matmul_setup(None)  # off: the forward product by dnnl_sgemm, as right
    np.testing.assert_allclose(_blas.matmul(x, w.T), ref, rtol=1e-4, atol=1e-4 * np.sqrt(300))
    assert _runs(k) == before + 3 and not k.dnnl_matmul_stats()[0]
    with pytest.raises(ValueError, match="dnnl_matmul_setup: 15 nonzero addresses"):
        k.dnnl_matmul_setup([1, 2, 3])


def test_onednn_2_or_a_missing_function_leaves_every_product_to_sgemm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # oneDNN 2.x's C API for the primitive differs from 3.x's, and a build without one of the
    # functions cannot make it: neither is handed to the kernels
    calls: list[Any] = []
    kernels = types.SimpleNamespace(dnnl_matmul_setup=calls.append)
    monkeypatch.setattr(_blas._fused, "KERNELS", kernels)
    assert _blas._onednn_matmul(object(), 2) == (
        "none: oneDNN 2.x (its C API for the matmul primitive is 3.x's)"
    )
    lib = types.SimpleNamespace(**{f: None for f in _blas.ONEDNN_MATMUL_FUNCTIONS[:-1]})
    assert _blas._onednn_matmul(lib, 3).startswith("none: ")
    assert "omp_get_max_threads" in _blas._onednn_matmul(lib, 3)
    assert calls == []
    monkeypatch.setattr(_blas._fused, "KERNELS", types.SimpleNamespace())  # an older build
    assert _blas._onednn_matmul(lib, 3).startswith("none: graphgrad's compiled kernels predate")


def test_onednn_matmul_primitives_are_kept_per_shape_and_thread_count(onednn_matmul: Any) -> None:
    # a primitive is made once per shape and thread count and reused; more shapes than the
    # table holds (64) still give right products
    k = onednn_matmul
    rng = np.random.default_rng(5)
    w = rng.standard_normal((128, 256)).astype(np.float32)
    x = rng.standard_normal((130, 256)).astype(np.float32)
    _on, made0, _ = k.dnnl_matmul_stats()
    for _ in range(3):
        _blas.matmul(x[:100], w.T)
    assert k.dnnl_matmul_stats()[1] == made0 + 1
    threads = gg.get_num_threads()
    for rows in range(32, 130):  # 98 shapes: the table (64 slots) turns over
        got = _blas.matmul(x[:rows], w.T)
        np.testing.assert_allclose(got, x[:rows].astype(np.float64) @ w.T, rtol=1e-4, atol=1e-3)
    assert k.dnnl_matmul_stats()[1] >= made0 + 98
    if _blas.cpus_available() > 1:
        gg.set_num_threads(1 if threads > 1 else 2)
        try:
            made = k.dnnl_matmul_stats()[1]
            _blas.matmul(x[:100], w.T)  # another thread count: another primitive
            assert k.dnnl_matmul_stats()[1] == made + 1
        finally:
            gg.set_num_threads(threads)


def test_onednn_matmul_from_several_python_threads_at_once(onednn_matmul: Any) -> None:
    # one mutex guards the primitives, the engine and the stream: products of several shapes
    # from four threads at once are all right
    import threading

    rng = np.random.default_rng(6)
    cases = []
    for rows, n in ((64, 128), (100, 128), (256, 64), (33, 200)):  # each >= ONEDNN_MIN_MNK
        x = rng.standard_normal((rows, 160)).astype(np.float32)
        w = rng.standard_normal((n, 160)).astype(np.float32)
        cases.append((x, w, x.astype(np.float64) @ w.T.astype(np.float64)))
    errors: list[float] = []
    before = _runs(onednn_matmul)

    def work(x: np.ndarray, w: np.ndarray, want: np.ndarray) -> None:
        for _ in range(60):
            errors.append(float(np.abs(_blas.matmul(x, w.T) - want).max()))

    threads = [threading.Thread(target=work, args=c) for c in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 240 and max(errors) < 1e-3
    assert _runs(onednn_matmul) == before + 240


def test_onednn_matmul_in_children_forked_while_another_thread_multiplies(
    onednn_matmul: Any,
) -> None:
    # a child forked while another thread held the primitives' mutex would hang on it: the
    # child starts with it unlocked, makes its own primitive (one thread) and gets it right
    import threading

    rng = np.random.default_rng(7)
    x = rng.standard_normal((128, 256)).astype(np.float32)
    w = rng.standard_normal((96, 256)).astype(np.float32)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    stop = threading.Event()

    def multiply() -> None:
        while not stop.is_set():
            _blas.matmul(x, w.T)

    worker = threading.Thread(target=multiply)
    worker.start()
    codes = []
    try:
        for _ in range(20):
            pid = os.fork()
            if pid == 0:  # the child: one product, its verdict as the exit code
                ok = np.abs(_blas.matmul(x, w.T) - want).max() < 1e-3
                os._exit(0 if ok else 1)
            deadline = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes.append(os.waitstatus_to_exitcode(status))
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    codes.append("hung")
                    break
                time.sleep(0.005)
    finally:
        stop.set()
        worker.join()
    assert codes == [0] * 20


def test_no_home_means_no_cache_not_a_file_in_the_working_directory(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(os.path, "expanduser", lambda p: p)  # as with HOME unset, no passwd
    monkeypatch.chdir(tmp_path)
    fake.cost.update(numpy=2.0, mkl=1.0)
    gg.set_blas("auto")
    assert gg.blas() == "mkl" and "not cached" in gg.blas_info()["reason"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not (MKL or ONEDNN), reason="neither MKL nor oneDNN is installed")
def test_info_recalibrate_measures_and_caches(tmp_path: Any) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "graphgrad")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("GRAPHGRAD_BLAS", None)
    env.pop("GRAPHGRAD_LAYOUT", None)
    proc = subprocess.run(
        [exe, "info", "--recalibrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    (path,) = (tmp_path / "graphgrad" / "blas").glob("blas-*.json")
    rec = json.loads(path.read_text())
    assert first.startswith(f"recalibrated at 1 thread(s): {_blas.figures(rec['seconds'])} -> ")
    assert str(tmp_path) in first
    assert f"-> {rec['choice']} for set_blas('auto')" in first
    assert (
        f"BLAS:      {rec['choice']} (requested 'auto': calibration at 1 thread(s)" in proc.stdout
    )
    # the layout of linear's products is measured again too, and cached beside the BLAS's
    (lay_path,) = (tmp_path / "graphgrad" / "blas").glob("layout-*.json")
    lay = json.loads(lay_path.read_text())
    assert "recalibrated the layout of linear's products: calibration at 1 thread(s)" in proc.stdout
    assert f"layout:    linear's products {lay['layout']} (calibration at 1 thread(s)" in (
        proc.stdout
    )


def test_a_failing_calibration_falls_back_to_numpy(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(a: Any, b: Any) -> None:
        raise OSError("the GEMM library crashed")

    monkeypatch.setattr(_blas, "matmul", broken)
    gg.set_blas("auto")
    assert gg.blas() == "numpy"
    assert "calibration failed (OSError: the GEMM library crashed)" in gg.blas_info()["reason"]
    assert not list(_blas.cache_dir().glob("blas-*.json"))  # nothing cached from a failure


def test_a_held_lock_delays_but_never_hangs(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fcntl = pytest.importorskip("fcntl")
    monkeypatch.setattr(_blas, "_LOCK_WAIT_S", 0.2)
    key = _blas.calibration_key()
    lock_path = _blas._cache_path(key).with_name(_blas._cache_path(key).name + ".lock")
    lock_path.parent.mkdir(parents=True)
    with open(lock_path, "w") as holder:  # another process, stopped while measuring
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        fake.cost.update(numpy=2.0, mkl=1.0)
        gg.set_blas("auto")
    assert gg.blas() == "mkl" and gg.blas_info()["calibration"]["measured_now"]


def test_a_kernel_variable_is_part_of_the_key(
    fake: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    plain = _blas.calibration_key()
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # OpenBLAS without AVX-512 kernels
    haswell = _blas.calibration_key()
    assert haswell["env"] == {"OPENBLAS_CORETYPE": "Haswell"} and plain != haswell
    assert _blas._cache_path(plain) != _blas._cache_path(haswell)


# ------------------------------------------- the kernels' parallel threshold, faked and real


def _wake_model(wake: float) -> Any:
    """Kernel seconds on n elements: 1 ns an element serial; split, half that plus ``wake``
    (the cost of waking the other thread)."""
    return lambda n, split: n * 0.5e-9 + wake if split else n * 1e-9


@pytest.fixture
def two_threads(fake: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMachine]:
    if _blas._fused.KERNELS is None:
        pytest.skip("no compiled kernels: nothing is split, no threshold")
    monkeypatch.setattr(_blas, "cpus_available", lambda: 8)  # a fake machine of 8 CPUs
    before = gg.get_num_threads()
    gg.set_num_threads(2)
    try:
        yield fake
    finally:
        gg.set_num_threads(before)


S = _blas.PAR_MIN_SIZES


@pytest.mark.parametrize(
    ("wins", "chosen"),
    [
        ([True] * len(S), S[0]),
        ([False, False, False, True, True, True, True], S[3]),
        ([False, True, True, False, True, True, True], S[4]),  # every larger size must win
        ([True] * (len(S) - 1) + [False], None),  # not at the largest: never
        ([False] * len(S), None),
    ],
)
def test_the_threshold_is_the_smallest_size_from_which_the_split_always_wins(
    wins: list[bool], chosen: int | None
) -> None:
    serial = [n * 1e-9 for n in S]
    split = [t * (0.5 if w else 1.2) for t, w in zip(serial, wins, strict=True)]
    assert _blas.decide_par_min(serial, split) == chosen
    within_margin = [t * (1 - _blas.PAR_MIN_MARGIN / 2) for t in serial]  # a tie stays serial
    assert _blas.decide_par_min(serial, within_margin) is None


def test_the_threshold_is_measured_after_a_gemm_and_applied(two_threads: FakeMachine) -> None:
    fake = two_threads
    fake.kernel_cost = _wake_model(100e-6)  # the split wins by >5% from ~222k elements on
    fake.kernel_calls.clear()
    fake.gemms = 0
    _blas.set_blas("numpy")
    info = _blas.par_min_info()
    assert info["par_min"] == 262144 and _blas._fused.par_min() == 262144
    if _blas._fused.KERNELS is not None:  # the real kernels now split from there
        assert _blas._fused.KERNELS.PAR_MIN == 262144
        assert _blas._fused.KERNELS.XENT_PAR_MIN == 131072
    cal = info["calibration"]
    assert cal["threads"] == 2 and cal["measured_now"] is True and cal["sizes"] == list(S)
    # each figure: one ReLU VJP + one SGD call, each timed alone
    assert cal["serial"] == pytest.approx([2 * n * 1e-9 for n in S])
    assert cal["split"] == pytest.approx([2 * (n * 0.5e-9 + 100e-6) for n in S])
    assert "calibration at 2 thread(s) with NumPy's BLAS, measured now" in info["reason"]
    assert {(n, split) for n, split in fake.kernel_calls} == {(n, b) for n in S for b in (0, 1)}
    assert fake.gemms == len(fake.kernel_calls)  # a GEMM before every kernel call
    assert fake.PAR_MIN == 32768  # the probe's own threshold restored
    (path,) = _blas.cache_dir().glob("parmin-*.json")
    rec = json.loads(path.read_text())
    assert rec["par_min"] == 262144 and rec["key"]["kind"] == "par_min"
    assert rec["key"]["blas"] == "numpy" and rec["key"]["threads"] == 2
    assert {k: v for k, v in rec["key"].items() if k not in ("kind", "blas")} == (
        _blas.calibration_key()
    )


def test_a_split_that_never_wins_keeps_the_kernels_serial(two_threads: FakeMachine) -> None:
    two_threads.kernel_cost = _wake_model(10.0)  # waking costs more than any kernel
    _blas.set_blas("numpy")
    assert _blas.par_min_info()["par_min"] is None
    assert _blas._fused.par_min() == _blas._fused.NEVER
    k = _blas._fused.KERNELS
    if k is not None and k.OPENMP:
        assert k.split_count(10**8) == 1  # serial at any size


def test_the_threshold_is_cached_and_reused(two_threads: FakeMachine) -> None:
    fake = two_threads
    fake.kernel_cost = _wake_model(100e-6)
    _blas.set_blas("numpy")
    _new_process()
    fake.kernel_cost = _wake_model(10.0)  # would be "never", if it measured again
    fake.kernel_calls.clear()
    _blas.set_blas("numpy")
    info = _blas.par_min_info()
    assert info["par_min"] == 262144 and not fake.kernel_calls  # the cached threshold
    assert info["calibration"]["measured_now"] is False and "cached" in info["reason"]
    _blas.recalibrate_par_min()  # graphgrad info --recalibrate
    assert _blas.par_min_info()["par_min"] is None and fake.kernel_calls
    (path,) = _blas.cache_dir().glob("parmin-*.json")
    assert json.loads(path.read_text())["par_min"] is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda rec: "{not json",
        lambda rec: json.dumps(rec)[: len(json.dumps(rec)) // 2],
        lambda rec: json.dumps({**rec, "par_min": 32768}),  # contradicts its own figures
        lambda rec: json.dumps({**rec, "par_min": "never"}),
        lambda rec: json.dumps({**rec, "serial": rec["serial"][:-1]}),
        lambda rec: json.dumps({**rec, "split": [-1.0] * len(S)}),
        lambda rec: json.dumps({**rec, "split": ["fast"] * len(S)}),
        lambda rec: json.dumps({**rec, "sizes": [1] * len(S)}),
        lambda rec: json.dumps({**rec, "key": {**rec["key"], "blas": "mkl"}}),
        lambda rec: json.dumps({k: v for k, v in rec.items() if k != "serial"}),
    ],
)
def test_a_damaged_threshold_cache_is_measured_again(two_threads: FakeMachine, damage: Any) -> None:
    fake = two_threads
    fake.kernel_cost = _wake_model(100e-6)
    _blas.set_blas("numpy")
    (path,) = _blas.cache_dir().glob("parmin-*.json")
    path.write_text(damage(json.loads(path.read_text())))
    _new_process()
    fake.kernel_calls.clear()
    _blas.set_blas("numpy")
    assert _blas.par_min_info()["par_min"] == 262144 and fake.kernel_calls  # measured again
    assert json.loads(path.read_text())["par_min"] == 262144  # and the file repaired


def test_each_blas_and_thread_count_has_its_threshold(two_threads: FakeMachine) -> None:
    fake = two_threads
    fake.kernel_cost = _wake_model(100e-6)
    _blas.set_blas("numpy")
    fake.kernel_cost = _wake_model(10.0)
    _blas.set_blas("mkl")  # MKL's workers after a GEMM are another state: measured again
    assert _blas.par_min_info()["par_min"] is None
    _blas.set_blas("numpy")
    assert _blas.par_min_info()["par_min"] == 262144
    gg.set_num_threads(3)
    assert _blas.par_min_info()["calibration"]["threads"] == 3
    assert len(list(_blas.cache_dir().glob("parmin-*.json"))) == 3


def test_one_thread_or_a_forced_threshold_measures_nothing(
    two_threads: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = two_threads
    gg.set_num_threads(1)
    fake.kernel_calls.clear()
    _blas.set_blas("numpy")
    info = _blas.par_min_info()
    assert not fake.kernel_calls and "calibration" not in info
    assert info["reason"] == "1 thread: the kernels run serially, nothing measured"
    assert info["par_min"] == _blas._fused.DEFAULT_PAR_MIN
    monkeypatch.setattr(_blas._fused, "FORCED_PAR_MIN", 1000)  # GRAPHGRAD_PAR_MIN=1000
    for n in (2, 3):
        gg.set_num_threads(n)
        info = _blas.par_min_info()
        assert info["par_min"] == 1000 and _blas._fused.par_min() == 1000
        assert info["reason"] == "GRAPHGRAD_PAR_MIN=1000 in the environment, nothing measured"
    _blas.recalibrate_par_min()
    assert not fake.kernel_calls and not list(_blas.cache_dir().glob("parmin-*.json"))


def test_the_threshold_calibration_stops_at_its_budget(two_threads: FakeMachine) -> None:
    fake = two_threads
    fake.kernel_cost = lambda n, split: 0.01  # 0.28 s of kernels a round
    fake.kernel_calls.clear()
    _blas.measure_par_min()
    per_round = 2 * 2 * len(S)  # two kernels, serial and split, every size
    assert len(fake.kernel_calls) == per_round * (1 + 3)  # warm-up, then 3 rounds


def test_a_failing_threshold_calibration_keeps_the_default(
    two_threads: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise OSError("the kernel crashed")

    monkeypatch.setattr(two_threads, "relu_grad", broken)
    _blas.set_blas("numpy")
    info = _blas.par_min_info()
    assert info["par_min"] == _blas._fused.DEFAULT_PAR_MIN
    assert "calibration failed (OSError: the kernel crashed)" in info["reason"]
    assert not list(_blas.cache_dir().glob("parmin-*.json"))


needs_openmp = pytest.mark.skipif(
    not getattr(_blas._fused.KERNELS, "OPENMP", False), reason="kernels without OpenMP"
)


@needs_openmp
def test_the_real_threshold_calibration_runs_and_is_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # no timing asserted: only that a real measurement runs, is consistent and loads back
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_blas, "_calibrations", {})
    before = gg.get_num_threads()
    gg.set_num_threads(2)
    try:
        rec = _blas.calibrate_par_min()
        assert rec["measured"] and rec["sizes"] == list(S)
        assert all(t > 0 for t in rec["serial"] + rec["split"])
        assert rec["par_min"] == _blas.decide_par_min(rec["serial"], rec["split"])
        _blas._calibrations.clear()
        again = _blas.calibrate_par_min()
        assert not again["measured"] and again["par_min"] == rec["par_min"]
    finally:
        monkeypatch.undo()
        gg.set_num_threads(before)
        _blas._apply_par_min()


def graphgrad_info(*args: str, **env_: str) -> subprocess.CompletedProcess[str]:
    """``graphgrad info ARGS`` through the installed entry point, with ``env_`` added to the
    environment (``GRAPHGRAD_PAR_MIN`` dropped unless given); for this and other test files."""
    exe = os.path.join(os.path.dirname(sys.executable), "graphgrad")
    env = {k: v for k, v in os.environ.items() if k != "GRAPHGRAD_PAR_MIN"}
    return subprocess.run(
        [exe, "info", *args], env={**env, **env_}, capture_output=True, text=True, timeout=120
    )


def test_graphgrad_info_says_when_the_blas_gets_fewer_threads() -> None:
    # OMP_NUM_THREADS=2 in a process that may run on one CPU (a taskset, a container's cpuset)
    exe = os.path.join(os.path.dirname(sys.executable), "graphgrad")
    one_cpu = min(os.sched_getaffinity(0))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "GRAPHGRAD_BLAS": "numpy"}
    outs = [
        subprocess.run(
            [exe, "info", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lambda: os.sched_setaffinity(0, {one_cpu}),
        )
        for args in ([], ["--json"])
    ]
    assert all(proc.returncode == 0 for proc in outs), outs[0].stderr + outs[1].stderr
    assert "threads:   2 " in outs[0].stdout
    assert "the BLAS gets 1: this process may run on that many CPUs" in outs[0].stdout
    info = json.loads(outs[1].stdout)
    assert info["threads"] == 2 and info["blas"]["blas_threads"] == 1


@needs_openmp
def test_graphgrad_info_shows_the_threshold_and_why(tmp_path: Any) -> None:
    proc = graphgrad_info(OMP_NUM_THREADS="2", GRAPHGRAD_PAR_MIN="5000")
    assert proc.returncode == 0, proc.stderr
    assert (
        "parallel:  kernels split between threads from 5000 elements "
        "(GRAPHGRAD_PAR_MIN=5000 in the environment, nothing measured)" in proc.stdout
    )
    proc = graphgrad_info(OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr
    assert (
        "parallel:  kernels serial at every size (1 thread: the kernels run serially, "
        "nothing measured)" in proc.stdout
    )
    cache = str(tmp_path)
    proc = graphgrad_info("--json", OMP_NUM_THREADS="2", XDG_CACHE_HOME=cache)
    assert proc.returncode == 0, proc.stderr
    p = json.loads(proc.stdout)["kernels_par_min"]
    (path,) = (tmp_path / "graphgrad" / "blas").glob("parmin-*.json")
    rec = json.loads(path.read_text())
    assert p["par_min"] == rec["par_min"] and p["calibration"]["cache"] == str(path)
    assert p["calibration"]["serial"] == rec["serial"] and p["calibration"]["measured_now"]
    proc = graphgrad_info("--recalibrate", OMP_NUM_THREADS="2", XDG_CACHE_HOME=cache)
    assert proc.returncode == 0, proc.stderr
    # (the recalibrated BLAS may differ, and the threshold is per BLAS: the file it names)
    (line,) = [x for x in proc.stdout.splitlines() if "kernels' parallel threshold" in x]
    head, _, named = line.rstrip(")").rpartition(" (")
    rec = json.loads(Path(named).read_text())
    assert named.startswith(str(tmp_path)) and rec["key"]["blas"] in proc.stdout
    where = "never split" if rec["par_min"] is None else f"split from {rec['par_min']} elements"
    assert head == f"recalibrated the kernels' parallel threshold at 2 thread(s): {where}"
    assert "parallel:  kernels " in proc.stdout and "measured now" in proc.stdout


def test_without_compiled_kernels_there_is_no_threshold() -> None:
    proc = graphgrad_info("--json", GRAPHGRAD_PURE_PYTHON="1", OMP_NUM_THREADS="2")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["kernels_par_min"] == {
        "par_min": None,
        "reason": "no compiled kernels in use",
    }
    proc = graphgrad_info(GRAPHGRAD_PURE_PYTHON="1", OMP_NUM_THREADS="2")
    assert "parallel:  kernels serial at every size (no compiled kernels in use)" in proc.stdout


@pytest.mark.skipif(not hasattr(_blas._fused.KERNELS, "GEMM_DNNL"), reason="no kernels")
def test_the_gemm_kernel_refuses_a_calling_convention_it_cannot_make() -> None:
    K = _blas._fused.KERNELS
    assert (K.GEMM_CBLAS, K.GEMM_CBLAS64, K.GEMM_DNNL) == (
        _blas.GEMM_CBLAS,
        _blas.GEMM_CBLAS64,
        _blas.GEMM_DNNL,
    )
    a = np.ones((2, 3))
    out = np.zeros((2, 2))
    # oneDNN has no float64 GEMM: its convention with float64 arrays would read them as floats
    with pytest.raises(ValueError, match=r"gemm: calling convention 2 for float64"):
        K.gemm(1, a, False, a, True, out, 0.0, K.GEMM_DNNL)
    with pytest.raises(ValueError, match=r"gemm: calling convention 3 for float32"):
        K.gemm(
            1,
            a.astype(np.float32),
            False,
            a.astype(np.float32),
            True,
            out.astype(np.float32),
            0.0,
            3,
        )
    ins = ("gemm", True, (0, 1, K.GEMM_DNNL, 1), 1, (0, 0, 0, 0), (2, 2, 3, 3, 3, 2), (0.0,) * 6)
    with pytest.raises(
        ValueError,
        match=r"Plan: instruction 0: GEMM calling convention 2 for "
        r"float64",
    ):
        K.Plan([ins], [], 0, 0, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("ta", "tb"), [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_into_adds_inside_numpys_own_gemm(
    monkeypatch: pytest.MonkeyPatch, dtype: Any, ta: bool, tb: bool
) -> None:
    # SGD(fused_backward=True) on NumPy's BLAS: out = a @ b + beta * out in one call of
    # NumPy's OpenBLAS's cblas_?gemm (the product never stored), both transposes.
    if _blas._fused.KERNELS is None or not _blas.numpy_cblas():
        pytest.skip("no compiled kernels, or NumPy's BLAS is not an OpenBLAS here")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7) if ta else (7, 5)).astype(dtype)
    b = rng.standard_normal((9, 5) if tb else (5, 9)).astype(dtype)
    a, b = (a.T if ta else a), (b.T if tb else b)
    out = rng.standard_normal((7, 9)).astype(dtype)
    expected = a.astype(np.float64) @ b + 0.9 * out
    calls = []
    real_gemm = _blas._fused.KERNELS.gemm
    monkeypatch.setattr(
        _blas._fused.KERNELS, "gemm", lambda *args: calls.append(args[-1]) or real_gemm(*args)
    )
    with gg.using_blas("numpy"):
        assert _blas.matmul_into(a, b, out, 0.9)
    assert calls == [_blas.numpy_cblas()["ilp64"]]  # one GEMM call, β inside it
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


def test_a_threshold_record_a_day_old_is_measured_again(two_threads: FakeMachine) -> None:
    # the threshold moves with the machine's load (and a VM's placement of its CPUs) and
    # never changes a result: its record is kept PAR_MIN_MAX_AGE_S, the BLAS's for good
    fake = two_threads
    fake.kernel_cost = _wake_model(100e-6)
    _blas.set_blas("numpy")
    (path,) = _blas.cache_dir().glob("parmin-*.json")
    rec = json.loads(path.read_text())
    young = time.time() - _blas.PAR_MIN_MAX_AGE_S + 60
    path.write_text(json.dumps({**rec, "measured_at_s": young}))
    _new_process()
    fake.kernel_cost = _wake_model(10.0)  # "never", if it measured again
    fake.kernel_calls.clear()
    _blas.set_blas("numpy")
    assert _blas.par_min_info()["par_min"] == 262144 and not fake.kernel_calls  # kept
    path.write_text(json.dumps({**rec, "measured_at_s": young - 120}))  # a day and a minute
    _new_process()
    _blas.set_blas("numpy")
    assert _blas.par_min_info()["par_min"] is None and fake.kernel_calls  # measured again
    rec = json.loads(path.read_text())
    assert rec["par_min"] is None and time.time() - rec["measured_at_s"] < 60


def test_matmul_gives_a_column_times_a_row_to_outer_and_the_rest_to_numpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NumPy runs (M, 1) @ (1, N) with M, N > 1 in its own scalar loop (no BLAS; 4-18x slower
    # than graphgrad's outer): _blas.matmul sends exactly those products of one float dtype
    # there, whatever the BLAS selected, with the same bytes; a dot or a GEMV (a side of 1),
    # integers or mixed dtypes stay with np.matmul.
    calls: list[tuple[int, ...]] = []
    real = _blas.outer

    def spy(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        calls.append(a.shape + b.shape)
        return real(a, b, out)

    monkeypatch.setattr(_blas, "outer", spy)
    rng = np.random.default_rng(3)
    for dt in (np.float32, np.float64):
        a, b = rng.standard_normal((256, 1)).astype(dt), rng.standard_normal((1, 784)).astype(dt)
        a[::2] = 0.0
        b[0, ::3] *= -1
        assert _blas.matmul(a, b).tobytes() == np.matmul(a, b).tobytes()
        padded = np.full((256, 800), 5.0, dt)
        got = _blas.matmul(a, b, out=padded[:, :784])
        assert got.tobytes() == np.matmul(a, b).tobytes()
        assert (padded[:, 784:] == 5.0).all()
    assert calls == [(256, 1, 1, 784)] * 4
    calls.clear()
    for x, y in [
        (np.ones((1, 1)), np.ones((1, 5))),  # scalar @ row: NumPy's loop, too small to matter
        (np.ones((4, 1)), np.ones((1, 1))),
        (np.ones((1, 3)), np.ones((3, 4))),  # GEMV
        (np.ones((4, 1), np.int64), np.ones((1, 5), np.int64)),
        (np.ones((4, 1), np.float32), np.ones((1, 5))),
        (np.ones((2, 4, 1)), np.ones((2, 1, 5))),  # batched
    ]:
        assert np.array_equal(_blas.matmul(x, y), np.matmul(x, y))
    assert calls == []


@pytest.mark.parametrize("library", ["mkl", "onednn"])
def test_products_with_a_side_of_one_stay_with_numpy_whatever_the_library(
    library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MKL's and oneDNN's GEMMs are chosen for matrices; a row times a matrix (NumPy: GEMV), a
    # matrix times a column and a column times a row (graphgrad's outer) are not theirs: the
    # bytes of np.matmul, no call into the library. A product of matrices still is.
    if "error" in _blas.find(library):
        pytest.skip(f"{library}: {_blas.find(library)['error']}")
    rng = np.random.default_rng(4)
    gemm_calls: list[int] = []
    real = _blas._fused.KERNELS

    class Spy:
        def __getattr__(self, name: str) -> Any:
            if name == "gemm":
                gemm_calls.append(1)
            return getattr(real, name)

    monkeypatch.setattr(_blas._fused, "KERNELS", Spy())
    W = rng.standard_normal((2048, 1024)).astype(np.float32)
    x, g = (rng.standard_normal((1, n)).astype(np.float32) for n in (1024, 2048))
    with _blas.using_blas(library):
        for a, b in [(x, W.T), (g, W), (W, x.T), (g.T, x)]:
            assert _blas.matmul(a, b).tobytes() == np.matmul(a, b).tobytes()
        assert gemm_calls == []
        _blas.matmul(np.repeat(x, 2, axis=0), W.T)  # 2 x 1024 x 2048: the library's
        assert gemm_calls == [1]
