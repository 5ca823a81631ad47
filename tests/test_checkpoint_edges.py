"""Checkpoint edge cases: optimiser order and subsets, 0-d parameters, reserved extra keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import checkpoint as C
from graphgrad import nn, optim
from graphgrad.train import Trainer

X = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
Y = np.arange(8) % 6


def _step(model: nn.Module, opt: optim.Optimizer) -> None:
    loss = gg.cross_entropy(model(X), Y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _reordered() -> tuple[nn.MLP, optim.SGD]:
    m = nn.MLP(6, [6], 6, rng=np.random.default_rng(1))
    p = m.parameters()
    return m, optim.SGD([p[2], p[3], p[0], p[1]], 0.1, momentum=0.9)


def _same_state(a: optim.Optimizer, b: optim.Optimizer) -> None:
    assert sorted(a.state) == sorted(b.state)
    for i, entry in a.state.items():
        assert sorted(entry) == sorted(b.state[i])
        for k, v in entry.items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(b.state[i][k]))


def _edit_meta(path: Path, change: object) -> None:
    """Edit checkpoint.json and re-seal it (as an older graphgrad would have written it)."""
    jpath = path / C.CHECKPOINT_JSON
    meta = json.loads(jpath.read_text())
    change(meta)  # type: ignore[operator]
    meta["meta_sha256"] = C.meta_digest(meta)
    jpath.write_text(json.dumps(meta))


def test_optimizer_state_round_trips_for_a_reordered_optimizer(tmp_path: Path) -> None:
    m, o = _reordered()
    for _ in range(3):
        _step(m, o)
    c = C.load_checkpoint(C.save_checkpoint(tmp_path / "c", m, o))
    assert c.meta["optimizer"]["param_names"] == ["2.weight", "2.bias", "0.weight", "0.bias"]
    m2, o2 = _reordered()
    m2.load_state_dict(c.weights)
    o2.load_state_dict(c.optimizer)
    _same_state(o, o2)
    _step(m, o)
    _step(m2, o2)
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_optimizer_state_round_trips_for_a_subset(tmp_path: Path) -> None:
    m = nn.MLP(6, [5], 6, rng=np.random.default_rng(1))
    o = optim.SGD(m[2].parameters(), 0.1, momentum=0.9)
    _step(m, o)
    c = C.load_checkpoint(C.save_checkpoint(tmp_path / "s", m, o))
    o2 = optim.SGD(nn.MLP(6, [5], 6)[2].parameters(), 0.1, momentum=0.9)
    o2.load_state_dict(c.optimizer)
    _same_state(o, o2)


def test_trainer_resume_maps_state_to_the_optimizers_own_order(tmp_path: Path) -> None:
    m, o = _reordered()
    t = Trainer(m, o, batch_size=4, run_dir=tmp_path / "run", progress=False, log=None)
    t.fit(X, Y, epochs=1)
    t.save_checkpoint()
    m2, o2 = _reordered()
    t2 = Trainer(m2, o2, batch_size=4, progress=False, log=None)
    t2.resume_from(tmp_path / "run")
    _same_state(o, o2)


def test_checkpoints_without_optimizer_param_names_use_the_model_order(tmp_path: Path) -> None:
    m = nn.MLP(6, [5], 6, rng=np.random.default_rng(1))
    o = optim.Adam(m.parameters(), 0.01)
    _step(m, o)
    path = C.save_checkpoint(tmp_path / "old", m, o)
    _edit_meta(path, lambda meta: meta["optimizer"].pop("param_names"))
    o2 = optim.Adam(nn.MLP(6, [5], 6).parameters(), 0.01)
    o2.load_state_dict(C.load_checkpoint(path).optimizer)  # type: ignore[arg-type]
    _same_state(o, o2)


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2, rng=np.random.default_rng(0))
        self.temperature = gg.tensor(1.5, requires_grad=True)
        self.register_buffer("count", np.full((), 4, np.int64))

    def forward(self, x: gg.Tensor) -> gg.Tensor:
        return self.lin(x) * self.temperature


def test_zero_d_parameters_and_buffers_round_trip(tmp_path: Path) -> None:
    model = _Scaled()
    opt = optim.SGD(model.parameters(), 0.1, momentum=0.9)
    x = np.ones((2, 3), np.float32)
    loss = gg.cross_entropy(model(x), np.array([0, 1]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    c = C.load_checkpoint(C.save_checkpoint(tmp_path / "z", model, opt))
    assert c.weights["temperature"].shape == () and c.weights["count"].shape == ()
    other = _Scaled()
    other.load_state_dict(c.weights)
    opt2 = optim.SGD(other.parameters(), 0.1, momentum=0.9)
    opt2.load_state_dict(c.optimizer)  # type: ignore[arg-type]
    assert float(other.temperature.data) == float(model.temperature.data)
    assert int(other.count) == 4
    _same_state(opt, opt2)


def test_zero_d_weights_saved_as_1_d_by_older_versions_are_read(tmp_path: Path) -> None:
    model = _Scaled()
    path = C.save_checkpoint(tmp_path / "z", model)
    weights = C.load_weights(path / C.MODEL_FILE)
    old = {k: (v.reshape(1) if v.ndim == 0 else v) for k, v in weights.items()}
    import safetensors.numpy as stn

    (path / C.MODEL_FILE).write_bytes(stn.save(old, metadata={"format": C.FORMAT}))

    def refile(meta: dict[str, object]) -> None:
        meta["files"][C.MODEL_FILE] = {  # type: ignore[index]
            "sha256": gg._atomic.sha256_file(path / C.MODEL_FILE),
            "bytes": (path / C.MODEL_FILE).stat().st_size,
        }

    _edit_meta(path, refile)
    c = C.load_checkpoint(path)
    assert c.weights["temperature"].shape == () and c.weights["count"].shape == ()


@pytest.mark.parametrize("extra", [{"step": 99, "epoch": 5}, {"param_names": ["x"]}])
def test_reserved_extra_keys_are_refused_before_writing(tmp_path: Path, extra: dict) -> None:
    model = nn.MLP(6, [5], 6)
    with pytest.raises(ValueError, match=r"save_checkpoint: extra holds '(step|param_names)'"):
        C.save_checkpoint(tmp_path / "r", model, extra=extra)
    assert list(tmp_path.iterdir()) == []


def test_extra_numpy_values_are_stored_as_python_numbers(tmp_path: Path) -> None:
    model = nn.MLP(6, [5], 6)
    extra = {"acc": np.float32(0.5), "counts": [np.int64(3)], "arr": np.arange(2)}
    c = C.load_checkpoint(C.save_checkpoint(tmp_path / "n", model, extra=extra))
    assert c.meta["acc"] == 0.5 and c.meta["counts"] == [3] and c.meta["arr"] == [0, 1]
    with pytest.raises(TypeError, match=r"save_checkpoint: extra\['bad'\].*object"):
        C.save_checkpoint(tmp_path / "b", model, extra={"bad": object()})
    assert not (tmp_path / "b").exists()
