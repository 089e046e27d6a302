"""CUDA kernels for softmax / log_softmax and their backwards along one axis.

Arrays come as 3-d views (outer, n, inner); a row is (o, :, k) and there are
outer * inner rows. Three schemes, all reading the input twice and writing once:

* ``rows``: a group of ``group`` threads (a power of two <= the block size) per row,
  several rows per block for short rows; the row's (max, sum) or sum is reduced in
  shared memory. For rows along the contiguous axis.
* ``split``: a long row split across ``chunks`` blocks when there are too few rows to
  fill the device: one kernel writes each chunk's partial (max, sum) or sum, a second
  merges the row's partials and writes its chunk.
* ``cols``: one thread per row, looping along the row; neighbouring threads read
  neighbouring rows, so this is for a reduced axis that is not the contiguous one.

Each scheme is one kernel generator for both directions, ``backward`` a compile-time
flag: a kernel takes ``(a, b, out, ...)``, the forward a = b = x, the backward a = grad,
b = y; log_softmax or softmax is the run-time flag ``log``. The forward keeps a running
(max m, sum of e^(x - m)) per thread (:mod:`fastact.cuda._reduce`); a row whose max is
+inf is made NaN, which gives PyTorch's results on rows with NaN, +inf or only -inf.
Kernels are written once with Python float literals; :class:`fastact.cuda._compile.Builder`
retypes them for float32 so float32 data is reduced in float32 (as PyTorch does). Every
element read goes through ``load`` and every element written through ``store``, which the
builder binds to the arrays' storage format: float16 and bfloat16 arrays are reduced in
float32 (``dt``, the shared memory and the split workspaces are float32) and each result
is rounded once.
"""

from __future__ import annotations

import math

from numba import cuda

from ._compile import device, load, store
from ._reduce import block_maxsum, block_sum, group_rows, merge, push, row_at

# --- one direction's device functions ---------------------------------------------------


@device
def reduce_forward(x, o, k, start, stop, step):
    m = -math.inf
    s = 0.0
    for j in range(start, stop, step):
        m, s = push(m, s, load(x[o, j, k]))
    return m, s


@device
def write_forward(x, out, o, k, start, stop, step, m, s, log):
    """out = e^(x - m) / s, or (x - m) - log(s); a row with max +inf is NaN."""
    if m == math.inf:
        s = math.nan
    if log:
        c = math.log(s)
        for j in range(start, stop, step):
            out[o, j, k] = store((load(x[o, j, k]) - m) - c)
    else:
        for j in range(start, stop, step):
            out[o, j, k] = store(math.exp(load(x[o, j, k]) - m) / s)


@device
def reduce_backward(g, y, o, k, start, stop, step, log):
    """sum(g * y) (softmax) or sum(g) (log_softmax) over part of a row."""
    s = 0.0
    if log:
        for j in range(start, stop, step):
            s += load(g[o, j, k])
    else:
        for j in range(start, stop, step):
            s += load(g[o, j, k]) * load(y[o, j, k])
    return s


@device
def write_backward(g, y, out, o, k, start, stop, step, s, log):
    """out = y * (g - s) (softmax) or g - e^y * s (log_softmax)."""
    if log:
        for j in range(start, stop, step):
            out[o, j, k] = store(load(g[o, j, k]) - math.exp(load(y[o, j, k])) * s)
    else:
        for j in range(start, stop, step):
            out[o, j, k] = store(load(y[o, j, k]) * (load(g[o, j, k]) - s))


# --- either direction: a row's state is (m, s); the backward's m is unused ----------------


@device
def reduce_part(a, b, o, k, start, stop, step, backward, log):
    """This thread's part of a row: (max, sum of e^(x - max)), or (-inf, the backward's sum)."""
    if backward:
        return -math.inf, reduce_backward(a, b, o, k, start, stop, step, log)
    return reduce_forward(a, o, k, start, stop, step)


@device
def reduce_group(sm, ss, m, s, lane, group, backward):
    """The group's state from its threads' parts (every thread of the block calls it)."""
    if backward:
        return m, block_sum(ss, s, lane, group)
    return block_maxsum(sm, ss, m, s, lane, group)


@device
def reduce_chunks(w, row, start, stop, step, backward):
    """The state of the chunks' partials w[:, row, start:stop:step] (w[0] sums, w[1] maxima)."""
    m = -math.inf
    s = 0.0
    if backward:
        for t in range(start, stop, step):
            s += w[0, row, t]
    else:
        for t in range(start, stop, step):
            m, s = merge(m, s, w[1, row, t], w[0, row, t])
    return m, s


@device
def write(a, b, out, o, k, start, stop, step, m, s, backward, log):
    if backward:
        write_backward(a, b, out, o, k, start, stop, step, s, log)
    else:
        write_forward(a, out, o, k, start, stop, step, m, s, log)


# --- kernel generators: the block size, dtype and direction are compile-time constants --


def rows(tpb, dt, backward):
    def kernel(a, b, out, group, log):
        sm = cuda.shared.array(tpb, dt)
        ss = cuda.shared.array(tpb, dt)
        outer, n, inner = a.shape
        n_rows = outer * inner
        lane, start, stop, step = group_rows(n_rows, tpb, group)
        for row in range(start, stop, step):
            o, k = row_at(row, inner)
            m = -math.inf
            s = 0.0
            if row < n_rows:
                m, s = reduce_part(a, b, o, k, lane, n, group, backward, log)
            m, s = reduce_group(sm, ss, m, s, lane, group, backward)
            if row < n_rows:
                write(a, b, out, o, k, lane, n, group, m, s, backward, log)

    return kernel


def split(tpb, dt, backward, finish):
    """The block of a row's chunk: reduce the chunk and write its partial, or (``finish``)
    merge the row's partials and write the chunk."""

    def kernel(a, b, out, w, chunks, log):
        sm = cuda.shared.array(tpb, dt)
        ss = cuda.shared.array(tpb, dt)
        tid = cuda.threadIdx.x
        outer, n, inner = a.shape
        span = (n + chunks - 1) // chunks
        for task in range(cuda.blockIdx.x, outer * inner * chunks, cuda.gridDim.x):
            row = task // chunks
            c = task - row * chunks
            o, k = row_at(row, inner)
            lo = c * span
            if finish:
                m, s = reduce_chunks(w, row, tid, chunks, tpb, backward)
            else:
                m, s = reduce_part(a, b, o, k, lo + tid, min(n, lo + span), tpb, backward, log)
            m, s = reduce_group(sm, ss, m, s, tid, tpb, backward)
            if finish:
                write(a, b, out, o, k, lo + tid, min(n, lo + span), tpb, m, s, backward, log)
            elif tid == 0:
                w[0, row, c] = s
                if not backward:
                    w[1, row, c] = m

    return kernel


def cols(tpb, dt, backward):
    def kernel(a, b, out, log):
        outer, n, inner = a.shape
        for row in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
            o, k = row_at(row, inner)
            m, s = reduce_part(a, b, o, k, 0, n, 1, backward, log)
            write(a, b, out, o, k, 0, n, 1, m, s, backward, log)

    return kernel


# name -> (generator, its compile-time flags, argument kinds): "a" a 3-d array, "w" a
# 3-d C workspace (the split partials: (2, rows, chunks) forward, (1, rows, chunks)
# backward), "i" an int64, "b" a boolean. The forward kernels take x as both a and b; the
# split partials take out unread.
KERNELS = {
    "rows_forward": (rows, {"backward": False}, "aaaib"),
    "rows_backward": (rows, {"backward": True}, "aaaib"),
    "split_forward_partial": (split, {"backward": False, "finish": False}, "aaawib"),
    "split_forward_finish": (split, {"backward": False, "finish": True}, "aaawib"),
    "split_backward_partial": (split, {"backward": True, "finish": False}, "aaawib"),
    "split_backward_finish": (split, {"backward": True, "finish": True}, "aaawib"),
    "cols_forward": (cols, {"backward": False}, "aaab"),
    "cols_backward": (cols, {"backward": True}, "aaab"),
}


# --- masked and scaled: softmax(c x) over the entries where w (a bool view) is True ------
# Separate kernels (the ones above are untouched): each takes w after b and c, the scale in
# the data's dtype, before log. Excluded entries are skipped by the reductions and written
# 0 (log: -inf); a row with none included reduces to (-inf, 0) and is written all 0 / -inf.


@device
def reduce_forward_m(x, w, o, k, start, stop, step, c):
    m = -math.inf
    s = 0.0
    for j in range(start, stop, step):
        if w[o, j, k]:
            m, s = push(m, s, load(x[o, j, k]) * c)
    return m, s


@device
def write_forward_m(x, w, out, o, k, start, stop, step, m, s, c, log):
    if m == math.inf:
        s = math.nan
    if log:
        lc = math.log(s)
        for j in range(start, stop, step):
            out[o, j, k] = store(((load(x[o, j, k]) * c - m) - lc) if w[o, j, k] else -math.inf)
    else:
        for j in range(start, stop, step):
            out[o, j, k] = store((math.exp(load(x[o, j, k]) * c - m) / s) if w[o, j, k] else 0.0)


@device
def reduce_backward_m(g, y, w, o, k, start, stop, step, log):
    s = 0.0
    for j in range(start, stop, step):
        if w[o, j, k]:
            s += load(g[o, j, k]) if log else load(g[o, j, k]) * load(y[o, j, k])
    return s


@device
def write_backward_m(g, y, w, out, o, k, start, stop, step, s, c, log):
    for j in range(start, stop, step):
        if not w[o, j, k]:
            out[o, j, k] = store(0.0)
        elif log:
            out[o, j, k] = store((load(g[o, j, k]) - math.exp(load(y[o, j, k])) * s) * c)
        else:
            out[o, j, k] = store(load(y[o, j, k]) * (load(g[o, j, k]) - s) * c)


@device
def reduce_part_m(a, b, w, o, k, start, stop, step, c, backward, log):
    if backward:
        return -math.inf, reduce_backward_m(a, b, w, o, k, start, stop, step, log)
    return reduce_forward_m(a, w, o, k, start, stop, step, c)


@device
def write_m(a, b, w, out, o, k, start, stop, step, m, s, c, backward, log):
    if backward:
        write_backward_m(a, b, w, out, o, k, start, stop, step, s, c, log)
    else:
        write_forward_m(a, w, out, o, k, start, stop, step, m, s, c, log)


def rows_masked(tpb, dt, backward):
    def kernel(a, b, w, out, group, c, log):
        sm = cuda.shared.array(tpb, dt)
        ss = cuda.shared.array(tpb, dt)
        outer, n, inner = a.shape
        n_rows = outer * inner
        lane, start, stop, step = group_rows(n_rows, tpb, group)
        for row in range(start, stop, step):
            o, k = row_at(row, inner)
            m = -math.inf
            s = 0.0
            if row < n_rows:
                m, s = reduce_part_m(a, b, w, o, k, lane, n, group, c, backward, log)
            m, s = reduce_group(sm, ss, m, s, lane, group, backward)
            if row < n_rows:
                write_m(a, b, w, out, o, k, lane, n, group, m, s, c, backward, log)

    return kernel


def split_masked(tpb, dt, backward, finish):
    def kernel(a, b, w, out, ws, chunks, c, log):
        sm = cuda.shared.array(tpb, dt)
        ss = cuda.shared.array(tpb, dt)
        tid = cuda.threadIdx.x
        outer, n, inner = a.shape
        span = (n + chunks - 1) // chunks
        for task in range(cuda.blockIdx.x, outer * inner * chunks, cuda.gridDim.x):
            row = task // chunks
            ch = task - row * chunks
            o, k = row_at(row, inner)
            lo = ch * span
            if finish:
                m, s = reduce_chunks(ws, row, tid, chunks, tpb, backward)
            else:
                m, s = reduce_part_m(a, b, w, o, k, lo + tid, min(n, lo + span), tpb, c, backward, log)
            m, s = reduce_group(sm, ss, m, s, tid, tpb, backward)
            if finish:
                write_m(a, b, w, out, o, k, lo + tid, min(n, lo + span), tpb, m, s, c, backward, log)
            elif tid == 0:
                ws[0, row, ch] = s
                if not backward:
                    ws[1, row, ch] = m

    return kernel


def cols_masked(tpb, dt, backward):
    def kernel(a, b, w, out, c, log):
        outer, n, inner = a.shape
        for row in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
            o, k = row_at(row, inner)
            m, s = reduce_part_m(a, b, w, o, k, 0, n, 1, c, backward, log)
            write_m(a, b, w, out, o, k, 0, n, 1, m, s, c, backward, log)

    return kernel


# "m": the 3-d bool mask view, "s": the scale, a scalar of the data's dtype
KERNELS.update(
    {
        "rows_forward_masked": (rows_masked, {"backward": False}, "aamaisb"),
        "rows_backward_masked": (rows_masked, {"backward": True}, "aamaisb"),
        "split_forward_partial_masked": (split_masked, {"backward": False, "finish": False}, "aamawisb"),
        "split_forward_finish_masked": (split_masked, {"backward": False, "finish": True}, "aamawisb"),
        "split_backward_partial_masked": (split_masked, {"backward": True, "finish": False}, "aamawisb"),
        "split_backward_finish_masked": (split_masked, {"backward": True, "finish": True}, "aamawisb"),
        "cols_forward_masked": (cols_masked, {"backward": False}, "aamasb"),
        "cols_backward_masked": (cols_masked, {"backward": True}, "aamasb"),
    }
)
