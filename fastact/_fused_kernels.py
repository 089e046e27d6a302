"""Compiled kernels of the fused ops, composed from the table's scalars (no math of their own).

Gated units (:data:`fastact.definitions.GATED_UNITS`), for an activation entry ``f``::

    forward   y = f(a, *p) * b
    backward  y = f(a, *p); da = backward_f(g * b, a or y, *p); db = g * y

and bias + activation over the last axis, for every entry::

    forward   y = f(x + c, *p)                              (c: the bias, broadcast over rows)
    backward  dx = backward_f(g, x + c or y, *p); dbias = column sums of dx

The two forwards are binary scalars, so their kernels are :func:`fastact._kernels._kernel_set`'s
(every flavour: flat, rows, strided, in place, serial and parallel; the bias enters as a
zero-stride view). The backwards have two outputs (gated) or a reduction (bias), and their
loops are here, written from source like ``_kernels``' (:func:`fastact._kernels.generated`),
over its layouts (:class:`fastact._kernels.Layout`: blocks or rows, prefetch, full-width
vectors).

bias_act's dbias is deterministic: the rows are split into chunks whose number depends only
on the shape (:func:`chunks`), each chunk sums its rows in order into a float64 row of
``partial`` (a parallel task is one chunk over BIAS_GRAD_COLUMN_BYTES of columns, so that few
long rows still spread over the threads; a column's sum is the same however the columns are
split), and the host adds the chunks' rows in chunk order (:func:`combine`). No result
depends on the thread count.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import njit, prange

from . import _config as config
from ._config import BIAS_GRAD_COLUMN_BYTES
from ._half import NATIVE, Storage
from ._intrinsics import full_width_vectors, params_like, row_view
from ._kernels import (
    FLAT,
    FLAT_BLOCK_BYTES,
    ROWS,
    KernelSet,
    _jit,
    _kernel_set,
    _prefetch_ahead,
    _prefetch_row,
    _rows_ahead,
    generated,
    pin_uuid,
)
from .definitions import ACTIVATIONS

_scalar = njit(forceinline=True, fastmath={"contract"}, error_model="numpy")


def _named(function, name: str):
    """``function`` under ``name``: its kernels' cache files and uuid are named after it
    (closures of one factory would otherwise share both)."""
    function.__name__ = function.__qualname__ = name
    return _scalar(function)


# --- scalars, from the entries' ---------------------------------------------------------


@cache
def gated_scalars(kname: str):
    """(forward(a, b, *p), backward(g, a, b, *p) -> (da, db)) of the unit gating with entry ``kname``."""
    entry = ACTIVATIONS[kname]
    f, backward_f = entry.forward, entry.backward
    from_input = entry.saves == "input"

    def forward(a, b, *p):
        return f(a, *p) * b

    def backward(g, a, b, *p):
        y = f(a, *p)
        return backward_f(g * b, a if from_input else y, *p), g * y

    return _named(forward, f"_gated_{kname}"), _named(backward, f"_gated_{kname}_backward")


@cache
def bias_scalars(kname: str):
    """(forward(x, c, *p), backward(g, saved, c, *p)) of bias + entry ``kname``; ``saved`` is
    x (before the bias) where the entry saves its input, y where it saves its output."""
    entry = ACTIVATIONS[kname]
    f, backward_f = entry.forward, entry.backward
    from_input = entry.saves == "input"

    def forward(x, c, *p):
        return f(x + c, *p)

    def backward(g, s, c, *p):
        return backward_f(g, s + c if from_input else s, *p)

    return _named(forward, f"_bias_{kname}"), _named(backward, f"_bias_{kname}_backward")


# --- gated backward: three inputs, two outputs ----------------------------------------------


# the names the loops' templates read as globals (the layouts' among them)
_LOOP_GLOBALS = (
    FLAT_BLOCK_BYTES,
    full_width_vectors,
    params_like,
    row_view,
    _prefetch_ahead,
    _prefetch_row,
    _rows_ahead,
)

_GATED = """\
params = params_like({out}, args)
{head}{views}    for i in range(gs.shape[0]):
        d_a, d_b = scalar(load(gs[i]), load(as_[i]), load(bs[i]), *params)
        {outs}[i], {outs2}[i] = store(d_a), store(d_b)
"""


def _gated_kernel(scalar, parallel, layout, in_place, storage=NATIVE):
    """The gated backward over ``layout``'s tasks (see :class:`fastact._kernels.Layout`):
    ``k(g, a, b, da, db, *params)``; in place ``k(g, a, b, *params)``, da over ``a`` and db
    over ``b``: one pointer per array, so LLVM's overlap checks pass."""
    arrays = ("g", "a", "b") if in_place else ("g", "a", "b", "da", "db")
    body = _GATED.format(
        out="a" if in_place else "da",
        head=layout.head("g", ("g", "a", "b")),
        views=layout.views(("gs", "as_", "bs", "das", "dbs")[: len(arrays)], arrays),
        outs="as_" if in_place else "das",
        outs2="bs" if in_place else "dbs",
    )
    name = f"gated_{layout.name}" + ("_in_place" if in_place else "")
    closure = {"scalar": scalar, "load": storage.load, "store": storage.store}
    return _jit(generated(name, ", ".join(arrays), body, globals(), closure), scalar, parallel, storage)


def _gated_strided(scalar, parallel, storage=NATIVE):
    """Any 2-d strides (in place too: da may be a, db b, element for element). A scalar
    loop: views without contiguous rows are rare here, and it allocates nothing."""

    load, store = storage.load, storage.store

    def gated_strided(g, a, b, da, db, *args):
        params = params_like(da, args)
        for r in prange(g.shape[0]):
            for i in range(g.shape[1]):
                d_a, d_b = scalar(load(g[r, i]), load(a[r, i]), load(b[r, i]), *params)
                da[r, i], db[r, i] = store(d_a), store(d_b)

    return _jit(gated_strided, scalar, parallel, storage)


# --- bias_act backward: dx and the partial column sums of dbias ---------------------------


@njit(forceinline=True, nogil=True)
def _task(t, g, chunks):
    """Task ``t``'s rows [lo, hi) (chunk t // columns blocks) and columns [j0, j1)."""
    width = BIAS_GRAD_COLUMN_BYTES // g.itemsize
    blocks = (g.shape[1] + width - 1) // width
    k, j = t // blocks, t % blocks
    rows = g.shape[0]
    return k, k * rows // chunks, (k + 1) * rows // chunks, j * width, min(g.shape[1], (j + 1) * width)


@njit(forceinline=True, nogil=True)
def _tasks(g, chunks):
    width = BIAS_GRAD_COLUMN_BYTES // g.itemsize
    return chunks * ((g.shape[1] + width - 1) // width)


_BIAS_ROWS = """\
params = params_like({out}, args)
chunks = partial.shape[0]
ahead = _rows_ahead(g)
for t in prange(_tasks(g, chunks)):
    full_width_vectors()
    k, lo, hi, j0, j1 = _task(t, g, chunks)
    acc, cs = row_view(partial, k)[j0:j1], c[j0:j1]
    for r in range(lo, hi):
        _prefetch_row(g, r + ahead)
        _prefetch_row(s, r + ahead)
        {views}
        for i in range(gs.shape[0]):
            d = scalar(load(gs[i]), load(ss[i]), load(cs[i]), *params)
            {dx}[i] = store(d)
            acc[i] += d
"""


def _bias_rows_kernel(scalar, parallel, in_place, storage=NATIVE):
    """dx and dbias's partial sums over arrays with contiguous rows: ``k(g, s, c, dx,
    partial, *params)``; in place, dx over ``g``, ``k(s, c, g, partial, *params)``."""
    views = {"gs": "g", "ss": "s"} if in_place else {"gs": "g", "ss": "s", "ds": "dx"}
    body = _BIAS_ROWS.format(
        out="g" if in_place else "dx",
        views=f"{', '.join(views)} = {', '.join(f'row_view({a}, r)[j0:j1]' for a in views.values())}",
        dx="gs" if in_place else "ds",
    )
    name = "bias_rows_in_place" if in_place else "bias_rows"
    closure = {"scalar": scalar, "load": storage.load, "store": storage.store}
    arrays = "s, c, g, partial" if in_place else "g, s, c, dx, partial"
    return _jit(generated(name, arrays, body, globals(), closure), scalar, parallel, storage)


def _bias_strided(scalar, parallel, storage=NATIVE):
    """Any 2-d strides (in place too: dx may be g). A scalar loop, allocating nothing."""

    load, store = storage.load, storage.store

    def bias_strided(g, s, c, dx, partial, *args):
        params = params_like(dx, args)
        chunks = partial.shape[0]
        for t in prange(_tasks(g, chunks)):
            k, lo, hi, j0, j1 = _task(t, g, chunks)
            for r in range(lo, hi):
                for i in range(j0, j1):
                    d = scalar(load(g[r, i]), load(s[r, i]), load(c[i]), *params)
                    dx[r, i] = store(d)
                    partial[k, i] += d

    return _jit(bias_strided, scalar, parallel, storage)


def chunks(rows: int) -> int:
    """How many chunks bias_act's backward splits ``rows`` rows into: the shape's alone."""
    return max(1, min(config.BIAS_GRAD_CHUNKS, rows // config.BIAS_GRAD_ROWS))


# --- kernel sets ---------------------------------------------------------------------------


class Pair:
    """A serial and a parallel build of one loop, ``factory(scalar, parallel, **options,
    storage=storage)``."""

    __slots__ = ("parallel", "serial")

    def __init__(self, factory, scalar, storage: Storage, options: dict) -> None:
        self.serial = factory(scalar, False, **options, storage=storage)
        self.parallel = factory(scalar, True, **options, storage=storage)


def _pairs(scalar, storage: Storage, loops: dict) -> dict[str, Pair]:
    """{key: the :class:`Pair` of ``scalar`` for each key: (factory, options) of ``loops``}."""
    for function in (scalar, storage.load, storage.store):
        pin_uuid(function)
    return {key: Pair(factory, scalar, storage, options) for key, (factory, options) in loops.items()}


_GATED_LOOPS = {
    "flat": (_gated_kernel, {"layout": FLAT, "in_place": False}),
    "flat_in_place": (_gated_kernel, {"layout": FLAT, "in_place": True}),
    "rows": (_gated_kernel, {"layout": ROWS, "in_place": False}),
    "rows_in_place": (_gated_kernel, {"layout": ROWS, "in_place": True}),
    "strided": (_gated_strided, {}),
}
_BIAS_LOOPS = {
    "rows": (_bias_rows_kernel, {"in_place": False}),
    "rows_in_place": (_bias_rows_kernel, {"in_place": True}),
    "strided": (_bias_strided, {}),
}


def _forward_kernels(scalar, kname: str) -> KernelSet:
    return _kernel_set(scalar, 2, ACTIVATIONS[kname].light_forward, True)


@cache
def gated_forward_kernels(kname: str) -> KernelSet:
    """The elementwise flavours of ``f(a) * b`` (run by :func:`fastact._dispatch.run`)."""
    return _forward_kernels(gated_scalars(kname)[0], kname)


@cache
def bias_forward_kernels(kname: str) -> KernelSet:
    """The elementwise flavours of ``f(x + c)`` (``c`` a zero-stride view of the bias)."""
    return _forward_kernels(bias_scalars(kname)[0], kname)


@cache
def gated_backward_kernels(kname: str, storage: Storage = NATIVE) -> dict[str, Pair]:
    """The backward's loops (the keys of :data:`_GATED_LOOPS`), for arrays stored as ``storage``."""
    return _pairs(gated_scalars(kname)[1], storage, _GATED_LOOPS)


@cache
def bias_backward_kernels(kname: str, storage: Storage = NATIVE) -> dict[str, Pair]:
    """The loops of :data:`_BIAS_LOOPS`: dx and dbias's partial sums (of the float32 values
    before they are rounded into a 16-bit dx), for arrays stored as ``storage``."""
    return _pairs(bias_scalars(kname)[1], storage, _BIAS_LOOPS)


def combine(partial: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """dbias from the chunks' partial sums, added in chunk order."""
    total = partial[0].copy()
    for k in range(1, partial.shape[0]):
        total += partial[k]
    return total.astype(dtype)
