"""Data parallelism on MPI: ``mpiexec -n 2`` runs against one process with the whole batch.

Every MPI job runs in a subprocess (``mpiexec`` from the virtualenv, the ``mpich`` wheel of
the ``distributed`` extra) with a timeout, so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graphgrad import checkpoint as ckpt
from test_train import write_fake_fashion_mnist

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
GRAPHGRAD = BIN / "graphgrad"
pytestmark = pytest.mark.skipif(
    not MPIEXEC.exists(), reason="needs the distributed extra: pip install 'graphgrad[distributed]'"
)
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "GRAPHGRAD_DIST_TIMEOUT": "60",
}


SHM = Path("/dev/shm")


def _mapped_shm_files() -> set[str]:
    """The /dev/shm files some live process has mapped (read from /proc/*/maps)."""
    used: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text(errors="replace")
        except OSError:
            continue
        used.update(line.split()[-1] for line in text.splitlines() if " /dev/shm/" in line)
    return used


@pytest.fixture(autouse=True, scope="module")
def no_leaked_mpich_segments() -> Any:
    """A rank killed or aborted on purpose (the fault tests) can leave MPICH's shared-memory
    segment in /dev/shm (2 MB each, never reclaimed until reboot): remove the ones these tests
    created that no live process maps (at the end of the module: a killed job's last rank
    may outlive its test), so running the suite does not fill the machine."""
    before = set(SHM.glob("mpich_shm_*")) if SHM.is_dir() else set()
    yield
    if not SHM.is_dir():
        return
    new = set(SHM.glob("mpich_shm_*")) - before
    if not new:
        return
    for _ in range(20):  # a killed job's ranks may take a moment to exit
        used = _mapped_shm_files()
        if not any(str(f) in used for f in new):
            break
        time.sleep(0.25)
    for f in new:
        if str(f) not in used:
            f.unlink(missing_ok=True)


def mpirun(n: int, *cmd: Any, timeout: float = 120, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [str(MPIEXEC), "-n", str(n), *map(str, cmd)],
        capture_output=True, text=True, timeout=timeout, env=env or ENV,
    )  # fmt: skip


def run(*cmd: Any, timeout: float = 120) -> Any:
    return subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=timeout,
                          env=ENV)  # fmt: skip


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    latest = ckpt.latest_checkpoint(run_dir)
    assert latest is not None, f"no checkpoint in {run_dir}"
    return dict(ckpt.load_checkpoint(latest).weights)


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-9, atol=1e-12, err_msg=name)


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("dist")
    root = write_fake_fashion_mnist(base / "data", n_train=100, n_test=30)
    common = ["--dataset", "fashion-mnist", "--data-root", root, "--hidden", "16", "--lr",
              "0.05", "--optimizer", "sgd", "--momentum", "0.9", "--dtype", "float64",
              "--seed", "3", "--lr-schedule", "constant", "--no-progress",
              "--no-plots"]  # fmt: skip
    out: dict[str, Any] = {"base": base, "common": common}
    # Two ranks with 8 samples each against one process with 16.
    out["two"] = mpirun(2, GRAPHGRAD, "train", "--distributed", *common, "--epochs", "2",
                        "--batch-size", "8", "--out", base / "two")  # fmt: skip
    out["one"] = run(GRAPHGRAD, "train", *common, "--epochs", "2", "--batch-size", "16",
                     "--out", base / "one")  # fmt: skip
    out["half"] = mpirun(2, GRAPHGRAD, "train", "--distributed", *common, "--epochs", "1",
                         "--batch-size", "8", "--out", base / "half")  # fmt: skip
    return out


def test_two_ranks_equal_one_process_with_twice_the_batch(cli: dict[str, Any]) -> None:
    two, one, base = cli["two"], cli["one"], cli["base"]
    assert two.returncode == 0, two.stderr
    assert one.returncode == 0, one.stderr
    assert_same_weights(weights(base / "two"), weights(base / "one"))
    m2 = json.loads((base / "two" / "metrics.json").read_text())
    m1 = json.loads((base / "one" / "metrics.json").read_text())
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    assert [h["world_size"] for h in m2["history"]] == [2, 2]
    assert [h["global_batch_size"] for h in m2["history"]] == [16, 16]
    assert m2["steps"] == m1["steps"] == 2 * 7  # ceil(100 / 16) steps per epoch
    # Evaluation (split over the ranks each epoch; on rank 0 at the end) agrees too.
    assert m2["test"]["accuracy"] == m1["test"]["accuracy"]
    assert m2["test"]["loss"] == pytest.approx(m1["test"]["loss"], rel=1e-9)
    for h2, h1 in zip(m2["history"], m1["history"], strict=True):
        for key in ("train_loss", "train_accuracy", "eval_loss", "eval_accuracy"):
            assert h2[key] == pytest.approx(h1[key], rel=1e-9), key
    # Rank 0 alone speaks: one start line, one line per epoch.
    said = two.stdout + two.stderr  # results on stdout, diagnostics on stderr
    assert said.count("training ") == 1 and said.count("epoch 2/2") == 1
    assert "distributed: 2 MPI rank(s)" in said
    meta = json.loads((ckpt.latest_checkpoint(base / "two") / ckpt.CHECKPOINT_JSON).read_text())
    assert meta["distributed"] == {"world_size": 2, "batch_size_per_rank": 8,
                                   "global_batch_size": 16}  # fmt: skip


def test_resume_continues_exactly_with_the_same_or_another_world_size(
    cli: dict[str, Any], tmp_path: Path
) -> None:
    base, common = cli["base"], cli["common"]
    assert cli["half"].returncode == 0, cli["half"].stderr
    other = tmp_path / "other"
    shutil.copytree(base / "half", other)
    r = mpirun(2, GRAPHGRAD, "train", "--distributed", "--resume", "--epochs", "2", "--out",
               base / "half", "--no-progress", "--no-plots")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert_same_weights(weights(base / "half"), weights(base / "two"))

    # The second epoch on one rank (8 samples a step) instead of two (16 a step).
    r = mpirun(1, GRAPHGRAD, "train", "--distributed", "--resume", "--epochs", "2", "--out",
               other, "--no-progress", "--no-plots")  # fmt: skip
    assert r.returncode == 0, r.stderr
    hist = json.loads((other / "metrics.json").read_text())["history"]
    assert [(h["world_size"], h["global_batch_size"]) for h in hist] == [(2, 16), (1, 8)]
    assert_same_weights(weights(other), reference_with_batch_change(base, common))


def reference_with_batch_change(base: Path, common: list[Any]) -> dict[str, np.ndarray]:
    """One process: epoch 1 with batch 16, then epoch 2 with batch 8 (the Python API)."""
    from graphgrad.config import load_config
    from graphgrad.train import Trainer, build_model, build_optimizer, load_data

    cfg = load_config(base / "one" / "config.toml")
    data = load_data(cfg.data, np.float64)
    model = build_model(cfg.model, data.num_features, data.num_classes, np.float64)
    opt = build_optimizer(cfg.optim, model.parameters())
    trainer = Trainer(model, opt, batch_size=16, data_seed=cfg.data.seed, progress=False,
                      log=lambda _line: None)  # fmt: skip
    trainer.fit(data.x_train, data.y_train, 1)
    trainer.batch_size = 8
    trainer.fit(data.x_train, data.y_train, 2)
    return model.state_dict()


@pytest.mark.parametrize("hidden", ["16", "256"])
def test_a_run_directory_in_the_way_stops_every_rank_cleanly(
    cli: dict[str, Any], hidden: str
) -> None:
    """Rank 0 fails before its trainer exists; the others must not wait for it anywhere
    (hidden 256: a buffer for the shared-memory reduction, whose window is collective)."""
    common = [hidden if a == "16" else a for a in cli["common"]]
    r = mpirun(2, GRAPHGRAD, "train", "--distributed", *common, "--epochs", "1",
               "--batch-size", "8", "--out", cli["base"] / "two", timeout=60)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.count("already holds a run") == 1  # printed once, by rank 0


def test_divergence_stops_every_rank_with_one_message(cli: dict[str, Any], tmp_path: Path) -> None:
    # the largest rate and weight decay the config accepts: in float32 the weights overflow in
    # epoch 1 (a factor of about 1e6 a step)
    swap = {"0.05": "1000", "float64": "float32"}
    common = [swap.get(a, a) for a in cli["common"]] + ["--weight-decay", "1000"]
    r = mpirun(2, GRAPHGRAD, "train", "--distributed", *common, "--epochs", "1",
               "--batch-size", "8", "--out", tmp_path / "nan", timeout=60)  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("training diverged") == 1


def test_without_mpi4py_the_flag_says_how_to_install_it(tmp_path: Path) -> None:
    fake = tmp_path / "mpi4py"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mpi4py'\", name='mpi4py')\n"
    )
    env = {**ENV, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run(
        [str(GRAPHGRAD), "train", "--distributed", "--dataset", "two_moons", "--out",
         str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'graphgrad[distributed]'" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()  # nothing else happened
    # Without the flag nothing changes.
    r = subprocess.run([str(GRAPHGRAD), "train", "--dataset", "two_moons", "--epochs", "1",
                        "--out", str(tmp_path / "plain"), "--no-progress", "--no-plots"],
                       capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- Python API

API_SCRIPT = """
import sys, numpy as np
import graphgrad as gg
from graphgrad import distributed as dist

world = dist.init()
S, B, overlap = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "overlap"
g = np.random.default_rng(0)
x = g.normal(size=(S, 6))
y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
model = gg.nn.MLP(6, [12, 7], 3, "tanh", rng=np.random.default_rng(1), dtype=np.float64)
opt = gg.optim.Adam(model.parameters(), lr=0.01)
trainer = dist.DistributedTrainer(model, opt, world=world, batch_size=B, data_seed=5,
                                  lr_schedule="cosine", log=lambda line: None, progress=False,
                                  overlap=overlap, bucket_bytes=8 * (7 * 3 + 12 * 7))
hist = trainer.fit(x, y, epochs=3, eval_data=(x[:20], y[:20]))
red = trainer.reducer
buckets = red.bucket_sizes or [red.buffer.size]
if overlap:  # a step that uses the second weight once more than the first step did
    w1 = model.parameters()[2]
    try:
        red.backward(gg.cross_entropy(model(x[:4]), y[:4]) + (w1 * w1).sum(), 0.5)
        red.finish()
    except dist.DistributedError as e:
        print(f"rank {world.rank}: {e}", file=sys.stderr)
if world.is_root:
    np.savez(sys.argv[1], **model.state_dict(), eval_loss=hist[-1]["eval_loss"],
             buckets=buckets, calls=world.allreduce_calls, malloc=world.malloc_tuned)
"""


@pytest.mark.parametrize("overlap", ["overlap", "blocking"])
@pytest.mark.parametrize("samples", [64, 49])  # 49: the last step's shards are 0 and 1
def test_python_api_equals_one_process(tmp_path: Path, samples: int, overlap: str) -> None:
    import graphgrad as gg
    from graphgrad.train import Trainer, evaluate

    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    r = mpirun(2, sys.executable, script, tmp_path / "w.npz", samples, 4, overlap)
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "w.npz")
    steps = 3 * -(-samples // 8)
    params = 6 * 12 + 12 + 12 * 7 + 7 + 7 * 3 + 3
    assert bool(got["malloc"])  # glibc: init() told malloc to keep freed memory
    if overlap == "overlap":
        # buckets: the weights as they complete (7*3 and 12*7 fill bucket_bytes), then the
        # first weight (it completes last), the biases, the 6 parameters' counts of ranks with
        # a gradient and the 3 statistics; the first step
        # is one Allreduce, every later one starts one Iallreduce per bucket (the first
        # during the backward pass); the changed step stops after its first
        assert list(got["buckets"]) == [7 * 3 + 12 * 7, 6 * 12 + 12 + 7 + 3 + 6 + 3]
        assert int(got["calls"]) == 1 + 2 * (steps - 1) + 1
        for rank in (0, 1):
            assert f"rank {rank}: GradientReducer(overlap=True): parameter #2 (7, 12)" in r.stderr
    else:
        assert list(got["buckets"]) == [params + 6 + 3] and int(got["calls"]) == steps

    g = np.random.default_rng(0)
    x = g.normal(size=(samples, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    model = gg.nn.MLP(6, [12, 7], 3, "tanh", rng=np.random.default_rng(1), dtype=np.float64)
    opt = gg.optim.Adam(model.parameters(), lr=0.01)
    Trainer(model, opt, batch_size=8, data_seed=5, lr_schedule="cosine", progress=False,
            log=lambda _line: None).fit(x, y, epochs=3)  # fmt: skip
    for name, p in model.named_parameters():
        np.testing.assert_allclose(got[name], p.data, rtol=1e-9, atol=1e-12, err_msg=name)
    assert float(got["eval_loss"]) == pytest.approx(evaluate(model, x[:20], y[:20]).loss, 1e-9)


PENALTY_SCRIPT = """
import sys, numpy as np
import graphgrad as gg
from graphgrad import distributed as dist

world = dist.init()
g = np.random.default_rng(0)
x = g.normal(size=(40, 6))
y = (x[:, 0] > 0).astype(np.int64)
result = {}
for overlap in (False, True):
    model = gg.nn.MLP(6, [12, 7], 2, "tanh", rng=np.random.default_rng(1), dtype=np.float64)
    w0 = model.parameters()[0]  # used twice a step: by its layer and by the penalty
    loss = lambda logits, labels: gg.cross_entropy(logits, labels) + 1e-2 * (w0 * w0).sum()
    trainer = dist.DistributedTrainer(model, gg.optim.SGD(model.parameters(), 0.1, 0.9),
                                      world=world, batch_size=4, loss_fn=loss, overlap=overlap,
                                      bucket_bytes=8, log=lambda line: None, progress=False)
    trainer.fit(x, y, epochs=2)
    result[overlap] = (model.state_dict(), trainer.reducer.bucket_sizes)
if world.is_root:
    (a, _), (b, buckets) = result[False], result[True]
    worst = max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(a[k]) + 1e-12))) for k in a)
    print("buckets", buckets, "worst", worst)
"""


def test_overlap_with_a_parameter_also_used_outside_its_layer(tmp_path: Path) -> None:
    """The first weight gets its gradient from its layer (into the buffer, during backward)
    and from a penalty (through .grad, at the end): it goes to the last bucket, and the
    weights equal the blocking reduction's."""
    script = tmp_path / "penalty.py"
    script.write_text(PENALTY_SCRIPT)
    r = mpirun(2, sys.executable, script)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    # one bucket per early weight (bucket_bytes 8): the last layer's; the middle one's joins
    # the last bucket, with the first weight, the biases, the 6 counts and the statistics
    assert line.startswith(f"buckets [{2 * 7}, {7 * 12 + 12 * 6 + 12 + 7 + 2 + 6 + 3}] worst ")
    assert float(line.split()[-1]) < 1e-12


def test_a_fused_backward_sgd_is_refused_with_the_reason() -> None:
    code = (
        "import numpy as np, graphgrad as gg\n"
        "from graphgrad import distributed as dist\n"
        "m = gg.nn.MLP(3, [4], 2, rng=np.random.default_rng(0))\n"
        "opt = gg.optim.SGD(m.parameters(), 0.1, momentum=0.9, fused_backward=True)\n"
        "dist.DistributedTrainer(m, opt, world=dist.init(), batch_size=4)\n"
    )
    r = mpirun(1, sys.executable, "-c", code, timeout=60)
    assert r.returncode != 0
    assert "DistributedTrainer: SGD(fused_backward=True) adds each rank's own gradient" in r.stderr


# ----------------------------------------------------------------------------- shared memory

HOW = {"shm": "through the node's shared memory", "allreduce": "by MPI Allreduce"}

SHM_SCRIPT = """
import sys, numpy as np
import graphgrad as gg
from graphgrad import checkpoint as ckpt
from graphgrad import distributed as dist

world = dist.init()
out, run_dir = sys.argv[1], sys.argv[2]
g = np.random.default_rng(0)
x = g.normal(size=(49, 6))  # 49: the last step's shards are 0 and 1 samples
y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
lines = []

def train(reduce, epochs=3, hidden=(12, 7), resume=None, run_dir=None, schedule="cosine"):
    model = gg.nn.MLP(6, list(hidden), 3, "tanh", rng=np.random.default_rng(1),
                      dtype=np.float64)
    opt = gg.optim.Adam(model.parameters(), lr=0.01)
    tr = dist.DistributedTrainer(model, opt, world=world, batch_size=4, data_seed=5,
                                 lr_schedule=schedule, log=lines.append, progress=False,
                                 reduce=reduce, run_dir=run_dir)
    if resume is not None and world.is_root:
        tr.resume_from(ckpt.latest_checkpoint(resume))
    tr.fit(x, y, epochs=epochs)
    return model.state_dict(), tr.reducer

saved = {}
def keep(tag, state, reducer):
    saved.update({f"{tag}|{k}": v for k, v in state.items()})
    saved[f"{tag}|reduction"] = reducer.reduction

keep("shm", *train("shm"))
blobs = world.allgather(b"".join(v.tobytes() for v in saved.values()
                                 if isinstance(v, np.ndarray)))
saved["same_bits_on_every_rank"] = all(b == blobs[0] for b in blobs)
keep("allreduce", *train("allreduce"))
# resuming (the cosine schedule depends on the number of epochs: a constant rate here)
keep("constant", *train("shm", schedule="constant"))
train("shm", epochs=1, run_dir=run_dir, schedule="constant")  # rank 0: a checkpoint
keep("resumed", *train("shm", resume=run_dir, schedule="constant"))
state, reducer = train("shm", epochs=1)
reducer.close()  # the window freed: the reducer goes on with Allreduce
saved["closed_then"] = reducer.reduction
for p in reducer.params:
    p.grad = np.ones_like(p.data)
reducer.reduce(0.5)  # 0.5 + 0.5 on every element
saved["closed_sum"] = all(np.array_equal(p.grad, np.ones_like(p.data)) for p in reducer.params)
keep("auto-small", *train("auto", epochs=1))
keep("auto-big", *train("auto", epochs=1, hidden=(128, 64)))  # 9347 floats: >= 64 KiB

def refuse(node, nbytes):
    raise MemoryError("no shared memory here (test)")

dist.allocate_shared = refuse  # on every rank: the window is refused everywhere
keep("refused", *train("shm"))
if world.is_root:
    saved["log"] = "\\n".join(lines)
    np.savez(out, **saved)
"""


PADDED_SCRIPT = """
import numpy as np
import graphgrad as gg
from graphgrad import distributed as dist

world = dist.init()
g = np.random.default_rng(0)
x = g.normal(size=(16, 1024)).astype(np.float32)
y = g.integers(0, 4, 16)
lo, hi = dist.shard_bounds(16, world.rank, world.size)


def grads(model, xs, ys, weight):
    model.zero_grad()
    (gg.cross_entropy(model(xs), ys) * weight).backward()
    return [np.array(p.grad) for p in model.parameters()]


for mode in ("allreduce", "overlap", "shm", "reduce"):
    model = gg.nn.MLP(1024, [3], 4, rng=np.random.default_rng(1))
    ps = model.parameters()
    red = dist.GradientReducer(ps, world, extra=1, overlap=mode == "overlap",
                               reduce="shm" if mode == "shm" else "allreduce")
    for step in range(3):  # overlap: the first step records the buckets
        w = (hi - lo) / 16
        if mode == "reduce":  # gradients in .grad first (an ordinary backward)
            model.zero_grad()
            gg.cross_entropy(model(x[lo:hi]), y[lo:hi]).backward()
            red.reduce(w)
        else:
            model.zero_grad()
            red.backward(gg.cross_entropy(model(x[lo:hi]), y[lo:hi]), w)
            red.extra[0] = 1.0
            red.finish()
        got = [np.array(p.grad) for p in ps]
        want = grads(gg.nn.MLP(1024, [3], 4, rng=np.random.default_rng(1)), x, y, 1.0)
        ok = all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, want))
        view = red.views[0]
        lead = view.strides[0] // view.itemsize
        result = red.result if mode == "shm" else red.buffer
        at = red.offsets[0]
        gaps = result[at : at + 3 * lead].reshape(3, lead)[:, 1024:]
        line = (mode, step, ok, lead, ps[0].grad.strides[0] // 4, bool(np.all(gaps == 0)),
                float(red.extra[0]) if mode != "reduce" else 2.0,
                not red._late[0])  # linear wrote it into the padded slot during backward
        for rank_line in world.allgather(line):
            if world.is_root:
                print(*rank_line)
"""


def test_a_padded_weight_gradient_is_reduced_in_its_padded_slot(tmp_path: Path) -> None:
    """A weight whose rows are 4096 bytes long (1024 float32) has a padded slot in the
    reducer's buffer, its rows 16 floats further apart, as the steps pad such a gradient:
    the sum over the ranks is right with every reduction (Allreduce, overlapped buckets,
    shared memory, gradients given in .grad), .grad is a view of the padded rows, and the
    gaps stay zero."""
    script = tmp_path / "padded.py"
    script.write_text(PADDED_SCRIPT)
    r = mpirun(2, sys.executable, script, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [ln.split() for ln in r.stdout.strip().splitlines()]
    assert len(lines) == 2 * 4 * 3, r.stdout  # both ranks print
    for mode, _step, ok, lead, grad_lead, gaps, extra, sink in lines:
        got = (ok, lead, grad_lead, gaps, extra, sink)
        assert got == ("True", "1040", "1040", "True", "2.0", "True"), mode


def test_shared_memory_reduction_equals_allreduce_and_one_process(tmp_path: Path) -> None:
    import graphgrad as gg
    from graphgrad.train import Trainer

    script = tmp_path / "shm.py"
    script.write_text(SHM_SCRIPT)
    r = mpirun(2, sys.executable, script, tmp_path / "w.npz", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "w.npz")

    def state(tag: str) -> dict[str, np.ndarray]:
        return {k.split("|", 1)[1]: got[k] for k in got.files
                if k.startswith(tag + "|") and not k.endswith("|reduction")}  # fmt: skip

    reduction = {k.split("|")[0]: str(got[k]) for k in got.files if k.endswith("|reduction")}
    assert reduction == {"shm": "shm", "allreduce": "allreduce", "constant": "shm",
                         "resumed": "shm",
                         "auto-small": "allreduce", "auto-big": "shm",
                         "refused": "allreduce"}  # fmt: skip
    assert bool(got["same_bits_on_every_rank"])
    assert str(got["closed_then"]) == "allreduce" and bool(got["closed_sum"])
    shm, allreduce = state("shm"), state("allreduce")
    assert len(shm) == 6
    for name in shm:  # the same sums (two ranks: a + b either way), to float rounding
        np.testing.assert_allclose(shm[name], allreduce[name], rtol=1e-12, atol=1e-15)
    assert_same_weights(state("resumed"), state("constant"))
    assert_same_weights(state("refused"), allreduce)
    log = str(got["log"])
    assert log.count(f"gradients summed {HOW['shm']}") == 6
    assert (
        "distributed: no shared-memory window for the reduction (rank 0: MemoryError: no "
        "shared memory here (test); rank 1: MemoryError: no shared memory here (test)); "
        "summing the gradients with MPI Allreduce instead"
    ) in log.splitlines()

    # One process with the doubled batch.
    g = np.random.default_rng(0)
    x = g.normal(size=(49, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    model = gg.nn.MLP(6, [12, 7], 3, "tanh", rng=np.random.default_rng(1), dtype=np.float64)
    opt = gg.optim.Adam(model.parameters(), lr=0.01)
    Trainer(model, opt, batch_size=8, data_seed=5, lr_schedule="cosine", progress=False,
            log=lambda _line: None).fit(x, y, epochs=3)  # fmt: skip
    assert_same_weights(shm, model.state_dict())


NODES_SCRIPT = """
import numpy as np
import graphgrad as gg
from graphgrad import distributed as dist

world = dist.init()
world.group_by_node(world.comm.Split(world.rank // 2, world.rank))  # two "nodes" of 2 ranks
g = np.random.default_rng(0)
x = g.normal(size=(64, 6))
y = (x[:, 0] > 0).astype(np.int64)
out = {}
for reduce in ("shm", "allreduce"):
    model = gg.nn.MLP(6, [12, 7], 2, "tanh", rng=np.random.default_rng(1), dtype=np.float64)
    tr = dist.DistributedTrainer(model, gg.optim.SGD(model.parameters(), 0.1, 0.9), world=world,
                                 batch_size=4, reduce=reduce, log=lambda line: None,
                                 progress=False)
    tr.fit(x, y, epochs=2)
    out[reduce] = model.state_dict()
    if reduce == "shm":
        assert tr.reducer.node_reduction.multi_node and tr.reducer.reduction == "shm"
blobs = world.allgather(b"".join(v.tobytes() for v in out["shm"].values()))
worst = max(float(np.max(np.abs(out["shm"][k] - out["allreduce"][k]))) for k in out["shm"])
if world.is_root:
    print("same", all(b == blobs[0] for b in blobs), "worst", worst)
"""


def test_shared_memory_reduction_over_two_nodes(tmp_path: Path) -> None:
    """4 ranks as two "nodes" of 2 (world.group_by_node): each node sums in its shared
    memory, the nodes' first ranks Allreduce, the result is shared on each node."""
    script = tmp_path / "nodes.py"
    script.write_text(NODES_SCRIPT)
    r = mpirun(4, sys.executable, script)
    assert r.returncode == 0, r.stderr
    words = r.stdout.strip().splitlines()[-1].split()
    assert words[:2] == ["same", "True"] and words[2] == "worst"
    assert float(words[3]) < 1e-12


def test_reduce_option_is_checked() -> None:
    code = (
        "import numpy as np, graphgrad as gg\n"
        "from graphgrad import distributed as dist\n"
        "m = gg.nn.MLP(3, [4], 2, rng=np.random.default_rng(0))\n"
        "w = dist.init()\n"
        "for kw in ({'reduce': 'nccl'}, {'reduce': 'shm', 'overlap': True}):\n"
        "    try:\n"
        "        dist.GradientReducer(m.parameters(), w, **kw)\n"
        "    except ValueError as e:\n"
        "        print(e)\n"
    )
    r = mpirun(1, sys.executable, "-c", code, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "GradientReducer: reduce must be one of ('auto', 'shm', 'allreduce'), got 'nccl'",
        "GradientReducer: overlap=True reduces buckets with MPI Iallreduce; reduce='shm' "
        "needs overlap=False",
    ]


THREADS_SCRIPT = """
import json, sys, graphgrad as gg
from graphgrad import distributed as dist
world = dist.init()
with open(f"{sys.argv[1]}/threads{world.rank}.json", "w") as f:  # mpiexec may merge lines
    json.dump([world.rank, gg.get_num_threads(), world.threads_note], f)
"""


def test_ranks_on_one_node_share_its_cpus_unless_told_otherwise(tmp_path: Path) -> None:
    # by default a process takes every CPU it may use: N ranks on a node then run N times as
    # many threads as cores, spinning against each other (a 2-rank run trained 35-130x
    # slower); init() gives each rank its share unless the count was chosen
    script = tmp_path / "threads.py"
    script.write_text(THREADS_SCRIPT)
    bare = {k: v for k, v in ENV.items() if not k.endswith("_NUM_THREADS")}
    cpus = len(os.sched_getaffinity(0))

    def ranks(env: dict[str, str]) -> list[Any]:
        for f in tmp_path.glob("threads*.json"):
            f.unlink()
        r = mpirun(2, sys.executable, script, tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        return [json.loads((tmp_path / f"threads{k}.json").read_text()) for k in (0, 1)]

    rows = ranks(bare)
    assert [row[1] for row in rows] == [max(1, cpus // 2)] * 2, rows
    assert all(f"{cpus} CPUs shared by 2 ranks" in row[2] for row in rows), rows
    rows = ranks({**bare, "OMP_NUM_THREADS": "2"})
    assert [row[1] for row in rows] == [2, 2] and all("as chosen" in row[2] for row in rows)


# ----------------------------------------------------------------------------- faults

FAULT_SCRIPT = """
import os, signal, sys, time, numpy as np
import graphgrad as gg
from graphgrad import distributed as dist

world = dist.init(timeout=float(sys.argv[2]))
kind, reduce = sys.argv[1], sys.argv[3]

def fault(trainer, record):
    if world.rank != 1 or record["epoch"] != 1:
        return
    if kind == "raise":
        raise RuntimeError("boom in a callback")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        time.sleep(600)
    if kind == "drift":  # a rank whose weights no longer match: caught at the next epoch
        trainer.model.parameters()[0].data[0, 0] += 1e-3

g = np.random.default_rng(0)
x, y = g.normal(size=(64, 4)), g.integers(0, 2, 64)
model = gg.nn.MLP(4, [8], 2, rng=np.random.default_rng(1))
trainer = dist.DistributedTrainer(model, gg.optim.SGD(model.parameters(), 0.1), world=world,
                                  batch_size=8, callbacks=[fault], progress=False,
                                  log=lambda line: print(line, flush=True), reduce=reduce)
trainer.fit(x, y, epochs=50)
"""


@pytest.mark.parametrize("reduce", ["allreduce", "shm"])
@pytest.mark.parametrize("kind", ["raise", "kill", "hang", "drift"])
def test_a_failing_rank_stops_the_job_naming_it(tmp_path: Path, kind: str, reduce: str) -> None:
    """With either reduction: with "shm" the other rank waits in the barriers of the shared
    window instead of inside MPI Allreduce."""
    script = tmp_path / "fault.py"
    script.write_text(textwrap.dedent(FAULT_SCRIPT))
    r = mpirun(2, sys.executable, script, kind, 3, reduce, timeout=60)  # a hang: TimeoutExpired
    assert r.returncode != 0
    err = r.stderr + r.stdout  # mpiexec reports dead ranks on stdout
    assert f"gradients summed {HOW[reduce]}" in err
    if kind == "raise":
        assert "graphgrad: rank 1 of 2" in err and "failed: RuntimeError: boom in a callback" in err
        assert "stopping all 2 ranks" in err
    elif kind == "kill":  # mpiexec names a PID; rank 0 listed which rank has which
        # mpiexec reports the first process it finds dead: mostly the killed rank 1, but under
        # load it has named rank 0, which it had just killed while cleaning up (a CI run)
        pids = [err.split(f"{k}: pid ")[1].split()[0] for k in (0, 1)]
        assert "BAD TERMINATION" in err and re.search(r"signal:? 9", err, re.I), err
        assert any(f"PID {pid} " in err for pid in pids), (pids, err)
    elif kind == "hang":
        assert "graphgrad: rank 1 of 2" in err and "made no progress for" in err
        assert "in fault" in err  # where it is stuck
    else:
        assert "after epoch 2 the weights of rank(s) [1] differ from rank 0's" in err


def test_a_rank_failing_during_set_up_is_named_by_rank_0(tmp_path: Path) -> None:
    script = tmp_path / "setup.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        from graphgrad import distributed as dist, train
        from graphgrad.config import RunConfig

        world = dist.init()
        if world.rank == 1:
            def broken(*args, **kwargs):
                raise FileNotFoundError("no data on this machine")
            train.load_data = broken
        cfg = RunConfig().with_overrides({"data.dataset": "two_moons"}, "test")
        try:
            dist.run_training(cfg, sys.argv[1], progress=False, plots=False)
        except dist.DistributedError as e:
            print("rank 0 says:", e, file=sys.stderr)
            sys.exit(3)
    """)
    )
    r = mpirun(2, sys.executable, script, tmp_path / "run", timeout=60)
    assert r.returncode != 0
    assert "rank 0 says: the distributed run could not start: rank 1" in r.stderr
    assert "FileNotFoundError: no data on this machine" in r.stderr


COMPILED_SCRIPT = """
import sys, numpy as np
import graphgrad as gg
from graphgrad import distributed as dist

world = dist.init()
width = int(sys.argv[1])  # 1024: the first weight's rows are 4096 bytes or more, padded
g = np.random.default_rng(0)
x = g.normal(size=(49, width))  # the last global batch of 1 sample: shards of 1 and 0
y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
out, engines, padded = {}, {}, {}
for dtype in (np.float32, np.float64):
    for opt_name in ("momentum", "adam"):
        for reduce in ("shm", "allreduce"):
            for compiled in (True, False):
                model = gg.nn.MLP(width, [32, 16], 3, "tanh", rng=np.random.default_rng(1),
                                  dtype=dtype)
                ps = model.parameters()
                opt = (gg.optim.SGD(ps, 0.1, 0.9, nesterov=True, weight_decay=1e-3)
                       if opt_name == "momentum" else gg.optim.Adam(ps, lr=0.01))
                tr = dist.DistributedTrainer(model, opt, world=world, batch_size=8,
                                             reduce=reduce, data_seed=5, lr_schedule="cosine",
                                             log=lambda line: None, progress=False,
                                             compiled=compiled)
                hist = tr.fit(x.astype(dtype), y, epochs=3)
                key = f"{dtype.__name__}-{opt_name}-{reduce}-{compiled}"
                out[key] = b"".join(p.data.tobytes() for p in ps) + repr(
                    [(r["train_loss"], r["train_accuracy"]) for r in hist]).encode()
                engines[key] = tr.step_engine
                w1 = ps[0].grad  # a view of the reducer's sum
                padded[key] = w1.strides[0] > w1.shape[1] * w1.itemsize
tr = dist.DistributedTrainer(model, gg.optim.SGD(model.parameters(), 0.1), world=world,
                             batch_size=8, overlap=True, log=lambda line: None, progress=False)
blobs = world.allgather(out)
if world.is_root:
    for key in out:
        if key.endswith("True"):
            twin = key[: -len("True")] + "False"
            print(key, "same" if out[key] == out[twin] else "DIFFERENT",
                  "ranks-agree" if all(b[key] == out[key] for b in blobs) else "RANKS-DIFFER",
                  engines[key], engines[twin], padded[key], padded[twin])
    print("overlap:", tr.step_engine, "|", tr.why_eager)
"""


@pytest.mark.parametrize("width", [20, 1024])
def test_compiled_distributed_steps_equal_eager_ones_bit_for_bit(
    tmp_path: Path, width: int
) -> None:
    """Each rank's step a compiled plan (gradients into the reducer's buffer, the reduction,
    then the update from the sums) gives the eager DistributedTrainer's weights and history
    bit for bit, with either reduction, SGD or Adam, float32 or float64, and a last step
    whose shards (1 and 0 samples) take the eager step; with overlap the steps are eager.
    Width 1024: the first weight's rows are 4096 (float32) or 8192 bytes long, so its slot
    of the reducer's buffer is padded (its rows further apart), in both steps."""
    script = tmp_path / "compiled.py"
    script.write_text(COMPILED_SCRIPT)
    r = mpirun(2, sys.executable, script, width, timeout=240)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 9, r.stdout
    pad = str(width == 1024)
    for line in lines[:8]:
        assert line.split()[1:] == ["same", "ranks-agree", "compiled", "eager", pad, pad], line
    assert lines[8] == (
        "overlap: eager | overlap=True: the buckets are reduced while the eager backward pass "
        "makes their gradients"
    )


# ----------------------------------------------------------------------------- review fixes


def test_a_cosine_run_resumed_on_another_world_size_goes_on_with_its_schedule(
    tmp_path: Path,
) -> None:
    """The schedule is a function of the progress through the epochs: 2 epochs on 1 rank
    (143 steps each), then epochs 3-4 on 3 ranks (48 steps each) go on from half way, at the
    rates of steps 2·48 + b of 4·48 (not from step 286 of 192: a rate of 0)."""
    from graphgrad.train import lr_factor

    common = ["--dataset", "two_moons", "--batch-size", "7", "--lr-schedule", "cosine",
              "--no-plots", "--no-progress", "--out", tmp_path / "run"]  # fmt: skip
    r = mpirun(1, GRAPHGRAD, "train", "--distributed", *common, "--epochs", "2")
    assert r.returncode == 0, r.stderr
    r = mpirun(3, GRAPHGRAD, "train", "--distributed", *common, "--epochs", "4", "--resume")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    base = metrics["config"]["optim"]["lr"]
    hist = metrics["history"]
    samples = 1000  # two_moons' training samples (143 steps of 7)
    assert [(h["world_size"], h["step"]) for h in hist] == [(1, 143), (1, 286), (3, 334),
                                                             (3, 382)]  # fmt: skip
    steps = -(-samples // 21)
    for h in hist[2:]:  # the rate of each epoch's last step
        e = h["epoch"]
        want = base * lr_factor("cosine", e * steps - 1, 4 * steps)
        assert want > 0 and h["lr"] == pytest.approx(want, rel=1e-12), h


UNUSED_SCRIPT = """
import sys, numpy as np
import graphgrad as gg
from graphgrad import distributed as dist
from graphgrad.train import Trainer

world = dist.init(timeout=30)
g = np.random.default_rng(1)
x = g.normal(size=(49, 6))  # 49: the last global batch of 1 sample, shards of 0 and 1
y = g.integers(0, 3, 49)


class WithUnused(gg.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = gg.nn.Linear(6, 8, rng=np.random.default_rng(0), dtype=np.float64)
        self.b = gg.nn.Linear(8, 3, rng=np.random.default_rng(1), dtype=np.float64)
        self.unused = gg.nn.Linear(8, 3, rng=np.random.default_rng(2), dtype=np.float64)

    def forward(self, x):
        return self.b(gg.relu(self.a(x)))


def train(kind, distributed, **kw):
    model = (WithUnused() if kind == "unused" else
             gg.nn.MLP(6, [8], 3, rng=np.random.default_rng(0), dtype=np.float64))
    opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    if kind == "frozen":
        model[0].weight.requires_grad = False
    common = dict(data_seed=3, log=None, progress=False)
    if distributed:
        tr = dist.DistributedTrainer(model, opt, world=world, batch_size=4, **common, **kw)
    else:
        tr = Trainer(model, opt, batch_size=4 * world.size, **common)
    tr.fit(x, y, 3)
    grads = {n: p.grad is None for n, p in model.named_parameters()}
    return model.state_dict(), grads, tr.step_engine


for kind in ("unused", "frozen", "mlp"):
    for mode in ("compiled", "eager", "shm", "overlap"):
        kw = {"compiled": mode == "compiled", "overlap": mode == "overlap",
              "reduce": "shm" if mode == "shm" else "allreduce"}
        got, none, engine = train(kind, True, **kw)
        if world.is_root:
            want, want_none, _ = train(kind, False)
            worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
            print(kind, mode, engine, "worst", worst, "none", sorted(n for n in none if none[n]),
                  "want", sorted(n for n in want_none if want_none[n]))
"""


def test_unused_and_frozen_parameters_are_left_alone_as_in_one_process(tmp_path: Path) -> None:
    """A parameter no rank computes a gradient for (unused) keeps .grad None, and a frozen
    one (requires_grad=False) is not reduced: SGD's weight decay and momentum leave both
    alone, as in one process with the whole batch; compiled, eager, shared memory, overlap
    (with an empty shard at each epoch's last step)."""
    script = tmp_path / "unused.py"
    script.write_text(UNUSED_SCRIPT)
    r = mpirun(2, sys.executable, script)
    assert r.returncode == 0, r.stderr
    lines = [ln.split() for ln in r.stdout.strip().splitlines()]
    assert len(lines) == 12, r.stdout
    for kind, mode, engine, _w, worst, _n, *rest in lines:
        none = " ".join(rest)
        assert float(worst) < 1e-12, (kind, mode)
        want = {"unused": "['unused.bias', 'unused.weight']", "frozen": "['0.weight']",
                "mlp": "[]"}[kind]  # fmt: skip
        assert none == f"{want} want {want}", (kind, mode, none)
        if kind == "mlp":  # (a frozen weight: each step falls back to the eager one)
            assert engine == ("compiled" if mode == "compiled" else "eager"), mode


MISMATCH_SCRIPT = """
import sys, numpy as np
import graphgrad as gg
from graphgrad import distributed as dist

world = dist.init(timeout=10)
field = sys.argv[1]
g = np.random.default_rng(0)
S = 47 if field == "samples" and world.rank == 0 else 40
x, y = g.normal(size=(S, 4)), g.integers(0, 3, S)
B = 4 + world.rank if field == "batch" else 4
model = gg.nn.MLP(4, [5], 3, rng=np.random.default_rng(0), dtype=np.float64)
tr = dist.DistributedTrainer(model, gg.optim.SGD(model.parameters(), lr=0.1), world=world,
                             batch_size=B, log=None, progress=False)
try:
    tr.fit(x, y, 2)
except dist.DistributedError as e:  # a file per rank: mpiexec may merge the ranks' lines
    with open(f"{sys.argv[2]}/rank{world.rank}.txt", "w") as f:
        f.write(str(e))
"""


@pytest.mark.parametrize(
    ("field", "said"),
    [("samples", "len(y): 47 on rank 0, 40 on ranks 1, 2"),
     ("batch", "batch_size: 4 on rank 0, 5 on rank 1, 6 on rank 2")],
)  # fmt: skip
def test_fit_with_different_data_or_arguments_on_the_ranks_names_them(
    tmp_path: Path, field: str, said: str
) -> None:
    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCH_SCRIPT)
    r = mpirun(3, sys.executable, script, field, tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    for rank in range(3):  # every rank raises it, at once
        said_here = (tmp_path / f"rank{rank}.txt").read_text()
        assert said_here == (
            f"DistributedTrainer.fit: the ranks were given different runs ({said}); every "
            "rank must pass the same data and arguments"
        ), rank


def test_a_start_up_failure_of_one_rank_in_the_cli_is_named_once(tmp_path: Path) -> None:
    """The config file exists where rank 0 runs, not where rank 1 does: rank 0 names rank 1
    once, every rank exits at once with the usage error's status, nothing is written, and
    the same command then runs where both have the file."""
    wa, wb = tmp_path / "wa", tmp_path / "wb"
    wa.mkdir()
    wb.mkdir()
    (wa / "cfg.toml").write_text('[data]\ndataset = "two_moons"\n[train]\nepochs = 1\n')
    out = tmp_path / "out"
    cmd = [GRAPHGRAD, "train", "--distributed", "--config", "cfg.toml", "--out", out,
           "--no-plots", "--no-progress"]  # fmt: skip
    r = subprocess.run(
        list(map(str, [MPIEXEC, "-n", 1, "-wdir", wa, *cmd, ":", "-n", 1, "-wdir", wb, *cmd])),
        capture_output=True, text=True, timeout=50, env=ENV,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: the distributed run could not start: rank 1 (pid "
    ), r.stderr
    assert "cfg.toml" in lines[0]
    assert not out.exists()
    r = subprocess.run(
        list(map(str, [MPIEXEC, "-n", 2, "-wdir", wa, *cmd])),
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_a_bad_timeout_variable_is_a_usage_error(tmp_path: Path) -> None:
    r = mpirun(2, GRAPHGRAD, "train", "--distributed", "--dataset", "two_moons", "--out",
               tmp_path / "run", "--no-plots", env={**ENV, "GRAPHGRAD_DIST_TIMEOUT": "5m"},
               timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: GRAPHGRAD_DIST_TIMEOUT must be seconds, got '5m'"
    ], r.stderr
    assert not (tmp_path / "run").exists()


def test_a_rank_failing_during_set_up_leaves_no_run_directory(tmp_path: Path) -> None:
    """The other ranks build their trainers before rank 0 writes config.toml and run.json:
    when one fails, the same command runs afterwards (nothing is in the way)."""
    script = tmp_path / "setup.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        from graphgrad import distributed as dist, train
        from graphgrad.config import RunConfig

        world = dist.init()
        if world.rank == 1 and sys.argv[2] == "break":
            def broken(*args, **kwargs):
                raise FileNotFoundError("no data on this machine")
            train.load_data = broken
        cfg = RunConfig().with_overrides({"data.dataset": "two_moons", "train.epochs": 1},
                                         "test")
        try:
            dist.run_training(cfg, sys.argv[1], progress=False, plots=False)
        except dist.DistributedError as e:
            print("rank 0 says:", e, file=sys.stderr)
            sys.exit(3)
    """)
    )
    run_dir = tmp_path / "run"
    r = mpirun(2, sys.executable, script, run_dir, "break", timeout=60)
    assert r.returncode != 0
    assert "rank 0 says: the distributed run could not start: rank 1" in r.stderr
    assert not run_dir.exists()
    r = mpirun(2, sys.executable, script, run_dir, "fine", timeout=60)
    assert r.returncode == 0, r.stderr
    assert (run_dir / "metrics.json").is_file()


def test_the_api_refuses_a_device_other_than_the_cpu() -> None:
    code = (
        "import numpy as np, graphgrad as gg\n"
        "from graphgrad import distributed as dist\n"
        "m = gg.nn.MLP(4, [3], 2, rng=np.random.default_rng(0), dtype=np.float64)\n"
        "try:\n"
        "    dist.DistributedTrainer(m, gg.optim.SGD(m.parameters(), lr=0.1), batch_size=4,\n"
        "                            world=dist.init(), device='array-api-strict')\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    pytest.importorskip("array_api_strict")
    r = mpirun(1, sys.executable, "-c", code, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(
        "DistributedTrainer trains on the cpu device only, not 'array-api-strict'"
    ), r.stdout
