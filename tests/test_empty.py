"""Tensors with a zero-length axis: the losses and reductions users hit with an empty batch
give what PyTorch gives (NaN or 0, and empty gradients), with no error and no warning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphgrad as gg

torch = pytest.importorskip("torch")

LABELS = np.zeros(0, dtype=np.int64)
SOFT = np.zeros((0, 3))

CASES: list[tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = [
    ("(x*x).sum()", lambda x: (x * x).sum(), lambda t: (t * t).sum()),
    ("x.mean()", lambda x: x.mean(), lambda t: t.mean()),
    ("x.mean(axis=0).sum()", lambda x: x.mean(axis=0).sum(), lambda t: t.mean(dim=0).sum()),
    ("x.sum(axis=1).sum()", lambda x: x.sum(axis=1).sum(), lambda t: t.sum(dim=1).sum()),
    (
        "mse_loss",
        lambda x: gg.mse_loss(x, np.zeros((0, 3), x.dtype)),
        lambda t: torch.nn.functional.mse_loss(t, torch.zeros(0, 3, dtype=t.dtype)),
    ),
    (
        "cross_entropy labels",
        lambda x: gg.cross_entropy(x, LABELS),
        lambda t: torch.nn.functional.cross_entropy(t, torch.from_numpy(LABELS)),
    ),
    (
        "cross_entropy probabilities",
        lambda x: gg.cross_entropy(x, SOFT),
        lambda t: torch.nn.functional.cross_entropy(t, torch.from_numpy(SOFT)),
    ),
    ("logsumexp", lambda x: gg.logsumexp(x), lambda t: torch.logsumexp(t.reshape(-1), 0)),
    ("softmax", lambda x: gg.softmax(x).sum(), lambda t: torch.softmax(t, -1).sum()),
    (
        "x @ w",
        lambda x: (x @ np.ones((3, 2), x.dtype)).sum(),
        lambda t: (t @ torch.ones(3, 2, dtype=t.dtype)).sum(),
    ),
]


@pytest.mark.parametrize(("text", "ours", "theirs"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch_matches_pytorch(text: str, ours: Callable, theirs: Callable, dtype) -> None:
    x = gg.tensor(np.zeros((0, 3), dtype=dtype), requires_grad=True)
    t = torch.zeros(0, 3, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    loss, ref = ours(x), theirs(t)
    loss.backward()
    ref.backward()
    np.testing.assert_array_equal(loss.data, ref.detach().numpy())  # NaN, 0 or -inf alike
    assert loss.dtype == dtype
    assert x.grad.shape == (0, 3) and x.grad.dtype == dtype
    assert tuple(t.grad.shape) == (0, 3)


def test_a_parameter_used_by_an_empty_batch_gets_zeros() -> None:
    w = gg.tensor(np.ones((3, 2)), requires_grad=True)
    b = gg.tensor(np.ones(2), requires_grad=True)
    out = gg.linear(gg.tensor(np.zeros((0, 3))), w.T, b)
    gg.cross_entropy(out, LABELS).backward()
    np.testing.assert_array_equal(w.grad, np.zeros((3, 2)))
    np.testing.assert_array_equal(b.grad, np.zeros(2))
