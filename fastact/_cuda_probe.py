"""Can :mod:`fastact.cuda` be used here? Answered without raising.

Kept outside the ``fastact.cuda`` package, whose import raises when CUDA is unusable.
Nothing is imported until a function is called: ``import fastact`` never touches CUDA.
"""

from __future__ import annotations

import importlib
import importlib.util

INSTALL = "pip install 'fastact[cuda]'"


def problem() -> str | None:
    """Why fastact.cuda cannot be used here, or None when it can.

    Usable means: ``numba.cuda`` from the numba-cuda package imports and sees a GPU,
    or numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before numba.cuda is
    first imported), which also accepts numba's older built-in CUDA target.
    """
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed"
    try:
        from numba import config

        cuda = importlib.import_module("numba.cuda")
    except Exception as exc:  # numba-cuda without its CUDA bindings raises ImportError here
        return f"numba.cuda cannot be imported ({type(exc).__name__}: {exc})"
    if config.ENABLE_CUDASIM:
        return None
    if getattr(cuda, "implementation", None) != "NVIDIA":
        return "the numba-cuda package is not installed (numba's built-in CUDA target is deprecated)"
    try:
        available = cuda.is_available()
    except Exception as exc:
        return f"numba.cuda.is_available() failed ({type(exc).__name__}: {exc})"
    if not available:
        return (
            "no CUDA GPU or driver was found (numba.cuda.is_available() is False); "
            "to run on the CPU for testing, set NUMBA_ENABLE_CUDASIM=1 before numba.cuda is imported"
        )
    return None


def cuda_is_available() -> bool:
    """True when ``import fastact.cuda`` works: a GPU with numba-cuda, or the simulator."""
    return problem() is None
