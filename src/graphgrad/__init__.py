"""graphgrad: neural networks as computational graphs, trained by backpropagation.

``import graphgrad as gg``. Tensors are NumPy arrays that record the ops applied to them;
``loss.backward()`` runs reverse mode over that graph; ``gg.grad`` / ``gg.vjp`` give the same as
functions; ``gg.numerical_grad`` / ``gg.gradcheck`` check it against finite differences.
"""

from typing import Any

from . import (
    _memory,  # noqa: F401  (glibc malloc keeps freed memory; GRAPHGRAD_MALLOC)
    data,
    nn,
    optim,
    viz,
)
from ._backend import Device
from ._blas import blas, blas_info, get_num_threads, set_blas, set_num_threads, using_blas
from ._engine import detect_anomaly
from ._optable import ops_table
from ._state import (
    enable_grad,
    get_default_dtype,
    is_grad_enabled,
    manual_seed,
    no_grad,
    set_default_dtype,
)
from ._version import __version__
from .compiled import CompiledStep, CompileError, compile_step
from .errors import (
    AnomalyError,
    BackwardError,
    DeviceMismatchError,
    DeviceUnavailableError,
    GradcheckError,
    GradcheckWarning,
    GraphgradError,
    InPlaceError,
    NonDifferentiableError,
    ShapeError,
)
from .functional import grad, value_and_grad, vjp
from .gradcheck import GradcheckResult, gradcheck, numerical_grad
from .nn.functional import accuracy
from .ops import REGISTRY
from .paths import PathLimitError, backprop_grad, path_grad
from .per_sample import per_sample_grads
from .scalar import Scalar
from .tensor import (
    OP_FUNCTIONS,
    Tensor,
    arange,
    argmax,
    as_tensor,
    broadcast_to,
    concatenate,
    cross_entropy,
    eye,
    full,
    full_like,
    getitem,
    index_add,
    linear,
    linspace,
    log_softmax,
    logsumexp,
    matmul,
    max,
    mean,
    min,
    mse_loss,
    ones,
    ones_like,
    power,
    randn,
    reshape,
    softmax,
    stack,
    sum,
    sum_to,
    swapaxes,
    tensor,
    to_device,
    transpose,
    where,
    zeros,
    zeros_like,
)
from .units import Units, units

# One public function per elementwise op of the registry (gg.exp, gg.tanh, gg.softplus, ...).
globals().update(OP_FUNCTIONS)

__all__ = [
    "REGISTRY",
    "AnomalyError",
    "BackwardError",
    "CompileError",
    "CompiledStep",
    "Device",
    "DeviceMismatchError",
    "DeviceUnavailableError",
    "GradcheckError",
    "GradcheckResult",
    "GradcheckWarning",
    "GraphgradError",
    "InPlaceError",
    "NonDifferentiableError",
    "PathLimitError",
    "Scalar",
    "ShapeError",
    "Tensor",
    "Units",
    "__version__",
    "accuracy",
    "arange",
    "argmax",
    "as_tensor",
    "backprop_grad",
    "blas",
    "blas_info",
    "broadcast_to",
    "compile_step",
    "concatenate",
    "cross_entropy",
    "eye",
    "full",
    "full_like",
    "data",
    "detect_anomaly",
    "enable_grad",
    "get_default_dtype",
    "get_num_threads",
    "getitem",
    "grad",
    "gradcheck",
    "index_add",
    "is_grad_enabled",
    "linear",
    "linspace",
    "log_softmax",
    "logsumexp",
    "manual_seed",
    "matmul",
    "max",
    "mean",
    "min",
    "mse_loss",
    "nn",
    "no_grad",
    "numerical_grad",
    "ones",
    "ones_like",
    "ops_table",
    "optim",
    "path_grad",
    "per_sample_grads",
    "power",
    "randn",
    "reshape",
    "set_blas",
    "set_default_dtype",
    "set_num_threads",
    "softmax",
    "stack",
    "sum",
    "sum_to",
    "swapaxes",
    "tensor",
    "to_device",
    "transpose",
    "units",
    "using_blas",
    "value_and_grad",
    "viz",
    "vjp",
    "where",
    "zeros",
    "zeros_like",
    *OP_FUNCTIONS,
]


def __getattr__(name: str) -> Any:
    # Only for names that are not here; type checkers read the generated functions through it.
    raise AttributeError(f"module 'graphgrad' has no attribute {name!r}")
