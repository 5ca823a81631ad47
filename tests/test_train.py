"""The training loop, exact resume, divergence, full runs on fixtures and on real data."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import checkpoint as C
from graphgrad import nn, optim
from graphgrad.config import RunConfig
from graphgrad.train import (
    RunError,
    Trainer,
    TrainingDiverged,
    evaluate,
    fit,
    load_data,
    model_from_checkpoint,
    run_training,
)


def require_real_fashion_mnist() -> None:
    """Skip unless real Fashion-MNIST is where graphgrad looks (Debian's package,
    $GRAPHGRAD_DATA or `graphgrad download fashion-mnist`)."""
    from graphgrad.data import DatasetNotFoundError, FashionMNIST

    try:
        FashionMNIST(train=False)
    except DatasetNotFoundError:
        pytest.skip("real Fashion-MNIST not installed")


# ------------------------------------------------------------------------------ fixtures


def _idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes(), mtime=0))


def write_fake_fashion_mnist(root: Path, n_train: int = 200, n_test: int = 50) -> Path:
    """Gzipped IDX files in Fashion-MNIST's names: 28x28 images whose class is a bright
    4x4 block at one of 10 positions, plus noise. Learnable in a few epochs."""
    g = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = g.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            r, col = 2 + 12 * (c // 5), 2 + 5 * (c % 5)
            images[i, r : r + 4, col : col + 4] = 250
        _idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from graphgrad.data import blobs

    return blobs(n, rng=seed)


def small_config(root: Path, **over: Any) -> RunConfig:
    base = {
        "model.hidden": [16],
        "data.dataset": "fashion-mnist",
        "data.root": str(root),
        "optim.lr": 0.01,
        "train.epochs": 2,
        "train.batch_size": 32,
    }
    base.update(over)
    return RunConfig().with_overrides(base)


def quiet(_line: str) -> None:
    pass


def make(seed: int = 0, opt: str = "sgd") -> tuple[nn.MLP, optim.Optimizer]:
    model = nn.MLP(2, [8, 8], 3, rng=np.random.default_rng(seed))
    o = optim.make_optimizer(opt, model.parameters(), 0.05, momentum=0.9, weight_decay=1e-4)
    return model, o


# ---------------------------------------------------------------------------- training


def test_fit_learns_a_toy_problem() -> None:
    x, y = _blobs(300, 1)
    x = x.astype(np.float32)
    model, opt = make()
    history = fit(model, opt, x, y, epochs=5, batch_size=32, eval_data=(x, y))
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["eval_accuracy"] > 0.9
    assert history[-1]["step"] == 5 * 10
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_evaluate_matches_direct_computation() -> None:
    x, y = _blobs(130, 2)
    x = x.astype(np.float32)
    model, _ = make()
    res = evaluate(model, x, y, batch_size=50)
    logits = model(x)
    assert res.accuracy == pytest.approx(gg.accuracy(logits, y))
    assert res.loss == pytest.approx(float(gg.cross_entropy(logits, y).data), rel=1e-5)
    np.testing.assert_array_equal(res.predictions, logits.data.argmax(1))
    assert model.training  # restored


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_resume_is_bit_exact(tmp_path: Path, opt_name: str) -> None:
    """2 epochs in one go == 1 epoch, checkpoint, fresh objects, resume for 1 more."""
    x, y = _blobs(100, 3)
    x = x.astype(np.float32)

    model, opt = make(0, opt_name)
    Trainer(model, opt, batch_size=16, data_seed=5, progress=False, log=quiet).fit(x, y, 2)

    m1, o1 = make(0, opt_name)
    t1 = Trainer(m1, o1, batch_size=16, data_seed=5, run_dir=tmp_path, progress=False, log=quiet)
    t1.fit(x, y, 1)
    m2, o2 = make(99, opt_name)  # other initial weights: all must come from the checkpoint
    t2 = Trainer(m2, o2, batch_size=16, data_seed=5, run_dir=tmp_path, progress=False, log=quiet)
    t2.resume_from(tmp_path)
    assert (t2.epoch, t2.step, len(t2.history)) == (1, 7, 1)
    t2.fit(x, y, 2)
    for (name, p), q in zip(model.named_parameters(), m2.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert t2.history[0]["train_loss"] == t1.history[0]["train_loss"]


@pytest.mark.parametrize("compiled", [True, False])
def test_a_cosine_run_resumed_with_another_batch_size_keeps_its_schedule(
    tmp_path: Path, compiled: bool
) -> None:
    """The schedule follows the share of the run done, not the count of old, larger steps
    (which ran it to lr 0 here: 2 epochs of 13 steps are past 4 epochs of 4)."""
    x, y = _blobs(100, 3)
    x = x.astype(np.float32)
    m1, o1 = make(0, "sgd")
    kw: dict[str, Any] = {"progress": False, "log": quiet, "lr_schedule": "cosine"}
    t1 = Trainer(m1, o1, batch_size=8, run_dir=tmp_path, compiled=compiled, **kw)
    t1.fit(x, y, 2)
    m2, o2 = make(0, "sgd")
    rates: list[float] = []
    t2 = Trainer(m2, o2, batch_size=32, run_dir=tmp_path, compiled=compiled, **kw)
    t2.resume_from(tmp_path)
    t2.base_lr = t1.base_lr
    step = o2.step

    def spy() -> None:
        rates.append(o2.lr)
        step()

    o2.step = spy  # type: ignore[method-assign]
    t2.fit(x, y, 4)
    if not compiled:  # (the compiled step reads o2.lr without calling step)
        want = [t1.base_lr * 0.5 * (1 + np.cos(np.pi * k / 16)) for k in range(8, 16)]
        np.testing.assert_allclose(rates, want, rtol=1e-12)
    assert t2.history[-1]["lr"] == pytest.approx(t1.base_lr * 0.5 * (1 + np.cos(np.pi * 15 / 16)))
    assert t2.history[2]["lr"] == pytest.approx(t1.base_lr * 0.5 * (1 + np.cos(np.pi * 11 / 16)))


def test_divergence_stops_with_a_clear_message(tmp_path: Path) -> None:
    x, y = _blobs(64, 4)
    x = x.astype(np.float32)
    model, opt = make()
    calls = {"n": 0}

    def loss_fn(logits: gg.Tensor, labels: Any) -> gg.Tensor:
        calls["n"] += 1
        loss = gg.cross_entropy(logits, labels)
        return loss * float("nan") if calls["n"] == 7 else loss

    trainer = Trainer(
        model, opt, batch_size=16, loss_fn=loss_fn, run_dir=tmp_path, progress=False, log=quiet
    )
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, batch 3 of 4 .*step 7"):
        trainer.fit(x, y, 3)
    assert trainer.epoch == 1 and trainer.step == 6
    assert C.load_checkpoint(tmp_path).epoch == 1  # the last good checkpoint is kept


def test_huge_learning_rate_diverges_in_a_full_run(tmp_path: Path) -> None:
    root = write_fake_fashion_mnist(tmp_path / "data")
    # the largest rate the config accepts, with as much weight decay: |w| grows 10^6-fold a step
    big = {"optim.name": "sgd", "optim.lr": 1e3, "optim.weight_decay": 1e3, "optim.momentum": 0.0}
    cfg = small_config(root, **big, **{"train.epochs": 3})
    with pytest.raises(TrainingDiverged, match="Try a smaller learning rate"):
        run_training(cfg, tmp_path / "run", progress=False, plots=False, log=quiet)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "loss is" in metrics["error"]


# ---------------------------------------------------------------------------- full runs


def test_run_training_writes_everything(tmp_path: Path) -> None:
    root = write_fake_fashion_mnist(tmp_path / "data")
    out = tmp_path / "run"
    res = run_training(small_config(root), out, progress=True, log=quiet)
    names = {p.name for p in out.iterdir()}
    assert {"config.toml", "run.json", "metrics.json", "checkpoints"} <= names
    assert {"curves.png", "confusion_matrix.png", "first_layer.png"} <= names
    for png in ("curves.png", "confusion_matrix.png", "first_layer.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert metrics["test"]["accuracy"] == res.test.accuracy
    assert np.array(metrics["confusion_matrix"]).sum() == 50
    assert metrics["versions"]["numpy"] == np.__version__
    assert metrics["versions"]["blas"] == gg.blas()  # the library the products ran in
    assert metrics["versions"]["threads"] == str(gg.get_num_threads())
    assert metrics["seeds"] == {"model.seed": 0, "data.seed": 0}
    assert len(metrics["history"]) == 2 and metrics["history"][0]["eval_split"] == "test"
    assert res.test.accuracy > 0.5  # learnable fixture
    model, cfg, info = model_from_checkpoint(out)
    assert cfg == small_config(root) and info["image_shape"] == [28, 28]
    np.testing.assert_array_equal(model(np.zeros((1, 784), np.float32)).data,
                                  res.model(np.zeros((1, 784), np.float32)).data)  # fmt: skip


def test_same_config_same_weights_bit_for_bit(tmp_path: Path) -> None:
    root = write_fake_fashion_mnist(tmp_path / "data")
    cfg = small_config(root, **{"data.val_fraction": 0.2, "data.train_subset": 150})
    a = run_training(cfg, tmp_path / "a", progress=False, plots=False, log=quiet)
    b = run_training(cfg, tmp_path / "b", progress=False, plots=False, log=quiet)
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    assert (tmp_path / "a" / "config.toml").read_text() == (
        tmp_path / "b" / "config.toml"
    ).read_text()
    assert a.history[0]["eval_split"] == "val"
    c = run_training(
        cfg.with_overrides({"model.seed": 1}),
        tmp_path / "c",
        progress=False,
        plots=False,
        log=quiet,
    )
    assert not np.array_equal(c.model.parameters()[0].data, a.model.parameters()[0].data)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    root = write_fake_fashion_mnist(tmp_path / "data")
    cfg = small_config(
        root, **{"train.epochs": 3, "optim.name": "adam", "train.lr_schedule": "cosine"}
    )
    full = run_training(cfg, tmp_path / "full", progress=False, plots=False, log=quiet)

    import graphgrad.train as T

    original = T.Trainer.save_checkpoint

    def crash_after_epoch_2(self: Trainer) -> Path:
        path = original(self)
        if self.epoch == 2:
            raise KeyboardInterrupt
        return path

    T.Trainer.save_checkpoint = crash_after_epoch_2  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            run_training(cfg, tmp_path / "cut", progress=False, plots=False, log=quiet)
    finally:
        T.Trainer.save_checkpoint = original  # type: ignore[method-assign]
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = run_training(
        cfg, tmp_path / "cut", resume=True, progress=False, plots=False, log=quiet
    )
    for (n, p), q in zip(full.model.named_parameters(), resumed.model.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    timeless = [
        [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_second")} for h in r]
        for r in (full.history, resumed.history)
    ]
    assert timeless[0] == timeless[1]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.test.accuracy == full.test.accuracy


def test_run_directory_guards(tmp_path: Path) -> None:
    root = write_fake_fashion_mnist(tmp_path / "data")
    cfg = small_config(root, **{"train.epochs": 1})
    with pytest.raises(RunError, match="nothing to resume"):
        run_training(cfg, tmp_path / "r", resume=True, progress=False, plots=False, log=quiet)
    run_training(cfg, tmp_path / "r", progress=False, plots=False, log=quiet)
    with pytest.raises(RunError, match="already holds a run"):
        run_training(cfg, tmp_path / "r", progress=False, plots=False, log=quiet)
    changed = cfg.with_overrides({"optim.lr": 0.5, "train.epochs": 2})
    with pytest.raises(
        RunError, match=r"only train.epochs and train.device may change\): optim.lr"
    ):
        run_training(changed, tmp_path / "r", resume=True, progress=False, plots=False, log=quiet)


def test_load_data_subsets_and_toys(tmp_path: Path) -> None:
    root = write_fake_fashion_mnist(tmp_path / "data")
    cfg = small_config(root).data
    from dataclasses import replace

    d = load_data(replace(cfg, train_subset=100, test_subset=20))
    assert d.x_train.shape == (100, 784) and d.x_train.dtype == np.float32
    assert d.x_test.shape == (20, 784) and d.y_test.dtype == np.int64
    assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    d2 = load_data(replace(cfg, train_subset=100, test_subset=20))
    np.testing.assert_array_equal(d.x_train, d2.x_train)
    assert d.classes[0] == "T-shirt/top" and d.image_shape == (28, 28)
    t = load_data(replace(cfg, dataset="spiral", toy_samples=90), np.float64)
    assert t.x_train.shape == (90, 2) and t.x_train.dtype == np.float64 and t.num_classes == 3
    assert t.image_shape is None


def test_short_run_on_real_fashion_mnist(tmp_path: Path) -> None:
    """One epoch of a small MLP on 3,000 real training images reaches well above chance."""
    require_real_fashion_mnist()
    cfg = RunConfig().with_overrides(
        {
            "model.hidden": [64],
            "data.train_subset": 3000,
            "data.test_subset": 1000,
            "train.epochs": 1,
            "train.batch_size": 64,
            "train.lr_schedule": "constant",
        }
    )
    res = run_training(cfg, tmp_path / "real", progress=False, plots=False, log=quiet)
    assert res.test.accuracy > 0.65
    assert res.history[0]["train_loss"] < 2.0


def test_weights_that_blow_up_on_the_last_step_stop_the_run(tmp_path: Path) -> None:
    """No evaluation data, finite losses all along, but the last update leaves a NaN weight:
    fit raises instead of saving the NaN weights as the final checkpoint."""
    x, y = _blobs(64, 0)
    model = nn.MLP(2, [8], 3, rng=np.random.default_rng(0))
    calls = {"n": 0}

    def loss_fn(logits: gg.Tensor, labels: Any) -> gg.Tensor:
        calls["n"] += 1
        if calls["n"] == 4:  # the epoch's last batch: poison a weight before the update
            model.linear_layers()[0].weight.data[0, 0] = np.nan
        return gg.cross_entropy(logits, labels)

    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), batch_size=16,
                      loss_fn=loss_fn, run_dir=tmp_path, progress=False, log=None)  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"parameter 0\.weight holds NaN/Inf after epoch 1"):
        trainer.fit(x.astype(np.float32), y, 1)
    assert C.latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize("batch_size", [0, -5])
def test_evaluate_refuses_a_batch_size_below_one(batch_size: int) -> None:
    model = nn.MLP(2, [4], 2, rng=np.random.default_rng(0))
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=f"batch_size must be >= 1, got {batch_size}"):
        evaluate(model, x, np.zeros(3, np.int64), batch_size)
