"""softmax, log_softmax (with scale= and where=), their backwards and softmax cross-entropy
on bfloat16 and float16 arrays: the float32 result rounded once to the format.

Along the last axis of C-contiguous arrays the 16-bit kernels compute what the float32
kernels compute on the widened values, in the same order: the float32 result rounded once,
bit for bit (test_last_axis_is_the_float32_result_rounded). Other layouts widen blocks of
rows into float32 and run the float32 kernels on them, whose sums may run in another order
(another kernel: rows instead of cols) than on the whole array: a result must be the
rounding of a value within the float32 result's error bound (a few ulps, plus the absolute
bound where log_softmax or a backward cancels), see :func:`assert_rounded`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ALL16, assert_rounded, assert_same, f32, peak_bytes, require, rounded_f32

import fastact as fa

OPS = ("softmax", "log_softmax")


def backward_atol(op, g, y, axis=-1):
    """The float32 backward's absolute error bound, where it cancels: 64 eps times p (the
    probabilities) times |g| plus the row's sum of |g| (log_softmax) or of |g p| (softmax)."""
    with np.errstate(all="ignore"):
        g, y = f32(g).astype(np.float64), f32(y).astype(np.float64)
        p = np.exp(y) if op == "log_softmax" else np.abs(y)
        terms = np.abs(g) if op == "log_softmax" else np.abs(g * y)
        return p * 64 * np.finfo(np.float32).eps * (np.abs(g) + np.nansum(terms, axis=axis, keepdims=True))


def forward_atol(op, x, axis=-1):
    """log_softmax's absolute error bound, x - max - lse cancelling: 64 eps the row's max |x|."""
    if op != "log_softmax" or x.ndim == 0:
        return None
    with np.errstate(all="ignore"):
        big = np.nanmax(np.where(np.isfinite(f32(x)), np.abs(f32(x)), 0), axis=axis, keepdims=True)
    return 64 * np.finfo(np.float32).eps * (big.astype(np.float64) + 1)


def _x(fmt, shape, seed=0, scale=4.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32).astype(fmt)


@pytest.mark.parametrize("op", OPS)
def test_every_value(op, fmt):
    """Rows of 256 consecutive 16-bit patterns: all 65,536 values, NaN and inf rows included."""
    x = ALL16.view(fmt).reshape(256, 256)
    forward, backward = getattr(fa, op), getattr(fa, op + "_backward")
    y = forward(x)
    assert y.dtype == x.dtype
    assert_rounded(y, forward(f32(x)), op, atol=forward_atol(op, x))
    grad = np.random.default_rng(1).permutation(ALL16).view(fmt).reshape(256, 256)
    finite = np.isfinite(f32(grad)) & np.isfinite(f32(y))
    grad = np.where(finite, grad, np.zeros((), fmt))  # a NaN/inf grad makes its whole row NaN
    y = np.where(finite, y, np.zeros((), fmt))
    want = backward(f32(grad), f32(y))
    assert_rounded(backward(grad, y), want, op + "_backward", atol=backward_atol(op, grad, y))


# Rows done whole (in one or many row blocks: the backwards' sums differ between the two),
# long rows in chunks, few long rows split across threads.
LAST_AXIS_SHAPES = {
    "rows": (64, 33),
    "many rows": (1024, 40),
    "3-d": (2, 3, 1031),
    "long rows": (3, 40000),
    "few long rows": (2, 140001),
}


def _edgy(fmt, shape, seed):
    """Normal values with inf, NaN, zeros of both signs, subnormals and large values
    scattered in, and rows of only -inf, of -inf but one, of +-0 and of one large value."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 4
    flat = x.reshape(-1)
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -6e-8, 3e38, -60000.0, 60000.0]
    at = rng.integers(0, flat.size, max(1, flat.size // 64))
    flat[at] = rng.choice(special, at.size)
    rows = x.reshape(-1, shape[-1])
    rows[1::9] = -np.inf
    rows[2::9, :-1] = -np.inf
    rows[3::9, ::2] = -0.0
    rows[3::9, 1::2] = 0.0
    rows[4::9] = 60000.0
    with np.errstate(all="ignore"):
        return x.astype(np.float32).astype(fmt)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", LAST_AXIS_SHAPES)
def test_last_axis_is_the_float32_result_rounded(op, fmt, shape):
    """Bit for bit (NaN for NaN): forward and backward, new and in place, plain, scaled,
    masked (a mask of x's shape with rows of nothing included, and a broadcast one)."""
    shape = LAST_AXIS_SHAPES[shape]
    x = _edgy(fmt, shape, 0)
    g = _x(fmt, shape, seed=1, scale=1.0)
    rng = np.random.default_rng(2)
    mask = rng.random(shape) > 0.3
    mask.reshape(-1, shape[-1])[5::7] = False
    f, f_, b, b_ = (getattr(fa, op + s) for s in ("", "_", "_backward", "_backward_"))
    for scale, where in ((1.0, None), (0.37, mask), (-1.5, rng.random(shape[-1]) > 0.5)):
        kw = dict(scale=scale, where=where)
        what = f"{op} scale={scale} where={where is not None}"
        y = f(x, **kw)
        assert_same(y, rounded_f32(f, x, **kw), what)
        xi = x.copy()
        assert f_(xi, **kw) is xi
        assert_same(xi, y, what + " in place")
        y = np.where(np.isfinite(f32(y)), y, np.zeros((), fmt))
        want = rounded_f32(b, g, y, **kw)
        assert_same(b(g, y, **kw), want, what + " backward")
        gi = g.copy()
        assert b_(gi, y, **kw) is gi
        assert_same(gi, want, what + " backward in place")


LAYOUTS = {
    "last axis": (lambda a: a, -1),
    "axis 0": (lambda a: a, 0),
    "middle axis of 3-d": (lambda a: a.reshape(6, 5, 40), 1),
    "strided": (lambda a: a[::2, ::3], -1),
    "fortran": (lambda a: np.asfortranarray(a), -1),
    "0-d": (lambda a: a[1, 2, ...], -1),
    "empty": (lambda a: a[:0], -1),
    "long rows": (lambda a: np.tile(a, (1, 300))[:2], -1),  # rows longer than a block
}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_entry_points(op, fmt, layout):
    make, axis = LAYOUTS[layout]
    x, g = make(_x(fmt, (30, 40))), make(_x(fmt, (30, 40), seed=1, scale=1.0))
    f, f_, b, b_ = (getattr(fa, op + s) for s in ("", "_", "_backward", "_backward_"))
    want, atol = f(f32(x), axis), forward_atol(op, x, axis)
    assert_rounded(f(x, axis), want, "forward", atol=atol)
    out = make(np.zeros((30, 40), fmt))
    assert f(x, axis, out=out) is out
    assert_rounded(out, want, "forward out=", atol=atol)
    xi = make(_x(fmt, (30, 40)))
    assert f_(xi, axis) is xi
    assert_rounded(xi, want, "forward in place", atol=atol)
    y = f(x, axis)
    want_b = b(f32(g), f32(y), axis)
    atol = backward_atol(op, g, y, axis) if x.ndim else None
    assert_rounded(b(g, y, axis), want_b, "backward", atol=atol)
    gi = make(_x(fmt, (30, 40), seed=1, scale=1.0))
    assert b_(gi, y, axis) is gi
    assert_rounded(gi, want_b, "backward in place", atol=atol)


@pytest.mark.parametrize("op", OPS)
def test_scale_and_where(op, fmt):
    x = _x(fmt, (64, 33))
    where = np.random.default_rng(2).random((1, 33)) > 0.3
    where_rows = np.random.default_rng(3).random((64, 33)) > 0.5
    f, b = getattr(fa, op), getattr(fa, op + "_backward")
    for w in (None, where, where_rows):
        y = f(x, scale=0.125, where=w)
        assert_rounded(y, f(f32(x), scale=0.125, where=w), f"{op} where={w is not None}")
        g = _x(fmt, (64, 33), seed=4, scale=1.0)
        want = b(f32(g), f32(y), scale=0.125, where=w)
        atol = 0.125 * backward_atol(op, g, np.where(True if w is None else w, y, np.zeros((), fmt)))
        assert_rounded(b(g, y, scale=0.125, where=w), want, f"{op}_backward", atol=atol)
        xi = x.copy()
        getattr(fa, op + "_")(xi, scale=0.125, where=w)
        assert_rounded(xi, f(f32(x), scale=0.125, where=w), f"{op}_ where={w is not None}")


def test_softmax_in_place_allocates_a_block_not_a_copy(fmt, monkeypatch):
    from fastact import _config

    monkeypatch.setattr(_config, "HALF_BLOCK_BYTES", 256 * 1024)
    x = _x(fmt, (8192, 1024))  # 16 MiB; the float32 scratch is a block of about 256 KiB
    assert peak_bytes(lambda: fa.softmax_(x)) < x.nbytes // 16


# --- cross-entropy ----------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_class_targets(fmt, reduction):
    x = _x(fmt, (3000, 37))  # more rows than one block
    t = np.random.default_rng(5).integers(0, 37, 3000)
    t[::7] = -100
    weight = np.random.default_rng(6).random(37).astype(fmt)  # weights of the logits' dtype (as torch passes)
    kw = dict(reduction=reduction, label_smoothing=0.1, weight=weight)
    loss, grad = fa.softmax_cross_entropy(x, t, **kw)
    loss32, grad32 = fa.softmax_cross_entropy(f32(x), t, **kw)
    assert grad.dtype == x.dtype
    assert_rounded(grad, grad32, "grad")
    if reduction == "none":
        assert loss.dtype == x.dtype
        assert_rounded(loss, loss32, "loss")
    else:
        assert isinstance(loss, float)
        np.testing.assert_allclose(loss, loss32, rtol=1e-6)  # float64 sums of float32 row losses
    xi = x.copy()
    _, grad_i = fa.softmax_cross_entropy(xi, t, inplace=True, **kw)
    assert grad_i is xi
    np.testing.assert_array_equal(grad_i.view(np.uint16), grad.view(np.uint16))


def test_cross_entropy_probabilities_and_one_sample(fmt):
    x = _x(fmt, (50, 20))
    p = fa.softmax(_x(fmt, (50, 20), seed=7))
    for target in (p, f32(p), p.astype(np.float64)):
        loss, grad = fa.softmax_cross_entropy(x, target)
        loss32, grad32 = fa.softmax_cross_entropy(f32(x), f32(p))
        np.testing.assert_allclose(loss, loss32, rtol=1e-6)
        assert_rounded(grad, grad32, "grad")
    loss, grad = fa.softmax_cross_entropy(x[3], 4, reduction="none")
    loss32, grad32 = fa.softmax_cross_entropy(f32(x[3]), 4, reduction="none")
    assert loss.shape == () and grad.shape == (20,)
    assert_rounded(grad, grad32, "one sample")


# --- errors -------------------------------------------------------------------------------


def test_mixed_dtypes_are_type_errors(fmt):
    x = _x(fmt, (4, 5))
    y = fa.softmax(x)
    before = x.copy()
    with pytest.raises(TypeError, match="y has dtype"):
        fa.softmax_backward_(x, f32(y))
    with pytest.raises(TypeError, match="out has dtype"):
        fa.log_softmax(x, out=np.empty((4, 5), np.float32))
    other = np.float16 if fmt is not np.float16 else require("ml_dtypes").bfloat16
    with pytest.raises(TypeError, match="probabilities"):
        fa.softmax_cross_entropy(x, y.astype(np.float32).astype(other))  # the other 16-bit format
    np.testing.assert_array_equal(x.view(np.uint16), before.view(np.uint16))
    with pytest.raises(TypeError, match="float16, or ml_dtypes' bfloat16"):
        fa.softmax(np.zeros((2, 2), np.int16))
