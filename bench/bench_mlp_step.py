"""One MLP training step, fp32, side by side in one process: graphgrad, PyTorch eager,
hand-written NumPy, the GEMM-only lower bound, and JAX jit (when jax is installed).

The step: forward (Linear, ReLU, Linear, ReLU, Linear), softmax cross-entropy averaged over
the batch, backward, SGD with momentum 0.9 and lr 0.01 (PyTorch's formulation: v = g at the
first step, then v = 0.9 v + g; w -= 0.01 v). Every peer starts from the same He-normal
weights (biases 0) and trains on the same fixed batch, and before anything is timed the
script checks that graphgrad, PyTorch, NumPy and JAX give the same losses and the same
updated weights after a few steps (fp32 tolerance), so the same work is timed.

Peers:

* graphgrad: ``gg.nn.MLP(..., init="he")``, ``gg.cross_entropy``, ``gg.optim.SGD``;
  ``zero_grad(); loss = ...; loss.backward(); step()``, as a user writes it.
* graphgrad + MKL: the same, with ``gg.set_blas("mkl")``: its matrix products in Intel MKL,
  PyTorch's BLAS (when the ``mkl`` wheel is installed).
* PyTorch eager: ``torch.nn.Sequential`` of the same layers, ``F.cross_entropy``,
  ``torch.optim.SGD(momentum=0.9)`` with its defaults.
* NumPy by hand: no framework; preallocated buffers, ``np.matmul(..., out=)``, the fused
  softmax-cross-entropy gradient ``(softmax(z) - onehot(y)) / S`` with the learning rate
  folded in, in-place ReLU and updates (three passes over the parameters).
* GEMM-only: just the matrix products of the step, into preallocated outputs. With three
  layers that is 8 GEMMs, not 6: 3 forward (x W1^T, a1 W2^T, a2 W3^T), 3 weight gradients
  (g3^T a2, g2^T a1, g1^T x) and 2 input gradients (g3 W3, g2 W2; the input x needs none).
  No bias, activation, softmax or update: a lower bound for any implementation on this BLAS.
* GEMM-only (torch BLAS): the same 8 products through ``torch.matmul(out=)`` (information:
  PyTorch's BLAS vs NumPy's).
* JAX: ``jax.jit`` of value_and_grad plus the momentum update, buffers donated (optional).

Run: python bench/bench_mlp_step.py [--quick] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import benchlib as B  # bench/ is on sys.path when a script here runs
import numpy as np

import graphgrad as gg

LR, MU = 0.01, 0.9
#: (layer sizes, batch): the two shapes of issue 5.
SHAPES: list[tuple[tuple[int, ...], int]] = [
    ((784, 256, 256, 10), 128),
    ((3072, 512, 512, 10), 256),
]
#: graphgrad / GEMM-only targets per shape (issue 5).
GEMM_TARGET = {784: "<= 1.2", 3072: "<= 1.1"}
CHECK_STEPS = 3
WEIGHT_TOL = 1e-4  # max |Δw| after CHECK_STEPS steps (weights are O(0.1), fp32)
LOSS_TOL = 1e-4


def shape_name(sizes: Sequence[int], batch: int) -> str:
    return "-".join(map(str, sizes)) + f" b{batch}"


def init_weights(sizes: Sequence[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-normal weights (out, in), σ = sqrt(2 / fan_in), drawn layer by layer; zero biases."""
    rng = np.random.default_rng(seed)
    return [
        (gg.nn.init.he_normal((sizes[k + 1], sizes[k]), rng), np.zeros(sizes[k + 1], np.float32))
        for k in range(len(sizes) - 1)
    ]


def make_batch(d: int, t: int, s: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-like inputs in [0, 1) (S, D) float32 and int64 labels (S,)."""
    rng = np.random.default_rng([seed, 1])
    return rng.random((s, d), dtype=np.float32), rng.integers(0, t, s).astype(np.int64)


# ---------------------------------------------------------------------------------- peers


class Peer:
    """A peer: ``step()`` runs one training step; ``weights()`` the current (W, b) copies;
    ``last_loss()`` the loss of the last step (read outside timing)."""

    name = "?"

    def step(self) -> None:
        raise NotImplementedError

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def last_loss(self) -> float:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for asynchronous work (JAX); nothing for the others."""


class GraphgradPeer(Peer):
    name = "graphgrad"

    def __init__(self, w0: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray):
        sizes = [w0[0][0].shape[1], *(w.shape[0] for w, _ in w0)]
        self.model = gg.nn.MLP(
            sizes[0], sizes[1:-1], sizes[-1], "relu", init="he", rng=np.random.default_rng(0)
        )
        state = {}
        for k, (w, b) in enumerate(w0):
            state[f"{2 * k}.weight"], state[f"{2 * k}.bias"] = w, b
        self.model.load_state_dict(state)
        self.opt = gg.optim.SGD(self.model.parameters(), lr=LR, momentum=MU)
        self.x, self.y = x, y
        self.loss: Any = None

    def step(self) -> None:
        self.opt.zero_grad()
        loss = gg.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.loss = loss

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for m in self.model.linear_layers():
            assert m.bias is not None  # the MLP's layers all have biases
            out.append((m.weight.data.copy(), m.bias.data.copy()))
        return out

    def last_loss(self) -> float:
        return float(self.loss.data)


class GraphgradCompiledPeer(GraphgradPeer):
    """The same step through ``gg.compile_step`` (one call of a compiled plan; the same
    numbers as GraphgradPeer's, bit for bit). With ``fused_backward=True`` the optimiser is
    ``SGD(fused_backward=True)``: each weight gradient is added into its momentum buffer by
    its GEMM (beta = momentum), never written out on its own."""

    name = "graphgrad compiled"

    def __init__(
        self,
        w0: list[tuple[np.ndarray, np.ndarray]],
        x: np.ndarray,
        y: np.ndarray,
        fused_backward: bool = False,
    ):
        super().__init__(w0, x, y)
        if fused_backward:
            self.opt = gg.optim.SGD(
                self.model.parameters(), lr=LR, momentum=MU, fused_backward=True
            )
        self.compiled = gg.compile_step(self.model, self.opt)
        self.value = float("nan")

    def step(self) -> None:
        self.value = self.compiled(self.x, self.y)

    def last_loss(self) -> float:
        return self.value


class GraphgradMklPeer(GraphgradPeer):
    name = "graphgrad + MKL"

    def step(self) -> None:
        with gg.using_blas("mkl"):
            super().step()


def mkl_available() -> bool:
    from graphgrad import _blas

    return "error" not in _blas.find_mkl()


class TorchPeer(Peer):
    name = "pytorch"

    def __init__(self, w0: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray):
        import torch

        self.torch = torch
        layers: list[Any] = []
        for k, (w, _) in enumerate(w0):
            layers.append(torch.nn.Linear(w.shape[1], w.shape[0]))
            if k < len(w0) - 1:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        with torch.no_grad():
            for lin, (w, b) in zip(self.linears(), w0, strict=True):
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=LR, momentum=MU)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.loss: Any = None

    def linears(self) -> list[Any]:
        return [m for m in self.net if isinstance(m, self.torch.nn.Linear)]

    def step(self) -> None:
        self.opt.zero_grad()
        loss = self.torch.nn.functional.cross_entropy(self.net(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.loss = loss

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [
            (m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
            for m in self.linears()
        ]

    def last_loss(self) -> float:
        return float(self.loss.item())


class NumpyPeer(Peer):
    """Forward, fused softmax-CE gradient, backward and momentum SGD written by hand.

    The learning rate is folded into the seed gradient, (softmax(z) - onehot(y)) · lr / S,
    so the GEMMs produce lr · ∇ directly and the update keeps u = lr · v: u ← μ u + lr · g,
    w ← w − u (PyTorch's step, v = g at the first step, since u starts at 0): three passes
    over the parameters instead of four. Bias gradients are a GEMV with a vector of ones.
    """

    name = "numpy by hand"

    def __init__(self, w0: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray):
        s = x.shape[0]
        self.W = [w.copy() for w, _ in w0]
        self.b = [b.copy() for _, b in w0]
        self.x, self.y, self.rows = x, y, np.arange(s)
        self.ones = np.ones(s, np.float32)
        self.z = [np.empty((s, w.shape[0]), np.float32) for w in self.W]  # layer outputs
        self.gz = [np.empty((s, w.shape[0]), np.float32) for w in self.W]  # lr·dL/d(pre-act)
        self.dW = [np.empty_like(w) for w in self.W]  # lr · gradients
        self.db = [np.empty_like(b) for b in self.b]
        self.uW = [np.zeros_like(w) for w in self.W]  # lr · momentum buffers
        self.ub = [np.zeros_like(b) for b in self.b]
        self.m = np.empty((s, 1), np.float32)
        self.loss_parts: tuple[np.ndarray, np.ndarray] = (self.m, self.m)

    def step(self) -> None:
        W, b, z, gz = self.W, self.b, self.z, self.gz
        n = len(W)
        a = self.x
        for k in range(n):  # forward: z_k = a W_k^T + b_k, a = relu(z_k) in place
            np.matmul(a, W[k].T, out=z[k])
            z[k] += b[k]
            if k < n - 1:
                np.maximum(z[k], 0, out=z[k])
            a = z[k]
        # softmax cross-entropy, fused: p = softmax(z), L = mean(log Σexp - (z_y - max)),
        # lr · dL/dz = (p - onehot(y)) · lr / S
        logits, p, s = z[-1], gz[-1], self.x.shape[0]
        np.max(logits, axis=1, keepdims=True, out=self.m)
        np.subtract(logits, self.m, out=p)
        zy = p[self.rows, self.y]
        np.exp(p, out=p)
        se = p.sum(axis=1, keepdims=True)
        self.loss_parts = (se, zy)
        p *= np.float32(LR / s) / se
        p[self.rows, self.y] -= np.float32(LR / s)
        for k in range(n - 1, -1, -1):  # backward
            a_in = z[k - 1] if k else self.x
            np.matmul(gz[k].T, a_in, out=self.dW[k])
            np.matmul(self.ones, gz[k], out=self.db[k])
            if k:  # through the ReLU: its output is > 0 exactly where it passes gradient
                np.matmul(gz[k], W[k], out=gz[k - 1])
                np.multiply(gz[k - 1], z[k - 1] > 0, out=gz[k - 1])
        for k in range(n):  # u = μu + lr·g; w -= u
            for w, g, u in ((W[k], self.dW[k], self.uW[k]), (b[k], self.db[k], self.ub[k])):
                u *= MU
                u += g
                w -= u

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(w.copy(), b.copy()) for w, b in zip(self.W, self.b, strict=True)]

    def last_loss(self) -> float:
        se, zy = self.loss_parts
        return float(np.mean(np.log(se[:, 0]) - zy))


class GemmPeer(Peer):
    """The 8 matrix products of the step, into preallocated outputs, nothing else."""

    name = "GEMM only"

    def __init__(self, w0: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray):
        rng = np.random.default_rng(1)
        s = x.shape[0]
        # arrays (Any: the torch variant below holds tensors over the same memory)
        self.W: list[Any] = [w.copy() for w, _ in w0]
        self.x: Any = x
        self.a: list[Any] = [rng.random((s, w.shape[0]), dtype=np.float32) for w in self.W]
        self.g: list[Any] = [
            rng.standard_normal((s, w.shape[0]), dtype=np.float32) * 1e-3 for w in self.W
        ]
        self.da: list[Any] = [np.empty((s, w.shape[0]), np.float32) for w in self.W[:-1]]
        self.dW: list[Any] = [np.empty_like(w) for w in self.W]

    def step(self) -> None:
        W, a, g, mm = self.W, self.a, self.g, np.matmul
        n = len(W)
        mm(self.x, W[0].T, out=a[0])  # forward: n products
        for k in range(1, n):
            mm(a[k - 1], W[k].T, out=a[k])
        for k in range(n - 1, -1, -1):  # weight gradients: n; input gradients: n - 1
            mm(g[k].T, a[k - 1] if k else self.x, out=self.dW[k])
            if k:
                mm(g[k], W[k], out=self.da[k - 1])

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return []

    def last_loss(self) -> float:
        return float("nan")


class TorchGemmPeer(GemmPeer):
    """The same 8 products through PyTorch's BLAS (``torch.matmul(..., out=)``): how much of
    the PyTorch step is its BLAS rather than NumPy's."""

    name = "GEMM only (torch BLAS)"

    def __init__(self, w0: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray):
        import torch

        super().__init__(w0, x, y)
        t = torch.from_numpy
        self.W, self.x = [t(w) for w in self.W], t(self.x)
        self.a, self.g = [t(v) for v in self.a], [t(v) for v in self.g]
        self.da, self.dW = [t(v) for v in self.da], [t(v) for v in self.dW]
        self.mm = torch.matmul

    def step(self) -> None:
        W, a, g, mm = self.W, self.a, self.g, self.mm
        n = len(W)
        mm(self.x, W[0].T, out=a[0])
        for k in range(1, n):
            mm(a[k - 1], W[k].T, out=a[k])
        for k in range(n - 1, -1, -1):
            mm(g[k].T, a[k - 1] if k else self.x, out=self.dW[k])
            if k:
                mm(g[k], W[k], out=self.da[k - 1])


class JaxPeer(Peer):
    name = "jax jit"

    def __init__(
        self, w0: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray, threads: int
    ):
        with B.pinned(threads):  # XLA's pools are sized, and pinned, as its client starts
            self._setup(w0, x, y)
            jax = self.jax
            copies = jax.tree_util.tree_map(lambda a: a.copy(), (self.params, self.vel))
            jax.block_until_ready(self._step(*copies, self.x, self.y))

    def _setup(self, w0: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray) -> None:
        import jax
        import jax.numpy as jnp

        self.jax = jax

        def loss_fn(params: Any, xb: Any, yb: Any) -> Any:
            a = xb
            for k, (w, b) in enumerate(params):
                a = a @ w.T + b
                if k < len(params) - 1:
                    a = jax.nn.relu(a)
            logp = jax.nn.log_softmax(a, axis=1)
            return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

        def train_step(params: Any, vel: Any, xb: Any, yb: Any) -> Any:
            loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
            vel = jax.tree_util.tree_map(lambda v, g: MU * v + g, vel, grads)
            params = jax.tree_util.tree_map(lambda p, v: p - LR * v, params, vel)
            return params, vel, loss

        self._step = jax.jit(train_step, donate_argnums=(0, 1))
        self.params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in w0]
        self.vel = [(jnp.zeros_like(w), jnp.zeros_like(b)) for w, b in self.params]
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)
        self.loss: Any = None

    def step(self) -> None:
        self.params, self.vel, self.loss = self._step(self.params, self.vel, self.x, self.y)

    def sync(self) -> None:
        self.jax.block_until_ready((self.params, self.loss))

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.asarray(w).copy(), np.asarray(b).copy()) for w, b in self.params]

    def last_loss(self) -> float:
        return float(self.loss)


def available_peers(notes: list[str]) -> list[type[Peer]]:
    peers: list[type[Peer]] = [GraphgradPeer, GraphgradCompiledPeer]
    if mkl_available():
        peers.append(GraphgradMklPeer)
    else:
        notes.append("MKL is not installed (`pip install mkl`): no graphgrad + MKL peer.")
    try:
        import torch  # noqa: F401

        peers.append(TorchPeer)
    except ImportError:
        notes.append("PyTorch is not installed: no PyTorch peer.")
    peers += [NumpyPeer, GemmPeer]
    if TorchPeer in peers:
        peers.append(TorchGemmPeer)
    try:
        import jax  # noqa: F401

        peers.append(JaxPeer)
    except ImportError:
        notes.append("JAX is not installed (optional peer; `pip install jax`): skipped.")
    return peers


# ------------------------------------------------------------------------------ the bench


def check_agreement(peers: list[Peer]) -> dict[str, Any]:
    """CHECK_STEPS steps on every peer; the largest loss and weight differences vs graphgrad."""
    losses: dict[str, list[float]] = {p.name: [] for p in peers}
    for _ in range(CHECK_STEPS):
        for p in peers:
            p.step()
            p.sync()
            losses[p.name].append(p.last_loss())
    ref = peers[0]
    ref_w = ref.weights()
    out: dict[str, Any] = {"steps": CHECK_STEPS, "losses": losses, "max_abs_diff": {}}
    ok = True
    for p in peers[1:]:
        w = p.weights()
        if not w:
            continue
        dw = max(float(np.max(np.abs(a - c))) for (a, _), (c, _) in zip(ref_w, w, strict=True))
        db = max(float(np.max(np.abs(a - c))) for (_, a), (_, c) in zip(ref_w, w, strict=True))
        dl = max(abs(a - c) for a, c in zip(losses[ref.name], losses[p.name], strict=True))
        good = dw < WEIGHT_TOL and db < WEIGHT_TOL and dl < LOSS_TOL
        ok = ok and good
        out["max_abs_diff"][p.name] = {"weights": dw, "biases": db, "loss": dl, "passed": good}
    out["passed"] = ok
    return out


def bench_shape(
    sizes: tuple[int, ...],
    batch: int,
    rounds: int,
    target_s: float,
    notes: list[str],
    threads: int = 1,
) -> dict[str, Any]:
    w0 = init_weights(sizes, seed=0)
    x, y = make_batch(sizes[0], sizes[-1], batch, seed=0)
    classes: list[Any] = available_peers(notes)  # Peer subclasses; JaxPeer also takes threads
    peers = [cls(w0, x, y, threads) if cls is JaxPeer else cls(w0, x, y) for cls in classes]
    agreement = check_agreement(peers)
    name = shape_name(sizes, batch)
    print(f"{name}: after {CHECK_STEPS} steps from the same weights, max |Δ| vs graphgrad:")
    for peer, d in agreement["max_abs_diff"].items():
        print(
            f"  {peer:24s} weights {d['weights']:.2e}  biases {d['biases']:.2e}  "
            f"loss {d['loss']:.2e}  {'ok' if d['passed'] else 'MISMATCH'}"
        )
    timing = B.interleave(
        {p.name: p.step for p in peers}, rounds, target_s, {p.name: p.sync for p in peers}
    )
    for peer, t in timing.items():
        print(
            f"  {peer:24s} {t['median_s'] * 1e3:8.3f} ms/step  (min {t['min_s'] * 1e3:.3f}, "
            f"cpu/wall {t['cpu_over_wall']:.2f}, {t['rounds']} rounds x {t['number']})"
        )
    med = {k: t["median_s"] * 1e3 for k, t in timing.items()}
    mins = {k: t["min_s"] * 1e3 for k, t in timing.items()}

    def r(label: str, num: str, den: str, target: str | None) -> dict[str, Any]:
        return B.ratio(
            name, label, med.get(num), med.get(den), target, (mins.get(num), mins.get(den))
        )

    g, gemm, torch_gemm = "graphgrad", "GEMM only", "GEMM only (torch BLAS)"
    gm = "graphgrad + MKL"
    ratios = [
        r("graphgrad / PyTorch eager", g, "pytorch", "<= 0.85"),
        r("graphgrad / JAX jit", g, "jax jit", "<= 1.0"),
        r("graphgrad / GEMM-only", g, gemm, GEMM_TARGET.get(sizes[0])),
        r("graphgrad compiled / PyTorch eager", "graphgrad compiled", "pytorch", "<= 0.85"),
        r("graphgrad compiled / JAX jit", "graphgrad compiled", "jax jit", "<= 1.0"),
        r("graphgrad compiled / GEMM-only", "graphgrad compiled", gemm, None),
        r("graphgrad compiled / graphgrad", "graphgrad compiled", g, None),
        r("graphgrad + MKL / PyTorch eager", gm, "pytorch", "<= 0.85"),
        r("graphgrad + MKL / JAX jit", gm, "jax jit", "<= 1.0"),
        r("graphgrad + MKL / GEMM-only (torch BLAS)", gm, torch_gemm, GEMM_TARGET.get(sizes[0])),
        r("graphgrad / NumPy by hand", g, "numpy by hand", None),
        r("NumPy by hand / GEMM-only", "numpy by hand", gemm, None),
        r("GEMM-only / PyTorch eager", gemm, "pytorch", None),
        r("GEMM-only / GEMM-only (torch BLAS)", gemm, torch_gemm, None),
    ]
    for row in ratios:
        if row["value"] is not None:
            print(
                f"  {row['ratio']:36s} {row['value']:6.2f} (of mins {row['value_of_mins']:.2f})"
                f"  target {row['target'] or '-'}"
            )
    return {
        "benchmark": name,
        "sizes": list(sizes),
        "batch": batch,
        "unit": "ms/step",
        "median": med,
        "min": mins,
        "timing": timing,
        "agreement": agreement,
        "ratios": ratios,
    }


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    """Item 1 of the suite as a record (see run_all.py)."""
    rounds, target_s = (3, 0.02) if quick else (41, 0.06)
    notes = [
        "GEMM-only = the 8 matrix products of a 3-layer step (3 forward, 3 weight "
        "gradients, 2 input gradients; the input x needs no gradient).",
        "Same He-normal start, same fixed batch; agreement checked after "
        f"{CHECK_STEPS} steps (tolerance {WEIGHT_TOL:g} on weights and loss).",
        f"Threads: {threads} (gg.set_num_threads and threadpoolctl, torch.set_num_threads; JAX: "
        "XLA ignores its thread flags here, so its client starts confined to that many "
        "CPUs by sched_setaffinity). cpu/wall in results.json shows what each peer used.",
    ]
    with B.threads_limited(threads):
        rows = [bench_shape(s, b, rounds, target_s, notes, threads) for s, b in SHAPES]
    notes = list(dict.fromkeys(notes))
    return {
        "item": "mlp_step",
        "title": "MLP training step (fp32; forward, softmax CE, backward, SGD momentum 0.9)",
        "rows": rows,
        "ratios": [r for row in rows for r in row["ratios"]],
        "checks": [
            {
                "name": f"{row['benchmark']}: same losses/weights as graphgrad after "
                f"{CHECK_STEPS} steps",
                "value": {k: v["weights"] for k, v in row["agreement"]["max_abs_diff"].items()},
                "passed": row["agreement"]["passed"],
            }
            for row in rows
        ],
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    return B.script_main(__doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
