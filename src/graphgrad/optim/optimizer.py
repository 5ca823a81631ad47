"""The optimiser base class: a list of parameters, per-parameter state, ``state_dict``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from .. import _backend, _fused, _memory
from ..errors import GraphgradError, ShapeError
from ..tensor import Tensor

__all__ = ["Optimizer", "OptimizerStateError", "updates_for"]


def updates_for(xp: Any) -> Any:
    """The module with the ``sgd`` and ``adam`` updates for arrays of namespace ``xp`` other
    than NumPy: :mod:`graphgrad.optim.cupy_updates` (one fused kernel per update) for CuPy,
    :mod:`graphgrad.optim.xp_updates` (portable in-place expressions) for any other."""
    if "cupy" in getattr(xp, "__name__", ""):
        from . import cupy_updates

        return cupy_updates
    from . import xp_updates

    return xp_updates


def state_like(w: Any, zero: bool = True) -> Any:
    """A new state array for parameter array ``w`` (its shape, dtype and device): zeros, or
    uninitialised with ``zero=False``. On the host it starts on a cache line
    (:func:`graphgrad._memory.empty`), where the update kernels stream through it fastest."""
    if type(w) is np.ndarray:
        return _memory.zeros_like(w) if zero else _memory.empty_like(w)
    xp = _backend.namespace_of(w)
    return xp.zeros_like(w) if zero else xp.empty_like(w)


def on_device_of(buf: Any, w: Any) -> Any:
    """``buf`` on the device of ``w``: itself when it is there already (the usual case, checked
    cheaply), else a copy moved there (a model moved with ``Module.to`` after the optimiser
    made its state)."""
    if type(buf) is type(w) and (type(w) is np.ndarray or buf.device == w.device):
        return buf
    return _backend.to_device(buf, _backend.device_of(w))


class OptimizerStateError(GraphgradError, ValueError):
    """An optimiser state dict does not fit this optimiser (type, parameter count or shapes)."""


class Optimizer:
    """Updates parameters in place from their ``.grad``.

    Subclasses set ``hyper_names`` (the hyper-parameters saved in the state dict) and
    ``state_names`` (the per-parameter arrays), and implement :meth:`step`.

    Attributes:
        params: the parameters, in the order given.
        state: per parameter index, a dict of arrays (and ``"step"``, an int, where used).
    """

    hyper_names: ClassVar[tuple[str, ...]] = ("lr",)
    state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        self.params: list[Tensor] = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got no parameters to optimise")
        seen: set[int] = set()
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(
                    f"{type(self).__name__}: parameter #{i} is not a Tensor with requires_grad=True"
                )
            if _backend.dtype_kind(p.data.dtype) != "f":
                raise TypeError(f"{type(self).__name__}: parameter #{i} is {p.data.dtype}")
            if p._op is not None:
                raise TypeError(
                    f"{type(self).__name__}: parameter #{i} (shape {p.shape}) is the result of "
                    f"op '{p._op.name}', not a leaf: an update of it would never reach the "
                    f"tensors it was computed from (PyTorch refuses it too). Optimise the leaf "
                    f"tensors themselves, made with requires_grad=True"
                )
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: parameter #{i} is listed twice")
            seen.add(id(p))
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr}")
        self.lr = float(lr)
        self.state: dict[int, dict[str, Any]] = {}
        self._scratch: dict[int, np.ndarray] = {}

    def zero_grad(self) -> None:
        """Forget accumulated gradients (``p.grad = None``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient."""
        raise NotImplementedError

    def _grad_array(self, i: int, p: Tensor) -> Any:
        """``p.grad`` as the array an update reads: a Tensor's values (the gradients a
        ``backward(create_graph=True)`` leaves are Tensors), of the parameter's shape."""
        g = p.grad
        if isinstance(g, Tensor):
            g = g.data
        if g is not None and tuple(g.shape) != tuple(p.data.shape):
            raise ShapeError(
                f"{type(self).__name__}: parameter #{i} has shape {tuple(p.data.shape)} but its "
                f".grad has shape {tuple(g.shape)}: a gradient must have its parameter's shape "
                f"(it is not broadcast)"
            )
        return g

    def _read_only(self, i: int) -> ValueError:
        """The error for a parameter whose array cannot be updated in place."""
        return ValueError(
            f"{type(self).__name__}: parameter #{i} is a read-only array (built on "
            f"np.frombuffer, np.broadcast_to or a memory map?), which the update cannot change "
            f"in place; give the Tensor a writable copy: p.data = p.data.copy()"
        )

    def _scratch_for(self, i: int, p: Tensor) -> np.ndarray | None:
        """A scratch array of p's shape and dtype, reused across steps (not state), for the
        NumPy path of the updates; ``None`` when the compiled kernels do the update."""
        if _fused.COMPILED:
            return None
        buf = self._scratch.get(i)
        if buf is None:
            buf = self._scratch[i] = state_like(p.data, zero=False)
        return buf

    def hyperparameters(self) -> dict[str, Any]:
        """The hyper-parameters, by name."""
        out: dict[str, Any] = {}
        for name in self.hyper_names:
            v = getattr(self, name)
            out[name] = list(v) if isinstance(v, tuple) else v
        return out

    def state_dict(self) -> dict[str, Any]:
        """``{"type", "hyper", "state"}``; ``state`` maps a parameter index to its arrays
        (NumPy copies in host memory, whatever the device) and step count. Everything
        :meth:`load_state_dict` needs to continue, on any device."""
        return {
            "type": type(self).__name__,
            "hyper": self.hyperparameters(),
            "state": {
                i: {
                    k: (v if isinstance(v, int) else np.array(_backend.to_numpy(v), copy=True))
                    for k, v in s.items()
                }
                for i, s in self.state.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore hyper-parameters and per-parameter state saved by :meth:`state_dict`; the
        arrays are copied onto the device of their parameter.

        Raises:
            OptimizerStateError: another optimiser type, a parameter index out of range, an
                unknown state entry or an array of the wrong shape.
        """
        name = type(self).__name__
        if state.get("type") != name:
            raise OptimizerStateError(f"optimizer state is for {state.get('type')!r}, not {name!r}")
        new_state: dict[int, dict[str, Any]] = {}
        for key, entry in dict(state.get("state", {})).items():
            i = int(key)
            if not 0 <= i < len(self.params):
                raise OptimizerStateError(
                    f"{name} state: parameter index {i} is out of range (the optimiser has "
                    f"{len(self.params)} parameters)"
                )
            p = self.params[i]
            restored: dict[str, Any] = {}
            for k, v in entry.items():
                if k == "step":
                    restored[k] = int(v)
                    continue
                if k not in self.state_names:
                    raise OptimizerStateError(f"{name} state: unknown entry {k!r} for #{i}")
                arr = _backend.to_numpy(v)
                if arr.shape != p.shape:
                    raise OptimizerStateError(
                        f"{name} state: {k} of parameter #{i} has shape {arr.shape}, the "
                        f"parameter has {p.shape}"
                    )
                host = _memory.empty(arr.shape, _backend.dtype_name(p.data.dtype))
                host[...] = arr
                restored[k] = _backend.to_device(host, _backend.device_of(p.data))
            new_state[i] = restored
        hyper = dict(state.get("hyper", {}))
        for k in hyper:
            if k not in self.hyper_names:
                raise OptimizerStateError(f"{name} state: unknown hyper-parameter {k!r}")
        for k, v in hyper.items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)
        self.state = new_state

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({len(self.params)} parameters, {hp})"
