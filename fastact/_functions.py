"""fastact's array functions, assembled: the four functions of every public activation
(made by the front end from the table), the softmax family and the chunked linear
cross-entropy. The package re-exports them; the adapters (torch, dask) take them from here.
"""

from __future__ import annotations

from ._api import make_functions
from ._softmax import __all__ as _softmax_all
from .definitions import ACTIVATIONS

FUNCTIONS: dict = {}
for _entry in ACTIVATIONS.values():
    if _entry.public:
        FUNCTIONS.update(make_functions(_entry, ACTIVATIONS))

from . import _linear_xent, _softmax  # noqa: E402

FUNCTIONS.update({name: getattr(_softmax, name) for name in _softmax_all})
FUNCTIONS.update({name: getattr(_linear_xent, name) for name in _linear_xent.__all__})
globals().update(FUNCTIONS)

__all__ = ["FUNCTIONS", *FUNCTIONS]
