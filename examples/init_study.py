"""σ too small, right and too large in a 50-layer net: std of activations and gradients per layer.

    python examples/init_study.py                    # ReLU (He) and tanh (LeCun)
    graphgrad init-study --activation relu           # the same, one activation

Writes docs/results/init_study_<activation>.png and .md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from graphgrad.experiments import init_study, write_init_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--activations", default="relu,tanh")
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for act in args.activations.split(","):
        result = init_study(
            depth=args.depth,
            width=args.width,
            activation=act,
            samples=args.samples,
            rng=np.random.default_rng(args.seed),
        )
        print(result["table"], end="\n\n")
        for path in write_init_study(result, args.out):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
