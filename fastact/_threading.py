"""numba's threading layer as fastact uses it: which layer, and whether a parallel kernel may run now.

numba runs ``parallel=True`` kernels on one of three threading layers:

* ``tbb``: safe with Python threads and across ``fork()``. Used when TBB can be
  loaded; :func:`gate` makes a pip-installed ``tbb`` (``pip install fastact[tbb]``,
  whose library lands in ``<prefix>/lib``, off the loader path) visible first.
* ``omp`` (GNU OpenMP, numba's fallback on Linux): thread-safe, but a process
  forked from one that ran OpenMP code is killed by numba if it runs OpenMP code
  again. fastact notices the fork and runs serial kernels in such a child.
* ``workqueue``: fork-safe but not thread-safe (concurrent launches abort the
  process). fastact lets one parallel kernel run at a time and makes other threads
  run serial kernels meanwhile.

A layer chosen by the user (``NUMBA_THREADING_LAYER``, or numba code that ran
first) is respected; fastact only adapts to it.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numba
from numba.core import config

from . import _numba_compat as compat

__all__ = ["gate", "threading_layer", "threads"]

_TBB_LIBRARY = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}.get(sys.platform)

_UNSET = object()
_gate: object = _UNSET  # see gate()
_init_lock = threading.Lock()


def _load_tbb() -> bool:
    """Load a pip-installed TBB globally so numba's ``tbb`` layer can link to it.

    Only when numba would consider TBB (the layer setting is ``default``, ``tbb`` or
    one of the ``*safe`` ones) and no layer has started yet. Returns True if loaded.
    """
    if _TBB_LIBRARY is None or compat.threading_layer_started():
        return False
    if str(config.THREADING_LAYER).lower() not in ("default", "tbb", "safe", "threadsafe", "forksafe"):
        return False
    prefixes = dict.fromkeys((sys.prefix, sys.exec_prefix, sys.base_prefix))
    try:
        import site

        prefixes[site.getuserbase()] = None
    except Exception:  # pragma: no cover - site disabled
        pass
    for prefix in prefixes:
        path = os.path.join(prefix, "lib", _TBB_LIBRARY)
        if os.path.exists(path):
            import ctypes

            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return True
    return False


def _layer_gate(layer: str) -> object:
    return threading.Lock() if layer == "workqueue" else None


def gate() -> object:
    """How parallel kernels may run in this process now.

    ``None``: freely. A ``threading.Lock``: only while holding it (workqueue; a
    thread that cannot take it at once runs the serial kernel). ``False``: never
    (a child forked from a process that ran GNU OpenMP code).
    The first call starts numba's threading layer, loading TBB first if it can.
    """
    g = _gate
    if g is _UNSET:
        g = _start()
    return g


def _start() -> object:
    global _gate
    with _init_lock:
        if _gate is _UNSET:
            if not compat.threading_layer_started():
                _load_tbb()
                try:
                    compat.start_threading_layer()
                except ValueError as exc:  # e.g. NUMBA_THREADING_LAYER=tbb without TBB
                    warnings.warn(
                        f"fastact: numba's threading layer could not start ({exc}); "
                        "running serial kernels only",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                    _gate = False
                    return _gate
            _gate = _layer_gate(compat.started_threading_layer())
    return _gate


def _after_fork_in_child() -> None:
    """A child must not run GNU OpenMP if its parent did; locks held at fork stay held."""
    global _gate, _init_lock
    _init_lock = threading.Lock()
    layer = compat.started_threading_layer()
    if layer is None:
        _gate = _UNSET
        return
    if layer == "omp" and compat.openmp_vendor() == "GNU":
        _gate = False
    else:
        _gate = _layer_gate(layer)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def threading_layer() -> str:
    """The numba threading layer of fastact's parallel kernels: 'tbb', 'omp' or 'workqueue'.

    Starts the layer (as the first parallel kernel would) if nothing has yet; 'none'
    if no layer could start (fastact then runs serial kernels).
    """
    gate()
    return compat.started_threading_layer() or "none"


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the calling thread's parallel kernels on ``n`` threads (at most numba's pool,
    ``NUMBA_NUM_THREADS``) inside the block, then restore its count (numba's count is a
    per-thread setting; only changed where it differs)."""
    gate()  # fastact's layer first (numba's thread count would start numba's default one)
    n = max(1, min(n, config.NUMBA_NUM_THREADS))
    before = numba.get_num_threads()
    if before == n:
        yield
        return
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)
