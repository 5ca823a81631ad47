"""graphgrad on a GPU, in one command (at most about five minutes on an H200).

    python bench/gpu_check.py                      # CuPy on cuda:0 against NumPy and PyTorch
    python bench/gpu_check.py --device array-api-strict --quick   # the CPU rehearsal (CI)

Four parts, each reported even if another fails:

(a) ops: every case of the op spec table (``tests/op_specs.py``) on the device against NumPy,
    float64: the forward values and the gradients of the sum of the output, per op.
(b) train: the README recipe's Fashion-MNIST MLP (784-256-256-10, He init, Adam 1e-3, cosine,
    batch 128) for 2 epochs on the device and on the CPU with the same seeds: the test
    accuracies side by side (they agree to a few hundredths of a percent: float32 sums
    round differently on the two). ``--quick``: a 2,000-sample subset (or two moons if
    Fashion-MNIST is not on the machine).
(c) step: the MLP training step (forward, softmax cross-entropy, backward, SGD momentum 0.9,
    fp32) at 784-256-256-10 b128 and 3072-512-512-10 b256, graphgrad on the device against
    PyTorch CUDA eager. Each runs in its own worker process; the two take turns (block k of
    graphgrad, then block k of PyTorch, ...), each block timed between device synchronisations
    only; the ratio is the median of the per-pair ratios. With ``--device array-api-strict``
    the reference is graphgrad on NumPy (no PyTorch CUDA), at tiny sizes with ``--quick``.
(d) kernels: the CuPy ``ElementwiseKernel`` optimiser updates (``graphgrad.optim.cupy_updates``)
    against the portable in-place expressions (``graphgrad.optim.xp_updates``) on the same
    GPU arrays: the largest difference after 5 steps, and the time per update. On
    array-api-strict: the portable updates against NumPy's compiled kernels (equal bits).

Set-up on the GPU machine: ``bash scripts/setup.sh`` (or ``pip install -e '.[test,train,bench]'``),
then ``pip install -e '.[cuda]'`` and a CUDA build of PyTorch for part (c).

Output: a markdown table on stdout, written with the date to ``<out>/GPU.md`` and
``<out>/gpu.json`` (``--out``, default ``bench/``).

Exit status: 0 when every part ran and agreed; 1 when a part failed or disagreed; 2 when
nothing could run: no CuPy or no GPU for ``--device cuda`` (one line says what is missing
and how to install it; nothing is written).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHAPES: list[tuple[tuple[int, ...], int]] = [
    ((784, 256, 256, 10), 128),
    ((3072, 512, 512, 10), 256),
]
QUICK_SHAPES: list[tuple[tuple[int, ...], int]] = [((64, 32, 32, 10), 16), ((96, 48, 48, 10), 32)]
LR, MU = 0.01, 0.9
TARGET = 1.5  # the bar: graphgrad within 1.5x of PyTorch CUDA eager


def shape_name(sizes: tuple[int, ...], batch: int) -> str:
    return "-".join(map(str, sizes)) + f" b{batch}"


# ------------------------------------------------------------------------------ devices


def sync(device: str) -> None:
    """Wait until the device has finished its queued work (nothing to wait for on the CPU)."""
    if device.startswith("cuda"):
        import cupy

        cupy.cuda.Device().synchronize()
    elif device == "torch-cuda":
        import torch

        torch.cuda.synchronize()


def device_tensor(a: np.ndarray, device: str, requires_grad: bool = True) -> Any:
    """A graphgrad Tensor holding ``a`` on ``device``."""
    import graphgrad as gg

    try:
        return gg.tensor(a, requires_grad=requires_grad, device=device)
    except TypeError:  # a Tensor without device= (an older core)
        from graphgrad import _backend

        t = gg.Tensor(a, requires_grad=requires_grad)
        t.data = _backend.to_device(a, device)
        return t


# -------------------------------------------------------------------------------- (a) ops


def check_ops(device: str, quick: bool) -> dict[str, Any]:
    """Every spec case on ``device`` against NumPy, float64: values and gradients."""
    sys.path.insert(0, str(ROOT / "tests"))
    import op_specs
    from graphgrad import _backend

    rng = np.random.default_rng(0)
    per_op: dict[str, dict[str, Any]] = {}
    for op, case, spec, shapes in op_specs.cases():
        row = per_op.setdefault(
            op, {"cases": 0, "ok": 0, "worst": 0.0, "failures": [], "skipped": []}
        )
        if quick and row["cases"] >= 2:
            continue
        xs = op_specs.sample(spec, shapes, rng)
        try:
            ref_in = [device_tensor(a, "cpu") for a in xs]
            ref = spec.fn(*ref_in)
            ref.sum().backward()
        except Exception as e:  # e.g. to_device's spec visits array-api-strict, not installed
            row["skipped"].append(f"{case}: no NumPy reference: {type(e).__name__}: {e}"[:200])
            continue
        row["cases"] += 1
        try:
            dev_in = [device_tensor(a, device) for a in xs]
            out = spec.fn(*dev_in)
            out.sum().backward()
            pairs = [(ref.data, out.data)]
            pairs += [(r.grad, d.grad) for r, d in zip(ref_in, dev_in, strict=True)]
            worst = 0.0
            for want, got in pairs:
                if want is None or got is None:
                    if (want is None) != (got is None):
                        raise AssertionError("a gradient is missing on one side")
                    continue
                w, g = np.asarray(want), _backend.to_numpy(got)
                if w.shape != g.shape:
                    raise AssertionError(f"shape {g.shape} on the device, {w.shape} on NumPy")
                err = float(np.max(np.abs(w - g) / (spec.atol + spec.rtol * np.abs(w)), initial=0))
                worst = max(worst, err)
            row["worst"] = max(row["worst"], worst)
            if worst <= 1.0:
                row["ok"] += 1
            else:
                row["failures"].append(f"{case}: {worst:.2g} x tolerance")
        except Exception as e:  # a failure of one case is reported, the others still run
            row["failures"].append(f"{case}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    cases = sum(r["cases"] for r in per_op.values())
    ok = sum(r["ok"] for r in per_op.values())
    skipped = sum(len(r["skipped"]) for r in per_op.values())
    return {"ops": len(per_op), "cases": cases, "ok": ok, "skipped": skipped, "per_op": per_op}


# ------------------------------------------------------------------------------ (b) train


def check_training(device: str, quick: bool) -> dict[str, Any]:
    """The README recipe for 2 epochs on the device and on the CPU, same seeds."""
    from dataclasses import replace

    from graphgrad.config import RunConfig
    from graphgrad.data import DatasetNotFoundError
    from graphgrad.train import Trainer, build_model, build_optimizer, evaluate, load_data

    cfg = RunConfig()
    try:
        data_cfg = replace(cfg.data, train_subset=2000, test_subset=500) if quick else cfg.data
        data = load_data(data_cfg)
        name = "fashion-mnist" + (" (2,000 / 500 samples)" if quick else "")
    except DatasetNotFoundError:
        if not quick:
            raise
        cfg = RunConfig.from_dict({"data": {"dataset": "two_moons"}})
        data = load_data(cfg.data)
        name = "two_moons (Fashion-MNIST not found)"
    epochs = 2
    out: dict[str, Any] = {"data": name, "epochs": epochs}
    for where in ("cpu", device):
        model = build_model(cfg.model, data.num_features, data.num_classes, device=where)
        opt = build_optimizer(cfg.optim, model.parameters())
        trainer = Trainer(
            model,
            opt,
            batch_size=cfg.train.batch_size,
            data_seed=cfg.data.seed,
            lr_schedule=cfg.train.lr_schedule,
            progress=False,
            log=None,
        )
        t0 = time.perf_counter()
        history = trainer.fit(data.x_train, data.y_train, epochs)
        sync(where)
        seconds = time.perf_counter() - t0
        test = evaluate(model, data.x_test, data.y_test)
        out[where] = {
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "train_loss": [h["train_loss"] for h in history],
            "seconds": seconds,
        }
    out["accuracy_difference"] = abs(out[device]["test_accuracy"] - out["cpu"]["test_accuracy"])
    out["ok"] = out["accuracy_difference"] <= 0.01
    return out


# ------------------------------------------------------------------------------- (c) step


def worker(kind: str, device: str) -> None:
    """A timing worker: reads ``sizes batch steps`` lines on stdin, answers one JSON line with
    the seconds per step (the first request of a shape builds the model and warms it up)."""
    models: dict[str, Any] = {}
    for line in sys.stdin:
        sizes_text, batch_text, steps_text = line.split()
        sizes = tuple(int(s) for s in sizes_text.split(","))
        batch, steps = int(batch_text), int(steps_text)
        key = f"{sizes_text} {batch}"
        if key not in models:
            models[key] = (torch_step if kind == "torch" else graphgrad_step)(sizes, batch, device)
            for _ in range(5):
                models[key]()
        step = models[key]
        sync(device if kind != "torch" else "torch-cuda")
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device if kind != "torch" else "torch-cuda")
        print(json.dumps({"seconds_per_step": (time.perf_counter() - t0) / steps}), flush=True)


def _init(sizes: tuple[int, ...], batch: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ws = [
        (rng.standard_normal((b, a)) * np.sqrt(2.0 / a)).astype(np.float32)
        for a, b in itertools.pairwise(sizes)
    ]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch).astype(np.int64)
    return ws, x, y


def graphgrad_step(sizes: tuple[int, ...], batch: int, device: str) -> Any:
    """One graphgrad training step on ``device`` as a user writes it."""
    import graphgrad as gg
    from graphgrad import _backend

    ws, x, y = _init(sizes, batch)
    model = gg.nn.MLP(sizes[0], list(sizes[1:-1]), sizes[-1], init="he", device=device)
    for layer, w in zip(model.linear_layers(), ws, strict=True):
        layer.load_state_dict({"weight": w, "bias": np.zeros(w.shape[0], np.float32)})
    opt = gg.optim.SGD(model.parameters(), LR, momentum=MU)
    xd, yd = _backend.to_device(x, device), gg.Tensor(_backend.to_device(y, device))

    def step() -> None:
        opt.zero_grad()
        loss = gg.cross_entropy(model(xd), yd)
        loss.backward()
        opt.step()

    return step


def torch_step(sizes: tuple[int, ...], batch: int, device: str) -> Any:
    """The same step in PyTorch eager on CUDA."""
    import torch

    ws, x, y = _init(sizes, batch)
    layers: list[Any] = []
    for k, w in enumerate(ws):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.zero_()
        layers.append(lin)
        if k < len(ws) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MU)
    xd, yd = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()

    def step() -> None:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xd), yd)
        loss.backward()
        opt.step()

    return step


class Worker:
    """A timing worker process (this script with ``--worker``)."""

    def __init__(self, kind: str, device: str) -> None:
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, "--device", device],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def time(self, sizes: tuple[int, ...], batch: int, steps: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{','.join(map(str, sizes))} {batch} {steps}\n")
        self.proc.stdin.flush()
        while True:  # skip anything a library printed on stdout
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.kind} worker stopped (exit {self.proc.wait()})")
            if line.startswith('{"seconds_per_step"'):
                return float(json.loads(line)["seconds_per_step"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def check_step(device: str, quick: bool) -> dict[str, Any]:
    """graphgrad on the device against the reference, taking turns, per shape."""
    on_gpu = device.startswith("cuda")
    ref_kind, ref_device = ("torch", "cuda") if on_gpu else ("graphgrad", "cpu")
    ref_name = "PyTorch CUDA eager" if on_gpu else "graphgrad on NumPy (cpu)"
    pairs, steps = (3, 5) if quick else (11, 100)
    rows = []
    mine, ref = Worker("graphgrad", device), Worker(ref_kind, ref_device)
    try:
        for sizes, batch in QUICK_SHAPES if quick else SHAPES:
            ratios, t_mine, t_ref = [], [], []
            for _ in range(pairs):
                a = mine.time(sizes, batch, steps)
                b = ref.time(sizes, batch, steps)
                t_mine.append(a)
                t_ref.append(b)
                ratios.append(a / b)
            rows.append(
                {
                    "shape": shape_name(sizes, batch),
                    "graphgrad_ms": 1e3 * median(t_mine),
                    "reference_ms": 1e3 * median(t_ref),
                    "ratio": median(ratios),
                    "ratios": ratios,
                }
            )
    finally:
        mine.close()
        ref.close()
    return {"reference": ref_name, "pairs": pairs, "steps_per_block": steps, "rows": rows}


# ---------------------------------------------------------------------------- (d) kernels


def check_kernels(device: str, quick: bool) -> dict[str, Any]:
    """The device's optimiser updates against the portable ones (or NumPy's kernels)."""
    from graphgrad import _backend, _fused
    from graphgrad.optim import xp_updates

    dev = _backend.parse_device(device)
    xp = dev.xp
    n = 1 << (12 if quick else 20)
    rng = np.random.default_rng(1)
    rows = []
    on_gpu = dev.kind == "cuda"
    if on_gpu:
        from graphgrad.optim import cupy_updates
    for dtype in (np.float32, np.float64):
        w0, g0 = (rng.standard_normal(n).astype(dtype) for _ in range(2))
        for name in ("sgd", "sgd-nesterov", "adam"):
            arrays: dict[str, list[Any]] = {}
            seconds: dict[str, float] = {}
            impls = ["fused", "portable"]
            for impl in impls:
                on_host = impl == "fused" and not on_gpu
                put = (lambda a: a.copy()) if on_host else (lambda a: _backend.to_device(a, dev))
                w, g = put(w0), put(g0)
                m, v = put(np.zeros_like(w0)), put(np.zeros_like(w0))
                sync(device)
                t0 = time.perf_counter()
                for t in range(1, 6):
                    if name.startswith("sgd"):
                        nest = name == "sgd-nesterov"
                        if on_host:
                            _fused.sgd(w, g, v, None, LR, MU, 1e-4, nest, t == 1)
                        elif impl == "fused":
                            cupy_updates.sgd(w, g, v, LR, MU, 1e-4, nest, t == 1)
                        else:
                            xp_updates.sgd(w, g, v, LR, MU, 1e-4, nest, t == 1)
                    else:
                        bc1, bc2 = 1 - 0.9**t, float(np.sqrt(1 - 0.999**t))
                        if on_host:
                            _fused.adam(w, g, m, v, None, 1e-3, 0.9, 0.999, 1e-8, 1e-4, t)
                        elif impl == "fused":
                            cupy_updates.adam(
                                w, g, m, v, xp, 1e-3, 0.9, 0.999, 1e-8, 1e-4, bc1, bc2
                            )
                        else:
                            xp_updates.adam(w, g, m, v, xp, 1e-3, 0.9, 0.999, 1e-8, 1e-4, bc1, bc2)
                sync(device)
                seconds[impl] = (time.perf_counter() - t0) / 5
                arrays[impl] = [_backend.to_numpy(a) for a in (w, m, v)]
            diff = max(
                float(np.max(np.abs(a - b) / (1e-6 + np.abs(b)), initial=0))
                for a, b in zip(arrays["fused"], arrays["portable"], strict=True)
            )
            tol = 0.0 if not on_gpu else (1e-5 if dtype == np.float32 else 1e-12)
            rows.append(
                {
                    "update": name,
                    "dtype": np.dtype(dtype).name,
                    "max_rel_difference": diff,
                    "ok": diff <= tol,
                    "fused_us": 1e6 * seconds["fused"],
                    "portable_us": 1e6 * seconds["portable"],
                }
            )
    fused = "CuPy ElementwiseKernel" if on_gpu else "NumPy compiled kernels (graphgrad._fused)"
    return {"fused": fused, "portable": "graphgrad.optim.xp_updates", "elements": n, "rows": rows}


# ------------------------------------------------------------------------------- report


def report(device: str, results: dict[str, Any], quick: bool) -> str:
    today = datetime.date.today().isoformat()
    lines = [f"# graphgrad GPU check, {today}", ""]
    lines.append(f"Device: `{device}`{' (--quick)' if quick else ''}; {results.get('machine', '')}")
    lines.append("")
    ops = results.get("ops")
    lines.append("## (a) op spec table on the device vs NumPy (float64, values and gradients)")
    lines.append("")
    if isinstance(ops, dict) and "per_op" in ops:
        lines.append(f"{ops['ok']} of {ops['cases']} cases agree, over {ops['ops']} ops.")
        if ops["skipped"]:
            first = next(s for r in ops["per_op"].values() for s in r["skipped"])
            lines.append(f"{ops['skipped']} cases skipped (no NumPy reference), e.g. {first}.")
        bad = {k: v for k, v in ops["per_op"].items() if v["failures"]}
        if bad:
            lines += ["", "| op | cases failed | first failure |", "|---|---|---|"]
            for k, v in bad.items():
                first = v["failures"][0].replace("|", "/")
                lines.append(f"| {k} | {len(v['failures'])} of {v['cases']} | {first} |")
    else:
        lines.append(f"did not run: {ops}")
    lines += ["", "## (b) training: 2 epochs, same seeds", ""]
    tr = results.get("train")
    if isinstance(tr, dict) and "cpu" in tr:
        lines += [f"Data: {tr['data']}.", "", "| device | test accuracy | test loss | seconds |"]
        lines.append("|---|---|---|---|")
        for where in ("cpu", device):
            r = tr[where]
            lines.append(
                f"| {where} | {100 * r['test_accuracy']:.2f}% | {r['test_loss']:.4f} | "
                f"{r['seconds']:.1f} |"
            )
    else:
        lines.append(f"did not run: {tr}")
    lines += ["", "## (c) MLP training step, fp32 (medians; ratio: median of per-pair ratios)", ""]
    st = results.get("step")
    if isinstance(st, dict) and "rows" in st:
        lines.append(
            f"Reference: {st['reference']}; {st['pairs']} pairs of blocks of "
            f"{st['steps_per_block']} steps, taking turns, each in its own process."
        )
        lines += ["", "| shape | graphgrad ms | reference ms | ratio |", "|---|---|---|---|"]
        for r in st["rows"]:
            lines.append(
                f"| {r['shape']} | {r['graphgrad_ms']:.3f} | {r['reference_ms']:.3f} | "
                f"{r['ratio']:.2f}x |"
            )
    else:
        lines.append(f"did not run: {st}")
    lines += ["", "## (d) optimiser updates: fused vs portable (5 steps)", ""]
    kn = results.get("kernels")
    if isinstance(kn, dict) and "rows" in kn:
        lines.append(f"Fused: {kn['fused']}; portable: {kn['portable']}; {kn['elements']:,} "
                     "elements.")  # fmt: skip
        lines += ["", "| update | dtype | max rel. difference | fused µs | portable µs |"]
        lines.append("|---|---|---|---|---|")
        for r in kn["rows"]:
            lines.append(
                f"| {r['update']} | {r['dtype']} | {r['max_rel_difference']:.2g} | "
                f"{r['fused_us']:.1f} | {r['portable_us']:.1f} |"
            )
    else:
        lines.append(f"did not run: {kn}")
    return "\n".join(lines) + "\n"


def machine(device: str) -> str:
    if device.startswith("cuda"):
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            return f"{name}, CuPy {cupy.__version__}"
        except Exception as e:  # information only
            return f"(GPU name unavailable: {e})"
    return "the CPU (array-api-strict computes with NumPy)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or array-api-strict")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the CI rehearsal)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench", help="folder for GPU.md/json")
    ap.add_argument(
        "--parts",
        default="ops,train,step,kernels",
        help="comma-separated parts to run, of ops, train, step, kernels (default: all)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    unknown = [p for p in args.parts.split(",") if p not in ("ops", "train", "step", "kernels")]
    if unknown or not args.parts:
        ap.error(f"--parts: unknown part(s) {unknown}; choose from ops, train, step, kernels")
    if args.worker:
        worker(args.worker, args.device)
        return 0
    from graphgrad import _backend
    from graphgrad.errors import DeviceUnavailableError

    try:
        _backend.parse_device(args.device)
    except (DeviceUnavailableError, ValueError) as e:
        print(f"gpu_check: nothing run: {e}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not args.quick:
        try:
            import torch

            if not torch.cuda.is_available():
                raise ImportError("torch.cuda.is_available() is False")
        except ImportError as e:
            print(
                f"gpu_check: PyTorch with CUDA is needed for the step comparison ({e}); "
                f"the other parts still run",
                file=sys.stderr,
            )
            args.parts = args.parts.replace("step", "")
    results: dict[str, Any] = {"device": args.device, "quick": args.quick}
    results["machine"] = machine(args.device)
    started = time.perf_counter()
    ok = True
    parts = {"ops": check_ops, "train": check_training, "step": check_step,
             "kernels": check_kernels}  # fmt: skip
    for name, fn in parts.items():
        if name not in args.parts.split(","):
            results[name] = "skipped"
            continue
        t0 = time.perf_counter()
        print(f"gpu_check: ({name}) ...", file=sys.stderr, flush=True)
        try:
            results[name] = fn(args.device, args.quick)
        except Exception as e:
            ok = False
            first = str(e).splitlines()[0] if str(e) else ""
            results[name] = f"{type(e).__name__}: {first[:300]}"
            traceback.print_exc()
        print(f"gpu_check: ({name}) {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    results["seconds"] = time.perf_counter() - started
    ops, tr, kn = results["ops"], results["train"], results["kernels"]
    if isinstance(ops, dict) and ops.get("ok") != ops.get("cases"):
        ok = False
    if isinstance(tr, dict) and not tr.get("ok", True):
        ok = False
    if isinstance(kn, dict) and not all(r["ok"] for r in kn["rows"]):
        ok = False
    text = report(args.device, results, args.quick)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "GPU.md").write_text(text, encoding="utf-8")
    (args.out / "gpu.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"gpu_check: wrote {args.out / 'GPU.md'} and gpu.json; {results['seconds']:.0f} s",
          file=sys.stderr)  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
