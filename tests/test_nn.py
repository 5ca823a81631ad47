"""Modules, layers, activations, initialisation and metrics (graphgrad.nn)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import nn
from graphgrad.nn import init as I

ACTS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu:0.1", "elu:0.7"]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def weight(m: nn.Module, i: int) -> np.ndarray:
    """The weight array of layer ``i`` of a Sequential (asserting it is a Linear)."""
    layer = m[i] if isinstance(m, nn.Sequential) else m
    assert isinstance(layer, nn.Linear)
    return layer.weight.data


def bias(m: nn.Module, i: int) -> np.ndarray:
    layer = m[i] if isinstance(m, nn.Sequential) else m
    assert isinstance(layer, nn.Linear) and layer.bias is not None
    return layer.bias.data


# ------------------------------------------------------------------------ Module basics


def test_mlp_is_a_sequential_with_pytorch_names() -> None:
    m = nn.MLP(4, [5, 6], 3, rng=rng())
    names = [n for n, _ in m.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert [p.shape for p in m.parameters()] == [(5, 4), (5,), (6, 5), (6,), (3, 6), (3,)]
    assert isinstance(m[1], nn.ReLU) and isinstance(m[4], nn.Linear)
    assert m.num_parameters() == 5 * 4 + 5 + 6 * 5 + 6 + 3 * 6 + 3
    assert all(p.dtype == np.float32 for p in m.parameters())
    assert len(m) == 5 and m.sizes == (4, 5, 6, 3)


def test_linear_classifier_is_one_layer() -> None:
    m = nn.MLP(4, [], 3, rng=rng())
    assert [n for n, _ in m.named_parameters()] == ["0.weight", "0.bias"]


def test_nested_modules_and_registration() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4, rng=rng()), nn.Tanh())
            self.head = nn.Linear(4, 2, bias=False, rng=rng(1))
            self.scale = 2.0  # plain attributes are not parameters

        def forward(self, x: gg.Tensor) -> gg.Tensor:
            return self.head(self.body(x)) * self.scale

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["body.0.weight", "body.0.bias", "head.weight"]
    assert net(np.ones((5, 3), np.float32)).shape == (5, 2)
    net.head = nn.Linear(4, 2, rng=rng())  # replacing re-registers
    assert [n for n, _ in net.named_parameters()][-2:] == ["head.weight", "head.bias"]
    del net.head
    assert [n for n, _ in net.named_parameters()] == ["body.0.weight", "body.0.bias"]


def test_module_needs_super_init() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            self.w = 1

    with pytest.raises(AttributeError, match="super"):
        Bad()


def test_shared_parameter_listed_once() -> None:
    lin = nn.Linear(2, 2, rng=rng())
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]


def test_zero_grad_train_eval() -> None:
    m = nn.MLP(3, [4], 2, rng=rng())
    loss = gg.cross_entropy(m(np.ones((2, 3), np.float32)), np.array([0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    assert m.training and m[0].training
    m.eval()
    assert not m.training and not m[0].training and not m[1].training
    m.train()
    assert m[2].training


def test_repr_lists_children() -> None:
    text = repr(nn.MLP(3, [4], 2, activation="leaky_relu:0.2", rng=rng()))
    assert "(0): Linear(in_features=3, out_features=4, bias=True)" in text
    assert "LeakyReLU(slope=0.2)" in text


# ----------------------------------------------------------------------- state dicts


def test_state_dict_roundtrip_in_place() -> None:
    a, b = nn.MLP(3, [4], 2, rng=rng(0)), nn.MLP(3, [4], 2, rng=rng(1))
    before = [p.data for p in b.parameters()]
    sd = a.state_dict()
    sd["0.weight"][0, 0] = 123.0  # a copy: the model is untouched
    assert weight(a, 0)[0, 0] != 123.0
    b.load_state_dict(a.state_dict())
    for (n, p), q in zip(b.named_parameters(), before, strict=True):
        assert p.data is q, n  # loaded in place, so optimisers keep their references
        np.testing.assert_array_equal(p.data, a.state_dict()[n])


def test_load_state_dict_lists_every_problem_and_copies_nothing() -> None:
    m = nn.MLP(3, [4], 2, rng=rng())
    snapshot = m.state_dict()
    bad = nn.MLP(3, [4], 2, rng=rng(5)).state_dict()
    del bad["2.bias"]
    bad["extra"] = np.zeros(1)
    bad["0.weight"] = np.zeros((4, 5))
    bad["0.bias"] = np.ones(4)
    with pytest.raises(nn.StateDictError) as e:
        m.load_state_dict(bad)
    msg = str(e.value)
    assert "missing: 2.bias" in msg and "unexpected: extra" in msg
    assert "0.weight: expected (4, 3), got (4, 5)" in msg
    for n, arr in m.state_dict().items():
        np.testing.assert_array_equal(arr, snapshot[n])
    # non-strict ignores names but not shapes
    del bad["0.weight"]
    m.load_state_dict(bad, strict=False)
    np.testing.assert_array_equal(bias(m, 0), np.ones(4))


# ----------------------------------------------------------- gradients vs numerical


@pytest.mark.parametrize("activation", ACTS)
def test_mlp_gradients_match_central_differences(activation: str) -> None:
    """Backprop through a tiny float64 MLP agrees with central differences."""
    g = rng(3)
    model = nn.MLP(3, [4, 3], 2, activation=activation, rng=g, dtype=np.float64)
    x = g.standard_normal((5, 3))
    y = np.array([0, 1, 1, 0, 1])
    params = model.parameters()

    loss = gg.cross_entropy(model(x), y)
    loss.backward()
    analytic = [p.grad.copy() for p in params]
    originals = [p.data for p in params]

    def f(*ts: gg.Tensor) -> gg.Tensor:
        for p, t in zip(params, ts, strict=True):
            p.data = t.data
        return gg.cross_entropy(model(x), y)

    numeric = gg.numerical_grad(f, [o.copy() for o in originals], eps=1e-6)
    for p, o in zip(params, originals, strict=True):
        p.data = o
    for a, n in zip(analytic, numeric, strict=True):
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-8)


def test_linear_matches_formula_and_mse_gradient() -> None:
    g = rng(4)
    lin = nn.Linear(3, 2, rng=g, dtype=np.float64)
    assert lin.bias is not None
    lin.bias.data[:] = [0.5, -1.0]
    x = g.standard_normal((4, 3))
    out = lin(x)
    np.testing.assert_allclose(out.data, x @ lin.weight.data.T + lin.bias.data)
    target = g.standard_normal((4, 2))
    gg.mse_loss(out, target).backward()
    r = 2 * (out.data - target) / out.data.size
    np.testing.assert_allclose(lin.weight.grad, r.T @ x)
    np.testing.assert_allclose(lin.bias.grad, r.sum(0))


def test_linear_without_bias_and_bad_sizes() -> None:
    lin = nn.Linear(3, 2, bias=False, rng=rng())
    assert lin.bias is None and lin(np.ones((1, 3), np.float32)).shape == (1, 2)
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 2)
    with pytest.raises(gg.ShapeError):
        lin(np.ones((1, 4), np.float32))


def test_float32_end_to_end() -> None:
    m = nn.MLP(3, [4], 2, rng=rng())
    loss = gg.cross_entropy(m(np.ones((2, 3), np.float32)), np.array([0, 1]))
    assert loss.dtype == np.float32
    loss.backward()
    assert all(p.grad.dtype == np.float32 for p in m.parameters())


def test_flatten() -> None:
    assert nn.Flatten()(np.zeros((2, 28, 28), np.float32)).shape == (2, 784)


# ---------------------------------------------------------------------- activations


@pytest.mark.parametrize(
    ("spec", "fn"),
    [
        ("identity", lambda v: v),
        ("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
        ("tanh", np.tanh),
        ("relu", lambda v: np.maximum(v, 0)),
        ("leaky_relu:0.2", lambda v: np.where(v > 0, v, 0.2 * v)),
        ("elu:0.5", lambda v: np.where(v > 0, v, 0.5 * (np.exp(v) - 1))),
    ],
)
def test_activation_modules(spec: str, fn: object) -> None:
    v = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(nn.get_activation(spec)(v).data, fn(v), rtol=1e-12)  # type: ignore[operator]


def test_activation_functions_exist() -> None:
    F = nn.functional
    v = np.array([-1.0, 2.0])
    np.testing.assert_array_equal(F.relu(v).data, [0, 2])
    np.testing.assert_array_equal(F.identity(v).data, v)
    np.testing.assert_allclose(F.leaky_relu(v, 0.5).data, [-0.5, 2])


def test_get_activation_errors() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        nn.get_activation("swish")
    with pytest.raises(ValueError, match="takes no parameter"):
        nn.get_activation("relu:2")
    with pytest.raises(ValueError, match="must be a number"):
        nn.get_activation("elu:x")
    act = nn.ELU(2.0)
    assert nn.get_activation(act) is act


# --------------------------------------------------------------------- initialisation


def test_gains_written_down() -> None:
    assert I.gain("relu") == math.sqrt(2)
    assert I.gain("tanh") == I.gain("sigmoid") == I.gain("identity") == 1.0
    assert I.gain("leaky_relu", 0.1) == pytest.approx(math.sqrt(2 / 1.01))
    with pytest.raises(ValueError, match="unknown activation"):
        I.gain("softsign")


def test_init_std_schemes() -> None:
    shape = (100, 400)
    assert I.init_std(shape, "relu") == pytest.approx(math.sqrt(2 / 400))
    assert I.init_std(shape, "tanh") == pytest.approx(1 / 20)
    assert I.init_std(shape, "tanh", "he") == pytest.approx(math.sqrt(2 / 400))
    assert I.init_std(shape, "relu", "lecun") == pytest.approx(1 / 20)
    assert I.init_std(shape, "tanh", "xavier") == pytest.approx(math.sqrt(2 / 500))
    with pytest.raises(ValueError, match="unknown scheme"):
        I.init_std(shape, "relu", "orthogonal")


def test_initialisers_sample_the_right_sigma() -> None:
    g = rng(7)
    w = I.he_normal((512, 256), g)
    assert w.dtype == np.float32 and w.shape == (512, 256)
    assert float(w.std()) == pytest.approx(math.sqrt(2 / 256), rel=0.02)
    assert float(I.lecun_normal((512, 256), g).std()) == pytest.approx(1 / 16, rel=0.02)
    assert float(I.xavier_normal((256, 256), g).std()) == pytest.approx(1 / 16, rel=0.02)
    assert float(I.normal((300, 300), g, 0.3, np.float64).std()) == pytest.approx(0.3, rel=0.02)
    assert not I.zeros((3, 2)).any()
    with pytest.raises(TypeError, match="float32 or float64"):
        I.normal((2,), g, 1.0, np.int32)


def test_mlp_init_is_reproducible_and_biases_zero() -> None:
    a = nn.MLP(20, [30], 5, rng=rng(11))
    b = nn.MLP(20, [30], 5, rng=rng(11))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)
    assert not bias(a, 0).any() and not bias(a, 2).any()
    c = nn.MLP(20, [30], 5, rng=rng(12))
    assert not np.array_equal(weight(a, 0), weight(c, 0))


def test_mlp_init_choices() -> None:
    m = nn.MLP(1000, [1000], 10, activation="tanh", init="normal", std=0.5, rng=rng())
    assert float(weight(m, 0).std()) == pytest.approx(0.5, rel=0.02)
    assert float(weight(m, 2).std()) == pytest.approx(0.5, rel=0.05)
    m = nn.MLP(1000, [1000], 10, rng=rng())  # auto: He for the hidden layer, LeCun at the output
    assert float(weight(m, 0).std()) == pytest.approx(math.sqrt(2 / 1000), rel=0.02)
    assert float(weight(m, 2).std()) == pytest.approx(math.sqrt(1 / 1000), rel=0.05)
    with pytest.raises(ValueError, match="needs std"):
        nn.MLP(2, [2], 2, init="normal")
    with pytest.raises(ValueError, match="unknown init"):
        nn.MLP(2, [2], 2, init="uniform")


# -------------------------------------------------------------------------- metrics


def test_accuracy_and_confusion_matrix() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 2])
    assert gg.accuracy(logits, labels) == 0.5
    assert gg.accuracy(gg.Tensor(logits), gg.Tensor(labels)) == 0.5
    cm = nn.confusion_matrix(logits.argmax(1), labels, 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    assert cm.sum() == 4
    assert gg.accuracy(np.zeros((0, 3)), np.zeros(0, np.int64)) == 0.0
    with pytest.raises(ValueError, match=r"\(S, T\)"):
        gg.accuracy(logits, labels[:2])
    with pytest.raises(TypeError, match="integers"):
        gg.accuracy(logits, labels.astype(float))


# ------------------------------------------------------------------- against PyTorch


def test_same_logits_as_torch_sequential() -> None:
    torch = pytest.importorskip("torch")
    m = nn.MLP(12, [16, 8], 4, activation="tanh", rng=rng(2))
    t = torch.nn.Sequential(
        torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
        torch.nn.Linear(8, 4),
    )  # fmt: skip
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    x = rng(3).standard_normal((7, 12)).astype(np.float32)
    with torch.no_grad():
        expected = t(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m(x).data, expected, atol=1e-5)
