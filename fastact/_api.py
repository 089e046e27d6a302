"""The CPU backend of the front end (:mod:`fastact._frontend`): numpy arrays checked by
:mod:`fastact._validate`, computed by :func:`fastact._dispatch.run` with the table's
compiled kernels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _frontend
from . import _validate as v
from ._dispatch import run
from ._kernels import backward_kernels, forward_kernels
from .definitions import Activation

__all__ = ["CPU", "make_functions"]

CPU = _frontend.Backend(
    module="fastact",
    read='as_input({arg}, "{arg}", True)',
    write='as_output({arg}, "{arg}", True)',
    params="convert(entry, ({pargs}))",
    no_params="()",  # nothing to check without parameters
    new="run({direction}_kernels(kname), {inputs}, np.empty_like({first}), params, fresh=True)",
    into="run({direction}_kernels(kname), {inputs}, {out}, params)",
    namespace={
        "np": np,
        "as_input": v.as_input,
        "as_output": v.as_output,
        "run": run,
        "forward_kernels": forward_kernels,
        "backward_kernels": backward_kernels,
    },
)


def make_functions(entry: Activation, table: dict[str, Activation]) -> dict[str, Callable]:
    """The four CPU functions of ``entry``, keyed by their names."""
    return _frontend.make_functions(entry, table, CPU)
