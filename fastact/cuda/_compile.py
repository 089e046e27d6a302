"""Compile plain Python functions for the GPU, with their globals rebound.

The table's scalar kernels are ``@njit`` functions that call CPU math helpers
(``fastact._math``, whose bit tricks need not compile for
CUDA). :class:`Builder` takes a function's ``py_func`` and makes a copy of it whose
globals are rebound before compiling it with a given ``jit``:

* a CPU math-helper module (:data:`HELPER_MODULES`) -> a namespace of the same names
  from :mod:`fastact.cuda._math` (``math.exp`` etc., which CUDA lowers to libdevice);
* a numba dispatcher, a function tagged with :func:`device` or one of the GPU helper
  module -> its ``py_func``, rebuilt the same way (recursively) and compiled as a
  device function;
* for float32: every float constant (literals in the code, float globals, ``math.inf``)
  -> ``np.float32``, so float32 data is computed in float32 rather than promoted to
  float64 by Python's float literals (GPUs run float64 at 1/2 to 1/64 of the float32
  rate). Entries whose float32 result would break their stated ulp bound that way are
  listed in :data:`WIDEN` (from the table's ``cuda_float64``) and computed in float64 instead;
* the storage placeholders :func:`load` and :func:`store`, which every kernel calls on each
  element it reads and each value it writes -> the functions of the builder's storage
  :class:`Format` (:data:`FORMATS`): the identity for float32/float64 arrays, the
  widening to float32 and the rounding back (to nearest, ties to even) for float16 and
  bfloat16 arrays, which the kernels see as float16 and uint16 arrays.

Nothing here imports ``numba.cuda``: with ``jit=numba.njit`` the same builder gives
CPU functions, which is how the tests check the float32 arithmetic without a GPU.
"""

from __future__ import annotations

import dis
import math
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..definitions import ACTIVATIONS
from . import _math

# CPU math-helper modules and their GPU replacement (same function names).
HELPER_MODULES = {"fastact._math": _math}

# (activation, "forward"/"backward") computed in float64 for float32 data: the table's
# Activation.cuda_float64 (computing these in float32 breaks the entry's ulp bound).
WIDEN = frozenset((name, d) for name, entry in ACTIVATIONS.items() for d in entry.cuda_float64)

_DEVICE_TAG = "_fastact_device"


def device(func: Callable) -> Callable:
    """Mark a plain Python function as a device helper that :class:`Builder` compiles."""
    setattr(func, _DEVICE_TAG, True)
    return func


@device
def load(v):
    """An element read from an array, as the value computed with (bound per storage format)."""
    return v


@device
def store(v):
    """A computed value, as the element written to an array (bound per storage format)."""
    return v


@dataclass(frozen=True)
class Format:
    """How a kernel's arrays hold their elements (the GPU's twin of :class:`fastact._half.Storage`).

    ``array``: the element type the kernels see (numba's name); ``compute``: the float type
    of the values computed with, of the parameters, accumulators, shared memory and
    workspaces; ``load`` / ``store``: plain Python device functions bound to
    :func:`load` / :func:`store`. 16-bit formats compute in float32 and round once on store:
    the result is the float32 kernel's on the widened input, rounded.
    """

    name: str
    array: str
    compute: str
    load: Callable
    store: Callable

    @property
    def native(self) -> bool:
        return self.array == self.compute


FORMATS = {
    "float32": Format("float32", "float32", "float32", load, store),
    "float64": Format("float64", "float64", "float64", load, store),
    "float16": Format("float16", "float16", "float32", _math.f16_load, _math.f16_store),
    "bfloat16": Format("bfloat16", "uint16", "float32", _math.bf16_load, _math.bf16_store),
}


def format_of(dtype: np.dtype | str) -> Format:
    """The storage format of arrays of ``dtype`` (float32, float64, float16, bfloat16); KeyError else."""
    return FORMATS[np.dtype(dtype).name if not isinstance(dtype, str) else dtype]


def compute_dtype(name: str, direction: str, dtype: np.dtype) -> np.dtype:
    """The dtype the scalar of ``name`` computes in for arrays of ``dtype`` (16-bit arrays:
    as float32 arrays, whose results they round)."""
    dtype = np.dtype(format_of(dtype).compute)
    if dtype == np.float32 and (name, direction) in WIDEN:
        return np.dtype(np.float64)
    return dtype


def _global_names(code: types.CodeType) -> set[str]:
    """Names ``code`` loads as globals (``co_names`` also holds attribute names)."""
    return {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}


def _is_dispatcher(value: object) -> bool:
    return hasattr(value, "py_func") and type(value).__module__.startswith("numba")


def _is_gpu_helper(value: object) -> bool:
    """A function of a GPU helper module (they call each other: sigmoid from silu)."""
    return isinstance(value, types.FunctionType) and value.__module__ == _math.__name__


class Builder:
    """Compiles functions for one float type, rebinding their globals (see module doc).

    ``jit`` compiles a device function (``cuda.jit(device=True)`` or ``numba.njit``);
    ``storage`` binds :func:`load` and :func:`store` (default: the identity); ``replace``
    maps functions to the ones compiled in their place (on a GPU: the bit casts of
    :mod:`fastact.cuda._math` to libdevice's).
    """

    def __init__(
        self,
        jit: Callable,
        ftype: type,
        numpy_math: bool = False,
        storage: Format | None = None,
        replace: dict | None = None,
    ) -> None:
        self.jit = jit
        self.ftype = np.dtype(ftype).type
        self._replace = {load: load, store: store, **(replace or {})}
        if storage is not None:
            self._replace.update({load: storage.load, store: storage.store})
        self._compiled: dict[object, Callable] = {}
        self._namespaces: dict[str, types.ModuleType] = {}
        self._math = self._math_proxy(numpy_math) if self.ftype is np.float32 or numpy_math else math

    def function(self, func: Callable) -> Callable:
        """``func`` (a dispatcher or plain function) compiled with ``jit``; cached."""
        py = getattr(func, "py_func", func)
        py = self._replace.get(py, py)
        compiled = self._compiled.get(py)
        if compiled is None:
            compiled = self._compiled[py] = self.jit(self.rebind(py))
        return compiled

    def rebind(self, py: types.FunctionType) -> types.FunctionType:
        """A copy of ``py`` with rebound globals and (float32) retyped constants."""
        code = py.__code__
        glob = dict(py.__globals__)
        for name in _global_names(code):
            if name in glob:
                glob[name] = self._global(glob[name])
        if self.ftype is np.float32:
            code = code.replace(co_consts=tuple(self._const(c) for c in code.co_consts))
        new = types.FunctionType(code, glob, py.__name__, py.__defaults__, py.__closure__)
        new.__qualname__ = py.__qualname__
        new.__module__ = py.__module__
        return new

    def _const(self, value: object) -> object:
        return self.ftype(value) if type(value) is float else value

    def _global(self, value: object) -> object:
        if type(value) is float:
            return self.ftype(value)
        if isinstance(value, types.FunctionType) and value in self._replace:
            return self.function(self._replace[value])
        if isinstance(value, types.ModuleType):
            if value is math:
                return self._math
            helper = HELPER_MODULES.get(value.__name__)
            if helper is not None:
                return self._namespace(helper)
            return value
        if _is_dispatcher(value) or getattr(value, _DEVICE_TAG, False) or _is_gpu_helper(value):
            return self.function(value)
        return value

    def _namespace(self, module: types.ModuleType) -> types.ModuleType:
        """A module object holding ``module``'s public functions, compiled."""
        space = self._namespaces.get(module.__name__)
        if space is None:
            space = types.ModuleType(f"{module.__name__}[{self.ftype.__name__}]")
            for name in module.__all__:
                value = getattr(module, name)
                if value is getattr(math, name, None):  # math's own function: the float type's
                    setattr(space, name, getattr(self._math, name))
                else:
                    setattr(space, name, self.function(value))
            self._namespaces[module.__name__] = space
        return space

    def _math_proxy(self, numpy_math: bool) -> types.ModuleType:
        """``math`` with constants of the float type (``math.inf`` would promote float32).

        With ``numpy_math`` (the simulator, which runs the code as Python) the functions
        that raise on overflow or log(0) are numpy's, which follow IEEE rules as the
        GPU does, in the argument's precision.
        """
        proxy = types.ModuleType(f"math[{self.ftype.__name__}]")
        proxy.__dict__.update({k: v for k, v in vars(math).items() if not k.startswith("__")})
        for name in ("inf", "nan", "pi", "e", "tau"):
            setattr(proxy, name, self.ftype(getattr(math, name)))
        if numpy_math:
            for name in ("exp", "expm1", "log", "log1p", "tanh"):
                setattr(proxy, name, getattr(np, name))
        return proxy
