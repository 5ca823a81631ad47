"""The lecture's model topics: activation functions, a linear classifier's class templates,
universal approximation in 1-D and 2-D, and MLPs on raw pixels."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._context import Context, figure, save
from ._page import Topic

__all__ = ["activations", "linear_templates", "raw_pixels", "universal_1d", "universal_2d"]

#: name, activation spec, the registry op that implements it (None: a(v) = v).
ACTIVATIONS = [
    ("identity a(v) = v", "identity", None),
    ("sigmoid", "sigmoid", "sigmoid"),
    ("tanh", "tanh", "tanh"),
    ("ReLU", "relu", "relu"),
    ("leaky ReLU (slope 0.1)", "leaky_relu:0.1", "leaky_relu"),
    ("ELU (α = 1)", "elu:1.0", "elu"),
]


def _f(v: float) -> str:
    return f"{v:.6g}"


# ------------------------------------------------------------------------- activations


def activations(ctx: Context) -> Topic:
    """a(v) and a'(v), the derivative by backprop, on [-4, 4]; a'(0) measured at the kink."""
    from ..nn.activations import get_activation
    from ..ops import REGISTRY
    from ..tensor import Tensor

    v = np.linspace(-4.0, 4.0, 801)  # contains 0 exactly (index 400)
    assert v[400] == 0.0
    fig = figure(12, 6.4)
    axes = fig.subplots(2, 3).reshape(-1)
    rows = [
        "| activation | a(v) | a'(v) | convention at the kink (registry) | a'(0) measured "
        "| a'(−10⁻⁶) | a'(10⁻⁶) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    numbers: dict[str, Any] = {}
    for ax, (label, spec, opname) in zip(axes, ACTIVATIONS, strict=True):
        act = get_activation(spec)
        pts = np.concatenate([v, [-1e-6, 1e-6]])
        t = Tensor(pts, requires_grad=True)
        out = act(t)
        out.sum().backward()
        a, da = out.data[:-2], t.grad[:-2]
        left, right = float(t.grad[-2]), float(t.grad[-1])
        at0 = float(da[400])
        ax.plot(v, a, color="C0", lw=2, label="a(v)")
        ax.plot(v, da, "--", color="C3", lw=1.5, label="a'(v) by backprop")
        op = REGISTRY[opname] if opname else None
        kink = op.kinks if op is not None else ""
        if kink:
            ax.plot([0.0], [at0], "o", color="C3", ms=6)
            ax.annotate(
                f"a'(0) = {at0:g}",
                (0.0, at0),
                textcoords="offset points",
                xytext=(8, -14),
                fontsize=8,
                color="C3",
            )
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        formula = op.formula if op is not None else "v"
        deriv = op.derivatives[0] if op is not None else "1"
        rows.append(
            f"| {label} | {formula} | {deriv} | {kink or 'none (differentiable)'} | "
            f"{_f(at0)} | {_f(left)} | {_f(right)} |"
        )
        numbers[spec] = {
            "a_prime_at_0": at0,
            "a_prime_left": left,
            "a_prime_right": right,
            "kink": kink,
        }
    axes[0].legend(fontsize=8)
    figures = [save(ctx, fig, "activations.png")]
    return Topic(
        key="activations",
        title="Activation functions and their derivatives",
        claim="We can select a(·) freely: sigmoid was popular early on, tanh is better and "
        "sometimes used, ReLU max(0, v) is most popular now (use ReLU unless you have good "
        "reason not to); tweaks such as leaky ReLU and ELU exist. At a kink the derivative "
        "is not defined: the engine uses a declared convention, shown as a dot.",
        commands=["graphgrad ops"],
        figures=figures,
        tables=["\n".join(rows)],
        numbers=numbers,
        summary="a'(0): " + ", ".join(f"{s} {_f(n['a_prime_at_0'])}" for s, n in numbers.items()),
    )


# ------------------------------------------------------------------- linear templates


def _load(ctx: Context, name: str, train_subset: int) -> Any:
    from ..config import DataConfig
    from ..train import load_data

    return load_data(
        DataConfig(dataset=name, root=ctx.data_root, seed=ctx.seed, train_subset=train_subset)
    )


def _train(
    data: Any, hidden: tuple[int, ...], epochs: int, seed: int
) -> tuple[Any, float, float, float]:
    """Train with Adam 1e-3, cosine schedule, batch 128; returns (model, test accuracy,
    train accuracy, seconds)."""
    from ..config import ModelConfig, OptimConfig
    from ..train import Trainer, build_model, build_optimizer, evaluate

    kind = "linear" if not hidden else "mlp"
    model = build_model(
        ModelConfig(kind=kind, hidden=hidden, activation="relu", init="he", seed=seed),
        data.num_features,
        data.num_classes,
    )
    opt = build_optimizer(OptimConfig(name="adam", lr=1e-3), model.parameters())
    trainer = Trainer(
        model,
        opt,
        batch_size=128,
        data_seed=seed,
        progress=False,
        log=lambda _line: None,
        lr_schedule="cosine",
    )
    t0 = time.perf_counter()
    trainer.fit(data.x_train, data.y_train, epochs)
    seconds = time.perf_counter() - t0
    test = evaluate(model, data.x_test, data.y_test)
    return model, test.accuracy, trainer.history[-1]["train_accuracy"], seconds


def linear_templates(ctx: Context) -> Topic:
    """A linear classifier (T neurons with a(v) = v) on Fashion-MNIST; its weights as images."""
    from ..data import DatasetNotFoundError
    from ..plots import plot_first_layer

    subset, epochs = (6000, 2) if ctx.quick else (0, 5)
    topic = Topic(
        key="linear_templates",
        title="T neurons with a(v) = v are a linear model",
        claim="Neurons compute o = a(w·x + b), so T neurons form a linear model with T "
        "outputs: set a(v) = v such that o_t = w_t·x + b_t. Each w_t, shown as a 28x28 image "
        "(red positive, blue negative), is a template of its class.",
        related=[  # 15 epochs, LeCun's init: not the 5 epochs measured here
            "graphgrad train --config examples/configs/fashion_linear.toml --out runs/linear"
        ],
    )
    try:
        data = _load(ctx, "fashion-mnist", subset)
    except DatasetNotFoundError as e:
        topic.notes.append(f"Skipped: {str(e).splitlines()[0]}")
        return topic
    model, acc, train_acc, seconds = _train(data, (), epochs, ctx.seed)
    layer = model.linear_layers()[0]
    plot_first_layer(
        layer.weight.data,
        ctx.out / "linear_templates.png",
        (28, 28),
        max_units=10,
        labels=list(data.classes),
        title="w_t of o_t = w_t·x + b_t, Fashion-MNIST",
    )
    topic.figures.append("linear_templates.png")
    n = len(data.y_train)
    topic.tables.append(
        "\n".join(
            [
                "| model | training images | epochs | parameters | train acc. | test acc. |",
                "|---|---:|---:|---:|---:|---:|",
                f"| linear 784-10 (a(v) = v) | {n:,} | {epochs} | {model.num_parameters():,} | "
                f"{100 * train_acc:.2f}% | **{100 * acc:.2f}%** |",
            ]
        )
    )
    topic.numbers = {
        "train_images": n,
        "epochs": epochs,
        "test_accuracy": acc,
        "train_accuracy": train_acc,
        "seconds": seconds,
    }
    topic.summary = f"test accuracy {100 * acc:.2f}% ({n:,} images, {epochs} epochs)"
    return topic


# ------------------------------------------------------------ universal approximation


def universal_1d(ctx: Context) -> Topic:
    """Fits of 1-H-1 ReLU nets for H = 1..32; kinks counted from the weights and on a grid."""
    from ..experiments.universal import table, universal_approximation
    from ..plots import plot_universal_approximation

    hidden = (1, 2, 4, 8, 16, 32) if ctx.quick else tuple(range(1, 33))
    steps = 400 if ctx.quick else 4000
    fits = universal_approximation(hidden=hidden, steps=steps, rng=np.random.default_rng(ctx.seed))
    shown = [f for f in fits if f["hidden"] in (1, 2, 4, 8, 16, 32)]
    plot_universal_approximation(shown, ctx.out / "universal_1d.png")
    fig = figure(5.5, 3.8)
    ax = fig.subplots()
    hs = [f["hidden"] for f in fits]
    ax.plot(hs, hs, "--", color="0.5", label="H (the bound)")
    ax.plot(hs, [f["num_kinks"] for f in fits], "o", color="C0", label="kinks from the weights")
    ax.plot(hs, [f["grid_kinks"] for f in fits], "x", color="C3", label="slope changes on a grid")
    ax.set_xlabel("hidden ReLU units H")
    ax.set_ylabel("kinks in (−π, π)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax2 = ax.twinx()
    ax2.semilogy(hs, [f["rmse"] for f in fits], "-", color="C2", alpha=0.6)
    ax2.set_ylabel("RMSE of the fit", color="C2")
    figures = ["universal_1d.png", save(ctx, fig, "universal_1d_kinks.png")]
    rows = [
        {
            "hidden": f["hidden"],
            "kinks": f["num_kinks"],
            "grid_kinks": f["grid_kinks"],
            "rmse": f["rmse"],
        }
        for f in fits
    ]
    ok = all(r["kinks"] <= r["hidden"] and r["grid_kinks"] <= r["hidden"] for r in rows)
    return Topic(
        key="universal_1d",
        title="D = 1, a = ReLU: piecewise linear with H kinks",
        claim="Assuming D = 1 and a(v) = ReLU, the model is T piecewise linear functions with "
        "H kinks (at most: unit h bends the function at −b_h/w_h and nowhere else). MLPs can "
        "approximate any function to any degree.",
        commands=[
            f"python examples/universal_approximation.py --hidden "
            f"{','.join(map(str, hidden))} --steps {steps} --out runs/universal"
        ],
        figures=figures,
        tables=[table(fits)],
        notes=[
            f"Target sin(2x) + 0.3x on [−π, π], 200 samples, full-batch Adam, {steps} steps "
            f"per H. Every fit has at most H kinks: {'yes' if ok else 'NO'}."
        ],
        numbers={"steps": steps, "fits": rows, "all_within_bound": ok},
        summary="kinks "
        + " ".join(f"H={r['hidden']}: {r['kinks']}" for r in rows)
        + f"; kinks <= H for all {len(rows)} fits: {ok}",
    )


def universal_2d(ctx: Context) -> Topic:
    """Decision regions of a linear model and of MLPs of growing width on spiral, moons, XOR."""
    from matplotlib.colors import ListedColormap

    from ..data import spiral, two_moons, xor
    from ..nn.layers import MLP
    from ..optim import Adam
    from ..tensor import Tensor, cross_entropy

    colors = ["#1f77b4", "#d62728", "#2ca02c"]  # class 0, 1, 2: regions light, points dark
    widths = (2, 8, 64)
    steps = 300 if ctx.quick else 3000
    sets = [
        ("spiral (3 classes)", spiral(300, 3, noise=0.1, rng=np.random.default_rng(ctx.seed))),
        ("two moons", two_moons(200, noise=0.1, rng=np.random.default_rng(ctx.seed))),
        ("XOR", xor(200, noise=0.1, rng=np.random.default_rng(ctx.seed))),
    ]
    models = [("linear", ())] + [(f"MLP, H = {h}", (h,)) for h in widths]
    fig = figure(3.0 * len(models), 3.0 * len(sets))
    axes = fig.subplots(len(sets), len(models))
    header = "| data set | " + " | ".join(m for m, _ in models) + " |"
    rows = [header, "|---|" + "---:|" * len(models)]
    acc: dict[str, dict[str, float]] = {}
    for i, (dname, (x, y)) in enumerate(sets):
        t = int(y.max()) + 1
        lo, hi = x.min(axis=0) - 0.3, x.max(axis=0) + 0.3
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        cells = []
        acc[dname] = {}
        for j, (mname, hidden) in enumerate(models):
            model = MLP(
                2, list(hidden), t, "relu", rng=np.random.default_rng(ctx.seed), dtype=np.float64
            )
            opt = Adam(model.parameters(), lr=0.02)
            xt = Tensor(x)
            for _ in range(steps):
                opt.zero_grad()
                cross_entropy(model(xt), y).backward()
                opt.step()
            pred = np.argmax(model(Tensor(x)).data, axis=1)
            a = float(np.mean(pred == y))
            acc[dname][mname] = a
            cells.append(f"{100 * a:.1f}%")
            region = np.argmax(model(Tensor(grid)).data, axis=1).reshape(gx.shape)
            ax = axes[i, j]
            ax.contourf(
                gx,
                gy,
                region,
                levels=np.arange(t + 1) - 0.5,
                cmap=ListedColormap(colors[:t]),
                alpha=0.25,
            )
            ax.scatter(x[:, 0], x[:, 1], c=[colors[k] for k in y], s=6)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{mname}: {100 * a:.0f}%", fontsize=9)
            if j == 0:
                ax.set_ylabel(dname)
        rows.append(f"| {dname} | " + " | ".join(cells) + " |")
    figures = [save(ctx, fig, "universal_2d.png")]
    return Topic(
        key="universal_2d",
        title="MLPs can represent any decision boundary",
        claim="MLPs are universal approximators (depending on H and a(·)): they can represent "
        "any decision boundary. A linear model cannot separate spiral arms, moons or XOR; "
        "one hidden layer of growing width H can.",
        # (mini-batch SGD in float32 for 20 epochs, not the full-batch Adam measured here)
        related=["graphgrad train --dataset spiral --model mlp --hidden 64 --out runs/spiral"],
        figures=figures,
        tables=["\n".join(rows)],
        notes=[f"Training accuracy; full-batch Adam (lr 0.02), {steps} steps, float64, ReLU."],
        numbers={"steps": steps, "train_accuracy": acc},
        summary="; ".join(
            f"{d}: linear {100 * v['linear']:.0f}% -> H={widths[-1]} "
            f"{100 * v[f'MLP, H = {widths[-1]}']:.0f}%"
            for d, v in acc.items()
        ),
    )


# ------------------------------------------------------------------------- raw pixels


def raw_pixels(ctx: Context) -> Topic:
    """The parameters of a first layer of 256 units on raw pixels, and linear/shallow/deep
    MLPs on Fashion-MNIST and (where downloaded) CIFAR-10."""
    from ..experiments.raw_pixels import MODELS, table
    from ..experiments.raw_pixels import raw_pixels as run
    from ..nn.layers import Linear

    h = 256
    shapes = [
        ("Fashion-MNIST 28x28", 28 * 28),
        ("CIFAR-10 32x32x3", 32 * 32 * 3),
        ("ImageNet-size 224x224x3", 224 * 224 * 3),
    ]
    prow = [
        f"| input | dim(x) = D | parameters of the first layer (D + 1)·{h} | float32 memory |",
        "|---|---:|---:|---:|",
    ]
    counts = {}
    for name, d in shapes:
        n = (d + 1) * h
        if d <= 4096:  # checked against a real layer where that is cheap
            layer = Linear(d, h, rng=np.random.default_rng(0), dtype=np.float32)
            n_layer = sum(p.data.size for p in layer.parameters())
            assert n_layer == n, (n_layer, n)
        counts[name] = n
        prow.append(f"| {name} | {d:,} | {n:,} | {4 * n / 2**20:,.1f} MiB |")
    subset, epochs = (3000, 1) if ctx.quick else (0, 5)
    rows = run(
        datasets=("fashion-mnist", "cifar10"),
        models=MODELS,
        epochs=epochs,
        seed=ctx.seed,
        root=ctx.data_root,
        train_subset=subset,
    )
    notes = []
    for r in rows:
        if "missing" in r:
            notes.append(
                f"{r['dataset']}: skipped, its files were not found. Run `graphgrad download "
                f"{r['dataset']}`, then this command again, to add its rows."
            )
    notes.append(
        f"Each model: Adam 1e-3, cosine schedule, batch 128, {epochs} epoch(s), "
        + (f"{subset:,} training images." if subset else "the whole training set.")
    )
    return Topic(
        key="raw_pixels",
        title="Raw pixels into MLPs",
        claim="What if we use the raw images instead? Squeeze 32x32x3 images to vectors x with "
        "dim(x) = 3072. Also does not work: shallow MLPs perform poorly, neither do deep MLPs "
        "(also poor scaling: the first layer's parameters grow with the number of pixels).",
        commands=[
            f"python examples/raw_pixels.py --epochs {epochs} --train-subset {subset} "
            "--out runs/raw_pixels"
        ],
        tables=["\n".join(prow), table(rows)],
        notes=notes,
        numbers={
            "first_layer_parameters": counts,
            "hidden": h,
            "epochs": epochs,
            "train_subset": subset,
            "results": rows,
        },
        summary="first layer: "
        + ", ".join(f"{k.split()[-1]} {v:,}" for k, v in counts.items())
        + "; "
        + ", ".join(
            f"{r['dataset']}/{r['model'].split(' (')[0]} {100 * r['test_accuracy']:.1f}%"
            for r in rows
            if "missing" not in r
        ),
    )
