"""Seeded test data shared by the tests and the benchmarks, and accuracy measures.

``sample(entry, dtype)`` gives random values at several scales plus the edge set
(+-0.0, denormals, the smallest normal, +-inf, NaN, huge magnitudes, the entry's
break points and their float neighbours). ``ulp_error`` measures a result against a
float64 (or better) reference in units in the last place of the result's dtype.
"""

from __future__ import annotations

import numpy as np

from .definitions import Activation

SCALES = (1e-3, 0.3, 1.0, 3.0, 10.0, 100.0)


def edge_values(dtype: np.dtype | type) -> np.ndarray:
    """Values every kernel must get right, in ``dtype``."""
    info = np.finfo(dtype)
    tiny = info.smallest_normal
    denormal = info.smallest_subnormal
    values = [
        0.0, -0.0, denormal, -denormal, 3 * denormal, tiny, -tiny, tiny * 0.5, -tiny * 0.5,
        info.eps, -info.eps, 1.0, -1.0, 0.5, -0.5,
        info.max, -info.max, info.max / 2, -info.max / 2, 1e4, -1e4, 1e10, -1e10,
        np.inf, -np.inf, np.nan,
    ]  # fmt: skip
    return np.array(values, dtype=dtype)


def neighbours(points: np.ndarray | list[float], dtype: np.dtype | type, steps: int = 2) -> np.ndarray:
    """Each point and its ``steps`` nearest floats on each side, in ``dtype``."""
    out = []
    for p in np.asarray(points, dtype=dtype):
        lo = hi = p
        out.append(p)
        for _ in range(steps):
            lo = np.nextafter(lo, dtype(-np.inf))
            hi = np.nextafter(hi, dtype(np.inf))
            out += [lo, hi]
    return np.array(out, dtype=dtype)


def break_points(entry: Activation, params: tuple[float, ...] = ()) -> list[float]:
    """The entry's edges plus its parameter values (hardtanh's bounds, thresholds)."""
    points = list(entry.edges) + [float(p) for p in params if np.isfinite(p)]
    if entry.name == "softplus" and params:  # the switch sits at x = threshold / beta
        points.append(params[1] / params[0])
    return points


def sample(
    entry: Activation, dtype: np.dtype | type, params: tuple[float, ...] = (), n: int = 2000, seed: int = 0
) -> np.ndarray:
    """Random values at several scales, the edge set and the entry's break points."""
    rng = np.random.default_rng(seed)
    random = np.concatenate([rng.standard_normal(n // len(SCALES)) * s for s in SCALES])
    parts = [
        random.astype(dtype),
        edge_values(dtype),
        neighbours(break_points(entry, params), dtype),
    ]
    return np.concatenate(parts)


def ulp_error(got: np.ndarray, ref: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """|got - ref| in units of the spacing of ``dtype`` at ``ref`` (0 where both are equal).

    NaN where exactly one of them is NaN or they are unequal infinities, so that
    ``np.nanmax`` is not fooled: callers check NaN positions separately.
    """
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        ref_in_dtype = np.abs(ref).astype(dtype)
        spacing = np.spacing(np.where(np.isinf(ref_in_dtype), np.finfo(dtype).max, ref_in_dtype))
        err = np.abs(got - ref) / spacing.astype(np.float64)
        rounded = ref.astype(dtype).astype(np.float64)  # an overflow to inf is exact
    same = (got == ref) | (got == rounded) | (np.isnan(got) & np.isnan(ref))
    return np.where(same, 0.0, err)


def default_params(entry: Activation) -> tuple[float, ...]:
    """Kernel parameter values to test with: defaults, or typical values if required."""
    typical = {"threshold": 0.1, "value": 20.0}
    return tuple(float(p.default if p.default is not None else typical[p.name]) for p in entry.kernel_params)
