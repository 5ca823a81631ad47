"""How live the playground is: server-side updates per second, and frames per second in a browser.

The workload of the issue: 6 hidden layers of 8 ReLU neurons, 500 points (3-arm spiral), a
100x100 decision-region grid. One *update* is what the server does between two frames while
playing: one training step (mini-batch of 10: forward, backward, SGD), then the frame (the
grid's forward pass, per-neuron maps, weights, losses on all points) encoded as JSON.

1. Server side, in this process: the update and its parts (step; frame; JSON), taking turns
   round by round; reported as the median of the rounds, with BLAS at its default threads and
   at 1 thread (threadpoolctl).
2. In the browser (needs Debian's chromium and playwright; skipped otherwise): the page
   served on 127.0.0.1, play pressed, frames counted by the page itself (each frame: received
   over the WebSocket, drawn: heat map, 48 neuron maps, links, loss curve; acknowledged) over a
   fixed wall time; frames per second = frames / seconds.

Run: python bench/bench_playground.py [--quick] [--no-browser] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARAMS = {
    "dataset": "spiral", "classes": 3, "n_points": 500, "layers": [8] * 6,
    "activation": "relu", "init": "he", "grid": 100, "lr": 0.01, "optimizer": "adam",
}  # fmt: skip


@contextlib.contextmanager
def _blas_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - bench extra missing
        yield
        return
    with threadpool_limits(limits=n):
        yield


def server_side(rounds: int, per_round: int, threads: int | None) -> dict[str, float]:
    """Median milliseconds per call of the update and its parts, over ``rounds`` rounds."""
    from graphgrad.playground import Session

    s = Session(PARAMS)
    parts: dict[str, Callable[[], Any]] = {
        "update": lambda: json.dumps(_step_frame(s)),
        "step": lambda: s.step(),
        "frame": lambda: s.frame(full=False),
    }
    frame = s.frame(full=False)  # the JSON part encodes a frame made once
    parts["json"] = lambda: json.dumps(frame)
    out: dict[str, list[float]] = {k: [] for k in parts}
    with _blas_threads(threads):
        for fn in parts.values():
            fn()  # warm up
        names = list(parts)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.perf_counter()
                for _ in range(per_round):
                    parts[name]()
                out[name].append((time.perf_counter() - t0) / per_round * 1e3)
    return {k: statistics.median(v) for k, v in out.items()}


def _step_frame(s: Any) -> dict[str, Any]:
    s.step()
    f: dict[str, Any] = s.frame(full=False)
    return f


def browser_fps(seconds: float) -> dict[str, Any] | None:
    """Frames per second the page draws while playing, or None without chromium."""
    chromium = "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.path.exists(chromium):
        return None
    sys.path.insert(0, str(ROOT / "tests"))
    from playground_fixtures import CHROMIUM_ARGS, running_server

    q = "&".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in PARAMS.items()
    )
    with running_server() as url, sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = b.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"{url}/#{q}")
        page.wait_for_function("window.pg && pg.frame && pg.params.layers.length === 6")
        page.click("#play")
        page.wait_for_function("pg.frame.step > 5")
        f0, s0 = page.evaluate("[pg.frames, pg.frame.step]")
        t0 = time.perf_counter()
        time.sleep(seconds)
        f1, s1 = page.evaluate("[pg.frames, pg.frame.step]")
        t1 = time.perf_counter()
        page.click("#play")
        b.close()
    return {
        "seconds": t1 - t0,
        "frames": f1 - f0,
        "steps": s1 - s0,
        "fps": (f1 - f0) / (t1 - t0),
    }


def screenshots(out_dir: Path) -> list[Path]:
    """The README's pictures: a classification learnt live, and the inside view of a neuron."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from playground_fixtures import CHROMIUM, CHROMIUM_ARGS, running_server

    out_dir.mkdir(parents=True, exist_ok=True)
    spiral = (
        "#dataset=spiral&classes=3&noise=0.1&n_points=400&layers=8,8,6&activation=tanh"
        "&optimizer=adam&lr=0.03&steps_per_update=20&features=x1,x2"
    )
    paths = [out_dir / "playground_classification.png", out_dir / "playground_inside.png"]
    with running_server() as url, sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = b.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(url + "/" + spiral)
        page.wait_for_function("window.pg && pg.frame && pg.params.layers.length === 3")
        page.click("#play")
        page.wait_for_function("pg.frame.step >= 3000", timeout=120_000)
        page.click("#play")
        page.fill("#hv_layer", "3")  # the last hidden layer: where the classes come apart
        page.click("#hv_show")
        page.wait_for_function("pg.playing === false && pg.frame.hidden_view")
        page.screenshot(path=str(paths[0]), clip={"x": 0, "y": 0, "width": 1300, "height": 980})
        page.set_viewport_size({"width": 1600, "height": 1000})  # the whole graph in view
        page.fill("#sample", "3")
        w, x = page.evaluate("[pg.frame.weights[0], pg.points.train[3]]")
        z = [abs(sum(wi * xi for wi, xi in zip(row, x, strict=True)) + b)
             for row, b in zip(w["w"], w["b"], strict=True)]  # fmt: skip
        unit = z.index(min(z))  # the least saturated neuron of layer 1 for this sample
        page.click(f'#net canvas[data-layer="1"][data-unit="{unit}"]')
        page.wait_for_function("pg.neuronView && pg.neuronView.layer === 1")
        page.click("#showgrad")
        page.click("#gradcheck")
        page.wait_for_function("pg.gradcheck !== null")
        box = page.locator("main > section").bounding_box()
        page.screenshot(path=str(paths[1]), clip=box, full_page=True)
        b.close()
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few rounds, 3 s in the browser")
    ap.add_argument("--no-browser", action="store_true", help="server side only")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--screenshots", metavar="DIR", help="only write the README's screenshots")
    args = ap.parse_args(argv)
    if args.screenshots:
        for path in screenshots(Path(args.screenshots)):
            print(f"wrote {path}")
        return 0
    rounds, per_round, seconds = (3, 5, 3.0) if args.quick else (9, 20, 10.0)
    res: dict[str, Any] = {"workload": PARAMS, "quick": args.quick, "server_ms": {}}
    print("playground update: 6x8 ReLU, 500 points, 100x100 grid (median ms per call)")
    for label, threads in (("default BLAS threads", None), ("1 BLAS thread", 1)):
        ms = server_side(rounds, per_round, threads)
        res["server_ms"][label] = ms
        parts = "  ".join(f"{k} {v:.2f}" for k, v in ms.items())
        print(f"  {label:22s} {parts}   -> {1e3 / ms['update']:.1f} updates/s")
    if not args.no_browser:
        fps = browser_fps(seconds)
        res["browser"] = fps
        if fps is None:
            print("browser: skipped (needs playwright and /usr/bin/chromium)")
        else:
            print(
                f"browser (headless chromium): {fps['fps']:.1f} frames/s "
                f"({fps['frames']} frames, {fps['steps']} steps in {fps['seconds']:.1f} s)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
