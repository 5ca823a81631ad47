"""Edge cases of Module registration, load_state_dict validation and the initialisers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import nn
from graphgrad.nn import init as I


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------- replacing keeps position


def test_replacing_a_submodule_keeps_its_position_in_forward() -> None:
    m = nn.MLP(4, [4], 4, rng=rng(0))
    x = rng(1).standard_normal((3, 4)).astype(np.float32)
    setattr(m, "1", nn.Tanh())
    assert list(m._modules) == ["0", "1", "2"]
    w0, b0, w2, b2 = [p.data for p in m.parameters()]
    expected = np.tanh(x @ w0.T + b0) @ w2.T + b2
    np.testing.assert_allclose(m(x).data, expected, rtol=1e-5, atol=1e-6)


def test_replacing_a_parameter_or_buffer_keeps_its_position() -> None:
    lin = nn.MLP(3, [4], 2, rng=rng(0))
    names = [n for n, _ in lin.named_parameters()]
    first = lin._modules["0"]
    first.weight = gg.tensor(np.zeros((4, 3), np.float32), requires_grad=True)
    assert [n for n, _ in lin.named_parameters()] == names
    assert list(lin.state_dict()) == names

    class Buf(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("a", np.zeros(1))
            self.register_buffer("b", np.zeros(2))

    b = Buf()
    b.a = np.ones(1)
    assert list(b.state_dict()) == ["a", "b"]


# ------------------------------------------------------------- load_state_dict validation


def test_load_state_dict_uncastable_dtype_copies_nothing() -> None:
    m = nn.MLP(4, [3], 2, rng=rng(0))
    before = m.state_dict()
    s = nn.MLP(4, [3], 2, rng=rng(5)).state_dict()
    s["2.weight"] = s["2.weight"].astype(np.complex64)
    with pytest.raises(nn.StateDictError, match=r"load_state_dict.*2\.weight.*complex64.*float32"):
        m.load_state_dict(s)
    for n, arr in m.state_dict().items():
        np.testing.assert_array_equal(arr, before[n])


def test_load_state_dict_refuses_lists_and_torch_tensors_by_key() -> None:
    m = nn.MLP(4, [3], 2, rng=rng(0))
    before = m.state_dict()
    s = nn.MLP(4, [3], 2, rng=rng(5)).state_dict()
    s["0.bias"] = [1.0, 2.0, 3.0]  # type: ignore[assignment]
    with pytest.raises(nn.StateDictError, match=r"load_state_dict.*0\.bias: a list"):
        m.load_state_dict(s)
    torch = pytest.importorskip("torch")
    s["0.bias"] = torch.zeros(3, requires_grad=True)
    with pytest.raises(nn.StateDictError, match=r"load_state_dict.*0\.bias.*t\.detach\(\)"):
        m.load_state_dict(s)
    for n, arr in m.state_dict().items():
        np.testing.assert_array_equal(arr, before[n])


# ------------------------------------------------------------- initialisers


def test_fans_of_a_conv_weight_match_pytorch() -> None:
    assert I.fans((64, 32, 3, 3)) == (288, 576)
    assert I.fans((8, 5)) == (5, 8)
    assert I.fans((7,)) == (7, 7)
    torch = pytest.importorskip("torch")
    t = torch.empty(64, 32, 3, 3)
    assert I.fans((64, 32, 3, 3)) == torch.nn.init._calculate_fan_in_and_fan_out(t)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda s, g: I.he_normal(s, g), math.sqrt(2 / 288)),
        (lambda s, g: I.lecun_normal(s, g), 1 / math.sqrt(288)),
        (lambda s, g: I.xavier_normal(s, g), math.sqrt(2 / (288 + 576))),
    ],
)
def test_initialisers_on_4d_shapes_use_the_receptive_field(fn: object, expected: float) -> None:
    w = fn((64, 32, 3, 3), rng(0))  # type: ignore[operator]
    assert w.shape == (64, 32, 3, 3)
    assert abs(float(w.std()) - expected) / expected < 0.02


def test_zero_dimension_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"fans: shape .*zero dimension"):
        I.he_normal((0, 3), rng())
    with pytest.raises(ValueError, match="zero dimension"):
        I.init_std((4, 0))


def test_int_seed_is_accepted_and_bad_rng_named() -> None:
    np.testing.assert_array_equal(I.he_normal((3, 4), 0), I.he_normal((3, 4), rng(0)))
    with pytest.raises(TypeError, match="he_normal: rng must be"):
        I.he_normal((3, 4), "seed")  # type: ignore[arg-type]


def test_passing_a_tensor_instead_of_a_shape_says_so() -> None:
    layer: Any = nn.MLP(3, [], 2, rng=rng(0))._modules["0"]
    weight = layer.weight
    with pytest.raises(TypeError, match=r"he_normal: expected a shape.*Tensor.*w\.shape"):
        I.he_normal(weight, rng())
