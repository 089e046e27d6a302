"""CUDA kernels for softmax / log_softmax and their backwards along one axis.

Arrays come as 3-d views (outer, n, inner); a row is (o, :, k) and there are
outer * inner rows. Three schemes, all reading the input twice and writing once:

* ``rows``: a group of ``group`` threads (a power of two <= the block size) per row,
  several rows per block for short rows; the row's (max, sum) or sum is reduced in
  shared memory. For rows along the contiguous axis.
* ``split``: a long row split across ``chunks`` blocks when there are too few rows to
  fill the device: one kernel writes each chunk's partial (max, sum), a second merges
  the row's partials and writes its chunk.
* ``cols``: one thread per row, looping along the row; neighbouring threads read
  neighbouring rows, so this is for a reduced axis that is not the contiguous one.

The forward keeps a running (max m, sum of e^(x - m)) per thread (one pass for
both): a -inf entry adds nothing, NaN poisons the sum, and a row whose max is +inf is
made NaN, which gives PyTorch's results on rows with NaN, +inf or only -inf.
Kernels are written once with Python float literals; :class:`fastact.cuda._compile.Builder`
retypes them for float32 so float32 data is reduced in float32 (as PyTorch does).
"""

from __future__ import annotations

import math

from numba import cuda

from ._compile import device

# --- device helpers ---------------------------------------------------------------


@device
def push(m, s, x):
    """Add x to a running (max m, sum s of e^(v - m))."""
    if x > m:
        return x, s * math.exp(m - x) + 1.0
    if x != -math.inf:
        s += math.exp(x - m)
    return m, s


@device
def merge(m1, s1, m2, s2):
    """Merge two running (max, sum) pairs; an empty one is (-inf, 0)."""
    if m2 > m1:
        return m2, s1 * math.exp(m1 - m2) + s2
    if m1 > m2:
        return m1, s1 + s2 * math.exp(m2 - m1)
    return m1, s1 + s2


@device
def tree_maxsum(sm, ss, tid, lane, group):
    """Reduce the (max, sum) pairs of each group of ``group`` threads into its first slot."""
    width = group // 2
    while width > 0:
        if lane < width:
            m, s = merge(sm[tid], ss[tid], sm[tid + width], ss[tid + width])
            sm[tid] = m
            ss[tid] = s
        cuda.syncthreads()
        width //= 2


@device
def tree_sum(sh, tid, lane, group):
    """Reduce the sums of each group of ``group`` threads into its first slot."""
    width = group // 2
    while width > 0:
        if lane < width:
            sh[tid] += sh[tid + width]
        cuda.syncthreads()
        width //= 2


@device
def reduce_forward(x, o, k, start, stop, step):
    m = -math.inf
    s = 0.0
    for j in range(start, stop, step):
        m, s = push(m, s, x[o, j, k])
    return m, s


@device
def write_forward(x, out, o, k, start, stop, step, m, s, log):
    """out = e^(x - m) / s, or (x - m) - log(s); a row with max +inf is NaN."""
    if m == math.inf:
        s = math.nan
    if log:
        c = math.log(s)
        for j in range(start, stop, step):
            out[o, j, k] = (x[o, j, k] - m) - c
    else:
        for j in range(start, stop, step):
            out[o, j, k] = math.exp(x[o, j, k] - m) / s


@device
def reduce_backward(g, y, o, k, start, stop, step, log):
    """sum(g * y) (softmax) or sum(g) (log_softmax) over part of a row."""
    s = 0.0
    if log:
        for j in range(start, stop, step):
            s += g[o, j, k]
    else:
        for j in range(start, stop, step):
            s += g[o, j, k] * y[o, j, k]
    return s


@device
def write_backward(g, y, out, o, k, start, stop, step, s, log):
    """out = y * (g - s) (softmax) or g - e^y * s (log_softmax)."""
    if log:
        for j in range(start, stop, step):
            out[o, j, k] = g[o, j, k] - math.exp(y[o, j, k]) * s
    else:
        for j in range(start, stop, step):
            out[o, j, k] = y[o, j, k] * (g[o, j, k] - s)


# --- kernels (factories: the block size and dtype are compile-time constants) -------


def rows_forward(tpb, dt):
    def kernel(x, out, group, log):
        sm = cuda.shared.array(tpb, dt)
        ss = cuda.shared.array(tpb, dt)
        tid = cuda.threadIdx.x
        lane = tid % group
        first = tid - lane
        per_block = tpb // group
        n = x.shape[1]
        inner = x.shape[2]
        rows = x.shape[0] * inner
        for base in range(cuda.blockIdx.x * per_block, rows, cuda.gridDim.x * per_block):
            row = base + tid // group
            o = row // inner
            k = row - o * inner
            m = -math.inf
            s = 0.0
            if row < rows:
                m, s = reduce_forward(x, o, k, lane, n, group)
            sm[tid] = m
            ss[tid] = s
            cuda.syncthreads()
            tree_maxsum(sm, ss, tid, lane, group)
            m = sm[first]
            s = ss[first]
            cuda.syncthreads()
            if row < rows:
                write_forward(x, out, o, k, lane, n, group, m, s, log)

    return kernel


def rows_backward(tpb, dt):
    def kernel(g, y, out, group, log):
        sh = cuda.shared.array(tpb, dt)
        tid = cuda.threadIdx.x
        lane = tid % group
        first = tid - lane
        per_block = tpb // group
        n = g.shape[1]
        inner = g.shape[2]
        rows = g.shape[0] * inner
        for base in range(cuda.blockIdx.x * per_block, rows, cuda.gridDim.x * per_block):
            row = base + tid // group
            o = row // inner
            k = row - o * inner
            s = 0.0
            if row < rows:
                s = reduce_backward(g, y, o, k, lane, n, group, log)
            sh[tid] = s
            cuda.syncthreads()
            tree_sum(sh, tid, lane, group)
            s = sh[first]
            cuda.syncthreads()
            if row < rows:
                write_backward(g, y, out, o, k, lane, n, group, s, log)

    return kernel


def split_forward_partial(tpb, dt):
    def kernel(x, pm, ps, chunks):
        sm = cuda.shared.array(tpb, dt)
        ss = cuda.shared.array(tpb, dt)
        tid = cuda.threadIdx.x
        n = x.shape[1]
        inner = x.shape[2]
        span = (n + chunks - 1) // chunks
        for task in range(cuda.blockIdx.x, x.shape[0] * inner * chunks, cuda.gridDim.x):
            row = task // chunks
            c = task - row * chunks
            o = row // inner
            k = row - o * inner
            lo = c * span
            m, s = reduce_forward(x, o, k, lo + tid, min(n, lo + span), tpb)
            sm[tid] = m
            ss[tid] = s
            cuda.syncthreads()
            tree_maxsum(sm, ss, tid, tid, tpb)
            if tid == 0:
                pm[row, c] = sm[0]
                ps[row, c] = ss[0]
            cuda.syncthreads()

    return kernel


def split_forward_finish(tpb, dt):
    def kernel(x, out, pm, ps, chunks, log):
        sm = cuda.shared.array(tpb, dt)
        ss = cuda.shared.array(tpb, dt)
        tid = cuda.threadIdx.x
        n = x.shape[1]
        inner = x.shape[2]
        span = (n + chunks - 1) // chunks
        for task in range(cuda.blockIdx.x, x.shape[0] * inner * chunks, cuda.gridDim.x):
            row = task // chunks
            c = task - row * chunks
            o = row // inner
            k = row - o * inner
            m = -math.inf
            s = 0.0
            for t in range(tid, chunks, tpb):
                m, s = merge(m, s, pm[row, t], ps[row, t])
            sm[tid] = m
            ss[tid] = s
            cuda.syncthreads()
            tree_maxsum(sm, ss, tid, tid, tpb)
            m = sm[0]
            s = ss[0]
            cuda.syncthreads()
            lo = c * span
            write_forward(x, out, o, k, lo + tid, min(n, lo + span), tpb, m, s, log)

    return kernel


def split_backward_partial(tpb, dt):
    def kernel(g, y, ps, chunks, log):
        sh = cuda.shared.array(tpb, dt)
        tid = cuda.threadIdx.x
        n = g.shape[1]
        inner = g.shape[2]
        span = (n + chunks - 1) // chunks
        for task in range(cuda.blockIdx.x, g.shape[0] * inner * chunks, cuda.gridDim.x):
            row = task // chunks
            c = task - row * chunks
            o = row // inner
            k = row - o * inner
            lo = c * span
            sh[tid] = reduce_backward(g, y, o, k, lo + tid, min(n, lo + span), tpb, log)
            cuda.syncthreads()
            tree_sum(sh, tid, tid, tpb)
            if tid == 0:
                ps[row, c] = sh[0]
            cuda.syncthreads()

    return kernel


def split_backward_finish(tpb, dt):
    def kernel(g, y, out, ps, chunks, log):
        sh = cuda.shared.array(tpb, dt)
        tid = cuda.threadIdx.x
        n = g.shape[1]
        inner = g.shape[2]
        span = (n + chunks - 1) // chunks
        for task in range(cuda.blockIdx.x, g.shape[0] * inner * chunks, cuda.gridDim.x):
            row = task // chunks
            c = task - row * chunks
            o = row // inner
            k = row - o * inner
            s = 0.0
            for t in range(tid, chunks, tpb):
                s += ps[row, t]
            sh[tid] = s
            cuda.syncthreads()
            tree_sum(sh, tid, tid, tpb)
            s = sh[0]
            cuda.syncthreads()
            lo = c * span
            write_backward(g, y, out, o, k, lo + tid, min(n, lo + span), tpb, s, log)

    return kernel


def cols_forward(tpb, dt):
    def kernel(x, out, log):
        n = x.shape[1]
        inner = x.shape[2]
        for row in range(cuda.grid(1), x.shape[0] * inner, cuda.gridsize(1)):
            o = row // inner
            k = row - o * inner
            m, s = reduce_forward(x, o, k, 0, n, 1)
            write_forward(x, out, o, k, 0, n, 1, m, s, log)

    return kernel


def cols_backward(tpb, dt):
    def kernel(g, y, out, log):
        n = g.shape[1]
        inner = g.shape[2]
        for row in range(cuda.grid(1), g.shape[0] * inner, cuda.gridsize(1)):
            o = row // inner
            k = row - o * inner
            s = reduce_backward(g, y, o, k, 0, n, 1, log)
            write_backward(g, y, out, o, k, 0, n, 1, s, log)

    return kernel


# name -> (factory, argument kinds): "a" a 3-d array, "w" a 2-d C workspace,
# "i" an int64, "b" a boolean.
KERNELS = {
    "rows_forward": (rows_forward, "aaib"),
    "rows_backward": (rows_backward, "aaaib"),
    "split_forward_partial": (split_forward_partial, "awwi"),
    "split_forward_finish": (split_forward_finish, "aawwib"),
    "split_backward_partial": (split_backward_partial, "aawib"),
    "split_backward_finish": (split_backward_finish, "aaawib"),
    "cols_forward": (cols_forward, "aab"),
    "cols_backward": (cols_backward, "aaab"),
}
