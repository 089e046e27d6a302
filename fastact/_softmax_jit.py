"""How the softmax-family kernels (:mod:`fastact._softmax_kernels`,
:mod:`fastact._xent_kernels`) are compiled, cached and called.

* ``_flavoured``: njit a kernel under a name that says serial or parallel (cached apart).
* ``pin_all``: stable identities for the dispatchers and intrinsics that cached kernels
  close over, so that their on-disk cache keys are the same in every process.
* ``Kernel``: one kernel as a dispatcher specialised for C-contiguous arrays and a
  ``_Generic`` one, compiled for 'A'-layout signatures only, for every other layout.
* ``PrunedPipeline``: numba's pipeline for functions that branch on a closure constant
  (one definition for softmax and log_softmax): the code of the kept branch alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
from numba import njit, types
from numba.core.dispatcher import Dispatcher
from numba.np import numpy_support

from . import _numba_compat as compat
from ._kernels import FASTMATH, interleaved, pin_uuid, source_fingerprint
from ._numba_compat import PrunedPipeline

__all__ = ["Kernel", "PrunedPipeline", "pin_all"]


def _flavoured(parallel, suffix=""):
    """njit a kernel from a factory under a name that says serial or parallel (and
    ``suffix``: its storage format, say).

    numba's disk cache keys a function by its name, code and closure, not by its
    options: without distinct names a serial kernel could load its parallel twin's
    code (and start OpenMP in a forked child that must stay serial).
    """

    def decorate(kernel):
        kernel.__qualname__ += ("_parallel" if parallel else "_serial") + suffix
        jit = njit(parallel=parallel, cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
        return interleaved(jit(kernel))

    return decorate


def pin_all(objects: Iterable) -> None:
    """Stable identities for the dispatchers and intrinsics among ``objects`` (say, a
    module's ``globals().values()``; the rest is skipped).

    A cached kernel's key holds its closure cells pickled; they pickle the op functions
    by value, with every helper they call, and each helper's (or intrinsic's) identity is
    a uuid drawn at random per process unless pinned (see _kernels.pin_uuid). An
    intrinsic is named after the module that defines it, whichever module pins it.
    """
    fingerprint = source_fingerprint()
    for obj in list(objects):
        if isinstance(obj, Dispatcher):
            pin_uuid(obj)
        elif compat.is_intrinsic(obj):
            compat.pin_intrinsic_uuid(obj, f"fastact:{obj.__module__}.{obj.__qualname__}:{fingerprint}")


class _Generic:
    """A dispatcher compiled only for 'A'-layout signatures with read-only inputs.

    numba converts any array of the same dtype and dimensions (C, F or strided, writeable
    or not) to those when compiling is disabled (from the first compilation on), so
    unusual layouts cost one compilation per dtype (and None pattern), not one per
    combination of layouts and flags.
    ``roles``: per argument, "in" (array or None), "out" (array) or a numba scalar type;
    "in C" and "out C" compile the array C-contiguous (a dispatcher for C-contiguous
    calls, typed once whatever their flags).
    """

    def __init__(self, dispatcher, roles: tuple):
        self._dispatcher = dispatcher
        self._roles = roles
        self._ready: set = set()
        self._lock = threading.Lock()

    def __call__(self, *args):
        key = tuple(a.dtype.char + str(a.ndim) if isinstance(a, np.ndarray) else a is None for a in args)
        if key not in self._ready:
            self._compile(args, key)
        return self._dispatcher(*args)

    def _compile(self, args: tuple, key: tuple) -> None:
        sig = []
        for a, role in zip(args, self._roles):
            if isinstance(role, str):
                if a is None:
                    sig.append(types.none)
                else:
                    dtype = numpy_support.from_dtype(a.dtype)
                    layout = "C" if role.endswith(" C") else "A"
                    sig.append(types.Array(dtype, a.ndim, layout, readonly=role.startswith("in")))
            else:
                sig.append(role)
        with self._lock:
            compat.lock_signatures(self._dispatcher, False)
            try:
                self._dispatcher.compile(tuple(sig))
            finally:
                compat.lock_signatures(self._dispatcher)
            self._ready.add(key)


class Kernel:
    """One kernel as two dispatchers: one that specialises on the argument types, used
    when every array is C-contiguous (the fast, vectorised code), and a _Generic one for
    the rest (strided code: several times slower per element)."""

    def __init__(self, make, roles: tuple, fast_roles: tuple | None = None, loose: tuple[int, ...] = ()):
        # fast_roles: the fast dispatcher is a _Generic of these too (one signature per
        # dtype and None pattern), else it specialises on the arguments' types
        self.fast = make() if fast_roles is None else _Generic(make(), fast_roles)
        self.generic = _Generic(make(), roles)
        # arguments whose layout does not choose the generic dispatcher
        self._loose = loose

    def __call__(self, *args):
        loose = self._loose
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray) and not a.flags.c_contiguous and i not in loose:
                return self.generic(*args)
        return self.fast(*args)
