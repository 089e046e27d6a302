"""Pick and call the right compiled kernel for already-validated arrays.

Contiguous arrays of one memory order go to the 1-d kernels through flat views.
Anything else is reduced, without copying, to the fewest dimensions that cover
every operand's strides (axes sorted by the output's strides, size-1 axes dropped,
mergeable neighbours merged) and runs through the 2-d kernels: the rows ones (SIMD
loops over each row) where every operand's rows are contiguous (``x[:, :k]``,
``x[::2]`` of a matrix), the strided ones otherwise (which copy a few KiB at a time
into a buffer and run the same SIMD loop over it).
Small arrays run serially: a parallel launch costs more than it saves below
:data:`fastact._config.PARALLEL_THRESHOLD` elements. In place (out is the first input), contiguous arrays
run the kernels that read and write one array, which vectorize where the two-array ones
would fall back to their scalar loop. Large ones run serially too where the threading
layer forbids a parallel launch now (see :func:`fastact._threading.gate`).
"""

from __future__ import annotations

import functools

import numpy as np

from . import _config as config
from ._half import storage_of
from ._kernels import KernelSet
from ._layout import aliasing, collapse, flat, unaliased
from ._threading import gate


def _parallel(parallel, serial):
    """``parallel``, or ``serial`` where the threading layer forbids a parallel launch now."""
    now = gate()
    if now is None:
        return parallel
    if now is False:
        return serial
    return functools.partial(_one_at_a_time, now, parallel, serial)


def _one_at_a_time(lock, parallel, serial, *args) -> None:
    """The workqueue layer aborts on concurrent launches: other threads run ``serial``."""
    if not lock.acquire(blocking=False):
        serial(*args)
        return
    try:
        parallel(*args)
    finally:
        lock.release()


def _one_order(arrays: tuple[np.ndarray, ...]) -> bool:
    """Whether all ``arrays`` are C-contiguous, or all F-contiguous."""
    if len(arrays) == 1:
        return arrays[0].flags.forc
    for a in arrays:
        if not a.flags.c_contiguous:
            break
    else:
        return True
    return all(a.flags.f_contiguous for a in arrays)


def run(
    kernels: KernelSet, inputs: tuple[np.ndarray, ...], out: np.ndarray, params: tuple, fresh: bool = False
) -> np.ndarray:
    """out[...] = f(*inputs, *params) elementwise; returns ``out``.

    ``fresh``: out was just allocated, so no input can overlap it. 16-bit float arrays
    (one dtype: the front end checks) run the kernels of their storage format on uint16
    views of their bits.
    """
    if out.size == 0:
        return out
    if out.dtype.itemsize == 2:
        storage = storage_of(out.dtype)
        view = out.view(storage.view)
        inputs = tuple(view if a is out else a.view(storage.view) for a in inputs)
        _run(kernels.stored(storage), inputs, view, params, fresh)
    else:
        _run(kernels, inputs, out, params, fresh)
    return out


def _run(kernels: KernelSet, inputs: tuple[np.ndarray, ...], out: np.ndarray, params: tuple, fresh: bool):
    n = out.size
    # in_place: out is the first input, element for element (the common in-place call);
    # the kernels for it take one array fewer
    first = inputs[0]
    if first is out:
        in_place = True
    elif fresh:
        in_place = False
    else:
        first, in_place = aliasing(first, out)
    rest = () if len(inputs) == 1 else (inputs[1] if fresh else unaliased(inputs[1], out),)
    operands = (*rest, out) if in_place else (first, *rest, out)
    if _one_order(operands):
        if in_place:  # the kernels that read and write out, given the other inputs
            serial, parallel = kernels.serial_in_place, kernels.parallel_in_place
        else:
            serial, parallel = kernels.serial, kernels.parallel
        kernel = serial if n < config.PARALLEL_THRESHOLD else _parallel(parallel, serial)
        kernel(*(operands if out.ndim == 1 else map(flat, operands)), *params)
        return
    views = collapse((first, *rest, out))
    if all(v.strides[-1] == v.itemsize for v in views):  # contiguous rows: the SIMD kernels
        if in_place:
            serial, parallel = kernels.serial_rows_in_place, kernels.parallel_rows_in_place
            views = views[1:]
        else:
            serial, parallel = kernels.serial_rows, kernels.parallel_rows
    else:
        serial, parallel = kernels.serial_2d, kernels.parallel_2d
    kernel = serial if n < config.PARALLEL_THRESHOLD else _parallel(parallel, serial)
    if views[0].ndim == 2:
        kernel(*views, *params)
    else:
        for index in np.ndindex(views[0].shape[:-2]):
            kernel(*(v[index] for v in views), *params)
