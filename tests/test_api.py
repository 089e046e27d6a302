"""The public contract: layouts, in-place identity, errors before writes, ufuncs, threads."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import ENTRIES, SUFFIXES, entry_point

import fastact as fa
from fastact.testing import default_params

# name -> (base shape, view of the base)
VIEWS = {
    "step2": ((50,), lambda b: b[::2]),
    "reversed": ((33,), lambda b: b[::-1]),
    "transposed": ((7, 9), lambda b: b.T),
    "fortran": ((6, 5), np.asfortranarray),
    "slice2d": ((8, 10), lambda b: b[1:7:2, ::3]),
    "4d-mixed": ((3, 4, 5, 6), lambda b: b.transpose(2, 0, 3, 1)[:, ::2, 1:, ::-1]),
    "0d": ((), lambda b: b),
    "empty": ((0, 4), lambda b: b),
    "size1": ((1, 1, 1), lambda b: b),
    "row-of-2d": ((4, 6), lambda b: b[2]),
    # contiguous rows: the rows kernels
    "rows": ((8, 10), lambda b: b[1:7, 2:9]),
    "every-other-row": ((6, 8), lambda b: b[::2]),
    "3d-rows": ((3, 4, 10), lambda b: b[:, 1:3, 2:8]),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_any_layout_matches_contiguous(entry, dtype, view):
    shape, make_view = VIEWS[view]
    params = default_params(entry)
    base = np.asarray(np.random.default_rng(3).standard_normal(shape) * 4, dtype=dtype)
    x = make_view(base)
    x_values = x.copy(order="C")
    expected = entry_point(entry)(x_values, *params)
    got = entry_point(entry)(x, *params)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_array_equal(got, expected)

    # In place on a view writes exactly the view's elements of the base.
    expected_base = base.copy()
    make_view(expected_base)[...] = expected
    assert entry_point(entry, "_")(x, *params) is x
    if np.shares_memory(x, base) or x is base:
        np.testing.assert_array_equal(base, expected_base)
    np.testing.assert_array_equal(x, expected)

    # Backward through non-contiguous grad, saved and out.
    saved = expected if entry.saves == "output" else x_values
    g = np.full(x.shape, 0.5, dtype=dtype)
    out = np.empty(tuple(reversed(x.shape)), dtype=dtype).T
    assert entry_point(entry, "_backward")(g[...], saved, *params, out=out) is out
    want = entry_point(entry, "_backward")(g.copy(order="C"), saved.copy(order="C"), *params)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("view", ["rows", "every-other-row", "3d-rows"])
def test_views_with_contiguous_rows_run_the_rows_kernels(view, monkeypatch):
    """Not the scalar 2-d loops: operands with contiguous rows go to the SIMD rows
    kernels, in place and not, forward and backward."""
    from fastact._kernels import backward_kernels, forward_kernels

    calls = []
    for kernels in (forward_kernels("sigmoid"), backward_kernels("sigmoid")):
        for flavour in ("serial_2d", "serial_rows", "serial_rows_in_place"):
            kernel = getattr(kernels, flavour)
            spy = lambda *args, _kernel=kernel, _flavour=flavour: (calls.append(_flavour), _kernel(*args))
            monkeypatch.setitem(kernels.__dict__, flavour, spy)  # a frozen dataclass: not setattr
    shape, make_view = VIEWS[view]
    base = np.random.default_rng(0).standard_normal(shape)
    x, g = make_view(base.copy()), make_view(np.ones(shape))
    fa.sigmoid(x, out=make_view(np.empty(shape)))
    fa.sigmoid_(x)
    fa.sigmoid_backward(g, x, out=make_view(np.empty(shape)))
    fa.sigmoid_backward_(g, x)
    per_call = x.size // (x.shape[-2] * x.shape[-1])  # one kernel call per 2-d slice
    expected = ["serial_rows", "serial_rows_in_place"] * 2
    assert calls == [flavour for flavour in expected for _ in range(per_call)]


def test_results_are_arrays_for_0d_and_lists():
    assert isinstance(fa.relu(np.float64(-2.0)), np.ndarray)
    assert fa.relu(np.array(-2.0)).shape == ()
    np.testing.assert_array_equal(fa.relu([-1.0, 2.0]), [0.0, 2.0])
    assert fa.relu([-1.0, 2.0]).dtype == np.float64


BAD_DTYPES = [np.int32, np.int64, np.int16, np.bool_, np.complex64, np.complex128, object]


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_wrong_dtype_is_type_error(bad, suffix):
    for entry in ENTRIES:
        f = entry_point(entry, suffix)
        params = default_params(entry)
        x = np.ones(4, dtype=bad)
        args = (x, np.ones(4)) if "backward" in suffix else (x,)
        with pytest.raises(TypeError, match="float32 or float64"):
            f(*args, *params)
        if "backward" in suffix:
            good = np.ones(4)
            with pytest.raises(TypeError, match="float32 or float64"):
                f(good, x, *params)
            assert (good == 1).all()


def test_non_array_for_in_place_is_type_error():
    with pytest.raises(TypeError, match="numpy.ndarray"):
        fa.relu_([1.0, 2.0])
    with pytest.raises(TypeError, match="numpy.ndarray"):
        fa.relu_backward_([1.0], np.ones(1))
    with pytest.raises(TypeError, match="must be an array|float32 or float64"):
        fa.relu("abc")


@pytest.mark.parametrize("suffix", ["_", "_backward_"])
def test_read_only_is_value_error(suffix):
    x = np.ones(5)
    x.flags.writeable = False
    args = (x, np.ones(5)) if "backward" in suffix else (x,)
    with pytest.raises(ValueError, match="read-only"):
        getattr(fa, "relu" + suffix)(*args)
    out = np.zeros(5)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fa.relu(np.ones(5), out=out)


def test_out_mismatch():
    x = np.full(6, -1.0)
    with pytest.raises(ValueError, match="shape"):
        fa.relu(x, out=np.zeros(5))
    with pytest.raises(TypeError, match="dtype"):
        fa.relu(x, out=np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="shape"):
        fa.relu_backward(np.ones(6), np.ones(5))
    with pytest.raises(TypeError, match="dtype"):
        fa.relu_backward_(np.ones(6), np.ones(6, np.float32))
    with pytest.raises(ValueError, match="zero stride"):
        fa.relu(np.ones(6), out=np.lib.stride_tricks.as_strided(np.zeros(1), (6,), (0,)))
    assert (x == -1).all()


def test_unknown_keyword_is_type_error():
    with pytest.raises(TypeError):
        fa.relu(np.ones(3), negative_slope=0.1)
    with pytest.raises(TypeError):
        fa.threshold(np.ones(3), 0.5)  # value is required, as in torch


@pytest.mark.parametrize(
    "call",
    [
        lambda x: fa.hardtanh_(x, 2.0, 1.0),
        lambda x: fa.softplus_(x, beta=0.0),
        lambda x: fa.softplus_(x, beta=-1.0),
        lambda x: fa.gelu_(x, approximate="sigmoid"),
        lambda x: fa.elu_(x, alpha=-1.0),
        lambda x: fa.celu_(x, alpha=0.0),
        lambda x: fa.leaky_relu_(x, negative_slope=-0.1),
        lambda x: fa.elu_(x, alpha=float("nan")),
    ],
)
def test_bad_parameter_is_value_error_before_any_write(call):
    x = np.linspace(-3, 3, 7)
    before = x.copy()
    with pytest.raises(ValueError):
        call(x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("value", ["1.0", None, True, 1j])
def test_parameter_of_wrong_type_is_type_error(value):
    with pytest.raises(TypeError, match="negative_slope"):
        fa.leaky_relu(np.ones(3), value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_parameters_of_any_real_type_round_once_to_the_dtype(dtype):
    """A parameter is rounded to the arrays' dtype once, whatever its type, and reaches
    the kernels as a Python float: one kernel signature per array type, not per
    parameter type."""
    from numba import types

    from fastact._kernels import backward_kernels, forward_kernels

    x = np.linspace(-6, 2, 101).astype(dtype)
    alpha = 0.1  # not a float32: float32 kernels must use float32(0.1)
    expected = np.where(x > 0, x, dtype(alpha) * np.expm1(x.astype(np.float64)))
    y = fa.elu(x, alpha)
    np.testing.assert_allclose(y, expected, rtol=2 * np.finfo(dtype).eps)
    g = fa.elu_backward(np.ones_like(x), y, alpha)
    for value in (np.float64(alpha), np.float32(alpha), dtype(alpha)):
        if dtype == np.float64 and type(value) is np.float32:
            continue  # float32(0.1) is another float64 value
        assert np.array_equal(fa.elu(x, value), y)
        assert np.array_equal(fa.elu_(x.copy(), value), y)
        assert np.array_equal(fa.elu_backward_(np.ones_like(x), y, value), g)
    assert np.array_equal(fa.elu(x, 1), fa.elu(x, 1.0))  # an int
    for kernels in (forward_kernels("elu"), backward_kernels("elu")):
        for flavour in ("serial", "serial_in_place"):
            for signature in getattr(kernels, flavour).signatures:
                assert signature[-1] == types.UniTuple(types.float64, 1), signature


def test_signatures_follow_torch():
    assert str(inspect.signature(fa.leaky_relu)) == "(x, negative_slope=0.01, *, out=None)"
    assert str(inspect.signature(fa.hardtanh_)) == "(x, min_val=-1.0, max_val=1.0)"
    assert str(inspect.signature(fa.threshold)) == "(x, threshold, value, *, out=None)"
    assert str(inspect.signature(fa.gelu_backward_)) == "(grad, saved, approximate='none')"
    assert "saves its output" in fa.sigmoid_backward.__doc__


def test_saves_choices_are_documented():
    for entry in ENTRIES:
        assert entry.saves in ("input", "output")
        assert entry.note, entry.name
    outputs = {e.name for e in ENTRIES if e.saves == "output"}
    assert {"relu", "sigmoid", "tanh", "elu", "log_sigmoid"} <= outputs
    assert {"gelu", "silu", "mish", "hardswish"}.isdisjoint(outputs)


def test_ufuncs_are_numpy_ufuncs(entry):
    params = default_params(entry)
    forward = getattr(fa.ufuncs, entry.name)
    backward = getattr(fa.ufuncs, entry.name + "_backward")
    assert isinstance(forward, np.ufunc) and isinstance(backward, np.ufunc)
    assert forward.nin == 1 + len(params) and backward.nin == 2 + len(params)
    for dtype in (np.float32, np.float64):
        x = np.linspace(-8, 8, 41, dtype=dtype).reshape(41, 1)
        y = forward(x, *params)
        assert y.dtype == dtype
        # The same scalar function as the array kernels: identical bits.
        np.testing.assert_array_equal(y, entry_point(entry)(x, *params))
        out = np.empty((41, 3), dtype=dtype)
        forward(x, *params, out=out)  # broadcasting into out
        np.testing.assert_array_equal(out, np.broadcast_to(y, (41, 3)))
        saved = y if entry.saves == "output" else x
        g = np.full_like(x, 2.0)
        np.testing.assert_array_equal(
            backward(g, saved, *params), entry_point(entry, "_backward")(g, saved, *params)
        )


@pytest.mark.parametrize("view", ["step2", "reversed", "transposed", "slice2d"])
def test_ufuncs_write_any_out_layout(entry, view):
    """Contiguous inputs into a strided ``out`` and in place: the values of a fresh
    output, and no element of out's base outside the view touched (numba's own ufunc
    loop wrote a strided out of contiguous inputs as if it were contiguous)."""
    shape, make_view = VIEWS[view]
    params = default_params(entry)
    rng = np.random.default_rng(4)
    outside = np.ones(shape, dtype=bool)
    make_view(outside)[...] = False
    for suffix, narrays in (("", 1), ("_backward", 2)):
        ufunc = getattr(fa.ufuncs, entry.name + suffix)
        for dtype in (np.float32, np.float64):
            base = np.full(shape, 7.0, dtype)
            out = make_view(base)
            arrays = [np.asarray(rng.standard_normal(out.shape) * 4, dtype) for _ in range(narrays)]
            want = ufunc(*arrays, *params)
            assert ufunc(*arrays, *params, out=out) is out
            np.testing.assert_array_equal(out, want)
            assert (base[outside] == 7.0).all()
            first = arrays[0].copy()
            ufunc(first, *arrays[1:], *params, out=first)  # in place
            np.testing.assert_array_equal(first, want)
            # numba's ufunc objects fail numpy's masked iteration (the module docstring
            # says so): this fails, and the docstring is wrong, once that changes
            with pytest.raises(ValueError, match="WRITEMASKED"):
                ufunc(*arrays, *params, out=np.empty_like(want), where=rng.random(out.shape) < 0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ufuncs_raise_no_floating_point_flags_on_ordinary_inputs(dtype):
    """numpy turns the flags a ufunc loop raises into warnings: the vector loops must not
    raise them in lanes whose result they discard (celu divided x by the 0.0 of masked-off
    lanes when its alpha was loaded inside the loop)."""
    x = np.linspace(-8, 8, 4001, dtype=dtype)
    for entry in ENTRIES:
        params = default_params(entry)
        y = entry_point(entry)(x, *params)
        with np.errstate(all="raise"):
            getattr(fa.ufuncs, entry.name)(x, *params)
            saved = y if entry.saves == "output" else x
            getattr(fa.ufuncs, entry.name + "_backward")(np.ones_like(x), saved, *params)


def test_ufunc_parameters_broadcast():
    x = np.linspace(-2, 2, 5)
    slopes = np.array([[0.0], [0.5]])
    np.testing.assert_allclose(fa.ufuncs.leaky_relu(x, slopes), np.where(x > 0, x, x * slopes))
    with pytest.raises(AttributeError):
        fa.ufuncs.not_an_activation  # noqa: B018


def test_concurrent_calls_from_threads():
    """Many threads, serial and parallel sizes, shared inputs and private outputs."""
    rng = np.random.default_rng(4)
    shared = rng.standard_normal(50_000).astype(np.float32)
    jobs = []
    for i in range(48):
        entry = ENTRIES[i % len(ENTRIES)]
        size = 50_000 if i % 3 == 0 else 500
        jobs.append((entry, shared[:size]))
    expected = [entry_point(e)(x, *default_params(e)) for e, x in jobs]

    def work(job):
        entry, x = job
        out = entry_point(entry)(x, *default_params(entry))
        y = x.copy()
        entry_point(entry, "_")(y, *default_params(entry))
        return out, y

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, jobs * 3))
    for (out, y), want in zip(results, expected * 3):
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(y, want)


def test_every_public_activation_names_its_torch_module():
    """The table carries the nn.Module class name (fastact.torch's, torch's where it has one)."""
    names = [e.module_name for e in ENTRIES if e.public]
    assert all(n and n[0].isupper() and n.isidentifier() for n in names) and len(set(names)) == len(names)
