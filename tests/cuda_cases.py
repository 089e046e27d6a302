"""GPU test cases, collected by ``tests/test_cuda.py`` (which see): fastact.cuda
against the CPU package and the float64 references.

Under the simulator the arrays are tiny and blocks have 8 threads
(``fastact.cuda._launch.settings``); on a real GPU the same cases run at real sizes,
plus CuPy and torch interop where installed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import numpy as np
import pytest
from conftest import ENTRIES, assert_same, require, ulp16

import fastact
from fastact.testing import assert_specials, default_params, forward_ulp, rounded, sample, stated_bound

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
GPU = not SIM  # this module is imported only under the simulator or with a usable GPU
N = 40 if SIM else 100_003  # elements per array in the big cases

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator runs numpy scalars


@pytest.fixture(scope="module")
def fc():
    return importlib.import_module("fastact.cuda")


def dev(a):
    from numba import cuda

    return cuda.to_device(np.asarray(a))


def host(d) -> np.ndarray:
    return d.copy_to_host()


def gpu_point(fc, entry, suffix=""):
    if entry.public:
        return getattr(fc, entry.name + suffix)
    return functools.partial(getattr(fc, "gelu" + suffix), approximate="tanh")


def cpu_point(entry, suffix=""):
    if entry.public:
        return getattr(fastact, entry.name + suffix)
    return functools.partial(getattr(fastact, "gelu" + suffix), approximate="tanh")


# --- the float32 arithmetic of the device functions, checked on the CPU -----------------


def _cpu_kernels(entry, compute):
    return _cpu_kernels_of(entry.name, compute)


@functools.cache
def _cpu_kernels_of(name, compute):
    """The entry's forward and backward as the GPU builds them, compiled for the CPU (njit)."""
    from numba import njit

    from fastact.cuda._compile import Builder
    from fastact.definitions import ACTIVATIONS

    entry = ACTIVATIONS[name]
    builder = Builder(njit, compute)
    forward, backward = builder.function(entry.forward), builder.function(entry.backward)

    @njit
    def apply(x, g, saved, y, gx, params):
        for i in range(x.size):
            y[i] = forward(compute(x[i]), *params)
        for i in range(g.size):
            gx[i] = backward(compute(g[i]), compute(saved[i]), *params)

    def run(x, g=None, saved=None, params=()):
        g = x[:0] if g is None else g
        y, gx = np.empty_like(x), np.empty_like(g)
        apply(x, g, g if saved is None else saved, y, gx, tuple(x.dtype.type(p) for p in params))
        return y, gx

    return run


def _forward_worst(entry, compute):
    params = default_params(entry)
    x = sample(entry, np.float32, params, n=20_000)
    got, _ = _cpu_kernels(entry, compute)(x, params=params)
    err = forward_ulp(entry, x, got, params) / np.maximum(stated_bound(entry, x), 0.5)
    return float(np.nanmax(err))


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_float32_device_arithmetic_meets_the_stated_bound(fc, entry):
    """float32 data computed as the GPU does (float32, or float64 for WIDEN) is within bound.

    The GPU's scalars compiled for the CPU: the same float32 arithmetic, with the CPU's
    float32 libm in place of libdevice (both within 1-2 ulp).
    """
    from fastact.cuda._compile import WIDEN, compute_dtype

    compute = compute_dtype(entry.name, "forward", np.dtype(np.float32)).type
    assert _forward_worst(entry, compute) <= 1
    if (entry.name, "forward") in WIDEN:  # keep WIDEN minimal: float32 really breaks the bound
        assert _forward_worst(entry, np.float32) > 1

    params = default_params(entry)
    x = sample(entry, np.float32, params)
    x = x[np.isfinite(x)]
    g = np.random.default_rng(1).uniform(0.5, 2.0, x.size).astype(np.float32)
    saved = cpu_point(entry)(x, *params) if entry.saves == "output" else x
    assert compute_dtype(entry.name, "backward", np.dtype(np.float32)) == np.float32
    _, got = _cpu_kernels(entry, np.float32)(x[:0], g, saved, params)
    want = cpu_point(entry, "_backward")(g, saved, *params)
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(got, want, rtol=16 * eps, atol=16 * eps, err_msg=entry.name)


def test_helper_modules_are_mirrored(fc):
    """Every CPU math helper the table may call has a GPU twin, with the same special values."""
    from fastact import _math as cpu_math
    from fastact import definitions
    from fastact.cuda import _math
    from fastact.cuda._compile import HELPER_MODULES, Builder

    cpu = set(cpu_math.__all__)
    assert cpu <= set(_math.__all__), cpu - set(_math.__all__)
    used = definitions.fm  # the helper module the table calls now
    assert used.__name__ in HELPER_MODULES
    x = np.array([-np.inf, -70.0, -3.0, -0.0, 0.0, 0.5, 30.0, np.inf, np.nan])
    # Run as Python on numpy scalars, as the simulator does (compiled: the test above).
    space = Builder(lambda f: f, np.float64, numpy_math=True)._namespace(_math)
    for name in sorted(cpu & set(dir(used)) - {"like"}):
        with np.errstate(all="ignore"):
            got = np.array([getattr(space, name)(v) for v in x])
            want = np.array([getattr(used, name)(v) for v in x])
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)
        number = ~np.isnan(want)
        np.testing.assert_array_equal(np.signbit(got[number]), np.signbit(want[number]), err_msg=name)


# --- elementwise: accuracy, entry points, layouts -----------------------------------------


def test_forward_accuracy_and_specials(fc, entry, dtype):
    params = default_params(entry)
    x = sample(entry, dtype, params, n=20 if SIM else 20_000)
    got = host(gpu_point(fc, entry)(dev(x), *params))
    assert got.dtype == x.dtype and got.shape == x.shape
    with np.errstate(all="ignore"):
        ref = entry.reference(x.astype(np.float64), *rounded(params, dtype))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=entry.name)
    err = forward_ulp(entry, x, got, params) / np.maximum(stated_bound(entry, x), 0.5)
    assert float(np.max(err)) <= 1, f"{entry.name}: {np.max(err):.2f} x bound at x={x[np.argmax(err)]!r}"
    specials = np.array([0.0, -0.0, np.inf, -np.inf], dtype=dtype)
    got = host(gpu_point(fc, entry)(dev(specials), *params))
    want = cpu_point(entry)(specials, *params)
    assert_specials(entry, specials, got, want, params)


def test_backward_matches_cpu(fc, entry, dtype):
    params = default_params(entry)
    x = sample(entry, dtype, params, n=20 if SIM else 20_000)
    x = x[np.isfinite(x)]
    g = np.random.default_rng(1).uniform(0.5, 2.0, x.size).astype(dtype)
    saved = cpu_point(entry)(x, *params) if entry.saves == "output" else x
    got = host(gpu_point(fc, entry, "_backward")(dev(g), dev(saved), *params))
    want = cpu_point(entry, "_backward")(g, saved, *params)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, want, rtol=16 * eps, atol=16 * eps, err_msg=entry.name)


def test_entry_points_agree(fc, entry):
    params = default_params(entry)
    x = np.linspace(-8, 8, N).astype(np.float32)
    y = host(gpu_point(fc, entry)(dev(x), *params))
    out = dev(np.full_like(x, 7.0))
    assert gpu_point(fc, entry)(dev(x), *params, out=out) is out
    np.testing.assert_array_equal(host(out), y)
    d = dev(x)
    assert gpu_point(fc, entry, "_")(d, *params) is d
    np.testing.assert_array_equal(host(d), y)
    g = np.linspace(-2, 2, N).astype(np.float32)
    saved = y if entry.saves == "output" else x
    gx = host(gpu_point(fc, entry, "_backward")(dev(g), dev(saved), *params))
    d = dev(g)
    assert gpu_point(fc, entry, "_backward_")(d, dev(saved), *params) is d
    np.testing.assert_array_equal(host(d), gx)


VIEWS = {
    "step2": ((50,), lambda b: b[::2]),
    "reversed": ((33,), lambda b: b[::-1]),
    "transposed": ((7, 9), lambda b: b.T),
    "slice2d": ((8, 10), lambda b: b[1:7:2, ::3]),
    "4d-mixed": ((3, 4, 5, 6), lambda b: b.transpose((2, 0, 3, 1))[:, ::2, 1:, ::-1]),
    "6d-unmergeable": ((2, 3, 2, 3, 2, 3), lambda b: b[:, ::2, :, ::2, :, ::2]),
    "0d": ((), lambda b: b),
    "empty": ((0, 4), lambda b: b),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_any_layout_matches_cpu(fc, view):
    shape, make_view = VIEWS[view]
    base = np.asarray(np.random.default_rng(3).standard_normal(shape) * 4, dtype=np.float32)
    want = fastact.relu6(np.array(make_view(base), order="C"))
    d_base = dev(base)
    got = fc.relu6(make_view(d_base))
    np.testing.assert_array_equal(host(got), want)
    assert fc.relu6_(make_view(d_base)) is not None
    expected_base = base.copy()
    make_view(expected_base)[...] = want
    np.testing.assert_array_equal(host(d_base), expected_base)  # exactly the view's elements
    g = np.full(shape, 0.5, np.float32)
    out = fc.hardtanh_backward(make_view(dev(g)), make_view(dev(base)), -1.0, 2.0)
    want_g = fastact.hardtanh_backward(*(np.array(make_view(a), order="C") for a in (g, base)), -1.0, 2.0)
    np.testing.assert_array_equal(host(out), want_g)


def test_partial_overlap_reads_inputs_first(fc):
    x = np.linspace(-3, 3, 21).astype(np.float32)
    want = x.copy()
    want[:-1] = host(fc.elu(dev(x[1:])))
    d = dev(x)
    fc.elu(d[1:], out=d[:-1])
    np.testing.assert_array_equal(host(d), want)
    d = dev(x)
    fc.elu(d[:-1], out=d[1:])
    want = x.copy()
    want[1:] = host(fc.elu(dev(x[:-1])))
    np.testing.assert_array_equal(host(d), want)


# --- errors: the CPU's messages, raised before anything is written ----------------------


def _message(call) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return info.type, str(info.value)


def test_host_arrays_and_non_arrays_are_type_errors(fc):
    with pytest.raises(TypeError, match=r"host \(numpy\) array: use fastact\.relu for host arrays"):
        fc.relu(np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"fastact\.silu_backward_ for host arrays"):
        fc.silu_backward_(np.ones(3), dev(np.ones(3)))
    with pytest.raises(TypeError, match="must be a CUDA array"):
        fc.relu([1.0, 2.0])
    with pytest.raises(
        TypeError,
        match=r"must be a float32 or float64 array \(or float16, or ml_dtypes' bfloat16\), got dtype int64",
    ):
        fc.relu(dev(np.arange(3)))


@pytest.mark.parametrize(
    "call",
    [
        lambda m, d: m.leaky_relu(d(np.ones(4, np.float32)), -1.0),
        lambda m, d: m.hardtanh(d(np.ones(4, np.float32)), 2.0, 1.0),
        lambda m, d: m.softplus(d(np.ones(4, np.float32)), beta=0.0),
        lambda m, d: m.celu(d(np.ones(4, np.float32)), alpha="x"),
        lambda m, d: m.elu(d(np.ones(4, np.float32)), alpha=float("nan")),
        lambda m, d: m.gelu(d(np.ones(4, np.float32)), approximate="fast"),
        lambda m, d: m.relu(d(np.ones(4, np.float32)), inplace=True),
        lambda m, d: m.relu_backward(d(np.ones(4, np.float32)), d(np.ones(5, np.float32))),
        lambda m, d: m.relu_backward(d(np.ones(4, np.float32)), d(np.ones(4, np.float64))),
        lambda m, d: m.relu(d(np.ones(4, np.float32)), out=d(np.ones(3, np.float32))),
    ],
)
def test_same_errors_as_cpu(fc, call):
    assert _message(lambda: call(fc, dev)) == _message(lambda: call(fastact, np.asarray))


def test_nothing_written_before_an_error(fc):
    out = dev(np.full(4, 7.0, np.float32))
    with pytest.raises(ValueError):
        fc.hardtanh(dev(np.ones(4, np.float32)), 2.0, 1.0, out=out)
    with pytest.raises(TypeError):
        fc.relu(dev(np.ones(4, np.float32)), out=out, stream="fast")
    np.testing.assert_array_equal(host(out), 7.0)


class CAIArray:
    """A minimal foreign CUDA array (simulator only: its "device" memory is host memory)."""

    def __init__(self, a: np.ndarray, readonly: bool = False) -> None:
        self.a = a
        ai = a.__array_interface__
        self.__cuda_array_interface__ = {
            "shape": a.shape,
            "strides": ai["strides"],
            "typestr": ai["typestr"],
            "data": (ai["data"][0], readonly),
            "version": 3,
        }


@pytest.mark.skipif(not SIM, reason="the stand-in array needs the simulator's host memory")
def test_any_cuda_array_interface_object(fc):
    a = np.linspace(-2, 2, 9).astype(np.float64)
    foreign = CAIArray(a)
    y = fc.relu(foreign)  # an unknown library: the result is a numba device array
    np.testing.assert_array_equal(host(y), np.maximum(a, 0))
    assert fc.relu_(foreign) is foreign
    np.testing.assert_array_equal(a, np.maximum(np.linspace(-2, 2, 9), 0))  # no copy
    with pytest.raises(ValueError, match="read-only"):
        fc.relu_(CAIArray(a, readonly=True))
    b = np.broadcast_to(np.ones(1), (4,))
    with pytest.raises(ValueError, match="zero stride"):
        fc.relu(dev(np.ones(4)), out=CAIArray(b))


def test_stream_argument(fc):
    from numba import cuda

    d = dev(np.array([-1.0, 2.0]))
    stream = 0 if SIM else cuda.stream()
    np.testing.assert_array_equal(host(fc.relu(d, stream=stream)), [0.0, 2.0])
    with pytest.raises(TypeError, match="stream must be"):
        fc.relu(d, stream=1.5)


def test_signatures_match_cpu(fc):
    import inspect

    for name in ("relu", "leaky_relu_", "hardtanh_backward", "gelu_backward_", "threshold"):
        cpu = list(inspect.signature(getattr(fastact, name)).parameters.values())
        gpu = list(inspect.signature(getattr(fc, name)).parameters.values())
        assert gpu[: len(cpu)] == cpu and [p.name for p in gpu[len(cpu) :]] == ["stream"], name


# --- softmax -----------------------------------------------------------------------------


def _softmax_ref(x, axis, log):
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        z = x - np.where(np.isfinite(m), m, 0)
        lse = np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
        y = z - lse if log else np.exp(z - lse)
        bad = np.isnan(m) | (m == np.inf) | (m == -np.inf)
        return np.where(bad, np.nan, y)


SOFTMAX_CASES = {  # (shape, axis, view): covers the rows, split and cols kernels
    "rows": ((6, 5), -1, None),
    "split-long-rows": ((2, 150), 1, None),
    "cols-axis0": ((9, 4), 0, None),
    "cols-middle": ((2, 7, 3), 1, None),
    "transposed": ((5, 6), 1, lambda b: b.T),
    "unmergeable": ((3, 4, 5), 2, lambda b: b[:, ::2, ::-1]),
    "1d": ((11,), 0, None),
    "0d": ((), 0, None),
    "empty": ((0, 3), 1, None),
}


@pytest.mark.parametrize("case", list(SOFTMAX_CASES))
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_any_axis(fc, case, log, dtype):
    shape, axis, make_view = SOFTMAX_CASES[case]
    rng = np.random.default_rng(4)
    base = np.asarray(rng.standard_normal(shape) * 3, dtype=dtype)
    make_view = make_view or (lambda b: b)
    x = np.array(make_view(base), order="C")
    forward = fc.log_softmax if log else fc.softmax
    y = host(forward(make_view(dev(base)), axis))
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y, _softmax_ref(x, axis, log), **tol)
    d = dev(base)
    assert (fc.log_softmax_ if log else fc.softmax_)(make_view(d), axis) is not None
    np.testing.assert_array_equal(np.array(make_view(host(d)), order="C"), y)  # in place == out of place

    g = rng.standard_normal(x.shape).astype(dtype)
    backward = fc.log_softmax_backward if log else fc.softmax_backward
    gx = host(backward(dev(g), dev(y), axis))
    with np.errstate(all="ignore"):
        g64, y64 = g.astype(np.float64), y.astype(np.float64)
        if log:
            want = g64 - np.exp(y64) * np.sum(g64, axis=axis, keepdims=True)
        else:
            want = y64 * (g64 - np.sum(g64 * y64, axis=axis, keepdims=True))
    np.testing.assert_allclose(gx, want, **tol)
    dg = dev(g)
    assert (fc.log_softmax_backward_ if log else fc.softmax_backward_)(dg, dev(y), axis) is dg
    np.testing.assert_array_equal(host(dg), gx)


def test_softmax_matches_cpu_package(fc):
    try:
        cpu = importlib.import_module("fastact._softmax")
    except ImportError:
        pytest.skip("fastact._softmax not available")
    x = (np.random.default_rng(5).standard_normal((4, 3, 6)) * 4).astype(np.float64)
    for axis in (1, -1):  # the cols and the rows kernels
        for name in ("softmax", "log_softmax"):
            got = host(getattr(fc, name)(dev(x), axis))
            np.testing.assert_allclose(got, getattr(cpu, name)(x, axis), rtol=1e-13, atol=1e-14)


def test_softmax_edge_rows(fc):
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [0.0, -inf, 1.0, -inf],
            [-inf, -inf, -inf, -inf],
            [1.0, nan, 0.0, 2.0],
            [inf, 0.0, 1.0, 2.0],
            [3e38, 3e38, -3e38, 0],
        ],
        dtype=np.float32,
    )
    for log in (False, True):
        y = host((fc.log_softmax if log else fc.softmax)(dev(x)))
        want = _softmax_ref(x, -1, log).astype(np.float32)
        np.testing.assert_allclose(y, want, rtol=2e-6, atol=1e-6)
        assert np.array_equal(np.isnan(y), np.isnan(want))
        assert y[0, 1] == (-inf if log else 0.0)


def test_softmax_kernel_signatures_follow_their_arguments(fc):
    """Each kernel's argument kinds (its compiled signature: the simulator ignores them, a GPU
    does not) name its parameters in order: the data "a", the mask "m", the workspace "w"."""
    import inspect

    from fastact.cuda import _softmax_kernels as sk

    for name, (generator, flags, kinds) in sk.KERNELS.items():
        params = list(inspect.signature(generator(8, np.float32, **flags)).parameters)
        masked = name.endswith("_masked")
        kind = {"a": "a", "b": "a", "out": "a", "group": "i", "chunks": "i", "c": "s", "log": "b"}
        kind.update({"w": "m", "ws": "w"} if masked else {"w": "w"})
        assert kinds == "".join(kind[p] for p in params), name


def test_softmax_errors(fc):
    d = dev(np.ones((2, 3), np.float32))
    with pytest.raises(Exception, match="axis"):
        fc.softmax(d, 2)
    with pytest.raises(TypeError, match="axis must be an integer"):
        fc.softmax(d, 1.0)
    with pytest.raises(ValueError, match="y has shape"):
        fc.softmax_backward(d, dev(np.ones((3, 2), np.float32)))
    with pytest.raises(TypeError, match="host"):
        fc.softmax(np.ones(3))


def test_softmax_other_block_shapes(fc, monkeypatch):
    """Groups of 1..threads threads per row all reduce correctly (patched block size)."""
    from fastact.cuda import _launch

    monkeypatch.setattr(_launch.settings, "threads", 4)
    monkeypatch.setattr(_launch.settings, "per_thread", 1)
    for n in (1, 2, 3, 5, 9):
        x = np.random.default_rng(n).standard_normal((3, n))
        np.testing.assert_allclose(host(fc.softmax(dev(x))), _softmax_ref(x, -1, False), rtol=1e-13)


# --- cross-entropy -----------------------------------------------------------------------


def _xent_ref(x, t, w, ignore, reduction, eps):
    """float64 numpy: torch.nn.functional.cross_entropy and the gradient of its (summed) loss."""
    x = np.moveaxis(x.astype(np.float64), 1 if x.ndim > 1 else 0, -1).reshape(
        -1, x.shape[1 if x.ndim > 1 else 0]
    )
    n, c = x.shape
    w = np.ones(c) if w is None else w.astype(np.float64)
    z = x - x.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    if t.dtype.kind == "f":
        q = np.moveaxis(t.astype(np.float64), 1 if t.ndim > 1 else 0, -1).reshape(n, c)
        a = w * ((1 - eps) * q + eps / c)
        loss = -(a * logp).sum(axis=1)
        grad = p * a.sum(axis=1, keepdims=True) - a
        den = n
    else:
        t = t.reshape(-1)
        valid = t != ignore
        tt = np.where(valid, t, 0)
        wt = w[tt] * valid
        loss = (1 - eps) * wt * -logp[np.arange(n), tt] - valid * eps / c * (w * logp).sum(axis=1)
        onehot = np.eye(c)[tt]
        grad = valid[:, None] * (
            p * ((1 - eps) * wt[:, None] + eps / c * w.sum()) - (1 - eps) * wt[:, None] * onehot - eps / c * w
        )
        den = wt.sum()
    if reduction == "mean":
        return loss.sum() / den, grad / den
    return (loss.sum() if reduction == "sum" else loss), grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("probs", [False, True], ids=["index", "probs"])
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weight"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy(fc, reduction, probs, weighted, eps):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((5, 4)) * 2).astype(np.float64)
    t = rng.random(x.shape) if probs else np.array([1, 3, -100, 0, 2])
    w = rng.random(4) + 0.5 if weighted else None
    loss, grad = fc.softmax_cross_entropy(
        dev(x), dev(t), weight=None if w is None else dev(w), reduction=reduction, label_smoothing=eps
    )
    want_loss, want_grad = _xent_ref(x, t, w, -100, reduction, eps)
    np.testing.assert_allclose(host(loss), want_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host(grad), want_grad, rtol=1e-12, atol=1e-14)


def test_cross_entropy_shapes_inplace_and_torch(fc):
    rng = np.random.default_rng(7)
    for shape, batch in (((2, 3, 4), (2, 4)), ((3,), ()), ((2, 3, 2, 2), (2, 2, 2))):
        x = rng.standard_normal(shape).astype(np.float32)
        t = rng.integers(0, 3, batch)
        d = dev(x)
        loss, grad = fc.softmax_cross_entropy(d, dev(t), label_smoothing=0.2, inplace=True)
        assert grad is d
        want_loss, want_grad = _xent_ref(x[None] if x.ndim == 1 else x, t, None, -100, "mean", 0.2)
        np.testing.assert_allclose(host(loss), want_loss, rtol=1e-5)
        got = np.moveaxis(host(grad), 1, -1).reshape(want_grad.shape) if x.ndim > 1 else host(grad)[None]
        np.testing.assert_allclose(got, want_grad, rtol=1e-5, atol=1e-7)
        if importlib.util.find_spec("torch") is not None:
            import torch

            xt = torch.from_numpy(x).requires_grad_()
            ref = torch.nn.functional.cross_entropy(xt, torch.from_numpy(np.asarray(t)), label_smoothing=0.2)
            ref.backward()
            np.testing.assert_allclose(host(loss), ref.item(), rtol=1e-5)
            np.testing.assert_allclose(host(grad), xt.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_cross_entropy_edges(fc):
    x = dev(np.zeros((2, 3)))
    loss, grad = fc.softmax_cross_entropy(x, dev(np.array([-100, -100])))
    assert np.isnan(host(loss))  # mean over no rows: 0/0, as torch
    np.testing.assert_array_equal(host(grad), 0.0)
    loss, grad = fc.softmax_cross_entropy(x, dev(np.array([5, 1])), reduction="none")
    assert np.isnan(host(loss)[0]) and np.isnan(host(grad)[0]).all() and np.isfinite(host(grad)[1]).all()
    loss, _ = fc.softmax_cross_entropy(dev(np.zeros((0, 3))), dev(np.zeros(0, np.int64)), reduction="sum")
    assert host(loss) == 0.0
    with pytest.raises(ValueError, match="target has shape"):
        fc.softmax_cross_entropy(x, dev(np.array([1, 2, 0])))
    with pytest.raises(ValueError, match="reduction must be one of"):
        fc.softmax_cross_entropy(x, dev(np.array([1, 2])), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        fc.softmax_cross_entropy(x, dev(np.array([1, 2])), label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight has shape"):
        fc.softmax_cross_entropy(x, dev(np.array([1, 2])), weight=dev(np.ones(2)))
    with pytest.raises(TypeError, match="target must be"):
        fc.softmax_cross_entropy(x, dev(np.array([True, False])))


def test_cross_entropy_matches_cpu_package(fc):
    cpu = importlib.import_module("fastact._softmax")
    if not hasattr(cpu, "softmax_cross_entropy"):
        pytest.skip("the CPU softmax_cross_entropy is not there yet")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 5))
    t = np.array([0, 4, -100, 2, 2, 1])
    w = rng.random(5) + 0.5
    for reduction in ("mean", "sum", "none"):
        kw = dict(weight=w, reduction=reduction, label_smoothing=0.1)
        loss, grad = fc.softmax_cross_entropy(dev(x), dev(t), **{**kw, "weight": dev(w)})
        cpu_loss, cpu_grad = cpu.softmax_cross_entropy(x, t, **kw)
        np.testing.assert_allclose(host(loss), cpu_loss, rtol=1e-12)
        np.testing.assert_allclose(host(grad), cpu_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.filterwarnings("ignore:Simulator timings are bogus")
def test_benchmark_script_runs(fc, capsys):
    import runpy

    bench = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "examples", "cuda_bench.py"))
    assert bench["main"](["--tiny"] if SIM else ["--quick", "--log2n", "20"]) == 0
    assert "per call: fastact.cuda.relu_" in capsys.readouterr().out


# --- real GPU only: launch caching and interop -----------------------------------------


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
def test_kernels_are_specialized_and_configs_cached(fc):
    from fastact.cuda import _kernels, _launch

    d = dev(np.ones(1024, np.float32))
    fc.relu_(d)
    kernel = _kernels.kernel("relu", "forward", "float32", False)
    assert kernel.specialized and len(kernel.overloads) == 1
    before = len(_launch._configs)
    fc.relu_(d)
    assert len(_launch._configs) == before


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
def test_torch_in_torch_out_on_its_stream(fc):
    torch = require("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = torch.randn(1000, 33, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = fc.gelu(x)
        s = fc.softmax(x[:, ::2], 0)
    stream.synchronize()
    assert isinstance(y, torch.Tensor) and y.device == x.device
    torch.testing.assert_close(y, torch.nn.functional.gelu(x))
    torch.testing.assert_close(s, torch.softmax(x[:, ::2], 0))
    loss, _grad = fc.softmax_cross_entropy(x, torch.randint(0, 33, (1000,), device="cuda"))
    assert isinstance(loss, torch.Tensor) and loss.shape == ()


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
def test_cupy_in_cupy_out(fc):
    cupy = require("cupy")
    x = cupy.linspace(-3, 3, 1001, dtype=cupy.float32)
    y = fc.silu(x)
    assert isinstance(y, cupy.ndarray)
    cupy.testing.assert_allclose(y, x / (1 + cupy.exp(-x)), rtol=1e-6)


# --- fused ops: gated units (GATED_UNITS) and bias_act ------------------------------------------

GATED_VARIANTS = [
    (unit, {p.name: c for p in unit.params if p.choices for c, e in p.choices.items() if e == kname})
    for unit in fastact.GATED_UNITS.values()
    if not unit.halves
    for kname in unit.variants().values()
]
FUSED_TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-14)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("unit", "kw"), GATED_VARIANTS, ids=lambda v: getattr(v, "name", str(v)))
def test_gated_units_match_cpu(fc, unit, kw, dtype):
    rng = np.random.default_rng(5)
    base = (rng.standard_normal((6, 2 * N)) * 3).astype(dtype)
    g = (rng.standard_normal((6, N)) * 3).astype(dtype)
    views = {"contiguous": lambda b: (b[:, :N], b[:, N:]), "strided": lambda b: (b[:, ::2], b[:, 1::2])}
    tol = FUSED_TOL[dtype]
    for layout, split in views.items():
        a, b = (np.ascontiguousarray(v) for v in split(base))
        f = getattr(fc, unit.name)
        np.testing.assert_allclose(
            host(f(*split(dev(base)), **kw)), getattr(fastact, unit.name)(a, b, **kw), **tol
        )
        np.testing.assert_allclose(
            host(f(dev(a), dev(b[0]), **kw)), getattr(fastact, unit.name)(a, b[0], **kw), **tol
        )
        da, db = getattr(fastact, unit.name + "_backward")(g, a, b, **kw)
        gda, gdb = getattr(fc, unit.name + "_backward")(dev(g), *split(dev(base)), **kw)
        np.testing.assert_allclose(host(gda), da, **tol, err_msg=layout)
        np.testing.assert_allclose(host(gdb), db, **tol, err_msg=layout)
        d_base = dev(base)
        getattr(fc, unit.name + "_backward_")(dev(g), *split(d_base), **kw)  # halves of one buffer
        np.testing.assert_allclose(
            host(d_base)[:, :N] if layout == "contiguous" else host(d_base)[:, ::2], da, **tol
        )
        d_base = dev(base)
        getattr(fc, unit.name + "_")(*split(d_base), **kw)
        np.testing.assert_allclose(split(host(d_base))[0], getattr(fastact, unit.name)(a, b, **kw), **tol)
    with pytest.raises(ValueError, match="share memory"):
        d = dev(a)
        getattr(fc, unit.name + "_backward_")(dev(g), d, d, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_glu_matches_cpu(fc, dtype):
    x = (np.random.default_rng(6).standard_normal((4, 6, 8)) * 3).astype(dtype)
    for axis in (0, 1, -1):
        y = fastact.glu(x, axis)
        np.testing.assert_allclose(host(fc.glu(dev(x), axis)), y, **FUSED_TOL[dtype])
        g = np.ones_like(y) * 0.5
        np.testing.assert_allclose(
            host(fc.glu_backward(dev(g), dev(x), axis)), fastact.glu_backward(g, x, axis), **FUSED_TOL[dtype]
        )
    with pytest.raises(ValueError, match="even length"):
        fc.glu(dev(np.zeros((3, 5), dtype)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gelu", {}),
        ("gelu", {"approximate": "tanh"}),
        ("relu", {}),
        ("sigmoid", {}),
        ("threshold", {"threshold": 0.1, "value": 2.0}),
    ],
)
def test_bias_act_matches_cpu(fc, name, params, dtype):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 40, 2 * 5)) * 3).astype(dtype)
    bias = rng.standard_normal(10).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    tol = FUSED_TOL[dtype]
    y = fastact.bias_act(x, bias, name, **params)
    np.testing.assert_allclose(host(fc.bias_act(dev(x), dev(bias), name, **params)), y, **tol)
    d = dev(x)
    fc.bias_act_(d, dev(bias), name, **params)
    np.testing.assert_allclose(host(d), y, **tol)
    saved = y if fastact._fused.resolve(name, params)[0].saves == "output" else x
    dx, dbias = fastact.bias_act_backward(g, saved, bias, name, **params)
    gdx, gdbias = fc.bias_act_backward(dev(g), dev(saved), dev(bias), name, **params)
    np.testing.assert_allclose(host(gdx), dx, **tol)
    np.testing.assert_allclose(host(gdbias), dbias, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    # views: a strided last axis and a strided bias
    xs, gs = dev(x[:, ::3, ::2].copy()), dev(g[:, ::3, ::2].copy())
    want = fastact.bias_act_backward(g[:, ::3, ::2], x[:, ::3, ::2], bias[::2], "gelu")
    got = fc.bias_act_backward_(gs, xs, dev(bias)[::2], "gelu")
    np.testing.assert_allclose(host(got[0]), want[0], **tol)
    np.testing.assert_allclose(host(got[1]), want[1], rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    with pytest.raises(ValueError, match="unknown activation"):
        fc.bias_act(dev(x), dev(bias), "nope")
    with pytest.raises(ValueError, match="bias has shape"):
        fc.bias_act_(dev(x), dev(bias[:3]), "relu")


# --- masked and scaled softmax --------------------------------------------------------------

MASK_CASES = {  # (shape, axis, mask shape): rows, split long rows, cols; broadcast masks
    "rows-causal": ((2, 6, 6), -1, (6, 6)),
    "rows-padding": ((2, 3, 5), -1, (2, 1, 5)),
    "split-long-rows": ((2, 150), 1, (2, 150)),
    "cols": ((7, 4), 0, (7, 1)),
    "scale-only": ((3, 9), -1, None),
}


@pytest.mark.parametrize("case", list(MASK_CASES))
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_masked_softmax_matches_cpu(fc, case, log, dtype):
    """scale= and where= against the CPU package (same semantics): forward and backward,
    new and in place; rows with no entry included give 0 (-inf) and gradient 0."""
    cpu = importlib.import_module("fastact._softmax")
    shape, axis, wshape = MASK_CASES[case]
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    where = None if wshape is None else rng.random(wshape) < 0.6
    if where is not None:
        where.reshape(-1, wshape[-1])[0] = False
    name = "log_softmax" if log else "softmax"
    kw = {"scale": 0.5} if where is None else {"scale": 0.5, "where": where}
    dkw = {"scale": 0.5} if where is None else {"scale": 0.5, "where": dev(where)}
    want = getattr(cpu, name)(x, axis, **kw)
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    y = host(getattr(fc, name)(dev(x), axis, **dkw))
    np.testing.assert_allclose(y, want, **tol)
    d = dev(x)
    getattr(fc, name + "_")(d, axis, **dkw)
    np.testing.assert_array_equal(host(d), y)
    g = rng.standard_normal(shape).astype(dtype)
    gx = host(getattr(fc, name + "_backward")(dev(g), dev(y), axis, **dkw))
    np.testing.assert_allclose(gx, getattr(cpu, name + "_backward")(g, y, axis, **kw), **tol)
    if where is not None:
        assert (gx[~np.broadcast_to(where, shape)] == 0).all()
        with pytest.raises(TypeError, match="where"):
            getattr(fc, name)(dev(x), axis, where=dev(where.astype(np.float32)))
    with pytest.raises(ValueError, match="scale"):
        getattr(fc, name)(dev(x), axis, scale=np.nan)


# --- float16 and bfloat16: loaded as float32, computed as float32 data is, rounded once ------
# Each 16-bit result is the GPU's own float32 result on the widened inputs, rounded to the
# format (ties to even, NaN stays NaN): compared bit for bit. Small arrays: the simulator is slow.


def _f32(a):
    return a.astype(np.float32)


def _rounded(result, like):
    with np.errstate(all="ignore"):
        return np.asarray(result).astype(like.dtype)


def _half_sample(fmt, n=24, seed=0):
    """n values around the activations' interesting ranges, specials and 16-bit extremes."""
    x = (np.random.default_rng(seed).standard_normal(n) * 4).astype(np.float32)
    big = 60000.0 if fmt == np.float16 else 3e38
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, big, -big, 1e-6, -1e-6, 0.5, -30.0]
    return np.concatenate([x, np.array(specials, np.float32)]).astype(fmt)


def test_bfloat16_device_conversions_every_pattern(fc):
    """The GPU's bfloat16 load and store (as the simulator runs them, over numpy bit casts):
    widening every pattern is the shift; rounding every bfloat16 value with the low halves
    that decide a rounding (below, at and above the tie, both parities) is ml_dtypes' (to
    nearest, ties to even, overflow to inf); NaN stays a NaN of the same sign."""
    ml = require("ml_dtypes")
    from fastact.cuda import _math

    top = np.arange(1 << 16, dtype=np.uint32)
    got = np.array([_math.bf16_load(np.uint16(u)) for u in top], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), top << 16)
    bits = ((top[:, None] << 16) | np.array([0x0001, 0x7FFF, 0x8000, 0x8001], np.uint32)).ravel()
    x = bits.view(np.float32)
    got = np.array([_math.bf16_store(v) for v in x], np.uint32).astype(np.uint16)
    want = x.astype(ml.bfloat16).view(np.uint16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert (got[nan] & 0x7FFF > 0x7F80).all() and ((got[nan] >> 15) == (bits[nan] >> 31)).all()


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_half_elementwise_is_float32_rounded_once(fc, entry, fmt):
    params = default_params(entry)
    x = _half_sample(fmt)
    f = gpu_point(fc, entry)
    y = host(f(dev(x), *params))
    assert_same(y, _rounded(host(f(dev(_f32(x)), *params)), x), f"{entry.name} forward")
    g = _half_sample(fmt, seed=1)
    saved = y if entry.saves == "output" else x
    b = gpu_point(fc, entry, "_backward")
    got = host(b(dev(g), dev(saved), *params))
    assert_same(got, _rounded(host(b(dev(_f32(g)), dev(_f32(saved)), *params)), g), f"{entry.name} backward")


def test_half_elementwise_entry_points_and_cpu(fc, fmt):
    x = _half_sample(fmt)
    g = _half_sample(fmt, seed=2)
    for name in ("gelu", "elu", "hardtanh"):
        y = getattr(fastact, name)(x)
        d = dev(x)
        assert getattr(fc, name + "_")(d) is d
        got = host(d)
        # the CPU's 16-bit result (float32 with another libm, rounded): within one 16-bit step
        finite = np.isfinite(_f32(y))
        diff = np.abs(_f32(got).astype(np.float64) - _f32(y))
        assert (diff[finite] <= ulp16(y)[finite]).all(), name
        assert_same(got[~finite], y[~finite], name)
        out = dev(np.zeros_like(x))
        assert getattr(fc, name)(dev(x), out=out) is out
        assert_same(host(out), got, name)
        saved = y if fastact.ACTIVATIONS[name].saves == "output" else x
        want = host(getattr(fc, name + "_backward")(dev(g), dev(saved)))
        d = dev(g)
        assert getattr(fc, name + "_backward_")(d, dev(saved)) is d
        assert_same(host(d), want, name)
    # a strided view, written exactly where the view is
    base = np.stack([x, x]).T.copy()
    d = dev(base)
    fc.silu_(d[::2, 1])
    want = base.copy()
    want[::2, 1] = host(fc.silu(dev(np.ascontiguousarray(base[::2, 1]))))
    assert_same(host(d), want, "strided")


def test_half_errors(fc, fmt):
    other = np.float16 if fmt != np.float16 else require("ml_dtypes").bfloat16
    with pytest.raises(TypeError, match="dtype"):
        fc.relu_backward(dev(np.ones(4, fmt)), dev(np.ones(4, other)))
    with pytest.raises(TypeError, match="dtype"):
        fc.softmax_backward(dev(np.ones(4, fmt)), dev(np.ones(4, np.float32)))
    with pytest.raises(TypeError, match="must be a float32 or float64 array"):
        fc.gelu(dev(np.ones(4, np.int16)))
    with pytest.raises(TypeError, match="weight has dtype"):
        fc.softmax_cross_entropy(dev(np.ones((2, 3), fmt)), dev(np.array([0, 1])), weight=dev(np.ones(3)))
    assert _message(lambda: fc.relu(dev(np.ones(4, np.uint16)))) == _message(
        lambda: fastact.relu(np.ones(4, np.uint16))
    )


HALF_SOFTMAX = {"rows": ((3, 7), -1), "split": ((2, 150), 1), "cols": ((7, 4), 0)}


@pytest.mark.parametrize("case", list(HALF_SOFTMAX))
def test_half_softmax_is_float32_rounded_once(fc, fmt, case):
    shape, axis = HALF_SOFTMAX[case]
    rng = np.random.default_rng(12)
    x = (rng.standard_normal(shape) * 3).astype(np.float32).astype(fmt)
    x.reshape(-1)[1] = -np.inf
    g = rng.standard_normal(shape).astype(np.float32).astype(fmt)
    where = rng.random(shape) < 0.7
    for name in ("softmax", "log_softmax"):
        for kw in ({}, {"scale": 0.5, "where": where}):
            dkw = {k: dev(v) if k == "where" else v for k, v in kw.items()}
            y = host(getattr(fc, name)(dev(x), axis, **dkw))
            assert_same(y, _rounded(host(getattr(fc, name)(dev(_f32(x)), axis, **dkw)), x), f"{name} {kw}")
            d = dev(x)
            getattr(fc, name + "_")(d, axis, **dkw)
            assert_same(host(d), y, f"{name}_")
            gx = host(getattr(fc, name + "_backward")(dev(g), dev(y), axis, **dkw))
            want = host(getattr(fc, name + "_backward")(dev(_f32(g)), dev(_f32(y)), axis, **dkw))
            assert_same(gx, _rounded(want, g), f"{name}_backward {kw}")
            d = dev(g)
            getattr(fc, name + "_backward_")(d, dev(y), axis, **dkw)
            assert_same(host(d), gx, f"{name}_backward_")
            if not kw and case == "rows":  # the CPU's 16-bit softmax: within a step of 16 bits
                cpu = getattr(fastact, name)(x, axis)
                np.testing.assert_allclose(_f32(y), _f32(cpu), rtol=2**-7, atol=2**-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_half_cross_entropy_is_float32_rounded_once(fc, fmt, reduction):
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((5, 4)) * 2).astype(np.float32).astype(fmt)
    w = (rng.random(4) + 0.5).astype(np.float32).astype(fmt)
    q = rng.random((5, 4)).astype(np.float32).astype(fmt)
    for t, weight, eps in ((np.array([1, 3, -100, 0, 2]), w, 0.1), (q, None, 0.0)):
        kw = dict(reduction=reduction, label_smoothing=eps)
        loss, grad = fc.softmax_cross_entropy(
            dev(x), dev(t), weight=None if weight is None else dev(weight), **kw
        )
        tf = t if t.dtype.kind == "i" else _f32(t)
        loss32, grad32 = fc.softmax_cross_entropy(
            dev(_f32(x)), dev(tf), weight=None if weight is None else dev(_f32(weight)), **kw
        )
        loss, grad = host(loss), host(grad)
        assert loss.dtype == x.dtype and grad.dtype == x.dtype
        assert_same(grad, _rounded(host(grad32), x), f"grad {reduction}")
        assert_same(np.atleast_1d(loss), np.atleast_1d(_rounded(host(loss32), x)), f"loss {reduction}")
        cpu_loss, cpu_grad = fastact.softmax_cross_entropy(x, t, weight=weight, **kw)
        np.testing.assert_allclose(_f32(np.asarray(loss)), np.asarray(cpu_loss, np.float32), rtol=2**-6)
        np.testing.assert_allclose(_f32(grad), _f32(cpu_grad), rtol=2**-7, atol=2**-9)
    d = dev(x)
    _, grad = fc.softmax_cross_entropy(d, dev(np.array([1, 3, 0, 0, 2])), inplace=True, reduction=reduction)
    assert grad is d


def test_half_fused_are_float32_rounded_once(fc, fmt):
    rng = np.random.default_rng(14)
    a, b, g = ((rng.standard_normal((3, 10)) * 3).astype(np.float32).astype(fmt) for _ in range(3))
    for unit, kw in (("swiglu", {}), ("geglu", {"approximate": "tanh"}), ("reglu", {})):
        y = host(getattr(fc, unit)(dev(a), dev(b), **kw))
        assert_same(y, _rounded(host(getattr(fc, unit)(dev(_f32(a)), dev(_f32(b)), **kw)), a), unit)
        da, db = getattr(fc, unit + "_backward")(dev(g), dev(a), dev(b), **kw)
        da32, db32 = getattr(fc, unit + "_backward")(dev(_f32(g)), dev(_f32(a)), dev(_f32(b)), **kw)
        assert_same(host(da), _rounded(host(da32), a), unit + " da")
        assert_same(host(db), _rounded(host(db32), a), unit + " db")
        d = dev(a)
        getattr(fc, unit + "_")(d, dev(b), **kw)
        assert_same(host(d), y, unit + "_")
    x = np.concatenate([a, b], axis=1)
    assert_same(host(fc.glu(dev(x))), _rounded(host(fc.glu(dev(_f32(x)))), x), "glu")
    assert_same(
        host(fc.glu_backward(dev(a), dev(x))),
        _rounded(host(fc.glu_backward(dev(_f32(a)), dev(_f32(x)))), x),
        "glu_backward",
    )
    bias = b[0]
    for name, kw in (("gelu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("sigmoid", {})):
        y = host(fc.bias_act(dev(a), dev(bias), name, **kw))
        assert_same(y, _rounded(host(fc.bias_act(dev(_f32(a)), dev(_f32(bias)), name, **kw)), a), name)
        saved = y if fastact.ACTIVATIONS[name].saves == "output" else a
        dx, dbias = fc.bias_act_backward(dev(g), dev(saved), dev(bias), name, **kw)
        dx32, dbias32 = fc.bias_act_backward(dev(_f32(g)), dev(_f32(saved)), dev(_f32(bias)), name, **kw)
        assert_same(host(dx), _rounded(host(dx32), a), name + " dx")
        assert_same(host(dbias), _rounded(host(dbias32), a), name + " dbias")
        _, cpu_dbias = fastact.bias_act_backward(g, saved, bias, name, **kw)
        np.testing.assert_allclose(_f32(host(dbias)), _f32(cpu_dbias), rtol=2**-7, atol=2**-9)
