"""Saving a playground run as a graphgrad checkpoint, and exporting it as one HTML file.

A saved run is a checkpoint directory (:func:`graphgrad.checkpoint.save_checkpoint`: weights in
safetensors, written atomically, verified on load) whose ``checkpoint.json`` holds a
``playground`` entry: the parameters, the data (so uploaded or clicked points survive) and the
loss history. :func:`load_run` rebuilds the :class:`Session`; ``session.model`` is an ordinary
``gg.nn.MLP``.

The exported page is the playground's own ``index.html`` with a ``<script id="snapshot">``
holding one frame (decision region, per-neuron maps, weights, points), the loss history and
the inside view of every neuron for training sample 0; opened from a file it draws them with
no server and no network.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_text
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..viz.data import finite as _finite
from ._params import ParamError, show_number, validate_params
from ._session import INPUT_MAP, MAX_CSV_CLASSES, Session

__all__ = ["STATIC_DIR", "export_html", "load_run", "save_run", "snapshot"]

#: The page's files (the only files the server serves).
STATIC_DIR = Path(str(resources.files("graphgrad.playground") / "static"))
_MARK = "</head>"


def snapshot(session: Session) -> dict[str, Any]:
    """The exported page's data: params, a full frame, the history, every neuron's inside view."""
    neurons: dict[str, Any] = {}
    sizes = [layer.weight.shape[0] for layer in session.model.linear_layers()]
    for li, width in enumerate(sizes, 1):
        for u in range(width):
            neurons[f"{li}.{u}"] = session.neuron(li, u, 0)
    return {
        "params": session.params.to_dict(),
        "frame": session.frame(full=True),
        "history": [list(h) for h in session.history],
        "neurons": neurons,
    }


def export_html(session: Session) -> str:
    """One self-contained HTML page showing the session's trained network (no server)."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    data = json.dumps(_finite(snapshot(session)), allow_nan=False).replace("</", "<\\/")
    tag = f'<script id="snapshot" type="application/json">{data}</script>\n'
    return page.replace(_MARK, tag + _MARK, 1)


def _eval_entries(session: Session) -> tuple[Any, dict[str, Any]] | None:
    """For ``graphgrad eval``: a copy of the model that reads the raw toy data (the input
    map folded into the first layer) and the ``config`` / ``model`` entries, or None when the
    run has no ``graphgrad train`` counterpart (regression, extra features, uploaded data,
    a class count other than the toy set's default)."""
    from ..config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
    from ..nn import MLP

    p = session.params
    default_classes = {"blobs": 3, "spiral": 3}.get(p.dataset, 2)
    if (
        p.dataset not in INPUT_MAP
        or p.features != ["x1", "x2"]
        or session.custom is not None
        or p.n_classes != default_classes
    ):
        return None
    toy, scale, centre = INPUT_MAP[p.dataset]
    state = session.model.state_dict()
    w0 = state["0.weight"] * scale  # W (x_raw - c) s + b = (W s) x_raw + (b - W s c)
    state["0.weight"] = w0
    state["0.bias"] = state["0.bias"] - w0 @ np.asarray(centre)
    sizes = session.model.sizes
    model = MLP(sizes[0], list(sizes[1:-1]), sizes[-1], p.activation, dtype=np.float64)
    model.load_state_dict(state)
    cfg = RunConfig(
        name=f"playground-{p.dataset}",
        model=ModelConfig(
            kind="mlp" if p.layers else "linear", hidden=tuple(p.layers),
            activation=p.activation, init=p.init,
            init_std=p.init_std if p.init == "normal" else 0.0, seed=p.seed,
        ),
        data=DataConfig(dataset=toy, seed=p.seed, toy_samples=max(4, p.n_points)),
        optim=OptimConfig(name="adam" if p.optimizer == "adam" else "sgd", lr=p.lr,
                          momentum=0.9 if p.optimizer == "momentum" else 0.0),
        train=TrainConfig(batch_size=p.batch_size, dtype="float64"),
    )  # fmt: skip
    info = {
        "in_features": sizes[0], "out_features": sizes[-1], "sizes": list(sizes),
        "activation": model.activation_name,
        "classes": [str(i) for i in range(sizes[-1])], "image_shape": None, "dataset": toy,
    }  # fmt: skip
    return model, {"config": cfg.to_dict(), "model": info}


def save_run(session: Session, directory: str | os.PathLike[str]) -> Path:
    """Save the session as a graphgrad checkpoint directory (replacing one there).

    When the run has a ``graphgrad train`` counterpart (a 2-D toy set with features x1, x2),
    the checkpoint's weights read that toy set's raw coordinates, and ``config`` / ``model``
    entries make it loadable by ``graphgrad eval`` and ``graphgrad.train.model_from_checkpoint``;
    the playground's own weights are kept exactly in the ``playground`` entry.
    """
    s = session
    entry: dict[str, Any] = {
        "params": s.params.to_dict(),
        "custom_data": s.custom is not None,
        "x_train": s.x_train.tolist(), "y_train": s.y_train.tolist(),
        "x_test": s.x_test.tolist(), "y_test": s.y_test.tolist(),
        "history": [list(h) for h in s.history],
        "weights": {k: v.tolist() for k, v in s.model.state_dict().items()},
    }  # fmt: skip
    extra: dict[str, Any] = {"playground": entry}
    model = s.model
    ev = _eval_entries(s)
    if ev is not None:
        model, entries = ev
        extra.update(entries)
    return save_checkpoint(directory, model, None, epoch=s.epoch, step=s.step_count, extra=extra)


def load_run(path: str | os.PathLike[str]) -> Session:
    """The session saved by :func:`save_run` at ``path`` (weights, data and history).

    The ``playground`` entry is checked before it is used: points are lists of finite numbers
    (x, y; one x for regression), labels integers 0..K-1 (K: the run's classes; uploaded data
    0..4), one label or target per point, and every weight of the network there, of its shape.

    Raises:
        CheckpointError: not a checkpoint, not a playground run, or its entries do not fit
            (the message names the first part at fault, as ``y_train[3]``).
    """
    c = load_checkpoint(path)
    pg = c.meta.get("playground")
    where = f"{c.path}/checkpoint.json"
    if not isinstance(pg, dict):
        raise CheckpointError(f"{where}: no 'playground' entry; not a playground run")
    try:
        params = validate_params(pg.get("params"))
        s = Session(params)
        dim = 1 if params.is_regression else 2
        x_tr = _array("x_train", pg.get("x_train"), (None, dim))
        x_te = _array("x_test", pg.get("x_test"), (None, dim))
        if len(x_tr) == 0:
            raise _Unfit("x_train: expected at least one point, got none")
        custom = bool(pg.get("custom_data")) and not params.is_regression
        k = MAX_CSV_CLASSES if custom else params.n_classes
        y_tr = _targets("y_train", pg.get("y_train"), len(x_tr), k, params.is_regression)
        y_te = _targets("y_test", pg.get("y_test"), len(x_te), k, params.is_regression)
        if custom:
            s.custom = (np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te]))
            s._make_model()
        s.x_train, s.y_train, s.x_test, s.y_test = x_tr, y_tr, x_te, y_te
        s._order = s.rng.permutation(len(y_tr))
        s.model.load_state_dict(_weights(pg.get("weights"), s.model.state_dict()))
        s.step_count, s.epoch = c.step, c.epoch
        s.history = _history(pg.get("history", []))
        s.train_loss, s.test_loss = s._losses()
    except (ParamError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{where}: the playground entry does not fit: {e}") from None
    return s


class _Unfit(ValueError):
    """A part of the playground entry that does not fit; the message names it first."""


def _show(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return show_number(v)
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _number(where: str, v: Any) -> float:
    if not isinstance(v, bool) and isinstance(v, int | float):
        try:
            f = float(v)
        except OverflowError:  # an int of 309+ digits
            f = math.inf
        if math.isfinite(f):
            return f
    raise _Unfit(f"{where}: expected a finite number, got {_show(v)}")


def _array(where: str, v: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """Nested lists of finite numbers of ``shape`` (``None``: any length) as float64."""

    def walk(at: str, v: Any, dims: tuple[int | None, ...]) -> Any:
        if not dims:
            return _number(at, v)
        if not isinstance(v, list):
            raise _Unfit(f"{at}: expected a list, got {type(v).__name__}")
        if dims[0] is not None and len(v) != dims[0]:
            raise _Unfit(f"{at}: expected {dims[0]} values, got {len(v)}")
        return [walk(f"{at}[{i}]", u, dims[1:]) for i, u in enumerate(v)]

    out = np.asarray(walk(where, v, shape), dtype=np.float64)
    return out.reshape(tuple(-1 if d is None else d for d in shape))  # also (0, 2) if empty


def _targets(where: str, v: Any, n: int, k: int, regression: bool) -> np.ndarray:
    """``n`` labels 0..k-1 (int64) or, for regression, ``n`` finite targets (float64)."""
    if regression:
        return _array(where, v, (n,))
    if not isinstance(v, list):
        raise _Unfit(f"{where}: expected a list, got {type(v).__name__}")
    if len(v) != n:
        raise _Unfit(f"{where}: expected {n} values (one per point), got {len(v)}")
    for i, lab in enumerate(v):
        if isinstance(lab, bool) or not isinstance(lab, int) or not 0 <= lab < k:
            raise _Unfit(f"{where}[{i}]: labels must be integers 0..{k - 1}, got {_show(lab)}")
    return np.asarray(v, dtype=np.int64).reshape(n)


def _weights(v: Any, expected: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The saved weights, each of the shape the network has."""
    if not isinstance(v, dict):
        raise _Unfit(f"weights: expected an object, got {type(v).__name__}")
    for name in v:
        if name not in expected:
            raise _Unfit(f"weights: unknown entry {name!r} (the network has {', '.join(expected)})")
    out = {}
    for name, w in expected.items():
        if name not in v:
            raise _Unfit(f"weights: missing {name!r}")
        out[name] = _array(f"weights[{name!r}]", v[name], w.shape)
    return out


def _history(v: Any) -> list[tuple[int, float, float]]:
    """The loss history: ``[step, train loss, test loss]`` entries (losses may be NaN)."""
    if not isinstance(v, list):
        raise _Unfit(f"history: expected a list, got {type(v).__name__}")
    out = []
    for i, h in enumerate(v):
        ok = isinstance(h, list) and len(h) == 3
        ok = ok and isinstance(h[0], int) and not isinstance(h[0], bool) and h[0] >= 0
        ok = ok and all(isinstance(u, float) or _is_small_int(u) for u in h[1:])
        if not ok:
            raise _Unfit(f"history[{i}]: expected [step, train loss, test loss], got {_show(h)}")
        out.append((int(h[0]), float(h[1]), float(h[2])))
    return out


def _is_small_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**53


def write_html(session: Session, out: str | os.PathLike[str]) -> None:
    """Export the page to ``out`` atomically."""
    atomic_write_text(out, export_html(session))
