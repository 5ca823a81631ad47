"""Everything above the core on another device: ``Module.to``, layers and optimisers, the
DataLoader, checkpoints, the Trainer and ``graphgrad train --device``.

No GPU here: ``array-api-strict`` (the standard's strict reference namespace, with fake devices)
is the device everything is proved on; it computes with NumPy underneath, so the portable paths
must give NumPy's numbers. ``--device cuda`` without CuPy must be one line naming the extra.
``bench/gpu_check.py`` (its ``--quick`` rehearsal runs here) does the GPU half on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _backend
from graphgrad.checkpoint import load_checkpoint, save_checkpoint
from graphgrad.config import ConfigError, RunConfig
from graphgrad.data import DataLoader
from graphgrad.errors import DeviceMismatchError
from graphgrad.optim import SGD, Adam
from graphgrad.train import Trainer, evaluate

pytest.importorskip("array_api_strict")

STRICT = "array-api-strict"
ROOT = Path(__file__).resolve().parent.parent
GRAPHGRAD = str(Path(sys.executable).with_name("graphgrad"))
HAVE_CUPY = importlib.util.find_spec("cupy") is not None


def host(a: Any) -> np.ndarray:
    return _backend.to_numpy(a)


def mlp(device: str | None = None, dtype: Any = np.float32) -> gg.nn.MLP:
    return gg.nn.MLP(3, [5, 4], 2, rng=np.random.default_rng(0), dtype=dtype, device=device)


def mlp2() -> gg.nn.MLP:
    return gg.nn.MLP(2, [8], 2, rng=np.random.default_rng(0))


def gg_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GRAPHGRAD_DEBUG"}
    return subprocess.run([GRAPHGRAD, *args], capture_output=True, text=True, env=env, timeout=300)


# ------------------------------------------------------------------------- nn: layers, to()


class TestModuleTo:
    def test_layers_made_on_a_device_hold_the_same_weights(self) -> None:
        cpu, dev = mlp(), mlp(STRICT)
        assert str(dev.device) == STRICT and cpu.device.is_cpu
        for (n1, p1), (n2, p2) in zip(cpu.named_parameters(), dev.named_parameters(), strict=True):
            assert n1 == n2
            assert _backend.device_of(p2.data) == _backend.parse_device(STRICT)
            np.testing.assert_array_equal(p1.data, host(p2.data))

    def test_to_moves_in_place_and_keeps_the_parameter_objects(self) -> None:
        m = mlp()
        params = m.parameters()
        before = [p.data.copy() for p in params]
        params[0].grad = np.ones_like(params[0].data)
        assert m.to(STRICT) is m
        assert [id(p) for p in m.parameters()] == [id(p) for p in params]
        assert str(m.device) == STRICT
        assert _backend.device_of(params[0].grad) == m.device  # the gradient moved too
        for p, b in zip(params, before, strict=True):
            np.testing.assert_array_equal(host(p.data), b)
        m.to("array-api-strict:device1")
        assert str(m.device) == "array-api-strict:device1"
        m.to("cpu")
        assert m.device.is_cpu and type(params[0].data) is np.ndarray

    def test_device_of_a_model_split_across_devices_is_an_error(self) -> None:
        m = mlp()
        m[0].to(STRICT)
        with pytest.raises(
            DeviceMismatchError, match=r"0\.weight is on array-api-strict but 2\.weight is on cpu"
        ):
            _ = m.device  # first parameter on strict, the others on the CPU
        assert gg.nn.Flatten().device.is_cpu  # no parameters: the CPU

    def test_buffers_move_and_are_saved(self) -> None:
        m = mlp()
        m.register_buffer("scale", np.arange(3.0))
        m.to(STRICT)
        assert _backend.device_of(m.scale) == m.device
        state = m.state_dict()
        assert all(type(v) is np.ndarray for v in state.values())  # host copies
        np.testing.assert_array_equal(state["scale"], np.arange(3.0))
        state["scale"] = np.full(3, 7.0)
        m.load_state_dict(state)
        np.testing.assert_array_equal(host(m.scale), np.full(3, 7.0))
        assert _backend.device_of(m.scale) == m.device

    def test_load_state_dict_copies_onto_the_device_in_place(self) -> None:
        cpu, dev = mlp(), gg.nn.MLP(3, [5, 4], 2, rng=np.random.default_rng(1), device=STRICT)
        w = dev[0].weight
        dev.load_state_dict(cpu.state_dict())
        assert dev[0].weight is w and str(dev.device) == STRICT
        np.testing.assert_array_equal(host(w.data), cpu[0].weight.data)

    def test_init_functions_take_a_device(self) -> None:
        a = gg.nn.init.he_normal((4, 3), np.random.default_rng(0))
        b = gg.nn.init.he_normal((4, 3), np.random.default_rng(0), device=STRICT)
        np.testing.assert_array_equal(a, host(b))
        assert str(_backend.device_of(b)) == STRICT
        assert str(_backend.device_of(gg.nn.init.zeros((2,), device=STRICT))) == STRICT


# ------------------------------------------------------------------------------- optimisers

OPTIMISERS = {
    "sgd": lambda ps: SGD(ps, 0.1),
    "momentum": lambda ps: SGD(ps, 0.1, momentum=0.9),
    "nesterov-wd": lambda ps: SGD(ps, 0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
    "adam": lambda ps: Adam(ps, 1e-2),
    "adam-wd": lambda ps: Adam(ps, 1e-2, betas=(0.8, 0.99), weight_decay=0.1),
}


def _run_steps(model: gg.nn.Module, opt: Any, grads: list[list[np.ndarray]]) -> None:
    dev = model.device
    for gs in grads:
        for p, g in zip(model.parameters(), gs, strict=True):
            p.grad = _backend.to_device(g, dev)
        opt.step()


class TestOptimisers:
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("name", sorted(OPTIMISERS))
    def test_portable_updates_give_numpys_bits(self, name: str, dtype: Any) -> None:
        rng = np.random.default_rng(3)
        cpu, dev = mlp(dtype=dtype), mlp(STRICT, dtype=dtype)
        grads = [[rng.standard_normal(p.shape).astype(dtype) for p in cpu.parameters()]
                 for _ in range(4)]  # fmt: skip
        o1, o2 = OPTIMISERS[name](cpu.parameters()), OPTIMISERS[name](dev.parameters())
        _run_steps(cpu, o1, grads)
        _run_steps(dev, o2, grads)
        for p1, p2 in zip(cpu.parameters(), dev.parameters(), strict=True):
            assert _backend.device_of(p2.data) == dev.device
            np.testing.assert_array_equal(p1.data, host(p2.data))
        for i, st in o2.state.items():
            for k, v in st.items():
                if k != "step":
                    assert _backend.device_of(v) == dev.device
                    np.testing.assert_array_equal(o1.state[i][k], host(v))

    @pytest.mark.parametrize("name", ["momentum", "adam"])
    def test_an_optimiser_built_before_to_follows_the_model(self, name: str) -> None:
        rng = np.random.default_rng(4)
        stay, move = mlp(), mlp()
        grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in stay.parameters()]
                 for _ in range(4)]  # fmt: skip
        o1, o2 = OPTIMISERS[name](stay.parameters()), OPTIMISERS[name](move.parameters())
        _run_steps(stay, o1, grads[:2])
        _run_steps(move, o2, grads[:2])
        move.to(STRICT)  # state made on the CPU, then the model moves
        _run_steps(stay, o1, grads[2:])
        _run_steps(move, o2, grads[2:])
        for p1, p2 in zip(stay.parameters(), move.parameters(), strict=True):
            np.testing.assert_array_equal(p1.data, host(p2.data))
        buf = next(v for k, v in o2.state[0].items() if k != "step")
        assert _backend.device_of(buf) == move.device
        sd = o2.state_dict()  # host copies, loadable anywhere
        assert all(type(v) is np.ndarray for s in sd["state"].values() for v in s.values()
                   if not isinstance(v, int))  # fmt: skip
        o3 = OPTIMISERS[name](mlp(STRICT).parameters())
        o3.load_state_dict(sd)
        buf3 = next(v for k, v in o3.state[0].items() if k != "step")
        assert str(_backend.device_of(buf3)) == STRICT

    def test_fused_backward_moved_off_the_cpu_takes_the_ordinary_update(self) -> None:
        x, y = _moons(32)
        fused, plain = mlp2(), mlp2()
        o1 = SGD(fused.parameters(), 0.1, momentum=0.9, fused_backward=True)
        o2 = SGD(plain.parameters(), 0.1, momentum=0.9)
        for model, opt in ((fused, o1), (plain, o2)):
            for k in range(4):
                if k == 2:
                    model.to(STRICT)  # fused for two steps on the CPU, then moved
                xb, yb = (_backend.to_device(a, model.device) for a in (x, y))
                opt.zero_grad()
                gg.cross_entropy(model(xb), gg.Tensor(yb)).backward()
                opt.step()
        for p1, p2 in zip(fused.parameters(), plain.parameters(), strict=True):
            np.testing.assert_allclose(host(p1.data), host(p2.data), rtol=1e-6, atol=1e-7)

    def test_fused_backward_is_refused_off_the_cpu(self) -> None:
        with pytest.raises(ValueError, match=r"fused_backward runs on the cpu device .* "
                           r"array-api-strict"):  # fmt: skip
            SGD(mlp(STRICT).parameters(), 0.1, momentum=0.9, fused_backward=True)


# ------------------------------------------------------------------------------- data


class TestDataLoader:
    def test_batches_arrive_on_the_device_one_copy_per_array(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        x = np.arange(40.0, dtype=np.float32).reshape(20, 2)
        y = np.arange(20) % 3
        calls: list[Any] = []
        real = _backend.to_device

        def counting(a: Any, d: Any) -> Any:
            calls.append(a.shape)
            return real(a, d)

        cpu = list(DataLoader((x, y), 6, shuffle=True, seed=1))
        monkeypatch.setattr(_backend, "to_device", counting)
        loader = DataLoader((x, y), 6, shuffle=True, seed=1, device=STRICT)
        batches = list(loader)
        assert len(calls) == 2 * len(batches) == 2 * len(cpu)  # x and y, once per batch
        for (xb, yb), (xc, yc) in zip(batches, cpu, strict=True):
            assert str(_backend.device_of(xb)) == STRICT
            np.testing.assert_array_equal(host(xb), xc)
            np.testing.assert_array_equal(host(yb), yc)
        assert "device='array-api-strict'" in repr(loader)


# ------------------------------------------------------------------------------ checkpoints


def _trained_on(device: str) -> tuple[gg.nn.MLP, Adam]:
    m = mlp(device)
    opt = Adam(m.parameters(), 1e-2)
    rng = np.random.default_rng(5)
    _run_steps(m, opt, [[rng.standard_normal(p.shape).astype(np.float32)
                         for p in m.parameters()]])  # fmt: skip
    return m, opt


class TestCheckpoints:
    def test_saved_from_the_device_loaded_on_cpu_and_back(self, tmp_path: Path) -> None:
        pytest.importorskip("safetensors")
        m, opt = _trained_on(STRICT)
        path = save_checkpoint(tmp_path / "c", m, opt, epoch=1, step=1)
        c = load_checkpoint(path)
        assert c.device == STRICT and c.meta["device"] == STRICT
        assert all(type(a) is np.ndarray for a in c.weights.values())
        cpu = mlp()
        cpu.load_state_dict(c.weights)
        o_cpu = Adam(cpu.parameters(), 1e-2)
        o_cpu.load_state_dict(c.optimizer or {})
        for p1, p2 in zip(m.parameters(), cpu.parameters(), strict=True):
            np.testing.assert_array_equal(host(p1.data), p2.data)
        # from the CPU back onto the device
        path2 = save_checkpoint(tmp_path / "c2", cpu, o_cpu, epoch=1, step=1)
        assert load_checkpoint(path2).device == "cpu"
        c2 = load_checkpoint(path2, map_location=STRICT)
        assert all(str(_backend.device_of(a)) == STRICT for a in c2.weights.values())
        back = mlp(STRICT)
        back.load_state_dict(c2.weights)
        o_back = Adam(back.parameters(), 1e-2)
        o_back.load_state_dict(c2.optimizer or {})
        for p1, p2 in zip(m.parameters(), back.parameters(), strict=True):
            np.testing.assert_array_equal(host(p1.data), host(p2.data))
        for i, st in opt.state.items():
            for k in ("exp_avg", "exp_avg_sq"):
                assert str(_backend.device_of(o_back.state[i][k])) == STRICT
                np.testing.assert_array_equal(host(st[k]), host(o_back.state[i][k]))

    def test_buffers_are_saved_and_checked(self, tmp_path: Path) -> None:
        pytest.importorskip("safetensors")
        m = mlp(STRICT)
        m.register_buffer("running", np.arange(4.0, dtype=np.float32))
        m.to(STRICT)
        c = load_checkpoint(save_checkpoint(tmp_path / "b", m))
        assert c.meta["buffer_names"] == ["running"]
        np.testing.assert_array_equal(c.weights["running"], np.arange(4.0, dtype=np.float32))


# ------------------------------------------------------------------------------ training


def _moons(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    x, y = gg.data.two_moons(n, rng=np.random.default_rng(0))
    return x.astype(np.float32), y.astype(np.int64)


class TestTraining:
    @pytest.mark.parametrize("optimizer", ["sgd", "adam"])
    def test_two_epochs_on_strict_match_the_cpu(self, optimizer: str) -> None:
        x, y = _moons()
        runs = {}
        for device in ("cpu", STRICT):
            m = gg.nn.MLP(2, [16, 16], 2, rng=np.random.default_rng(0), device=device)
            opt = (SGD(m.parameters(), 0.05, momentum=0.9) if optimizer == "sgd"
                   else Adam(m.parameters(), 1e-2))  # fmt: skip
            t = Trainer(m, opt, batch_size=32, data_seed=0, progress=False, log=None)
            hist = t.fit(x, y, 2, eval_data=(x[:64], y[:64]))
            assert str(t.device) == device
            runs[device] = (m, hist)
        (m1, h1), (m2, h2) = runs["cpu"], runs[STRICT]
        assert len(h1) == len(h2) == 2
        for r1, r2 in zip(h1, h2, strict=True):
            assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-5)
            assert r1["eval_loss"] == pytest.approx(r2["eval_loss"], rel=1e-5)
            assert r1["train_accuracy"] == r2["train_accuracy"]
        assert h1[-1]["train_loss"] < h1[0]["train_loss"] * 1.5  # it trained, not diverged
        for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
            np.testing.assert_allclose(p1.data, host(p2.data), rtol=1e-4, atol=1e-5)
        assert str(_backend.device_of(m2[0].weight.data)) == STRICT

    @pytest.mark.parametrize("device", ["cpu", STRICT])
    def test_a_nan_loss_names_its_batch_on_every_device(self, device: str) -> None:
        from graphgrad.train import TrainingDiverged

        x, y = _moons(64)
        calls = []

        def loss_fn(logits: gg.Tensor, labels: Any) -> gg.Tensor:
            calls.append(1)
            loss = gg.cross_entropy(logits, labels)
            return loss * float("nan") if len(calls) == 3 else loss

        m = gg.nn.MLP(2, [8], 2, rng=np.random.default_rng(0), device=device)
        t = Trainer(m, SGD(m.parameters(), 0.1), batch_size=16, loss_fn=loss_fn, log=None,
                    progress=False)  # fmt: skip
        with pytest.raises(TrainingDiverged, match=r"at epoch 1, batch 3 of 4 \(optimizer step 3"):
            t.fit(x, y, 1)
        assert t.history == []

    def test_trainer_device_moves_the_model_and_evaluate_follows_it(self) -> None:
        x, y = _moons(64)
        m = gg.nn.MLP(2, [8], 2, rng=np.random.default_rng(0))
        t = Trainer(m, SGD(m.parameters(), 0.1), batch_size=16, device=STRICT, log=None,
                    progress=False)  # fmt: skip
        assert str(m.device) == STRICT and t.device == m.device
        ev_dev = evaluate(m, x, y)
        m.to("cpu")
        ev_cpu = evaluate(m, x, y)
        assert ev_dev.accuracy == ev_cpu.accuracy
        assert ev_dev.loss == pytest.approx(ev_cpu.loss, rel=1e-6)
        np.testing.assert_array_equal(ev_dev.predictions, ev_cpu.predictions)


# ----------------------------------------------------------------------- config and CLI


class TestConfig:
    def test_device_field(self) -> None:
        assert RunConfig().train.device == "cpu"
        for ok in ("cuda", "cuda:1", STRICT, "array-api-strict:device1"):
            assert RunConfig.from_dict({"train": {"device": ok}}).train.device == ok
        with pytest.raises(ConfigError, match=r"^exp\.toml: train\.device must be cpu, cuda"):
            RunConfig.from_dict({"train": {"device": "gpu"}}, "exp.toml")
        with pytest.raises(ConfigError, match=r"exp\.toml: train\.device must be a string"):
            RunConfig.from_dict({"train": {"device": 0}}, "exp.toml")
        cfg = RunConfig.from_dict({"train": {"device": STRICT}})
        assert 'device = "array-api-strict"' in cfg.to_toml()


TOY = ["--dataset", "two_moons", "--epochs", "2", "--no-plots", "--lr-schedule", "constant"]


class TestCommand:
    def test_train_eval_predict_on_strict_end_to_end(self, tmp_path: Path) -> None:
        pytest.importorskip("safetensors")
        runs = {}
        for device in ("cpu", STRICT):
            out = tmp_path / device
            proc = gg_cmd("train", *TOY, "--device", device, "--out", str(out))
            assert proc.returncode == 0, proc.stderr
            assert "Traceback" not in proc.stderr
            runs[device] = json.loads((out / "metrics.json").read_text())
        m_cpu, m_dev = runs["cpu"], runs[STRICT]
        assert m_dev["device"] == STRICT and m_cpu["device"] == "cpu"
        assert m_dev["config"]["train"]["device"] == STRICT
        assert m_dev["test"]["accuracy"] == m_cpu["test"]["accuracy"]
        assert m_dev["test"]["loss"] == pytest.approx(m_cpu["test"]["loss"], rel=1e-5)
        assert load_checkpoint(tmp_path / STRICT).device == STRICT
        ev = gg_cmd("eval", str(tmp_path / STRICT), "--device", STRICT, "--json")
        assert ev.returncode == 0, ev.stderr
        assert json.loads(ev.stdout)["accuracy"] == m_dev["test"]["accuracy"]
        pr = gg_cmd("predict", str(tmp_path / STRICT), "--test-index", "0", "1",
                    "--device", STRICT, "--json")  # fmt: skip
        pr_cpu = gg_cmd("predict", str(tmp_path / STRICT), "--test-index", "0", "1", "--json")
        assert pr.returncode == 0, pr.stderr
        got, want = json.loads(pr.stdout), json.loads(pr_cpu.stdout)
        assert [r["top"][0]["class"] for r in got] == [r["top"][0]["class"] for r in want]
        # resumed on another device: a run started on the CPU continues on strict
        res = gg_cmd("train", "--out", str(tmp_path / "cpu"), "--resume", "--epochs", "3",
                     "--device", STRICT, "--no-plots")  # fmt: skip
        assert res.returncode == 0, res.stderr
        resumed = json.loads((tmp_path / "cpu" / "metrics.json").read_text())
        assert resumed["epochs"] == 3 and resumed["device"] == STRICT

    @pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed: cuda may exist here")
    @pytest.mark.parametrize("cmd", ["train", "eval", "predict"])
    def test_cuda_without_cupy_is_one_line_before_any_work(self, tmp_path: Path, cmd: str) -> None:
        out = tmp_path / "run"
        args = {
            "train": ["train", *TOY, "--device", "cuda", "--out", str(out)],
            "eval": ["eval", str(out), "--device", "cuda"],
            "predict": ["predict", str(out), "--test-index", "0", "--device", "cuda"],
        }[cmd]
        proc = gg_cmd(*args)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: ") and "pip install graphgrad[cuda]" in lines[0]
        assert "CuPy is not installed" in lines[0]
        assert proc.stdout == ""
        assert not out.exists()  # nothing written, no data loaded

    def test_unknown_device_is_a_usage_error(self, tmp_path: Path) -> None:
        proc = gg_cmd("train", *TOY, "--device", "gpu", "--out", str(tmp_path / "never"))
        assert proc.returncode == 2 and "--device" in proc.stderr
        assert "expected cpu, cuda, cuda:N or array-api-strict" in proc.stderr
        assert not (tmp_path / "never").exists()


# --------------------------------------------------------------------------- gpu_check


class TestGpuCheck:
    def test_rehearsal_on_strict(self, tmp_path: Path) -> None:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", STRICT,
             "--quick", "--out", str(tmp_path)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        res = json.loads((tmp_path / "gpu.json").read_text())
        text = (tmp_path / "GPU.md").read_text()
        assert text.startswith("# graphgrad GPU check, ")
        for part in ("ops", "train", "step", "kernels"):
            assert isinstance(res[part], dict), (part, res[part])
        assert res["ops"]["cases"] > 50 and res["ops"]["ok"] == res["ops"]["cases"]
        assert res["train"]["ok"]
        assert [r["shape"] for r in res["step"]["rows"]] == ["64-32-32-10 b16", "96-48-48-10 b32"]
        assert all(r["ratio"] > 0 for r in res["step"]["rows"])
        assert all(r["max_rel_difference"] == 0 for r in res["kernels"]["rows"])

    def test_an_unknown_part_exits_2(self, tmp_path: Path) -> None:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", STRICT,
             "--quick", "--parts", "kernel", "--out", str(tmp_path / "o")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2 and "unknown part(s) ['kernel']" in proc.stderr
        assert not (tmp_path / "o").exists()

    @pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed")
    def test_without_cupy_one_line_exit_2_nothing_written(self, tmp_path: Path) -> None:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path / "o")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install graphgrad[cuda]" in lines[0], proc.stderr
        assert not (tmp_path / "o").exists()
