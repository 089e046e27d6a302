"""Storage formats: how a kernel loads an element into a register and stores one back.

A kernel computes in its arrays' own dtype (float32, float64: :data:`NATIVE`, where load
and store are the identity and the kernel is what it was before formats existed) or
stores 16-bit floats and computes in float32 (:data:`BFLOAT16`, :data:`FLOAT16`). numba
has no 16-bit float type on the CPU, so 16-bit arrays reach the kernels as ``uint16``
views of their bits: ``load`` widens a pattern to float32 (exactly: every 16-bit value is
a float32 value) and ``store`` rounds a float32 to the nearest pattern, ties to even,
overflow to infinity, NaN to a quiet NaN of the same sign. Both are a few integer
instructions, or one conversion instruction, and vectorize.

- bfloat16 is float32's top half: widening is a shift; narrowing adds 0x7FFF plus the
  kept half's lowest bit (round to nearest even) before the shift. AVX-512 BF16's
  ``vcvtneps2bf16`` is not used: it flushes subnormal inputs to zero.
- float16 is LLVM's ``half``: ``fpext``/``fptrunc`` become F16C's ``vcvtph2ps`` /
  ``vcvtps2ph`` (x86 since Ivy Bridge; every AVX2 CPU has it) or AArch64's ``fcvt``.
  Without F16C LLVM calls compiler-rt's ``__extendhfsf2``, which numba's JIT does not
  link (the process crashes): there the bit-level conversions below are compiled
  instead (same results).

The storage a kernel is built for is a compile-time choice (see
:func:`fastact._kernels.KernelSet.stored`); the public functions pick it from the dtype
(:func:`storage_of`), recognising ml_dtypes' bfloat16 without importing ml_dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._platform import cpu

__all__ = [
    "BFLOAT16",
    "FLOAT16",
    "NATIVE",
    "STORAGES",
    "Storage",
    "bf16_narrow",
    "bf16_widen",
    "f16_narrow",
    "f16_widen",
    "hardware_float16",
    "is_bfloat16",
    "storage_of",
]

F16 = np.dtype(np.float16)
U16 = np.dtype(np.uint16)


def is_bfloat16(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is ml_dtypes' bfloat16 (found by name: ml_dtypes need not be installed)."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


# --- bit casts ------------------------------------------------------------------------------


@intrinsic
def _f32_bits(typingctx, x):
    """The bits of float32 ``x`` as a uint32."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@intrinsic
def _f32_from_bits(typingctx, u):
    """The float32 whose bits are the low 32 of integer ``u``."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        value = args[0]
        width = sig.args[0].bitwidth
        if width > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif width < 32:
            value = builder.zext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(u), codegen


# --- bfloat16 --------------------------------------------------------------------------------
# In LLVM IR rather than numba integer arithmetic: numba widens uint32 sums to 64 bits, and the
# vectorized loop then ran in 64-bit lanes (half the elements per instruction).


@intrinsic
def bf16_widen(typingctx, u):
    """The float32 value of bfloat16 bits ``u`` (exact): the bits shifted into float32's top half."""
    if not (isinstance(u, types.Integer) and u.bitwidth == 16):
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        return builder.bitcast(builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16)), ir.FloatType())

    return types.float32(u), codegen


@intrinsic
def bf16_narrow(typingctx, x):
    """float32 ``x`` rounded to the nearest bfloat16's bits (ties to even: add 0x7FFF and the
    kept half's lowest bit, then shift; overflow carries into the exponent, to inf); NaN: the
    top half with the quiet bit set."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        top = builder.lshr(bits, ir.Constant(i32, 16))
        odd = builder.and_(top, ir.Constant(i32, 1))
        rounded = builder.lshr(
            builder.add(builder.add(bits, ir.Constant(i32, 0x7FFF)), odd), ir.Constant(i32, 16)
        )
        quiet = builder.or_(top, ir.Constant(i32, 0x40))
        nan = builder.fcmp_unordered("uno", args[0], args[0])
        return builder.trunc(builder.select(nan, quiet, rounded), ir.IntType(16))

    return types.uint16(x), codegen


# --- float16 ---------------------------------------------------------------------------------


def hardware_float16() -> bool:
    """Whether LLVM converts half<->float in hardware for the target numba compiles for."""
    features = cpu()[1]
    if "f16c" in features or "avx" in features or "sse2" in features:  # x86: F16C or nothing
        return bool(features.get("f16c"))
    return "neon" in features or "fp-armv8" in features  # AArch64: fcvt; others: bits


@intrinsic
def _f16_widen_hw(typingctx, u):
    if not (isinstance(u, types.Integer) and u.bitwidth == 16):
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(u), codegen


@intrinsic
def _f16_narrow_hw(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(x), codegen


@njit(forceinline=True, nogil=True)
def _f16_widen_bits(u):
    # Shift exponent and mantissa into float32's places and rebias the exponent; then
    # inf/NaN get the rest of the exponent and subnormals are renormalised by one float
    # subtraction (exact: the result is a float32 with at most 11 significant bits).
    h = np.uint32(u)
    o = (h & np.uint32(0x7FFF)) << np.uint32(13)
    e = o & np.uint32(0x0F800000)
    o += np.uint32(112 << 23)
    if e == np.uint32(0x0F800000):
        o += np.uint32(112 << 23)
        y = _f32_from_bits(o)
    elif e == np.uint32(0):
        y = _f32_from_bits(o + np.uint32(1 << 23)) - _f32_from_bits(np.uint32(113 << 23))
    else:
        y = _f32_from_bits(o)
    return -y if h & np.uint32(0x8000) else y


@njit(forceinline=True, nogil=True)
def _f16_narrow_bits(x):
    # F. Giesen's float_to_half_fast3_rtne: subnormal results through one float addition
    # (the FPU rounds to nearest even), normal ones by integer rounding of the mantissa.
    bits = _f32_bits(np.float32(x))
    sign = (bits >> np.uint32(16)) & np.uint32(0x8000)
    f = bits & np.uint32(0x7FFFFFFF)
    if f >= np.uint32((127 + 16) << 23):  # overflow, inf or NaN
        o = np.uint32(0x7E00) if f > np.uint32(0x7F800000) else np.uint32(0x7C00)
    elif f < np.uint32(113 << 23):  # a subnormal result (or zero)
        magic = np.uint32(((127 - 15) + (23 - 10) + 1) << 23)
        o = _f32_bits(_f32_from_bits(f) + _f32_from_bits(magic)) - magic
    else:
        odd = (f >> np.uint32(13)) & np.uint32(1)
        o = (f + np.uint32(((15 - 127) << 23) + 0xFFF) + odd) >> np.uint32(13)
    return np.uint16(o | sign)


if hardware_float16():
    f16_widen, f16_narrow = _f16_widen_hw, _f16_narrow_hw
else:
    f16_widen, f16_narrow = _f16_widen_bits, _f16_narrow_bits


# --- storage formats -------------------------------------------------------------------------


@njit(forceinline=True, nogil=True)
def _same(x):
    return x


def _conversions(name: str, widen, narrow):
    """A format's (load, store) as njit functions named after it (the kernels' cache keys
    name the functions they close over: see fastact._kernels.pin_uuid)."""

    def load(u):
        return widen(u)

    def store(x):
        return narrow(np.float32(x))

    jit = njit(forceinline=True, nogil=True)
    load.__name__ = load.__qualname__ = f"_load_{name}"
    store.__name__ = store.__qualname__ = f"_store_{name}"
    return jit(load), jit(store)


@dataclass(frozen=True)
class Storage:
    """How a kernel's arrays hold their elements: ``load`` (element -> the value computed
    with) and ``store`` (computed value -> element), both njit and inlined; ``view``, the
    dtype the kernels see the arrays as (None: their own)."""

    name: str
    load: object
    store: object
    view: np.dtype | None


NATIVE = Storage("native", _same, _same, None)
BFLOAT16 = Storage("bfloat16", *_conversions("bfloat16", bf16_widen, bf16_narrow), U16)
FLOAT16 = Storage("float16", *_conversions("float16", f16_widen, f16_narrow), U16)
STORAGES = {s.name: s for s in (NATIVE, BFLOAT16, FLOAT16)}


def storage_of(dtype: np.dtype) -> Storage:
    """The storage format of an array of ``dtype`` (float16, bfloat16, or native)."""
    if dtype == F16:
        return FLOAT16
    if is_bfloat16(dtype):
        return BFLOAT16
    return NATIVE
