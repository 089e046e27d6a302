"""``python -m fastact bench``: fastact against naive numpy, peers and the memory ceiling.

Every activation is timed in place, forward (``name_(x)``) and backward
(``name_backward_(grad, saved)``), next to the naive numpy expression of
:data:`fastact._baselines.NAIVE` and, with ``--peers``, torch, numexpr and scipy
(those installed). The ceiling is the fastest an in-place pass over the same array
can be: fastact's own blocked, prefetching loop around ``x[i] *= a`` (forward) or
``g[i] *= s[i]`` (backward). Everything is printed as ratios measured in the same run: a time is
the best of several calls, each on freshly restored data.

``--simd avx2`` (or ``avx512``) runs the same command in a subprocess that compiles fastact for
that x86 SIMD level and runs torch's kernels for it: on an AVX-512 host, numba targets an
AVX2-only CPU (``NUMBA_CPU_NAME=znver3``, ``NUMBA_CPU_FEATURES`` = the host's features with
every ``avx512*`` off, a cache directory of its own) and torch takes ``ATEN_CPU_CAPABILITY=avx2``.
Peers are timed in turn inside that process, as always.

``--fused`` times the fused ops instead (generated from :data:`fastact.GATED_UNITS` and a
few activations for bias_act): each gated unit's forward ``name(a, b, out=)`` and in-place
backward ``name_backward_(grad, a, b)`` on ``--size`` elements per array, glu on twice that,
and ``bias_act`` forward and in-place backward (dx and dbias) on ``--bias-shape``, next to
torch's composition (``F.silu(a) * b`` allocating and with ``out=``; autograd through it for
the backward) and to the memory ceiling of as many streams (the same loops around a
multiplication: forward 3 streams, gated backward 5, bias_act 2 and 3).
``--linear-xent`` times :func:`fastact.linear_cross_entropy` (loss, dinput and dW, mean over
class targets; default N=4096, H=1024, V=32000 float32, ``--shape NxHxV``; ``--quick``
1024x512x8192) against the naive numpy composition with the full logits and, with ``--peers``,
torch's ``F.linear_cross_entropy`` (reference and chunked paths, where this torch has them)
and ``F.cross_entropy(x @ W.T, t)``; ``--chunk-size`` adds fastact rows per chunk to compare.
Peak memory needs fresh processes: ``scripts/linear_xent_measure.py``.

``--crossover`` times the serial and the parallel kernels from 1K to 1M elements
and prints the size from which the parallel one wins
(:data:`fastact._config.PARALLEL_THRESHOLD`).

The asv suite (``asv_bench/``) and ``scripts/plot_benchmarks.py`` reuse
:class:`Case`, :func:`compare` and :func:`best_time` from here.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit

import fastact

from . import _fused, _fused_kernels, _kernels
from ._baselines import NAIVE, PEER_MODULES, PEERS
from ._ops import OPS
from .definitions import ACTIVATIONS, GATED_UNITS

IMPLS = ("fastact", "numpy")
# Values for parameters that have no default (threshold(x, threshold, value)).
REQUIRED_PARAMS = {"threshold": {"threshold": 0.1, "value": 20.0}}


# --- what is timed ----------------------------------------------------------------------


def kernel_params(name: str, dtype: np.dtype) -> tuple:
    """The numeric parameters of ``name`` (defaults), rounded to ``dtype``, as Python
    floats (what the public functions pass the kernels)."""
    entry = ACTIVATIONS[name]
    chosen = REQUIRED_PARAMS.get(name, {})
    return tuple(float(np.dtype(dtype).type(chosen.get(p.name, p.default))) for p in entry.kernel_params)


def fastact_function(name: str, suffix: str = "") -> Callable:
    """The public entry point ``name + suffix`` (gelu_tanh is gelu(approximate="tanh")).

    Looked up on the ``fastact`` module at each call, so it can be replaced there.
    """
    if ACTIVATIONS[name].public:
        return getattr(fastact, name + suffix)
    return functools.partial(getattr(fastact, "gelu" + suffix), approximate="tanh")


def make_input(n: int, dtype: np.dtype | str, seed: int = 0) -> np.ndarray:
    """``n`` seeded values ~ N(0, 3**2) of ``dtype``: both sides of every break point."""
    x = np.random.default_rng(seed).standard_normal(n, dtype=np.dtype(dtype).type)
    x *= 3
    return x


@dataclass
class Case:
    """Seeded data for one activation: input, upstream gradient and what forward saves.

    ``lean=True`` makes only what ``direction`` needs, in as few arrays as possible
    (for peak-memory measurements): x for forward; grad and saved for backward.
    """

    name: str
    dtype: np.dtype
    n: int
    direction: str | None = None
    lean: bool = False
    params: tuple = field(init=False)
    x: np.ndarray | None = field(init=False, repr=False, default=None)
    grad: np.ndarray | None = field(init=False, repr=False, default=None)
    saved: np.ndarray | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.dtype)
        self.params = kernel_params(self.name, self.dtype)
        saves_output = ACTIVATIONS[self.name].saves == "output"
        if not self.lean:
            self.x = make_input(self.n, self.dtype, seed=1)
            self.grad = make_input(self.n, self.dtype, seed=2)
            self.saved = fastact_function(self.name)(self.x, *self.params) if saves_output else self.x
        elif self.direction == "forward":
            self.x = make_input(self.n, self.dtype, seed=1)
        else:
            self.grad = make_input(self.n, self.dtype, seed=2)
            self.saved = make_input(self.n, self.dtype, seed=1)
            if saves_output:
                fastact_function(self.name, "_")(self.saved, *self.params)

    def bind(
        self, impl: str, direction: str, inplace: bool, copy: bool = True
    ) -> tuple[Callable, Callable | None]:
        """(call, reset): ``call()`` runs ``impl`` on the data, ``reset()`` restores
        what it overwrote (None when nothing is). In place, the call works on a
        private copy unless ``copy=False`` (then it overwrites the case's array and
        ``reset`` is None).

        ``impl``: "fastact", "numpy" (naive) or a peer of ``PEERS`` (in place only).
        """
        p = self.params
        forward = direction == "forward"
        if impl == "fastact":
            fn = fastact_function(self.name, ("" if forward else "_backward") + ("_" if inplace else ""))
        elif impl == "numpy":
            naive = NAIVE[self.name]
            if forward:
                fn = naive.forward_inplace if inplace else naive.forward
            else:
                fn = naive.backward_inplace if inplace else naive.backward
        else:
            if not inplace:
                raise ValueError(f"peer {impl!r} is only timed in place")
            ops = PEERS[impl](self.name, p)
            op = ops.forward_ if forward else ops.backward_
            if op is None:
                raise LookupError(f"{impl} has no {direction} for {self.name}")
            saved = self.x if ops.backward_input else self.saved
            return self._bind_arrays(lambda *a: op(*a), forward, True, copy, ops.convert, saved)
        return self._bind_arrays(lambda *a: fn(*a, *p), forward, inplace, copy, lambda a: a, self.saved)

    def _bind_arrays(self, fn, forward, inplace, copy, convert, saved) -> tuple[Callable, Callable | None]:
        source = self.x if forward else self.grad
        if not inplace:
            args = (source,) if forward else (source, saved)
            return (lambda: fn(*args)), None
        buf = source.copy() if copy else source
        args = tuple(convert(a) for a in ((buf,) if forward else (buf, saved)))
        return (lambda: fn(*args)), (functools.partial(np.copyto, buf, source) if copy else None)


@functools.lru_cache(maxsize=4)
def cached_case(name: str, dtype: str, n: int) -> Case:
    return Case(name, np.dtype(dtype), n)


# --- the in-place memory ceiling ------------------------------------------------------


@njit(forceinline=True)
def _times(x, a):
    return x * a


def _ceiling_kernel(direction: str, parallel: bool):
    """The in-place loop of fastact's own 1-d kernels (blocks, prefetch, full-width
    vectors) around one multiplication: ``x[i] *= a`` forward, ``g[i] *= s[i]``
    backward. As fast as a loop this simple runs here, it stands for the memory
    bandwidth (a plain ``prange`` loop without the prefetch read ~1.6x slower)."""
    _kernels.pin_uuid(_times)
    nin = 1 if direction == "forward" else 2
    return _kernels._contiguous_kernel(_times, parallel, _kernels.FLAT, nin, in_place=True)


_CEILING = {
    (direction, parallel): _ceiling_kernel(direction, parallel)
    for direction in ("forward", "backward")
    for parallel in (False, True)
}


def ceiling(direction: str, x: np.ndarray, s: np.ndarray) -> tuple[Callable, Callable]:
    """(call, reset) of the in-place ceiling loop over a copy of ``x`` (serial below
    the parallel threshold, as fastact's dispatcher)."""
    from ._config import PARALLEL_THRESHOLD

    kernel = _CEILING[direction, x.size >= PARALLEL_THRESHOLD]
    buf = x.copy()
    if direction == "forward":
        a = x.dtype.type(1.0000001)
        call = lambda: kernel(buf, a)
    else:
        call = lambda: kernel(s, buf)
    return call, functools.partial(np.copyto, buf, x)


# --- timing -----------------------------------------------------------------------------


def best_time(
    call: Callable, reset: Callable | None = None, budget: float = 0.1, repeats: int = 3, number: int = 1
) -> float:
    """Seconds of the fastest call: ``number`` calls per sample, ``reset()`` before each
    sample (not timed); at least ``repeats`` samples, more while within ``budget`` s."""
    best = math.inf
    start = time.perf_counter()
    i = 0
    while i < repeats or (time.perf_counter() - start < budget and i < 10000):
        if reset is not None:
            reset()
        t0 = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - t0) / number)
        i += 1
    return best


def compare(pairs: dict[str, tuple], budget: float = 0.1, repeats: int = 3) -> dict[str, float]:
    """Best seconds per call of each (call, reset) pair, sampled in turn (one call per
    sample, reset before it) so that a burst of load elsewhere hits them all alike."""
    best = dict.fromkeys(pairs, math.inf)
    start = time.perf_counter()
    i = 0
    while i < repeats or (time.perf_counter() - start < budget and i < 10000):
        for key, (call, reset) in pairs.items():
            if reset is not None:
                reset()
            t0 = time.perf_counter()
            call()
            best[key] = min(best[key], time.perf_counter() - t0)
        i += 1
    return best


def speedup(naive: tuple, fast: tuple, budget: float = 0.1) -> float:
    """How many times faster ``fast`` is than ``naive`` (each a (call, reset) pair)."""
    t = compare({"naive": naive, "fast": fast}, budget)
    return t["naive"] / t["fast"]


def warm(*pairs: tuple[Callable, Callable | None]) -> None:
    """Run each (call, reset) once: compiles or loads the kernels, faults pages in."""
    for call, reset in pairs:
        call()
        if reset is not None:
            reset()


# --- the table --------------------------------------------------------------------------


@dataclass
class Row:
    """One activation and direction: seconds per in-place call for each implementation."""

    activation: str
    direction: str
    fastact: float
    ceiling: float
    others: dict[str, float | None]
    notes: list[str] = field(default_factory=list)


class Progress:
    """A one-line ``\\r`` progress bar on stderr."""

    def __init__(self, total: int, enabled: bool, label: str = "fastact bench") -> None:
        self.total, self.enabled, self.label, self.done = total, enabled, label, 0

    def step(self, what: str) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {what:<32.32}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()


def available_peers() -> list[str]:
    """The peer libraries importable here."""
    found = []
    for name in PEERS:
        try:
            __import__(PEER_MODULES[name])
        except ImportError:
            continue
        found.append(name)
    return found


class _Threads:
    """Give torch and numexpr numba's thread count for the run, then restore theirs."""

    def __init__(self, peers: Sequence[str]) -> None:
        self.peers, self.saved = peers, {}

    def __enter__(self) -> int:
        n = numba.get_num_threads()
        if any(PEER_MODULES[p] == "torch" for p in self.peers):
            import torch

            self.saved["torch"] = torch.get_num_threads()
            torch.set_num_threads(n)
        if "numexpr" in self.peers:
            import numexpr

            self.saved["numexpr"] = numexpr.set_num_threads(n)
        return n

    def __exit__(self, *exc) -> None:
        if "torch" in self.saved:
            import torch

            torch.set_num_threads(self.saved["torch"])
        if "numexpr" in self.saved:
            import numexpr

            numexpr.set_num_threads(self.saved["numexpr"])


def measure(
    names: Sequence[str],
    dtype: str,
    n: int,
    peers: Sequence[str] = (),
    budget: float = 0.1,
    progress: Progress | None = None,
) -> list[Row]:
    """Time every activation of ``names`` in place, forward and backward."""
    rows = []
    for name in names:
        case = Case(name, np.dtype(dtype), n)
        for direction in ("forward", "backward"):
            source = case.x if direction == "forward" else case.grad
            pairs = {"fastact": case.bind("fastact", direction, True)}
            pairs["ceiling"] = ceiling(direction, source, case.saved)
            missing, notes = [], []
            for impl in ("numpy", *peers):
                try:
                    pairs[impl] = case.bind(impl, direction, True)
                except LookupError:
                    missing.append(impl)
                note = PEERS[impl](name, case.params).note if impl in PEERS else ""
                if note and impl in pairs:
                    notes.append(f"{impl}: {note}")
            warm(*pairs.values())
            t = compare(pairs, budget)
            others = {impl: (None if impl in missing else t[impl]) for impl in ("numpy", *peers)}
            rows.append(Row(name, direction, t["fastact"], t["ceiling"], others, notes))
            if progress is not None:
                progress.step(f"{name} {direction}")
    return rows


def _seconds(t: float) -> str:
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} us"


_LABELS = {"torch_autograd": "autograd"}  # column headings that would not fit


def format_table(rows: Sequence[Row], impls: Sequence[str]) -> str:
    """Forward and backward side by side; ratios are other time / fastact time."""
    by_key = {(r.activation, r.direction): r for r in rows}
    names = list(dict.fromkeys(r.activation for r in rows))
    cols = ["fastact", *impls, "ceiling"]
    width = 9
    block = " ".join(f"{_LABELS.get(c, c):>{width}}" for c in cols)
    head1 = f"{'':<12} | {'forward in place: name_(x)':^{len(block)}} | "
    head1 += f"{'backward in place: name_backward_(grad, saved)':^{len(block)}}"
    lines = [head1.rstrip(), f"{'activation':<12} | {block} | {block}", "-" * (16 + 2 * len(block) + 3)]
    for name in names:
        cells = []
        for direction in ("forward", "backward"):
            r = by_key[name, direction]
            parts = [f"{_seconds(r.fastact):>{width}}"]
            for impl in impls:
                t = r.others.get(impl)
                parts.append(f"{'-' if t is None else f'{t / r.fastact:.2f}x':>{width}}")
            parts.append(f"{r.ceiling / r.fastact:>{width}.0%}")
            cells.append(" ".join(parts))
        lines.append(f"{name:<12} | {cells[0]} | {cells[1]}")
    notes = sorted({f"{r.activation} {note}" for r in rows for note in r.notes})
    return "\n".join(lines + [f"  note: {n}" for n in notes])


def header(dtype: str, n: int, threads: int, peers: Sequence[str], rows: Sequence[Row]) -> str:
    from .definitions import naive_erf_source

    fwd = min(r.ceiling for r in rows if r.direction == "forward")
    bwd = min(r.ceiling for r in rows if r.direction == "backward")
    item = np.dtype(dtype).itemsize
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run (small n)
        layer = "not started"
    threaded = ", ".join(["fastact (numba)", *[p for p in peers if p in ("torch", "numexpr")]])
    info = fastact.runtime_info()
    simd = f"fastact compiled for {info['cpu']} ({info['simd']})"
    if any(PEER_MODULES[p] == "torch" for p in peers):
        import torch

        simd += f", torch's kernels {torch.backends.cpu.get_cpu_capability()}"
    return "\n".join(
        [
            f"fastact {fastact.__version__} bench: {dtype}, {n:,} elements, in place; "
            f"{threads} threads for {threaded} (numba layer {layer}); numpy and scipy use one",
            simd,
            f"ceiling (fastact's loop, in place): forward x[i] *= a {_seconds(fwd)} "
            f"({2 * n * item / fwd / 1e9:.1f} GB/s), backward g[i] *= s[i] {_seconds(bwd)} "
            f"({3 * n * item / bwd / 1e9:.1f} GB/s)",
            "numpy = the naive expression (Activation.naive; gelu uses " + naive_erf_source()[1] + "); "
            "ratios = its time / fastact's (>1: fastact is faster); "
            "ceiling = ceiling time / fastact's (100%: memory bound)",
            *(
                ["autograd = torch.autograd.grad(y, x, grad) as a training step runs it (a new gradient)"]
                if "torch_autograd" in peers
                else []
            ),
        ]
    )


# --- 16-bit floats -----------------------------------------------------------------------

HALF_DTYPES = ("bfloat16", "float16")


def half_dtype(name: str) -> np.dtype:
    if name == "float16":
        return np.dtype(np.float16)
    import ml_dtypes  # the bfloat16 bench needs it, as bfloat16 arrays do

    return np.dtype(ml_dtypes.bfloat16)


def _half_ceiling(direction: str, x: np.ndarray, s: np.ndarray) -> tuple[Callable, Callable]:
    """The in-place ceiling loop in x's 16-bit storage (widen, multiply, round back)."""
    from ._config import PARALLEL_THRESHOLD
    from ._half import storage_of

    storage = storage_of(x.dtype)
    parallel = x.size >= PARALLEL_THRESHOLD
    nin = 1 if direction == "forward" else 2
    kernel = _kernels._contiguous_kernel(_times, parallel, _kernels.FLAT, nin, in_place=True, storage=storage)
    buf = x.copy()
    bits, saved = buf.view(np.uint16), s.view(np.uint16)
    call = (lambda: kernel(bits, 1.0000001)) if direction == "forward" else (lambda: kernel(saved, bits))
    return call, functools.partial(np.copyto, buf, x)


def measure_half(names: Sequence[str], dtype: str, n: int, budget: float, progress=None) -> list[dict]:
    """Each activation in place in ``dtype`` (16-bit) against the 16-bit in-place ceiling
    and fastact's float32 call of the same size, sampled in turn."""
    half = half_dtype(dtype)
    results = []
    for name in names:
        wide = Case(name, np.dtype(np.float32), n)
        x16, g16 = wide.x.astype(half), wide.grad.astype(half)
        s16 = wide.saved.astype(half)
        p = wide.params
        for direction in ("forward", "backward"):
            forward = direction == "forward"
            fn = fastact_function(name, "_" if forward else "_backward_")
            buf = (x16 if forward else g16).copy()
            source = x16 if forward else g16
            args = (buf,) if forward else (buf, s16)
            pairs = {
                "fastact": (functools.partial(fn, *args, *p), functools.partial(np.copyto, buf, source)),
                "ceiling": _half_ceiling(direction, source, s16),
                "float32": wide.bind("fastact", direction, True),
            }
            warm(*pairs.values())
            t = compare(pairs, budget)
            results.append({"activation": name, "direction": direction, **t})
            if progress is not None:
                progress.step(f"{name} {direction}")
    return results


def format_half(results: list[dict], dtype: str, n: int, threads: int) -> str:
    info = fastact.runtime_info()
    lines = [
        f"fastact {fastact.__version__} bench: {dtype}, {n:,} elements, in place, {threads} threads; "
        f"compiled for {info['cpu']} ({info['simd']})",
        "ceiling = the 16-bit in-place loop x[i] *= a (g[i] *= s[i]) / fastact's time (100%: memory bound); "
        "float32 = fastact's float32 call of the same size / the 16-bit call's time (>1: 16-bit is faster)",
        f"{'activation':<12} | {'forward in place':^28} | {'backward in place':^28}",
        f"{'':<12} | {'time':>9} {'ceiling':>8} {'float32':>9} | {'time':>9} {'ceiling':>8} {'float32':>9}",
        "-" * 74,
    ]
    by = {(r["activation"], r["direction"]): r for r in results}
    for name in dict.fromkeys(r["activation"] for r in results):
        cells = []
        for direction in ("forward", "backward"):
            r = by[name, direction]
            ceiling, wide = r["ceiling"] / r["fastact"], r["float32"] / r["fastact"]
            cells.append(f"{_seconds(r['fastact']):>9} {ceiling:>8.0%} {wide:>8.2f}x")
        lines.append(f"{name:<12} | {cells[0]} | {cells[1]}")
    return "\n".join(lines)


def measure_half_reductions(dtype: str, shape: tuple[int, int], budget: float) -> dict[str, dict[str, float]]:
    """softmax (in place and new), log_softmax, softmax_backward and cross-entropy (loss and
    gradient) on (rows, cols) 16-bit logits: fastact, its float32 call, and torch's 16-bit
    CPU calls where torch is installed."""
    half = half_dtype(dtype)
    wide = make_input(shape[0] * shape[1], np.float32, 1).reshape(shape)
    x = wide.astype(half)
    target = np.random.default_rng(4).integers(0, shape[1], shape[0])
    y = fastact.softmax(x)
    g = make_input(x.size, np.float32, 2).reshape(shape).astype(half)
    g32 = g.astype(np.float32)
    ops = {
        "softmax_": (lambda a: fastact.softmax_(a), lambda t: torch.softmax(t, -1)),
        "softmax": (lambda a: fastact.softmax(a), lambda t: torch.softmax(t, -1)),
        "log_softmax": (lambda a: fastact.log_softmax(a), lambda t: torch.log_softmax(t, -1)),
        "softmax_backward": (
            lambda a: fastact.softmax_backward(g if a.dtype == half else g32, a),
            lambda t: torch._softmax_backward_data(tg, t, -1, t.dtype),
        ),
        "cross_entropy": (
            lambda a: fastact.softmax_cross_entropy(a, target),
            lambda t: torch.autograd.grad(torch.nn.functional.cross_entropy(t, tt), t),
        ),
    }
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        from .torch import _tensor

        tx = _tensor(x.copy())
        tg, tt = _tensor(g.copy()), torch.from_numpy(target)
        ty = _tensor(y.copy())
    results = {}
    for name, (fa_call, torch_call) in ops.items():
        arg16 = y if name == "softmax_backward" else x
        arg32 = arg16.astype(np.float32)
        buf16, buf32 = arg16.copy(), arg32.copy()
        pairs = {
            "fastact": (lambda c=fa_call, b=buf16: c(b), functools.partial(np.copyto, buf16, arg16)),
            "float32": (lambda c=fa_call, b=buf32: c(b), functools.partial(np.copyto, buf32, arg32)),
        }
        if torch is not None:
            targ = ty if name == "softmax_backward" else tx
            if name == "cross_entropy":
                targ = tx.clone().requires_grad_()
            pairs["torch"] = (lambda c=torch_call, t=targ: c(t), None)
        warm(*pairs.values())
        results[name] = compare(pairs, budget)
    return results


def format_half_reductions(results: dict, dtype: str, shape: tuple[int, int]) -> str:
    lines = [
        f"{dtype} reductions on ({shape[0]:,}, {shape[1]:,}) logits, along the last axis: time, and "
        "float32 / torch time over fastact's (>1: fastact's 16-bit call is faster)",
        f"{'op':<18} {'fastact':>9} {'float32':>9} {'torch':>9}",
    ]
    for name, t in results.items():
        torch_cell = f"{t['torch'] / t['fastact']:.2f}x" if "torch" in t else "-"
        lines.append(
            f"{name:<18} {_seconds(t['fastact']):>9} {t['float32'] / t['fastact']:>8.2f}x {torch_cell:>9}"
        )
    return "\n".join(lines)


# --- fused ops --------------------------------------------------------------------------

# bias_act's rows: the activations of the targets (gelu, gelu tanh, silu, relu)
FUSED_BIAS = (("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}), ("relu", {}))


def fused_ops() -> list[tuple[str, str, str, dict]]:
    """(label, kind, name, keywords) of every fused op the bench times: each gated unit and
    each choice of its parameters (from GATED_UNITS), glu, bias_act with FUSED_BIAS."""
    ops = []
    for unit in GATED_UNITS.values():
        chooser = next((p for p in unit.params if p.choices), None)
        for suffix, kname in unit.variants().items():
            kw = (
                {}
                if chooser is None
                else {chooser.name: next(c for c, e in chooser.choices.items() if e == kname)}
            )
            ops.append((unit.name + suffix, "halves" if unit.halves else "gated", unit.name, kw))
    for name, kw in FUSED_BIAS:
        ops.append((f"bias_{name}" + "".join(f"_{v}" for v in kw.values()), "bias", name, kw))
    return ops


@njit(forceinline=True)
def _times2(g, a, b):
    return g * a, g * b


@njit(forceinline=True)
def _times_biased(g, s, c):
    return g * s + c


_FUSED_CEILING: dict = {}


def _fused_ceiling(kind: str):
    """The ceiling loops of the fused ops (compiled once): the fused kernels' own loops
    around multiplications."""
    if kind not in _FUSED_CEILING:
        for scalar in (_times, _times2, _times_biased):
            _kernels.pin_uuid(scalar)
        flat, rows = _kernels.FLAT, _kernels.ROWS
        _FUSED_CEILING[kind] = {
            "3": lambda p: _kernels._contiguous_kernel(_times, p, flat, 2, False),  # out = a * b
            "5": lambda p: _fused_kernels._gated_kernel(_times2, p, flat, True),  # a, b = g * a, g * b
            "bias2": lambda p: _kernels._contiguous_kernel(_times, p, rows, 2, False),  # out = x * c
            "bias3": lambda p: _fused_kernels._bias_rows_kernel(_times_biased, p, True),  # g = g*s + c, dbias
        }[kind](True)
    return _FUSED_CEILING[kind]


def _torch_act(name: str, kw: dict):
    import torch.nn.functional as F

    if name == "gelu":
        return lambda t: F.gelu(t, **kw)
    return getattr(F, name) if hasattr(F, name) else getattr(__import__("torch"), name)


def _resetting(call, pairs):
    """(call, reset) restoring each (buffer, source) of ``pairs``."""
    return call, lambda: [np.copyto(buf, src) for buf, src in pairs]


def fused_pairs(kind: str, name: str, kw: dict, dtype: str, n: int, shape: tuple[int, int], torch_too: bool):
    """{direction: {impl: (call, reset)}} for one fused op."""
    fa = fastact
    if kind == "bias":
        rows, cols = shape
        x = make_input(rows * cols, dtype, 1).reshape(rows, cols)
        g = make_input(rows * cols, dtype, 2).reshape(rows, cols)
        bias = make_input(cols, dtype, 3)
        entry = _fused.resolve(name, kw)[0]
        saved = fa.bias_act(x, bias, name, **kw) if entry.saves == "output" else x
        out, gbuf = np.empty_like(x), g.copy()
        c = np.broadcast_to(bias, x.shape)
        partial = np.zeros((_fused_kernels.chunks(rows), cols))
        fwd = {
            "fastact": (lambda: fa.bias_act(x, bias, name, out=out, **kw), None),
            "ceiling": (lambda: _fused_ceiling("bias2")(x, c, out), None),
        }
        bwd = {
            "fastact": _resetting(lambda: fa.bias_act_backward_(gbuf, saved, bias, name, **kw), [(gbuf, g)]),
            "ceiling": _resetting(lambda: _fused_ceiling("bias3")(saved, bias, gbuf, partial), [(gbuf, g)]),
        }
        if torch_too:
            import torch

            act = _torch_act(name, kw)
            xt, bt, gt = torch.from_numpy(x), torch.from_numpy(bias), torch.from_numpy(g)
            fwd["torch"] = (lambda: act(xt + bt), None)
            lx, lb = xt.clone().requires_grad_(), bt.clone().requires_grad_()
            y = act(lx + lb)
            bwd["autograd"] = (lambda: torch.autograd.grad(y, (lx, lb), gt, retain_graph=True), None)
        return {"forward": fwd, "backward": bwd}
    m = n if kind == "gated" else n // 2  # glu: x of n elements, halves of n / 2
    a, b, g = (make_input(m, dtype, s) for s in (1, 2, 3))
    out, abuf, bbuf = np.empty_like(a), a.copy(), b.copy()
    fwd = {"ceiling": (lambda: _fused_ceiling("3")(a, b, out), None)}
    bwd = {"ceiling": _resetting(lambda: _fused_ceiling("5")(g, abuf, bbuf), [(abuf, a), (bbuf, b)])}
    if kind == "gated":
        f, fb = getattr(fa, name), getattr(fa, name + "_backward_")
        fwd["fastact"] = (lambda: f(a, b, out=out, **kw), None)
        bwd["fastact"] = _resetting(lambda: fb(g, abuf, bbuf, **kw), [(abuf, a), (bbuf, b)])
    else:
        cols = min(m, 2048)
        x = np.concatenate([b.reshape(-1, cols), a.reshape(-1, cols)], axis=1)  # glu(x) = b * s(a)
        gx, o2 = g.reshape(-1, cols), out.reshape(-1, cols)
        fwd["fastact"] = (lambda: fa.glu(x, out=o2), None)
        bwd["fastact"] = (lambda: fa.glu_backward(gx, x), None)
    if torch_too:
        import torch

        at, bt, gt, outt = (torch.from_numpy(v) for v in (a, b, g, out))
        if kind == "gated":
            act = _torch_act(GATED_UNITS[name].activation, kw)
            fwd["torch"] = (lambda: act(at) * bt, None)
            fwd["torch out="] = (lambda: torch.mul(act(at), bt, out=outt), None)
            la, lb = at.clone().requires_grad_(), bt.clone().requires_grad_()
            y = act(la) * lb
            bwd["autograd"] = (lambda: torch.autograd.grad(y, (la, lb), gt, retain_graph=True), None)
        else:
            xt = torch.from_numpy(x)
            fwd["torch"] = (lambda: torch.nn.functional.glu(xt, -1), None)
            o2t = torch.from_numpy(o2)
            fwd["torch out="] = (lambda: torch.ops.aten.glu.out(xt, -1, out=o2t), None)
            lx = xt.clone().requires_grad_()
            y = torch.nn.functional.glu(lx, -1)
            gxt = torch.from_numpy(gx)
            bwd["autograd"] = (lambda: torch.autograd.grad(y, lx, gxt, retain_graph=True), None)
    return {"forward": fwd, "backward": bwd}


def measure_fused(
    dtype: str, n: int, shape: tuple[int, int], torch_too: bool, budget: float, progress=None
) -> list[dict]:
    """Best seconds of every fused op and its peers, each direction sampled in turn."""
    results = []
    for label, kind, name, kw in fused_ops():
        for direction, pairs in fused_pairs(kind, name, kw, dtype, n, shape, torch_too).items():
            warm(*pairs.values())
            t = compare(pairs, budget, repeats=7)
            results.append({"op": label, "direction": direction, **t})
            if progress is not None:
                progress.step(f"{label} {direction}")
    return results


def format_fused(results: list[dict], dtype: str, n: int, shape: tuple[int, int]) -> str:
    """One line per op and direction: fastact's time, each peer's time / fastact's, ceiling %."""
    peers = ["torch", "torch out=", "autograd"]
    lines = [
        f"fused ops, {dtype}: gated units on a, b of {n:,} elements each (glu: x of {n:,}), "
        f"bias_act on {shape[0]}x{shape[1]}; {numba.get_num_threads()} threads",
        "forward: name(a, b, out=), bias_act(x, bias, act, out=); backward in place: name_backward_(g, a, b),"
        " glu_backward(g, x), bias_act_backward_(g, saved, bias, act) (dx and dbias)",
        "peer columns: peer time / fastact time (>1: fastact faster); ceiling: ceiling time / fastact time "
        "(forward 3 streams, gated backward 5, bias_act 2 and 3)",
        f"{'op':<16} {'direction':<9} {'fastact':>9} "
        + " ".join(f"{p:>10}" for p in peers)
        + f" {'ceiling':>8}",
    ]
    for r in results:
        cells = " ".join(f"{r[p] / r['fastact']:>9.2f}x" if p in r else f"{'-':>10}" for p in peers)
        ceiling = r["ceiling"] / r["fastact"]
        lines.append(f"{r['op']:<16} {r['direction']:<9} {_seconds(r['fastact']):>9} {cells} {ceiling:>8.0%}")
    return "\n".join(lines)


# --- linear cross-entropy ------------------------------------------------------------------

LINEAR_XENT_SHAPE = (4096, 1024, 32000)  # N x H x V: the language-model head
LINEAR_XENT_QUICK = (1024, 512, 8192)


def linear_xent_calls(
    shape: tuple[int, int, int], dtype: str, peers: Sequence[str] = (), chunk_sizes: Sequence[int] = ()
) -> dict[str, tuple[Callable, None]]:
    """(call, None) per implementation: fastact (chunk_size None, then each of
    ``chunk_sizes``), naive numpy, and the torch peers this torch has."""
    from ._baselines import linear_cross_entropy as naive

    n, h, v = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h)).astype(dtype)
    w = (rng.standard_normal((v, h)) * 0.02).astype(dtype)
    t = rng.integers(0, v, n)
    calls = {"fastact": (functools.partial(fastact.linear_cross_entropy, x, w, t), None)}
    for c in chunk_sizes:
        calls[f"fastact chunk {c}"] = (
            functools.partial(fastact.linear_cross_entropy, x, w, t, chunk_size=c),
            None,
        )
    calls["numpy"] = (functools.partial(naive, x, w, t), None)
    if any(PEER_MODULES[p] == "torch" for p in peers):
        import torch

        F = torch.nn.functional
        xt, wt, tt = (
            torch.from_numpy(x).requires_grad_(),
            torch.from_numpy(w).requires_grad_(),
            torch.from_numpy(t),
        )

        def step(loss_fn):
            def call():
                xt.grad = wt.grad = None
                loss_fn().backward()

            return call, None

        if hasattr(F, "linear_cross_entropy"):
            calls["torch F.linear_cross_entropy"] = step(lambda: F.linear_cross_entropy(xt, wt, tt))
            if hasattr(torch.nn, "LinearCrossEntropyOptions"):
                options = torch.nn.LinearCrossEntropyOptions()
                calls["torch chunked (options)"] = step(
                    lambda: F.linear_cross_entropy(xt, wt, tt, options=options)
                )
        calls["torch cross_entropy(x @ W.T)"] = step(lambda: F.cross_entropy(xt @ wt.T, tt))
    return calls


def measure_linear_xent(
    shape: tuple[int, int, int],
    dtype: str,
    peers: Sequence[str] = (),
    chunk_sizes: Sequence[int] = (),
    budget: float = 0.1,
    repeats: int = 3,
) -> dict[str, float]:
    """Best seconds per call of each implementation, sampled in turn."""
    calls = linear_xent_calls(shape, dtype, peers, chunk_sizes)
    warm(*calls.values())
    return compare(calls, budget, repeats)


def format_linear_xent(shape: tuple[int, int, int], dtype: str, threads: int, times: dict[str, float]) -> str:
    n, h, v = shape
    logits = n * v * np.dtype(dtype).itemsize
    lines = [
        f"linear_cross_entropy: N={n:,} H={h:,} V={v:,} {dtype} (logits {logits / 2**20:,.0f} MiB), "
        f"loss + dinput + dW, {threads} threads; ratio = its time / fastact's (>1: fastact is faster)",
        f"fastact chunk_size=None: {fastact_chunk_rows(shape, dtype)} rows",
    ]
    width = max(len(k) for k in times)
    for name, t in times.items():
        lines.append(f"  {name:<{width}}  {_seconds(t):>10}  {t / times['fastact']:6.2f}x")
    return "\n".join(lines)


def fastact_chunk_rows(shape: tuple[int, int, int], dtype: str) -> int:
    from ._linear_xent import default_chunk_rows

    n, _, v = shape
    return default_chunk_rows(n, v, np.dtype(dtype).itemsize)


def _shape3(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected NxHxV, got {text!r}")
    return tuple(_positive(p) for p in parts)  # type: ignore[return-value]


# --- the serial/parallel crossover ------------------------------------------------------


def crossover(
    names: Sequence[str], dtype: str, sizes: Sequence[int], budget: float = 0.05, progress=None
) -> dict[str, list[tuple[int, float, float]]]:
    """{name: [(n, serial s, parallel s)]}: the forward kernels, out of place, 1-d."""
    from ._kernels import forward_kernels

    _start_threads()
    result = {}
    for name in names:
        kernels = forward_kernels(name)
        timings = []
        for n in sizes:
            x = make_input(n, dtype, seed=3)
            out = np.empty_like(x)
            p = kernel_params(name, x.dtype)
            number = max(1, 20000 // n)  # samples of ~10 us or more
            pairs = {}
            for flavour in ("serial", "parallel"):
                call = functools.partial(_repeat, getattr(kernels, flavour), number, x, out, *p)
                pairs[flavour] = (call, None)
            warm(*pairs.values())
            t = compare(pairs, budget, repeats=5)
            timings.append((n, t["serial"] / number, t["parallel"] / number))
            if progress is not None:
                progress.step(f"{name} {n}")
        result[name] = timings
    return result


def _repeat(kernel, number, *args):
    for _ in range(number):
        kernel(*args)


def _start_threads() -> None:
    """Start numba's threading layer as fastact does (it may load TBB first)."""
    from ._threading import gate

    gate()


def crossing(timings: Sequence[tuple[int, float, float]]) -> int | None:
    """Smallest measured n from which parallel beats serial at every larger n."""
    best = None
    for n, serial, parallel in reversed(timings):
        if parallel >= serial:
            break
        best = n
    return best


def suggest_threshold(result: dict[str, list[tuple[int, float, float]]]) -> tuple[int, float]:
    """The threshold (a measured size) minimising the worst slowdown over all
    activations and sizes against always picking the faster kernel; (n, slowdown)."""
    sizes = [n for n, _, _ in next(iter(result.values()))]
    best = None
    for threshold in [*sizes, sizes[-1] * 2]:
        worst = max(
            (p if n >= threshold else s) / min(s, p) for timings in result.values() for n, s, p in timings
        )
        if best is None or worst < best[1] - 1e-9:
            best = (threshold, worst)
    return best


def format_crossover(result: dict, dtype: str) -> str:
    from ._config import PARALLEL_THRESHOLD

    names = list(result)
    lines = [
        f"serial vs parallel forward kernels, {dtype}, {numba.get_num_threads()} threads "
        "(parallel/serial time: < 1 means parallel wins)",
        f"{'n':>9} " + " ".join(f"{name + ' serial':>16} {'parallel':>10} {'ratio':>6}" for name in names),
    ]
    for i, (n, *_) in enumerate(result[names[0]]):
        cells = []
        for name in names:
            _, s, p = result[name][i]
            cells.append(f"{_seconds(s):>16} {_seconds(p):>10} {p / s:>6.2f}")
        lines.append(f"{n:>9} " + " ".join(cells))
    for name in names:
        at = crossing(result[name])
        lines.append(f"crossover {name}: {'none measured' if at is None else f'{at:,} elements'}")
    threshold, worst = suggest_threshold(result)
    largest = result[names[0]][-1][0]
    where = f"{threshold:,}" if threshold <= largest else f"> {largest:,} (parallel never paid off)"
    lines.append(
        f"suggested PARALLEL_THRESHOLD = {where} (worst slowdown {worst:.2f}x vs the best kernel; "
        f"current {PARALLEL_THRESHOLD:,})"
    )
    return "\n".join(lines)


# --- SIMD levels -----------------------------------------------------------------------

# An AVX2 CPU without AVX-512 for numba to compile for, and torch's name for each level.
SIMD_TARGETS = {"avx2": "znver3", "avx512": None}
_SIMD_ENV = "_FASTACT_BENCH_SIMD"  # set in the subprocess: the level is already applied


def simd_environment(level: str, host_features: str | None = None) -> dict[str, str]:
    """Environment variables that make numba compile for ``level`` and torch run its
    ``level`` kernels. Raises ValueError when the host lacks the level."""
    if host_features is None:
        import llvmlite.binding as llvm

        host_features = llvm.get_host_cpu_features().flatten()
    flags = [f for f in host_features.split(",") if f]
    has = {f[1:] for f in flags if f.startswith("+")}
    needs = {"avx2": {"avx2", "fma"}, "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"}}[level]
    if not needs <= has:
        raise ValueError(f"this CPU has no {level} (missing {', '.join(sorted(needs - has))})")
    env = {"ATEN_CPU_CAPABILITY": level, _SIMD_ENV: level}
    if SIMD_TARGETS[level] is not None:
        env["NUMBA_CPU_NAME"] = SIMD_TARGETS[level]
        env["NUMBA_CPU_FEATURES"] = ",".join("-" + f[1:] if f.startswith("+avx512") else f for f in flags)
    return env


def _run_at_simd(level: str, argv: Sequence[str]) -> int:
    """Run ``python -m fastact bench argv`` with fastact and torch built for ``level``."""
    try:
        env = simd_environment(level)
    except ValueError as exc:
        print(f"--simd {level}: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix=f"fastact-{level}-cache-") as cache:
        if "NUMBA_CPU_NAME" in env:  # kernels for another CPU: never mix them with the host's
            env["NUMBA_CACHE_DIR"] = cache
        command = [sys.executable, "-m", "fastact", "bench", *argv]
        return subprocess.run(command, env={**os.environ, **env}).returncode


# --- command line -----------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# --- masked (causal) softmax -------------------------------------------------------------

CAUSAL_SHAPE = (16, 2048, 2048)  # heads x queries x keys
CAUSAL_SCALE = 0.125  # 1 / sqrt(64)


def causal_softmax_calls(
    shape: tuple[int, int, int] = CAUSAL_SHAPE, peers: bool = True
) -> dict[str, Callable]:
    """The calls timed by ``--causal-softmax``, on float32 ``shape`` data and a causal
    (queries x keys) mask broadcast over the heads: fastact with scale and where (into
    ``out``), the same fastact call without them, and (``peers``, if installed) torch's
    ``torch.softmax(x.masked_fill(~where, -inf) * scale, -1)``."""
    _, q, k = shape
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    where = np.tril(np.ones((q, k), bool))
    out = np.empty_like(x)
    calls = {
        "fastact masked": lambda: fastact.softmax(x, scale=CAUSAL_SCALE, where=where, out=out),
        "fastact unmasked": lambda: fastact.softmax(x, out=out),
    }
    if peers and "torch" in available_peers():
        import torch

        xt, wt = torch.from_numpy(x), torch.from_numpy(where)
        calls["torch masked_fill"] = lambda: torch.softmax(
            xt.masked_fill(~wt, float("-inf")) * CAUSAL_SCALE, -1
        )
    return calls


def causal_softmax(shape: tuple[int, int, int] = CAUSAL_SHAPE, repeats: int = 7) -> dict[str, float]:
    """Best seconds of each of :func:`causal_softmax_calls`, sampled in turn (min of ``repeats``)."""
    calls = causal_softmax_calls(shape)
    for call in calls.values():
        call()  # compile / load, and fault the pages in
    return compare({name: (call, None) for name, call in calls.items()}, budget=0.0, repeats=repeats)


def _main_causal(args) -> int:
    side = 1 << max(1, int(math.log2(args.size)) // 2) if args.size else 0
    shape = CAUSAL_SHAPE if not side else (1, side, side)
    with _Threads(["torch"] if "torch" in available_peers() else []) as threads:
        best = causal_softmax(shape, repeats=3 if args.quick else 7)
    base = best["fastact unmasked"]
    print(
        f"softmax(x * {CAUSAL_SCALE}, where=causal) float32 {'x'.join(map(str, shape))}, "
        f"{threads} threads, best of {3 if args.quick else 7} rounds in turn:"
    )
    for name, t in best.items():
        print(f"  {name:18s} {t * 1e3:9.2f} ms  {t / base:5.2f}x fastact unmasked")
    if args.json:
        _write_json(args.json, {"shape": shape, "threads": threads, "seconds": best})
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastact bench",
        description="Time fastact's in-place forward and backward against naive numpy, "
        "peers and the in-place memory ceiling; or find the serial/parallel crossover.",
    )
    parser.add_argument("--quick", action="store_true", help="1M elements, short timings (a few seconds)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64", *HALF_DTYPES),
        help="default float32 (--torch-crossover: both); bfloat16/float16: the in-place table against "
        "the 16-bit ceiling and the float32 calls, then softmax and cross-entropy against torch's "
        "16-bit calls",
    )
    parser.add_argument(
        "--size", type=_positive, help="elements (default 4M, 1M with --quick; crossover: the largest)"
    )
    parser.add_argument("--peers", action="store_true", help="also torch, numexpr and scipy if installed")
    parser.add_argument(
        "--activation", nargs="+", metavar="NAME", choices=list(ACTIVATIONS), help="only these (default: all)"
    )
    parser.add_argument("--crossover", action="store_true", help="serial/parallel crossover (1K..1M)")
    parser.add_argument(
        "--torch-crossover",
        action="store_true",
        help="fastact.torch against torch's own ops, forward + backward through autograd, 1K..16M "
        "elements (--dtype, or both): the sizes below which fastact.torch calls torch's op "
        "(fastact._config.TORCH_CROSSOVER)",
    )
    parser.add_argument(
        "--op",
        nargs="+",
        metavar="NAME",
        choices=list(OPS),
        dest="ops",
        help="--torch-crossover: only these ops",
    )
    parser.add_argument(
        "--fused",
        action="store_true",
        help="the fused ops (gated units, glu, bias_act) against torch's composition and their ceilings",
    )
    parser.add_argument(
        "--bias-shape", default=None, metavar="RxC", help="bias_act's shape with --fused (default 8192x4096)"
    )
    parser.add_argument(
        "--linear-xent", action="store_true", help="linear_cross_entropy (loss and gradients) instead"
    )
    parser.add_argument("--shape", type=_shape3, help="--linear-xent: NxHxV (default 4096x1024x32000)")
    parser.add_argument(
        "--chunk-size", type=_positive, nargs="+", default=[], help="--linear-xent: also these chunk sizes"
    )
    parser.add_argument(
        "--simd",
        choices=("native", *SIMD_TARGETS),
        default="native",
        help="compile fastact for this x86 SIMD level and run torch's kernels for it, in a subprocess "
        "(avx2 on an AVX-512 host: what most laptops and desktops run); default: the host's",
    )
    parser.add_argument(
        "--causal-softmax",
        action="store_true",
        help="softmax with a scale and a causal mask on 16x2048x2048 float32 (--size: one LxL head "
        "of about that many elements): fastact masked, unmasked, torch's masked_fill composition",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the measurements as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _main_half(args, names: Sequence[str], n: int, show: bool) -> int:
    budget = 0.02 if args.quick else 0.25
    progress = Progress(2 * len(names), show)
    try:
        results = measure_half(names, args.dtype, n, budget, progress)
    finally:
        progress.close()
    print(format_half(results, args.dtype, n, numba.get_num_threads()))
    shape = (max(1, n // 32768), 32768) if n >= 32768 else (1, n)
    reductions = measure_half_reductions(args.dtype, shape, budget)
    print()
    print(format_half_reductions(reductions, args.dtype, shape))
    if args.json:
        _write_json(args.json, {"dtype": args.dtype, "n": n, "rows": results, "reductions": reductions})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastact bench ...``; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (already printed)
        return int(exc.code or 0)
    args.dtype_given, args.dtype = args.dtype is not None, args.dtype or "float32"
    if args.simd != "native" and os.environ.get(_SIMD_ENV) != args.simd:
        return _run_at_simd(args.simd, list(sys.argv[1:] if argv is None else argv))
    names = args.activation or list(ACTIVATIONS)
    show = not args.no_progress and sys.stderr.isatty()
    if args.torch_crossover:
        return _main_torch_crossover(args, show)
    if args.crossover:
        return _main_crossover(args, args.activation or ["relu", "gelu"], show)
    if args.fused:
        return _main_fused(args, show)
    if args.linear_xent:
        return _main_linear_xent(args)
    if args.causal_softmax:
        return _main_causal(args)
    n = args.size or (1 << 20 if args.quick else 1 << 22)
    if args.dtype in HALF_DTYPES:
        return _main_half(args, names, n, show)
    peers = available_peers() if args.peers else []
    budget = 0.02 if args.quick else 0.25
    progress = Progress(2 * len(names), show)
    with _Threads(peers) as threads:
        try:
            rows = measure(names, args.dtype, n, peers, budget, progress)
        finally:
            progress.close()
    print(header(args.dtype, n, threads, peers, rows))
    print(format_table(rows, ["numpy", *peers]))
    if args.json:
        _write_json(args.json, {"dtype": args.dtype, "n": n, "threads": threads, "rows": rows})
    return 0


def _main_linear_xent(args) -> int:
    shape = args.shape or (LINEAR_XENT_QUICK if args.quick else LINEAR_XENT_SHAPE)
    peers = available_peers() if args.peers else []
    with _Threads(peers) as threads:
        times = measure_linear_xent(
            shape, args.dtype, peers, args.chunk_size, budget=0.0 if args.quick else 0.1
        )
    print(format_linear_xent(shape, args.dtype, threads, times))
    if args.json:
        _write_json(args.json, {"dtype": args.dtype, "shape": shape, "threads": threads, "seconds": times})
    return 0


def _main_crossover(args, names: list[str], show: bool) -> int:
    top = args.size or (1 << 20)
    sizes = [n for n in (1 << k for k in range(10, 31)) if n <= top] or [top]
    progress = Progress(len(names) * len(sizes), show, "fastact crossover")
    try:
        result = crossover(names, args.dtype, sizes, budget=0.02 if args.quick else 0.1, progress=progress)
    finally:
        progress.close()
    print(format_crossover(result, args.dtype))
    if args.json:
        _write_json(args.json, {"dtype": args.dtype, "crossover": result})
    return 0


def _main_torch_crossover(args, show: bool) -> int:
    from . import _bench_torch as bt

    if "torch" not in available_peers():
        print("--torch-crossover needs torch (pip install fastact[torch])", file=sys.stderr)
        return 2
    names = args.ops or bt.ops_with_torch()
    dtypes = [args.dtype] if args.dtype_given else ["float32", "float64"]
    sizes = [n for n in bt.SIZES if n <= (args.size or bt.SIZES[-1])] or [bt.SIZES[0]]
    progress = Progress(len(names) * len(dtypes) * len(sizes), show, "fastact bench --torch-crossover")
    with _Threads(["torch"]) as threads:
        try:
            result = bt.measure(names, dtypes, sizes, n_rounds=3 if args.quick else 7, progress=progress)
        finally:
            progress.close()
        print(bt.format_result(result, threads))
    if args.json:
        _write_json(args.json, {"threads": threads, "torch_crossover": result})
    return 0


def _main_fused(args, show: bool) -> int:
    n = args.size or (1 << 20 if args.quick else 1 << 24)
    spec = args.bias_shape or ("256x4096" if args.quick else "8192x4096")
    try:
        shape = tuple(int(v) for v in spec.lower().split("x"))
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError
    except ValueError:
        print(f"--bias-shape: expected ROWSxCOLS, got {spec!r}", file=sys.stderr)
        return 2
    torch_too = "torch" in available_peers()
    progress = Progress(2 * len(fused_ops()), show, "fastact bench --fused")
    with _Threads(["torch"] if torch_too else []):
        try:
            results = measure_fused(args.dtype, n, shape, torch_too, 0.02 if args.quick else 0.25, progress)
        finally:
            progress.close()
        print(format_fused(results, args.dtype, n, shape))
    if args.json:
        _write_json(args.json, {"dtype": args.dtype, "n": n, "bias_shape": shape, "fused": results})
    return 0


def _write_json(path: str, data: dict) -> None:
    def default(o):
        if isinstance(o, Row):
            return o.__dict__
        raise TypeError(type(o).__name__)

    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=default)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
