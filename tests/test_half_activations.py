"""Elementwise activations on bfloat16 and float16 arrays: every 16-bit value, forward and
backward, equals the float32 kernel's result rounded once to the format (numpy's float16 and
ml_dtypes' bfloat16 conversions); the entry points, layouts, and errors on a few activations.

Compile count is what costs here (CI starts from an empty numba cache): the exhaustive tests
run one flavour (serial, contiguous) per activation, format and direction; the layout tests
use three activations (a light one, a transcendental one, one with parameters).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    ALL16,
    ENTRIES,
    HALF_FORMATS,
    assert_same,
    entry_point,
    half_dtype,
    peak_bytes,
    rounded_f32,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastact as fa
from fastact import _config
from fastact.definitions import ACTIVATIONS
from fastact.testing import default_params


@pytest.fixture
def serial(monkeypatch):
    """Serial kernels only: one compilation fewer per call shape (parallelism is tested on float32)."""
    monkeypatch.setattr(_config, "PARALLEL_THRESHOLD", 1 << 40)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_value(entry, fmt, serial):
    """Forward on all 65,536 patterns; backward with saved = all patterns and grads a
    permutation of them (so every grad value meets some saved value)."""
    params = default_params(entry)
    x = ALL16.view(fmt)
    forward, backward = entry_point(entry), entry_point(entry, "_backward")
    want = rounded_f32(lambda a: forward(a, *params), x)
    assert_same(forward(x, *params), want, f"{entry.name} forward")
    grad = np.random.default_rng(27).permutation(ALL16).view(fmt)
    want = rounded_f32(lambda g, s: backward(g, s, *params), grad, x)
    assert_same(backward(grad, x, *params), want, f"{entry.name} backward")


# --- entry points and layouts, on three activations ----------------------------------------

LAYOUT_ENTRIES = [ACTIVATIONS[n] for n in ("relu", "gelu", "leaky_relu")]


def _base(fmt, shape=(13, 17), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3).astype(np.float32).astype(fmt)


VIEWS = {
    "contiguous": lambda a: a,
    "fortran": lambda a: np.asfortranarray(a),
    "rows": lambda a: a[::2, :11],  # contiguous rows
    "strided": lambda a: a[:, ::3],
    "reversed": lambda a: a[::-1, ::-2],
    "3d": lambda a: a.reshape(13, 1, 17)[:, :, 1:],
    "0d": lambda a: a[3, 4, ...],
    "empty": lambda a: a[:0],
}


@pytest.mark.parametrize("entry", LAYOUT_ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("view", VIEWS)
def test_entry_points_and_layouts(entry, fmt, view, serial):
    params = default_params(entry)
    make = VIEWS[view]
    x, grad = make(_base(fmt)), make(_base(fmt, seed=1))
    f, f_, b, b_ = (entry_point(entry, s) for s in ("", "_", "_backward", "_backward_"))
    want = rounded_f32(lambda a: f(a, *params), x)
    assert_same(f(x, *params), want, "forward")
    out = make(np.zeros_like(_base(fmt)))
    assert f(x, *params, out=out) is out
    assert_same(out, want, "forward out=")
    xc = x.copy()
    x_view = make(_base(fmt))  # the same values, in the view's own layout, written in place
    assert f_(x_view, *params) is x_view
    assert_same(x_view, want, "forward in place")
    np.testing.assert_array_equal(x.view(np.uint16), xc.view(np.uint16))
    want_b = rounded_f32(lambda g, s: b(g, s, *params), grad, x)
    assert_same(b(grad, x, *params), want_b, "backward")
    out = make(np.zeros_like(_base(fmt)))
    assert b(grad, x, *params, out=out) is out
    assert_same(out, want_b, "backward out=")
    g = make(_base(fmt, seed=1))
    assert b_(g, x, *params) is g
    assert_same(g, want_b, "backward in place")


def test_out_overlapping_input(fmt, serial):
    """out one element along from x: x is read before it is overwritten."""
    base = _base(fmt, (64,))
    want = rounded_f32(fa.gelu, base[:-1])
    fa.gelu(base[:-1], out=base[1:])
    assert_same(base[1:], want, "gelu, out overlapping x")


@given(data=st.data())
def test_any_shape_and_values(data):
    fmt = half_dtype(data.draw(st.sampled_from(HALF_FORMATS), label="format"))
    name = data.draw(st.sampled_from(["relu", "gelu"]), label="activation")
    x = data.draw(hnp.arrays(np.uint16, hnp.array_shapes(min_dims=0, max_dims=3, max_side=6)), label="bits")
    x = x.view(fmt)
    function = getattr(fa, name)
    assert_same(function(x), rounded_f32(function, x), name)


def test_in_place_allocates_no_copy(fmt, serial):
    """16-bit in place: no float32 (or 16-bit) temporary the size of the input."""
    x = _base(fmt, (1 << 18,))
    g = _base(fmt, (1 << 18,), seed=1)
    for call in (lambda: fa.gelu_(x), lambda: fa.relu_backward_(g, x)):
        assert peak_bytes(call) < x.nbytes // 8


# --- errors, before anything is written ---------------------------------------------------


def test_mixed_dtypes_are_type_errors(fmt):
    x = _base(fmt, (8,))
    other = np.float32 if fmt is np.float16 else np.float16
    before = x.copy()
    with pytest.raises(TypeError, match="saved has dtype"):
        fa.relu_backward_(x, x.astype(other))
    with pytest.raises(TypeError, match="saved has dtype"):
        fa.relu_backward(x, x.astype(np.float32))
    with pytest.raises(TypeError, match="out has dtype"):
        fa.relu(x, out=np.empty(8, np.float32))
    with pytest.raises(TypeError, match="out has dtype"):
        fa.relu_backward(x, x, out=np.empty(8, other))
    np.testing.assert_array_equal(x.view(np.uint16), before.view(np.uint16))


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.dtype("V2"), np.complex64])
def test_other_dtypes_are_type_errors(dtype):
    with pytest.raises(TypeError, match="float16, or ml_dtypes' bfloat16"):
        fa.relu(np.zeros(4, dtype))
    with pytest.raises(TypeError, match="float16, or ml_dtypes' bfloat16"):
        fa.relu_(np.zeros(4, dtype))


def test_read_only_is_a_value_error(fmt):
    x = _base(fmt, (8,))
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fa.gelu_(x)
    with pytest.raises(ValueError, match="read-only"):
        fa.gelu(x.copy(), out=x)


def test_ufuncs_compute_16_bit_inputs_in_float32(fmt):
    """numba's ufuncs have no 16-bit loops: numpy casts to float32 (and back into a 16-bit out=)."""
    x = _base(fmt, (64,))
    got = fa.ufuncs.gelu(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, fa.gelu(x.astype(np.float32)))
    out = np.empty_like(x)
    fa.ufuncs.gelu(x, out=out)
    assert_same(out, rounded_f32(fa.gelu, x), "ufunc into a 16-bit out")
