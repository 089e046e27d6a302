"""Compiled elementwise kernels, built from the scalar functions of the table.

For each activation there are forward kernels ``k(x, out, *params)`` and backward
kernels ``k(grad, saved, out, *params)``, each in four flavours: 1-d contiguous or
2-d strided, serial or ``parallel=True``; and a serial 1-d one for ``out`` that is the
first input, ``k(out, *params)`` / ``k(saved, out, *params)`` (see :func:`_unary_in_place`).
Kernels never validate; the public wrappers in :mod:`fastact._api` do. Everything is
compiled lazily, on first use of a signature, and cached on disk.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import llvmlite.binding as llvm
from numba import njit, prange, types
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic

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


def _unary(scalar, parallel):
    def unary(x, out, *params):
        for i in prange(x.shape[0]):
            full_width_vectors()
            out[i] = scalar(x[i], *params)

    return _jit(unary, scalar, parallel)


def _unary_2d(scalar, parallel):
    def unary_2d(x, out, *params):
        for i in prange(x.shape[0]):
            full_width_vectors()
            for j in range(x.shape[1]):
                out[i, j] = scalar(x[i, j], *params)

    return _jit(unary_2d, scalar, parallel)


def _unary_in_place(scalar):
    """The serial kernel for ``out`` that is ``x``, element for element.

    Given two pointers, LLVM guards its vector loop with a run-time overlap check, and
    ``out`` overlapping ``x`` sends it to the scalar loop: in place, a serial sigmoid ran
    4-6x slower than out of place. With one array there is nothing to check. (The
    parallel kernels vectorize in place: numba compiles their loop bodies with noalias
    arguments. The 2-d kernels are not helped this way: with a run-time inner stride
    and one array, LLVM does not vectorize at all.)
    """

    def unary_in_place(out, *params):
        for i in range(out.shape[0]):
            full_width_vectors()
            out[i] = scalar(out[i], *params)

    return _jit(unary_in_place, scalar, False)


def _binary(scalar, parallel):
    def binary(a, b, out, *params):
        for i in prange(a.shape[0]):
            full_width_vectors()
            out[i] = scalar(a[i], b[i], *params)

    return _jit(binary, scalar, parallel)


def _binary_2d(scalar, parallel):
    def binary_2d(a, b, out, *params):
        for i in prange(a.shape[0]):
            full_width_vectors()
            for j in range(a.shape[1]):
                out[i, j] = scalar(a[i, j], b[i, j], *params)

    return _jit(binary_2d, scalar, parallel)


def _binary_in_place(scalar):
    """The serial kernel for ``out`` that is ``a`` (grad): out[i] = f(out[i], b[i])."""

    def binary_in_place(b, out, *params):
        for i in range(out.shape[0]):
            full_width_vectors()
            out[i] = scalar(out[i], b[i], *params)

    return _jit(binary_in_place, scalar, False)


@dataclass(frozen=True)
class KernelSet:
    """The compiled flavours of one scalar function."""

    serial: object
    parallel: object
    serial_2d: object
    parallel_2d: object
    serial_in_place: object  # 1-d, out is the first input: k(out, *params) / k(saved, out, *params)


# The modules whose code ends up inside compiled kernels.
KERNEL_SOURCES = ("_kernels.py", "definitions.py", "_math.py", "_libm.py", "_softmax_kernels.py")


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
    flat, strided = (_unary, _unary_2d) if nin == 1 else (_binary, _binary_2d)
    in_place = _unary_in_place if nin == 1 else _binary_in_place
    serial, parallel = flat(scalar, False), flat(scalar, True)
    return KernelSet(serial, parallel, strided(scalar, False), strided(scalar, True), in_place(scalar))


@cache
def forward_kernels(name: str) -> KernelSet:
    return _kernel_set(ACTIVATIONS[name].forward, 1)


@cache
def backward_kernels(name: str) -> KernelSet:
    return _kernel_set(ACTIVATIONS[name].backward, 2)
