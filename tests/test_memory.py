"""In place means no input-sized temporary; out of place allocates just the result.

numpy reports its array allocations to tracemalloc, so the peak traced memory of a
call bounds every temporary array it made (numba's kernels allocate nothing).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
from conftest import peak_bytes

import fastact
from fastact._config import PARALLEL_THRESHOLD

ENTRIES = list(fastact.ACTIVATIONS.values())
N = 2 * PARALLEL_THRESHOLD  # float64: 512 KiB, parallel kernels
SLACK = 16 * 1024  # bytes of Python objects a call may allocate (views, tuples)


def params_of(entry) -> tuple:
    return tuple(0.5 if p.default is None else p.default for p in entry.kernel_params)


def function(entry, suffix: str):
    """The public function of ``entry`` (gelu_tanh is gelu(approximate="tanh"))."""
    if entry.public:
        return getattr(fastact, entry.name + suffix)
    return functools.partial(getattr(fastact, "gelu" + suffix), approximate="tanh")


def layouts(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "contiguous": rng.standard_normal(N),
        "strided": rng.standard_normal((N // 128, 256))[:, ::2],
    }


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_in_place_allocates_nothing(entry, layout):
    x = layouts(0)[layout]
    saved = layouts(1)[layout]
    params = params_of(entry)
    forward = function(entry, "_")
    backward = function(entry, "_backward_")
    assert peak_bytes(lambda: forward(x, *params)) < SLACK
    assert peak_bytes(lambda: backward(x, saved, *params)) < SLACK
    out = np.empty_like(x)
    assert peak_bytes(lambda: function(entry, "")(saved, *params, out=out)) < SLACK
    assert peak_bytes(lambda: function(entry, "_backward")(x, saved, *params, out=out)) < SLACK


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_out_of_place_allocates_the_result(entry, layout):
    x = layouts(0)[layout]
    saved = layouts(1)[layout]
    params = params_of(entry)
    size = x.size * x.itemsize
    forward = peak_bytes(lambda: function(entry, "")(x, *params))
    backward = peak_bytes(lambda: function(entry, "_backward")(x, saved, *params))
    assert size <= forward < size + SLACK
    assert size <= backward < size + SLACK


def test_measurement_sees_numpy_temporaries():
    """The check can fail: a hidden input-sized copy is caught."""
    x = layouts(0)["strided"]
    assert peak_bytes(lambda: fastact.relu_(x.copy())) >= x.size * x.itemsize


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FASTACT_BIG_TESTS") != "1", reason="needs ~9 GB: set FASTACT_BIG_TESTS=1")
def test_more_than_2_31_elements():
    """64-bit indexing: a float32 array of 2^31 + 8 elements, in place, flat and strided."""
    n = (1 << 31) + 8
    x = np.full(n, -1.0, np.float32)
    probes = np.array([0, (1 << 31) - 1, 1 << 31, (1 << 31) + 1, n - 1])
    x[probes] = 2.0
    fastact.relu_(x)  # 1-d parallel kernel
    assert (x[probes] == 2.0).all() and x.min() == 0.0
    assert x.sum(dtype=np.float64) == 2.0 * len(probes)  # every -1 became 0, to the last
    x[probes] = -3.0
    view = x.reshape(2, -1)[:, ::2]  # 2-d strided kernel, offsets past 2^31 elements
    fastact.hardtanh_(view, -2.0, 1.0)
    half = n // 2
    for p in probes:
        col = int(p) % half
        want = -2.0 if col % 2 == 0 else -3.0  # odd columns are outside the view
        assert x[p] == want, (p, x[p])
    del x
