"""Device functions that reduce rows across threads: for the softmax and cross-entropy kernels.

Their arrays are 3-d views (outer, n, inner); a row is (o, :, k) and there are
outer * inner rows (:func:`row_at`). A row is reduced by one thread, by a group of
``group`` threads (a power of two, aligned in the block; :func:`group_rows` gives a
thread its rows) or by a whole block. A thread keeps a running (max m, sum of
e^(x - m)) of its part of a row (:func:`push`, one pass for both): a -inf entry adds
nothing and NaN poisons the sum. A group then combines its threads' values in shared
memory (:func:`block_maxsum`, :func:`block_sum`) and every thread of the group gets
the result. Plain Python with float literals, compiled per dtype by
:class:`fastact.cuda._compile.Builder`.
"""

from __future__ import annotations

import math

from numba import cuda

from ._compile import device


@device
def row_at(row, inner):
    """(o, k) of row ``row`` of an (outer, n, inner) view."""
    o = row // inner
    return o, row - o * inner


@device
def group_rows(rows, tpb, group):
    """This thread's lane in its group and the range (start, stop, step) of its rows.

    Each group of ``group`` threads takes a row, a block ``tpb // group`` consecutive
    rows, and the grid strides over them. The range lasts as long as the thread's block
    has rows, so that every thread takes part in the block's reductions: a row may be
    >= ``rows`` (none for this thread).
    """
    tid = cuda.threadIdx.x
    per_block = tpb // group
    offset = tid // group
    return tid % group, cuda.blockIdx.x * per_block + offset, rows + offset, cuda.gridDim.x * per_block


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
def block_maxsum(sm, ss, m, s, lane, group):
    """The (max, sum) of this thread's group, from each thread's (m, s), via shared sm and ss.

    Every thread of the block calls it (it synchronises the block); ``lane`` is the
    thread's index in its group. sm and ss may be written again as soon as it returns.
    """
    tid = cuda.threadIdx.x
    sm[tid] = m
    ss[tid] = s
    cuda.syncthreads()
    tree_maxsum(sm, ss, tid, lane, group)
    first = tid - lane
    m = sm[first]
    s = ss[first]
    cuda.syncthreads()
    return m, s


@device
def block_sum(sh, s, lane, group):
    """The sum of ``s`` over this thread's group, via shared ``sh`` (as :func:`block_maxsum`)."""
    tid = cuda.threadIdx.x
    sh[tid] = s
    cuda.syncthreads()
    tree_sum(sh, tid, lane, group)
    s = sh[tid - lane]
    cuda.syncthreads()
    return s
