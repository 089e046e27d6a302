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
from . import _compile, _math
from ._arrays import SIMULATOR, DArray, _numba_empty, flat, view
from ._compile import store
from ._launch import blocks, compile_kernel, launch, settings

if not SIMULATOR:  # pragma: no cover - needs a GPU
    from numba.cuda import libdevice

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


def _gpu_float_as_int(x):
    return libdevice.float_as_int(x)


def _gpu_int_as_float(i):
    return libdevice.int_as_float(np.int32(i))


# On a GPU the bit casts of the 16-bit formats are libdevice's (the simulator runs _math's).
_BIT_CASTS = (
    {} if SIMULATOR else {_math.float_as_int: _gpu_float_as_int, _math.int_as_float: _gpu_int_as_float}
)


@functools.cache
def builder(dtype: str, storage: str | None = None) -> _compile.Builder:
    """The device-function builder for one compute dtype and (for kernels) the storage
    format of their arrays (``load``/``store``; default: the identity)."""
    fmt = None if storage is None else _compile.FORMATS[storage]
    return _compile.Builder(
        cuda.jit(device=True), np.dtype(dtype).type, numpy_math=SIMULATOR, storage=fmt, replace=_BIT_CASTS
    )


def storage_builder(dtype: str) -> _compile.Builder:
    """The builder of kernels over arrays of ``dtype``: its format's compute type and load/store."""
    fmt = _compile.format_of(dtype)
    return builder(fmt.compute, None if fmt.native else fmt.name)


def _source(nin: int, nparams: int, strided: bool, wide: bool) -> str:
    inputs = ("x",) if nin == 1 else ("g", "s")
    params = "".join(f", p{k}" for k in range(nparams))
    index = "i0, i1, i2, i3" if strided else "i"
    loads = ", ".join(f"wide(load({a}[{index}]))" if wide else f"load({a}[{index}])" for a in inputs)
    head = f"def kernel({', '.join(inputs)}, out{params}):\n"
    loop = _STRIDED_LOOP if strided else _FLAT_LOOP
    return f"{head}{loop}        out[{index}] = store(scalar({loads}{params}))\n"


def _signature(dtype: str, nin: int, nparams: int, strided: bool) -> str:
    fmt = _compile.format_of(dtype)
    t = fmt.array
    array = f"{t}[:, :, :, :]" if strided else f"{t}[::1]"
    return f"void({', '.join([array] * (nin + 1) + [fmt.compute] * nparams)})"


def _namespace(dtype: str, **names) -> dict:
    """A generated kernel's globals: ``load`` and ``store`` of ``dtype``'s format, ``names``."""
    build = storage_builder(dtype)
    return {"cuda": cuda, "load": build.function(_compile.load), "store": build.function(store), **names}


@functools.cache
def kernel(name: str, direction: str, dtype: str, strided: bool):
    """The compiled flat or strided kernel of one activation's forward or backward, for
    arrays of ``dtype`` (float32, float64, float16, bfloat16)."""
    entry = ACTIVATIONS[name]
    fmt = _compile.format_of(dtype)
    compute = _compile.compute_dtype(name, direction, dtype)
    scalar = builder(compute.name).function(entry.forward if direction == "forward" else entry.backward)
    nin = 1 if direction == "forward" else 2
    nparams = len(entry.kernel_params)
    source = _source(nin, nparams, strided, compute != fmt.compute)
    namespace = _namespace(dtype, scalar=scalar, wide=compute.type)
    exec(compile(source, f"<fastact.cuda {name} {direction} {dtype}>", "exec"), namespace)
    return compile_kernel(namespace["kernel"], _signature(dtype, nin, nparams, strided))


def _identity(x):
    return x


def kernel_dtype(dtype: np.dtype) -> str:
    """The element type name the kernels see arrays of ``dtype`` as (bfloat16: uint16)."""
    fmt = _compile.FORMATS.get(np.dtype(dtype).name)
    return np.dtype(dtype).name if fmt is None else fmt.array


@functools.cache
def _copy_kernel(dtype: str):
    """Copy 4-d views element for element (``dtype``: the kernels' element type, see kernel_dtype)."""
    identity = cuda.jit(device=True)(_identity)
    namespace = {"cuda": cuda, "scalar": identity, "load": identity, "store": identity}
    exec(compile(_source(1, 0, True, False), "<fastact.cuda copy>", "exec"), namespace)
    return compile_kernel(namespace["kernel"], f"void({dtype}[:, :, :, :], {dtype}[:, :, :, :])")


_NARROW = "def kernel(x, out):\n" + _STRIDED_LOOP + "        out[i0, i1, i2, i3] = store(x[i0, i1, i2, i3])\n"


@functools.cache
def narrow_kernel(dtype: str):
    """out = store(x) over 4-d views: x of ``dtype``'s compute type, out of ``dtype`` (16-bit)."""
    fmt = _compile.format_of(dtype)
    namespace = _namespace(dtype)
    exec(compile(_NARROW, f"<fastact.cuda narrow {dtype}>", "exec"), namespace)
    return compile_kernel(namespace["kernel"], f"void({fmt.compute}[:, :, :, :], {fmt.array}[:, :, :, :])")


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
        launch(
            _copy_kernel(kernel_dtype(a.dtype)),
            blocks(math.prod(views[1].shape)),
            settings.threads,
            stream,
            views,
        )
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


# --- fused ops: gated units and bias + activation -------------------------------------------
# Generated from the entries' scalars as the activations' kernels are (the same Builder),
# by the recipes of fastact._fused_kernels: gated forward f(a) * b; backward y = f(a),
# da = backward_f(g * b, a or y), db = g * y; bias forward f(x + c) (x + c in the arrays'
# dtype, as on the CPU), backward dx = backward_f(g, s + c or s) with dbias's column sums.

_FUSED_BODY = {
    "gated": "        out{i} = store(f(wide(load(a{i})){p}) * wide(load(b{i})))\n",
    "gated_backward": (
        "        gv = wide(load(g{i}))\n"
        "        av = wide(load(a{i}))\n"
        "        y = f(av{p})\n"
        "        da{i} = store(fb(gv * wide(load(b{i})), av if from_input else y{p}))\n"
        "        db{i} = store(gv * y)\n"
    ),
    "bias": "        out{i} = store(f(wide(load(x{i}) + load(c{i})){p}))\n",
}
_FUSED_ARRAYS = {
    "gated": ("a", "b", "out"),
    "gated_backward": ("g", "a", "b", "da", "db"),
    "bias": ("x", "c", "out"),
}


def _fused_compute(kname: str, dtype: str, directions=("forward", "backward")) -> np.dtype:
    """float64 where either direction of ``kname`` is widened for ``dtype``, else its format's
    compute type."""
    fmt = _compile.format_of(dtype)
    widen = any(_compile.compute_dtype(kname, d, dtype) != fmt.compute for d in directions)
    return np.dtype(np.float64) if widen else np.dtype(fmt.compute)


@functools.cache
def fused_kernel(op: str, kname: str, dtype: str, strided: bool):
    """The flat or strided (4-d) kernel of a fused op with the entry ``kname``."""
    entry = ACTIVATIONS[kname]
    fmt = _compile.format_of(dtype)
    compute = _fused_compute(kname, dtype)
    build = builder(compute.name)
    arrays = _FUSED_ARRAYS[op]
    nparams = len(entry.kernel_params)
    params = "".join(f", p{k}" for k in range(nparams))
    index = "[i0, i1, i2, i3]" if strided else "[i]"
    head = f"def kernel({', '.join(arrays)}{params}):\n"
    body = _FUSED_BODY[op].format(i=index, p=params)
    source = (
        head + (_STRIDED_LOOP if strided else _FLAT_LOOP).replace("out.shape", f"{arrays[-1]}.shape") + body
    )
    namespace = _namespace(
        dtype,
        f=build.function(entry.forward),
        fb=build.function(entry.backward),
        wide=compute.type,
        from_input=entry.saves == "input",
    )
    exec(compile(source, f"<fastact.cuda {op} {kname} {dtype}>", "exec"), namespace)
    t = fmt.array
    array = f"{t}[:, :, :, :]" if strided else f"{t}[::1]"
    return compile_kernel(
        namespace["kernel"], f"void({', '.join([array] * len(arrays) + [fmt.compute] * nparams)})"
    )


def fused_elementwise(op: str, kname: str, arrays: tuple[DArray, ...], params: tuple, stream) -> None:
    """A fused elementwise op over ``arrays`` (inputs then outputs, one shape), any strides."""
    n = arrays[-1].size
    if n == 0:
        return
    if all(a.contiguous("C") for a in arrays) or all(a.contiguous("F") for a in arrays):
        views = tuple(flat(a) for a in arrays)
        launch(
            fused_kernel(op, kname, arrays[0].dtype.name, False),
            blocks(n),
            settings.threads,
            stream,
            (*views, *params),
        )
        return
    compiled = fused_kernel(op, kname, arrays[0].dtype.name, True)
    for views in strided_views(arrays):
        launch(compiled, blocks(math.prod(views[-1].shape)), settings.threads, stream, (*views, *params))


def _bias_backward_source(nparams: int) -> str:
    params = "".join(f", p{k}" for k in range(nparams))
    return (
        f"def kernel(g, s, c, dx, partial{params}):\n"
        "    rows = g.shape[0]\n"
        "    n = g.shape[1]\n"
        "    chunks = partial.shape[0]\n"
        "    for t in range(cuda.grid(1), chunks * n, cuda.gridsize(1)):\n"
        "        k = t // n\n"
        "        j = t % n\n"
        "        acc = partial[k, j]\n"
        "        for r in range(k * rows // chunks, (k + 1) * rows // chunks):\n"
        "            d = fb(wide(load(g[r, j])), "
        f"wide(load(s[r, j]) + load(c[j])) if from_input else wide(load(s[r, j])){params})\n"
        "            dx[r, j] = store(d)\n"
        "            acc += d\n"
        "        partial[k, j] = acc\n"
    )


def _combine(partial, out):
    for j in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        acc = partial[0, j]
        for k in range(1, partial.shape[0]):
            acc += partial[k, j]
        out[j] = store(acc)


@functools.cache
def bias_backward_kernel(kname: str, dtype: str):
    """dx and the chunks' float64 partial column sums over 2-d (rows, n) views: one thread
    per (chunk, column), the rows of its chunk in order (deterministic, coalesced)."""
    entry = ACTIVATIONS[kname]
    fmt = _compile.format_of(dtype)
    compute = _fused_compute(kname, dtype, ("backward",))
    namespace = _namespace(
        dtype,
        fb=builder(compute.name).function(entry.backward),
        wide=compute.type,
        from_input=entry.saves == "input",
    )
    nparams = len(entry.kernel_params)
    exec(compile(_bias_backward_source(nparams), f"<fastact.cuda bias backward {kname}>", "exec"), namespace)
    t, c = fmt.array, fmt.compute
    scalars = "".join(f", {c}" for _ in range(nparams))
    sig = f"void({t}[:, :], {t}[:, :], {t}[::1], {t}[:, :], float64[:, ::1]{scalars})"
    return compile_kernel(namespace["kernel"], sig)


@functools.cache
def combine_kernel(dtype: str):
    """dbias (of ``dtype``) from the chunks' float64 partial sums, added in chunk order."""
    pyfunc = storage_builder(dtype).rebind(_combine)
    return compile_kernel(pyfunc, f"void(float64[:, ::1], {_compile.format_of(dtype).array}[::1])")


def _zero(a):
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[i] = 0.0


@functools.cache
def zero_kernel():
    return compile_kernel(_zero, "void(float64[::1])")
