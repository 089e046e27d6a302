"""Every kernel of the table compiles to a SIMD loop with no call into libm.

numba has no SVML here: one ``math.exp`` in a scalar function would turn the whole
loop into scalar code calling libm, 7-28x slower, without failing any accuracy
test. This test recompiles each kernel's Python source exactly as
:mod:`fastact._kernels` does (without the on-disk cache, which hides the assembly)
and reads the assembly.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ENTRIES, LIBM_CALL
from numba import njit

from fastact import _kernels
from fastact.testing import default_params

# packed (vector) float arithmetic on ymm registers: 8 float32 / 4 float64 per instruction
PACKED = re.compile(r"\bv(?!mov)\w+p[sd]\b[^\n]*%ymm")
SCALAR_MATH = re.compile(r"\bv(?:add|sub|mul|div|\w*fn?m(?:add|sub)\w*)s[sd]\b")
PACKED_STORE = re.compile(r"\bvmovup[sd]\s+%ymm\d+, ")


def _assembly(entry, direction, dtype):
    """The assembly of the serial 1-d kernel of ``entry``, compiled afresh for ``dtype``."""
    kernels = (_kernels.forward_kernels if direction == "forward" else _kernels.backward_kernels)(entry.name)
    fresh = njit(fastmath=_kernels.FASTMATH, error_model="numpy")(kernels.serial.py_func)
    x = np.linspace(-4.0, 4.0, 64).astype(dtype)
    params = tuple(np.dtype(dtype).type(p) for p in default_params(entry))
    nin = 1 if direction == "forward" else 2
    fresh(*(x,) * nin, np.empty_like(x), *params)
    return fresh.inspect_asm(fresh.signatures[0])


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_kernel_loop_is_simd_without_libm_calls(entry, dtype, direction):
    asm = _assembly(entry, direction, dtype)
    assert not LIBM_CALL.findall(asm), f"{entry.name} {direction}: libm calls {LIBM_CALL.findall(asm)}"
    if SCALAR_MATH.search(asm) or not PACKED_STORE.search(asm):  # else: a constant, stored 8 / 4 at a time
        assert len(PACKED.findall(asm)) >= 2, f"{entry.name} {direction} {np.dtype(dtype)}: no SIMD loop"


def test_the_check_sees_a_libm_loop():
    """The patterns catch what they are for: a scalar loop calling libm's exp."""
    import math

    @njit(fastmath=_kernels.FASTMATH, error_model="numpy")
    def libm_loop(x, out):
        for i in range(x.shape[0]):
            out[i] = math.exp(x[i])

    x = np.ones(8)
    libm_loop(x, np.empty_like(x))
    asm = libm_loop.inspect_asm(libm_loop.signatures[0])
    assert LIBM_CALL.findall(asm)
    assert not PACKED.findall(asm)
