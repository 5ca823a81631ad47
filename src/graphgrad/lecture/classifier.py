"""The lecture's linear classifier with D = 2 and T = 2, softmax and cross-entropy attached,
decomposed into units (one :class:`~graphgrad.scalar.Scalar` per unit).

    h_td = w_td · x_d                   (4 products)
    o_t  = h_t1 + h_t2 + b_t            (the two scores)
    e_t  = exp(o_t)                     (softmax: exp, a sum, a division)
    z    = e1 + e2
    p_y  = e_y / z
    H    = -ln(p_y)                     (cross-entropy with the one-hot label y)

Every subexpression is one node, however many consumers it has: ``e_y`` feeds both the sum
``z`` and the division, ``z`` is computed once. The inputs x1, x2 are data (constants), the
parameters w11, w12, w21, w22, b1, b2 are the graph's inputs. From each parameter of the true
class's score there are 2 paths to H (through the numerator and through z), from each parameter
of the other score 1 (through z only): 3 · 2 + 3 · 1 = 9 paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..scalar import Scalar

__all__ = [
    "DEFAULTS",
    "DESCRIPTIONS",
    "MODELS",
    "PARAMETERS",
    "build_model",
    "softmax_classifier",
]

#: The values used when none are given: x = (0.5, -1), W = [[1, -0.5], [-1, 0.5]],
#: b = (0.1, -0.2), true class y = 1 (classes are numbered 1..T, as in the lecture).
DEFAULTS: dict[str, float] = {
    "x1": 0.5,
    "x2": -1.0,
    "w11": 1.0,
    "w12": -0.5,
    "w21": -1.0,
    "w22": 0.5,
    "b1": 0.1,
    "b2": -0.2,
    "y": 1.0,
}

#: The parameters θ (the inputs whose gradients are computed), in the lecture's order.
PARAMETERS = ("w11", "w12", "w21", "w22", "b1", "b2")


def softmax_classifier(
    values: Mapping[str, float] | None = None,
) -> tuple[Scalar, dict[str, Scalar]]:
    """Build H = -ln softmax(W x + b)_y as units.

    Args:
        values: any of ``x1, x2, w11, w12, w21, w22, b1, b2`` and ``y`` (1 or 2); the rest
            come from :data:`DEFAULTS`.

    Returns:
        ``(H, params)``: the loss node and ``{name: Scalar}`` for the six parameters.

    Raises:
        ValueError: an unknown name, or ``y`` not 1 or 2.
    """
    vals = dict(DEFAULTS)
    for k, v in (values or {}).items():
        if k not in DEFAULTS:
            raise ValueError(
                f"softmax-classifier: unknown name {k!r}; the model's names are "
                f"{', '.join(DEFAULTS)}"
            )
        vals[k] = float(v)
    if vals["y"] not in (1.0, 2.0):
        raise ValueError(f"softmax-classifier: the label y must be 1 or 2, got {vals['y']:g}")
    y = int(vals["y"])
    x = [Scalar(vals[f"x{d}"], name=f"x{d}", requires_grad=False) for d in (1, 2)]
    params = {n: Scalar(vals[n], name=n) for n in PARAMETERS}
    exps = []
    for t in (1, 2):
        h = []
        for d in (1, 2):
            u = params[f"w{t}{d}"] * x[d - 1]
            u.name = f"h{t}{d}"
            h.append(u)
        s = h[0] + h[1]
        s.name = f"s{t}"
        o = s + params[f"b{t}"]
        o.name = f"o{t}"
        e = o.exp()
        e.name = f"e{t}"
        exps.append(e)
    z = exps[0] + exps[1]
    z.name = "z"
    p = exps[y - 1] / z
    p.name = f"p{y}"
    ln = p.log()
    ln.name = "l"
    loss = -ln
    loss.name = "H"
    return loss, params


def build_model(name: str, values: Mapping[str, float] | None = None) -> tuple[Any, dict[str, Any]]:
    """A named model graph for ``graphgrad graph/paths --model NAME``: ``(output, inputs)``."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
    return builder(values)


#: ``--model`` names -> builders.
MODELS = {"softmax-classifier": softmax_classifier}

#: ``--model`` names -> the formula, for printing.
DESCRIPTIONS = {"softmax-classifier": "-ln softmax(W x + b)_y with D = 2, T = 2, as units"}
