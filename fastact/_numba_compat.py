"""The numba and llvmlite versions fastact runs on, and every private piece of them it uses.

fastact is tested on numba ``0.68.x`` (llvmlite ``0.50.x``), the range pyproject.toml pins.
Importing fastact with another numba raises an ImportError that names the supported range:
the private API below changes between numba releases, and a deep AttributeError from a
kernel's first compilation would not say why. ``FASTACT_ALLOW_UNTESTED_NUMBA=1`` turns the
error into a warning, for trying a new numba release.

Private numba/llvmlite API in use, each checked against numba 0.68.1 / llvmlite 0.50.0:

``numba.core.extending._Intrinsic`` and its ``_Intrinsic__uuid`` (``_softmax_jit``)
    an intrinsic pickles with a random uuid; the softmax dispatchers pin it so closures
    over intrinsics cache on disk across processes.
``Dispatcher._MemoMixin__uuid`` / ``Dispatcher._set_uuid`` (``_kernels.pin_uuid``)
    the same for the table's scalar dispatchers, which kernels close over: the uuid (with a
    hash of the kernel sources) becomes the on-disk cache key.
``Dispatcher.compile`` replaced per dispatcher (``_kernels.interleaved``)
    to wrap each compilation in the interleave option below.
``Dispatcher.disable_compile`` (``_softmax_jit``)
    the softmax dispatch classes lock their signature set after warmup.
``numba.core.compiler_lock.global_compiler_lock`` + ``llvmlite.binding.set_option``
(``_kernels.vector_interleave``, ``_ufunc_loop``)
    ``-force-vector-interleave=4`` is process-wide LLVM state, set only while holding
    numba's compiler lock and reset after (the loops run 1.3-1.7x faster, see docs).
``numba.core.cgutils``, ``numba.core.imputils.impl_ret_borrowed``, llvmlite IR builder
(``_kernels``, ``_math``, ``_row_intrinsics``)
    intrinsics: row views of 2-d arrays, prefetch, function attributes (512-bit vectors),
    bit casts, ``llvm.ldexp``, ``llvm.maxnum``, rounding a parameter to the arrays' dtype.
    ``cgutils`` is semi-public but changes between releases.
``numba.np.ufunc.ufuncbuilder.build_ufunc_wrapper`` swapped, ``numba.np.ufunc.wrappers``
(``UArrayArg``, ``_build_ufunc_loop_body``, ``build_slow_loop_body``, ``_wrapper_info``)
(``_ufunc_loop``)
    fastact's own ufunc inner loop (numba's wrote strided outputs contiguously).
``numba.np.ufunc.parallel._is_initialized`` / ``_launch_threads``, ``numba.np.ufunc.omppool``
(``_runtime``)
    whether a threading layer has started (to load TBB first, and to spot an OpenMP
    process that forked), and starting it under fastact's lock.
``numba.core.compiler.CompilerBase`` / ``DefaultPassBuilder``, ``numba.core.compiler_machinery``
(``FunctionPass``, ``register_pass``), ``numba.core.ir_utils.simplify_CFG``,
``numba.core.untyped_passes.DeadBranchPrune`` (``_softmax_jit.PrunedPipeline``)
    a custom pipeline for the softmax ops that branch on a closure constant: the blocks
    left by numba's branch pruning are fused so that the code is the kept branch's alone.
``numba.np.numpy_support`` (``_softmax_jit``)
    numpy dtype <-> numba type, for signatures given up front.
``numba.cuda`` internals (``fastact.cuda._arrays``)
    ``numba.cuda.simulator.cudadrv.devicearray.FakeCUDAArray``: to accept the simulator's
    arrays in tests (numba-cuda 0.30.x).
"""

from __future__ import annotations

import os
import re
import warnings

import llvmlite
import numba

__all__ = ["LLVMLITE_SUPPORTED", "NUMBA_SUPPORTED", "check_versions", "version_tuple"]

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
