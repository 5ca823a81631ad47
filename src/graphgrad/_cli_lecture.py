"""Subcommand ``lecture``: the whole lecture as reproducible figures and tables, one per topic,
with the numbers measured, in one page (``DIR/index.html``, ``DIR/README.md``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._cli_args import int_at_least

_EPILOG = """\
examples:
  graphgrad lecture --quick --out /tmp/lecture      small sizes, about a minute
  graphgrad lecture --out lecture                   full sizes, several minutes
  graphgrad lecture --only worked_example,softmax_classifier --out /tmp/lecture

topics, in slide order:
  {topics}"""


def register(sub: Any) -> None:
    """Add ``lecture`` to the ``graphgrad`` command."""
    from .lecture import topic_keys

    p = sub.add_parser(
        "lecture",
        help="regenerate the lecture, slide by slide: figures, tables and measured numbers",
        description="Run every topic of the lecture 'Neural Networks & Backpropagation' in "
        "slide order (the neuron, activations, linear templates, universal approximation, raw "
        "pixels, computational graphs, granularity, initialisation, numerical vs analytic "
        "gradients, the worked example, the softmax classifier as units, path sums vs "
        "backprop, gradient flow, data parallelism) and write one figure or table per topic "
        "and a page DIR/index.html (and DIR/README.md) that shows each with the slide's "
        "claim, the command that made it and the numbers it measured. Needs matplotlib "
        "(pip install 'graphgrad[train]'); graphs are drawn by Graphviz's dot if installed.",
        epilog=_EPILOG.format(topics="\n  ".join(topic_keys())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        default="lecture",
        metavar="DIR",
        help="folder to write into (created; default: ./lecture)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (about a minute): fewer steps, epochs, seeds and samples",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="KEY[,KEY...]",
        help="run only these topics, at least one (see the list below)",
    )
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of every random generator")
    p.add_argument(
        "--data-root",
        default="",
        metavar="DIR",
        help="where to look for Fashion-MNIST / CIFAR-10 (default: the usual places)",
    )
    p.set_defaults(handler=_lecture)


def _lecture(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401  (the figures need it: say so before any work)
    except ImportError:
        print(
            "graphgrad lecture: needs matplotlib: pip install 'graphgrad[train]'", file=sys.stderr
        )
        return 1
    from .lecture import run_lecture, topic_keys

    only = None
    if args.only is not None:  # "--only ''" names no topic: refused, not the whole lecture
        only = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = [k for k in only if k not in topic_keys()]
        if unknown or not only:
            what = f"unknown topic(s) {', '.join(unknown)}" if only else "--only names no topic"
            print(
                f"graphgrad lecture: error: {what}; choose from {', '.join(topic_keys())}",
                file=sys.stderr,
            )
            return 2
    blocked = _not_a_folder(Path(args.out))
    if blocked is not None:
        print(
            f"graphgrad lecture: error: --out {args.out}: {blocked} is a file, not a folder; "
            f"give a folder to write the lecture into",
            file=sys.stderr,
        )
        return 2
    command = "graphgrad lecture" + (" --quick" if args.quick else "")
    command += f" --out {args.out}"
    if only:
        command += f" --only {','.join(only)}"
    try:
        run_lecture(
            args.out,
            quick=args.quick,
            only=only,
            seed=args.seed,
            data_root=args.data_root,
            log=lambda line: print(line, flush=True),
            command=command,
        )
    except OSError as e:
        from .cli import one_line

        why = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else one_line(e)
        print(f"graphgrad lecture: error: cannot write into {args.out}: {why}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}/index.html, {args.out}/README.md and {args.out}/lecture.json")
    return 0


def _not_a_folder(out: Path) -> Path | None:
    """The existing file among ``out`` and its parents that keeps it from being a folder
    (``None`` when there is none): checked before any work."""
    for q in (out, *out.parents):
        if q.exists():
            return None if q.is_dir() else q
    return None
