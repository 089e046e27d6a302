"""Fused gated units and bias + activation: the host side (checks, views, dispatch).

Generated from :data:`fastact.definitions.GATED_UNITS` (and, for ``bias_act``, from every
entry of :data:`fastact.definitions.ACTIVATIONS`). For a gated unit ``name`` gating with
the activation ``f`` (its parameters, such as geglu's ``approximate``, keyword-only)::

    name(a, b, *, out=None)        y = f(a) * b        (new array, or out)
    name_(a, b)                    y written over a, returned
    name_backward(grad, a, b)      (da, db), new arrays
    name_backward_(grad, a, b)     da written over a, db over b; returns (a, b)

``b`` may broadcast to ``a``'s shape in the forward; the backward needs equal shapes (db
would be a sum). ``glu(x, axis=-1, *, out=None)`` and ``glu_backward(grad, x, axis=-1)``
follow ``torch.nn.functional.glu``: ``x1 * sigmoid(x2)`` for the halves of ``x`` along an
axis of even length (the sigmoid gated unit over views of the halves, nothing copied).

``bias_act(x, bias, activation, *, out=None, **params)`` is ``f(x + bias)``, ``bias`` of shape
``(x.shape[-1],)``; ``bias_act_`` writes it over x; ``bias_act_backward(grad, saved, bias,
activation, **params)`` returns ``(dx, dbias)`` and ``bias_act_backward_`` writes dx over
grad and returns ``(grad, dbias)``. ``saved`` is the output y where the activation saves its
output, its input x (before the bias) where it saves its input. dbias is summed in float64
chunk by chunk, in an order fixed by the shape (the same for any thread count).

Every check runs before anything is written. No in-place form allocates anything the size of
its input (bias_act's backward: float64 partial sums of at most 1/8 of a float32 input).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _config as config
from . import _validate as v
from ._dispatch import _one_order, _parallel, run
from ._frontend import convert
from ._fused_kernels import (
    bias_backward_kernels,
    bias_forward_kernels,
    chunks,
    combine,
    gated_backward_kernels,
    gated_forward_kernels,
)
from ._half import storage_of
from ._layout import collapse, collapse_axes, flat, overlap, pad_axes, unaliased
from .definitions import ACTIVATIONS, GATED_UNITS, Activation, GatedUnit

try:  # raises numpy.exceptions.AxisError (a ValueError and an IndexError)
    from numpy.lib.array_utils import normalize_axis_index
except ImportError:  # numpy < 2.0
    from numpy.core.multiarray import normalize_axis_index

__all__ = ["BIAS_FUNCTIONS", "functions", "make_gated_functions"]


def _call(pair, size: int, args) -> None:
    kernel = pair.serial if size < config.PARALLEL_THRESHOLD else _parallel(pair.parallel, pair.serial)
    kernel(*args)


# --- gated units ---------------------------------------------------------------------------


def _gated_inputs(a, b, write_a: bool) -> tuple[np.ndarray, np.ndarray]:
    a = v.as_output(a, "a", True) if write_a else v.as_input(a, "a", True)
    b = v.as_input(b, "b", True)
    if b.dtype != a.dtype:
        raise TypeError(f"b has dtype {b.dtype}, expected {a.dtype} (the dtype of a)")
    if b.shape != a.shape:
        try:
            b = np.broadcast_to(b, a.shape)
        except ValueError:
            raise ValueError(
                f"b has shape {b.shape}, which does not broadcast to a's shape {a.shape}"
            ) from None
    return a, b


def gated_forward(kname: str, pvalues: tuple, a, b, out, in_place: bool = False) -> np.ndarray:
    """f(a) * b for the entry ``kname``: new, into ``out``, or over ``a`` (in_place)."""
    a, b = _gated_inputs(a, b, in_place)
    params = convert(ACTIVATIONS[kname], pvalues)
    kernels = gated_forward_kernels(kname)
    if in_place:
        return run(kernels, (a, b), a, params)
    if out is None:
        return run(kernels, (a, b), np.empty_like(a), params, fresh=True)
    out = v.as_output(out, "out", True)
    v.same_layout(out, "out", a, "a")
    return run(kernels, (a, b), out, params)


def gated_backward(kname: str, pvalues: tuple, grad, a, b, in_place: bool) -> tuple[np.ndarray, np.ndarray]:
    """(da, db) of f(a) * b: new arrays, or written over a and b (in_place)."""
    grad = v.as_input(grad, "grad", True)
    check = v.as_output if in_place else v.as_input
    a, b = check(a, "a", True), check(b, "b", True)
    v.same_layout(a, "a", grad, "grad")
    v.same_layout(b, "b", grad, "grad")
    params = convert(ACTIVATIONS[kname], pvalues)
    if in_place:
        if overlap(a, b):
            raise ValueError("a and b share memory: the in-place backward writes da over a and db over b")
        grad = unaliased(unaliased(grad, a), b)
        _gated_backward(kname, grad, a, b, a, b, params)
        return a, b
    da, db = np.empty_like(a), np.empty_like(a)
    _gated_backward(kname, grad, a, b, da, db, params)
    return da, db


def _gated_backward(kname: str, g, a, b, da, db, params: tuple) -> None:
    n = g.size
    if n == 0:
        return
    in_place = da is a and db is b
    storage = storage_of(g.dtype)
    if storage.view is not None:  # 16-bit floats: the kernels of their storage format, on their bits
        g, a, b = (x.view(storage.view) for x in (g, a, b))
        da, db = (a, b) if in_place else (da.view(storage.view), db.view(storage.view))
    kernels = gated_backward_kernels(kname, storage)
    arrays = (g, a, b) if in_place else (g, a, b, da, db)
    if _one_order(arrays):
        _call(kernels["flat_in_place" if in_place else "flat"], n, tuple(map(flat, arrays)))
        return
    views = collapse((g, a, b, da, db), outputs=(1, 2) if in_place else (3,))
    if all(w.strides[-1] == w.itemsize for w in views):
        pair = kernels["rows_in_place" if in_place else "rows"]
        views = views[:3] if in_place else views
    else:
        pair = kernels["strided"]
        if in_place:  # one view per array, writeable
            views = (*views[:3], views[1], views[2])
    for index in np.ndindex(views[0].shape[:-2]):
        _call(pair, n, (*(w[index] for w in views), *params))


# --- glu: the sigmoid gated unit over the halves of x ----------------------------------------


def _halves(x: np.ndarray, axis: object) -> tuple[np.ndarray, np.ndarray, int]:
    """(first half, second half, axis) of ``x`` along ``axis``, as views."""
    if x.ndim == 0:
        raise ValueError("glu does not support 0-d arrays (it splits an axis in halves)")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    axis = normalize_axis_index(int(axis), x.ndim, "axis")
    size = x.shape[axis]
    if size % 2:
        raise ValueError(f"glu halves axis {axis}, which must have an even length, got {size}")
    first = x[(slice(None),) * axis + (slice(0, size // 2),)]
    second = x[(slice(None),) * axis + (slice(size // 2, size),)]
    return first, second, axis


def halves_forward(kname: str, x, axis, out) -> np.ndarray:
    x = v.as_input(x, "x", True)
    first, second, axis = _halves(x, axis)
    kernels = gated_forward_kernels(kname)
    if out is None:
        return run(kernels, (second, first), np.empty_like(first), (), fresh=True)
    out = v.as_output(out, "out", True)
    v.same_layout(out, "out", first, "half of x")
    return run(kernels, (second, first), out, ())


def halves_backward(kname: str, grad, x, axis) -> np.ndarray:
    grad = v.as_input(grad, "grad", True)
    x = v.as_input(x, "x", True)
    first, second, axis = _halves(x, axis)
    v.same_layout(grad, "grad", first, "half of x")
    dx = np.empty_like(x)
    dfirst, dsecond, _ = _halves(dx, axis)
    _gated_backward(kname, grad, second, first, dsecond, dfirst, ())
    return dx


# --- bias + activation ------------------------------------------------------------------------


def resolve(activation: object, params: dict) -> tuple[Activation, tuple]:
    """(the entry computing ``activation`` with ``params``, its numeric parameters, checked)."""
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        names = ", ".join(ACTIVATIONS)
        raise ValueError(f"unknown activation {activation!r}; expected one of {names}")
    entry = ACTIVATIONS[activation]
    unknown = set(params) - {p.name for p in entry.params}
    if unknown:
        raise TypeError(f"{activation} has no parameter {', '.join(sorted(unknown))}")
    numeric = []
    kentry = entry
    for p in entry.params:
        if p.name in params:
            value = params[p.name]
        elif p.default is None:
            raise TypeError(f"{activation} needs the parameter {p.name}")
        else:
            value = p.default
        if p.choices:
            kentry = ACTIVATIONS[v.choice(value, p.name, p.choices)]
        else:
            numeric.append(value)
    return kentry, convert(entry, tuple(numeric))


def _bias(bias, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    bias = v.as_input(bias, "bias", True)
    v.bias_along_last_axis(bias, x)
    if out is not None and np.may_share_memory(bias, out):
        bias = bias.copy()  # written while read otherwise (and a broadcast copy would be input-sized)
    return bias


def _bias_act_forward(x, bias, activation, out, params: dict, in_place: bool = False) -> np.ndarray:
    x = v.as_output(x, "x", True) if in_place else v.as_input(x, "x", True)
    entry, floats = resolve(activation, params)
    if out is not None and not in_place:
        out = v.as_output(out, "out", True)
        v.same_layout(out, "out", x, "x")
    target = x if in_place else out
    c = np.broadcast_to(_bias(bias, x, target), x.shape)
    kernels = bias_forward_kernels(entry.name)
    if target is None:
        return run(kernels, (x, c), np.empty_like(x), floats, fresh=True)
    return run(kernels, (x, c), target, floats)


def _bias_act_backward(grad, saved, bias, activation, params: dict, in_place: bool) -> tuple:
    grad = v.as_output(grad, "grad", True) if in_place else v.as_input(grad, "grad", True)
    saved = v.as_input(saved, "saved", True)
    v.same_layout(saved, "saved", grad, "grad")
    entry, floats = resolve(activation, params)
    c = _bias(bias, grad, grad if in_place else None)
    if in_place:
        saved = unaliased(saved, grad)
        dx = grad
    else:
        dx = np.empty_like(grad)
    dbias = _bias_backward(entry.name, grad, saved, np.ascontiguousarray(c), dx, floats)
    return dx, dbias


def _bias_backward(kname: str, g, s, c, dx, params: tuple) -> np.ndarray:
    n, dtype = g.shape[-1], g.dtype
    if g.size == 0:
        return np.zeros(n, dtype)
    in_place = dx is g
    storage = storage_of(dtype)
    if storage.view is not None:  # 16-bit floats: the kernels of their storage format, on their bits
        g, s, c = (x.view(storage.view) for x in (g, s, c))
        dx = g if in_place else dx.view(storage.view)
    arrays = (g, s) if in_place else (g, s, dx)
    # the leading axes, collapsed (the last one stays: the bias's)
    dims, steps = collapse_axes(g.shape[:-1], [a.strides[:-1] for a in arrays], len(arrays) - 1)
    pad_axes(dims, steps, 1)
    views = [
        np.lib.stride_tricks.as_strided(a, (*dims, n), (*st, a.strides[-1]), writeable=a is dx)
        for a, st in zip(arrays, steps)
    ]
    rows = dims[-1]
    partial = np.zeros((chunks(rows), n), np.float64)
    kernels = bias_backward_kernels(kname, storage)
    if all(w.strides[-1] == w.itemsize for w in views):
        pair, order = (
            (kernels["rows_in_place"], (1, "c", 0)) if in_place else (kernels["rows"], (0, 1, "c", 2))
        )
    else:
        pair, order = kernels["strided"], ((0, 1, "c", 0) if in_place else (0, 1, "c", 2))
    for index in np.ndindex(*dims[:-1]):
        args = tuple(c if k == "c" else views[k][index] for k in order)
        _call(pair, g.size, (*args, partial, *params))
    return combine(partial, dtype)


# --- the generated functions ---------------------------------------------------------------

_GATED = """
def {name}(a, b, *, {sig}out=None):
    return gated_forward({kname}, ({pargs}), a, b, out)


def {name}_(a, b{sig_}):
    return gated_forward({kname}, ({pargs}), a, b, None, True)


def {name}_backward(grad, a, b{sig_}):
    return gated_backward({kname}, ({pargs}), grad, a, b, False)


def {name}_backward_(grad, a, b{sig_}):
    return gated_backward({kname}, ({pargs}), grad, a, b, True)
"""

_HALVES = """
def {name}(x, axis=-1, *, out=None):
    return halves_forward({kname}, x, axis, out)


def {name}_backward(grad, x, axis=-1):
    return halves_backward({kname}, grad, x, axis)
"""


def _docs(unit: GatedUnit) -> dict[str, str]:
    entry = ACTIVATIONS[unit.activation]
    params = "".join(
        f"\n    {p.name}: {'required' if p.default is None else f'default {p.default!r}'}"
        + (f", one of {', '.join(map(repr, p.choices))}" if p.choices else "")
        for p in unit.params
    )
    facts = f"y = {unit.formula}; {unit.derivative}" + (f"\n\nParameters:{params}" if params else "")
    facts += f"\n\nPyTorch: {unit.torch}."
    if unit.halves:
        return {
            "": f"{unit.name} along ``axis`` (of even length): new array of half its length there, "
            f"or written into ``out``.\n\n{facts}",
            "_backward": f"Gradient of {unit.name}: dx, of x's shape (x: the forward's input).\n\n{facts}",
        }
    bound = f"Accurate to {entry.name}'s bound plus one rounding (the product)."
    return {
        "": f"{unit.name} (new array, or written into ``out``); b may broadcast to a.\n\n{facts}\n\n{bound}",
        "_": f"{unit.name} in place: overwrites a with f(a) * b and returns it.\n\n{facts}",
        "_backward": f"Gradient of {unit.name}: (da, db), new arrays (a, b: the forward's "
        f"inputs, of grad's shape).\n\n{facts}",
        "_backward_": f"Gradient of {unit.name} in place: da over a, db over b; returns (a, b).\n\n"
        "The forward must not have been in place (its a is read here), and a and b must not "
        f"share memory.\n\n{facts}",
    }


def make_gated_functions(
    unit: GatedUnit, helpers: dict | None = None, module: str = "fastact"
) -> dict[str, Callable]:
    """The public functions of ``unit``, keyed by their names. ``helpers`` replace the CPU's
    gated_forward, gated_backward, halves_forward and halves_backward (another device's,
    same signatures); ``module`` is where the functions are found."""
    chooser = next((p for p in unit.params if p.choices), None)
    numeric = [p for p in unit.params if p.choices is None]
    sig = "".join(f"{p.name}" + ("" if p.default is None else f"={p.default!r}") + ", " for p in unit.params)
    if chooser is None:
        kname = repr(unit.activation)
    else:
        kname = f"choice({chooser.name}, {chooser.name!r}, choices)"
    source = (_HALVES if unit.halves else _GATED).format(
        name=unit.name,
        kname=kname,
        sig=sig,
        sig_=f", *, {sig[:-2]}" if sig else "",
        pargs="".join(f"{p.name}, " for p in numeric),
    )
    namespace = {
        "gated_forward": gated_forward,
        "gated_backward": gated_backward,
        "halves_forward": halves_forward,
        "halves_backward": halves_backward,
        "choice": v.choice,
        "choices": chooser.choices if chooser else None,
        **(helpers or {}),
    }
    exec(compile(source, f"<{module}.{unit.name}>", "exec"), namespace)
    functions = {}
    for suffix, doc in _docs(unit).items():
        function = namespace[unit.name + suffix]
        function.__doc__ = doc
        function.__module__ = module
        functions[unit.name + suffix] = function
    return functions


def bias_act(x, bias, activation, *, out=None, **params):
    """act(x + bias), the bias (shape ``(x.shape[-1],)``) added along the last axis (new
    array, or written into ``out``); ``params`` are the activation's (``approximate="tanh"``
    for gelu). Any activation of ``fastact.ACTIVATIONS``."""
    return _bias_act_forward(x, bias, activation, out, params)


def bias_act_(x, bias, activation, **params):
    """act(x + bias) written over x, returned."""
    return _bias_act_forward(x, bias, activation, None, params, True)


def bias_act_backward(grad, saved, bias, activation, **params):
    """(dx, dbias) of act(x + bias): dx = grad * act'(x + bias), dbias = dx summed over every
    axis but the last (in float64, in an order fixed by the shape: the same for any thread
    count). ``saved`` is the forward's output y where the activation saves its output
    (``ACTIVATIONS[activation].saves``), its input x (before the bias) otherwise."""
    return _bias_act_backward(grad, saved, bias, activation, params, False)


def bias_act_backward_(grad, saved, bias, activation, **params):
    """bias_act_backward with dx written over grad; returns (grad, dbias)."""
    return _bias_act_backward(grad, saved, bias, activation, params, True)


BIAS_FUNCTIONS: dict[str, Callable] = {
    f.__name__: f for f in (bias_act, bias_act_, bias_act_backward, bias_act_backward_)
}
for _f in BIAS_FUNCTIONS.values():
    _f.__module__ = "fastact"


def functions() -> dict[str, Callable]:
    """Every public function of the fused ops, keyed by name."""
    found = {}
    for unit in GATED_UNITS.values():
        found.update(make_gated_functions(unit))
    return {**found, **BIAS_FUNCTIONS}
