"""Compiled elementwise kernels, built from the scalar functions of the table.

For each activation there are forward kernels ``k(x, out, *params)`` and backward
kernels ``k(grad, saved, out, *params)``, each in four flavours: 1-d contiguous or
2-d strided, serial or ``parallel=True``. Kernels never validate; the public
wrappers in :mod:`fastact._api` do. Everything is compiled lazily, on first use
of a signature, and cached on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from numba import njit, prange

from .definitions import ACTIVATIONS

# Fast-math flags that cannot change a result's NaN/inf behaviour: contraction into
# FMAs only. ("nnan"/"ninf" would let LLVM drop NaN checks; "reassoc" changes results.)
FASTMATH = {"contract"}


def _unary(scalar, parallel):
    @njit(parallel=parallel, cache=True, fastmath=FASTMATH, nogil=True)
    def kernel(x, out, *params):
        for i in prange(x.shape[0]):
            out[i] = scalar(x[i], *params)

    return kernel


def _unary_2d(scalar, parallel):
    @njit(parallel=parallel, cache=True, fastmath=FASTMATH, nogil=True)
    def kernel(x, out, *params):
        for i in prange(x.shape[0]):
            for j in range(x.shape[1]):
                out[i, j] = scalar(x[i, j], *params)

    return kernel


def _binary(scalar, parallel):
    @njit(parallel=parallel, cache=True, fastmath=FASTMATH, nogil=True)
    def kernel(a, b, out, *params):
        for i in prange(a.shape[0]):
            out[i] = scalar(a[i], b[i], *params)

    return kernel


def _binary_2d(scalar, parallel):
    @njit(parallel=parallel, cache=True, fastmath=FASTMATH, nogil=True)
    def kernel(a, b, out, *params):
        for i in prange(a.shape[0]):
            for j in range(a.shape[1]):
                out[i, j] = scalar(a[i, j], b[i, j], *params)

    return kernel


@dataclass(frozen=True)
class KernelSet:
    """The four compiled flavours of one scalar function."""

    serial: object
    parallel: object
    serial_2d: object
    parallel_2d: object


@cache
def source_fingerprint() -> str:
    """A hash of fastact's own sources.

    numba's cache notices a change in a kernel's own code, not in the functions it
    calls from other files (the table's scalars, the math layer): the fingerprint
    goes into every kernel's cache key so a stale kernel is never loaded.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def pin_uuid(dispatcher) -> None:
    """Give a scalar dispatcher a stable identity, so closures over it cache.

    numba keys a closure's on-disk cache entry by its pickled cell contents, and a
    dispatcher pickles with a uuid drawn at random in each process: without a fixed
    one, every process would compile every kernel again.
    """
    if dispatcher._MemoMixin__uuid is None:
        func = dispatcher.py_func
        dispatcher._set_uuid(f"fastact:{func.__module__}.{func.__qualname__}:{source_fingerprint()}")


def _kernel_set(scalar, nin: int) -> KernelSet:
    pin_uuid(scalar)
    flat, strided = (_unary, _unary_2d) if nin == 1 else (_binary, _binary_2d)
    return KernelSet(flat(scalar, False), flat(scalar, True), strided(scalar, False), strided(scalar, True))


@cache
def forward_kernels(name: str) -> KernelSet:
    return _kernel_set(ACTIVATIONS[name].forward, 1)


@cache
def backward_kernels(name: str) -> KernelSet:
    return _kernel_set(ACTIVATIONS[name].backward, 2)
