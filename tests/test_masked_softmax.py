"""softmax / log_softmax with ``scale`` and ``where``, and their backwards.

y = softmax(fl(scale x)) over the entries where ``where`` is True (jax.nn.softmax's
``where``): excluded entries get 0 (log_softmax: -inf) and gradient 0; a row with no
entry included gives zeros (-inf), never NaN. The references are the op table's, written
from that definition in float64 or wider numpy (jax is not a test dependency).
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
from conftest import peak_bytes, require
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastact
from fastact import _config
from fastact import _softmax_kernels as K
from fastact._ops import OPS as TABLE
from fastact._ops import softmax_backward_from_output

S = importlib.import_module("fastact._softmax")

DTYPES = [np.float32, np.float64]
OPS = ["softmax", "log_softmax"]


# --- references -------------------------------------------------------------------------


def ref_forward(x, axis, scale, where, log):
    """The op table's reference (float64 or wider) of the product scale * x rounded once in
    x's dtype, as the kernels round it."""
    x = np.asarray(x)
    xs = np.atleast_1d(x * x.dtype.type(scale))
    w = None if where is None else np.broadcast_to(where, x.shape).reshape(xs.shape)
    return TABLE["log_softmax" if log else "softmax"].reference(xs, axis, 1.0, w).reshape(x.shape)


def ref_backward(g, y, axis, scale, where, log):
    g = np.asarray(g)
    w = None if where is None else np.broadcast_to(where, g.shape).reshape(np.atleast_1d(g).shape)
    dx = softmax_backward_from_output(np.atleast_1d(g), np.atleast_1d(y), axis, scale, w, log)
    return dx.reshape(g.shape)


def check(got, want, dtype, rtol_ulps=64, atol=0.0):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    ok = np.isnan(want) | (got == want)
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf
        ok |= np.abs(got - want) <= rtol_ulps * np.finfo(dtype).eps * np.abs(want) + atol
    assert ok.all(), f"max error {np.nanmax(np.abs(got - want)[~ok])} at {np.argwhere(~ok)[:5].tolist()}"


def forward_tol(x, dtype, log):
    """atol for the forward: x - max is rounded to the dtype (an absolute error in the
    exponent of up to |s x - m| eps), the sum's error grows with the row length."""
    eps = np.finfo(dtype).eps
    big = float(np.nanmax(np.abs(np.where(np.isfinite(x), x, 0)))) if x.size else 0.0
    return eps * (8 * big + 8) if log else eps * (4 * big + 8) * 1.0


def check_all(x, axis, scale, where, dtype, seed=0):
    """The forward (new, out, in place) and backward (new, out, in place) of both ops."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(x.shape).astype(dtype)
    for op in OPS:
        log = op == "log_softmax"
        fn, fn_ = getattr(S, op), getattr(S, op + "_")
        back, back_ = getattr(S, op + "_backward"), getattr(S, op + "_backward_")
        want = ref_forward(x, axis, scale, where, log)
        tol = forward_tol(x * abs(scale), dtype, log)
        y = fn(x, axis, scale=scale, where=where)
        assert y.shape == x.shape and y.dtype == dtype
        check(y, want, dtype, atol=tol)
        out = np.full(x.shape[::-1], 7.0, dtype).T  # a non-contiguous out
        assert fn(x, axis, scale=scale, where=where, out=out) is out
        check(out, want, dtype, atol=tol)
        xi = x.copy()
        assert fn_(xi, axis, scale=scale, where=where) is xi
        check(xi, want, dtype, atol=tol)
        gwant = ref_backward(g, y, axis, scale, where, log)
        gscale = np.abs(g).max() if g.size else 0.0
        n = x.shape[axis] if x.ndim else 1
        gtol = 32 * np.finfo(dtype).eps * abs(scale) * gscale * (n + 4)
        check(back(g, y, axis, scale=scale, where=where), gwant, dtype, atol=gtol)
        out = np.full(x.shape, 7.0, dtype)
        assert back(g, y, axis, scale=scale, where=where, out=out) is out
        check(out, gwant, dtype, atol=gtol)
        gi = g.copy()
        assert back_(gi, y, axis, scale=scale, where=where) is gi
        check(gi, gwant, dtype, atol=gtol)


def causal(n, m=None):
    return np.tril(np.ones((n, n if m is None else m), bool))


# --- against the references ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 0.125, 3.0, -0.5])
@pytest.mark.parametrize("masked", [False, True])
def test_rows_and_cols(dtype, scale, masked):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 9)) * 3).astype(dtype)
    where = (rng.random((6, 9)) < 0.6) if masked else None
    if masked:
        where[2] = False  # a row with no entry included
        where[4] = True
    for axis in (-1, 0):
        check_all(x, axis, scale, where, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_masks_are_read_in_place(dtype):
    """Masks of fewer dimensions and size-1 axes (zero strides): causal over heads, a
    padding mask over heads and queries, a mask constant along the softmax axis."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 3, 5, 5)) * 2).astype(dtype)
    pad = rng.random((2, 1, 1, 5)) < 0.7
    pad[1, 0, 0, :] = False  # batch 1: nothing included
    masks = {
        "causal": causal(5),
        "padding": pad,
        "per row": rng.random((2, 3, 5, 1)) < 0.5,
        "scalar": np.array(True),
        "scalar False": np.array(False),
        "strided": (rng.random((5, 10)) < 0.5)[:, ::2],
    }
    for where in masks.values():
        for axis in range(-4, 4):
            check_all(x, axis, 0.7, where, dtype)
    # the view handed to the kernels is the mask's own memory
    w = causal(5)
    assert np.shares_memory(S._where(w, x.shape), w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_x(dtype):
    rng = np.random.default_rng(3)
    base = (rng.standard_normal((4, 6, 10)) * 3).astype(dtype)
    where = rng.random((6, 5)) < 0.5
    for x in (base[:, :, ::2], base.transpose(0, 2, 1)[:, ::2, :5], base[::-1, :, 1:6]):
        w = where if x.shape[-2:] == (6, 5) else rng.random(x.shape) < 0.5
        for axis in range(3):
            check_all(x, axis, 0.5, w, dtype)


def test_edge_rows():
    """Rows of the mask semantics: nothing included -> 0 / -inf (never NaN); included
    entries only -inf -> NaN there (as an unmasked row of -inf), 0 / -inf elsewhere;
    NaN or +inf included -> NaN on the included entries; NaN or inf excluded: ignored."""
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [1.0, 2.0, 3.0, 4.0],
            [-inf, -inf, 1.0, 2.0],
            [nan, 1.0, 2.0, inf],
            [nan, inf, -inf, 5.0],
            [1.0, 2.0, 3.0, 4.0],
        ]
    )
    w = np.array(
        [
            [False, False, False, False],
            [True, True, False, False],
            [True, True, False, False],
            [False, False, True, True],
            [True, True, True, True],
        ]
    )
    for dtype in DTYPES:
        xd = x.astype(dtype)
        y = S.softmax(xd, where=w)
        ly = S.log_softmax(xd, where=w)
        np.testing.assert_array_equal(y[0], 0.0)
        assert (ly[0] == -inf).all()
        assert np.isnan(y[1, :2]).all() and (y[1, 2:] == 0).all()
        assert np.isnan(ly[1, :2]).all() and (ly[1, 2:] == -inf).all()
        assert np.isnan(y[2, :2]).all() and (y[2, 2:] == 0).all()
        np.testing.assert_array_equal(y[3], [0, 0, 0, 1])
        np.testing.assert_array_equal(ly[3], [-inf, -inf, -inf, 0])
        np.testing.assert_allclose(y[4], S.softmax(xd[4]), rtol=4 * np.finfo(dtype).eps)
        # gradients: 0 at the excluded entries and in the empty row, whatever grad holds there
        g = np.full(x.shape, np.inf, dtype)
        g[w] = 1.0
        for back, yy in ((S.softmax_backward, y), (S.log_softmax_backward, ly)):
            gx = back(g, yy, where=w)
            assert (gx[~w] == 0).all()
            assert (gx[0] == 0).all()
        # the chunked, split and cols kernels agree
        tol = {"rtol": 4 * np.finfo(dtype).eps, "atol": 4 * np.finfo(dtype).eps}
        with _config.overridden(ROW_CACHE_BYTES=8, CHUNK_BYTES=8):
            np.testing.assert_allclose(S.softmax(xd, where=w), y, **tol)
            np.testing.assert_allclose(S.log_softmax(xd, where=w), ly, **tol)
        np.testing.assert_allclose(S.softmax(xd.T.copy(), 0, where=w.T), y.T, **tol)
        np.testing.assert_allclose(S.log_softmax(xd.T.copy(), 0, where=w.T), ly.T, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "tunables",
    [
        {"PARALLEL_THRESHOLD": 0},
        {"PARALLEL_THRESHOLD": 0, "STREAM_BYTES": 0},
        {"PARALLEL_THRESHOLD": 0, "CHUNK_BYTES": 64},  # split rows
        {"ROW_CACHE_BYTES": 256, "CHUNK_BYTES": 128},  # chunked rows
        {"ROW_CACHE_BYTES": 256, "CHUNK_BYTES": 128, "PARALLEL_THRESHOLD": 0},
    ],
    ids=["parallel", "stream", "split", "chunked", "chunked-parallel"],
)
def test_every_kernel_variant(dtype, tunables):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 40, 300)) * 4).astype(dtype)
    where = causal(40, 300)
    where[5] = False
    x[0, 7] = -np.inf
    with _config.overridden(**tunables):
        check_all(x, -1, 0.3, where, dtype)
        check_all(x[:, :2], -1, 1.0, where[:2], dtype)  # few long rows
        check_all(x, 1, 2.0, where, dtype)  # cols
        check_all(x, -1, 0.3, None, dtype)  # scale only


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", list(K._OPS))
def test_masked_split_kernel_directly(dtype, op):
    """The masked split kernel (run by the wrappers with 2+ threads) against the rows kernel."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 1000)).astype(dtype)
    w = rng.random((4, 1000)) < 0.5
    w[2] = False
    w[1, :700] = False
    b = None
    if op.endswith("backward"):
        b = S.softmax(a, where=w) if op == "softmax_backward" else S.log_softmax(a, where=w)
        a = rng.standard_normal((4, 1000)).astype(dtype)
    got, want = np.empty_like(a), np.empty_like(a)
    k = K.masked_kernels(op)
    k.split(a, b, w, got, 0.5, 64, 1 << 30)
    k.rows(a, b, w, want, 0.5, 64, 1 << 30)
    tol = {"rtol": 20 * np.finfo(dtype).eps, "atol": 64 * np.finfo(dtype).eps}
    np.testing.assert_allclose(got, want, **tol)
    k.rows(a, b, w, got, 0.5, 64, 100)  # chunked one row at a time
    np.testing.assert_allclose(got, want, **tol)


@settings(deadline=None, max_examples=60)
@given(
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
    scale=st.sampled_from([1.0, 0.25, 4.0, -1.5, 1e-3]),
)
def test_hypothesis_shapes_and_masks(data, dtype, shape, scale):
    x = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-20, 20, width=np.dtype(dtype).itemsize * 8)))
    # a mask of a broadcastable shape: some axes 1, some leading axes dropped
    drop = data.draw(st.integers(0, len(shape)))
    wshape = tuple(1 if data.draw(st.booleans()) else n for n in shape[drop:])
    where = data.draw(hnp.arrays(np.bool_, wshape))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    check_all(x, axis, scale, where, dtype)


def test_zero_d_and_empty():
    assert S.softmax(np.float64(2.0), scale=3.0) == 1.0
    assert S.softmax(np.float64(2.0), where=np.array(False)) == 0.0
    assert S.log_softmax(np.float64(2.0), where=False) == -np.inf
    for shape in ((0,), (0, 4), (4, 0)):
        x = np.empty(shape)
        assert S.softmax(x, scale=2.0, where=np.ones(shape, bool)).shape == shape
        assert S.log_softmax_backward(x, x, where=True).shape == shape


# --- against torch ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_masked_fill(dtype):
    """torch.softmax(x.masked_fill(~where, -inf) * scale) and its gradient, on the rows with
    an entry included (torch gives those rows NaN; fastact zeros). grad is 0 at the excluded
    entries: log_softmax's backward in torch sums grad over every entry, fastact (as jax)
    over the included ones."""
    torch = require("torch")
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2, 3, 16, 16)) * 4).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    where = causal(16)
    g[..., ~where] = 0
    scale = 0.37
    eps = np.finfo(dtype).eps
    for op, tfn in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
        xt = torch.tensor(x, requires_grad=True)
        yt = tfn((xt * scale).masked_fill(~torch.from_numpy(where), -np.inf), -1)
        yt.backward(torch.from_numpy(g))
        y = getattr(S, op)(x, scale=scale, where=where)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=32 * eps, atol=32 * eps)
        gx = getattr(S, op + "_backward")(g, y, scale=scale, where=where)
        tg = xt.grad.numpy()
        np.testing.assert_allclose(gx, tg, rtol=64 * eps, atol=64 * eps * float(np.abs(g).sum(-1).max()))


# --- the unmasked path is untouched -----------------------------------------------------


def test_scale_one_and_no_mask_run_the_unmasked_kernels(monkeypatch):
    """scale=1.0 (or 1) and where=None never reach the masked kernels."""
    calls = []
    masked = K.masked_kernels
    monkeypatch.setattr(K, "masked_kernels", lambda op: (calls.append(op), masked(op))[1])
    x = np.random.default_rng(7).standard_normal((4, 8))
    want = S.softmax(x)
    for scale in (1.0, 1, np.float64(1.0)):
        np.testing.assert_array_equal(S.softmax(x, scale=scale), want)
        S.log_softmax_backward(x, x, scale=scale)
    assert not calls
    S.softmax(x, scale=2.0)
    S.softmax(x, where=np.ones(8, bool))
    assert calls == ["softmax", "softmax"]


def test_signatures_and_docs():
    forward = "(x: 'np.ndarray', axis: 'int' = -1, *, scale: 'float' = 1.0, where: 'np.ndarray | None' = None"
    backward = "(grad: 'np.ndarray', y: 'np.ndarray', axis: 'int' = -1, *, scale: 'float' = 1.0, "
    backward += "where: 'np.ndarray | None' = None"
    out = ", out: 'np.ndarray | None' = None) -> 'np.ndarray'"
    for op in OPS:
        assert str(inspect.signature(getattr(fastact, op))) == forward + out
        assert str(inspect.signature(getattr(fastact, op + "_"))) == forward + ") -> 'np.ndarray'"
        assert str(inspect.signature(getattr(fastact, op + "_backward"))) == backward + out
        assert str(inspect.signature(getattr(fastact, op + "_backward_"))) == backward + ") -> 'np.ndarray'"
        for suffix in ("", "_", "_backward", "_backward_"):
            f = getattr(fastact, op + suffix)
            assert f.__name__ == op + suffix and f.__module__ == "fastact._softmax"
            assert "scale" in f.__doc__ and "where" in f.__doc__ and "sum" in f.__doc__


# --- errors before any write ---------------------------------------------------------------


def test_errors_leave_buffers_unchanged():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = np.full((2, 3), 5.0, np.float32)
    keep_x, keep_out = x.copy(), out.copy()
    w = np.ones((2, 3), bool)
    cases = [
        (TypeError, lambda: S.softmax(x, where=np.ones((2, 3), np.int8), out=out)),
        (TypeError, lambda: S.softmax_(x, where=np.ones(3))),
        (TypeError, lambda: S.log_softmax_(x, where=[1, 0, 1])),
        (ValueError, lambda: S.softmax(x, where=np.ones((3, 2), bool), out=out)),
        (ValueError, lambda: S.softmax_(x, where=np.ones((2, 2, 3), bool))),
        (ValueError, lambda: S.softmax_backward_(x, x, where=np.ones(4, bool))),
        (ValueError, lambda: S.softmax(x, scale=np.nan, out=out)),
        (ValueError, lambda: S.softmax_(x, scale=np.inf)),
        (ValueError, lambda: S.log_softmax_backward_(x, x, scale=-np.inf)),
        (TypeError, lambda: S.softmax_(x, scale=True)),
        (TypeError, lambda: S.softmax_(x, scale="2")),
        (TypeError, lambda: S.softmax_(x, scale=None)),
        (TypeError, lambda: S.softmax_(x, scale=1j)),
        (TypeError, lambda: S.softmax_(x, where=w, mask=w)),
    ]
    for error, call in cases:
        with pytest.raises(error) as info:
            call()
        assert "where" in str(info.value) or "scale" in str(info.value) or "mask" in str(info.value)
        np.testing.assert_array_equal(x, keep_x)
        np.testing.assert_array_equal(out, keep_out)


# --- memory: no temporary of x's size --------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_no_temporary_of_x_size(op):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((8, 64, 128)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    where = causal(64, 128)  # broadcast over the 8 leading rows: never copied
    y = getattr(S, op)(x, scale=0.5, where=where)
    fn_, back_ = getattr(S, op + "_"), getattr(S, op + "_backward_")
    slack = 64 * 1024  # Python objects, views, and the kernels' per-block scratch rows
    assert peak_bytes(lambda: fn_(x, scale=0.5, where=where)) < slack
    assert peak_bytes(lambda: back_(g, y, scale=0.5, where=where)) < slack
    out = np.empty_like(x)
    assert peak_bytes(lambda: getattr(S, op)(x, -1, scale=0.5, where=where, out=out)) < slack
    assert peak_bytes(lambda: getattr(S, op)(x, 1, scale=0.5, where=where[:, :1], out=out)) < slack
    assert peak_bytes(lambda: getattr(S, op)(x, scale=0.5, where=where)) < x.nbytes + slack
