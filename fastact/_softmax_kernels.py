"""Compiled kernels for softmax, log_softmax, their backwards and softmax cross-entropy.

Every op reads ``a`` (and ``b``: the backwards' y) and writes ``out``. In place, ``a``
is None and ``out`` is read instead: numba optimises (and vectorises) each function
before inlining it into its caller, and a loop compiled to read ``a`` and write ``out``
carries a runtime overlap check that sends an in-place call (a is out) to its scalar
fallback. Every loop that writes ``out`` therefore reads ``_src(a, out)``, a value numba
resolves when it compiles the None-typed variant.

The wrappers in :mod:`fastact._softmax` turn any layout into views (never copies) of
one of three shapes:

* rows ``(R, L)``: reduce along the last axis, one row per thread. A row of at most
  ``whole`` elements is done in cache: max, then exp stored into ``out`` while summing,
  then a scale pass; the exp pass prefetches the next row (rows of 4 KiB and more), so
  the next max reads it from cache. A large out-of-place softmax keeps the exps in a
  row of scratch and writes ``out`` once, scaled, with non-temporal stores
  (``rows_stream``). Longer rows go chunk by chunk: per chunk a (max, sum) pair, the
  pairs combined with the online-normalizer rescaling ``S = sum_c s_c exp(m_c - M)``.
* split ``(R, L)``: few long rows. (row, chunk) pairs run in parallel, then the
  partial pairs are combined per row, then a parallel finishing pass.
* cols ``(O, L, I)``: reduce along the middle axis, vectorised along the inner one,
  in tiles ``[o, :, i0:i0 + tw]``: three streaming passes (max, exp + sum, scale) over
  L segments of tw contiguous elements, with tw-long (max, sum) vectors.

Reductions: a row's max is ``_row_max`` (vectorised by hand), tiles and chunk pairs use
``llvm.maxnum``; both ignore NaN, which reaches the sum through exp and makes the whole
row NaN, as in PyTorch. Sums run in small helpers compiled with
``FASTMATH | {"reassoc"}`` so that LLVM can vectorise them: that only reorders the
additions of one sum. exp is compiled on its own, without "reassoc" (numba keeps each
function's flags when LLVM inlines it), so its argument reduction stays exact. The
softmax exps are ``fastact._math._exp_nonpos`` (x - max <= 0), the backward's
``fastact._math.exp`` (vectorising, float32 kept in float32). Kernels never validate;
the wrappers do.
"""

from __future__ import annotations

import math
import threading

import llvmlite.binding as llb
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic
from numba.np import numpy_support

from . import _numba_compat as compat
from ._kernels import FASTMATH, interleaved, pin_uuid, source_fingerprint
from ._kernels import prefetch as _prefetch
from ._math import _exp_nonpos
from ._math import exp as _exp

REDUCE = FASTMATH | {"reassoc"}

# --- reductions -------------------------------------------------------------------------


@intrinsic
def _maxnum(typingctx, a, b):
    """llvm.maxnum: the larger of a and b; a NaN operand is ignored."""
    if a != b or a not in (types.float32, types.float64):
        return None

    def codegen(context, builder, sig, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maxnum", [t], ir.FunctionType(t, [t, t]))
        return builder.call(fn, args)

    return a(a, b), codegen


# The row max, vectorised by hand: LLVM vectorises a llvm.maxnum reduction with a NaN
# test and blend per vector (3 instructions per vector, ~0.26 cycles per float32 element
# in cache), and a compare-select reduction not at all. ``x > m ? x : m`` on vectors is
# one x86 max instruction and ignores a NaN x, as maxnum does.
MAX_VECTOR_BYTES = 32  # one AVX vector; other targets split it
MAX_ACCUMULATORS = 4  # independent chains per iteration (max latency 3-4 cycles)


@intrinsic
def _row_max(typingctx, x):
    """max(x) of a 1-D array, NaN entries ignored, -inf when empty or all NaN. Contiguous
    rows in vectors (MAX_ACCUMULATORS of MAX_VECTOR_BYTES per iteration, then single
    vectors, then scalars); strided ones element by element."""
    if not isinstance(x, types.Array) or x.ndim != 1 or x.dtype not in (types.float32, types.float64):
        return None

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        fty = context.get_value_type(sig.return_type)
        size = context.get_abi_sizeof(fty)
        width = MAX_VECTOR_BYTES // size
        vty = ir.VectorType(fty, width)
        i64 = ir.IntType(64)
        n = builder.extract_value(arr.shape, 0)
        stride = builder.extract_value(arr.strides, 0)
        base = builder.ptrtoint(arr.data, i64)
        neg_inf = ir.Constant(fty, float("-inf"))

        def bigger(v, m):  # v > m ? v : m (a NaN v keeps m)
            return builder.select(builder.fcmp_ordered(">", v, m), v, m)

        def at(i, ty, step):  # pointer to element i
            addr = builder.add(base, builder.mul(i, step))
            return builder.inttoptr(addr, ty.as_pointer())

        result = cgutils.alloca_once_value(builder, neg_inf)
        contiguous = builder.icmp_signed("==", stride, ir.Constant(i64, size))
        with builder.if_else(contiguous) as (vec, strided):
            with vec:
                accs = [
                    cgutils.alloca_once_value(builder, ir.Constant(vty, [neg_inf] * width))
                    for _ in range(MAX_ACCUMULATORS)
                ]
                block = width * MAX_ACCUMULATORS
                n_blocks = builder.sdiv(n, ir.Constant(i64, block))
                step = ir.Constant(i64, size)
                with cgutils.for_range(builder, n_blocks) as loop:
                    first = builder.mul(loop.index, ir.Constant(i64, block))
                    for k, acc in enumerate(accs):
                        i = builder.add(first, ir.Constant(i64, k * width))
                        v = builder.load(at(i, vty, step), align=size)
                        builder.store(bigger(v, builder.load(acc)), acc)
                acc = accs[0]
                for other in accs[1:]:
                    builder.store(bigger(builder.load(other), builder.load(acc)), acc)
                done = builder.mul(n_blocks, ir.Constant(i64, block))
                n_vec = builder.sdiv(builder.sub(n, done), ir.Constant(i64, width))
                with cgutils.for_range(builder, n_vec) as loop:
                    i = builder.add(done, builder.mul(loop.index, ir.Constant(i64, width)))
                    v = builder.load(at(i, vty, step), align=size)
                    builder.store(bigger(v, builder.load(acc)), acc)
                vacc = builder.load(acc)
                m = builder.extract_element(vacc, ir.Constant(ir.IntType(32), 0))
                for k in range(1, width):
                    m = bigger(builder.extract_element(vacc, ir.Constant(ir.IntType(32), k)), m)
                builder.store(m, result)
                tail = builder.add(done, builder.mul(n_vec, ir.Constant(i64, width)))
                with cgutils.for_range_slice(builder, tail, n, ir.Constant(i64, 1)) as (i, _):
                    v = builder.load(at(i, fty, step), align=size)
                    builder.store(bigger(v, builder.load(result)), result)
            with strided:
                with cgutils.for_range(builder, n) as loop:
                    v = builder.load(at(loop.index, fty, stride), align=size)
                    builder.store(bigger(v, builder.load(result)), result)
        return builder.load(result)

    return x.dtype(x), codegen


# --- streaming (non-temporal) stores ----------------------------------------------------
# An output much larger than the caches is written with non-temporal stores: they skip
# the read of each destination line that an ordinary store makes first (read for
# ownership), a third of the memory traffic of an out-of-place row pass.

_X86 = llb.get_process_triple().startswith(("x86_64", "i386", "i686"))
STREAM_VECTOR_BYTES = 32  # the vector stored at once
STREAM_EDGE_BYTES = 16  # one narrower vector before and after them (numpy aligns data to 16 bytes)


@intrinsic
def _stream_scaled(typingctx, dst, src, c):
    """dst[:] = src[:] * c for 1-D C-contiguous arrays of one length and dtype, with
    non-temporal stores at aligned addresses: vectors of STREAM_VECTOR_BYTES, one vector
    of STREAM_EDGE_BYTES before them (dst 16 but not 32 bytes aligned: a large numpy
    array starts 16 bytes into a page) and one after them; the unaligned head and the
    tail with ordinary scalar stores (scalar non-temporal stores, movntss, measured 4x
    slower on 128-element rows). Follow with _store_fence before the data is handed to
    another thread."""
    ok = all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C" for t in (dst, src))
    if not ok or not (dst.dtype == src.dtype == c) or c not in (types.float32, types.float64):
        return None

    def codegen(context, builder, sig, args):
        dst_arr = context.make_array(sig.args[0])(context, builder, args[0])
        src_arr = context.make_array(sig.args[1])(context, builder, args[1])
        scale = args[2]
        fty = scale.type
        size = context.get_abi_sizeof(fty)
        i64 = ir.IntType(64)

        def const(v):
            return ir.Constant(i64, v)

        n = builder.extract_value(dst_arr.shape, 0)
        dst_ptr, src_ptr = dst_arr.data, src_arr.data
        nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])

        def splat(width):
            v = ir.Constant(ir.VectorType(fty, width), None)
            for k in range(width):
                v = builder.insert_element(v, scale, ir.Constant(ir.IntType(32), k))
            return v

        def store_vector(i, width, factor):  # dst[i:i + width] = src[i:i + width] * c
            vty = ir.VectorType(fty, width)
            v = builder.load(builder.bitcast(builder.gep(src_ptr, [i]), vty.as_pointer()), align=size)
            st = builder.store(
                builder.fmul(v, factor),
                builder.bitcast(builder.gep(dst_ptr, [i]), vty.as_pointer()),
                align=width * size,
            )
            st.set_metadata("nontemporal", nontemporal)

        def scalar_loop(lo, hi):
            with cgutils.for_range_slice(builder, lo, hi, const(1)) as (i, _):
                v = builder.load(builder.gep(src_ptr, [i]))
                builder.store(builder.fmul(v, scale), builder.gep(dst_ptr, [i]))

        def room(i, width):  # at least width elements left from i
            return builder.icmp_signed("<=", builder.add(i, const(width)), n)

        # elements before the first STREAM_EDGE_BYTES-aligned address; all of them if dst
        # is not even aligned to its item size (a view at an odd byte offset)
        addr = builder.ptrtoint(dst_ptr, i64)
        gap = builder.and_(
            builder.sub(const(STREAM_EDGE_BYTES), builder.and_(addr, const(STREAM_EDGE_BYTES - 1))),
            const(STREAM_EDGE_BYTES - 1),
        )
        head = builder.udiv(gap, const(size))
        odd = builder.icmp_unsigned("!=", builder.and_(addr, const(size - 1)), const(0))
        head = builder.select(builder.or_(odd, builder.icmp_signed("<", n, head)), n, head)
        scalar_loop(const(0), head)
        i = cgutils.alloca_once_value(builder, head)
        edge, wide = STREAM_EDGE_BYTES // size, STREAM_VECTOR_BYTES // size
        edge_factor, wide_factor = splat(edge), splat(wide)
        # one edge vector if that leaves dst aligned for the wide ones
        at = builder.add(addr, builder.mul(head, const(size)))
        misaligned = builder.icmp_unsigned("!=", builder.and_(at, const(STREAM_VECTOR_BYTES - 1)), const(0))
        with builder.if_then(builder.and_(misaligned, room(head, edge))):
            store_vector(head, edge, edge_factor)
            builder.store(builder.add(head, const(edge)), i)
        lo = builder.load(i)
        n_wide = builder.sdiv(builder.sub(n, lo), const(wide))
        with cgutils.for_range(builder, n_wide) as loop:
            store_vector(builder.add(lo, builder.mul(loop.index, const(wide))), wide, wide_factor)
        lo = builder.add(lo, builder.mul(n_wide, const(wide)))
        builder.store(lo, i)
        with builder.if_then(room(lo, edge)):
            store_vector(lo, edge, edge_factor)
            builder.store(builder.add(lo, const(edge)), i)
        scalar_loop(builder.load(i), n)
        return context.get_dummy_value()

    return types.none(dst, src, c), codegen


@intrinsic
def _store_fence(typingctx):
    """Order the non-temporal stores before every later store (x86 sfence; elsewhere
    LLVM's non-temporal stores keep the ordinary ordering)."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence"
            )
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


# --- software prefetch ------------------------------------------------------------------
# A row's first pass (its max) reads it from memory while the core's arithmetic waits, and
# its exp pass computes while the memory bus idles: the hardware prefetcher looks only a
# few lines ahead. The exp pass therefore asks for the next row's lines, PREFETCH_CHUNK
# elements of it per PREFETCH_CHUNK elements computed, so the next max reads from cache.

PREFETCH_CHUNK = 256
PREFETCH_MIN_BYTES = 4096  # shorter rows: the hardware prefetcher streams them well enough


@njit(fastmath=FASTMATH, error_model="numpy", forceinline=True)
def _prefetch_step(n, size, stride):
    """Elements of a row (n of them, ``size`` bytes each, ``stride`` bytes apart) to
    compute per prefetch of the next row's: PREFETCH_CHUNK when the row is contiguous and
    at least PREFETCH_MIN_BYTES long, else n (no prefetch).

    Callers loop over it with ``while``, and pass scalars: ``range`` with a step known
    only at run time, or this helper taking the array, measured 4-5x slower on
    128-element rows (numba then keeps reference counting in the row loop)."""
    if stride == size and n * size >= PREFETCH_MIN_BYTES:
        return PREFETCH_CHUNK
    return n


@njit(fastmath=FASTMATH, error_model="numpy", forceinline=True)
def _prefetch_row(a, r, lo, hi, step):
    """Prefetch a[r, lo:hi] (r may be past the last row) if step says so."""
    if step == PREFETCH_CHUNK:
        size = a.itemsize
        base = r * a.strides[0]
        for offset in range(lo * size, hi * size, 64):
            _prefetch(a, base + offset)


# --- rows: helpers over a[r, lo:hi] ---------------------------------------------------


@njit
def _src(a, out):
    """The array to read: ``a``, or ``out`` when a is None (in place)."""
    if a is None:
        return out
    return a


@njit
def _seg(a, o, r, lo, hi):
    """The segment to read: ``a[r, lo:hi]``, or ``o`` (the segment written) when a is None.

    Returning ``o`` itself, rather than slicing ``out`` a second time, is what lets LLVM
    see that the loop reads and writes the same memory.
    """
    if a is None:
        return o
    return a[r, lo:hi]


# Each helper slices its row segment first: a loop ``for j in range(lo, hi): a[r, j]``
# would keep numba's negative-index wraparound check (lo is not known to be >= 0), which
# costs 4-6x by blocking vectorisation; ``x = a[r, lo:hi]`` then ``x[j]``, j in
# range(len), does not.


@njit(fastmath=REDUCE, error_model="numpy")
def _max(a, r, lo, hi):
    return _row_max(a[r, lo:hi])


@njit(fastmath=FASTMATH, error_model="numpy")
def _shift(a, m):
    """The max to subtract: m, or 0 where m is -inf (a part of only -inf or NaN), whose
    exps are then 0 (or NaN) rather than NaN: it adds nothing to a row with finite entries."""
    return m if m > -np.inf else a.dtype.type(0)


# The sum-exp helpers are forceinline: the row loops call them once per PREFETCH_CHUNK.
@njit(fastmath=REDUCE, error_model="numpy", forceinline=True)
def _sumexp(a, r, lo, hi, m):
    x = a[r, lo:hi]
    s = a.dtype.type(0)
    for j in range(x.shape[0]):
        s += _exp_nonpos(x[j] - m)
    return s


@njit(fastmath=REDUCE, error_model="numpy", forceinline=True)
def _sumexp_store(a, out, r, lo, hi, m):
    o = out[r, lo:hi]
    x = _seg(a, o, r, lo, hi)
    s = out.dtype.type(0)
    for j in range(o.shape[0]):
        e = _exp_nonpos(x[j] - m)
        o[j] = e
        s += e
    return s


@njit(fastmath=REDUCE, error_model="numpy")
def _sum(a, r, lo, hi):
    x = a[r, lo:hi]
    s = a.dtype.type(0)
    for j in range(x.shape[0]):
        s += x[j]
    return s


@njit(fastmath=REDUCE, error_model="numpy")
def _dot(a, b, r, lo, hi):
    x = a[r, lo:hi]
    y = b[r, lo:hi]
    s = a.dtype.type(0)
    for j in range(x.shape[0]):
        s += x[j] * y[j]
    return s


@njit(fastmath=FASTMATH, error_model="numpy")
def _scale(out, r, lo, hi, c):
    o = out[r, lo:hi]
    for j in range(o.shape[0]):
        o[j] *= c


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_store(a, out, r, lo, hi, m, ls):
    o = out[r, lo:hi]
    x = _seg(a, o, r, lo, hi)
    for j in range(o.shape[0]):
        o[j] = (x[j] - m) - ls


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_grad(g, y, out, r, lo, hi, d):
    o = out[r, lo:hi]
    x = _seg(g, o, r, lo, hi)
    p = y[r, lo:hi]
    for j in range(o.shape[0]):
        o[j] = p[j] * (x[j] - d)


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_grad(g, y, out, r, lo, hi, s):
    o = out[r, lo:hi]
    x = _seg(g, o, r, lo, hi)
    p = y[r, lo:hi]
    for j in range(o.shape[0]):
        o[j] = x[j] - _exp(p[j]) * s


@njit(fastmath=FASTMATH, error_model="numpy")
def _combine_lse(ms, ss):
    """(M, S) of a row from its parts' (m_c, s_c): M = max m_c, S = sum s_c e^(m_c - M).

    An all -inf row gives M = -inf and S = NaN (-inf - -inf), so a NaN row as in PyTorch.
    """
    big = -np.inf
    for c in range(ms.shape[0]):
        big = _maxnum(big, ms[c])
    total = 0.0
    for c in range(ms.shape[0]):
        total += ss[c] * math.exp(ms[c] - big)
    return big, total


@njit(fastmath=FASTMATH, error_model="numpy")
def _combine_sum(ps, qs):
    total = 0.0
    for c in range(ps.shape[0]):
        total += ps[c]
    return total, 0.0


# --- ops ------------------------------------------------------------------------------
# Each op is six functions. lead(a, b, out, r, L) is row r's reduction (max, dot or sum);
# whole(a, b, out, r, L, carry, nxt) does row r in one go given its reduction and returns
# row nxt's (nxt < 0: none), computed in the same pass, AHEAD elements at a time, so the
# next row streams in from memory under this row's arithmetic instead of in a pass of its
# own. The forward ops carry nothing (lead returns 0) and reduce each row in a pass of its
# own: measured faster (in cache, 128-element rows: 2.6 against 4.2 cycles per element).
# part / combine / finish do a long row in chunks (part -> (p_c, q_c) per chunk,
# combine -> (P, Q) per row, finish writes a chunk); tile(a, b, out, o, i0, i1, m, s)
# does a[o, :, i0:i1] of a cols view.
AHEAD = 512


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_lead(a, b, out, r, n):
    return 0  # the forward ops reduce each row in a pass of its own: no carry


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_whole(a, b, out, r, n, carry, nxt):
    src = _src(a, out)
    m = _shift(out, _max(src, r, 0, n))
    s = _sumexp_store_prefetching(a, out, src, r, n, m)
    _scale(out, r, 0, n, out.dtype.type(1) / s)
    return 0


@njit(fastmath=REDUCE, error_model="numpy", forceinline=True)
def _sumexp_into(a, tmp, r, lo, hi, m):
    """As _sumexp_store, into tmp[lo:hi], a 1-D scratch row (a is never tmp here)."""
    x = a[r, lo:hi]
    t = tmp[lo:hi]
    s = a.dtype.type(0)
    for j in range(x.shape[0]):
        e = _exp_nonpos(x[j] - m)
        t[j] = e
        s += e
    return s


@njit(fastmath=REDUCE, error_model="numpy", forceinline=True)
def _sumexp_only(a, out, r, lo, hi, m):
    return _sumexp(_src(a, out), r, lo, hi, m)


def _prefetching(sumexp):
    """njit sum over row r of ``sumexp(a, out, r, lo, hi, m)``, PREFETCH_CHUNK elements
    at a time while row r + 1 of ``src`` (the array read) is prefetched (see
    _prefetch_step)."""

    def run(a, out, src, r, n, m):
        step = _prefetch_step(n, src.itemsize, src.strides[1])
        s = src.dtype.type(0)
        lo = 0
        while lo < n:
            hi = lo + step if lo + step < n else n
            _prefetch_row(src, r + 1, lo, hi, step)
            s += sumexp(a, out, r, lo, hi, m)
            lo = hi
        return s

    run.__qualname__ = f"{sumexp.py_func.__name__}_prefetching"  # its own identity (pin_uuid)
    return njit(fastmath=FASTMATH, error_model="numpy", forceinline=True)(run)


_sumexp_store_prefetching = _prefetching(_sumexp_store)
_sumexp_into_prefetching = _prefetching(_sumexp_into)
_sumexp_only_prefetching = _prefetching(_sumexp_only)


@njit(fastmath=FASTMATH, error_model="numpy", forceinline=True)
def _softmax_stream(a, b, out, r, n, tmp):
    """Row r of a large out-of-place softmax: the exps in ``tmp`` (in cache), then
    scaled into ``out`` with non-temporal stores. forceinline: LLVM does not inline it
    by itself, and a call per row increfs and decrefs the shared arrays (atomics on
    one cache line from every thread: 4x slower on 128-element rows)."""
    m = _shift(out, _max(a, r, 0, n))
    s = _sumexp_into_prefetching(a, tmp, a, r, n, m)
    _stream_scaled(out[r], tmp, out.dtype.type(1) / s)


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_part(a, b, out, r, lo, hi):
    m = _max(_src(a, out), r, lo, hi)
    s = _sumexp_store(a, out, r, lo, hi, _shift(out, m))
    return np.float64(m), np.float64(s)


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_combine(ms, ss):
    big, total = _combine_lse(ms, ss)
    return big, 1.0 / total


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_finish(a, b, out, r, lo, hi, m, s, big, inv):
    # A chunk of only -inf stored exp(-inf - 0) = 0; its factor e^(-inf - M) is 0 too.
    _scale(out, r, lo, hi, out.dtype.type(math.exp(m - big) * inv))


_log_softmax_lead = _softmax_lead


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_whole(a, b, out, r, n, carry, nxt):
    src = _src(a, out)
    m = _shift(out, _max(src, r, 0, n))
    s = _sumexp_only_prefetching(a, out, src, r, n, m)
    _log_store(a, out, r, 0, n, m, out.dtype.type(math.log(s)))
    return 0


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_part(a, b, out, r, lo, hi):
    x = _src(a, out)
    m = _max(x, r, lo, hi)
    s = _sumexp(x, r, lo, hi, _shift(out, m))
    return np.float64(m), np.float64(s)


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_combine(ms, ss):
    big, total = _combine_lse(ms, ss)
    return big, math.log(total)


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_finish(a, b, out, r, lo, hi, m, s, big, log_total):
    _log_store(a, out, r, lo, hi, out.dtype.type(big), out.dtype.type(log_total))


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_backward_lead(g, y, out, r, n):
    return _dot(_src(g, out), y, r, 0, n)


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_backward_whole(g, y, out, r, n, d, nxt):
    src = _src(g, out)
    dn = out.dtype.type(0)
    for lo in range(0, n, AHEAD):
        hi = min(lo + AHEAD, n)
        if nxt >= 0:
            dn += _dot(src, y, nxt, lo, hi)
        _softmax_grad(g, y, out, r, lo, hi, d)
    return dn


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_backward_part(g, y, out, r, lo, hi):
    return np.float64(_dot(_src(g, out), y, r, lo, hi)), 0.0


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_backward_finish(g, y, out, r, lo, hi, p, q, total, _):
    _softmax_grad(g, y, out, r, lo, hi, out.dtype.type(total))


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_backward_lead(g, y, out, r, n):
    return _sum(_src(g, out), r, 0, n)


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_backward_whole(g, y, out, r, n, s, nxt):
    src = _src(g, out)
    sn = out.dtype.type(0)
    for lo in range(0, n, AHEAD):
        hi = min(lo + AHEAD, n)
        if nxt >= 0:
            sn += _sum(src, nxt, lo, hi)
        _log_softmax_grad(g, y, out, r, lo, hi, s)
    return sn


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_backward_part(g, y, out, r, lo, hi):
    return np.float64(_sum(_src(g, out), r, lo, hi)), 0.0


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_backward_finish(g, y, out, r, lo, hi, p, q, total, _):
    _log_softmax_grad(g, y, out, r, lo, hi, out.dtype.type(total))


@njit
def _tseg(a, seg, o, k, i0, i1):
    """As _seg, for the tile segment a[o, k, i0:i1]."""
    if a is None:
        return seg
    return a[o, k, i0:i1]


# Tiles: m (dtype) and s (float64) are scratch vectors of at least i1 - i0 elements; each
# pass walks the L segments a[o, k, i0:i1] (sliced, see the row helpers).


@njit(fastmath=FASTMATH, error_model="numpy")
def _tile_max(a, o, i0, i1, m):
    w = i1 - i0
    for i in range(w):
        m[i] = -np.inf
    for k in range(a.shape[1]):
        x = a[o, k, i0:i1]
        for i in range(w):
            m[i] = _maxnum(m[i], x[i])
    for i in range(w):
        m[i] = _shift(a, m[i])


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_tile(a, b, out, o, i0, i1, m, s):
    src = _src(a, out)
    n = out.shape[1]
    w = i1 - i0
    _tile_max(src, o, i0, i1, m)
    s[:w] = 0.0
    for k in range(n):
        y = out[o, k, i0:i1]
        x = _tseg(a, y, o, k, i0, i1)
        for i in range(w):
            e = _exp_nonpos(x[i] - m[i])
            y[i] = e
            s[i] += e
    for i in range(w):
        m[i] = 1.0 / s[i]
    for k in range(n):
        y = out[o, k, i0:i1]
        for i in range(w):
            y[i] *= m[i]


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_tile(a, b, out, o, i0, i1, m, s):
    src = _src(a, out)
    n = out.shape[1]
    w = i1 - i0
    _tile_max(src, o, i0, i1, m)
    s[:w] = 0.0
    for k in range(n):
        x = src[o, k, i0:i1]
        for i in range(w):
            s[i] += _exp_nonpos(x[i] - m[i])
    for i in range(w):
        s[i] = math.log(s[i])
    for k in range(n):
        y = out[o, k, i0:i1]
        x = _tseg(a, y, o, k, i0, i1)
        for i in range(w):
            y[i] = (x[i] - m[i]) - out.dtype.type(s[i])


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_backward_tile(g, y, out, o, i0, i1, m, s):
    src = _src(g, out)
    n = out.shape[1]
    w = i1 - i0
    s[:w] = 0.0
    for k in range(n):
        x = src[o, k, i0:i1]
        p = y[o, k, i0:i1]
        for i in range(w):
            s[i] += x[i] * p[i]
    for i in range(w):
        m[i] = s[i]
    for k in range(n):
        z = out[o, k, i0:i1]
        x = _tseg(g, z, o, k, i0, i1)
        p = y[o, k, i0:i1]
        for i in range(w):
            z[i] = p[i] * (x[i] - m[i])


@njit(fastmath=FASTMATH, error_model="numpy")
def _log_softmax_backward_tile(g, y, out, o, i0, i1, m, s):
    src = _src(g, out)
    n = out.shape[1]
    w = i1 - i0
    s[:w] = 0.0
    for k in range(n):
        x = src[o, k, i0:i1]
        for i in range(w):
            s[i] += x[i]
    for i in range(w):
        m[i] = s[i]
    for k in range(n):
        z = out[o, k, i0:i1]
        x = _tseg(g, z, o, k, i0, i1)
        p = y[o, k, i0:i1]
        for i in range(w):
            z[i] = x[i] - _exp(p[i]) * m[i]


# --- kernels ----------------------------------------------------------------------------


def _flavoured(parallel):
    """njit a kernel from a factory under a name that says serial or parallel.

    numba's disk cache keys a function by its name, code and closure, not by its
    options: without distinct names a serial kernel could load its parallel twin's
    code (and start OpenMP in a forked child that must stay serial).
    """

    def decorate(kernel):
        kernel.__qualname__ += "_parallel" if parallel else "_serial"
        jit = njit(parallel=parallel, cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
        return interleaved(jit(kernel))

    return decorate


# Row blocks of the rows kernels: enough for any thread count to share out evenly (the
# first row of each block is not reduced ahead); one block when serial.
ROW_BLOCKS = 64


def _rows(lead, whole, part, combine, finish, parallel):
    max_blocks = ROW_BLOCKS if parallel else 1

    @_flavoured(parallel)
    def kernel(a, b, out, chunk, whole_max):
        n_rows, n = out.shape
        if n <= whole_max and n_rows > 0:
            # Blocks of consecutive rows, a few per thread; in a block each row's pass
            # also reduces the next row (lead/whole carry that reduction along).
            n_blocks = min(n_rows, max_blocks)
            for blk in prange(n_blocks):
                r0 = blk * n_rows // n_blocks
                r1 = (blk + 1) * n_rows // n_blocks
                carry = lead(a, b, out, r0, n)
                for r in range(r0, r1):
                    carry = whole(a, b, out, r, n, carry, r + 1 if r + 1 < r1 else -1)
            return
        n_chunks = (n + chunk - 1) // chunk
        for r in prange(n_rows):
            ps = np.empty(n_chunks)
            qs = np.empty(n_chunks)
            for c in range(n_chunks):
                lo = c * chunk
                ps[c], qs[c] = part(a, b, out, r, lo, min(lo + chunk, n))
            p, q = combine(ps, qs)
            for c in range(n_chunks):
                lo = c * chunk
                finish(a, b, out, r, lo, min(lo + chunk, n), ps[c], qs[c], p, q)

    return kernel


def _rows_stream(stream):
    """Rows done whole by ``stream(a, b, out, r, n, tmp)`` with a row of scratch per
    block (out of place, C-contiguous, rows that fit in cache; the wrapper checks)."""

    @_flavoured(True)
    def kernel(a, b, out, chunk, whole_max):
        n_rows, n = out.shape
        n_blocks = min(n_rows, ROW_BLOCKS)
        for blk in prange(n_blocks):
            tmp = np.empty(n, out.dtype)
            for r in range(blk * n_rows // n_blocks, (blk + 1) * n_rows // n_blocks):
                stream(a, b, out, r, n, tmp)
            _store_fence()

    return kernel


def _split(part, combine, finish):
    @interleaved
    @njit(parallel=True, cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(a, b, out, chunk, whole_max):  # whole_max: unused, the rows kernels' signature
        n_rows, n = out.shape
        n_chunks = (n + chunk - 1) // chunk
        ps = np.empty((n_rows, n_chunks))
        qs = np.empty((n_rows, n_chunks))
        for t in prange(n_rows * n_chunks):
            r = t // n_chunks
            c = t - r * n_chunks
            lo = c * chunk
            ps[r, c], qs[r, c] = part(a, b, out, r, lo, min(lo + chunk, n))
        big = np.empty(n_rows)
        small = np.empty(n_rows)
        for r in range(n_rows):
            big[r], small[r] = combine(ps[r], qs[r])
        for t in prange(n_rows * n_chunks):
            r = t // n_chunks
            c = t - r * n_chunks
            lo = c * chunk
            finish(a, b, out, r, lo, min(lo + chunk, n), ps[r, c], qs[r, c], big[r], small[r])

    return kernel


def _cols(tile, parallel):
    @_flavoured(parallel)
    def kernel(a, b, out, tw, n_blocks):
        n_outer, _, n_inner = out.shape
        n_tiles = (n_inner + tw - 1) // tw
        n_tasks = n_outer * n_tiles
        for block in prange(n_blocks):
            m = np.empty(tw, out.dtype)
            s = np.empty(tw)
            for t in range(block * n_tasks // n_blocks, (block + 1) * n_tasks // n_blocks):
                o = t // n_tiles
                i0 = (t - o * n_tiles) * tw
                tile(a, b, out, o, i0, min(i0 + tw, n_inner), m, s)

    return kernel


def _pin_all() -> None:
    """Stable identities for every dispatcher and intrinsic of this module.

    A cached kernel's key holds its closure cells pickled; they pickle the op functions
    by value, with every helper they call, and each helper's (or intrinsic's) identity is
    a uuid drawn at random per process unless pinned (see _kernels.pin_uuid).
    """
    fingerprint = source_fingerprint()
    for name, obj in globals().items():
        if isinstance(obj, Dispatcher):
            pin_uuid(obj)
        else:
            compat.pin_intrinsic_uuid(obj, f"fastact:{__name__}.{name}:{fingerprint}")


class _Generic:
    """A dispatcher compiled only for 'A'-layout signatures with read-only inputs.

    numba converts any array of the same dtype and dimensions (C, F or strided, writeable
    or not) to those when compiling is disabled (from the first compilation on), so
    unusual layouts cost one compilation per dtype (and None pattern), not one per
    combination of layouts and flags.
    ``roles``: per argument, "in" (array or None), "out" (array) or a numba scalar type.
    """

    def __init__(self, dispatcher, roles: tuple):
        self._dispatcher = dispatcher
        self._roles = roles
        self._ready: set = set()
        self._lock = threading.Lock()

    def __call__(self, *args):
        key = tuple(a.dtype.char + str(a.ndim) if isinstance(a, np.ndarray) else a is None for a in args)
        if key not in self._ready:
            self._compile(args, key)
        return self._dispatcher(*args)

    def _compile(self, args: tuple, key: tuple) -> None:
        sig = []
        for a, role in zip(args, self._roles):
            if isinstance(role, str):
                if a is None:
                    sig.append(types.none)
                else:
                    sig.append(
                        types.Array(numpy_support.from_dtype(a.dtype), a.ndim, "A", readonly=role == "in")
                    )
            else:
                sig.append(role)
        with self._lock:
            compat.lock_signatures(self._dispatcher, False)
            try:
                self._dispatcher.compile(tuple(sig))
            finally:
                compat.lock_signatures(self._dispatcher)
            self._ready.add(key)


class Kernel:
    """One kernel as two dispatchers: one that specialises on the argument types, used
    when every array is C-contiguous (the fast, vectorised code), and a _Generic one for
    the rest (strided code: several times slower per element)."""

    def __init__(self, make, roles: tuple):
        self.fast = make()
        self.generic = _Generic(make(), roles)

    def __call__(self, *args):
        for a in args:
            if isinstance(a, np.ndarray) and not a.flags.c_contiguous:
                return self.generic(*args)
        return self.fast(*args)


_ROLES = ("in", "in", "out", types.int64, types.int64)


class Kernels:
    """The kernels of one op: rows (serial, parallel), split, cols (serial, parallel)."""

    def __init__(self, lead, whole, part, combine, finish, tile, stream=None):
        _pin_all()
        # out-of-place rows with non-temporal stores (C-contiguous only), or None
        self.rows_stream = None if stream is None else _rows_stream(stream)
        self.rows = Kernel(lambda: _rows(lead, whole, part, combine, finish, False), _ROLES)
        self.rows_parallel = Kernel(lambda: _rows(lead, whole, part, combine, finish, True), _ROLES)
        self.split = Kernel(lambda: _split(part, combine, finish), _ROLES)
        self.cols = Kernel(lambda: _cols(tile, False), _ROLES)
        self.cols_parallel = Kernel(lambda: _cols(tile, True), _ROLES)


_OPS = {
    "softmax": "_softmax",
    "log_softmax": "_log_softmax",
    "softmax_backward": "_softmax_backward",
    "log_softmax_backward": "_log_softmax_backward",
}
_built: dict[str, object] = {}


def kernels(op: str) -> Kernels:
    """The kernels of ``op`` (a key of _OPS), built (not compiled) on first use."""
    k = _built.get(op)
    if k is None:
        g = globals()
        p = _OPS[op]
        combine = g.get(p + "_combine", _combine_sum)
        parts = ("_lead", "_whole", "_part")
        k = _built[op] = Kernels(
            *(g[p + q] for q in parts), combine, g[p + "_finish"], g[p + "_tile"], g.get(p + "_stream")
        )
    return k


# --- softmax cross-entropy ---------------------------------------------------------------
# One row: max, then exp stored into grad while summing (and, with label smoothing, the
# sum of w_c (m - x_c)), then grad rescaled in place. logits may be grad (in place): each
# logit is read before its slot is overwritten.


@njit(fastmath=REDUCE, error_model="numpy")
def _sumexp_store_smooth(x, out, w, r, n, m):
    o = out[r]
    x = _seg(x, o, r, 0, o.shape[0])
    s = out.dtype.type(0)
    d = out.dtype.type(0)
    for j in range(n):
        v = x[j]
        e = _exp_nonpos(v - m)
        o[j] = e
        s += e
        d += w[j] * (m - v)
    return s, d


@njit(fastmath=FASTMATH, error_model="numpy")
def _affine(out, w, r, n, a, b):
    o = out[r]
    for j in range(n):
        o[j] = o[j] * a - b * w[j]


@njit(fastmath=FASTMATH, error_model="numpy")
def _ce_class_row(x, t, w, wsum, ignore, eps, scale, grad, loss, r):
    """Row r with class target t[r]:
    loss = (1-eps) w_t (lse - x_t) + eps/C sum_c w_c (lse - x_c),
    grad = scale (p ((1-eps) w_t + eps/C sum w) - eps/C w - (1-eps) w_t onehot(t))."""
    n = grad.shape[1]
    k = t[r]
    if k == ignore:
        loss[r] = 0.0
        grad[r] = 0
        return
    wk = np.float64(w[k])
    xk = np.float64(_src(x, grad)[r, k])
    m = _shift(grad, _max(_src(x, grad), r, 0, n))
    smooth = eps / n
    if eps > 0.0:
        s, d = _sumexp_store_smooth(x, grad, w, r, n, m)
    else:
        s = _sumexp_store(x, grad, r, 0, n, m)
        d = grad.dtype.type(0)
    ls = math.log(s)
    loss[r] = (1.0 - eps) * wk * ((np.float64(m) - xk) + ls) + smooth * (np.float64(d) + wsum * ls)
    a = scale * ((1.0 - eps) * wk + smooth * wsum) / s
    if eps > 0.0:
        _affine(grad, w, r, n, grad.dtype.type(a), grad.dtype.type(scale * smooth))
    else:
        _scale(grad, r, 0, n, grad.dtype.type(a))
    grad[r, k] -= grad.dtype.type(scale * (1.0 - eps) * wk)


@njit(fastmath=REDUCE, error_model="numpy")
def _max_wq(x, q, w, r, n, keep, add):
    m = x.dtype.type(-np.inf)
    wq = x.dtype.type(0)
    xr = x[r]
    qr = q[r]
    for j in range(n):
        m = _maxnum(m, xr[j])
        wq += w[j] * (qr[j] * keep + add)
    return m, wq


@njit(fastmath=REDUCE, error_model="numpy")
def _sumexp_store_wq(x, q, w, out, r, n, m, keep, add):
    o = out[r]
    x = _seg(x, o, r, 0, o.shape[0])
    qr = q[r]
    s = out.dtype.type(0)
    d = out.dtype.type(0)
    for j in range(n):
        v = x[j]
        e = _exp_nonpos(v - m)
        o[j] = e
        s += e
        d += w[j] * (qr[j] * keep + add) * (m - v)
    return s, d


@njit(fastmath=FASTMATH, error_model="numpy")
def _prob_grad(out, q, w, r, n, a, scale, keep, add):
    o = out[r]
    qr = q[r]
    for j in range(n):
        o[j] = o[j] * a - scale * w[j] * (qr[j] * keep + add)


@njit(fastmath=FASTMATH, error_model="numpy")
def _ce_prob_row(x, q, w, eps, scale, grad, loss, r):
    """Row r with probabilities q, q' = (1-eps) q + eps/C:
    loss = sum_c w_c q'_c (lse - x_c), grad = scale (p sum_c w_c q'_c - w q')."""
    n = grad.shape[1]
    one = grad.dtype.type(1)
    keep = one - grad.dtype.type(eps)
    add = grad.dtype.type(eps / n)
    m, wq = _max_wq(_src(x, grad), q, w, r, n, keep, add)
    m = _shift(grad, m)
    s, d = _sumexp_store_wq(x, q, w, grad, r, n, m, keep, add)
    loss[r] = np.float64(d) + np.float64(wq) * math.log(s)
    _prob_grad(grad, q, w, r, n, grad.dtype.type(scale * wq / s), grad.dtype.type(scale), keep, add)


def _ce_class_kernel(row, parallel):
    @_flavoured(parallel)
    def kernel(x, t, w, wsum, ignore, eps, scale, grad, loss):
        for r in prange(grad.shape[0]):
            row(x, t, w, wsum, ignore, eps, scale, grad, loss, r)

    return kernel


def _ce_prob_kernel(row, parallel):
    @_flavoured(parallel)
    def kernel(x, q, w, eps, scale, grad, loss):
        for r in prange(grad.shape[0]):
            row(x, q, w, eps, scale, grad, loss, r)

    return kernel


_F8, _I8 = types.float64, types.int64
_CLASS_ROLES = ("in", "in", "in", _F8, _I8, _F8, _F8, "out", "out")
_PROB_ROLES = ("in", "in", "in", _F8, _F8, "out", "out")


class CrossEntropyKernels:
    """Class-index and probability-target kernels, serial and parallel."""

    def __init__(self):
        _pin_all()
        self.cls = Kernel(lambda: _ce_class_kernel(_ce_class_row, False), _CLASS_ROLES)
        self.cls_parallel = Kernel(lambda: _ce_class_kernel(_ce_class_row, True), _CLASS_ROLES)
        self.prob = Kernel(lambda: _ce_prob_kernel(_ce_prob_row, False), _PROB_ROLES)
        self.prob_parallel = Kernel(lambda: _ce_prob_kernel(_ce_prob_row, True), _PROB_ROLES)


def cross_entropy_kernels() -> CrossEntropyKernels:
    k = _built.get("cross_entropy")
    if k is None:
        k = _built["cross_entropy"] = CrossEntropyKernels()
    return k
