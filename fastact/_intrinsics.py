"""Intrinsics of the elementwise kernels: LLVM pieces numba does not expose.

Built with numba's public ``@intrinsic`` (and ``cgutils``, see fastact._numba_compat).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from ._numba_compat import FULL_WIDTH, freeze
from ._platform import has_avx512

__all__ = ["FULL_WIDTH", "full_width_vectors", "params_like", "prefetch", "row_view", "stored_whole"]


@intrinsic
def full_width_vectors(typingctx):
    """Let LLVM vectorize the function this is called in with 512-bit registers.

    For Intel's AVX-512 server CPUs (skylake-avx512 to emeraldrapids) LLVM's tuning
    prefers 256-bit vectors (``prefer-256-bit``, against the clock drop of 512-bit
    code on Skylake-SP), so without this the loops use half the width the CPU has
    (and PyTorch uses). The attribute only raises the preferred width: on a CPU
    without 512-bit registers it changes nothing, and no result changes anywhere.
    It emits no code; call it in the loop body, which ``prange`` outlines into a
    function of its own.
    """

    def codegen(context, builder, signature, args):
        # llvmlite only knows keyword attributes; a string attribute goes in as is.
        set.add(builder.function.attributes, FULL_WIDTH)
        return context.get_dummy_value()

    return types.none(), codegen


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
def params_like(typingctx, a, params):
    """``params`` (a tuple of numbers) converted to the dtype the kernels compute ``a``'s
    elements in: its own, or float32 for 16-bit floats (which reach the kernels as uint16
    views, see fastact._half).

    The public functions pass parameters as Python floats (each numpy scalar costs
    a fraction of a microsecond to make) and every kernel converts them here, once per
    call, rounding to nearest as ``np.float32(p)`` does; float32 arithmetic then stays
    float32.
    """
    if not isinstance(a, types.Array) or not isinstance(params, types.BaseTuple):
        return None
    to = a.dtype if isinstance(a.dtype, types.Float) else types.float32
    result = types.UniTuple(to, len(params)) if len(params) else types.Tuple(())

    def codegen(context, builder, sig, args):
        values = [
            context.cast(builder, builder.extract_value(args[1], i), frm, to)
            for i, frm in enumerate(sig.args[1])
        ]
        return context.make_tuple(builder, sig.return_type, values)

    return result(a, params), codegen


@intrinsic
def row_view(typingctx, a, i):
    """Row ``i`` of 2-d ``a`` as a C-contiguous 1-d view, for arrays whose inner stride
    is their itemsize (the dispatcher checks; nothing here does). numba types ``a[i]`` of
    a non-contiguous array with a run-time stride, and LLVM does not vectorize such a
    loop (docs/TUNING.md has the numbers)."""
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


@intrinsic
def stored_whole(typingctx, x):
    """``x``, for an in-place loop's store, made opaque to LLVM where the target lacks AVX-512.

    In ``out[i] = x if x > 0 else 0`` with ``out`` the array ``x`` was read from, LLVM sees
    that the lanes keeping ``x`` need no store and writes only the others with a masked
    store. With AVX2 that is ``vmaskmovps``/``vmaskmovpd``, microcoded on AMD: relu in
    place ran at half the memory ceiling (docs/TUNING.md). LLVM's ``freeze`` (an identity
    for any value that is not poison, which LLVM does not look through and does vectorize;
    ``llvm.arithmetic.fence`` stops vectorization) makes the loop store every lane.
    AVX-512's masked stores are fast, so there ``x`` passes through untouched.
    """
    if not isinstance(x, (types.Float, types.Integer)):  # integers: 16-bit floats' patterns
        return None

    def codegen(context, builder, sig, args):
        (value,) = args
        if has_avx512():
            return value
        return freeze(builder, value)

    return x(x), codegen
