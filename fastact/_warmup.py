"""What a process can ask fastact as a whole: compile everything now, report the runtime,
say where kernels are cached. The top layer: it may import any module of the package, and
none imports it (the package re-exports it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import llvmlite
import numba
import numpy as np

from ._platform import cpu, simd_level
from ._threading import gate, threading_layer
from ._version import __version__

__all__ = ["cache_dir", "runtime_info", "warmup"]


def cache_dir() -> str:
    """The directory numba caches fastact's kernels in (after its own fallbacks).

    ``NUMBA_CACHE_DIR`` if set; else the package's ``__pycache__`` if writable;
    else numba's user-wide cache directory (e.g. ``~/.cache/numba``).
    """
    from ._kernels import forward_kernels
    from ._numba_compat import cache_path

    return cache_path(forward_kernels("relu").serial)


def runtime_info() -> dict:
    """Versions, threading layer, thread count, SIMD level and cache directory."""
    name, features = cpu()
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
        "simd": simd_level(),
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


# Which kernels each of _layouts' arrays is for ("2-d in place": out is also an input,
# which the strided kernels take as a separate array).
_FLAVOUR_LAYOUT = {"1-d": "flat", "2-d": "strided", "2-d in place": "strided", "rows": "rows"}


def _kernel_args(arrays: tuple[np.ndarray, ...], two_d: bool) -> tuple[np.ndarray, ...]:
    from ._layout import collapse, flat

    if two_d:
        return collapse(arrays)
    return tuple(flat(a) for a in arrays)


def _warmup_tasks(names: Iterable[str] | None) -> list[tuple[str, object]]:
    from . import ufuncs
    from ._kernels import FLAVOURS, backward_kernels, forward_kernels
    from .definitions import ACTIVATIONS

    tasks = []
    for name in ACTIVATIONS if names is None else names:
        entry = ACTIVATIONS[name]
        for direction, kernels, nin in (("forward", forward_kernels, 1), ("backward", backward_kernels, 2)):
            for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
                # Python floats, as the public functions pass them
                params = tuple(0.0 if p.default is None else float(p.default) for p in entry.kernel_params)
                for layout, arrays in _layouts(nin, 4, dtype):
                    args = (*_kernel_args(arrays, layout != "1-d"), params)
                    for flavour in FLAVOURS:  # the dispatcher's choices for this layout
                        if flavour.layout == _FLAVOUR_LAYOUT[layout]:
                            label = f"{name} {direction} {dtype.name} {layout} {flavour.field}"
                            # in place: out is the first input, the kernel takes one array fewer
                            flavour_args = args[1:] if flavour.in_place else args
                            tasks.append((label, _compile_task(kernels, name, flavour.field, flavour_args)))
        for ufunc_name in (name, f"{name}_backward"):
            tasks.append((f"ufuncs.{ufunc_name}", lambda u=ufunc_name: len(getattr(ufuncs, u).types)))
    return tasks


def _compile_task(kernels, name: str, attr: str, args: tuple) -> object:
    def task() -> int:
        kernel = getattr(kernels(name), attr)
        kernel.compile(tuple(numba.typeof(a) for a in args))
        return 1

    return task


# The softmax family's kernels, as _softmax._run picks them: (variant, tunables that make
# tiny arrays take it). Serial below PARALLEL_THRESHOLD; the parallel rows and cols kernels
# above; out of place, C-contiguous rows of STREAM_BYTES or more stream their stores; a
# few rows of 4 chunks or more are split across threads.
_SOFTMAX_VARIANTS = {
    "serial": {},
    "parallel": {"PARALLEL_THRESHOLD": 0},
    "stream": {"PARALLEL_THRESHOLD": 0, "STREAM_BYTES": 0},
    "split": {"PARALLEL_THRESHOLD": 0, "CHUNK_BYTES": 8},
}


def _softmax_layouts(dtype: np.dtype) -> list[tuple[str, np.ndarray, int]]:
    """(label, array, axis): rows C-contiguous, rows of a strided view, a reduced outer axis."""
    base = np.linspace(-2, 2, 64).astype(dtype)
    return [
        ("rows", base.reshape(2, 32), -1),
        ("strided rows", base.reshape(2, 32)[:, ::2], -1),
        ("cols", base.reshape(8, 8), 0),
    ]


def _softmax_keywords(x: np.ndarray, axis: int) -> list[dict]:
    """The keywords that select each kernel set and mask layout: none (the unmasked
    kernels), a scale alone (the masked kernels without a mask), a mask of x's shape (its
    views C-contiguous) and one broadcast along every other axis (zero strides)."""
    along = tuple(n if d == axis % x.ndim else 1 for d, n in enumerate(x.shape))
    return [
        {},
        {"scale": 0.5},
        {"where": np.ones(x.shape, bool)},
        {"scale": 0.5, "where": np.ones(along, bool)},
    ]


def _softmax_tasks() -> list[tuple[str, object]]:
    """Run each softmax-family kernel once on tiny arrays, in every layout and variant the
    host side dispatches to (the signatures it compiles are the ones real calls use)."""
    from . import _config, _softmax

    tasks = []
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        for variant, tunables in _SOFTMAX_VARIANTS.items():
            for op in ("softmax", "log_softmax"):
                for layout, x, axis in _softmax_layouts(dtype):

                    def task(op=op, x=x, axis=axis, tunables=tunables) -> int:
                        with _config.overridden(**tunables):
                            for kw in _softmax_keywords(x, axis):
                                y = getattr(_softmax, op)(x, axis, **kw)
                                getattr(_softmax, op + "_")(x.copy(), axis, **kw)
                                getattr(_softmax, op + "_backward")(y, y, axis, **kw)
                                getattr(_softmax, op + "_backward_")(y.copy(), y, axis, **kw)
                        return 4 * len(_softmax_keywords(x, axis))

                    tasks.append((f"{op} {dtype.name} {layout} {variant}", task))
            logits = np.linspace(-2, 2, 64).astype(dtype).reshape(4, 16)
            targets = [np.arange(4), *(np.full(logits.shape, 1 / 16, t) for t in (np.float32, np.float64))]
            for target in targets:

                def xent(logits=logits, target=target, tunables=tunables) -> int:
                    with _config.overridden(**tunables):
                        _softmax.softmax_cross_entropy(logits, target)
                        _softmax.softmax_cross_entropy(logits.copy(), target, inplace=True)
                    return 2

                kind = "class" if target.dtype.kind == "i" else f"{target.dtype.name} probability"
                tasks.append((f"cross_entropy {dtype.name} {kind} {variant}", xent))
    return tasks


def _fused_tasks() -> list[tuple[str, object]]:
    """Run the fused ops once on tiny arrays in each layout (contiguous, contiguous rows,
    strided), in and out of place, serial and parallel (PARALLEL_THRESHOLD = 0): the gated
    units of GATED_UNITS and bias_act with every activation."""
    from . import _config, _fused
    from .definitions import ACTIVATIONS, GATED_UNITS

    functions = _fused.functions()

    def layouts(buf: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(a, b) views of a (4, 16) buffer: 1-d contiguous, contiguous rows, strided."""
        return [(buf[0], buf[1]), (buf[:, :8], buf[:, 8:]), (buf[:, ::2], buf[:, 1::2])]

    tasks = []
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        base = np.linspace(-2, 2, 64).astype(dtype).reshape(4, 16)
        for variant, tunables in (("serial", {}), ("parallel", {"PARALLEL_THRESHOLD": 0})):
            for unit in GATED_UNITS.values():
                chooser = next((p for p in unit.params if p.choices), None)
                for choice in chooser.choices if chooser else (None,):
                    kw = {} if chooser is None else {chooser.name: choice}

                    def gated(unit=unit, kw=kw, tunables=tunables, base=base) -> int:
                        f = {s: functions.get(unit.name + s) for s in ("", "_", "_backward", "_backward_")}
                        with _config.overridden(**tunables):
                            if unit.halves:
                                for x in (base, base[:, ::2]):
                                    f["_backward"](f[""](x), x)
                                return 4
                            for (a, b), (a2, b2) in zip(layouts(base), layouts(base.copy())):
                                f[""](a, b, **kw)
                                f["_backward"](a, a, b, **kw)
                                f["_backward_"](a, a2, b2, **kw)
                                f["_"](a2, b, **kw)
                        return 12

                    tasks.append((f"{unit.name} {kw} {dtype.name} {variant}", gated))
            for name, entry in ACTIVATIONS.items():
                params = {p.name: 0.0 for p in entry.params if p.default is None}

                def bias(name=name, params=params, tunables=tunables, base=base) -> int:
                    with _config.overridden(**tunables):
                        for x in (base, base[:, ::2]):
                            c = x[0].copy()
                            y = _fused.bias_act(x, c, name, **params)
                            _fused.bias_act_(x.copy(), c, name, **params)
                            _fused.bias_act_backward(y, x, c, name, **params)
                            _fused.bias_act_backward_(y.copy(), x, c, name, **params)
                    return 8

                tasks.append((f"bias_act {name} {dtype.name} {variant}", bias))
    return tasks


def warmup(progress: bool = True, names: Iterable[str] | None = None) -> int:
    """Compile (or load from the on-disk cache) every kernel signature fastact uses.

    Forward and backward, serial and parallel, in every layout the dispatcher picks a
    kernel for (1-d contiguous, rows, strided; out of place and in place), float32 and
    float64, for every activation, and every ufunc loop; for the activations ``names``
    (table names, e.g. "gelu_tanh"; default all). Without ``names``, the softmax
    family's and cross-entropy's kernels too: those are run once on tiny arrays, in each
    layout and variant (serial, parallel, streaming stores, split rows), with the
    tunables that select them set meanwhile; and the fused ops' kernels (the gated units,
    bias_act with every activation), run the same way. Writes a progress bar to stderr if
    ``progress``. Returns the number of signatures compiled or loaded (or calls made).
    """
    gate()  # start the threading layer (loading TBB) before a parallel kernel is loaded
    tasks = _warmup_tasks(names) + (_softmax_tasks() + _fused_tasks() if names is None else [])
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
