"""Real numpy ufuncs (``@vectorize``, float32 and float64 loops) for every activation.

``ufuncs.<name>(x, *params)`` is the forward and ``ufuncs.<name>_backward(grad, saved,
*params)`` the backward (``saved`` as in the table's ``saves``). Parameters are ufunc
inputs, so they broadcast and have no defaults: ``ufuncs.elu(x, 1.0)``. gelu's tanh
approximation is ``ufuncs.gelu_tanh``.

The elementwise gated units of :data:`fastact.GATED_UNITS` are binary ufuncs of their
forward, ``ufuncs.swiglu(a, b)`` = silu(a) * b (``geglu``, ``geglu_tanh``, ``reglu``; b
broadcasts as ufunc inputs do). They support ``out=`` (any layout; in place
with ``out=x``), broadcasting, casting and pickling, but not ``where=`` (numba's ufunc
objects fail numpy's masked iteration with a ValueError). Their inner loop is fastact's
(:mod:`fastact._numba_compat`): vectorized for contiguous arrays with scalar parameters,
in place too. They are built (and compiled) on first access.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import vectorize

from ._config import INTERLEAVE
from ._fused_kernels import gated_scalars
from ._kernels import pin_uuid
from ._numba_compat import fastact_ufunc_loops, vector_interleave
from .definitions import ACTIVATIONS, GATED_UNITS

# ufunc name -> the entry its gated unit gates with: swiglu, geglu, geglu_tanh, reglu
GATED = {
    unit.name + suffix: kname
    for unit in GATED_UNITS.values()
    if not unit.halves
    for suffix, kname in unit.variants().items()
}

__all__ = [*(n for a in ACTIVATIONS for n in (a, f"{a}_backward")), *GATED]


def _signatures(nin: int) -> list[str]:
    return [f"{t}({', '.join([t] * nin)})" for t in ("float32", "float64")]


# Closures over the scalar, with fixed arity as @vectorize needs: like the kernels,
# they cache on disk under a key that includes the source fingerprint (pin_uuid).
_ARITY = {
    1: lambda f: lambda a: f(a),
    2: lambda f: lambda a, b: f(a, b),
    3: lambda f: lambda a, b, c: f(a, b, c),
    4: lambda f: lambda a, b, c, d: f(a, b, c, d),
}


@cache
def _build(name: str) -> np.ufunc:
    if name not in __all__:
        raise AttributeError(f"module 'fastact.ufuncs' has no attribute {name!r}")
    if name in GATED:
        entry = ACTIVATIONS[GATED[name]]
        scalar, nin = gated_scalars(entry.name)[0], 2 + len(entry.kernel_params)
        formula = f"{entry.name}(a) * b"
    else:
        backward = name.endswith("_backward")
        entry = ACTIVATIONS[name.removesuffix("_backward")]
        scalar = entry.backward if backward else entry.forward
        nin, formula = (2 if backward else 1) + len(entry.kernel_params), entry.formula
    pin_uuid(scalar)
    function = _ARITY[nin](scalar)
    # The ufunc takes this name: pickle then finds it as fastact.ufuncs.<name>, so the
    # ufuncs travel to dask.distributed workers (a '<lambda>' would not be found).
    function.__name__ = function.__qualname__ = name
    with vector_interleave(INTERLEAVE), fastact_ufunc_loops(narrays=nin - len(entry.kernel_params)):
        ufunc = vectorize(_signatures(nin), cache=True)(function).ufunc
    ufunc.__doc__ = f"{name}: numpy ufunc of fastact.{name} (y = {formula})."
    return ufunc


def __getattr__(name: str) -> np.ufunc:
    if name.startswith("__"):
        raise AttributeError(name)
    return _build(name)


def __dir__() -> list[str]:
    return sorted(__all__)
