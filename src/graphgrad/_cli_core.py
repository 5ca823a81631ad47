"""Core subcommands: ``ops`` (the op table) and ``demo`` (the lecture's worked example)."""

from __future__ import annotations

import argparse
from typing import Any

from ._cli_args import int_at_least


def register(sub: Any) -> None:
    """Add ``ops`` and ``demo`` to the ``graphgrad`` command."""
    p = sub.add_parser(
        "ops",
        help="print the table of every op and its local derivatives",
        description="Print every registered op: its forward formula, its local derivative per "
        "argument, whether it is differentiable there and its convention at kinks. Generated "
        "from the registry, so it is always true to the code.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--format", choices=["text", "markdown"], default="text", help="table format")
    p.set_defaults(handler=_ops)

    d = sub.add_parser(
        "demo",
        help="the lecture's worked example e = (a+b)(b+1) and a tiny MLP trained on two moons",
        description="Run the lecture's worked example e = (a+b)(b+1) at a=2, b=1 (forward, "
        "backward, and the numerical check), then train a small MLP on two moons with the "
        "engine alone.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument(
        "--steps",
        type=int_at_least(1, 1_000_000),
        default=300,
        help="training steps of the MLP demo",
    )
    d.add_argument("--seed", type=int_at_least(0), default=0, help="seed of data and weights")
    d.set_defaults(handler=_demo)


def _ops(args: argparse.Namespace) -> int:
    from ._optable import ops_table

    print(ops_table(args.format))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(steps=args.steps, seed=args.seed)
