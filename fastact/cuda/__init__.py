"""fastact on NVIDIA GPUs: every activation, softmax and cross-entropy, for CUDA arrays.

The same API as the CPU package (``relu``, ``relu_``, ``relu_backward``,
``relu_backward_``, ..., ``softmax``, ``log_softmax``, their backwards and
``softmax_cross_entropy``), generated from the same definitions table, for any CUDA
Array Interface object: numba device arrays, CuPy arrays, torch CUDA tensors. Nothing
is copied; a new result is allocated by the caller's library, and work runs on
``stream=`` or on the caller's library's current stream.

Importing this module raises ImportError when it cannot work here (no numba-cuda, no
GPU); ``fastact.cuda_is_available()`` asks without raising. Under numba's simulator
(``NUMBA_ENABLE_CUDASIM=1``) it runs on the CPU, slowly, for tests.
"""

from __future__ import annotations

from .._cuda_probe import INSTALL, problem

_why = problem()
if _why is not None:
    raise ImportError(f"fastact.cuda is not usable here: {_why}. The GPU extra installs with: {INSTALL}")

from ..definitions import ACTIVATIONS  # noqa: E402
from ._api import make_functions  # noqa: E402
from ._arrays import SIMULATOR  # noqa: E402
from ._fused import functions as _fused_functions  # noqa: E402
from ._softmax import (  # noqa: E402
    log_softmax,
    log_softmax_,
    log_softmax_backward,
    log_softmax_backward_,
    softmax,
    softmax_,
    softmax_backward,
    softmax_backward_,
)
from ._xent import softmax_cross_entropy  # noqa: E402

_functions = {}
for _entry in ACTIVATIONS.values():
    if _entry.public:
        _functions.update(make_functions(_entry, ACTIVATIONS))
_functions.update(_fused_functions())  # the gated units (GATED_UNITS) and bias_act
globals().update(_functions)


def is_available() -> bool:
    """True: this module imported, so a GPU (or the simulator, see ``SIMULATOR``) is usable."""
    return True


__all__ = [
    "SIMULATOR",
    "is_available",
    "log_softmax",
    "log_softmax_",
    "log_softmax_backward",
    "log_softmax_backward_",
    "softmax",
    "softmax_",
    "softmax_backward",
    "softmax_backward_",
    "softmax_cross_entropy",
    *_functions,
]
