"""Generate the public functions of every activation from the definitions table.

For an activation ``name`` with parameters ``p...`` this makes four functions with
real signatures (so ``help()``, IDEs and unknown-keyword errors work as usual)::

    name(x, p..., *, out=None)                      -> new array, or out
    name_(x, p...)                                  -> x, overwritten
    name_backward(grad, saved, p..., *, out=None)   -> dL/dx, new array or out
    name_backward_(grad, saved, p...)               -> grad, overwritten with dL/dx

The bodies are a few lines of checks followed by :func:`fastact._dispatch.run`;
they are generated from a template rather than built from ``*args`` closures
because binding arguments by hand costs microseconds on small arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _validate as v
from ._dispatch import run
from ._kernels import backward_kernels, forward_kernels
from .definitions import Activation

_TEMPLATE = """
def {name}(x{sig}, *, out=None):
    x = as_input(x, "x")
    {kname}
    params = {params}
    if out is None:
        return run(forward_kernels(kname), (x,), np.empty_like(x), params, fresh=True)
    out = as_output(out, "out")
    same_layout(out, "out", x, "x")
    return run(forward_kernels(kname), (x,), out, params)


def {name}_(x{sig}):
    x = as_output(x, "x")
    {kname}
    params = {params}
    return run(forward_kernels(kname), (x,), x, params)


def {name}_backward(grad, saved{sig}, *, out=None):
    grad = as_input(grad, "grad")
    saved = as_input(saved, "saved")
    same_layout(saved, "saved", grad, "grad")
    {kname}
    params = {params}
    if out is None:
        return run(backward_kernels(kname), (grad, saved), np.empty_like(grad), params, fresh=True)
    out = as_output(out, "out")
    same_layout(out, "out", grad, "grad")
    return run(backward_kernels(kname), (grad, saved), out, params)


def {name}_backward_(grad, saved{sig}):
    grad = as_output(grad, "grad")
    saved = as_input(saved, "saved")
    same_layout(saved, "saved", grad, "grad")
    {kname}
    params = {params}
    return run(backward_kernels(kname), (grad, saved), grad, params)
"""


def convert(entry: Activation, values: tuple) -> tuple:
    """Check parameter values; Python floats for the kernels (which round them to the
    arrays' dtype)."""
    if not values:
        return ()
    floats = tuple(map(v.real, values, entry.kernel_names))
    if entry.check is not None:
        message = entry.check(*floats)
        if message is not None:
            raise ValueError(f"{entry.name}: {message}")
    return floats


def _docstrings(entry: Activation) -> dict[str, str]:
    params = "".join(
        f"\n    {p.name}: {'required' if p.default is None else f'default {p.default!r}'}"
        + (f", one of {', '.join(map(repr, p.choices))}" if p.choices else "")
        for p in entry.params
    )
    params = f"\n\nParameters:{params}" if params else ""
    saved = "the forward output y" if entry.saves == "output" else "the forward input x"
    facts = f"y = {entry.formula}; dy/dx = {entry.derivative}{params}"
    note = f"\n\n{entry.note}." if entry.note else ""
    return {
        "": f"{entry.name} (new array, or written into ``out``).\n\n{facts}{note}",
        "_": f"{entry.name} in place: overwrites x and returns it.\n\n{facts}{note}",
        "_backward": (
            f"Gradient of {entry.name}: grad * dy/dx (new array, or written into ``out``).\n\n"
            f"``saved`` is {saved} ({entry.name} saves its {entry.saves}).\n\n{facts}{note}"
        ),
        "_backward_": (
            f"Gradient of {entry.name} in place: overwrites grad with grad * dy/dx.\n\n"
            f"``saved`` is {saved} ({entry.name} saves its {entry.saves}).\n\n{facts}{note}"
        ),
    }


def make_functions(entry: Activation, table: dict[str, Activation]) -> dict[str, Callable]:
    """The four public functions of ``entry``, keyed by their names."""
    sig = "".join(f", {p.name}" + ("" if p.default is None else f"={p.default!r}") for p in entry.params)
    pargs = "".join(f"{p.name}, " for p in entry.kernel_params)
    chooser = next((p for p in entry.params if p.choices), None)
    if chooser is None:
        kname = f"kname = {entry.name!r}"
    else:
        kname = f"kname = choice({chooser.name}, {chooser.name!r}, choices); entry = table[kname]"
    namespace = {
        "np": np,
        "as_input": v.as_input,
        "as_output": v.as_output,
        "same_layout": v.same_layout,
        "choice": v.choice,
        "convert": convert,
        "run": run,
        "forward_kernels": forward_kernels,
        "backward_kernels": backward_kernels,
        "entry": entry,
        "table": table,
        "choices": chooser.choices if chooser else None,
    }
    params = f"convert(entry, ({pargs}))" if pargs else "()"  # nothing to check without
    source = _TEMPLATE.format(name=entry.name, sig=sig, params=params, kname=kname)
    exec(compile(source, f"<fastact.{entry.name}>", "exec"), namespace)
    functions = {}
    for suffix, doc in _docstrings(entry).items():
        function = namespace[entry.name + suffix]
        function.__doc__ = doc
        function.__module__ = "fastact"
        functions[entry.name + suffix] = function
    return functions
