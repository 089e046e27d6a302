"""Argument checks shared by every public entry point.

Each check raises before anything is written: ``TypeError`` for a wrong type or
dtype, ``ValueError`` for a wrong value (read-only array, shape mismatch, bad
parameter). Messages name the argument and say what was expected.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._half import is_bfloat16

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FLOAT_DTYPES = (F32, F64)


def _dtype_error(name: str, dtype: object, half: bool = False) -> TypeError:
    if half:
        return TypeError(
            f"{name} must be a float32 or float64 array (or float16, or ml_dtypes' bfloat16), "
            f"got dtype {dtype}"
        )
    return TypeError(f"{name} must be a float32 or float64 array, got dtype {dtype}")


def _float(dtype: np.dtype, half: bool = False) -> bool:
    # Identity first: numpy arrays share the builtin descriptors, and `in` compares.
    if dtype is F32 or dtype is F64 or dtype in FLOAT_DTYPES:
        return True
    return half and (dtype == F16 or is_bfloat16(dtype))


def as_input(x: object, name: str, half: bool = False) -> np.ndarray:
    """An array to read from: ndarrays pass through, array-likes are converted.
    ``half``: float16 and bfloat16 arrays are accepted too (the caller's kernels store
    them, see fastact._half)."""
    if type(x) is not np.ndarray:
        if isinstance(x, np.ndarray):
            x = np.asarray(x)
        elif isinstance(x, (list, tuple, float, np.floating)):
            x = np.asarray(x)
        else:
            try:
                x = np.asarray(x)
            except Exception as exc:
                raise TypeError(f"{name} must be an array, got {type(x).__name__}") from exc
            if x.dtype == object:
                raise TypeError(f"{name} must be a float32 or float64 array, got {type(x).__name__}")
    if not _float(x.dtype, half):
        raise _dtype_error(name, x.dtype, half)
    return x


def as_output(a: object, name: str, half: bool = False) -> np.ndarray:
    """An array to write into in place: must be a writeable float ndarray (``half``: as
    :func:`as_input`)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray to be written in place, got {type(a).__name__}")
    if not _float(a.dtype, half):
        raise _dtype_error(name, a.dtype, half)
    flags = a.flags
    if not flags.writeable:
        raise ValueError(f"{name} is read-only; in-place calls need a writeable array")
    # a contiguous array has no zero stride along an axis longer than 1
    if not (flags.c_contiguous or flags.f_contiguous) and 0 in a.strides and a.size > 1:
        for n, s in zip(a.shape, a.strides):
            if s == 0 and n > 1:
                raise ValueError(
                    f"{name} has a zero stride (a broadcast view); it cannot be written in place"
                )
    return a


def same_layout(a: np.ndarray, name: str, ref: np.ndarray, ref_name: str) -> None:
    """``a`` must have the shape and dtype of ``ref``."""
    if a.shape != ref.shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {ref.shape} (the shape of {ref_name})")
    if a.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, expected {ref.dtype} (the dtype of {ref_name})")


def real(value: object, name: str) -> float:
    """A real-number parameter as a Python float."""
    if type(value) is float and value == value:  # the common case, without the ABC check
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if value != value:
        raise ValueError(f"{name} must not be NaN")
    return value


def choice(value: object, name: str, choices: dict[str, str]) -> str:
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return choices[value]


def one_per(v, name: str, n: int, dtype: np.dtype, of: str, per: str) -> None:
    """``v`` (any array with .shape and .dtype: numpy or device) holds one value per
    ``per``: shape (n,), the dtype of ``of``."""
    if v.shape != (n,):
        raise ValueError(f"{name} has shape {v.shape}, expected {(n,)} ({per})")
    if v.dtype != dtype:
        raise TypeError(f"{name} has dtype {v.dtype}, expected {dtype} (the dtype of {of})")


def bias_along_last_axis(bias, x) -> None:
    """``bias`` is added along x's last axis: shape (x.shape[-1],), x's dtype."""
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the bias is added along its last axis)")
    one_per(bias, "bias", x.shape[-1], x.dtype, "x", "x's last axis")
