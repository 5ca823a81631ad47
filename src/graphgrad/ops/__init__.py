"""The op table. Importing this package registers every primitive in :data:`REGISTRY`."""

from . import elementwise, fused, linalg, reduction, shape
from ._registry import REGISTRY, Op

__all__ = ["REGISTRY", "Op", "elementwise", "fused", "linalg", "reduction", "shape"]
