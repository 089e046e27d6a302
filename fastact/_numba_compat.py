"""The numba and llvmlite versions fastact runs on, and every private piece of them it uses.

fastact is tested on numba ``0.68.x`` (llvmlite ``0.50.x``), the range pyproject.toml pins.
Importing fastact with another numba raises an ImportError that names the supported range:
the private API below changes between numba releases, and a deep AttributeError from a
kernel's first compilation would not say why. ``FASTACT_ALLOW_UNTESTED_NUMBA=1`` turns the
error into a warning, for trying a new numba release.

Every private numba/llvmlite API fastact uses is here, and nowhere else (the CUDA
package keeps its own, ``fastact.cuda._arrays``); each was checked against numba 0.68.1 /
llvmlite 0.50.0:

:func:`pin_uuid`: ``Dispatcher._MemoMixin__uuid`` / ``Dispatcher._set_uuid``
    a dispatcher pickles with a uuid drawn at random in each process, and numba keys a
    closure's on-disk cache entry by its pickled cells: kernels close over the table's
    scalar dispatchers, so without a fixed uuid every process would compile everything.
:func:`pin_intrinsic_uuid`, :func:`is_intrinsic`: ``numba.core.extending._Intrinsic``, ``_Intrinsic__uuid``
    the same for the intrinsics the softmax kernels close over.
:func:`vector_interleave`, :func:`interleaved`: ``llvmlite.binding.set_option`` under
``numba.core.compiler_lock.global_compiler_lock``; ``Dispatcher.compile`` wrapped
    LLVM's ``-force-vector-interleave`` is process-wide state: set only while holding
    numba's compiler lock, reset after, around each compilation of fastact's kernels.
:func:`cache_path`: ``Dispatcher._cache._cache_path``
    where numba put the on-disk cache (after its fallbacks), for ``runtime_info``.
:func:`lock_signatures`: ``Dispatcher.disable_compile``
    a dispatcher whose signatures were all compiled up front compiles nothing more.
:func:`fastact_ufunc_loops`: ``numba.np.ufunc.ufuncbuilder.build_ufunc_wrapper`` swapped;
``numba.np.ufunc.wrappers`` (``UArrayArg``, ``_build_ufunc_loop_body``,
``build_slow_loop_body``, ``_wrapper_info``)
    fastact's own ufunc inner loop, below.
:class:`PrunedPipeline`: ``numba.core.compiler.CompilerBase`` / ``DefaultPassBuilder``,
``numba.core.compiler_machinery`` (``FunctionPass``, ``register_pass``),
``numba.core.ir_utils.simplify_CFG``, ``numba.core.untyped_passes.DeadBranchPrune``
    a pipeline for the softmax ops that branch on a closure constant (one definition for
    softmax and log_softmax): the blocks numba's branch pruning leaves are fused, so the
    code is the kept branch's alone (and the machine code what it was before the merge).
:func:`freeze`: ``llvmlite.ir.instructions.Instruction`` built by hand, ``IRBuilder._insert``
    llvmlite's builder has no ``freeze`` instruction; ``stored_whole`` in ``_intrinsics``
    needs one (an identity that LLVM does not look through, and that vectorizes).
:func:`threading_layer_started`, :func:`start_threading_layer`,
:func:`started_threading_layer`, :func:`openmp_vendor`:
``numba.np.ufunc.parallel._is_initialized`` / ``_launch_threads`` / ``_threading_layer``,
``numba.np.ufunc.omppool.openmp_vendor``
    whether a threading layer has started (to load TBB before it does, and to spot a
    process forked from GNU OpenMP code), and starting it under fastact's lock.

Semi-public API used elsewhere (documented for extension writers, but it moves between
releases): ``numba.core.cgutils``, ``numba.core.imputils.impl_ret_borrowed``,
``numba.np.numpy_support`` and llvmlite's IR builder (``fpext``/``fptrunc`` to ``half`` and
``bitcast`` in ``_half``), in the intrinsics of ``_intrinsics``, ``_half``,
``_math`` and ``_softmax_kernels``; ``numba.core.config`` in ``_platform`` and ``_threading``.

The ufunc loop
--------------
The inner loop of fastact's ufuncs, in place of numba's ``@vectorize`` loop.

numba's loop (``numba.np.ufunc.wrappers.build_ufunc_wrapper``, 0.68) picks its
contiguous fast path from the inputs' strides alone. With a contiguous ``x`` and a
strided ``out`` (``ufuncs.relu(x, out=y[::2])``) it writes the results contiguously,
over the wrong elements of ``y``. It is also slow where fastact's users call it most:
in place (``out`` is ``x``) LLVM's run-time overlap check sends the vector loop to its
scalar fallback, and a parameter (a broadcast scalar: stride 0) makes every call take
the strided loop, which is scalar. And a large scalar function (float64 gelu's
backward, softplus) stayed a call per element: the ``alwaysinline`` numba puts on its
declaration is lost when the libraries are linked (docs/TUNING.md has the numbers).

This loop takes the fast path only where every array operand and ``out`` are
contiguous and every parameter has stride 0 (loaded once, before the loop). In place,
the result is stored through the input's own pointer, so there is no overlap to check.
Everything else runs numba's general strided loop. Each call of the scalar carries
``alwaysinline`` itself, and the loop asks for full-width vectors as the kernels do.
It is built from numba's own pieces (``numba.np.ufunc.wrappers``, private API):
tests/test_vectorization.py and tests/test_api.py check the loops of every ufunc.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import llvmlite
import llvmlite.binding as llvm
import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_lock import global_compiler_lock
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.extending import _Intrinsic
from numba.core.ir_utils import simplify_CFG
from numba.core.untyped_passes import DeadBranchPrune
from numba.np.ufunc import ufuncbuilder, wrappers

__all__ = [
    "FULL_WIDTH",
    "PrunedPipeline",
    "LLVMLITE_SUPPORTED",
    "NUMBA_SUPPORTED",
    "cache_path",
    "check_versions",
    "fastact_ufunc_loops",
    "interleaved",
    "is_intrinsic",
    "lock_signatures",
    "openmp_vendor",
    "pin_intrinsic_uuid",
    "pin_uuid",
    "start_threading_layer",
    "started_threading_layer",
    "threading_layer_started",
    "vector_interleave",
    "version_tuple",
]

# [lowest, highest) release tested, as (major, minor); pyproject.toml's pins say the same.
NUMBA_SUPPORTED = ((0, 68), (0, 69))
LLVMLITE_SUPPORTED = ((0, 50), (0, 51))
ALLOW_UNTESTED = "FASTACT_ALLOW_UNTESTED_NUMBA"


def version_tuple(version: str) -> tuple[int, int]:
    """``"0.68.1"`` -> ``(0, 68)``; ``"0.69.0rc1"`` -> ``(0, 69)``."""
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def _range(supported: tuple[tuple[int, int], tuple[int, int]]) -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = supported
    return f">={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"


def check_versions(numba_version: str = numba.__version__, llvmlite_version: str = llvmlite.__version__):
    """Raise ImportError (or warn, with FASTACT_ALLOW_UNTESTED_NUMBA=1) outside the tested range."""
    problems = [
        f"{name} {version} (fastact supports {name}{_range(supported)})"
        for name, version, supported in (
            ("numba", numba_version, NUMBA_SUPPORTED),
            ("llvmlite", llvmlite_version, LLVMLITE_SUPPORTED),
        )
        if not supported[0] <= version_tuple(version) < supported[1]
    ]
    if not problems:
        return
    message = (
        f"fastact was tested with numba{_range(NUMBA_SUPPORTED)} only and uses numba internals that "
        f"change between releases; found {' and '.join(problems)}. Install a supported numba "
        f'(pip install "numba{_range(NUMBA_SUPPORTED)}"), or set {ALLOW_UNTESTED}=1 to try anyway.'
    )
    if os.environ.get(ALLOW_UNTESTED, "") not in ("", "0"):
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    else:
        raise ImportError(message)


# --- on-disk cache keys -----------------------------------------------------------------

_uuid_lock = threading.Lock()


def pin_uuid(dispatcher, key: str) -> None:
    """Give a dispatcher the stable identity ``key`` (once), so closures over it cache."""
    with _uuid_lock:  # two threads pinning at once would trip numba's assert
        if dispatcher._MemoMixin__uuid is None:
            dispatcher._set_uuid(key)


def is_intrinsic(obj) -> bool:
    return isinstance(obj, _Intrinsic)


def pin_intrinsic_uuid(obj, key: str) -> None:
    """The same for an intrinsic."""
    with _uuid_lock:
        if obj._Intrinsic__uuid is None:
            obj._set_uuid(key)


def cache_path(dispatcher) -> str:
    """The directory numba caches ``dispatcher`` in (``_cache._cache_path``)."""
    return dispatcher._cache._cache_path


def lock_signatures(dispatcher, locked: bool = True) -> None:
    """Stop (or allow again) compiling new signatures of ``dispatcher``."""
    dispatcher.disable_compile(locked)


# --- a compiler pipeline ----------------------------------------------------------------


@register_pass(mutates_CFG=True, analysis_only=False)
class _MergeBlocks(FunctionPass):
    """Fuse the chains of blocks that a pruned branch leaves behind."""

    _name = "fastact_merge_blocks"

    def __init__(self):
        FunctionPass.__init__(self)

    def run_pass(self, state):
        state.func_ir.blocks = simplify_CFG(state.func_ir.blocks)
        return True


class PrunedPipeline(CompilerBase):
    """numba's nopython pipeline, with the blocks fused after its first dead-branch pruning.

    numba prunes ``if log:`` on a closure constant before typing, but leaves the blocks
    around the kept branch, linked by jumps: LLVM then lays the code out differently
    (other spills and register choices; the same instructions). Fused, the function is
    the one written without the branch, and compiles to the same machine code.
    """

    def define_pipelines(self):
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.add_pass_after(_MergeBlocks, DeadBranchPrune)
        pm.finalize()
        return [pm]


# --- LLVM's vector interleave -----------------------------------------------------------


@contextmanager
def vector_interleave(count: int) -> Iterator[None]:
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


def interleaved(dispatcher, count: int):
    """Make every compilation of ``dispatcher`` (and of the functions it calls, which
    compile inside it) run under :func:`vector_interleave`."""
    compile_signature = dispatcher.compile

    def compile(sig):
        with vector_interleave(count):
            return compile_signature(sig)

    dispatcher.compile = compile
    return dispatcher


# --- the threading layer's state ----------------------------------------------------------


def _parallel():
    from numba.np.ufunc import parallel

    return parallel


def threading_layer_started() -> bool:
    return bool(_parallel()._is_initialized)


def start_threading_layer() -> None:
    """Start numba's threading layer now (ValueError if the requested one cannot load)."""
    _parallel()._launch_threads()


def started_threading_layer() -> str | None:
    """The layer that has started ("tbb", "omp", "workqueue"), or None. Imports nothing
    (safe in an after-fork hook)."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is None or not parallel._is_initialized:
        return None
    return parallel._threading_layer


def openmp_vendor() -> str:
    """The OpenMP runtime numba's omp layer links ("GNU", "Intel", ...)."""
    return getattr(sys.modules.get("numba.np.ufunc.omppool"), "openmp_vendor", "GNU")


# --- the ufunc loop (see the module docstring) --------------------------------------------

# The LLVM function attribute that lifts the 256-bit cap of LLVM's tuning for Intel's
# AVX-512 server CPUs (see fastact._intrinsics.full_width_vectors).
FULL_WIDTH = '"prefer-vector-width"="512"'


def freeze(builder, value):
    """Emit LLVM's ``freeze`` of ``value`` (its value, or an arbitrary fixed one if poison)."""
    frozen = ir.instructions.Instruction(builder.block, value.type, "freeze", [value])
    builder._insert(frozen)
    return frozen


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
def fastact_ufunc_loops(narrays: int) -> Iterator[None]:
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
