"""Compiled elementwise kernels, built from the scalar functions of the table.

For each activation there are forward kernels ``k(x, out, *params)`` and backward
kernels ``k(grad, saved, out, *params)``, each serial or ``parallel=True``, for 1-d
contiguous arrays, 2-d strided ones and 2-d ones with contiguous rows (see :func:`_row`);
and 1-d and rows ones for ``out`` that is the first input, ``k(out, *params)`` /
``k(saved, out, *params)`` (see :func:`_unary_in_place`).
Kernels never validate; the public wrappers in :mod:`fastact._api` do, and pass the
parameters as Python floats, which each kernel rounds to its arrays' dtype once (see
:func:`_like`). Everything is compiled lazily, on first use of a signature, and cached on
disk.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from numba import njit, prange

from . import _numba_compat as compat
from ._config import (
    BLOCK_BYTES,
    CACHE_LINE,
    INTERLEAVE,
    NO_PREFETCH_BLOCK_BYTES,
    PREFETCH_AHEAD,
    STRIDED_CHUNK,
    STRIDED_TASK_CHUNKS,
)
from ._half import NATIVE, Storage
from ._intrinsics import full_width_vectors, params_like, prefetch, row_view, stored_whole
from ._platform import software_prefetch
from .definitions import ACTIVATIONS, Activation

# Fast-math flags that cannot change a result's NaN/inf behaviour: contraction into
# FMAs only. ("nnan"/"ninf" would let LLVM drop NaN checks; "reassoc" changes results.)
FASTMATH = {"contract"}


def _jit(kernel, scalar, parallel: bool, storage: Storage = NATIVE):
    """``njit`` a kernel under a name of its own, e.g. ``relu_unary_parallel``.

    numba names a function's cache files after its qualified name and keys the
    entries by its code and closure, not by its options. Under one shared name, the
    serial and parallel builds of a closure would share a cache entry (whichever
    compiled first would be loaded for both), and every activation would share one
    index file, which processes compiling at the same time can garble.
    """
    flavour = ("_parallel" if parallel else "") + ("" if storage is NATIVE else f"_{storage.name}")
    kernel.__qualname__ = f"{scalar.py_func.__name__.lstrip('_')}_{kernel.__name__}{flavour}"
    # error_model="numpy": x / 0 gives inf/NaN (parameters are checked before a call)
    # instead of a zero test on every division, which also blocks vectorization.
    jit = njit(parallel=parallel, cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
    return interleaved(jit(kernel))


def interleaved(dispatcher):
    """``dispatcher``, compiling with LLVM's vector interleave forced to INTERLEAVE: its cost
    model interleaves the math layer's long loop bodies once, and INTERLEAVE independent
    chains per iteration keep the out-of-order window busy (docs/TUNING.md)."""
    return compat.interleaved(dispatcher, INTERLEAVE)


# The 1-d kernels run in blocks of FLAT_BLOCK_BYTES and, where PREFETCH, prefetch each
# input PREFETCH_AHEAD bytes ahead of the block: on the Intel CPUs measured the hardware
# prefetcher did not run far enough ahead of a compute-bound loop (without the prefetch a
# 16M call took its in-cache compute time plus its memory time); on AMD Zen it does, and
# the prefetches slowed the in-place backwards (docs/TUNING.md). Fixed at compile time for
# the target CPU. A prefetch never faults, so the last blocks may prefetch past the end.
PREFETCH = software_prefetch()
FLAT_BLOCK_BYTES = BLOCK_BYTES if PREFETCH else NO_PREFETCH_BLOCK_BYTES


@njit(forceinline=True, nogil=True)
def _prefetch_ahead(a, lo):
    """Prefetch the block of ``a`` that starts PREFETCH_AHEAD bytes after element ``lo``
    (nothing where not PREFETCH)."""
    if PREFETCH:
        start = lo * a.itemsize + PREFETCH_AHEAD
        for offset in range(start, start + FLAT_BLOCK_BYTES, CACHE_LINE):
            prefetch(a, offset)


def _unary(scalar, parallel, storage=NATIVE):
    load, store = storage.load, storage.store

    def unary(x, out, *args):
        params = params_like(out, args)
        block = FLAT_BLOCK_BYTES // x.itemsize
        for k in prange((x.shape[0] + block - 1) // block):
            full_width_vectors()
            lo = k * block
            _prefetch_ahead(x, lo)
            xs, os = x[lo : lo + block], out[lo : lo + block]
            for i in range(xs.shape[0]):
                os[i] = store(scalar(load(xs[i]), *params))

    return _jit(unary, scalar, parallel, storage)


def _unary_in_place(scalar, parallel, storage=NATIVE):
    """The kernel for ``out`` that is ``x``, element for element.

    Given two pointers, LLVM guards its vector loop with a run-time overlap check, and
    ``out`` overlapping ``x`` sends it to the scalar loop (several times slower than out of
    place: docs/TUNING.md). With one array there is nothing to check. The
    parallel kernels need it as much: numba gives a prange body noalias arguments only
    where it takes no views of them, and the blocks are views. (The 2-d kernels are not
    helped this way: with a run-time inner stride and one array, LLVM does not vectorize
    at all.)
    """
    load, store = storage.load, storage.store

    def unary_in_place(out, *args):
        params = params_like(out, args)
        block = FLAT_BLOCK_BYTES // out.itemsize
        for k in prange((out.shape[0] + block - 1) // block):
            full_width_vectors()
            lo = k * block
            _prefetch_ahead(out, lo)
            os = out[lo : lo + block]
            for i in range(os.shape[0]):
                os[i] = stored_whole(store(scalar(load(os[i]), *params)))

    return _jit(unary_in_place, scalar, parallel, storage)


# The strided 2-d kernels of all but the light scalars (Activation.light) copy
# STRIDED_CHUNK elements at a time (in row-major order of the 2-d view, across rows) into a
# buffer, run the SIMD loop over it and copy it back: a loop over a run-time stride does
# not vectorize, and scalar transcendental math costs several times the copies. Each task
# allocates its buffers once (2 KiB of float64 each: in L1, and no allocation the size of
# the input) and works through STRIDED_TASK_CHUNKS consecutive chunks.


@njit(forceinline=True, nogil=True)
def _gather(a, buf, start, count):
    """buf[:count] = elements start .. start + count of 2-d ``a`` in row-major order."""
    cols = a.shape[1]
    r, c = start // cols, start % cols
    i = 0
    while i < count:
        m = min(cols - c, count - i)
        row = a[r]
        for j in range(m):
            buf[i + j] = row[np.uintp(c + j)]  # unsigned: no wraparound test per element
        i, r, c = i + m, r + 1, 0


@njit(forceinline=True, nogil=True)
def _scatter(buf, out, start, count):
    """The inverse of :func:`_gather`: out's elements start .. start + count = buf[:count]."""
    cols = out.shape[1]
    r, c = start // cols, start % cols
    i = 0
    while i < count:
        m = min(cols - c, count - i)
        row = out[r]
        for j in range(m):
            row[np.uintp(c + j)] = buf[i + j]
        i, r, c = i + m, r + 1, 0


def _unary_2d(scalar, parallel, light, storage=NATIVE):
    load, store = storage.load, storage.store
    if light:

        def unary_2d(x, out, *args):
            params = params_like(out, args)
            for i in prange(x.shape[0]):
                full_width_vectors()
                for j in range(x.shape[1]):
                    out[i, j] = store(scalar(load(x[i, j]), *params))

        return _jit(unary_2d, scalar, parallel, storage)

    def unary_2d(x, out, *args):
        params = params_like(out, args)
        n = x.shape[0] * x.shape[1]
        per_task = STRIDED_CHUNK * STRIDED_TASK_CHUNKS
        for t in prange((n + per_task - 1) // per_task):
            full_width_vectors()
            buf = np.empty(STRIDED_CHUNK, out.dtype)
            for start in range(t * per_task, min(n, (t + 1) * per_task), STRIDED_CHUNK):
                count = min(STRIDED_CHUNK, n - start)
                _gather(x, buf, start, count)
                for i in range(count):
                    buf[i] = store(scalar(load(buf[i]), *params))
                _scatter(buf, out, start, count)

    return _jit(unary_2d, scalar, parallel, storage)


def _binary(scalar, parallel, reads, storage=NATIVE):
    load, store = storage.load, storage.store
    prefetch_a, prefetch_b = reads  # a prefetch of an input the scalar ignores streams it for nothing

    def binary(a, b, out, *args):
        params = params_like(out, args)
        block = FLAT_BLOCK_BYTES // a.itemsize
        for k in prange((a.shape[0] + block - 1) // block):
            full_width_vectors()
            lo = k * block
            if prefetch_a:
                _prefetch_ahead(a, lo)
            if prefetch_b:
                _prefetch_ahead(b, lo)
            as_, bs, os = a[lo : lo + block], b[lo : lo + block], out[lo : lo + block]
            for i in range(as_.shape[0]):
                os[i] = store(scalar(load(as_[i]), load(bs[i]), *params))

    return _jit(binary, scalar, parallel, storage)


def _binary_in_place(scalar, parallel, reads, storage=NATIVE):
    load, store = storage.load, storage.store
    """The kernel for ``out`` that is ``a`` (grad): out[i] = f(out[i], b[i])."""
    prefetch_b = reads[1]

    def binary_in_place(b, out, *args):
        params = params_like(out, args)
        block = FLAT_BLOCK_BYTES // out.itemsize
        for k in prange((out.shape[0] + block - 1) // block):
            full_width_vectors()
            lo = k * block
            _prefetch_ahead(out, lo)  # read, or at least written: its lines come in either way
            if prefetch_b:
                _prefetch_ahead(b, lo)
            bs, os = b[lo : lo + block], out[lo : lo + block]
            for i in range(os.shape[0]):
                os[i] = stored_whole(store(scalar(load(os[i]), load(bs[i]), *params)))

    return _jit(binary_in_place, scalar, parallel, storage)


def _binary_2d(scalar, parallel, light, storage=NATIVE):
    load, store = storage.load, storage.store
    if light:

        def binary_2d(a, b, out, *args):
            params = params_like(out, args)
            for i in prange(a.shape[0]):
                full_width_vectors()
                for j in range(a.shape[1]):
                    out[i, j] = store(scalar(load(a[i, j]), load(b[i, j]), *params))

        return _jit(binary_2d, scalar, parallel, storage)

    def binary_2d(a, b, out, *args):
        params = params_like(out, args)
        n = a.shape[0] * a.shape[1]
        per_task = STRIDED_CHUNK * STRIDED_TASK_CHUNKS
        for t in prange((n + per_task - 1) // per_task):
            full_width_vectors()
            abuf, bbuf = np.empty(STRIDED_CHUNK, out.dtype), np.empty(STRIDED_CHUNK, out.dtype)
            for start in range(t * per_task, min(n, (t + 1) * per_task), STRIDED_CHUNK):
                count = min(STRIDED_CHUNK, n - start)
                _gather(a, abuf, start, count)
                _gather(b, bbuf, start, count)
                for i in range(count):
                    abuf[i] = store(scalar(load(abuf[i]), load(bbuf[i]), *params))
                _scatter(abuf, out, start, count)

    return _jit(binary_2d, scalar, parallel, storage)


@njit(forceinline=True, nogil=True)
def _rows_ahead(a):
    """How many rows ahead to prefetch: about PREFETCH_AHEAD bytes, at least one row."""
    return max(1, PREFETCH_AHEAD // max(1, a.shape[1] * a.itemsize))


@njit(forceinline=True, nogil=True)
def _prefetch_row(a, r):
    """Prefetch the first PREFETCH_AHEAD bytes of row ``r`` of ``a`` (if it has one)."""
    if r < a.shape[0]:
        start = r * a.strides[0]
        for offset in range(start, start + min(a.shape[1] * a.itemsize, PREFETCH_AHEAD), CACHE_LINE):
            prefetch(a, offset)


def _unary_rows(scalar, parallel, storage=NATIVE):
    """2-d kernels for arrays whose rows are contiguous (``x[:, :k]``, ``x[::2]``): a SIMD
    loop per row, the rows about PREFETCH_AHEAD bytes ahead prefetched (rows of a view
    sit apart, where the hardware prefetcher does not follow)."""
    load, store = storage.load, storage.store

    def unary_rows(x, out, *args):
        params = params_like(out, args)
        ahead = _rows_ahead(x)
        for r in prange(x.shape[0]):
            full_width_vectors()
            _prefetch_row(x, r + ahead)
            xs, os = row_view(x, r), row_view(out, r)
            for i in range(xs.shape[0]):
                os[i] = store(scalar(load(xs[i]), *params))

    return _jit(unary_rows, scalar, parallel, storage)


def _unary_rows_in_place(scalar, parallel, storage=NATIVE):
    load, store = storage.load, storage.store

    def unary_rows_in_place(out, *args):
        params = params_like(out, args)
        ahead = _rows_ahead(out)
        for r in prange(out.shape[0]):
            full_width_vectors()
            _prefetch_row(out, r + ahead)
            os = row_view(out, r)
            for i in range(os.shape[0]):
                os[i] = stored_whole(store(scalar(load(os[i]), *params)))

    return _jit(unary_rows_in_place, scalar, parallel, storage)


def _binary_rows(scalar, parallel, reads, storage=NATIVE):
    load, store = storage.load, storage.store
    prefetch_a, prefetch_b = reads

    def binary_rows(a, b, out, *args):
        params = params_like(out, args)
        ahead = _rows_ahead(a)
        for r in prange(a.shape[0]):
            full_width_vectors()
            if prefetch_a:
                _prefetch_row(a, r + ahead)
            if prefetch_b:
                _prefetch_row(b, r + ahead)
            as_, bs, os = row_view(a, r), row_view(b, r), row_view(out, r)
            for i in range(as_.shape[0]):
                os[i] = store(scalar(load(as_[i]), load(bs[i]), *params))

    return _jit(binary_rows, scalar, parallel, storage)


def _binary_rows_in_place(scalar, parallel, reads, storage=NATIVE):
    load, store = storage.load, storage.store
    prefetch_b = reads[1]

    def binary_rows_in_place(b, out, *args):
        params = params_like(out, args)
        ahead = _rows_ahead(out)
        for r in prange(out.shape[0]):
            full_width_vectors()
            _prefetch_row(out, r + ahead)
            if prefetch_b:
                _prefetch_row(b, r + ahead)
            bs, os = row_view(b, r), row_view(out, r)
            for i in range(os.shape[0]):
                os[i] = stored_whole(store(scalar(load(os[i]), load(bs[i]), *params)))

    return _jit(binary_rows_in_place, scalar, parallel, storage)


def _convert(function, parallel):
    """dst[i] = function(src[i]) over 1-d contiguous arrays: a storage format's load or store
    on its own (the reductions' 16-bit calls widen blocks into float32 scratch and back)."""

    def convert(src, dst):
        block = FLAT_BLOCK_BYTES // src.itemsize
        for k in prange((src.shape[0] + block - 1) // block):
            full_width_vectors()
            lo = k * block
            ss, ds = src[lo : lo + block], dst[lo : lo + block]
            for i in range(ss.shape[0]):
                ds[i] = function(ss[i])

    return _jit(convert, function, parallel)


@dataclass(frozen=True)
class Converters:
    """A 16-bit storage format's conversions of whole 1-d contiguous arrays, serial and
    parallel: ``widen(bits, f32)`` and ``narrow(f32, bits)`` (bits: the uint16 view)."""

    widen: object
    widen_parallel: object
    narrow: object
    narrow_parallel: object


@cache
def converters(storage: Storage) -> Converters:
    pin_uuid(storage.load)
    pin_uuid(storage.store)
    return Converters(
        _convert(storage.load, False),
        _convert(storage.load, True),
        _convert(storage.store, False),
        _convert(storage.store, True),
    )


@dataclass(frozen=True)
class KernelSet:
    """The compiled flavours of one scalar function (see :data:`FLAVOURS`)."""

    serial: object
    parallel: object
    serial_2d: object
    parallel_2d: object
    serial_in_place: object  # 1-d, out is the first input: k(out, *params) / k(saved, out, *params)
    parallel_in_place: object
    serial_rows: object  # 2-d with contiguous rows, as serial_2d
    parallel_rows: object
    serial_rows_in_place: object  # 2-d with contiguous rows, out is the first input
    parallel_rows_in_place: object
    # the same kernels for another storage format (fastact._half), built on first use
    formats: Callable[[Storage], KernelSet] | None = field(default=None, compare=False, repr=False)

    def stored(self, storage: Storage) -> KernelSet:
        """The kernel set of the same scalar for arrays stored as ``storage`` (16-bit
        floats: their uint16 views, computed in float32)."""
        return self if storage is NATIVE else self.formats(storage)


@dataclass(frozen=True)
class Flavour:
    """One field of :class:`KernelSet`: the layout its arrays have ("flat": 1-d
    contiguous; "rows": 2-d with contiguous rows; "strided": any 2-d), whether ``out`` is
    the first input (the kernel then takes one array fewer) and whether it is parallel.
    The dispatcher picks among them and warmup compiles them all."""

    field: str
    layout: str
    in_place: bool
    parallel: bool


FLAVOURS = tuple(
    Flavour(
        f"{'parallel' if parallel else 'serial'}{suffix}{'_in_place' if in_place else ''}",
        layout,
        in_place,
        parallel,
    )
    for layout, suffix, in_place in (
        ("flat", "", False),
        ("strided", "_2d", False),
        ("flat", "", True),
        ("rows", "_rows", False),
        ("rows", "_rows", True),
    )
    for parallel in (False, True)
)

# The modules whose code ends up inside compiled kernels (constants included).
KERNEL_SOURCES = (
    "_kernels.py",
    "_intrinsics.py",
    "_half.py",
    "_config.py",
    "definitions.py",
    "_math.py",
    "_numba_compat.py",
    "_row_intrinsics.py",
    "_softmax_jit.py",
    "_softmax_kernels.py",
    "_xent_kernels.py",
    "_fused_kernels.py",
)


@cache
def source_fingerprint() -> str:
    """A hash of the sources compiled into kernels.

    numba's cache notices a change in a kernel's own code, not in the functions it
    calls from other files (the table's scalars, the math layer): the fingerprint
    goes into every kernel's cache key so a stale kernel is never loaded.
    """
    digest = hashlib.sha256()
    for name in KERNEL_SOURCES:
        path = Path(__file__).parent / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def pin_uuid(dispatcher) -> None:
    """Give a scalar dispatcher a stable identity (its name and the kernel sources'
    fingerprint), so the kernels closing over it cache on disk across processes."""
    func = dispatcher.py_func
    compat.pin_uuid(dispatcher, f"fastact:{func.__module__}.{func.__qualname__}:{source_fingerprint()}")


def _kernel_set(scalar, nin: int, light: bool, reads: tuple[bool, bool], storage: Storage = NATIVE):
    """Every flavour of ``scalar``'s kernels for arrays stored as ``storage``; the native set
    builds the others on demand (:meth:`KernelSet.stored`)."""
    pin_uuid(scalar)
    for function in (storage.load, storage.store):
        pin_uuid(function)
    factories = {
        ("flat", False): _unary if nin == 1 else functools.partial(_binary, reads=reads),
        ("strided", False): functools.partial(_unary_2d if nin == 1 else _binary_2d, light=light),
        ("flat", True): _unary_in_place if nin == 1 else functools.partial(_binary_in_place, reads=reads),
        ("rows", False): _unary_rows if nin == 1 else functools.partial(_binary_rows, reads=reads),
        ("rows", True): _unary_rows_in_place
        if nin == 1
        else functools.partial(_binary_rows_in_place, reads=reads),
    }
    kernels = {
        f.field: factories[f.layout, f.in_place](scalar, f.parallel, storage=storage) for f in FLAVOURS
    }
    formats = None if storage is not NATIVE else functools.partial(_stored_set, scalar, nin, light, reads)
    return KernelSet(**kernels, formats=formats)


@cache
def _stored_set(scalar, nin: int, light: bool, reads: tuple[bool, bool], storage: Storage) -> KernelSet:
    return _kernel_set(scalar, nin, light, reads, storage)


@cache
def forward_kernels(name: str) -> KernelSet:
    entry = ACTIVATIONS[name]
    return _kernel_set(entry.forward, 1, entry.light_forward, (True, True))


@cache
def backward_kernels(name: str) -> KernelSet:
    entry: Activation = ACTIVATIONS[name]
    return _kernel_set(entry.backward, 2, entry.light_backward, (True, entry.backward_reads_saved))
