"""softmax_cross_entropy: torch's semantics, gradients, in place, errors before writes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require
from hypothesis import given
from hypothesis import strategies as st

from fastact import softmax_cross_entropy as ce
from fastact._ops import OPS

REDUCTIONS = ["mean", "sum", "none"]


# torch.nn.functional.cross_entropy written out in float64 numpy (loss only), from the op table
reference = OPS["softmax_cross_entropy"].reference


def numeric_grad(f, x, h=1e-6):
    g = np.empty_like(x)
    for index in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[index] += h
        xm[index] -= h
        g[index] = (f(xp) - f(xm)) / (2 * h)
    return g


def make(seed=0, n=7, c=5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    t = rng.integers(0, c, n)
    t[1] = -100
    w = rng.uniform(0.2, 2.0, c)
    q = rng.dirichlet(np.ones(c), n).astype(dtype)
    return x, t, w, q


OPTIONS = [{}, {"weight": True}, {"label_smoothing": 0.25}, {"weight": True, "label_smoothing": 0.4}]


def options(opts, w):
    return {k: (w if k == "weight" else v) for k, v in opts.items()}


# --- values and gradients ----------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", OPTIONS, ids=str)
@pytest.mark.parametrize("kind", ["class", "prob"])
def test_matches_reference_and_finite_differences(kind, opts, reduction):
    x, t, w, q = make()
    target = t if kind == "class" else q
    kw = options(opts, w)
    loss, grad = ce(x, target, reduction=reduction, **kw)
    want = reference(x, target, reduction=reduction, **kw)
    np.testing.assert_allclose(loss, want, rtol=1e-13, atol=1e-14)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == (7,) and loss.dtype == np.float64
    else:
        assert type(loss) is float
    numeric = numeric_grad(lambda z: np.sum(reference(z, target, reduction=reduction, **kw)), x)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    if kind == "class":
        assert (grad[1] == 0).all()  # the ignored row


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", OPTIONS, ids=str)
@pytest.mark.parametrize("kind", ["class", "prob"])
def test_matches_torch(kind, opts, reduction, dtype):
    torch = require("torch")
    F = torch.nn.functional
    x, t, w, q = make(1, n=9, c=6, dtype=dtype)
    target = t if kind == "class" else q
    kw = options(opts, w.astype(dtype))
    loss, grad = ce(x, target, reduction=reduction, **kw)
    xt = torch.tensor(x, requires_grad=True)
    kt = {k: torch.from_numpy(v) if k == "weight" else v for k, v in kw.items()}
    lt = F.cross_entropy(xt, torch.from_numpy(target), reduction=reduction, **kt)
    lt.sum().backward()
    tol = {"rtol": 2e-6, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(loss, lt.detach().numpy(), **tol)
    np.testing.assert_allclose(grad, xt.grad.numpy(), **tol)
    assert grad.dtype == dtype


@given(
    n=st.integers(1, 12),
    c=st.integers(1, 9),
    scale=st.sampled_from([0.1, 3.0, 50.0]),
    eps=st.sampled_from([0.0, 0.1, 1.0]),
    weighted=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_class_targets(n, c, scale, eps, weighted, reduction, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * scale
    t = rng.integers(-1, c, n)  # -1: ignore_index below
    w = rng.uniform(0.1, 3, c) if weighted else None
    loss, grad = ce(x, t, weight=w, ignore_index=-1, reduction=reduction, label_smoothing=eps)
    want = reference(x, t, weight=w, ignore_index=-1, reduction=reduction, label_smoothing=eps)
    np.testing.assert_allclose(loss, want, rtol=1e-12, atol=1e-12)
    assert np.isfinite(grad).all() or (reduction == "mean" and (t == -1).all())
    if reduction != "mean" or (t != -1).any():
        # grad rows sum to 0 (softmax minus a distribution) scaled: check with the reference
        numeric = numeric_grad(lambda z: np.sum(reference(z, t, w, -1, reduction, eps)), x)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7 * max(1.0, scale))


def test_large_arrays_parallel_path():
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((300, 200)) * 5).astype(dtype)
        t = rng.integers(0, 200, 300)
        w = rng.uniform(0.5, 1.5, 200)
        loss, grad = ce(x, t, weight=w, label_smoothing=0.1)
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, reference(x, t, w, label_smoothing=0.1), rtol=rtol)
        small = np.concatenate([ce(x[i : i + 10], t[i : i + 10], weight=w, reduction="sum",
                                   label_smoothing=0.1)[1] for i in range(0, 300, 10)])  # fmt: skip
        total_w = w[t].sum()
        np.testing.assert_allclose(grad, small / total_w, rtol=rtol, atol=1e-7)
        q = rng.dirichlet(np.ones(200), 300).astype(dtype)
        loss, grad = ce(x, q)
        np.testing.assert_allclose(loss, reference(x, q), rtol=rtol)
        p = np.exp(x - x.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        np.testing.assert_allclose(
            grad, (p - q) / 300, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-9
        )


# --- edge cases ---------------------------------------------------------------------------


def test_edge_logits():
    x = np.array([[1e30, -1e30, 0.0], [-np.inf, 0.0, 1.0], [3e38, 3e38, -3e38], [2.0, 2.0, 2.0]])
    t = np.array([0, 2, 1, 1])
    losses, grad = ce(x, t, reduction="none")
    np.testing.assert_allclose(losses, [0.0, np.log1p(np.exp(-1)), np.log(2), np.log(3)], rtol=1e-15)
    np.testing.assert_allclose(grad[0], [0, 0, 0], atol=0)
    np.testing.assert_allclose(grad[2], [0.5, -0.5, 0.0])
    assert np.isfinite(grad).all()
    loss, _ = ce(x[1:2], np.array([0]))  # the target has probability 0
    assert loss == np.inf
    nan_loss, nan_grad = ce(np.array([[np.nan, 1.0]]), np.array([1]))
    assert np.isnan(nan_loss) and np.isnan(nan_grad).all()
    assert np.isnan(ce(np.array([[-np.inf, -np.inf]]), np.array([0]))[0])


def test_edge_logits_match_torch():
    torch = require("torch")
    x = np.array([[-np.inf, 0.0, 1.0], [1e30, -1e30, 0.0], [-np.inf, -np.inf, -np.inf], [np.nan, 0, 0]])
    for eps in (0.0, 0.2):
        for target in (np.array([1, 0, 0, 1]), np.array([0, 0, 0, 1])):
            got, g = ce(x, target, reduction="none", label_smoothing=eps)
            xt = torch.tensor(x, requires_grad=True)
            lt = torch.nn.functional.cross_entropy(xt, torch.from_numpy(target), reduction="none",
                                                   label_smoothing=eps)  # fmt: skip
            lt.sum().backward()
            np.testing.assert_allclose(got, lt.detach().numpy(), rtol=1e-14)
            np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-14, atol=1e-300)


def test_all_ignored_zero_weight_and_empty():
    x, _, _w, _ = make()
    loss, grad = ce(x, np.full(7, -100))
    assert np.isnan(loss) and (grad == 0).all()  # torch: nan, zero grad
    assert ce(x, np.full(7, -100), reduction="sum")[0] == 0.0
    loss, grad = ce(x, np.zeros(7, int), weight=np.zeros(5))
    assert np.isnan(loss) and np.isnan(grad).all()  # torch: 0/0
    empty = np.empty((0, 4))
    for target in (np.empty(0, int), np.empty((0, 4))):
        loss, grad = ce(empty, target)
        assert np.isnan(loss) and grad.shape == (0, 4)
        assert ce(empty, target, reduction="sum")[0] == 0.0
        losses, _ = ce(empty, target, reduction="none")
        assert losses.shape == (0,)


def test_single_sample_and_target_dtypes():
    x, t, _w, q = make()
    full, _ = ce(x, t, reduction="none")
    for dtype in (np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64):
        valid = t[t >= 0]
        np.testing.assert_allclose(ce(x[t >= 0], valid.astype(dtype), reduction="none")[0], full[t >= 0])
    loss, grad = ce(x[0], np.int64(t[0]), reduction="none")
    assert loss.shape == () and grad.shape == (5,)
    np.testing.assert_allclose(loss, full[0])
    np.testing.assert_allclose(grad, ce(x[:1], t[:1], reduction="sum")[1][0])
    loss, grad = ce(x[0], q[0])
    np.testing.assert_allclose(loss, reference(x[:1], q[:1]))
    assert type(ce(x[0], 2)[0]) is float  # a Python int target works for one sample


def test_float32_loss_and_grad_types():
    x, t, _, q = make(dtype=np.float32)
    loss, grad = ce(x, t)
    assert type(loss) is float and grad.dtype == np.float32
    losses, _ = ce(x, t, reduction="none")
    assert losses.dtype == np.float32
    assert ce(x, q.astype(np.float64))[1].dtype == np.float32  # float64 probabilities accepted


# --- in place, layouts ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["class", "prob"])
@pytest.mark.parametrize("size", [(7, 5), (300, 150)])
def test_in_place_writes_the_gradient_into_logits(kind, size):
    x, t, w, q = make(3, *size)
    target = t if kind == "class" else q
    want_loss, want_grad = ce(x, target, weight=w, label_smoothing=0.1)
    xi = x.copy()
    loss, grad = ce(xi, target, weight=w, label_smoothing=0.1, inplace=True)
    assert grad is xi
    assert loss == pytest.approx(want_loss, rel=1e-14)
    np.testing.assert_allclose(xi, want_grad, rtol=1e-14, atol=1e-17)


def test_non_contiguous_logits_and_targets():
    x, t, w, q = make(4, 8, 6)
    for view in (lambda a: np.asfortranarray(a), lambda a: np.repeat(a, 2, axis=1)[:, ::2]):
        xv = view(x)
        for target in (t, np.repeat(t, 2)[::2], q, np.asfortranarray(q)):
            loss, grad = ce(xv, target, weight=w, label_smoothing=0.3)
            want_loss, want_grad = ce(x, np.ascontiguousarray(target), weight=w, label_smoothing=0.3)
            assert loss == pytest.approx(want_loss, rel=1e-14)
            np.testing.assert_allclose(grad, want_grad, rtol=1e-14, atol=1e-17)
        xi = view(x)
        assert ce(xi, t, inplace=True)[1] is xi
        np.testing.assert_allclose(xi, ce(x, t)[1], rtol=1e-14, atol=1e-17)


# --- errors before any write ----------------------------------------------------------------


def test_errors_leave_logits_unchanged():
    x, t, _w, q = make()
    keep = x.copy()
    cases = [
        (ValueError, "out of range", {"target": np.array([0, 1, 2, 3, 4, 5, 0])}),
        (ValueError, "out of range", {"target": np.array([0, 1, 2, 3, 4, -1, 0])}),
        (ValueError, "out of range", {"target": np.full(7, 2**63 + 5, np.uint64)}),
        (ValueError, "shape", {"target": t[:6]}),
        (ValueError, "shape", {"target": t.reshape(7, 1)}),
        (ValueError, "shape", {"target": q[:, :4]}),
        (TypeError, "dtype", {"target": t.astype(bool)}),
        (TypeError, "dtype", {"target": q.astype(np.float16)}),
        (TypeError, "dtype", {"target": q.astype(np.complex128)}),
        (ValueError, "weight", {"weight": np.ones(4)}),
        (TypeError, "weight", {"weight": np.ones(5, bool)}),
        (TypeError, "weight", {"weight": np.array(["a"] * 5)}),
        (ValueError, "reduction", {"reduction": "avg"}),
        (ValueError, "reduction", {"reduction": None}),
        (ValueError, "label_smoothing", {"label_smoothing": 1.5}),
        (ValueError, "label_smoothing", {"label_smoothing": -0.1}),
        (ValueError, "label_smoothing", {"label_smoothing": float("nan")}),
        (TypeError, "label_smoothing", {"label_smoothing": "0.1"}),
        (TypeError, "ignore_index", {"ignore_index": True}),
        (TypeError, "ignore_index", {"ignore_index": 1.0}),
        (ValueError, "ignore_index", {"ignore_index": 2**70}),
        (TypeError, "inplace", {"inplace": 1}),
    ]
    for error, match, kw in cases:
        args = {"target": t, **kw}
        target = args.pop("target")
        with pytest.raises(error, match=match):
            ce(x, target, inplace=args.pop("inplace", True), **args)
        np.testing.assert_array_equal(x, keep)
    with pytest.raises(ValueError, match="share memory"):
        ce(x, x, inplace=True)
    with pytest.raises(ValueError, match="logits must be"):
        ce(x[None], t, inplace=True)
    with pytest.raises(ValueError, match="no classes"):
        ce(np.empty((3, 0)), np.zeros(3, int))
    with pytest.raises(TypeError, match="float32 or float64"):
        ce(x.astype(np.int64), t)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ce(x, t, dim=1)
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ce(ro, t, inplace=True)
    np.testing.assert_array_equal(x, keep)
