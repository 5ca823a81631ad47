"""Array namespaces and devices: which library holds a tensor's numbers, and where.

A tensor's ``data`` is an array of some namespace that follows the Python array API standard:
NumPy (the default, on the CPU), CuPy (``"cuda"``, an NVIDIA GPU) or ``array_api_strict`` (the
standard's strict reference namespace: on the CPU, with fake devices, so that CI proves that no
op calls a NumPy-only function). A :class:`Device` names such a place and carries the namespace
to compute with there.

Layer 0: this module imports NumPy, the standard library and :mod:`graphgrad.errors` only; CuPy,
``array_api_compat`` and ``array_api_strict`` are imported when a device asks for them.

NumPy stays the fast path: :func:`namespace_of` answers ``type(x) is np.ndarray`` before
anything else, because it sits on every op's forward.

Why ``array_api_compat.cupy`` rather than the ``cupy`` module for ``"cuda"``: CuPy 13's own
namespace lacks several of the standard's names (``concat``, ``permute_dims``, ``pow``,
``astype`` as a function, ``isdtype``, ...), which the compat wrapper adds while returning
plain ``cupy.ndarray`` objects (no wrapper per array, so no cost per op).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

from .errors import DeviceUnavailableError

_ND = np.ndarray
_PY_NUMBERS = (bool, int, float, complex)

#: The install hints of the optional device libraries (one line each, used in errors and info).
CUDA_INSTALL = "pip install graphgrad[cuda] (the cupy-cuda12x wheel; cupy-cuda13x for CUDA 13)"
STRICT_INSTALL = "pip install array-api-strict"


def _numpy_namespace() -> Any:
    """NumPy as an array API namespace: the module itself on NumPy >= 2 (which has every name
    of the standard), else the module with the standard's new names added as aliases."""
    if hasattr(np, "concat") and hasattr(np, "isdtype"):
        return np
    shim = SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    shim.concat = np.concatenate
    shim.permute_dims = np.transpose
    shim.pow = np.power
    shim.matrix_transpose = lambda x: np.swapaxes(x, -1, -2)
    shim.astype = lambda x, dtype, copy=True: x.astype(dtype, copy=copy)
    shim.isdtype = _np_isdtype
    shim.cumulative_sum = lambda x, axis=None: np.cumsum(x, axis=axis)
    shim.bool = np.bool_
    shim.__name__ = "numpy"
    return shim


_KINDS = {
    "bool": "b",
    "signed integer": "i",
    "unsigned integer": "u",
    "integral": "iu",
    "real floating": "f",
    "complex floating": "c",
    "numeric": "iufc",
}


def _np_isdtype(dtype: Any, kind: Any) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    dt = np.dtype(dtype)
    return any(
        (dt == np.dtype(k)) if not isinstance(k, str) else dt.kind in _KINDS[k] for k in kinds
    )


#: NumPy as an array namespace (the ``np`` module on NumPy >= 2).
NUMPY: Any = _numpy_namespace()

#: Types whose namespace is NumPy, checked by identity (``type(x) in NUMPY_TYPES``): the fast
#: path of every op's forward, before :func:`namespace_of` is asked.
NUMPY_TYPES = frozenset({_ND, np.float64, np.float32, np.bool_, np.int64, float, int, bool})


@dataclass(frozen=True)
class Device:
    """Where a tensor's numbers live, and the namespace that computes with them there.

    Attributes:
        kind: ``"cpu"`` (NumPy), ``"cuda"`` (CuPy) or ``"array-api-strict"``.
        index: the GPU's number for ``"cuda"``; 1 or 2 for array-api-strict's fake devices
            ``device1``/``device2``; ``None`` otherwise.
        xp: the array namespace to compute with (``numpy``, ``array_api_compat.cupy``,
            ``array_api_strict``).
        native: the namespace's own device object (``cupy.cuda.Device(0)``,
            ``array_api_strict.Device("device1")``); ``None`` for NumPy.

    ``str(d)`` is the spelling :func:`parse_device` reads back: ``"cpu"``, ``"cuda:0"``,
    ``"array-api-strict"``, ``"array-api-strict:device1"``. Two devices are equal when their
    kind and index are.
    """

    kind: str
    index: int | None = None
    xp: Any = field(default=None, compare=False, repr=False)
    native: Any = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.index is None:
            return self.kind
        if self.kind == "array-api-strict":
            return f"{self.kind}:device{self.index}"
        return f"{self.kind}:{self.index}"

    def __repr__(self) -> str:
        return f"Device({str(self)!r})"

    @property
    def is_cpu(self) -> bool:
        """True for NumPy on the CPU (the default device)."""
        return self.kind == "cpu"


#: The default device: NumPy arrays in host memory.
CPU = Device("cpu", None, NUMPY, None)

_DEVICES: dict[tuple[str, int | None], Device] = {("cpu", None): CPU}

_FORMS = (
    "'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...), 'array-api-strict', "
    "'array-api-strict:device1' or 'array-api-strict:device2'"
)


def parse_device(spec: str | Device | None) -> Device:
    """The :class:`Device` that ``spec`` names (``None`` and ``"cpu"``: :data:`CPU`).

    Raises:
        ValueError: an unknown spelling (the message lists the valid ones).
        DeviceUnavailableError: the device's library or hardware is missing; the message says
            what is missing and how to install it.
    """
    if spec is None:
        return CPU
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"device must be a string or a graphgrad Device, got {type(spec).__name__}; "
            f"valid forms: {_FORMS}"
        )
    s = spec.strip().lower()
    kind, _, rest = s.partition(":")
    if s == "cpu":
        return CPU
    if kind == "cuda":
        if rest == "":
            return _cuda(0)
        if rest.isdigit():
            return _cuda(int(rest))
    elif kind == "array-api-strict":
        if rest == "":
            return _strict(None)
        if rest in ("device1", "device2"):
            return _strict(int(rest[-1]))
    raise ValueError(f"unknown device {spec!r}: valid forms are {_FORMS}")


def _cuda(index: int) -> Device:
    known = _DEVICES.get(("cuda", index))
    if known is not None:
        return known
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        raise DeviceUnavailableError(
            f"device 'cuda:{index}': CuPy is not installed; {CUDA_INSTALL}"
        ) from None
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
        why = "no CUDA GPU found"
    except Exception as e:  # no driver, no runtime: CuPy raises its own errors
        count, why = 0, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}"
    if count == 0:
        raise DeviceUnavailableError(
            f"device 'cuda:{index}': CuPy {cupy.__version__} is installed but cannot use a GPU "
            f"({why}); a machine with an NVIDIA GPU and driver is needed, and {CUDA_INSTALL}"
        )
    if index >= count:
        raise DeviceUnavailableError(
            f"device 'cuda:{index}': this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1})"
        )
    try:
        xp = importlib.import_module("array_api_compat.cupy")
    except ImportError:
        raise DeviceUnavailableError(
            f"device 'cuda:{index}': array-api-compat is not installed; {CUDA_INSTALL}"
        ) from None
    dev = Device("cuda", index, xp, cupy.cuda.Device(index))
    _DEVICES[("cuda", index)] = dev
    return dev


def _strict_module() -> ModuleType:
    try:
        return importlib.import_module("array_api_strict")
    except ImportError:
        raise DeviceUnavailableError(
            f"device 'array-api-strict': the array-api-strict package is not installed; "
            f"{STRICT_INSTALL}"
        ) from None


def _strict(index: int | None) -> Device:
    known = _DEVICES.get(("array-api-strict", index))
    if known is not None:
        return known
    xp = _strict_module()
    native = xp.Device("CPU_DEVICE" if index is None else f"device{index}")
    dev = Device("array-api-strict", index, xp, native)
    _DEVICES[("array-api-strict", index)] = dev
    return dev


# ------------------------------------------------------------------ what an array is


_NAMESPACES: dict[type, Any] = {}


def _namespace_of_type(a: Any) -> Any:
    """The array namespace of ``a``'s type (cached per type)."""
    t = type(a)
    ns = _NAMESPACES.get(t)
    if ns is not None:
        return ns
    if isinstance(a, _ND | np.generic):
        ns = NUMPY
    elif t.__module__.split(".")[0] == "cupy":
        ns = importlib.import_module("array_api_compat").array_namespace(a)
    elif hasattr(a, "__array_namespace__"):
        ns = a.__array_namespace__()
    else:
        raise TypeError(
            f"{t.__module__}.{t.__name__} is not an array graphgrad can compute with (NumPy, "
            f"CuPy or another array API namespace)"
        )
    _NAMESPACES[t] = ns
    return ns


def namespace_of(*arrays: Any) -> Any:
    """The array namespace that computes with ``arrays``: NumPy when every one is a NumPy array
    or a Python number (checked first, by type), else the one other namespace among them.

    Raises:
        TypeError: two different non-NumPy namespaces, or an object that is not an array.
    """
    found: Any = None
    for a in arrays:
        t = type(a)
        if t in NUMPY_TYPES or a is None:
            continue
        ns = _NAMESPACES.get(t) or _namespace_of_type(a)  # NumPy scalars: cached as NumPy
        if ns is NUMPY:
            continue
        if found is not None and ns is not found:
            raise TypeError(
                f"arrays of two namespaces, {found.__name__} and {ns.__name__}, in one call"
            )
        found = ns
    return NUMPY if found is None else found


def is_numpy(xp: Any) -> bool:
    """True if ``xp`` is NumPy (the namespace with the compiled fast paths)."""
    return xp is NUMPY or xp is np


def device_of(array: Any) -> Device:
    """The :class:`Device` that holds ``array`` (a NumPy array or a number: :data:`CPU`)."""
    t = type(array)
    if t is _ND or t in _PY_NUMBERS or isinstance(array, np.generic):
        return CPU
    xp = _namespace_of_type(array)
    if xp is NUMPY:
        return CPU
    name = getattr(xp, "__name__", "")
    if name.startswith("array_api_strict"):
        dev_name = repr(array.device)
        for index in (1, 2):
            if f"device{index}" in dev_name:
                return _strict(index)
        return _strict(None)
    if name.startswith("array_api_compat.cupy") or name == "cupy":
        return _cuda(int(array.device.id))
    kind = name.split(".")[-1] or t.__module__.split(".")[0]
    key = (kind, None)
    dev = _DEVICES.get(key)
    if dev is None:
        dev = _DEVICES[key] = Device(kind, None, xp, getattr(array, "device", None))
    return dev


def to_numpy(array: Any) -> np.ndarray:
    """``array`` as a NumPy array in host memory (a NumPy array is returned as it is; others
    are copied: CuPy by ``.get()``, others through DLPack or ``numpy.asarray``)."""
    if type(array) is _ND:
        return array
    if isinstance(array, _ND | np.generic | bool | int | float | complex):
        return np.asarray(array)
    get = getattr(array, "get", None)
    if get is not None and type(array).__module__.split(".")[0] == "cupy":
        return np.asarray(get())
    xp = _namespace_of_type(array)
    if getattr(xp, "__name__", "").startswith("array_api_strict"):
        host = array.to_device(xp.Device("CPU_DEVICE"))
        return np.array(np.from_dlpack(host), copy=True)
    try:
        return np.array(np.from_dlpack(array), copy=True)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        return np.array(array, copy=True)


def to_device(array: Any, device: str | Device | None) -> Any:
    """``array`` on ``device``: the same object if it is there already, else a copy made
    through host memory (or the namespace's own ``to_device`` within one namespace)."""
    dev = parse_device(device)
    src = device_of(array)
    if src == dev:
        return array
    if dev.kind == "cpu":
        return to_numpy(array)
    if src.kind == dev.kind:  # within one namespace: its own move (peer copy on CUDA)
        if dev.kind == "cuda":
            with dev.native:
                return dev.xp.asarray(array).copy()
        return array.to_device(dev.native)
    host = to_numpy(array)
    if dev.kind == "cuda":
        with dev.native:
            return dev.xp.asarray(host)
    return dev.xp.asarray(host, device=dev.native)


_DTYPE_NAMES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "complex64",
    "complex128",
)


def dtype_name(dtype: Any) -> str:
    """The standard's name of ``dtype`` (``"float32"``, ``"int64"``, ``"bool"``), for a NumPy
    dtype or any namespace's dtype object."""
    if isinstance(dtype, np.dtype):
        return dtype.name
    name = getattr(dtype, "name", None)  # CuPy uses NumPy's dtypes
    if isinstance(name, str) and name in _DTYPE_NAMES:
        return name
    text = str(dtype)
    for n in _DTYPE_NAMES:
        if text == n or text.endswith(("." + n, f"'{n}'", f"{n}')")):
            return n
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}") from None


def dtype_kind(dtype: Any) -> str:
    """NumPy's one-letter kind of ``dtype`` (``"f"``, ``"c"``, ``"i"``, ``"u"``, ``"b"``) for a
    dtype of any namespace."""
    if isinstance(dtype, np.dtype):
        return dtype.kind
    return np.dtype(dtype_name(dtype)).kind


def xp_dtype(xp: Any, dtype: Any) -> Any:
    """``dtype`` (NumPy's, a name, or ``xp``'s own) as a dtype object of namespace ``xp``."""
    if is_numpy(xp):
        return np.dtype(dtype) if not isinstance(dtype, np.dtype) else dtype
    if isinstance(dtype, type) and issubclass(dtype, np.generic):
        dtype = np.dtype(dtype)
    name = dtype if isinstance(dtype, str) else dtype_name(dtype)
    if name == "bool":
        return xp.bool
    return getattr(xp, np.dtype(name).name)


def is_array(data: Any) -> bool:
    """True for an array of any namespace (NumPy's ``ndarray`` included; not lists, numbers
    or NumPy scalars)."""
    t = type(data)
    if t is _ND:
        return True
    if isinstance(data, (np.generic, *_PY_NUMBERS, list, tuple, str)) or data is None:
        return False
    if t in _NAMESPACES:
        return True
    try:
        _namespace_of_type(data)
    except TypeError:
        return False
    return True


def _is_foreign_array(data: Any) -> bool:
    """True for an array of a namespace other than NumPy (CuPy, array-api-strict, ...)."""
    return type(data) is not _ND and is_array(data) and _namespace_of_type(data) is not NUMPY


def asarray(data: Any, device: str | Device | None = None, dtype: Any = None) -> Any:
    """``data`` (an array of any namespace, nested lists, numbers) as an array on ``device``,
    of ``dtype`` if given (a NumPy dtype, a name, or the target namespace's dtype)."""
    dev = parse_device(device)
    xp = dev.xp
    if _is_foreign_array(data):
        arr = to_device(data, dev)
    elif dev.is_cpu:
        return np.asarray(data, dtype=None if dtype is None else xp_dtype(np, dtype))
    else:
        arr = to_device(np.asarray(data), dev)
    if dtype is not None:
        want = xp_dtype(xp, dtype)
        if arr.dtype != want:
            arr = xp.astype(arr, want)
    return arr


def devices_info() -> dict[str, str]:
    """One line per device kind for ``graphgrad info``: NumPy on the CPU; CuPy's version and
    GPU count, or how to install it; array-api-strict's version, or how to install it."""
    info = {"cpu": f"NumPy {np.__version__}"}
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        info["cuda"] = f"not installed: {CUDA_INSTALL}"
    else:
        try:
            count = int(cupy.cuda.runtime.getDeviceCount())
        except Exception as e:  # no driver or runtime
            count, why = 0, f" ({type(e).__name__})"
        else:
            why = ""
        info["cuda"] = f"CuPy {cupy.__version__}, {count} GPU(s){why}"
    try:
        strict = importlib.import_module("array_api_strict")
    except ImportError:
        info["array-api-strict"] = f"not installed: {STRICT_INSTALL}"
    else:
        info["array-api-strict"] = f"{strict.__version__} (devices: CPU_DEVICE, device1, device2)"
    return info
