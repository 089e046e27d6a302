"""fastact: Numba-compiled activation kernels, in place, forward and backward.

Every activation in :data:`ACTIVATIONS` has four functions, ``name``, ``name_``,
``name_backward`` and ``name_backward_`` (see ``help(fastact.relu)``), and two
numpy ufuncs in :mod:`fastact.ufuncs`. Importing fastact compiles nothing.
"""

from __future__ import annotations

import importlib

from ._numba_compat import check_versions

check_versions()  # before anything compiles: outside the tested numba, a clear ImportError

from ._api import make_functions  # noqa: E402
from ._cuda_probe import cuda_is_available  # noqa: E402
from ._runtime import runtime_info, threading_layer, warmup  # noqa: E402
from .definitions import ACTIVATIONS, Activation, Param  # noqa: E402
from .softmax import __all__ as _softmax_all  # noqa: E402

__version__ = "0.1.0"

_functions = {}
for _entry in ACTIVATIONS.values():
    if _entry.public:
        _functions.update(make_functions(_entry, ACTIVATIONS))
globals().update(_functions)

# softmax, log_softmax (+ in place and backward) and softmax_cross_entropy; the
# functions take the place of the submodule's name here, as in numpy.fft.fft.
from . import softmax as _softmax_module  # noqa: E402

globals().update({name: getattr(_softmax_module, name) for name in _softmax_all})

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Param",
    "cuda_is_available",
    "ufuncs",
    "__version__",
    "runtime_info",
    "threading_layer",
    "warmup",
    *_functions,
    *_softmax_all,
]

_LAZY = {"ufuncs"}


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastact' has no attribute {name!r}")
