"""Shared pytest setup: hypothesis profiles and helpers to reach every entry point."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastact as fa
from fastact.definitions import ACTIVATIONS, Activation

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("FASTACT_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,  # the first call of a kernel compiles it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")

ENTRIES = list(ACTIVATIONS.values())
DTYPES = [np.float32, np.float64]
SUFFIXES = ("", "_", "_backward", "_backward_")

# A call into libm (or SVML) in compiled assembly: numba calls through ``movabsq $exp, %reg``.
LIBM_CALL = re.compile(
    r"(?:\b(?:call|jmp)\w*\s+\*?|\bmovabsq\s+\$)"
    r"(?:__svml_\w+|(?:exp|exp2|expm1|log|log1p|log2|tanh|erf|erfc|pow|fma|sigmoid)f?)(?:@PLT)?\b"
)


def require(module: str):
    """Import ``module`` of an optional peer (torch, dask, asv, ...) for a test.

    Skips (the test, or the whole module when called at import) only when the peer's
    top-level package is not installed. An installed peer that fails to import raises
    its error: a broken install is a failure to see, not a skip (pytest's importorskip
    skips on any ImportError; with --continue-on-collection-errors the other modules
    still run)."""
    top = module.partition(".")[0]
    if importlib.util.find_spec(top) is None:
        pytest.skip(f"{top} is not installed", allow_module_level=True)
    return importlib.import_module(module)


def entry_point(entry: Activation, suffix: str = ""):
    """The public function for ``entry`` (gelu_tanh is gelu(approximate="tanh"))."""
    if entry.public:
        return getattr(fa, entry.name + suffix)
    return functools.partial(getattr(fa, "gelu" + suffix), approximate="tanh")


@pytest.fixture(params=ENTRIES, ids=lambda e: e.name)
def entry(request) -> Activation:
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return request.param


def peak_bytes(call) -> int:
    """Peak traced memory above the starting level while ``call()`` runs (the first call,
    which compiles or loads the kernel, is outside the measurement)."""
    call()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


# --- 16-bit floats (test_half_*) ------------------------------------------------------------

ALL16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)  # every 16-bit pattern
HALF_FORMATS = ("float16", "bfloat16")


def half_dtype(name: str):
    """numpy's float16, or ml_dtypes' bfloat16 (skips where ml_dtypes is not installed)."""
    return np.float16 if name == "float16" else require("ml_dtypes").bfloat16


@pytest.fixture(params=HALF_FORMATS)
def fmt(request):
    return half_dtype(request.param)


def f32(a):
    return a.astype(np.float32)


def rounded_f32(function, *arrays, **kw):
    """The oracle: ``function`` on float32 copies of ``arrays``, rounded once to their dtype."""
    dtype = arrays[0].dtype
    with np.errstate(all="ignore"):
        return function(*(a.astype(np.float32) for a in arrays), **kw).astype(dtype)


def assert_same(got, want, what=""):
    """Equal 16-bit patterns, or both NaN."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    g, w = got.view(np.uint16), want.view(np.uint16)
    nan = np.isnan(got.astype(np.float32))
    np.testing.assert_array_equal(nan, np.isnan(want.astype(np.float32)), err_msg=f"NaNs of {what}")
    bad = (g != w) & ~nan
    assert not bad.any(), f"{what}: {bad.sum()} differ, e.g. got {got[bad][:4]} want {want[bad][:4]}"


def ulp16(a):
    """The spacing of 16-bit values at each |a| (away from zero), as float64."""
    mag = a.view(np.uint16) & np.uint16(0x7FFF)
    up = np.minimum(mag + np.uint16(1), np.uint16(0x7FFF)).view(a.dtype)
    return np.abs(f32(up).astype(np.float64) - f32(mag.view(a.dtype)))


def assert_rounded(got, want32, what="", ulps=16, atol=None):
    """``got`` (16-bit) is ``want32`` (float32) rounded to got's format, or a value within
    ``ulps`` float32 ulps of it (plus ``atol``, an array like want32: the float32 result's
    absolute error bound where it cancels) rounded to nearest."""
    dtype = got.dtype
    with np.errstate(all="ignore"):
        want = want32.astype(dtype)
    assert got.shape == want32.shape, what
    g, w = f32(got), f32(want)
    nan = np.isnan(w)
    np.testing.assert_array_equal(np.isnan(g), nan, err_msg=f"NaNs of {what}")
    bad = (got.view(np.uint16) != want.view(np.uint16)) & ~nan
    if not bad.any():
        return
    tol = ulps * np.spacing(np.abs(want32[bad])).astype(np.float64) + 0.5 * ulp16(got[bad])
    if atol is not None:
        tol += np.broadcast_to(atol, want32.shape)[bad]
    ok = np.abs(g[bad].astype(np.float64) - want32[bad]) <= tol
    assert ok.all(), f"{what}: got {got[bad][~ok][:4]}, want {want32[bad][~ok][:4]} rounded"
