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
