"""The math helpers of the definitions table, for the GPU.

The same names and special values as :mod:`fastact._math`,
written with ``math`` functions that CUDA lowers to libdevice (``math.exp`` of a
float32 is ``__nv_expf``); ``exp``, ``log`` etc. are those functions. The others are
plain Python: :class:`fastact.cuda._compile.Builder` compiles them per float type,
retyping the literals, so a float32 argument is computed in float32 (and ``like(x, v)``
is just ``v``, already of x's type).
"""

import math

# libdevice's own functions under the helpers' names: the builder binds each to the float
# type's ``math`` (numpy's under the simulator), as it binds ``math`` itself.
from math import erf, erfc, exp, expm1, log, log1p, tanh

import numpy as np

__all__ = [
    "erf", "erfc", "exp", "expm1", "gaussian", "gelu", "gelu_grad", "gelu_tanh", "like", "log", "log1p",
    "log_sigmoid", "mish", "sigmoid", "silu", "silu_grad", "softplus", "tanh",
]  # fmt: skip

SQRT_HALF = 0.7071067811865476
SQRT_HALF_LO = -4.833646656726457e-17  # sqrt(1/2) - SQRT_HALF
TWO_OVER_SQRT_PI = 1.1283791670955126
SQRT_2_OVER_PI = 0.7978845608028654
INV_SQRT_2PI = 0.3989422804014327
GELU_TANH_C = 0.044715


def like(x, value):
    return value


def sigmoid(x):
    """1 / (1 + e^-x), written so neither tail overflows."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|)."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def log_sigmoid(x):
    """log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|)."""
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


def gaussian(x):
    """e^(-x^2/2)."""
    return math.exp(-0.5 * x * x)


def silu(x):
    """x * sigmoid(x); -0.0 at -inf."""
    if x == -math.inf:
        return -0.0
    return x * sigmoid(x)


def silu_grad(x):
    """s (1 + x (1 - s)), s = sigmoid(x); 1 at inf, +0.0 at -inf."""
    if x == math.inf:
        return 1.0
    if x == -math.inf:
        return 0.0
    s = sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def gelu(x):
    """x/2 erfc(-x/sqrt 2); -0.0 at -inf.

    erfc amplifies the rounding of its argument a = -x/sqrt 2 by 2a^2 (1000 ulp at
    x = -32): the rounding error d of a (exact product residual by Veltkamp splitting,
    plus the error of the constant) is put back to first order,
    erfc(a + d) = erfc(a) - d 2/sqrt(pi) e^(-a^2). Only compiled for float64 (gelu's
    float32 forward is widened, see ``_compile.WIDEN``).
    """
    if x == -math.inf:
        return -0.0
    a = -x * SQRT_HALF
    y = math.erfc(a)
    if -40.0 < x < -1.0:  # the negative tail, where the correction matters (and x splits safely)
        c = 134217729.0 * x  # 2^27 + 1
        xh = c - (c - x)
        xl = x - xh
        c = 134217729.0 * SQRT_HALF
        kh = c - (c - SQRT_HALF)
        kl = SQRT_HALF - kh
        err = ((xh * kh + a) + xh * kl + xl * kh) + xl * kl  # x k + a = -(rounding error of a), exactly
        d = -(err + x * SQRT_HALF_LO)  # a_exact - a
        y = y - d * TWO_OVER_SQRT_PI * math.exp(-a * a)
    return 0.5 * x * y


def gelu_grad(x):
    """Phi(x) + x phi(x); 1 at inf, -0.0 where the (negative) tail underflows and at -inf."""
    if x == math.inf:
        return 1.0
    if x == -math.inf:
        return -0.0
    d = 0.5 * math.erfc(-x * SQRT_HALF) + x * (INV_SQRT_2PI * math.exp(-0.5 * x * x))
    return -0.0 if d == 0.0 else d  # d < 0 below the root x = -0.75: its zero is -0.0


def gelu_tanh(x):
    """x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)); -0.0 below -64."""
    if x < -64.0:
        return -0.0
    if x > 1e10:
        return x
    return x * sigmoid(2.0 * SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x))


def mish(x):
    """x tanh(softplus(x)); -0.0 at -inf."""
    if x == -math.inf:
        return -0.0
    return x * math.tanh(softplus(x))


# --- 16-bit storage (fastact.cuda._compile.FORMATS): not table helpers, so not in __all__ --------
# float16 arrays are numba float16 arrays: converting to float32 and assigning a float32 to an
# element are the PTX cvt instructions (cvt.rn.f16.f32: to nearest, ties to even, NaN stays
# NaN). bfloat16 arrays are uint16 arrays of the bits, converted as fastact._half does on the
# CPU. A value computed in float64 (fastact.cuda._compile.WIDEN) is rounded to float32 first:
# the 16-bit result is the float32 kernel's, rounded once more.


def float_as_int(x):
    """The bits of float32 ``x`` as an integer (signed 32-bit); on a GPU the builder binds
    libdevice's ``float_as_int`` in its place."""
    return int(np.float32(x).view(np.int32))


def int_as_float(i):
    """The float32 whose bits are the low 32 of integer ``i``; on a GPU libdevice's
    ``int_as_float`` (of ``i`` truncated to 32 bits) in its place."""
    return np.uint32(i & 0xFFFFFFFF).view(np.float32)


def bf16_widen(u):
    """The float32 value of bfloat16 bits ``u`` (exact): the bits in float32's top half."""
    return int_as_float(np.int64(u) << 16)


def bf16_narrow(x):
    """float32 ``x`` rounded to the nearest bfloat16's bits, ties to even (add 0x7FFF and the
    kept half's lowest bit, then shift; overflow carries into the exponent, to inf); NaN: the
    top half with the quiet bit set."""
    b = float_as_int(x)
    if x != x:
        return ((b >> 16) | 0x40) & 0xFFFF
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


def bf16_load(u):
    return bf16_widen(u)


def bf16_store(v):
    return bf16_narrow(np.float32(v))


def f16_load(h):
    return np.float32(h)


def f16_store(v):
    return np.float32(v)  # rounded to float16 by the assignment to the float16 element
