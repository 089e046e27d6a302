"""Launch sizes, kernel compilation with explicit signatures, and cached launches.

Kernels are compiled once per (kernel, dtype, layout) with an explicit signature and
marked specialized, so a call does no argument typing; the launch configuration
object (grid, block, stream) is cached too. Grids are sized to the device: at most
``BLOCKS_PER_SM`` blocks per multiprocessor, the kernels loop (grid-stride) over
the rest. Under the simulator (which runs every thread as a Python thread) blocks
are tiny: :data:`settings` holds the sizes and tests may patch them.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

from numba import cuda

from ._arrays import SIMULATOR


@dataclass
class Settings:
    """Launch sizes. ``threads`` (a power of two) is baked into kernels with shared memory."""

    threads: int = 256
    blocks_per_sm: int = 8
    # softmax: a row this long or longer may be split across blocks (two kernels) when
    # there are too few rows to fill the device.
    split_min: int = 8192
    # cross-entropy/softmax groups: aim for this many elements per thread in a row.
    per_thread: int = 4


settings = Settings(threads=8, blocks_per_sm=2, split_min=64, per_thread=2) if SIMULATOR else Settings()


@functools.cache
def sm_count() -> int:
    if SIMULATOR:
        return 2
    return cuda.get_current_device().MULTIPROCESSOR_COUNT  # pragma: no cover


def max_blocks() -> int:
    return sm_count() * settings.blocks_per_sm


def blocks(n: int, per_block: int | None = None) -> int:
    """Blocks for ``n`` work items of ``per_block`` each, capped at the device's fill."""
    per_block = per_block or settings.threads
    return max(1, min(-(-n // per_block), max_blocks()))


def group_size(n: int) -> int:
    """Threads per row of n elements (softmax, cross-entropy): a power of two, about
    n / per_thread, at most a block."""
    want = -(-n // settings.per_thread)
    return min(settings.threads, 1 << max(0, (want - 1).bit_length()))


def compile_kernel(pyfunc, signature: str):
    """``pyfunc`` compiled for exactly ``signature``, typed once, never re-typed per call."""
    kernel = cuda.jit(signature)(pyfunc)
    # An eagerly compiled dispatcher still matches argument types on every call;
    # marking it specialized (what Dispatcher.specialize() does) skips that. The
    # signature is explicit, so nothing is lost.
    if getattr(kernel, "_specialized", None) is False and len(kernel.overloads) == 1:
        kernel._specialized = True
    return kernel


_configs: dict[tuple, object] = {}


def launch(kernel, grid: int, block: int, stream, args: tuple) -> None:
    """kernel[grid, block, stream](*args), with the configuration object cached."""
    if SIMULATOR:
        kernel[grid, block](*args)  # the simulator's configurations are not reentrant
        return
    key = (kernel, grid, block, stream)  # pragma: no cover - needs a GPU
    config = _configs.get(key)
    if config is None:
        if len(_configs) > 4096:
            _configs.clear()
        with warnings.catch_warnings():  # small grids are deliberate for small arrays
            warnings.simplefilter("ignore")
            config = _configs[key] = kernel[grid, block, stream]
    config(*args)
