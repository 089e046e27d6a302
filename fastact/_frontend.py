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


_TEMPLATE = """
def {name}(x{sig}, *, out=None{keywords}):
    x = {read_x}
    {kname}
    params = {params_x}{prepare_x}
    if out is None:
        return {new_forward}
    out = {write_out}
    same_layout(out, "out", x, "x")
    return {into_forward}


def {name}_(x{sig}{keywords_}):
    x = {write_x}
    {kname}
    params = {params_x}{prepare_x}
    return {into_forward_x}


def {name}_backward(grad, saved{sig}, *, out=None{keywords}):
    grad = {read_grad}
    saved = {read_saved}
    same_layout(saved, "saved", grad, "grad")
    {kname}
    params = {params_grad}{prepare_grad}
    if out is None:
        return {new_backward}
    out = {write_out_b}
    same_layout(out, "out", grad, "grad")
    return {into_backward}


def {name}_backward_(grad, saved{sig}{keywords_}):
    grad = {write_grad}
    saved = {read_saved_}
    same_layout(saved, "saved", grad, "grad")
    {kname}
    params = {params_grad}{prepare_grad}
    return {into_backward_grad}
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
    name = entry.name
    sig = "".join(f", {p.name}" + ("" if p.default is None else f"={p.default!r}") for p in entry.params)
    pargs = "".join(f"{p.name}, " for p in entry.kernel_params)
    chooser = next((p for p in entry.params if p.choices), None)
    if chooser is None:
        kname = f"kname = {name!r}"
    else:
        kname = f"kname = choice({chooser.name}, {chooser.name!r}, choices); entry = table[kname]"
    fnames = {"": name, "_": name + "_", "b": name + "_backward", "b_": name + "_backward_"}
    read = lambda arg, f: backend.read.format(arg=arg, fname=fnames[f])
    write = lambda arg, f: backend.write.format(arg=arg, fname=fnames[f])
    params = lambda first: (backend.params if pargs else backend.no_params).format(pargs=pargs, first=first)
    prepare = lambda first: _indented(backend.prepare.format(first=first))
    new = lambda direction, inputs, first: backend.new.format(direction=direction, inputs=inputs, first=first)
    into = lambda direction, inputs, out: backend.into.format(direction=direction, inputs=inputs, out=out)
    keywords_ = (", *" + backend.keywords) if backend.keywords else ""
    return _TEMPLATE.format(
        name=name,
        sig=sig,
        kname=kname,
        keywords=backend.keywords,
        keywords_=keywords_,
        read_x=read("x", ""),
        write_x=write("x", "_"),
        write_out=write("out", ""),
        params_x=params("x"),
        prepare_x=prepare("x"),
        new_forward=new("forward", "(x,)", "x"),
        into_forward=into("forward", "(x,)", "out"),
        into_forward_x=into("forward", "(x,)", "x"),
        read_grad=read("grad", "b"),
        read_saved=read("saved", "b"),
        read_saved_=read("saved", "b_"),
        write_grad=write("grad", "b_"),
        write_out_b=write("out", "b"),
        params_grad=params("grad"),
        prepare_grad=prepare("grad"),
        new_backward=new("backward", "(grad, saved)", "grad"),
        into_backward=into("backward", "(grad, saved)", "out"),
        into_backward_grad=into("backward", "(grad, saved)", "grad"),
    )


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
