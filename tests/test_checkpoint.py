"""Checkpoints: safetensors + JSON, SHA-256 verification, atomic replacement, torch layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import checkpoint as C
from graphgrad import nn, optim


def trained(seed: int = 0) -> tuple[nn.MLP, optim.Optimizer]:
    g = np.random.default_rng(seed)
    model = nn.MLP(6, [5], 3, rng=g)
    opt = optim.Adam(model.parameters(), lr=0.01)
    x, y = g.standard_normal((8, 6)).astype(np.float32), g.integers(0, 3, 8)
    for _ in range(3):
        opt.zero_grad()
        gg.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def test_round_trip(tmp_path: Path) -> None:
    model, opt = trained()
    path = C.save_checkpoint(tmp_path / "ck", model, opt, epoch=2, step=7, extra={"note": "hi"})
    assert sorted(p.name for p in path.iterdir()) == [
        "checkpoint.json",
        "model.safetensors",
        "optimizer.safetensors",
    ]
    c = C.load_checkpoint(path)
    assert c.epoch == 2 and c.step == 7 and c.meta["note"] == "hi"
    assert "numpy" in c.meta["versions"] and "python" in c.meta["versions"]
    assert set(c.meta["files"]) == {"model.safetensors", "optimizer.safetensors"}
    for name, arr in model.state_dict().items():
        assert c.weights[name].dtype == np.float32
        np.testing.assert_array_equal(c.weights[name], arr)
    other, opt2 = trained(seed=1)
    other.load_state_dict(c.weights)
    assert c.optimizer is not None
    opt2.load_state_dict(c.optimizer)
    sd1, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd1["hyper"] == sd2["hyper"]
    for i, entry in sd1["state"].items():
        assert entry["step"] == sd2["state"][i]["step"] == 3
        np.testing.assert_array_equal(entry["exp_avg_sq"], sd2["state"][i]["exp_avg_sq"])


def test_tensor_names_in_file_are_parameter_names(tmp_path: Path) -> None:
    model, opt = trained()
    path = C.save_checkpoint(tmp_path / "ck", model, opt)
    weights = C.load_weights(path / "model.safetensors")
    assert set(weights) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert weights["0.weight"].shape == (5, 6)  # PyTorch layout (out, in)
    state = C.load_weights(path / "optimizer.safetensors")
    assert "0.weight/exp_avg" in state and "2.bias/exp_avg_sq" in state


def test_modified_file_is_detected(tmp_path: Path) -> None:
    model, opt = trained()
    path = C.save_checkpoint(tmp_path / "ck", model, opt)
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(C.CheckpointError, match=r"model.safetensors: SHA-256 mismatch"):
        C.load_checkpoint(path)


def test_missing_and_invalid(tmp_path: Path) -> None:
    with pytest.raises(C.CheckpointError, match="no checkpoint here"):
        C.load_checkpoint(tmp_path)
    model, opt = trained()
    path = C.save_checkpoint(tmp_path / "ck", model, opt)
    (path / "optimizer.safetensors").unlink()
    with pytest.raises(C.CheckpointError, match=r"optimizer.safetensors: missing"):
        C.load_checkpoint(path)
    (path / "checkpoint.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(C.CheckpointError, match=r"checkpoint.json: not valid JSON"):
        C.load_checkpoint(path)
    (path / "checkpoint.json").write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(C.CheckpointError, match="not a graphgrad checkpoint"):
        C.load_checkpoint(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(C.CheckpointError, match=r"bad\.safetensors: not a valid safetensors"):
        C.load_weights(bad)


def test_failed_save_leaves_old_checkpoint_whole(tmp_path: Path) -> None:
    model, opt = trained()
    path = C.save_checkpoint(tmp_path / "ck", model, opt, epoch=1)

    class Broken:
        params = opt.params

        def state_dict(self) -> dict[str, object]:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        C.save_checkpoint(tmp_path / "ck", model, Broken(), epoch=2)
    assert C.load_checkpoint(path).epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp folder left


def test_replace_latest_and_prune(tmp_path: Path) -> None:
    model, opt = trained()
    base = tmp_path / "checkpoints"
    base.mkdir()
    assert C.latest_checkpoint(tmp_path) is None
    for e in (1, 2, 10):
        C.save_checkpoint(base / f"epoch-{e:04d}", model, opt, epoch=e)
    C.save_checkpoint(base / "epoch-0010", model, opt, epoch=10)  # replaced in place
    (base / ".epoch-0011.abcd.tmp").mkdir()  # a save interrupted by a crash
    latest = C.latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "epoch-0010"
    assert C.resolve_checkpoint(tmp_path) == latest
    assert C.resolve_checkpoint(latest / "model.safetensors") == latest
    C.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in base.iterdir()) == ["epoch-0002", "epoch-0010"]


def test_weights_load_into_torch_sequential(tmp_path: Path) -> None:
    """Weights saved by graphgrad load into the equivalent torch nn.Sequential as they are,
    and give the same logits to 1e-5."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    g = np.random.default_rng(3)
    model = nn.MLP(20, [16, 12], 4, activation="relu", rng=g)
    path = C.save_checkpoint(tmp_path / "ck", model)
    net = torch.nn.Sequential(
        torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 12), torch.nn.ReLU(),
        torch.nn.Linear(12, 4),
    )  # fmt: skip
    net.load_state_dict(load_file(str(path / "model.safetensors")))  # strict by default
    x = g.standard_normal((32, 20)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x).data, expected, atol=1e-5, rtol=0)


def _as_version_1(meta: dict[str, object]) -> None:
    """What a version-1 file held: no digest, no device, no buffer names, no layout."""
    meta["version"] = 1
    for key in ("meta_sha256", "device", "buffer_names"):
        meta.pop(key, None)
    versions = meta["versions"]
    assert isinstance(versions, dict)
    versions.pop("gemm_layout", None)
    versions.pop("onednn_matmul", None)


def _rewrite(path: Path, change: object) -> None:
    j = path / "checkpoint.json"
    meta = json.loads(j.read_text())
    change(meta)  # type: ignore[operator]
    j.write_text(json.dumps(meta))


def test_version_1_files_are_read_but_not_a_version_2_file_relabelled(tmp_path: Path) -> None:
    model, opt = trained()
    path = C.save_checkpoint(tmp_path / "ck", model, opt, epoch=1)
    _rewrite(path, _as_version_1)
    assert C.load_checkpoint(path).epoch == 1  # an old file as it was written: still read

    def relabel(meta: dict[str, object]) -> None:
        meta["version"] = 1  # the digest stays: an edit that hopes to skip its check

    path = C.save_checkpoint(tmp_path / "ck2", model, opt, epoch=1)
    _rewrite(path, relabel)
    with pytest.raises(C.CheckpointError, match=r"ck2/checkpoint.json: says format version 1 "
                       r"but holds meta_sha256, device"):  # fmt: skip
        C.load_checkpoint(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(version=True), "format version True"),
        (lambda m: m.update(version=1.0), "format version 1.0"),
        (lambda m: m.update(version=3), "format version 3"),
        (lambda m: m.update(device="cpu"), "holds device"),
        (lambda m: m["versions"].update(gemm_layout="rows"), "holds versions.gemm_layout"),
        (lambda m: m.pop("shapes"), "version 1 checkpoint without shapes"),
        (lambda m: m.pop("files"), "version 1 checkpoint without files"),
    ],
    ids=["true", "1.0", "3", "device", "gemm_layout", "no shapes", "no files"],
)
def test_version_1_files_must_look_like_version_1(
    tmp_path: Path, change: object, message: str
) -> None:
    model, opt = trained()
    path = C.save_checkpoint(tmp_path / "ck", model, opt)

    def edit(meta: dict[str, object]) -> None:
        _as_version_1(meta)
        change(meta)  # type: ignore[operator]

    _rewrite(path, edit)
    with pytest.raises(C.CheckpointError, match=re.escape(message)):
        C.load_checkpoint(path)
