"""Raw pixels into MLPs: a linear classifier, a shallow and a deep MLP on flattened images.

The lecture's point: squeezing an image into a vector x (784 values for Fashion-MNIST, 3072
for CIFAR-10) and feeding it to an MLP works on easy data and poorly on natural images;
depth does not fix it. Every model here gets the same training (Adam, cosine schedule,
batch 128, He init, seeds fixed) and is scored on the test set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ..config import DataConfig, ModelConfig, OptimConfig
from ..train import Trainer, build_model, build_optimizer, evaluate, load_data

__all__ = ["MODELS", "raw_pixels", "table"]

#: name -> hidden sizes: a linear classifier, one hidden layer, five hidden layers.
MODELS: dict[str, tuple[int, ...]] = {
    "linear": (),
    "shallow MLP (1 x 256)": (256,),
    "deep MLP (5 x 256)": (256, 256, 256, 256, 256),
}


def raw_pixels(
    datasets: Sequence[str] = ("fashion-mnist", "cifar10"),
    models: dict[str, tuple[int, ...]] | None = None,
    epochs: int = 15,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    root: str = "",
    train_subset: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every model on every data set whose files are present.

    Returns:
        One dict per (dataset, model): ``dataset, model, hidden, parameters,
        test_accuracy, train_accuracy, epochs, seconds``; a data set whose files are
        missing gives one row with ``missing`` set to the reason.
    """
    from ..data import DatasetNotFoundError

    say = log if log is not None else (lambda _line: None)
    rows: list[dict[str, Any]] = []
    for name in datasets:
        try:
            data = load_data(
                DataConfig(dataset=name, root=root, seed=seed, train_subset=train_subset)
            )
        except DatasetNotFoundError as e:
            say(f"{name}: files not present, skipped")
            rows.append({"dataset": name, "missing": str(e).splitlines()[0]})
            continue
        for label, hidden in (models or MODELS).items():
            kind = "linear" if not hidden else "mlp"
            model = build_model(
                ModelConfig(kind=kind, hidden=hidden, activation="relu", init="he", seed=seed),
                data.num_features,
                data.num_classes,
            )
            opt = build_optimizer(OptimConfig(name="adam", lr=lr), model.parameters())
            trainer = Trainer(
                model, opt, batch_size=batch_size, data_seed=seed, progress=False,
                log=say, lr_schedule="cosine",
            )  # fmt: skip
            t0 = time.perf_counter()
            trainer.fit(data.x_train, data.y_train, epochs)
            seconds = time.perf_counter() - t0
            test = evaluate(model, data.x_test, data.y_test)
            rows.append(
                {
                    "dataset": name,
                    "model": label,
                    "hidden": list(hidden),
                    "parameters": model.num_parameters(),
                    "test_accuracy": test.accuracy,
                    "train_accuracy": trainer.history[-1]["train_accuracy"],
                    "epochs": epochs,
                    "seconds": seconds,
                }
            )
            say(f"{name} / {label}: test accuracy {100 * test.accuracy:.2f}%")
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per (data set, model)."""
    lines = [
        "| data set | model | parameters | train acc. | test acc. | time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "missing" in r:
            lines.append(f"| {r['dataset']} | (files not present) | | | | |")
            continue
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['parameters']:,} | "
            f"{100 * r['train_accuracy']:.2f}% | **{100 * r['test_accuracy']:.2f}%** | "
            f"{r['seconds']:.0f} s |"
        )
    return "\n".join(lines)
