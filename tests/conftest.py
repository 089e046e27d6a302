"""Shared pytest setup: hypothesis profiles and helpers to reach every entry point."""

from __future__ import annotations

import functools
import os
import re

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
