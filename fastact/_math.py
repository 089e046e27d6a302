"""Vectorizable elementary functions for numba kernels (float32 and float64).

numba >= 0.62 ships no SVML, so ``math.exp`` & co. inside a loop are scalar libm calls
and the loop never vectorizes. The functions here are branch-free (every "branch" is
a select), call nothing, and are compiled ``forceinline`` (LLVM ``alwaysinline``, not
numba's IR-level ``inline="always"``), so a loop ``out[i] = f(x[i])`` compiles to SIMD
code. Each public function is a :func:`numba.extending.overload` with one implementation
per format: float32 input is computed in float32 with float32 constants and returns
float32; float64 (and integer) input is computed in float64. From Python the same names
work elementwise on scalars and arrays (through a compiled loop; for tests and the REPL).

Methods
-------
exp          Cody-Waite: x = n ln2 + r with ln2 in two parts and n rounded by the
             1.5 * 2^p "magic number" (no float->int conversion), e^r = 1 + r + r^2 P(r)
             with P a weighted minimax fit (degree 4 / 9), and 2^n applied by _scale (one
             vscalef on AVX-512, two exact power-of-two factors elsewhere): overflow to
             inf and gradual underflow with one rounding.
exp_nonpos   (private, softmax's e^(x - max)) the same reduction for x <= 0 only, e^r by
             one Horner chain, 2^n as one factor; x clamped to -BIAS ln2, where 2^n is
             +0.0 (no select needed): results below 2^(1/2 - BIAS) are +0, subnormal
             ones above within 1 ulp.
expm1        the same reduction; 2 (2^(n-1) p + (2^(n-1) - 1/2)) with p = e^r - 1.
log1p, log   u = 1 + x and its rounding error (Fast2Sum), u = 2^k m with m in
             [sqrt(1/2), sqrt(2)), log m = 2 atanh(f / (2 + f)), f = m - 1 (musl/FreeBSD
             coefficients); the rounding error of u, scaled by 2^-k, is folded into f.
tanh         from the reduction e^(-2|x|) = 2^n (1 + p): (s - 1 - p) / (s + 1 + p) with
             s = 2^-n (s +- 1 exact), sign copied from x; exactly +-1 for large |x|.
sigmoid      1 / (1 + e^-x) = s / ((1 + s) + p) with e^-x = 2^n (1 + p), s = 2^-n: one
             division, nothing overflows, relative accuracy in both tails.
erf, erfc    erfc(a) = e^(-a^2) (1 + F(q)) / (1 + 2a), q = (a - K)/(a + K) (Shepherd &
             Laframboise 1981; K = 2 / 4, F minimax of degree 11 / 23), with e^(-a^2) from
             an exact split a^2 = hi + lo: relative accuracy in the whole tail. Near 0,
             erf(x) = x + x P(x^2) (|x| < 0.75) and erfc(x) = 1 - erf(x) (|x| < 0.5).
softplus     max(x, 0) + log(1 + t), t = e^-|x|, log(1 + t) = t + t^2 P(t) on [0, 1]
             (minimax, degree 7 / 20): no log, no division. t by exp_nonpos' reduction
             with one power-of-two factor 2^(n + K), 2^-K applied last (t may be
             subnormal). log_sigmoid = -softplus(-x).
silu         x sigmoid(x) from V = e^-|x| 2^K (exp_scaled's reduction, a normal number):
             x / (1 + V 2^-K) for x >= 0, (x V) / (2^K + V) for x < 0. One division,
             nothing overflows, a subnormal result is rounded once (by the division).
gelu_tanh    x sigmoid(z), z = x (k0 + k1 x^2) evaluated in double-float / double-double
             (products split by FMAs, TwoSum), its low part folded into exp's reduction:
             e^z amplifies an error in z by |z|, which would cost |z| ulp in the negative
             tail. float32: as silu; float64: (x / ((1 + s) + p)) 2^-n as sigmoid (two
             roundings, not three).
mish         tanh(softplus(x)) in terms of v = e^-|x|: (1 + 2v) / (1 + 2v + 2v^2) for
             x >= 0, v (v + 2) / (v (v + 2) + 2) for x < 0; one exp, one division.
gelu         float32: x Phi(x) from Q = 1 - Phi, Q(a) = e^(-a^2/2) m(a) / sqrt(2 pi) with
             the Mills ratio m = D / (a D + N) (a rational fit of degree 4 / 4; its rounding
             is damped away from 0, one division) and e^(-a^2/2) from a^2/2 = hi + lo split
             exactly by an FMA: x - x Q(x) for x >= 0, x Q(-x) for x < 0 (relative accuracy
             in the whole negative tail). float64: 0.5 x erfc(-x / sqrt 2) with e^(-x^2/2)
             from the exact split of x^2, 0.5 x (1 - erf(u)) near 0.
gelu_grad    Phi(x) + x phi(x) from one exp: float32 phi (m - |x|) for x < 0 and
             1 - phi (m - x) for x >= 0 with gelu's m; float64 erfc and e^(-x^2/2) shared.
gaussian     e^(-x^2/2) with the exact split of x^2 (for gelu's derivative).

gelu, gelu_grad, gelu_tanh, erf, erfc and gaussian split products exactly with ``llvm.fma``: one
instruction on FMA hardware (x86-64 since 2013, every aarch64); without it LLVM calls
libm's fma, which keeps every result but not the speed.

Where a result can be subnormal (exp, sigmoid, silu, gelu_tanh, mish, erfc, gelu,
gaussian) the final power-of-two factor is applied last, so subnormal results are
rounded once, like normal ones.

Range handling (all functions): NaN in -> NaN out; +-inf -> the limit; -0.0 -> -0.0
for the odd functions (tanh, erf, expm1, log1p) and for silu, gelu, gelu_tanh, mish;
subnormal inputs are ordinary inputs (no flush to zero). Limits that need a decision:
silu, gelu, gelu_tanh and mish give -0.0 at -inf (x times an underflowed factor; they
give -0.0 for every finite x whose result underflows); log1p(-1) = log(0) = -inf,
log1p(x < -1) = log(x < 0) = NaN; log_sigmoid(inf) = +0.0 (as PyTorch).

Accuracy: max error in ulp of the exact result (the smallest subnormal's ulp below the
normal range), measured by ``python tests/test_math.py`` over every 61st float32 bit
pattern of the whole range (7.0e7 values) and 3.2e6 float64 values (random bit patterns,
uniform on [-40, 40], tiny values; 1 in 50 of them for the mpmath-checked erf, erfc,
gelu), plus the edge set, against float64 (float32) and long double / mpmath (float64)
references. Targets: float32 exp, expm1, log, log1p, sigmoid <= 2; everything else <= 4.

%(table)s

Using these from numba
----------------------
Call ``_math.exp(x)`` etc. from any ``@njit`` code: they are ordinary overloads, never
IR-inlined, so they work in ``prange`` kernels and in scalar helpers reached through
``*args`` closures. Their own compile flags (``fastmath={"contract"}``,
``error_model="numpy"``, forceinline) are fixed and do not inherit the caller's.

* A scalar helper that calls these and is itself called in a loop should be
  ``@njit(forceinline=True)``: LLVM otherwise inlines it only below a size threshold
  (gelu, erf, softplus in float64 exceed it), and a call left in the loop body
  stops vectorization. forceinline is an LLVM attribute, so ``*args`` still works.
* Divisions in the caller need ``error_model="numpy"`` to vectorize (the default
  "python" model adds a ZeroDivisionError branch).
* A serial (non-``parallel``) loop ``out[i] = f(x[i])`` called with ``out is x``
  runs LLVM's scalar fallback: the vectorizer's runtime overlap check fails for
  identical arrays. ``prange`` kernels are compiled with noalias arguments and
  vectorize either way; for serial in-place use a one-array kernel ``x[i] = f(x[i])``.
* Use :func:`like` for constants: ``_math.like(x, 0.5) * x`` stays float32 for float32
  ``x``, while ``0.5 * x`` is float64 arithmetic.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._platform import has_avx512

# Every implementation function gets these options. forceinline = LLVM alwaysinline:
# the call disappears before the loop vectorizer runs. error_model="numpy": a float
# division must not carry a ZeroDivisionError branch. "contract" only lets LLVM fuse
# a*b+c into an FMA, which never changes NaN/inf behaviour; every formula below is
# accurate with or without the fusion.
_OPTS = {"forceinline": True, "fastmath": {"contract"}, "error_model": "numpy", "nogil": True}
_jit = njit(**_OPTS)


# --- bit-level intrinsics ----------------------------------------------------------
# Integer arithmetic written in numba promotes int32 to int64; these keep the integer
# width equal to the float width so the vectorizer sees one lane width.


def _int_of(fty):
    return types.int32 if fty.bitwidth == 32 else types.int64


@intrinsic
def _as_int(typingctx, x):
    """Reinterpret a float's bits as a signed integer of the same width."""
    if not isinstance(x, types.Float):
        return None
    ity = _int_of(x)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(ity))

    return ity(x), codegen


@intrinsic
def _as_float(typingctx, i):
    """Reinterpret an int32/int64's bits as a float32/float64."""
    if not isinstance(i, types.Integer) or i.bitwidth not in (32, 64):
        return None
    fty = types.float32 if i.bitwidth == 32 else types.float64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(fty))

    return fty(i), codegen


def _int_binop(op):
    # The result has the narrower operand's width: the integer constants below arrive
    # as int64 and must not widen an int32 lane.
    @intrinsic
    def _op(typingctx, a, b):
        if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
            return None
        ty = a if a.bitwidth <= b.bitwidth else b

        def codegen(context, builder, sig, args):
            x = context.cast(builder, args[0], sig.args[0], ty)
            y = context.cast(builder, args[1], sig.args[1], ty)
            return op(builder, x, y)

        return ty(a, b), codegen

    return _op


_iadd = _int_binop(lambda b, x, y: b.add(x, y))
_isub = _int_binop(lambda b, x, y: b.sub(x, y))
_iand = _int_binop(lambda b, x, y: b.and_(x, y))
_ishl = _int_binop(lambda b, x, y: b.shl(x, y))
_isra = _int_binop(lambda b, x, y: b.ashr(x, y))
_imax = _int_binop(lambda b, x, y: b.select(b.icmp_signed(">", x, y), x, y))


@intrinsic
def _copysign(typingctx, a, b):
    """|a| with the sign of b (llvm.copysign: a bit operation, vectorizes)."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        name = "llvm.copysign.f32" if sig.args[0].bitwidth == 32 else "llvm.copysign.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty]), name)
        return builder.call(fn, args)

    return a(a, b), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma: one vfmadd on FMA hardware, which every x86-64
    since 2013 and every aarch64 has; elsewhere LLVM calls libm's fma, correct but slow)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        name = "llvm.fma.f32" if sig.args[0].bitwidth == 32 else "llvm.fma.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty, ty]), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def _scale(typingctx, x, n):
    """x 2^n rounded once, for x normal and |n| < 2 (BIAS - 1) (n an int32 for float32,
    an int64 for float64): overflow gives inf, a subnormal result is rounded once.

    On AVX-512 this is llvm.ldexp, one vscalef (with a conversion of n). Elsewhere LLVM
    would turn a vector ldexp into libm calls, so it is two exact factors instead:
    (x 2^(n >> 1)) 2^(n - (n >> 1)), each built from its exponent bits (the speed-up:
    docs/TUNING.md).
    """
    if not (isinstance(x, types.Float) and isinstance(n, types.Integer) and n.bitwidth == x.bitwidth):
        return None
    mant, bias = (23, 127) if x.bitwidth == 32 else (52, 1023)

    def codegen(context, builder, sig, args):
        value, exponent = args
        fty, ity = value.type, exponent.type
        if has_avx512():
            name = f"llvm.ldexp.f{sig.args[0].bitwidth}.i{sig.args[1].bitwidth}"
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty, ity]), name)
            return builder.call(fn, [value, exponent])
        half = builder.ashr(exponent, ir.Constant(ity, 1))
        rest = builder.sub(exponent, half)
        for part in (half, rest):
            bits = builder.shl(builder.add(part, ir.Constant(ity, bias)), ir.Constant(ity, mant))
            value = builder.fmul(value, builder.bitcast(bits, fty), flags=("contract",))
        return value

    return x(x, n), codegen


def _poly(coefs):
    """A jitted straight-line Horner evaluation of c[0] + c[1] x + c[2] x^2 + ...

    Generated as source rather than a loop over a tuple: LLVM only fully unrolls a
    loop below a size threshold, and a leftover inner loop blocks vectorization.
    """
    names = [f"c{i}" for i in range(len(coefs))]
    expr = names[-1]
    for name in reversed(names[:-1]):
        expr = f"{name} + x * ({expr})"
    namespace = dict(zip(names, coefs))
    exec(f"def poly(x):\n    return {expr}\n", namespace)  # a fixed template, no outside input
    return _jit(namespace["poly"])


# --- per-format constants ----------------------------------------------------------


# fmt: off
class _F32:
    ftype = np.float32
    mant, bias = 23, 127
    mant_mask, one_bits, sqrt_half_bits = 0x7FFFFF, 0x3F800000, 0x3F3504F3
    magic, magic_bits = 12582912.0, 0x4B400000  # 1.5 * 2^23
    exp_ln2 = (0.693145751953125, 1.4286068203094173e-06)  # 15-bit head: n * head exact
    log_ln2 = (0.693138122558593750, 9.0580006144591607e-06)  # musl log1pf
    lo = -112.0  # e^x, x e^x and sigmoid(x) all underflow to 0 below this
    exp_hi = 89.0  # e^89 > FLT_MAX: overflow happens inside the two-step scaling
    expm1_lo = -18.0  # expm1 rounds to -1 below
    sig_lo = -30.0  # sigmoid rounds to 1 above -sig_lo
    tiny = 2.0**-26  # expm1(x) and log1p(x) round to x below this
    min_normal = 2.0**-126
    erf_t = 0.75
    erfc_k, erfc_amax = 2.0, 10.5  # erfc(10.5) underflows to 0
    # e^r = 1 + r + r^2 P(r), |r| <= ln2/2: weighted minimax, rel. error 3.1e-9
    exp_p = (0.4999999403953552, 0.1666651964187622, 0.041668400168418884,
             0.008368851616978645, 0.0013814320554956794)
    # log(1+f) = f - f^2/2 + s (f^2/2 + R), R = z P(z), z = s^2 (musl log1pf; 2^-34.2)
    log_p = (0.66666662693, 0.40000972152, 0.28498786688, 0.24279078841)
    # log(1 + t) = t + t^2 P(t), 0 <= t <= 1: weighted minimax, rel. error 3.3e-8
    sp_p = (-0.49999648332595825, 0.333213210105896, -0.24857142567634583, 0.19153568148612976,
            -0.1375361829996109, 0.07920234650373459, -0.03006444312632084, 0.0053644864819943905)
    # erf(x) = x + x P(x^2), |x| <= 0.75: weighted minimax, rel. error 1.4e-9
    erf_p = (0.12837916709551257, -0.3761261999607086, 0.11283376067876816,
             -0.02683461643755436, 0.005114325787872076, -0.0006749355816282332)
    # F = (1 + 2a) e^(a^2) erfc(a) - 1 as a polynomial in q = (a - 2)/(a + 2), a in
    # [0, 10.5]: weighted minimax, rel. error 9.7e-10
    erfc_p = (0.27697837352752686, -0.09276381880044937, -0.16603052616119385,
              0.16405101120471954, -0.054217834025621414, -0.00803065113723278,
              0.008709282614290714, 0.0012520764721557498, -0.0014216529671102762,
              -0.0004003509820904583, 0.00017048607696779072, 7.9874720540829e-05)
    # float32 gelu: the Mills ratio m = Q(a) / phi(a) = 1 / (a + N(a) / D(a)), a in [0, 15]
    # (weighted fit of N / D, N(0) = sqrt(2 / pi), rel. error 1.8e-8 in m), used as
    # m / sqrt(2 pi) = D / (sqrt(2 pi) a D + Nk), Nk = sqrt(2 pi) N. Both scaled by 3/4:
    # near 0 they then sit in [0.75, 1) and [1.5, 2), where rounding costs 2/3 of the
    # relative error it costs just above 1 and 2 (gelu float32 near 0: 3.5 -> 2.5 ulp).
    mills_nk = (1.5, 0.6887964010238647, 0.17263028025627136, 0.018152762204408646, 1.7529050637676846e-06)
    mills_d = (0.75, 0.6859698295593262, 0.296268105506897, 0.06824222952127457, 0.007274129893630743)


class _F64:
    ftype = np.float64
    mant, bias = 52, 1023
    mant_mask, one_bits, sqrt_half_bits = 0xFFFFFFFFFFFFF, 0x3FF0000000000000, 0x3FE6A09E667F3BCD
    magic, magic_bits = 6755399441055744.0, 0x4338000000000000  # 1.5 * 2^52
    exp_ln2 = (6.93147180369123816490e-01, 1.90821492927058770002e-10)  # fdlibm, 32-bit head
    log_ln2 = exp_ln2
    lo = -760.0
    exp_hi = 710.0
    expm1_lo = -40.0
    sig_lo = -40.0
    tiny = 2.0**-55
    min_normal = 2.0**-1022
    erf_t = 0.75
    erfc_k, erfc_amax = 4.0, 27.3  # erfc(27.3) underflows to 0
    exp_p = (0.5000000000000011, 0.16666666666666408, 0.0416666666665281, 0.00833333333349693,
             0.00138888889442498, 0.00019841269502730497, 2.4801492387599476e-05,
             2.755758842962699e-06, 2.7630523731274346e-07, 2.4999855950490083e-08)  # 3.7e-18
    log_p = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
             2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
             1.479819860511658591e-01)  # musl log1p, 2^-58.45
    sp_p = (-0.4999999999999982, 0.3333333333331675, -0.24999999999385597, 0.19999999984884564,
            -0.16666666361647536, 0.1428570934452031, -0.12499939760854527, 0.1111056735991154,
            -0.09996318510544727, 0.09071830919508253, -0.08256186624968931, 0.07444821649236417,
            -0.06504011009921351, 0.05322348031303091, -0.0391250384338909, 0.024682990651288664,
            -0.012732171144256437, 0.005081053382371775, -0.001456875471736784,
            0.0002652728721586798, -2.293484957409363e-05)  # 6.4e-18
    erf_p = (0.12837916709551257, -0.37612638903183715, 0.11283791670952478, -0.02686617064440192,
             0.005223977615115298, -0.0008548326168594825, 0.00012055288755899357,
             -1.4924176073086229e-05, 1.6430379230714625e-06, -1.5937521021417197e-07,
             1.1463463375998586e-08)  # 7.8e-19
    erfc_p = (0.2329951186255525, -0.13962111684056253, 0.01537965210261966, 0.06809705425469545,
              -0.10103906603629997, 0.0937328349982505, -0.06633036581230965, 0.03716751553910029,
              -0.016197734056762707, 0.005031969963480935, -0.000757773295933718,
              -0.00019925661611040353, 0.000150621712827175, -2.4399480862344512e-05,
              -1.1222168578500784e-05, 5.710294049610928e-06, 2.941748610350917e-07,
              -8.261104925617197e-07, 7.403060131429838e-08, 1.1044139031980106e-07,
              -1.7370941929865254e-08, -1.4090792374405497e-08, 1.6315466359885828e-09,
              1.1850349758978352e-09)


# fmt: on


def _build(F):
    """Compile-ready implementations for one float format (closure constants are
    frozen by numba with their numpy type, so float32 code sees float32 literals)."""
    ft = F.ftype
    is32 = ft is np.float32
    ZERO, MZERO, HALF, ONE, TWO = ft(0.0), ft(-0.0), ft(0.5), ft(1.0), ft(2.0)
    INF, NAN = ft(np.inf), ft(np.nan)
    LOG2E, MAGIC = ft(1.4426950408889634), ft(F.magic)
    EXP_LN2HI, EXP_LN2LO = ft(F.exp_ln2[0]), ft(F.exp_ln2[1])
    LOG_LN2HI, LOG_LN2LO = ft(F.log_ln2[0]), ft(F.log_ln2[1])
    LO, EXP_HI, EXPM1_LO, SIG_LO = ft(F.lo), ft(F.exp_hi), ft(F.expm1_lo), ft(F.sig_lo)
    NEG_LO = ft(-F.lo)
    TANH_LO = ft(2.0 * F.sig_lo)  # tanh rounds to +-1 for |x| > -sig_lo
    TINY, MIN_NORMAL = ft(F.tiny), ft(F.min_normal)
    SUB_SCALE, SUB_K = ft(2.0 ** (F.mant + 2)), ft(F.mant + 2)
    TWO_M_MANT = ft(2.0**-F.mant)
    ERF_T, ERFC_K, ERFC_AMAX = ft(F.erf_t), ft(F.erfc_k), ft(F.erfc_amax)
    SMALL = ft(0.5)  # erfc and gelu use 1 - erf below this
    SQRT_HALF, SQRT2 = ft(0.7071067811865476), ft(1.4142135623730951)
    INV_SQRT_2PI, SQRT_2PI = ft(0.3989422804014327), ft(2.5066282746310002)
    GELU_XMAX = ft(F.erfc_amax * 1.4142135623730951)
    GAUSS_XMAX = ft(np.sqrt(-2.0 * F.lo))  # e^(-x^2/2) underflows to 0 beyond
    exp_p = _poly([ft(c) for c in F.exp_p])
    exp_full = _poly([ONE, ONE] + [ft(c) for c in F.exp_p])  # 1 + r + r^2 P(r), one Horner chain
    # exp_nonpos clamps x to -BIAS ln2, where n = -BIAS makes 2^n's exponent field 0: +0.0
    NONPOS_LO = ft(-F.bias * 0.6931471805599453)
    # (t's bits << MANT) + this = (n + BIAS) << MANT, wrapped to the integer width
    bits = np.dtype(F.ftype).itemsize * 8
    POW2_FROM_MAGIC = ((F.bias << F.mant) - (F.magic_bits << F.mant)) % 2**bits
    POW2_FROM_MAGIC -= 2**bits if POW2_FROM_MAGIC >= 2 ** (bits - 1) else 0
    # exp_scaled's 2^(n + SCALE_K): the same, with SCALE_K added to the exponent field
    SCALE_K = 64 if is32 else 128  # n + SCALE_K stays normal down to e^LO
    TWO_MK, TWO_K = ft(2.0**-SCALE_K), ft(2.0**SCALE_K)
    POW2_SCALED = (POW2_FROM_MAGIC + (SCALE_K << F.mant)) % 2**bits
    POW2_SCALED -= 2**bits if POW2_SCALED >= 2 ** (bits - 1) else 0
    log_p = _poly([ft(c) for c in F.log_p])
    erf_p = _poly([ft(c) for c in F.erf_p])
    erfc_p = _poly([ft(c) for c in F.erfc_p])
    sp_p = _poly([ft(c) for c in F.sp_p])
    mills_nk = _poly([ft(c) for c in _F32.mills_nk])  # float32 only
    mills_d = _poly([ft(c) for c in _F32.mills_d])
    MANT, BIAS, MAGIC_BITS = F.mant, F.bias, F.magic_bits
    MANT_MASK, LOG_OFFSET, SQRT_HALF_BITS = F.mant_mask, F.one_bits - F.sqrt_half_bits, F.sqrt_half_bits
    # gelu_tanh: z = x (k0 + k1 x^2), sigmoid(z) = (1 + tanh(z/2)) / 2
    GT_K0 = 2.0 * 0.7978845608028654
    GT_K1 = GT_K0 * 0.044715
    GT_K0F, GT_K1F = ft(GT_K0), ft(GT_K1)
    # k0 = GT_K0F + GT_K0L, k1 = GT_K1F + GT_K1L (float64: the exact values' remainders, by mpmath)
    if is32:
        GT_K0L, GT_K1L = ft(GT_K0 - float(GT_K0F)), ft(GT_K1 - float(GT_K1F))
    else:
        GT_K0L, GT_K1L = ft(-9.96930880911092e-17), ft(-6.175149918155315e-19)
    GT_XNEG = ft(-64.0)  # gelu_tanh(x) underflows to -0 below this (x e^z, z ~ 0.07 x^3)

    @_jit
    def clamp(x, lo, hi):
        # NaN fails both comparisons and passes through
        x = lo if x < lo else x
        return hi if x > hi else x

    @_jit
    def exp_core(hi, lo):
        """e^(hi + lo) = 2^n (1 + p) for hi in [LO, EXP_HI] and |lo| << 1: (p, n)."""
        t = (hi + lo) * LOG2E + MAGIC  # n = round((hi + lo)/ln2) sits in t's low bits
        nf = t - MAGIC
        rh = hi - nf * EXP_LN2HI  # exact: nf * head is exact and close to hi
        rl = lo - nf * EXP_LN2LO
        r = rh + rl
        p = rh + (rl + (r * r) * exp_p(r))  # rh kept unrounded
        return p, _isub(_as_int(t), MAGIC_BITS)

    @_jit
    def neg_sq(a):
        """-a^2 as hi + lo exactly (the FMA gives the product's rounding error)."""
        hi = -(a * a)
        return hi, _fma(-a, a, -hi)

    @_jit
    def exp(x):
        p, n = exp_core(clamp(x, LO, EXP_HI), MZERO)
        return _scale(ONE + p, n)

    @_jit
    def exp_nonpos(x):
        # e^x = 2^n e^r as in exp, with e^r by one Horner polynomial and 2^n as one
        # factor whose exponent field is t's low bits shifted into place. x is clamped
        # to -BIAS ln2 (-inf too), where n = -BIAS gives the factor an exponent field of
        # 0: +0.0, so no select is needed after; for n = 1 - BIAS (2^n the smallest
        # normal) a subnormal result is rounded once (within 1 ulp, measured 0.83), from
        # there down (n = -BIAS) it is +0.
        return exp_one_factor(NONPOS_LO if x < NONPOS_LO else x, MZERO, POW2_FROM_MAGIC)  # NaN passes

    @_jit
    def exp_scaled(x):
        """e^x 2^SCALE_K for LO <= x <= 0 (NaN passes): a normal number; the caller
        multiplies by TWO_MK last (one rounding where the result is subnormal)."""
        return exp_one_factor(x, MZERO, POW2_SCALED)

    @_jit
    def exp_one_factor(x, lo, pow2_bits):
        """e^r 2^n' for x + lo = n ln2 + r (|lo| << 1; lo = -0.0 costs no instruction):
        exp's reduction, e^r by one Horner chain, 2^n' the float whose bits are (t's bits
        << MANT) + pow2_bits (n' = n for POW2_FROM_MAGIC, n + SCALE_K for POW2_SCALED)."""
        t = x * LOG2E + MAGIC
        nf = t - MAGIC
        r = ((x - nf * EXP_LN2HI) - nf * EXP_LN2LO) + lo  # two FMAs (+ -0.0 folds away)
        return exp_full(r) * _as_float(_iadd(_ishl(_as_int(t), MANT), pow2_bits))

    @_jit
    def gaussian(x):
        a = clamp(abs(x), ZERO, GAUSS_XMAX)
        hi, lo = neg_sq(a)
        p, n = exp_core(HALF * hi, HALF * lo)
        return _scale(ONE + p, n)

    @_jit
    def expm1(x):
        p, n = exp_core(clamp(x, EXPM1_LO, EXP_HI), MZERO)
        h = _as_float(_ishl(_iadd(n, BIAS - 1), MANT))  # 2^(n-1): no overflow at n = max
        y = TWO * (h * p + (h - HALF))
        return x if abs(x) < TINY else y  # keeps -0.0 (p loses its sign)

    @_jit
    def log_core(u, c, kadj):
        """log(u + c) - kadj ln2 for normal u > 0 and |c| <= ulp(u)."""
        iu = _iadd(_as_int(u), LOG_OFFSET)
        k = _isub(_isra(iu, MANT), BIAS)
        m = _as_float(_iadd(_iand(iu, MANT_MASK), SQRT_HALF_BITS))  # u = 2^k m
        # log(u + c) = k ln2 + log(m + c 2^-k): fold the correction into f
        sk = _as_float(_ishl(_imax(_isub(BIAS, k), 1), MANT))
        fm = (m - ONE) + c * sk
        s = fm / (TWO + fm)
        z = s * s
        hfsq = HALF * (fm * fm)
        kf = ft(k) - kadj
        return ((s * (hfsq + z * log_p(z)) + kf * LOG_LN2LO) - hfsq + fm) + kf * LOG_LN2HI

    @_jit
    def log1p(x):
        u = ONE + x
        c = (ONE - (u - x)) if x > ONE else (x - (u - ONE))  # Fast2Sum: u + c = 1 + x
        y = log_core(u, c, ZERO)
        y = x if abs(x) < TINY else y
        special = -INF if x == -ONE else (INF if x == INF else NAN)
        return y if (x > -ONE) & (x < INF) else special

    @_jit
    def log(x):
        sub = x < MIN_NORMAL  # subnormal: scale into the normal range first
        y = log_core(x * SUB_SCALE if sub else x, ZERO, SUB_K if sub else ZERO)
        special = -INF if x == ZERO else (INF if x == INF else NAN)
        return y if (x > ZERO) & (x < INF) else special

    @_jit
    def tanh(x):
        # e^(-2|x|) = 2^n (1 + p), n <= 0, s = 2^-n: tanh|x| = (s - 1 - p) / (s + 1 + p)
        # (s +- 1 exact, so each side is rounded once; n = 0 gives -p / (2 + p))
        p, n = exp_core(clamp(-TWO * abs(x), TANH_LO, ZERO), MZERO)
        s = _as_float(_ishl(_isub(BIAS, n), MANT))
        return _copysign(((s - ONE) - p) / ((s + ONE) + p), x)

    @_jit
    def sigmoid_parts(hi, lo):
        """sigmoid(hi + lo) = (1 / den) 2^m: (den, m)."""
        p, n = exp_core(clamp(-hi, SIG_LO, NEG_LO), -lo)  # e^-z = 2^n (1 + p)
        m = _isub(0, n)
        s = _scale(ONE, m)
        # 1 + e^-z = 2^n ((1 + s) + p); 1 + s is exact unless s < 2^-MANT
        den = (ONE + s) + p if s >= TWO_M_MANT else ONE + (s + p)
        return den, m

    @_jit
    def sigmoid(x):
        den, m = sigmoid_parts(x, MZERO)
        return _scale(ONE / den, m)  # = s / den, and right where s alone underflows

    @_jit
    def x_sigmoid(x, xn, nh, nl):
        """x sigmoid(z) for nh + nl = -|z|, z of x's sign: x / (1 + v) for x >= 0 and
        (xn V) / (2^K + V) for x < 0, V = v 2^K, v = e^-|z| (one division; a subnormal
        result is rounded once). xn is x clamped from below (finite) where x e^-|z|
        underflows for every x below: there V is e^LO 2^K and xn V 2^-K rounds to -0.0."""
        big = exp_one_factor(LO if nh < LO else nh, nl, POW2_SCALED)  # V (NaN passes)
        pos = x >= ZERO
        return (x if pos else xn * big) / ((ONE + big * TWO_MK) if pos else (TWO_K + big))

    @_jit
    def silu(x):
        nh = -abs(x)
        nh = LO if nh < LO else nh  # = max(x, LO) for x < 0: -0.0 below LO, -inf included
        return x_sigmoid(x, nh, nh, MZERO)

    @_jit
    def silu_grad(x):
        # s + x s (1 - s) with s (1 - s) = e r^2 for either sign (e = e^-|x|, r = 1 / (1 + e)):
        # x >= 0: r (1 + x e r); x < 0: e r (1 + x r), from E = e 2^K with 2^-K applied last
        a = abs(x)
        big = exp_scaled(LO if a > NEG_LO else -a)  # E
        e = big * TWO_MK
        r = ONE / (ONE + e)
        pos = x >= ZERO
        xc = LO if x < LO else x  # beyond, the result underflows: keeps x E r finite
        d = (r * ((ONE if pos else big) + xc * ((e if pos else big) * r))) * (ONE if pos else TWO_MK)
        return d if a != INF else (ONE if pos else ZERO)

    @_jit
    def gelu_tanh(x):
        # z's rounding error is amplified by |z| in e^z: z = hi + lo in double-float
        # (double-double for float64), products split exactly by FMAs, k0 + k1 x^2 by TwoSum.
        # z is odd: float32 evaluates z(-|x|) = -|z(x)|, the argument x_sigmoid takes.
        # Clamped: beyond GT_XNEG, sigmoid(z) is 0 or 1.
        if is32:
            xc = -abs(x)
            xc = GT_XNEG if xc < GT_XNEG else xc  # NaN passes
        else:
            xc = clamp(x, GT_XNEG, -GT_XNEG)
        x2 = xc * xc
        x2l = _fma(xc, xc, -x2)
        k1x2 = GT_K1F * x2
        k1x2l = _fma(GT_K1F, x2, -k1x2)
        wh = GT_K0F + k1x2
        bb = wh - GT_K0F
        wl = ((GT_K0F - (wh - bb)) + (k1x2 - bb)) + (k1x2l + (GT_K1F * x2l + (GT_K1L * x2 + GT_K0L)))
        hi = xc * wh
        lo = _fma(xc, wl, _fma(xc, wh, -hi))
        if is32:
            return x_sigmoid(x, xc, hi, lo)  # xc = max(x, GT_XNEG) for x < 0
        # float64: sigmoid's two roundings (x_sigmoid's three would cost ~4 ulp here)
        den, m = sigmoid_parts(hi, lo)
        return MZERO if x < GT_XNEG else _scale(x / den, m)

    @_jit
    def log1p_exp_neg(a):
        """log(1 + e^-a) for a >= 0: t + t^2 P(t), t = e^-a (no log, no division)."""
        na = -a
        t = exp_scaled(LO if na < LO else na) * TWO_MK  # max(-a, LO): one vmaxps, NaN passes
        return t + (t * t) * sp_p(t)

    @_jit
    def softplus(x):
        return (x if x > ZERO else ZERO) + log1p_exp_neg(abs(x))

    @_jit
    def log_sigmoid(x):
        return (x if x < ZERO else ZERO) - log1p_exp_neg(abs(x))  # +0.0 at inf, as PyTorch

    @_jit
    def mish(x):
        # tanh(softplus(x)) = ((1 + w)^2 - 1) / ((1 + w)^2 + 1), w = e^x, written in
        # terms of v = e^-|x| <= 1 so nothing overflows:
        #   x >= 0: (1 + 2v) / (1 + 2v + 2v^2)      x < 0: v (v + 2) / (v (v + 2) + 2)
        p, n = exp_core(clamp(-abs(x), LO, ZERO), MZERO)
        y = ONE + p
        v = _scale(y, n)
        pos = x >= ZERO
        den = (ONE + TWO * v) + TWO * (v * v) if pos else v * (v + TWO) + TWO
        # x < 0: x y (v + 2) with y = 1 + p unrounded: (1 + p)(v + 2) = 2 + (v y + 2p)
        xf = x if x < NEG_LO else NEG_LO  # v = 0 beyond: keeps inf * 0 out of x + x 2v
        num = x + xf * (TWO * v) if pos else TWO * x + x * (v * y + TWO * p)
        q = num / den
        r = q if pos else _scale(q, n)
        return MZERO if x < LO else r

    @_jit
    def erfc_big(a, hi, lo):
        """erfc(a) = ((1 + t) / (1 + 2a)) 2^n for 0 <= a <= ERFC_AMAX, given hi + lo = -a^2:
        (t, n). (1 + p)(1 + F) = 1 + t leaves one rounding near 1 to the caller."""
        fq = erfc_p((a - ERFC_K) / (a + ERFC_K))
        p, n = exp_core(hi, lo)
        return p + fq * (ONE + p), n

    @_jit
    def erf(x):
        a = abs(x)
        small = x + x * erf_p(x * x)  # x P(x^2) with P's leading 1 kept exact
        ac = clamp(a, ZERO, ERFC_AMAX)
        hi, lo = neg_sq(ac)
        t, n = erfc_big(ac, hi, lo)
        big = _copysign(ONE - _scale((ONE + t) / (ONE + TWO * ac), n), x)
        return small if a < ERF_T else big

    @_jit
    def erfc(x):
        a = abs(x)
        small = (ONE - x) - x * erf_p(x * x)  # 1 - erf(x) near 0
        ac = clamp(a, ZERO, ERFC_AMAX)
        hi, lo = neg_sq(ac)
        t, n = erfc_big(ac, hi, lo)
        e = _scale((ONE + t) / (ONE + TWO * ac), n)
        big = e if x >= ZERO else TWO - e  # 2 - erfc(|x|) never cancels
        return small if a < SMALL else big

    @_jit
    def gauss_mills(a):
        """For float32 0 <= a <= GAUSS_XMAX: e^(-a^2/2) = (1 + p) s 2^-64 and
        Q(a) e^(a^2/2) = m(a) / sqrt(2 pi) = q = D / (sqrt(2 pi) a D + Nk): (p, q, s), with
        s = 2^(n + 64) a normal number (the caller applies 2^-64 last: one rounding where
        the result is subnormal). The rounding of D and Nk is damped by
        Nk / (sqrt(2 pi) a D + Nk) away from 0; one division."""
        ha = HALF * a
        hh = ha * a
        lo = _fma(ha, a, -hh)  # a^2 / 2 = hh + lo exactly
        t = hh * -LOG2E + MAGIC  # n = -round(hh / ln2) in t's low bits (lo cannot move it far)
        nf = t - MAGIC
        rh = nf * -EXP_LN2HI - hh  # exact
        rl = nf * -EXP_LN2LO - lo
        r = rh + rl
        p = rh + (rl + (r * r) * exp_p(r))  # e^r - 1 as in exp_core
        s = _as_float(_iadd(_ishl(_as_int(t), MANT), POW2_SCALED))  # 2^(n + SCALE_K), as exp_scaled
        d = mills_d(a)
        return p, d / ((SQRT_2PI * a) * d + mills_nk(a)), s

    @_jit
    def gelu(x):
        if is32:
            # x Phi(x) = x - x Q(x) for x >= 0 and x Q(-x) for x < 0, Q = e^(-x^2/2) q
            a = abs(x)
            a = GAUSS_XMAX if a > GAUSS_XMAX else a  # beyond, x Q(|x|) underflows
            p, q, s = gauss_mills(a)
            aq = ((a * (q + q * p)) * s) * TWO_MK  # |x| Q(|x|), scaled last
            return x - aq if x >= ZERO else -aq  # x - aq keeps -0.0
        # 0.5 x erfc(u), u = -x/sqrt2; e^(-u^2) = e^(-x^2/2) from the exact split of x
        xc = clamp(x, -GELU_XMAX, GELU_XMAX)
        u = -xc * SQRT_HALF
        a = abs(u)
        hi, lo = neg_sq(abs(xc))
        t, n = erfc_big(a, HALF * hi, HALF * lo)
        den = abs(xc) * SQRT2 + ONE  # 1 + 2a rounded once, from x rather than the rounded a
        hx = HALF * x
        neg = x < ZERO
        # x < 0: 0.5 x erfc(|u|) with 0.5 x folded in before the scale; x >= 0:
        # 0.5 x (2 - erfc(|u|)). One division serves both.
        e = _scale(((hx + hx * t) if neg else (ONE + t)) / den, n)
        big = e if neg else hx * (TWO - e)
        small = hx * ((ONE - u) - u * erf_p(u * u))  # near 0: 1 - erf(u), fewer roundings
        y = small if a < SMALL else big
        return MZERO if x < -GELU_XMAX else y

    @_jit
    def gelu_grad(x):
        if is32:
            # x < 0: Q(-x) + x phi(x) = phi (m - |x|); x >= 0: 1 - Q(x) + x phi(x) = 1 - phi (m - x)
            a = abs(x)
            a = GAUSS_XMAX if a > GAUSS_XMAX else a  # beyond, x phi(x) underflows too
            p, q, s = gauss_mills(a)
            v = q - INV_SQRT_2PI * a  # (m - a) / sqrt(2 pi)
            w = ((v + v * p) * s) * TWO_MK
            return w if x < ZERO else ONE - w
        # Phi(x) + x phi(x) with one e^(-x^2/2) = (1 + p) 2^n: erfc(a) = ((1 + t) / den) 2^n
        # (a = |x| / sqrt 2, as in gelu) and phi(x) = (1 + p) 2^n / sqrt(2 pi) share it.
        xc = clamp(x, -GAUSS_XMAX, GAUSS_XMAX)  # beyond, x phi(x) underflows too
        ac = abs(xc)
        a = ac * SQRT_HALF
        hi, lo = neg_sq(ac)
        fq = erfc_p((a - ERFC_K) / (a + ERFC_K))
        p, n = exp_core(HALF * hi, HALF * lo)
        t = p + fq * (ONE + p)  # (1 + p)(1 + F) = 1 + t
        half_erfc = (HALF + HALF * t) / (ac * SQRT2 + ONE)  # 0.5 erfc(a) 2^-n
        xphi = (xc * INV_SQRT_2PI) * (ONE + p)  # x phi(x) 2^-n
        # x < 0: 0.5 erfc(a) + x phi(x), scaled last (gradual underflow, -0.0 beyond);
        # x >= 0: 1 - 0.5 erfc(a) + x phi(x) = 1 + (x phi(x) - 0.5 erfc(a))
        return _scale(half_erfc + xphi, n) if x < ZERO else ONE + _scale(xphi - half_erfc, n)

    return {
        "exp": exp,
        "expm1": expm1,
        "log": log,
        "log1p": log1p,
        "tanh": tanh,
        "sigmoid": sigmoid,
        "softplus": softplus,
        "log_sigmoid": log_sigmoid,
        "erf": erf,
        "erfc": erfc,
        "silu": silu,
        "gelu": gelu,
        "gelu_tanh": gelu_tanh,
        "mish": mish,
        "gaussian": gaussian,
        "exp_nonpos": exp_nonpos,
        "gelu_grad": gelu_grad,
        "silu_grad": silu_grad,
    }


_IMPL = {32: _build(_F32), 64: _build(_F64)}


# --- public overloads ----------------------------------------------------------------

_APPLY: dict = {}


def _elementwise(fn, x):
    """Python-level fallback: apply fn through a compiled loop (float32 stays float32)."""
    arr = np.asarray(x)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    k = _APPLY.get(fn.__name__)
    if k is None:

        @njit
        def k(a, out):
            for i in range(a.shape[0]):
                out[i] = fn(a[i])

        _APPLY[fn.__name__] = k
    flat = np.ascontiguousarray(arr).reshape(-1)
    out = np.empty_like(flat)
    k(flat, out)
    out = out.reshape(arr.shape)
    return out if np.ndim(x) else out.dtype.type(out[()])


def _register(name, doc):
    impl32, impl64 = _IMPL[32][name], _IMPL[64][name]

    def stub(x):
        return _elementwise(stub, x)

    stub.__name__ = stub.__qualname__ = name
    stub.__doc__ = doc

    @overload(stub, jit_options=_OPTS)
    def _ov(x):
        if isinstance(x, types.Float) and x.bitwidth == 32:
            return lambda x: impl32(x)
        if isinstance(x, types.Float) and x.bitwidth == 64:
            return lambda x: impl64(x)
        if isinstance(x, (types.Integer, types.Boolean)):
            return lambda x: impl64(np.float64(x))
        return None

    return stub


exp = _register(
    "exp",
    """e^x.

Method: Cody-Waite reduction x = n ln2 + r, e^r = 1 + r + r^2 P(r), 2^n applied with
one rounding (vscalef on AVX-512, two exact factors elsewhere). Range: overflow to inf
above ln(max) (88.72 / 709.78); gradual underflow to the subnormals, 0 below
ln(min subnormal) - ln 2 (-103.97 / -745.13); exp(-inf) = 0, exp(inf) = inf, NaN -> NaN;
exp(+-0) = 1.""",
)

expm1 = _register(
    "expm1",
    """e^x - 1, relative accuracy near 0.

Method: exp's reduction, 2 (2^(n-1) p + (2^(n-1) - 1/2)) with p = e^r - 1. Range:
-0.0 -> -0.0, exactly -1 below -16.98 / -37.08 and at -inf, overflow to inf like exp,
NaN -> NaN.""",
)

log = _register(
    "log",
    """Natural logarithm.

Method: x = 2^k m, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(f / (2 + f)). Range:
subnormal x scaled into the normal range first; log(+-0) = -inf, log(x < 0) = NaN,
log(inf) = inf, NaN -> NaN.""",
)

log1p = _register(
    "log1p",
    """log(1 + x), relative accuracy near 0.

Method: as log on u = 1 + x, with u's rounding error folded into the reduced argument.
Range: -0.0 -> -0.0, log1p(-1) = -inf, log1p(x < -1) = NaN, log1p(inf) = inf,
NaN -> NaN.""",
)

tanh = _register(
    "tanh",
    """Hyperbolic tangent.

Method: e^(-2|x|) = 2^n (1 + p), s = 2^-n: (s - 1 - p) / (s + 1 + p) with x's sign.
Range: exactly +-1 for |x| >= 8.49 (float32) / 18.54 (float64) and at +-inf,
-0.0 -> -0.0, NaN -> NaN.""",
)

sigmoid = _register(
    "sigmoid",
    """1 / (1 + e^-x), relative accuracy in both tails.

Method: e^-x = 2^n (1 + p), s = 2^-n exact: s / ((1 + s) + p). Range: gradual underflow
like e^x for x < -87.3 (float32) / -708.4 (float64), 0 below -103.97 / -745.13 and at
-inf; exactly 1 above 16.29 / 36.39 and at inf; NaN -> NaN.""",
)

softplus = _register(
    "softplus",
    """log(1 + e^x), never overflows.

Method: max(x, 0) + t + t^2 P(t), t = e^-|x| (log(1 + t) on [0, 1] by a minimax
polynomial). Range: softplus(-inf) = 0 (gradual underflow before), softplus(inf) = inf,
NaN -> NaN.""",
)

log_sigmoid = _register(
    "log_sigmoid",
    """log(sigmoid(x)) = -softplus(-x).

Method: min(x, 0) - log(1 + e^-|x|) as in softplus. Range: log_sigmoid(-inf) = -inf,
log_sigmoid(inf) = -0.0, NaN -> NaN.""",
)

erf = _register(
    "erf",
    """Error function.

Method: x + x P(x^2) for |x| < 0.75, else +-(1 - erfc(|x|)). Range: exactly +-1 for
|x| >= 3.92 (float32) / 5.92 (float64) and at +-inf, -0.0 -> -0.0, NaN -> NaN.""",
)

erfc = _register(
    "erfc",
    """Complementary error function 1 - erf(x), relative accuracy in the tail.

Method: e^(-a^2) (1 + F(q)) / (1 + 2a), a = |x|, q = (a - K)/(a + K), e^(-a^2) from an
exact split of a^2; 2 - erfc(|x|) for x < 0; 1 - erf(x) for |x| < 0.5. Range: gradual underflow, 0 above
10.05 (float32) / 27.23 (float64) and at inf, erfc(-inf) = 2, NaN -> NaN.""",
)

silu = _register(
    "silu",
    """x sigmoid(x), accurate into the subnormal range.

Method: sigmoid's s / ((1 + s) + p) as (x / ((1 + s) + p)) s, the power of two last.
Range: silu(inf) = inf, -0.0 for x < -112 (float32) / -760 (float64) and at -inf,
-0.0 -> -0.0, NaN -> NaN.""",
)

gelu = _register(
    "gelu",
    """0.5 x (1 + erf(x / sqrt 2)), relative accuracy in the negative tail.

Method: 0.5 x erfc(-x / sqrt 2) with e^(-x^2/2) from an exact split of x^2; near 0,
0.5 x (1 - erf(u)). Range: gelu(inf) = inf, -0.0 below -14.8 (float32) / -38.6 (float64)
and at -inf, -0.0 -> -0.0, NaN -> NaN.""",
)

gelu_tanh = _register(
    "gelu_tanh",
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x sigmoid(z).

Method: z = x (k0 + k1 x^2) in float64 (float32 input) or double-double (float64 input),
because e^z multiplies an error in z by |z|; then silu's form. Range: gelu_tanh(inf) = inf,
-0.0 for x < -64 and at -inf, -0.0 -> -0.0, NaN -> NaN.""",
)

mish = _register(
    "mish",
    """x tanh(softplus(x)), one exp and one division.

Method: with v = e^-|x|, tanh(softplus(x)) = (1 + 2v) / (1 + 2v + 2v^2) for x >= 0 and
v (v + 2) / (v (v + 2) + 2) for x < 0, the power of two applied last. Range:
mish(inf) = inf, -0.0 for x < -112 (float32) / -760 (float64) and at -inf,
-0.0 -> -0.0, NaN -> NaN.""",
)

gelu_grad = _register(
    "gelu_grad",
    """d/dx gelu(x) = Phi(x) + x phi(x), with one exponential.

Method: e^(-x^2/2) = (1 + p) 2^n from the exact split of x^2, shared by
0.5 erfc(|x| / sqrt 2) (as in erfc) and x phi(x); 1 + (x phi - 0.5 erfc) for x >= 0,
0.5 erfc + x phi for x < 0, the power of two applied last. Range: 1 at inf, gradual
underflow to -0.0 in the negative tail and at -inf, NaN -> NaN. Accuracy: the two terms
cancel around the root x = -0.7518, so the error is bounded relative to their size:
|error| <= 4 eps (|Phi(x)| + |x phi(x)|) (``tests/test_math.py``).""",
)

silu_grad = _register(
    "silu_grad",
    """d/dx silu(x) = s (1 + x (1 - s)), s = sigmoid(x), with one exponential and one division.

Method: s (1 - s) = e r^2 with e = e^-|x| and r = 1 / (1 + e) for either sign:
r (1 + x e r) for x >= 0, e r (1 + x r) for x < 0 with e scaled by 2^K (applied last:
relative accuracy in the negative tail). Range: 1 at inf, +0.0 at -inf, underflow to
-0.0 in the far negative tail, NaN -> NaN. The derivative crosses 0 at x = -1.2785, where
1 + x r cancels: the error is bounded relative to s + |x| s (1 - s).""",
)

gaussian = _register(
    "gaussian",
    """e^(-x^2 / 2), relative accuracy in the tails.

Method: x^2 = hi + lo split exactly, e^(-(hi + lo) / 2) by exp's reduction (a plain
exp(-0.5 * x * x) loses up to x^2 / 2 ulp). Range: gradual underflow, 0 beyond
+-14.42 (float32) / +-38.60 (float64) and at +-inf, NaN -> NaN.""",
)

_exp_nonpos = _register(
    "exp_nonpos",
    """e^x for x <= 0 (softmax's x - max), cheaper than exp: no upper range, one power-of-two
factor; x is clamped to -BIAS ln2, where that factor is +0.0, so results below
2^(1/2 - BIAS) (x < -87.68 / -708.74) are +0 with no select.

Method: exp's reduction, e^r by one Horner polynomial. x > 0 is outside its domain.
Measured max error 0.88 ulp (float32 and float64; ``tests/test_math.py`` bounds it by
1), subnormal results within 1 ulp (0.83); NaN -> NaN, -inf -> 0, -0.0 -> 1.""",
)


def like(x, value):
    """``value`` converted to the float type of ``x`` (float64 for non-float ``x``)."""
    return np.asarray(x).dtype.type(value) if np.asarray(x).dtype.kind == "f" else np.float64(value)


@overload(like, jit_options=_OPTS)
def _ov_like(x, value):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x, value: np.float32(value)
    return lambda x, value: np.float64(value)


def sixth(x):
    """x / 6, rounded once (the correctly rounded quotient wherever it is normal).

    float32: q = x (1/6), then q + (x - 6q) (1/6) with both corrections as FMAs: no
    division (a vdivps costs 16-bit hardsigmoid a third of its speed). Checked on every
    float32 x: the correctly rounded quotient wherever x / 6 is normal; subnormal
    quotients can differ by an ulp (double rounding) and inf gives NaN, so callers keep
    |x| in [6 * 2^-126, FLT_MAX]. float64: the division.
    """
    return x / np.asarray(x).dtype.type(6.0)


_SIXTH32, _SIX32 = np.float32(1.0 / 6.0), np.float32(6.0)


@overload(sixth, jit_options=_OPTS)
def _ov_sixth(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:

        def sixth32(x):
            q = x * _SIXTH32
            return _fma(_fma(-q, _SIX32, x), _SIXTH32, q)

        return sixth32
    if isinstance(x, types.Float):
        return lambda x: x / np.float64(6.0)
    return None


# Measured by ``python tests/test_math.py`` (see the module docstring).
MEASURED_MAX_ULP = {
    "exp": (0.86, 0.87),
    "expm1": (1.42, 1.40),
    "log": (0.83, 0.76),
    "log1p": (1.39, 1.30),
    "tanh": (1.94, 1.92),
    "sigmoid": (1.61, 1.57),
    "softplus": (2.29, 2.48),
    "log_sigmoid": (2.29, 2.48),
    "erf": (1.26, 0.84),
    "erfc": (2.53, 1.64),
    "silu": (2.98, 2.89),
    "gelu": (3.71, 2.62),  # float32: every 7th pattern of |x| < 20 (every 61st: 3.40)
    "gelu_tanh": (3.05, 1.87),
    "mish": (3.08, 3.18),
    "gaussian": (0.86, 1.00),
}


def _ulp_table():
    rows = ["===========  =======  =======", "function     float32  float64", "===========  =======  ======="]
    rows += [f"{name:11s}  {e32:7.2f}  {e64:7.2f}" for name, (e32, e64) in MEASURED_MAX_ULP.items()]
    return "\n".join([*rows, rows[0]])


__doc__ = __doc__ % {"table": _ulp_table()}
for _name, (_e32, _e64) in MEASURED_MAX_ULP.items():
    globals()[_name].__doc__ += f"\n\nMeasured max error: {_e32:.2f} ulp (float32), {_e64:.2f} ulp (float64)."

__all__ = [
    "erf",
    "erfc",
    "exp",
    "expm1",
    "gaussian",
    "gelu",
    "gelu_grad",
    "gelu_tanh",
    "like",
    "log",
    "log1p",
    "log_sigmoid",
    "mish",
    "sigmoid",
    "sixth",
    "silu",
    "silu_grad",
    "softplus",
    "tanh",
]
