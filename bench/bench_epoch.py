"""A Fashion-MNIST training epoch of the main job's model, graphgrad vs PyTorch, interleaved.

The main job's model and optimiser (examples/configs/fashion_mlp_adam.toml): MLP
784-256-256-10, ReLU, He init (seed 0), Adam lr 1e-3, batch 128, the 60,000 training images
(constant learning rate here: a schedule only rescales lr). graphgrad trains through its
``Trainer`` exactly as ``graphgrad train`` does; PyTorch starts from the same weights and
runs the same loop (loss value read, zero_grad, backward, step, accuracy counted) over the
same batches: both iterate graphgrad's ``DataLoader`` with the same seed and epoch, so the
data pipeline is the same. The two take turns, one epoch each; the median epoch time is
reported. No evaluation is timed.

Run: python bench/bench_epoch.py [--epochs 3] [--max-batches N] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchlib as B  # bench/ is on sys.path when a script here runs

from graphgrad.config import DataConfig, ModelConfig, OptimConfig
from graphgrad.data import DataLoader
from graphgrad.train import Trainer, build_model, build_optimizer, load_data

BATCH, LR, SEED = 128, 1e-3, 0
TARGET = "<= 0.85"
LOSS_RTOL = 0.02  # epoch-1 training losses of the two, same start and batches


def torch_epoch(net: Any, opt: Any, loader: DataLoader) -> tuple[float, float]:
    """One epoch of PyTorch over ``loader``: (seconds, mean training loss)."""
    import torch

    f = torch.nn.functional
    seen, correct, loss_sum = 0, 0, 0.0
    net.train()
    t0 = time.perf_counter()
    for xb, yb in loader:
        xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)
        logits = net(xt)
        loss = f.cross_entropy(logits, yt)
        value = float(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        n = len(yb)
        seen += n
        loss_sum += value * n
        correct += int((logits.detach().argmax(1) == yt).sum())
    return time.perf_counter() - t0, loss_sum / max(seen, 1)


def run(
    quick: bool = False, threads: int = 1, epochs: int | None = None, max_batches: int = 0
) -> dict[str, Any]:
    """Item 4 of the suite as a record (see run_all.py)."""
    epochs = epochs or (2 if quick else 3)
    max_batches = max_batches or (100 if quick else 0)
    title = "Fashion-MNIST epoch, main job's model (784-256-256-10, Adam 1e-3, batch 128)"
    try:
        data = load_data(DataConfig(dataset="fashion-mnist", seed=SEED))
    except Exception as e:  # DatasetNotFoundError and friends: report, don't fail the suite
        return {
            "item": "epoch",
            "title": title,
            "rows": [],
            "ratios": [],
            "checks": [],
            "notes": [f"skipped: Fashion-MNIST not available ({type(e).__name__}: {e})"],
        }
    x, y = data.x_train, data.y_train
    if max_batches and max_batches * BATCH < len(y):
        x, y = x[: max_batches * BATCH], y[: max_batches * BATCH]
    notes = [
        f"{len(y):,} training images ({-(-len(y) // BATCH)} batches) per epoch"
        + ("" if len(y) == len(data.y_train) else f" (a subset: --max-batches {max_batches})")
        + f"; {epochs} epochs each, taking turns; median epoch time."
    ]
    with B.threads_limited(threads):
        model = build_model(
            ModelConfig(hidden=(256, 256), activation="relu", init="he", seed=SEED), 784, 10
        )
        init = model.state_dict()
        opt = build_optimizer(OptimConfig(name="adam", lr=LR), model.parameters())
        trainer = Trainer(
            model, opt, batch_size=BATCH, data_seed=SEED, progress=False, log=lambda _line: None
        )
        peers: dict[str, Any] = {"graphgrad": None}
        try:
            import torch
            from train_vs_torch import torch_sequential

            net = torch_sequential(list(model.sizes))
            net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in init.items()})
            topt = torch.optim.Adam(net.parameters(), lr=LR)
            peers["pytorch"] = (net, topt)
        except ImportError:
            notes.append("PyTorch is not installed: graphgrad only.")
        seconds: dict[str, list[float]] = {k: [] for k in peers}
        losses: dict[str, list[float]] = {k: [] for k in peers}
        loader = DataLoader((x, y), BATCH, shuffle=True, seed=SEED)
        for epoch in range(epochs):
            order = list(peers) if epoch % 2 == 0 else list(peers)[::-1]
            for name in order:
                if name == "graphgrad":
                    rec = trainer.fit(x, y, epoch + 1)[-1]
                    seconds[name].append(rec["seconds"])
                    losses[name].append(rec["train_loss"])
                else:
                    loader.set_epoch(epoch)  # the batches graphgrad's Trainer sees in that epoch
                    net, topt = peers[name]
                    s, loss = torch_epoch(net, topt, loader)
                    seconds[name].append(s)
                    losses[name].append(loss)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    for k in peers:
        print(
            f"  {k:10s} {med[k]:7.3f} s/epoch (epochs: "
            f"{', '.join(f'{s:.2f}' for s in seconds[k])}; train loss "
            f"{', '.join(f'{v:.4f}' for v in losses[k])})"
        )
    checks = []
    ratios = []
    name = "784-256-256-10 b128, Adam" + (f", {len(y):,} images" if max_batches else "")
    if "pytorch" in peers:
        g0, t0 = losses["graphgrad"][0], losses["pytorch"][0]
        rel = abs(g0 - t0) / abs(t0)
        checks.append(
            {
                "name": "same epoch-1 training loss (same start, same batches)",
                "value": {"graphgrad": g0, "pytorch": t0, "relative_difference": rel},
                "passed": bool(rel < LOSS_RTOL),
            }
        )
        ratios.append(
            B.ratio(name, "graphgrad / PyTorch (epoch)", med["graphgrad"], med["pytorch"], TARGET)
        )
        print(f"  graphgrad / PyTorch: {med['graphgrad'] / med['pytorch']:.2f} (target {TARGET})")
    return {
        "item": "epoch",
        "title": title,
        "rows": [
            {
                "benchmark": name,
                "unit": "s/epoch",
                "median": med,
                "epochs": seconds,
                "train_loss": losses,
            }
        ],
        "ratios": ratios,
        "checks": checks,
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 epochs of 100 batches (CI)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per library (3)")
    ap.add_argument("--max-batches", type=int, default=0, help="a subset: N batches an epoch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write the record here")
    args = ap.parse_args(argv)
    rec = run(args.quick, args.threads, args.epochs, args.max_batches)
    if args.json:
        B.write_json(args.json, rec)
    return 0 if all(c["passed"] for c in rec["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
