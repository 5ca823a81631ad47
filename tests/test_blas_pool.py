"""One thread pool: NumPy's OpenBLAS runs its parallel jobs on graphgrad's OpenMP threads.

The products must give the same bits as on OpenBLAS's own threads, survive two Python threads
multiplying at once, a team OpenMP cannot give (threads of their own instead), and a fork
(the child goes back to OpenBLAS's threads, its kernels to one thread)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _blas, _fused

K = _fused.KERNELS
needs_pool = pytest.mark.skipif(
    K is None
    or not getattr(K, "OPENMP", False)
    or not _fused.pool_setters()
    or os.environ.get("GRAPHGRAD_BLAS_POOL", "").strip().lower() == "openblas",
    reason="needs the compiled kernels with OpenMP and an OpenBLAS with a threads callback",
)


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = gg.set_num_threads(2)
    try:
        yield
    finally:
        gg.set_num_threads(before)


def _products(seed: int = 0) -> list[np.ndarray]:
    """Products OpenBLAS splits between 2 threads: K beyond its block size, both dtypes,
    every transpose, a GEMV."""
    rng = np.random.default_rng(seed)
    out = []
    for dt in (np.float32, np.float64):
        a = rng.standard_normal((256, 784)).astype(dt)
        w = rng.standard_normal((300, 784)).astype(dt)
        g = rng.standard_normal((256, 300)).astype(dt)
        out += [a @ w.T, g.T @ a, g @ w, w @ a.T, g.T @ np.ones(256, dt)]
    return out


def _bits(arrays: list[np.ndarray]) -> list[bytes]:
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


def _together(*work: Any, timeout: float = 120) -> bool:
    """Run each function on a Python thread of its own, all at once; False if one is still
    running after ``timeout`` seconds (a hang; the thread is a daemon, left behind)."""
    threads = [threading.Thread(target=f, daemon=True) for f in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return not any(t.is_alive() for t in threads)


def _run(
    code: str, env: dict[str, str] | None = None, timeout: float = 120, drop: tuple[str, ...] = ()
) -> Any:
    full = {k: v for k, v in os.environ.items() if k not in drop}
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**full, **(env or {})},
        start_new_session=True,  # a hang: the whole group goes, a forked child with it
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    assert proc.returncode == 0, err + out
    return json.loads(out.strip().splitlines()[-1])


@needs_pool
def test_products_run_on_the_pool_and_give_openblas_s_own_bits(two_threads: None) -> None:
    assert gg.blas_info()["pool"] == "graphgrad"
    calls = K.blas_pool_counts()[0]
    ours = _bits(_products())
    assert K.blas_pool_counts()[0] > calls  # the products went through the callback
    previous = _blas.set_pool("openblas")
    try:
        calls = K.blas_pool_counts()[0]
        theirs = _bits(_products())
        assert K.blas_pool_counts()[0] == calls  # OpenBLAS's own threads
    finally:
        _blas.set_pool(previous)
    assert ours == theirs


@needs_pool
def test_two_python_threads_multiplying_at_once_get_their_own_results(two_threads: None) -> None:
    # OpenBLAS's jobs use per-job buffers shared by all callers: the callback runs one
    # product's jobs at a time
    want = [_bits(_products(seed)) for seed in (1, 2)]
    got: dict[int, list[list[bytes]]] = {1: [], 2: []}

    def work(seed: int) -> None:
        for _ in range(6):
            got[seed].append(_bits(_products(seed)))

    assert _together(lambda: work(1), lambda: work(2)), "a thread hangs"
    for seed, w in zip((1, 2), want, strict=True):
        assert all(g == w for g in got[seed]), f"thread {seed}: a product differs"


@needs_pool
def test_lapack_s_parallel_lu_beside_products_in_another_thread(two_threads: None) -> None:
    # numpy.linalg.solve's LU (OpenBLAS's getrf_parallel) keeps OpenBLAS's own workers while
    # the callback runs products' jobs: with the jobs in the workers' slots (0, 1, ...) the
    # two overwrote each other's status words and this hung; the callback's jobs now take the
    # top slots
    rng = np.random.default_rng(0)
    a_big, b_big = rng.standard_normal((1200, 1200)), rng.standard_normal((1200, 3))
    want_solve = np.linalg.solve(a_big, b_big).tobytes()
    want = _bits(_products(3))
    bad = {"solve": 0, "products": 0}

    def solve() -> None:
        for _ in range(8):
            bad["solve"] += np.linalg.solve(a_big, b_big).tobytes() != want_solve

    def multiply() -> None:
        for _ in range(40):
            bad["products"] += _bits(_products(3)) != want

    assert _together(solve, multiply), "a thread hangs"
    assert bad == {"solve": 0, "products": 0}


@needs_pool
def test_more_blas_threads_than_half_of_openblas_s_table_leave_it_its_own() -> None:
    top = min(t for _, t in _fused.pool_setters())
    code = f"""
        import json, warnings, numpy as np, graphgrad as gg
        from graphgrad import _blas
        warnings.simplefilter("ignore")  # more threads than CPUs: warned, capped at the CPUs
        _blas.cpus_available = lambda: {top}  # a machine with as many CPUs as the table
        gg.set_num_threads({top // 2 + 1})
        over = dict(gg.blas_info())
        gg.set_num_threads({top // 2})
        at = dict(gg.blas_info())
        print(json.dumps({{"over": [over["pool"], over["pool_reason"]],
                           "at": [at["pool"], at["pool_reason"]]}}))
    """
    out = _run(code)
    assert out["over"][0] == "openblas" and "MAX_THREADS" in out["over"][1], out
    assert out["at"][0] == "graphgrad", out


@needs_pool
def test_a_team_openmp_cannot_give_runs_on_threads_of_its_own() -> None:
    # OMP_THREAD_LIMIT=1: OpenMP gives a team of one, and a GEMM's jobs wait for each other,
    # so they must not run one after another on it
    code = """
        import json, numpy as np, graphgrad as gg
        from graphgrad import _blas, _fused
        gg.set_num_threads(2)
        a = np.random.default_rng(0).standard_normal((256, 784)).astype(np.float32)
        w = np.random.default_rng(1).standard_normal((300, 784)).astype(np.float32)
        ours = (a @ w.T).tobytes()
        counts = _fused.KERNELS.blas_pool_counts()
        _blas.set_pool("openblas")
        theirs = (a @ w.T).tobytes()
        print(json.dumps({"same": ours == theirs, "spawned": counts[1], "calls": counts[0]}))
    """
    out = _run(code, {"OMP_THREAD_LIMIT": "1"})
    assert out["same"] and out["calls"] > 0 and out["spawned"] > 0, out


@needs_pool
@pytest.mark.parametrize("blas", ["numpy", "mkl", "onednn"])
def test_a_forked_child_multiplies_and_steps_without_hanging(blas: str) -> None:
    # GNU OpenMP's threads do not survive fork(): a child that entered a parallel region would
    # wait for them forever. The child goes back to OpenBLAS's threads, its kernels to one,
    # and MKL (whose GNU threading layer runs on OpenMP's threads) and oneDNN (on OpenMP's
    # threads) to one.
    if blas != "numpy" and "error" in _blas.find(blas):
        pytest.skip(f"{blas}: {_blas.find(blas)['error']}")
    code = """
        import json, os, numpy as np, graphgrad as gg
        from graphgrad import _blas, _fused
        gg.set_blas(BLAS)
        gg.set_num_threads(2)
        _fused.set_par_min(64)  # the kernels split too: the pool's threads exist
        rng = np.random.default_rng(0)
        a = rng.standard_normal((256, 784)).astype(np.float32)
        w = rng.standard_normal((300, 784)).astype(np.float32)
        want = (a @ w.T).tobytes()
        model = gg.nn.MLP(784, [300], 10, rng=np.random.default_rng(1))
        opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        step = gg.compile_step(model, opt)
        y = rng.integers(0, 10, 256)
        step(a, y)
        r, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            same = (a @ w.T).tobytes() == want
            loss = step(a, y)
            gg.set_num_threads(2)  # stays one thread for the kernels in a forked child
            info = gg.blas_info()
            kernels = _fused.KERNELS.get_num_threads()
            msg = json.dumps({"same": same, "loss": float(loss), "pool": info["pool"],
                              "reason": info["pool_reason"], "kernels": kernels})
            os.write(wfd, msg.encode())
            os._exit(0)
        os.close(wfd)
        _, status = os.waitpid(pid, 0)
        child = json.loads(os.read(r, 65536).decode())
        child["status"] = status
        child["parent_pool"] = gg.blas_info()["pool"]
        print(json.dumps(child))
    """
    out = _run(code.replace("BLAS", repr(blas)), timeout=60)  # a hang: TimeoutExpired
    assert out["status"] == 0 and out["same"] and np.isfinite(out["loss"]), out
    assert out["pool"] == "openblas" and "fork" in out["reason"], out
    assert out["kernels"] == 1 and out["parent_pool"] == "graphgrad", out


def test_the_pool_can_be_turned_off_from_the_environment() -> None:
    code = """
        import json, graphgrad as gg
        from graphgrad import _fused
        info = gg.blas_info()
        print(json.dumps({"pool": info["pool"], "reason": info["pool_reason"],
                          "wait": _fused.OMP_WAIT[0]}))
    """
    out = _run(
        code, {"GRAPHGRAD_BLAS_POOL": "openblas"}, drop=("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    )
    assert out["pool"] == "openblas" and "GRAPHGRAD_BLAS_POOL=openblas" in out["reason"]
    if K is not None:  # two pools: OpenMP's idle threads sleep instead of spinning
        assert out["wait"].startswith("OMP_WAIT_POLICY=PASSIVE"), out


@needs_pool
def test_one_pool_spins_and_the_choice_is_in_the_calibration_key() -> None:
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        assert _fused.OMP_WAIT[0] == f"GOMP_SPINCOUNT={_fused.SPIN_COUNT} (set by graphgrad)"
        assert "GOMP_SPINCOUNT" not in os.environ  # removed once libgomp read it
    key = _blas.calibration_key()
    assert key["pool"] == "graphgrad" and key["omp_wait"] == _fused.OMP_WAIT[0]
    previous = _blas.set_pool("openblas")
    try:
        assert _blas.calibration_key()["pool"] == "openblas"
    finally:
        _blas.set_pool(previous)


def test_set_pool_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="set_pool: 'threads' is not one of graphgrad, openblas"):
        _blas.set_pool("threads")
    if K is None or not getattr(K, "OPENMP", False):
        with pytest.raises(ValueError, match="set_pool\\('graphgrad'\\): graphgrad's"):
            _blas.set_pool("graphgrad")
