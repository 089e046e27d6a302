"""softmax / log_softmax along any axis and their backwards, for CUDA arrays.

Same API, formulas and edge rows as :func:`fastact.softmax` (see :mod:`fastact._softmax`), plus
``stream=``::

    softmax(x, axis=-1, *, out=None, stream=None)
    softmax_(x, axis=-1, *, stream=None)
    softmax_backward(grad, y, axis=-1, *, out=None, stream=None)
    softmax_backward_(grad, y, axis=-1, *, stream=None)

and the same four for ``log_softmax``. Any strides: arrays are reduced to 3-d views
(outer, n, inner) without copying (axes that cannot be merged are looped over) and
run through the ``rows``, ``split`` or ``cols`` kernels of
:mod:`fastact.cuda._softmax_kernels`.
"""

from __future__ import annotations

import functools
import numbers
import operator

import numpy as np

from .._layout import pad_axes
from .._validate import same_layout
from . import _softmax_kernels as sk
from ._arrays import DArray, _numba_empty, as_device, check_stream, empty_like, resolve_stream, view
from ._kernels import builder, collapse, unaliased
from ._launch import blocks, compile_kernel, launch, max_blocks, settings

try:
    from numpy.lib.array_utils import normalize_axis_index
except ImportError:  # numpy < 2.0
    from numpy.core.multiarray import normalize_axis_index


def axis_index(axis: object, ndim: int) -> int:
    """``axis`` normalised to [0, ndim); a 0-d array has the one axis 0 (or -1)."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    return normalize_axis_index(operator.index(axis), max(ndim, 1), "axis")


_KIND = {"a": "{t}[:, :, :]", "w": "{t}[:, ::1]", "i": "int64", "b": "boolean"}


@functools.cache
def compiled(name: str, dtype: str, threads: int):
    """The kernel ``name`` of :data:`~fastact.cuda._softmax_kernels.KERNELS` for ``dtype``."""
    factory, kinds = sk.KERNELS[name]
    np_type = np.dtype(dtype).type
    pyfunc = builder(dtype).rebind(factory(threads, np_type))
    signature = f"void({', '.join(_KIND[k].format(t=dtype) for k in kinds)})"
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


def group_size(n: int) -> int:
    """Threads per row: a power of two, about n / per_thread, at most a block."""
    want = -(-n // settings.per_thread)
    return min(settings.threads, 1 << max(0, (want - 1).bit_length()))


def run(op: str, a: DArray, b: DArray | None, out: DArray, axis: int, stream) -> None:
    """out = op(a[, b]) along ``axis``; op is "forward" or "backward", log or not."""
    if out.size == 0:
        return
    backward, log = op.endswith("backward"), op.startswith("log")
    a = unaliased(a, out, stream)
    arrays = (a, unaliased(b, out, stream), out) if backward else (a, out)
    dtype, tpb = out.dtype.name, settings.threads
    direction = "backward" if backward else "forward"
    mode, groups = row_views(arrays, axis)
    for views in groups:
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
        work = [_numba_empty((rows, chunks), out.dtype, "C", stream) for _ in range(1 if backward else 2)]
        work = tuple(view(w, (rows, chunks), w.strides) for w in work)
        partial = compiled(f"split_{direction}_partial", dtype, tpb)
        finish = compiled(f"split_{direction}_finish", dtype, tpb)
        if backward:
            launch(partial, grid, tpb, stream, (*views[:2], *work, chunks, log))
        else:
            launch(partial, grid, tpb, stream, (views[0], *work, chunks))
        launch(finish, grid, tpb, stream, (*views, *work, chunks, log))


# --- public functions -----------------------------------------------------------------


def _forward(op: str, x, axis, out, stream, func: str):
    x = as_device(x, "x", func)
    ax = axis_index(axis, x.ndim)
    check_stream(stream)
    if out is not None:
        out = as_device(out, "out", func, write=True)
        same_layout(out, "out", x, "x")
    s = resolve_stream(stream, x)
    if out is None:
        out = empty_like(x, s)
    run(op, x, None, out, ax, s)
    return out.obj


def _forward_(op: str, x, axis, stream, func: str):
    x = as_device(x, "x", func, write=True)
    ax = axis_index(axis, x.ndim)
    check_stream(stream)
    run(op, x, None, x, ax, resolve_stream(stream, x))
    return x.obj


def _backward(op: str, grad, y, axis, out, stream, func: str):
    grad = as_device(grad, "grad", func)
    y = as_device(y, "y", func)
    same_layout(y, "y", grad, "grad")
    ax = axis_index(axis, grad.ndim)
    check_stream(stream)
    if out is not None:
        out = as_device(out, "out", func, write=True)
        same_layout(out, "out", grad, "grad")
    s = resolve_stream(stream, grad)
    if out is None:
        out = empty_like(grad, s)
    run(op, grad, y, out, ax, s)
    return out.obj


def _backward_(op: str, grad, y, axis, stream, func: str):
    grad = as_device(grad, "grad", func, write=True)
    y = as_device(y, "y", func)
    same_layout(y, "y", grad, "grad")
    ax = axis_index(axis, grad.ndim)
    check_stream(stream)
    run(op, grad, y, grad, ax, resolve_stream(stream, grad))
    return grad.obj


def softmax(x, axis: int = -1, *, out=None, stream=None):
    """softmax along ``axis``: y_i = e^(x_i - m) / sum_j e^(x_j - m), m = max_j x_j (GPU).

    New array of the caller's library, or written into ``out``. NaN or +inf in a row,
    or a row of only -inf, gives a NaN row (as PyTorch).
    """
    return _forward("softmax", x, axis, out, stream, "softmax")


def softmax_(x, axis: int = -1, *, stream=None):
    """softmax along ``axis`` in place: overwrites x and returns it (GPU)."""
    return _forward_("softmax", x, axis, stream, "softmax_")


def softmax_backward(grad, y, axis: int = -1, *, out=None, stream=None):
    """Gradient of softmax: y * (grad - sum(grad * y)) along ``axis``; y is softmax's output (GPU)."""
    return _backward("softmax_backward", grad, y, axis, out, stream, "softmax_backward")


def softmax_backward_(grad, y, axis: int = -1, *, stream=None):
    """Gradient of softmax in place: overwrites grad with y * (grad - sum(grad * y)) (GPU)."""
    return _backward_("softmax_backward", grad, y, axis, stream, "softmax_backward_")


def log_softmax(x, axis: int = -1, *, out=None, stream=None):
    """log_softmax along ``axis``: y_i = (x_i - m) - log(sum_j e^(x_j - m)) (GPU)."""
    return _forward("log_softmax", x, axis, out, stream, "log_softmax")


def log_softmax_(x, axis: int = -1, *, stream=None):
    """log_softmax along ``axis`` in place: overwrites x and returns it (GPU)."""
    return _forward_("log_softmax", x, axis, stream, "log_softmax_")


def log_softmax_backward(grad, y, axis: int = -1, *, out=None, stream=None):
    """Gradient of log_softmax: grad - e^y * sum(grad) along ``axis``; y is log_softmax's output (GPU)."""
    return _backward("log_softmax_backward", grad, y, axis, out, stream, "log_softmax_backward")


def log_softmax_backward_(grad, y, axis: int = -1, *, stream=None):
    """Gradient of log_softmax in place: overwrites grad with grad - e^y * sum(grad) (GPU)."""
    return _backward_("log_softmax_backward", grad, y, axis, stream, "log_softmax_backward_")
