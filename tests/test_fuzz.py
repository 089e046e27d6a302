"""Fuzz the public API: any dtype, shape, stride, parameter and flag.

Every call must either return the reference result (float64 reference; float32
compared loosely: accuracy has its own tests) or raise TypeError/ValueError, and a
call that raised must leave every buffer it was given unchanged.
``FASTACT_FUZZ_EXAMPLES`` sets the number of examples per test (default 60).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastact
from fastact.definitions import ACTIVATIONS, Activation

FUZZ = settings(
    max_examples=int(os.environ.get("FASTACT_FUZZ_EXAMPLES", "60")),
    deadline=None,  # a first call compiles
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("CI") is not None,
)

ENTRIES = list(ACTIVATIONS.values())
# float16 (accepted, computed in float32) is fuzzed in test_half_activations
DTYPES = ["float32", "float64", "int16", "int8", "int64", "uint8", "bool", "complex128", "object"]
VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, -3.0, 6.0, 7.5, 20.0, -20.0, 1e-40, -1e-310, 1e30,
          -1e30, 1e300, math.inf, -math.inf, math.nan]  # fmt: skip
BAD_PARAMS = [math.nan, math.inf, -math.inf, True, np.bool_(False), "1.0", None, [1.0], 1 + 2j, -1.0, 0, 0.0]


def public_call(entry: Activation, suffix: str):
    if entry.public:
        return getattr(fastact, entry.name + suffix), {}
    return getattr(fastact, "gelu" + suffix), {"approximate": "tanh"}


@st.composite
def arrays(draw, dtype=None, shape=None):
    """An array (or array-like) of ``dtype`` and ``shape``, as a view with odd strides."""
    dtype = dtype or draw(st.sampled_from(DTYPES))
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
    values = draw(st.lists(st.sampled_from(VALUES) | st.floats(-50, 50), min_size=1, max_size=8))
    steps = tuple(draw(st.sampled_from([1, 2, -1, -2])) for _ in shape)
    base_shape = tuple(max(n * abs(s), 1) for n, s in zip(shape, steps))
    size = math.prod(base_shape)
    flat = np.resize(np.array(values, dtype=np.float64), size)
    with np.errstate(all="ignore"):
        if dtype == "object":
            base = flat.astype(object)
        elif dtype == "bool":
            base = flat != 0
        else:
            base = flat.astype(dtype)
    base = base.reshape(base_shape)
    view = base[(..., *(slice(None, None, s) for s in steps))]  # (...) keeps 0-d an array
    view = view[(..., *(slice(0, n) for n in shape))]
    if draw(st.booleans()) and view.ndim >= 2:
        axes = draw(st.permutations(range(view.ndim)))
        view = view.transpose(axes)
    kind = draw(st.sampled_from(["view", "view", "view", "readonly", "list"]))
    if kind == "readonly":
        view.flags.writeable = False
    elif kind == "list" and view.ndim > 0:
        return view.tolist()
    return view


@st.composite
def params_for(draw, entry: Activation):
    values = []
    for p in entry.params:
        if p.choices:
            continue
        good = p.default if p.default is not None else draw(st.sampled_from([0.0, 1.0, -2.0]))
        values.append(draw(st.sampled_from([good, good, good, *BAD_PARAMS]) | st.floats(-5, 25)))
    return tuple(values)


def snapshot(*objects) -> list:
    return [(o, o.copy()) for o in objects if isinstance(o, np.ndarray)]


def unchanged(saved: list) -> bool:
    for o, c in saved:
        if o.dtype == object:  # compare the objects themselves (NaN != NaN)
            if not all(a is b for a, b in zip(o.ravel().tolist(), c.ravel().tolist())):
                return False
        elif not np.array_equal(o, c, equal_nan=True):
            return False
    return True


def valid_params(entry: Activation, params: tuple) -> bool:
    for value in params:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating)):
            return False
        if math.isnan(value):
            return False
    return entry.check is None or entry.check(*map(float, params)) is None


def cast_params(params: tuple, dtype: np.dtype) -> tuple:
    return tuple(float(dtype.type(p)) for p in params)


def tolerance(dtype: np.dtype, backward: bool) -> dict:
    if dtype == np.float32:
        return {"rtol": 2e-3 if backward else 1e-4, "atol": 1e-6 if backward else 1e-30}
    return {"rtol": 1e-6 if backward else 1e-9, "atol": 1e-12 if backward else 1e-300}


def assert_reference(got, want, dtype: np.dtype, backward: bool, ignore=None) -> None:
    """``got`` matches ``want`` (NaN where NaN), except where ``ignore`` is True."""
    with np.errstate(all="ignore"):
        want = np.asarray(want, dtype=np.float64)
        want = want.astype(dtype).astype(np.float64)  # what the dtype can hold (overflow to inf)
    got = np.asarray(got, dtype=np.float64)
    if ignore is not None:
        got, want = got[~ignore], want[~ignore]
    np.testing.assert_allclose(got, want, equal_nan=True, **tolerance(dtype, backward))


def forward_reference(entry: Activation, x: np.ndarray, params: tuple) -> np.ndarray:
    with np.errstate(all="ignore"):
        return entry.reference(x.astype(np.float64), *cast_params(params, x.dtype))


def backward_case(entry: Activation, x: np.ndarray, params: tuple):
    """(grad, saved, expected) for inputs x: saved is what the forward saves."""
    p = cast_params(params, x.dtype)
    with np.errstate(all="ignore"):
        x64 = x.astype(np.float64)
        saved = x if entry.saves == "input" else entry.reference(x64, *p).astype(x.dtype)
        grad = np.resize(np.array([1.0, -0.5, 2.0, 0.25], x.dtype), x.shape)
        deriv = entry.reference_derivative(x64, *p)
        return grad, saved, grad.astype(np.float64) * deriv


def outcome(call):
    """The call's result, or the TypeError/ValueError it raised (anything else fails)."""
    try:
        return call()
    except (TypeError, ValueError) as exc:
        message = str(exc)
        assert message and "Traceback" not in message and "numba" not in message.lower(), message
        return exc


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
@FUZZ
@given(data=st.data())
def test_forward(entry, data):
    x = data.draw(arrays())
    params = data.draw(params_for(entry))
    suffix = data.draw(st.sampled_from(["", "", "_"]))
    f, kwargs = public_call(entry, suffix)
    out = None
    if suffix == "" and data.draw(st.booleans()):
        shape = np.asarray(x).shape
        out_dtype = data.draw(st.sampled_from(["float32", "float64", "int64"]))
        out = data.draw(arrays(dtype=out_dtype, shape=data.draw(st.sampled_from([shape, shape, (3,)]))))
        kwargs = {**kwargs, "out": out}
    before = snapshot(x, out)
    got = outcome(lambda: f(x, *params, **kwargs))
    if isinstance(got, Exception):
        assert unchanged(before), f"{entry.name}{suffix} raised {got!r} after writing"
        return
    xa = np.asarray(x) if isinstance(x, list) else before[0][1]
    assert xa.dtype in (np.float32, np.float64), f"accepted dtype {xa.dtype}"
    assert valid_params(entry, params), f"accepted parameters {params!r}"
    if suffix == "_":
        assert got is x
    elif out is not None:
        assert got is out
    assert got.shape == xa.shape and got.dtype == xa.dtype
    assert_reference(got, forward_reference(entry, xa, params), xa.dtype, backward=False)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
@FUZZ
@given(data=st.data())
def test_backward(entry, data):
    dtype = data.draw(st.sampled_from(["float32", "float64", "float32", "float64", *DTYPES]))
    x = np.asarray(data.draw(arrays(dtype=dtype)))
    params = data.draw(params_for(entry))
    suffix = data.draw(st.sampled_from(["_backward", "_backward_"]))
    f, kwargs = public_call(entry, suffix)
    if x.dtype in (np.float32, np.float64) and valid_params(entry, params):
        grad, saved, want = backward_case(entry, x, params)
    else:
        grad, saved, want = x, x.copy(), None
    mutation = data.draw(
        st.sampled_from(["none", "none", "none", "saved-shape", "saved-dtype", "grad-readonly"])
    )
    if mutation == "saved-shape":
        saved = saved.reshape(-1)[:-1] if saved.size else np.zeros(3, saved.dtype)
    elif mutation == "saved-dtype" and saved.dtype.kind == "f":
        saved = saved.astype(np.float64 if saved.dtype == np.float32 else np.float32)
    elif mutation == "grad-readonly":
        grad = grad.copy()
        grad.flags.writeable = False
    before = snapshot(grad, saved)
    got = outcome(lambda: f(grad, saved, *params, **kwargs))
    if isinstance(got, Exception):
        assert unchanged(before), f"{entry.name}{suffix} raised {got!r} after writing"
        return
    valid = mutation == "none" or (mutation == "grad-readonly" and suffix == "_backward")
    assert want is not None and valid, f"accepted {mutation}, dtype {x.dtype}, params {params!r}"
    if suffix == "_backward_":
        assert got is grad
    assert got.shape == x.shape and got.dtype == x.dtype
    # Where the input or the saved forward value is NaN the gradient is NaN, 0 or grad
    # depending on the branch taken (as in PyTorch): not compared.
    assert_reference(got, want, x.dtype, backward=True, ignore=np.isnan(x) | np.isnan(saved))


# the activations' ufuncs (the gated units' two-input ufuncs: tests/test_fused.py)
UFUNC_NAMES = [n for n in fastact.ufuncs.__all__ if n.removesuffix("_backward") in ACTIVATIONS]


@pytest.mark.parametrize("name", UFUNC_NAMES)
@FUZZ
@given(data=st.data())
def test_ufunc(name, data):
    backward = name.endswith("_backward")
    entry = ACTIVATIONS[name.removesuffix("_backward")]
    u = getattr(fastact.ufuncs, name)
    x = data.draw(arrays())
    params = data.draw(params_for(entry))
    xa = np.asarray(x)
    args = (x, x) if backward else (x,)
    before = snapshot(x)
    with np.errstate(all="ignore"):  # numpy's floating-point warnings, as for any ufunc
        got = outcome(lambda: u(*args, *params))
    if isinstance(got, Exception):
        assert unchanged(before)
        return
    got = np.asarray(got)
    assert got.dtype in (np.float32, np.float64)
    if not valid_params(entry, params) or xa.dtype == object:
        return  # garbage in: the ufunc computes something, without crashing
    if xa.dtype not in (np.float32, np.float64):
        xa = xa.astype(got.dtype)  # numpy's safe cast to the loop's type
    if backward:
        return  # (grad, saved) = (x, x) is not a forward pair: only the contract above
    assert_reference(got, forward_reference(entry, xa.astype(got.dtype), params), got.dtype, backward=False)
