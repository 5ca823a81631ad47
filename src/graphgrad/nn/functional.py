"""Functions for networks: the activations and losses as functions, plus ``accuracy`` and
``confusion_matrix``.

The activations and losses are the engine's ops (re-exported here so ``F.relu`` reads like
PyTorch); the metrics work on arrays and never record a graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import (
    Tensor,
    as_tensor,
    cross_entropy,
    elu,
    leaky_relu,
    linear,
    log_softmax,
    mse_loss,
    relu,
    sigmoid,
    softmax,
    tanh,
)

__all__ = [
    "accuracy",
    "confusion_matrix",
    "cross_entropy",
    "elu",
    "identity",
    "leaky_relu",
    "linear",
    "log_softmax",
    "mse_loss",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
]


def identity(x: Any) -> Tensor:
    """a(v) = v."""
    return as_tensor(x)


def _labels(labels: Any) -> np.ndarray:
    lab = labels.data if isinstance(labels, Tensor) else np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got {lab.dtype}")
    return lab


def accuracy(logits: Any, labels: Any) -> float:
    """The fraction of samples whose largest logit is at the true class.

    Args:
        logits: (S, T) scores (a Tensor or an array).
        labels: (S,) integer classes.

    Returns:
        A float in [0, 1] (0.0 for S = 0).
    """
    x = logits.data if isinstance(logits, Tensor) else np.asarray(logits)
    lab = _labels(labels)
    if x.ndim != 2 or lab.shape != (x.shape[0],):
        raise ValueError(
            f"accuracy: logits must be (S, T) and labels (S,), got {x.shape} and {lab.shape}"
        )
    if x.shape[0] == 0:
        return 0.0
    return float(np.mean(np.argmax(x, axis=1) == lab))


def confusion_matrix(predictions: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Counts C[true, predicted] of shape (T, T), int64.

    Args:
        predictions: (S,) predicted classes.
        labels: (S,) true classes.
        num_classes: T.
    """
    pred = _labels(predictions)
    lab = _labels(labels)
    if pred.shape != lab.shape or pred.ndim != 1:
        raise ValueError(
            f"confusion_matrix: predictions and labels must both be (S,), got {pred.shape} "
            f"and {lab.shape}"
        )
    flat = lab.astype(np.int64) * num_classes + pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
