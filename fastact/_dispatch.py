"""Pick and call the right compiled kernel for already-validated arrays.

Contiguous arrays of one memory order go to the 1-d kernels through flat views.
Anything else is reduced, without copying, to the fewest dimensions that cover
every operand's strides (axes sorted by the output's strides, size-1 axes dropped,
mergeable neighbours merged) and runs through the 2-d strided kernels.
Small arrays run serially: a parallel launch costs more than it saves below
:data:`PARALLEL_THRESHOLD` elements.
"""

from __future__ import annotations

import numpy as np

from ._kernels import KernelSet

# Below this many elements the serial kernel wins (measured with `python -m fastact
# bench --crossover`: a parallel launch costs ~1-2 us on 2 cores).
PARALLEL_THRESHOLD = 1 << 15


def _overlaps(a: np.ndarray, out: np.ndarray) -> bool:
    """True when ``out`` overlaps ``a`` other than element for element."""
    if a is out or not np.may_share_memory(a, out):
        return False
    same_start = a.__array_interface__["data"][0] == out.__array_interface__["data"][0]
    return not (same_start and a.strides == out.strides)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1) if a.flags.c_contiguous else a.T.reshape(-1)


def _same_order(arrays: tuple[np.ndarray, ...]) -> bool:
    if all(a.flags.c_contiguous for a in arrays):
        return True
    return all(a.flags.f_contiguous for a in arrays)


def _collapse(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Views of ``arrays`` with the fewest dimensions their strides allow (>= 2)."""
    shape = arrays[0].shape
    keep = [i for i, n in enumerate(shape) if n != 1]
    out = arrays[-1]
    order = sorted(keep, key=lambda i: -abs(out.strides[i]))
    shape = [shape[i] for i in order]
    strides = [[a.strides[i] for i in order] for a in arrays]
    i = len(shape) - 1
    while i > 0:
        if all(s[i - 1] == s[i] * shape[i] for s in strides):
            shape[i - 1] *= shape[i]
            del shape[i]
            for s in strides:
                s[i - 1] = s[i]
                del s[i]
        i -= 1
    while len(shape) < 2:
        shape.insert(0, 1)
        for s in strides:
            s.insert(0, 0)
    return tuple(
        np.lib.stride_tricks.as_strided(a, shape=shape, strides=s, writeable=a is out)
        for a, s in zip(arrays, strides)
    )


def run(kernels: KernelSet, inputs: tuple[np.ndarray, ...], out: np.ndarray, params: tuple) -> np.ndarray:
    """out[...] = f(*inputs, *params) elementwise; returns ``out``."""
    n = out.size
    if n == 0:
        return out
    inputs = tuple(a.copy() if _overlaps(a, out) else a for a in inputs)
    arrays = (*inputs, out)
    if _same_order(arrays):
        kernel = kernels.parallel if n >= PARALLEL_THRESHOLD else kernels.serial
        kernel(*(_flat(a) for a in arrays), *params)
        return out
    views = _collapse(arrays)
    kernel = kernels.parallel_2d if n >= PARALLEL_THRESHOLD else kernels.serial_2d
    if views[0].ndim == 2:
        kernel(*views, *params)
    else:
        for index in np.ndindex(views[0].shape[:-2]):
            kernel(*(v[index] for v in views), *params)
    return out
