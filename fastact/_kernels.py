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

import dis
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.compiler_lock import global_compiler_lock
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from . import _math as fm
from .definitions import ACTIVATIONS

# Fast-math flags that cannot change a result's NaN/inf behaviour: contraction into
# FMAs only. ("nnan"/"ninf" would let LLVM drop NaN checks; "reassoc" changes results.)
FASTMATH = {"contract"}

# How many vectors LLVM's loop vectorizer processes per iteration. Its cost model picks
# 1 for the long bodies of the math layer, and then one element's dependency chain
# (60-100 cycles of latency) fills the out-of-order window: 4 independent chains per
# iteration run 1.3-1.7x faster in cache (sigmoid f32 0.99 -> 0.64 ns/element).
INTERLEAVE = 4


@contextmanager
def vector_interleave(count: int = INTERLEAVE) -> Iterator[None]:
    """Compile with LLVM's ``-force-vector-interleave=count``, then back to its default.

    The option is process-wide LLVM state, so it is set under numba's global compiler
    lock: no other compilation can see it. It only changes how a loop the vectorizer
    already vectorizes is unrolled, never a result.
    """
    with global_compiler_lock:
        llvm.set_option("fastact", f"-force-vector-interleave={count}")
        try:
            yield
        finally:
            llvm.set_option("fastact", "-force-vector-interleave=0")  # 0: the cost model's choice


def interleaved(dispatcher):
    """Make every compilation of ``dispatcher`` (and of the functions it calls, which
    compile inside it) run under :func:`vector_interleave`."""
    compile_signature = dispatcher.compile

    def compile(sig):
        with vector_interleave():
            return compile_signature(sig)

    dispatcher.compile = compile
    return dispatcher


# The LLVM function attribute that lifts the 256-bit cap (see full_width_vectors).
FULL_WIDTH = '"prefer-vector-width"="512"'


@intrinsic
def full_width_vectors(typingctx):
    """Let LLVM vectorize the function this is called in with 512-bit registers.

    For Intel's AVX-512 server CPUs (skylake-avx512 to emeraldrapids) LLVM's tuning
    prefers 256-bit vectors (``prefer-256-bit``, against the clock drop of 512-bit
    code on Skylake-SP), so without this the loops use half the width the CPU has
    (and PyTorch uses). Measured on an Emerald Rapids VM, float32 in place: sigmoid
    0.65 -> 0.50 ns/element in cache, 6.1 -> 4.9 ms for 16M elements at 2 threads;
    relu 2.1 -> 1.8 ms. The attribute only raises the preferred width: on a CPU
    without 512-bit registers it changes nothing, and no result changes anywhere.
    It emits no code; call it in the loop body, which ``prange`` outlines into a
    function of its own.
    """

    def codegen(context, builder, signature, args):
        # llvmlite only knows keyword attributes; a string attribute goes in as is.
        set.add(builder.function.attributes, FULL_WIDTH)
        return context.get_dummy_value()

    return types.none(), codegen


def _jit(kernel, scalar, parallel: bool):
    """``njit`` a kernel under a name of its own, e.g. ``relu_unary_parallel``.

    numba names a function's cache files after its qualified name and keys the
    entries by its code and closure, not by its options. Under one shared name, the
    serial and parallel builds of a closure would share a cache entry (whichever
    compiled first would be loaded for both), and every activation would share one
    index file, which processes compiling at the same time can garble.
    """
    flavour = "_parallel" if parallel else ""
    kernel.__qualname__ = f"{scalar.py_func.__name__.lstrip('_')}_{kernel.__name__}{flavour}"
    # error_model="numpy": x / 0 gives inf/NaN (parameters are checked before a call)
    # instead of a zero test on every division, which also blocks vectorization.
    jit = njit(parallel=parallel, cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
    return interleaved(jit(kernel))


# The 1-d kernels run in blocks of BLOCK_BYTES and prefetch each input PREFETCH_AHEAD
# bytes ahead of the block. The transcendental kernels are compute-bound, and without the
# prefetch a 16M-element call took about its in-cache compute time plus the memory time:
# the hardware prefetcher does not run far enough ahead of a loop this slow. Measured on
# an Emerald Rapids VM, 16M elements in place, 2 threads, best of 3 alternating runs:
# float32 tanh 3.95 -> 2.36 ms, elu 3.40 -> 1.99, softplus 4.05 -> 2.52, sigmoid 4.23 ->
# 3.32, gelu 4.47 -> 3.56, relu 1.67 -> 1.52; float64 tanh 11.3 -> 6.9; backward gelu
# 6.38 -> 4.93 (the cheap backwards within noise; without any prefetch in the blocked
# loop, relu's backward took 4.7-5.0 ms against 2.9-3.2). A prefetch never faults, so the
# last blocks may prefetch past the end.
BLOCK_BYTES = 1024
PREFETCH_AHEAD = 4096
CACHE_LINE = 64


@intrinsic
def prefetch(typingctx, a, offset):
    """Prefetch (for reading, into every cache level) the line holding byte ``offset`` of
    a's data. A prefetch never faults: any offset is safe."""
    if not isinstance(a, types.Array) or not isinstance(offset, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        ptr = builder.gep(builder.bitcast(arr.data, i8p), [args[1]])
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(a, types.int64), codegen


@intrinsic
def _like(typingctx, a, params):
    """``params`` (a tuple of numbers) converted to the dtype of array ``a``.

    The public functions pass parameters as Python floats (each numpy scalar costs
    ~0.2 us to make) and every kernel converts them here, once per call, rounding to
    nearest as ``np.float32(p)`` does; float32 arithmetic then stays float32.
    """
    if not isinstance(a, types.Array) or not isinstance(params, types.BaseTuple):
        return None
    to = a.dtype
    result = types.UniTuple(to, len(params)) if len(params) else types.Tuple(())

    def codegen(context, builder, sig, args):
        values = [
            context.cast(builder, builder.extract_value(args[1], i), frm, to)
            for i, frm in enumerate(sig.args[1])
        ]
        return context.make_tuple(builder, sig.return_type, values)

    return result(a, params), codegen


@intrinsic
def _row(typingctx, a, i):
    """Row ``i`` of 2-d ``a`` as a C-contiguous 1-d view, for arrays whose inner stride
    is their itemsize (the dispatcher checks; nothing here does). numba types ``a[i]`` of
    a non-contiguous array with a run-time stride, and LLVM does not vectorize such a
    loop: on ``x[:, :512]`` of a float32 matrix the rows kernels ran sigmoid 7x and relu
    2.4x faster than the scalar 2-d loop."""
    if not (isinstance(a, types.Array) and a.ndim == 2 and isinstance(i, types.Integer)):
        return None
    row = types.Array(a.dtype, 1, "C", readonly=not a.mutable, aligned=a.aligned)

    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        shape = cgutils.unpack_tuple(builder, array.shape, 2)
        strides = cgutils.unpack_tuple(builder, array.strides, 2)
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        bytes_ = builder.bitcast(array.data, ir.IntType(8).as_pointer())
        start = builder.gep(bytes_, [builder.mul(index, strides[0])])
        view = context.make_array(row)(context, builder)
        context.populate_array(
            view,
            data=builder.bitcast(start, array.data.type),
            shape=cgutils.pack_array(builder, [shape[1]]),
            strides=cgutils.pack_array(builder, [array.itemsize]),
            itemsize=array.itemsize,
            meminfo=array.meminfo,
            parent=array.parent,
        )
        return impl_ret_borrowed(context, builder, row, view._getvalue())

    return row(a, i), codegen


@njit(forceinline=True, nogil=True)
def _prefetch_ahead(a, lo):
    """Prefetch the block of ``a`` that starts PREFETCH_AHEAD bytes after element ``lo``."""
    start = lo * a.itemsize + PREFETCH_AHEAD
    for offset in range(start, start + BLOCK_BYTES, CACHE_LINE):
        prefetch(a, offset)


def _unary(scalar, parallel):
    def unary(x, out, *args):
        params = _like(out, args)
        block = BLOCK_BYTES // x.itemsize
        for k in prange((x.shape[0] + block - 1) // block):
            full_width_vectors()
            lo = k * block
            _prefetch_ahead(x, lo)
            xs, os = x[lo : lo + block], out[lo : lo + block]
            for i in range(xs.shape[0]):
                os[i] = scalar(xs[i], *params)

    return _jit(unary, scalar, parallel)


def _unary_in_place(scalar, parallel):
    """The kernel for ``out`` that is ``x``, element for element.

    Given two pointers, LLVM guards its vector loop with a run-time overlap check, and
    ``out`` overlapping ``x`` sends it to the scalar loop (in place, a serial sigmoid ran
    4-6x slower than out of place). With one array there is nothing to check. The
    parallel kernels need it as much: numba gives a prange body noalias arguments only
    where it takes no views of them, and the blocks are views. (The 2-d kernels are not
    helped this way: with a run-time inner stride and one array, LLVM does not vectorize
    at all.)
    """

    def unary_in_place(out, *args):
        params = _like(out, args)
        block = BLOCK_BYTES // out.itemsize
        for k in prange((out.shape[0] + block - 1) // block):
            full_width_vectors()
            lo = k * block
            _prefetch_ahead(out, lo)
            os = out[lo : lo + block]
            for i in range(os.shape[0]):
                os[i] = scalar(os[i], *params)

    return _jit(unary_in_place, scalar, parallel)


# The strided 2-d kernels of all but the cheap scalars (see cheap()) copy STRIDED_CHUNK
# elements at a time (in row-major order of the 2-d view, across rows) into a buffer, run
# the SIMD loop over it and copy it back: a loop over a run-time stride does not
# vectorize, and scalar transcendental math costs several times the copies. Each task
# allocates its buffers once (2 KiB of float64 each: in L1, and no allocation the size of
# the input) and works through STRIDED_TASK_CHUNKS consecutive chunks.
STRIDED_CHUNK = 256
STRIDED_TASK_CHUNKS = 64


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


def cheap(function) -> bool:
    """Whether a scalar is one select with adds and multiplies, judged from its Python
    code: one conditional jump at most, no call into the math layer but ``fm.like`` (a
    cast), no other function, no division. Its strided 2-d loop runs as it is; the others
    run through a buffer (SIMD in between): float32, 1M elements of ``x[:, ::2]``, sigmoid
    5.0 -> 1.1-1.9 ms, gelu 6.3-7.2 -> 1.3-1.8, and hardtanh's scalar loop of two selects
    (which LLVM leaves as branches, mispredicted on random data) 7.4-10 -> 0.8 ms; relu
    stays 0.5-0.8 ms, where the buffer's copies cost 1.0-1.5."""
    jumps = 0
    for instruction in dis.get_instructions(function.__code__):
        name = instruction.argval
        jumps += "JUMP" in instruction.opname and "IF" in instruction.opname
        if instruction.opname == "BINARY_OP" and instruction.argrepr.startswith("/"):
            return False
        if instruction.opname == "LOAD_GLOBAL" and callable(function.__globals__.get(name)):
            return False  # a helper (modules are not callable)
        if instruction.opname in ("LOAD_ATTR", "LOAD_METHOD") and name != "like":
            if callable(getattr(fm, name, None)):
                return False
    return jumps <= 1


def _unary_2d(scalar, parallel):
    if cheap(scalar.py_func):

        def unary_2d(x, out, *args):
            params = _like(out, args)
            for i in prange(x.shape[0]):
                full_width_vectors()
                for j in range(x.shape[1]):
                    out[i, j] = scalar(x[i, j], *params)

        return _jit(unary_2d, scalar, parallel)

    def unary_2d(x, out, *args):
        params = _like(out, args)
        n = x.shape[0] * x.shape[1]
        per_task = STRIDED_CHUNK * STRIDED_TASK_CHUNKS
        for t in prange((n + per_task - 1) // per_task):
            full_width_vectors()
            buf = np.empty(STRIDED_CHUNK, out.dtype)
            for start in range(t * per_task, min(n, (t + 1) * per_task), STRIDED_CHUNK):
                count = min(STRIDED_CHUNK, n - start)
                _gather(x, buf, start, count)
                for i in range(count):
                    buf[i] = scalar(buf[i], *params)
                _scatter(buf, out, start, count)

    return _jit(unary_2d, scalar, parallel)


def reads(function, argument: int) -> bool:
    """Whether the Python code of ``function`` reads its positional argument ``argument``:
    a prefetch of an input the scalar ignores (linear's backward never reads ``saved``)
    would stream it from memory for nothing."""
    code = function.__code__
    name = code.co_varnames[argument]
    if name in code.co_cellvars:  # an inner function reads it
        return True
    for instruction in dis.get_instructions(code):
        if instruction.opname.startswith("LOAD_FAST"):
            value = instruction.argval
            if name in (value if isinstance(value, tuple) else (value,)):
                return True
    return False


def _binary(scalar, parallel):
    prefetch_a, prefetch_b = reads(scalar.py_func, 0), reads(scalar.py_func, 1)

    def binary(a, b, out, *args):
        params = _like(out, args)
        block = BLOCK_BYTES // a.itemsize
        for k in prange((a.shape[0] + block - 1) // block):
            full_width_vectors()
            lo = k * block
            if prefetch_a:
                _prefetch_ahead(a, lo)
            if prefetch_b:
                _prefetch_ahead(b, lo)
            as_, bs, os = a[lo : lo + block], b[lo : lo + block], out[lo : lo + block]
            for i in range(as_.shape[0]):
                os[i] = scalar(as_[i], bs[i], *params)

    return _jit(binary, scalar, parallel)


def _binary_in_place(scalar, parallel):
    """The kernel for ``out`` that is ``a`` (grad): out[i] = f(out[i], b[i])."""
    prefetch_b = reads(scalar.py_func, 1)

    def binary_in_place(b, out, *args):
        params = _like(out, args)
        block = BLOCK_BYTES // out.itemsize
        for k in prange((out.shape[0] + block - 1) // block):
            full_width_vectors()
            lo = k * block
            _prefetch_ahead(out, lo)  # read, or at least written: its lines come in either way
            if prefetch_b:
                _prefetch_ahead(b, lo)
            bs, os = b[lo : lo + block], out[lo : lo + block]
            for i in range(os.shape[0]):
                os[i] = scalar(os[i], bs[i], *params)

    return _jit(binary_in_place, scalar, parallel)


def _binary_2d(scalar, parallel):
    if cheap(scalar.py_func):

        def binary_2d(a, b, out, *args):
            params = _like(out, args)
            for i in prange(a.shape[0]):
                full_width_vectors()
                for j in range(a.shape[1]):
                    out[i, j] = scalar(a[i, j], b[i, j], *params)

        return _jit(binary_2d, scalar, parallel)

    def binary_2d(a, b, out, *args):
        params = _like(out, args)
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
                    abuf[i] = scalar(abuf[i], bbuf[i], *params)
                _scatter(abuf, out, start, count)

    return _jit(binary_2d, scalar, parallel)


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


def _unary_rows(scalar, parallel):
    """2-d kernels for arrays whose rows are contiguous (``x[:, :k]``, ``x[::2]``): a SIMD
    loop per row, the rows about PREFETCH_AHEAD bytes ahead prefetched (rows of a view
    sit apart, where the hardware prefetcher does not follow)."""

    def unary_rows(x, out, *args):
        params = _like(out, args)
        ahead = _rows_ahead(x)
        for r in prange(x.shape[0]):
            full_width_vectors()
            _prefetch_row(x, r + ahead)
            xs, os = _row(x, r), _row(out, r)
            for i in range(xs.shape[0]):
                os[i] = scalar(xs[i], *params)

    return _jit(unary_rows, scalar, parallel)


def _unary_rows_in_place(scalar, parallel):
    def unary_rows_in_place(out, *args):
        params = _like(out, args)
        ahead = _rows_ahead(out)
        for r in prange(out.shape[0]):
            full_width_vectors()
            _prefetch_row(out, r + ahead)
            os = _row(out, r)
            for i in range(os.shape[0]):
                os[i] = scalar(os[i], *params)

    return _jit(unary_rows_in_place, scalar, parallel)


def _binary_rows(scalar, parallel):
    prefetch_a, prefetch_b = reads(scalar.py_func, 0), reads(scalar.py_func, 1)

    def binary_rows(a, b, out, *args):
        params = _like(out, args)
        ahead = _rows_ahead(a)
        for r in prange(a.shape[0]):
            full_width_vectors()
            if prefetch_a:
                _prefetch_row(a, r + ahead)
            if prefetch_b:
                _prefetch_row(b, r + ahead)
            as_, bs, os = _row(a, r), _row(b, r), _row(out, r)
            for i in range(as_.shape[0]):
                os[i] = scalar(as_[i], bs[i], *params)

    return _jit(binary_rows, scalar, parallel)


def _binary_rows_in_place(scalar, parallel):
    prefetch_b = reads(scalar.py_func, 1)

    def binary_rows_in_place(b, out, *args):
        params = _like(out, args)
        ahead = _rows_ahead(out)
        for r in prange(out.shape[0]):
            full_width_vectors()
            _prefetch_row(out, r + ahead)
            if prefetch_b:
                _prefetch_row(b, r + ahead)
            bs, os = _row(b, r), _row(out, r)
            for i in range(os.shape[0]):
                os[i] = scalar(os[i], bs[i], *params)

    return _jit(binary_rows_in_place, scalar, parallel)


@dataclass(frozen=True)
class KernelSet:
    """The compiled flavours of one scalar function."""

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


# The modules whose code ends up inside compiled kernels.
KERNEL_SOURCES = (
    "_kernels.py",
    "definitions.py",
    "_math.py",
    "_libm.py",
    "_row_intrinsics.py",
    "_softmax_jit.py",
    "_softmax_kernels.py",
    "_xent_kernels.py",
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


_uuid_lock = threading.Lock()


def pin_uuid(dispatcher) -> None:
    """Give a scalar dispatcher a stable identity, so closures over it cache.

    numba keys a closure's on-disk cache entry by its pickled cell contents, and a
    dispatcher pickles with a uuid drawn at random in each process: without a fixed
    one, every process would compile every kernel again.
    """
    with _uuid_lock:  # two threads pinning at once would trip numba's assert
        if dispatcher._MemoMixin__uuid is None:
            func = dispatcher.py_func
            dispatcher._set_uuid(f"fastact:{func.__module__}.{func.__qualname__}:{source_fingerprint()}")


def _kernel_set(scalar, nin: int) -> KernelSet:
    pin_uuid(scalar)
    if nin == 1:
        flat, strided, in_place, rows, rows_in_place = (
            *(_unary, _unary_2d, _unary_in_place),
            *(_unary_rows, _unary_rows_in_place),
        )
    else:
        flat, strided, in_place, rows, rows_in_place = (
            *(_binary, _binary_2d, _binary_in_place),
            *(_binary_rows, _binary_rows_in_place),
        )
    return KernelSet(
        *(flat(scalar, False), flat(scalar, True), strided(scalar, False), strided(scalar, True)),
        *(in_place(scalar, False), in_place(scalar, True)),
        *(rows(scalar, False), rows(scalar, True), rows_in_place(scalar, False), rows_in_place(scalar, True)),
    )


@cache
def forward_kernels(name: str) -> KernelSet:
    return _kernel_set(ACTIVATIONS[name].forward, 1)


@cache
def backward_kernels(name: str) -> KernelSet:
    return _kernel_set(ACTIVATIONS[name].backward, 2)
