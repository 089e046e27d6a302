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

Each scheme is one kernel generator for both directions and for the masked and scaled
kernels, ``backward`` and ``masked`` compile-time flags: a kernel takes ``(a, b, out,
...)`` (masked: ``(a, b, w, out, ...)`` and the scale before ``log``), the forward a = b
= x, the backward a = grad, b = y; log_softmax or softmax is the run-time flag ``log``.
The forward keeps a running (max m, sum of e^(x - m)) per thread
(:mod:`fastact.cuda._reduce`); a row whose max is +inf is made NaN, which gives PyTorch's
results on rows with NaN, +inf or only -inf.
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
# Each takes the mask w (a bool view, or None: every entry) and the scale c (of the data's
# dtype, or None: none); numba prunes ``if w is None`` / ``if c is None`` on a None
# argument, so the plain kernels (w and c None) compile to the loops without them. Masked:
# softmax(c x) over the entries where w is True; excluded entries are skipped by the
# reductions and written 0 (log: -inf); a row with none included reduces to (-inf, 0) and
# is written all 0 / -inf.


@device
def included(w, o, j, k):
    """Whether entry j of row (o, k) counts: w[o, j, k], or True without a mask."""
    if w is None:
        return True
    return w[o, j, k]


@device
def scaled(x, c):
    """c x, or x without a scale."""
    if c is None:
        return x
    return x * c


@device
def reduce_forward(x, w, o, k, start, stop, step, c):
    m = -math.inf
    s = 0.0
    for j in range(start, stop, step):
        if included(w, o, j, k):
            m, s = push(m, s, scaled(load(x[o, j, k]), c))
    return m, s


@device
def write_forward(x, w, out, o, k, start, stop, step, m, s, c, log):
    """out = e^(c x - m) / s, or (c x - m) - log(s); a row with max +inf is NaN."""
    if m == math.inf:
        s = math.nan
    if log:
        lc = math.log(s)
        for j in range(start, stop, step):
            v = (scaled(load(x[o, j, k]), c) - m) - lc
            out[o, j, k] = store(v if included(w, o, j, k) else -math.inf)
    else:
        for j in range(start, stop, step):
            v = math.exp(scaled(load(x[o, j, k]), c) - m) / s
            out[o, j, k] = store(v if included(w, o, j, k) else 0.0)


@device
def reduce_backward(g, y, w, o, k, start, stop, step, log):
    """sum(g * y) (softmax) or sum(g) (log_softmax) over part of a row."""
    s = 0.0
    if log:
        for j in range(start, stop, step):
            if included(w, o, j, k):
                s += load(g[o, j, k])
    else:
        for j in range(start, stop, step):
            if included(w, o, j, k):
                s += load(g[o, j, k]) * load(y[o, j, k])
    return s


@device
def write_backward(g, y, w, out, o, k, start, stop, step, s, c, log):
    """out = c y (g - s) (softmax) or c (g - e^y s) (log_softmax)."""
    if log:
        for j in range(start, stop, step):
            v = scaled(load(g[o, j, k]) - math.exp(load(y[o, j, k])) * s, c)
            out[o, j, k] = store(v if included(w, o, j, k) else 0.0)
    else:
        for j in range(start, stop, step):
            v = scaled(load(y[o, j, k]) * (load(g[o, j, k]) - s), c)
            out[o, j, k] = store(v if included(w, o, j, k) else 0.0)


# --- either direction: a row's state is (m, s); the backward's m is unused ----------------


@device
def reduce_part(a, b, w, o, k, start, stop, step, c, backward, log):
    """This thread's part of a row: (max, sum of e^(x - max)), or (-inf, the backward's sum)."""
    if backward:
        return -math.inf, reduce_backward(a, b, w, o, k, start, stop, step, log)
    return reduce_forward(a, w, o, k, start, stop, step, c)


@device
def reduce_group(sm, ss, m, s, lane, group, backward):
    """The group's state from its threads' parts (every thread of the block calls it)."""
    if backward:
        return m, block_sum(ss, s, lane, group)
    return block_maxsum(sm, ss, m, s, lane, group)


@device
def reduce_chunks(ws, row, start, stop, step, backward):
    """The state of the chunks' partials ws[:, row, start:stop:step] (ws[0] sums, ws[1] maxima)."""
    m = -math.inf
    s = 0.0
    if backward:
        for t in range(start, stop, step):
            s += ws[0, row, t]
    else:
        for t in range(start, stop, step):
            m, s = merge(m, s, ws[1, row, t], ws[0, row, t])
    return m, s


@device
def write(a, b, w, out, o, k, start, stop, step, m, s, c, backward, log):
    if backward:
        write_backward(a, b, w, out, o, k, start, stop, step, s, c, log)
    else:
        write_forward(a, w, out, o, k, start, stop, step, m, s, c, log)


# --- the kernels' bodies: (a, b, w, out, ..., c), w and c None for the plain kernels ------


@device
def rows_body(sm, ss, a, b, w, out, group, c, backward, log):
    outer, n, inner = a.shape
    n_rows = outer * inner
    lane, start, stop, step = group_rows(n_rows, sm.shape[0], group)
    for row in range(start, stop, step):
        o, k = row_at(row, inner)
        m = -math.inf
        s = 0.0
        if row < n_rows:
            m, s = reduce_part(a, b, w, o, k, lane, n, group, c, backward, log)
        m, s = reduce_group(sm, ss, m, s, lane, group, backward)
        if row < n_rows:
            write(a, b, w, out, o, k, lane, n, group, m, s, c, backward, log)


@device
def split_body(sm, ss, a, b, w, out, ws, chunks, c, backward, finish, log):
    """The block of a row's chunk: reduce the chunk and write its partial into ws, or
    (``finish``) merge the row's partials and write the chunk."""
    tpb = sm.shape[0]
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
            m, s = reduce_part(a, b, w, o, k, lo + tid, min(n, lo + span), tpb, c, backward, log)
        m, s = reduce_group(sm, ss, m, s, tid, tpb, backward)
        if finish:
            write(a, b, w, out, o, k, lo + tid, min(n, lo + span), tpb, m, s, c, backward, log)
        elif tid == 0:
            ws[0, row, ch] = s
            if not backward:
                ws[1, row, ch] = m


@device
def cols_body(a, b, w, out, c, backward, log):
    outer, n, inner = a.shape
    for row in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o, k = row_at(row, inner)
        m, s = reduce_part(a, b, w, o, k, 0, n, 1, c, backward, log)
        write(a, b, w, out, o, k, 0, n, 1, m, s, c, backward, log)


# --- kernel generators: the block size, dtype, direction and masking are compile-time ----
# constants. A plain kernel takes (a, b, out, ...), a masked one (a, b, w, out, ...) and
# the scale c before log.


def rows(tpb, dt, backward, masked):
    if masked:

        def kernel(a, b, w, out, group, c, log):
            sm = cuda.shared.array(tpb, dt)
            ss = cuda.shared.array(tpb, dt)  # (one per line: the simulator keys them by line)
            rows_body(sm, ss, a, b, w, out, group, c, backward, log)

    else:

        def kernel(a, b, out, group, log):
            sm = cuda.shared.array(tpb, dt)
            ss = cuda.shared.array(tpb, dt)  # (one per line: the simulator keys them by line)
            rows_body(sm, ss, a, b, None, out, group, None, backward, log)

    return kernel


def split(tpb, dt, backward, finish, masked):
    if masked:

        def kernel(a, b, w, out, ws, chunks, c, log):
            sm = cuda.shared.array(tpb, dt)
            ss = cuda.shared.array(tpb, dt)  # (one per line: the simulator keys them by line)
            split_body(sm, ss, a, b, w, out, ws, chunks, c, backward, finish, log)

    else:

        def kernel(a, b, out, ws, chunks, log):
            sm = cuda.shared.array(tpb, dt)
            ss = cuda.shared.array(tpb, dt)  # (one per line: the simulator keys them by line)
            split_body(sm, ss, a, b, None, out, ws, chunks, None, backward, finish, log)

    return kernel


def cols(tpb, dt, backward, masked):
    if masked:

        def kernel(a, b, w, out, c, log):
            cols_body(a, b, w, out, c, backward, log)

    else:

        def kernel(a, b, out, log):
            cols_body(a, b, None, out, None, backward, log)

    return kernel


# name -> (generator, its compile-time flags, argument kinds): "a" a 3-d array, "w" a
# 3-d C workspace (the split partials: (2, rows, chunks) forward, (1, rows, chunks)
# backward), "i" an int64, "b" a boolean, "m" the 3-d bool mask view, "s" the scale (a
# scalar of the data's dtype). The forward kernels take x as both a and b; the split
# partials take out unread.
_KINDS = {"rows": "aaaib", "split": "aaawib", "cols": "aaab"}
_MASKED_KINDS = {"rows": "aamaisb", "split": "aamawisb", "cols": "aamasb"}


def _table() -> dict[str, tuple]:
    kernels = {}
    for masked in (False, True):
        kinds, tail = (_MASKED_KINDS, "_masked") if masked else (_KINDS, "")
        for direction in ("forward", "backward"):
            flags = {"backward": direction == "backward", "masked": masked}
            kernels[f"rows_{direction}{tail}"] = (rows, flags, kinds["rows"])
            kernels[f"cols_{direction}{tail}"] = (cols, flags, kinds["cols"])
            for stage in ("partial", "finish"):
                stage_flags = {**flags, "finish": stage == "finish"}
                kernels[f"split_{direction}_{stage}{tail}"] = (split, stage_flags, kinds["split"])
    return kernels


KERNELS = _table()
