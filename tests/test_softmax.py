"""softmax / log_softmax and their backwards: references, torch, edge rows, layouts, errors."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import require
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastact import _config
from fastact import _row_intrinsics as RI
from fastact import _softmax_kernels as K
from fastact._ops import OPS

# The host side of the softmax family (fastact.softmax is the function).
S = importlib.import_module("fastact._softmax")

try:
    from numpy.exceptions import AxisError
except ImportError:  # numpy < 1.25
    from numpy import AxisError

DTYPES = [np.float32, np.float64]
FORWARD = {"softmax": S.softmax, "log_softmax": S.log_softmax}


def ref_softmax(x: np.ndarray, axis: int = -1, log: bool = False) -> np.ndarray:
    """Softmax in extended precision (long double: float64 inputs get a few extra bits)."""
    return OPS["log_softmax" if log else "softmax"].reference(x, axis)


def assert_close(got, ref, dtype, rtol_ulps=8, atol=0.0):
    """|got - ref| <= rtol_ulps eps |ref| + atol (rtol_ulps may be an array), NaNs alike."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    eps = np.finfo(dtype).eps
    ok = np.isnan(ref) | (got == ref) | (np.abs(got - ref) <= rtol_ulps * eps * np.abs(ref) + atol)
    assert ok.all(), f"max error {np.nanmax(np.abs(got - ref)[~ok])} at {np.argwhere(~ok)[:5].tolist()}"


def check_forward(x, axis, dtype):
    """softmax and log_softmax of x along axis against the long double reference.

    Error budget, in units of eps: exp and the scale ~1 each, the sum's rounding grows with
    the row length n, and x - max is rounded to the dtype: an absolute error of up to
    |x - max| eps / 2 in the exponent, which is a relative one in e^(x - max).
    """
    n = x.shape[axis] if x.ndim else 1
    eps = np.finfo(dtype).eps
    with np.errstate(invalid="ignore"):
        xm = np.abs(np.asarray(x, np.float64) - np.max(x, axis=axis, keepdims=True)) if x.size else 0.0
    xm = np.nan_to_num(xm, posinf=0.0)
    y = S.softmax(x, axis)
    assert y.shape == x.shape and y.dtype == dtype
    assert_close(
        y, ref_softmax(x, axis), dtype, rtol_ulps=8 + n / 64 + xm, atol=np.finfo(dtype).smallest_normal
    )
    ly = S.log_softmax(x, axis)
    ref = ref_softmax(x, axis, log=True).astype(np.float64)
    # log_softmax = (x - m) - log(s): absolute error ~ eps (|x - m| + |log s|)
    bound = eps * (4 * xm + 4 * np.log(max(n, 1)) + (8 + n / 64) * np.abs(np.nan_to_num(ref)))
    assert (np.isnan(ref) == np.isnan(ly)).all()
    err = np.abs(ly.astype(np.float64) - ref)
    assert (np.nan_to_num(err) <= bound + np.finfo(dtype).tiny).all(), np.nanmax(err - bound)


# --- against references ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 2, 63, 64, 65, 1000])
def test_rows_carry_the_next_rows_reduction(dtype, rows):
    """The backward rows kernels reduce row r + 1 while they compute row r (the forward
    ones reduce each row in its own pass), in ROW_BLOCKS blocks:
    rows whose max, dot and sum differ wildly (and a -inf row, a NaN row) must not leak
    into their neighbours, serial (small) or parallel (large), forward and backward."""
    rng = np.random.default_rng(rows)
    for n in (40, K.AHEAD + 3):
        x = (rng.standard_normal((rows, n)) + rng.uniform(-300, 300, (rows, 1))).astype(dtype)
        if rows > 2:
            x[rows // 2] = -np.inf
            x[rows // 3, 5] = np.nan
        check_forward(x, -1, dtype)
        y = S.softmax(x)
        g = (rng.standard_normal((rows, n)) * rng.uniform(0.1, 100, (rows, 1))).astype(dtype)
        want = y * (g - (g * y).sum(-1, keepdims=True, dtype=np.float64))
        tol = 16 * np.finfo(dtype).eps * (np.abs(g).max(-1, keepdims=True) + np.abs(want))
        ok = np.isnan(want) | (np.abs(S.softmax_backward(g, y) - want) <= tol)
        assert ok.all() and (np.isnan(want) == np.isnan(S.softmax_backward(g, y))).all()
        ly = S.log_softmax(x)
        want = g - np.exp(ly.astype(np.float64)) * g.sum(-1, keepdims=True, dtype=np.float64)
        tol = 16 * np.finfo(dtype).eps * np.abs(g).sum(-1, keepdims=True)
        got = S.log_softmax_backward(g, ly)
        assert (np.isnan(want) == np.isnan(got)).all() and (
            np.isnan(want) | (np.abs(got - want) <= tol)
        ).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (5, 9), (3, 4, 5), (2, 3, 4, 5)])
def test_every_axis_matches_reference(dtype, shape):
    x = (np.random.default_rng(1).standard_normal(shape) * 5).astype(dtype)
    for axis in range(-len(shape), len(shape)):
        check_forward(x, axis, dtype)


@given(
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
)
def test_hypothesis_matches_reference(data, dtype, shape, scale):
    x = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-1, 1, width=np.dtype(dtype).itemsize * 8)))
    x = (x * scale).astype(dtype)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    check_forward(x, axis, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_paths_match_reference(dtype, monkeypatch):
    """Rows (parallel, whole and chunked), split rows and cols kernels on big arrays."""
    rng = np.random.default_rng(2)
    big_rows = (rng.standard_normal((300, 200)) * 4).astype(dtype)  # rows, parallel
    check_forward(big_rows, -1, dtype)
    check_forward(big_rows, 0, dtype)  # cols, parallel
    few_long = (rng.standard_normal((2, 40000)) * 4).astype(dtype)  # split (2+ threads)
    check_forward(few_long, -1, dtype)
    # Row-at-a-time chunked path (row longer than ROW_CACHE_BYTES), parallel over rows:
    monkeypatch.setattr(_config, "ROW_CACHE_BYTES", 256)
    monkeypatch.setattr(_config, "CHUNK_BYTES", 128)
    check_forward(big_rows, -1, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", list(K._OPS))
def test_split_kernel_directly(dtype, op):
    """The split kernel (run by the wrappers only with 2+ threads) against the rows kernel."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 1000)).astype(dtype)
    a[1, :700] = -np.inf  # whole chunks of -inf next to finite ones
    b = None
    if op.endswith("backward"):
        b = S.softmax(a) if op == "softmax_backward" else S.log_softmax(a)
        a = rng.standard_normal((3, 1000)).astype(dtype)
    got, want = np.empty_like(a), np.empty_like(a)
    k = K.kernels(op)
    k.split(a, b, None, got, None, 64, 1 << 30)
    k.rows(a, b, None, want, None, 64, 1 << 30)
    tol = {
        "rtol": 20 * np.finfo(dtype).eps,
        "atol": 64 * np.finfo(dtype).eps * np.abs(want[np.isfinite(want)]).max(),
    }
    np.testing.assert_allclose(got, want, **tol)
    k.rows(a, b, None, got, None, 64, 100)  # rows longer than `whole`: chunked one row at a time
    np.testing.assert_allclose(got, want, **tol)


# --- edge rows ----------------------------------------------------------------------------

BIG = {np.float32: 3e38, np.float64: 1.7e308}
EDGE_ROWS = {
    "constant": lambda d: [2.0] * 5,
    "huge": lambda d: [1e30, -1e30, 0.0, 1e30],
    "max": lambda d: [BIG[d], -BIG[d], BIG[d]],
    "neg-inf-entries": lambda d: [-np.inf, 0.0, 1.0, -np.inf],
    "all-neg-inf": lambda d: [-np.inf] * 4,
    "nan": lambda d: [0.0, np.nan, 1.0],
    "pos-inf": lambda d: [np.inf, 0.0, 1.0],
    "length-1": lambda d: [3.0],
    "length-1-neg-inf": lambda d: [-np.inf],
    "tiny": lambda d: [np.finfo(d).smallest_subnormal, -0.0, 0.0],
    "wide": lambda d: [0.0, -50.0, -100.0, -200.0, -700.0, -1e4],
}
EXPECTED = {  # without torch: what each row must give
    "constant": [0.2] * 5,
    "huge": [0.5, 0.0, 0.0, 0.5],
    "max": [0.5, 0.0, 0.5],
    "neg-inf-entries": [0.0, 1 / (1 + np.e), np.e / (1 + np.e), 0.0],
    "all-neg-inf": [np.nan] * 4,
    "nan": [np.nan] * 3,
    "pos-inf": [np.nan] * 3,
    "length-1": [1.0],
    "length-1-neg-inf": [np.nan],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", list(EDGE_ROWS))
def test_edge_rows(dtype, row):
    x = np.array(EDGE_ROWS[row](dtype), dtype=dtype)
    y = S.softmax(x)
    with np.errstate(over="ignore"):
        ly = S.log_softmax(x)
    if row in EXPECTED:
        np.testing.assert_allclose(y, np.array(EXPECTED[row]), rtol=4 * np.finfo(dtype).eps, atol=0)
    assert (np.isnan(ly) == np.isnan(y)).all()
    assert not np.isinf(y).any()
    with np.errstate(divide="ignore"):
        finite = np.isfinite(y) & (y >= np.finfo(dtype).smallest_normal)
        np.testing.assert_allclose(ly[finite], np.log(y[finite].astype(np.float64)), rtol=1e-5, atol=1e-6)
    # -inf entries have probability 0 and log-probability -inf when the row is not NaN
    if not np.isnan(y).any():
        assert (y[x == -np.inf] == 0).all() and (ly[x == -np.inf] == -np.inf).all()
        np.testing.assert_allclose(y.sum(dtype=np.float64), 1.0, rtol=4 * np.finfo(dtype).eps * len(x))
    # the same row as one of many (cols kernel: the row along axis 0), and chunked
    cols = np.repeat(x[:, None], 3, axis=1)
    np.testing.assert_array_equal(np.isnan(S.softmax(cols, 0)[:, 1]), np.isnan(y))
    np.testing.assert_allclose(S.softmax(cols, 0)[:, 1], y, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", list(EDGE_ROWS))
def test_edge_rows_match_torch(dtype, row):
    torch = require("torch")
    x = np.array(EDGE_ROWS[row](dtype), dtype=dtype)
    for fn, tfn in ((S.softmax, torch.softmax), (S.log_softmax, torch.log_softmax)):
        got = fn(x)
        want = tfn(torch.from_numpy(x), -1).numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=8 * np.finfo(dtype).eps, atol=1e-30)


def test_chunked_rows_with_inf_chunks(monkeypatch):
    """A chunk of only -inf adds nothing; NaN or +inf anywhere gives a NaN row."""
    monkeypatch.setattr(_config, "ROW_CACHE_BYTES", 64)
    monkeypatch.setattr(_config, "CHUNK_BYTES", 64)
    x = np.zeros((4, 100))
    x[0, :50] = -np.inf
    x[1, :] = -np.inf
    x[2, 77] = np.nan
    x[3, 5] = np.inf
    y = S.softmax(x)
    np.testing.assert_allclose(y[0], np.r_[np.zeros(50), np.full(50, 0.02)], rtol=1e-14)
    assert np.isnan(y[1:]).all()
    ly = S.log_softmax(x)
    np.testing.assert_allclose(ly[0, 50:], np.log(0.02), rtol=1e-14)
    assert (ly[0, :50] == -np.inf).all() and np.isnan(ly[1:]).all()


# --- against torch --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape_axis", [((6, 50), -1), ((6, 50), 0), ((3, 5, 7), 1), ((300, 130), -1)])
def test_forward_and_backward_match_torch(dtype, shape_axis):
    torch = require("torch")
    shape, axis = shape_axis
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 6).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    eps = np.finfo(dtype).eps
    tol = {"rtol": 16 * eps, "atol": 16 * eps}
    # the backwards cancel: errors are relative to the size of the terms, g and sum(g)
    grad_tol = {"rtol": 16 * eps, "atol": 16 * eps * (np.abs(g).max() + np.abs(g.sum(axis)).max())}
    for name, tfn, backward in (
        ("softmax", torch.softmax, S.softmax_backward),
        ("log_softmax", torch.log_softmax, S.log_softmax_backward),
    ):
        xt = torch.tensor(x, requires_grad=True)
        yt = tfn(xt, axis)
        yt.backward(torch.from_numpy(g))
        y = FORWARD[name](x, axis)
        np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
        np.testing.assert_allclose(backward(g, y, axis), xt.grad.numpy(), **grad_tol)


# --- backward: finite differences ---------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_backward_finite_differences(name, axis):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5)) * 2
    g = rng.standard_normal(x.shape)
    forward = FORWARD[name]
    backward = S.softmax_backward if name == "softmax" else S.log_softmax_backward
    got = backward(g, forward(x, axis), axis)
    h = 1e-6
    numeric = np.empty_like(x)
    for index in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[index] += h
        xm[index] -= h
        numeric[index] = (np.sum(g * forward(xp, axis)) - np.sum(g * forward(xm, axis))) / (2 * h)
    np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8)


# --- layouts, in place, out -----------------------------------------------------------------

VIEWS = {
    "transposed": ((6, 9), lambda b: b.T),
    "step": ((6, 20), lambda b: b[:, ::3]),
    "reversed": ((5, 8), lambda b: b[::-1, ::-1]),
    "fortran-3d": ((4, 5, 6), np.asfortranarray),
    "4d-mixed": ((3, 4, 5, 6), lambda b: b.transpose(2, 0, 3, 1)[:, ::2, 1:, ::-1]),
    "broadcast-row": ((1, 7), lambda b: np.broadcast_to(b, (4, 7))),
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_views_out_and_in_place(view, op):
    shape, make = VIEWS[view]
    base = np.random.default_rng(6).standard_normal(shape) * 3
    x = make(base)
    fn, fn_ = FORWARD[op], getattr(S, op + "_")
    for axis in range(-x.ndim, x.ndim):
        want = fn(np.ascontiguousarray(x), axis)
        # Layouts sum in different orders. log_softmax is (x - m) - log(s), a difference
        # of O(|x|) terms: its error is absolute, a few eps of the row's scale.
        tol = {"rtol": 1e-14, "atol": 1e-300 if op == "softmax" else 1e-14 * np.abs(want).max()}
        np.testing.assert_allclose(fn(x, axis), want, **tol)
        out = np.full(x.shape[::-1], 7.0).T  # a non-contiguous out
        assert fn(x, axis, out=out) is out
        np.testing.assert_allclose(out, want, **tol)
        if x.flags.writeable:
            xi = make(base.copy())
            kept = xi.base.copy() if xi.base is not None else None
            assert fn_(xi, axis) is xi
            np.testing.assert_allclose(xi, want, **tol)
            if kept is not None:  # only the view's elements were written
                mask = np.ones(kept.shape, bool)
                make(mask.view())[...] = False
                np.testing.assert_array_equal(xi.base[mask], kept[mask])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_backward_views_out_and_in_place(dtype, op):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 8)).astype(dtype)
    y = FORWARD[op](x)
    g = rng.standard_normal((8, 6)).astype(dtype).T  # non-contiguous grad
    backward = getattr(S, op + "_backward")
    backward_ = getattr(S, op + "_backward_")
    eps = np.finfo(dtype).eps
    tol = {"rtol": 16 * eps, "atol": 16 * eps * (np.abs(g).max() + np.abs(g).sum(0).max())}
    want = backward(np.ascontiguousarray(g), y)
    out = np.empty((8, 6), dtype).T
    assert backward(g, y, out=out) is out
    np.testing.assert_allclose(out, want, **tol)
    gi = g.copy()
    assert backward_(gi, y) is gi
    np.testing.assert_allclose(gi, want, **tol)
    for axis in (0, 1):
        want = backward(np.ascontiguousarray(g), y, axis)
        gi = g.copy(order="F")
        assert backward_(gi, y, axis) is gi
        np.testing.assert_allclose(gi, want, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_big_matches_out_of_place(dtype):
    x = np.random.default_rng(8).standard_normal((200, 300)).astype(dtype)
    for axis in (0, 1):
        want = S.softmax(x, axis)
        xi = x.copy()
        assert S.softmax_(xi, axis) is xi
        np.testing.assert_allclose(xi, want, rtol=4 * np.finfo(dtype).eps)
        g = np.ones_like(x)
        gi = g.copy()
        assert S.softmax_backward_(gi, want, axis) is gi
        np.testing.assert_allclose(gi, S.softmax_backward(g, want, axis), rtol=1e-6, atol=1e-12)


def test_out_overlapping_input_partially():
    base = np.random.default_rng(9).standard_normal(12)
    x = base[:10].reshape(2, 5)
    want = S.softmax(x.copy())
    out = base[2:].reshape(2, 5)
    S.softmax(x, out=out)
    np.testing.assert_allclose(out, want, rtol=1e-15)


def test_zero_d_and_empty():
    for fn, value in ((S.softmax, 1.0), (S.log_softmax, 0.0)):
        y = fn(np.float64(3.5))
        assert isinstance(y, np.ndarray) and y.shape == () and y == value
        assert fn(np.array(2.0, np.float32), axis=0).dtype == np.float32
        assert np.isnan(fn(np.array(np.nan)))
        with pytest.raises(AxisError):
            fn(np.array(1.0), axis=1)
    assert S.softmax_backward(np.array(2.0), np.array(1.0)) == 0.0
    for shape in ((0,), (0, 4), (4, 0), (2, 0, 3)):
        x = np.empty(shape, np.float32)
        for axis in range(len(shape)):
            assert S.softmax(x, axis).shape == shape
            assert S.log_softmax_(x, axis) is x
            assert S.softmax_backward(x, x, axis).shape == shape


def test_lists_and_python_floats():
    np.testing.assert_allclose(S.softmax([0.0, 0.0]), [0.5, 0.5])
    assert S.softmax([1.0, 2.0]).dtype == np.float64


# --- errors before any write -----------------------------------------------------------


def test_errors_leave_buffers_unchanged():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = np.full((2, 3), 5.0, np.float32)
    keep_x, keep_out = x.copy(), out.copy()
    cases = [
        (AxisError, lambda: S.softmax(x, 2, out=out)),
        (AxisError, lambda: S.softmax_(x, -3)),
        (TypeError, lambda: S.softmax(x, 1.0, out=out)),
        (TypeError, lambda: S.log_softmax_(x, True)),
        (TypeError, lambda: S.softmax(x, None)),
        (ValueError, lambda: S.softmax(x, out=np.empty((3, 2), np.float32))),
        (TypeError, lambda: S.softmax(x, out=np.empty((2, 3), np.float64))),
        (TypeError, lambda: S.softmax(x.astype(np.int64), out=out)),
        (TypeError, lambda: S.softmax(x.astype(np.int16))),
        (TypeError, lambda: S.softmax_(x.astype(np.int32))),
        (TypeError, lambda: S.softmax_([1.0, 2.0])),
        (ValueError, lambda: S.softmax_backward(x, x[:, :2], out=out)),
        (TypeError, lambda: S.softmax_backward(x, x.astype(np.float64), out=out)),
        (ValueError, lambda: S.softmax_backward_(x, x.T)),
        (AxisError, lambda: S.log_softmax_backward_(x, x, 5)),
        (TypeError, lambda: S.softmax(x, axis=-1, dim=1)),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()
        np.testing.assert_array_equal(x, keep_x)
        np.testing.assert_array_equal(out, keep_out)
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        S.softmax_(ro)
    with pytest.raises(ValueError, match="read-only"):
        S.softmax(x, out=ro)
    zero_stride = np.lib.stride_tricks.as_strided(np.ones(3), (2, 3), (0, 8))
    with pytest.raises(ValueError, match="broadcast"):
        S.softmax_(zero_stride)


def test_axis_error_is_value_and_index_error():
    with pytest.raises(ValueError, match="axis"):
        S.softmax(np.ones(3), axis=1)
    with pytest.raises(IndexError):
        S.softmax(np.ones(3), axis=-2)


def test_all_public_names_listed():
    assert set(S.__all__) == {
        "softmax",
        "softmax_",
        "softmax_backward",
        "softmax_backward_",
        "log_softmax",
        "log_softmax_",
        "log_softmax_backward",
        "log_softmax_backward_",
        "softmax_cross_entropy",
    }
    for name in S.__all__:
        assert callable(getattr(S, name)) and getattr(S, name).__doc__


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 11, 12, 16, 20, 37, 128, 1000])
@pytest.mark.parametrize("slot", range(9))
def test_streaming_softmax_matches_the_rows_kernel(dtype, n, slot, monkeypatch):
    """A large out-of-place softmax writes its rows with non-temporal stores: 32-byte
    vectors, one 16-byte vector before and after them, scalar stores before the first
    aligned address and after the last. Every alignment of ``out`` (bytes past a
    64-byte boundary: 2, not even aligned to the item size, or 0-8 items) and row length gives
    the rows kernel's result, writes nothing outside ``out``, and the wrapper takes that
    path above STREAM_BYTES (parallel or not, edge rows included)."""
    itemsize = np.dtype(dtype).itemsize
    offset = 2 if slot == 0 else (slot - 1) * itemsize
    rng = np.random.default_rng(n * 32 + offset)
    rows = 70
    x = (rng.standard_normal((rows, n)) * 30).astype(dtype)
    x[5] = -np.inf
    x[7, 0] = np.nan
    x[9, -1] = np.inf
    x[11, 0] = -np.inf
    size = rows * n * itemsize
    raw = np.full(size + 192, 0xAB, np.uint8)
    start = -raw.ctypes.data % 64 + 64 + offset
    out = raw[start : start + size].view(dtype).reshape(rows, n)
    k = K.kernels("softmax")
    k.rows_stream(x, None, None, out, None, 1 << 13, 1 << 15)
    want = np.empty_like(x)
    k.rows(x, None, None, want, None, 1 << 13, 1 << 15)
    assert_close(out, want, dtype, rtol_ulps=2)
    assert (raw[:start] == 0xAB).all() and (raw[start + size :] == 0xAB).all()

    calls = []
    stream = k.rows_stream
    monkeypatch.setattr(k, "rows_stream", lambda *args: (calls.append(1), stream(*args)))
    monkeypatch.setattr(_config, "STREAM_BYTES", 0)
    monkeypatch.setattr(_config, "PARALLEL_THRESHOLD", 0)
    with np.errstate(over="ignore", invalid="ignore"):  # the bounds of the inf rows
        check_forward(x, -1, dtype)
    assert calls, "the non-temporal kernel was not used"
    calls.clear()
    S.softmax_(x.copy())  # in place: never streamed
    S.softmax(x[::2])  # rows apart: not C-contiguous, never streamed
    assert not calls


@pytest.mark.parametrize("dtype", DTYPES)
def test_prefetching_rows_match_reference(dtype, monkeypatch):
    """Rows of at least PREFETCH_MIN_BYTES compute PREFETCH_CHUNK elements at a time and
    prefetch the next row's (past the last row too: a prefetch never faults). Row
    lengths around the chunk, edge rows, in place, streamed, strided (no prefetch): all
    against the reference."""
    size = np.dtype(dtype).itemsize
    short = RI.PREFETCH_MIN_BYTES // size
    assert RI._prefetch_step(short, size, size) == RI.PREFETCH_CHUNK
    assert RI._prefetch_step(short - 1, size, size) == short - 1  # too short: whole row
    assert RI._prefetch_step(short, size, 2 * size) == short  # not contiguous: whole row
    monkeypatch.setattr(_config, "PARALLEL_THRESHOLD", 0)
    rng = np.random.default_rng(short)
    for n in (short, 3 * RI.PREFETCH_CHUNK + 1, short + RI.PREFETCH_CHUNK - 1):
        x = (rng.standard_normal((9, n)) * 30).astype(dtype)
        x[2] = -np.inf
        x[3, n // 2] = np.nan
        x[4, -1] = np.inf
        x[5, RI.PREFETCH_CHUNK] = 1000.0  # the max in the second chunk
        with np.errstate(over="ignore", invalid="ignore"):
            check_forward(x, -1, dtype)
            y = S.softmax_(x.copy())
            assert_close(y, ref_softmax(x), dtype, rtol_ulps=8 + n / 64 + 2400, atol=np.finfo(dtype).tiny)
            monkeypatch.setattr(_config, "STREAM_BYTES", 0)
            assert_close(S.softmax(x), y, dtype, rtol_ulps=2)
            monkeypatch.undo()
            monkeypatch.setattr(_config, "PARALLEL_THRESHOLD", 0)
            wide = np.repeat(x, 2, axis=1)[:, ::2]  # rows of n elements 2 apart
            check_forward(wide, -1, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_max(dtype):
    """The hand-vectorised row max: every length around its vector blocks, contiguous,
    strided and reversed rows, NaN ignored (as llvm.maxnum), -inf when all NaN or empty."""
    from numba import njit

    row_max = njit(lambda x: RI._row_max(x))
    rng = np.random.default_rng(1)
    block = RI.MAX_VECTOR_BYTES // np.dtype(dtype).itemsize * RI.MAX_ACCUMULATORS
    for n in [*range(2 * block + 10), 1000]:
        x = rng.standard_normal(n).astype(dtype)
        for xs in (x, x[::2], x[::-1]):
            assert row_max(xs) == (xs.max() if xs.size else -np.inf)
        if n:
            for i in {0, n // 2, n - 1}:
                y = x.copy()
                y[i] = np.nan
                want = np.nanmax(y) if n > 1 else -np.inf
                assert row_max(y) == want and row_max(y[::-1]) == want
                y[i] = np.inf
                assert row_max(y) == np.inf
            assert row_max(np.full(n, np.nan, dtype)) == -np.inf
            assert row_max(np.full(n, -np.inf, dtype)) == -np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_row_max_and_mask_count(dtype):
    """The masked row max (max of c x where w, -inf elsewhere, NaN ignored) and the mask
    count, against numpy: every length around their vector blocks, contiguous, strided,
    reversed and broadcast (zero-stride) rows."""
    from numba import njit

    row_max = njit(lambda x, w, c: RI._row_max_masked(x, w, c))
    count = njit(lambda w: RI._count_true(w))
    rng = np.random.default_rng(2)
    block = RI.MAX_VECTOR_BYTES // np.dtype(dtype).itemsize * RI.MAX_ACCUMULATORS
    for n in [*range(2 * max(block, RI.COUNT_VECTOR_BYTES) + 10), 1000]:
        x = rng.standard_normal(n).astype(dtype)
        if n > 2:
            x[n // 2] = np.nan
        masks = [rng.random(n) < 0.5, np.ones(n, bool), np.zeros(n, bool), (rng.random(2 * n) < 0.5)[::2]]
        masks += [np.broadcast_to(np.array(b), (n,)) for b in (True, False)]
        for w in masks:
            assert count(w) == np.count_nonzero(w) and count(w[::-1]) == np.count_nonzero(w)
            for c in (1.0, 0.125, -2.0):
                for xs, ws in ((x, w), (x[::-1], w[::-1]), (np.repeat(x, 2)[::2], w)):
                    with np.errstate(invalid="ignore"):
                        kept = np.where(ws, xs * dtype(c), -np.inf)
                    want = np.nanmax(kept) if n and not np.isnan(kept).all() else -np.inf
                    assert row_max(xs, ws, dtype(c)) == want, (n, c)
