"""Peak memory of one MLP training step, graphgrad vs PyTorch, against what the step must hold.

The step is bench_mlp_step's (forward, softmax cross-entropy, backward, SGD momentum 0.9),
measured in the steady state: after two warm-up steps (so the momentum buffers exist) and
``zero_grad()`` (so no gradients are held), one step runs under a tracer. Its peak is

    peak = parameters + input batch + the largest increase of live memory during the step

and is compared with the memory the step cannot do without,

    reference = parameters + gradients + saved activations,

saved activations = the input batch x (S, D), the two ReLU outputs (S, H1) and (S, H2), and
the softmax probabilities (S, T): what the backward pass reads (a ReLU's mask can be read off
its output; each Linear needs its input). Target (issue 5): peak / reference <= 1.2. The
momentum buffers (optimiser state, one more copy of the parameters) are reported apart.

How live memory is traced:

* graphgrad: ``tracemalloc`` (NumPy reports its array buffers to it, and the Python objects
  of the graph are counted too): the peak of traced memory during the step.
* PyTorch: its profiler's memory timeline (``profile_memory=True``; every tensor allocation
  and free on the CPU, in order; the running sum's maximum). Cross-check: glibc's
  ``mallinfo2()`` in-use bytes sampled after every ATen op (a TorchDispatchMode), which
  sees allocations that are not tensors too but misses temporaries freed inside one op.

Run: python bench/bench_memory.py [--json PATH]
"""

from __future__ import annotations

import ctypes
import gc
import sys
import tracemalloc
from collections.abc import Sequence
from typing import Any

import benchlib as B  # bench/ is on sys.path when a script here runs
from bench_mlp_step import SHAPES, GraphgradPeer, TorchPeer, init_weights, make_batch, shape_name

TARGET = "<= 1.2"
MB = 1e6


def reference_bytes(sizes: Sequence[int], batch: int) -> dict[str, int]:
    params = sum(sizes[k] * sizes[k + 1] + sizes[k + 1] for k in range(len(sizes) - 1)) * 4
    acts = batch * (sizes[0] + sum(sizes[1:-1]) + sizes[-1]) * 4
    return {
        "parameters": params,
        "gradients": params,
        "saved_activations": acts,
        "total": 2 * params + acts,
        "input_batch": batch * sizes[0] * 4,
        "optimizer_state": params,
    }


def graphgrad_peak(peer: GraphgradPeer) -> int:
    """The largest increase of traced memory during one step (after zero_grad)."""
    peer.step()
    peer.step()
    peer.opt.zero_grad()
    peer.loss = None
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        loss = __import__("graphgrad").cross_entropy(peer.model(peer.x), peer.y)
        loss.backward()
        peer.opt.step()
        _, peak = tracemalloc.get_traced_memory()
        del loss
    finally:
        tracemalloc.stop()
    return peak - base


def _torch_step_parts(peer: TorchPeer) -> None:
    loss = peer.torch.nn.functional.cross_entropy(peer.net(peer.x), peer.y)
    loss.backward()
    peer.opt.step()
    del loss


def torch_peak_profiler(peer: TorchPeer) -> int | None:
    """The running sum's maximum over the profiler's memory timeline (None if unavailable)."""
    from torch.profiler import ProfilerActivity, profile

    peer.step()
    peer.step()
    peer.opt.zero_grad()
    peer.loss = None
    gc.collect()
    try:
        from torch.profiler._memory_profiler import Action

        with profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        ) as prof:
            _torch_step_parts(peer)
        timeline = prof._memory_profile().timeline
    except Exception:  # private API: may change between releases
        return None
    cur = peak = 0
    for _t, action, _key, size in timeline:
        if action == Action.CREATE:
            cur += size
        elif action == Action.DESTROY:
            cur -= size
        peak = max(peak, cur)
    return peak


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def torch_peak_mallinfo(peer: TorchPeer) -> int | None:
    """glibc's in-use bytes sampled after every ATen op of the step (None off glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    from torch.utils._python_dispatch import TorchDispatchMode

    def used() -> int:
        m = libc.mallinfo2()
        return int(m.uordblks + m.hblkhd)

    class PeakMode(TorchDispatchMode):
        peak = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            self.peak = max(self.peak, used())
            return out

    peer.step()
    peer.opt.zero_grad()
    peer.loss = None
    gc.collect()
    base = used()
    mode = PeakMode()
    with mode:
        _torch_step_parts(peer)
    return max(mode.peak - base, 0)


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    """Item 5 of the suite as a record (see run_all.py); ``quick`` changes nothing (fast)."""
    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
        notes.append("PyTorch is not installed: graphgrad only.")
    with B.threads_limited(threads):
        for sizes, batch in SHAPES:
            name = shape_name(sizes, batch)
            ref = reference_bytes(sizes, batch)
            w0 = init_weights(sizes, 0)
            x, y = make_batch(sizes[0], sizes[-1], batch, 0)
            fixed = ref["parameters"] + ref["input_batch"]
            peaks: dict[str, int | None] = {"graphgrad": graphgrad_peak(GraphgradPeer(w0, x, y))}
            cross: int | None = None
            if have_torch:
                peaks["pytorch"] = torch_peak_profiler(TorchPeer(w0, x, y))
                cross = torch_peak_mallinfo(TorchPeer(w0, x, y))
            step_peak = {k: (fixed + v if v is not None else None) for k, v in peaks.items()}
            row = {
                "benchmark": name,
                "unit": "MB",
                "reference_bytes": ref,
                "increase_bytes": peaks,
                "peak_bytes": step_peak,
                "median": {k: (v / MB if v is not None else None) for k, v in step_peak.items()},
                "pytorch_mallinfo_cross_check_bytes": (fixed + cross) if cross else None,
            }
            rows.append(row)
            print(
                f"{name}: reference (params + grads + saved activations) "
                f"{ref['total'] / MB:.2f} MB; optimiser state {ref['optimizer_state'] / MB:.2f} MB"
            )
            for k, v in step_peak.items():
                if v is None:
                    print(f"  {k:10s} not measured")
                    continue
                print(f"  {k:10s} peak {v / MB:7.2f} MB   peak / reference {v / ref['total']:.2f}")
                ratios.append(
                    B.ratio(
                        name,
                        f"{k} peak / (params + grads + activations)",
                        v,
                        ref["total"],
                        TARGET if k == "graphgrad" else None,
                    )
                )
            if cross:
                print(f"  pytorch (mallinfo2 per op) peak {(fixed + cross) / MB:7.2f} MB")
            g, t = step_peak.get("graphgrad"), step_peak.get("pytorch")
            if g and t:
                ratios.append(B.ratio(name, "graphgrad peak / PyTorch peak", g, t, None))
    notes.append(
        "graphgrad: tracemalloc; PyTorch: torch.profiler memory timeline (profile_memory), "
        "with glibc mallinfo2() sampled after every ATen op as a cross-check. Peak = "
        "parameters + input batch + the largest increase of live memory in one steady-state "
        "step after zero_grad(); the momentum buffers are not counted."
    )
    return {
        "item": "memory",
        "title": "Peak memory of a training step",
        "rows": rows,
        "ratios": ratios,
        "checks": [
            {
                "name": f"{r['benchmark']}: peaks measured",
                "value": r["increase_bytes"],
                "passed": all(v is not None and v > 0 for v in r["increase_bytes"].values()),
            }
            for r in rows
        ],
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    return B.script_main(__doc__, run, argv, quick_help="accepted for symmetry (always fast)")


if __name__ == "__main__":
    sys.exit(main())
