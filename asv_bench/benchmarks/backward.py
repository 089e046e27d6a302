"""Backward passes: ``name_backward(grad, saved)`` and ``name_backward_(grad, saved)``
against the naive numpy ``grad * dydx(saved)`` / ``grad *= dydx(saved)``.

``saved`` is what the forward saves (``ACTIVATIONS[name].saves``: its input or
output). Same grids as ``elementwise``.
"""

from . import _common as c


class Backward:
    """Seconds per call, every activation, 1M float32 elements."""

    params = (c.ACTIVATIONS, c.INPLACE, c.IMPLS)
    param_names = ("activation", "inplace", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, activation, inplace, impl):
        self.call = c.call(activation, "float32", c.SIZE, "backward", inplace, impl)

    def time_backward(self, activation, inplace, impl):
        self.call()


class BackwardSize:
    """Seconds per in-place call from 1K to 16M elements, both dtypes."""

    params = (c.SWEEP, c.DTYPES, c.SIZES, c.IMPLS)
    param_names = ("activation", "dtype", "size", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, activation, dtype, size, impl):
        self.call = c.call(activation, dtype, size, "backward", True, impl)

    def time_backward(self, activation, dtype, size, impl):
        self.call()


class BackwardSpeedup:
    """Naive numpy time / fastact time in place at 1M elements (higher is better)."""

    params = (c.ACTIVATIONS, c.DTYPES)
    param_names = ("activation", "dtype")
    unit = "x faster than numpy"

    def track_speedup(self, activation, dtype):
        return c.speedup(activation, dtype, c.SIZE, "backward", True)


class BackwardBandwidth:
    """GB/s of ``name_backward_(grad, saved)`` at 16M elements (bytes read + written / time)."""

    params = (c.SWEEP, c.DTYPES)
    param_names = ("activation", "dtype")
    unit = "GB/s"

    def track_gbps(self, activation, dtype):
        return c.gbps(activation, dtype, 1 << 24, "backward")


class BackwardMemory:
    """Peak memory of one call on 16M float64 (128 MiB per array)."""

    params = (c.SWEEP, c.INPLACE, c.IMPLS)
    param_names = ("activation", "inplace", "impl")

    def setup(self, activation, inplace, impl):
        self.call = c.memory_call(activation, "backward", inplace, impl)

    def peakmem_backward(self, activation, inplace, impl):
        self.call()
