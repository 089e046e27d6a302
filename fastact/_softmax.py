"""Softmax and log_softmax along any axis, their backwards, and the fused cross-entropy.

::

    softmax(x)_i     = e^(x_i - m) / sum_j e^(x_j - m),        m = max_j x_j
    log_softmax(x)_i = (x_i - m) - log(sum_j e^(x_j - m))
    softmax_backward(g, y)     = y * (g - sum_j g_j y_j)        (y = softmax output)
    log_softmax_backward(g, y) = g - e^y * sum_j g_j            (y = log_softmax output)

Same conventions as the elementwise activations: ``name(x, axis=-1, *, scale=1.0,
where=None, out=None)`` returns a new array (or ``out``), ``name_(x, axis=-1, *, scale=1.0,
where=None)`` overwrites ``x`` and returns it;
float32/float64 only, any number of dimensions and any strides (views are reduced to
2-d or 3-d views, never copied); arguments are checked before anything is written.

``scale`` and ``where`` (masked, scaled softmax: attention scores, temperature): x is
replaced by fl(scale * x) (the product rounded once, in x's dtype) and the reductions run
over the entries where ``where`` (a boolean array broadcastable to x, read in place through
zero strides, never copied) is True, as ``jax.nn.softmax``'s ``where``. Excluded entries
get 0 (log_softmax: -inf) and gradient 0; the backwards are scale * (the formulas above)
with the sums over included entries; a row with no entry included gives zeros (-inf) and
a zero gradient, never NaN. Separate kernels (``_softmax_kernels.masked_kernels``) run
these calls: with scale 1 and no mask the kernels are the unmasked ones.

Edge rows follow PyTorch: a -inf entry gets probability 0; a row containing NaN or
+inf, and a row of only -inf, come out all NaN. A 0-d array is a row of one element
(axis 0 or -1): softmax gives 1.0, log_softmax 0.0, as torch does. Empty arrays
return at once.

:func:`softmax_cross_entropy` has the semantics of ``torch.nn.functional.cross_entropy``
and returns the loss and its gradient with respect to the logits from one pass per row.
"""

from __future__ import annotations

import math
import numbers
import operator
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from . import _config as config
from . import _softmax_kernels as _k
from . import _xent_kernels as _xk
from ._dispatch import _parallel
from ._half import NATIVE, is_bfloat16, storage_of
from ._kernels import converters
from ._layout import aliasing, merge_axes, pad_axes, unaliased
from ._validate import as_input, as_output, choice, real, same_layout

try:  # raises numpy.exceptions.AxisError (a ValueError and an IndexError)
    from numpy.lib.array_utils import normalize_axis_index
except ImportError:  # numpy < 2.0
    from numpy.core.multiarray import normalize_axis_index

__all__ = [
    "softmax",
    "softmax_",
    "softmax_backward",
    "softmax_backward_",
    "log_softmax",
    "log_softmax_",
    "log_softmax_backward",
    "log_softmax_backward_",
    "softmax_cross_entropy",
]


def _axis(axis: object, ndim: int) -> int:
    """``axis`` normalised to [0, ndim); a 0-d array has the one axis 0 (or -1)."""
    if type(axis) is int and -ndim <= axis < ndim:
        return axis % ndim
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    return normalize_axis_index(operator.index(axis), max(ndim, 1), "axis")


def _call(parallel_kernel, serial_kernel, size: int, args: tuple) -> None:
    """Run the parallel kernel if the array is large and the threading layer allows it now."""
    kernel = serial_kernel if size < config.PARALLEL_THRESHOLD else _parallel(parallel_kernel, serial_kernel)
    kernel(*args)


def _streams(kernels: _k.Kernels, a: np.ndarray | None, views: tuple, whole: int) -> bool:
    """Use the non-temporal-store kernel: out of place, large, C-contiguous rows of at
    most ``whole`` elements, an op that has one."""
    out = views[-1]
    return (
        kernels.rows_stream is not None
        and a is not None
        and out.nbytes >= config.STREAM_BYTES
        and out.shape[1] <= whole
        and all(v.flags.c_contiguous for v in views)
    )


def _few_rows(rows: int) -> bool:
    """Too few rows to keep every thread busy: split each row across threads."""
    threads = numba.get_num_threads()
    return threads > 1 and rows < config.SPLIT_ROWS_PER_THREAD * threads


def _tiles(n_outer: int, n_inner: int, itemsize: int, parallel: bool) -> tuple[int, int]:
    """Tile width and number of blocks (parallel tasks) of the cols kernel.

    Tiles of config.TILE_BYTES per reduced row, narrower if that leaves threads idle.
    """
    tw = min(n_inner, config.TILE_BYTES // itemsize)
    if not parallel:
        return tw, 1
    threads = numba.get_num_threads()
    if n_outer * -(-n_inner // tw) < 2 * threads:
        split = -(-2 * threads // n_outer)
        tw = max(min(n_inner, 64), -(-n_inner // split))
    tasks = n_outer * -(-n_inner // tw)
    return tw, min(tasks, 8 * threads)


def _views(arrays: tuple[np.ndarray, ...], axis: int):
    """Views of ``arrays`` for the kernels: ("rows", [(R, L) views...]) when the reduced
    axis is the innermost of the first array, else ("cols", [(O, L, I) views...]).
    Axes that cannot be merged into R or O are looped over (one view tuple each)."""
    first = arrays[0]
    shape = first.shape
    others = sorted(
        (d for d in range(first.ndim) if d != axis and shape[d] != 1), key=lambda d: -abs(first.strides[d])
    )
    dims = [shape[d] for d in others]
    strides = [[a.strides[d] for d in others] for a in arrays]
    merge_axes(dims, strides)
    n = shape[axis] if first.ndim else 1
    axis_strides = [a.strides[axis] if a.ndim else 0 for a in arrays]
    if not dims or abs(axis_strides[0]) <= abs(strides[0][-1]):
        mode, inner = "rows", 1
    else:
        mode, inner = "cols", 2
    pad_axes(dims, strides, inner)
    lead = len(dims) - inner
    views = []
    for a, s, sa in zip(arrays, strides, axis_strides):
        if mode == "rows":
            core_shape, core_strides = (dims[-1], n), (s[-1], sa)
        else:
            core_shape, core_strides = (dims[-2], n, dims[-1]), (s[-2], sa, s[-1])
        full = np.lib.stride_tricks.as_strided(
            a, shape=(*dims[:lead], *core_shape), strides=(*s[:lead], *core_strides)
        )
        views.append(full)
    if lead == 0:
        return mode, [tuple(views)]
    return mode, [tuple(v[index] for v in views) for index in np.ndindex(*dims[:lead])]


def _reader(a: np.ndarray, out: np.ndarray) -> np.ndarray | None:
    """What the kernels should read for ``a``: None when it is ``out`` element for element
    (in place), a copy when it overlaps ``out`` otherwise, else ``a`` itself."""
    a, in_place = aliasing(a, out)
    return None if in_place else a


def _run(
    op: str,
    a: np.ndarray,
    b: np.ndarray | None,
    out: np.ndarray,
    axis: int,
    scale: float = 1.0,
    where: np.ndarray | None = None,
    serial: bool = False,
) -> np.ndarray:
    """out = op(a[, b]) along ``axis`` for checked arrays of one shape and dtype.

    The kernels get ``a=None`` when a is out (in place) and ``b=None`` for forward ops.
    With a scale other than 1 or a mask ``where`` (bool, of out's shape: a broadcast
    view), the masked kernels run instead, ``where`` (or None) one more array of the
    views, reduced with the others (its zero strides kept: never copied). 16-bit arrays
    reduced along their last, contiguous axis run the kernels of their storage format
    (:func:`_fused_half`); other 16-bit layouts go through float32 blocks
    (:func:`_run_half`). ``serial``: the serial kernels whatever the size.
    """
    if out.size == 0:
        return out
    storage = NATIVE
    if out.dtype.itemsize == 2:
        if not _fused_half(a, b, out, axis):
            return _run_half(op, a, b, out, axis, scale, where)
        storage = storage_of(out.dtype)
    masked = scale != 1.0 or where is not None
    a = _reader(a, out)
    if b is not None:
        b = unaliased(b, out)
    if where is not None:
        where = unaliased(where, out)
    read = out if a is None else a
    arrays = (read, *(() if b is None else (b,)), *(() if where is None else (where,)), out)
    if storage is not NATIVE:  # the kernels see the bits
        arrays = tuple(x if x is where else x.view(np.uint16) for x in arrays)
    contiguous = axis == out.ndim - 1 and all(x.flags.c_contiguous for x in arrays)
    if contiguous:  # the common case, quickly
        n = out.shape[-1]
        mode, groups = "rows", [tuple(x.reshape(-1, n) for x in arrays)]
    else:
        mode, groups = _views(arrays, axis)
    if storage is NATIVE:
        kernels = _k.masked_kernels(op) if masked else _k.kernels(op)
    else:
        kernels = _k.kernels(op, masked, storage)
    itemsize = out.dtype.itemsize if storage is NATIVE else 4  # 16-bit: the float32 kernels' sizes
    rows_k, rows_parallel, split = kernels.rows, kernels.rows_parallel, kernels.split
    if contiguous:  # every array C-contiguous: the specialising dispatchers, without the layout test
        rows_k, rows_parallel, split = rows_k.fast, rows_parallel.fast, split.fast
    size = 0 if serial else out.size // len(groups)
    for views in groups:
        args = (
            None if a is None else views[0],
            None if b is None else views[1],
            None if where is None else views[-2],
            views[-1],
            float(scale) if masked else None,
        )
        if mode == "rows":
            rows, n = views[-1].shape
            chunk = config.CHUNK_BYTES // itemsize
            whole = config.ROW_CACHE_BYTES // itemsize
            if n >= 4 * chunk and size >= config.PARALLEL_THRESHOLD and _few_rows(rows):
                _call(split, rows_k, size, (*args, chunk, whole))
            elif _streams(kernels, a, views if where is None else (*views[:-2], views[-1]), whole):
                _call(kernels.rows_stream, rows_k, size, (*args, chunk, whole))
            else:
                _call(rows_parallel, rows_k, size, (*args, chunk, whole))
        else:
            n_outer, _, n_inner = views[-1].shape
            tw, blocks = _tiles(n_outer, n_inner, itemsize, size >= config.PARALLEL_THRESHOLD)
            _call(kernels.cols_parallel, kernels.cols, size, (*args, tw, blocks))
    return out


# --- 16-bit storage: float32 blocks --------------------------------------------------


def half_blocks(arrays: tuple, rows: int):
    """Tuples of sub-views of ``arrays`` (one shape; None passes through), split along
    their leading axes (never the last), each at most ``rows`` rows of the last axis, or
    one row where a row is longer."""
    first = next(a for a in arrays if a is not None)
    shape = first.shape
    if first.ndim <= 1 or first.size <= rows * shape[-1]:
        yield arrays
        return
    inner = first.size // shape[0]
    if inner <= rows * shape[-1]:
        step = max(1, rows * shape[-1] // inner)
        for i in range(0, shape[0], step):
            yield tuple(None if a is None else a[i : i + step] for a in arrays)
    else:
        for i in range(shape[0]):
            yield from half_blocks(tuple(None if a is None else a[i] for a in arrays), rows)


def widen(a: np.ndarray, into: np.ndarray | None = None, serial: bool = False) -> np.ndarray:
    """16-bit ``a`` as a C-contiguous float32 array (``into``, or new)."""
    f32 = np.empty(a.shape, np.float32) if into is None else into.reshape(a.shape)
    if a.flags.c_contiguous:
        convert = converters(storage_of(a.dtype))
        kernel = convert.widen if serial or a.size < config.PARALLEL_THRESHOLD else convert.widen_parallel
        kernel(a.reshape(-1).view(np.uint16), f32.reshape(-1))
    else:
        np.copyto(f32, a, casting="unsafe")  # numpy's (and ml_dtypes') conversion: exact
    return f32


def narrow(f32: np.ndarray, out: np.ndarray, serial: bool = False) -> None:
    """out[...] = float32 ``f32`` rounded to out's 16-bit format (to nearest, ties to even)."""
    if out.flags.c_contiguous:
        convert = converters(storage_of(out.dtype))
        kernel = convert.narrow if serial or out.size < config.PARALLEL_THRESHOLD else convert.narrow_parallel
        kernel(f32.reshape(-1), out.reshape(-1).view(np.uint16))
    else:
        np.copyto(out, f32, casting="unsafe")  # numpy's (and ml_dtypes') rounding: to nearest even


def _half_rows(n: int) -> int:
    """Rows of ``n`` elements per float32 block: about config.HALF_BLOCK_BYTES, and enough
    rows for every thread where they fit (fewer send the float32 kernels to their split path,
    meant for few long rows)."""
    per_block = config.HALF_BLOCK_BYTES // (4 * n)
    return max(1, per_block, min(config.SPLIT_ROWS_PER_THREAD * numba.get_num_threads(), 4 * per_block))


def in_blocks(work, blocks: list, size: int) -> None:
    """``work(blocks, serial)`` over the 16-bit blocks of a call of ``size`` elements: in
    as many Python threads as numba has, each with its share of the blocks and the serial
    kernels (which release the GIL), where there are blocks for each; else in this thread,
    with kernels as parallel as the size asks. (Per block, parallel kernels cost three
    fork-joins, slow on cores shared with other work: docs/HALF.md.)"""
    workers = min(len(blocks), numba.get_num_threads()) if size >= config.PARALLEL_THRESHOLD else 1
    if workers <= 1:
        work(blocks, False)
        return
    with ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(work, blocks[i::workers], True) for i in range(workers)]:
            done.result()


def _fused_half(a: np.ndarray, b: np.ndarray | None, out: np.ndarray, axis: int) -> bool:
    """Whether a 16-bit call runs the 16-bit kernels: reduced along the last axis of
    C-contiguous arrays (the mask ``where`` any layout), so that they are rows (the
    other layouts go through float32 blocks, :func:`_run_half`)."""
    return (
        out.ndim >= 1
        and axis == out.ndim - 1
        and out.flags.c_contiguous
        and a.flags.c_contiguous
        and (b is None or b.flags.c_contiguous)
    )


def _run_half(op, a, b, out, axis, scale, where) -> np.ndarray:
    """_run for 16-bit arrays: blocks of whole rows are widened into float32 scratch (of
    about config.HALF_BLOCK_BYTES), the float32 kernels run on it in place, and the result
    is rounded once into ``out``. Every sum is the float32 kernels' (float32 or wider)."""
    a, _ = aliasing(a, out)  # a copy where a overlaps out other than element for element
    b = None if b is None else unaliased(b, out)
    views = (a, b, where, out)
    if out.ndim == 0:  # one row of one element
        views, axis = tuple(None if v is None else v.reshape(1) for v in views), 0
    moved = tuple(None if v is None else np.moveaxis(v, axis, -1) for v in views)
    n = max(1, out.shape[axis] if out.ndim else 1)
    rows = _half_rows(n)
    size = min(out.size, rows * n)

    def work(blocks, serial):
        scratch = np.empty(size, np.float32), None if b is None else np.empty(size, np.float32)
        for va, vb, vw, vo in blocks:
            fa = widen(va, scratch[0][: va.size], serial)
            fb = None if vb is None else widen(vb, scratch[1][: vb.size], serial)
            _run(op, fa, fb, fa, fa.ndim - 1 if fa.ndim else 0, scale, vw, serial)
            narrow(fa, vo, serial)

    in_blocks(work, list(half_blocks(moved, rows)), out.size)
    return out


# --- public functions -----------------------------------------------------------------


def _scale(scale: object) -> float:
    """``scale`` as a Python float: any finite real number (not a bool)."""
    c = real(scale, "scale")
    if not math.isfinite(c):
        raise ValueError(f"scale must be finite, got {c}")
    return c


def _where(where: object, shape: tuple[int, ...]) -> np.ndarray | None:
    """``where`` as a read-only bool view of ``shape`` (np.broadcast_to: zero strides, no copy)."""
    if where is None:
        return None
    w = where if isinstance(where, np.ndarray) else np.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {w.dtype}")
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"where has shape {w.shape}, which does not broadcast to {shape}") from None


def _checked(scale: object, where: object, shape: tuple[int, ...]) -> tuple[float, np.ndarray | None]:
    if where is None and type(scale) is float and scale == 1.0:  # the common case, quickly
        return 1.0, None
    return _scale(scale), _where(where, shape)


def _checked_run(kname: str, first, name: str, y, axis, scale, where, out, in_place: bool) -> np.ndarray:
    """Check every argument, then run ``kname`` on ``first`` (x or grad) and ``y`` (the
    backward's saved output, or None) into ``out`` (``first`` itself when ``in_place``)."""
    first = as_output(first, name, True) if in_place else as_input(first, name, True)
    if y is not None:
        y = as_input(y, "y", True)
        same_layout(y, "y", first, name)
    ax = _axis(axis, first.ndim)
    c, w = _checked(scale, where, first.shape)
    if in_place:
        out = first
    elif out is None:
        out = np.empty_like(first)
    else:
        out = as_output(out, "out", True)
        same_layout(out, "out", first, name)
    return _run(kname, first, y, out, ax, c, w)


# The four functions of softmax and log_softmax, from one template: (x) or (grad, y), and
# ``out`` unless in place. Annotations stay strings, as in this module.
_TEMPLATE = """from __future__ import annotations


def {name}(
    {inputs}, axis: int = -1, *, scale: float = 1.0, where: np.ndarray | None = None{out}
) -> np.ndarray:
    return _checked_run({kname!r}, {first}, {first!r}, {y}, axis, scale, where, {into}, {in_place})
"""


def _make(op: str, backward: bool, in_place: bool, doc: str):
    """op (``"softmax"`` or ``"log_softmax"``), its backward, or their in-place forms."""
    kname = op + "_backward" if backward else op
    name = kname + "_" if in_place else kname
    source = _TEMPLATE.format(
        name=name,
        inputs="grad: np.ndarray, y: np.ndarray" if backward else "x: np.ndarray",
        out="" if in_place else ", out: np.ndarray | None = None",
        kname=kname,
        first="grad" if backward else "x",
        y="y" if backward else "None",
        into="None" if in_place else "out",
        in_place=in_place,
    )
    namespace = {"np": np, "_checked_run": _checked_run}
    exec(compile(source, f"<{__name__}.{name}>", "exec"), namespace)  # a fixed template, no outside input
    return _named(namespace[name], name, doc)


def _named(function, name: str, doc: str):
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    function.__module__ = __name__
    return function


# The docs of the four functions of each op, from its formulas.
_DOCS = (
    """{op} along ``axis`` (new array, or written into ``out``).

    {formula}{nan_rows}
""",
    """{op} along ``axis`` in place: overwrites x and returns it.

    {formula}
""",
    """Gradient of {op}: {gradient} along ``axis``; y is {op}'s output.

    s = ``scale``, as given to the forward; with ``where``, {where_gradient}.""",
    """Gradient of {op} in place: overwrites grad with {gradient}.

    s = ``scale``, as given to the forward; with ``where``, 0 at the excluded entries.""",
)
_MASK_DOC = """
    ``scale`` multiplies x first (the product rounded once per element, in x's dtype);
    ``where`` (a boolean array broadcastable to x, read in place) excludes the entries
    where it is False, as ``jax.nn.softmax``'s ``where``: they get {excluded}, and a row
    with no entry included gives {empty_row}."""
_FORMULAS = {
    "softmax": {
        "formula": "y_i = e^(s x_i - m) / sum_j e^(s x_j - m), m = max_j s x_j (s = ``scale``).",
        "nan_rows": " NaN or\n    +inf in a row, or a row of only -inf, gives a NaN row (as PyTorch).",
        "gradient": "s y * (grad - sum(grad * y))",
        "where_gradient": "0 at the excluded entries\n    (and in rows with no entry included)",
        "excluded": "probability 0",
        "empty_row": "all zeros",
    },
    "log_softmax": {
        "formula": "y_i = (s x_i - m) - log(sum_j e^(s x_j - m)), m = max_j s x_j (s = ``scale``).",
        "nan_rows": "",
        "gradient": "s (grad - e^y * sum(grad))",
        "where_gradient": "the sum runs over the included\n    entries and the gradient is 0 at "
        "the excluded ones (grad and y there are not used)",
        "excluded": "-inf",
        "empty_row": "all -inf",
    },
}


def _make_all(op: str) -> tuple:
    """op, op_, op_backward and op_backward_, with their docs."""
    parts = _FORMULAS[op]
    mask = _MASK_DOC.format(**parts)
    kinds = ((False, False), (False, True), (True, False), (True, True))
    return tuple(
        _make(op, backward, in_place, doc.format(op=op, **parts) + ("" if backward else mask))
        for (backward, in_place), doc in zip(kinds, _DOCS)
    )


softmax, softmax_, softmax_backward, softmax_backward_ = _make_all("softmax")
log_softmax, log_softmax_, log_softmax_backward, log_softmax_backward_ = _make_all("log_softmax")


# --- cross-entropy ----------------------------------------------------------------------

_REDUCTIONS = {"mean": "mean", "sum": "sum", "none": "none"}
_INT64 = np.iinfo(np.int64)


def _class_targets(target: np.ndarray, n: int, c: int, ignore_index: int) -> np.ndarray:
    """Integer class targets as int64 (n,), each in [0, c) or equal to ignore_index."""
    if target.shape != ((n,) if n >= 0 else ()):
        raise ValueError(f"target has shape {target.shape}, expected {(n,)} (class indices, one per row)")
    if target.dtype == np.uint64 and target.size and target.max() > _INT64.max:
        raise ValueError(f"target holds {target.max()}, out of range for {c} classes")
    t = np.ascontiguousarray(target.astype(np.int64, copy=False).reshape(-1))
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"target[{i}] = {t[i]} is out of range for {c} classes (and is not ignore_index={ignore_index})"
        )
    return t


def _weight(weight: object, c: int, dtype: np.dtype) -> np.ndarray:
    """The class weights as a fresh contiguous (c,) array of ``dtype`` (ones if None)."""
    if weight is None:
        return np.ones(c, dtype)
    w = np.asarray(weight) if not isinstance(weight, np.ndarray) else weight
    if w.dtype.kind not in "iuf" and not is_bfloat16(w.dtype):
        raise TypeError(f"weight must be a real (integer or float) array, got dtype {w.dtype}")
    if w.shape != (c,):
        raise ValueError(f"weight has shape {w.shape}, expected {(c,)} (one weight per class)")
    return np.array(w, dtype=dtype, order="C", copy=True)


def xent_options(ignore_index: object, reduction: object, label_smoothing: object) -> tuple[str, float, int]:
    """(reduction, eps, ignore_index) checked as ``softmax_cross_entropy`` takes them."""
    reduction = choice(reduction, "reduction", _REDUCTIONS)
    eps = real(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {eps}")
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}")
    ignore = operator.index(ignore_index)
    if not _INT64.min <= ignore <= _INT64.max:
        raise ValueError(f"ignore_index must fit in int64, got {ignore}")
    return reduction, eps, ignore


def xent_target(
    target: object, shape: tuple[int, ...], ignore: int, name: str = "logits", half: np.dtype | None = None
) -> np.ndarray:
    """The target checked against logits of ``shape`` ((N, C) or (C,)): class indices as
    contiguous int64 (N,), or float32/float64 probabilities (or of dtype ``half``, the
    16-bit logits' own) of ``shape`` as 2-d (N, C)."""
    single = len(shape) == 1
    n, c = (1, shape[0]) if single else shape
    t = target if isinstance(target, np.ndarray) else np.asarray(target)
    if t.dtype.kind in "iu":
        if t.shape != (() if single else (n,)):
            raise ValueError(
                f"target has shape {t.shape}, expected {() if single else (n,)} (class indices, one per row)"
            )
        return _class_targets(t.reshape(-1), n, c, ignore)
    if t.dtype in (np.float32, np.float64) or (half is not None and t.dtype == half):
        if t.shape != shape:
            raise ValueError(f"target has shape {t.shape}, expected {shape} (probabilities, as {name})")
        return t.reshape(1, -1) if single else t
    raise TypeError(
        f"target must hold integer class indices or float32/float64 probabilities, got dtype {t.dtype}"
    )


def xent_weight(weight: object, c: int, dtype: np.dtype) -> tuple[np.ndarray, float]:
    """(class weights as a fresh contiguous (c,) array of ``dtype``, their float64 sum)."""
    w = _weight(weight, c, dtype)
    return w, float(w.sum(dtype=np.float64))


def xent_total_weight(reduction: str, t: np.ndarray, w: np.ndarray, weighted: bool, ignore: int) -> float:
    """The normaliser of "mean" over all rows (torch: the sum of the targets' weights, or N
    for probabilities); 1.0 for "sum" and "none"."""
    if reduction != "mean":
        return 1.0
    if t.dtype.kind in "iu":
        valid = t != ignore
        return float(w[t[valid]].sum(dtype=np.float64)) if weighted else float(valid.sum())
    return float(t.shape[0])


def xent_scale(total_weight: float) -> float:
    """The gradient's factor: 1 / the "mean" normaliser (NaN for 0, as torch's 0/0)."""
    return 1.0 / total_weight if total_weight != 0.0 else float("nan")


def xent_rows(
    read: np.ndarray | None,
    t: np.ndarray,
    w: np.ndarray,
    wsum: float,
    ignore: int,
    eps: float,
    scale: float,
    grad: np.ndarray,
    losses: np.ndarray,
    serial: bool = False,
) -> None:
    """Run the cross-entropy kernel on (rows, C) ``grad``: losses[r] = loss of row r
    (float64), grad = ``scale`` * dloss/dlogits. ``read`` is the logits, or None when
    they are in ``grad`` (in place). ``t`` holds the rows' targets (class indices from
    :func:`xent_target`, or probabilities)."""
    if not grad.shape[0]:
        return
    k = _xk.cross_entropy_kernels()
    if t.dtype.kind in "iu":
        args = (read, t, w, wsum, np.int64(ignore), eps, scale, grad, losses)
        _call(k.cls_parallel, k.cls, 0 if serial else grad.size, args)
    else:
        _call(k.prob_parallel, k.prob, 0 if serial else grad.size, (read, t, w, eps, scale, grad, losses))


def xent_reduce(losses: np.ndarray, reduction: str, total_weight: float, dtype: np.dtype, single: bool):
    """The returned loss from the rows' float64 losses: a Python float for "mean"/"sum",
    an array of ``dtype`` ((N,), or 0-d for one sample) for "none"."""
    if reduction == "none":
        loss = losses.astype(dtype)
        return loss.reshape(()) if single else loss
    total = float(losses.sum())
    if reduction == "mean":
        total = total / total_weight if total_weight != 0.0 else float("nan")
    return total


def softmax_cross_entropy(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    inplace: bool = False,
) -> tuple[float | np.ndarray, np.ndarray]:
    """Cross-entropy of softmax(logits) and its gradient, as ``torch.nn.functional.cross_entropy``.

    ``logits`` is (N, C) (or (C,), one sample). ``target`` is either class indices, any
    integer dtype, shape (N,) (or 0-d), each in [0, C) or equal to ``ignore_index``; or
    class probabilities of the shape of ``logits`` (float32/float64; ``ignore_index``
    unused). With eps = label_smoothing, p = softmax(logits), lse = log sum_c e^x_c::

        class k:  loss_n = (1-eps) w_k (lse - x_k) + eps/C sum_c w_c (lse - x_c)   (0 if ignored)
        probs q:  loss_n = sum_c w_c q'_c (lse - x_c),   q' = (1-eps) q + eps/C

    ``reduction``: "mean" divides the sum by sum_n w_(k_n) over rows not ignored (class
    targets) or by N (probabilities), as torch; "sum"; "none" keeps loss_n.

    Returns ``(loss, grad)``: loss is a Python float for "mean"/"sum" and an array of
    logits' dtype, shape (N,) (0-d for (C,) logits), for "none". grad is dL/dlogits of
    the returned loss (of sum(loss) for "none"), a new array, or ``logits`` itself,
    overwritten, with ``inplace=True``. Everything is checked before anything is written.
    """
    if not isinstance(inplace, (bool, np.bool_)):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    reduction, eps, ignore = xent_options(ignore_index, reduction, label_smoothing)
    x = as_output(logits, "logits", True) if inplace else as_input(logits, "logits", True)
    if x.ndim not in (1, 2):
        raise ValueError(f"logits must be (N, C) or (C,), got shape {x.shape}")
    single = x.ndim == 1
    x2 = x.reshape(1, -1) if single else x
    n, c = x2.shape
    if c == 0:
        raise ValueError(f"logits has shape {x.shape}: no classes")
    half = x.dtype.itemsize == 2  # 16-bit logits: computed in float32 blocks (see _run_half)
    t = xent_target(target, x.shape, ignore, half=x.dtype if half else None)
    if t.dtype.kind == "f" and inplace and np.may_share_memory(t, x):
        raise ValueError("target must not share memory with logits when inplace=True")
    w, wsum = xent_weight(weight, c, np.float32 if half else x.dtype)
    total_weight = xent_total_weight(reduction, t, w, weight is not None, ignore)
    scale = xent_scale(total_weight) if reduction == "mean" else 1.0

    grad2 = x2 if inplace else np.empty_like(x2)
    losses = np.empty(n)
    if half:
        rows = _half_rows(c)

        def work(starts, serial):
            scratch = np.empty(min(n, rows) * c, np.float32)
            for r in starts:
                block = widen(x2[r : r + rows], scratch[: min(rows, n - r) * c], serial)
                tb = t[r : r + rows]
                if tb.ndim == 2 and tb.dtype != np.float32:  # probabilities, in the compute dtype
                    tb = tb.astype(np.float32)
                xent_rows(None, tb, w, wsum, ignore, eps, scale, block, losses[r : r + rows], serial)
                narrow(block, grad2[r : r + rows], serial)

        in_blocks(work, list(range(0, n, rows)), x2.size)
    else:
        # read None: the kernel reads grad2 (see _xent_kernels on in place)
        xent_rows(None if inplace else x2, t, w, wsum, ignore, eps, scale, grad2, losses)
    grad = x if inplace else (grad2.reshape(-1) if single else grad2)
    return xent_reduce(losses, reduction, total_weight, x.dtype, single), grad
