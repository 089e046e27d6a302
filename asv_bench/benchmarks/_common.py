"""Shared parameter grids and setup helpers of the asv suite.

The grids come from the definitions table (``fastact.ACTIVATIONS``); the data, the
calls and the naive numpy versions come from ``fastact._bench`` (which takes the
naive expressions from ``fastact._baselines.NAIVE``), shared with
``python -m fastact bench``.

asv runs ``setup`` before every timed call (asv_runner >= 0.3), so each in-place
call sees fresh data; kernels are compiled (or loaded from numba's cache) once per
process, in the first setup, so no compile time is timed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import numpy as np

import fastact
from fastact import _baselines as baselines
from fastact import _bench
from fastact._baselines import NAIVE_SOFTMAX

ACTIVATIONS = list(fastact.ACTIVATIONS)
DTYPES = ["float32", "float64"]
IMPLS = list(_bench.IMPLS)  # fastact, naive numpy
INPLACE = [False, True]
SIZE = 1 << 20  # the per-activation grids: 1M elements
SIZES = [1 << 10, 1 << 16, 1 << 20, 1 << 24]  # 1K .. 16M
# The size sweeps cover a cheap, an exp-based and an erf-based activation.
SWEEP = [name for name in ("relu", "sigmoid", "gelu") if name in fastact.ACTIVATIONS]

# CAP: run every benchmark on at most CAP elements (a smoke run: tests, or
# FASTACT_BENCH_CAP=4096 asv run ...). BUDGET: seconds per timing inside track_.
CAP: int | None = int(os.environ["FASTACT_BENCH_CAP"]) if os.environ.get("FASTACT_BENCH_CAP") else None
BUDGET = 0.2

_warmed: set = set()


def size(n: int) -> int:
    """``n``, or CAP if smaller."""
    return n if CAP is None else min(n, CAP)


def pair(activation: str, dtype: str, n: int, direction: str, inplace: bool, impl: str) -> tuple:
    """(call, reset) for one implementation on private copies of seeded data, warmed."""
    case = _bench.cached_case(activation, dtype, size(n))
    bound = case.bind(impl, direction, inplace)
    key = (activation, dtype, size(n), direction, inplace, impl)
    if key not in _warmed:
        _bench.warm(bound)
        _warmed.add(key)
    return bound


def call(activation: str, dtype: str, n: int, direction: str, inplace: bool, impl: str):
    """Just the call of :func:`pair` (asv re-runs setup before each timed call)."""
    return pair(activation, dtype, n, direction, inplace, impl)[0]


def ufunc_call(activation: str, dtype: str, n: int, inplace: bool):
    """``fastact.ufuncs.<activation>(x, *params, out=...)`` on fresh seeded data, loaded."""
    ufunc = getattr(fastact.ufuncs, activation)
    x = _bench.make_input(size(n), dtype)
    params = _bench.kernel_params(activation, np.dtype(dtype))
    out = x if inplace else np.empty_like(x)
    ufunc(x.copy(), *params)  # compile or load the loops first
    return functools.partial(ufunc, x, *params, out=out)


def gbps(activation: str, dtype: str, n: int, direction: str) -> float:
    """GB/s of fastact in place: bytes read and written / best time."""
    fast = pair(activation, dtype, n, direction, True, "fastact")
    arrays = 2 if direction == "forward" else 3  # x -> x; grad, saved -> grad
    return arrays * size(n) * np.dtype(dtype).itemsize / _bench.best_time(*fast, budget=BUDGET) / 1e9


def ceiling_gbps(dtype: str, n: int, direction: str) -> float:
    """GB/s of the in-place ceiling loop (x[i] *= a, or g[i] *= s[i])."""
    x = _bench.make_input(size(n), dtype)
    call, reset = _bench.ceiling(direction, x, x.copy())
    _bench.warm((call, reset))
    arrays = 2 if direction == "forward" else 3
    return arrays * x.nbytes / _bench.best_time(call, reset, budget=BUDGET) / 1e9


def speedup(activation: str, dtype: str, n: int, direction: str, inplace: bool) -> float:
    """naive numpy time / fastact time, sampled in turn."""
    naive = pair(activation, dtype, n, direction, inplace, "numpy")
    fast = pair(activation, dtype, n, direction, inplace, "fastact")
    return _bench.speedup(naive, fast, budget=BUDGET)


def optional_module(name: str):
    """``fastact.<name>``, or NotImplementedError (asv: skip) while it does not exist."""
    try:
        return importlib.import_module(f"fastact.{name}")
    except ImportError as exc:
        raise NotImplementedError(f"fastact.{name} is not available: {exc}") from None


def optional_function(module, name: str):
    """``module.<name>``, or NotImplementedError (asv: skip) while it does not exist."""
    fn = getattr(module, name, None)
    if fn is None:
        raise NotImplementedError(f"{module.__name__}.{name} is not available")
    return fn


def shape(spec: str) -> tuple[int, int]:
    """'rows x cols' -> (rows, cols), sized down to CAP elements for the tests."""
    rows, cols = (int(v) for v in spec.split("x"))
    while rows * cols > size(rows * cols) and rows > 1:
        rows //= 2
    return rows, min(cols, size(cols))


def memory_call(activation: str, direction: str, inplace: bool, impl: str, n: int = 1 << 24):
    """One call on ``n`` float64 elements, with no array allocated beyond the inputs
    (x; or grad and saved) so that peak memory shows what the call itself adds."""
    dtype = "float64"
    small = _bench.Case(activation, dtype, size(min(n, 1 << 16)))  # >= PARALLEL_THRESHOLD
    _bench.warm(small.bind(impl, direction, inplace))  # the same kernels as the big call
    case = _bench.Case(activation, dtype, size(n), direction=direction, lean=True)
    return case.bind(impl, direction, inplace, copy=False)[0]


def first_call_code(activation: str, entry_point: str, n: int) -> tuple[str, str]:
    """(statement, setup) for a timeraw benchmark of the first call of an entry point
    (the setup runs no fastact kernel)."""
    suffix = entry_point.removeprefix("name")
    setup = (
        "import numpy as np\n"
        "import fastact\n"
        "from fastact._bench import fastact_function, kernel_params, make_input\n"
        f"x = make_input({size(n)}, 'float32', 1)\n"
        f"g = make_input({size(n)}, 'float32', 2)\n"
        f"p = kernel_params({activation!r}, np.float32)\n"
        f"fn = fastact_function({activation!r}, {suffix!r})"
    )
    return ("fn(g, x, *p)" if "backward" in suffix else "fn(x, *p)"), setup


# --- softmax family -------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _softmax_data(function: str, dtype: str, spec: str, direction: str) -> tuple[np.ndarray, ...]:
    """Seeded (x,) for forward, (grad, y) for backward (y: the forward output)."""
    rows, cols = shape(spec)
    x = _bench.make_input(rows * cols, dtype, seed=1).reshape(rows, cols)
    if direction == "forward":
        return (x,)
    grad = _bench.make_input(rows * cols, dtype, seed=2).reshape(rows, cols)
    return grad, NAIVE_SOFTMAX[function][0](x)


def softmax_call(
    function: str, dtype: str, spec: str, direction: str, inplace: bool, impl: str, copy: bool = True
):
    """A call of ``fastact.<softmax function>[_backward][_]`` or of the naive numpy one;
    in place on a fresh copy of the data (unless ``copy=False``: peak memory).
    NotImplementedError (asv: skip) while fastact lacks the function."""
    forward = direction == "forward"
    name = function + ("" if forward else "_backward") + ("_" if inplace else "")
    if impl == "fastact":
        fn = optional_function(importlib.import_module("fastact"), name)
    else:
        naive = NAIVE_SOFTMAX[function][0 if forward else 1]
        fn = _inplace(naive) if inplace else naive
    args = _softmax_data(function, dtype, spec, direction)
    key = ("softmax", name, impl, dtype, spec)
    if key not in _warmed:
        # compile the kernels (peak memory: on >= 64K elements only, not a full copy)
        rows = None if copy else max(1, (1 << 16) // args[0].shape[-1])
        fn(*(a[:rows].copy() for a in args))
        _warmed.add(key)
    if inplace and copy:
        args = (args[0].copy(), *args[1:])
    return lambda: fn(*args)


def causal_softmax_call(impl: str):
    """One of fastact._bench.causal_softmax_calls (16 x 2048 x 2048, fewer heads and a
    shorter L under CAP), warmed; NotImplementedError (asv: skip) without torch or the API."""
    heads, length, _ = _bench.CAUSAL_SHAPE
    while heads * length * length > size(heads * length * length) and (heads > 1 or length > 2):
        if heads > 1:
            heads //= 2
        else:
            length //= 2
    calls = _bench.causal_softmax_calls((heads, length, length))
    if impl not in calls:
        raise NotImplementedError(f"{impl} is not available (torch is not installed)")
    call = calls[impl]
    try:
        call()
    except TypeError as exc:  # a fastact.softmax without scale= / where=
        raise NotImplementedError(f"fastact.softmax(scale=, where=) is not available: {exc}") from None
    return call


def _inplace(fn):
    """``a[...] = fn(a, *rest)``: what a numpy user writes for an in-place update."""

    def inplace(a, *rest):
        a[...] = fn(a, *rest)
        return a

    return inplace


def cross_entropy_call(dtype: str, spec: str, inplace: bool, impl: str, copy: bool = True):
    """``softmax_cross_entropy(logits, target) -> (loss, grad)``, fastact or naive numpy;
    in place: the gradient overwrites (a fresh copy of) the logits."""
    if impl == "fastact":
        fn = getattr(fastact, "softmax_cross_entropy", None)
        if fn is None:
            fn = optional_function(importlib.import_module("fastact"), "softmax_cross_entropy")
        if inplace:
            fn = functools.partial(fn, inplace=True)
    else:
        fn = _naive_cross_entropy_ if inplace else baselines.softmax_cross_entropy
    rows, cols = shape(spec)
    logits = _bench.make_input(rows * cols, dtype, seed=1).reshape(rows, cols)
    target = np.random.default_rng(4).integers(0, cols, rows)
    key = ("cross_entropy", impl, inplace, dtype, spec)
    if key not in _warmed:
        fn(logits.copy(), target)
        _warmed.add(key)
    if inplace and copy:
        logits = logits.copy()
    return lambda: fn(logits, target)


def _naive_cross_entropy_(logits, target):
    loss, grad = baselines.softmax_cross_entropy(logits, target)
    logits[...] = grad
    return loss, logits


def lce_shape(spec: str) -> tuple[int, int, int]:
    """'N x H x V' -> (N, H, V), N and V halved (H capped) to CAP elements for the tests."""
    n, h, v = (int(s) for s in spec.split("x"))
    while n * v > size(n * v) and (n > 1 or v > 2):
        n, v = max(1, n // 2), max(2, v // 2)
    return n, min(h, size(h)), v


def linear_cross_entropy_call(dtype: str, spec: str, impl: str):
    """``linear_cross_entropy(x, W, target)`` -> loss, dinput, dW (mean over class
    targets), fastact's chunked walk or the naive numpy composition with the whole logits."""
    if impl == "fastact":
        fn = optional_function(importlib.import_module("fastact"), "linear_cross_entropy")
    else:
        fn = baselines.linear_cross_entropy
    n, h, v = lce_shape(spec)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, h)).astype(dtype)
    w = (rng.standard_normal((v, h)) * 0.02).astype(dtype)
    target = rng.integers(0, v, n)
    key = ("linear_cross_entropy", impl, dtype, spec)
    if key not in _warmed:
        fn(x[: max(1, n // 64)], w, target[: max(1, n // 64)])  # compile; a few rows only (peak memory)
        _warmed.add(key)
    return lambda: fn(x, w, target)


# --- GPU ----------------------------------------------------------------------------


def cuda_call(activation: str, dtype: str, n: int, direction: str, inplace: bool):
    """A synchronised call of ``fastact.cuda.<name>`` on numba device copies of the
    data; NotImplementedError (asv: skip) without a GPU (or under numba's CUDA
    simulator, far too slow for these sizes) or without ``fastact.cuda``."""
    probe = getattr(fastact, "cuda_is_available", None)
    if probe is not None and not probe():
        raise NotImplementedError("no CUDA GPU (fastact.cuda_is_available() is False)")
    module = optional_module("cuda")
    from numba import config, cuda

    if config.ENABLE_CUDASIM or not cuda.is_available():
        raise NotImplementedError("no CUDA GPU (or numba's CUDA simulator)")
    forward = direction == "forward"
    fn = optional_function(module, activation + ("" if forward else "_backward") + ("_" if inplace else ""))
    case = _bench.cached_case(activation, dtype, size(n))
    host = (case.x,) if forward else (case.grad, case.saved)
    args = tuple(cuda.to_device(a) for a in host)
    fn(*args, *case.params)  # compile
    cuda.synchronize()
    if inplace:
        args = (cuda.to_device(host[0]), *args[1:])

    def run():
        fn(*args, *case.params)
        cuda.synchronize()

    return run


# --- fused ops ------------------------------------------------------------------------------

FUSED_OPS = {label: (kind, name, kw) for label, kind, name, kw in _bench.fused_ops()}
FUSED_SIZE = 1 << 24  # a, b of 16M float32 each
FUSED_SHAPE = "8192x4096"  # bias_act


@functools.lru_cache(maxsize=1)
def fused_pairs(op: str) -> dict:
    """{direction: {impl: (call, reset)}} of one fused op (``fastact._bench.fused_pairs``),
    float32, warmed; torch's peers where torch is installed."""
    kind, name, kw = FUSED_OPS[op]
    torch_too = importlib.util.find_spec("torch") is not None
    pairs = _bench.fused_pairs(kind, name, kw, "float32", size(FUSED_SIZE), shape(FUSED_SHAPE), torch_too)
    for direction in pairs.values():
        _bench.warm(*direction.values())
    return pairs


def fused_pair(op: str, direction: str, impl: str) -> tuple:
    """(call, reset) of ``impl``: "fastact", "torch" (the composition; autograd backward) or
    "ceiling". NotImplementedError (asv: skip) for torch where it is not installed."""
    pairs = fused_pairs(op)[direction]
    key = {"torch": "torch" if direction == "forward" else "autograd"}.get(impl, impl)
    if key not in pairs:
        raise NotImplementedError(f"{impl} is not available")
    return pairs[key]
