"""Scalar math through the C library: accurate, but not vectorizable by LLVM.

Everything is computed in float64 (float32 inputs are widened first), so composites
such as x * sigmoid(x) never see a float32 subnormal intermediate.

These are the baseline implementations the definitions table calls. The fast,
vectorizing replacements live in :mod:`fastact._math` and have the same names.
"""

import math

import numpy as np
from numba import njit


@njit
def exp(x):
    return math.exp(np.float64(x))


@njit
def expm1(x):
    return math.expm1(np.float64(x))


@njit
def log1p(x):
    return math.log1p(np.float64(x))


@njit
def tanh(x):
    return math.tanh(np.float64(x))


@njit
def erf(x):
    return math.erf(np.float64(x))


@njit
def erfc(x):
    return math.erfc(np.float64(x))


@njit
def sigmoid(x):
    """1 / (1 + e^-x), written so neither tail overflows."""
    t = np.float64(x)
    if t >= 0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


@njit
def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|)."""
    t = np.float64(x)
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


@njit
def log_sigmoid(x):
    """log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|)."""
    t = np.float64(x)
    return min(t, 0.0) - math.log1p(math.exp(-abs(t)))
