"""Every activation x dtype x entry point against its float64 reference.

Forward: within the entry's stated ulp bound (``entry.ulp``, or the absolute tail
bound ``TAIL_ATOL`` where a tail can only be absolute) on random data at several
scales, the edge set and the break points. Backward: against the analytic
derivative, and against central finite differences of the float64 kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ENTRIES, entry_point
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastact.testing import (
    assert_specials,
    break_points,
    default_params,
    forward_ulp,
    neighbours,
    rounded,
    sample,
    stated_bound,
)


def forward_error(entry, x, params):
    """Max ulp error of the forward on ``x``, and where it occurs."""
    got = entry_point(entry)(x, *params)
    assert got.dtype == x.dtype and got.shape == x.shape
    with np.errstate(all="ignore"):
        ref = entry.reference(x.astype(np.float64), *rounded(params, x.dtype))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"NaN positions of {entry.name}")
    # Measured against the stated bound: a ratio <= 1 passes.
    err = forward_ulp(entry, x, got, params) / np.maximum(stated_bound(entry, x), 0.5)
    return float(np.max(err, initial=0.0)), x.reshape(-1)[np.argmax(err)] if err.size else None


def test_forward_accuracy(entry, dtype):
    params = default_params(entry)
    x = sample(entry, dtype, params)
    worst, where = forward_error(entry, x, params)
    assert worst <= 1, f"{entry.name} {np.dtype(dtype)}: {worst:.2f} x the stated bound at x={where!r}"


@given(data=st.data())
def test_forward_on_any_floats(data):
    entry = data.draw(st.sampled_from(ENTRIES), label="entry")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    x = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=6)), label="x")
    worst, where = forward_error(entry, x, default_params(entry))
    assert worst <= 1, f"{entry.name}: {worst:.2f} x the stated bound at x={where!r}"


def test_signed_zero_and_specials(entry, dtype):
    """The sign of a zero result and the infinities follow the reference exactly."""
    params = default_params(entry)
    x = np.array([0.0, -0.0, np.inf, -np.inf], dtype=dtype)
    got = entry_point(entry)(x, *params)
    with np.errstate(all="ignore"):
        ref = entry.reference(x.astype(np.float64), *params)
    assert_specials(entry, x, got, ref, params)


def _backward_points(entry, dtype, params):
    """Sample points away from break points (where the derivative jumps) and NaN."""
    x = sample(entry, dtype, params)
    x = x[np.isfinite(x)]
    close = neighbours(break_points(entry, params), dtype, steps=4)
    return x[~np.isin(x, close)]


def test_backward_analytic(entry, dtype):
    """grad * f'(x) from the saved tensor vs the float64 analytic derivative."""
    params = default_params(entry)
    x = _backward_points(entry, dtype, params)
    g = np.random.default_rng(1).uniform(0.5, 2.0, x.size).astype(dtype)
    saved = entry_point(entry)(x, *params) if entry.saves == "output" else x
    got = entry_point(entry, "_backward")(g, saved, *params)
    with np.errstate(all="ignore"):
        ref = g.astype(np.float64) * entry.reference_derivative(x.astype(np.float64), *rounded(params, dtype))
    eps = np.finfo(dtype).eps
    # A saved output carries its own rounding into the derivative: allow a few eps
    # of the derivative's scale (|g|) on top of a few ulps of relative error.
    tol = 16 * eps * np.abs(ref) + 16 * eps * np.abs(g)
    bad = ~(np.abs(got - ref) <= tol)
    assert not bad.any(), (
        f"{entry.name} {np.dtype(dtype)} backward: x={x[bad][:5]} got={got[bad][:5]} ref={ref[bad][:5]}"
    )


def test_backward_finite_differences(entry):
    """The float64 backward kernel agrees with central differences of the forward kernel."""
    params = default_params(entry)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(400) * 4
    points = np.array(break_points(entry, params))
    x = x[np.min(np.abs(x[:, None] - points[None, :]), axis=1, initial=np.inf) > 1e-3]
    h = 1e-6 * np.maximum(1.0, np.abs(x))
    forward = entry_point(entry)
    numeric = (forward(x + h, *params) - forward(x - h, *params)) / (2 * h)
    saved = forward(x, *params) if entry.saves == "output" else x
    analytic = entry_point(entry, "_backward")(np.ones_like(x), saved, *params)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=entry.name)
    reference = entry.reference_derivative(x, *params)
    np.testing.assert_allclose(reference, numeric, rtol=1e-5, atol=1e-7, err_msg=f"{entry.name} reference")


def test_entry_points_agree(entry, dtype):
    """new array, out=, in place, backward and backward in place give identical bits."""
    params = default_params(entry)
    x = sample(entry, dtype, params, n=300)
    y = entry_point(entry)(x, *params)
    out = np.full_like(x, 7.0)
    assert entry_point(entry)(x, *params, out=out) is out
    np.testing.assert_array_equal(out, y)
    x2 = x.copy()
    assert entry_point(entry, "_")(x2, *params) is x2
    np.testing.assert_array_equal(x2, y)

    g = np.linspace(-2, 2, x.size).astype(dtype)
    saved = y if entry.saves == "output" else x
    gx = entry_point(entry, "_backward")(g, saved, *params)
    out = np.full_like(x, 7.0)
    assert entry_point(entry, "_backward")(g, saved, *params, out=out) is out
    np.testing.assert_array_equal(out, gx)
    g2 = g.copy()
    assert entry_point(entry, "_backward_")(g2, saved, *params) is g2
    np.testing.assert_array_equal(g2, gx)


@pytest.mark.parametrize("size", [0, 1, 7, 40_000, 100_003])
def test_sizes_serial_and_parallel(entry, size):
    """Both sides of the serial/parallel threshold give the same bits as small calls."""
    params = default_params(entry)
    x = np.random.default_rng(size).standard_normal(size).astype(np.float32) * 5
    y = entry_point(entry)(x, *params)
    chunks = [entry_point(entry)(c, *params) for c in np.array_split(x, max(1, size // 1000))]
    np.testing.assert_array_equal(y, np.concatenate(chunks) if size else y)
    saved = y if entry.saves == "output" else x
    g = np.ones_like(x)
    gx = entry_point(entry, "_backward")(g, saved, *params)
    gx_chunks = [
        entry_point(entry, "_backward")(a, b, *params)
        for a, b in zip(np.array_split(g, max(1, size // 1000)), np.array_split(saved, max(1, size // 1000)))
    ]
    np.testing.assert_array_equal(gx, np.concatenate(gx_chunks) if size else gx)
