"""fastact on dask arrays, computed on a dask.distributed cluster of worker processes."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from conftest import require, ulp16

da = require("dask.array")
distributed = require("distributed")
fd = require("fastact.dask")

import fastact as fa  # noqa: E402
from fastact import ACTIVATIONS  # noqa: E402
from fastact.testing import default_params, sample  # noqa: E402

S = require("fastact._softmax")
PUBLIC = [name for name, entry in ACTIVATIONS.items() if entry.public]


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, host="127.0.0.1"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _params(name):
    entry = ACTIVATIONS[name]
    return tuple(p.default for p in entry.params if p.choices) + default_params(entry)


def test_ufuncs_pickle_by_name():
    assert pickle.loads(pickle.dumps(fa.ufuncs.relu)) is fa.ufuncs.relu


def test_ufunc_on_dask_is_lazy():
    x = da.linspace(-3, 3, 40, chunks=10)
    y = fa.ufuncs.relu(x)
    assert isinstance(y, da.Array) and y.chunks == x.chunks
    np.testing.assert_array_equal(y.compute(scheduler="sync"), fa.relu(x.compute()))


def test_ufunc_on_distributed(client):
    x = da.linspace(-3, 3, 40, chunks=10)
    y = fa.ufuncs.elu(x, 0.5)
    np.testing.assert_array_equal(client.compute(y).result(), fa.elu(x.compute(), 0.5))


def test_all_activations_on_distributed(client):
    """Forward and backward of every activation, all in one graph (float64, and float32 for a few:
    each (activation, dtype) pair costs a kernel load per worker process)."""
    lazy, expected = [], []
    cases = [(np.float64, name) for name in PUBLIC] + [
        (np.float32, n) for n in ("gelu", "softplus", "hardtanh")
    ]
    for dtype, name in cases:
        params = _params(name)
        xn = sample(ACTIVATIONS[name], dtype, default_params(ACTIVATIONS[name]), n=300)
        gn = np.random.default_rng(0).standard_normal(xn.shape).astype(dtype)
        x = da.from_array(xn, chunks=97)
        g = da.from_array(gn, chunks=97)
        y = getattr(fd, name)(x, *params)
        saved = y if ACTIVATIONS[name].saves == "output" else x
        lazy += [y, getattr(fd, name + "_backward")(g, saved, *params)]
        yn = getattr(fa, name)(xn, *params)
        savedn = yn if ACTIVATIONS[name].saves == "output" else xn
        expected += [yn, getattr(fa, name + "_backward")(gn, savedn, *params)]
    got = client.gather(client.compute(lazy))
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_eager_argument_checks():
    x = da.zeros(4, chunks=2)
    with pytest.raises(TypeError, match="float32 or float64"):
        fd.relu(da.zeros(4, dtype=np.int32, chunks=2))
    with pytest.raises(ValueError, match="approximate"):
        fd.gelu(x, "fast")
    with pytest.raises(ValueError, match="shape"):
        fd.relu_backward(x, da.zeros(5, chunks=2))
    with pytest.raises(ValueError, match="reduction"):
        fd.softmax_cross_entropy(da.zeros((2, 3), chunks=1), np.zeros(2, int), reduction="avg")
    with pytest.raises(ValueError, match="shape"):
        fd.softmax_cross_entropy(da.zeros((2, 3), chunks=1), np.zeros(3, int))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_on_distributed(client, op):
    rng = np.random.default_rng(2)
    xn = rng.standard_normal((6, 50, 9)) * 5
    gn = rng.standard_normal(xn.shape)
    x = da.from_array(xn, chunks=(2, 25, 9))
    g = da.from_array(gn, chunks=(3, 25, 9))
    # axis 2 is whole: no rechunk, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = getattr(fd, op)(x, -1)
    assert y.chunks == x.chunks
    with pytest.warns(da.PerformanceWarning, match="rechunking"):
        y1 = getattr(fd, op)(x, 1)
    with pytest.warns(da.PerformanceWarning, match="rechunking"):
        b1 = getattr(fd, op + "_backward")(g, y1, 1)
    got = client.gather(client.compute([y, y1, b1]))
    yn1 = getattr(S, op)(xn, 1)
    np.testing.assert_array_equal(got[0], getattr(S, op)(xn, -1))
    np.testing.assert_array_equal(got[1], yn1)
    np.testing.assert_array_equal(got[2], getattr(S, op + "_backward")(gn, yn1, 1))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_masked_softmax_on_distributed(client, op):
    """scale= and where= (numpy or dask, broadcast to x and chunked as x); the checks run
    when the graph is built."""
    rng = np.random.default_rng(3)
    xn = rng.standard_normal((6, 50, 9)) * 5
    gn = rng.standard_normal(xn.shape)
    x = da.from_array(xn, chunks=(2, 25, 9))
    g = da.from_array(gn, chunks=(3, 25, 9))
    causal = np.tril(np.ones((50, 9), bool))  # broadcast over axis 0
    pad = da.from_array(rng.random((6, 1, 9)) < 0.6, chunks=(4, 1, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = getattr(fd, op)(x, -1, scale=0.5, where=causal)
        yp = getattr(fd, op)(x, -1, where=pad)
        b = getattr(fd, op + "_backward")(g.rechunk(x.chunks), y, -1, scale=0.5, where=causal)
    with pytest.warns(da.PerformanceWarning, match="rechunking"):
        y1 = getattr(fd, op)(x, 1, scale=2.0, where=pad)
    got = client.gather(client.compute([y, yp, b, y1]))
    yn = getattr(S, op)(xn, -1, scale=0.5, where=causal)
    np.testing.assert_array_equal(got[0], yn)
    np.testing.assert_array_equal(got[1], getattr(S, op)(xn, -1, where=pad.compute()))
    np.testing.assert_array_equal(got[2], getattr(S, op + "_backward")(gn, yn, -1, scale=0.5, where=causal))
    np.testing.assert_array_equal(got[3], getattr(S, op)(xn, 1, scale=2.0, where=pad.compute()))
    with pytest.raises(TypeError, match="where"):
        getattr(fd, op)(x, where=np.ones(9))
    with pytest.raises(ValueError, match="where"):
        getattr(fd, op)(x, where=np.ones(8, bool))
    with pytest.raises(ValueError, match="scale"):
        getattr(fd, op)(x, scale=np.inf)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["class", "class-weighted-ignored", "probs", "all-ignored-block"])
def test_cross_entropy_on_distributed(client, reduction, kind):
    rng = np.random.default_rng(4)
    n, c = 70, 6
    xn = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    kw = {"reduction": reduction, "label_smoothing": 0.1}
    if kind == "probs":
        tn = S.softmax(rng.standard_normal((n, c))).astype(np.float32)
    else:
        tn = rng.integers(0, c, n)
        if kind != "class":
            kw["weight"] = rng.random(c) + 0.5
            tn[::3] = -100
        if kind == "all-ignored-block":
            tn[:30] = -100  # the whole first block contributes nothing to the denominator
    x = da.from_array(xn, chunks=(30, 3))  # class axis split: rechunked with a warning
    with pytest.warns(da.PerformanceWarning):
        loss, grad = fd.softmax_cross_entropy(x, tn, **kw)
    got_loss, got_grad = client.gather(client.compute([loss, grad]))
    want_loss, want_grad = S.softmax_cross_entropy(xn, tn, **kw)
    if reduction == "none":
        assert got_loss.shape == (n,) and got_loss.dtype == np.float32
        np.testing.assert_array_equal(got_loss, want_loss)
    else:
        assert got_loss.shape == ()
        np.testing.assert_allclose(float(got_loss), want_loss, rtol=1e-12)
    assert got_grad.dtype == np.float32
    if reduction == "mean":
        # 1/denominator is applied after the fused pass (one more rounding, and the kernel's
        # cancellation p_j K - a_j happens at the scale of the largest term): a few ulp of that.
        scale = np.abs(want_grad).max()
        np.testing.assert_allclose(got_grad, want_grad, rtol=0, atol=4 * np.spacing(scale))
    else:
        np.testing.assert_array_equal(got_grad, want_grad)


def test_cross_entropy_is_lazy_and_bad_targets_raise_at_compute():
    x = da.zeros((4, 3), chunks=(2, 3))
    loss, grad = fd.softmax_cross_entropy(x, np.array([0, 1, 5, 2]))
    assert isinstance(loss, da.Array) and isinstance(grad, da.Array)
    with pytest.raises(ValueError, match="out of range"):
        loss.compute(scheduler="sync")


# --- bfloat16 and float16 -----------------------------------------------------------------------


def _within_a_step(got, want, what):
    """Equal 16-bit values, or one step apart (a result rounded after the "mean" scaling
    instead of before): the float32 values differ in their last bits."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    g, w = got.astype(np.float64), want.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=what)
    ok = ~np.isnan(w)
    assert (np.abs(g - w)[ok] <= ulp16(want)[ok]).all(), what


def test_half_through_the_wrappers(fmt):
    """16-bit dask arrays: every kind of wrapper gives the CPU function's 16-bit result on the
    whole array (elementwise, softmax rows and fused ops: the same bits; cross-entropy's
    gradient within a step), in the input's dtype. Small arrays, the synchronous scheduler."""
    rng = np.random.default_rng(9)
    xn = (rng.standard_normal((20, 12)) * 3).astype(np.float32).astype(fmt)
    gn = rng.standard_normal(xn.shape).astype(np.float32).astype(fmt)
    bias = rng.standard_normal(12).astype(np.float32).astype(fmt)
    x, g = da.from_array(xn, chunks=(7, 12)), da.from_array(gn, chunks=(7, 12))
    lazy = {
        "gelu": (fd.gelu(x), fa.gelu(xn)),
        "gelu_backward": (fd.gelu_backward(g, x), fa.gelu_backward(gn, xn)),
        "hardtanh": (fd.hardtanh(x, -1.0, 2.0), fa.hardtanh(xn, -1.0, 2.0)),
        "softmax": (fd.softmax(x), fa.softmax(xn)),
        "log_softmax_scaled": (fd.log_softmax(x, scale=0.5), fa.log_softmax(xn, scale=0.5)),
        "softmax_backward": (fd.softmax_backward(g, x), fa.softmax_backward(gn, xn)),
        "swiglu": (fd.swiglu(x, g), fa.swiglu(xn, gn)),
        "swiglu_backward_da": (fd.swiglu_backward(g, x, x)[0], fa.swiglu_backward(gn, xn, xn)[0]),
        "glu": (fd.glu(x), fa.glu(xn)),
        "bias_act": (fd.bias_act(x, bias, "silu"), fa.bias_act(xn, bias, "silu")),
        "bias_act_dx": (
            fd.bias_act_backward(g, x, bias, "silu")[0],
            fa.bias_act_backward(gn, xn, bias, "silu")[0],
        ),
    }
    got = da.compute(*(v[0] for v in lazy.values()), scheduler="sync")
    for (name, (_, want)), result in zip(lazy.items(), got):
        assert result.dtype == xn.dtype, name
        np.testing.assert_array_equal(result.view(np.uint16), want.view(np.uint16), err_msg=name)
    dbias = fd.bias_act_backward(g, x, bias, "silu")[1].compute(scheduler="sync")
    assert dbias.dtype == xn.dtype
    np.testing.assert_allclose(
        dbias.astype(np.float64),
        fa.bias_act_backward(gn, xn, bias, "silu")[1].astype(np.float64),
        rtol=2**-6,
        atol=0.05,
    )
    t = rng.integers(0, 12, 20)
    t[3] = -100
    q = S.softmax(rng.standard_normal((20, 12))).astype(fmt)
    for target in (t, q):
        for reduction in ("mean", "sum", "none"):
            kw = {"reduction": reduction, "label_smoothing": 0.1}
            loss, grad = da.compute(*fd.softmax_cross_entropy(x, target, **kw), scheduler="sync")
            want_loss, want_grad = fa.softmax_cross_entropy(xn, target, **kw)
            _within_a_step(grad, want_grad, f"grad {reduction}")
            if reduction == "none":
                _within_a_step(loss, want_loss, "loss")
            else:
                np.testing.assert_allclose(float(loss), want_loss, rtol=1e-6)
    with pytest.raises(TypeError, match="float16, or ml_dtypes' bfloat16"):
        fd.relu(da.zeros(4, dtype=np.uint16, chunks=2))
