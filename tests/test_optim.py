"""Optimisers: updates against hand-computed formulas, against torch.optim, and state dicts."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

import graphgrad as gg
from graphgrad import _fused, optim

needs_kernels = pytest.mark.skipif(not _fused.COMPILED, reason="extension not built")


def param(values: list[float] | np.ndarray, dtype: type = np.float64) -> gg.Tensor:
    return gg.Tensor(np.array(values, dtype=dtype), requires_grad=True)


GRADS = [np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.3, -0.2]), np.array([-1.0, 0.0, 0.4])]
START = [1.0, -2.0, 0.5]


def run(opt_factory: Callable[[list[gg.Tensor]], optim.Optimizer]) -> np.ndarray:
    p = param(START)
    opt = opt_factory([p])
    for g in GRADS:
        p.grad = g.copy()
        opt.step()
    return p.data


def test_plain_sgd() -> None:
    expected = np.array(START) - 0.1 * sum(GRADS)
    np.testing.assert_allclose(run(lambda ps: optim.SGD(ps, lr=0.1)), expected, rtol=1e-15)


def test_sgd_momentum_weight_decay_by_hand() -> None:
    lr, mu, wd = 0.1, 0.9, 0.01
    w = np.array(START)
    v = None
    for g in GRADS:
        g = g + wd * w
        v = g.copy() if v is None else mu * v + g
        w = w - lr * v
    got = run(lambda ps: optim.SGD(ps, lr=lr, momentum=mu, weight_decay=wd))
    np.testing.assert_allclose(got, w, rtol=1e-14)


def test_sgd_nesterov_by_hand() -> None:
    lr, mu = 0.05, 0.8
    w, v = np.array(START), None
    for g in GRADS:
        v = g.copy() if v is None else mu * v + g
        w = w - lr * (g + mu * v)
    got = run(lambda ps: optim.SGD(ps, lr=lr, momentum=mu, nesterov=True))
    np.testing.assert_allclose(got, w, rtol=1e-14)


def test_adam_by_hand() -> None:
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    w = np.array(START)
    m = np.zeros(3)
    v = np.zeros(3)
    for t, g in enumerate(GRADS, start=1):
        g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    got = run(lambda ps: optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd))
    np.testing.assert_allclose(got, w, rtol=1e-12)


def test_updates_are_in_place_float32_and_skip_missing_grads() -> None:
    p, q = param(START, np.float32), param([1.0], np.float32)
    arr = p.data
    for opt in (optim.SGD([p, q], lr=0.1, momentum=0.9), optim.Adam([p, q])):
        p.grad = np.ones(3, np.float32)
        q.grad = None
        opt.step()
        assert p.data is arr and p.data.dtype == np.float32
        assert q.data[0] == 1.0
        assert all(s["momentum_buffer" if "momentum_buffer" in s else "exp_avg"].dtype
                   == np.float32 for s in opt.state.values())  # fmt: skip


def test_zero_grad() -> None:
    p = param(START)
    p.grad = np.ones(3)
    optim.SGD([p], lr=1.0).zero_grad()
    assert p.grad is None


def test_constructor_errors() -> None:
    p = param(START)
    with pytest.raises(ValueError, match="no parameters"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        optim.SGD([p], lr=0.0)
    with pytest.raises(ValueError, match="listed twice"):
        optim.Adam([p, p])
    with pytest.raises(TypeError, match="requires_grad"):
        optim.SGD([gg.Tensor([1.0])], lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD([p], lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.make_optimizer("rmsprop", [p], 0.1)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_state_dict_resume_is_bit_exact(name: str) -> None:
    g = np.random.default_rng(0)
    grads = [g.standard_normal((4, 3)).astype(np.float32) for _ in range(6)]
    start = g.standard_normal((4, 3)).astype(np.float32)

    def make(p: gg.Tensor) -> optim.Optimizer:
        return optim.make_optimizer(name, [p], lr=0.01, momentum=0.9, weight_decay=1e-3)

    p = gg.Tensor(start.copy(), requires_grad=True)
    opt = make(p)
    for gr in grads:
        p.grad = gr
        opt.step()

    q = gg.Tensor(start.copy(), requires_grad=True)
    opt1 = make(q)
    for gr in grads[:3]:
        q.grad = gr
        opt1.step()
    saved = opt1.state_dict()
    q2 = gg.Tensor(q.data.copy(), requires_grad=True)
    opt2 = make(q2)
    opt2.lr = 123.0  # restored from the state dict
    opt2.load_state_dict(saved)
    assert opt2.lr == 0.01
    for gr in grads[3:]:
        q2.grad = gr
        opt2.step()
    np.testing.assert_array_equal(q2.data, p.data)


def test_load_state_dict_errors() -> None:
    p = param(START)
    sgd = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(3)
    sgd.step()
    sd = sgd.state_dict()
    with pytest.raises(optim.OptimizerStateError, match="'SGD', not 'Adam'"):
        optim.Adam([p]).load_state_dict(sd)
    bad = sgd.state_dict()
    bad["state"][0]["momentum_buffer"] = np.zeros(4)
    with pytest.raises(optim.OptimizerStateError, match=r"has shape \(4,\)"):
        optim.SGD([p], lr=0.1, momentum=0.9).load_state_dict(bad)
    bad = sgd.state_dict()
    bad["state"][5] = bad["state"].pop(0)
    with pytest.raises(optim.OptimizerStateError, match="out of range"):
        optim.SGD([p], lr=0.1, momentum=0.9).load_state_dict(bad)
    bad = sgd.state_dict()
    bad["hyper"]["rho"] = 1
    with pytest.raises(optim.OptimizerStateError, match="rho"):
        optim.SGD([p], lr=0.1, momentum=0.9).load_state_dict(bad)


def test_minimises_a_quadratic() -> None:
    for opt_cls in (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.5),
        lambda ps: optim.Adam(ps, lr=0.1),
    ):
        p = param([3.0, -4.0])
        opt = opt_cls([p])
        for _ in range(300):
            opt.zero_grad()
            gg.sum(p * p).backward()
            opt.step()
        assert math.hypot(*p.data) < 1e-2


@pytest.mark.parametrize(
    "config",
    [
        ("SGD", {"lr": 0.1}),
        ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
        ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        ("Adam", {"lr": 0.01}),
        ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ],
)
def test_matches_torch_optim(config: tuple[str, dict[str, object]]) -> None:
    torch = pytest.importorskip("torch")
    name, kw = config
    g = np.random.default_rng(1)
    start = g.standard_normal((5, 4))
    grads = [g.standard_normal((5, 4)) for _ in range(8)]
    p = gg.Tensor(start.copy(), requires_grad=True)
    ours = getattr(optim, name)([p], **kw)
    tp = torch.nn.Parameter(torch.from_numpy(start.copy()))
    theirs = getattr(torch.optim, name)([tp], **kw)
    for gr in grads:
        p.grad = gr.copy()
        ours.step()
        tp.grad = torch.from_numpy(gr.copy())
        theirs.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


# --- SGD(fused_backward=True): the weight gradient GEMM adds into the momentum buffer ----


def _mlp_run(fused: bool, blas: str, steps: int = 4, twice: bool = False) -> list[np.ndarray]:
    import gc

    gc.collect()  # an earlier fused optimiser's sinks go with it
    with gg.using_blas(blas):
        rng = np.random.default_rng(0)
        model = gg.nn.MLP(24, [32, 16], 5, "relu", rng=rng)
        opt = gg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, fused_backward=fused)
        x = rng.standard_normal((40, 24)).astype(np.float32)
        y = rng.integers(0, 5, 40)
        for _ in range(steps):
            opt.zero_grad()
            for _ in range(2 if twice else 1):  # twice: gradients accumulate
                gg.cross_entropy(model(x), y).backward()
            opt.step()
        if fused:
            weights = [p for p in model.parameters() if p.data.ndim == 2]
            assert weights and all(p.grad is None for p in weights)  # never materialised
            assert all(p.grad is not None for p in model.parameters() if p.data.ndim == 1)
        return [p.data.copy() for p in model.parameters()]


@pytest.mark.parametrize("blas", ["numpy", "auto"])
@pytest.mark.parametrize("twice", [False, True])
def test_sgd_fused_backward_matches_the_unfused_update(blas: str, twice: bool) -> None:
    plain = _mlp_run(False, blas, twice=twice)
    fused = _mlp_run(True, blas, twice=twice)
    for a, b in zip(plain, fused, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sgd_fused_backward_uses_the_ops_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphgrad.ops._registry import REGISTRY

    calls: list[float] = []
    rule = REGISTRY["linear"].vjp_into[1]  # type: ignore[index]

    def spy(g: np.ndarray, args: list, out: np.ndarray, beta: float) -> bool:
        calls.append(beta)
        return rule(g, args, out, beta)

    monkeypatch.setitem(REGISTRY["linear"].vjp_into, 1, spy)  # type: ignore[arg-type]
    _mlp_run(True, "numpy", steps=2)
    assert calls == [0.0] * 3 + [0.9] * 3  # 3 weights: v = ∇ first, then v = 0.9 v + ∇


def test_sgd_fused_backward_refuses_what_it_cannot_fuse() -> None:
    p = gg.Tensor(np.ones((2, 2)), requires_grad=True)
    for kw in (
        {"momentum": 0.0},
        {"momentum": 0.9, "weight_decay": 1e-4},
        {"momentum": 0.9, "nesterov": True},
    ):
        with pytest.raises(ValueError, match="fused_backward needs momentum > 0"):
            gg.optim.SGD([p], lr=0.1, fused_backward=True, **kw)  # type: ignore[arg-type]


def test_sgd_fused_backward_leaves_other_graphs_alone() -> None:
    import gc

    from graphgrad import _engine

    w = gg.Tensor(np.ones((3, 2), np.float32), requires_grad=True)
    opt = gg.optim.SGD([w], lr=0.1, momentum=0.9, fused_backward=True)
    x = gg.Tensor(np.ones((4, 2), np.float32))
    # gg.grad (wrt=...) and create_graph return gradients as usual, the buffer untouched
    gw = gg.grad(lambda w: gg.linear(x, w, gg.Tensor(np.zeros(3, np.float32))).sum())(w)
    np.testing.assert_array_equal(gw.data, np.full((3, 2), 4.0))
    assert 0 not in opt.state
    # matmul has no fused rule: its gradient lands in .grad and step() uses it
    (x @ w.T).sum().backward()
    assert w.grad is not None
    opt.step()
    np.testing.assert_allclose(w.data, 1 - 0.1 * 4.0)
    del opt
    gc.collect()
    assert id(w) not in _engine.GRAD_SINKS


class _WithoutMany:
    """The compiled kernels without their many-parameter updates: the optimisers then update
    one parameter per kernel call, the path before those existed."""

    def __init__(self, kernels: object) -> None:
        self._k = kernels

    def __getattr__(self, name: str) -> object:
        if name in ("sgd_many", "adam_many"):
            raise AttributeError(name)
        return getattr(self._k, name)


class _Counting:
    """The compiled kernels, recording which parameters each many-parameter call declined."""

    def __init__(self, kernels: object) -> None:
        self._k, self.declined = kernels, []  # type: list[list[int]]

    def __getattr__(self, name: str) -> object:
        fn = getattr(self._k, name)
        if name not in ("sgd_many", "adam_many"):
            return fn

        def counted(ws: list[np.ndarray], *args: object) -> list[int]:
            left = fn(ws, *args)
            self.declined.append(list(left))
            return left

        return counted


def _odd_params(dtype: type, rng: np.random.Generator) -> list[gg.Tensor]:
    """Parameters of several shapes: a 0-d one, a layer of 3072 inputs, whose float32
    gradient is padded (its rows further apart), and two column-major ones."""
    shapes = [(5, 7), (7,), (1, 1), (3, 4, 2), (), (2, 3072)]
    ps = [gg.Tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in shapes]
    for _ in range(2):  # #6 gets column-major gradients, #7 row-major ones
        w = np.asfortranarray(rng.standard_normal((4, 6)).astype(dtype))
        ps.append(gg.Tensor(w, requires_grad=True))
    return ps


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name, kw",
    [
        ("sgd", {"lr": 0.1}),
        ("sgd", {"lr": 0.1, "momentum": 0.9}),
        ("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01, "nesterov": True}),
        ("adam", {"lr": 0.01}),
        ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ],
)
def test_one_kernel_call_for_all_parameters_gives_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, dtype: type, name: str, kw: dict[str, object]
) -> None:
    # step() hands every NumPy parameter past its first step to one sgd_many/adam_many call:
    # the same kernel per parameter, so the same bits as one call per parameter, with the
    # arrays it declines (column-major, padded gradients, 0-d) taking that path
    cls = {"sgd": optim.SGD, "adam": optim.Adam}[name]
    runs = []
    for many in (True, False):
        rng = np.random.default_rng(0)
        ps = _odd_params(dtype, rng)
        opt = cls(ps, **kw)  # type: ignore[arg-type]
        counting = _Counting(_fused.KERNELS)
        with monkeypatch.context() as m:
            m.setattr(_fused, "KERNELS", counting if many else _WithoutMany(_fused.KERNELS))
            for step in range(4):
                for k, p in enumerate(ps):
                    if step == 2 and k == 1:
                        p.grad = None  # skipped this step
                        continue
                    g = rng.standard_normal(p.shape).astype(dtype)
                    if p.shape == (2, 3072) and dtype == np.float32:
                        g = _padded(g)
                    if k == 6:
                        g = np.asfortranarray(g)
                    p.grad = g
                opt.step()
        runs.append([p.data.copy() for p in ps] + [opt.state_dict()])
        if many:  # one call a step (the momentum's first step: none, every buffer is new)
            first = name == "sgd" and "momentum" in kw
            assert len(counting.declined) == (3 if first else 4)
            # declined: the padded gradient (float32) beside its row-major weight, and the
            # row-major gradient of a column-major weight; the column-major weight with a
            # column-major gradient (and momentum buffer, made like the weight) is taken
            assert counting.declined[-1] == ([5, 7] if dtype == np.float32 else [7])
    for a, b in zip(runs[0][:-1], runs[1][:-1], strict=True):
        assert a.tobytes() == b.tobytes()
    assert repr(runs[0][-1]) == repr(runs[1][-1])


def _padded(g: np.ndarray) -> np.ndarray:
    from graphgrad import _memory

    out = _memory.empty_grad(g.shape, g.dtype)
    out[...] = g
    assert not out.flags.c_contiguous  # rows further apart: the *_rows kernels' case
    return out


@needs_kernels
def test_the_many_kernels_name_what_they_leave_alone() -> None:
    k = _fused.KERNELS
    f4, f8 = np.float32, np.float64
    w = [np.ones(6, f4), np.ones(6, f4), np.ones((2, 3), f8), np.ones(6, f4), np.ones(6, f4)]
    g = [np.ones(6, f4), np.ones(6, f8), np.ones((3, 2), f8), np.ones(6, f4)[::1], [1.0] * 6]
    v = [np.zeros(6, f4), np.zeros(6, f4), np.zeros((2, 3), f8), np.zeros(6, f4), np.zeros(6, f4)]
    w[3].flags.writeable = False
    before = [a.copy() for a in w]
    # 0: taken; 1: g of another dtype; 2: g of another shape; 3: w read-only; 4: g a list
    assert k.sgd_many(w, g, v, 0.5, 0.9, 0.0, False) == [1, 2, 3, 4]
    assert w[0].tolist() == [0.5] * 6 and v[0].tolist() == [1.0] * 6
    for a, b in zip(w[1:], before[1:], strict=True):
        assert a.tobytes() == b.tobytes()
    m = [np.zeros_like(a) for a in v]
    assert k.adam_many(w, g, m, v, [1] * 5, 0.1, 0.9, 0.999, 1e-8, 0.0) == [1, 2, 3, 4]
    half = np.float16
    assert k.sgd_many([np.ones(3, half)], [np.ones(3, half)], [np.ones(3, half)], 1, 0, 0, 0) == [0]
    with pytest.raises(ValueError, match="sgd_many: 2 parameters, 1 gradients, 2 buffers"):
        k.sgd_many(w[:2], g[:1], v[:2], 0.1, 0.0, 0.0, False)
    a = [np.ones(4, f4) for _ in range(4)]
    with pytest.raises(TypeError):  # a bad step count: raised with no buffer held
        k.adam_many([a[0]], [a[1]], [a[2]], [a[3]], ["1"], 0.1, 0.9, 0.999, 1e-8, 0.0)
    for x in a:
        x.resize(5, refcheck=False)  # (refused while a buffer of it is exported)


def test_a_read_only_parameter_is_named_with_the_others_updated_before_it() -> None:
    for cls, kw in ((optim.SGD, {"lr": 0.5, "momentum": 0.5}), (optim.Adam, {"lr": 0.5})):
        ps = [param([1.0, 2.0]), param([3.0]), param([4.0, 5.0])]
        opt = cls(ps, **kw)  # type: ignore[arg-type]
        for p in ps:
            p.grad = np.ones(p.shape)
        opt.step()  # (every momentum buffer made)
        after_one = [p.data.copy() for p in ps]
        ps[1].data.flags.writeable = False
        for p in ps:
            p.grad = np.ones(p.shape)
        with pytest.raises(ValueError, match="parameter #1"):
            opt.step()
        assert not np.array_equal(ps[0].data, after_one[0])  # updated, as one by one
        assert np.array_equal(ps[1].data, after_one[1])


@pytest.mark.parametrize("std", [float("nan"), float("inf"), -1.0])
def test_normal_init_refuses_a_std_that_is_not_finite_and_nonnegative(std: float) -> None:
    with pytest.raises(ValueError, match=r"normal: std must be a finite number >= 0"):
        gg.nn.init.normal((3, 4), 0, std=std)
    with pytest.raises(ValueError, match=r"normal: std"):
        gg.nn.Linear(3, 4, std=std)
