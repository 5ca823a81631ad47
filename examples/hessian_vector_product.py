"""A Hessian-vector product by differentiating twice: H v = d/dx (grad f(x) . v).

For f(x) = sum(tanh(W x)^2) we compare gg's H v with central differences of the gradient.
Run: python examples/hessian_vector_product.py
"""

import numpy as np

import graphgrad as gg

rng = np.random.default_rng(0)
W = rng.standard_normal((4, 3))


def f(x: gg.Tensor) -> gg.Tensor:
    return (gg.tanh(gg.Tensor(W) @ x) ** 2).sum()


x0 = rng.standard_normal(3)
v = rng.standard_normal(3)

# reverse over reverse: the vjp of grad(f) with cotangent v is H^T v = H v (H is symmetric)
_, back = gg.vjp(gg.grad(f), gg.Tensor(x0))
(hv,) = back(gg.Tensor(v))

eps = 1e-5
g = gg.grad(f)
fd = (g(x0 + eps * v).data - g(x0 - eps * v).data) / (2 * eps)
print("H v (backprop twice):   ", np.round(hv.data, 8))
print("H v (central diff of g):", np.round(fd, 8))
print("max difference:", float(np.max(np.abs(hv.data - fd))))
