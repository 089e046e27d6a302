"""fastact activations as ``torch.autograd`` functions and ``torch.nn`` modules.

For every public activation ``name`` in :data:`fastact.ACTIVATIONS` (all generated from
the table)::

    fastact.torch.name(t, *params, inplace=False)   # differentiable function
    fastact.torch.<Module>(*params, inplace=False)   # nn.Module calling it

plus ``softmax(t, dim=-1, *, scale=1.0, where=None)``, ``log_softmax(...)`` (the
same; modules ``Softmax(dim, scale)`` and ``LogSoftmax``, called with ``where=``) and
``cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
label_smoothing=0.0)`` (module ``CrossEntropyLoss``), whose backward
is the fused gradient of :func:`fastact.softmax_cross_entropy` times grad_output, and
``linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, ...)`` (module
``LinearCrossEntropy``), the chunked :func:`fastact.linear_cross_entropy` (CPU only).

Module names are torch's own class names where torch has the activation (``ReLU``,
``LeakyReLU``, ``GELU``, ``SiLU``, ``LogSigmoid``, ...; see :data:`MODULE_NAMES`), the
CamelCase of the name otherwise (``Step``), and ``LinearActivation`` for ``linear`` so
as not to be mistaken for ``nn.Linear``.

CPU tensors are handed to the CPU kernels as numpy views (:func:`_np`, any strides; nothing
is copied). A CPU tensor smaller than the measured crossover of its op and dtype
(:data:`fastact._config.TORCH_CROSSOVER`) goes to torch's own op instead (the op table's
``torch``), out-of-place calls only; the kernels run serially below
:data:`fastact._config.TORCH_PARALLEL_THRESHOLD` elements and on ``torch.get_num_threads()``
threads above it (docs/TORCH.md). The backward saves the forward *output* where the table
says ``saves == "output"`` and the input otherwise. ``inplace=True`` overwrites the input
(``ctx.mark_dirty``) like torch's in-place variants; an activation that saves its input
then keeps a copy of it only when a gradient is needed. CUDA tensors go to
:mod:`fastact.cuda` when ``fastact.cuda_is_available()``, else a RuntimeError says why.
float32, float64, float16 and bfloat16 tensors are accepted (TypeError otherwise); bfloat16
ones need ml_dtypes (numpy has no bfloat16: they are viewed as ml_dtypes' bfloat16 arrays).

The fused ops (CPU tensors), generated from :data:`fastact.GATED_UNITS`::

    fastact.torch.swiglu(a, b)  geglu(a, b, approximate="none")  reglu(a, b)  # f(a) * b
    fastact.torch.glu(input, dim=-1)                                          # F.glu
    fastact.torch.bias_act(input, bias, activation, **params)                 # f(x + bias)

with modules ``SwiGLU()``, ``GEGLU(approximate=...)``, ``ReGLU()`` (``forward(a, b)``),
``GLU(dim=-1)`` and ``BiasAct(num_features, activation, **params)`` (which owns the bias,
zeros at first). ``b`` may broadcast to ``a`` (its gradient is summed back to its shape).
Their backwards are fastact's fused ones: (da, db) from one pass; dx and dbias from one pass.
"""

from __future__ import annotations

import contextlib
import inspect
import types
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fastact import _config
from fastact import _functions as _fa
from fastact import _linear_xent as _lxe
from fastact._cuda_probe import problem as _cuda_problem
from fastact._dispatch import run as _run
from fastact._frontend import convert as _convert
from fastact._fused import resolve as _resolve
from fastact._kernels import backward_kernels as _backward_kernels
from fastact._kernels import forward_kernels as _forward_kernels
from fastact._ops import OPS as _OPS
from fastact._threading import threads as _thread_count
from fastact._validate import choice as _choice
from fastact.definitions import ACTIVATIONS, GATED_UNITS, Activation, GatedUnit

MODULE_NAMES: dict[str, str] = {
    name: entry.module_name for name, entry in ACTIVATIONS.items() if entry.public
}
"""Activation name -> nn.Module class name in this module."""

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

_CPU = types.SimpleNamespace(
    **{
        **_fa.FUNCTIONS,
    }
)


# --- arrays --------------------------------------------------------------------------


def _check(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} must be a float32, float64, bfloat16 or float16 tensor, got {t.dtype}")
    return t


def _backend(t: torch.Tensor):
    """(module with fastact's API, tensor -> array view) for the tensor's device."""
    if t.device.type == "cpu":
        return _CPU, _np
    if t.device.type == "cuda":
        why = _cuda_problem()
        if why is not None:
            raise RuntimeError(f"fastact.torch got a CUDA tensor but fastact.cuda is not usable here: {why}")
        import fastact.cuda as fc

        return fc, _cuda
    raise RuntimeError(f"fastact.torch supports CPU and CUDA tensors, got device {t.device}")


def _np(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a numpy view (any strides, nothing copied). bfloat16, which numpy
    lacks and ``Tensor.numpy()`` refuses, goes through an int16 view to ml_dtypes' bfloat16."""
    if t.requires_grad:
        t = t.detach()
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(_bfloat16())
    return t.numpy()


def _tensor(a, device=None, dtype=None) -> torch.Tensor:
    """The inverse of :func:`_np`: a tensor sharing numpy ``a``'s memory (bfloat16 too); a
    device array or a number goes through ``torch.as_tensor`` (on ``device``, as ``dtype``)."""
    if not isinstance(a, np.ndarray):
        return torch.as_tensor(a, dtype=dtype, device=device)
    if a.dtype.itemsize == 2 and a.dtype.kind == "V":  # ml_dtypes' bfloat16
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _bfloat16() -> np.dtype:
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError(
            "bfloat16 tensors need the ml_dtypes package (pip install 'fastact[bfloat16]'): "
            "numpy has no bfloat16"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def _cuda(t: torch.Tensor) -> torch.Tensor:
    return t.detach()


def _lib(*tensors: torch.Tensor):
    lib = _backend(tensors[0])
    for t in tensors[1:]:
        if t.device != tensors[0].device:
            raise ValueError(f"tensors are on different devices: {tensors[0].device} and {t.device}")
    return lib


# --- which path runs: fastact's kernels or torch's own op ----------------------------------

_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


def _torch_runs(op: str, t: torch.Tensor) -> bool:
    """Whether ``op`` on ``t`` calls torch's own op: a CPU tensor with fewer elements than
    the measured crossover (:data:`fastact._config.TORCH_CROSSOVER`), where torch's
    kernel and its C++ autograd node beat a Python ``autograd.Function`` around fastact's."""
    limits = _config.TORCH_CROSSOVER.get(op)
    # 16-bit tensors: no crossover measured yet, fastact's kernels at every size
    return limits is not None and t.is_cpu and t.numel() < limits.get(_DTYPE_NAMES.get(t.dtype, ""), 0)


def _threads(n: int):
    """The thread count of fastact's kernels on ``n`` elements inside a torch program (a
    context): serial below :data:`fastact._config.TORCH_PARALLEL_THRESHOLD`, so that numba's
    pool does not wake to fight torch's for the cores; from it, torch's count,
    ``torch.get_num_threads()`` (docs/TORCH.md)."""
    if n < _config.PARALLEL_THRESHOLD:
        return contextlib.nullcontext()  # a serial kernel whatever the count
    return _thread_count(torch.get_num_threads() if n >= _config.TORCH_PARALLEL_THRESHOLD else 1)


# --- elementwise activations ---------------------------------------------------------


class _Elementwise(torch.autograd.Function):
    """y = activation(x); dL/dx = activation_backward(grad_output, saved).

    ``call``: (table entry, parameters) as the CPU kernels take them (a choice such as
    gelu's ``approximate`` already resolved to its entry, the parameters checked floats),
    or, for a CUDA tensor, (public entry, the user's arguments) for :mod:`fastact.cuda`.
    ``ctx`` keeps the call and the one saved tensor (the output or the input).
    """

    @staticmethod
    def forward(ctx, x, call: tuple, inplace: bool):
        entry, params = call
        keep_input = entry.saves == "input" and ctx.needs_input_grad[0]
        if x.is_cpu:
            xa = _np(x)
            if inplace:
                x_saved = x.detach().clone() if keep_input else None
                with _threads(x.numel()):
                    _run(_forward_kernels(entry.name), (xa,), xa, params)
                ctx.mark_dirty(x)
                y = x
            else:
                x_saved = x
                y = torch.empty_like(x)
                with _threads(x.numel()):
                    _run(_forward_kernels(entry.name), (xa,), _np(y), params, fresh=True)
        else:
            lib, arr = _lib(x)
            if inplace:
                x_saved = x.detach().clone() if keep_input else None
                getattr(lib, entry.name + "_")(arr(x), *params)
                ctx.mark_dirty(x)
                y = x
            else:
                x_saved = x
                y = torch.empty_like(x)
                getattr(lib, entry.name)(arr(x), *params, out=arr(y))
        ctx.call = call
        ctx.save_for_backward(y if entry.saves == "output" else x_saved)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (saved,) = ctx.saved_tensors
        entry, params = ctx.call
        if grad_output.dtype != saved.dtype:
            grad_output = grad_output.to(saved.dtype)
        grad = torch.empty_like(saved)
        if saved.is_cpu and grad_output.is_cpu:
            with _threads(grad.numel()):
                _run(
                    _backward_kernels(entry.name),
                    (_np(grad_output), _np(saved)),
                    _np(grad),
                    params,
                    fresh=True,
                )
        else:
            lib, arr = _lib(grad_output, saved)
            getattr(lib, entry.name + "_backward")(arr(grad_output), arr(saved), *params, out=arr(grad))
        return grad, None, None


def _make_function(entry: Activation) -> Callable:
    params = [
        inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=inspect.Parameter.empty)
        if p.default is None
        else inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default)
        for p in entry.params
    ]
    signature = inspect.Signature(
        [
            inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *params,
            inspect.Parameter("inplace", inspect.Parameter.KEYWORD_ONLY, default=False),
        ]
    )
    n = len(entry.params)
    defaults = tuple(p.default for p in entry.params)
    # positional calls from this many arguments on get the rest from their defaults
    required = max((i + 1 for i, d in enumerate(defaults) if d is None), default=0)
    resolve = _resolver(entry)

    def function(input: torch.Tensor, *args, inplace: bool = False, **kwargs) -> torch.Tensor:
        _check(input, "input")
        if not isinstance(inplace, bool):
            raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
        if not kwargs and required <= len(args) < n:
            args += defaults[len(args) :]  # the common call, without Signature.bind's cost
        elif kwargs or len(args) != n:
            bound = signature.bind(input, *args, inplace=inplace, **kwargs)
            bound.apply_defaults()
            args = tuple(bound.arguments[p.name] for p in entry.params)
        call = resolve(args)  # bad parameters: an error now, before anything is written
        if inplace:
            if input.requires_grad and input.is_leaf and torch.is_grad_enabled():
                raise RuntimeError(f"{entry.name}(inplace=True) on a leaf tensor that requires grad")
        elif _torch_runs(call[0].name, input):
            return call[0].torch(torch, F, input, *call[1])
        if not input.is_cpu:
            call = (entry, args)  # fastact.cuda takes the public function's arguments
        return _Elementwise.apply(input, call, inplace)

    function.__name__ = function.__qualname__ = entry.name
    function.__module__ = __name__
    function.__signature__ = signature
    function.__doc__ = (
        f"{entry.name} of a tensor, differentiable (y = {entry.formula}; dy/dx = {entry.derivative}).\n\n"
        f"``inplace=True`` overwrites ``input``. Backward saves the {entry.saves}."
    )
    return function


def _resolver(entry: Activation) -> Callable[[tuple], tuple]:
    """args -> (the table entry that computes them, its kernel parameters as checked
    floats): a choice parameter (gelu's ``approximate``) picks the entry."""
    at = next((i for i, p in enumerate(entry.params) if p.choices), None)
    if at is None:
        return lambda args: (entry, _convert(entry, args))
    chooser = entry.params[at]

    def resolve(args: tuple) -> tuple:
        chosen = ACTIVATIONS[_choice(args[at], chooser.name, chooser.choices)]
        return chosen, _convert(chosen, args[:at] + args[at + 1 :])

    return resolve


class _ActivationModule(torch.nn.Module):
    _entry: Activation
    _function: Callable

    def __init__(self, *args, inplace: bool = False, **kwargs) -> None:
        super().__init__()
        sig = inspect.signature(self._function)
        bound = sig.bind(None, *args, inplace=inplace, **kwargs)
        bound.apply_defaults()
        self.params = tuple(bound.arguments[p.name] for p in self._entry.params)
        self.inplace = inplace
        # Check the parameters now, not at the first forward.
        getattr(_fa, self._entry.name)(np.empty(0), *self.params)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return type(self)._function(input, *self.params, inplace=self.inplace)

    def extra_repr(self) -> str:
        items = [f"{p.name}={v!r}" for p, v in zip(self._entry.params, self.params)]
        if self.inplace:
            items.append("inplace=True")
        return ", ".join(items)


def _make_module(entry: Activation, function: Callable) -> type:
    doc = f"Module form of :func:`fastact.torch.{entry.name}` (y = {entry.formula})."
    return type(
        MODULE_NAMES[entry.name],
        (_ActivationModule,),
        {"_entry": entry, "_function": staticmethod(function), "__doc__": doc, "__module__": __name__},
    )


# --- softmax and log_softmax -----------------------------------------------------------


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, op: str, dim: int, scale: float, where: torch.Tensor | None):
        lib, arr = _lib(x) if where is None else _lib(x, where)
        kw = _softmax_keywords(arr, scale, where)
        y = torch.empty_like(x)
        getattr(lib, op)(arr(x), dim, out=arr(y), **kw)
        ctx.op, ctx.dim, ctx.scale = op, dim, scale
        ctx.save_for_backward(y, where)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        y, where = ctx.saved_tensors
        lib, arr = _lib(grad_output, y)
        kw = _softmax_keywords(arr, ctx.scale, where)
        grad = torch.empty_like(y)
        if grad_output.dtype != y.dtype:
            grad_output = grad_output.to(y.dtype)
        getattr(lib, ctx.op + "_backward")(arr(grad_output), arr(y), ctx.dim, out=arr(grad), **kw)
        return grad, None, None, None, None


def _softmax_keywords(arr, scale: float, where: torch.Tensor | None) -> dict:
    """scale= and where= for the array function, only where they are not the defaults."""
    kw = {} if scale == 1.0 else {"scale": scale}
    if where is not None:
        kw["where"] = arr(where)
    return kw


def _check_where(where: object, input: torch.Tensor) -> torch.Tensor | None:
    if where is None:
        return None
    if not isinstance(where, torch.Tensor):
        raise TypeError(f"where must be a torch.Tensor of dtype torch.bool, got {type(where).__name__}")
    if where.dtype != torch.bool:
        raise TypeError(f"where must be a boolean tensor, got {where.dtype}")
    try:
        return where.expand(input.shape)  # a view with zero strides, as the array functions take it
    except RuntimeError:
        raise ValueError(
            f"where has shape {tuple(where.shape)}, which does not broadcast to {tuple(input.shape)}"
        ) from None


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    scale = float(scale)
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise ValueError(f"scale must be finite, got {scale}")
    return scale


def softmax(
    input: torch.Tensor, dim: int = -1, *, scale: float = 1.0, where: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(s x)_i = e^(s x_i - m) / sum_j e^(s x_j - m) along ``dim`` (s = ``scale``), over
    the entries where ``where`` (a bool tensor broadcastable to input) is True: the others
    get 0, a row with none gets zeros; differentiable."""
    input = _check(input, "input")
    return _softmax_family(input, "softmax", dim, _check_scale(scale), _check_where(where, input))


def log_softmax(
    input: torch.Tensor, dim: int = -1, *, scale: float = 1.0, where: torch.Tensor | None = None
) -> torch.Tensor:
    """log_softmax(s x)_i = (s x_i - m) - log sum_j e^(s x_j - m) along ``dim`` (s = ``scale``),
    over the entries where ``where`` is True: the others (and rows with none) get -inf;
    differentiable."""
    input = _check(input, "input")
    return _softmax_family(input, "log_softmax", dim, _check_scale(scale), _check_where(where, input))


def _softmax_family(input, op: str, dim: int, scale: float, where: torch.Tensor | None) -> torch.Tensor:
    """torch's own op where it is faster (below the crossover, no scale nor mask), else fastact's."""
    if scale == 1.0 and where is None and _torch_runs(op, input):
        return _OPS[op].torch(torch, F, input, dim)
    return _Softmax.apply(input, op, dim, scale, where)


class Softmax(torch.nn.Module):
    """Module form of :func:`softmax`: ``Softmax(dim=-1, scale=1.0)(input, where=None)``."""

    def __init__(self, dim: int = -1, scale: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.scale = _check_scale(scale)

    def forward(self, input: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        return softmax(input, self.dim, scale=self.scale, where=where)

    def extra_repr(self) -> str:
        return f"dim={self.dim}" + ("" if self.scale == 1.0 else f", scale={self.scale}")


class LogSoftmax(Softmax):
    """Module form of :func:`log_softmax`: ``LogSoftmax(dim=-1, scale=1.0)(input, where=None)``."""

    def forward(self, input: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        return log_softmax(input, self.dim, scale=self.scale, where=where)


# --- cross-entropy -------------------------------------------------------------------


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, ignore_index, reduction, label_smoothing):
        lib, arr = _lib(logits)
        t = target.detach()
        t_arr = arr(t) if t.device == logits.device else None
        if t_arr is None:
            raise ValueError(f"target is on {t.device}, logits on {logits.device}")
        w = None if weight is None else arr(weight.detach().to(logits.dtype))
        loss, grad = lib.softmax_cross_entropy(
            arr(logits),
            t_arr,
            weight=w,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
        grad = _tensor(grad, logits.device)
        ctx.reduction = reduction
        ctx.save_for_backward(grad)
        return _tensor(loss, logits.device, logits.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.reduction != "none" and grad_output.item() == 1.0:
            return grad, None, None, None, None, None  # loss.backward(): the saved gradient as it is
        if ctx.reduction == "none" and grad.ndim == 2:
            scaled = grad * grad_output.to(grad.dtype).unsqueeze(1)
        else:
            scaled = grad * grad_output.to(grad.dtype)
        return scaled, None, None, None, None, None


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``torch.nn.functional.cross_entropy`` for (N, C) or (C,) logits, from one fused pass.

    loss_n = (1-eps) w_k (lse - x_k) + eps/C sum_c w_c (lse - x_c) (class k, eps =
    label_smoothing); "mean" divides by the sum of the targets' weights. Differentiable
    with respect to ``input`` only (not to probability targets or weights).
    """
    _check(input, "input")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if weight is not None:
        _check(weight, "weight")
    if _torch_runs("softmax_cross_entropy", input):
        return _OPS["softmax_cross_entropy"].torch(
            torch,
            F,
            input,
            target,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
    return _CrossEntropy.apply(input, target, weight, ignore_index, reduction, label_smoothing)


class CrossEntropyLoss(torch.nn.Module):
    """Module form of :func:`cross_entropy`."""

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
        )


# --- fused ops: gated units, glu, bias + activation -------------------------------------------


def _cpu(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.device.type != "cpu":
            raise RuntimeError(f"fastact.torch's fused ops run on CPU tensors, got device {t.device}")


class _Gated(torch.autograd.Function):
    """y = f(a) * b; (da, db) from fastact's fused backward (db summed to b's shape)."""

    @staticmethod
    def forward(ctx, a, b, fname: str, kw: dict):
        _cpu(a, b)
        y = torch.empty_like(a)
        getattr(_fa, fname)(_np(a), _np(b), out=_np(y), **kw)
        ctx.fname, ctx.kw = fname, kw
        ctx.save_for_backward(a, b)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        a, b = ctx.saved_tensors
        # b as it is when it has a's shape (a view of a wider projection, as a SwiGLU block's
        # chunk, is not copied: 8192 x 4096 float32, 128 MiB); a broadcast b, made whole
        full = _np(b) if b.shape == a.shape else np.ascontiguousarray(_np(b.expand_as(a)))
        da, db = getattr(_fa, ctx.fname + "_backward")(_np(grad_output.to(a.dtype)), _np(a), full, **ctx.kw)
        db = _tensor(db)
        return _tensor(da), (db if b.shape == a.shape else db.sum_to_size(b.shape)), None, None


def _make_gated(unit: GatedUnit) -> Callable:
    keywords = [
        inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default) for p in unit.params
    ]
    positional = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("a", "b")]
    signature = inspect.Signature([*positional, *keywords])

    def function(a: torch.Tensor, b: torch.Tensor, **kw) -> torch.Tensor:
        _check(a, "a")
        _check(b, "b")
        signature.bind(a, b, **kw)  # unknown keywords: TypeError
        return _Gated.apply(a, b, unit.name, kw)

    function.__name__ = function.__qualname__ = unit.name
    function.__module__ = __name__
    function.__signature__ = signature
    function.__doc__ = (
        f"{unit.name}(a, b) = {unit.formula}, differentiable ({unit.derivative}); as {unit.torch}."
    )
    return function


def _gated_module(unit: GatedUnit, function: Callable) -> type:
    def __init__(self, **kw) -> None:
        torch.nn.Module.__init__(self)
        inspect.signature(function).bind(None, None, **kw)
        self.kw = kw

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return function(a, b, **self.kw)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kw.items())

    return type(
        unit.module_name,
        (torch.nn.Module,),
        {
            "__init__": __init__,
            "forward": forward,
            "extra_repr": extra_repr,
            "__doc__": f"Module form of :func:`fastact.torch.{unit.name}`: forward(a, b) = {unit.formula}.",
            "__module__": __name__,
        },
    )


class _Halves(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fname: str, dim: int):
        _cpu(x)
        y = _tensor(getattr(_fa, fname)(_np(x), dim))
        ctx.fname, ctx.dim = fname, dim
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        dx = getattr(_fa, ctx.fname + "_backward")(_np(grad_output.to(x.dtype)), _np(x), ctx.dim)
        return _tensor(dx), None, None


def _make_halves(unit: GatedUnit) -> Callable:
    def function(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return _Halves.apply(_check(input, "input"), unit.name, dim)

    function.__name__ = function.__qualname__ = unit.name
    function.__module__ = __name__
    function.__doc__ = f"{unit.name}(input, dim=-1) = {unit.formula}, differentiable; as {unit.torch}."
    return function


def _halves_module(unit: GatedUnit, function: Callable) -> type:
    def __init__(self, dim: int = -1) -> None:
        torch.nn.Module.__init__(self)
        self.dim = dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return function(input, self.dim)

    return type(
        unit.module_name,
        (torch.nn.Module,),
        {
            "__init__": __init__,
            "forward": forward,
            "extra_repr": lambda self: f"dim={self.dim}",
            "__doc__": f"Module form of :func:`fastact.torch.{unit.name}`.",
            "__module__": __name__,
        },
    )


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, activation: str, params: dict):
        _cpu(x, bias)
        y = torch.empty_like(x)
        _fa.bias_act(_np(x), _np(bias), activation, out=_np(y), **params)
        ctx.activation, ctx.params = activation, params
        ctx.save_for_backward(y if _resolve(activation, params)[0].saves == "output" else x, bias)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        saved, bias = ctx.saved_tensors
        dx, dbias = _fa.bias_act_backward(
            _np(grad_output.to(saved.dtype)), _np(saved), _np(bias), ctx.activation, **ctx.params
        )
        return _tensor(dx), _tensor(dbias), None, None


def bias_act(input: torch.Tensor, bias: torch.Tensor, activation: str, **params) -> torch.Tensor:
    """activation(input + bias), the bias along the last dimension; differentiable in both
    (dbias fused into the backward pass). Any activation of ``fastact.ACTIVATIONS``."""
    _check(input, "input")
    _check(bias, "bias")
    _resolve(activation, params)  # unknown activation or parameters: now, not in forward
    return _BiasAct.apply(input, bias, activation, params)


class BiasAct(torch.nn.Module):
    """A bias (``num_features``, zeros at first) and an activation: ``activation(x + bias)``."""

    def __init__(self, num_features: int, activation: str = "gelu", dtype=None, **params) -> None:
        super().__init__()
        _resolve(activation, params)
        self.activation, self.params = activation, params
        self.bias = torch.nn.Parameter(torch.zeros(num_features, dtype=dtype))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return bias_act(input, self.bias, self.activation, **self.params)

    def extra_repr(self) -> str:
        items = [f"{self.bias.shape[0]}", f"activation={self.activation!r}"]
        return ", ".join(items + [f"{k}={v!r}" for k, v in self.params.items()])


# --- linear + cross-entropy (chunked) ---------------------------------------------------


class _LinearCrossEntropy(torch.autograd.Function):
    """loss = cross_entropy(input @ W.T + b, target, ...), chunked over rows by
    :func:`fastact.linear_cross_entropy`.

    "mean"/"sum": the forward computes the loss and the three gradients in one walk and
    saves the gradients; the backward multiplies them by the scalar grad_output (returns
    them as they are when it is 1). "none": each row's loss has its own grad_output, and
    dW = sum_n grad_output[n] g_n^T x_n cannot be had from an unweighted dW, so the forward
    computes the losses only (one matrix product per chunk) and the backward walks again,
    weighing row n's gradient by grad_output[n] (as torch's chunked path does).
    """

    @staticmethod
    def forward(ctx, input, linear_weight, linear_bias, target, weight, options: dict, grad_enabled: bool):
        if input.device.type != "cpu":
            raise RuntimeError(f"fastact.torch.linear_cross_entropy runs on CPU tensors, got {input.device}")
        for name, t in (("linear_weight", linear_weight), ("linear_bias", linear_bias), ("target", target),
                        ("weight", weight)):  # fmt: skip
            if t is not None and t.device != input.device:
                raise ValueError(f"{name} is on {t.device}, input on {input.device}")
        problem = _linear_problem(input, linear_weight, linear_bias, target, weight, options)
        reduction = problem.reduction
        grads = grad_enabled and any(ctx.needs_input_grad[:3]) and reduction != "none"
        losses, dx, dw, db = _lxe.walk(problem, grads=grads)
        ctx.reduction, ctx.options = reduction, options
        if reduction == "none":  # the backward walks again, from the inputs
            ctx.save_for_backward(input, linear_weight, linear_bias, target, weight)
        elif grads:
            db = None if db is None else _tensor(db)
            ctx.save_for_backward(_tensor(problem.shape_input_grad(dx)), _tensor(dw), db)
        return _tensor(_lxe.reduce_losses(problem, losses), dtype=input.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.reduction == "none":
            problem = _linear_problem(*ctx.saved_tensors, ctx.options)
            scale = grad_output.detach().to(torch.float64).reshape(-1).contiguous().numpy()
            _, dx, dw, db = _lxe.walk(problem, grads=True, row_scale=scale)
            dx = _tensor(problem.shape_input_grad(dx))
            dw = _tensor(dw)
            db = None if db is None else _tensor(db)
        else:
            dx, dw, db = ctx.saved_tensors
            go = grad_output.detach()
            if not bool(go == 1):
                go = go.to(dx.dtype)
                dx, dw = dx * go, dw * go
                db = None if db is None else db * go
        needs = ctx.needs_input_grad
        grads = (dx if needs[0] else None, dw if needs[1] else None, db if needs[2] else None)
        return (*grads, None, None, None, None)


def _linear_problem(input, linear_weight, linear_bias, target, weight, options):
    return _lxe.prepare(
        _np(input),
        _np(linear_weight),
        _np(target),
        linear_bias=None if linear_bias is None else _np(linear_bias),
        weight=None if weight is None else _np(weight.detach().to(input.dtype)),
        **options,
    )


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.linear_cross_entropy`` (the composition ``cross_entropy(input @
    linear_weight.T + linear_bias, target, ...)``) by :func:`fastact.linear_cross_entropy`:
    rows in chunks, the (N, V) logits never held. Differentiable with respect to
    ``input``, ``linear_weight`` and ``linear_bias`` (first order only; not to probability
    targets or class weights). CPU tensors, float32, float64, bfloat16 or float16 (16-bit:
    computed in float32, gradients and loss in the input's dtype).
    """
    _check(input, "input")
    _check(linear_weight, "linear_weight")
    if linear_bias is not None:
        _check(linear_bias, "linear_bias")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if weight is not None and not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    options = {
        "ignore_index": ignore_index,
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "chunk_size": chunk_size,
    }
    return _LinearCrossEntropy.apply(
        input, linear_weight, linear_bias, target, weight, options, torch.is_grad_enabled()
    )


class LinearCrossEntropy(torch.nn.Module):
    """A vocabulary head and its loss in one: ``nn.Linear(in_features, num_classes, bias)``
    followed by cross-entropy, computed by :func:`linear_cross_entropy` (chunked).
    ``forward(input, target)`` returns the loss."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        bias: bool = False,
        *,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        chunk_size: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        linear = torch.nn.Linear(in_features, num_classes, bias=bias, dtype=dtype)
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer("class_weight", weight)
        self.ignore_index, self.reduction = ignore_index, reduction
        self.label_smoothing, self.chunk_size = label_smoothing, chunk_size

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(
            input,
            self.weight,
            target,
            linear_bias=self.bias,
            weight=self.class_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        v, h = self.weight.shape
        return f"in_features={h}, num_classes={v}, bias={self.bias is not None}, reduction={self.reduction!r}"


# --- generated names ---------------------------------------------------------------------

_generated: dict[str, object] = {}
for _entry in ACTIVATIONS.values():
    if _entry.public:
        _function = _make_function(_entry)
        _generated[_entry.name] = _function
        _generated[MODULE_NAMES[_entry.name]] = _make_module(_entry, _function)
for _unit in GATED_UNITS.values():
    _function = _make_halves(_unit) if _unit.halves else _make_gated(_unit)
    _generated[_unit.name] = _function
    _module = _halves_module if _unit.halves else _gated_module
    _generated[_unit.module_name] = _module(_unit, _function)
globals().update(_generated)

__all__ = [
    "MODULE_NAMES",
    *_generated,
    "softmax",
    "log_softmax",
    "Softmax",
    "LogSoftmax",
    "cross_entropy",
    "CrossEntropyLoss",
    "bias_act",
    "BiasAct",
    "linear_cross_entropy",
    "LinearCrossEntropy",
]
