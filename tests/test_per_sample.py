"""``gg.per_sample_grads``: S per-sample gradients in one pass, against S backward passes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import nn


def loop_grads(model: nn.Module, loss_fn: Any, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The reference: one forward and backward pass per sample, a batch of one each."""
    names = [n for n, _ in model.named_parameters()]
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for s in range(len(x)):
        model.zero_grad()
        loss_fn(model(x[s : s + 1]), y[s : s + 1]).backward()
        for n, p in model.named_parameters():
            assert p.grad is not None
            out[n].append(np.array(p.grad))
    model.zero_grad()
    return {n: np.stack(v) for n, v in out.items()}


def mlp(activation: str, rng: np.random.Generator, sizes: tuple[int, ...] = (5, 7, 6, 3)) -> Any:
    return nn.MLP(sizes[0], list(sizes[1:-1]), sizes[-1], activation, rng=rng, dtype=np.float64)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu:0.1", "elu"])
def test_cross_entropy_mlp_matches_a_loop_of_backward_passes(
    activation: str, rng: np.random.Generator
) -> None:
    model = mlp(activation, rng)
    x = rng.normal(size=(9, 5))
    y = rng.integers(0, 3, size=9)
    got = gg.per_sample_grads(model, gg.cross_entropy, x, y)
    want = loop_grads(model, gg.cross_entropy, x, y)
    assert list(got) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    for name, p in model.named_parameters():
        assert got[name].shape == (9, *p.shape)
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14, err_msg=name)
        assert p.grad is None  # the parameters' .grad are left alone


def test_mean_of_per_sample_grads_is_the_batched_gradient(rng: np.random.Generator) -> None:
    model = mlp("relu", rng)
    x, y = rng.normal(size=(16, 5)), rng.integers(0, 3, size=16)
    got = gg.per_sample_grads(model, gg.cross_entropy, x, y)
    gg.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(got[name].mean(axis=0), p.grad, rtol=1e-12, atol=1e-15)


def test_mse_and_a_sum_loss(rng: np.random.Generator) -> None:
    model = mlp("tanh", rng, (4, 8, 2))
    x, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
    want = loop_grads(model, gg.mse_loss, x, t)
    got = gg.per_sample_grads(model, gg.mse_loss, x, t)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14)

    def summed(o: gg.Tensor, target: np.ndarray) -> gg.Tensor:
        d = o - target
        return gg.sum(d * d)

    got_sum = gg.per_sample_grads(model, summed, x, t, reduction="sum")
    want_sum = loop_grads(model, summed, x, t)
    for name in want:
        np.testing.assert_allclose(got_sum[name], want_sum[name], rtol=1e-12, atol=1e-14)


def test_a_custom_module_with_a_shared_layer_and_3d_inputs(rng: np.random.Generator) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4, rng=rng, dtype=np.float64)
            self.head = nn.Sequential(nn.Tanh(), nn.Linear(4, 3, bias=False, rng=rng,
                                                           dtype=np.float64))  # fmt: skip

        def forward(self, x: Any) -> gg.Tensor:
            h = self.a(x)  # (S, P, 4): a layer applied at P positions of each sample
            h = self.a(gg.relu(h)) + h  # the same layer twice: its weights are shared
            return self.head(gg.mean(h, axis=1))

    model = Net()
    x, y = rng.normal(size=(5, 3, 4)), rng.integers(0, 3, size=5)
    got = gg.per_sample_grads(model, gg.cross_entropy, x, y)
    want = loop_grads(model, gg.cross_entropy, x, y)
    assert set(got) == {"a.weight", "a.bias", "head.1.weight"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-11, atol=1e-14, err_msg=name)


def test_a_layer_that_does_not_reach_the_loss_gets_zeros(rng: np.random.Generator) -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(3, 2, rng=rng, dtype=np.float64)
            self.unused = nn.Linear(3, 2, rng=rng, dtype=np.float64)

        def forward(self, x: Any) -> gg.Tensor:
            self.unused(x)
            return self.used(x)

    x, y = rng.normal(size=(4, 3)), rng.integers(0, 2, size=4)
    got = gg.per_sample_grads(Two(), gg.cross_entropy, x, y)
    assert np.all(got["unused.weight"] == 0) and got["unused.weight"].shape == (4, 2, 3)
    assert np.any(got["used.weight"] != 0)


def test_float32_models_give_float32_grads(rng: np.random.Generator) -> None:
    model = nn.MLP(5, [8], 3, rng=rng)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    got = gg.per_sample_grads(model, gg.cross_entropy, x, np.array([0, 1, 2, 0]))
    assert all(g.dtype == np.float32 for g in got.values())


def test_bad_input_is_named(rng: np.random.Generator) -> None:
    class WithScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2, rng=rng)
            self.scale = gg.tensor(np.ones(2, np.float32), requires_grad=True)

        def forward(self, x: Any) -> gg.Tensor:
            return self.lin(x) * self.scale

    x, y = np.ones((3, 2), np.float32), np.array([0, 1, 0])
    with pytest.raises(ValueError, match="scale of WithScale do not belong to a Linear layer"):
        gg.per_sample_grads(WithScale(), gg.cross_entropy, x, y)
    model = nn.MLP(2, [], 2, rng=rng)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        gg.per_sample_grads(model, gg.cross_entropy, x, y, reduction="max")
    with pytest.raises(ValueError, match="batch is empty"):
        gg.per_sample_grads(model, gg.cross_entropy, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"must be batched"):
        gg.per_sample_grads(model, lambda o, t: gg.sum(o), x[0], y[0])
    assert model(x).shape == (3, 2)  # the layers' forward is restored afterwards
    assert "forward" not in model[0].__dict__


class _Tied(nn.Module):
    """A layer whose weight is also used directly (tied), outside the layer's own call."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.enc = nn.Linear(5, 3, rng=rng, dtype=np.float64)

    def forward(self, x: Any) -> gg.Tensor:
        h = self.enc(x)  # (S, 3)
        return h + (gg.tanh(h) @ self.enc.weight) @ self.enc.weight.T


def test_a_weight_used_outside_its_layer_is_refused_naming_it(rng: np.random.Generator) -> None:
    """Its per-sample gradients would miss the part from the other use: an error, not a
    silently wrong result (tied weights; a penalty on the weight in the loss)."""
    x, y = rng.normal(size=(6, 5)), rng.integers(0, 3, size=6)
    tied = _Tied(rng)
    with pytest.raises(ValueError, match=r"parameter enc\.weight of _Tied is used outside its "
                                         r"Linear layer's call"):  # fmt: skip
        gg.per_sample_grads(tied, gg.cross_entropy, x, y)
    assert all(p.grad is None for p in tied.parameters())
    model = mlp("tanh", rng)
    w0 = model[0].weight

    def penalised(o: gg.Tensor, t: np.ndarray) -> gg.Tensor:
        return gg.cross_entropy(o, t) + 0.1 * gg.sum(w0 * w0)

    with pytest.raises(ValueError, match=r"parameter 0\.weight of MLP is used outside"):
        gg.per_sample_grads(model, penalised, x, y)
    assert all(p.grad is None for p in model.parameters())


def test_a_model_on_another_device(rng: np.random.Generator) -> None:
    """array-api-strict: the per-sample gradients are computed there, and equal the cpu
    device's (2-D and 3-D inputs)."""
    pytest.importorskip("array_api_strict")
    from graphgrad import _backend

    for x, y, loss in (
        (rng.normal(size=(6, 5)), rng.integers(0, 3, size=6), gg.cross_entropy),
        (rng.normal(size=(6, 2, 5)), rng.normal(size=(6, 2, 3)), gg.mse_loss),
    ):
        model = mlp("tanh", np.random.default_rng(1), (5, 4, 3))
        want = gg.per_sample_grads(model, loss, x, y)
        model.to("array-api-strict")
        dev = model.device
        got = gg.per_sample_grads(model, loss, _backend.asarray(x, dev), _backend.asarray(y, dev))
        assert list(got) == list(want)
        for name in want:
            assert _backend.device_of(got[name]) == dev
            np.testing.assert_allclose(_backend.to_numpy(got[name]), want[name], rtol=1e-12,
                                       atol=1e-14, err_msg=name)  # fmt: skip
        assert all(p.grad is None for p in model.parameters())
