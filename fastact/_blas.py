"""``C += A @ B`` through the BLAS numpy itself calls: gemm with beta = 1.

numpy has no accumulating matrix product: ``np.matmul(a, b, out=c)`` overwrites ``c``,
and ``c += a @ b`` allocates a temporary the size of ``c``. The chunked linear
cross-entropy accumulates its weight gradient, (V, H), over row chunks; with numpy alone
every chunk would need that temporary (as large as the weights). BLAS's gemm computes
``C = alpha A B + beta C``; with beta = 1 it accumulates in place, no temporary.

numpy's wheels bundle OpenBLAS built with 64-bit integers (ILP64) and suffixed symbols:
``scipy_cblas_sgemm64_`` (numpy >= 2.0, the scipy-openblas64 build) or ``cblas_sgemm64_``
(numpy 1.2x's openblas64_). :func:`gemm_accumulate` finds that library next to numpy
(``numpy.libs``, ``numpy/.dylibs``), takes only those ILP64-suffixed symbols (their
integer width is part of the name), and checks one small product against ``np.matmul``
before trusting it. Where there is none (numpy built against MKL, Accelerate or a system
BLAS with other names) it returns None and the caller uses numpy (a bounded temporary
and an add). The BLAS keeps its own thread pool (OpenBLAS's pthreads, ``OPENBLAS_NUM_THREADS``),
the same one numpy's matmul uses.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from collections.abc import Callable

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_PREFIXES = ("scipy_", "")  # scipy-openblas64 (numpy >= 2), openblas64_ (numpy 1.2x)
_lock = threading.Lock()
_found: dict[str, Callable | None] = {}


def _libraries() -> list[str]:
    here = os.path.dirname(np.__file__)
    patterns = [
        os.path.join(here, os.pardir, "numpy.libs", "*openblas*"),  # Linux and Windows wheels
        os.path.join(here, ".dylibs", "*openblas*"),  # macOS wheels
    ]
    return sorted({p for pattern in patterns for p in glob.glob(pattern)})


def _symbol(dtype: np.dtype):
    letter = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}[dtype]
    for path in _libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            f = getattr(lib, f"{prefix}cblas_{letter}gemm64_", None)
            if f is not None:
                scalar = ctypes.c_float if letter == "s" else ctypes.c_double
                i64, p = ctypes.c_int64, ctypes.c_void_p
                f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar,
                              p, i64, p, i64, scalar, p, i64]  # fmt: skip
                f.restype = None
                return f
    return None


def _rows(a: np.ndarray) -> tuple[bool, int] | None:
    """(transposed, leading dimension) of a 2-d array BLAS reads without a copy, or None."""
    item = a.itemsize
    s0, s1 = a.strides
    m, n = a.shape
    if s1 == item and s0 % item == 0 and s0 // item >= max(n, 1):
        return False, s0 // item
    if s0 == item and s1 % item == 0 and s1 // item >= max(m, 1):
        return True, s1 // item
    return None


def _make(dtype: np.dtype) -> Callable | None:
    f = _symbol(dtype)
    if f is None:
        return None

    def accumulate(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
        """c += a @ b in place; False (nothing done) if a layout does not suit BLAS."""
        m, k = a.shape
        n = b.shape[1]
        la, lb = _rows(a), _rows(b)
        if la is None or lb is None or not c.flags.c_contiguous or c.shape != (m, n):
            return False
        if not (m and n and k):
            return True
        ta, lda = la
        tb, ldb = lb
        f(_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS, m, n, k, 1.0,
          a.ctypes.data, lda, b.ctypes.data, ldb, 1.0, c.ctypes.data, n)  # fmt: skip
        return True

    # Trust it only if it computes what np.matmul does (a wrong integer width or symbol
    # would show here, on arrays it cannot overrun), with a plain and a transposed operand.
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 7)).astype(dtype)
    b = rng.standard_normal((7, 33)).astype(dtype)
    c = rng.standard_normal((40, 33)).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for operand in (a, np.asfortranarray(a)):
        out = c.copy()
        if not accumulate(out, operand, b) or not np.allclose(out, c + a @ b, rtol=tol, atol=tol):
            return None
    return accumulate


def gemm_accumulate(dtype: np.dtype) -> Callable[[np.ndarray, np.ndarray, np.ndarray], bool] | None:
    """``accumulate(c, a, b)``: c += a @ b in place through numpy's BLAS for ``dtype``
    (float32/float64), returning False where a layout does not suit it; None where no
    such BLAS was found."""
    dtype = np.dtype(dtype)
    key = dtype.str
    if key not in _found:
        with _lock:
            if key not in _found:
                _found[key] = _make(dtype)
    return _found[key]
