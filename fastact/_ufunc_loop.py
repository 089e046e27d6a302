"""The inner loop of fastact's ufuncs, in place of numba's ``@vectorize`` loop.

numba's loop (``numba.np.ufunc.wrappers.build_ufunc_wrapper``, 0.68) picks its
contiguous fast path from the inputs' strides alone. With a contiguous ``x`` and a
strided ``out`` (``ufuncs.relu(x, out=y[::2])``) it writes the results contiguously,
over the wrong elements of ``y``. It is also slow where fastact's users call it most:
in place (``out`` is ``x``) LLVM's run-time overlap check sends the vector loop to its
scalar fallback, and a parameter (a broadcast scalar: stride 0) makes every call take
the strided loop, which is scalar. And a large scalar function (float64 gelu's
backward, softplus) stayed a call per element: the ``alwaysinline`` numba puts on its
declaration is lost when the libraries are linked (15-17 ns/element against 2.8).

This loop takes the fast path only where every array operand and ``out`` are
contiguous and every parameter has stride 0 (loaded once, before the loop). In place,
the result is stored through the input's own pointer, so there is no overlap to check.
Everything else runs numba's general strided loop. Each call of the scalar carries
``alwaysinline`` itself, and the loop asks for full-width vectors as the kernels do.
It is built from numba's own pieces (``numba.np.ufunc.wrappers``, private API):
tests/test_vectorization.py and tests/test_api.py check the loops of every ufunc.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from llvmlite import ir
from numba.core import cgutils, types
from numba.core.compiler_lock import global_compiler_lock
from numba.np.ufunc import ufuncbuilder, wrappers

from ._kernels import FULL_WIDTH

__all__ = ["fastact_loops"]


def _builder(narrays: int):
    """A replacement of numba's build_ufunc_wrapper for ufuncs whose first ``narrays``
    inputs are arrays and whose other inputs are parameters."""

    def build_ufunc_wrapper(library, context, fname, signature, objmode, cres):
        if objmode:  # never for fastact's nopython functions
            return wrappers.build_ufunc_wrapper(library, context, fname, signature, objmode, cres)
        wrapperlib = context.codegen().create_library("fastact_ufunc_wrapper")
        module = wrapperlib.create_ir_module("")
        scalar_type = context.call_conv.get_function_type(signature.return_type, signature.args)
        func = ir.Function(module, scalar_type, fname)
        func.attributes.add("alwaysinline")
        byte_ptr = ir.IntType(8).as_pointer()
        intp = context.get_value_type(types.intp)
        # numpy's loop: (char **args, npy_intp *dims, npy_intp *steps, void *data)
        loop_args = [byte_ptr.as_pointer(), intp.as_pointer(), intp.as_pointer(), byte_ptr]
        loop_type = ir.FunctionType(ir.VoidType(), loop_args)
        wrapper = ir.Function(module, loop_type, "__ufunc__." + func.name)
        builder = ir.IRBuilder(wrapper.append_basic_block("entry"))
        _loops(context, builder, wrapper, func, signature, cres, narrays)
        for block in wrapper.blocks:
            for instruction in block.instructions:
                if isinstance(instruction, ir.CallInstr) and instruction.callee is func:
                    instruction.attributes.add("alwaysinline")
        set.add(wrapper.attributes, FULL_WIDTH)
        wrapperlib.add_ir_module(module)
        wrapperlib.add_linking_library(library)
        return wrappers._wrapper_info(library=wrapperlib, env=cres.environment, name=wrapper.name)

    return build_ufunc_wrapper


def _loops(context, builder, wrapper, func, signature, cres, narrays: int) -> None:
    """The wrapper's body: the contiguous loops (in place or not) or numba's strided one."""
    args, dims, steps, _ = wrapper.args
    env = builder.load(context.declare_env_global(builder.module, context.get_env_name(cres.fndesc)))
    pyapi = context.get_python_api(builder)
    count = builder.load(dims)
    intp = context.get_value_type(types.intp)
    inputs = [wrappers.UArrayArg(context, builder, args, steps, i, t) for i, t in enumerate(signature.args)]
    out = wrappers.UArrayArg(context, builder, args, steps, len(inputs), signature.return_type)
    zero = context.get_constant(types.intp, 0)
    offsets = [cgutils.alloca_once_value(builder, zero) for _ in inputs]
    out_offset = cgutils.alloca_once_value(builder, zero)
    arrays, params = inputs[:narrays], inputs[narrays:]

    contiguous = out.is_unit_strided
    for a in arrays:
        contiguous = builder.and_(contiguous, a.is_unit_strided)
    for p in params:
        contiguous = builder.and_(contiguous, builder.icmp_unsigned("==", p.step, zero))

    def contiguous_loop(target):
        # the parameters are read before the loop: read inside it, LLVM sinks the load into
        # the branch that uses it (celu's x <= 0) and vectorizes it as a masked gather,
        # whose masked-off lanes (0.0) then divide x, raising numpy's divide-by-zero flag
        values = [context.unpack_value(builder, p.fe_type, p.dataptr) for p in params]
        with cgutils.for_range(builder, count, intp=intp) as loop:

            def load():
                return [a.load_aligned(loop.index) for a in arrays] + values

            def store(value):
                target.store_aligned(value, loop.index)

            wrappers._build_ufunc_loop_body(
                load, store, context, func, builder, inputs, out, offsets, out_offset, signature, pyapi, env
            )

    with builder.if_else(contiguous, likely=True) as (fast, general):
        with fast:
            same = builder.icmp_unsigned(
                "==", builder.ptrtoint(out.dataptr, intp), builder.ptrtoint(arrays[0].dataptr, intp)
            )
            if signature.args[0] != signature.return_type:  # not fastact's signatures
                same = cgutils.false_bit
            with builder.if_else(same) as (in_place, other):
                with in_place:
                    contiguous_loop(arrays[0])  # read and write through one pointer
                with other:
                    contiguous_loop(out)
        with general, cgutils.for_range(builder, count, intp=intp):
            wrappers.build_slow_loop_body(
                context, func, builder, inputs, out, offsets, out_offset, signature, pyapi, env
            )
    builder.ret_void()


@contextmanager
def fastact_loops(narrays: int) -> Iterator[None]:
    """Build the ufunc loops compiled inside this block with :func:`_builder`.

    numba looks ``build_ufunc_wrapper`` up in ``numba.np.ufunc.ufuncbuilder`` when it
    adds a loop; it is swapped under numba's global compiler lock, so no other
    compilation sees it.
    """
    with global_compiler_lock:
        original = ufuncbuilder.build_ufunc_wrapper
        ufuncbuilder.build_ufunc_wrapper = _builder(narrays)
        try:
            yield
        finally:
            ufuncbuilder.build_ufunc_wrapper = original
