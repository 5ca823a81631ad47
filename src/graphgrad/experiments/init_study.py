"""Why σ matters: signal strength through a deep net for σ too small, right and too large.

A deep MLP, every layer o_l = a(W_l o_{l-1}) with W_l ~ N(0, σ) and biases 0, receives S
standard-normal samples. Forward, we record std(o_l) per layer; backward, from the loss
L = (1/S) Σ_s r^s · o_L^s with a fixed random r, we record std(dL/do_l) per layer. With
σ = gain / sqrt(fan_in) (He for ReLU, LeCun for tanh) both stay level; a σ a factor too small
makes them shrink geometrically (vanishing), too large makes them grow (exploding) -- or, for
saturating activations, makes the forward signal saturate while the gradients vanish.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_text
from .._quote import excerpt
from ..nn.activations import get_activation, param_problem
from ..nn.init import init_std
from ..tensor import Tensor, linear

__all__ = ["MAX_WEIGHTS", "init_study", "verdict", "write_init_study"]

#: The most weights (depth x width^2) or inputs (samples x width) the study allocates.
MAX_WEIGHTS = 50_000_000


def verdict(first: float, last: float, threshold: float = 1e3) -> str:
    """'vanishing', 'exploding' or 'preserved' from the std at the first and last layer."""
    if not np.isfinite(last) or last > first * threshold:
        return "exploding"
    if last < first / threshold:
        return "vanishing"
    return "preserved"


def init_study(
    depth: int = 50,
    width: int = 256,
    activation: str = "relu",
    samples: int = 256,
    factor: float = 2.0,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Run the experiment for σ = right/factor, right, right·factor.

    Args:
        depth: number of layers (each width x width, followed by the activation).
        width: units per layer (= fan_in).
        activation: the activation a(·); "right" is gain(a)/sqrt(width).
        samples: S.
        factor: how far "too small" and "too large" are from right.
        rng: the generator for inputs, weights and r (default: seed 0).

    Raises:
        ValueError: sizes < 1, factor <= 1 or not finite, an unknown activation or one whose
            parameter is not finite or outside [0, 1e3] (as for training), or more than
            :data:`MAX_WEIGHTS` numbers to allocate.

    Returns:
        ``depth, width, activation, samples, runs`` (per setting ``label, sigma,
        activation_std, gradient_std``: lists of ``depth`` floats, layer 1 first) and
        ``table`` (markdown).
    """
    for name, v in (("depth", depth), ("width", width), ("samples", samples)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"init_study: {name} must be an integer >= 1, got {v!r}")
    if not (np.isfinite(factor) and factor > 1):
        raise ValueError(f"init_study: factor must be a finite number > 1, got {factor!r}")
    if depth * width * width > MAX_WEIGHTS or samples * width > MAX_WEIGHTS:
        raise ValueError(
            f"init_study: {depth} layers of {width}x{width} weights ({depth * width * width:,}) "
            f"and {samples} samples exceed the limit of {MAX_WEIGHTS:,} numbers"
        )
    act = get_activation(activation)
    why = param_problem(act)  # the rule of a training run's model.activation
    if why is not None:
        raise ValueError(f"init_study: activation {excerpt(activation)} {why}")
    gen = rng if rng is not None else np.random.default_rng(0)
    right = init_std((width, width), act.name, "auto", act.param)
    x = gen.standard_normal((samples, width))
    base = [gen.standard_normal((width, width)) for _ in range(depth)]  # one draw, 3 scales
    r = gen.standard_normal((samples, width))
    zero_bias = np.zeros(width)
    runs = []
    for label, sigma in (
        ("too small", right / factor),
        ("right", right),
        ("too large", right * factor),
    ):
        weights = [Tensor(w * sigma, requires_grad=True) for w in base]
        o = Tensor(x)
        outs = []
        for w in weights:
            o = act(linear(o, w, zero_bias)).retain_grad()
            outs.append(o)
        loss = (o * Tensor(r)).sum() * (1.0 / samples)
        loss.backward()
        runs.append(
            {
                "label": label,
                "sigma": float(sigma),
                "activation_std": [float(t.data.std()) for t in outs],
                "gradient_std": [float(t.grad.std()) for t in outs],
            }
        )
        del outs, weights, o, loss
    result: dict[str, Any] = {
        "depth": depth,
        "width": width,
        "activation": act.name if act.param is None else f"{act.name}:{act.param}",
        "samples": samples,
        "factor": factor,
        "right_sigma": float(right),
        "runs": runs,
    }
    result["table"] = _table(result)
    return result


def _table(result: dict[str, Any]) -> str:
    depth = result["depth"]
    lines = [
        f"| σ ({result['activation']}, width {result['width']}) | std o_1 | std o_{depth} "
        f"| forward | std dL/do_1 | std dL/do_{depth} | backward |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for run in result["runs"]:
        a, g = run["activation_std"], run["gradient_std"]
        # forward: compare the last layer with the first; backward: the first with the last
        lines.append(
            f"| {run['label']}: {run['sigma']:.4g} | {a[0]:.3g} | {a[-1]:.3g} | "
            f"{verdict(a[0], a[-1])} | {g[0]:.3g} | {g[-1]:.3g} | {verdict(g[-1], g[0])} |"
        )
    return "\n".join(lines)


def write_init_study(result: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``init_study_<activation>.png`` and ``.md`` into ``out_dir``; returns the paths."""
    from ..plots import plot_init_study

    out = Path(out_dir)
    stem = f"init_study_{result['activation'].replace(':', '_')}"
    png, md = out / f"{stem}.png", out / f"{stem}.md"
    plot_init_study(result, png)
    text = (
        f"# Initialisation study: {result['depth']} layers of {result['width']} "
        f"{result['activation']} units\n\n"
        f"S = {result['samples']} standard-normal samples; weights N(0, σ), biases 0; "
        f"right σ = gain/sqrt(fan_in) = {result['right_sigma']:.4g}; too small/large = "
        f"right ÷/× {result['factor']:g}. Command: `graphgrad init-study --depth "
        f"{result['depth']} --width {result['width']} --activation {result['activation']} "
        f"--samples {result['samples']} --factor {result['factor']:g}`.\n\n"
        f"{result['table']}\n\n![{stem}]({stem}.png)\n"
    )
    atomic_write_text(md, text)
    return [png, md]
