"""Process-wide runtime: threading layer, fork safety, cache location, warmup.

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
from collections.abc import Iterable

import numba
import numpy as np
from numba.core import config

__all__ = ["cache_dir", "gate", "runtime_info", "threading_layer", "warmup"]

_TBB_LIBRARY = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}.get(sys.platform)

_UNSET = object()
_gate: object = _UNSET  # see gate()
_init_lock = threading.Lock()


def _numba_parallel():
    from numba.np.ufunc import parallel

    return parallel


def _load_tbb() -> bool:
    """Load a pip-installed TBB globally so numba's ``tbb`` layer can link to it.

    Only when numba would consider TBB (the layer setting is ``default``, ``tbb`` or
    one of the ``*safe`` ones) and no layer has started yet. Returns True if loaded.
    """
    if _TBB_LIBRARY is None or _numba_parallel()._is_initialized:
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
            parallel = _numba_parallel()
            if not parallel._is_initialized:
                _load_tbb()
                try:
                    parallel._launch_threads()
                except ValueError as exc:  # e.g. NUMBA_THREADING_LAYER=tbb without TBB
                    warnings.warn(
                        f"fastact: numba's threading layer could not start ({exc}); "
                        "running serial kernels only",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                    _gate = False
                    return _gate
            _gate = _layer_gate(parallel._threading_layer)
    return _gate


def _after_fork_in_child() -> None:
    """A child must not run GNU OpenMP if its parent did; locks held at fork stay held."""
    global _gate, _init_lock
    _init_lock = threading.Lock()
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is None or not parallel._is_initialized:
        _gate = _UNSET
        return
    layer = parallel._threading_layer
    omppool = sys.modules.get("numba.np.ufunc.omppool")
    if layer == "omp" and getattr(omppool, "openmp_vendor", "GNU") == "GNU":
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
    return _numba_parallel()._threading_layer or "none"


def cache_dir() -> str:
    """The directory numba caches fastact's kernels in (after its own fallbacks).

    ``NUMBA_CACHE_DIR`` if set; else the package's ``__pycache__`` if writable;
    else numba's user-wide cache directory (e.g. ``~/.cache/numba``).
    """
    from ._kernels import forward_kernels

    return forward_kernels("relu").serial._cache._cache_path


_SIMD_LEVELS = (
    ("avx512", ("avx512f", "avx512bw", "avx512dq", "avx512vl")),
    ("avx2", ("avx2", "fma")),
    ("avx", ("avx",)),
    ("sse4.2", ("sse4.2",)),
    ("neon", ("neon",)),
    ("sve", ("sve",)),
)


def _cpu() -> tuple[str, dict[str, bool]]:
    """The CPU name and features numba compiles for (honours NUMBA_CPU_NAME/FEATURES)."""
    import llvmlite.binding as ll

    name = config.CPU_NAME or ll.get_host_cpu_name()
    if config.CPU_FEATURES is not None:
        flags = config.CPU_FEATURES.split(",")
    else:
        flags = ll.get_host_cpu_features().flatten().split(",")
    features = {f[1:]: f[0] == "+" for f in flags if f and f[0] in "+-"}
    return name, features


def runtime_info() -> dict:
    """Versions, threading layer, thread count, SIMD level and cache directory."""
    import llvmlite

    from . import __version__

    name, features = _cpu()
    simd = next((level for level, needs in _SIMD_LEVELS if all(features.get(f) for f in needs)), "baseline")
    wanted = ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "neon", "sve")
    g = gate()
    return {
        "fastact": __version__,
        "python": sys.version.split()[0],
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": np.__version__,
        "threading_layer": threading_layer(),
        "parallel_kernels": "off (no threading layer, or forked from a GNU OpenMP process)"
        if g is False
        else ("one at a time (workqueue)" if g is not None else "on"),
        "num_threads": 1 if g is False else numba.get_num_threads(),
        "cpu": name,
        "simd": simd,
        "simd_features": [f for f in wanted if features.get(f)],
        "cache_dir": cache_dir(),
    }


# --- warmup ---------------------------------------------------------------------------


def _layouts(nin: int, n: int, dtype: np.dtype) -> list[tuple[str, tuple[np.ndarray, ...]]]:
    """(label, (inputs..., out)) in each layout the dispatcher produces, ``n`` elements."""
    flat = tuple(np.zeros(n, dtype) for _ in range(nin + 1))
    rows = 2
    cols = max(n // rows, 2)
    strided_in = tuple(np.zeros((rows, 2 * cols), dtype)[:, ::2] for _ in range(nin))
    fresh_out = (*strided_in, np.empty_like(strided_in[0]))
    in_place = (*strided_in, strided_in[0])
    rows_in = tuple(np.zeros((rows, 2 * cols), dtype)[:, :cols] for _ in range(nin))
    rows_out = (*rows_in, np.zeros((rows, 2 * cols), dtype)[:, :cols])
    return [("1-d", flat), ("2-d", fresh_out), ("2-d in place", in_place), ("rows", rows_out)]


def _kernel_args(arrays: tuple[np.ndarray, ...], two_d: bool) -> tuple[np.ndarray, ...]:
    from . import _dispatch

    if two_d:
        return _dispatch._collapse(arrays)
    return tuple(_dispatch._flat(a) for a in arrays)


def _warmup_tasks(names: Iterable[str] | None) -> list[tuple[str, object]]:
    from . import ufuncs
    from ._kernels import backward_kernels, forward_kernels
    from .definitions import ACTIVATIONS

    tasks = []
    for name in ACTIVATIONS if names is None else names:
        entry = ACTIVATIONS[name]
        for direction, kernels, nin in (("forward", forward_kernels, 1), ("backward", backward_kernels, 2)):
            for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
                # Python floats, as the public functions pass them
                params = tuple(0.0 if p.default is None else float(p.default) for p in entry.kernel_params)
                for layout, arrays in _layouts(nin, 4, dtype):
                    two_d = layout != "1-d"
                    args = (*_kernel_args(arrays, two_d), params)
                    both = ("serial", "parallel")
                    suffix = {"1-d": "", "rows": "_rows"}.get(layout, "_2d")
                    flavours = [(f, f + suffix, args) for f in both]
                    if layout in ("1-d", "rows"):  # out is the first input: one array fewer
                        flavours += [(f"{f} in place", f + suffix + "_in_place", args[1:]) for f in both]
                    for flavour, attr, flavour_args in flavours:
                        label = f"{name} {direction} {dtype.name} {layout} {flavour}"
                        tasks.append((label, _compile_task(kernels, name, attr, flavour_args)))
        for ufunc_name in (name, f"{name}_backward"):
            tasks.append((f"ufuncs.{ufunc_name}", lambda u=ufunc_name: len(getattr(ufuncs, u).types)))
    return tasks


def _compile_task(kernels, name: str, attr: str, args: tuple) -> object:
    def task() -> int:
        kernel = getattr(kernels(name), attr)
        kernel.compile(tuple(numba.typeof(a) for a in args))
        return 1

    return task


def warmup(progress: bool = True, names: Iterable[str] | None = None) -> int:
    """Compile (or load from the on-disk cache) every kernel signature fastact uses.

    Forward and backward, serial and parallel, 1-d contiguous and 2-d strided
    (out of place and in place), float32 and float64, for every activation, and
    every ufunc loop; for the activations ``names`` (table names, e.g. "gelu_tanh";
    default all). Writes a progress bar to stderr if ``progress``. Returns the number
    of signatures compiled or loaded. No kernel is run.
    """
    gate()  # start the threading layer (loading TBB) before a parallel kernel is loaded
    tasks = _warmup_tasks(names)
    done = 0
    width = 30
    for i, (label, task) in enumerate(tasks, 1):
        done += task()
        if progress:
            filled = width * i // len(tasks)
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\rfastact warmup [{bar}] {i}/{len(tasks)} {label:<48.48}")
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\n")
    return done
