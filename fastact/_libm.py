"""Scalar math through the C library: accurate, but not vectorizable by LLVM.

These are the baseline implementations the definitions table calls. The fast,
vectorizing replacements live in :mod:`fastact._math` and have the same names.
"""

import math

from numba import njit


@njit(cache=True)
def exp(x):
    return math.exp(x)


@njit(cache=True)
def expm1(x):
    return math.expm1(x)


@njit(cache=True)
def log1p(x):
    return math.log1p(x)


@njit(cache=True)
def tanh(x):
    return math.tanh(x)


@njit(cache=True)
def erf(x):
    return math.erf(x)


@njit(cache=True)
def sigmoid(x):
    """1 / (1 + e^-x), written so neither tail overflows."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|)."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(cache=True)
def log_sigmoid(x):
    """log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|)."""
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))
