"""Run the lecture's topics in slide order and write the pages."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._context import Context
from ._page import Topic, write_pages

__all__ = ["TOPICS", "run_lecture", "topic_keys"]


def _topic(module: str, name: str) -> Callable[[Context], Topic]:
    def run(ctx: Context) -> Topic:
        import importlib

        fn: Callable[[Context], Topic] = getattr(
            importlib.import_module(f"graphgrad.lecture.{module}"), name
        )
        return fn(ctx)

    return run


#: (key, runner) in the order of the slides.
TOPICS: list[tuple[str, Callable[[Context], Topic]]] = [
    ("neuron", _topic("_graphs", "neuron")),
    ("activations", _topic("_models", "activations")),
    ("linear_templates", _topic("_models", "linear_templates")),
    ("universal_1d", _topic("_models", "universal_1d")),
    ("universal_2d", _topic("_models", "universal_2d")),
    ("raw_pixels", _topic("_models", "raw_pixels")),
    ("graph_example", _topic("_graphs", "graph_example")),
    ("granularity", _topic("_graphs", "granularity")),
    ("init_seeds", _topic("_training", "init_seeds")),
    ("numerical", _topic("_training", "numerical")),
    ("worked_example", _topic("_graphs", "worked_example")),
    ("softmax_classifier", _topic("_graphs", "classifier_topic")),
    ("paths_vs_backprop", _topic("_graphs", "paths_vs_backprop")),
    ("gradient_flow", _topic("_graphs", "gradient_flow")),
    ("data_parallel", _topic("_training", "data_parallel")),
]


def topic_keys() -> list[str]:
    """The topics' keys, in slide order."""
    return [k for k, _ in TOPICS]


def run_lecture(
    out: str | Path,
    quick: bool = False,
    only: Sequence[str] | None = None,
    seed: int = 0,
    data_root: str = "",
    log: Callable[[str], None] | None = None,
    command: str = "graphgrad lecture",
) -> list[Topic]:
    """Run the topics (all, or the keys in ``only``) into ``out``; write the pages.

    Returns:
        the :class:`Topic` records, in slide order.

    Raises:
        ValueError: an unknown key in ``only``.
    """
    from .. import __version__
    from ..viz import dot_available

    say = log if log is not None else (lambda _line: None)
    keys = topic_keys()
    wanted = list(only) if only else keys
    unknown = [k for k in wanted if k not in keys]
    if unknown:
        raise ValueError(f"unknown topic(s) {', '.join(unknown)}; choose from {', '.join(keys)}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=folder, quick=quick, seed=seed, data_root=data_root, log=say)
    topics: list[Topic] = []
    start = time.perf_counter()
    selected = [(k, fn) for k, fn in TOPICS if k in wanted]
    for n, (key, fn) in enumerate(selected, 1):
        t0 = time.perf_counter()
        topic = fn(ctx)
        topic.seconds = time.perf_counter() - t0
        if not topic.commands or not topic.commands[0].startswith("graphgrad lecture"):
            topic.commands.insert(0, f"graphgrad lecture --only {key}")
        if any(f.endswith(".dot") for f in topic.figures) and not dot_available():
            topic.notes.append(
                "Graphviz's `dot` is not installed, so this graph is given as DOT text: "
                "install Graphviz and run the command again to draw it."
            )
        topics.append(topic)
        say(f"[{n:2d}/{len(selected)}] {topic.title}: {topic.summary} ({topic.seconds:.1f} s)")
    meta: dict[str, Any] = {
        "command": command,
        "mode": "quick (small sizes)" if quick else "full",
        "version": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "seconds": time.perf_counter() - start,
        "topics": [t.key for t in topics],
    }
    write_pages(folder, topics, meta)
    return topics
