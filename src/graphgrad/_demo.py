"""``graphgrad demo``: the lecture's worked example, then a small MLP on two moons."""

from __future__ import annotations

import itertools

import numpy as np


def run_demo(steps: int = 300, seed: int = 0) -> int:
    """Print e = (a+b)(b+1) at a=2, b=1 with its gradients, then train a 2-16-16-2 MLP."""
    import graphgrad as gg
    from graphgrad.data import two_moons

    a = gg.tensor(2.0, requires_grad=True)
    b = gg.tensor(1.0, requires_grad=True)
    c = a + b
    d = b + 1
    e = c * d
    e.backward()
    num = gg.numerical_grad(lambda x, y: (x + y) * (y + 1), [np.array(2.0), np.array(1.0)])
    print("The lecture's example e = (a+b)(b+1) at a=2, b=1")
    print(f"  forward:  c = a+b = {c.item():g}, d = b+1 = {d.item():g}, e = c*d = {e.item():g}")
    print(f"  backprop: de/da = {a.grad:g}, de/db = {b.grad:g}   (de/db = 1*2 + 1*3)")
    print(f"  central differences: de/da = {num[0]:.6f}, de/db = {num[1]:.6f}")

    rng = np.random.default_rng(seed)
    x, y = two_moons(200, noise=0.1, rng=rng)
    x = x.astype(np.float32)
    sizes = [2, 16, 16, 2]
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_out, fan_in)).astype(np.float32)
        params += [
            gg.Tensor(w, requires_grad=True),
            gg.Tensor(np.zeros(fan_out, np.float32), requires_grad=True),
        ]
    print(
        f"\nMLP 2-16-16-2 (ReLU, He init), softmax cross-entropy over S={len(x)} two-moons points"
    )
    for step in range(steps + 1):
        h = gg.tensor(x)
        for i in range(0, len(params), 2):
            h = gg.linear(h, params[i], params[i + 1])
            if i < len(params) - 2:
                h = gg.relu(h)
        loss = gg.cross_entropy(h, y)
        for p in params:
            p.grad = None
        loss.backward()
        for p in params:
            p.data -= 0.5 * p.grad
        if step % max(1, steps // 5) == 0:
            acc = float(np.mean(np.argmax(h.data, axis=1) == y))
            print(f"  step {step:4d}  loss {loss.item():.4f}  accuracy {acc:.3f}")
    return 0
