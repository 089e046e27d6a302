"""The CUDA backend of the front end (:mod:`fastact._frontend`).

The same four functions as on the CPU, with the same signatures, parameter checks and
messages, plus a keyword ``stream=``::

    name(x, p..., *, out=None, stream=None)
    name_(x, p..., *, stream=None)
    name_backward(grad, saved, p..., *, out=None, stream=None)
    name_backward_(grad, saved, p..., *, stream=None)

Arrays are any CUDA Array Interface objects; a new result is allocated by the
caller's library (CuPy in, CuPy out; torch in, torch out; numba in, numba out).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import _frontend
from ..definitions import Activation
from ._arrays import DArray, as_device, check_stream, empty_like, resolve_stream
from ._compile import format_of
from ._kernels import elementwise

__all__ = ["CUDA", "compute_scalars", "make_functions"]


def compute_scalars(values: tuple, dtype) -> tuple:
    """``values`` rounded to the compute type of arrays of ``dtype``."""
    t = np.dtype(format_of(dtype).compute).type
    return tuple(t(value) for value in values)


def dtype_params(entry: Activation, values: tuple, dtype) -> tuple:
    """Checked parameters as scalars of the arrays' compute type (what the CUDA kernels
    take: the arrays' dtype, float32 for 16-bit arrays)."""
    return compute_scalars(_frontend.convert(entry, values), dtype)


def launch_new(kname: str, direction: str, inputs: tuple[DArray, ...], params: tuple, stream):
    """A new result of the caller's library, computed on ``stream`` (or its current one)."""
    s = resolve_stream(stream, inputs[0])
    out = empty_like(inputs[0], s)
    elementwise(kname, direction, inputs, out, params, s)
    return out.obj


def launch_into(kname: str, direction: str, inputs: tuple[DArray, ...], out: DArray, params: tuple, stream):
    """The result written into ``out`` (checked), which is returned as the caller gave it."""
    elementwise(kname, direction, inputs, out, params, resolve_stream(stream, inputs[0]))
    return out.obj


def _doc(doc: str) -> str:
    return doc.replace("new array", "new array of the caller's GPU library") + (
        "\n\nGPU version: any CUDA array (numba, CuPy, torch); runs on ``stream`` or the "
        "caller's library's current stream."
    )


CUDA = _frontend.Backend(
    module="fastact.cuda",
    read='as_device({arg}, "{arg}", {fname!r})',
    write='as_device({arg}, "{arg}", {fname!r}, write=True)',
    params="dtype_params(entry, ({pargs}), {first}.dtype)",
    no_params="dtype_params(entry, (), {first}.dtype)",
    prepare="check_stream(stream)",
    new='launch_new(kname, "{direction}", {inputs}, params, stream)',
    into='launch_into(kname, "{direction}", {inputs}, {out}, params, stream)',
    keywords=", stream=None",
    namespace={
        "as_device": as_device,
        "dtype_params": dtype_params,
        "check_stream": check_stream,
        "launch_new": launch_new,
        "launch_into": launch_into,
    },
    doc=_doc,
)


def make_functions(entry: Activation, table: dict[str, Activation]) -> dict[str, Callable]:
    """The four GPU functions of ``entry``, keyed by their names."""
    return _frontend.make_functions(entry, table, CUDA)
