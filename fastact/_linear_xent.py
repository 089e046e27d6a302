"""Linear layer + softmax cross-entropy, chunked over rows: the loss and every gradient
without ever holding the N x V logits.

::

    logits = input @ linear_weight.T + linear_bias                 (N, V)
    loss   = cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing)
    g      = dloss/dlogits
    dinput = g @ linear_weight,  dlinear_weight = g.T @ input,  dlinear_bias = sum_n g_n

:func:`linear_cross_entropy` has the semantics of ``torch.nn.functional.linear_cross_entropy``
(torch >= 2.13; the composition ``cross_entropy(linear(input, W, b), target, ...)``). The
rows go in chunks: a chunk's logits by numpy's matmul (BLAS) into one reused buffer, the
fused cross-entropy kernel of :mod:`fastact._softmax` in place on it (loss rows, and g
already scaled by the "mean" normaliser, which is computed from all rows before the
walk), then ``dinput[chunk] = g @ W`` straight into the output and ``dW += g.T @ x[chunk]``
through BLAS's accumulating gemm (:mod:`fastact._blas`; numpy has none), computed as
``dW.T += x[chunk].T @ g`` into a C-ordered (H, V) array: in that orientation BLAS packs g
block by block instead of copying the whole chunk into its workspace. Memory beyond the
inputs and outputs: the chunk buffer, the float64 row losses (8 N bytes), the targets as
int64 and the class weights.

bfloat16 and float16 (as torch computes bf16 matrix products: in float32): the weight
matrix and bias are widened to float32 once per call (a float32 copy of W, twice the
16-bit W's memory); each chunk of input rows is widened into a float32 buffer; logits,
cross-entropy, dinput's chunk and the dW / dbias sums are float32 (dinput's chunk goes
through a float32 chunk buffer and is rounded into the 16-bit dinput); dW and dbias are
rounded to the input's dtype once, at the end. No float32 array of the N x V logits or of
the N x H input is ever made.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

from . import _blas
from . import _config as config
from ._softmax import (
    narrow,
    widen,
    xent_options,
    xent_reduce,
    xent_rows,
    xent_scale,
    xent_target,
    xent_total_weight,
    xent_weight,
)
from ._validate import as_input

__all__ = ["linear_cross_entropy"]


def default_chunk_rows(n: int, v: int, itemsize: int) -> int:
    """The rows per chunk of ``chunk_size=None``: N // 10 (``_config.LCE_CHUNK_FRACTION``), so
    that the chunk's logits buffer (rows x V), the O(N + V) rest and BLAS's workspace stay
    under 1/8 of the N x V logits; but the buffer at most 64 MiB (``LCE_CHUNK_BYTES``: beyond that the
    matrix products gain nothing) and at least 1 MiB (``LCE_MIN_CHUNK_BYTES``: small
    problems are not cut into small products); rounded down to a multiple of 16 rows
    (``LCE_ROW_MULTIPLE``) when it has that many; at least one row, at most N."""
    row = max(v * itemsize, 1)
    rows = min(n // config.LCE_CHUNK_FRACTION, config.LCE_CHUNK_BYTES // row)
    rows = max(rows, config.LCE_MIN_CHUNK_BYTES // row)
    if rows >= config.LCE_ROW_MULTIPLE:
        rows -= rows % config.LCE_ROW_MULTIPLE
    return max(1, min(rows, n))


def _chunk_rows(chunk_size: object, n: int, v: int, itemsize: int) -> int:
    if chunk_size is None:
        return default_chunk_rows(n, v, itemsize)
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be a positive integer or None, got {type(chunk_size).__name__}")
    rows = operator.index(chunk_size)
    if rows < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {rows}")
    return max(1, min(rows, n))


class _Problem:
    """The checked arguments of one call: 2-d views, int64 targets, weights, normaliser."""

    def __init__(self, input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
                 label_smoothing, chunk_size):  # fmt: skip
        self.reduction, self.eps, self.ignore = xent_options(ignore_index, reduction, label_smoothing)
        x = as_input(input, "input", True)
        if x.ndim not in (1, 2):
            raise ValueError(f"input must be (N, H) or (H,), got shape {x.shape}")
        w_lin = as_input(linear_weight, "linear_weight", True)
        if w_lin.ndim != 2:
            raise ValueError(f"linear_weight must be (V, H), got shape {w_lin.shape}")
        if w_lin.dtype != x.dtype:
            raise TypeError(f"linear_weight has dtype {w_lin.dtype}, input {x.dtype}: they must match")
        self.single = x.ndim == 1
        x2 = x.reshape(1, -1) if self.single else x
        n, h = x2.shape
        v = w_lin.shape[0]
        if w_lin.shape[1] != h:
            raise ValueError(
                f"linear_weight has shape {w_lin.shape}, expected (V, {h}) for input of shape {x.shape}"
            )
        if v == 0:
            raise ValueError(f"linear_weight has shape {w_lin.shape}: no classes")
        bias = None
        if linear_bias is not None:
            bias = as_input(linear_bias, "linear_bias", True)
            if bias.dtype != x.dtype:
                raise TypeError(f"linear_bias has dtype {bias.dtype}, input {x.dtype}: they must match")
            if bias.shape != (v,):
                raise ValueError(f"linear_bias has shape {bias.shape}, expected {(v,)}")
        logits_shape = (v,) if self.single else (n, v)
        half = x.dtype.itemsize == 2  # computed in float32 (see the module's docstring)
        self.compute = np.dtype(np.float32) if half else x.dtype
        self.t = xent_target(
            target, logits_shape, self.ignore, name="the logits (N, V)", half=x.dtype if half else None
        )
        self.w, self.wsum = xent_weight(weight, v, self.compute)
        self.rows = _chunk_rows(chunk_size, n, v, self.compute.itemsize)
        self.total_weight = xent_total_weight(self.reduction, self.t, self.w, weight is not None, self.ignore)
        self.scale = xent_scale(self.total_weight) if self.reduction == "mean" else 1.0
        # BLAS reads W as given (C order: x @ W.T is a transposed operand, no copy); any other
        # layout that is not a plain transpose would be copied by each matmul: copy it once.
        if not (w_lin.flags.c_contiguous or w_lin.flags.f_contiguous):
            w_lin = np.ascontiguousarray(w_lin)
        self.x, self.weight_matrix, self.bias = x2, w_lin, bias
        self.half = half
        self.n, self.h, self.v, self.dtype = n, h, v, x.dtype

    def shape_input_grad(self, dx: np.ndarray) -> np.ndarray:
        return dx.reshape(self.h) if self.single else dx


def _unit_rows(a: np.ndarray) -> bool:
    """Rows BLAS reads in place: unit stride along a row."""
    return a.shape[1] <= 1 or a.strides[1] == a.itemsize


def walk(p: _Problem, grads: bool = True, row_scale: np.ndarray | None = None):
    """The chunk loop. Returns (float64 row losses, dinput, dW, dbias) (the gradients None
    when ``grads`` is False: logits and losses only). ``row_scale`` (N,), if given, weighs
    row n's gradient by row_scale[n] (the gradient of sum_n row_scale[n] loss_n, for
    reduction "none" under a grad_output)."""
    if p.half:
        return _walk_half(p, grads, row_scale)
    n, h, v, dtype = p.n, p.h, p.v, p.dtype
    x, w_lin, bias = p.x, p.weight_matrix, p.bias
    losses = np.empty(n)
    dx = dwt = db = None
    if grads:
        dx = np.empty((n, h), dtype)
        # dW is accumulated as its transpose, (H, V) in C order: BLAS then packs the small
        # x chunk whole and the chunk's gradient block by block; (V, H) in C order would make
        # it pack the whole (rows, V) gradient (the size of the chunk buffer) into its
        # workspace. The returned dW is the (V, H) Fortran-ordered view.
        dwt = np.zeros((h, v), dtype) if n == 0 else np.empty((h, v), dtype)
        db = None if bias is None else np.zeros(v, dtype)
    if n == 0:
        return losses, dx, None if dwt is None else dwt.T, db
    _chunks(p, x, w_lin, bias, losses, dx, dwt, db, grads, row_scale)
    return losses, dx, None if dwt is None else dwt.T, db


def _walk_half(p: _Problem, grads: bool, row_scale: np.ndarray | None):
    """:func:`walk` for 16-bit arrays: W and the bias widened to float32 once, each chunk of
    input rows widened into a float32 buffer, dinput's chunks through a float32 buffer
    rounded into the 16-bit dinput, dW and dbias summed in float32 and rounded at the end."""
    n, h, v, dtype = p.n, p.h, p.v, p.dtype
    f32 = np.dtype(np.float32)
    losses = np.empty(n)
    dx = dwt = db = None
    if grads:
        dx = np.empty((n, h), dtype)
        dwt = np.zeros((h, v), f32) if n == 0 else np.empty((h, v), f32)
        db = None if p.bias is None else np.zeros(v, f32)
    if n > 0:
        w_lin = widen(p.weight_matrix) if p.weight_matrix.flags.c_contiguous else widen(p.weight_matrix.T).T
        bias = None if p.bias is None else widen(p.bias)
        if row_scale is not None:
            row_scale = row_scale.astype(f32)
        _chunks(p, p.x, w_lin, bias, losses, dx, dwt, db, grads, row_scale)
    if not grads:
        return losses, None, None, None
    dw = np.empty((h, v), dtype)
    narrow(dwt, dw)
    return losses, dx, dw.T, None if db is None else db.astype(dtype)


def _chunks(p: _Problem, x, w_lin, bias, losses, dx, dwt, db, grads: bool, row_scale) -> None:
    """The chunk loop of :func:`walk` over ``x`` (N, H), into the row losses and the
    gradients (dx's chunks through a buffer of the compute dtype where dx is 16-bit; the
    16-bit x's chunks through one too)."""
    n, h, v, dtype = p.n, p.h, p.v, p.compute
    rows = p.rows
    buf = np.empty((rows, v), dtype)
    # A chunk of input rows BLAS cannot read as they are is copied to a small buffer once,
    # rather than by each of the chunk's two products that read it (16-bit rows: widened).
    xbuf = None if _unit_rows(x) and x.dtype == dtype else np.empty((rows, h), dtype)
    dxbuf = None if dx is None or dx.dtype == dtype else np.empty((rows, h), dtype)
    accumulate = _blas.gemm_accumulate(dtype) if grads and config.LCE_BLAS_ACCUMULATE else None
    scratch = None  # numpy fallback for dW +=: (H, vb) at a time, 1/16 of the buffer
    bias_sum = None if db is None else np.empty(v, dtype)
    wt = w_lin.T
    for c0 in range(0, n, rows):
        c1 = min(n, c0 + rows)
        g = buf[: c1 - c0]
        xc = x[c0:c1]
        if xbuf is not None:
            xc = xbuf[: c1 - c0]
            if x.dtype == dtype:
                np.copyto(xc, x[c0:c1])
            else:
                widen(x[c0:c1], xc)
        np.matmul(xc, wt, out=g)
        if bias is not None:
            g += bias
        t = p.t[c0:c1]
        if t.ndim == 2 and t.dtype != dtype and p.half:  # 16-bit probabilities, in the compute dtype
            t = t.astype(dtype)
        xent_rows(None, t, p.w, p.wsum, p.ignore, p.eps, p.scale, g, losses[c0:c1])
        if not grads:
            continue
        if row_scale is not None:
            g *= row_scale[c0:c1, None]
        if dxbuf is None:
            np.matmul(g, w_lin, out=dx[c0:c1])
        else:
            np.matmul(g, w_lin, out=dxbuf[: c1 - c0])
            narrow(dxbuf[: c1 - c0], dx[c0:c1])
        if c0 == 0:
            np.matmul(xc.T, g, out=dwt)
        elif accumulate is None or not accumulate(dwt, xc.T, g):
            if scratch is None:
                vb = max(1, min(v, buf.nbytes // 16 // max(h * buf.itemsize, 1)))
                scratch = np.empty(h * vb, dtype)
            vb = scratch.size // max(h, 1) if h else v
            for v0 in range(0, v, vb):
                v1 = min(v, v0 + vb)
                part = scratch[: h * (v1 - v0)].reshape(h, v1 - v0)
                np.matmul(xc.T, g[:, v0:v1], out=part)
                dwt[:, v0:v1] += part
        if db is not None:
            np.sum(g, axis=0, out=bias_sum)
            db += bias_sum


def linear_cross_entropy(
    input: np.ndarray,
    linear_weight: np.ndarray,
    target: np.ndarray,
    *,
    linear_bias: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
) -> tuple[float | np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Cross-entropy of the linear layer ``input @ linear_weight.T + linear_bias`` and all
    its gradients, as ``torch.nn.functional.linear_cross_entropy``, without the N x V logits.

    ``input`` is (N, H) (or (H,), one sample), ``linear_weight`` (V, H) and ``linear_bias``
    (V,) of the same dtype (float32, float64, or bfloat16 / float16, computed in float32 as
    torch does: W and the bias are then widened to float32 once per call, a float32 copy
    of W; input rows and logits are widened a chunk at a time). ``target``, ``weight`` (class weights,
    (V,)), ``ignore_index``, ``reduction`` and ``label_smoothing`` are those of
    :func:`fastact.softmax_cross_entropy` on the logits (class indices (N,), or class
    probabilities (N, V)): with eps = label_smoothing, lse = log sum_c e^z_c, z = the row's
    logits, class k: loss_n = (1-eps) w_k (lse - z_k) + eps/V sum_c w_c (lse - z_c).
    "mean" divides by the total weight of all non-ignored rows (N for probabilities).

    Returns ``(loss, dinput, dlinear_weight, dlinear_bias)``: loss as
    ``softmax_cross_entropy`` returns it (a float, or the (N,) losses for "none"); the
    gradients of the returned loss (of sum(loss) for "none") with the shapes and dtype of
    ``input``, ``linear_weight`` and ``linear_bias`` (None without a bias); dlinear_weight
    is Fortran-ordered (the transpose of a C-ordered (H, V) array: the layout in which BLAS
    accumulates it without a workspace the size of a chunk).

    The rows go ``chunk_size`` at a time (None: :func:`default_chunk_rows`, N // 10 rows:
    the chunk's logits are 1/10 of the whole, within 1 MiB to 64 MiB). Each chunk: logits
    by numpy's matmul into one reused buffer, the fused cross-entropy in place on it, then
    dinput[chunk] = g @ W and dW.T += input[chunk].T @ g (BLAS gemm with beta = 1), dbias
    += sum of g's rows. Memory beyond the outputs: that buffer and O(N + V). The weight
    gradient sums over chunks in the input's dtype, so its last bits depend on the chunk
    size (16-bit: it sums in float32 and is rounded once at the end, as dbias). 16-bit
    results: the gradients in the input's dtype, the loss a float ("none": the row losses
    in the input's dtype), as :func:`fastact.softmax_cross_entropy` gives for 16-bit logits.
    Everything is checked before anything is computed.
    """
    p = _Problem(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
                 label_smoothing, chunk_size)  # fmt: skip
    losses, dx, dw, db = walk(p)
    loss = xent_reduce(losses, p.reduction, p.total_weight, p.dtype, p.single)
    return loss, p.shape_input_grad(dx), dw, db


def prepare(input, linear_weight, target, *, linear_bias=None, weight=None, ignore_index=-100,
            reduction="mean", label_smoothing=0.0, chunk_size=None) -> _Problem:  # fmt: skip
    """The checked problem of a :func:`linear_cross_entropy` call, for :func:`walk` (the
    torch adapter runs the loss and the gradients at different times)."""
    return _Problem(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
                    label_smoothing, chunk_size)  # fmt: skip


def reduce_losses(p: _Problem, losses: np.ndarray):
    """The returned loss of :func:`linear_cross_entropy` from :func:`walk`'s row losses."""
    return xent_reduce(losses, p.reduction, p.total_weight, p.dtype, p.single)
