"""The CPU numba compiles for: its name, its features and its SIMD level.

Honours ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` (how ``python -m fastact bench --simd
avx2`` and CI build for AVX2 on an AVX-512 host). Read once per process, as numba does.
"""

from __future__ import annotations

from functools import cache

import llvmlite.binding as llvm
from numba.core import config

from ._config import NO_PREFETCH_CPUS

__all__ = ["cpu", "has_avx512", "simd_level", "software_prefetch"]

# (level, the features it needs), best first
SIMD_LEVELS = (
    ("avx512", ("avx512f", "avx512bw", "avx512dq", "avx512vl")),
    ("avx2", ("avx2", "fma")),
    ("avx", ("avx",)),
    ("sse4.2", ("sse4.2",)),
    ("neon", ("neon",)),
    ("sve", ("sve",)),
)


@cache
def cpu() -> tuple[str, dict[str, bool]]:
    """The CPU name and features numba compiles for."""
    name = config.CPU_NAME or llvm.get_host_cpu_name()
    if config.CPU_FEATURES is not None:
        flags = config.CPU_FEATURES.split(",")
    else:
        flags = llvm.get_host_cpu_features().flatten().split(",")
    features = {f[1:]: f[0] == "+" for f in flags if f and f[0] in "+-"}
    return name, features


def simd_level() -> str:
    """The widest SIMD level of :data:`SIMD_LEVELS` the target has, or "baseline"."""
    features = cpu()[1]
    return next((level for level, needs in SIMD_LEVELS if all(features.get(f) for f in needs)), "baseline")


def has_avx512() -> bool:
    """Whether the target has AVX-512 (vscalef applies 2^n in one instruction; masked stores are fast)."""
    return bool(cpu()[1].get("avx512f"))


def software_prefetch() -> bool:
    """Whether the 1-d kernels prefetch ahead of their blocks on the target: not on AMD Zen
    (``NO_PREFETCH_CPUS``), whose hardware prefetcher keeps up and where the prefetches
    slowed the in-place backwards (docs/TUNING.md)."""
    return not cpu()[0].startswith(NO_PREFETCH_CPUS)
