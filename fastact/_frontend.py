"""The front end of every elementwise activation, for every device: one template.

For an activation ``name`` with parameters ``p...`` it makes four functions with real
signatures (so ``help()``, IDEs and unknown-keyword errors work as usual)::

    name(x, p..., *, out=None)                      -> new array, or out
    name_(x, p...)                                  -> x, overwritten
    name_backward(grad, saved, p..., *, out=None)   -> dL/dx, new array or out
    name_backward_(grad, saved, p...)               -> grad, overwritten with dL/dx

The checks and their order (inputs, shapes, parameters, then the output), the parameter
conversion, the signatures and the docstrings are the front end's; a :class:`Backend`
supplies the device's pieces as code snippets: how an argument is read or written, how
parameters reach its kernels, how a result is made. The bodies are generated source
rather than closures over ``*args``: binding arguments by hand costs microseconds on
small arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import _validate as v
from .definitions import Activation

__all__ = ["Backend", "convert", "docstrings", "make_functions"]


@dataclass(frozen=True)
class Backend:
    """A device's part of the generated functions.

    Snippets (Python expressions) with ``{arg}`` (the argument's name), ``{fname}`` (the
    function's name), ``{first}`` (the first array argument), ``{pargs}`` (the numeric
    parameters, comma-terminated), ``{direction}`` ("forward"/"backward"), ``{inputs}``
    (a tuple expression) and ``{out}``:

    ``read``/``write``: the checked array to read / to write in place;
    ``params``: the kernels' parameters (``{pargs}`` empty: what a param-less call passes);
    ``new``: a new result of the op; ``into``: the op written into ``{out}``, returned.
    ``prepare``: statements after every argument but ``out`` is checked (may be empty);
    ``keywords``: extra keyword-only parameters (", stream=None").
    """

    module: str
    read: str
    write: str
    params: str
    no_params: str
    new: str
    into: str
    namespace: dict
    prepare: str = ""
    keywords: str = ""
    doc: Callable[[str], str] = field(default=lambda doc: doc)


# One direction's two functions: forward (inputs x) and backward (inputs grad, saved). The
# first input is the one written in place; the others are checked against its layout.
_TEMPLATE = """
def {fname}({inputs}{sig}, *, out=None{keywords}):{reads}
    {kname}
    params = {params}{prepare}
    if out is None:
        return {new}
    out = {write_out}
    same_layout(out, "out", {first}, "{first}")
    return {into}


def {fname}_({inputs}{sig}{keywords_}):{writes}
    {kname}
    params = {params}{prepare}
    return {into_first}
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


def docstrings(entry: Activation) -> dict[str, str]:
    """The four functions' docstrings (by suffix): what they do, the formula, the derivative."""
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


def _indented(statements: str) -> str:
    """``statements`` as further lines of a generated function's body."""
    return "".join(f"\n    {line}" for line in statements.splitlines())


def _source(entry: Activation, backend: Backend) -> str:
    sig = "".join(f", {p.name}" + ("" if p.default is None else f"={p.default!r}") for p in entry.params)
    pargs = "".join(f"{p.name}, " for p in entry.kernel_params)
    chooser = next((p for p in entry.params if p.choices), None)
    if chooser is None:
        kname = f"kname = {entry.name!r}"
    else:
        kname = f"kname = choice({chooser.name}, {chooser.name!r}, choices); entry = table[kname]"
    common = {
        "sig": sig,
        "kname": kname,
        "keywords": backend.keywords,
        "keywords_": (", *" + backend.keywords) if backend.keywords else "",
    }
    directions = (("forward", entry.name, ("x",)), ("backward", entry.name + "_backward", ("grad", "saved")))
    return "".join(
        _TEMPLATE.format(**common, **_direction(backend, direction, fname, inputs, pargs))
        for direction, fname, inputs in directions
    )


def _direction(backend: Backend, direction: str, fname: str, inputs: tuple[str, ...], pargs: str) -> dict:
    """The template's snippets for one direction's functions, ``fname`` and ``fname_``."""
    first, rest = inputs[0], inputs[1:]
    tuple_ = f"({', '.join(inputs)},)"

    def checks(suffix: str, first_snippet: str) -> str:
        """Lines binding the checked inputs of ``fname + suffix``, the first by ``first_snippet``."""
        fmt = {"fname": fname + suffix}
        lines = [f"{first} = {first_snippet.format(arg=first, **fmt)}"]
        lines += [f"{arg} = {backend.read.format(arg=arg, **fmt)}" for arg in rest]
        lines += [f'same_layout({arg}, "{arg}", {first}, "{first}")' for arg in rest]
        return _indented("\n".join(lines))

    return {
        "fname": fname,
        "inputs": ", ".join(inputs),
        "first": first,
        "reads": checks("", backend.read),
        "writes": checks("_", backend.write),
        "write_out": backend.write.format(arg="out", fname=fname),
        "params": (backend.params if pargs else backend.no_params).format(pargs=pargs, first=first),
        "prepare": _indented(backend.prepare.format(first=first)),
        "new": backend.new.format(direction=direction, inputs=tuple_, first=first),
        "into": backend.into.format(direction=direction, inputs=tuple_, out="out"),
        "into_first": backend.into.format(direction=direction, inputs=tuple_, out=first),
    }


def make_functions(entry: Activation, table: dict[str, Activation], backend: Backend) -> dict[str, Callable]:
    """The four public functions of ``entry`` on ``backend``, keyed by their names."""
    chooser = next((p for p in entry.params if p.choices), None)
    namespace = {
        **backend.namespace,
        "same_layout": v.same_layout,
        "choice": v.choice,
        "convert": convert,
        "entry": entry,
        "table": table,
        "choices": chooser.choices if chooser else None,
    }
    source = _source(entry, backend)
    exec(compile(source, f"<{backend.module}.{entry.name}>", "exec"), namespace)
    functions = {}
    for suffix, doc in docstrings(entry).items():
        function = namespace[entry.name + suffix]
        function.__doc__ = backend.doc(doc)
        function.__module__ = backend.module
        functions[entry.name + suffix] = function
    return functions
