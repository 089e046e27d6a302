"""Compiled elementwise kernels, built from the scalar functions of the table.

For each activation there are forward kernels ``k(x, out, *params)`` and backward
kernels ``k(grad, saved, out, *params)``, each serial or ``parallel=True``, for 1-d
contiguous arrays, 2-d strided ones and 2-d ones with contiguous rows; and 1-d and rows
ones for ``out`` that is the first input, ``k(out, *params)`` / ``k(saved, out, *params)``.
Two loop generators make them all, for one or two inputs: :func:`_contiguous_kernel` (the
flat and rows layouts, :class:`Layout`, in place or not) and :func:`_strided_kernel`. They
write each kernel's source (see :func:`generated`), which takes its arrays as explicit
arguments and reads as the hand-written loop would.
Kernels never validate; the public wrappers in :mod:`fastact._api` do, and pass the
parameters as Python floats, which each kernel rounds to its arrays' dtype once (see
:func:`_like`). Everything is compiled lazily, on first use of a signature, and cached on
disk.
"""

from __future__ import annotations

import functools
import hashlib
import textwrap
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


# --- layouts: how a loop cuts its arrays into tasks -----------------------------------------
# A task (one prange iteration) runs a SIMD loop over 1-d contiguous views of the arrays.
# 1-d contiguous arrays run in blocks of FLAT_BLOCK_BYTES and, where PREFETCH, prefetch each
# input PREFETCH_AHEAD bytes ahead of the block: on the Intel CPUs measured the hardware
# prefetcher did not run far enough ahead of a compute-bound loop (without the prefetch a
# 16M call took its in-cache compute time plus its memory time); on AMD Zen it does, and
# the prefetches slowed the in-place backwards (docs/TUNING.md). Fixed at compile time for
# the target CPU. A prefetch never faults, so the last blocks may prefetch past the end.
# 2-d arrays with contiguous rows (``x[:, :k]``, ``x[::2]``) run a row per task, as a 1-d
# view (see :func:`row_view`), and prefetch the rows about PREFETCH_AHEAD bytes ahead (rows
# of a view sit apart, where the hardware prefetcher does not follow).
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


@dataclass(frozen=True)
class Layout:
    """How a loop cuts its arrays into tasks (one prange iteration each, ``t``), as source the
    loop generators write into their loops: ``setup`` before the loop, of the arrays' first
    (``{a}``); ``count``, the tasks; ``start``, the first line of task ``t``; ``view``, its 1-d
    contiguous view of array ``{a}``; ``prefetch``, of the data of ``{a}`` ahead of the task.
    Source, not inlined njit functions: composed out of those, the loops compiled to other
    code than the hand-written ones (a rows backward in place ran 6-30% slower)."""

    name: str  # as :class:`Flavour` names it
    setup: str
    count: str
    start: str
    view: str
    prefetch: str

    @property
    def suffix(self) -> str:
        """Of the elementwise kernels' names: none for flat, ``_rows``."""
        return "" if self.name == "flat" else f"_{self.name}"

    def head(self, first: str, prefetched: tuple[str, ...]) -> str:
        """The source of the loop over the tasks of array ``first`` and its tasks' first
        lines, the prefetches of ``prefetched`` among them (unindented; the task's body
        follows, indented once)."""
        lines = [self.setup.format(a=first), f"for t in prange({self.count.format(a=first)}):"]
        lines += ["    full_width_vectors()", *(f"    {line}" for line in self.start.splitlines())]
        lines += [f"    {self.prefetch.format(a=a)}" for a in prefetched]
        return "\n".join(lines) + "\n"

    def views(self, names: tuple[str, ...], arrays: tuple[str, ...]) -> str:
        """``names = `` task ``t``'s views of ``arrays``, indented once."""
        return f"    {', '.join(names)} = {', '.join(self.view.format(a=a) for a in arrays)}\n"


FLAT = Layout(
    "flat",
    setup="block = FLAT_BLOCK_BYTES // {a}.itemsize",
    count="({a}.shape[0] + block - 1) // block",
    start="lo = t * block",
    view="{a}[lo : lo + block]",
    prefetch="_prefetch_ahead({a}, lo)",
)
ROWS = Layout(
    "rows",
    setup="ahead = _rows_ahead({a})",
    count="{a}.shape[0]",
    start="",
    view="row_view({a}, t)",
    prefetch="_prefetch_row({a}, t + ahead)",
)
LAYOUTS = {layout.name: layout for layout in (FLAT, ROWS)}


def generated(name: str, arrays: str, body: str, namespace: dict, closure: dict) -> Callable:
    """The function ``name(<arrays>, *args)`` running ``body`` (its source, unindented),
    closing over the values of ``closure`` and seeing ``namespace`` as its globals (those of
    the module whose loop it is).

    The loop generators write each variant's source, so that it takes its arrays as explicit
    arguments (taken as one ``*operands`` tuple they cost numba's dispatcher 35-50 ns more a
    call) and its loop reads as the hand-written one would (see :class:`Layout`). The code
    compiles under the module's file name, where numba's cache finds a file to stamp its
    index with (line numbers in numba's messages count in the generated source); numba keys
    a kernel's entries by its code and closure (see :func:`pin_uuid`), so what varies
    between the variants of a loop is in one or the other.
    """
    inner = f"def {name}({arrays}, *args):\n" + textwrap.indent(body, "    ")
    source = f"def factory({', '.join(closure)}):\n{textwrap.indent(inner, '    ')}\n    return {name}\n"
    local: dict = {}
    # fixed templates, no outside input
    exec(compile(source, namespace["__file__"], "exec"), namespace, local)
    return local["factory"](**closure)


# the names the loops' templates read as globals, besides those this module uses itself
_LOOP_GLOBALS = (params_like, stored_whole, row_view, STRIDED_CHUNK, STRIDED_TASK_CHUNKS)


def _call(scalar: str, inputs: tuple[str, ...]) -> str:
    """The source of ``store(scalar(load(input), ..., *params))``."""
    return f"store({scalar}({', '.join(f'load({v})' for v in inputs)}, *params))"


_CONTIGUOUS = """\
params = params_like(out, args)
{head}{views}    for i in range({first_view}.shape[0]):
        os[i] = {value}
"""
_VIEW = {"x": "xs", "a": "as_", "b": "bs", "out": "os"}  # a task's view of each array


def _contiguous_kernel(scalar, parallel, layout, nin, in_place, reads_second=True, storage=NATIVE):
    """The kernel of ``scalar`` (``nin`` inputs, 1 or 2) over ``layout``'s tasks:
    ``k(x, out, *params)`` / ``k(a, b, out, *params)``; in place, where ``out`` is input 0,
    ``k(out, *params)`` / ``k(b, out, *params)``. ``reads_second``: whether the scalar reads
    input 1 (a prefetch of an input it ignores streams it for nothing).

    In place is a kernel of its own, with one array where there would be two. Given two
    pointers, LLVM guards its vector loop with a run-time overlap check, and ``out``
    overlapping ``x`` sends it to the scalar loop (several times slower than out of place:
    docs/TUNING.md). The parallel kernels need it as much: numba gives a prange body
    noalias arguments only where it takes no views of them, and the tasks are views. (The
    strided kernels are not helped this way: with a run-time inner stride and one array,
    LLVM does not vectorize at all.)
    """
    binary = nin == 2
    inputs = ("a", "b") if binary else ("x",)
    first = "out" if in_place else inputs[0]  # in place: out is input 0, and the kernel reads it
    arrays = (*inputs[1:], "out") if in_place else (*inputs, "out")
    # a prefetch of out in place: read, or at least written; its lines come in either way
    prefetched = (first, "b") if binary and reads_second else (first,)
    value = _call("scalar", tuple(f"{_VIEW[v]}[i]" for v in (first, *inputs[1:])))
    body = _CONTIGUOUS.format(
        head=layout.head(first, prefetched),
        views=layout.views(tuple(_VIEW[v] for v in arrays), arrays),
        first_view=_VIEW[first],
        value=f"stored_whole({value})" if in_place else value,
    )
    name = ("binary" if binary else "unary") + layout.suffix + ("_in_place" if in_place else "")
    closure = {"scalar": scalar, "load": storage.load, "store": storage.store}
    kernel = generated(name, ", ".join(arrays), body, globals(), closure)
    return _jit(kernel, scalar, parallel, storage)


# The strided 2-d kernels of all but the light scalars (Activation.light) copy
# STRIDED_CHUNK elements at a time (in row-major order of the 2-d view, across rows) into a
# buffer, run the SIMD loop over it and copy it back: a loop over a run-time stride does
# not vectorize, and scalar transcendental math costs several times the copies. Each task
# allocates its buffers once (2 KiB of float64 each: in L1, and no allocation the size of
# the input) and works through STRIDED_TASK_CHUNKS consecutive chunks.


def _row_major(copy_run, name: str):
    """``name(a, buf, start, count)``, a walk over elements start .. start + count of 2-d
    ``a`` in row-major order, one run along a row at a time: ``copy_run(row, c, buf, i, m)``
    copies between row[c : c + m] and buf[i : i + m]."""

    def walk(a, buf, start, count):
        cols = a.shape[1]
        r, c = start // cols, start % cols
        i = 0
        while i < count:
            m = min(cols - c, count - i)
            copy_run(a[r], c, buf, i, m)
            i, r, c = i + m, r + 1, 0

    walk.__name__ = walk.__qualname__ = name
    return njit(forceinline=True, nogil=True)(walk)


@njit(forceinline=True, nogil=True)
def _run_to_buf(row, c, buf, i, m):
    for j in range(m):
        buf[i + j] = row[np.uintp(c + j)]  # unsigned: no wraparound test per element


@njit(forceinline=True, nogil=True)
def _buf_to_run(row, c, buf, i, m):
    for j in range(m):
        row[np.uintp(c + j)] = buf[i + j]


_gather = _row_major(_run_to_buf, "_gather")  # buf[:count] = the elements of a
_scatter = _row_major(_buf_to_run, "_scatter")  # the elements of a = buf[:count]


_STRIDED_LIGHT = """\
params = params_like(out, args)
for i in prange(a.shape[0]):
    full_width_vectors()
    for j in range(a.shape[1]):
        out[i, j] = {value}
"""

_STRIDED_BUFFERED = """\
params = params_like(out, args)
n = a.shape[0] * a.shape[1]
per_task = STRIDED_CHUNK * STRIDED_TASK_CHUNKS
for t in prange((n + per_task - 1) // per_task):
    full_width_vectors()
    {buffers}
    for start in range(t * per_task, min(n, (t + 1) * per_task), STRIDED_CHUNK):
        count = min(STRIDED_CHUNK, n - start)
{gathers}        for i in range(count):
            abuf[i] = {value}
        _scatter(out, abuf, start, count)
"""


def _strided_kernel(scalar, parallel, nin, light, storage=NATIVE):
    """The kernel of ``scalar`` (``nin`` inputs) over 2-d arrays of any strides,
    ``k(a, out, *params)`` / ``k(a, b, out, *params)``: a light scalar's loops over the
    strides, the others' through buffers (see above)."""
    inputs = ("a", "b")[:nin]
    if light:
        body = _STRIDED_LIGHT.format(value=_call("scalar", tuple(f"{v}[i, j]" for v in inputs)))
    else:
        body = _STRIDED_BUFFERED.format(
            buffers=", ".join(f"{v}buf" for v in inputs)
            + " = "
            + ", ".join("np.empty(STRIDED_CHUNK, out.dtype)" for _ in inputs),
            gathers="".join(f"        _gather({v}, {v}buf, start, count)\n" for v in inputs),
            value=_call("scalar", tuple(f"{v}buf[i]" for v in inputs)),
        )
    name = ("binary" if nin == 2 else "unary") + "_2d"
    closure = {"scalar": scalar, "load": storage.load, "store": storage.store}
    kernel = generated(name, ", ".join((*inputs, "out")), body, globals(), closure)
    return _jit(kernel, scalar, parallel, storage)


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


def _kernel_set(scalar, nin: int, light: bool, reads_second: bool, storage: Storage = NATIVE):
    """Every flavour of ``scalar``'s kernels for arrays stored as ``storage``; the native set
    builds the others on demand (:meth:`KernelSet.stored`)."""
    pin_uuid(scalar)
    for function in (storage.load, storage.store):
        pin_uuid(function)

    def kernel(f: Flavour):
        if f.layout == "strided":
            return _strided_kernel(scalar, f.parallel, nin, light, storage)
        layout = LAYOUTS[f.layout]
        return _contiguous_kernel(scalar, f.parallel, layout, nin, f.in_place, reads_second, storage)

    kernels = {f.field: kernel(f) for f in FLAVOURS}
    formats = functools.partial(_stored_set, scalar, nin, light, reads_second) if storage is NATIVE else None
    return KernelSet(**kernels, formats=formats)


@cache
def _stored_set(scalar, nin: int, light: bool, reads_second: bool, storage: Storage) -> KernelSet:
    return _kernel_set(scalar, nin, light, reads_second, storage)


@cache
def forward_kernels(name: str) -> KernelSet:
    entry = ACTIVATIONS[name]
    return _kernel_set(entry.forward, 1, entry.light_forward, True)


@cache
def backward_kernels(name: str) -> KernelSet:
    entry: Activation = ACTIVATIONS[name]
    return _kernel_set(entry.backward, 2, entry.light_backward, entry.backward_reads_saved)
