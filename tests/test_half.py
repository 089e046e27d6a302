"""The 16-bit storage formats (fastact._half): widening every bfloat16 and float16 pattern
and narrowing float32 values at and around every rounding boundary, against numpy's float16
and ml_dtypes' bfloat16 conversions; both float16 implementations (the hardware one and the
bit-level fallback for targets without F16C) whatever this host has."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ALL16, require
from numba import njit

from fastact import _half
from fastact._platform import cpu


def _loop(f):
    @njit
    def loop(a, out):
        for i in range(a.shape[0]):
            out[i] = f(a[i])

    return loop


def _bf16():
    return require("ml_dtypes").bfloat16


# (name, widen, narrow, numpy dtype) per implementation; the bfloat16 dtype comes from ml_dtypes
FORMATS = {
    "bfloat16": (_half.bf16_widen, _half.bf16_narrow, _bf16),
    "float16": (_half._f16_widen_hw, _half._f16_narrow_hw, lambda: np.float16),
    "float16-bits": (_half._f16_widen_bits, _half._f16_narrow_bits, lambda: np.float16),
}


def _skip_hardware(name):
    if name == "float16" and not _half.hardware_float16():
        pytest.skip(f"no half-precision conversion instructions on {cpu()[0]}")


def _same_or_both_nan(got, want, dtype) -> np.ndarray:
    """Where two arrays of 16-bit patterns differ, other than as two NaNs."""
    return (got != want) & ~(np.isnan(got.view(dtype)) & np.isnan(want.view(dtype)))


def _boundaries(widened: np.ndarray) -> np.ndarray:
    """float32 values around every rounding boundary of a 16-bit format, given all its
    values widened: each value, the midpoint to the next one (exact in float32), and the
    float32 neighbours of both; and a million random float32 bit patterns."""
    finite = np.unique(widened[np.isfinite(widened)].astype(np.float64))
    mids = ((finite[:-1] + finite[1:]) / 2).astype(np.float32)
    values = np.concatenate([finite.astype(np.float32), mids])
    spread = [values, np.nextafter(values, np.float32(np.inf)), np.nextafter(values, np.float32(-np.inf))]
    rng = np.random.default_rng(27)
    spread.append(rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32))
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4e38, -3.4e38, 1e-45, -1e-45, 65520.0, 65519.99]
    spread.append(np.array(edges, np.float32))
    spread.append(np.array([0x7F800001, 0xFFC00001, 0x7FBFFFFF], np.uint32).view(np.float32))  # NaN payloads
    return np.concatenate(spread)


@pytest.mark.parametrize("name", FORMATS)
def test_widen_every_pattern(name):
    _skip_hardware(name)
    widen, _, dtype = FORMATS[name]
    dtype = dtype()
    got = np.empty(ALL16.size, np.float32)
    _loop(widen)(ALL16, got)
    want = ALL16.view(dtype).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])  # -0.0 too
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("name", FORMATS)
def test_narrow_rounds_to_nearest_even(name):
    _skip_hardware(name)
    _, narrow, dtype = FORMATS[name]
    dtype = dtype()
    x = _boundaries(ALL16.view(dtype).astype(np.float32))
    got = np.empty(x.size, np.uint16)
    _loop(narrow)(x, got)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(dtype).view(np.uint16)
    bad = _same_or_both_nan(got, want, dtype)
    assert not bad.any(), (x[bad][:5], got[bad][:5], want[bad][:5])
    nans = got.view(dtype)[np.isnan(x)].view(np.uint16)
    quiet = 0x0040 if name == "bfloat16" else 0x0200
    assert np.all(nans & quiet), "NaN must narrow to a quiet NaN"


@pytest.mark.parametrize("name", FORMATS)
def test_round_trip_is_identity_on_16_bit_values(name):
    """Widening then narrowing gives back every pattern but the NaNs (which stay NaN)."""
    _skip_hardware(name)
    widen, narrow, dtype = FORMATS[name]
    dtype = dtype()

    @njit
    def round_trip(a, out):
        for i in range(a.shape[0]):
            out[i] = narrow(widen(a[i]))

    got = np.empty_like(ALL16)
    round_trip(ALL16, got)
    assert not _same_or_both_nan(got, ALL16, dtype).any()


def test_storage_of_recognises_dtypes_without_ml_dtypes():
    assert _half.storage_of(np.dtype(np.float16)) is _half.FLOAT16
    assert _half.storage_of(np.dtype(np.float32)) is _half.NATIVE
    assert _half.storage_of(np.dtype(np.float64)) is _half.NATIVE
    assert not _half.is_bfloat16(np.dtype([("b", "V2")]))  # a 2-byte void that is not bfloat16
    assert not _half.is_bfloat16(np.dtype(np.int16))


def test_storage_of_ml_dtypes_bfloat16():
    ml = require("ml_dtypes")
    assert _half.storage_of(np.dtype(ml.bfloat16)) is _half.BFLOAT16
    assert not _half.is_bfloat16(np.dtype(ml.float8_e4m3fn))
