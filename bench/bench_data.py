"""What the bounds on hostile data files cost on honest ones: time and peak memory, side by side.

1. IDX: ``read_idx`` (header checked first, incremental decompression into the array) vs
   the unbounded way (``gzip.decompress`` of the whole file, then ``parse_idx``), on a
   generated MNIST-sized file (60,000 x 28 x 28, gzip-compressed like the official one).
2. CIFAR-10: ``parse_batch`` (opcode scan for object count and depth, restricted
   unpickling, checks) vs the restricted unpickling alone, on a generated 10,000-image batch.

Peers take turns in one process (bench/benchlib.py); medians and ratios are reported, peak
traced memory (tracemalloc) too. Nothing is asserted about time.

Run: python bench/bench_data.py [--quick] [--json PATH]
"""

from __future__ import annotations

import gzip
import io
import sys
import tempfile
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import benchlib as B  # bench/ is on sys.path when a script here runs
import numpy as np

from graphgrad.data import parse_idx, read_idx
from graphgrad.data._cifar import _RestrictedUnpickler, parse_batch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from data_fixtures import cifar_batch, idx_bytes, py2_pickle


def _mnist_like(n: int) -> bytes:
    """Grey 28x28 images: a dark background with a bright blob, compressing like MNIST."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        r, c = rng.integers(4, 20, size=2)
        images[i, r : r + 8, c : c + 6] = rng.integers(100, 256, size=(8, 6), dtype=np.uint8)
    return gzip.compress(idx_bytes(images), compresslevel=6, mtime=0)


def _peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(quick: bool, threads: int) -> dict[str, Any]:
    rounds, target = (3, 0.05) if quick else (15, 0.5)
    n_images = 6000 if quick else 60000
    rows, ratios, checks = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train-images-idx3-ubyte.gz"
        path.write_bytes(_mnist_like(n_images))
        peers: dict[str, Callable[[], object]] = {
            "read_idx (bounded)": lambda: read_idx(path),
            "decompress all, parse": lambda: parse_idx(gzip.decompress(path.read_bytes())),
        }
        same = bool(np.array_equal(read_idx(path), parse_idx(gzip.decompress(path.read_bytes()))))
        checks.append({"name": "IDX: both readers return the same array", "passed": same})
        rows.append(_row(f"IDX {n_images}x28x28 .gz", peers, rounds, target))
        ratios.append(_ratio(rows[-1], "read_idx (bounded)", "decompress all, parse"))

    raw = py2_pickle(cifar_batch(10000, np.random.default_rng(0)))
    peers = {
        "parse_batch (scan + unpickle + checks)": lambda: parse_batch(raw, "batch"),
        "unpickle only": lambda: _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load(),
    }
    images, _ = parse_batch(raw, "batch")
    checks.append({"name": "CIFAR: 10,000 images parsed", "passed": images.shape[0] == 10000})
    rows.append(_row("CIFAR batch of 10,000", peers, rounds, target))
    ratios.append(_ratio(rows[-1], "parse_batch (scan + unpickle + checks)", "unpickle only"))
    for row in rows:
        print(row["benchmark"])
        for k, v in row["median"].items():
            print(f"  {k:40s} {v * 1e3:9.2f} ms   peak {row['peak_bytes'][k] / 2**20:7.1f} MiB")
    for r in ratios:
        print(f"{r['benchmark']}: {r['ratio']} = {r['value']:.2f}")
    return {
        "item": "data",
        "title": "Bounded readers of data files vs unbounded ones",
        "rows": rows,
        "ratios": ratios,
        "checks": checks,
        "notes": ["time: medians of interleaved rounds; memory: tracemalloc peak of one call"],
    }


def _row(
    name: str, peers: dict[str, Callable[[], object]], rounds: int, target: float
) -> dict[str, Any]:
    timing = B.interleave(peers, rounds, target)
    return {
        "benchmark": name,
        "unit": "s",
        "median": {k: v["median_s"] for k, v in timing.items()},
        "min": {k: v["min_s"] for k, v in timing.items()},
        "peak_bytes": {k: _peak(fn) for k, fn in peers.items()},
    }


def _ratio(row: dict[str, Any], num: str, den: str) -> B.Row:
    return B.ratio(
        row["benchmark"],
        f"{num} / {den} (time)",
        row["median"][num],
        row["median"][den],
        None,
        mins=(row["min"][num], row["min"][den]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return B.script_main(__doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
