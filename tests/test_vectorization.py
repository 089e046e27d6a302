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

from fastact import _kernels, runtime_info
from fastact._intrinsics import FULL_WIDTH
from fastact.definitions import ACTIVATIONS
from fastact.testing import default_params

# packed (vector) float arithmetic on ymm or zmm registers: 8 / 16 float32 per instruction
PACKED = re.compile(r"\bv(?!mov)\w+p[sd]\b[^\n]*%[yz]mm")
SCALAR_MATH = re.compile(r"\bv(?:add|sub|mul|div|\w*fn?m(?:add|sub)\w*)s[sd]\b")
PACKED_STORE = re.compile(r"\bvmovup[sd]\s+%[yz]mm\d+, ")
# AVX/AVX2 masked stores: microcoded on AMD, several times slower than a whole store
MASKED_STORE = re.compile(r"\bvmaskmovp[sd]\s+%[xy]mm\d+, %[xy]mm\d+, ")


def _assembly(entry, direction, dtype, flavour="serial"):
    """The assembly of a serial kernel of ``entry``, compiled afresh for ``dtype``."""
    kernels = (_kernels.forward_kernels if direction == "forward" else _kernels.backward_kernels)(entry.name)
    fresh = njit(fastmath=_kernels.FASTMATH, error_model="numpy")(getattr(kernels, flavour).py_func)
    x = np.linspace(-4.0, 4.0, 128).astype(dtype)
    # views as the dispatcher passes them: contiguous rows, or strided ones
    view = {"rows": lambda a: a.reshape(8, 16)[:, :8], "2d": lambda a: a.reshape(8, 16)[:, ::2]}
    view = next((v for key, v in view.items() if key in flavour), lambda a: a)
    params = tuple(float(p) for p in default_params(entry))  # as the public functions pass them
    nin = (1 if direction == "forward" else 2) - flavour.endswith("in_place")  # in place: out is input 0
    fresh(*(view(x),) * nin, view(np.zeros_like(x)), *params)
    return fresh.inspect_asm(fresh.signatures[0])


@pytest.mark.parametrize(
    "flavour", ["serial", "serial_in_place", "serial_rows", "serial_rows_in_place", "serial_2d"]
)
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_kernel_loop_is_simd_without_libm_calls(entry, dtype, direction, flavour):
    asm = _assembly(entry, direction, dtype, flavour)
    assert not LIBM_CALL.findall(asm), f"{entry.name} {direction}: libm calls {LIBM_CALL.findall(asm)}"
    if flavour.endswith("in_place"):  # LLVM would store only the lanes a select changes (relu's <0)
        assert not MASKED_STORE.search(asm), f"{entry.name} {direction} {flavour}: masked stores"
    light = entry.light_forward if direction == "forward" else entry.light_backward
    if flavour == "serial_2d" and light:
        return  # a one-select scalar keeps its plain strided loop
    if SCALAR_MATH.search(asm) or not PACKED_STORE.search(asm):  # else: a constant, stored 8 / 4 at a time
        assert len(PACKED.findall(asm)) >= 2, f"{entry.name} {direction} {np.dtype(dtype)}: no SIMD loop"


FLAVOURS = [
    *("serial", "parallel", "serial_2d", "parallel_2d", "serial_in_place", "parallel_in_place"),
    *("serial_rows", "parallel_rows", "serial_rows_in_place", "parallel_rows_in_place"),
]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_kernels_ask_for_full_width_vectors(flavour):
    """Every kernel flavour carries the attribute that lifts LLVM's 256-bit preference,
    on the function that holds the loop (for prange, the outlined parfor function).
    Checked in the IR, so on every CPU, with or without 512-bit registers."""
    kernel = getattr(_kernels.forward_kernels("sigmoid"), flavour)
    jit = njit(parallel="parallel" in flavour, fastmath=_kernels.FASTMATH, error_model="numpy")
    fresh = jit(kernel.py_func)
    x = np.linspace(-4.0, 4.0, 64).reshape((8, 8) if "2d" in flavour or "rows" in flavour else 64)
    fresh(*((x,) if flavour.endswith("in_place") else (x, np.empty_like(x))))
    ir = fresh.inspect_llvm(fresh.signatures[0])
    groups = dict(re.findall(r"^attributes (#\d+) = \{(.*)\}$", ir, re.M))
    loop_holder = "parfor" if "parallel" in flavour else kernel.py_func.__qualname__
    defines = re.findall(r"^define .*@(_ZN\S*" + loop_holder + r"\S*)\(.*\) [^{]*?(#\d+) \{$", ir, re.M)
    assert defines, f"no function named *{loop_holder}* in the IR"
    for function, group in defines:
        assert FULL_WIDTH in groups[group], f"{function}: {groups[group]}"


@pytest.mark.skipif(runtime_info()["simd"] != "avx512", reason="the CPU has no AVX-512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_avx512_cpus_get_512_bit_loops(dtype):
    """On an AVX-512 CPU the hot loop uses zmm registers (LLVM's default for Intel's
    server CPUs would be ymm: half the width)."""
    asm = _assembly(ACTIVATIONS["sigmoid"], "forward", dtype)
    assert re.search(r"\bvmovup[sd]\s+%zmm\d+, ", asm), "no 512-bit store in sigmoid's loop"


@pytest.mark.skipif(runtime_info()["simd"] != "avx2", reason="not an AVX2 build")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_avx2_builds_get_256_bit_loops_and_no_avx512(dtype):
    """An AVX2 build (an AVX2 CPU, or .ci/run's NUMBA_CPU_NAME/FEATURES on an AVX-512 host):
    the loop runs on ymm registers and nothing asks for AVX-512."""
    asm = _assembly(ACTIVATIONS["sigmoid"], "forward", dtype)
    assert re.search(r"\bvmovup[sd]\s+%ymm\d+, ", asm) and "zmm" not in asm


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


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_flat_kernels_prefetch_where_the_target_cpu_wants_it(direction):
    """The 1-d kernels prefetch ahead of their blocks except on AMD Zen (docs/TUNING.md)."""
    asm = _assembly(ACTIVATIONS["sigmoid"], direction, np.float32, "serial_in_place")
    assert ("prefetcht0" in asm) == _kernels.PREFETCH


def test_software_prefetch_follows_the_cpu_name(monkeypatch):
    from fastact import _platform

    names = {"znver4": False, "znver3": False, "sapphirerapids": True, "skylake-avx512": True}
    for name, expected in names.items():
        monkeypatch.setattr(_platform, "cpu", lambda name=name: (name, {}))
        assert _platform.software_prefetch() is expected


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_backwards_declared_not_to_read_saved_do_not(entry):
    """The kernels prefetch ``saved`` only where the entry says its backward reads it (a
    prefetch of an input the scalar ignores streams it for nothing): where it says not,
    the backward gives the same result whatever ``saved`` holds."""
    g = np.linspace(-3.0, 3.0, 64)
    params = tuple(float(p) for p in default_params(entry))
    results = {entry.backward(0.5, s, *params) for s in (-2.0, -0.5, 0.0, 0.5, 3.0, 5.0, 7.0, np.inf)}
    if not entry.backward_reads_saved:
        assert len(results) == 1
        for s in (np.zeros_like(g), np.full_like(g, np.nan)):
            out = [entry.backward(gi, si, *params) for gi, si in zip(g, s)]
            np.testing.assert_array_equal(out, [entry.backward(gi, 1.0, *params) for gi in g])
    else:
        assert len(results) > 1


@pytest.fixture(scope="module")
def ufunc_loops():
    """name -> the assembly of each loop of fastact.ufuncs.<name>, built afresh."""
    import fastact._numba_compat as loops
    import fastact.ufuncs as ufuncs

    built: list = []
    original = loops._builder

    def recording(narrays):
        build = original(narrays)

        def record(*args):
            built.append(build(*args))
            return built[-1]

        return record

    loops._builder = recording
    ufuncs._build.cache_clear()
    try:
        assembly = {}
        for name in ufuncs.__all__:
            del built[:]
            getattr(ufuncs, name)
            assembly[name] = [(info.name, info.library.get_asm_str()) for info in built]
    finally:
        loops._builder = original
        ufuncs._build.cache_clear()
    return assembly


@pytest.mark.parametrize("name", [n for e in ENTRIES for n in (e.name, e.name + "_backward")])
def test_ufunc_loops_inline_the_scalar_and_vectorize(ufunc_loops, name):
    """Each ufunc loop (float32, float64) has the scalar inlined (no call to it: the
    float64 gelu backward was a call per element, 6x slower) and packed arithmetic."""
    assert len(ufunc_loops[name]) == 2
    for wrapper, asm in ufunc_loops[name]:
        scalar = wrapper.removeprefix("__ufunc__.")
        calls = re.findall(rf"(?:call\w*\s+|movabsq\s+\$){re.escape(scalar)}\b", asm)
        assert not calls, f"{wrapper}: calls the scalar"
        assert not LIBM_CALL.findall(asm), f"{wrapper}: libm calls {LIBM_CALL.findall(asm)}"
        if re.search(r"\$memset\b", asm) and not SCALAR_MATH.search(asm):
            continue  # a constant result (step's gradient): LLVM stores it with memset (AVX2 builds)
        assert len(PACKED.findall(asm)) >= 2, f"{wrapper}: no SIMD loop"
