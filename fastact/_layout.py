"""Stride arithmetic shared by every backend: fewest dimensions, flat views, aliasing.

Pure numpy (and plain shapes/strides for the CUDA arrays): no kernel, no numba.
"""

from __future__ import annotations

import numpy as np

__all__ = ["aliasing", "collapse", "collapse_axes", "flat", "merge_axes", "overlap", "unaliased"]


def merge_axes(shape: list[int], strides: list[list[int]]) -> None:
    """Merge, in place, neighbouring axes (sorted by decreasing stride) that every array's
    strides allow: axis i-1 and i merge where stride[i-1] == stride[i] * shape[i]."""
    i = len(shape) - 1
    while i > 0:
        if all(s[i - 1] == s[i] * shape[i] for s in strides):
            shape[i - 1] *= shape[i]
            del shape[i]
            for s in strides:
                s[i - 1] = s[i]
                del s[i]
        i -= 1


def collapse_axes(
    shape: tuple[int, ...], strides: list[tuple[int, ...]], by: int
) -> tuple[list[int], list[list[int]]]:
    """(dims, strides per operand) with the fewest axes: size-1 axes dropped, the others
    sorted by operand ``by``'s decreasing |stride| and merged where every operand allows."""
    keep = [i for i, n in enumerate(shape) if n != 1]
    order = sorted(keep, key=lambda i: -abs(strides[by][i]))
    dims = [shape[i] for i in order]
    steps = [[s[i] for i in order] for s in strides]
    merge_axes(dims, steps)
    return dims, steps


def pad_axes(dims: list[int], strides: list[list[int]], ndim: int) -> None:
    """Prepend size-1 axes (stride 0) until there are ``ndim``."""
    while len(dims) < ndim:
        dims.insert(0, 1)
        for s in strides:
            s.insert(0, 0)


def collapse(arrays: tuple[np.ndarray, ...], outputs: tuple[int, ...] = ()) -> tuple[np.ndarray, ...]:
    """Views of ``arrays`` (one shape) with the fewest dimensions their strides allow
    (>= 2), axes in the order of the last array's (the output's) strides. The views of
    the last array and of the arrays at indices ``outputs`` are writeable."""
    out = arrays[-1]
    dims, steps = collapse_axes(out.shape, [a.strides for a in arrays], len(arrays) - 1)
    pad_axes(dims, steps, 2)
    return tuple(
        np.lib.stride_tricks.as_strided(a, shape=dims, strides=s, writeable=a is out or i in outputs)
        for i, (a, s) in enumerate(zip(arrays, steps))
    )


def flat(a: np.ndarray) -> np.ndarray:
    """A 1-d view of a C- or F-contiguous array, in memory order."""
    return a if a.ndim == 1 else a.ravel("K")  # a view: "K" is memory order


def aliasing(a: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, bool]:
    """(``a``, or a copy of it when ``out`` overlaps it other than element for element;
    whether ``a`` is ``out``'s elements, i.e. the call is in place).

    Writing ``out`` must not change inputs not yet read (numpy ufuncs do the same).
    """
    if a is out:
        return a, True
    if not np.may_share_memory(a, out):
        return a, False
    if a.strides == out.strides and a.__array_interface__["data"][0] == out.__array_interface__["data"][0]:
        return a, True
    return a.copy(), False


def overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` share an element (exactly where numpy can tell cheaply; a
    case too hard to decide counts as sharing)."""
    if not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 16))
    except Exception:  # numpy's TooHardError (numpy.exceptions from 1.25, numpy before)
        return True


def unaliased(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``a``, or a copy of it when ``out`` overlaps it other than element for element."""
    return aliasing(a, out)[0]
