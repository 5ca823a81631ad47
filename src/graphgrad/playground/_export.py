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
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_text
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..viz.data import finite as _finite
from ._params import ParamError, validate_params
from ._session import INPUT_MAP, Session

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

    Raises:
        CheckpointError: not a checkpoint, not a playground run, or its entries do not fit.
    """
    c = load_checkpoint(path)
    pg = c.meta.get("playground")
    where = f"{c.path}/checkpoint.json"
    if not isinstance(pg, dict):
        raise CheckpointError(f"{where}: no 'playground' entry; not a playground run")
    try:
        params = validate_params(pg.get("params"))
        s = Session(params)
        x_tr, y_tr = np.asarray(pg["x_train"], float), np.asarray(pg["y_train"])
        x_te, y_te = np.asarray(pg["x_test"], float), np.asarray(pg["y_test"])
        if params.is_regression:
            y_tr, y_te = y_tr.astype(float), y_te.astype(float)
        else:
            y_tr, y_te = y_tr.astype(np.int64), y_te.astype(np.int64)
        if pg.get("custom_data"):
            s.custom = (np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te]))
            s._make_model()
        s.x_train, s.y_train, s.x_test, s.y_test = x_tr, y_tr, x_te, y_te
        s._order = s.rng.permutation(len(y_tr))
        s.model.load_state_dict({k: np.asarray(v, float) for k, v in pg["weights"].items()})
        s.step_count, s.epoch = c.step, c.epoch
        s.history = [(int(a), float(b), float(d)) for a, b, d in pg.get("history", [])]
        s.train_loss, s.test_loss = s._losses()
    except (ParamError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{where}: the playground entry does not fit: {e}") from None
    return s


def write_html(session: Session, out: str | os.PathLike[str]) -> None:
    """Export the page to ``out`` atomically."""
    atomic_write_text(out, export_html(session))
