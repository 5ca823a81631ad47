"""The Tensor front end: a NumPy array that records the ops applied to it.

A Tensor is a node of the computational graph. Its ``_inputs`` point to the tensors it was
computed from, never the other way, so graphs hold no reference cycles (Python frees them by
reference counting alone; nothing waits for the cyclic garbage collector).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

import numpy as np

from . import _backend, _fused, _xp_names
from ._backend import CPU, Device, device_of, dtype_kind, namespace_of, parse_device
from ._engine import check_forward, run_backward, set_graph_namespace, user_site
from ._state import ANOMALY, GRAD_ENABLED, SETTINGS, default_generator, next_seq, no_grad
from .errors import BackwardError, DeviceMismatchError, InPlaceError, ShapeError
from .ops import REGISTRY, Op
from .ops import elementwise as E
from .ops import fused as FU
from .ops import linalg as LA
from .ops import reduction as R
from .ops import shape as SH
from .scalar import Scalar, apply_op

if TYPE_CHECKING:
    from .viz.data import GraphData as Graph

_EMPTY: dict[str, Any] = {}
_FLOAT_KINDS = "fc"
_ND = np.ndarray

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: PyTorch's keyword names where graphgrad, following NumPy, has others.
_TORCH_KEYWORDS = {"dim": "axis", "keepdim": "keepdims"}


def _numpy_keywords(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn``, whose call with PyTorch's ``dim=`` or ``keepdim=`` names NumPy's ``axis=`` or
    ``keepdims=`` in its error instead of Python's bare "unexpected keyword argument"."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except TypeError:
            for k in kwargs:
                if k in _TORCH_KEYWORDS:
                    raise TypeError(
                        f"{fn.__name__}: {k}= is PyTorch's keyword; graphgrad follows NumPy: "
                        f"write {_TORCH_KEYWORDS[k]}="
                    ) from None
            raise

    return wrapper


class _Size(int):
    """:attr:`Tensor.size`: NumPy's element count, an int, that tells a caller of PyTorch's
    ``x.size()`` what to write instead."""

    __slots__ = ()

    def __call__(self, *args: Any) -> Any:
        axis = f"; for the length of axis {args[0]}: x.shape[{args[0]}]" if args else ""
        raise TypeError(
            f"x.size is the number of elements ({int(self)}), as in NumPy, not PyTorch's "
            f"x.size(): for the shape write x.shape{axis}"
        )


class _TorchSpelling:
    """A Tensor attribute that PyTorch has and graphgrad spells NumPy's way: reading it on a
    tensor raises the AttributeError that says what to write (``hasattr`` stays False). A
    descriptor per name, not a ``__getattr__``: a class with ``__getattr__`` loses CPython's
    fast attribute reads on every ``t.data`` (the eager tiny-op step ran 4-5% slower)."""

    def __init__(self, hint: str) -> None:
        self.hint = hint
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self  # (the class itself: introspection)
        raise AttributeError(
            f"Tensor.{self.name}() is PyTorch's; graphgrad follows NumPy: write {self.hint}"
        )


#: Tensor methods of PyTorch's that graphgrad spells NumPy's way: the AttributeError says how.
_TORCH_METHODS = {
    "view": "x.reshape(shape)",
    "permute": "x.transpose(*axes)",
    "unsqueeze": "x.reshape(new_shape), or x[:, None] for a new axis 1",
    "squeeze": "x.reshape(new_shape)",
    "flatten": "x.reshape(-1)",
    "expand": "x.broadcast_to(shape)",
    "clamp": "x.clip(lo, hi)",
    "dim": "x.ndim",
    "numel": "x.size",
    "mm": "x @ y",
    "masked_fill": "gg.where(mask, value, x)",
    "contiguous": "nothing (NumPy arrays need no such call)",
}


class Tensor:
    """An n-dimensional array (``.data``, a NumPy array) that is a node of the graph.

    Args:
        data: anything ``numpy.asarray`` accepts, or an array of another array API namespace
            (a CuPy or ``array_api_strict`` array, which keeps its namespace and device).
            Python floats and lists of floats become ``gg.get_default_dtype()`` (float32
            unless changed); float arrays keep their dtype. A NumPy array of the dtype the
            tensor gets is not copied (``numpy.asarray``'s and ``torch.as_tensor``'s rule, not
            ``torch.tensor``'s): the tensor and the array share their values, and an
            optimiser's in-place step changes both. Pass ``a.copy()`` to keep ``a`` as it is.
        requires_grad: record ops on this tensor and give it a ``.grad`` after ``backward()``.
            Only floating-point data can require gradients: integer or boolean data raises
            a ``TypeError`` (as in PyTorch and JAX) unless ``dtype`` makes it float.
        dtype: force a dtype.
        name: a label shown in graph pictures and error messages.
        device: where the values live: ``"cpu"`` (NumPy, the default), ``"cuda"``/``"cuda:N"``
            (CuPy), ``"array-api-strict[:device1|device2]"``, or a :class:`Device`; ``None``
            keeps ``data``'s own device (NumPy for lists and numbers).

    Attributes:
        data: the values, a ``numpy.ndarray`` on the CPU (an array of the device's namespace
            elsewhere).
        grad: ``None`` until a backward pass reaches this leaf; then dL/d(self), an array of
            ``data``'s shape and dtype (a Tensor when ``create_graph=True`` was used).
    """

    __slots__ = (
        "_inputs",
        "_op",
        "_params",
        "_retain",
        "_seq",
        "_site",
        "data",
        "grad",
        "name",
        "requires_grad",
    )
    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's reflected operators
    __hash__ = object.__hash__  # == is elementwise, so hash by identity

    data: np.ndarray
    grad: Any
    requires_grad: bool
    name: str | None
    _op: Op | None
    _inputs: tuple[Tensor, ...]
    _params: dict[str, Any]
    _seq: int
    _site: str | None
    _retain: bool

    def __init__(
        self,
        data: Any,
        requires_grad: bool = False,
        dtype: Any = None,
        name: str | None = None,
        device: str | Device | None = None,
    ) -> None:
        arr = _to_array(data, dtype, device)
        if requires_grad and dtype_kind(arr.dtype) not in _FLOAT_KINDS:
            raise TypeError(_int_grad_message(data, arr))
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._op = None
        self._inputs = ()
        self._params = _EMPTY
        self._seq = next_seq()
        self._site = None
        self._retain = False

    # ----------------------------------------------------------------- array-like facts
    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of ``data``."""
        return self.data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of ``data``."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return self.data.ndim

    @property
    def size(self) -> int:
        """The number of elements (NumPy's ``size``, an int; PyTorch's ``size()`` is
        :attr:`shape` here, and calling this int says so)."""
        return _Size(self.data.size)

    @property
    def device(self) -> Device:
        """Where the values live, a :class:`graphgrad.Device`; ``str(t.device)`` is ``"cpu"``,
        ``"cuda:0"``, ``"array-api-strict"`` or ``"array-api-strict:device1"``."""
        return CPU if type(self.data) is _ND else device_of(self.data)

    def to(self, device: str | Device) -> Tensor:
        """This tensor on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...): ``self`` if it
        is there already, else a copy that is a node of the graph (op ``to_device``), so the
        gradient flows back to this tensor's device."""
        dev = parse_device(device)
        if self.device == dev:
            return self
        return _apply(SH.to_device, (self,), {"device": dev})

    def cpu(self) -> Tensor:
        """``self.to("cpu")``."""
        return self.to(CPU)

    @property
    def op(self) -> str | None:
        """The name of the op that produced this tensor (``None`` for a leaf)."""
        return self._op.name if self._op is not None else None

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user (or outside any recorded graph)."""
        return self._op is None

    @property
    def T(self) -> Tensor:
        """The transpose (all axes reversed)."""
        return transpose(self)

    def numpy(self) -> np.ndarray:
        """The NumPy array behind this tensor (shared, not copied); a tensor on another
        device raises a TypeError: copy it first, ``t.to("cpu").numpy()``."""
        if type(self.data) is not _ND:
            raise TypeError(_host_message("numpy()", self))
        return self.data

    def item(self) -> Any:
        """The single element as a Python number (on any device)."""
        size = _size(self.data)
        if size != 1:
            raise ValueError(f"item(): the tensor has {size} elements, not 1")
        if type(self.data) is _ND:
            return self.data.item()
        return _backend.to_numpy(self.data).item()

    def detach(self) -> Tensor:
        """A tensor sharing ``data`` that is cut from the graph (requires no gradient)."""
        return _const(self.data)

    def retain_grad(self) -> Tensor:
        """Keep dL/d(self) in ``.grad`` after backward even though this is not a leaf."""
        self._retain = True
        return self

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return int(self.data.shape[0])

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    # ------------------------------------------------------------- in-place operators
    # Python falls back from ``x += y`` to ``x = x + y`` when there is no ``__iadd__``: on a
    # parameter that silently rebinds ``x`` to a new node, which gets no ``.grad`` (and an
    # optimiser holding the old object never sees the change). These make every in-place
    # operator explicit; see :func:`_inplace` for the rules.
    def __iadd__(self, other: Any) -> Tensor:
        return _inplace(self, other, E.add, "+=")

    def __isub__(self, other: Any) -> Tensor:
        return _inplace(self, other, E.sub, "-=")

    def __imul__(self, other: Any) -> Tensor:
        return _inplace(self, other, E.mul, "*=")

    def __itruediv__(self, other: Any) -> Tensor:
        return _inplace(self, other, E.div, "/=")

    def __ipow__(self, other: Any) -> Tensor:
        return _inplace(self, other, E.pow, "**=")

    def __imatmul__(self, other: Any) -> Tensor:
        return _inplace(self, other, LA.matmul, "@=")

    def __setitem__(self, index: Any, value: Any) -> None:
        """``x[index] = value`` on a leaf: refused on one that requires grad while gradients
        are recorded (as ``x += ...``); else written in place, NumPy's way (a graph that
        already used ``x`` then sees the new values, as after writing into ``x.data``)."""
        _check_inplace(self, value, "[i]")
        if self._op is not None:
            raise TypeError(
                f"x[...] = value: x (shape {self.shape}) was computed by op "
                f"'{self._op.name}', whose backward needs its values unchanged; build a new "
                f"tensor instead, e.g. gg.where(mask, value, x)"
            )
        if isinstance(value, Tensor) and value.requires_grad and GRAD_ENABLED.get():
            raise InPlaceError(
                "x[...] = v: v requires grad, and writing its values into x would cut it from "
                "the graph; build the tensor from v instead, e.g. gg.where(mask, v, x), "
                "gg.stack or gg.concatenate"
            )
        self.data[_norm_index(index, self.data)] = _raw(value)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.data)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if type(self.data) is not _ND:
            raise TypeError(_host_message("numpy.asarray(tensor)", self))
        return self.data if dtype is None else self.data.astype(dtype)

    def __repr__(self) -> str:
        host = _backend.to_numpy(self.data)
        body = np.array2string(host, precision=4, separator=", ", threshold=20)
        extra = []
        if host.dtype != SETTINGS.default_dtype:
            extra.append(f"dtype={host.dtype}")
        if type(self.data) is not _ND:
            extra.append(f"device='{self.device}'")
        if self._op is not None:
            extra.append(f"op={self._op.name}")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        if self.name:
            extra.append(f"name={self.name!r}")
        return f"Tensor({body}{', ' if extra else ''}{', '.join(extra)})"

    # --------------------------------------------------------------------------- backward
    @overload
    def backward(
        self,
        grad: Any = ...,
        retain_graph: bool = ...,
        create_graph: bool = ...,
        *,
        trace: Literal[False] = ...,
    ) -> None: ...
    @overload
    def backward(
        self,
        grad: Any = ...,
        retain_graph: bool = ...,
        create_graph: bool = ...,
        *,
        trace: Literal[True],
    ) -> Graph: ...
    def backward(
        self,
        grad: Any = None,
        retain_graph: bool = False,
        create_graph: bool = False,
        *,
        trace: bool = False,
    ) -> Graph | None:
        """Backpropagate from this tensor: every leaf it depends on gets dL/d(leaf) in ``.grad``.

        Args:
            grad: dL/d(self), of this tensor's shape; may be omitted for a one-element tensor
                (it is then 1).
            retain_graph: keep the graph so that backward can run through it again. Default:
                the graph is freed as backward proceeds.
            create_graph: record the backward pass itself, so ``.grad`` is a Tensor that can be
                differentiated again (implies ``retain_graph``).
            trace: also return the graph as plain data (a :class:`graphgrad.viz.Graph`) with
                every node's value and gradient of this pass, drawable as any traced graph;
                see :func:`graphgrad.viz.trace_backward`.
        """
        if trace:
            if _TRACER is None:
                raise BackwardError("backward(trace=True): graphgrad.viz is not imported")
            return _TRACER(self, grad, retain_graph=retain_graph, create_graph=create_graph)
        if not self.requires_grad:
            raise BackwardError(
                f"backward() called on a tensor of shape {self.shape} that does not require "
                f"gradients: none of its inputs has requires_grad=True, or it was computed "
                f"under no_grad()"
            )
        owned = False
        data = self.data
        if grad is None:
            if (data.size if type(data) is _ND else _size(data)) != 1:
                raise BackwardError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs a gradient "
                    f"argument of that shape (dL/d this tensor); reduce a loss to one number "
                    f"first, e.g. with .sum() or .mean()"
                )
            seed: Any = _one_seed(data) if type(data) is _ND else namespace_of(data).ones_like(data)
            owned = True
        else:
            if isinstance(grad, Tensor):
                seed = grad.data
                if type(seed) is not type(data) and grad.device != self.device:
                    raise DeviceMismatchError(
                        f"backward(): the gradient is on {grad.device} but the tensor is on "
                        f"{self.device} (shape {self.shape}); move it with .to('{self.device}')"
                    )
            elif type(data) is _ND:
                seed = np.asarray(grad, data.dtype)
            else:
                seed = _backend.asarray(grad, self.device, data.dtype)
            if seed.shape != self.shape:
                raise ShapeError(
                    f"backward(): the gradient has shape {seed.shape} but the tensor has shape "
                    f"{self.shape}"
                )
        if create_graph:
            seed = grad if isinstance(grad, Tensor) else _const(seed)
        run_backward(
            self,
            seed,
            retain_graph=retain_graph or create_graph,
            create_graph=create_graph,
            seed_owned=owned,
        )
        return None

    # -------------------------------------------------------------------------- operators
    def __add__(self, other: Any) -> Tensor:
        return _apply(E.add, (self, _lift(other, self)))

    def __radd__(self, other: Any) -> Tensor:
        return _apply(E.add, (_lift(other, self), self))

    def __sub__(self, other: Any) -> Tensor:
        return _apply(E.sub, (self, _lift(other, self)))

    def __rsub__(self, other: Any) -> Tensor:
        return _apply(E.sub, (_lift(other, self), self))

    def __mul__(self, other: Any) -> Tensor:
        return _apply(E.mul, (self, _lift(other, self)))

    def __rmul__(self, other: Any) -> Tensor:
        return _apply(E.mul, (_lift(other, self), self))

    def __truediv__(self, other: Any) -> Tensor:
        return _apply(E.div, (self, _lift(other, self)))

    def __rtruediv__(self, other: Any) -> Tensor:
        return _apply(E.div, (_lift(other, self), self))

    def __pow__(self, other: Any) -> Tensor:
        return _apply(E.pow, (self, _lift(other, self)))

    def __rpow__(self, other: Any) -> Tensor:
        return _apply(E.pow, (_lift(other, self), self))

    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(other, self)

    def __neg__(self) -> Tensor:
        return _apply(E.neg, (self,))

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _apply(E.abs, (self,))

    def __lt__(self, other: Any) -> Tensor:
        return _apply(E.lt, (self, _lift(other, self)))

    def __le__(self, other: Any) -> Tensor:
        return _apply(E.le, (self, _lift(other, self)))

    def __gt__(self, other: Any) -> Tensor:
        return _apply(E.gt, (self, _lift(other, self)))

    def __ge__(self, other: Any) -> Tensor:
        return _apply(E.ge, (self, _lift(other, self)))

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _apply(E.eq, (self, _lift(other, self)))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _apply(E.ne, (self, _lift(other, self)))

    def __getitem__(self, index: Any) -> Tensor:
        return getitem(self, index)

    # ------------------------------------------------------------------ method forms
    # The elementwise ops called by name (x.exp(), x.tanh(), x.maximum(y), ...) are added
    # below from the registry; those with more to them are written here.
    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...

    def clip(self, lo: Any = None, hi: Any = None, *, min: Any = None, max: Any = None) -> Tensor:
        """Elementwise clip to [lo, hi] (``min=``/``max=``: NumPy 2's names for them)."""
        return clip(self, lo, hi, min=min, max=max)

    @_numpy_keywords
    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis`` (all axes by default)."""
        return sum(self, axis, keepdims)

    @_numpy_keywords
    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Mean over ``axis`` (all axes by default)."""
        return mean(self, axis, keepdims)

    @_numpy_keywords
    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Maximum over ``axis``; ties share the gradient evenly."""
        return max(self, axis, keepdims)

    @_numpy_keywords
    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Minimum over ``axis``; ties share the gradient evenly."""
        return min(self, axis, keepdims)

    @_numpy_keywords
    def argmax(self, axis: Any = None) -> Tensor:
        """Indices of the maxima (not differentiable)."""
        return argmax(self, axis)

    def reshape(self, *shape: Any) -> Tensor:
        """The same values with a new shape (``-1`` infers one axis)."""
        return reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes: Any) -> Tensor:
        """Permute the axes, NumPy's ``a.transpose(*axes)``: ``axes`` lists every axis in its
        new order, as separate ints or one sequence (reverse them when none are given). To
        swap two axes (PyTorch's ``transpose(dim0, dim1)``) use :meth:`swapaxes`."""
        if len(axes) == 1 and not isinstance(axes[0], int | np.integer):
            return transpose(self, axes[0])
        return transpose(self, axes if axes else None)

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        """Swap two axes (NumPy's ``swapaxes``; PyTorch calls it ``transpose(dim0, dim1)``)."""
        return swapaxes(self, axis1, axis2)

    def broadcast_to(self, shape: Sequence[int]) -> Tensor:
        """Repeat along new or size-1 axes to ``shape``."""
        return broadcast_to(self, shape)

    def matmul(self, other: Any) -> Tensor:
        """Matrix product (NumPy's ``@`` semantics)."""
        return matmul(self, other)

    @_numpy_keywords
    def softmax(self, axis: Any = -1) -> Tensor:
        """Softmax along ``axis``."""
        return softmax(self, axis)

    @_numpy_keywords
    def log_softmax(self, axis: Any = -1) -> Tensor:
        """Log-softmax along ``axis``."""
        return log_softmax(self, axis)

    @_numpy_keywords
    def logsumexp(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """ln sum exp over ``axis``, computed stably."""
        return logsumexp(self, axis, keepdims)


# ------------------------------------------------------------------------------ plumbing


def _to_array(data: Any, dtype: Any, device: Any = None) -> Any:
    if isinstance(data, Tensor):
        data = data.data
    elif isinstance(data, Scalar):
        raise TypeError(
            "a Scalar cannot be mixed with Tensors: build the graph from one kind of node, "
            "or use gg.Tensor(s.data) for a constant"
        )
    if device is not None or (type(data) is not _ND and _backend.is_array(data)):
        return _to_device_array(data, dtype, device)
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, np.generic):
        return np.asarray(data)
    arr = np.asarray(data)
    if arr.dtype == np.float64:  # Python floats: the default dtype, not NumPy's float64
        target = SETTINGS.default_dtype
        if target != np.float64:
            with np.errstate(over="ignore"):
                cast = arr.astype(target)
            if cast.size and not np.isfinite(cast).all():
                over = np.isinf(cast) & np.isfinite(arr)
                if over.any():  # (not a silent infinity, nor only NumPy's warning)
                    big = arr[over].flat[0]
                    raise OverflowError(
                        f"tensor: {big:g} does not fit in {np.dtype(target).name} (largest "
                        f"{float(np.finfo(target).max):.4g}); pass dtype=np.float64, or "
                        f"gg.set_default_dtype(np.float64)"
                    )
            arr = cast
        else:
            arr = arr.astype(target)
    return arr


def _to_device_array(data: Any, dtype: Any, device: Any) -> Any:
    """``data`` on ``device`` (``None``: an array's own device): an array of another namespace
    keeps its dtype; host data is read as on the CPU (Python floats: the default dtype)."""
    if type(data) is _ND or not _backend.is_array(data):
        host = _to_array(data, dtype, None)
        return host if device is None else _backend.asarray(host, device)
    if device is None:
        device = device_of(data)
    return _backend.asarray(data, device, dtype)


def _size(a: Any) -> int:
    """The number of elements of an array of any namespace."""
    n = 1
    for k in a.shape:
        n *= int(k)
    return n


def _host_message(what: str, t: Tensor) -> str:
    return (
        f"{what}: the tensor (shape {t.shape}) is on {t.device}, not in host memory; copy it "
        f"first: t.to('cpu').numpy()"
    )


_new = object.__new__


def _const(arr: Any) -> Tensor:
    """A leaf that requires no gradient, made without ``__init__``'s conversions."""
    t = _new(Tensor)
    t.data = arr
    t.grad = None
    t.requires_grad = False
    t.name = None
    t._op = None
    t._inputs = ()
    t._params = _EMPTY
    t._seq = next_seq()
    t._site = None
    t._retain = False
    return t


def _lift(x: Any, like: Tensor) -> Tensor:
    """Turn an operand into a Tensor. Python numbers take ``like``'s float dtype, so that
    ``x * 0.5`` stays float32 (no silent float64 upcast)."""
    if isinstance(x, Tensor):
        return x
    data = like.data
    if type(data) is not _ND:  # numbers and lists join like's device; arrays keep theirs
        return _lift_to_device(x, like)
    if isinstance(x, int | float) and not isinstance(x, bool):
        dt = data.dtype
        return _const(np.asarray(x, dtype=dt) if dt.kind in _FLOAT_KINDS else np.asarray(x))
    if isinstance(x, np.ndarray):
        return _const(x)
    return _const(_to_array(x, None))


def _lift_to_device(x: Any, like: Tensor) -> Tensor:
    """:func:`_lift` for ``like`` on a device other than NumPy's: a Python number or list
    becomes a constant there; an array stays where it is (``_apply`` names a mismatch)."""
    if isinstance(x, int | float | bool | list | tuple | np.generic):
        host = np.asarray(x)
        dt = like.data.dtype
        if isinstance(x, int | float) and not isinstance(x, bool):
            if dtype_kind(dt) in _FLOAT_KINDS:
                return _const(_backend.asarray(host, like.device, dt))
        elif host.dtype == np.float64:
            host = host.astype(SETTINGS.default_dtype)
        return _const(_backend.asarray(host, like.device))
    return _const(_to_array(x, None))


def as_tensor(x: Any) -> Tensor:
    """``x`` if it is a Tensor, else a constant Tensor made from it (on its own device)."""
    return x if isinstance(x, Tensor) else _const(_to_array(x, None))


def _apply(op: Op, inputs: tuple[Tensor, ...], params: dict[str, Any] = _EMPTY) -> Tensor:
    """Run ``op``'s forward on the inputs' arrays and record the node if a gradient is needed.

    Inputs on different devices (a NumPy array with a GPU tensor included) raise a
    :class:`DeviceMismatchError` naming the op, both devices and the shapes."""
    n = len(inputs)
    datas = [inputs[0].data, inputs[1].data] if n == 2 else [t.data for t in inputs]
    if n > 1 and (
        type(datas[0]) is not _ND
        or type(datas[-1]) is not _ND
        or (n == 3 and type(datas[1]) is not _ND)  # (linear's three: no generator)
        or (n > 3 and any(type(d) is not _ND for d in datas))
    ):
        _check_devices(op, inputs)
    try:
        anomaly = ANOMALY.get()
        if anomaly:  # our AnomalyError below is clearer than NumPy's RuntimeWarning
            with np.errstate(all="ignore"):
                out = op.forward(*datas, **params)
        else:
            out = op.forward(*datas, **params)
    except (ValueError, IndexError, TypeError) as e:
        raise _forward_error(op, inputs, e) from e
    if type(out) is not _ND and (isinstance(out, np.generic) or not hasattr(out, "shape")):
        out = np.asarray(out)  # NumPy returns scalars for some 0-d results
    t = _new(Tensor)
    t.data = out
    t.grad = None
    t.name = None
    t._seq = next_seq()
    t._site = None
    t._retain = False
    needs_grad = False
    for x in inputs:  # a plain loop: any() over a generator costs 0.3 us, per op
        if x.requires_grad:
            needs_grad = True
            break
    if needs_grad and op.differentiable and GRAD_ENABLED.get():
        t.requires_grad = True
        t._op = op
        t._inputs = inputs
        t._params = params
        if anomaly:
            t._site = user_site()
            check_forward(t)
    else:
        t.requires_grad = False
        t._op = None
        t._inputs = ()
        t._params = _EMPTY
        if anomaly and op.differentiable:
            t._op, t._inputs, t._site = op, inputs, user_site()
            try:
                check_forward(t)
            finally:
                t._op, t._inputs = None, ()
    return t


_ONE_SEEDS: dict[tuple[tuple[int, ...], Any], np.ndarray] = {}


def _one_seed(data: np.ndarray) -> np.ndarray:
    """A fresh one-element array of ones shaped and typed like ``data`` (dL/dL = 1): a copy of
    a cached one, about 10x cheaper than ``np.ones_like`` (which dominated a tiny backward)."""
    key = (data.shape, data.dtype)
    one = _ONE_SEEDS.get(key)
    if one is None:
        if len(_ONE_SEEDS) > 64:
            _ONE_SEEDS.clear()
        one = _ONE_SEEDS[key] = np.ones(data.shape, data.dtype)
    return one.copy()


def _check_devices(op: Op, inputs: tuple[Tensor, ...]) -> None:
    """Raise if the inputs of ``op`` are not all on one device."""
    first = inputs[0]
    dev = first.device
    for t in inputs[1:]:
        other = t.device
        if other != dev:
            raise DeviceMismatchError(
                f"{op.name}: its inputs are on different devices, {dev} (shape {first.shape}) "
                f"and {other} (shape {t.shape}); move one first, e.g. x.to('{dev}') "
                f"(a NumPy array counts as a cpu tensor)"
            )


def _forward_error(op: Op, inputs: tuple[Tensor, ...], e: Exception) -> Exception:
    shapes = " and ".join(str(t.shape) for t in inputs)
    msg = str(e)
    if "broadcast" in msg:
        return ShapeError(f"{op.name}: cannot broadcast shapes {shapes} (NumPy: {msg})")
    cls = ShapeError if isinstance(e, ValueError) else type(e)
    return cls(f"{op.name}: invalid input(s) of shape {shapes}: {msg}")


def _axis_type_error(opname: str, axis: Any) -> TypeError:
    return TypeError(
        f"{opname}: axis must be an int, a tuple of ints or None, got "
        f"{type(axis).__name__} {axis!r}"
    )


def _norm_axis(axis: Any, ndim: int, opname: str) -> tuple[int, ...] | None:
    if axis is None:
        return None
    if isinstance(axis, int | np.integer) and not isinstance(axis, bool | np.bool_):
        axes: tuple[Any, ...] = (axis,)
    elif isinstance(axis, tuple | list):
        axes = tuple(axis)
    else:  # (a float, a bool, a string: NumPy refuses them too)
        raise _axis_type_error(opname, axis)
    out = []
    for a in axes:
        if not isinstance(a, int | np.integer) or isinstance(a, bool | np.bool_):
            raise _axis_type_error(opname, axis)
        if not -ndim <= a < ndim:
            raise ShapeError(f"{opname}: axis {a} is out of range for a tensor with {ndim} axes")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{opname}: repeated axis in {axis}")
    return tuple(sorted(out))


def _one_axis(axis: Any, ndim: int, opname: str) -> int:
    if not isinstance(axis, int | np.integer) or isinstance(axis, bool | np.bool_):
        raise TypeError(f"{opname}: an axis must be an int, got {type(axis).__name__} {axis!r}")
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{opname}: axis {axis} is out of range for a tensor with {ndim} axes")
    return int(axis) % ndim


def _norm_index(index: Any, like: Any = None) -> Any:
    """``index`` with Tensors and lists as arrays; for ``like`` (the indexed array) on another
    device than NumPy's, index arrays are copied there (as PyTorch takes CPU indices)."""
    if isinstance(index, tuple):
        return tuple(_norm_index_item(i, like) for i in index)
    return _norm_index_item(index, like)


def _norm_index_item(i: Any, like: Any = None) -> Any:
    if isinstance(i, Tensor):
        i = i.data
    elif isinstance(i, list):
        i = np.asarray(i)
    if like is None or type(like) is _ND:
        return i
    if type(i) is _ND or _backend.is_array(i):
        return _backend.to_device(i, device_of(like))
    return i


# ---------------------------------------------------------------------- public functions


def tensor(
    data: Any,
    requires_grad: bool = False,
    dtype: Any = None,
    name: str | None = None,
    device: str | Device | None = None,
) -> Tensor:
    """Make a Tensor (same arguments as :class:`Tensor`; ``device="cuda"`` puts it on the GPU)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, name=name, device=device)


def zeros(
    *shape: Any,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of zeros: ``gg.zeros(2, 3)`` or ``gg.zeros((2, 3))`` (dtype:
    ``gg.get_default_dtype()`` unless given), made on ``device``."""
    return _filled(0.0, _shape_of(shape, "zeros"), dtype, device, requires_grad)


def ones(
    *shape: Any,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of ones: ``gg.ones(2, 3)`` or ``gg.ones((2, 3))``, made on ``device``."""
    return _filled(1.0, _shape_of(shape, "ones"), dtype, device, requires_grad)


def full(
    shape: Any,
    fill_value: bool | int | float,
    *,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of ``shape`` (an int or a tuple) filled with ``fill_value``, made on
    ``device``. dtype, as in the array API: a float fills in ``gg.get_default_dtype()``, an
    int in int64, a bool in bool, unless ``dtype`` is given."""
    shp = _shape_of((shape,), "full")
    _check_fill(fill_value, "full")
    if dtype is None and isinstance(fill_value, bool | np.bool_):
        dtype = np.bool_
    elif dtype is None and isinstance(fill_value, int | np.integer):
        dtype = np.int64
    return _filled(fill_value, shp, dtype, device, requires_grad)


def _check_fill(value: Any, name: str) -> None:
    if not isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        raise TypeError(f"{name}: fill_value must be a bool, int or float, got {value!r}")


def zeros_like(
    x: Any, *, dtype: Any = None, device: str | Device | None = None, requires_grad: bool = False
) -> Tensor:
    """Zeros of ``x``'s shape, with ``x``'s dtype and device unless given (``x``: a Tensor or
    an array)."""
    return _filled_like(x, 0, dtype, device, requires_grad)


def ones_like(
    x: Any, *, dtype: Any = None, device: str | Device | None = None, requires_grad: bool = False
) -> Tensor:
    """Ones of ``x``'s shape, with ``x``'s dtype and device unless given."""
    return _filled_like(x, 1, dtype, device, requires_grad)


def full_like(
    x: Any,
    fill_value: bool | int | float,
    *,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """``fill_value`` in ``x``'s shape, with ``x``'s dtype and device unless given."""
    _check_fill(fill_value, "full_like")
    return _filled_like(x, fill_value, dtype, device, requires_grad)


def _filled_like(x: Any, value: Any, dtype: Any, device: Any, requires_grad: bool) -> Tensor:
    t = as_tensor(x)
    dt = _backend.dtype_name(t.data.dtype) if dtype is None else dtype  # any namespace's
    return _filled(value, tuple(t.shape), dt, t.device if device is None else device, requires_grad)


def arange(
    start: int | float,
    stop: int | float | None = None,
    step: int | float = 1,
    *,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """``start, start + step, ...`` up to but not including ``stop`` (``arange(n)``: 0 to
    n - 1), as ``np.arange``, made on ``device`` (computed on the host, then copied: the
    same numbers on every device). dtype: int64 when every argument is an int, else
    ``gg.get_default_dtype()``, unless given."""
    args = (start, step) if stop is None else (start, stop, step)
    if not all(isinstance(a, int | float | np.integer | np.floating) for a in args):
        raise TypeError(f"arange: start, stop and step must be numbers, got {args!r}")
    if step == 0:
        raise ValueError("arange: step must not be 0")
    if dtype is None:
        ints = all(isinstance(a, int | np.integer) for a in args)
        dtype = np.int64 if ints else SETTINGS.default_dtype
    host = np.arange(start, stop, step) if stop is not None else np.arange(start, step=step)
    return Tensor(host.astype(dtype), requires_grad=requires_grad, device=device)


def linspace(
    start: float,
    stop: float,
    num: int,
    *,
    endpoint: bool = True,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """``num`` evenly spaced numbers from ``start`` to ``stop`` (included unless
    ``endpoint=False``), as ``np.linspace``: shape (num,), ``gg.get_default_dtype()`` unless
    given, made on ``device`` (computed on the host, then copied)."""
    if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 0:
        raise ValueError(f"linspace: num must be a non-negative integer, got {num!r}")
    host = np.linspace(start, stop, int(num), endpoint=endpoint)
    dt = SETTINGS.default_dtype if dtype is None else dtype
    return Tensor(host.astype(dt), requires_grad=requires_grad, device=device)


def eye(
    n_rows: int,
    n_cols: int | None = None,
    *,
    k: int = 0,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """The (n_rows, n_cols) matrix with ones on diagonal ``k`` (0: the main one; n_cols
    defaults to n_rows), zeros elsewhere, made on ``device``."""
    shp = _shape_of((n_rows, n_rows if n_cols is None else n_cols), "eye")
    dt = SETTINGS.default_dtype if dtype is None else dtype
    host = np.eye(shp[0], shp[1], k=k, dtype=dt)
    return Tensor(host, requires_grad=requires_grad, device=device)


def randn(
    *shape: Any,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
    rng: np.random.Generator | None = None,
) -> Tensor:
    """Standard normal draws: ``gg.randn(2, 3)`` or ``gg.randn((2, 3))``. Drawn on the host
    from ``rng`` (default: the global generator, see ``gg.manual_seed``) and then copied to
    ``device``, so one seed gives the same numbers on every device."""
    shp = _shape_of(shape, "randn")
    gen = default_generator() if rng is None else rng
    host = gen.standard_normal(shp).astype(SETTINGS.default_dtype if dtype is None else dtype)
    return Tensor(host, requires_grad=requires_grad, device=device)


def _shape_of(shape: tuple[Any, ...], name: str) -> tuple[int, ...]:
    """``(2, 3)`` from ``(2, 3)`` or ``((2, 3),)``; a clear TypeError for anything else."""
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    if not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in shape):
        raise TypeError(f"{name}: the shape must be integers, got {shape!r}")
    if any(n < 0 for n in shape):
        raise ValueError(f"{name}: negative dimension in shape {shape}")
    return tuple(int(n) for n in shape)


def _filled(
    value: float, shp: tuple[int, ...], dtype: Any, device: Any, requires_grad: bool
) -> Tensor:
    dev = parse_device(device)
    dt = SETTINGS.default_dtype if dtype is None else dtype
    xp = dev.xp
    if dev.is_cpu:
        arr = np.full(shp, value, dtype=dt)
    elif dev.kind == "cuda":
        with dev.native:
            arr = xp.full(shp, value, dtype=_backend.xp_dtype(xp, dt))
    else:
        arr = xp.full(shp, value, dtype=_backend.xp_dtype(xp, dt), device=dev.native)
    return Tensor(arr, requires_grad=requires_grad)


def to_device(x: Any, device: str | Device) -> Tensor:
    """``x`` on ``device`` (differentiable: the gradient goes back to ``x``'s device); the
    function form of :meth:`Tensor.to`."""
    return as_tensor(x).to(device)


def where(cond: Any, x: Any, y: Any) -> Tensor:
    """``x`` where ``cond`` is true, else ``y`` (broadcasting; ``cond`` is not differentiable)."""
    c = as_tensor(cond)
    if type(c.data) is not _ND:
        if dtype_kind(c.data.dtype) != "b":
            c = _const(namespace_of(c.data).astype(c.data, namespace_of(c.data).bool))
    elif c.data.dtype != np.bool_:
        c = _const(c.data.astype(bool))
    if isinstance(x, Tensor):
        tx, ty = x, _lift(y, x)
    elif isinstance(y, Tensor):
        tx, ty = _lift(x, y), y
    else:
        tx = as_tensor(x)
        ty = _lift(y, tx)
    return _apply(E.where, (c, tx, ty))


def _clip_bound(b: Any, name: str) -> Any:
    """A bound of :func:`clip` as the op takes it: a number or an array (constants)."""
    if isinstance(b, Tensor):
        if b.requires_grad:
            raise TypeError(
                f"clip: the bound {name} is a Tensor that requires grad, but clip's bounds are "
                f"constants (no gradient reaches them); for a bound that learns write "
                f"gg.minimum(gg.maximum(x, lo), hi)"
            )
        return b.data
    return b


def clip(x: Any, lo: Any = None, hi: Any = None, *, min: Any = None, max: Any = None) -> Any:
    """Clip to [lo, hi], min(max(x, lo), hi); the gradient passes inside (boundaries
    included), is 0 outside. ``min=``/``max=`` are NumPy 2's (and PyTorch's) names for
    ``lo``/``hi``. The bounds are constants: numbers, arrays or Tensors that need no gradient.
    A Scalar gives a Scalar."""
    for alias, given, name in ((min, lo, "lo"), (max, hi, "hi")):
        if alias is not None and given is not None:
            raise TypeError(f"clip: give {name} once (as {name} or as its alias)")
    lo = _clip_bound(lo if min is None else min, "lo")
    hi = _clip_bound(hi if max is None else max, "hi")
    if lo is None and hi is None:
        raise ValueError("clip: give lo, hi or both")
    if type(x) is Scalar:
        return apply_op(E.clip, x, lo=lo, hi=hi)
    return _apply(E.clip, (as_tensor(x),), {"lo": lo, "hi": hi})


def _reduce(op: Op, x: Any, axis: Any, keepdims: bool) -> Tensor:
    t = as_tensor(x)
    return _apply(op, (t,), {"axis": _norm_axis(axis, t.ndim, op.name), "keepdims": keepdims})


@_numpy_keywords
def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (int, tuple or None for all); shape loses those axes unless keepdims."""
    return _reduce(R.sum, x, axis, keepdims)


@_numpy_keywords
def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (int, tuple or None for all)."""
    return _reduce(R.mean, x, axis, keepdims)


@_numpy_keywords
def max(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis``; tied maxima share the gradient evenly.

    NumPy's ``max``: the values only. PyTorch's ``max(x, dim)`` returns (values, indices):
    the result here refuses to be unpacked, and the indices are ``gg.argmax(x, axis)``. The
    elementwise maximum of two tensors is ``gg.maximum(x, y)``."""
    return _reduce_values_only(R.max, x, axis, keepdims, "maximum")


@_numpy_keywords
def min(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis``; tied minima share the gradient evenly (values only, as
    :func:`max`; the elementwise minimum of two tensors is ``gg.minimum(x, y)``)."""
    return _reduce_values_only(R.min, x, axis, keepdims, "minimum")


def _reduce_values_only(op: Op, x: Any, axis: Any, keepdims: bool, pairwise: str) -> Tensor:
    if isinstance(axis, Tensor | np.ndarray | float) and not isinstance(axis, np.integer):
        raise TypeError(
            f"gg.{op.name}(x, axis): axis must be an int, a tuple of ints or None, got "
            f"{type(axis).__name__}; graphgrad follows NumPy, where the elementwise "
            f"{pairwise} of two tensors (PyTorch's {op.name}(a, b)) is gg.{pairwise}(x, y)"
        )
    out = _reduce(op, x, axis, keepdims)
    if axis is not None:
        out.__class__ = _Reduced
    return out


@_numpy_keywords
def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """ln sum_i e^{x_i} over ``axis``, computed stably (the maximum is subtracted first)."""
    return _reduce(R.logsumexp, x, axis, keepdims)


@_numpy_keywords
def argmax(x: Any, axis: Any = None) -> Tensor:
    """Indices of the maxima along ``axis`` (an int; None: of the flattened array), int64,
    not differentiable."""
    t = as_tensor(x)
    return _apply(
        E.argmax, (t,), {"axis": None if axis is None else _one_axis(axis, t.ndim, "argmax")}
    )


def reshape(x: Any, shape: Any) -> Tensor:
    """The same values with shape ``shape`` (one entry may be -1)."""
    t = as_tensor(x)
    shp = (shape,) if isinstance(shape, int | np.integer) else tuple(shape)
    try:
        return _apply(SH.reshape, (t,), {"shape": shp})
    except ShapeError:
        raise ShapeError(
            f"reshape: cannot reshape a tensor of shape {t.shape} ({t.size} elements) "
            f"into shape {shp}"
        ) from None


def transpose(x: Any, axes: Sequence[int] | int | None = None) -> Tensor:
    """Permute the axes, NumPy's ``np.transpose``: ``axes`` lists every axis of ``x`` in its
    new order (``None``: reverse them; a 2-D tensor's ``.T``). To swap two axes, PyTorch's
    ``transpose(x, dim0, dim1)``, use :func:`swapaxes`.

    Two axes naming a 2-D tensor's own order, ``transpose(x, (0, 1))``, would leave it
    unchanged where PyTorch swaps them: that call raises, naming both conventions."""
    t = as_tensor(x)
    if axes is None:
        return _apply(SH.transpose, (t,), {"axes": None})
    given = (axes,) if isinstance(axes, int | np.integer) else tuple(axes)
    for a in given:
        if not isinstance(a, int | np.integer) or not -t.ndim <= a < (t.ndim or 1):
            raise ShapeError(f"transpose: axis {a!r} is out of range for shape {t.shape}")
    perm = tuple(int(a) % t.ndim for a in given) if t.ndim else given
    if len(perm) == 2 and t.ndim == 2 and perm == (0, 1):
        raise ShapeError(
            f"transpose{tuple(int(a) for a in given)} on a 2-D tensor: graphgrad follows NumPy, "
            f"where the arguments are the new order of all the axes, so this would return the "
            f"tensor unchanged (PyTorch's transpose(0, 1) swaps the two axes). To swap them "
            f"write x.T, x.swapaxes(0, 1) or x.transpose(1, 0)"
        )
    if sorted(perm) != list(range(t.ndim)):
        hint = ""
        if len(perm) == 2 and t.ndim != 2:
            hint = (
                f"; graphgrad follows NumPy (a permutation of all {t.ndim} axes), to swap two "
                f"axes as PyTorch's transpose(dim0, dim1) does write "
                f"x.swapaxes({given[0]}, {given[1]})"
            )
        raise ShapeError(f"transpose: {given} is not a permutation of the axes of {t.shape}{hint}")
    return _apply(SH.transpose, (t,), {"axes": perm})


def swapaxes(x: Any, axis1: int, axis2: int) -> Tensor:
    """Swap two axes (NumPy's ``np.swapaxes``, PyTorch's ``transpose(x, dim0, dim1)``)."""
    t = as_tensor(x)
    i, j = (_one_axis(a, t.ndim, "swapaxes") for a in (axis1, axis2))
    perm = list(range(t.ndim))
    perm[i], perm[j] = perm[j], perm[i]
    return _apply(SH.transpose, (t,), {"axes": tuple(perm)})


def _transpose_perm(x: Any, axes: tuple[int, ...] | None) -> Tensor:
    """Permute by a full permutation (the rules' ``xp.transpose``: no checks, no hints)."""
    return _apply(SH.transpose, (as_tensor(x),), {"axes": axes})


def sum_rows(x: Any) -> Tensor:
    """Sum over every axis but the last: ``(..., n) -> (n,)``."""
    t = as_tensor(x)
    return sum(t, axis=tuple(range(t.ndim - 1))) if t.ndim > 1 else t


def swap_last(x: Any) -> Tensor:
    """Swap the last two axes (the matrix transpose of each matrix in a batch)."""
    t = as_tensor(x)
    axes = list(range(t.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return _apply(SH.transpose, (t,), {"axes": tuple(axes)})


def broadcast_to(x: Any, shape: Sequence[int]) -> Tensor:
    """Repeat ``x`` along new or size-1 axes to ``shape`` (NumPy's rules)."""
    return _apply(SH.broadcast_to, (as_tensor(x),), {"shape": tuple(shape)})


def sum_to(x: Any, shape: Sequence[int]) -> Tensor:
    """Sum ``x`` over broadcast axes down to ``shape`` (the transpose of ``broadcast_to``)."""
    return _apply(SH.sum_to, (as_tensor(x),), {"shape": tuple(shape)})


def getitem(x: Any, index: Any) -> Tensor:
    """``x[index]`` (slices, ints, int or bool arrays); repeated indices sum in backward."""
    t = as_tensor(x)
    return _apply(SH.getitem, (t,), {"index": _norm_index(index, t.data)})


def index_add(x: Any, index: Any, shape: Sequence[int]) -> Tensor:
    """A zero tensor of ``shape`` with ``x`` added at ``index`` (the transpose of getitem)."""
    t = as_tensor(x)
    return _apply(SH.index_add, (t,), {"index": _norm_index(index, t.data), "shape": tuple(shape)})


@_numpy_keywords
def concatenate(xs: Sequence[Any], axis: int | None = 0) -> Tensor:
    """Join tensors along an existing axis; ``axis=None`` joins them flattened (NumPy's
    meaning: the result is 1-D)."""
    ts = tuple(as_tensor(x) for x in xs)
    if not ts:
        raise ValueError("concatenate: needs at least one tensor")
    if axis is None:
        ts = tuple(reshape(t, (-1,)) for t in ts)
        axis = 0
    return _apply(SH.concatenate, ts, {"axis": _one_axis(axis, ts[0].ndim, "concatenate")})


@_numpy_keywords
def stack(xs: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors of equal shape along a new axis (an int, as in NumPy)."""
    ts = tuple(as_tensor(x) for x in xs)
    if not ts:
        raise ValueError("stack: needs at least one tensor")
    return _apply(SH.stack, ts, {"axis": _one_axis(axis, ts[0].ndim + 1, "stack")})


def matmul(x: Any, y: Any) -> Tensor:
    """Matrix product with NumPy's semantics: 1-D vectors, 2-D matrices, batches (...,m,n)."""
    tx, ty = as_tensor(x), as_tensor(y)
    xs, ys = tx.shape, ty.shape
    if not xs or not ys:
        raise ShapeError(f"matmul: scalar operands are not allowed, got shapes {xs} and {ys}")
    k2 = ys[-2] if len(ys) >= 2 else ys[0]
    if xs[-1] != k2:
        where_y = "second-to-last" if len(ys) >= 2 else "only"
        raise ShapeError(
            f"matmul: shapes {xs} and {ys} are not aligned: {xs[-1]} (last axis of the first) "
            f"!= {k2} ({where_y} axis of the second)"
        )
    return _apply(LA.matmul, (tx, ty))


def linear(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """``x @ weight.T + bias``: x (..., in), weight (out, in), bias (out,) or None -> (..., out).

    One op (``linear``) with or without the bias: the same products, layouts and kernels."""
    tx, tw = as_tensor(x), as_tensor(weight)
    xs, ws = tx.data.shape, tw.data.shape  # (not the properties: every layer asks)
    if len(ws) != 2 or not xs or xs[-1] != ws[1]:
        raise ShapeError(
            f"linear: input of shape {xs} does not fit a weight of shape {ws} "
            f"(weight must be (out, in) with in = the input's last axis)"
        )
    if bias is None:  # the same op with two inputs: the same products, layouts and kernels
        return _apply(LA.linear, (tx, tw))
    tb = as_tensor(bias)
    if tb.data.shape != (ws[0],):
        raise ShapeError(f"linear: bias has shape {tb.shape}, expected ({ws[0]},)")
    return _apply(LA.linear, (tx, tw, tb))


def _softmax_axes(axis: Any, ndim: int, opname: str) -> int | tuple[int, ...]:
    """softmax's ``axis`` as its op takes it: one axis as an int, several as a tuple (the
    sum runs over all of them, as in ``scipy.special.softmax``), None as every axis."""
    ax = _norm_axis(axis, ndim, opname)
    if ax is None:
        return tuple(range(ndim))
    return ax[0] if len(ax) == 1 else ax


@_numpy_keywords
def softmax(x: Any, axis: Any = -1) -> Tensor:
    """exp(x_i) / sum_j exp(x_j) along ``axis`` (an int; a tuple of ints or None normalise
    over those axes, or all, together), computed stably. Same shape as ``x``."""
    t = as_tensor(x)
    return _apply(FU.softmax, (t,), {"axis": _softmax_axes(axis, t.ndim, "softmax")})


@_numpy_keywords
def log_softmax(x: Any, axis: Any = -1) -> Tensor:
    """x_i - ln sum_j exp(x_j) along ``axis`` (an int; a tuple of ints or None: over those
    axes, or all, together), computed stably. Same shape as ``x``."""
    t = as_tensor(x)
    return _apply(FU.log_softmax, (t,), {"axis": _softmax_axes(axis, t.ndim, "log_softmax")})


def cross_entropy(logits: Any, labels: Any) -> Tensor:
    """Softmax cross-entropy averaged over the S samples: L = -(1/S) sum_s ln softmax(x^s)[y^s].

    Args:
        logits: (S, T) scores.
        labels: (S,) integer classes in [0, T), or (S, T) target probabilities.

    Returns:
        A 0-d tensor.
    """
    tx = as_tensor(logits)
    if isinstance(labels, Tensor):
        lab = labels.data
    elif type(labels) is not _ND and _backend.is_array(labels):
        lab = labels  # an array of another namespace (a batch on the GPU) stays where it is
    else:
        lab = np.asarray(labels)
    if tx.ndim != 2:
        raise ShapeError(f"cross_entropy: logits must be (S, T), got shape {tx.shape}")
    s, t = tx.shape
    if type(lab) is not _ND:
        _check_labels_any(tx, lab)
    elif lab.dtype.kind in "iu":
        if lab.shape != (s,):
            raise ShapeError(
                f"cross_entropy: integer labels must have shape ({s},) for logits {tx.shape}, "
                f"got {lab.shape}"
            )
        bad = _fused.bad_label(lab, t) if lab.size else -1
        if bad >= 0:
            raise ValueError(
                f"cross_entropy: label {int(lab[bad])} at index {bad} is outside [0, {t})"
            )
    elif lab.dtype.kind == "f":
        if lab.shape != tx.shape:
            raise ShapeError(
                f"cross_entropy: target probabilities must have the logits' shape {tx.shape}, "
                f"got {lab.shape}"
            )
    else:
        raise TypeError(f"cross_entropy: labels must be integers or floats, got {lab.dtype}")
    if isinstance(labels, Tensor) and labels.requires_grad:  # (float: ints cannot require it)
        return _apply(FU.cross_entropy, (tx, labels))  # target probabilities get a gradient
    return _apply(FU.cross_entropy, (tx, _const(lab)))


def _check_labels_any(tx: Tensor, lab: Any) -> None:
    """cross_entropy's label checks for labels of another namespace than NumPy's (the range
    check reads one boolean back from the device)."""
    s, t = tx.shape
    kind = dtype_kind(lab.dtype)
    if kind in "iu":
        if tuple(lab.shape) != (s,):
            raise ShapeError(
                f"cross_entropy: integer labels must have shape ({s},) for logits {tx.shape}, "
                f"got {tuple(lab.shape)}"
            )
        xp = namespace_of(lab)
        if s and bool(xp.any((lab < 0) | (lab >= t))):
            host = _backend.to_numpy(lab)
            bad = int(np.flatnonzero((host < 0) | (host >= t))[0])
            raise ValueError(
                f"cross_entropy: label {int(host[bad])} at index {bad} is outside [0, {t})"
            )
    elif kind == "f":
        if tuple(lab.shape) != tx.shape:
            raise ShapeError(
                f"cross_entropy: target probabilities must have the logits' shape {tx.shape}, "
                f"got {tuple(lab.shape)}"
            )
    else:
        raise TypeError(f"cross_entropy: labels must be integers or floats, got {lab.dtype}")


def mse_loss(pred: Any, target: Any) -> Tensor:
    """Mean squared error mean((pred - target)^2) over all elements; shapes must match."""
    tp = as_tensor(pred)
    tt = _lift(target, tp)
    if tp.shape != tt.shape:
        raise ShapeError(f"mse_loss: pred has shape {tp.shape} but target has shape {tt.shape}")
    d = tp - tt
    return mean(d * d)


def _raw(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _const_any(a: Any) -> Tensor:
    return _const(a if type(a) is _ND or _backend.is_array(a) else np.asarray(a))


class TensorXP:
    """The namespace VJP rules use when ``create_graph=True``: :mod:`graphgrad.ops._xp`'s twins
    on Tensors, so the backward pass is itself recorded and can be differentiated."""

    raw = staticmethod(_raw)
    const = staticmethod(_const_any)
    sum_to = staticmethod(sum_to)
    broadcast_to = staticmethod(broadcast_to)
    reshape = staticmethod(reshape)
    transpose = staticmethod(_transpose_perm)
    swap_last = staticmethod(swap_last)
    matmul = staticmethod(matmul)
    sum = staticmethod(sum)
    sum_rows = staticmethod(sum_rows)
    where = staticmethod(where)
    softmax = staticmethod(softmax)
    log_softmax = staticmethod(log_softmax)
    getitem = staticmethod(getitem)
    index_add = staticmethod(index_add)
    to_device = staticmethod(to_device)


# ------------------------------------------------------- functions made from the registry


def _op_function(op: Op) -> Callable[..., Any]:
    """The public function of elementwise op ``op`` (``gg.tanh``): its inputs (Tensors, arrays,
    numbers; Scalars give a Scalar), then its parameters by position or name."""

    def unary(x: Any, *args: Any, **kwargs: Any) -> Any:
        params = op.bind(args, kwargs) if (args or kwargs or op.params) else _EMPTY
        if type(x) is Scalar:
            return apply_op(op, x, **params)
        return _apply(op, (as_tensor(x),), params)

    def binary(x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        params = op.bind(args, kwargs) if (args or kwargs or op.params) else _EMPTY
        if type(x) is Scalar or type(y) is Scalar:
            return apply_op(op, x, y, **params)
        if isinstance(x, Tensor):
            return _apply(op, (x, _lift(y, x)), params)
        if isinstance(y, Tensor):
            return _apply(op, (_lift(x, y), y), params)
        tx = as_tensor(x)
        return _apply(op, (tx, _lift(y, tx)), params)

    function = unary if len(op.arg_names) == 1 else binary
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    function.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(a, kind) for a in op.arg_names]
        + [inspect.Parameter(n, kind, default=d) for n, d in op.params]
    )
    function.__name__ = function.__qualname__ = op.name
    function.__doc__ = op.summary()
    function.__module__ = "graphgrad"
    return function


def _op_method(function: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Tensor, *args: Any, **kwargs: Any) -> Any:
        return function(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = function.__name__
    method.__doc__ = function.__doc__
    return method


#: name -> public function for every elementwise op of the registry (``gg.exp``, ``gg.tanh``,
#: ``gg.maximum``, ``gg.softplus``, ...); ``clip`` is written out above (it checks its bounds).
OP_FUNCTIONS: dict[str, Callable[..., Any]] = {
    op.name: globals().get(op.name) or _op_function(op)
    for op in REGISTRY.values()
    if op.elementwise
}
globals().update(OP_FUNCTIONS)
for _name, _hint in _TORCH_METHODS.items():
    if _name not in Tensor.__dict__:
        _spelling = _TorchSpelling(_hint)
        _spelling.__set_name__(Tensor, _name)
        setattr(Tensor, _name, _spelling)
power = OP_FUNCTIONS["pow"]  # NumPy's name for it

for _name, _function in OP_FUNCTIONS.items():
    if not REGISTRY[_name].symbol and _name not in Tensor.__dict__:
        setattr(Tensor, _name, _op_method(_function))  # x.exp(), x.maximum(y), ...
    if not hasattr(TensorXP, _name):
        setattr(TensorXP, _name, staticmethod(_function))  # rules may use any op: xp.cos


def __getattr__(name: str) -> Any:
    # Only for names that are not here: the generated functions above are module globals.
    # (Type checkers read this signature for them.)
    raise AttributeError(f"module 'graphgrad.tensor' has no attribute {name!r}")


#: ``backward(trace=True)``'s tracer, :func:`graphgrad.viz.trace_backward`: the picture layer
#: sets it on import (the front end imports nothing above it).
_TRACER: Callable[..., Any] | None = None


def set_backward_tracer(tracer: Callable[..., Any]) -> None:
    """Make ``tracer(tensor, grad, retain_graph=, create_graph=)`` serve backward(trace=True)."""
    global _TRACER
    _TRACER = tracer


# The front end's plumbing that the functional API and gradcheck build on, by public names.
make_node = _apply  # run an op on Tensors and record the node if a gradient is needed
constant = _const  # a leaf that requires no gradient, around an array as it is
to_array = _to_array  # data as the array a Tensor would hold

TENSOR_XP = TensorXP
_xp_names.check(TensorXP)
set_graph_namespace(TensorXP)


# ------------------------------------------- PyTorch habits: refused, or made explicit


def _int_grad_message(data: Any, arr: np.ndarray) -> str:
    """The error for ``Tensor(<integers>, requires_grad=True)``."""
    shown = repr(data) if isinstance(data, int | list | tuple) else "the array given"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return (
        f"only floating-point tensors can require gradients, but {shown} gives {arr.dtype} "
        f"data (PyTorch and JAX refuse this too; graphgrad no longer casts it silently): write "
        f"float literals such as [1., 2.], or pass dtype=np.float32 (or float64)"
    )


def _check_inplace(x: Tensor, other: Any, sym: str) -> None:
    """Refuse an in-place operation on a leaf that requires gradients while they are recorded."""
    if x._op is None and x.requires_grad and GRAD_ENABLED.get():
        name = f" {x.name!r}" if x.name else ""
        head = f"x {sym} ..."
        if sym.endswith("]"):  # x[i] = v
            head = "x[i] = v"
            why, instead = "the graph would not see the change", "gg.where(mask, v, x)"
        else:
            why = (
                "Python would rebind x to a new tensor, so x.grad would stay None and an "
                "optimiser holding x would never see the change"
            )
            instead = f"y = x {sym[:-1]} ..."
        raise InPlaceError(
            f"{head}: in-place operation on the leaf tensor{name} of shape {x.shape}, "
            f"which requires grad: {why} (PyTorch refuses this too). Write {instead} for a "
            f"new node of the graph, or update the values under `with gg.no_grad():` (as an "
            f"optimiser step does)"
        )


def _inplace(x: Tensor, other: Any, op: Op, sym: str) -> Tensor:
    """``x <op>= other``. Rules (PyTorch's where it can be had without version counters):

    * ``x`` a leaf that requires grad, gradients recorded: :class:`InPlaceError`;
    * ``x`` a leaf under ``no_grad()`` (an optimiser step): ``x.data`` is updated in place,
      NumPy's casting rule (``same_kind``) applies, and ``x`` stays the same object;
    * otherwise: ``x <op> other`` is a new tensor (recorded if it needs a gradient) and Python
      rebinds ``x`` to it. A graph that already used ``x`` keeps the values it saw: writing
      into them would change that graph's gradients silently (PyTorch detects it with
      version counters, graphgrad has none).
    """
    _check_inplace(x, other, sym)
    o = _lift(other, x)
    if x._op is not None or GRAD_ENABLED.get():
        return matmul(x, o) if op is LA.matmul else _apply(op, (x, o))
    with no_grad():
        r = matmul(x, o) if op is LA.matmul else _apply(op, (x, o))
    if r.shape != x.shape:
        raise ShapeError(
            f"x {sym} y: the result has shape {r.shape} but x has shape {x.shape}; an in-place "
            f"operation cannot change the shape (write x = x {sym[:-1]} y for a new tensor)"
        )
    try:
        if type(x.data) is _ND:
            np.copyto(x.data, r.data, casting="same_kind")
        else:
            _copy_into(x.data, r.data)
    except TypeError as e:
        raise TypeError(
            f"x {sym} y: cannot store the {r.dtype} result in x's {x.dtype} data in place "
            f"(NumPy's same_kind rule); write x = x {sym[:-1]} y for a new tensor"
        ) from e
    return x


def _copy_into(dst: Any, src: Any) -> None:
    """``dst[...] = src`` for arrays of another namespace, with NumPy's ``same_kind`` rule."""
    kd, ks = dtype_kind(dst.dtype), dtype_kind(src.dtype)
    order = "buifc"
    if order.index(ks) > order.index(kd):
        raise TypeError(f"cannot cast {src.dtype} to {dst.dtype} (same_kind)")
    xp = namespace_of(dst)
    dst[...] = src if src.dtype == dst.dtype else xp.astype(src, dst.dtype)


class _Reduced(Tensor):
    """The result of ``gg.max(x, axis)`` / ``gg.min(x, axis)``: an ordinary Tensor that
    refuses to be iterated or indexed by a bare integer, because ``_, idx = gg.max(out, 1)``
    and ``gg.max(out, 1)[1]`` are PyTorch's (values, indices) reading; here they would give
    values (two of them on a batch of two, or row 1's maximum) silently. Slices, arrays and
    ``gg.getitem(m, i)`` index it as usual, and anything computed from it is a plain Tensor."""

    __slots__ = ()

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, int | np.integer) and not isinstance(index, bool):
            raise TypeError(
                f"gg.max(x, axis)[{index}] (or gg.min): graphgrad follows NumPy, so this is "
                f"the extreme of row {index}, not item {index} of PyTorch's (values, indices) "
                f"pair. For the indices write gg.argmax(x, axis); for row {index}'s value "
                f"write gg.getitem(vals, {index}) or vals.data[{index}]"
            )
        return getitem(self, index)

    def __iter__(self) -> Iterator[Tensor]:
        raise TypeError(
            f"iterating over the result of gg.max(x, axis) or gg.min(x, axis) (shape "
            f"{self.shape}): graphgrad "
            f"follows NumPy, where max/min return the values only, not PyTorch's (values, "
            f"indices) pair. For the indices write idx = gg.argmax(x, axis); for the values "
            f"vals = gg.max(x, axis). To iterate over the values, iterate over vals.data or "
            f"index vals[i]"
        )
