"""fastact: Numba-compiled activation kernels, in place, forward and backward.

Every activation in :data:`ACTIVATIONS` has four functions, ``name``, ``name_``,
``name_backward`` and ``name_backward_`` (see ``help(fastact.relu)``), and two
numpy ufuncs in :mod:`fastact.ufuncs`. Importing fastact compiles nothing.
"""

from __future__ import annotations

import importlib

from ._numba_compat import check_versions

check_versions()  # before anything compiles: outside the tested numba, a clear ImportError

from ._cuda_probe import cuda_is_available  # noqa: E402
from ._functions import FUNCTIONS as _FUNCTIONS  # noqa: E402
from ._threading import threading_layer  # noqa: E402
from ._version import __version__  # noqa: E402
from ._warmup import runtime_info, warmup  # noqa: E402
from .definitions import ACTIVATIONS, GATED_UNITS, Activation, GatedUnit, Param  # noqa: E402

# every activation's name, name_, name_backward, name_backward_; softmax, log_softmax (+ in
# place and backward), softmax_cross_entropy, linear_cross_entropy; the gated units and bias_act
globals().update(_FUNCTIONS)

__all__ = [
    "ACTIVATIONS",
    "GATED_UNITS",
    "Activation",
    "GatedUnit",
    "Param",
    "cuda_is_available",
    "ufuncs",
    "__version__",
    "runtime_info",
    "threading_layer",
    "warmup",
    *_FUNCTIONS,
]

_LAZY = {"ufuncs"}


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastact' has no attribute {name!r}")
