"""Generate the GPU functions of every activation from the definitions table.

The same four functions as on the CPU (:mod:`fastact._api`), with the same
signatures, parameter checks and messages, plus a keyword ``stream=``::

    name(x, p..., *, out=None, stream=None)
    name_(x, p..., *, stream=None)
    name_backward(grad, saved, p..., *, out=None, stream=None)
    name_backward_(grad, saved, p..., *, stream=None)

Arrays are any CUDA Array Interface objects; a new result is allocated by the
caller's library (CuPy in, CuPy out; torch in, torch out; numba in, numba out).
"""

from __future__ import annotations

from collections.abc import Callable

from .. import _validate as v
from .._api import _docstrings, convert
from ..definitions import Activation
from ._arrays import as_device, check_stream, empty_like, resolve_stream
from ._kernels import elementwise


def dtype_params(entry: Activation, values: tuple, dtype) -> tuple:
    """Checked parameters as scalars of the arrays' dtype (what the CUDA kernels take)."""
    return tuple(dtype.type(value) for value in convert(entry, values))


_TEMPLATE = """
def {name}(x{sig}, *, out=None, stream=None):
    x = as_device(x, "x", {name!r})
    {kname}
    params = dtype_params(entry, ({pargs}), x.dtype)
    check_stream(stream)
    if out is not None:
        out = as_device(out, "out", {name!r}, write=True)
        same_layout(out, "out", x, "x")
    s = resolve_stream(stream, x)
    if out is None:
        out = empty_like(x, s)
    elementwise(kname, "forward", (x,), out, params, s)
    return out.obj


def {name}_(x{sig}, *, stream=None):
    x = as_device(x, "x", {name!r} + "_", write=True)
    {kname}
    params = dtype_params(entry, ({pargs}), x.dtype)
    check_stream(stream)
    s = resolve_stream(stream, x)
    elementwise(kname, "forward", (x,), x, params, s)
    return x.obj


def {name}_backward(grad, saved{sig}, *, out=None, stream=None):
    grad = as_device(grad, "grad", {name!r} + "_backward")
    saved = as_device(saved, "saved", {name!r} + "_backward")
    same_layout(saved, "saved", grad, "grad")
    {kname}
    params = dtype_params(entry, ({pargs}), grad.dtype)
    check_stream(stream)
    if out is not None:
        out = as_device(out, "out", {name!r} + "_backward", write=True)
        same_layout(out, "out", grad, "grad")
    s = resolve_stream(stream, grad)
    if out is None:
        out = empty_like(grad, s)
    elementwise(kname, "backward", (grad, saved), out, params, s)
    return out.obj


def {name}_backward_(grad, saved{sig}, *, stream=None):
    grad = as_device(grad, "grad", {name!r} + "_backward_", write=True)
    saved = as_device(saved, "saved", {name!r} + "_backward_")
    same_layout(saved, "saved", grad, "grad")
    {kname}
    params = dtype_params(entry, ({pargs}), grad.dtype)
    check_stream(stream)
    s = resolve_stream(stream, grad)
    elementwise(kname, "backward", (grad, saved), grad, params, s)
    return grad.obj
"""


def make_functions(entry: Activation, table: dict[str, Activation]) -> dict[str, Callable]:
    """The four GPU functions of ``entry``, keyed by their names."""
    sig = "".join(f", {p.name}" + ("" if p.default is None else f"={p.default!r}") for p in entry.params)
    pargs = "".join(f"{p.name}, " for p in entry.kernel_params)
    chooser = next((p for p in entry.params if p.choices), None)
    if chooser is None:
        kname = f"kname = {entry.name!r}"
    else:
        kname = f"kname = choice({chooser.name}, {chooser.name!r}, choices); entry = table[kname]"
    namespace = {
        "as_device": as_device,
        "same_layout": v.same_layout,
        "choice": v.choice,
        "dtype_params": dtype_params,
        "check_stream": check_stream,
        "resolve_stream": resolve_stream,
        "empty_like": empty_like,
        "elementwise": elementwise,
        "entry": entry,
        "table": table,
        "choices": chooser.choices if chooser else None,
    }
    source = _TEMPLATE.format(name=entry.name, sig=sig, pargs=pargs, kname=kname)
    exec(compile(source, f"<fastact.cuda.{entry.name}>", "exec"), namespace)
    functions = {}
    for suffix, doc in _docstrings(entry).items():
        function = namespace[entry.name + suffix]
        function.__doc__ = doc.replace("new array", "new array of the caller's GPU library") + (
            "\n\nGPU version: any CUDA array (numba, CuPy, torch); runs on ``stream`` or the "
            "caller's library's current stream."
        )
        function.__module__ = "fastact.cuda"
        functions[entry.name + suffix] = function
    return functions
