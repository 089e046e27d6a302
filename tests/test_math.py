"""fastact._math: accuracy sweeps, edge cases, dtypes and vectorization.

float32 results are compared with float64 numpy/scipy, float64 results with long
double (x87, 64-bit mantissa) or mpmath. Errors are in ulps of the exact result in the
target format (the ulp of the smallest subnormal below the normal range).

``python tests/test_math.py`` prints the max-ulp table of the module docstring from
denser sweeps (every 61st float32 bit pattern; 10^6 float64 samples).
"""

from __future__ import annotations

import math
import re
import sys

import numpy as np
import pytest
from conftest import LIBM_CALL
from numba import njit, prange, types
from scipy import special

from fastact import _math as M

NAMES = [
    "exp",
    "expm1",
    "log",
    "log1p",
    "tanh",
    "sigmoid",
    "softplus",
    "log_sigmoid",
    "erf",
    "erfc",
    "silu",
    "gelu",
    "gelu_tanh",
    "mish",
    "gaussian",
]
EXP_FAMILY = {"exp", "expm1", "log", "log1p", "sigmoid"}
ODD = ["tanh", "erf", "expm1", "log1p", "silu", "gelu", "gelu_tanh", "mish"]  # f(-0.0) = -0.0
MP_NAMES = {"erf", "erfc", "gelu"}  # float64 references from mpmath
LD = np.longdouble
HAVE_LD = np.finfo(LD).nmant >= 63


def bound(name, dtype):
    """The accuracy target: float32 exp-family 2 ulp, everything else 4 ulp."""
    return 2.0 if (dtype == np.float32 and name in EXP_FAMILY) else 4.0


# --- one compiled kernel per dtype evaluates every function ------------------------

_SRC = "def evaluate_all(x, out):\n    for i in range(x.shape[0]):\n        v = x[i]\n" + "".join(
    f"        out[{j}, i] = M.{name}(v)\n" for j, name in enumerate(NAMES)
)
_ns = {"M": M}
exec(_SRC, _ns)
evaluate_all = njit(_ns["evaluate_all"])


def evaluate(x):
    out = np.empty((len(NAMES), x.shape[0]), x.dtype)
    evaluate_all(np.ascontiguousarray(x), out)
    return dict(zip(NAMES, out))


# --- references ------------------------------------------------------------------

_K0 = 2.0 * 0.7978845608028654  # gelu_tanh: x sigmoid(x (k0 + k1 x^2))
_K1 = _K0 * 0.044715


def _expit(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _limit(x, y, at_neg_inf):
    return np.where(x == -np.inf, at_neg_inf, y)


def _erf_mp(name, x):
    import mpmath as mp

    def one(v):
        if math.isnan(v):
            return np.nan
        if abs(v) > 40:  # beyond every underflow threshold (mpmath chokes on huge v)
            return {"erf": math.copysign(1, v), "erfc": 1 - math.copysign(1, v), "gelu": max(v, 0.0)}[name]
        m = mp.mpf(v)
        r = {"erf": mp.erf, "erfc": mp.erfc}[name](m) if name != "gelu" else m / 2 * mp.erfc(-m / mp.sqrt(2))
        return mp.nstr(r, 30)

    with mp.workdps(40):
        return np.array([LD(one(float(v))) for v in x], dtype=LD)


def reference(name, x):
    """float64 reference for float32 x; long double (or mpmath) for float64 x."""
    hp = np.float64 if x.dtype == np.float32 else LD
    if hp is LD and name in MP_NAMES:
        return _erf_mp(name, x)
    t = x.astype(hp)
    k0 = hp(_K0) if hp is np.float64 else LD(2) * np.sqrt(LD(2) / LD("3.14159265358979323846264338"))
    with np.errstate(all="ignore"):
        if name in ("exp", "expm1", "log", "log1p", "tanh"):
            return getattr(np, name)(t)
        if name == "sigmoid":
            return _expit(t)
        if name == "softplus":
            return _softplus(t)
        if name == "log_sigmoid":
            return -_softplus(-t)
        if name == "silu":
            return _limit(t, t * _expit(t), 0.0)
        if name == "mish":
            return _limit(t, t * np.tanh(_softplus(t)), 0.0)
        if name == "gelu_tanh":
            z = t * (k0 + k0 * hp("0.044715") * t * t)
            return np.where(t < -1e10, 0.0, t * _expit(z))
        if name == "gaussian":
            return np.exp(-(t * t) / 2)
        import scipy.special as sc

        if name in ("erf", "erfc"):
            return getattr(sc, name)(t)
        if name == "gelu":
            return _limit(t, 0.5 * t * sc.erfc(-t / np.sqrt(2.0)), 0.0)
    raise KeyError(name)


def ulp_error(y, ref, dtype):
    """|y - ref| in ulps of dtype at ref; 0 where both are the same inf/NaN."""
    fi = np.finfo(dtype)
    hp = ref.dtype.type
    with np.errstate(all="ignore"):
        rounded = ref.astype(dtype)  # inf where the exact result overflows
        _, e = np.frexp(ref)
        ulp = np.maximum(np.ldexp(hp(1), (e - fi.nmant - 1).astype(np.int32)), hp(fi.smallest_subnormal))
        err = np.abs(y.astype(hp) - ref) / ulp
        same = (np.isinf(rounded) & (y == rounded)) | (np.isnan(y) & np.isnan(ref)) | (y == ref)
        err = np.where(same, 0.0, err)
        return np.where(np.isnan(err), np.inf, err).astype(np.float64)


# --- inputs --------------------------------------------------------------------------


def f32_inputs(stride=4099, mid_stride=257):
    """Every stride-th float32 of the whole range, denser over 2^-10 <= |x| < 128."""
    whole = np.arange(0, 0x7F800000, stride, dtype=np.uint32)
    mid = np.arange(0x3A800000, 0x43000000, mid_stride, dtype=np.uint32)
    pos = np.concatenate([whole, mid]).view(np.float32)
    return np.concatenate([pos, -pos])


def f64_inputs(n=100_000, seed=0):
    """Random bit patterns over the whole range, uniform over [-40, 40], tiny values."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 0x7FF0000000000000, n, dtype=np.int64).view(np.float64)
    lin = rng.uniform(-40, 40, n)
    small = rng.uniform(-1, 1, n // 5) * 10.0 ** rng.uniform(-20, 0, n // 5)
    return np.concatenate([bits, -bits, lin, small])


def edge_values(dtype):
    """Signed zeros, subnormals, normal limits, inf, NaN and every overflow/underflow
    threshold of the functions here, each with its neighbours one ulp away."""
    fi = np.finfo(dtype)
    base = [
        0.0,
        fi.smallest_subnormal,
        fi.smallest_subnormal * 3,
        fi.smallest_normal * 0.75,
        fi.smallest_normal,
        fi.eps,
        0.5,
        1.0,
        2.0,
        float(fi.max),
        1e10,
        1e30,
        np.inf,
        np.nan,
    ]
    thresholds32 = [
        88.72283935546875,
        -87.33654022216797,
        -103.27892303466797,
        -103.97208404541016,
        -17.32868003845215,
        9.010913848876953,
        10.0546875,
        3.9192059040069580,
        0.75,
        0.5,
        -0.34657359,
        0.34657359,
        13.5,
        64.0,
        104.0,
        112.0,
        14.8,
    ]
    thresholds64 = [
        709.782712893384,
        -708.3964185322641,
        -744.4400719213812,
        -745.1332191019411,
        -37.42994775023705,
        19.061547465398498,
        26.55,
        5.9215871957945,
        0.75,
        0.5,
        -0.34657359027997264,
        0.34657359027997264,
        38.5,
        64.0,
        746.0,
        760.0,
    ]
    vals = [dtype(-1.0), np.nextafter(dtype(-1.0), dtype(0)), np.nextafter(dtype(-1.0), dtype(-2))]
    with np.errstate(over="ignore"):
        for v in base + (thresholds32 if dtype == np.float32 else thresholds64):
            v = dtype(v)
            for w in (np.nextafter(v, dtype(-np.inf)), v, np.nextafter(v, dtype(np.inf))):
                vals += [w, -w]
    return np.array(vals, dtype)


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep32():
    x = f32_inputs()
    return x, evaluate(x)


@pytest.fixture(scope="module")
def sweep64():
    x = f64_inputs()
    return x, evaluate(x)


# --- accuracy -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_float32(name, sweep32):
    x, got = sweep32
    err = ulp_error(got[name], reference(name, x), np.float32)
    worst = int(np.argmax(err))
    y = got[name]
    assert err[worst] <= bound(name, np.float32), f"{name}({x[worst]!r}) = {y[worst]!r}: {err[worst]:.2f} ulp"


@pytest.mark.skipif(not HAVE_LD, reason="long double is not extended precision here")
@pytest.mark.parametrize("name", NAMES)
def test_accuracy_float64(name, sweep64):
    x, got = sweep64
    y = got[name]
    if name in MP_NAMES:  # mpmath is slow: a fixed subsample
        x, y = x[::60], y[::60]
    err = ulp_error(y, reference(name, x), np.float64)
    worst = int(np.argmax(err))
    assert err[worst] <= bound(name, np.float64), f"{name}({x[worst]!r}) = {y[worst]!r}: {err[worst]:.2f} ulp"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_edges_match_reference(name, dtype):
    if dtype == np.float64 and not HAVE_LD:
        pytest.skip("long double is not extended precision here")
    x = edge_values(dtype)
    y = evaluate(x)[name]
    err = ulp_error(y, reference(name, x), dtype)
    bad = err > bound(name, dtype)
    assert not bad.any(), [(x[i], y[i], err[i]) for i in np.flatnonzero(bad)]


SPECIAL = {  # name: (f(-inf), f(inf))
    "exp": (0.0, np.inf),
    "expm1": (-1.0, np.inf),
    "log": (np.nan, np.inf),
    "log1p": (np.nan, np.inf),
    "tanh": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "softplus": (0.0, np.inf),
    "log_sigmoid": (-np.inf, 0.0),
    "erf": (-1.0, 1.0),
    "erfc": (2.0, 0.0),
    "silu": (0.0, np.inf),
    "gelu": (0.0, np.inf),
    "gelu_tanh": (0.0, np.inf),
    "mish": (0.0, np.inf),
    "gaussian": (0.0, 0.0),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_specials(name, dtype):
    y = evaluate(np.array([-np.inf, np.inf, np.nan, -0.0, 0.0], dtype))[name]
    np.testing.assert_array_equal(y[:2], np.array(SPECIAL[name], dtype))
    assert np.isnan(y[2])
    if name in ODD:
        assert y[3] == 0 and np.signbit(y[3]) and y[4] == 0 and not np.signbit(y[4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_domain(dtype):
    fi = np.finfo(dtype)
    below = np.nextafter(dtype(-1), dtype(-2))
    y = evaluate(np.array([-1.0, below, -np.inf, 0.0, -0.0, -fi.smallest_subnormal], dtype))
    np.testing.assert_array_equal(y["log1p"][:3], [-np.inf, np.nan, np.nan])
    np.testing.assert_array_equal(y["log"][3:], [-np.inf, -np.inf, np.nan])


@njit
def _fma_residuals(a, b, out):
    for i in range(a.shape[0]):
        out[i] = M._fma(a[i], b[i], -(a[i] * b[i]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fma_rounds_once(dtype):
    """a b - fl(a b) is exact through _fma (gelu, gelu_tanh, erf, erfc and gaussian split
    products with it)."""
    rng = np.random.default_rng(5)
    a, b = (rng.uniform(-4, 4, 10_000).astype(dtype) for _ in range(2))
    out = np.empty_like(a)
    _fma_residuals(a, b, out)
    if dtype == np.float32:
        want = (a.astype(np.float64) * b - (a * b)).astype(np.float32)  # a b is exact in float64
    else:
        import mpmath as mp

        with mp.workprec(160):  # the product exactly
            want = np.array([float(mp.mpf(x) * mp.mpf(y) - mp.mpf(x * y)) for x, y in zip(a[:500], b[:500])])
        out = out[:500]
    np.testing.assert_array_equal(out, want)
    assert np.count_nonzero(out) > out.size // 2  # the residual is there, not a plain product


@njit(parallel=True)
def _sixth_mismatches(lo, hi):
    """Float32 bit patterns in [lo, hi) where M.sixth(x) is not the division x / 6."""
    tasks = 64
    span = (hi - lo + tasks - 1) // tasks
    bad = np.zeros(tasks, np.int64)
    for t in prange(tasks):
        for b in range(lo + t * span, min(hi, lo + (t + 1) * span)):
            x = np.uint32(b).view(np.float32)
            for v in (x, -x):
                q = M.sixth(v)
                if q != v / np.float32(6.0):
                    bad[t] += 1
    return bad.sum()


def test_sixth_is_the_division_wherever_the_quotient_is_normal():
    """Every float32 x with |x| / 6 normal (hardsigmoid's x + 3 in (0, 6) among them):
    sixth's multiply-and-correct gives the correctly rounded quotient; float64 divides."""
    lo = int(np.float32(6 * 2.0**-126).view(np.uint32))
    assert _sixth_mismatches(lo, 0x7F800000) == 0
    assert _sixth_mismatches(1, lo) > 0  # subnormal quotients: the documented exception
    x = np.random.default_rng(9).uniform(-1e300, 1e300, 1000)
    assert all(M.sixth(v) == v / 6.0 for v in x)


def _scale_kernel():
    """A fresh compilation of M._scale in a loop (its codegen picks the method then)."""

    def scale_all(x, n, out):
        for i in range(x.shape[0]):
            out[i] = M._scale(x[i], n[i])

    return njit(fastmath={"contract"})(scale_all)


@pytest.mark.parametrize("scalef", [True, False], ids=["ldexp", "two_factors"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_rounds_once(dtype, scalef, monkeypatch):
    """_scale(x, n) = x 2^n rounded once (numpy's ldexp), by either method: overflow to
    inf, subnormal results rounded once, -0.0 and NaN kept."""
    if scalef and not M.has_avx512():
        pytest.skip("the CPU has no AVX-512 (llvm.ldexp would be libm calls)")
    monkeypatch.setattr(M, "has_avx512", lambda: scalef)
    fi = np.finfo(dtype)
    ity = np.int32 if dtype == np.float32 else np.int64
    bias = fi.maxexp - 1
    rng = np.random.default_rng(9)
    x = rng.uniform(0.5, 2.0, 20_000).astype(dtype) * rng.choice([-1, 1], 20_000).astype(dtype)
    x[:4] = [0.0, -0.0, np.nan, 1.0]
    n = rng.integers(-bias - fi.nmant - 3, bias + 3, x.size).astype(ity)  # to 0 and to inf
    out = np.empty_like(x)
    kernel = _scale_kernel()
    with np.errstate(over="ignore"):
        kernel(x, n, out)
        np.testing.assert_array_equal(out, np.ldexp(x, n))
    assert ("vscalef" in kernel.inspect_asm(kernel.signatures[0])) == scalef
    assert np.signbit(out[1]) and np.count_nonzero((out != 0) & (np.abs(out) < fi.tiny)) > 50


def assert_error_within_terms(got, x, a, b, dtype, bound=4.0):
    """|got - (a + b)| <= bound eps (|a| + |b|) + a subnormal ulp where x is finite: the
    bound of a derivative whose two terms a and b cancel near its root."""
    fi = np.finfo(dtype)
    scale = float(fi.eps) * (np.abs(a) + np.abs(b)) + float(fi.smallest_subnormal)
    finite = np.isfinite(x)
    err = np.abs(got[finite].astype(np.float64) - (a + b)[finite]) / scale[finite]
    assert err.max() <= bound, (err.max(), x[finite][err.argmax()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_grad(dtype):
    """Phi(x) + x phi(x), gelu's derivative from one exp. Its two terms cancel around the
    root x = -0.7518, so the bound is relative to their size: |error| <= 4 eps
    (Phi(x) + |x phi(x)|), plus a subnormal ulp where the result underflows."""
    if dtype == np.float32:
        x = f32_inputs()
        xd = x.astype(np.float64)
        with np.errstate(all="ignore"):
            cdf = 0.5 * special.erfc(-xd / np.sqrt(2.0))
            xpdf = np.where(np.isinf(xd), 0.0, xd * np.exp(-xd * xd / 2) / np.sqrt(2 * np.pi))
    else:
        from mpmath import mp

        rng = np.random.default_rng(11)
        x = np.concatenate(
            [rng.uniform(-40, 40, 1500), rng.uniform(-1.5, 0, 500), -(10.0 ** rng.uniform(-30, 0, 200))]
        )
        with mp.workdps(40):
            cdf = np.array([float(mp.ncdf(mp.mpf(v))) for v in x])
            xpdf = np.array([float(mp.mpf(v) * mp.npdf(mp.mpf(v))) for v in x])
    got = M.gelu_grad(x)
    assert got.dtype == dtype
    assert_error_within_terms(got, x, cdf, xpdf, dtype)
    specials = M.gelu_grad(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, -1e30], dtype))
    np.testing.assert_array_equal(specials[[0, 3, 4]], [1.0, 0.5, 0.5])
    assert np.isnan(specials[2]) and specials[1] == 0 and np.signbit(specials[1]) and specials[5] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_grad(dtype):
    """s + x s (1 - s), silu's derivative from one exp. The terms cancel around the root
    x = -1.2785, so the bound is relative to their size: |error| <= 4 eps (s + |x| s (1 - s)),
    plus a subnormal ulp where the result underflows."""
    if dtype == np.float32:
        x = f32_inputs()
        xd = x.astype(np.float64)
        with np.errstate(all="ignore"):
            e = np.exp(-np.abs(xd))
            s = np.where(xd >= 0, 1 / (1 + e), e / (1 + e))
            xss = np.where(np.isinf(xd), 0.0, xd * e / (1 + e) ** 2)
    else:
        from mpmath import mp

        rng = np.random.default_rng(12)
        x = np.concatenate(
            [rng.uniform(-800, 800, 500), rng.uniform(-40, 40, 1500), -(10.0 ** rng.uniform(-30, 0, 200))]
        )
        with mp.workdps(40):
            s = np.array([float(1 / (1 + mp.exp(-mp.mpf(v)))) for v in x])
            xss = np.array(
                [float(mp.mpf(v) * mp.exp(-abs(mp.mpf(v))) / (1 + mp.exp(-abs(mp.mpf(v)))) ** 2) for v in x]
            )
    got = M.silu_grad(x)
    assert got.dtype == dtype
    assert_error_within_terms(got, x, s, xss, dtype)
    specials = M.silu_grad(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, -1e30], dtype))
    np.testing.assert_array_equal(specials[[0, 1, 3, 4, 5]], [1.0, 0.0, 0.5, 0.5, 0.0])
    assert np.isnan(specials[2]) and not np.signbit(specials[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_nonpos(dtype):
    """softmax's e^x for x <= 0: <= 1 ulp down to the smallest normal result, then
    subnormal results within 1 ulp or +0 (flushed), +0 from -BIAS ln2 down,
    NaN -> NaN, -inf -> 0, -0.0 -> 1."""
    fi = np.finfo(dtype)
    flush = np.log(fi.smallest_normal)
    if dtype == np.float32:  # every 7th float32 in [flush, 0]
        x = np.arange(0x80000000, 0xC2AEAC50, 7, dtype=np.uint32).view(np.float32)
    else:
        rng = np.random.default_rng(3)
        x = np.concatenate(
            [-rng.uniform(0, 1, 10**6) * 10.0 ** rng.uniform(-20, 0, 10**6), -rng.uniform(0, -flush, 10**6)]
        )
    x = x[x >= flush].astype(dtype)
    y = M._exp_nonpos(x)
    assert y.dtype == dtype
    err = ulp_error(y, np.exp(x.astype(np.float64 if dtype == np.float32 else LD)), dtype)
    assert err.max() <= 1.0, (err.max(), x[err.argmax()])
    sub = np.linspace(flush - 1.0, flush, 10001)[:-1].astype(dtype)  # subnormal results
    got = M._exp_nonpos(sub)
    want = np.exp(sub.astype(LD))
    assert ((got == 0) | (np.abs(got - want) <= fi.smallest_subnormal)).all()  # measured 0.83 ulp
    assert (got > 0).any() and (got == 0).any()  # rounded where 2^n is normal, flushed below
    lo = -(fi.maxexp - 1) * np.log(2)  # -BIAS ln2
    below = np.array([np.nextafter(dtype(lo), dtype(-np.inf)), lo - 1, -800.0, -1e30, -np.inf], dtype)
    below = below[below < lo]
    flushed = M._exp_nonpos(below)
    assert len(below) >= 4 and (flushed == 0).all() and not np.signbit(flushed).any()
    specials = M._exp_nonpos(np.array([-0.0, 0.0, np.nan, -fi.smallest_subnormal], dtype))
    assert specials[0] == specials[1] == specials[3] == 1 and np.isnan(specials[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradual_underflow(dtype):
    """exp, sigmoid, silu, erfc and gelu reach the subnormals with a correct last bit."""
    fi = np.finfo(dtype)
    lo = np.log(fi.smallest_normal.astype(np.float64))
    x = np.linspace(lo - 16, lo, 4001).astype(dtype)
    got = evaluate(x)
    for name in ("exp", "sigmoid", "silu", "mish"):
        assert (np.abs(got[name]) < fi.smallest_normal).sum() > 1000
        err = ulp_error(got[name], reference(name, x), dtype)
        assert err.max() <= bound(name, dtype), name


# --- types, compilation and vectorization -------------------------------------------------


def _function_bodies(ir):
    """The LLVM IR of a module's numba functions, without the Python/cfunc wrappers."""
    chunks = re.split(r"\n(?=define )", ir)
    wrapper = re.compile(r"@\"?(_ZN7cpython|cfunc\.)")
    return "\n".join(c for c in chunks if c.startswith("define") and not wrapper.search(c.split("(", 1)[0]))


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name):
    evaluate(np.ones(2, np.float32))
    impl = M._IMPL[32][name]
    sig = next(s for s in impl.nopython_signatures if s.args == (types.float32,))
    assert sig.return_type == types.float32
    body = _function_bodies(impl.inspect_llvm(sig.args))
    if name == "gelu_tanh":  # evaluates its inner polynomial in float64 on purpose
        return
    assert "double" not in body, f"float64 arithmetic in float32 {name}"


def test_called_from_njit_dtypes():
    @njit
    def f(x):
        return M.sigmoid(x) + M.like(x, 0.5) * M.tanh(x)

    assert f(np.float32(1.0)) == pytest.approx(0.7310586 + 0.5 * 0.7615942, rel=1e-6)
    assert f.nopython_signatures[0].return_type == types.float32
    assert f(1.0) == pytest.approx(0.7310585786300049 + 0.5 * 0.7615941559557649, rel=1e-15)
    assert f(np.int64(1)) == f(1.0)  # integers are computed in float64


def test_python_level_calls():
    assert M.exp(np.float32(1.0)).dtype == np.float32
    assert M.exp(1.0) == pytest.approx(math.e, rel=1e-16)
    np.testing.assert_array_equal(M.tanh(np.zeros((2, 3), np.float32)), np.zeros((2, 3), np.float32))


PACKED = re.compile(r"\bv?(?:mul|add|sub|div|fmadd\w*|fnmadd\w*|fmsub\w*)p[sd]\s+%[xyz]mm")


def _asm_or_skip(kernel):
    try:
        return kernel.inspect_asm(kernel.signatures[0])
    except Exception as exc:  # pragma: no cover - depends on the numba build
        pytest.skip(f"assembly not available: {exc!r}")


def _parfor_body(asm):
    funcs = re.split(r"\n(?=[_A-Za-z][\w.$]*:\n)", asm)
    body = [f for f in funcs if "__numba_parfor_gufunc" in f.split("\n", 1)[0]]
    return "\n".join(body)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loop_has_no_libm_calls_and_vectorizes(dtype):
    """The loop calling every function: no call to a libm symbol, packed arithmetic."""
    evaluate(np.ones(2, dtype))
    asm = _asm_or_skip(evaluate_all)
    assert not LIBM_CALL.findall(asm), LIBM_CALL.findall(asm)
    assert len(PACKED.findall(asm)) > 100  # the vectorized loop body


def make(scalar):
    """The closure-factory kernel shape of fastact._kernels."""

    @njit(parallel=True, fastmath={"contract"})
    def kernel(x, out, *params):
        for i in prange(x.shape[0]):
            out[i] = scalar(x[i], *params)

    return kernel


@njit
def _plain_scalar(x, alpha):
    return alpha * M.expm1(x) if x <= 0 else M.sigmoid(x)


@njit(forceinline=True)  # big bodies need this to be inlined into the loop (see _math)
def _inlined_scalar(x):
    return M.gelu(x) + M.mish(x)


@pytest.mark.parametrize(
    "scalar, dtype, params",
    [(_plain_scalar, np.float32, (np.float32(1.5),)), (_inlined_scalar, np.float64, ())],
)
def test_prange_closure_kernel(scalar, dtype, params):
    x = np.linspace(-20, 20, 1001).astype(dtype)
    out = np.empty_like(x)
    kernel = make(scalar)
    kernel(x, out, *params)
    assert out.dtype == dtype
    serial = np.array([scalar(v, *params) for v in x], dtype)  # the same code, one call per value
    np.testing.assert_array_equal(out, serial)
    body = _parfor_body(_asm_or_skip(kernel))
    if not body:
        pytest.skip("parfor gufunc not found in the assembly")
    assert not LIBM_CALL.findall(body)
    assert PACKED.findall(body)


# --- the table of the module docstring ---------------------------------------------------


def test_recorded_table_meets_targets():
    assert set(M.MEASURED_MAX_ULP) == set(NAMES)
    for name, (e32, e64) in M.MEASURED_MAX_ULP.items():
        assert e32 <= bound(name, np.float32) and e64 <= bound(name, np.float64), name
        assert f"{e32:.2f}" in M.__doc__ and f"{e32:.2f} ulp (float32)" in getattr(M, name).__doc__


def measured_max_ulp(dense=True):
    """{name: (max ulp float32, max ulp float64)} over the sweeps (dense: the table's)."""
    table = {name: [0.0, 0.0] for name in NAMES}
    if dense:
        bits = np.arange(0, 0x7F800000, 61, dtype=np.uint32)
        chunks = [bits[i : i + (1 << 22)] for i in range(0, bits.size, 1 << 22)]
    else:
        chunks = [None]
    for chunk in chunks:
        x = f32_inputs() if chunk is None else chunk.view(np.float32)
        x = np.concatenate([x, -x] if chunk is not None else [x])
        x = np.concatenate([x, edge_values(np.float32)])
        got = evaluate(x)
        for name in NAMES:
            table[name][0] = max(table[name][0], ulp_error(got[name], reference(name, x), np.float32).max())
    x = np.concatenate([f64_inputs(1_000_000 if dense else 100_000, seed=1), edge_values(np.float64)])
    got = evaluate(x)
    for name in NAMES:
        sel = slice(None, None, 50) if name in MP_NAMES else slice(None)
        table[name][1] = ulp_error(got[name][sel], reference(name, x[sel]), np.float64).max()
    return table


if __name__ == "__main__":
    dense = "--quick" not in sys.argv
    rows = measured_max_ulp(dense)
    print(f"{'function':14s}  {'float32':>8s}  {'float64':>8s}")
    for name, (e32, e64) in rows.items():
        print(f"{name:14s}  {e32:8.2f}  {e64:8.2f}")
    print("\nMEASURED_MAX_ULP = {")  # ready to paste into fastact/_math.py
    for name, (e32, e64) in rows.items():
        print(f'    "{name}": ({math.ceil(e32 * 100) / 100:.2f}, {math.ceil(e64 * 100) / 100:.2f}),')
    print("}")
