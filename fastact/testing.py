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
    got = np.asarray(got, dtype=np.longdouble)
    ref = np.asarray(ref, dtype=np.longdouble)
    with np.errstate(over="ignore", invalid="ignore"):
        ref_in_dtype = np.abs(ref).astype(dtype)
        spacing = np.spacing(np.where(np.isinf(ref_in_dtype), np.finfo(dtype).max, ref_in_dtype))
        err = np.abs(got - ref) / spacing.astype(np.longdouble)
        rounded = ref.astype(dtype).astype(np.longdouble)  # an overflow to inf is exact
    same = (got == ref) | ((got == rounded) & np.isinf(rounded)) | (np.isnan(got) & np.isnan(ref))
    return np.where(same, 0.0, err)


def default_params(entry: Activation) -> tuple[float, ...]:
    """Kernel parameter values to test with: defaults, or typical values if required."""
    typical = {"threshold": 0.1, "value": 20.0}
    return tuple(float(p.default if p.default is not None else typical[p.name]) for p in entry.kernel_params)


# Results in the subnormal range carry an absolute bound: a subnormal intermediate
# (e.g. sigmoid(-94) in float32) has few significant bits, and x * it amplifies that.
SUBNORMAL_ULPS = 128


def forward_ulp(entry: Activation, x: np.ndarray, got: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    """Per-element ulp error of ``got = entry(x)`` against an extended-precision reference.

    Subnormal results within ``SUBNORMAL_ULPS`` of the smallest subnormal count as exact.
    """
    dtype = x.dtype
    with np.errstate(all="ignore"):
        # Extended precision where numpy has it (x86: 80-bit), so float64 is judged
        # against something better than float64.
        ref = entry.reference(x.astype(np.longdouble), *rounded(params, dtype))
        err = ulp_error(got, ref, dtype)
        abs_err = np.abs(np.asarray(got, np.longdouble) - ref)
        info = np.finfo(dtype)
        subnormal = np.abs(ref) < info.smallest_normal
        err[subnormal & (abs_err <= SUBNORMAL_ULPS * info.smallest_subnormal)] = 0.0
    return err.astype(np.float64)


def rounded(params: tuple[float, ...], dtype: np.dtype | type) -> tuple[float, ...]:
    """Parameters as the kernels see them: cast to the arrays' dtype."""
    return tuple(float(np.dtype(dtype).type(p)) for p in params)


def stated_bound(entry: Activation, x: np.ndarray) -> np.ndarray:
    """The entry's stated ulp bound at each x (looser in an ill-conditioned tail)."""
    if entry.tail is None:
        return np.full(x.shape, float(entry.ulp))
    with np.errstate(invalid="ignore"):
        return np.where(x < entry.tail[0], float(entry.tail[1]), float(entry.ulp))


def assert_specials(entry: Activation, x: np.ndarray, got: np.ndarray, want: np.ndarray, params=()) -> None:
    """``got = entry(x)`` at special inputs against ``want``: exactly (sign included) where
    ``want`` is 0, inf or NaN, within the entry's ulp bound elsewhere (e.g. softplus(0) = log 2)."""
    got, want = np.asarray(got), np.asarray(want)
    exact = (want == 0) | np.isinf(want) | np.isnan(want)
    np.testing.assert_array_equal(got[exact], want[exact].astype(got.dtype), err_msg=entry.name)
    assert np.all(forward_ulp(entry, x, got, params)[~exact] <= entry.ulp), entry.name
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want), err_msg=entry.name)
