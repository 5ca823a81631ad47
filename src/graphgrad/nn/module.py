"""``Module``: a callable that owns named parameters and sub-modules, PyTorch-style.

Assigning a Tensor with ``requires_grad=True`` to an attribute registers it as a parameter;
assigning a Module registers it as a sub-module; :meth:`Module.register_buffer` registers an
array that is state but not learned. ``model.to(device)`` moves parameters and buffers.
Names are dotted paths (``"0.weight"``, ``"encoder.2.bias"``), the same as PyTorch's, so
weights saved from a graphgrad model load into the matching ``torch.nn`` model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .. import _backend
from ..errors import DeviceMismatchError, GraphgradError
from ..tensor import Tensor

__all__ = ["Module", "StateDictError"]


class StateDictError(GraphgradError, ValueError):
    """A state dict does not fit the model: names missing or unexpected, or shapes differ."""


class Module:
    """Base class of layers and models: override :meth:`forward`, call the module itself.

    Attributes:
        training: ``True`` after :meth:`train` (the default), ``False`` after :meth:`eval`.
    """

    training: bool
    _parameters: dict[str, Tensor]
    _modules: dict[str, Module]
    _buffers: dict[str, Any]

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError(
                f"{type(self).__name__}: call super().__init__() before assigning {name!r}"
            )
        modules = self._modules
        buffers = self.__dict__.get("_buffers", {})
        is_param = isinstance(value, Tensor) and value.requires_grad
        is_module = isinstance(value, Module)
        # A name reassigned with the same kind keeps its place (dict assignment to an
        # existing key), as in PyTorch: Sequential's layer order and state_dict order stay.
        if name in params and not is_param:
            del params[name]
        if name in modules and not is_module:
            del modules[name]
        if name in buffers and not isinstance(value, Module | Tensor):
            buffers[name] = value  # a buffer stays a buffer when reassigned
        elif name in buffers:
            del buffers[name]
        if is_param:
            params[name] = value
        elif is_module:
            modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: Any) -> None:
        """Register ``value`` (an array of any namespace, or None) as buffer ``name``: state
        that is not learned (no gradient, not given to optimisers) but is moved by
        :meth:`to` and saved by :meth:`state_dict`. Read and reassign it as ``self.<name>``."""
        if isinstance(value, Tensor | Module):
            raise TypeError(
                f"register_buffer({name!r}): expected an array, got {type(value).__name__}"
            )
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, value: Tensor | None) -> None:
        """Register ``value`` (a Tensor that requires a gradient) as parameter ``name``."""
        if value is not None and not (isinstance(value, Tensor) and value.requires_grad):
            raise TypeError(f"register_parameter({name!r}): expected a Tensor with requires_grad")
        setattr(self, name, value)

    def add_module(self, name: str, module: Module) -> None:
        """Register ``module`` as sub-module ``name``."""
        if not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module, got {type(module).__name__}")
        setattr(self, name, module)

    # ------------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses override it."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for this module ("" unless ``prefix``) and every descendant."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            yield name, mod
            children = [(f"{name}.{k}" if name else k, m) for k, m in mod._modules.items()]
            stack.extend(reversed(children))

    def children(self) -> Iterator[Module]:
        """The direct sub-modules, in registration order."""
        yield from self._modules.values()

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, parameter) for every parameter, in registration order; a parameter
        shared between modules is listed once, under its first name."""
        seen: set[int] = set()
        for mod_name, mod in self.named_modules():
            for pname, p in mod._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{pname}" if mod_name else pname), p

    def parameters(self) -> list[Tensor]:
        """Every parameter, in the order of :meth:`named_parameters`."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        """(dotted name, array) for every buffer that is not None, in registration order."""
        for mod_name, mod in self.named_modules():
            for bname, b in mod._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{bname}" if mod_name else bname), b

    # ------------------------------------------------------------------ devices
    def to(self, device: str | _backend.Device | None) -> Module:
        """Move every parameter (and its gradient) and every buffer to ``device``, in place;
        returns self.

        The Parameter objects stay the same Tensors (their ``.data`` is replaced by a copy on
        the device), so an optimiser built before the move keeps working: its state (momentum,
        Adam's moments) follows its parameters to their device at its next step. Moving to the
        device the model is on already copies nothing.

        Args:
            device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"array-api-strict"`` ... (see
                :func:`graphgrad.tensor`), or a Device.

        Raises:
            graphgrad.errors.DeviceUnavailableError: the device's library or hardware is
                missing (the message says how to install it); nothing is moved then.
            ValueError: an unknown device name.
        """
        dev = _backend.parse_device(device)
        for _, p in self.named_parameters():
            p.data = _backend.to_device(p.data, dev)
            if p.grad is not None:
                p.grad = _backend.to_device(p.grad, dev)
        for _, mod in self.named_modules():
            for bname, b in list(mod._buffers.items()):
                if b is not None:
                    moved = _backend.to_device(b, dev)
                    mod._buffers[bname] = moved
                    object.__setattr__(mod, bname, moved)
        return self

    @property
    def device(self) -> _backend.Device:
        """The device holding the parameters and buffers (``cpu`` for a module without any).

        Raises:
            DeviceMismatchError: they are on different devices (the message names two).
        """
        found: dict[_backend.Device, str] = {}
        arrays = [(n, p.data) for n, p in self.named_parameters()]
        for name, arr in [*arrays, *self.named_buffers()]:
            found.setdefault(_backend.device_of(arr), name)
            if len(found) > 1:
                (d1, n1), (d2, n2) = found.items()
                raise DeviceMismatchError(
                    f"{type(self).__name__}.device: {n1} is on {d1} but {n2} is on {d2}; move "
                    f"the whole model with .to(device)"
                )
        return next(iter(found), _backend.CPU)

    def num_parameters(self) -> int:
        """dim(θ): the number of scalar parameters."""
        return sum(p.data.size for p in self.parameters())

    def zero_grad(self) -> None:
        """Forget accumulated gradients (``p.grad = None`` for every parameter)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and its descendants; returns self."""
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``); returns self."""
        return self.train(False)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Name -> a NumPy copy (in host memory, whatever the device) of each parameter's
        array, in :meth:`named_parameters` order, then of each buffer."""
        out = {name: np.array(_backend.to_numpy(p.data), copy=True)
               for name, p in self.named_parameters()}  # fmt: skip
        for name, b in self.named_buffers():
            out[name] = np.array(_backend.to_numpy(b), copy=True)
        return out

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers, in place (optimisers keep working), on
        the device each one is on (arrays from any device are accepted).

        Args:
            state: name -> array (or Tensor), e.g. from :meth:`state_dict` or a safetensors file.
            strict: every parameter must be present and no other name may appear.

        Raises:
            StateDictError: names missing or unexpected (with ``strict``), shapes that
                differ, a dtype that cannot be cast to the model's under NumPy's
                ``same_kind`` rule (complex into float, float into int), or a value that is
                not an array (a list, a ``torch.Tensor``: pass ``t.detach().cpu().numpy()``);
                the message lists every problem. Nothing is copied in that case.
        """
        params: dict[str, Any] = {n: p.data for n, p in self.named_parameters()}
        params.update(self.named_buffers())
        missing = [n for n in params if n not in state]
        unexpected = [n for n in state if n not in params]
        bad_shape = []
        bad_value = []
        bad_dtype = []
        arrays: dict[str, np.ndarray] = {}
        for name, value in state.items():
            if name not in params:
                continue
            arr, why = _state_array(value)
            if arr is None:
                bad_value.append(f"{name}: {why}")
                continue
            if arr.shape != tuple(params[name].shape):
                bad_shape.append(f"{name}: expected {tuple(params[name].shape)}, got {arr.shape}")
            dst_dtype = np.dtype(_backend.dtype_name(params[name].dtype))
            if not np.can_cast(arr.dtype, dst_dtype, casting="same_kind"):
                bad_dtype.append(
                    f"{name}: cannot cast {arr.dtype} to the model's {dst_dtype} "
                    f"(casting='same_kind')"
                )
            arrays[name] = arr
        problems = []
        if strict and missing:
            problems.append(f"missing: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected: {', '.join(unexpected)}")
        if bad_value:
            problems.append(f"not an array: {'; '.join(bad_value)}")
        if bad_shape:
            problems.append(f"shape mismatch: {'; '.join(bad_shape)}")
        if bad_dtype:
            problems.append(f"dtype mismatch: {'; '.join(bad_dtype)}")
        if problems:
            raise StateDictError(
                f"load_state_dict into {type(self).__name__}: " + " | ".join(problems)
            )
        for name, arr in arrays.items():
            dst = params[name]
            if type(dst) is np.ndarray:
                np.copyto(dst, arr, casting="same_kind")
                continue
            host = arr.astype(_backend.dtype_name(dst.dtype), casting="same_kind")
            dst[...] = _backend.to_device(host, _backend.device_of(dst))

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """The arguments shown between the parentheses of ``repr``."""
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [head]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + "\n)"


def _state_array(value: Any) -> tuple[np.ndarray | None, str]:
    """``value`` of a state dict as a host NumPy array, or (None, why it is not accepted)."""
    if isinstance(value, Tensor):
        value = value.data
    module = type(value).__module__.split(".")[0]
    if module == "torch":
        return None, (
            f"a {type(value).__module__}.{type(value).__name__}; graphgrad takes arrays: pass "
            f"t.detach().cpu().numpy()"
        )
    if isinstance(value, list | tuple) or value is None or isinstance(value, str | bytes):
        return None, f"a {type(value).__name__}; pass a NumPy array (numpy.asarray(value))"
    try:
        arr = _backend.to_numpy(value)
    except Exception as exc:  # reported with the key by load_state_dict
        return None, f"a {type(value).__name__} that is not an array ({exc})"
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biufc":
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(value).__name__
        return None, f"a {type(value).__name__} of dtype {kind}, not a numeric array"
    return arr, ""
