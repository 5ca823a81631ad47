"""The same MLP, hyper-parameters, initial weights and batch order in graphgrad and PyTorch.

Trains 784-256-256-10 (ReLU, He init) on Fashion-MNIST with both libraries: PyTorch starts
from graphgrad's initial weights, sees the same mini-batches in the same order (the
DataLoader's default_rng([seed, epoch]) permutation) and gets the same optimiser and
per-step learning rate. Reports test accuracy per epoch and seconds per epoch for both.
Then saves graphgrad's trained weights as a checkpoint, loads model.safetensors into an
equivalent torch nn.Sequential (PyTorch's layout, weight (out, in)) and compares the logits
on the test set.

    python bench/train_vs_torch.py --epochs 15 --optimizer adam --lr 1e-3 --lr-schedule cosine

Writes docs/results/train_vs_torch.md and .json. Needs torch and safetensors.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from graphgrad import checkpoint as C
from graphgrad._atomic import atomic_write_text
from graphgrad.config import DataConfig, ModelConfig, OptimConfig
from graphgrad.data import DataLoader
from graphgrad.train import Trainer, build_model, build_optimizer, evaluate, load_data, lr_factor


def torch_sequential(sizes: list[int]) -> Any:
    import torch

    layers: list[Any] = []
    for k in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def train_torch(
    init: dict[str, np.ndarray], sizes: list[int], data: Any, args: argparse.Namespace
) -> tuple[Any, list[dict[str, float]]]:
    import torch

    net = torch_sequential(sizes)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in init.items()})
    if args.optimizer == "adam":
        opt: Any = torch.optim.Adam(net.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
    loader = DataLoader((data.x_train, data.y_train), args.batch_size, shuffle=True, seed=args.seed)
    total = args.epochs * len(loader)
    xt, yt = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    history, step = [], 0
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        net.train()
        t0 = time.perf_counter()
        for xb, yb in loader:
            logits = net(torch.from_numpy(xb))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(yb))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for group in opt.param_groups:
                group["lr"] = args.lr * lr_factor(args.lr_schedule, step, total)
            opt.step()
            step += 1
        seconds = time.perf_counter() - t0
        net.eval()
        with torch.no_grad():
            acc = float((net(xt).argmax(1) == yt).float().mean())
        history.append({"epoch": epoch + 1, "test_accuracy": acc, "seconds": seconds})
        print(f"torch      epoch {epoch + 1}: test {100 * acc:.2f}%  {seconds:.2f} s", flush=True)
    return net, history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default="cosine")
    ap.add_argument("--hidden", default="256,256")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-subset", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads for both (torch's pool and NumPy's BLAS)",
    )
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    args = ap.parse_args()

    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    try:  # the same limit for graphgrad's BLAS, or the comparison is not like for like
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    except ImportError:
        print("threadpoolctl is not installed: NumPy's BLAS threads are not limited")
    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    data = load_data(
        DataConfig(dataset="fashion-mnist", seed=args.seed, train_subset=args.train_subset)
    )
    model = build_model(
        ModelConfig(hidden=hidden, activation="relu", init="he", seed=args.seed), 784, 10
    )
    init = model.state_dict()
    sizes = list(model.sizes)

    # ---- graphgrad
    opt = build_optimizer(
        OptimConfig(name=args.optimizer, lr=args.lr, momentum=args.momentum), model.parameters()
    )
    gg_hist: list[dict[str, float]] = []

    def record(trainer: Trainer, rec: dict[str, Any]) -> None:
        gg_hist.append(
            {
                "epoch": rec["epoch"],
                "test_accuracy": rec["eval_accuracy"],
                "seconds": rec["seconds"],
            }
        )
        print(f"graphgrad  epoch {rec['epoch']}: test {100 * rec['eval_accuracy']:.2f}%  "
              f"{rec['seconds']:.2f} s", flush=True)  # fmt: skip

    trainer = Trainer(
        model, opt, batch_size=args.batch_size, data_seed=args.seed, progress=False,
        log=lambda _line: None, callbacks=[record], lr_schedule=args.lr_schedule,
    )  # fmt: skip
    trainer.fit(data.x_train, data.y_train, args.epochs, (data.x_test, data.y_test), "test")

    # ---- PyTorch, same start, same batches, same steps
    _net, torch_hist = train_torch(init, sizes, data, args)

    # ---- graphgrad's checkpoint -> torch nn.Sequential -> same logits?
    with tempfile.TemporaryDirectory() as tmp:
        path = C.save_checkpoint(Path(tmp) / "ck", model, opt, epoch=args.epochs)
        loaded = torch_sequential(sizes)
        loaded.load_state_dict(load_file(str(path / "model.safetensors")))
    loaded.eval()
    with torch.no_grad():
        torch_logits = loaded(torch.from_numpy(data.x_test)).numpy()
    from graphgrad import no_grad

    with no_grad():
        gg_logits = model(data.x_test).data
    max_diff = float(np.max(np.abs(gg_logits - torch_logits)))

    gg_final = evaluate(model, data.x_test, data.y_test).accuracy
    torch_final = torch_hist[-1]["test_accuracy"]
    result = {
        "architecture": "-".join(map(str, sizes)) + " relu, He init",
        "optimizer": args.optimizer,
        "lr": args.lr,
        "momentum": args.momentum if args.optimizer == "sgd" else None,
        "lr_schedule": args.lr_schedule,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "train_samples": len(data.y_train),
        "threads": args.threads,
        "graphgrad": {"final_test_accuracy": gg_final, "history": gg_hist},
        "torch": {"final_test_accuracy": torch_final, "history": torch_hist},
        "accuracy_gap_points": 100 * abs(gg_final - torch_final),
        "mean_epoch_seconds": {
            "graphgrad": float(np.mean([h["seconds"] for h in gg_hist])),
            "torch": float(np.mean([h["seconds"] for h in torch_hist])),
        },
        "logits_max_abs_diff": max_diff,
        "versions": C.library_versions(),
    }
    lines = [
        "| epoch | graphgrad test acc. | PyTorch test acc. | graphgrad s/epoch | PyTorch s/epoch |",
        "|---:|---:|---:|---:|---:|",
    ]
    for g, t in zip(gg_hist, torch_hist, strict=True):
        lines.append(
            f"| {g['epoch']} | {100 * g['test_accuracy']:.2f}% | {100 * t['test_accuracy']:.2f}% "
            f"| {g['seconds']:.2f} | {t['seconds']:.2f} |"
        )
    table = "\n".join(lines)
    summary = (
        f"final test accuracy: graphgrad {100 * gg_final:.2f}%, PyTorch {100 * torch_final:.2f}% "
        f"(gap {result['accuracy_gap_points']:.2f} points); mean epoch: graphgrad "
        f"{result['mean_epoch_seconds']['graphgrad']:.2f} s, PyTorch "
        f"{result['mean_epoch_seconds']['torch']:.2f} s "
        f"({args.threads} thread{'s' if args.threads != 1 else ''} each); "
        f"graphgrad weights in torch nn.Sequential: max |logit difference| = {max_diff:.2e} "
        f"on {len(data.y_test):,} test images"
    )
    print(table)
    print(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "train_vs_torch.json", json.dumps(result, indent=1) + "\n")
    sched = f", {args.lr_schedule} schedule" if args.lr_schedule != "constant" else ""
    atomic_write_text(
        args.out / "train_vs_torch.md",
        "# graphgrad vs PyTorch: the same MLP trained both ways\n\n"
        f"{result['architecture']}, {args.optimizer} lr {args.lr:g}{sched}, batch "
        f"{args.batch_size}, {args.epochs} epochs on {len(data.y_train):,} Fashion-MNIST "
        "training images. PyTorch starts from graphgrad's initial weights and sees the same "
        "batches in the same order. Command: `python bench/train_vs_torch.py --epochs "
        f"{args.epochs} --optimizer {args.optimizer} --lr {args.lr:g} --lr-schedule "
        f"{args.lr_schedule} --batch-size {args.batch_size} --threads {args.threads}`.\n\n"
        f"{summary}.\n\n{table}\n",
    )


if __name__ == "__main__":
    main()
