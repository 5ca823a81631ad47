"""The op table. Importing this package registers every primitive in :data:`REGISTRY`."""

from . import _xp, elementwise, fused, linalg, reduction, shape
from ._registry import REGISTRY, Op

# The NumPy namespace of the rules offers every elementwise op by its name (``xp.cos``), as the
# Tensor and float namespaces do: a rule may use any op of the table.
_xp.adopt(op for op in REGISTRY.values() if op.elementwise)

__all__ = ["REGISTRY", "Op", "elementwise", "fused", "linalg", "reduction", "shape"]
