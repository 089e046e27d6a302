"""fastact for ``dask.array``: every activation, softmax and cross-entropy, lazily, chunk by chunk.

For every public activation ``name`` (generated from :data:`fastact.ACTIVATIONS`)::

    fastact.dask.name(x, *params)                    -> lazy dask array, y = name(x)
    fastact.dask.name_backward(grad, saved, *params) -> lazy dask array, dL/dx

plus ``softmax``/``log_softmax(x, axis=-1, *, scale=1.0, where=None)``, their backwards
``(grad, y, axis=-1, *, scale=1.0, where=None)`` (``where``: a bool dask or numpy array
broadcast to x and chunked as x), and
``softmax_cross_entropy(logits, target, ...) -> (loss, grad)``. Out of place only (dask
arrays are immutable). Each block runs fastact's CPU kernels through a module-level
function that looks the kernel up by name, so the task graph pickles and runs on
``dask.distributed`` worker processes.

Softmax needs whole rows: an ``axis`` split over several chunks is rechunked into one
chunk along it, with a :class:`PerformanceWarning` saying so. Cross-entropy makes one
fused pass per block of rows (loss and gradient together) and reduces the loss with a
tree sum; "mean" divides by the global denominator (sum of the targets' weights over
rows not ignored, or N for probability targets), summed over blocks the same way.

The fused ops (generated from :data:`fastact.GATED_UNITS`)::

    fastact.dask.swiglu(a, b), geglu(a, b, approximate=...), reglu(a, b)   # f(a) * b, blockwise
    fastact.dask.swiglu_backward(grad, a, b) -> (da, db)                  # one pass per block
    fastact.dask.glu(x, axis=-1), glu_backward(grad, x, axis=-1)          # axis made whole
    fastact.dask.bias_act(x, bias, activation, **params)                  # bias along the last axis
    fastact.dask.bias_act_backward(grad, saved, bias, activation, **params) -> (dx, dbias)

``b`` may broadcast to ``a`` in the forward. glu's axis is rechunked into one chunk (with a
PerformanceWarning) as softmax's. bias_act's bias is chunked like x's last axis; dbias is
the float64 sum of dx's blocks over every axis but the last (dask's tree reduction), cast
to x's dtype.

Dtypes: float32, float64, and float16 / ml_dtypes' bfloat16 (each block computed in float32
by the CPU functions and rounded once, results of the input's dtype; cross-entropy widens
each block of 16-bit logits to float32 and rounds its gradient once, after the "mean"
scaling; bias_act_backward's dbias is then the float64 sum of the 16-bit dx). Dtypes and
parameters are checked when the graph is built; target values (class indices out of range)
only when a block is computed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from fastact import _functions as _fa
from fastact import _softmax as _fa_softmax
from fastact._half import is_bfloat16
from fastact.definitions import ACTIVATIONS, GATED_UNITS, Activation, GatedUnit

try:
    from dask.array import PerformanceWarning
except ImportError:  # pragma: no cover
    from dask.array.core import PerformanceWarning


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))


def _half(dtype: np.dtype) -> bool:
    """float16, or ml_dtypes' bfloat16: stored in 16 bits, computed in float32 per block."""
    return dtype.itemsize == 2 and (dtype.kind == "f" or is_bfloat16(dtype))


def _as_dask(x: object, name: str) -> da.Array:
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    if x.dtype not in _FLOATS and not is_bfloat16(x.dtype):
        raise TypeError(
            f"{name} must be a float32 or float64 array (or float16, or ml_dtypes' bfloat16), "
            f"got dtype {x.dtype}"
        )
    return x


# --- block functions (module level: they pickle by name) -----------------------------


def _apply(*blocks: np.ndarray, fname: str, params: tuple) -> np.ndarray:
    """One block of ``fastact.<fname>(*blocks, *params)``, run on a worker."""
    return getattr(_fa, fname)(*blocks, *params)


def _apply_softmax(*blocks: np.ndarray, fname: str, axis: int) -> np.ndarray:
    return getattr(_fa, fname)(*blocks, axis)


def _apply_masked_softmax(
    *blocks: np.ndarray, fname: str, axis: int, scale: float, masked: bool
) -> np.ndarray:
    """As _apply_softmax with scale= and, if ``masked``, the last block as where=."""
    where = blocks[-1] if masked else None
    return getattr(_fa, fname)(*(blocks[:-1] if masked else blocks), axis, scale=scale, where=where)


def _xent_block(logits, target, weight, ignore_index, reduction, label_smoothing):
    """(loss, grad, denominator) of one block of rows; loss summed in float64 unless "none".
    16-bit logits (and probabilities) are widened to float32 here, and the float32 gradient
    and "none" losses returned: the graph scales them and rounds them to the logits' dtype
    once."""
    if _half(logits.dtype):
        logits = logits.astype(np.float32)
        if target.dtype.kind not in "iu":
            target = target.astype(np.float32)
    loss, grad = _fa.softmax_cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction="none" if reduction == "none" else "sum",
        label_smoothing=label_smoothing,
    )
    if target.dtype.kind in "iu":
        t = target.astype(np.int64, copy=False)
        valid = t != ignore_index
        den = (
            float(np.asarray(weight, logits.dtype)[t[valid]].sum(dtype=np.float64))
            if weight is not None
            else float(valid.sum())
        )
    else:
        den = float(logits.shape[0])
    loss = np.asarray(loss) if reduction == "none" else np.array([loss], np.float64)
    return loss, grad, np.array([den])


def _item(parts: tuple, i: int) -> np.ndarray:
    return parts[i]


# --- elementwise activations ---------------------------------------------------------


def _named(name: str, forward: Callable, forward_doc: str, backward: Callable, backward_doc: str) -> dict:
    """{name: forward, name_backward: backward}, each named and documented as public."""
    for f, n, doc in ((forward, name, forward_doc), (backward, name + "_backward", backward_doc)):
        f.__name__ = f.__qualname__ = n
        f.__module__ = __name__
        f.__doc__ = doc
    return {name: forward, name + "_backward": backward}


def _make(entry: Activation) -> dict[str, Callable]:
    name = entry.name

    def forward(x: da.Array, *params) -> da.Array:
        x = _as_dask(x, "x")
        getattr(_fa, name)(np.empty(0, x.dtype), *params)  # checks params now, eagerly
        return da.map_blocks(_apply, x, fname=name, params=params, dtype=x.dtype, token=f"fastact-{name}")

    def backward(grad: da.Array, saved: da.Array, *params) -> da.Array:
        grad = _as_dask(grad, "grad")
        saved = _as_dask(saved, "saved")
        if grad.shape != saved.shape or grad.dtype != saved.dtype:
            raise ValueError(
                f"saved has shape/dtype {saved.shape}/{saved.dtype}, grad {grad.shape}/{grad.dtype}"
            )
        getattr(_fa, name + "_backward")(np.empty(0, grad.dtype), np.empty(0, grad.dtype), *params)
        saved = saved.rechunk(grad.chunks)
        return da.map_blocks(
            _apply, grad, saved, fname=name + "_backward", params=params, dtype=grad.dtype,
            token=f"fastact-{name}_backward",
        )  # fmt: skip

    saved = "output y" if entry.saves == "output" else "input x"
    sig = "".join(f", {p.name}" + ("" if p.default is None else f"={p.default!r}") for p in entry.params)
    return _named(
        name,
        forward,
        f"{name}(x{sig}) of a dask array, lazily: y = {entry.formula}.",
        backward,
        f"{name}_backward(grad, saved{sig}) of dask arrays, lazily: grad * ({entry.derivative}); "
        f"saved is the forward {saved}.",
    )


# --- softmax ---------------------------------------------------------------------------


def _whole_axis(x: da.Array, axis: int, what: str) -> tuple[da.Array, int]:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    if not -max(x.ndim, 1) <= axis < max(x.ndim, 1):
        raise ValueError(f"axis {axis} is out of bounds for an array of {x.ndim} dimensions")
    axis = int(axis) % max(x.ndim, 1)
    if x.ndim and len(x.chunks[axis]) > 1:
        warnings.warn(
            f"fastact.dask.{what}: axis {axis} is split into {len(x.chunks[axis])} chunks; rechunking it "
            f"into one chunk of {x.shape[axis]} ({what} needs the whole axis). Chunk the array so that "
            f"axis {axis} is whole to avoid this.",
            PerformanceWarning,
            stacklevel=3,
        )
        x = x.rechunk({axis: -1})
    return x, axis


def _where(where: object, x: da.Array) -> da.Array | None:
    """``where`` (a bool dask or numpy array) broadcast to x's shape and chunked as x."""
    if where is None:
        return None
    w = where if isinstance(where, da.Array) else da.asarray(np.asarray(where))
    if w.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {w.dtype}")
    try:
        w = da.broadcast_to(w, x.shape)
    except ValueError:
        raise ValueError(f"where has shape {w.shape}, which does not broadcast to {x.shape}") from None
    return w.rechunk(x.chunks)


def _run_softmax(fname: str, arrays: list[da.Array], axis: int, scale: object, where: object) -> da.Array:
    """map_blocks of fastact.<fname> over ``arrays`` (chunked alike), with scale= and where=
    when they are not the defaults (then checked here, where the graph is built)."""
    first = arrays[0]
    token = f"fastact-{fname}"
    if where is None and type(scale) is float and scale == 1.0:
        return da.map_blocks(_apply_softmax, *arrays, fname=fname, axis=axis, dtype=first.dtype, token=token)
    c = _fa_softmax._scale(scale)
    w = _where(where, first)
    blocks = [*arrays, w] if w is not None else arrays
    return da.map_blocks(
        _apply_masked_softmax,
        *blocks,
        fname=fname,
        axis=axis,
        scale=c,
        masked=w is not None,
        dtype=first.dtype,
        token=token + "-masked",
    )


def _softmax_forward(op: str, x: da.Array, axis: int, scale: object, where: object) -> da.Array:
    x, axis = _whole_axis(_as_dask(x, "x"), axis, op)
    return _run_softmax(op, [x], axis, scale, where)


def _softmax_backward(
    op: str, grad: da.Array, y: da.Array, axis: int, scale: object, where: object
) -> da.Array:
    grad = _as_dask(grad, "grad")
    y = _as_dask(y, "y")
    if grad.shape != y.shape or grad.dtype != y.dtype:
        raise ValueError(f"y has shape/dtype {y.shape}/{y.dtype}, grad {grad.shape}/{grad.dtype}")
    grad, axis = _whole_axis(grad, axis, op + "_backward")
    y = y.rechunk(grad.chunks)
    return _run_softmax(op + "_backward", [grad, y], axis, scale, where)


def softmax(x: da.Array, axis: int = -1, *, scale: float = 1.0, where: object = None) -> da.Array:
    """softmax(s x)_i = e^(s x_i - m) / sum_j e^(s x_j - m) along ``axis``, lazily; over the
    entries where ``where`` (a bool dask or numpy array broadcastable to x) is True, the
    others 0 (see :func:`fastact.softmax`)."""
    return _softmax_forward("softmax", x, axis, scale, where)


def log_softmax(x: da.Array, axis: int = -1, *, scale: float = 1.0, where: object = None) -> da.Array:
    """log_softmax(s x)_i = (s x_i - m) - log sum_j e^(s x_j - m) along ``axis``, lazily;
    -inf where ``where`` is False."""
    return _softmax_forward("log_softmax", x, axis, scale, where)


def softmax_backward(
    grad: da.Array, y: da.Array, axis: int = -1, *, scale: float = 1.0, where: object = None
) -> da.Array:
    """s y * (g - sum_j g_j y_j), y = softmax output, lazily; 0 where ``where`` is False."""
    return _softmax_backward("softmax", grad, y, axis, scale, where)


def log_softmax_backward(
    grad: da.Array, y: da.Array, axis: int = -1, *, scale: float = 1.0, where: object = None
) -> da.Array:
    """s (g - e^y * sum_j g_j), y = log_softmax output, lazily; 0 where ``where`` is False."""
    return _softmax_backward("log_softmax", grad, y, axis, scale, where)


# --- cross-entropy ------------------------------------------------------------------------


def softmax_cross_entropy(
    logits: da.Array,
    target: da.Array | np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[da.Array, da.Array]:
    """Lazy ``(loss, grad)`` of :func:`fastact.softmax_cross_entropy` for (N, C) dask logits.

    One fused pass per block of rows; the class axis is made whole (with a warning) if
    split. loss: a 0-d float64 dask array for "mean"/"sum" (tree sum of per-block float64
    sums, "mean" divided by the summed denominators), an (N,) array of logits' dtype for
    "none". grad: dL/dlogits of the returned loss (of sum(loss) for "none").
    """
    logits = _as_dask(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {logits.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    if weight is not None:
        weight = np.asarray(weight)
    # Argument checks (types, shapes, label_smoothing, ignore_index, weight) on a one-row stand-in.
    target = target if isinstance(target, da.Array) else da.asarray(target)
    n, c = logits.shape
    probs = target.dtype.kind not in "iu"
    if probs and target.shape != logits.shape:
        raise ValueError(
            f"target has shape {target.shape}, expected {logits.shape} (probabilities, as logits)"
        )
    if not probs and target.shape != (n,):
        raise ValueError(f"target has shape {target.shape}, expected {(n,)} (class indices, one per row)")
    probe_t = np.zeros((0, c) if probs else 0, target.dtype)
    _fa.softmax_cross_entropy(
        np.zeros((0, c), logits.dtype),
        probe_t,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    logits, _ = _whole_axis(logits, 1, "softmax_cross_entropy")
    rows = logits.chunks[0]
    target = target.rechunk((rows, (c,)) if probs else (rows,))

    token = tokenize(logits, target, weight, ignore_index, reduction, label_smoothing)
    fused = f"fastact-xent-{token}"
    nb = len(rows)
    dsk = {
        (fused, i): (
            _xent_block,
            (logits.name, i, 0),
            (target.name, i, 0) if probs else (target.name, i),
            weight,
            ignore_index,
            reduction,
            label_smoothing,
        )
        for i in range(nb)
    }
    names = {k: f"fastact-xent-{k}-{token}" for k in ("loss", "grad", "den")}
    base = HighLevelGraph.merge(logits.dask, target.dask)
    layers = dict(base.layers)
    deps = dict(base.dependencies)
    layers[fused] = dsk
    deps[fused] = {*logits.__dask_layers__(), *target.__dask_layers__()}
    for k, name in names.items():
        i_item = {"loss": 0, "grad": 1, "den": 2}[k]
        layers[name] = {
            ((name, i, 0) if k == "grad" else (name, i)): (_item, (fused, i), i_item) for i in range(nb)
        }
        deps[name] = {fused}
    graph = HighLevelGraph(layers, deps)

    def array(key: str, chunks: tuple, dtype) -> da.Array:
        return da.Array(graph, names[key], chunks, dtype=dtype)

    dtype = logits.dtype
    compute = np.dtype(np.float32) if _half(dtype) else dtype  # the blocks' results (see _xent_block)
    grad = array("grad", logits.chunks, compute)
    if reduction == "none":
        return array("loss", (rows,), compute).astype(dtype), grad.astype(dtype)
    total = array("loss", ((1,) * nb,), np.float64).sum()
    if reduction == "sum":
        return total, grad.astype(dtype)
    den = array("den", ((1,) * nb,), np.float64).sum()
    scale = 1.0 / den
    return total * scale, (grad * scale.astype(compute)).astype(dtype)


# --- fused ops ----------------------------------------------------------------------------


def _apply_kw(*blocks: np.ndarray, fname: str, kw: dict) -> np.ndarray:
    """One block of ``fastact.<fname>(*blocks, **kw)``."""
    return getattr(_fa, fname)(*blocks, **kw)


def _apply_pair(*blocks: np.ndarray, fname: str, kw: dict) -> np.ndarray:
    """Both results of a two-result function, stacked along a new leading axis."""
    return np.stack(getattr(_fa, fname)(*blocks, **kw))


def _bias_block(x: np.ndarray, bias: np.ndarray, fname: str, activation: str, params: dict) -> np.ndarray:
    return getattr(_fa, fname)(x, bias, activation, **params)


def _bias_dx_block(
    g: np.ndarray, s: np.ndarray, bias: np.ndarray, activation: str, params: dict
) -> np.ndarray:
    return _fa.bias_act_backward(g, s, bias, activation, **params)[0]


def _make_gated(unit: GatedUnit) -> dict[str, Callable]:
    name = unit.name

    def forward(a: da.Array, b: da.Array, **kw) -> da.Array:
        a, b = _as_dask(a, "a"), _as_dask(b, "b")
        getattr(_fa, name)(np.empty(0, a.dtype), np.empty(0, b.dtype), **kw)  # keywords and dtypes, now
        if not all(n == m or m == 1 for n, m in zip(a.shape[::-1], b.shape[::-1])) or b.ndim > a.ndim:
            raise ValueError(f"b has shape {b.shape}, which does not broadcast to a's shape {a.shape}")
        lead = a.ndim - b.ndim  # b's blocks line up with a's: its axes chunked as a's (or whole, size 1)
        b = b.rechunk(tuple(a.chunks[lead + i] if n != 1 else (1,) for i, n in enumerate(b.shape)))
        return da.map_blocks(_apply_kw, a, b, fname=name, kw=kw, dtype=a.dtype, token=f"fastact-{name}")

    def backward(grad: da.Array, a: da.Array, b: da.Array, **kw) -> tuple[da.Array, da.Array]:
        grad, a, b = _as_dask(grad, "grad"), _as_dask(a, "a"), _as_dask(b, "b")
        if not grad.shape == a.shape == b.shape or not grad.dtype == a.dtype == b.dtype:
            raise ValueError(
                f"grad, a and b need one shape and dtype, got {grad.shape}, {a.shape}, {b.shape}"
            )
        empty = np.empty(0, grad.dtype)
        getattr(_fa, name + "_backward")(empty, empty, empty, **kw)
        a, b = a.rechunk(grad.chunks), b.rechunk(grad.chunks)
        both = da.map_blocks(
            _apply_pair, grad, a, b, fname=name + "_backward", kw=kw, dtype=grad.dtype,
            new_axis=0, chunks=((2,), *grad.chunks), token=f"fastact-{name}_backward",
        )  # fmt: skip
        return both[0], both[1]

    return _named(
        name,
        forward,
        f"{name}(a, b) of dask arrays, lazily: y = {unit.formula}.",
        backward,
        f"{name}_backward(grad, a, b) of dask arrays, lazily: (da, db); {unit.derivative}.",
    )


def _make_halves(unit: GatedUnit) -> dict[str, Callable]:
    name = unit.name

    def halved(x: da.Array, axis: int) -> tuple[da.Array, int, tuple]:
        x, axis = _whole_axis(x, axis, name)
        if x.ndim == 0 or x.shape[axis] % 2:
            raise ValueError(
                f"{name} halves axis {axis}, which must have an even length, got shape {x.shape}"
            )
        chunks = tuple((x.shape[axis] // 2,) if d == axis else c for d, c in enumerate(x.chunks))
        return x, axis, chunks

    def forward(x: da.Array, axis: int = -1) -> da.Array:
        x, axis, chunks = halved(_as_dask(x, "x"), axis)
        return da.map_blocks(
            _apply_kw, x, fname=name, kw={"axis": axis}, dtype=x.dtype, chunks=chunks, token=f"fastact-{name}"
        )

    def backward(grad: da.Array, x: da.Array, axis: int = -1) -> da.Array:
        grad = _as_dask(grad, "grad")
        x, axis, chunks = halved(_as_dask(x, "x"), axis)
        if grad.shape != tuple(map(sum, chunks)) or grad.dtype != x.dtype:
            raise ValueError(
                f"grad has shape/dtype {grad.shape}/{grad.dtype}, expected half of x's along axis"
            )
        grad = grad.rechunk(chunks)
        ind = tuple(range(x.ndim))
        half = tuple(x.ndim if d == axis else d for d in ind)  # one block each along axis: paired
        return da.blockwise(
            _apply_kw, ind, grad, half, x, ind, concatenate=True, fname=name + "_backward",
            kw={"axis": axis}, dtype=x.dtype, token=f"fastact-{name}_backward",
        )  # fmt: skip

    return _named(
        name,
        forward,
        f"{name}(x, axis=-1) of a dask array, lazily: {unit.formula} (as {unit.torch}).",
        backward,
        f"{name}_backward(grad, x, axis=-1) of dask arrays, lazily: dx ({unit.derivative}).",
    )


def _bias_args(x: da.Array, bias, activation: str, params: dict) -> da.Array:
    """bias as a dask array chunked like x's last axis; everything checked on empty stand-ins."""
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the bias is added along its last axis)")
    bias = _as_dask(bias, "bias")
    _fa.bias_act(np.empty((0, x.shape[-1]), x.dtype), np.empty(bias.shape, bias.dtype), activation, **params)
    return bias.rechunk((x.chunks[-1],))


def bias_act(x: da.Array, bias, activation: str, **params) -> da.Array:
    """activation(x + bias) of a dask array, lazily; bias of shape (x.shape[-1],)."""
    x = _as_dask(x, "x")
    bias = _bias_args(x, bias, activation, params)
    ind = tuple(range(x.ndim))
    return da.blockwise(
        _bias_block, ind, x, ind, bias, (x.ndim - 1,), fname="bias_act", activation=activation,
        params=params, dtype=x.dtype, token="fastact-bias_act",
    )  # fmt: skip


def bias_act_backward(grad: da.Array, saved: da.Array, bias, activation: str, **params) -> tuple:
    """(dx, dbias) of bias_act for dask arrays, lazily: dx blockwise, dbias the float64 sum of
    dx over every axis but the last (cast to x's dtype). ``saved`` as in fastact.bias_act_backward."""
    grad, saved = _as_dask(grad, "grad"), _as_dask(saved, "saved")
    if grad.shape != saved.shape or grad.dtype != saved.dtype:
        raise ValueError(f"saved has shape/dtype {saved.shape}/{saved.dtype}, grad {grad.shape}/{grad.dtype}")
    bias = _bias_args(grad, bias, activation, params)
    saved = saved.rechunk(grad.chunks)
    ind = tuple(range(grad.ndim))
    dx = da.blockwise(
        _bias_dx_block, ind, grad, ind, saved, ind, bias, (grad.ndim - 1,), activation=activation,
        params=params, dtype=grad.dtype, token="fastact-bias_act_backward",
    )  # fmt: skip
    dbias = dx.astype(np.float64).sum(axis=tuple(range(grad.ndim - 1))).astype(grad.dtype)
    return dx, dbias


# --- generated names -----------------------------------------------------------------------

_generated: dict[str, Callable] = {}
for _entry in ACTIVATIONS.values():
    if _entry.public:
        _generated.update(_make(_entry))
for _unit in GATED_UNITS.values():
    _generated.update(_make_halves(_unit) if _unit.halves else _make_gated(_unit))
_generated.update(bias_act=bias_act, bias_act_backward=bias_act_backward)
globals().update(_generated)

__all__ = [
    *_generated,
    "softmax",
    "log_softmax",
    "softmax_backward",
    "log_softmax_backward",
    "softmax_cross_entropy",
]
