"""linear_cross_entropy: torch's semantics (the composition cross_entropy(x @ W.T + b)),
all three gradients, chunking, BLAS and numpy accumulation, errors before any work,
peak memory, and the torch adapter (gradcheck)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import require

import fastact as fa
from fastact import _config as config
from fastact._linear_xent import default_chunk_rows

lce = fa.linear_cross_entropy
REDUCTIONS = ["mean", "sum", "none"]
OPTIONS = [
    {},
    {"linear_bias": True},
    {"weight": True},
    {"label_smoothing": 0.2},
    {"linear_bias": True, "weight": True, "label_smoothing": 0.3},
]


def make(seed=0, n=37, h=24, v=53, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h)).astype(dtype)
    w_lin = (rng.standard_normal((v, h)) * 0.5).astype(dtype)
    b = rng.standard_normal(v).astype(dtype)
    t = rng.integers(0, v, n)
    t[1] = t[5] = -100
    w = rng.uniform(0.2, 2.0, v).astype(dtype)
    q = rng.dirichlet(np.ones(v), n).astype(dtype)
    return x, w_lin, b, t, w, q


def kwargs(opts, b, w):
    return {k: (b if k == "linear_bias" else w if k == "weight" else v) for k, v in opts.items()}


def reference(x, w_lin, target, linear_bias=None, weight=None, ignore_index=-100, reduction="mean",
              label_smoothing=0.0):  # fmt: skip
    """Loss and the three gradients in float64 numpy, written out from the formulas."""
    x, w_lin = np.asarray(x, np.float64), np.asarray(w_lin, np.float64)
    z = x @ w_lin.T + (0.0 if linear_bias is None else np.asarray(linear_bias, np.float64))
    n, v = z.shape
    m = z.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    p = np.exp(z - lse)
    w = np.ones(v) if weight is None else np.asarray(weight, np.float64)
    eps = label_smoothing
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        valid = target != ignore_index
        t = np.where(valid, target, 0)
        onehot = np.zeros((n, v))
        onehot[np.arange(n), t] = 1.0
        qs = (1 - eps) * onehot * w[t][:, None] + eps / v * w  # w_c q'_c with q' one-hot smoothed
        denominator = w[t][valid].sum()
    else:
        valid = np.ones(n, bool)
        qs = w * (np.asarray(target, np.float64) * (1 - eps) + eps / v)
        denominator = n
    losses = np.where(valid, (qs * (lse - z)).sum(axis=1), 0.0)
    g = np.where(valid[:, None], p * qs.sum(axis=1, keepdims=True) - qs, 0.0)
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = losses.sum()
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = losses.sum() / denominator
            g = g / denominator
    return loss, g @ w_lin, g.T @ x, g.sum(axis=0)


def close(got, want, dtype):
    """float32: within 1e-5 of the largest magnitude (and 1e-5 relative); float64: 1e-10."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    atol = rtol * (np.abs(want).max() if want.size else 0.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def check(result, want, dtype, bias):
    loss, dx, dw, db = result
    close(loss, want[0], dtype)
    for got, ref in zip((dx, dw), want[1:3]):
        assert got.dtype == dtype
        close(got, ref, dtype)
    assert dw.flags.f_contiguous  # the transpose of the (H, V) array BLAS accumulates into
    if bias:
        assert db.dtype == dtype
        close(db, want[3], dtype)
    else:
        assert db is None


# --- values and gradients -----------------------------------------------------------------


def test_reference_agrees_with_finite_differences():
    x, w_lin, b, t, w, q = make(n=6, h=4, v=5)
    for target in (t, q):
        kw = {"linear_bias": b, "weight": w, "label_smoothing": 0.2, "reduction": "sum"}
        _, dx, dw, db = reference(x, w_lin, target, **kw)
        for arg, grad in ((0, dx), (1, dw), (3, db)):
            args = [x, w_lin, target, b]
            base = args[arg]
            numeric = np.empty_like(base)
            for i in np.ndindex(base.shape):
                plus, minus = base.copy(), base.copy()
                plus[i] += 1e-6
                minus[i] -= 1e-6
                f = []
                for value in (plus, minus):
                    a = list(args)
                    a[arg] = value
                    f.append(reference(a[0], a[1], target, **{**kw, "linear_bias": a[3]})[0])
                numeric[i] = (f[0] - f[1]) / 2e-6
            np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", OPTIONS, ids=str)
@pytest.mark.parametrize("kind", ["class", "prob"])
@pytest.mark.parametrize("chunk_size", [None, 1, 8, 1000])
def test_matches_reference(kind, opts, reduction, dtype, chunk_size):
    x, w_lin, b, t, w, q = make(1, dtype=dtype)
    target = t if kind == "class" else q
    kw = kwargs(opts, b, w)
    got = lce(x, w_lin, target, reduction=reduction, chunk_size=chunk_size, **kw)
    want = reference(x, w_lin, target, reduction=reduction, **kw)
    check(got, want, dtype, "linear_bias" in kw)
    if reduction == "none":
        assert got[0].shape == (37,) and got[0].dtype == dtype
    else:
        assert type(got[0]) is float


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", OPTIONS, ids=str)
@pytest.mark.parametrize("kind", ["class", "prob"])
def test_matches_torch(kind, opts, reduction, dtype):
    """Against torch in float64: the composition always, F.linear_cross_entropy where this
    torch has it (reference path and, where it supports the options, its chunked path)."""
    torch = require("torch")
    F = torch.nn.functional
    x, w_lin, b, t, w, q = make(2, n=70, h=32, v=300, dtype=dtype)
    target = t if kind == "class" else q
    kw = kwargs(opts, b, w)
    got = lce(x, w_lin, target, reduction=reduction, chunk_size=16, **kw)

    def torch_grads(fn):
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        wt = torch.tensor(w_lin, dtype=torch.float64, requires_grad=True)
        bt = torch.tensor(b, dtype=torch.float64, requires_grad=True) if "linear_bias" in kw else None
        tt = torch.from_numpy(target if kind == "class" else target.astype(np.float64))
        extra = {k: v for k, v in kw.items() if k != "linear_bias"}
        if "weight" in extra:
            extra["weight"] = torch.tensor(extra["weight"], dtype=torch.float64)
        loss = fn(xt, wt, bt, tt, extra)
        loss.sum().backward()
        return (
            loss.detach().numpy(),
            xt.grad.numpy(),
            wt.grad.numpy(),
            None if bt is None else bt.grad.numpy(),
        )

    def composition(xt, wt, bt, tt, extra):
        logits = xt @ wt.T + (0 if bt is None else bt)
        return F.cross_entropy(logits, tt, reduction=reduction, **extra)

    check(got, torch_grads(composition), dtype, "linear_bias" in kw)
    if hasattr(F, "linear_cross_entropy"):
        ignore = {} if kind == "prob" else {"ignore_index": -100}

        def peer(options):
            def fn(xt, wt, bt, tt, extra):
                return F.linear_cross_entropy(
                    xt, wt, tt, linear_bias=bt, reduction=reduction, options=options, **ignore, **extra
                )

            return fn

        check(got, torch_grads(peer(None)), dtype, "linear_bias" in kw)
        chunked = (
            kind == "class" and "label_smoothing" not in kw
        )  # torch's chunked path's own limits, else it warns and falls back
        if chunked and hasattr(torch.nn, "LinearCrossEntropyOptions"):
            options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=16, chunking_method=None)
            check(got, torch_grads(peer(options)), dtype, "linear_bias" in kw)


# --- bfloat16 and float16: computed in float32, each result rounded once ------------------------


def _f32(a):
    """16-bit floats widened (exactly) to float32; class indices as they are."""
    return a if a is None or np.asarray(a).dtype.kind in "iu" else np.asarray(a).astype(np.float32)


def close16(got, want, dtype, what=""):
    """A 16-bit result (or the float loss) against the float64 reference of the same 16-bit
    inputs: one rounding to the format (relative 2^-8 for bfloat16, 2^-11 for float16, the
    unit roundoff; 1.01 for the float32 error inside it) plus the float32 computation's own
    error, bounded as the float32 tests do (1e-5 of the largest magnitude)."""
    unit = 2.0**-8 if dtype != np.float16 else 2.0**-11
    got, want = np.asarray(got).astype(np.float64), np.asarray(want, np.float64)
    atol = 1e-5 * (np.abs(want).max() if want.size else 0.0)
    np.testing.assert_allclose(got, want, rtol=1.01 * unit, atol=atol, err_msg=what)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", [{}, {"linear_bias": True, "weight": True, "label_smoothing": 0.3}], ids=str)
@pytest.mark.parametrize("kind", ["class", "prob"])
def test_half_matches_reference_and_torch(fmt, kind, opts, reduction):
    """16-bit input, W and bias (and class weights, probabilities): gradients in the input's
    dtype within one rounding of the float64 result on the same 16-bit values; torch's
    bf16 result (logits rounded to bf16 before the cross-entropy) within its own error."""
    x, w_lin, b, t, w, q = (
        a.astype(np.float32).astype(fmt) if a.dtype.kind == "f" else a for a in make(3, n=40, h=24, v=70)
    )
    target = t if kind == "class" else q
    kw = kwargs(opts, b, w)
    got = lce(x, w_lin, target, reduction=reduction, chunk_size=16, **kw)
    loss, dx, dw, db = got
    assert dx.dtype == dw.dtype == x.dtype and dw.flags.f_contiguous and dw.shape == w_lin.shape
    assert (db is None) == ("linear_bias" not in kw) and (db is None or db.dtype == x.dtype)
    if reduction == "none":
        assert loss.dtype == x.dtype
    else:
        assert isinstance(loss, float)
    want = reference(*(_f32(a) for a in (x, w_lin, target)), reduction=reduction,
                     **{k: _f32(v) for k, v in kw.items()})  # fmt: skip
    close16(loss, want[0], fmt, "loss")
    for name, g, ref in zip(("dinput", "dW", "dbias"), (dx, dw, db), want[1:]):
        if g is not None:
            close16(g, ref, fmt, name)
    # every chunking gives one rounding of (nearly) the same float32 values
    other = lce(x, w_lin, target, reduction=reduction, chunk_size=7, **kw)
    close16(other[1], want[1], fmt, "dinput, chunks of 7")
    torch = require("torch")
    F = torch.nn.functional
    ft = require("fastact.torch")
    from fastact.torch import _tensor

    # the torch adapter (16-bit CPU tensors): the same loss and gradients, in the input's dtype
    xa, wa = (_tensor(a.copy()).requires_grad_() for a in (x, w_lin))
    ba = _tensor(b.copy()).requires_grad_() if "linear_bias" in kw else None
    extra = {k: _tensor(v.copy()) if k == "weight" else v for k, v in kw.items() if k != "linear_bias"}
    out = ft.linear_cross_entropy(xa, wa, _tensor(target.copy()), linear_bias=ba, reduction=reduction,
                                  chunk_size=16, **extra)  # fmt: skip
    assert out.dtype == xa.dtype
    out.sum().backward()
    assert xa.grad.dtype == xa.dtype and wa.grad.dtype == xa.dtype
    np.testing.assert_array_equal(xa.grad.float().numpy(), _f32(dx))
    np.testing.assert_array_equal(wa.grad.float().numpy(), _f32(dw))
    np.testing.assert_array_equal(
        out.detach().float().numpy(), np.asarray(loss).astype(fmt).astype(np.float32)
    )
    if fmt != np.float16 and hasattr(F, "linear_cross_entropy"):
        xt, wt = (_tensor(a.copy()).requires_grad_() for a in (x, w_lin))
        bt = _tensor(b.copy()).requires_grad_() if "linear_bias" in kw else None
        tt = _tensor(target.copy())
        extra = {"label_smoothing": kw.get("label_smoothing", 0.0)}
        if "weight" in kw:
            extra["weight"] = _tensor(w.copy())
        if kind == "class":
            extra["ignore_index"] = -100
        out = F.linear_cross_entropy(xt, wt, tt, linear_bias=bt, reduction=reduction, **extra)
        out.sum().backward()
        # torch rounds its bf16 logits (and dlogits) before the products: measured here up to
        # 1.6 bf16 steps (2^-8 of the largest magnitude) from the float64 result, fastact one
        # (checked above); so at most 4 steps apart
        for name, mine, theirs in (
            ("loss", loss, out.detach()),
            ("dinput", dx, xt.grad),
            ("dW", dw, wt.grad),
        ):
            theirs = theirs.float().numpy()
            mine = np.asarray(mine).astype(np.float64)
            scale = max(np.abs(theirs).max(), 1e-30)
            assert np.abs(mine - theirs).max() <= 4 * 2.0**-8 * scale, name


def test_half_weights_are_widened_once_and_no_float32_logits(fmt):
    """Memory of a 16-bit call: the float32 W (widened once), the float32 chunk buffers and
    dW's float32 sum; never anything the size of the float32 logits (N x V)."""
    import tracemalloc

    n, h, v = 512, 16, 2000
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, h)).astype(np.float32).astype(fmt)
    w_lin = (rng.standard_normal((v, h)) * 0.3).astype(np.float32).astype(fmt)
    t = rng.integers(0, v, n)
    lce(x, w_lin, t, chunk_size=32)  # compiles
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        lce(x, w_lin, t, chunk_size=32)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    logits32 = n * v * 4
    outputs = (n * h + v * h) * 2
    assert peak - outputs < logits32 / 4, (peak, logits32)
    assert peak >= 32 * v * 4, peak  # the float32 chunk buffer was held


def test_chunk_size_changes_only_rounding_and_the_numpy_accumulation_agrees():
    x, w_lin, b, t, w, _ = make(3, n=100, h=40, v=90)
    kw = {"linear_bias": b, "weight": w, "label_smoothing": 0.1}
    want = lce(x, w_lin, t, chunk_size=100, **kw)
    views = {
        "F-order W": (x, np.asfortranarray(w_lin)),
        "strided x": (np.repeat(x, 2, axis=1)[:, ::2], w_lin),
        "strided W": (x, np.repeat(w_lin, 2, axis=0)[::2]),
        "F-order x": (np.asfortranarray(x), w_lin),
    }
    for blas in (True, False):
        with config.overridden(LCE_BLAS_ACCUMULATE=blas):
            for chunk in (1, 7, 33, 99, None):
                for name, (xv, wv) in views.items():
                    got = lce(xv, wv, t, chunk_size=chunk, **kw)
                    assert got[0] == pytest.approx(want[0], rel=1e-14), (blas, chunk, name)
                    for a, b_ in zip(got[1:], want[1:]):
                        np.testing.assert_allclose(
                            a, b_, rtol=1e-12, atol=1e-15, err_msg=f"{blas} {chunk} {name}"
                        )


def test_blas_accumulate_is_found_here_and_adds():
    from fastact._blas import gemm_accumulate

    for dtype in (np.float32, np.float64):
        acc = gemm_accumulate(dtype)
        if acc is None:
            pytest.skip("numpy's BLAS has no ILP64 cblas gemm here: the numpy fallback is used")
        rng = np.random.default_rng(0)
        a, b, c = (rng.standard_normal(s).astype(dtype) for s in ((30, 11), (11, 20), (30, 20)))
        out = c.copy()
        assert acc(out, a, b)
        np.testing.assert_allclose(out, c + a @ b, rtol=1e-5)
        assert acc(out, a, b[:, ::2]) is False  # strided rows: the caller falls back
        assert not acc(np.asfortranarray(out), a, b)


def test_default_chunk_rows():
    assert default_chunk_rows(4096, 32000, 4) == 400  # N // 10, a multiple of 16
    assert default_chunk_rows(4096, 32000, 8) == 256  # 64 MiB of float64 logits
    assert default_chunk_rows(1 << 20, 32000, 4) == 512  # 64 MiB
    assert default_chunk_rows(64, 100, 4) == 64  # the whole problem is under 1 MiB
    assert default_chunk_rows(5, 3, 8) == 5
    for n, v in ((4096, 32000), (100_000, 50_000), (777, 131_072), (10_000, 1000)):
        rows = default_chunk_rows(n, v, 4)
        assert rows * v * 4 <= max(n * v * 4 / 8, config.LCE_MIN_CHUNK_BYTES)
    with config.overridden(LCE_CHUNK_FRACTION=4, LCE_ROW_MULTIPLE=1):
        assert default_chunk_rows(4096, 32000, 4) == 524  # 64 MiB, now under the fraction


# --- shapes and edges ---------------------------------------------------------------------------


def test_single_sample_and_target_kinds():
    x, w_lin, b, t, _, q = make(4, n=6)
    rows = lce(x, w_lin, t, linear_bias=b, reduction="none")
    for i in (0, 2):
        loss, dx, dw, db = lce(x[i], w_lin, np.int32(t[i]), linear_bias=b, reduction="none")
        assert loss.shape == () and dx.shape == (24,) and dw.shape == w_lin.shape and db.shape == b.shape
        np.testing.assert_allclose(loss, rows[0][i], rtol=1e-14)
        one = lce(x[i : i + 1], w_lin, t[i : i + 1], linear_bias=b, reduction="sum")
        np.testing.assert_allclose(dx, one[1][0], rtol=1e-14)
        np.testing.assert_allclose(dw, one[2], rtol=1e-14)
    loss, dx, _, _ = lce(x[0], w_lin, q[0])
    assert type(loss) is float and dx.shape == (24,)
    assert type(lce(x[0], w_lin, 3)[0]) is float  # a Python int target for one sample
    for dtype in (np.int8, np.uint16, np.int32, np.uint64):
        valid = t >= 0
        got = lce(x[valid], w_lin, t[valid].astype(dtype), linear_bias=b, reduction="none")[0]
        np.testing.assert_allclose(got, rows[0][valid], rtol=1e-13)


def test_all_ignored_zero_weights_empty_and_no_hidden_units():
    x, w_lin, b, _, _, _ = make(5, n=9)
    loss, dx, dw, db = lce(x, w_lin, np.full(9, -100), linear_bias=b)
    assert np.isnan(loss) and not dx.any() and not dw.any() and not db.any()  # torch: nan, zero grads
    assert lce(x, w_lin, np.full(9, -100), reduction="sum")[0] == 0.0
    loss, dx, dw, _ = lce(x, w_lin, np.zeros(9, int), weight=np.zeros(53))
    assert np.isnan(loss) and np.isnan(dx).all()  # torch: 0/0
    empty = np.empty((0, 24))
    for target in (np.empty(0, int), np.empty((0, 53))):
        loss, dx, dw, db = lce(empty, w_lin, target, linear_bias=b)
        assert np.isnan(loss) and dx.shape == (0, 24) and not dw.any() and dw.shape == w_lin.shape
        assert not db.any()
        assert lce(empty, w_lin, target, reduction="sum")[0] == 0.0
        assert lce(empty, w_lin, target, reduction="none")[0].shape == (0,)
    # H = 0: the logits are the bias
    loss, dx, dw, db = lce(np.empty((4, 0)), np.empty((53, 0)), np.arange(4), linear_bias=b)
    want = fa.softmax_cross_entropy(np.tile(b, (4, 1)), np.arange(4))
    assert loss == pytest.approx(want[0]) and dx.shape == (4, 0) and dw.shape == (53, 0)
    np.testing.assert_allclose(db, want[1].sum(0))


def test_non_finite_rows_stay_in_their_rows_loss():
    x, w_lin, _, t, _, _ = make(6, n=8)
    x[3, 0] = np.nan
    losses, dx, _, _ = lce(x, w_lin, np.where(t < 0, 0, t), reduction="none", chunk_size=2)
    assert np.isnan(losses[3]) and np.isfinite(np.delete(losses, 3)).all()
    assert np.isnan(dx[3]).all() and np.isfinite(np.delete(dx, 3, axis=0)).all()


# --- errors before any work ---------------------------------------------------------------------


def test_errors():
    x, w_lin, b, t, w, q = make(7, n=6)
    cases = [
        (TypeError, "linear_weight has dtype", {"linear_weight": w_lin.astype(np.float32)}),
        (TypeError, "float32 or float64", {"input": x.astype(np.int64)}),
        (TypeError, "linear_weight has dtype", {"linear_weight": w_lin.astype(np.float16)}),
        (TypeError, "float32 or float64", {"input": x.astype(np.uint16)}),
        (TypeError, "linear_bias has dtype", {"linear_bias": b.astype(np.float32)}),
        (ValueError, "linear_bias has shape", {"linear_bias": b[:-1]}),
        (ValueError, "input must be", {"input": x[None]}),
        (ValueError, "linear_weight must be", {"linear_weight": w_lin[0]}),
        (ValueError, r"expected \(V, 24\)", {"linear_weight": w_lin[:, :-1]}),
        (ValueError, "no classes", {"linear_weight": np.empty((0, 24)), "target": np.zeros(6, int)}),
        (ValueError, "out of range", {"target": np.where(t < 0, 53, t)}),
        (ValueError, "out of range", {"target": np.where(t < 0, -1, t)}),
        (ValueError, "shape", {"target": t[:5]}),
        (ValueError, "shape", {"target": q[:, :4]}),
        (TypeError, "dtype", {"target": t.astype(bool)}),
        (ValueError, "weight has shape", {"weight": w[:4]}),
        (ValueError, "reduction", {"reduction": "avg"}),
        (ValueError, "label_smoothing", {"label_smoothing": 1.5}),
        (TypeError, "ignore_index", {"ignore_index": 1.0}),
        (ValueError, "chunk_size", {"chunk_size": 0}),
        (ValueError, "chunk_size", {"chunk_size": -3}),
        (TypeError, "chunk_size", {"chunk_size": 2.0}),
        (TypeError, "chunk_size", {"chunk_size": True}),
        (TypeError, "chunk_size", {"chunk_size": "8"}),
    ]
    for error, match, kw in cases:
        args = {"input": x, "linear_weight": w_lin, "target": t, **kw}
        with pytest.raises(error, match=match):
            lce(args.pop("input"), args.pop("linear_weight"), args.pop("target"), **args)
    with pytest.raises(TypeError, match="unexpected keyword"):
        lce(x, w_lin, t, bias=b)
    # numpy integer chunk sizes are fine
    assert lce(x, w_lin, t, chunk_size=np.int64(4))[0] == pytest.approx(lce(x, w_lin, t)[0], rel=1e-14)


# --- memory -------------------------------------------------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import tracemalloc, json, sys
    import numpy as np
    import fastact as fa
    from fastact import _config as config

    def rss(field):
        try:
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
        except (OSError, StopIteration):
            return None

    n, h, v = 2048, 64, 8192
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h), dtype=np.float32)
    w = rng.standard_normal((v, h), dtype=np.float32) * 0.1
    b = rng.standard_normal(v, dtype=np.float32)
    t = rng.integers(0, v, n)
    blas = sys.argv[1] == "blas"
    with config.overridden(LCE_BLAS_ACCUMULATE=blas):
        fa.linear_cross_entropy(x[:64], w, t[:64], linear_bias=b)  # compile, load BLAS
        before = rss("VmRSS:")
        try:  # reset the peak RSS (Linux)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            before = None
        tracemalloc.start()
        out = fa.linear_cross_entropy(x, w, t, linear_bias=b, label_smoothing=0.1)
        peak = tracemalloc.get_traced_memory()[1]
        hwm = rss("VmHWM:")
    outputs = sum(a.nbytes for a in out[1:])
    rss_added = None if before is None or hwm is None else hwm - before
    print(json.dumps({"peak": peak, "outputs": outputs, "logits": n * v * 4, "rss": rss_added}))
    """
)


@pytest.mark.parametrize("path", ["blas", "numpy"])
def test_peak_memory_is_under_an_eighth_of_the_logits(path):
    """In a fresh process: numpy's allocations (tracemalloc sees them) during one call, less
    the returned gradients, stay under 1/8 of the N x V logits (here 64 MiB float32); so does
    the peak RSS added, where Linux reports it (it also sees BLAS's own workspace, which
    tracemalloc does not: accumulating dW in C order once doubled the chunk there)."""
    import json

    # glibc's fixed mmap threshold: a freed array leaves the RSS (the warm-up's would not)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, path], capture_output=True, text=True, check=True, env=env
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    added = m["peak"] - m["outputs"]
    assert added <= m["logits"] / 8, m
    assert added >= m["logits"] / 32, m  # it did hold a chunk: the probe measures something
    if m["rss"] is not None:
        assert m["rss"] - m["outputs"] <= m["logits"] / 8, m


# --- torch adapter ------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["class", "prob"])
def test_torch_gradcheck(reduction, kind):
    torch = require("torch")
    import fastact.torch as ft

    gen = torch.Generator().manual_seed(0)
    n, h, v = 7, 5, 6
    x = torch.randn(n, h, dtype=torch.float64, generator=gen, requires_grad=True)
    w_lin = torch.randn(v, h, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(v, dtype=torch.float64, generator=gen, requires_grad=True)
    if kind == "class":
        t = torch.randint(0, v, (n,), generator=gen)
        t[2] = -100
    else:
        t = torch.softmax(torch.randn(n, v, dtype=torch.float64, generator=gen), 1)
    w = torch.rand(v, dtype=torch.float64, generator=gen) + 0.5

    def f(x, w_lin, b):
        return ft.linear_cross_entropy(
            x, w_lin, t, linear_bias=b, weight=w, reduction=reduction, label_smoothing=0.1, chunk_size=3
        )

    assert torch.autograd.gradcheck(f, (x, w_lin, b))
    want = torch.nn.functional.cross_entropy(
        x @ w_lin.T + b, t, weight=w, reduction=reduction, label_smoothing=0.1
    )
    torch.testing.assert_close(f(x, w_lin, b), want, rtol=1e-12, atol=1e-14)


def test_torch_module_float32_retain_graph_no_grad_and_errors():
    torch = require("torch")
    import fastact.torch as ft

    torch.manual_seed(1)
    n, h, v = 40, 16, 100
    head = ft.LinearCrossEntropy(h, v, bias=True, label_smoothing=0.1, chunk_size=8)
    ref = torch.nn.Linear(h, v, bias=True)
    ref.load_state_dict({"weight": head.weight.detach(), "bias": head.bias.detach()})
    x = torch.randn(n, h, requires_grad=True)
    t = torch.randint(0, v, (n,))
    loss = head(x, t)
    (2.5 * loss).backward(retain_graph=True)
    loss.backward()  # a second backward through the saved gradients: 3.5 in all
    want = torch.nn.functional.cross_entropy(ref(x.detach()), t, label_smoothing=0.1)  # torch, float32
    x64 = x.detach().double().requires_grad_()
    w64 = ref.weight.detach().double().requires_grad_()
    b64 = ref.bias.detach().double().requires_grad_()
    l64 = torch.nn.functional.cross_entropy(x64 @ w64.T + b64, t, label_smoothing=0.1)
    (3.5 * l64).backward()
    torch.testing.assert_close(loss.double(), l64.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(want.double(), l64.detach(), rtol=1e-5, atol=1e-6)
    for got, ref_grad in ((x.grad, x64.grad), (head.weight.grad, w64.grad), (head.bias.grad, b64.grad)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), ref_grad, rtol=1e-5, atol=1e-5 * ref_grad.abs().max().item())
    with torch.no_grad():
        assert head(x, t).item() == pytest.approx(loss.item(), rel=1e-6)
    # "none" with a per-row grad_output, float32
    head.reduction = "none"
    x.grad = None
    head.weight.grad = None
    scale = torch.rand(n)
    (head(x, t) * scale).sum().backward()
    l64 = torch.nn.functional.cross_entropy(x64 @ w64.T + b64, t, label_smoothing=0.1, reduction="none")
    x64.grad = w64.grad = None
    (l64 * scale.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-5 * x64.grad.abs().max().item())
    torch.testing.assert_close(head.weight.grad.double(), w64.grad, rtol=1e-5,
                               atol=1e-5 * w64.grad.abs().max().item())  # fmt: skip
    assert "num_classes=100" in repr(head)
    with pytest.raises(TypeError, match="must be a float32, float64"):
        ft.linear_cross_entropy(x.int(), head.weight, t)
    with pytest.raises(TypeError, match="linear_weight has dtype"):
        ft.linear_cross_entropy(x.half(), head.weight, t)
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        ft.linear_cross_entropy(x, head.weight, t.numpy())
    with pytest.raises(TypeError, match="linear_weight has dtype"):
        ft.linear_cross_entropy(x.double(), head.weight, t)
