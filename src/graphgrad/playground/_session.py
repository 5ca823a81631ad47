"""One playground run: its data, its graphgrad network and optimiser, and the pictures it sends.

A :class:`Session` holds everything one browser tab trains; it needs NumPy and graphgrad only
(the server wraps it), so tests drive it directly. Training is graphgrad's own: ``gg.nn.MLP``
(float64), ``cross_entropy`` or ``mse_loss``, ``backward()``, ``gg.optim``. The pictures are
plain data (base64 bytes for heat maps, lists for the rest) that the page draws:

* the decision region on a ``grid x grid`` lattice over the input square ``[-3, 3]^2``;
* each hidden neuron's output on a coarser ``NEURON_GRID x NEURON_GRID`` lattice;
* every Linear layer's weights (links' colour and width);
* for 1-D regression, the fitted curve and its kinks (where the ReLU units' on/off pattern
  changes along x), counted against H, the number of hidden ReLU units;
* the inside view of one neuron for one sample: ``o = a(w·x + b)`` built from :class:`Scalar`
  nodes and traced by :func:`graphgrad.viz.trace` (the data ``graphgrad graph`` draws), with
  the gradients of that sample's loss on every node and the local gradients on every edge.
"""

from __future__ import annotations

import base64
import csv
import io
import math
from typing import Any

import numpy as np

from .. import data as ggdata
from .._state import no_grad
from ..compiled import CompiledStep, CompileError
from ..gradcheck import numerical_grad
from ..nn import MLP, Activation, Linear
from ..optim import SGD, Adam, Optimizer
from ..scalar import Scalar
from ..tensor import Tensor, cross_entropy, mse_loss, tensor
from ..tensor import abs as t_abs
from ..tensor import sum as t_sum
from ..viz.data import finite as _finite
from ..viz.trace import trace
from ._params import CLASSIFICATION, ParamError, Params, show_number, validate_params

__all__ = ["DOMAIN", "NEURON_GRID", "PlaygroundError", "Session"]

#: The input square is [-DOMAIN, DOMAIN]^2 (1-D regression: x in [-DOMAIN, DOMAIN]).
DOMAIN = 3.0
NEURON_GRID = 24
CURVE_POINTS = 241
KINK_GRID = 6001
#: CSV upload limits.
MAX_CSV_BYTES = 200_000
MAX_CSV_ROWS = 2000
MAX_BAD_ROWS_REPORTED = 20
#: A CSV's labels are classes 0..MAX_CSV_CLASSES-1.
MAX_CSV_CLASSES = 5
#: The loss history keeps at most this many entries: past it, every other one is dropped
#: (the curve keeps its shape at half the resolution), so a long run's memory stays bounded.
MAX_HISTORY = 1000

# Fields whose change means new data / a new network (the others keep the weights).
_DATA_FIELDS = ("dataset", "classes", "noise", "n_points", "train_ratio", "seed")
_NET_FIELDS = (*_DATA_FIELDS, "features", "layers", "activation", "init", "init_std")


class PlaygroundError(ValueError):
    """A request the session cannot honour (bad neuron, bad point, bad CSV); says why.

    ``field`` names the message's field at fault (``"unit"``, ``"x"``, ``"text"``, ...), or the
    message's type when no one field is (as :class:`ParamError` does); the server replies
    ``{"type": "error", "field": field, "message": str(error)}``.
    """

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode("ascii")


def _features(x: np.ndarray, names: list[str]) -> np.ndarray:
    """The feature columns of raw inputs x (n, 2) or (n, 1): (n, len(names)) float64."""
    x1 = x[:, 0]
    x2 = x[:, 1] if x.shape[1] > 1 else np.zeros_like(x1)
    cols = {
        "x1": lambda: x1, "x2": lambda: x2, "x1^2": lambda: x1 * x1, "x2^2": lambda: x2 * x2,
        "x1x2": lambda: x1 * x2, "sin_x1": lambda: np.sin(x1), "sin_x2": lambda: np.sin(x2),
    }  # fmt: skip
    return np.stack([cols[n]() for n in names], axis=1).astype(np.float64)


#: How each 2-D set's points are placed in the input square: x = scale * (raw - centre), raw
#: as drawn by :mod:`graphgrad.data` (the name there, a scale, a centre).
INPUT_MAP: dict[str, tuple[str, float, tuple[float, float]]] = {
    "circles": ("circles", 2.4, (0.0, 0.0)),
    "xor": ("xor", 2.6, (0.0, 0.0)),
    "blobs": ("blobs", 0.7, (0.0, 0.0)),
    "spiral": ("spiral", 2.6, (0.0, 0.0)),
    "moons": ("two_moons", 1.7, (0.5, 0.25)),
}


def make_data(p: Params) -> tuple[np.ndarray, np.ndarray]:
    """The data set of ``p``, scaled into the input square: X (n, 2) or (n, 1), y (n,)."""
    n, rng, noise = p.n_points, p.seed, p.noise
    if p.dataset in INPUT_MAP:
        _, scale, centre = INPUT_MAP[p.dataset]
        if p.dataset == "blobs":
            x, y = ggdata.blobs(n, centers=p.classes, std=0.2 + 1.2 * noise, rng=rng)
        elif p.dataset == "spiral":
            x, y = ggdata.spiral(n, classes=p.classes, noise=noise, rng=rng)
        else:
            make: Any = {"circles": ggdata.circles, "xor": ggdata.xor, "moons": ggdata.two_moons}
            x, y = make[p.dataset](n, noise=noise * 0.5, rng=rng)
        return (x - np.asarray(centre)) * scale, y
    gen = np.random.default_rng(rng)
    x = gen.uniform(-DOMAIN, DOMAIN, size=n)
    target: Any = {"sine": lambda t: np.sin(1.5 * t), "step": lambda t: np.where(t > 0, 0.8, -0.8),
                   "abs": lambda t: np.abs(t) - 1.5}[p.dataset]  # fmt: skip
    y = target(x) + noise * gen.normal(size=n)
    return x[:, None], y.astype(np.float64)


class Session:
    """A playground run. ``params`` are validated; :meth:`step` trains, :meth:`frame` draws."""

    def __init__(self, params: Params | dict[str, Any] | None = None) -> None:
        if params is None:
            params = Params()
        elif isinstance(params, dict):
            params = validate_params(params)
        self.params = params
        self.hidden_view: tuple[int, int, int] | None = None
        self.custom: tuple[np.ndarray, np.ndarray] | None = None
        self._accuracy: float | None = None
        self._compiled: tuple[Any, Any, CompiledStep | None] | None = None
        self._make_data()
        self._make_model()

    # ------------------------------------------------------------------ building
    def _make_data(self) -> None:
        p = self.params
        x, y = self.custom if self.custom is not None else make_data(p)
        n_train = max(1, min(len(y) - 1, round(p.train_ratio * len(y))))
        self.x_train, self.y_train = x[:n_train], y[:n_train]
        self.x_test, self.y_test = x[n_train:], y[n_train:]

    def _make_model(self) -> None:
        p = self.params
        self.rng = np.random.default_rng(p.seed)
        n_out = 1 if p.is_regression else self.n_classes
        self.model = MLP(
            len(p.features), p.layers, n_out, p.activation, init=p.init,
            std=p.init_std if p.init == "normal" else None, rng=self.rng, dtype=np.float64,
        )  # fmt: skip
        self._make_optimizer()
        self.step_count = 0
        self.epoch = 0
        self._order = self.rng.permutation(len(self.y_train))
        self._pos = 0
        self._pass_done = False  # the pass at _order was counted in epoch: the next reshuffles
        self.history: list[tuple[int, float, float]] = []
        self.diverged: str | None = None
        self.train_loss, self.test_loss = self._losses()

    def _make_optimizer(self) -> None:
        p, params = self.params, self.model.parameters()
        self.opt: Optimizer
        if p.optimizer == "adam":
            self.opt = Adam(params, p.lr)
        else:
            self.opt = SGD(params, p.lr, momentum=0.9 if p.optimizer == "momentum" else 0.0)

    @property
    def n_classes(self) -> int:
        if self.params.is_regression:
            return 1
        if self.custom is not None:
            return int(self.custom[1].max()) + 1 if len(self.custom[1]) else 2
        return self.params.n_classes

    def set_params(self, update: Any) -> None:
        """Apply a validated partial update; new data or network only when those change.

        Raises:
            ParamError: see :func:`validate_params`; the session is unchanged.
        """
        new = validate_params(update, self.params)
        old, self.params = self.params, new
        if any(getattr(old, k) != getattr(new, k) for k in _DATA_FIELDS):
            self.custom = None
            self._make_data()
        if any(getattr(old, k) != getattr(new, k) for k in _NET_FIELDS):
            self.hidden_view = None
            self._make_model()
        elif old.optimizer != new.optimizer:
            self._make_optimizer()
        else:
            self.opt.lr = new.lr

    def reset(self) -> None:
        """New weights from the seed; the data stay."""
        self._make_model()

    # ------------------------------------------------------------------ training
    def _loss(self, out: Tensor, y: np.ndarray) -> Tensor:
        if self.params.is_regression:
            return mse_loss(out, y[:, None])
        return cross_entropy(out, y)

    def _penalty(self) -> Tensor | None:
        p = self.params
        if p.reg == "none" or p.reg_rate == 0:
            return None
        total: Tensor | None = None
        for layer in self.model.linear_layers():
            w = layer.weight
            term = t_sum(w * w) if p.reg == "l2" else t_sum(t_abs(w))
            total = term if total is None else total + term
        assert total is not None
        return total * p.reg_rate

    def step(self, n: int | None = None) -> None:
        """``n`` (default ``steps_per_update``) mini-batch steps; stops if the loss diverges.

        ``epoch`` counts the passes over the training set completed: each pass takes the
        shuffled set in ``n_train // batch_size`` batches (the ``n_train % batch_size`` points
        left over wait for the next, reshuffled pass), and it is complete with its last batch.
        When the batch size divides the set that is ``steps * batch_size // n_train``, as
        TensorFlow Playground counts: 150 points in batches of 10 are epoch 1 after step 15.
        """
        if self.diverged:
            return
        p = self.params
        with np.errstate(all="ignore"):  # a diverging run is caught below, by its loss
            self._steps(p.steps_per_update if n is None else n)
        self.train_loss, self.test_loss = self._losses()
        if self.diverged is None and not (
            math.isfinite(self.train_loss) and math.isfinite(self.test_loss)
        ):
            self.diverged = (
                f"training diverged: the loss is not finite after step {self.step_count}; "
                "lower the learning rate and reset"
            )
        self.history.append((self.step_count, self.train_loss, self.test_loss))
        if len(self.history) > MAX_HISTORY:
            self.history = self.history[-1::-2][::-1]  # every other entry, the last kept

    def _compiled_step(self) -> CompiledStep | None:
        """The network's training step compiled (``gg.compile_step``: the same numbers as the
        eager step below, bit for bit, at a tenth of its cost on these small networks), for
        classification without a penalty; None where it does not apply."""
        p = self.params
        if p.is_regression or (p.reg != "none" and p.reg_rate != 0):
            return None
        c = self._compiled
        if c is None or c[0] is not self.model or c[1] is not self.opt:
            try:
                step: CompiledStep | None = CompiledStep(self.model, self.opt)
            except CompileError:  # an activation plans do not compute: the eager step
                step = None
            c = self._compiled = (self.model, self.opt, step)
        return c[2]

    def _steps(self, n: int) -> None:
        p = self.params
        n_train = len(self.y_train)
        bs = min(p.batch_size, n_train)
        compiled = self._compiled_step()
        for _ in range(n):
            if self._pass_done or self._pos + bs > n_train:  # the next pass, reshuffled
                self._order = self.rng.permutation(n_train)
                self._pos = 0
                self._pass_done = False
            idx = self._order[self._pos : self._pos + bs]
            self._pos += bs
            xb = _features(self.x_train[idx], p.features)
            loss: Tensor | None = None
            if compiled is not None:  # the whole step, but no update if the loss is not finite
                value = compiled(xb, self.y_train[idx], skip_nonfinite=True)
            else:
                loss = self._loss(self.model(tensor(xb)), self.y_train[idx])
                pen = self._penalty()
                if pen is not None:
                    loss = loss + pen
                value = float(loss.data)
            if not math.isfinite(value):
                self.diverged = (
                    f"training diverged: the loss is {value} at step {self.step_count + 1}; "
                    "lower the learning rate and reset"
                )
                break
            if loss is not None:
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
            self.step_count += 1
            if self._pos + bs > n_train:  # this step took the pass's last batch
                self.epoch += 1
                # (a point added now must not extend the pass just counted)
                self._pass_done = True

    def _forward(
        self, x: np.ndarray, dtype: Any = np.float64
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Every hidden layer's activations (n, H_l) and the output (n, T) for raw inputs x."""
        hidden = []
        with no_grad(), np.errstate(all="ignore"):
            h: Any = tensor(_features(x, self.params.features).astype(dtype, copy=False))
            for m in self.model:
                if isinstance(m, Linear):
                    # h @ W^T with W^T made C-contiguous first: for the 10,000-row lattice a
                    # transposed operand costs OpenBLAS 2-100x more (threads on a busy machine)
                    h = h @ tensor(np.ascontiguousarray(m.weight.data.T, dtype=dtype))
                    if m.bias is not None:
                        h = h + tensor(m.bias.data.astype(dtype, copy=False))
                else:
                    h = m(h)
                if isinstance(m, Activation):
                    hidden.append(h.data)
        return hidden, h.data

    def _losses(self) -> tuple[float, float]:
        """Train and test loss of the whole sets (one forward pass over both); caches the
        test accuracy for :meth:`accuracy`."""
        n_tr = len(self.y_train)
        with np.errstate(all="ignore"):
            _, out = self._forward(np.concatenate([self.x_train, self.x_test]))
            if self.params.is_regression:
                y = np.concatenate([self.y_train, self.y_test])
                per = (out[:, 0] - y) ** 2
                self._accuracy = None
            else:
                y = np.concatenate([self.y_train, self.y_test]).astype(np.int64)
                z = out - out.max(axis=1, keepdims=True)
                logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
                per = -logp[np.arange(len(y)), y]
                hit = out[n_tr:].argmax(axis=1) == self.y_test
                self._accuracy = float(hit.mean()) if len(hit) else None
        tr = float(per[:n_tr].mean()) if n_tr else float("nan")
        te = float(per[n_tr:].mean()) if len(per) > n_tr else float("nan")
        return tr, te

    def accuracy(self) -> float | None:
        """Test accuracy (classification) at the last evaluation, or None."""
        return self._accuracy

    # ------------------------------------------------------------------ pictures
    def _lattice(self, g: int) -> np.ndarray:
        t = np.linspace(-DOMAIN, DOMAIN, g)
        xx, yy = np.meshgrid(t, -t)  # row 0 is the top of the picture (largest x2)
        return np.stack([xx.ravel(), yy.ravel()], axis=1)

    def frame(self, full: bool = True) -> dict[str, Any]:
        """What the page draws now (plain JSON data; see the module's docstring)."""
        p = self.params
        f: dict[str, Any] = {
            "type": "frame",
            "step": self.step_count,
            "epoch": self.epoch,  # passes over the training set completed (see step())
            "train_loss": self.train_loss,
            "test_loss": self.test_loss,
            "accuracy": self.accuracy(),
            "diverged": self.diverged,
            "weights": [
                {"w": layer.weight.data.tolist(), "b": layer.bias.data.tolist()}
                for layer in self.model.linear_layers()
                if layer.bias is not None
            ],
        }
        if p.is_regression:
            f["curve"] = self._curve()
        else:
            g = p.grid
            # the pictures in float32: 2-3x faster than float64, and a byte per pixel anyway
            hidden, out = self._forward(self._lattice(g), np.float32)
            z = (out - out.max(axis=1, keepdims=True)).astype(np.float64)
            prob = np.exp(z)
            prob /= prob.sum(axis=1, keepdims=True)
            k = prob.shape[1]
            conf = (prob.max(axis=1) - 1.0 / k) / (1.0 - 1.0 / k)
            f["boundary"] = {
                "grid": g,
                "classes": k,
                "cls": _b64(prob.argmax(axis=1)),
                "conf": _b64(np.clip(conf * 255.0 + 0.5, 0, 255)),
            }
        f["neurons"] = self._neuron_maps() if p.is_regression else self._neuron_maps(hidden, g)
        if self.hidden_view is not None:
            f["hidden_view"] = self._hidden_view()
        if full:
            f["points"] = self.points()
        return f

    def points(self) -> dict[str, Any]:
        """The train and test points (raw inputs and labels/targets)."""
        return {
            "train": np.round(self.x_train, 4).tolist(),
            "train_y": self.y_train.tolist(),
            "test": np.round(self.x_test, 4).tolist(),
            "test_y": self.y_test.tolist(),
        }

    def _neuron_maps(
        self, hidden: list[np.ndarray] | None = None, g: int = 0
    ) -> list[list[dict[str, Any]]]:
        """Each hidden neuron's output over the input square (uint8, 128 = 0; scale ``max``),
        on ``NEURON_GRID`` points a side, taken from the lattice's ``hidden`` (side ``g``) when
        given."""
        n = NEURON_GRID
        if hidden is not None:
            pick = np.round(np.linspace(0, g - 1, n)).astype(np.int64)
            rows = (pick[:, None] * g + pick[None, :]).ravel()
            hidden = [h[rows] for h in hidden]
        else:
            x = np.linspace(-DOMAIN, DOMAIN, n)[:, None]
            if not self.params.is_regression:
                x = self._lattice(n)
            hidden, _ = self._forward(x)
        layers = []
        for h in hidden:
            m = np.max(np.abs(h), axis=0)
            ok = np.isfinite(m) & (m > 0)
            q = 127.5 + 127.5 * h / np.where(ok, m, 1.0)
            q[:, ~ok] = 128.0
            q8 = np.clip(q + 0.5, 0, 255).astype(np.uint8)
            layers.append(
                [
                    {"max": float(m[j]) if ok[j] else 0.0, "map": _b64(q8[:, j])}
                    for j in range(h.shape[1])
                ]
            )
        return layers

    # ------------------------------------------------------------------ regression
    def kinks(self) -> list[float]:
        """The x where the fitted curve bends: the hidden ReLU units' on/off pattern changes.

        Only for 1-D regression with feature x1 alone and a ReLU / Leaky ReLU network (the
        curve is then piecewise linear); otherwise ``[]``. Found on a lattice of
        ``KINK_GRID`` points over [-DOMAIN, DOMAIN] (a kink is put at the midpoint).
        """
        p = self.params
        if not (
            p.is_regression and p.features == ["x1"] and p.activation in ("relu", "leaky_relu")
        ):
            return []
        x = np.linspace(-DOMAIN, DOMAIN, KINK_GRID)[:, None]
        hidden, _ = self._forward(x)
        if not hidden:
            return []
        pattern = np.concatenate([h > 0 if p.activation == "relu" else h >= 0 for h in hidden], 1)
        changed = np.any(pattern[1:] != pattern[:-1], axis=1)
        # each unit that switches between two lattice points is one kink (two units switching
        # at the same x coincide; the count is of distinct switch points per unit)
        n_switch = (pattern[1:] != pattern[:-1]).sum(axis=1)
        mids = (x[1:, 0] + x[:-1, 0]) / 2
        out: list[float] = []
        for xi, c in zip(mids[changed], n_switch[changed], strict=True):
            out.extend([float(xi)] * int(c))
        return out

    def _curve(self) -> dict[str, Any]:
        xs = np.linspace(-DOMAIN, DOMAIN, CURVE_POINTS)
        _, out = self._forward(xs[:, None])
        k = self.kinks()
        h_units = sum(self.params.layers)
        return {
            "x": np.round(xs, 4).tolist(),
            "y": out[:, 0].tolist(),
            "kinks": k,
            "kink_count": len(k),
            "relu_units": h_units if self.params.activation in ("relu", "leaky_relu") else 0,
        }

    # ------------------------------------------------------------------ hidden space
    def set_hidden_view(self, layer: Any, i: Any, j: Any) -> None:
        """Show the input lattice as neurons ``i`` and ``j`` of hidden layer ``layer`` see it."""
        n_layers = len(self.params.layers)
        if self.params.is_regression:
            raise PlaygroundError("hidden_view", "hidden_view: only for 2-D classification")
        if not (_is_int(layer) and 1 <= layer <= n_layers):
            raise PlaygroundError(
                "layer", f"hidden_view: layer must be a hidden layer 1..{n_layers}"
            )
        width = self.params.layers[layer - 1]
        for name, u in (("i", i), ("j", j)):
            if not (_is_int(u) and 0 <= u < width):
                raise PlaygroundError(name, f"hidden_view: {name} must be a neuron 0..{width - 1}")
        self.hidden_view = (int(layer), int(i), int(j))

    def _hidden_view(self) -> dict[str, Any]:
        assert self.hidden_view is not None
        layer, i, j = self.hidden_view
        t = np.linspace(-DOMAIN, DOMAIN, 13)
        s = np.linspace(-DOMAIN, DOMAIN, 49)
        lines = [np.stack([np.full_like(s, a), s], 1) for a in t]
        lines += [np.stack([s, np.full_like(s, a)], 1) for a in t]
        pts = np.concatenate(lines)
        hidden, _ = self._forward(pts)
        h = hidden[layer - 1][:, [i, j]].reshape(len(lines), len(s), 2)
        ph, _ = self._forward(self.x_train)
        return {
            "layer": layer, "i": i, "j": j,
            "lines": np.round(h, 4).tolist(),
            "points": np.round(ph[layer - 1][:, [i, j]], 4).tolist(),
            "labels": self.y_train.tolist(),
        }  # fmt: skip

    # ------------------------------------------------------------------ inside view
    def _check_neuron(self, layer: Any, unit: Any, sample: Any) -> tuple[int, int, int]:
        n_lin = len(self.params.layers) + 1
        if not (_is_int(layer) and 1 <= layer <= n_lin):
            raise PlaygroundError(
                "layer", f"neuron: layer must be 1..{n_lin} (the last is the output)"
            )
        width = self.model.linear_layers()[layer - 1].weight.shape[0]
        if not (_is_int(unit) and 0 <= unit < width):
            raise PlaygroundError("unit", f"neuron: unit must be 0..{width - 1} in layer {layer}")
        if not (_is_int(sample) and 0 <= sample < len(self.y_train)):
            raise PlaygroundError("sample", f"neuron: sample must be 0..{len(self.y_train) - 1}")
        return int(layer), int(unit), int(sample)

    def _sample_loss(self, x: Tensor, y: Any) -> Tensor:
        return self._loss(x, np.asarray([y]))

    def neuron(self, layer: Any, unit: Any, sample: Any) -> dict[str, Any]:
        """The inside view: neuron ``unit`` of Linear layer ``layer`` (1-based; the last is the
        output) on training sample ``sample``.

        Builds ``o = a(w1*x1 + ... + wF*xF + b)`` from Scalars (x: the layer's inputs for that
        sample, constants here; w, b: the neuron's weights), runs the sample through the
        network with Tensors to get dL/do (L: that sample's loss), then ``o.backward(dL/do)``,
        so every node's gradient is dL/d(node) along this neuron (for an input x_i: the part of
        dL/dx_i that flows through this neuron). Returns ``{"graph": trace data, "loss",
        "dL_do", "label", ...}``.
        """
        layer, unit, sample = self._check_neuron(layer, unit, sample)
        p = self.params
        x_s = self.x_train[sample : sample + 1]
        y_s = self.y_train[sample]
        lin = self.model.linear_layers()
        # Tensor pass over the one sample: the layer's input and dL/d(output of the neuron).
        h: Any = tensor(_features(x_s, p.features))
        layer_in: np.ndarray | None = None
        out_node: Tensor | None = None
        k = 0
        mods = list(self.model)
        for idx, m in enumerate(mods):
            if isinstance(m, Linear):
                k += 1
                if k == layer:
                    layer_in = h.data[0].copy()
            h = m(h)
            if k == layer and out_node is None:
                last = idx + 1 >= len(mods) or isinstance(mods[idx + 1], Linear)
                if isinstance(m, Activation) or (isinstance(m, Linear) and last):
                    out_node = h
                    h.retain_grad()
        assert layer_in is not None and out_node is not None
        loss = self._sample_loss(h, y_s)
        self.model.zero_grad()
        loss.backward()
        assert out_node.grad is not None
        dl_do = float(out_node.grad[0, unit])
        self.model.zero_grad()
        # The neuron's own graph, from Scalars.
        W = lin[layer - 1].weight.data
        b_arr = lin[layer - 1].bias
        in_names = p.features if layer == 1 else [f"h{layer - 1}.{i}" for i in range(len(layer_in))]
        # x as leaves that take a gradient too: dL/dx_i along this neuron's path, w_i dL/dp_i
        xs = [Scalar(float(v), name=n) for v, n in zip(layer_in, in_names, strict=True)]
        ws = [Scalar(float(W[unit, i]), name=f"w{i + 1}") for i in range(len(xs))]
        b = Scalar(float(b_arr.data[unit]) if b_arr is not None else 0.0, name="b")
        z: Scalar = ws[0] * xs[0]
        z.name = "p1"
        for i, (w, x) in enumerate(zip(ws[1:], xs[1:], strict=True), 2):
            prod = w * x
            prod.name = f"p{i}"
            z = z + prod
            z.name = f"s{i}"
        z = z + b
        z.name = "z"
        act = "identity" if layer == len(lin) else p.activation
        o = z if act == "identity" else _activate(z, act)  # the output layer: o = z
        o.name = "o"
        o.backward(dl_do)
        graph = trace(o).to_dict()
        # trace() gives do/d(node) (a backward pass from o alone, seeded with 1): the chain
        # rule's last factor makes them dL/d(node)
        for node in graph["nodes"]:
            if node["grad"] is not None:
                node["grad"] = node["grad"] * dl_do
        if dl_do == 0.0:
            # trace() reads a zero gradient on the output as "no backward pass yet" and gives
            # every gradient as unknown (None); here the pass ran, with dL/do = 0 exactly (the
            # units downstream are dead, say): every dL/d(node) = dL/do * do/d(node) is 0
            for node in graph["nodes"]:
                if node["grad"] is None and node["kind"] != "const":
                    node["grad"] = 0.0
        return _finite(
            {
                "type": "neuron",
                "layer": layer, "unit": unit, "sample": sample,
                "x": self.x_train[sample].tolist(),
                "label": self.y_train[sample].item(),
                "activation": act,
                "loss": float(loss.data),
                "dL_do": dl_do,
                "graph": graph,
            }
        )  # fmt: skip

    def check_gradient(self, layer: Any, unit: Any, sample: Any) -> dict[str, Any]:
        """dL/dw and dL/db of one neuron for one sample: analytic (backward) and numerical
        (central differences, :func:`graphgrad.numerical_grad`) side by side."""
        layer, unit, sample = self._check_neuron(layer, unit, sample)
        view = self.neuron(layer, unit, sample)
        nodes = {n["label"]: n for n in view["graph"]["nodes"]}
        lin = self.model.linear_layers()
        W0 = lin[layer - 1].weight.data
        n_in = W0.shape[1]
        x_s = self.x_train[sample : sample + 1]
        y_s = self.y_train[sample]
        feats = tensor(_features(x_s, self.params.features))

        def loss_of(theta: Tensor) -> Tensor:
            h: Any = feats
            k = 0
            for m in self.model:
                if isinstance(m, Linear):
                    k += 1
                    if k == layer:
                        W = m.weight.data.copy()
                        bb = m.bias.data.copy() if m.bias is not None else np.zeros(len(W))
                        W[unit] = theta.data[:n_in]
                        bb[unit] = theta.data[n_in]
                        h = h @ tensor(W.T) + tensor(bb)
                        continue
                h = m(h)
            return self._sample_loss(h, y_s)

        b_arr = lin[layer - 1].bias
        theta0 = np.append(W0[unit], b_arr.data[unit] if b_arr is not None else 0.0)
        num = numerical_grad(loss_of, theta0)
        names = [f"w{i + 1}" for i in range(n_in)] + ["b"]
        rows = []
        for name, nv in zip(names, num, strict=True):
            av = float(nodes[name]["grad"])
            rel = abs(av - nv) / max(1e-12, abs(av) + abs(nv))
            rows.append(
                {
                    "name": name,
                    "analytic": av,
                    "numerical": float(nv),
                    "abs_error": abs(av - float(nv)),
                    "rel_error": float(rel),
                }
            )
        return {"type": "gradcheck", "layer": layer, "unit": unit, "sample": sample, "rows": rows}

    # ------------------------------------------------------------------ editing data
    def add_point(self, x: Any, y: Any, label: Any) -> None:
        """Add a training point (x, y) of class ``label`` (regression: ``y`` is the target)."""
        for name, v in (("x", x), ("y", y)):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise PlaygroundError(name, f"add_point: {name} must be a number, got {v!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise PlaygroundError(name, f"add_point: {name} must be a finite number, got {v!r}")
            # compared as it is: an int too large for float() (JSON reads 10**400 as one) is
            # out of range, not an OverflowError
            if not -DOMAIN <= v <= DOMAIN:
                raise PlaygroundError(
                    name,
                    f"add_point: {name} must be in [-{DOMAIN}, {DOMAIN}], got {show_number(v)}",
                )
        if len(self.y_train) + len(self.y_test) >= 2 * 2000:
            raise PlaygroundError("add_point", "add_point: too many points")
        if self.params.is_regression:
            self.x_train = np.vstack([self.x_train, [[float(x)]]])
            self.y_train = np.append(self.y_train, float(y))
        else:
            if not (_is_int(label) and 0 <= label < self.n_classes):
                raise PlaygroundError(
                    "label", f"add_point: label must be 0..{self.n_classes - 1}, got {label!r}"
                )
            self.x_train = np.vstack([self.x_train, [[float(x), float(y)]]])
            self.y_train = np.append(self.y_train, np.int64(label))
        self._order = np.append(self._order, len(self.y_train) - 1)
        self.train_loss, self.test_loss = self._losses()

    def load_csv(self, text: Any) -> dict[str, Any]:
        """Use rows ``x, y, label`` (classification, labels 0..4) from CSV text as the data.

        At most :data:`MAX_CSV_BYTES` bytes and :data:`MAX_CSV_ROWS` rows; a header line is
        skipped. Rows that do not parse are left out and reported (line number and reason,
        the first :data:`MAX_BAD_ROWS_REPORTED`). Raises :class:`PlaygroundError` when the
        text is too large or fewer than 4 good rows remain.
        """
        if not isinstance(text, str):
            raise PlaygroundError("text", "csv: text: expected the file's text")
        if len(text.encode("utf-8")) > MAX_CSV_BYTES:
            raise PlaygroundError("text", f"csv: text: file larger than {MAX_CSV_BYTES} bytes")
        try:
            rows = list(csv.reader(io.StringIO(text)))
        except csv.Error as e:
            raise PlaygroundError("text", f"csv: text: unreadable: {e}") from None
        if len(rows) > MAX_CSV_ROWS + 1:
            raise PlaygroundError("text", f"csv: text: more than {MAX_CSV_ROWS} rows")
        good_x: list[tuple[float, float]] = []
        good_y: list[int] = []
        bad: list[dict[str, Any]] = []
        for lineno, row in enumerate(rows, 1):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                if len(row) != 3:
                    raise ValueError(f"expected 3 fields (x, y, label), got {len(row)}")
                xv, yv = float(row[0]), float(row[1])
                if not (math.isfinite(xv) and math.isfinite(yv)):
                    raise ValueError("x and y must be finite")
                if not (-DOMAIN <= xv <= DOMAIN and -DOMAIN <= yv <= DOMAIN):
                    raise ValueError(f"x and y must be in [-{DOMAIN}, {DOMAIN}]")
                try:
                    lab = int(row[2])
                except ValueError:
                    lab = -1  # "1.5", "x": not a class either
                if not 0 <= lab < MAX_CSV_CLASSES:
                    raise ValueError(f"label must be an integer 0..{MAX_CSV_CLASSES - 1}")
            except ValueError as e:
                if lineno == 1 and not good_x:
                    continue  # a header
                msg = str(e)
                if msg.startswith(("could not convert", "invalid literal")):
                    msg = "not a number"
                bad.append({"line": lineno, "reason": msg})
                continue
            good_x.append((xv, yv))
            good_y.append(lab)
        if len(good_y) < 4:
            raise PlaygroundError(
                "text", f"csv: text: only {len(good_y)} good rows (need at least 4)"
            )
        if self.params.dataset not in CLASSIFICATION:
            self.params = validate_params({"dataset": "circles"}, self.params)
        gen = np.random.default_rng(self.params.seed)
        order = gen.permutation(len(good_y))
        self.custom = (np.asarray(good_x)[order], np.asarray(good_y, dtype=np.int64)[order])
        self._make_data()
        self._make_model()
        return {
            "type": "csv",
            "rows": len(good_y),
            "bad_rows": len(bad),
            "bad": bad[:MAX_BAD_ROWS_REPORTED],
        }


def _activate(z: Scalar, act: str) -> Scalar:
    if act == "sigmoid":
        return z.sigmoid()
    if act == "tanh":
        return z.tanh()
    if act == "relu":
        return z.relu()
    if act == "leaky_relu":
        return z.leaky_relu(0.01)
    if act == "elu":
        return z.elu(1.0)
    raise ParamError("activation", f"unknown activation {act!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
