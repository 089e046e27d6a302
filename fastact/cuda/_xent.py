"""Fused softmax cross-entropy (torch.nn.functional.cross_entropy) and its gradient, on the GPU.

For a row x with logZ = log(sum_c e^(x_c)), class weights w (1 without ``weight``),
smoothing eps over C classes and a class target t::

    loss = (1 - eps) w_t (logZ - x_t) + eps/C * sum_c w_c (logZ - x_c)
    dloss/dx_j = p_j ((1 - eps) w_t + eps/C * sum_c w_c) - (1 - eps) w_t [j = t] - eps/C * w_j

and for probability targets q (same shape as the logits), with a_c = w_c ((1 - eps) q_c + eps/C)::

    loss = sum_c a_c (logZ - x_c),   dloss/dx_j = p_j sum_c a_c - a_j

"mean" divides by the sum of w_t over rows not ignored (class targets) or by the
number of rows (probability targets); the gradient is that of the returned loss
("none": of its sum). One block-group per row reads the logits twice and writes the
gradient once; a target outside [0, C) cannot be reported without a device-to-host
sync, so its row gets a NaN loss and gradient.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
from numba import cuda

from .._validate import choice, real
from ._arrays import DArray, _numba_empty, as_device, check_stream, empty, empty_like, resolve_stream, view
from ._compile import device, format_of, load, store
from ._kernels import collapse, kernel_dtype, narrow_kernel, storage_builder, strided_views, unaliased
from ._launch import blocks, compile_kernel, group_size, launch, settings
from ._reduce import block_maxsum, block_sum, group_rows, push, row_at

# --- kernels --------------------------------------------------------------------------


@device
def _reduce_row(x, q, w, o, k, start, stop, step, keep, smooth, weighted, probs):
    """Running (max, sum) of the row and, where needed, sum(a_c) and sum(a_c x_c)."""
    m = -math.inf
    s = 0.0
    a_sum = 0.0
    ax_sum = 0.0
    for j in range(start, stop, step):
        v = load(x[o, j, k])
        m, s = push(m, s, v)
        if probs or smooth != 0.0:
            a = load(w[j]) if weighted else 1.0
            if probs:
                a *= keep * load(q[o, j, k]) + smooth
            a_sum += a
            ax_sum += a * v
    return m, s, a_sum, ax_sum


def xent_rows(tpb, dt, probs):
    """Gradient and loss of each row: a group of ``group`` threads per row (as softmax's
    ``rows``). t: class targets (outer, inner), or (``probs``) probabilities like x."""

    def kernel(x, t, w, grad, loss, den, scale, use_den, ignore, keep, smooth, weighted, group):
        sm = cuda.shared.array(tpb, dt)
        ss = cuda.shared.array(tpb, dt)
        sa = cuda.shared.array(tpb, dt)
        sb = cuda.shared.array(tpb, dt)
        if use_den:
            scale = 1.0 / den[0]
        q = x  # the probabilities (unread with class targets)
        if probs:
            q = t
        outer, n, inner = x.shape
        n_rows = outer * inner
        lane, start, stop, step = group_rows(n_rows, tpb, group)
        for row in range(start, stop, step):
            o, k = row_at(row, inner)
            target = ignore
            x_t = math.nan
            w_t = math.nan
            if not probs and row < n_rows:
                target = t[o, k]
                if target != ignore and target >= 0 and target < n:
                    x_t = load(x[o, target, k])  # read before any gradient overwrites the logits
                    w_t = load(w[target]) if weighted else 1.0
            active = row < n_rows and (probs or target != ignore)
            m = -math.inf
            s = 0.0
            a_sum = 0.0
            ax_sum = 0.0
            if active:
                m, s, a_sum, ax_sum = _reduce_row(
                    x, q, w, o, k, lane, n, group, keep, smooth, weighted, probs
                )
            m, s = block_maxsum(sm, ss, m, s, lane, group)
            if probs or smooth != 0.0:
                a_sum = block_sum(sa, a_sum, lane, group)
                ax_sum = block_sum(sb, ax_sum, lane, group)
            if active:
                if m == math.inf:
                    s = math.nan
                log_z = m + math.log(s)
                if probs:
                    for j in range(lane, n, group):
                        a = (load(w[j]) if weighted else 1.0) * (keep * load(q[o, j, k]) + smooth)
                        grad[o, j, k] = store((math.exp(load(x[o, j, k]) - m) / s * a_sum - a) * scale)
                    if lane == 0:
                        loss[o, k] = a_sum * log_z - ax_sum
                else:
                    hit = keep * w_t
                    coef = hit + smooth * a_sum
                    for j in range(lane, n, group):
                        d = math.exp(load(x[o, j, k]) - m) / s * coef
                        if smooth != 0.0:
                            d -= smooth * (load(w[j]) if weighted else 1.0)
                        if j == target:
                            d -= hit
                        grad[o, j, k] = store(d * scale)
                    if lane == 0:
                        loss[o, k] = hit * (log_z - x_t) + smooth * (a_sum * log_z - ax_sum)
            elif row < n_rows:  # an ignored target
                for j in range(lane, n, group):
                    grad[o, j, k] = store(0.0)
                if lane == 0:
                    loss[o, k] = 0.0

    return kernel


def xent_sum(tpb, dt, targets):
    """One block: out[0] = the sum of w[t] (or the count; ``targets``) over the targets a
    that are not ignored, or the sum of the losses a times scale (or / den[0])."""

    def kernel(a, w, out, den, ignore, weighted, scale, use_den):
        sh = cuda.shared.array(tpb, dt)
        tid = cuda.threadIdx.x
        outer, inner = a.shape
        s = 0.0
        for i in range(tid, outer * inner, tpb):
            o, k = row_at(i, inner)
            v = a[o, k]
            if not targets:
                s += v
            elif v != ignore:
                if not weighted:
                    s += 1.0
                elif v >= 0 and v < w.shape[0]:
                    s += load(w[v])
        s = block_sum(sh, s, tid, tpb)
        if tid == 0:
            if targets:
                out[0] = s
            else:
                out[0] = store(s / den[0] if use_den else s * scale)

    return kernel


# name -> (generator, its compile-time flags, argument types): "a3" a 3-d array of the logits'
# element type {t}, {c} the compute type (of the row losses, the denominator, the scalars),
# {i} the class targets' integer type.
_ROWS = ", {t}[:], a3, {c}[:, :], {c}[::1], {c}, b1, i8, {c}, {c}, b1, i8"  # after x and t
_SUM = ", {t}[:], {out}[::1], {c}[::1], i8, b1, {c}, b1"  # after a
_SIGNATURES = {
    "xent_index": (xent_rows, {"probs": False}, "a3, {i}[:, :]" + _ROWS),
    "xent_probs": (xent_rows, {"probs": True}, "a3, a3" + _ROWS),
    "xent_denominator": (xent_sum, {"targets": True}, "{i}[:, :]" + _SUM.replace("{out}", "{c}")),
    "xent_total": (xent_sum, {"targets": False}, "{c}[:, :]" + _SUM.replace("{out}", "{t}")),
}


@functools.cache
def compiled(name: str, dtype: str, index_dtype: str, threads: int):
    generator, flags, args = _SIGNATURES[name]
    args = args.replace("a3", "{t}[:, :, :]").replace("b1", "boolean").replace("i8", "int64")
    fmt = format_of(dtype)
    pyfunc = storage_builder(dtype).rebind(generator(threads, np.dtype(fmt.compute).type, **flags))
    return compile_kernel(pyfunc, f"void({args.format(t=fmt.array, c=fmt.compute, i=index_dtype)})")


# --- views and the public function ------------------------------------------------------


def _layout(a: DArray, name: str, class_axis: int | None) -> tuple[tuple, tuple]:
    """Shape and strides of the (outer, [classes,] inner) view of ``a``: the axes after
    the class axis merged into one (ValueError if their strides do not allow it)."""
    shape, strides = list(a.shape), list(a.strides)
    classes = None if class_axis is None else (shape.pop(class_axis), strides.pop(class_axis))
    if not shape:
        outer, inner = (1, 0), (1, 0)
    else:
        outer = (shape[0], strides[0])
        rest, steps = collapse(tuple(shape[1:]), [tuple(strides[1:])])
        if len(rest) > 1:
            raise ValueError(f"{name}'s dimensions after the class dimension must be mergeable (contiguous)")
        inner = (rest[0], steps[0][0]) if rest else (1, 0)
    parts = (outer, inner) if classes is None else (outer, classes, inner)
    return tuple(p[0] for p in parts), tuple(p[1] for p in parts)


def _view(a: DArray, name: str, class_axis: int | None):
    return view(a, *_layout(a, name, class_axis))


def softmax_cross_entropy(
    logits,
    target,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    inplace: bool = False,
    stream=None,
):
    """(loss, grad): ``torch.nn.functional.cross_entropy(logits, target, ...)`` and its gradient.

    logits: (C,), (N, C) or (N, C, d1, ...), float32, float64, float16 or bfloat16 (16-bit
    logits are computed in float32: sums, row losses and the reduction, rounded once into
    the gradient and the loss, both of the logits' dtype); target: class indices
    (int32/int64) of the batch shape, or probabilities of the logits' shape and dtype;
    ``weight`` of the logits' dtype. ``loss`` is a 0-d array
    ("mean"/"sum") or of the batch shape ("none"), of the caller's library; ``grad``
    is d loss / d logits ("none": of the summed loss), written into the logits when
    ``inplace``. Runs on ``stream`` or the caller's library's current stream.
    """
    func = "softmax_cross_entropy"
    x = as_device(logits, "logits", func, write=inplace)
    if x.ndim == 0:
        raise ValueError("logits must have a class dimension, got a 0-d array")
    t = as_device(target, "target", func, kind="any")
    reduction = choice(reduction, "reduction", {"mean": "mean", "sum": "sum", "none": "none"})
    eps = real(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {eps}")
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}")
    if not isinstance(inplace, (bool, np.bool_)):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    class_axis = 0 if x.ndim == 1 else 1
    n_classes = x.shape[class_axis]
    batch = x.shape[:class_axis] + x.shape[class_axis + 1 :]
    probs = t.dtype.kind not in "iu"
    if probs:
        if t.dtype != x.dtype:
            raise TypeError(f"target has dtype {t.dtype}, expected {x.dtype} (probabilities like logits)")
        if t.shape != x.shape:
            raise ValueError(f"target has shape {t.shape}, expected {x.shape} (probabilities like logits)")
    elif t.shape != batch:
        raise ValueError(f"target has shape {t.shape}, expected {batch} (logits' shape without classes)")
    w = None
    if weight is not None:
        w = as_device(weight, "weight", func)
        if w.dtype != x.dtype:
            raise TypeError(f"weight has dtype {w.dtype}, expected {x.dtype} (the dtype of logits)")
        if w.shape != (n_classes,):
            raise ValueError(f"weight has shape {w.shape}, expected ({n_classes},)")
    check_stream(stream)
    _layout(x, "logits", class_axis)
    _layout(t, "target", class_axis if probs else None)
    s = resolve_stream(stream, x)

    dtype = x.dtype.name
    fmt = format_of(dtype)
    compute = np.dtype(fmt.compute)
    dt = compute.type
    grad = x if inplace else empty_like(x, s)
    rows = math.prod(batch)
    # the row losses: the returned array ("none") or a workspace, of the compute type (a
    # 16-bit "none" result is rounded from a float32 workspace once every row is done)
    loss = empty(batch, x.dtype, x, s) if reduction == "none" else None
    losses = loss if loss is not None and fmt.native else _numba_empty(batch, compute, "C", s)
    total = None if reduction == "none" else empty((), x.dtype, x, s)
    if x.size:
        if probs:
            t = unaliased(t, grad, s)
        xv = _view(x, "logits", class_axis)
        tv = _view(t, "target", class_axis if probs else None)
        gv = _view(grad, "grad", class_axis)
        lv = _view(losses, "loss", None)
        wa = w if w is not None else _numba_empty((1,), x.dtype, "C", s)  # unread without weights
        wv = view(wa, wa.shape, wa.strides)
        keep, smooth = dt(1.0 - eps), dt(eps / n_classes)
        tpb = settings.threads
        group = group_size(n_classes)
        grid = blocks(rows, tpb // group)
        use_den = reduction == "mean" and not probs
        scale = dt(1.0 / rows) if reduction == "mean" and probs else dt(1.0)
        den = view(_numba_empty((1,), compute, "C", s), (1,), (compute.itemsize,))
        weighted, ignore = w is not None, int(ignore_index)
        index = "int64" if probs else t.dtype.name
        if use_den:
            pre = compiled("xent_denominator", dtype, index, tpb)
            launch(pre, 1, tpb, s, (tv, wv, den, den, ignore, weighted, scale, False))
        kernel = compiled("xent_probs" if probs else "xent_index", dtype, index, tpb)
        args = (xv, tv, wv, gv, lv, den, scale, use_den, ignore, keep, smooth, weighted, group)
        launch(kernel, grid, tpb, s, args)
        if total is not None:
            finish = compiled("xent_total", dtype, "int64", tpb)
            tot = view(total, (1,), (x.dtype.itemsize,))
            launch(finish, 1, tpb, s, (lv, wv, tot, den, ignore, False, scale, use_den))
        elif losses is not loss:  # 16-bit "none": the float32 row losses rounded into the result
            for views in strided_views((losses, loss)):
                launch(narrow_kernel(dtype), blocks(math.prod(views[1].shape)), tpb, s, views)
    elif total is not None:  # no rows: sum is 0, mean is 0/0 (as torch)
        _fill(total, 0.0 if reduction == "sum" else math.nan, s)
    return (loss.obj if total is None else total.obj), grad.obj


def _fill(a: DArray, value: float, stream) -> None:
    """a[()] = value without a host round trip of the array."""
    bits = np.array([value], dtype=np.float64).astype(a.dtype).view(kernel_dtype(a.dtype))
    view(a, (1,), (a.dtype.itemsize,)).copy_to_device(bits, stream=stream)
