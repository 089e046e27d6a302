"""Compiled kernels for softmax cross-entropy: loss and gradient from one pass per row.

One row: max, then exp stored into grad while summing (and, with label smoothing, the sum
of w_c (m - x_c)), then grad rescaled in place. logits may be grad (in place): each logit
is read before its slot is overwritten; as in :mod:`fastact._softmax_kernels`, ``x`` is
then None and grad is read instead (``_src``, ``_seg``). Built from that module's row
helpers and :mod:`fastact._softmax_jit`'s dispatcher classes; neither imports this one.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types

from ._kernels import FASTMATH
from ._math import _exp_nonpos
from ._row_intrinsics import _maxnum
from ._softmax_jit import Kernel, _flavoured, pin_all
from ._softmax_kernels import REDUCE, _max, _pin_all, _scale, _seg, _shift, _src, _sumexp_store


@njit(fastmath=REDUCE, error_model="numpy")
def _weight(w, qr, j, keep, add):
    """The weight of class j in the smoothed loss: w_j, or w_j q'_j with q' = q keep + add
    (probability targets, qr the row of q)."""
    if qr is None:
        return w[j]
    return w[j] * (qr[j] * keep + add)


@njit(fastmath=REDUCE, error_model="numpy")
def _sumexp_store_weighted(x, qr, w, out, r, n, m, keep, add):
    """(sum_j e_j, sum_j u_j (m - x_j)), e_j = exp(x_j - m) stored into out[r], u_j the
    _weight of class j (qr, the row of q, None: w_j; keep and add are then unused)."""
    o = out[r]
    x = _seg(x, o, r, 0, o.shape[0])
    s = out.dtype.type(0)
    d = out.dtype.type(0)
    for j in range(n):
        v = x[j]
        e = _exp_nonpos(v - m)
        o[j] = e
        s += e
        d += _weight(w, qr, j, keep, add) * (m - v)
    return s, d


@njit(fastmath=FASTMATH, error_model="numpy")
def _affine(out, w, r, n, a, b):
    o = out[r]
    for j in range(n):
        o[j] = o[j] * a - b * w[j]


@njit(fastmath=FASTMATH, error_model="numpy")
def _ce_class_row(x, t, w, wsum, ignore, eps, scale, grad, loss, r):
    """Row r with class target t[r]:
    loss = (1-eps) w_t (lse - x_t) + eps/C sum_c w_c (lse - x_c),
    grad = scale (p ((1-eps) w_t + eps/C sum w) - eps/C w - (1-eps) w_t onehot(t))."""
    n = grad.shape[1]
    k = t[r]
    if k == ignore:
        loss[r] = 0.0
        grad[r] = 0
        return
    wk = np.float64(w[k])
    xk = np.float64(_src(x, grad)[r, k])
    m = _shift(grad, _max(_src(x, grad), None, r, 0, n, None))
    smooth = eps / n
    if eps > 0.0:
        s, d = _sumexp_store_weighted(x, None, w, grad, r, n, m, None, None)
    else:
        s = _sumexp_store(x, None, grad, r, r, 0, n, m, None)
        d = grad.dtype.type(0)
    ls = math.log(s)
    loss[r] = (1.0 - eps) * wk * ((np.float64(m) - xk) + ls) + smooth * (np.float64(d) + wsum * ls)
    a = scale * ((1.0 - eps) * wk + smooth * wsum) / s
    if eps > 0.0:
        _affine(grad, w, r, n, grad.dtype.type(a), grad.dtype.type(scale * smooth))
    else:
        _scale(grad, r, 0, n, grad.dtype.type(a))
    grad[r, k] -= grad.dtype.type(scale * (1.0 - eps) * wk)


@njit(fastmath=REDUCE, error_model="numpy")
def _max_wq(x, q, w, r, n, keep, add):
    m = x.dtype.type(-np.inf)
    wq = x.dtype.type(0)
    xr = x[r]
    qr = q[r]
    for j in range(n):
        m = _maxnum(m, xr[j])
        wq += _weight(w, qr, j, keep, add)
    return m, wq


@njit(fastmath=FASTMATH, error_model="numpy")
def _prob_grad(out, q, w, r, n, a, scale, keep, add):
    o = out[r]
    qr = q[r]
    for j in range(n):
        o[j] = o[j] * a - scale * w[j] * (qr[j] * keep + add)


@njit(fastmath=FASTMATH, error_model="numpy")
def _ce_prob_row(x, q, w, eps, scale, grad, loss, r):
    """Row r with probabilities q, q' = (1-eps) q + eps/C:
    loss = sum_c w_c q'_c (lse - x_c), grad = scale (p sum_c w_c q'_c - w q')."""
    n = grad.shape[1]
    one = grad.dtype.type(1)
    keep = one - grad.dtype.type(eps)
    add = grad.dtype.type(eps / n)
    m, wq = _max_wq(_src(x, grad), q, w, r, n, keep, add)
    m = _shift(grad, m)
    s, d = _sumexp_store_weighted(x, q[r], w, grad, r, n, m, keep, add)
    loss[r] = np.float64(d) + np.float64(wq) * math.log(s)
    _prob_grad(grad, q, w, r, n, grad.dtype.type(scale * wq / s), grad.dtype.type(scale), keep, add)


def _ce_class_kernel(row, parallel):
    @_flavoured(parallel)
    def kernel(x, t, w, wsum, ignore, eps, scale, grad, loss):
        for r in prange(grad.shape[0]):
            row(x, t, w, wsum, ignore, eps, scale, grad, loss, r)

    return kernel


def _ce_prob_kernel(row, parallel):
    @_flavoured(parallel)
    def kernel(x, q, w, eps, scale, grad, loss):
        for r in prange(grad.shape[0]):
            row(x, q, w, eps, scale, grad, loss, r)

    return kernel


_F8, _I8 = types.float64, types.int64
_CLASS_ROLES = ("in", "in", "in", _F8, _I8, _F8, _F8, "out", "out")
_PROB_ROLES = ("in", "in", "in", _F8, _F8, "out", "out")


class CrossEntropyKernels:
    """Class-index and probability-target kernels, serial and parallel."""

    def __init__(self):
        _pin_all()  # the softmax helpers called here, and what they call
        pin_all(globals().values())
        self.cls = Kernel(lambda: _ce_class_kernel(_ce_class_row, False), _CLASS_ROLES)
        self.cls_parallel = Kernel(lambda: _ce_class_kernel(_ce_class_row, True), _CLASS_ROLES)
        self.prob = Kernel(lambda: _ce_prob_kernel(_ce_prob_row, False), _PROB_ROLES)
        self.prob_parallel = Kernel(lambda: _ce_prob_kernel(_ce_prob_row, True), _PROB_ROLES)


_built: dict[str, CrossEntropyKernels] = {}


def cross_entropy_kernels() -> CrossEntropyKernels:
    """The cross-entropy kernels, built (not compiled) on first use."""
    k = _built.get("cross_entropy")
    if k is None:
        k = _built["cross_entropy"] = CrossEntropyKernels()
    return k
