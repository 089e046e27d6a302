"""The fused ops on the GPU: gated units (from GATED_UNITS, the CPU's generated functions
with this device's helpers) and bias_act, for CUDA arrays, on the caller's current stream.

Same names, signatures, checks and results as the CPU's (:mod:`fastact._fused`): ``b`` may
broadcast to ``a`` in the forward; the in-place backward rejects ``a`` and ``b`` sharing
memory; bias_act's dbias is summed in float64 per chunk of rows (the chunks fixed by the
shape, one GPU thread per chunk and column, the chunks added in order: deterministic).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import _fused
from .._fused_kernels import chunks
from .._layout import collapse_axes, overlap, pad_axes
from .._validate import bias_along_last_axis
from ..definitions import ACTIVATIONS, GATED_UNITS
from ._api import compute_scalars, dtype_params
from ._arrays import DArray, _numba_empty, as_device, empty, empty_like, resolve_stream, view
from ._kernels import (
    _copy_kernel,
    bias_backward_kernel,
    combine_kernel,
    fused_elementwise,
    kernel_dtype,
    strided_views,
    unaliased,
    zero_kernel,
)
from ._launch import blocks, launch, settings

__all__ = ["functions"]


def _same(a: DArray, name: str, ref: DArray, ref_name: str) -> None:
    if a.shape != ref.shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {ref.shape} (the shape of {ref_name})")
    if a.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, expected {ref.dtype} (the dtype of {ref_name})")


def _broadcast(b: DArray, shape: tuple[int, ...]) -> DArray:
    """``b`` broadcast to ``shape`` (zero strides), or ValueError."""
    lead = len(shape) - b.ndim
    if lead < 0 or any(n != m and n != 1 for n, m in zip(b.shape, shape[lead:])):
        raise ValueError(f"b has shape {b.shape}, which does not broadcast to a's shape {shape}")
    strides = (0,) * lead + tuple(
        0 if n == 1 and m != 1 else s for n, m, s in zip(b.shape, shape[lead:], b.strides)
    )
    return DArray(b.obj, b.lib, b.ptr, shape, strides, b.dtype, True, b.stream)


class _Bounds:
    """An array interface over a device pointer, for numpy's overlap arithmetic only (the
    memory is never read)."""

    def __init__(self, a: DArray) -> None:
        desc = {"shape": a.shape, "strides": a.strides, "typestr": a.dtype.str}
        self.__array_interface__ = {**desc, "data": (a.ptr, True), "version": 3}


def _overlap(a: DArray, b: DArray) -> bool:
    """Whether ``a`` and ``b`` share an element (numpy's exact check on their strides)."""
    return a.size > 0 and b.size > 0 and overlap(np.asarray(_Bounds(a)), np.asarray(_Bounds(b)))


def gated_forward(kname: str, pvalues: tuple, a, b, out, in_place: bool = False):
    fname = "swiglu"
    a = as_device(a, "a", fname, write=in_place)
    b = as_device(b, "b", fname)
    if b.dtype != a.dtype:
        raise TypeError(f"b has dtype {b.dtype}, expected {a.dtype} (the dtype of a)")
    if b.shape != a.shape:
        b = _broadcast(b, a.shape)
    params = dtype_params(ACTIVATIONS[kname], pvalues, a.dtype)
    stream = resolve_stream(None, a)
    if in_place:
        target = a
    elif out is None:
        target = empty_like(a, stream)
    else:
        target = as_device(out, "out", fname, write=True)
        _same(target, "out", a, "a")
    inputs = (unaliased(a, target, stream), unaliased(b, target, stream))
    fused_elementwise("gated", kname, (*inputs, target), params, stream)
    return target.obj


def gated_backward(kname: str, pvalues: tuple, grad, a, b, in_place: bool):
    fname = "swiglu_backward"
    grad = as_device(grad, "grad", fname)
    a, b = as_device(a, "a", fname, write=in_place), as_device(b, "b", fname, write=in_place)
    _same(a, "a", grad, "grad")
    _same(b, "b", grad, "grad")
    params = dtype_params(ACTIVATIONS[kname], pvalues, a.dtype)
    stream = resolve_stream(None, grad)
    if in_place:
        if _overlap(a, b):
            raise ValueError("a and b share memory: the in-place backward writes da over a and db over b")
        grad = unaliased(unaliased(grad, a, stream), b, stream)
        fused_elementwise("gated_backward", kname, (grad, a, b, a, b), params, stream)
        return a.obj, b.obj
    da, db = empty_like(a, stream), empty_like(a, stream)
    fused_elementwise("gated_backward", kname, (grad, a, b, da, db), params, stream)
    return da.obj, db.obj


def _halves(x: DArray, axis) -> tuple[DArray, DArray, int]:
    if x.ndim == 0:
        raise ValueError("glu does not support 0-d arrays (it splits an axis in halves)")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of bounds for an array of {x.ndim} dimensions")
    axis = int(axis) % x.ndim
    if x.shape[axis] % 2:
        raise ValueError(f"glu halves axis {axis}, which must have an even length, got {x.shape[axis]}")
    shape = tuple(n // 2 if d == axis else n for d, n in enumerate(x.shape))
    second = x.ptr + shape[axis] * x.strides[axis]
    return (
        DArray(x.obj, x.lib, x.ptr, shape, x.strides, x.dtype, x.readonly, x.stream),
        DArray(x.obj, x.lib, second, shape, x.strides, x.dtype, x.readonly, x.stream),
        axis,
    )


def halves_forward(kname: str, x, axis, out):
    x = as_device(x, "x", "glu")
    first, second, axis = _halves(x, axis)
    stream = resolve_stream(None, x)
    if out is None:
        target = empty(first.shape, x.dtype, x, stream)
    else:
        target = as_device(out, "out", "glu", write=True)
        _same(target, "out", first, "half of x")
    inputs = (unaliased(second, target, stream), unaliased(first, target, stream))
    fused_elementwise("gated", kname, (*inputs, target), (), stream)
    return target.obj


def halves_backward(kname: str, grad, x, axis):
    grad, x = as_device(grad, "grad", "glu_backward"), as_device(x, "x", "glu_backward")
    first, second, axis = _halves(x, axis)
    _same(grad, "grad", first, "half of x")
    stream = resolve_stream(None, x)
    dx = empty(x.shape, x.dtype, x, stream)
    dfirst, dsecond, _ = _halves(dx, axis)
    fused_elementwise("gated_backward", kname, (grad, second, first, dsecond, dfirst), (), stream)
    return dx.obj


# --- bias + activation ------------------------------------------------------------------


def _bias(bias, x: DArray, fname: str) -> DArray:
    bias = as_device(bias, "bias", fname)
    bias_along_last_axis(bias, x)
    return bias


def _bias_forward(x, bias, activation, out, params: dict, in_place: bool):
    x = as_device(x, "x", "bias_act", write=in_place)
    entry, floats = _fused.resolve(activation, params)
    floats = compute_scalars(floats, x.dtype)
    stream = resolve_stream(None, x)
    if in_place:
        target = x
    elif out is None:
        target = None
    else:
        target = as_device(out, "out", "bias_act", write=True)
        _same(target, "out", x, "x")
    c = _bias(bias, x, "bias_act")
    target = empty_like(x, stream) if target is None else target
    c = unaliased(c, target, stream)
    c = DArray(c.obj, c.lib, c.ptr, x.shape, (0,) * (x.ndim - 1) + (c.strides[0],), c.dtype, True)
    fused_elementwise("bias", entry.name, (unaliased(x, target, stream), c, target), floats, stream)
    return target.obj


def _bias_backward(grad, saved, bias, activation, params: dict, in_place: bool):
    fname = "bias_act_backward"
    g = as_device(grad, "grad", fname, write=in_place)
    s = as_device(saved, "saved", fname)
    _same(s, "saved", g, "grad")
    entry, floats = _fused.resolve(activation, params)
    floats = compute_scalars(floats, g.dtype)
    c = _bias(bias, g, fname)
    stream = resolve_stream(None, g)
    n = g.shape[-1]
    dbias = empty((n,), g.dtype, g, stream)
    dx = g if in_place else empty_like(g, stream)
    s, c = unaliased(s, dx, stream), unaliased(c, dx, stream)
    if n == 0:
        return dx.obj, dbias.obj
    if c.strides[0] != c.dtype.itemsize:  # the kernel takes a contiguous bias: copy it (n elements)
        copy = _numba_empty((n,), c.dtype, "C", stream)
        for views in strided_views((c, copy)):
            launch(_copy_kernel(kernel_dtype(c.dtype)), blocks(n), settings.threads, stream, views)
        c = copy
    arrays = (g, s, dx)
    dims, steps = collapse_axes(g.shape[:-1], [a.strides[:-1] for a in arrays], 2)
    pad_axes(dims, steps, 1)
    rows = dims[-1]
    partial = _numba_empty((chunks(rows), n), np.dtype(np.float64), "C", stream)
    zero = zero_kernel()
    launch(zero, blocks(partial.size), settings.threads, stream, (view(partial, (partial.size,), (8,)),))
    kernel = bias_backward_kernel(entry.name, g.dtype.name)
    pv = view(partial, partial.shape, partial.strides)
    cv = view(c, (n,), (c.strides[0],))
    for index in np.ndindex(*dims[:-1]):
        views = [
            view(a, (rows, n), (st[-1], a.strides[-1]), sum(i * k for i, k in zip(index, st[:-1])))
            for a, st in zip(arrays, steps)
        ]
        launch(
            kernel, blocks(partial.size), settings.threads, stream, (*views[:2], cv, views[2], pv, *floats)
        )
    launch(
        combine_kernel(g.dtype.name),
        blocks(n),
        settings.threads,
        stream,
        (pv, view(dbias, (n,), (g.dtype.itemsize,))),
    )
    return dx.obj, dbias.obj


def bias_act(x, bias, activation, *, out=None, **params):
    return _bias_forward(x, bias, activation, out, params, False)


def bias_act_(x, bias, activation, **params):
    return _bias_forward(x, bias, activation, None, params, True)


def bias_act_backward(grad, saved, bias, activation, **params):
    return _bias_backward(grad, saved, bias, activation, params, False)


def bias_act_backward_(grad, saved, bias, activation, **params):
    return _bias_backward(grad, saved, bias, activation, params, True)


_HELPERS = {
    "gated_forward": gated_forward,
    "gated_backward": gated_backward,
    "halves_forward": halves_forward,
    "halves_backward": halves_backward,
}


def functions() -> dict[str, Callable]:
    """Every fused op for CUDA arrays, keyed by name (docstrings as the CPU's)."""
    found = {}
    for unit in GATED_UNITS.values():
        found.update(_fused.make_gated_functions(unit, _HELPERS, "fastact.cuda"))
    for f in (bias_act, bias_act_, bias_act_backward, bias_act_backward_):
        f.__doc__ = _fused.BIAS_FUNCTIONS[f.__name__].__doc__ + "\n\nGPU version: any CUDA array."
        f.__module__ = "fastact.cuda"
        found[f.__name__] = f
    return found
