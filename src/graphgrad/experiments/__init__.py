"""The lecture's experiments as importable functions (used by the CLI and ``examples/``).

* :func:`init_study` -- σ too small / right / too large in a 50-layer net.
* :func:`universal_approximation` -- a 1-hidden-layer ReLU net is piecewise linear with at
  most H kinks.
* :func:`raw_pixels` -- linear, shallow and deep MLPs on raw pixels.
* :func:`numerical_vs_analytic`, :func:`eps_sweep` -- finite differences against backprop:
  cost and accuracy.
"""

from .init_study import init_study, verdict, write_init_study

__all__ = ["init_study", "verdict", "write_init_study"]
