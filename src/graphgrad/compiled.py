"""Compiled training steps: an MLP's whole step (forward, softmax cross-entropy, backward and
the optimiser's update) as one call into compiled code, with no graph recorded.

The eager step builds a graph of Tensors as the forward pass runs, walks it backwards, then
updates every parameter; each op costs a few microseconds of Python besides its arithmetic.
For the models most training runs use (a ``Sequential`` or ``MLP`` of ``Linear`` layers and
the lecture's activations, ``ReLU``, ``Tanh``, ``Sigmoid``, ``LeakyReLU``, ``ELU`` and
``Identity``, after an optional ``Flatten``; ``cross_entropy`` with integer labels; ``SGD`` or
``Adam``) :func:`compile_step` writes the step out once per batch size as a *plan*: a list of
kernel calls over arrays allocated once (activations, gradients), which
``graphgrad._kernels.Plan`` runs in one call with the GIL released::

    step = gg.compile_step(model, opt)       # opt = gg.optim.SGD(model.parameters(), ...)
    for xb, yb in loader:
        loss = step(xb, yb)                  # = forward, loss, zero_grad, backward, opt.step()

The plan makes the same calls as the eager step, in the same order within each array: the
same GEMMs of the same BLAS (NumPy's, or MKL's or oneDNN's when ``gg.set_blas`` selected
it) with the same transposes and layouts (the measured ``columns`` layout of ``linear``
included), ``ones @ G`` for bias gradients, the same ReLU, cross-entropy and optimiser
kernels, NumPy's own inner loops of ``tanh``, ``exp`` and ``expm1`` (found in the ufuncs' loop
tables and checked against them, :func:`numpy_loop`) with the arithmetic of graphgrad's other
activations and their rules in the same order. So both give the same numbers bit for bit:
the tests run both side by side. What the plan saves is the framework:
graph records, Tensor objects, temporary arrays and Python calls (``bench/bench_step_procs.py``
measures it); it also computes the cross-entropy's loss and gradient in one pass, and updates
each layer's parameters right after their gradients are made, while they are in cache.

Where the plan cannot reproduce the eager step exactly, the call runs the eager step instead
and says so in :attr:`CompiledStep.engine` and :attr:`CompiledStep.why_eager`: no compiled
kernels (``GRAPHGRAD_PURE_PYTHON=1``) or no BLAS address found, a batch of one sample through
a layer of width one (NumPy makes dot products there), a batch of one sample or a layer of
width one with ``SGD(fused_backward=True)`` (for products with a side of one the plan mirrors
NumPy's calls, whatever the library: GEMV for a row times a matrix or a matrix times a
column, graphgrad's outer kernel for a column times a row), an input of another dtype or not
C-contiguous, out-of-range labels (the eager step raises its error), a weight stored
column-major, anomaly mode (``gg.detect_anomaly``, which checks each op of the eager step),
``no_grad`` (the eager step raises its error). ``describe()`` prints the plan: every kernel
call with its shapes.

Each call checks, before its plan runs, that nothing the plan depends on has changed: the
model's modules and their parameter Tensors, each parameter's array, the optimiser's
hyper-parameters and state arrays, the BLAS, the layout, anomaly mode, ``no_grad``, the batch.
After a call that ran a plan (a data-parallel rank's too), a ``_kernels.Guard`` keeps what
those checks found, and the next call compares it object by object in compiled code before
running the same plan; anything different, including a batch of another size, dtype or
layout, takes the checked path. Measured on the Zen 4 test machine at 1 thread: the checks
in Python cost 98 µs a 784-256-256-10 step (their objects fall out of the caches while the
GEMMs run), the guard 20.
"""

from __future__ import annotations

import ctypes
import functools
import math
import operator
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _backend, _blas, _fused, _memory
from ._state import ANOMALY, GRAD_ENABLED
from .errors import GraphgradError
from .nn.activations import ELU, Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from .nn.layers import Flatten, Linear, Sequential
from .nn.module import Module
from .optim import SGD, Adam, Optimizer
from .optim.optimizer import on_device_of
from .tensor import Tensor, cross_entropy

__all__ = ["CompileError", "CompiledStep", "compile_step", "plans_info", "plans_unavailable"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_NOWHERE: dict[str, Any] = {}


def plans_unavailable() -> str:
    """Why no plan can run in this process ("" when plans can run): the compiled kernels are
    not built, or ``GRAPHGRAD_PURE_PYTHON=1`` asked for the pure-Python twins."""
    if _fused.KERNELS is None:
        return "the compiled kernels are not built (or GRAPHGRAD_PURE_PYTHON=1)"
    return ""


#: The activation modules a plan computes (ReLU by its own kernels, the others by NumPy's own
#: loops for tanh, exp and expm1 plus the arithmetic of graphgrad's forwards and rules).
_ACTIVATIONS = (ReLU, Tanh, Sigmoid, LeakyReLU, ELU)
#: The NumPy ufuncs whose inner loops each activation's forward calls.
_ACT_LOOPS: dict[str, tuple[Any, ...]] = {
    "relu": (),
    "tanh": (np.tanh,),
    "sigmoid": (np.exp,),
    "elu": (np.expm1, np.minimum),
    "leaky_relu": (),
}
#: What each activation's forward and VJP compute, for describe() ({k}: the layer, {j}: the
#: one above).
_ACT_TEXT = {
    "relu": ("a{j} = max(y{j}, 0)", "G{k} = D{j} where y{k} > 0, else 0"),
    "tanh": ("a{j} = tanh(y{j})", "G{k} = D{j} ⊙ (1 - a{k}²)"),
    "sigmoid": ("a{j} = sigmoid(y{j})", "G{k} = D{j} ⊙ (1 - a{k}) a{k}"),
    "elu": ("a{j} = elu(y{j})", "G{k} = D{j} ⊙ (1 where y{k} > 0, else a{k} + alpha)"),
    "leaky_relu": ("a{j} = leaky_relu(y{j})", "G{k} = D{j} ⊙ (1 where y{k} > 0, else slope)"),
}
#: The kernels' codes of those activations (empty without compiled kernels).
_K_ACTS: dict[str, int] = dict(getattr(_fused.KERNELS, "PLAN_ACTIVATIONS", {}))


class _UFuncHead(ctypes.Structure):
    """The leading fields of NumPy's ``PyUFuncObject`` (public C API, ufuncobject.h)."""

    _fields_ = (
        ("ob_refcnt", ctypes.c_ssize_t),
        ("ob_type", ctypes.c_void_p),
        ("nin", ctypes.c_int),
        ("nout", ctypes.c_int),
        ("nargs", ctypes.c_int),
        ("identity", ctypes.c_int),
        ("functions", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
        ("ntypes", ctypes.c_int),
        ("reserved1", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("types", ctypes.c_void_p),
    )


_LOOP = ctypes.CFUNCTYPE(
    None,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_ssize_t),
    ctypes.POINTER(ctypes.c_ssize_t),
    ctypes.c_void_p,
)


@functools.cache
def numpy_loop(ufunc: Any, dtype: Any) -> tuple[int, int] | None:
    """NumPy's own inner loop of ``ufunc`` (unary, or binary with a scalar 0 second operand)
    for ``dtype`` (float32/float64): ``(function address, its data)``, found in the ufunc's
    loop table and checked, by calling it, to give ``ufunc``'s own bits on a probe of
    ordinary and extreme values (else None: a plan then does not use it)."""
    dt = np.dtype(dtype)
    if dt not in _FLOATS or type(ufunc) is not np.ufunc:
        return None
    if ufunc.nout != 1 or ufunc.nin not in (1, 2):
        return None
    head = _UFuncHead.from_address(id(ufunc))
    # the fields must read as the ufunc's own: else the struct is not laid out as assumed
    if (head.nin, head.nout, head.ntypes) != (ufunc.nin, 1, ufunc.ntypes) or not head.types:
        return None
    if head.name != ufunc.__name__.encode() or head.nargs != ufunc.nargs:
        return None
    n = head.nargs
    types = ctypes.cast(head.types, ctypes.POINTER(ctypes.c_char))
    funcs = ctypes.cast(head.functions, ctypes.POINTER(ctypes.c_void_p))
    datas = ctypes.cast(head.data, ctypes.POINTER(ctypes.c_void_p)) if head.data else None
    for k in range(head.ntypes):
        if all(ord(types[k * n + j]) == dt.num for j in range(n)):
            fn, data = funcs[k], (datas[k] if datas is not None else None) or 0
            break
    else:
        return None
    if not fn:
        return None
    probe = np.array(
        [0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 20.0, -20.0, 88.0, -88.0,
         100.0, -100.0, 700.0, -700.0, 1e30, -1e30, np.inf, -np.inf, np.nan],
        dtype=dt,
    )  # fmt: skip
    probe = np.concatenate([probe, np.random.default_rng(0).standard_normal(41).astype(dt) * 9])
    out = np.empty_like(probe)
    zero = np.zeros(1, dt)
    with np.errstate(all="ignore"):
        want = ufunc(probe) if ufunc.nin == 1 else ufunc(probe, dt.type(0))
    ptrs = [probe.ctypes.data, out.ctypes.data]
    steps = [dt.itemsize, dt.itemsize]
    if ufunc.nin == 2:
        ptrs.insert(1, zero.ctypes.data)
        steps.insert(1, 0)
    _LOOP(fn)(
        (ctypes.c_void_p * len(ptrs))(*ptrs),
        (ctypes.c_ssize_t * 1)(probe.size),
        (ctypes.c_ssize_t * len(steps))(*steps),
        data,
    )
    if out.tobytes() != want.tobytes():
        return None
    return int(fn), int(data)


def plans_info() -> dict[str, Any]:
    """Whether compiled steps can run here (``available``; else ``reason``), and which
    activations a plan computes (``activations``: identity, ReLU, and the others where
    NumPy's own loops were found and checked, in float32 and float64)."""
    reason = plans_unavailable()
    acts = ["identity"]
    if not reason:
        for act, ufuncs in _ACT_LOOPS.items():
            ok = act in _K_ACTS and all(
                numpy_loop(u, dt) is not None for u in ufuncs for dt in _FLOATS
            )
            if ok:
                acts.append(act)
    return {"available": not reason, "reason": reason, "activations": acts}


class CompileError(GraphgradError, ValueError):
    """The model, loss or optimiser is not one :func:`compile_step` can compile."""


@dataclass
class _Layer:
    """A Linear layer and the activation after it (a key of ``_ACT_TEXT``, or "identity")."""

    linear: Linear
    act: str = "identity"
    param: float = 0.0  # leaky_relu's slope, elu's alpha


def _layers(model: Module) -> tuple[list[_Layer], bool]:
    """The model as Linear layers with their activations, and whether it starts with a
    Flatten; raises CompileError naming the first module it cannot compile."""
    mods = _modules_of(model)
    layers: list[_Layer] = []
    flatten = False
    for i, m in enumerate(mods):
        where = f"module {i} ({type(m).__name__})" if isinstance(model, Sequential) else ""
        if type(m) is Flatten:
            flatten = flatten or not layers  # after a Linear the batch is 2-D: a no-op
        elif type(m) is Linear:
            layers.append(_Layer(m))
        elif type(m) is Identity:
            continue
        elif type(m) in _ACTIVATIONS:
            if not layers or layers[-1].act != "identity":
                raise CompileError(
                    f"compile_step: {where} must follow a Linear layer (the plan fuses each "
                    f"activation with the layer before it)"
                )
            act = m.name  # type: ignore[attr-defined]
            layers[-1].act = act
            layers[-1].param = float(m.param or 0.0)  # type: ignore[attr-defined]
        else:
            raise CompileError(
                f"compile_step: {where or type(m).__name__} cannot be compiled: a plan runs "
                f"Sequential/MLP models of Linear, the activations "
                f"{', '.join(c.__name__ for c in _ACTIVATIONS)}, Identity and a leading "
                f"Flatten; train this model with the eager step (model(x), loss.backward(), "
                f"opt.step())"
            )
    if not layers:
        raise CompileError("compile_step: the model has no Linear layer")
    return layers, flatten


def _modules_of(model: Module) -> list[Module]:
    return list(model) if isinstance(model, Sequential) else [model]


@dataclass
class _Built:
    """A plan for one batch size, and what it depends on."""

    plan: Any  # graphgrad._kernels.Plan
    n_forward: int  # instructions up to and including the loss
    logits: np.ndarray
    grads: list[tuple[Tensor, np.ndarray | None]]  # what .grad becomes after a run
    params: list[tuple[Tensor, np.ndarray]]  # p.data must still be these arrays
    states: list[tuple[int, str, Any]]  # optimizer.state[i][key] must still be these
    adam: list[int] = field(default_factory=list)  # state indices whose "step" advances
    text: list[str] = field(default_factory=list)
    # a reduced step's plan (_Into): where the updates start, and the gradient arrays it
    # writes and reads (the reducer's, which must still be these)
    n_backward: int = -1
    into: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    # the optimiser's parameter list as the plan found it (which it updates, and each one's
    # state index): another list, or one changed in place, is another plan
    opt_params: tuple[Tensor, ...] = ()
    # parameters the optimiser does not hold: nothing zeroes their .grad, so each step's
    # gradient is added to it, as the eager step's backward adds it (a new array)
    accumulate: list[tuple[Tensor, np.ndarray]] = field(default_factory=list)
    # the instructions the plan was made of (a benchmark makes a plan of some of them)
    instrs: list[tuple[Any, ...]] = field(default_factory=list)
    # the state arrays the plan made that the optimiser's state does not hold yet, each
    # (i, key, array, what the state held when the plan was made: None where it had none,
    # else the value whose contents are copied in): put into ``optimizer.state`` when the
    # plan's update first runs (so that a plan built but not run, e.g. by describe(), or
    # whose update was skipped, changes nothing; if the state gets that entry meanwhile,
    # from an eager step, the plan, whose first-step flags would be stale, is rebuilt)
    pending: list[tuple[int, str, np.ndarray, Any]] = field(default_factory=list)
    # the optimiser's parameters the plan does not update: their .grad is set to None, as
    # the eager step's zero_grad() does
    uncovered: list[Tensor] = field(default_factory=list)


@dataclass
class _Into:
    """Where a reduced step (:meth:`CompiledStep.reduced_step`) puts each parameter's
    gradient: ``write[id(p)]`` (this process's, seeded with ``weight``) and where the update
    reads it after the reduction, ``read[id(p)]``."""

    weight: float
    write: dict[int, np.ndarray]
    read: dict[int, np.ndarray]


def _shared(params: list[tuple[Tensor, np.ndarray]]) -> bool:
    """Whether two of the parameters are one Tensor or share memory (tied weights): a plan
    would update them as two, where the eager step adds their gradients."""
    if len({id(p) for p, _ in params}) != len(params):
        return True
    arrays = [w for _, w in params]
    return any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])


#: The optimiser's hyper-parameters a plan bakes in (the learning rate is read at each call).
_HYPER: dict[type, tuple[str, ...]] = {
    SGD: ("momentum", "weight_decay", "nesterov", "fused_backward"),
    Adam: ("betas", "eps", "weight_decay"),
}


def _labels_int64(labels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(labels, dtype=np.int64)


def _adam_step(state: dict[int, Any], i: int) -> int:
    """Adam's step count of parameter ``i`` (0 before its first step)."""
    st = state.get(i)
    return 0 if st is None else int(st.get("step", 0))


def _install(state: dict[int, Any], built: _Built) -> None:
    """Put ``built``'s pending state arrays into the optimiser's ``state`` (each with the
    values of the one it replaces, if any), before its update first runs."""
    for i, key, arr, old in built.pending:
        st = state.setdefault(i, {})
        if old is not None:
            np.copyto(arr, old if type(old) is np.ndarray else _backend.to_numpy(old))
        st[key] = arr
        if key == "exp_avg":
            st.setdefault("step", 0)
    built.pending = []


def _addr(a: np.ndarray) -> int:
    return int(a.ctypes.data)


class CompiledStep:
    """One training step of ``model`` with ``optimizer``, compiled (see the module's text).

    Args:
        model: a ``Sequential`` (or ``MLP``) of ``Linear``, ``ReLU``, ``Tanh``, ``Sigmoid``,
            ``LeakyReLU``, ``ELU`` and ``Identity`` modules, optionally starting with
            ``Flatten``; its parameters NumPy arrays (the ``cpu``
            device) of one float dtype.
        optimizer: ``SGD`` (any momentum, weight decay, Nesterov, ``fused_backward``) or
            ``Adam`` over (some of) the model's parameters; its ``lr`` is read at every call,
            so schedules work as with ``opt.step()``.
        loss_fn: ``gg.cross_entropy`` (the only loss compiled).

    Raises:
        CompileError: naming the module, loss or optimiser that cannot be compiled.

    Calling it with a batch ``x`` (S, D) (or (S, ...) with a leading ``Flatten``) and integer
    labels (S,) does ``zero_grad``, forward, loss, backward and ``optimizer.step()`` and
    returns the loss (a float, the mean over the S samples). Afterwards :attr:`logits` holds
    the batch's logits (S, T), and each parameter's ``.grad`` its gradient (arrays the next
    call overwrites: copy what you keep; a ``fused_backward`` weight's stays None, as in the
    eager step; a weight gradient whose rows are a multiple of 4096 bytes long, such as a
    3072-input layer's, is a view with its rows 64 bytes further apart, as in the eager step:
    ``graphgrad._memory.GRAD_PAD_EVERY``).
    The optimiser's state is its own (``state_dict``, checkpoints, switching to
    the eager step and back all work).
    """

    def __init__(
        self,
        model: Module,
        optimizer: Optimizer,
        loss_fn: Callable[..., Tensor] = cross_entropy,
    ) -> None:
        if loss_fn is not cross_entropy:
            raise CompileError(
                f"compile_step: the loss must be gg.cross_entropy (softmax cross-entropy with "
                f"integer labels), got {getattr(loss_fn, '__name__', loss_fn)!r}"
            )
        if type(optimizer) not in (SGD, Adam):
            raise CompileError(
                f"compile_step: the optimiser must be gg.optim.SGD or gg.optim.Adam, got "
                f"{type(optimizer).__name__}"
            )
        self.model = model
        self.optimizer = optimizer
        self._busy = threading.Lock()
        self._plans: dict[int, _Built] = {}
        self._guard: Any = None  # _kernels.Guard: see _arm
        self._adopt(_modules_of(model))
        self._key: tuple[Any, ...] = ()
        self._logits: np.ndarray | None = None
        #: "kernels" if the last call ran the plan, "eager" if it ran the eager step.
        self.engine = ""
        #: Why the last call ran the eager step ("" when it ran the plan).
        self.why_eager = ""

    @property
    def model(self) -> Module:
        """The model this step trains; assigning another one disarms the guard (see
        :meth:`_arm`): the next call checks it, and adopts its structure."""
        return self._model

    @model.setter
    def model(self, value: Module) -> None:
        self._model = value
        self._guard = None

    @property
    def optimizer(self) -> Optimizer:
        """The optimiser this step updates with; assigning another one disarms the guard."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: Optimizer) -> None:
        self._optimizer = value
        self._guard = None

    def _adopt(self, mods: list[Module]) -> None:
        """Take the model's structure (its modules ``mods``, in order): layers, dtype, sizes;
        raises CompileError for what cannot be compiled."""
        layers, flatten = _layers(self.model)
        dtypes = set()
        for k, layer in enumerate(layers):
            for name, p in (("weight", layer.linear.weight), ("bias", layer.linear.bias)):
                if p is None:
                    continue
                if type(p.data) is not np.ndarray:
                    raise CompileError(
                        f"compile_step: layer {k}'s {name} is not a NumPy array (device "
                        f"{self.model.device}): plans run on the cpu device only"
                    )
                if p.data.dtype not in _FLOATS:
                    raise CompileError(
                        f"compile_step: layer {k}'s {name} is {p.data.dtype}; plans run "
                        f"float32 and float64"
                    )
                dtypes.add(p.data.dtype)
            if k and layer.linear.in_features != layers[k - 1].linear.out_features:
                raise CompileError(
                    f"compile_step: layer {k} takes {layer.linear.in_features} features but "
                    f"layer {k - 1} gives {layers[k - 1].linear.out_features}"
                )
        if len(dtypes) != 1:
            raise CompileError(
                f"compile_step: the parameters must share one dtype, got {sorted(map(str, dtypes))}"
            )
        self._layers, self._flatten, self._mods = layers, flatten, mods
        #: each layer's weight and bias Tensors where the plans found them: one replaced
        #: (``lin.weight = Tensor(...)``) is a new structure, as a replaced module is
        self._slots = [
            (ly.linear, name, getattr(ly.linear, name))
            for ly in layers
            for name in ("weight", "bias")
        ]
        self._params = [p for _, _, p in self._slots if p is not None]
        self.dtype: np.dtype[Any] = dtypes.pop()
        self.in_features = layers[0].linear.in_features
        self.classes = layers[-1].linear.out_features
        self._plans.clear()

    def _structure_changed(self) -> str:
        """Nothing (an empty string) if the model still has the modules it was compiled with;
        else adopt the new ones (plans are rebuilt), or say why they cannot be compiled."""
        mods = _modules_of(self.model)
        if (
            len(mods) == len(self._mods)
            and all(map(operator.is_, mods, self._mods))
            and all(getattr(lin, name) is p for lin, name, p in self._slots)
        ):
            return ""
        try:
            self._adopt(mods)
        except CompileError as e:
            return f"the model changed: {e}"
        return ""

    # ----------------------------------------------------------------------- calling
    @property
    def logits(self) -> np.ndarray | None:
        """The logits (S, T) of the last call's batch (None before the first)."""
        return self._logits

    def __call__(self, x: Any, labels: Any, *, skip_nonfinite: bool = False) -> float:
        """One step on batch ``x`` with integer ``labels``; returns the loss. With
        ``skip_nonfinite``, a NaN or infinite loss is returned without the backward pass or
        the update (the parameters and the optimiser's state stay as they were)."""
        self._enter()
        try:
            guard = self._guard
            if guard is not None:  # nothing changed since the last call ran the plan?
                loss = guard.run(x, labels, skip_nonfinite)
                if loss is not None:
                    return loss
                self._guard = None
            return self._step(x, labels, skip_nonfinite)
        finally:
            self._busy.release()

    def _enter(self) -> None:
        """One call at a time (the plan's arrays are shared): take the lock or raise. (Not a
        context manager: a generator's entry and exit cost a microsecond, a fifth of a small
        network's step.)"""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(
                "CompiledStep: called from two threads at once (its plan's arrays are shared); "
                "give each thread its own model, optimiser and step"
            )

    def _prepare(
        self, x: Any, labels: Any, into: _Into | None = None
    ) -> tuple[Any, Any, _Built | None, str]:
        """The batch's arrays (the labels as C-contiguous int64), its plan and, without one,
        why the eager step must run."""
        xa = x.data if isinstance(x, Tensor) else x
        lab = labels.data if isinstance(labels, Tensor) else labels
        why = self._why_not(xa, lab)
        built = None
        if not why:
            if lab.dtype != np.int64 or not lab.flags.c_contiguous:
                lab = _labels_int64(lab)
            built = self._plan_for(xa.shape[0], into)
            why = "" if built is not None else self.why_eager
        return xa, lab, built, why

    def _step(self, x: Any, labels: Any, skip_nonfinite: bool) -> float:
        if type(x) is np.ndarray and x.ndim > 1 and x.shape[0] == 1:
            why = self._vector_why(1)
            if why:  # no plan, whatever the checks would find: straight to the eager step
                # (the checks cost 10-15 µs: 6-9% of a 784-256-256-10 eager step of one sample)
                return self._eager(x, labels, why, skip_nonfinite)
        xa, lab, built, why = self._prepare(x, labels)
        if built is None:
            return self._eager(x, labels, why, skip_nonfinite)
        loss = self._run(
            built, xa, lab, built.n_forward, lambda v: not skip_nonfinite or math.isfinite(v)
        )
        if loss is None:
            return self._eager(x, labels, "a label is out of range", skip_nonfinite)
        self._guard = self._arm(built, xa, labels)
        return loss

    def _arm(self, built: _Built, x: np.ndarray, labels: Any, into: _Into | None = None) -> Any:
        """A guard (``_kernels.Guard``) holding what this call's checks read and found, so
        that the next call runs the same plan without them if none of it has changed: the
        objects of :meth:`_why_not` (kernels, anomaly mode, gradients on, the modules and the
        parameters' Tensors, each requiring grad), of :meth:`_hyper` (the optimiser's
        hyper-parameters, the BLAS's address, the layout) and of :meth:`_still_valid` (each
        parameter's array and optimiser state array), and the batch's type, dtype and shape
        and its labels' dtype (converted to int64 as here). Any difference is found before
        anything runs and takes the checked path, which arms again. A reduced step's guard
        (``into``) also holds its weight, its ``write`` and ``read`` dicts and their entries
        (:meth:`_still_valid`'s), and answers reduced steps only; a plain one, plain steps
        only. (Plans that add to the ``.grad`` of parameters the optimiser does not hold
        always take the checked path: None, no guard; Adam's step counts, which advance,
        must be equal and are passed and advanced as there.) ``labels`` as the caller gave
        them (an array or a Tensor)."""
        K = _fused.KERNELS
        if K is None or built.accumulate or built.pending:
            return None
        if isinstance(labels, Tensor):
            labels = labels.data
        opt, model = self.optimizer, self.model
        attrs: list[Any] = [_fused, "KERNELS", K]  # (model and optimizer: their setters)
        items: list[Any] = []
        orders: list[Any] = []
        if isinstance(model, Sequential):
            attrs += [model, "_modules", model._modules]
            orders += [model._modules, tuple(self._mods)]
        for lin, name, p in self._slots:
            attrs += [lin, name, p]
        for name in _HYPER[type(opt)]:
            attrs += [opt, name, getattr(opt, name)]
        gemms = _blas.gemm_addresses()
        items += [gemms, self.dtype, gemms.get(self.dtype, K.MISSING)]
        items += [_blas.COLUMNS, 0, _blas.COLUMNS[0]]
        for p, arr in built.params:
            attrs += [p, "data", arr]
        attrs += [opt, "state", opt.state, opt, "params", opt.params]
        orders += [opt.params, built.opt_params]
        for i, key, arr in built.states:
            items += [opt.state, i, opt.state[i], opt.state[i], key, arr]
        n_first, reduced = built.n_forward, None
        if into is not None:
            for (p, _), (w, r) in zip(built.params, built.into, strict=True):
                items += [into.write, id(p), w, into.read, id(p), r]
            n_first, reduced = built.n_backward, (into.weight, into.write, into.read)
        for p in self._params:
            attrs += [p, "requires_grad", True]
        ctx = [ANOMALY, ANOMALY.get(), GRAD_ENABLED, GRAD_ENABLED.get()]
        grads = [q for p, g in built.grads for q in (p, g)]
        adam = [opt.state[i] for i in built.adam]  # their "step" counts advance together
        to_int64 = None if labels.dtype == np.int64 else _labels_int64
        # (the guard checks each parameter's array by identity: a new array of another shape
        # is seen, and its plan rebuilt or refused by _shape_why. A shape set in place on the
        # same array, ``w.shape = ...``, keeps the size the plan reads; checking shapes on
        # every call cost 0.5 µs, a fifth of an 8-8-8-2 step, and is not done.)
        return K.Guard(built.plan, n_first, self.dtype == np.float64, opt, grads, adam,
                       attrs, items, orders, ctx, np.ndarray, Tensor, x.dtype, x.shape,
                       labels.dtype, to_int64, reduced)  # fmt: skip

    def _run(
        self, built: _Built, xa: Any, lab: Any, split: int, proceed: Callable[[float], bool]
    ) -> float | None:
        """Run ``built``'s plan up to instruction ``split`` (the loss, or the gradients), then,
        if ``proceed(loss)``, the rest at ``optimizer.lr`` as it is then; returns the loss, or
        None when a label is out of range (found before anything ran)."""
        opt = self.optimizer
        t = float(_adam_step(opt.state, built.adam[0]) + 1) if built.adam else 0.0
        try:
            value = built.plan.run(xa, lab, opt.lr, t, 0, split)
        except IndexError:
            return None
        self.engine, self.why_eager = "kernels", ""
        loss = float(self.dtype.type(value))
        self._logits = built.logits
        if not proceed(loss):
            return loss
        if built.pending:
            _install(opt.state, built)
        built.plan.run(xa, lab, opt.lr, t, split, -1)
        for p, g in built.grads:
            p.grad = g
        for p, g in built.accumulate:
            p.grad = g.copy() if p.grad is None else p.grad + g
        for i in built.adam:
            st = opt.state[i]
            st["step"] = st.get("step", 0) + 1
        return loss

    def reduced_step(
        self,
        x: Any,
        labels: Any,
        *,
        weight: float,
        write: dict[int, np.ndarray],
        read: dict[int, np.ndarray],
        between: Callable[[float], bool],
    ) -> float | None:
        """One step of data-parallel training, its gradients summed over the processes
        between the backward pass and the update (``graphgrad.distributed`` calls it):

        1. forward, loss and backward as a plan, the cross-entropy's gradient scaled by
           ``weight`` (this process's share of the global batch, as the eager step seeds
           ``backward``), each parameter ``p``'s gradient written into ``write[id(p)]``;
        2. ``between(loss)``: the reduction, which sums the ``write`` arrays over the
           processes into ``read[id(p)]`` (and sets ``.grad``); it returns whether to update;
        3. the optimiser's update from the ``read`` arrays, at ``optimizer.lr`` as it is then.

        Returns the loss (this batch's mean), or None when no plan can run this batch
        (:attr:`why_eager` says why; nothing ran: take the eager step). The arrays must be
        C-contiguous, of the parameters' shapes and dtype, and stay the same arrays from call
        to call (the plan holds their addresses; new ones build a new plan)."""
        self._enter()
        try:
            guard = self._guard
            if guard is not None:  # armed by the last call, if it was a reduced step too
                loss = guard.run_reduced(x, labels, weight, write, read, between)
                if loss is not None:
                    return loss
                self._guard = None
            return self._reduced(x, labels, _Into(float(weight), write, read), between)
        finally:
            self._busy.release()

    def _reduced(
        self, x: Any, labels: Any, into: _Into, between: Callable[[float], bool]
    ) -> float | None:
        xa, lab, built, why = self._prepare(x, labels, into)
        loss = None if built is None else self._run(built, xa, lab, built.n_backward, between)
        if loss is None:
            self.engine, self.why_eager = "eager", why or "a label is out of range"
        elif built is not None:
            self._guard = self._arm(built, xa, labels, into)
        return loss

    def _why_not(self, x: Any, labels: Any) -> str:
        """Why this batch cannot take a plan ("" if it can)."""
        if _fused.KERNELS is None:
            return plans_unavailable()
        if ANOMALY.get():
            return "anomaly mode is on (it checks every op of the eager step)"
        if not GRAD_ENABLED.get():
            return "gradients are off (no_grad): the eager step raises the error"
        changed = self._structure_changed()
        if changed:
            return changed
        for p in self._params:
            if not p.requires_grad:
                return "a parameter does not require grad (frozen): the eager step skips it"
        if type(x) is not np.ndarray or type(labels) is not np.ndarray:
            return "the batch is not a NumPy array"
        if x.dtype != self.dtype or not x.flags.c_contiguous:
            return f"the input is {x.dtype}{'' if x.flags.c_contiguous else ', not C-contiguous'}"
        if x.ndim < 2 or (x.ndim > 2 and not self._flatten):
            return f"the input's shape {x.shape} is not (S, {self.in_features})"
        if x.size != x.shape[0] * self.in_features or labels.shape != (x.shape[0],):
            return f"the shapes {x.shape} and {labels.shape} do not fit the model"
        if labels.dtype.kind not in "iu":
            return f"the labels are {labels.dtype}, not integers"
        return ""

    def _eager(self, x: Any, labels: Any, why: str, skip_nonfinite: bool) -> float:
        self.engine, self.why_eager = "eager", why
        logits = self.model(x)
        loss = cross_entropy(logits, labels)
        value = float(loss.data)
        self._logits = logits.data
        if skip_nonfinite and not math.isfinite(value):
            return value
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return value

    # ----------------------------------------------------------------------- plans
    def _hyper(self) -> tuple[Any, ...]:
        opt = self.optimizer
        hyper = tuple(getattr(opt, name) for name in _HYPER[type(opt)])
        return (*hyper, _blas.gemm_address(self.dtype), _blas.layout())

    def _plan_for(self, batch: int, into: _Into | None = None) -> _Built | None:
        key = self._hyper()
        if key != self._key:
            self._plans.clear()
            self._key = key
        # a reduced step's plan has the weight in its cross-entropy's scale
        slot: Any = batch if into is None else (batch, float(self.dtype.type(into.weight)))
        built = self._plans.get(slot)
        if built is not None and self._still_valid(built, into):
            return built
        built = self._build(batch, into)
        if built is not None:
            if len(self._plans) >= 4:
                self._plans.clear()
            self._plans[slot] = built
        return built

    def _still_valid(self, built: _Built, into: _Into | None = None) -> bool:
        for p, arr in built.params:
            if p.data is not arr:
                return False
        if self._shape_why():  # an array's shape set in place: the builder says why
            return False
        now = self.optimizer.params
        if len(now) != len(built.opt_params) or not all(map(operator.is_, now, built.opt_params)):
            return False
        if into is not None:
            for (p, _), (w, r) in zip(built.params, built.into, strict=True):
                if into.write.get(id(p)) is not w or into.read.get(id(p)) is not r:
                    return False
        state = self.optimizer.state
        if built.pending:  # not run yet: the state must still hold what the plan found
            for i, key, _, old in built.pending:
                if state.get(i, _NOWHERE).get(key) is not old:
                    return False
            waiting = {(i, key) for i, key, _, _ in built.pending}
            for i, key, arr in built.states:
                if (i, key) not in waiting and state.get(i, _NOWHERE).get(key) is not arr:
                    return False
        else:
            for i, key, arr in built.states:
                if state.get(i, _NOWHERE).get(key) is not arr:
                    return False
        if built.adam:
            t = _adam_step(state, built.adam[0])
            return all(_adam_step(state, i) == t for i in built.adam)
        return True

    def _plan_inputs(self, S: int) -> tuple[_PlanBuilder, list[Any], dict[str, Any]] | None:
        """What a plan for batch size S needs, checked: a builder with the BLAS addresses,
        the parameters with their arrays, NumPy's loops for each activation; None (and
        self.why_eager) where a plan cannot mirror the eager step."""
        dt = self.dtype
        blas = _blas.numpy_cblas()
        numpy_conv = _blas.GEMM_CBLAS64 if blas.get("ilp64") else _blas.GEMM_CBLAS
        fn = blas.get(dt)  # NumPy's; the builder asks _blas per product for another library's
        gemv = blas.get("gemv", {}).get(dt)  # NumPy's, whatever the GEMMs' library
        if fn is None or gemv is None:
            self.why_eager = "no CBLAS address found for NumPy's BLAS"
            return None
        if S < 1:
            self.why_eager = "an empty batch"
            return None
        why = self._vector_why(S)
        if why:
            self.why_eager = why
            return None
        loops: dict[str, Any] = {}
        for ly in self._layers:
            if ly.act == "identity" or ly.act in loops:
                continue
            if ly.act not in _K_ACTS:
                self.why_eager = f"the compiled kernels have no {ly.act} (rebuild graphgrad)"
                return None
            found = [numpy_loop(u, dt) for u in _ACT_LOOPS[ly.act]]
            if None in found:
                self.why_eager = f"NumPy's own loop for {ly.act} was not found"
                return None
            found += [(0, 0)] * (2 - len(found))
            (fn1, data1), (fn2, data2) = found  # type: ignore[misc]
            loops[ly.act] = (fn1, (data1, fn2, data2, 0))
        params: list[tuple[Tensor, np.ndarray]] = []
        for p in self._params:
            w = p.data
            if type(w) is not np.ndarray or w.dtype != dt or not w.flags.c_contiguous:
                self.why_eager = "a parameter is not a C-contiguous array of the model's dtype"
                return None
            if not w.flags.writeable:
                self.why_eager = "a parameter is read-only (the eager step raises the error)"
                return None
            params.append((p, w))
        why = self._shape_why()
        if why:
            self.why_eager = why
            return None
        if _shared(params):
            self.why_eager = (
                "two layers share a parameter (or its memory): the eager step adds their gradients"
            )
            return None
        opt = self.optimizer
        if isinstance(opt, Adam):  # one step count t for the plan's bias corrections
            index = {id(p): i for i, p in enumerate(opt.params)}
            ids = [index[id(p)] for p, _ in params if id(p) in index]
            if len({opt.state.get(i, {}).get("step", 0) for i in ids}) > 1:
                self.why_eager = "Adam's parameters have taken different numbers of steps"
                return None
        builder = _PlanBuilder(dt, dt == np.float64, fn, gemv, numpy_conv, S)
        return builder, params, loops

    def _shape_why(self) -> str:
        """Why the parameters' arrays do not fit the sizes the plan takes from each Linear's
        ``in_features`` and ``out_features`` ("" if they do): each weight must be
        (out_features, in_features), each bias (out_features,). (``_adopt`` checked that each
        layer takes the features the one before gives, so this checks the neighbours too.)"""
        for k, ly in enumerate(self._layers):
            lin = ly.linear
            n_in, n_out = lin.in_features, lin.out_features
            for name, p, want in (
                ("weight", lin.weight, (n_out, n_in)),
                ("bias", lin.bias, (n_out,)),
            ):
                if p is not None and tuple(p.data.shape) != want:
                    return (
                        f"layer {k}'s {name} has shape {tuple(p.data.shape)}, but the plan "
                        f"assumes {want} (Linear({n_in}, {n_out})'s in_features and "
                        f"out_features): the eager step computes with the arrays as they are"
                    )
        return ""

    def _vector_why(self, S: int) -> str:
        """Why a batch of S samples takes no plan for its products with a side of one ("" if
        it can): for a batch of one sample or a layer of width one NumPy makes GEMV calls and
        runs its own loop for a column times a row (whatever library ``set_blas`` selected),
        which the plan mirrors, but not its dot products (one sample through a layer of width
        one, a layer of one input and one output, the bias gradient of a layer of one
        output) nor the GEMMs with beta = μ of
        ``SGD(fused_backward=True)``."""
        shapes = [(ly.linear.in_features, ly.linear.out_features) for ly in self._layers]
        narrow = min(min(shape) for shape in shapes) < 2
        if S == 1 and narrow:
            return (
                "a batch of one sample through a layer of width one (NumPy makes dot products "
                "there, which the plan does not mirror)"
            )
        if (1, 1) in shapes:
            return (
                "a layer of one input and one output (NumPy makes a dot product for its "
                "weight's gradient, which the plan does not mirror)"
            )
        opt = self.optimizer
        if isinstance(opt, SGD) and opt.fused_backward and (S == 1 or narrow):
            what = "a batch of one sample" if S == 1 else "a layer of width one"
            return f"{what} with SGD(fused_backward=True)"
        if any(ly.linear.out_features == 1 and ly.linear.bias is not None for ly in self._layers):
            return (
                "a layer of one output with a bias (NumPy sums its bias gradient with a dot "
                "product, which the plan does not mirror)"
            )
        return ""

    def _emit_forward(
        self, b: _PlanBuilder, loops: dict[str, Any], seed: float = 1.0
    ) -> tuple[list[tuple[int, bool]], list[tuple[int, bool]], np.ndarray, np.ndarray]:
        """The forward pass and the loss: each layer's input and pre-activation as
        (address, column-major?) (a column-major (S, n) matrix is held as its row-major
        (n, S) transpose, as NumPy holds ``(W @ x.T).T``), the logits and their gradient."""
        S = b.S
        cols = _blas.layout() == "columns"
        acts: list[tuple[int, bool]] = [(-1, False)]  # each layer's input; -1: the batch x
        pre: list[tuple[int, bool]] = []
        for k, ly in enumerate(self._layers):
            lin = ly.linear
            n_in, n_out = lin.in_features, lin.out_features
            a_addr, a_f = acts[-1]
            w_addr = _addr(lin.weight.data)
            # linear's "columns" rule: x @ W.T as (W @ x.T).T; for one sample (one row, both
            # layouts at once) the eager step's arrays and calls are those of the rows
            y_f = cols and n_out > S > 1
            text = (
                f"forward   y{k + 1}ᵀ = W{k + 1} @ {b.name(k, 'a')}ᵀ   ({n_out}, {S})"
                if y_f
                else f"forward   y{k + 1} = {b.name(k, 'a')} @ W{k + 1}ᵀ   ({S}, {n_out})"
            )
            y = b.product(y_f, (S, n_out), (a_addr, a_f), (w_addr, True), n_in, text)
            pre.append((_addr(y), y_f))
            if lin.bias is not None:
                b.add(
                    "bias",
                    flags=(int(y_f),),
                    ptrs=(_addr(y), _addr(lin.bias.data)),
                    sizes=y.shape,
                    text=f"forward   y{k + 1} += b{k + 1}",
                )
            if ly.act == "identity":
                acts.append((_addr(y), y_f))
                continue
            a = b.array(y.shape)
            fn, aux = loops[ly.act]
            b.add(
                "act",
                label=ly.act,
                fn=fn,
                aux=aux,
                flags=(_K_ACTS[ly.act],),
                ptrs=(_addr(y), _addr(a)),
                sizes=(y.size,),
                scalars=(ly.param,),
                text="forward   " + _ACT_TEXT[ly.act][0].format(j=k + 1),
            )
            acts.append((_addr(a), y_f))
        L, T = len(self._layers), self.classes
        logits_addr, logits_f = pre[-1]
        if logits_f:  # the cross-entropy takes row-major logits: NumPy copies them
            logits = b.array((S, T))
            b.add(
                "copy_t",
                ptrs=(logits_addr, _addr(logits)),
                sizes=(T, S),
                text=f"loss      y{L} in row-major order (a copy)",
            )
        else:
            logits = b.by_addr[logits_addr]
        grad = b.array((S, T))
        b.add(
            "xent",
            ptrs=(_addr(logits), _addr(grad)),
            sizes=(S, T),
            # the eager rule's scale: the seed (1, or a reduced step's weight, in the
            # model's dtype as backward() gets it) over S
            scalars=(float(self.dtype.type(seed)) / S,),
            text=f"loss      L = -(1/S) Σ_s ln softmax(y{L})[label];  "
            + (
                f"G{L} = (softmax(y{L}) - onehot) / S"
                if seed == 1.0
                else f"G{L} = (softmax(y{L}) - onehot) w / S   (w = {seed:g})"
            ),
        )
        return acts, pre, logits, grad

    def _build(self, S: int, into: _Into | None = None) -> _Built | None:
        """The plan for batch size S, or None (self.why_eager says why). With ``into`` (a
        reduced step) the gradients go to its ``write`` arrays, and the updates, all after
        the backward pass, read its ``read`` arrays."""
        inputs = self._plan_inputs(S)
        if inputs is None:
            return None
        b, params, loops = inputs
        dt, opt, L = self.dtype, self.optimizer, len(self._layers)
        index = {id(p): i for i, p in enumerate(opt.params)}
        why = self._state_why([index[id(p)] for p, _ in params if id(p) in index])
        if why:
            self.why_eager = why
            return None
        if into is not None:
            for p, _ in params:
                w, r = into.write.get(id(p)), into.read.get(id(p))
                for a in (w, r):
                    if (
                        type(a) is not np.ndarray
                        or a.shape != p.shape
                        or a.dtype != dt
                        or not (_memory.rows_contiguous(a) and a.flags.writeable)
                    ):
                        self.why_eager = "a gradient array of the reduction does not fit"
                        return None
            if isinstance(opt, SGD) and opt.fused_backward:
                self.why_eager = "SGD(fused_backward=True) in a reduced step"
                return None
        deferred: list[tuple[int, np.ndarray, np.ndarray, str]] = []

        def update(i: int, p: Tensor, g: np.ndarray, name: str) -> None:
            if into is None:
                self._update(b, i, p.data, g, name, states, adam)
            else:  # after the reduction: from the summed gradient
                deferred.append((i, p.data, b.keep(into.read[id(p)]), name))

        acts, pre, logits, grad_arr = self._emit_forward(
            b, loops, 1.0 if into is None else into.weight
        )
        n_forward = len(b.instrs)
        cols = _blas.layout() == "columns"
        # backward, each layer's update as soon as its gradients are made
        grads: list[tuple[Tensor, np.ndarray | None]] = []
        states: list[tuple[int, str, Any]] = []
        adam: list[int] = []
        ones = b.array((S,))
        ones.fill(1)
        grad: tuple[int, bool] = (_addr(grad_arr), False)
        for k in range(L - 1, -1, -1):
            lin = self._layers[k].linear
            n_in, n_out = lin.in_features, lin.out_features
            a_addr, a_f = acts[k]
            g_addr, g_f = grad
            W = lin.weight
            i_w = index.get(id(W))
            fused = isinstance(opt, SGD) and opt.fused_backward and i_w is not None
            mu = opt.momentum if isinstance(opt, SGD) else 0.0
            # the input gradient first (it reads W before W's update), then the bias
            # gradient, then the weight gradient right before its update, which reads it while
            # it is still in the cache (both orders give the same numbers)
            if k:
                w_addr = _addr(W.data)
                d_f = cols and a_f  # linear's input gradient in its input's layout
                text = (
                    f"backward  D{k + 1}ᵀ = W{k + 1}ᵀ @ G{k + 1}ᵀ   ({n_in}, {S})"
                    if d_f
                    else f"backward  D{k + 1} = G{k + 1} @ W{k + 1}   ({S}, {n_in})"
                )
                d = b.product(d_f, (S, n_in), (g_addr, g_f), (w_addr, False), n_out, text)
                below = self._layers[k - 1]
                if below.act != "identity" and d_f != pre[k - 1][1]:
                    self.why_eager = "an activation's gradient and input in two layouts"
                    return None
                if below.act == "identity":
                    grad = (_addr(d), d_f)
                else:
                    g_below = b.array(d.shape)
                    b.add(
                        "act_grad",
                        label=f"{below.act}_grad",
                        flags=(_K_ACTS[below.act],),
                        ptrs=(_addr(d), pre[k - 1][0], acts[k][0], _addr(g_below)),
                        sizes=(d.size,),
                        scalars=(below.param,),
                        text="backward  " + _ACT_TEXT[below.act][1].format(k=k, j=k + 1),
                    )
                    grad = (_addr(g_below), d_f)
            db: np.ndarray | None = None
            if lin.bias is not None:
                db = b.array((n_out,)) if into is None else b.keep(into.write[id(lin.bias)])
                b.add(
                    "sum_rows",
                    fn=b.gemv,
                    flags=(int(g_f), 0, b.conv, 0),
                    ptrs=(g_addr, _addr(ones), _addr(db)),
                    sizes=(S, n_out),
                    text=f"backward  db{k + 1} = Σ_s G{k + 1}   (ones @ G{k + 1}: GEMV)",
                )
            if fused:
                assert i_w is not None
                v, first = self._buffer(b, i_w, "momentum_buffer", W.data, states)
                text = (
                    f"backward  v_W{k + 1} = μ v_W{k + 1} + G{k + 1}ᵀ @ {b.name(k, 'a')}   "
                    f"(the gradient added inside the GEMM)"
                )
                b.gemm(v, g_addr, not g_f, a_addr, a_f, S, text, beta=mu, first=first)
                grads.append((W, None))
                b.add(
                    "sgd",
                    ptrs=(_addr(W.data), _addr(v), _addr(W.data)),
                    sizes=(W.data.size,),
                    text=f"update    W{k + 1} -= lr v_W{k + 1}",
                )
            else:
                dW = b.grad_array((n_out, n_in)) if into is None else b.keep(into.write[id(W)])
                text = f"backward  dW{k + 1} = G{k + 1}ᵀ @ {b.name(k, 'a')}   ({n_out}, {n_in})"
                b.gemm(dW, g_addr, not g_f, a_addr, a_f, S, text)
                grads.append((W, dW))
                if i_w is not None:
                    update(i_w, W, dW, f"W{k + 1}")
            if lin.bias is not None and db is not None:
                grads.append((lin.bias, db))
                i_b = index.get(id(lin.bias))
                if i_b is not None:
                    update(i_b, lin.bias, db, f"b{k + 1}")
        n_backward = len(b.instrs)
        for i, w, g, name in deferred:
            self._update(b, i, w, g, name, states, adam)
        # the plan holds raw addresses: it keeps every array it touches alive, the parameters
        # and the optimiser's state included, even if it outlives this object
        kept = b.kept + [w for _, w in params] + [arr for _, _, arr in states]
        # one sample: no GEMM keeps the threads busy, and a kernel split between two
        # threads lost more than it saved (on the Zen 4 at 2 threads, 784-256-256-10: 70 µs
        # a step serial, 77-430 µs split, depending on where the host put the two vCPUs)
        plan = _fused.KERNELS.Plan(
            b.instrs, kept, S * self.in_features * dt.itemsize, S, self.classes, serial=S == 1
        )
        built = _Built(plan, n_forward, logits, grads, params, states, adam, b.text)
        built.instrs = b.instrs
        built.pending = b.pending
        covered = {id(p) for p, _ in params}
        built.uncovered = [p for p in opt.params if id(p) not in covered]
        built.opt_params = tuple(opt.params)
        built.accumulate = [(q, gq) for q, gq in grads if gq is not None and id(q) not in index]
        built.grads = [(q, gq) for q, gq in grads if gq is None or id(q) in index]
        built.grads += [(q, None) for q in built.uncovered]  # (zero_grad's None)
        if into is not None:
            built.grads = []  # the reduction points .grad at the summed gradients
            built.accumulate = []
            built.n_backward = n_backward
            built.into = [(into.write[id(p)], into.read[id(p)]) for p, _ in params]
        return built

    def _state_keys(self) -> tuple[str, ...]:
        opt = self.optimizer
        if isinstance(opt, Adam):
            return ("exp_avg", "exp_avg_sq")
        return ("momentum_buffer",) if isinstance(opt, SGD) and opt.momentum else ()

    def _state_why(self, indices: list[int]) -> str:
        """Why the optimiser's existing state of parameters ``indices`` keeps the plan out
        ("" if it does not): an array of another dtype or shape (the eager step computes
        with it as it is), or a read-only one (the eager step raises its error). Arrays on
        another device, or not C-contiguous, are copied (the same values) by the plan."""
        state, opt = self.optimizer.state, self.optimizer
        for i in indices:
            st = state.get(i)
            if not st:
                continue
            w = opt.params[i].data
            for key in self._state_keys():
                arr = st.get(key)
                if arr is None:
                    continue
                if type(arr) is not np.ndarray:
                    arr = on_device_of(arr, w)
                if type(arr) is not np.ndarray or arr.shape != w.shape or arr.dtype != w.dtype:
                    what = (
                        f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
                    )
                    return (
                        f"the optimiser's {key} of parameter #{i} is {what}, not {w.dtype} "
                        f"{w.shape}: the eager step computes with it as it is"
                    )
                if not arr.flags.writeable:
                    return (
                        f"the optimiser's {key} of parameter #{i} is read-only: "
                        f"the eager step raises its error"
                    )
        return ""

    def _buffer(
        self,
        b: _PlanBuilder,
        i: int,
        key: str,
        like: np.ndarray,
        states: list[tuple[int, str, Any]],
    ) -> tuple[np.ndarray, bool]:
        """The optimiser's state array ``key`` of parameter ``i``, and whether the plan's
        update makes the first step (the state has none). Where the state has none, or one
        the kernels cannot use as it is (on another device, not C-contiguous: checked by
        :meth:`_state_why`), a new array, which the plan puts into the state (the old
        one's values copied in) when its update first runs (``b.pending``)."""
        st = self.optimizer.state.get(i)
        old = None if st is None else st.get(key)
        arr = old
        if (
            type(arr) is not np.ndarray
            or arr.shape != like.shape
            or arr.dtype != like.dtype
            or not arr.flags.c_contiguous
            or not arr.flags.writeable
        ):
            arr = _memory.zeros_like(like)
            b.pending.append((i, key, arr, old))
        states.append((i, key, arr))
        return arr, old is None

    def _update(
        self,
        b: _PlanBuilder,
        i: int,
        w: np.ndarray,
        g: np.ndarray | None,
        name: str,
        states: list[tuple[int, str, Any]],
        adam: list[int],
    ) -> None:
        """The optimiser's update of parameter ``i`` (array ``w``, gradient ``g``: contiguous,
        or rows further apart, from :meth:`_PlanBuilder.grad_array`)."""
        assert g is not None
        opt = self.optimizer
        # the kernels' sizes: the elements, then, for a padded g, its row length and stride
        sizes: tuple[int, ...] = (w.size,)
        if not g.flags.c_contiguous:
            assert g.ndim == 2 and g.strides[1] == g.itemsize and w.flags.c_contiguous
            sizes = (w.size, g.shape[1], g.strides[0] // g.itemsize)
        if isinstance(opt, SGD):
            mu = opt.momentum
            if mu:
                v, first = self._buffer(b, i, "momentum_buffer", w, states)
                text = f"update    v_{name} = μ v_{name} + d{name};  {name} -= lr v_{name}"
                if opt.nesterov:
                    text = (
                        f"update    v_{name} = μ v_{name} + d{name};  "
                        f"{name} -= lr (d{name} + μ v_{name})"
                    )
            else:
                v, first = w, False
                text = f"update    {name} -= lr d{name}"
            if opt.weight_decay:
                text += "   (d += wd θ first)"
            b.add(
                "sgd",
                ptrs=(_addr(w), _addr(g), _addr(v)),
                sizes=sizes,
                flags=(int(opt.nesterov), 0, 0, int(first)),
                scalars=(0.0, mu, opt.weight_decay),
                text=text,
            )
            return
        assert isinstance(opt, Adam)
        m, _ = self._buffer(b, i, "exp_avg", w, states)
        v, _ = self._buffer(b, i, "exp_avg_sq", w, states)
        b1, b2 = opt.betas
        b.add(
            "adam",
            ptrs=(_addr(w), _addr(g), _addr(m), _addr(v)),
            sizes=sizes,
            scalars=(0.0, b1, b2, opt.eps, opt.weight_decay),
            text=f"update    Adam on {name} (m, v, bias-corrected step)",
        )
        adam.append(i)

    # ----------------------------------------------------------------------- showing
    def describe(self, batch: int = 128) -> str:
        """The plan for a batch of ``batch`` samples, one kernel call a line (building it
        if needed; the eager step's reason if there is none)."""
        changed = self._structure_changed()
        if changed:
            return f"no plan for a batch of {batch}: {changed}; the eager step runs"
        built = self._plans.get(batch) if self._key == self._hyper() else None
        if built is not None and not self._still_valid(built):
            built = None
        if built is None:
            if _fused.KERNELS is None:
                return "no plan: the compiled kernels are not built; the eager step runs"
            built = self._plan_for(batch)
        if built is None:
            return f"no plan for a batch of {batch}: {self.why_eager}; the eager step runs"
        return "\n".join(built.text)

    def __repr__(self) -> str:
        sizes = [self.in_features] + [ly.linear.out_features for ly in self._layers]
        acts = ", ".join(ly.act for ly in self._layers[:-1]) or "none"
        return (
            f"CompiledStep({'-'.join(map(str, sizes))}, activations: {acts}, "
            f"{type(self.optimizer).__name__}, {self.dtype})"
        )


class _PlanBuilder:
    """Collects a plan's instructions, the arrays it allocates and its text."""

    def __init__(self, dt: np.dtype[Any], dbl: bool, fn: int, gemv: int, conv: int, S: int):
        """``fn``, ``gemv``: NumPy's ``cblas_?gemm`` (for the products ``_blas.gemm_call``
        leaves to NumPy's BLAS: all of them, unless another library is selected) and
        ``cblas_?gemv`` (the bias sums); ``conv``: their calling convention (LP64 or ILP64,
        ``_blas.GEMM_*``)."""
        self.dt, self.dbl, self.fn, self.gemv, self.conv, self.S = dt, dbl, fn, gemv, conv, S
        self.instrs: list[tuple[Any, ...]] = []
        self.kept: list[np.ndarray] = []
        self.pending: list[tuple[int, str, np.ndarray, Any]] = []
        self.by_addr: dict[int, np.ndarray] = {}
        self.text: list[str] = []

    def keep(self, a: np.ndarray) -> np.ndarray:
        self.kept.append(a)
        self.by_addr[_addr(a)] = a
        return a

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.keep(_memory.empty(shape, self.dt))

    def grad_array(self, shape: tuple[int, int]) -> np.ndarray:
        """A weight gradient's array, (rows, cols), as the eager step makes it: with its rows
        further apart where a row is a multiple of 4096 bytes long
        (:func:`graphgrad._memory.empty_grad`), else contiguous."""
        return self.keep(_memory.empty_grad(shape, self.dt))

    @staticmethod
    def name(k: int, act: str) -> str:
        return "x" if k == 0 else f"{act}{k}"

    def add(
        self,
        op: str,
        *,
        fn: int = 0,
        flags: tuple[int, ...] = (0, 0, 0, 0),
        ptrs: tuple[int, ...] = (),
        sizes: tuple[int, ...] = (),
        scalars: tuple[float, ...] = (),
        aux: tuple[int, ...] = (0, 0, 0, 0),
        label: str = "",
        text: str,
    ) -> None:
        self.instrs.append(
            (
                op,
                self.dbl,
                tuple(flags) + (0,) * (4 - len(flags)),
                fn,
                tuple(ptrs) + (0,) * (4 - len(ptrs)),
                tuple(sizes) + (0,) * (6 - len(sizes)),
                tuple(float(s) for s in scalars) + (0.0,) * (6 - len(scalars)),
                tuple(aux),
            )
        )
        self.text.append(f"{len(self.text) + 1:3d}  {label or op:<9s} {text}")

    def product(
        self,
        col: bool,
        shape: tuple[int, int],
        a: tuple[int, bool],
        b: tuple[int, bool],
        K: int,
        text: str,
    ) -> np.ndarray:
        """A new (M, N) = ``shape`` array op(a) @ op(b) (``a``, ``b``: (address, transposed?)),
        row-major; or, with ``col``, column-major, held as its row-major (N, M) transpose
        op(b)ᵀ @ op(a)ᵀ, as NumPy computes ``(W @ x.T).T``."""
        M, N = shape
        if col:
            out = self.array((N, M))
            self.gemm(out, b[0], not b[1], a[0], not a[1], K, text)
        else:
            out = self.array((M, N))
            self.gemm(out, a[0], a[1], b[0], b[1], K, text)
        return out

    def gemm(
        self,
        out: np.ndarray,
        a: int,
        ta: bool,
        b: int,
        tb: bool,
        K: int,
        text: str,
        beta: float = 0.0,
        first: bool = False,
    ) -> None:
        """out (M, N) = op(a) @ op(b) + beta out, op(a) (M, K), op(b) (K, N): the call NumPy's
        ``matmul`` makes for C-contiguous operands (``ta``: ``a`` is the C-contiguous (K, M)
        array, used transposed; likewise ``tb``). ``a``, ``b``: addresses (-1: the input)."""
        M, N = out.shape
        lda, ldb = (M if ta else K), (K if tb else N)
        ldc = out.strides[0] // out.itemsize  # N, or more for a padded gradient
        assert out.strides[1] == out.itemsize and ldc >= N
        # the library's GEMM where _blas.matmul (or matmul_into) takes it: not for a small
        # product, nor for one with a side of one (NumPy's, whatever the library)
        call = _blas.gemm_call(self.dt, (M, N, K))
        if call is None and beta == 0.0 and min(M, N, K) == 1:
            # NumPy's matmul calls no GEMM for a side of one (a batch of one sample, a layer
            # of width one): a row times a matrix or a matrix times a column is a GEMV, a
            # column times a row its own loop (_blas.outer: the outer kernel)
            assert M > 1 or N > 1, "a dot product: refused by _vector_why"
            if K == 1:  # a: M contiguous values, b: N (whether stored as a row or a column)
                # (NumPy's loop for a column times a row, or times one value: 0 + a_i b_j)
                self.add(
                    "outer",
                    ptrs=(a, b, _addr(out)),
                    sizes=(M, N, ldc, 1),
                    text=text + "   (a column times a row: the outer kernel)",
                )
                return
            if M == 1:
                # a (K values) times op(b) (K, N), as NumPy's vector @ matrix calls it: for b
                # stored (N, K) (used transposed) (ColMajor, Trans) with lda K, for b stored
                # (K, N) (RowMajor, Trans) with lda N
                order, ld = (102, K) if tb else (101, N)
                ptrs, sizes, what = (b, a, _addr(out)), (K, N, ld, 1, 1), "a row times a matrix"
            else:
                # N == 1: op(a) (M, K) times b (K values), as NumPy's matrix @ vector calls
                # it: for a stored (M, K) (ColMajor, Trans) with lda K, for a stored (K, M)
                # (used transposed) (RowMajor, Trans) with lda M; out's values ldc apart
                order, ld = (101, M) if ta else (102, K)
                ptrs, sizes = (a, b, _addr(out)), (K, M, ld, 1, ldc)
                what = "a matrix times a column"
            self.add(
                "gemv",
                fn=self.gemv,
                flags=(order, 112, self.conv, 0),
                ptrs=ptrs,
                sizes=sizes,
                text=f"{text}   ({what}: GEMV)",
            )
            return
        fn, conv = call or (self.fn, self.conv)
        self.add(
            "gemm",
            fn=fn,
            flags=(int(ta), int(tb), conv, int(first)),
            ptrs=(a, b, _addr(out)),
            sizes=(M, N, K, lda, ldb, ldc),
            scalars=(beta,),
            text=text,
        )


def compile_step(
    model: Module, optimizer: Optimizer, loss_fn: Callable[..., Tensor] = cross_entropy
) -> CompiledStep:
    """``model``'s training step with ``optimizer`` and ``loss_fn``, compiled: see
    :class:`CompiledStep` (and this module's text for what is compiled and how)."""
    return CompiledStep(model, optimizer, loss_fn)
