"""LLVM-level building blocks of the softmax and cross-entropy row kernels.

``_maxnum`` (llvm.maxnum); ``_row_max`` and ``_row_max_masked`` (a row's max, vectorised by
hand; ``stored_max`` gives their twins for rows of 16-bit patterns, widened to float32 in
the vector registers) and ``_count_true`` (a mask row's count); ``_stream_scaled`` and ``_store_fence``
(non-temporal stores of a scaled row); the software prefetch of the next row
(``_prefetch_step``, ``_prefetch_row``). :mod:`fastact._softmax_kernels` builds on them, and
:mod:`fastact._xent_kernels` on both; this module imports neither.
"""

from __future__ import annotations

import llvmlite.binding as llb
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._half import BFLOAT16, FLOAT16, Storage, hardware_float16
from ._intrinsics import prefetch as _prefetch
from ._kernels import FASTMATH

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


def _max_codegen(masked: bool, widen=None):
    """The codegen of a row max: of x, or (``masked``) of c x where the bool row w is True
    (-inf elsewhere). Contiguous rows in vectors (MAX_ACCUMULATORS of MAX_VECTOR_BYTES per
    iteration, then single vectors, then scalars); strided ones element by element.

    ``widen``: x holds 16-bit patterns, ``widen(builder, v)`` the float32 value(s) of
    the i16 (vector) v; the vectors are those of float32 (MAX_VECTOR_BYTES of float32
    lanes), so the max is taken in the order of a float32 row's."""

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        fty = context.get_value_type(sig.return_type)
        width = MAX_VECTOR_BYTES // context.get_abi_sizeof(fty)
        ety = fty if widen is None else ir.IntType(16)  # the element as stored
        size = context.get_abi_sizeof(ety)
        vty = ir.VectorType(fty, width)
        i8, i64 = ir.IntType(8), ir.IntType(64)
        n = builder.extract_value(arr.shape, 0)
        stride = builder.extract_value(arr.strides, 0)
        base = builder.ptrtoint(arr.data, i64)
        neg_inf = ir.Constant(fty, float("-inf"))
        neg_infs = ir.Constant(vty, [neg_inf] * width)
        contiguous = builder.icmp_signed("==", stride, ir.Constant(i64, size))
        if masked:
            warr = context.make_array(sig.args[1])(context, builder, args[1])
            wstride = builder.extract_value(warr.strides, 0)
            wbase = builder.ptrtoint(warr.data, i64)
            c = args[2]
            cs = builder.insert_element(ir.Constant(vty, ir.Undefined), c, ir.Constant(ir.IntType(32), 0))
            cs = builder.shuffle_vector(
                cs,
                ir.Constant(vty, ir.Undefined),
                ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width),
            )
            contiguous = builder.and_(contiguous, builder.icmp_signed("==", wstride, ir.Constant(i64, 1)))

        def bigger(v, m):  # v > m ? v : m (a NaN v keeps m)
            return builder.select(builder.fcmp_ordered(">", v, m), v, m)

        def at(start, i, ty, step):  # pointer to element i
            return builder.inttoptr(builder.add(start, builder.mul(i, step)), ty.as_pointer())

        def value(i, lanes: bool, step, wstep):  # the element(s) at i, scaled and masked
            v = builder.load(at(base, i, ir.VectorType(ety, width) if lanes else ety, step), align=size)
            if widen is not None:
                v = widen(builder, v)
            if not masked:
                return v
            v = builder.fmul(v, cs if lanes else c)  # rounded once, as the other passes
            keep = builder.load(at(wbase, i, ir.VectorType(i8, width) if lanes else i8, wstep), align=1)
            zero = ir.Constant(keep.type, None)
            return builder.select(builder.icmp_unsigned("!=", keep, zero), v, neg_infs if lanes else neg_inf)

        result = cgutils.alloca_once_value(builder, neg_inf)
        with builder.if_else(contiguous) as (vec, strided):
            with vec:
                step, wstep = ir.Constant(i64, size), ir.Constant(i64, 1)
                accs = [cgutils.alloca_once_value(builder, neg_infs) for _ in range(MAX_ACCUMULATORS)]
                block = width * MAX_ACCUMULATORS
                n_blocks = builder.sdiv(n, ir.Constant(i64, block))
                with cgutils.for_range(builder, n_blocks) as loop:
                    first = builder.mul(loop.index, ir.Constant(i64, block))
                    for k, acc in enumerate(accs):
                        i = builder.add(first, ir.Constant(i64, k * width))
                        builder.store(bigger(value(i, True, step, wstep), builder.load(acc)), acc)
                acc = accs[0]
                for other in accs[1:]:
                    builder.store(bigger(builder.load(other), builder.load(acc)), acc)
                done = builder.mul(n_blocks, ir.Constant(i64, block))
                n_vec = builder.sdiv(builder.sub(n, done), ir.Constant(i64, width))
                with cgutils.for_range(builder, n_vec) as loop:
                    i = builder.add(done, builder.mul(loop.index, ir.Constant(i64, width)))
                    builder.store(bigger(value(i, True, step, wstep), builder.load(acc)), acc)
                vacc = builder.load(acc)
                m = builder.extract_element(vacc, ir.Constant(ir.IntType(32), 0))
                for k in range(1, width):
                    m = bigger(builder.extract_element(vacc, ir.Constant(ir.IntType(32), k)), m)
                builder.store(m, result)
                tail = builder.add(done, builder.mul(n_vec, ir.Constant(i64, width)))
                with cgutils.for_range_slice(builder, tail, n, ir.Constant(i64, 1)) as (i, _):
                    builder.store(bigger(value(i, False, step, wstep), builder.load(result)), result)
            with strided:
                with cgutils.for_range(builder, n) as loop:
                    v = value(loop.index, False, stride, wstride if masked else None)
                    builder.store(bigger(v, builder.load(result)), result)
        return builder.load(result)

    return codegen


def _float_row(x) -> bool:
    return isinstance(x, types.Array) and x.ndim == 1 and x.dtype in (types.float32, types.float64)


@intrinsic
def _row_max(typingctx, x):
    """max(x) of a 1-D array, NaN entries ignored, -inf when empty or all NaN."""
    if not _float_row(x):
        return None
    return x.dtype(x), _max_codegen(masked=False)


@intrinsic
def _row_max_masked(typingctx, x, w, c):
    """max_j (c x[j] where w[j], else -inf) of a 1-D array x and a bool row w of its
    length (any stride: a broadcast mask row too), c x rounded once; NaN ignored, -inf
    when empty or nothing is included."""
    ok = _float_row(x) and isinstance(w, types.Array) and w.ndim == 1 and w.dtype == types.boolean
    if not ok or c != x.dtype:
        return None
    return x.dtype(x, w, c), _max_codegen(masked=True)


# Their twins for rows of 16-bit patterns (uint16 arrays), returning float32: the widening
# of each storage format in LLVM IR, on scalars or vectors.


def _lanes(ty, value):
    """``ty`` (a scalar type), or a vector of it as wide as ``value`` is."""
    return ir.VectorType(ty, value.type.count) if isinstance(value.type, ir.VectorType) else ty


def _splat(value, constant):
    vector = isinstance(value.type, ir.VectorType)
    return ir.Constant(value.type, [constant] * value.type.count if vector else constant)


def _widen_bfloat16(builder, v):  # as fastact._half.bf16_widen
    wide = builder.zext(v, _lanes(ir.IntType(32), v))
    return builder.bitcast(builder.shl(wide, _splat(wide, 16)), _lanes(ir.FloatType(), v))


def _widen_float16(builder, v):  # as fastact._half's hardware f16_widen (F16C's vcvtph2ps)
    return builder.fpext(builder.bitcast(v, _lanes(ir.HalfType(), v)), _lanes(ir.FloatType(), v))


def _u16_row(x) -> bool:
    return isinstance(x, types.Array) and x.ndim == 1 and x.dtype == types.uint16


def _stored_max_intrinsics(name: str, widen):
    def row_max(typingctx, x):
        if not _u16_row(x):
            return None
        return types.float32(x), _max_codegen(masked=False, widen=widen)

    def row_max_masked(typingctx, x, w, c):
        ok = _u16_row(x) and isinstance(w, types.Array) and w.ndim == 1 and w.dtype == types.boolean
        if not ok or c != types.float32:
            return None
        return types.float32(x, w, c), _max_codegen(masked=True, widen=widen)

    for f in (row_max, row_max_masked):  # named apart: pin_all names an intrinsic after it
        f.__name__ = f.__qualname__ = f"_{f.__name__}_{name}"
    return intrinsic(row_max), intrinsic(row_max_masked)


_row_max_bfloat16, _row_max_masked_bfloat16 = _stored_max_intrinsics("bfloat16", _widen_bfloat16)
_row_max_float16, _row_max_masked_float16 = _stored_max_intrinsics("float16", _widen_float16)


def stored_max(storage: Storage):
    """(row_max, row_max_masked) of ``_row_max``'s signatures for uint16 rows of 16-bit
    ``storage``, returning float32; None where the widening is not plain IR (float16 on
    a CPU without F16C: the caller loops instead)."""
    if storage is BFLOAT16:
        return _row_max_bfloat16, _row_max_masked_bfloat16
    if storage is FLOAT16 and hardware_float16():
        return _row_max_float16, _row_max_masked_float16
    return None


COUNT_VECTOR_BYTES = 32  # mask bytes tested at once: one AVX2 compare and movemask, or an AVX-512 test


@intrinsic
def _count_true(typingctx, w):
    """How many entries of the 1-D bool array ``w`` are True. Contiguous ones
    COUNT_VECTOR_BYTES at a time (a compare, a bitcast of the lanes to an integer and a
    popcount: LLVM's own vectorisation widens every byte to a 64-bit lane first, 4x
    slower); strided ones (a broadcast row) one by one."""
    if not (isinstance(w, types.Array) and w.ndim == 1 and w.dtype == types.boolean):
        return None

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        i8, i64 = ir.IntType(8), ir.IntType(64)
        lanes = COUNT_VECTOR_BYTES
        vty = ir.VectorType(i8, lanes)
        n = builder.extract_value(arr.shape, 0)
        stride = builder.extract_value(arr.strides, 0)
        base = builder.ptrtoint(arr.data, i64)
        ity = ir.IntType(lanes)
        popcount = builder.module.declare_intrinsic("llvm.ctpop", [ity], ir.FunctionType(ity, [ity]))
        total = cgutils.alloca_once_value(builder, ir.Constant(i64, 0))

        def add(count):
            builder.store(builder.add(builder.load(total), count), total)

        def byte(i, step):
            b = builder.load(builder.inttoptr(builder.add(base, builder.mul(i, step)), i8.as_pointer()))
            return builder.zext(builder.icmp_unsigned("!=", b, ir.Constant(i8, 0)), i64)

        with builder.if_else(builder.icmp_signed("==", stride, ir.Constant(i64, 1))) as (vec, strided):
            with vec:
                n_vec = builder.sdiv(n, ir.Constant(i64, lanes))
                with cgutils.for_range(builder, n_vec) as loop:
                    at = builder.add(base, builder.mul(loop.index, ir.Constant(i64, lanes)))
                    v = builder.load(builder.inttoptr(at, vty.as_pointer()), align=1)
                    bits = builder.bitcast(builder.icmp_unsigned("!=", v, ir.Constant(vty, None)), ity)
                    add(builder.zext(builder.call(popcount, [bits]), i64))
                done = builder.mul(n_vec, ir.Constant(i64, lanes))
                with cgutils.for_range_slice(builder, done, n, ir.Constant(i64, 1)) as (i, _):
                    add(byte(i, ir.Constant(i64, 1)))
            with strided:
                with cgutils.for_range(builder, n) as loop:
                    add(byte(loop.index, stride))
        return builder.load(total)

    return types.int64(w), codegen


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
