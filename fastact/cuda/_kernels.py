"""Elementwise CUDA kernels generated from the definitions table, and their runner.

Per activation, direction and dtype there are two grid-stride kernels around the
entry's scalar (compiled as a device function by :mod:`fastact.cuda._compile`):
``flat`` over 1-d contiguous views (any C- or F-contiguous arrays of one order) and
``strided`` over 4-d views of any strides (arrays collapsed to their fewest
dimensions first; more than 4 left over are looped on the host). Kernels are
compiled on first use with an explicit signature and cached.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from .._layout import collapse_axes, pad_axes
from ..definitions import ACTIVATIONS
from . import _compile
from ._arrays import SIMULATOR, DArray, _numba_empty, flat, view
from ._launch import blocks, compile_kernel, launch, settings

_FLAT_LOOP = "    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):\n"
_STRIDED_LOOP = """\
    n1 = out.shape[1]
    n2 = out.shape[2]
    n3 = out.shape[3]
    for i in range(cuda.grid(1), out.shape[0] * n1 * n2 * n3, cuda.gridsize(1)):
        i3 = i % n3
        r = i // n3
        i2 = r % n2
        r = r // n2
        i1 = r % n1
        i0 = r // n1
"""


@functools.cache
def builder(dtype: str) -> _compile.Builder:
    """The device-function builder for one compute dtype."""
    return _compile.Builder(cuda.jit(device=True), np.dtype(dtype).type, numpy_math=SIMULATOR)


def _source(nin: int, nparams: int, strided: bool, wide: bool) -> str:
    inputs = ("x",) if nin == 1 else ("g", "s")
    params = "".join(f", p{k}" for k in range(nparams))
    index = "i0, i1, i2, i3" if strided else "i"
    loads = ", ".join(f"wide({a}[{index}])" if wide else f"{a}[{index}]" for a in inputs)
    head = f"def kernel({', '.join(inputs)}, out{params}):\n"
    loop = _STRIDED_LOOP if strided else _FLAT_LOOP
    return f"{head}{loop}        out[{index}] = scalar({loads}{params})\n"


def _signature(dtype: np.dtype, nin: int, nparams: int, strided: bool) -> str:
    t = dtype.name
    array = f"{t}[:, :, :, :]" if strided else f"{t}[::1]"
    return f"void({', '.join([array] * (nin + 1) + [t] * nparams)})"


@functools.cache
def kernel(name: str, direction: str, dtype: str, strided: bool):
    """The compiled flat or strided kernel of one activation's forward or backward."""
    entry = ACTIVATIONS[name]
    dtype = np.dtype(dtype)
    compute = _compile.compute_dtype(name, direction, dtype)
    scalar = builder(compute.name).function(entry.forward if direction == "forward" else entry.backward)
    nin = 1 if direction == "forward" else 2
    nparams = len(entry.kernel_params)
    source = _source(nin, nparams, strided, compute != dtype)
    namespace = {"cuda": cuda, "scalar": scalar, "wide": compute.type}
    exec(compile(source, f"<fastact.cuda {name} {direction} {dtype}>", "exec"), namespace)
    return compile_kernel(namespace["kernel"], _signature(dtype, nin, nparams, strided))


def _identity(x):
    return x


@functools.cache
def _copy_kernel(dtype: str):
    namespace = {"cuda": cuda, "scalar": cuda.jit(device=True)(_identity)}
    exec(compile(_source(1, 0, True, False), "<fastact.cuda copy>", "exec"), namespace)
    return compile_kernel(namespace["kernel"], _signature(np.dtype(dtype), 1, 0, True))


# --- layouts ------------------------------------------------------------------------


def collapse(
    shape: tuple[int, ...], strides: list[tuple[int, ...]], by: int = -1
) -> tuple[list[int], list[list[int]]]:
    """The fewest dimensions covering every operand's strides (:func:`fastact._layout.collapse_axes`)."""
    return collapse_axes(shape, strides, by)


def strided_views(arrays: tuple[DArray, ...], ndim: int = 4) -> list[tuple]:
    """Groups of ``ndim``-d views of ``arrays`` (one group unless > ``ndim`` dims remain)."""
    dims, steps = collapse(arrays[0].shape, [a.strides for a in arrays])
    pad_axes(dims, steps, ndim)
    lead = len(dims) - ndim
    groups = []
    for index in np.ndindex(*dims[:lead]):
        offsets = [sum(i * st for i, st in zip(index, s[:lead])) for s in steps]
        groups.append(tuple(view(a, dims[lead:], s[lead:], off) for a, s, off in zip(arrays, steps, offsets)))
    return groups


def _extent(a: DArray) -> tuple[int, int]:
    lo = hi = a.ptr
    for n, s in zip(a.shape, a.strides):
        lo += min(0, (n - 1) * s)
        hi += max(0, (n - 1) * s)
    return lo, hi + a.dtype.itemsize


def unaliased(a: DArray, out: DArray, stream) -> DArray:
    """``a``, or a copy of it when ``out`` overlaps it other than element for element."""
    if a.size == 0 or (a.ptr == out.ptr and a.strides == out.strides):
        return a
    lo, hi = _extent(a)
    out_lo, out_hi = _extent(out)
    if hi <= out_lo or out_hi <= lo:
        return a
    copy = _numba_empty(a.shape, a.dtype, "C", stream)
    for views in strided_views((a, copy)):
        launch(_copy_kernel(a.dtype.name), blocks(math.prod(views[1].shape)), settings.threads, stream, views)
    return copy


def elementwise(name: str, direction: str, inputs: tuple[DArray, ...], out: DArray, params: tuple, stream):
    """out[...] = f(*inputs, *params) elementwise on ``stream``; all arrays checked."""
    n = out.size
    if n == 0:
        return
    arrays = (*(unaliased(a, out, stream) for a in inputs), out)
    dtype = out.dtype.name
    if all(a.contiguous("C") for a in arrays) or all(a.contiguous("F") for a in arrays):
        views = tuple(flat(a) for a in arrays)
        launch(kernel(name, direction, dtype, False), blocks(n), settings.threads, stream, (*views, *params))
        return
    compiled = kernel(name, direction, dtype, True)
    for views in strided_views(arrays):
        size = math.prod(views[-1].shape)
        launch(compiled, blocks(size), settings.threads, stream, (*views, *params))
