"""softmax / log_softmax along any axis and their backwards, for CUDA arrays.

Same API, formulas and edge rows as :func:`fastact.softmax` (see :mod:`fastact._softmax`),
``scale=`` and ``where=`` (a bool device array broadcastable to x, read in place) included,
plus ``stream=``::

    softmax(x, axis=-1, *, scale=1.0, where=None, out=None, stream=None)
    softmax_(x, axis=-1, *, scale=1.0, where=None, stream=None)
    softmax_backward(grad, y, axis=-1, *, scale=1.0, where=None, out=None, stream=None)
    softmax_backward_(grad, y, axis=-1, *, scale=1.0, where=None, stream=None)

and the same four for ``log_softmax``. Any strides: arrays are reduced to 3-d views
(outer, n, inner) without copying (axes that cannot be merged are looped over) and
run through the ``rows``, ``split`` or ``cols`` kernels of
:mod:`fastact.cuda._softmax_kernels`.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Callable

import numpy as np

from .._layout import pad_axes
from .._validate import same_layout
from . import _softmax_kernels as sk
from ._arrays import DArray, _numba_empty, as_device, check_stream, empty_like, resolve_stream, view
from ._compile import format_of
from ._kernels import collapse, storage_builder, unaliased
from ._launch import blocks, compile_kernel, group_size, launch, max_blocks, settings

try:
    from numpy.lib.array_utils import normalize_axis_index
except ImportError:  # numpy < 2.0
    from numpy.core.multiarray import normalize_axis_index


def axis_index(axis: object, ndim: int) -> int:
    """``axis`` normalised to [0, ndim); a 0-d array has the one axis 0 (or -1)."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    return normalize_axis_index(operator.index(axis), max(ndim, 1), "axis")


_KIND = {
    "a": "{t}[:, :, :]",  # the data: the format's element type ({t})
    "w": "{c}[:, :, ::1]",  # the split workspace: the compute type ({c})
    "i": "int64",
    "b": "boolean",
    "m": "boolean[:, :, :]",  # the mask of the masked kernels
    "s": "{c}",  # their scale, in the compute type
}


@functools.cache
def compiled(name: str, dtype: str, threads: int):
    """The kernel ``name`` of :data:`~fastact.cuda._softmax_kernels.KERNELS` for arrays of
    ``dtype`` (float32, float64; float16 and bfloat16 computed in float32)."""
    generator, flags, kinds = sk.KERNELS[name]
    fmt = format_of(dtype)
    pyfunc = storage_builder(dtype).rebind(generator(threads, np.dtype(fmt.compute).type, **flags))
    signature = f"void({', '.join(_KIND[k].format(t=fmt.array, c=fmt.compute) for k in kinds)})"
    return compile_kernel(pyfunc, signature)


def row_views(arrays: tuple[DArray, ...], axis: int) -> tuple[str, list[tuple]]:
    """("rows" or "cols", groups of 3-d (outer, n, inner) views of ``arrays``).

    "rows" when the reduced axis has the smallest stride of the first array (the
    views are then (rows, n, 1)), else "cols". Axes that cannot be merged into
    outer/inner are looped over: one group of views each.
    """
    first = arrays[0]
    others = [d for d in range(first.ndim) if d != axis]
    dims, steps = collapse(
        tuple(first.shape[d] for d in others), [tuple(a.strides[d] for d in others) for a in arrays], by=0
    )
    n = first.shape[axis] if first.ndim else 1
    axis_steps = [a.strides[axis] if a.ndim else 0 for a in arrays]
    if not dims or abs(axis_steps[0]) <= abs(steps[0][-1]):
        mode, core = "rows", 1  # views (dims[-1], n, 1)
    else:
        mode, core = "cols", 2  # views (dims[-2], n, dims[-1])
    pad_axes(dims, steps, core)
    lead = len(dims) - core
    groups = []
    for index in np.ndindex(*dims[:lead]):
        group = []
        for a, s, sa in zip(arrays, steps, axis_steps):
            offset = sum(i * st for i, st in zip(index, s[:lead]))
            if mode == "rows":
                shape, strides = (dims[-1], n, 1), (s[-1], sa, 0)
            else:
                shape, strides = (dims[-2], n, dims[-1]), (s[-2], sa, s[-1])
            group.append(view(a, shape, strides, offset))
        groups.append(tuple(group))
    return mode, groups


def run(
    op: str,
    a: DArray,
    b: DArray | None,
    out: DArray,
    axis: int,
    stream,
    scale: float = 1.0,
    where: DArray | None = None,
) -> None:
    """out = op(a[, b]) along ``axis``; op is "forward" or "backward", log or not. With a
    scale other than 1 or a mask ``where`` (bool, broadcast to out's shape), the masked
    kernels (a scale alone: with a mask of one True broadcast)."""
    if out.size == 0:
        return
    backward, log = op.endswith("backward"), op.startswith("log")
    masked = scale != 1.0 or where is not None
    a = unaliased(a, out, stream)
    arrays = (a, unaliased(b, out, stream), out) if backward else (a, out)
    if masked:
        w = where if where is not None else _all_true(out.shape)
        arrays = (*arrays[:-1], w, arrays[-1])
    dtype, tpb = out.dtype.name, settings.threads
    direction = "backward" if backward else "forward"
    compute = np.dtype(format_of(dtype).compute)
    c = compute.type(scale)
    mode, groups = row_views(arrays, axis)
    for views in groups:
        if masked:  # (a[, b], w, out) -> kernel arguments (a, b, w, out) and the scale
            views = views if backward else (views[0], *views)
            run_masked(mode, views, c, direction, dtype, tpb, stream, log)
            continue
        views = views if backward else (views[0], *views)  # the kernels take (a, b, out): x, x, out
        outer, n, inner = views[0].shape
        rows = outer * inner
        if mode == "cols":
            kernel = compiled(f"cols_{direction}", dtype, tpb)
            launch(kernel, blocks(rows), tpb, stream, (*views, log))
            continue
        group = group_size(n)
        chunks = 1
        if group == tpb and n >= settings.split_min and rows < max_blocks():
            chunks = min(tpb, -(-max_blocks() // rows), -(-n // (tpb * settings.per_thread)))
        if chunks < 2:
            kernel = compiled(f"rows_{direction}", dtype, tpb)
            launch(kernel, blocks(rows, tpb // group), tpb, stream, (*views, group, log))
            continue
        grid = min(rows * chunks, max_blocks())
        # the partial sums, and (forward) the partial maxima, of each row's chunks
        work = _numba_empty((1 if backward else 2, rows, chunks), compute, "C", stream)
        work = view(work, work.shape, work.strides)
        partial = compiled(f"split_{direction}_partial", dtype, tpb)
        finish = compiled(f"split_{direction}_finish", dtype, tpb)
        launch(partial, grid, tpb, stream, (*views, work, chunks, log))
        launch(finish, grid, tpb, stream, (*views, work, chunks, log))


def run_masked(mode: str, views: tuple, c, direction: str, dtype: str, tpb: int, stream, log: bool) -> None:
    """One group of views (a, b, w, out) through the masked kernels (see run)."""
    backward = direction == "backward"
    outer, n, inner = views[0].shape
    rows = outer * inner
    if mode == "cols":
        launch(compiled(f"cols_{direction}_masked", dtype, tpb), blocks(rows), tpb, stream, (*views, c, log))
        return
    group = group_size(n)
    chunks = 1
    if group == tpb and n >= settings.split_min and rows < max_blocks():
        chunks = min(tpb, -(-max_blocks() // rows), -(-n // (tpb * settings.per_thread)))
    if chunks < 2:
        kernel = compiled(f"rows_{direction}_masked", dtype, tpb)
        launch(kernel, blocks(rows, tpb // group), tpb, stream, (*views, group, c, log))
        return
    grid = min(rows * chunks, max_blocks())
    work = _numba_empty((1 if backward else 2, rows, chunks), np.dtype(format_of(dtype).compute), "C", stream)
    work = view(work, work.shape, work.strides)
    partial = compiled(f"split_{direction}_partial_masked", dtype, tpb)
    finish = compiled(f"split_{direction}_finish_masked", dtype, tpb)
    launch(partial, grid, tpb, stream, (*views, work, chunks, c, log))
    launch(finish, grid, tpb, stream, (*views, work, chunks, c, log))


_TRUE: list = []


def _all_true(shape: tuple[int, ...]) -> DArray:
    """One True on the device, broadcast to ``shape`` (the mask of a scale alone)."""
    if not _TRUE:
        from numba import cuda

        d = cuda.to_device(np.ones(1, np.bool_))
        _TRUE.append(as_device(d, "where", "softmax", kind="bool"))
    return broadcast(_TRUE[0], shape)


def broadcast(w: DArray, shape: tuple[int, ...]) -> DArray:
    """``w`` as a view of ``shape`` with zero strides (numpy's broadcasting rules)."""
    if len(w.shape) > len(shape) or any(m != 1 and m != n for m, n in zip(w.shape[::-1], shape[::-1])):
        raise ValueError(f"where has shape {w.shape}, which does not broadcast to {shape}")
    pad = len(shape) - len(w.shape)
    strides = [0] * pad + [0 if m == 1 else s for m, s in zip(w.shape, w.strides)]
    return DArray(w.obj, w.lib, w.ptr, shape, strides, w.dtype, True, w.stream)


def _scale(scale: object) -> float:
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    c = float(scale)
    if not math.isfinite(c):
        raise ValueError(f"scale must be finite, got {c}")
    return c


# --- public functions -----------------------------------------------------------------


def apply(op: str, func: str, a, b, axis, out, stream, inplace: bool, scale=1.0, where=None):
    """The public function ``func``: its arguments checked, ``op`` run into ``out``, a new
    array or (``inplace``) the first argument, which is returned. ``b`` is None for the
    forwards (a = x), the saved output y for the backwards (a = grad)."""
    first = "x" if b is None else "grad"
    a = as_device(a, first, func, write=inplace)
    if b is not None:
        b = as_device(b, "y", func)
        same_layout(b, "y", a, first)
    ax = axis_index(axis, a.ndim)
    c = _scale(scale)
    if where is not None:
        where = broadcast(as_device(where, "where", func, kind="bool"), a.shape)
    check_stream(stream)
    if inplace:
        out = a
    elif out is not None:
        out = as_device(out, "out", func, write=True)
        same_layout(out, "out", a, first)
    s = resolve_stream(stream, a)
    if out is None:
        out = empty_like(a, s)
    run(op, a, b, out, ax, s, c, where)
    return out.obj


def make_functions(op: str, docs: tuple[str, str, str, str]) -> tuple[Callable, ...]:
    """op, op_, op_backward, op_backward_ for op "softmax" or "log_softmax", with ``docs``."""
    back = op + "_backward"

    def forward(x, axis: int = -1, *, scale: float = 1.0, where=None, out=None, stream=None):
        return apply(op, op, x, None, axis, out, stream, False, scale, where)

    def forward_(x, axis: int = -1, *, scale: float = 1.0, where=None, stream=None):
        return apply(op, op + "_", x, None, axis, None, stream, True, scale, where)

    def backward(grad, y, axis: int = -1, *, scale: float = 1.0, where=None, out=None, stream=None):
        return apply(back, back, grad, y, axis, out, stream, False, scale, where)

    def backward_(grad, y, axis: int = -1, *, scale: float = 1.0, where=None, stream=None):
        return apply(back, back + "_", grad, y, axis, None, stream, True, scale, where)

    functions = (forward, forward_, backward, backward_)
    for function, name, doc in zip(functions, (op, op + "_", back, back + "_"), docs):
        function.__name__ = function.__qualname__ = name
        function.__doc__ = doc
    return functions


softmax, softmax_, softmax_backward, softmax_backward_ = make_functions(
    "softmax",
    (
        """softmax along ``axis``: y_i = e^(x_i - m) / sum_j e^(x_j - m), m = max_j x_j (GPU).

    New array of the caller's library, or written into ``out``. NaN or +inf in a row,
    or a row of only -inf, gives a NaN row (as PyTorch).
    """,
        "softmax along ``axis`` in place: overwrites x and returns it (GPU).",
        "Gradient of softmax: y * (grad - sum(grad * y)) along ``axis``; y is softmax's output (GPU).",
        "Gradient of softmax in place: overwrites grad with y * (grad - sum(grad * y)) (GPU).",
    ),
)
log_softmax, log_softmax_, log_softmax_backward, log_softmax_backward_ = make_functions(
    "log_softmax",
    (
        "log_softmax along ``axis``: y_i = (x_i - m) - log(sum_j e^(x_j - m)) (GPU).",
        "log_softmax along ``axis`` in place: overwrites x and returns it (GPU).",
        "Gradient of log_softmax: grad - e^y * sum(grad) along ``axis``; y is log_softmax's output (GPU).",
        "Gradient of log_softmax in place: overwrites grad with grad - e^y * sum(grad) (GPU).",
    ),
)
