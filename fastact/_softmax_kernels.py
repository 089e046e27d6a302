"""Compiled kernels for softmax, log_softmax and their backwards.

Every op reads ``a`` (and ``b``: the backwards' y) and writes ``out``. In place, ``a``
is None and ``out`` is read instead: numba optimises (and vectorises) each function
before inlining it into its caller, and a loop compiled to read ``a`` and write ``out``
carries a runtime overlap check that sends an in-place call (a is out) to its scalar
fallback. Every loop that writes ``out`` therefore reads ``_src(a, out)``, a value numba
resolves when it compiles the None-typed variant.

The wrappers in :mod:`fastact._softmax` turn any layout into views (never copies) of
one of three shapes:

* rows ``(R, L)``: reduce along the last axis, one row per thread. A row of at most
  ``whole`` elements is done in cache: max, then exp stored into ``out`` while summing,
  then a scale pass; the exp pass prefetches the next row (rows of 4 KiB and more), so
  the next max reads it from cache. A large out-of-place softmax keeps the exps in a
  row of scratch and writes ``out`` once, scaled, with non-temporal stores
  (``rows_stream``). Longer rows go chunk by chunk: per chunk a (max, sum) pair, the
  pairs combined with the online-normalizer rescaling ``S = sum_c s_c exp(m_c - M)``.
* split ``(R, L)``: few long rows. (row, chunk) pairs run in parallel, then the
  partial pairs are combined per row, then a parallel finishing pass.
* cols ``(O, L, I)``: reduce along the middle axis, vectorised along the inner one,
  in tiles ``[o, :, i0:i0 + tw]``: three streaming passes (max, exp + sum, scale) over
  L segments of tw contiguous elements, with tw-long (max, sum) vectors.

Reductions: a row's max is ``_row_max`` (vectorised by hand), tiles and chunk pairs use
``llvm.maxnum``; both ignore NaN, which reaches the sum through exp and makes the whole
row NaN, as in PyTorch. Sums run in small helpers compiled with
``FASTMATH | {"reassoc"}`` so that LLVM can vectorise them: that only reorders the
additions of one sum. exp is compiled on its own, without "reassoc" (numba keeps each
function's flags when LLVM inlines it), so its argument reduction stays exact. The
softmax exps are ``fastact._math._exp_nonpos`` (x - max <= 0), the backward's
``fastact._math.exp`` (vectorising, float32 kept in float32). Kernels never validate;
the wrappers do.

Modules, each importing only the ones before it: :mod:`fastact._row_intrinsics` (the
LLVM intrinsics and the prefetch helpers), :mod:`fastact._softmax_jit` (compiling,
caching and calling the kernels), this one (row helpers, ops, kernel builders) and
:mod:`fastact._xent_kernels` (softmax cross-entropy).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange, types
from numba.core.dispatcher import Dispatcher
from numba.extending import overload

from . import _row_intrinsics
from ._half import NATIVE, STORAGES, Storage
from ._kernels import FASTMATH, interleaved
from ._math import _exp_nonpos
from ._math import exp as _exp
from ._row_intrinsics import (
    PREFETCH_CHUNK,
    _count_true,
    _maxnum,
    _prefetch_row,
    _prefetch_step,
    _row_max,
    _row_max_masked,
    _store_fence,
    _stream_scaled,
    stored_max,
)
from ._softmax_jit import Kernel, PrunedPipeline, _flavoured, _Generic, pin_all

# FASTMATH | {"reassoc"} as a dict, not a set: a helper's fastmath option is pickled into
# the disk-cache key of each kernel that calls it, and a set of two strings pickles in an
# order that depends on the process's hash seed (every other process missed the cache).
REDUCE = dict.fromkeys(sorted(FASTMATH | {"reassoc"}), True)


# --- rows: helpers over a[r, lo:hi] ---------------------------------------------------
# Every op and helper takes w (the mask: a bool array, or None for every entry) and c (the
# scale: a float of the arrays' dtype, or None for none). numba prunes ``if w is None`` and
# ``if c is None`` for a None-typed argument before typing: the unmasked, unscaled kernels
# (w and c None) compile to the code of the loops written without mask or scale.
#
# The helpers that read or write elements come from a factory per storage format
# (fastact._half.Storage): each element read goes through the format's ``load`` and each
# one written through its ``store`` (both the identity for float32/float64, whose code is
# that of the loops written without them); 16-bit arrays are uint16 arrays of the bits,
# computed in float32 (``_like``).

_generated: list[Dispatcher] = []  # every function the factories made (_pin_all pins them)


@njit
def _src(a, out):
    """The array to read: ``a``, or ``out`` when a is None (in place)."""
    if a is None:
        return out
    return a


def _seg(a, o, r, lo, hi):
    """The segment to read: ``a[r, lo:hi]``, or ``o`` (the segment written) when a is None.

    Returning ``o`` itself, rather than slicing ``out`` a second time, is what lets LLVM
    see that the loop reads and writes the same memory.
    """


@overload(_seg)
def _seg_typed(a, o, r, lo, hi):
    # chosen by a's type: o may be of another dtype than a (a 16-bit row's float32 scratch)
    if isinstance(a, types.NoneType):
        return lambda a, o, r, lo, hi: o
    return lambda a, o, r, lo, hi: a[r, lo:hi]


def _like(a, v):
    """v as the type a's elements are computed in: a's dtype, float32 for 16-bit
    patterns (a uint16 array)."""


@overload(_like, inline="always")
def _like_typed(a, v):
    if isinstance(a, types.Array) and a.dtype == types.uint16:
        return lambda a, v: np.float32(v)
    return lambda a, v: a.dtype.type(v)


def _scale_of(out, c):
    """The scale c (a float) as out's compute type (``_like``), or None (c None: no scale)."""


@overload(_scale_of)
def _scale_of_typed(out, c):
    # chosen by c's type: a function with both returns would return an optional
    if isinstance(c, types.NoneType):
        return lambda out, c: None
    return lambda out, c: _like(out, c)


# Each helper slices its row segment first: a loop ``for j in range(lo, hi): a[r, j]``
# would keep numba's negative-index wraparound check (lo is not known to be >= 0), which
# costs 4-6x by blocking vectorisation; ``x = a[r, lo:hi]`` then ``x[j]``, j in
# range(len), does not.
#
# softmax(c x) over the entries where w is True: the product c x is rounded once, in a
# helper compiled without "contract" (LLVM would otherwise fuse it with the subtraction of
# the max into one FMA, whose argument at the max entry is a rounding error of either
# sign, and _exp_nonpos takes x <= 0 only). Excluded entries read -inf into the max and
# exp, so they store 0 (log: -inf is stored by a select); a row with no entry included
# sums 0 and its scale pass (rare: any factor that is not finite) writes 0 where w is
# False and what the factor gives elsewhere.


@njit(error_model="numpy")
def _mul(x, c):
    """x c rounded once (no fastmath: never fused into a later add); x when c is None."""
    if c is None:
        return x
    return x * c


@njit(fastmath=FASTMATH, error_model="numpy")
def _shift(a, m):
    """The max to subtract: m, or 0 where m is -inf (a part of only -inf or NaN), whose
    exps are then 0 (or NaN) rather than NaN: it adds nothing to a row with finite entries."""
    return m if m > -np.inf else _like(a, 0)


@njit(fastmath=FASTMATH, error_model="numpy")
def _scale(out, r, lo, hi, c):
    o = out[r, lo:hi]
    for j in range(o.shape[0]):
        o[j] *= c


@njit(fastmath=FASTMATH, error_model="numpy")
def _scale_m(w, out, r, lo, hi, q):
    """out[r, lo:hi] *= q; where q is not finite (a row of only -inf, NaN or nothing
    included), 0 where w is False."""
    if w is None or (q == q and q < np.inf):
        _scale(out, r, lo, hi, q)
    else:
        o = out[r, lo:hi]
        v = w[r, lo:hi]
        for j in range(o.shape[0]):
            o[j] = o[j] * q if v[j] else out.dtype.type(0)


@njit(fastmath=FASTMATH, error_model="numpy")
def _combine_lse(ms, ss):
    """(M, S) of a row from its parts' (m_c, s_c): M = max m_c, S = sum s_c e^(m_c - M).

    An all -inf row gives M = -inf and S = NaN (-inf - -inf), so a NaN row as in PyTorch.
    """
    big = -np.inf
    for c in range(ms.shape[0]):
        big = _maxnum(big, ms[c])
    total = 0.0
    for c in range(ms.shape[0]):
        total += ss[c] * math.exp(ms[c] - big)
    return big, total


@njit(fastmath=FASTMATH, error_model="numpy")
def _combine_sum(ps, qs):
    total = 0.0
    for c in range(ps.shape[0]):
        total += ps[c]
    return total, 0.0


@njit(fastmath=REDUCE, error_model="numpy", forceinline=True)
def _mask_count(w, r, lo, hi):
    """How many of w[r, lo:hi] are True."""
    return _count_true(w[r, lo:hi])


@njit(fastmath=FASTMATH, error_model="numpy", forceinline=True)
def _zero_row(out, r, lo, hi):
    o = out[r, lo:hi]
    for j in range(o.shape[0]):
        o[j] = 0


@njit(forceinline=True)
def _zero_none(out, r, lo, hi):
    return


class Rows(NamedTuple):
    """The row helpers of one storage format (see _row_helpers)."""

    max: Dispatcher
    sumexp: Dispatcher
    sumexp_store: Dispatcher
    log_store: Dispatcher
    sumexp_store_prefetching: Dispatcher
    sumexp_only_prefetching: Dispatcher
    store_scaled: Dispatcher  # 16-bit only: a row of float32 exps, scaled, into out
    exp_scaled: Dispatcher  # 16-bit only: a segment's exps recomputed, scaled, into out


def _row_helpers(storage: Storage) -> Rows:
    """The row helpers that read or write elements, for arrays stored as ``storage``.

    For 16-bit storage the exps summed by ``sumexp_store`` go into a float32 row (never
    rounded), and two helpers write out: ``store_scaled`` (that row times 1 / S) and
    ``exp_scaled`` (a chunk's exps computed again, times its factor), each value rounded
    once, as the float32 kernels' result is when narrowed."""
    load, store = storage.load, storage.store
    half = storage is not NATIVE
    suffix = f"_{storage.name}" if half else ""
    maxes = stored_max(storage) if half else (_row_max, _row_max_masked)

    def jit(fastmath=FASTMATH, **options):
        def decorate(func):
            func.__name__ = func.__qualname__ = func.__name__ + suffix  # its own identity (pin_uuid)
            dispatcher = njit(fastmath=fastmath, error_model="numpy", **options)(func)
            _generated.append(dispatcher)
            return dispatcher

        return decorate

    if maxes is None:  # float16 without F16C: the conversion is not plain IR, a loop

        @jit(fastmath=REDUCE)
        def _row_max_loop(x):
            m = np.float32(-np.inf)
            for j in range(x.shape[0]):
                m = _maxnum(m, load(x[j]))
            return m

        @jit(fastmath=REDUCE)
        def _row_max_masked_loop(x, w, c):
            m = np.float32(-np.inf)
            for j in range(x.shape[0]):
                m = _maxnum(m, _mul(load(x[j]), c) if w[j] else np.float32(-np.inf))
            return m

        maxes = _row_max_loop, _row_max_masked_loop
    row_max, row_max_masked = maxes

    @jit(fastmath=REDUCE)
    def _max(a, w, r, lo, hi, c):
        """max_j (c a[r, j] where w[r, j], else -inf) over [lo, hi); NaN ignored."""
        x = a[r, lo:hi]
        if w is not None:
            return row_max_masked(x, w[r, lo:hi], c)  # vectorised by hand, as _row_max
        if c is None:
            return row_max(x)
        if c > 0:  # rounding is monotonic: max_j fl(c x_j) = fl(c max_j x_j)
            return _mul(row_max(x), c)
        m = _like(a, -np.inf)
        for j in range(x.shape[0]):
            m = _maxnum(m, _mul(load(x[j]), c))
        return m

    # The sum-exp helpers: sum_j e_j, e_j = exp(c a[r, j] - m), 0 where w[r, j] is False,
    # over [lo, hi). forceinline: the row loops call them once per PREFETCH_CHUNK. A loop
    # that writes out reads _seg(a, o, ...) in the function that slices o (see _seg): its
    # vectorised form is then not sent to the scalar fallback by an overlap check when a is
    # None.
    @jit(fastmath=REDUCE, forceinline=True)
    def _sumexp(a, w, r, lo, hi, m, c):
        x = a[r, lo:hi]
        s = _like(a, 0)
        if w is None:
            for j in range(x.shape[0]):
                s += _exp_nonpos(_mul(load(x[j]), c) - m)
        else:
            v = w[r, lo:hi]
            for j in range(x.shape[0]):
                t = _mul(load(x[j]), c) - m
                s += _exp_nonpos(t if v[j] else _like(a, -np.inf))
        return s

    @jit(fastmath=REDUCE, forceinline=True)
    def _sumexp_store(a, w, out, ro, r, lo, hi, m, c):
        """_sumexp, each e_j stored into out[ro, j]: ro = r, or 0 for a (1, L) scratch row
        (a is then never out; for 16-bit a, out is that float32 row)."""
        o = out[ro, lo:hi]
        x = _seg(a, o, r, lo, hi)
        s = out.dtype.type(0)
        if w is None:
            for j in range(o.shape[0]):
                e = _exp_nonpos(_mul(load(x[j]), c) - m)
                o[j] = e
                s += e
        else:
            v = w[r, lo:hi]
            for j in range(o.shape[0]):
                t = _mul(load(x[j]), c) - m
                e = _exp_nonpos(t if v[j] else out.dtype.type(-np.inf))
                o[j] = e
                s += e
        return s

    @jit(fastmath=REDUCE, forceinline=True)
    def _sumexp_only(a, w, out, ro, r, lo, hi, m, c):
        """_sumexp of the array read (a, or out in place), in _sumexp_store's signature."""
        return _sumexp(_src(a, out), w, r, lo, hi, m, c)

    @jit()
    def _log_store(a, w, out, r, lo, hi, m, ls, c):
        """out = (c x - m) - ls, -inf where w is False."""
        o = out[r, lo:hi]
        x = _seg(a, o, r, lo, hi)
        if w is None:
            for j in range(o.shape[0]):
                o[j] = store((_mul(load(x[j]), c) - m) - ls)
        else:
            v = w[r, lo:hi]
            for j in range(o.shape[0]):
                t = (_mul(load(x[j]), c) - m) - ls
                o[j] = store(t if v[j] else _like(out, -np.inf))

    def _prefetching(sumexp, zero):
        """njit sum over row r of ``sumexp(a, w, out, ro, r, lo, hi, m, c)``, PREFETCH_CHUNK
        elements at a time while row r + 1 of ``src`` (the array read) is prefetched (see
        _prefetch_step), and of the mask w too (the mask of one head, re-read for each
        head, is evicted by the rows streaming through the cache in between). With a mask,
        the row goes in PREFETCH_CHUNK segments: one with no entry included only stores 0
        (``zero`` clears what sumexp would have written), one with every entry included
        runs the loop without the mask; only the others (a causal mask's diagonal) select.
        A causal mask so computes half the exps of an unmasked row. A 16-bit row goes in
        the segments of a float32 row (its sums are the float32 kernels')."""

        def run(a, w, out, ro, src, r, n, m, c):
            if half:  # the float32 row's step: 4-byte elements
                step = _prefetch_step(n, 4, 2 * src.strides[1])
            else:
                step = _prefetch_step(n, src.itemsize, src.strides[1])
            chunk = step if w is None else PREFETCH_CHUNK
            s = _like(src, 0)
            lo = 0
            while lo < n:
                hi = lo + chunk if lo + chunk < n else n
                _prefetch_row(src, r + 1, lo, hi, step)
                if w is None:
                    s += sumexp(a, w, out, ro, r, lo, hi, m, c)
                else:
                    _prefetch_row(w, r + 1, lo, hi, step)  # (a broadcast mask: lines already in cache)
                    k = _mask_count(w, r, lo, hi)
                    if k == 0:
                        zero(out, ro, lo, hi)
                    elif k == hi - lo:
                        s += sumexp(a, None, out, ro, r, lo, hi, m, c)
                    else:
                        s += sumexp(a, w, out, ro, r, lo, hi, m, c)
                lo = hi
            return s

        run.__name__ = run.__qualname__ = f"{sumexp.py_func.__name__.removesuffix(suffix)}_prefetching"
        return jit(forceinline=True)(run)

    @jit()
    def _store_scaled(w, out, r, tmp, q):
        """out[r] = tmp q (tmp: a (1, L) float32 row); where q is not finite, 0 where w is
        False (as _scale_m)."""
        o = out[r, 0 : out.shape[1]]
        t = tmp[0]
        if w is None or (q == q and q < np.inf):
            for j in range(o.shape[0]):
                o[j] = store(t[j] * q)
        else:
            v = w[r, 0 : out.shape[1]]
            for j in range(o.shape[0]):
                o[j] = store(t[j] * q if v[j] else np.float32(0))

    @jit()
    def _exp_scaled(a, w, out, r, lo, hi, m, q, c):
        """out[r, lo:hi] = e_j q, e_j = exp(c x_j - m) as _sumexp_store computes it (0
        where w is False); where q is not finite, 0 where w is False (as _scale_m)."""
        o = out[r, lo:hi]
        x = _seg(a, o, r, lo, hi)
        if w is None:
            for j in range(o.shape[0]):
                o[j] = store(_exp_nonpos(_mul(load(x[j]), c) - m) * q)
        else:
            v = w[r, lo:hi]
            full = q == q and q < np.inf
            for j in range(o.shape[0]):
                t = _mul(load(x[j]), c) - m
                e = _exp_nonpos(t if v[j] else np.float32(-np.inf)) * q
                o[j] = store(e if full or v[j] else np.float32(0))

    return Rows(
        _max,
        _sumexp,
        _sumexp_store,
        _log_store,
        _prefetching(_sumexp_store, _zero_row),
        _prefetching(_sumexp_only, _zero_none),
        _store_scaled,
        _exp_scaled,
    )


_NATIVE_ROWS = _row_helpers(NATIVE)
_max, _sumexp, _sumexp_store, _log_store = _NATIVE_ROWS[:4]
_sumexp_store_prefetching, _sumexp_only_prefetching = _NATIVE_ROWS[4:6]
_ROW_HELPERS = {NATIVE: _NATIVE_ROWS}


def row_helpers(storage: Storage) -> Rows:
    """The row helpers of ``storage``, made on first use."""
    rows = _ROW_HELPERS.get(storage)
    if rows is None:
        rows = _ROW_HELPERS[storage] = _row_helpers(storage)
    return rows


# --- ops ------------------------------------------------------------------------------
# Each op is six functions (seven with the streaming row), each taking the mask w after b
# and the scale c last (both None: the plain op). lead(a, b, w, out, r, L, c) is row r's
# reduction (max, dot or sum); whole(a, b, w, out, r, L, carry, nxt, c) does row r in one
# go given its reduction and returns row nxt's (nxt < 0: none), computed in the same pass,
# AHEAD elements at a time, so the next row streams in from memory under this row's
# arithmetic instead of in a pass of its own. The forward ops carry nothing (lead returns
# 0) and reduce each row in a pass of its own: measured faster (in cache, 128-element
# rows: 2.6 against 4.2 cycles per element). part / combine / finish do a long row in
# chunks (part -> (p_c, q_c) per chunk, combine -> (P, Q) per row, finish writes a
# chunk); tile(a, b, w, out, o, i0, i1, m, s, c) does a[o, :, i0:i1] of a cols view.
#
# softmax and log_softmax (and their backwards) differ in a few lines: one factory makes
# both, its ``log`` a closure constant. numba prunes an ``if log:`` branch on a constant
# before typing, and PrunedPipeline fuses the blocks left: each op compiles to the machine
# code of the function written with its branches alone.
#
# The factories take a storage format too (its row helpers, and ``half`` a closure
# constant pruned in the same way): the 16-bit ops read and write uint16 patterns and
# compute what the float32 op computes on the widened values, each result rounded once.
# Only 16-bit softmax differs in its passes: it cannot keep unscaled exps in out (they
# would be rounded twice), so whole keeps them in a float32 row of scratch (``scratch``
# makes one per row block; whole's ``tmp``) and part sums them only, finish computing
# each chunk's exps again. The rows and split kernels run them; no tile, no stream.
AHEAD = 512


class Op(NamedTuple):
    """The functions of one op, in the order Kernels takes them."""

    lead: Dispatcher
    whole: Dispatcher
    part: Dispatcher
    combine: Dispatcher
    finish: Dispatcher
    tile: Dispatcher | None
    stream: Dispatcher | None = None
    scratch: Dispatcher | None = None  # scratch(out, n): whole's tmp, made per row block


@njit
def _no_scratch(out, n):
    return None


@njit
def _scratch_row(out, n):
    return np.empty((1, n), np.float32)


def _named(prefix: str, fastmath=FASTMATH):
    """njit a factory's function as ``{prefix}_{name}``: its own identity (pin_uuid) and
    the name that numba's messages and profiles show."""

    def decorate(func):
        func.__name__ = func.__qualname__ = f"{prefix}_{func.__name__}"
        dispatcher = njit(fastmath=fastmath, error_model="numpy", pipeline_class=PrunedPipeline)(func)
        _generated.append(dispatcher)
        return dispatcher

    return decorate


@njit(fastmath=FASTMATH, error_model="numpy")
def _forward_lead(a, b, w, out, r, n, c):
    return 0  # the forward ops reduce each row in a pass of its own: no carry


@njit(fastmath=FASTMATH, error_model="numpy", forceinline=True)
def _softmax_stream(a, b, w, out, r, n, tmp, c):
    """Row r of a large out-of-place softmax: the exps in ``tmp`` (a (1, L) scratch row, in cache), then
    scaled into ``out`` with non-temporal stores; a row whose 1 / S is not finite with
    ordinary stores (see _scale_m). forceinline: LLVM does not inline it by itself, and a
    call per row increfs and decrefs the shared arrays (atomics on one cache line from
    every thread: 4x slower on 128-element rows)."""
    cc = _scale_of(out, c)
    m = _shift(out, _max(a, w, r, 0, n, cc))
    s = _sumexp_store_prefetching(a, w, tmp, 0, a, r, n, m, cc)
    q = out.dtype.type(1) / s
    if w is None or (q == q and q < np.inf):
        _stream_scaled(out[r], tmp[0], q)
    else:
        _copy_scaled_m(w, out, r, tmp[0], q)


@njit(fastmath=FASTMATH, error_model="numpy")
def _copy_scaled_m(w, out, r, tmp, q):
    """out[r] = tmp q where w[r], else 0 (a row whose 1 / S is not finite)."""
    o = out[r]
    v = w[r]
    for j in range(o.shape[0]):
        o[j] = tmp[j] * q if v[j] else out.dtype.type(0)


@njit
def _tseg(a, seg, o, k, i0, i1):
    """As _seg, for the tile segment a[o, k, i0:i1]."""
    if a is None:
        return seg
    return a[o, k, i0:i1]


# Tiles: m (dtype) and s (float64) are scratch vectors of at least i1 - i0 elements; each
# pass walks the L segments a[o, k, i0:i1] (sliced, see the row helpers).


@njit(fastmath=FASTMATH, error_model="numpy")
def _tile_max(a, w, o, i0, i1, m, c):
    wd = i1 - i0
    for i in range(wd):
        m[i] = -np.inf
    for k in range(a.shape[1]):
        x = a[o, k, i0:i1]
        if w is None:
            for i in range(wd):
                m[i] = _maxnum(m[i], _mul(x[i], c))
        else:
            v = w[o, k, i0:i1]
            for i in range(wd):
                t = _mul(x[i], c)
                m[i] = _maxnum(m[i], t if v[i] else a.dtype.type(-np.inf))
    for i in range(wd):
        m[i] = _shift(a, m[i])


def _forward(log: bool, storage: Storage = NATIVE) -> Op:
    """softmax(c x) (log False) or log_softmax(c x) over the entries where w is True.
    softmax stores the exps while summing them and scales them by 1 / S; log_softmax
    sums them only and writes (c x - M) - log S."""
    half = storage is not NATIVE
    named = _named(("_log_softmax" if log else "_softmax") + (f"_{storage.name}" if half else ""))
    rmax, sumexp, sumexp_store, log_store, store_prefetching, only_prefetching, store_scaled, exp_scaled = (
        row_helpers(storage)
    )

    @named
    def whole(a, b, w, out, r, n, carry, nxt, c, tmp):
        src = _src(a, out)
        cc = _scale_of(out, c)
        m = _shift(out, rmax(src, w, r, 0, n, cc))
        if log:
            s = only_prefetching(a, w, out, r, src, r, n, m, cc)
            log_store(a, w, out, r, 0, n, m, _like(out, math.log(s)), cc)
        elif half:  # the exps in tmp, out = tmp / S
            s = store_prefetching(src, w, tmp, 0, src, r, n, m, cc)
            store_scaled(w, out, r, tmp, np.float32(1) / s)
        else:
            s = store_prefetching(a, w, out, r, src, r, n, m, cc)
            _scale_m(w, out, r, 0, n, out.dtype.type(1) / s)
        return 0

    @named
    def part(a, b, w, out, r, lo, hi, c):
        x = _src(a, out)
        cc = _scale_of(out, c)
        m = rmax(x, w, r, lo, hi, cc)
        if log or half:
            s = sumexp(x, w, r, lo, hi, _shift(out, m), cc)
        else:
            s = sumexp_store(a, w, out, r, r, lo, hi, _shift(out, m), cc)
        return np.float64(m), np.float64(s)

    @named
    def combine(ms, ss):
        big, total = _combine_lse(ms, ss)
        if log:
            return big, math.log(total)
        return big, 1.0 / total

    @named
    def finish(a, b, w, out, r, lo, hi, m, s, big, q, c):  # q: log S, or 1 / S
        if log:
            log_store(a, w, out, r, lo, hi, _like(out, big), _like(out, q), _scale_of(out, c))
        elif half:  # the chunk's exps again (as part summed them), times the factor
            f = np.float32(math.exp(m - big) * q)
            exp_scaled(a, w, out, r, lo, hi, _shift(out, np.float32(m)), f, _scale_of(out, c))
        else:
            # A chunk of only -inf stored exp(-inf - 0) = 0; its factor e^(-inf - M) is 0 too.
            _scale_m(w, out, r, lo, hi, out.dtype.type(math.exp(m - big) * q))

    @named
    def tile(a, b, w, out, o, i0, i1, m, s, c):
        src = _src(a, out)
        cc = _scale_of(out, c)
        wd = i1 - i0
        n = out.shape[1]
        _tile_max(src, w, o, i0, i1, m, cc)
        s[:wd] = 0.0
        for k in range(n):
            y = out[o, k, i0:i1]
            x = _tseg(a, y, o, k, i0, i1)
            if w is None:
                for i in range(wd):
                    e = _exp_nonpos(_mul(x[i], cc) - m[i])
                    if not log:  # store them too
                        y[i] = e
                    s[i] += e
            else:
                v = w[o, k, i0:i1]
                for i in range(wd):
                    t = _mul(x[i], cc) - m[i]
                    e = _exp_nonpos(t if v[i] else out.dtype.type(-np.inf))
                    if not log:
                        y[i] = e
                    s[i] += e
        for i in range(wd):
            if log:
                s[i] = math.log(s[i])
            elif c is None:
                m[i] = 1.0 / s[i]
            else:  # kept in s, rounded where used (as the masked kernels always did: NaN signs)
                s[i] = 1.0 / s[i]
        for k in range(n):
            y = out[o, k, i0:i1]
            if log:
                x = _tseg(a, y, o, k, i0, i1)
                if w is None:
                    for i in range(wd):
                        y[i] = (_mul(x[i], cc) - m[i]) - out.dtype.type(s[i])
                else:
                    v = w[o, k, i0:i1]
                    for i in range(wd):
                        t = (_mul(x[i], cc) - m[i]) - out.dtype.type(s[i])
                        y[i] = t if v[i] else out.dtype.type(-np.inf)
            elif c is None:
                for i in range(wd):
                    y[i] *= m[i]
            elif w is None:
                for i in range(wd):
                    y[i] *= out.dtype.type(s[i])
            else:
                # 0 where excluded: the rows whose 1 / S is not finite need it
                v = w[o, k, i0:i1]
                for i in range(wd):
                    t = y[i] * out.dtype.type(s[i])
                    y[i] = t if v[i] else out.dtype.type(0)

    if half:  # rows only; softmax's whole keeps its exps in a float32 row
        scratch = _no_scratch if log else _scratch_row
        return Op(_forward_lead, whole, part, combine, finish, None, None, scratch)
    stream = None if log else _softmax_stream
    return Op(_forward_lead, whole, part, combine, finish, tile, stream, _no_scratch)


def _backward(log: bool, storage: Storage = NATIVE) -> Op:
    """c y (g - D), D = sum g y (softmax_backward, log False), or c (g - e^y D), D = sum g
    (log_softmax_backward, log True), over the entries where w is True; 0 elsewhere (g
    and y there are not used). D is what lead, whole and part reduce."""
    half = storage is not NATIVE
    prefix = ("_log_softmax_backward" if log else "_softmax_backward") + (f"_{storage.name}" if half else "")
    named = _named(prefix)
    load, store = storage.load, storage.store

    @_named(prefix, REDUCE)  # it sums: reassociated, to vectorise
    def reduce(g, y, w, r, lo, hi):
        x = g[r, lo:hi]
        p = y[r, lo:hi]
        s = _like(g, 0)
        if w is None:
            for j in range(x.shape[0]):
                s += load(x[j]) if log else load(x[j]) * load(p[j])
        else:
            v = w[r, lo:hi]
            for j in range(x.shape[0]):
                t = load(x[j]) if log else load(x[j]) * load(p[j])
                s += t if v[j] else _like(g, 0)
        return s

    @named
    def grad(g, y, w, out, r, lo, hi, d, c):
        o = out[r, lo:hi]
        x = _seg(g, o, r, lo, hi)
        p = y[r, lo:hi]
        if w is None:
            for j in range(o.shape[0]):
                t = _mul(load(x[j]) - _exp(load(p[j])) * d if log else load(p[j]) * (load(x[j]) - d), c)
                o[j] = store(t)
        else:
            v = w[r, lo:hi]
            for j in range(o.shape[0]):
                t = _mul(load(x[j]) - _exp(load(p[j])) * d if log else load(p[j]) * (load(x[j]) - d), c)
                o[j] = store(t if v[j] else _like(out, 0))

    @named
    def lead(g, y, w, out, r, n, c):
        return reduce(_src(g, out), y, w, r, 0, n)

    @named
    def whole(g, y, w, out, r, n, d, nxt, c, tmp):
        src = _src(g, out)
        cc = _scale_of(out, c)
        dn = _like(out, 0)
        for lo in range(0, n, AHEAD):
            hi = min(lo + AHEAD, n)
            if nxt >= 0:
                dn += reduce(src, y, w, nxt, lo, hi)
            grad(g, y, w, out, r, lo, hi, d, cc)
        return dn

    @named
    def part(g, y, w, out, r, lo, hi, c):
        return np.float64(reduce(_src(g, out), y, w, r, lo, hi)), 0.0

    @named
    def finish(g, y, w, out, r, lo, hi, p, q, total, _, c):
        grad(g, y, w, out, r, lo, hi, _like(out, total), _scale_of(out, c))

    @named
    def tile(g, y, w, out, o, i0, i1, m, s, c):
        src = _src(g, out)
        cc = _scale_of(out, c)
        n = out.shape[1]
        wd = i1 - i0
        s[:wd] = 0.0
        for k in range(n):
            x = src[o, k, i0:i1]
            p = y[o, k, i0:i1]
            if w is None:
                for i in range(wd):
                    s[i] += x[i] if log else x[i] * p[i]
            else:
                v = w[o, k, i0:i1]
                for i in range(wd):
                    t = x[i] if log else x[i] * p[i]
                    s[i] += t if v[i] else out.dtype.type(0)
        for i in range(wd):
            m[i] = s[i]
        for k in range(n):
            z = out[o, k, i0:i1]
            x = _tseg(g, z, o, k, i0, i1)
            p = y[o, k, i0:i1]
            if w is None:
                for i in range(wd):
                    z[i] = _mul(x[i] - _exp(p[i]) * m[i] if log else p[i] * (x[i] - m[i]), cc)
            else:
                v = w[o, k, i0:i1]
                for i in range(wd):
                    t = _mul(x[i] - _exp(p[i]) * m[i] if log else p[i] * (x[i] - m[i]), cc)
                    z[i] = t if v[i] else out.dtype.type(0)

    return Op(lead, whole, part, _combine_sum, finish, None if half else tile, None, _no_scratch)


_FACTORIES = {
    "softmax": (_forward, False),
    "log_softmax": (_forward, True),
    "softmax_backward": (_backward, False),
    "log_softmax_backward": (_backward, True),
}
_OPS = {name: factory(log) for name, (factory, log) in _FACTORIES.items()}
_STORED_OPS: dict[tuple[str, Storage], Op] = {}  # the 16-bit ones, made on first use


def _op(name: str, storage: Storage) -> Op:
    """The op ``name`` (a key of _OPS) for arrays stored as ``storage``."""
    if storage is NATIVE:
        return _OPS[name]
    op = _STORED_OPS.get((name, storage))
    if op is None:
        factory, log = _FACTORIES[name]
        op = _STORED_OPS[name, storage] = factory(log, storage)
    return op


# --- kernels ----------------------------------------------------------------------------
# Every kernel takes (a, b, w, out, c, ...): w the mask (or None), c the scale (a float,
# or None: the plain op, whose code then has neither).


# Row blocks of the rows kernels: enough for any thread count to share out evenly (the
# first row of each block is not reduced ahead); one block when serial.
ROW_BLOCKS = 64


def _rows(lead, whole, part, combine, finish, scratch, parallel, suffix=""):
    max_blocks = ROW_BLOCKS if parallel else 1

    @_flavoured(parallel, suffix)
    def kernel(a, b, w, out, c, chunk, whole_max):
        n_rows, n = out.shape
        if n <= whole_max and n_rows > 0:
            # Blocks of consecutive rows, a few per thread; in a block each row's pass
            # also reduces the next row (lead/whole carry that reduction along).
            n_blocks = min(n_rows, max_blocks)
            for blk in prange(n_blocks):
                r0 = blk * n_rows // n_blocks
                r1 = (blk + 1) * n_rows // n_blocks
                tmp = scratch(out, n)
                carry = lead(a, b, w, out, r0, n, c)
                for r in range(r0, r1):
                    carry = whole(a, b, w, out, r, n, carry, r + 1 if r + 1 < r1 else -1, c, tmp)
            return
        n_chunks = (n + chunk - 1) // chunk
        for r in prange(n_rows):
            ps = np.empty(n_chunks)
            qs = np.empty(n_chunks)
            for k in range(n_chunks):
                lo = k * chunk
                ps[k], qs[k] = part(a, b, w, out, r, lo, min(lo + chunk, n), c)
            p, q = combine(ps, qs)
            for k in range(n_chunks):
                lo = k * chunk
                finish(a, b, w, out, r, lo, min(lo + chunk, n), ps[k], qs[k], p, q, c)

    return kernel


def _rows_stream(stream):
    """Rows done whole by ``stream(a, b, w, out, r, n, tmp, c)`` with a row of scratch
    per block (out of place, C-contiguous, rows that fit in cache; the wrapper checks)."""

    @_flavoured(True)
    def kernel(a, b, w, out, c, chunk, whole_max):
        n_rows, n = out.shape
        n_blocks = min(n_rows, ROW_BLOCKS)
        for blk in prange(n_blocks):
            tmp = np.empty((1, n), out.dtype)
            for r in range(blk * n_rows // n_blocks, (blk + 1) * n_rows // n_blocks):
                stream(a, b, w, out, r, n, tmp, c)
            _store_fence()

    return kernel


def _split(part, combine, finish, suffix=""):
    def kernel(a, b, w, out, c, chunk, whole_max):  # whole_max: unused, the rows kernels' signature
        n_rows, n = out.shape
        n_chunks = (n + chunk - 1) // chunk
        ps = np.empty((n_rows, n_chunks))
        qs = np.empty((n_rows, n_chunks))
        for t in prange(n_rows * n_chunks):
            r = t // n_chunks
            k = t - r * n_chunks
            lo = k * chunk
            ps[r, k], qs[r, k] = part(a, b, w, out, r, lo, min(lo + chunk, n), c)
        big = np.empty(n_rows)
        small = np.empty(n_rows)
        for r in range(n_rows):
            big[r], small[r] = combine(ps[r], qs[r])
        for t in prange(n_rows * n_chunks):
            r = t // n_chunks
            k = t - r * n_chunks
            lo = k * chunk
            finish(a, b, w, out, r, lo, min(lo + chunk, n), ps[r, k], qs[r, k], big[r], small[r], c)

    kernel.__qualname__ += suffix
    jit = njit(parallel=True, cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
    return interleaved(jit(kernel))


def _cols(tile, parallel):
    @_flavoured(parallel)
    def kernel(a, b, w, out, c, tw, n_blocks):
        n_outer, _, n_inner = out.shape
        n_tiles = (n_inner + tw - 1) // tw
        n_tasks = n_outer * n_tiles
        for block in prange(n_blocks):
            m = np.empty(tw, out.dtype)
            s = np.empty(tw)
            for t in range(block * n_tasks // n_blocks, (block + 1) * n_tasks // n_blocks):
                o = t // n_tiles
                i0 = (t - o * n_tiles) * tw
                tile(a, b, w, out, o, i0, min(i0 + tw, n_inner), m, s, c)

    return kernel


def _pin_all() -> None:
    """pin_all for what the kernels here reach: the globals of this module and of
    _row_intrinsics (whose helpers call intrinsics imported there only, such as
    prefetch), the functions the op factories made and the storage formats' load and
    store they close over."""
    pin_all(vars(_row_intrinsics).values())
    pin_all(globals().values())
    pin_all(_generated)
    pin_all(f for storage in STORAGES.values() for f in (storage.load, storage.store))


# The plain kernels (w and c None) compile a fast dispatcher per argument types (C
# layout), a generic one ('A' layout) for the rest.
_ROLES = ("in", "in", "in", "out", types.none, types.int64, types.int64)
_MASKED_ROLES = ("in", "in", "in", "out", types.float64, types.int64, types.int64)
# The fast masked kernels: a, b and out C-contiguous, the mask w any layout (its rows
# are read as fast through a run-time stride: LLVM versions the loops on it).
_MASKED_FAST_ROLES = ("in C", "in C", "in", "out C", types.float64, types.int64, types.int64)


class Kernels:
    """The kernels of one op: rows (serial, parallel), split, cols (serial, parallel),
    and rows_stream (out-of-place rows with non-temporal stores, C-contiguous only) or
    None. Each takes ``(a, b, w, out, c, ...)``.

    ``masked`` False: the plain op (w and c None). True: the masked and scaled op (c a
    float, w a mask or None); the mask's layout never sends a call to the generic
    kernels, and the fast ones are compiled once per dtype and None pattern (w typed
    'A', every input read-only): a mask of x's shape, a broadcast one, a writeable x or
    a read-only one share one compilation.

    ``storage`` 16-bit: the kernels of uint16 arrays of its patterns, rows and split only
    (cols and rows_stream None), for rows of any layout, sized as the float32 kernels'
    (the wrapper passes the float32 chunk and whole_max)."""

    def __init__(self, op: Op, masked: bool, storage: Storage = NATIVE):
        _pin_all()
        lead, whole, part, combine, finish, tile, stream, scratch = op
        suffix = "" if storage is NATIVE else f"_{storage.name}"
        roles = _MASKED_ROLES if masked else _ROLES
        kw = {"fast_roles": _MASKED_FAST_ROLES, "loose": (2,)} if masked else {}
        self.rows_stream = None if stream is None else _rows_stream(stream)
        if masked and stream is not None:
            self.rows_stream = _Generic(self.rows_stream, _MASKED_FAST_ROLES)
        rows = (lead, whole, part, combine, finish, scratch)
        self.rows = Kernel(lambda: _rows(*rows, False, suffix), roles, **kw)
        self.rows_parallel = Kernel(lambda: _rows(*rows, True, suffix), roles, **kw)
        self.split = Kernel(lambda: _split(part, combine, finish, suffix), roles, **kw)
        self.cols = self.cols_parallel = None
        if tile is not None:
            self.cols = Kernel(lambda: _cols(tile, False), roles, **kw)
            self.cols_parallel = Kernel(lambda: _cols(tile, True), roles, **kw)


_built: dict[tuple[str, bool, Storage], Kernels] = {}


def kernels(op: str, masked: bool = False, storage: Storage = NATIVE) -> Kernels:
    """The kernels of ``op`` (a key of _OPS), plain or (``masked``) masked and
    scaled, for arrays stored as ``storage``, built (not compiled) on first use."""
    k = _built.get((op, masked, storage))
    if k is None:
        k = _built[op, masked, storage] = Kernels(_op(op, storage), masked, storage)
    return k


def masked_kernels(op: str) -> Kernels:
    """The masked and scaled kernels of ``op``: ``kernels(op, masked=True)``."""
    return kernels(op, masked=True)
