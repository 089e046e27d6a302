"""fastact's array functions, assembled: the four functions of every public activation
(made by the front end from the table), the softmax family, the chunked linear
cross-entropy and the fused ops (every gated unit of GATED_UNITS, and bias_act). The package
re-exports them; the adapters (torch, dask) take them from here.
"""

from __future__ import annotations

from ._api import make_functions
from ._softmax import __all__ as _softmax_all
from .definitions import ACTIVATIONS

FUNCTIONS: dict = {}
for _entry in ACTIVATIONS.values():
    if _entry.public:
        FUNCTIONS.update(make_functions(_entry, ACTIVATIONS))

from . import _fused, _linear_xent, _softmax  # noqa: E402

FUNCTIONS.update({name: getattr(_softmax, name) for name in _softmax_all})
FUNCTIONS.update({name: getattr(_linear_xent, name) for name in _linear_xent.__all__})
FUNCTIONS.update(_fused.functions())  # gated units (GATED_UNITS) and bias_act
globals().update(FUNCTIONS)

__all__ = ["FUNCTIONS", *FUNCTIONS]
