"""How the softmax-family kernels (:mod:`fastact._softmax_kernels`,
:mod:`fastact._xent_kernels`) are compiled, cached and called.

* ``_flavoured``: njit a kernel under a name that says serial or parallel (cached apart).
* ``pin_all``: stable identities for the dispatchers and intrinsics that cached kernels
  close over, so that their on-disk cache keys are the same in every process.
* ``Kernel``: one kernel as a dispatcher specialised for C-contiguous arrays and a
  ``_Generic`` one, compiled for 'A'-layout signatures only, for every other layout.
* ``PrunedPipeline``: numba's pipeline for functions that branch on a closure constant
  (one definition for softmax and log_softmax): the code of the kept branch alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
from numba import njit, types
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.dispatcher import Dispatcher
from numba.core.extending import _Intrinsic
from numba.core.ir_utils import simplify_CFG
from numba.core.untyped_passes import DeadBranchPrune
from numba.np import numpy_support

from ._kernels import FASTMATH, _uuid_lock, interleaved, pin_uuid, source_fingerprint


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


def pin_all(objects: Iterable) -> None:
    """Stable identities for the dispatchers and intrinsics among ``objects`` (say, a
    module's ``globals().values()``; the rest is skipped).

    A cached kernel's key holds its closure cells pickled; they pickle the op functions
    by value, with every helper they call, and each helper's (or intrinsic's) identity is
    a uuid drawn at random per process unless pinned (see _kernels.pin_uuid). An
    intrinsic is named after the module that defines it, whichever module pins it.
    """
    fingerprint = source_fingerprint()
    for obj in list(objects):
        if isinstance(obj, Dispatcher):
            pin_uuid(obj)
        elif isinstance(obj, _Intrinsic):
            with _uuid_lock:
                if obj._Intrinsic__uuid is None:
                    obj._set_uuid(f"fastact:{obj.__module__}.{obj.__qualname__}:{fingerprint}")


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
            self._dispatcher.disable_compile(False)
            try:
                self._dispatcher.compile(tuple(sig))
            finally:
                self._dispatcher.disable_compile()
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
