"""The fused ops: gated units (GATED_UNITS: swiglu, geglu, reglu, glu) and bias_act.

Generated from the tables: every gated unit and each choice of its parameters, and bias_act
with every activation of ACTIVATIONS. Checked against float64 (or extended) references built
from the entries' own references, finite differences, PyTorch (where installed), across
layouts (views, orders, 0-d, empty), in place against out of place, thread counts (dbias),
errors (raised before anything is written) and allocations (tracemalloc).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import peak_bytes, require
from hypothesis import given
from hypothesis import strategies as st

import fastact as fa
from fastact import _config
from fastact._fused_kernels import chunks
from fastact.definitions import ACTIVATIONS, GATED_UNITS
from fastact.testing import default_params, edge_values, forward_ulp, sample, stated_bound, ulp_error

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}

# (unit, the entry it gates with, the keywords selecting it): swiglu, geglu, geglu tanh, reglu
VARIANTS = [
    (unit, kname, {p.name: c for p in unit.params if p.choices for c, e in p.choices.items() if e == kname})
    for unit in GATED_UNITS.values()
    if not unit.halves
    for kname in unit.variants().values()
]
VARIANT_IDS = [f"{u.name}-{k}" for u, k, _ in VARIANTS]


def twin(view, base, copy):
    """The view of ``copy`` (a contiguous copy of ``base``) that ``view`` is of ``base``."""
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return np.ndarray(view.shape, view.dtype, buffer=copy, offset=offset, strides=view.strides)


def fn(unit, suffix=""):
    return getattr(fa, unit.name + suffix)


def rand(shape, dtype, seed, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def gated_reference(kname, a, b, g=None):
    """float64 (y, da, db) from the entry's references."""
    entry = ACTIVATIONS[kname]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(all="ignore"):
        y = entry.reference(a64) * b64
        if g is None:
            return y
        g64 = g.astype(np.float64)
        return y, g64 * b64 * entry.reference_derivative(a64), g64 * entry.reference(a64)


# --- gated units: values ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("unit", "kname", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_gated_forward_within_the_activation_bound_plus_one_rounding(unit, kname, kw, dtype):
    entry = ACTIVATIONS[kname]
    a = sample(entry, dtype)
    b = rand(a.shape, dtype, 1, scale=3.0)
    b[: a.size // 10] = 1.0  # f(a) itself, edges included
    got = fn(unit)(a, b, **kw)
    assert got.dtype == dtype and got.shape == a.shape
    with np.errstate(all="ignore"):
        ref = entry.reference(a.astype(np.longdouble)) * b.astype(np.longdouble)
    with np.errstate(all="ignore"):
        err = ulp_error(got, ref, dtype)
        ref64 = np.asarray(ref, np.float64)
        # a subnormal product carries an absolute bound, as the forwards' (testing.SUBNORMAL_ULPS)
        tiny = np.abs(ref) < np.finfo(dtype).smallest_normal
        err[tiny & (np.abs(got - ref64) <= 128 * np.finfo(dtype).smallest_subnormal)] = 0
    bound = stated_bound(entry, a) + 1.0  # the product's rounding (and the ulp of its result)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref64))
    assert np.all(np.nan_to_num(err, nan=0.0) <= bound), (a[np.argmax(err - bound)], np.nanmax(err))
    # exactly f(a) * b in the dtype where f is exact
    if entry.ulp == 0:
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(got, entry.reference(a).astype(dtype) * b)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("unit", "kname", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_gated_backward_matches_the_entries_references(unit, kname, kw, dtype):
    a, b, g = (rand(1000, dtype, s) for s in (1, 2, 3))
    da, db = fn(unit, "_backward")(g, a, b, **kw)
    _, rda, rdb = gated_reference(kname, a, b, g)
    np.testing.assert_allclose(da, rda, rtol=RTOL[dtype] * 4, atol=RTOL[dtype])
    np.testing.assert_allclose(db, rdb, rtol=RTOL[dtype] * 4, atol=RTOL[dtype])
    # the in-place backward gives the same bits
    a2, b2 = a.copy(), b.copy()
    out = fn(unit, "_backward_")(g, a2, b2, **kw)
    assert out[0] is a2 and out[1] is b2
    np.testing.assert_array_equal(a2, da)
    np.testing.assert_array_equal(b2, db)


@pytest.mark.parametrize(("unit", "kname", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_gated_backward_against_finite_differences(unit, kname, kw):
    a, b, g = (rand(200, np.float64, s) for s in (4, 5, 6))
    a[np.abs(a) < 1e-3] = 0.5  # away from relu's kink
    h = 1e-6
    da, db = fn(unit, "_backward")(g, a, b, **kw)
    f = fn(unit)
    np.testing.assert_allclose(
        da, g * (f(a + h, b, **kw) - f(a - h, b, **kw)) / (2 * h), rtol=1e-6, atol=1e-8
    )
    np.testing.assert_allclose(
        db, g * (f(a, b + h, **kw) - f(a, b - h, **kw)) / (2 * h), rtol=1e-6, atol=1e-8
    )


@pytest.mark.parametrize(("unit", "kname", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_gated_edges_follow_the_activation(unit, kname, kw):
    """At the edge set (+-0, denormals, +-inf, NaN) with b = 1, y and da are the
    activation's forward and backward exactly; db = g * f(a)."""
    entry = ACTIVATIONS[kname]
    for dtype in DTYPES:
        a = edge_values(dtype)
        ones = np.ones_like(a)
        np.testing.assert_array_equal(
            fn(unit)(a, ones, **kw), getattr(fa, "gelu" if "gelu" in kname else kname)(a, **kw)
        )
        g = rand(a.shape, dtype, 7)
        da, db = fn(unit, "_backward")(g, a, ones, **kw)
        y = fn(unit)(a, ones, **kw)
        saved = a if entry.saves == "input" else y
        public = "gelu" if "gelu" in kname else kname
        np.testing.assert_array_equal(da, getattr(fa, public + "_backward")(g, saved, **kw))
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(db, g * y)


# --- gated units: layouts ------------------------------------------------------------------------


def _layouts(dtype):
    """(name, a, b, g) of equal shapes in many layouts (a and b views of one buffer where it
    helps: the common fused-projection case)."""
    rng = np.random.default_rng(8)
    big = rng.standard_normal((40, 66)).astype(dtype)
    g2 = rng.standard_normal((40, 33)).astype(dtype)
    cube = rng.standard_normal((6, 6, 14)).astype(dtype)
    return [
        ("contiguous", rand(300, dtype, 1), rand(300, dtype, 2), rand(300, dtype, 3)),
        ("fortran", np.asfortranarray(big[:, :33]), np.asfortranarray(big[:, 33:]), np.asfortranarray(g2)),
        ("halves", big[:, :33], big[:, 33:], g2),
        ("interleaved", big[:, ::2], big[:, 1::2], g2),
        ("mixed", big[:, :33], np.asfortranarray(big[:, 33:]), g2[::-1]),
        ("3d", cube[:, ::2, :7], cube[:, 1::2, 7:], rand((3, 6, 7), dtype, 9).transpose(1, 0, 2)),
        ("0d", np.array(1.5, dtype), np.array(-2.0, dtype), np.array(0.5, dtype)),
        ("empty", np.empty((0, 4), dtype), np.empty((0, 4), dtype), np.empty((0, 4), dtype)),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("unit", "kname", "kw"), VARIANTS[:2], ids=VARIANT_IDS[:2])
def test_gated_every_layout_in_and_out_of_place(unit, kname, kw, dtype):
    for name, a, b, g in _layouts(dtype):
        ref_y = fn(unit)(a.copy(), b.copy(), **kw)
        ref_da, ref_db = fn(unit, "_backward")(g.copy(), a.copy(), b.copy(), **kw)
        np.testing.assert_allclose(ref_y, gated_reference(kname, a, b), rtol=RTOL[dtype] * 10, err_msg=name)
        np.testing.assert_array_equal(fn(unit)(a, b, **kw), ref_y, err_msg=name)
        out = np.zeros_like(a)
        assert fn(unit)(a, b, out=out, **kw) is out
        np.testing.assert_array_equal(out, ref_y, err_msg=name)
        da, db = fn(unit, "_backward")(g, a, b, **kw)
        np.testing.assert_array_equal(da, ref_da, err_msg=name)
        np.testing.assert_array_equal(db, ref_db, err_msg=name)
        # in place, on copies that keep the layout (views of one buffer stay so)
        if a.base is not None and a.base is b.base:
            buf = a.base.copy()
            a2, b2 = twin(a, a.base, buf), twin(b, b.base, buf)
        else:
            a2, b2 = a.copy(), b.copy()
        a3 = a2.copy()
        assert fn(unit, "_backward_")(g, a2, b2, **kw)[0] is a2
        np.testing.assert_array_equal(a2, ref_da, err_msg=name)
        np.testing.assert_array_equal(b2, ref_db, err_msg=name)
        assert fn(unit, "_")(a3, b, **kw) is a3
        np.testing.assert_array_equal(a3, ref_y, err_msg=name)


def test_gated_parallel_kernels_give_the_serial_bits():
    a, b, g = (rand((300, 257), np.float32, s) for s in (1, 2, 3))
    results = []
    for threshold in (1 << 40, 1):
        with _config.overridden(PARALLEL_THRESHOLD=threshold):
            y = fa.swiglu(a, b)
            da, db = fa.swiglu_backward(g, a, b)
            rows = fa.swiglu_backward(g[:, :100], a[:, :100], b[:, :100])
            results.append((y, da, db, *rows))
    for serial, parallel in zip(*results):
        np.testing.assert_array_equal(serial, parallel)


def test_gated_b_broadcasts_in_the_forward():
    a = rand((5, 6, 7), np.float64, 1)
    for b in (
        rand(7, np.float64, 2),
        rand((6, 1), np.float64, 3),
        np.float64(1.5),
        rand((1, 6, 7), np.float64, 4),
    ):
        want = gated_reference("silu", a, np.broadcast_to(b, a.shape))
        np.testing.assert_allclose(fa.swiglu(a, b), want, rtol=1e-14)
        x = a.copy()
        fa.swiglu_(x, b)
        np.testing.assert_allclose(x, want, rtol=1e-14)
    with pytest.raises(ValueError, match="does not broadcast"):
        fa.swiglu(a, np.ones(6))


def test_gated_out_overlapping_the_inputs():
    x = rand(200, np.float64, 1)
    want = gated_reference("relu", x[:100], x[100:])
    buf = x.copy()
    fa.reglu(buf[:100], buf[100:], out=buf[50:150])  # reads before it writes, as ufuncs
    np.testing.assert_array_equal(buf[50:150], want)
    buf = x.copy()
    fa.reglu_(buf[:100], buf[:100])  # b is a: relu(a) * a
    np.testing.assert_array_equal(buf[:100], gated_reference("relu", x[:100], x[:100]))


@given(
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
    step=st.integers(1, 2),
    seed=st.integers(0, 2**16),
    which=st.sampled_from(range(len(VARIANTS))),
)
def test_gated_random_shapes_and_views(shape, step, seed, which):
    unit, kname, kw = VARIANTS[which]
    full = tuple(n * step for n in shape)
    rng = np.random.default_rng(seed)
    views = tuple(
        np.array(rng.standard_normal(full) * 3)[tuple(slice(None, None, step) for _ in shape) or ...]
        for _ in range(3)
    )
    a, b, g = views
    # (gelu_tanh's float64 reference is itself ill-conditioned in the tail: 1e-9)
    y = fn(unit)(a, b, **kw)
    np.testing.assert_allclose(y, gated_reference(kname, a, b), rtol=1e-9, atol=1e-300)
    da, db = fn(unit, "_backward")(g, a, b, **kw)
    _, rda, rdb = gated_reference(kname, a, b, g)
    np.testing.assert_allclose(da, rda, rtol=1e-9, atol=1e-12)  # (its derivative cancels to 0 there)
    np.testing.assert_allclose(db, rdb, rtol=1e-9, atol=1e-300)
    np.testing.assert_array_equal(y, fn(unit)(a.copy(), b.copy(), **kw))  # the layout changes no bit
    fn(unit, "_backward_")(g, a, b, **kw)
    np.testing.assert_array_equal(a, da)
    np.testing.assert_array_equal(b, db)


# --- glu -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_glu_is_torch_glu(dtype):
    torch = require("torch")
    F = torch.nn.functional
    x = rand((6, 8, 10), dtype, 1)
    for axis in (-1, 0, 1, 2):
        t = torch.tensor(x, requires_grad=True)
        y = F.glu(t, axis)
        g = rand(tuple(y.shape), dtype, 2)
        y.backward(torch.tensor(g))
        got = fa.glu(x, axis)
        np.testing.assert_allclose(got, y.detach().numpy(), rtol=RTOL[dtype] * 5, atol=RTOL[dtype])
        np.testing.assert_allclose(
            fa.glu_backward(g, x, axis), t.grad.numpy(), rtol=RTOL[dtype] * 5, atol=RTOL[dtype]
        )
        out = np.empty_like(got)
        assert fa.glu(x, axis=axis, out=out) is out
        np.testing.assert_array_equal(out, got)
    # views of x, and the 1-d form
    view = x[:, ::2, ::-1]
    half = view.shape[-1] // 2
    np.testing.assert_array_equal(fa.glu(view), fa.glu(view.copy()))
    np.testing.assert_allclose(
        fa.glu(view),
        view[..., :half] / (1 + np.exp(-view[..., half:].astype(np.float64))),
        rtol=RTOL[dtype] * 5,
    )
    assert fa.glu(np.zeros(0, dtype)).shape == (0,)


def test_glu_errors():
    x = np.zeros((3, 5))
    with pytest.raises(ValueError, match="even length"):
        fa.glu(x)
    with pytest.raises(ValueError, match="0-d"):
        fa.glu(np.float64(1.0) * np.ones(()))
    with pytest.raises(np.exceptions.AxisError if hasattr(np, "exceptions") else ValueError):
        fa.glu(x, axis=2)
    with pytest.raises(TypeError, match="axis"):
        fa.glu(np.zeros((3, 4)), axis=1.0)
    with pytest.raises(ValueError, match="shape"):
        fa.glu_backward(np.zeros((3, 4)), np.zeros((3, 4)), axis=1)
    with pytest.raises(TypeError):
        fa.glu(np.zeros((2, 4), np.int32))


# --- bias_act -----------------------------------------------------------------------------------

ENTRIES = list(ACTIVATIONS.values())


def bias_case(entry, dtype, rows=37, seed=0):
    """x (rows, n) from the entry's sample (edges included), a bias, a gradient."""
    params = default_params(entry)
    flat = sample(entry, dtype, params, n=600, seed=seed)
    n = 23
    flat = np.resize(flat, rows * n)
    x = flat.reshape(rows, n)
    bias = rand(n, dtype, seed + 1, scale=0.5)
    bias[:5] = 0  # the edges themselves, unbiased, in the first columns
    return x, bias, rand(x.shape, dtype, seed + 2), dict(zip(entry.kernel_names, params)), params


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_bias_act_forward_is_the_activation_of_x_plus_bias(entry, dtype):
    x, bias, _, kw, params = bias_case(entry, dtype)
    y = fa.bias_act(x, bias, entry.name, **kw)
    z = x + bias  # the same rounding as the kernel's
    err = forward_ulp(entry, z.ravel(), y.ravel(), params)
    assert np.all(err <= stated_bound(entry, z.ravel())), np.max(err)
    # the activation's own kernel on z gives the same bits
    from fastact._dispatch import run
    from fastact._kernels import forward_kernels

    np.testing.assert_array_equal(y, run(forward_kernels(entry.name), (z,), np.empty_like(z), params))
    x2 = x.copy()
    assert fa.bias_act_(x2, bias, entry.name, **kw) is x2
    np.testing.assert_array_equal(x2, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_bias_act_backward_and_dbias(entry, dtype):
    x, bias, g, kw, params = bias_case(entry, dtype)
    y = fa.bias_act(x, bias, entry.name, **kw)
    saved = y if entry.saves == "output" else x
    dx, dbias = fa.bias_act_backward(g, saved, bias, entry.name, **kw)
    z = x + bias
    from fastact._dispatch import run
    from fastact._kernels import backward_kernels

    want = run(
        backward_kernels(entry.name), (g, z if entry.saves == "input" else y), np.empty_like(g), params
    )
    np.testing.assert_array_equal(dx, want)
    assert dbias.dtype == dtype and dbias.shape == bias.shape
    with np.errstate(invalid="ignore"):
        total = dx.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(dbias, total.astype(dtype), rtol=RTOL[dtype], atol=0)
    g2 = g.copy()
    got = fa.bias_act_backward_(g2, saved, bias, entry.name, **kw)
    assert got[0] is g2
    np.testing.assert_array_equal(g2, dx)
    np.testing.assert_array_equal(got[1], dbias)


@pytest.mark.parametrize("name", ["gelu", "silu", "relu", "softplus", "tanh"])
def test_bias_act_backward_against_finite_differences(name):
    entry = ACTIVATIONS[name]
    x, bias, g = rand((30, 9), np.float64, 1), rand(9, np.float64, 2), rand((30, 9), np.float64, 3)
    x[np.abs(x + bias) < 1e-3] += 0.1
    y = fa.bias_act(x, bias, name)
    dx, dbias = fa.bias_act_backward(g, y if entry.saves == "output" else x, bias, name)
    h = 1e-6
    fd = g * (fa.bias_act(x + h, bias, name) - fa.bias_act(x - h, bias, name)) / (2 * h)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbias, fd.sum(axis=0), rtol=1e-6, atol=1e-7)


def test_bias_act_gelu_tanh_by_either_name():
    x, bias = rand((4, 6), np.float32, 1), rand(6, np.float32, 2)
    np.testing.assert_array_equal(
        fa.bias_act(x, bias, "gelu", approximate="tanh"), fa.bias_act(x, bias, "gelu_tanh")
    )
    np.testing.assert_array_equal(
        fa.bias_act(x, bias, "gelu", approximate="tanh"), fa.gelu(x + bias, approximate="tanh")
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_bias_act_layouts(dtype):
    rng = np.random.default_rng(3)
    big = rng.standard_normal((6, 8, 30)).astype(dtype)
    cases = {
        "1d": big[0, 0],
        "3d": big,
        "fortran": np.asfortranarray(big[0]),
        "rows view": big[:, ::2, :15],
        "strided last axis": big[:, :, ::2],
        "transposed": big.transpose(1, 0, 2),
        "non-mergeable": big[::2, 1:7, 3:20],
        "empty rows": big[:0],
        "empty columns": big[..., :0],
    }
    for name, x in cases.items():
        bias = rand(x.shape[-1], dtype, 4)
        g = rand(x.shape, dtype, 5)
        want_y = fa.silu(x + bias)
        np.testing.assert_array_equal(fa.bias_act(x, bias, "silu"), want_y, err_msg=name)
        want_dx = fa.silu_backward(g, x + bias)
        dx, dbias = fa.bias_act_backward(g, x, bias, "silu")
        np.testing.assert_array_equal(dx, want_dx, err_msg=name)
        lead = tuple(range(x.ndim - 1))
        np.testing.assert_allclose(
            dbias, want_dx.astype(np.float64).sum(axis=lead), rtol=RTOL[dtype], atol=1e-6
        )
        x2 = twin(x, big, big.copy()) if x.base is big and x.size else x.copy()
        fa.bias_act_(x2, bias, "silu")
        np.testing.assert_array_equal(x2, want_y, err_msg=name)
        g2 = g.copy()
        assert fa.bias_act_backward_(g2, x, bias, "silu")[0] is g2
        np.testing.assert_array_equal(g2, want_dx, err_msg=name)
    out = np.empty((6, 8, 30), dtype)
    assert fa.bias_act(big, big[0, 0], "relu", out=out) is out
    np.testing.assert_array_equal(out, fa.relu(big + big[0, 0]))


def test_bias_act_bias_inside_x_in_place():
    x = rand((5, 8), np.float64, 1)
    want = fa.relu(x + x[2])
    fa.bias_act_(x, x[2], "relu")  # the bias is read whole before x is written
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_dbias_is_the_same_for_any_thread_count(threads):
    """Chunks fixed by the shape, partial sums combined in chunk order: the same bits with
    1 or 2 threads, serial or parallel kernels."""
    x, g = rand((1000, 300), np.float32, 1, 10.0), rand((1000, 300), np.float32, 2, 10.0)
    bias = rand(300, np.float32, 3)
    results = []
    previous = numba.get_num_threads()
    try:
        for n in (1, min(threads, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            for threshold in (1 << 40, 1):
                with _config.overridden(PARALLEL_THRESHOLD=threshold):
                    results.append(fa.bias_act_backward(g, x, bias, "gelu")[1])
                    results.append(fa.bias_act_backward(g[:, :200], x[:, :200], bias[:200], "gelu")[1])
    finally:
        numba.set_num_threads(previous)
    for r in results[2::2]:
        np.testing.assert_array_equal(r, results[0])
    for r in results[3::2]:
        np.testing.assert_array_equal(r, results[1])


def test_dbias_of_many_short_rows_and_few_long_ones():
    for shape in ((5000, 3), (2, 20000), (1, 1), (17, 1)):
        g = rand(shape, np.float64, 1)
        dx, dbias = fa.bias_act_backward(g, np.zeros(shape), np.zeros(shape[1]), "linear")
        np.testing.assert_array_equal(dx, g)
        np.testing.assert_allclose(dbias, g.sum(axis=0), rtol=1e-12)


# --- errors: raised before anything is written ------------------------------------------------


def _error_cases():
    f32 = np.ones((4, 6), np.float32)
    f64 = np.ones((4, 6))
    bias = np.ones(6)
    ro = np.ones((4, 6))
    ro.flags.writeable = False
    return [
        (lambda a, b: fa.swiglu(a, b.astype(np.float32)), TypeError, "dtype"),
        (lambda a, b: fa.swiglu(a.astype(np.int64), b), TypeError, "float32 or float64"),
        (lambda a, b: fa.swiglu_(ro, b), ValueError, "read-only"),
        (lambda a, b: fa.swiglu_(a.tolist(), b), TypeError, "numpy.ndarray"),
        (lambda a, b: fa.swiglu(a, b, out=np.empty((4, 5))), ValueError, "shape"),
        (lambda a, b: fa.swiglu(a, b, out=f32), TypeError, "dtype"),
        (lambda a, b: fa.geglu(a, b, approximate="fast"), ValueError, "approximate"),
        (lambda a, b: fa.geglu_(a, b, approximate="fast"), ValueError, "approximate"),
        (lambda a, b: fa.swiglu(a, b, approximate="tanh"), TypeError, "approximate"),
        (lambda a, b: fa.swiglu_backward_(f64.copy(), a, b[:, :5]), ValueError, "shape"),
        (lambda a, b: fa.swiglu_backward_(f64.copy(), a, a), ValueError, "share memory"),
        (lambda a, b: fa.swiglu_backward_(f64.copy(), a, a[:, ::-1]), ValueError, "share memory"),
        (lambda a, b: fa.reglu_backward_(f64.copy(), a, ro), ValueError, "read-only"),
        (lambda a, b: fa.reglu_backward(f32, a, b), TypeError, "dtype"),
        (lambda a, b: fa.bias_act(a, bias, "nope"), ValueError, "unknown activation"),
        (lambda a, b: fa.bias_act_(a, bias, "Relu"), ValueError, "unknown activation"),
        (lambda a, b: fa.bias_act_(a, bias, None), ValueError, "unknown activation"),
        (lambda a, b: fa.bias_act_(a, np.ones(5), "relu"), ValueError, "bias has shape"),
        (lambda a, b: fa.bias_act_(a, np.ones((1, 6)), "relu"), ValueError, "bias has shape"),
        (lambda a, b: fa.bias_act_(a, np.ones(6, np.float32), "relu"), TypeError, "bias has dtype"),
        (lambda a, b: fa.bias_act_(a, np.ones(6, np.int64), "relu"), TypeError, "float32 or float64"),
        (lambda a, b: fa.bias_act_(a, bias, "elu", alpha=-1.0), ValueError, "alpha"),
        (lambda a, b: fa.bias_act_(a, bias, "softplus", beta=0.0), ValueError, "beta"),
        (lambda a, b: fa.bias_act_(a, bias, "hardtanh", min_val=2.0), ValueError, "min_val"),
        (lambda a, b: fa.bias_act_(a, bias, "relu", alpha=1.0), TypeError, "no parameter alpha"),
        (
            lambda a, b: fa.bias_act_(a, bias, "threshold", threshold=1.0),
            TypeError,
            "needs the parameter value",
        ),
        (lambda a, b: fa.bias_act_(a, bias, "gelu", approximate="erf"), ValueError, "approximate"),
        (lambda a, b: fa.bias_act_(a, bias, "leaky_relu", negative_slope="x"), TypeError, "real number"),
        (lambda a, b: fa.bias_act_(np.ones(()), np.ones(1), "relu"), ValueError, "at least one dimension"),
        (lambda a, b: fa.bias_act_(ro, bias, "relu"), ValueError, "read-only"),
        (lambda a, b: fa.bias_act(a, bias, "relu", out=ro), ValueError, "read-only"),
        (lambda a, b: fa.bias_act_backward_(f64.copy(), a[:, :5], bias, "relu"), ValueError, "shape"),
        (lambda a, b: fa.bias_act_backward_(ro, a, bias, "relu"), ValueError, "read-only"),
        (lambda a, b: fa.bias_act_backward_(f64.copy(), a, bias[:3], "gelu"), ValueError, "bias has shape"),
        (lambda a, b: fa.bias_act_backward(f64, a, bias, "mish", beta=1.0), TypeError, "no parameter"),
    ]


@pytest.mark.parametrize("case", range(len(_error_cases())))
def test_errors_before_anything_is_written(case):
    call, error, match = _error_cases()[case]
    a, b = rand((4, 6), np.float64, 1), rand((4, 6), np.float64, 2)
    a0, b0 = a.copy(), b.copy()
    with pytest.raises(error, match=match):
        call(a, b)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


# --- allocations -------------------------------------------------------------------------------

N = 4 * _config.PARALLEL_THRESHOLD  # float64: 1 MiB per array, parallel kernels
SLACK = 16 * 1024


@pytest.mark.parametrize("layout", ["contiguous", "rows", "strided"])
def test_in_place_forms_allocate_nothing_input_sized(layout):
    rng = np.random.default_rng(0)
    shape = (N // 512, 512)

    def arrays():
        if layout == "contiguous":
            return [rng.standard_normal(shape) for _ in range(3)]
        if layout == "rows":
            return [rng.standard_normal((shape[0], 600))[:, :512] for _ in range(3)]
        return [rng.standard_normal((shape[0], 1024))[:, ::2] for _ in range(3)]

    a, b, g = arrays()
    bias = rng.standard_normal(512)
    for unit, _, kw in VARIANTS:
        forward, backward = fn(unit, "_"), fn(unit, "_backward_")
        assert peak_bytes(lambda f=forward, kw=kw: f(a, b, **kw)) < SLACK, unit.name
        assert peak_bytes(lambda f=backward, kw=kw: f(g, a, b, **kw)) < SLACK, unit.name
    partial = chunks(a.shape[0]) * 512 * 8  # dbias's float64 partial sums
    for name in ("gelu", "relu", "sigmoid"):
        assert peak_bytes(lambda name=name: fa.bias_act_(a, bias, name)) < SLACK, name
        assert peak_bytes(lambda name=name: fa.bias_act_backward_(g, a, bias, name)) < partial + SLACK, name
    assert partial <= a.size * 4 / 8  # at most 1/8 of a float32 input
    # the out-of-place forms allocate their results
    assert peak_bytes(lambda: fa.swiglu_backward(g, a, b)) >= 2 * a.size * 8


# --- ufuncs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("unit", "kname", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_gated_ufuncs(unit, kname, kw):
    name = unit.name + ("_" + kw["approximate"] if kw.get("approximate", "none") != "none" else "")
    ufunc = getattr(fa.ufuncs, name)
    assert ufunc.nin == 2 and ufunc.nout == 1
    for dtype in DTYPES:
        a, b = rand((30, 7), dtype, 1), rand(7, dtype, 2)
        np.testing.assert_array_equal(ufunc(a, b), fn(unit)(a, b, **kw))
        x = a.copy()
        ufunc(x, b, out=x)
        np.testing.assert_array_equal(x, fn(unit)(a, b, **kw))


# --- torch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("unit", "kname", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_gated_units_against_torch(unit, kname, kw):
    torch = require("torch")
    F = torch.nn.functional
    act = {
        "silu": F.silu,
        "relu": F.relu,
        "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    }[kname]
    for dtype in DTYPES:
        a, b, g = (rand((50, 40), dtype, s) for s in (1, 2, 3))
        at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        y = act(at) * bt
        y.backward(torch.tensor(g))
        tol = dict(rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)
        np.testing.assert_allclose(fn(unit)(a, b, **kw), y.detach().numpy(), **tol)
        da, db = fn(unit, "_backward")(g, a, b, **kw)
        np.testing.assert_allclose(da, at.grad.numpy(), **tol)
        np.testing.assert_allclose(db, bt.grad.numpy(), **tol)


# --- the torch adapter -------------------------------------------------------------------------


def test_torch_gated_units_gradcheck():
    torch = require("torch")
    ft = require("fastact.torch")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    b_row = torch.randn(5, dtype=torch.float64, generator=gen, requires_grad=True)
    for unit, _, kw in VARIANTS:
        function = getattr(ft, unit.name)
        assert torch.autograd.gradcheck(lambda a, b, f=function, kw=kw: f(a, b, **kw), (a, b))
        assert torch.autograd.gradcheck(lambda a, b, f=function, kw=kw: f(a, b, **kw), (a, b_row))
        halves = torch.cat([a, b], 1).detach().requires_grad_()  # a and b: strided views of one tensor
        assert torch.autograd.gradcheck(lambda u, f=function, kw=kw: f(*u.chunk(2, 1), **kw), (halves,))
        module = getattr(ft, unit.module_name)(**kw)
        torch.testing.assert_close(module(a, b), function(a, b, **kw))
    x = torch.randn(4, 6, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    for dim in (0, 1, -1):
        assert torch.autograd.gradcheck(lambda x, dim=dim: ft.glu(x, dim), (x,))
        torch.testing.assert_close(ft.GLU(dim)(x), torch.nn.functional.glu(x, dim))
    with pytest.raises(TypeError):
        ft.swiglu(a, b, approximate="tanh")


@pytest.mark.parametrize("name", ["gelu", "silu", "sigmoid", "relu", "softplus", "elu", "hardtanh"])
def test_torch_bias_act_gradcheck(name):
    torch = require("torch")
    ft = require("fastact.torch")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: ft.bias_act(x, b, name), (x, bias))
    module = ft.BiasAct(6, name, dtype=torch.float64)
    module.bias.data.copy_(bias.detach())
    torch.testing.assert_close(module(x), ft.bias_act(x, bias, name))
    with pytest.raises(ValueError, match="unknown activation"):
        ft.bias_act(x, bias, "nope")
    with pytest.raises(ValueError, match="unknown activation"):
        ft.BiasAct(6, "nope")


# --- dask ------------------------------------------------------------------------------------------


def test_dask_fused_ops_match_numpy():
    da = require("dask.array")
    fd = require("fastact.dask")
    a, b, g = (rand((40, 30), np.float64, s) for s in (1, 2, 3))
    A, B, G = (da.from_array(v, chunks=(16, 12)) for v in (a, b, g))
    for unit, _, kw in VARIANTS:
        np.testing.assert_array_equal(getattr(fd, unit.name)(A, B, **kw).compute(), fn(unit)(a, b, **kw))
        np.testing.assert_array_equal(
            getattr(fd, unit.name)(A, da.from_array(b[0], chunks=7), **kw).compute(), fn(unit)(a, b[0], **kw)
        )
        got = da.compute(*getattr(fd, unit.name + "_backward")(G, A, B.rechunk(10), **kw))
        for x, y in zip(got, fn(unit, "_backward")(g, a, b, **kw)):
            np.testing.assert_array_equal(x, y)
    with pytest.warns(Warning, match="rechunking"):
        y = fd.glu(A, axis=1)
    np.testing.assert_array_equal(y.compute(), fa.glu(a, axis=1))
    np.testing.assert_array_equal(
        fd.glu_backward(G[:, :15], A, axis=1).compute(), fa.glu_backward(g[:, :15], a, 1)
    )
    bias = rand(30, np.float64, 4)
    np.testing.assert_array_equal(fd.bias_act(A, bias, "gelu").compute(), fa.bias_act(a, bias, "gelu"))
    dx, dbias = da.compute(
        *fd.bias_act_backward(G, A, da.from_array(bias, chunks=5), "gelu", approximate="tanh")
    )
    want_dx, want_dbias = fa.bias_act_backward(g, a, bias, "gelu", approximate="tanh")
    np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_allclose(dbias, want_dbias, rtol=1e-13)
    with pytest.raises(ValueError, match="unknown activation"):
        fd.bias_act(A, bias, "nope")
    with pytest.raises(ValueError, match="even length"):
        fd.glu(da.ones((3, 5), chunks=(2, 5)), axis=1)
    with pytest.raises(ValueError, match="broadcast"):
        fd.swiglu(A, da.ones(7))
