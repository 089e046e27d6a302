"""Forward passes: ``name(x)`` and ``name_(x)`` against the naive numpy expression.

Every activation of ``fastact.ACTIVATIONS`` at 1M elements, in place and not, with
its speedup over numpy in both dtypes; the cost of a call on 64 elements; sizes
1K..16M, GB/s against the in-place memory ceiling and peak memory (in place vs out of
place) for a cheap, an exp-based and an erf-based activation. (asv runs each parameter
combination in a new process: the grids are kept to a few hundred combinations.)
"""

from . import _common as c


class Forward:
    """Seconds per call, every activation, 1M float32 elements."""

    params = (c.ACTIVATIONS, c.INPLACE, c.IMPLS)
    param_names = ("activation", "inplace", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, activation, inplace, impl):
        self.call = c.call(activation, "float32", c.SIZE, "forward", inplace, impl)

    def time_forward(self, activation, inplace, impl):
        self.call()


class ForwardSize:
    """Seconds per in-place call from 1K to 16M elements, both dtypes."""

    params = (c.SWEEP, c.DTYPES, c.SIZES, c.IMPLS)
    param_names = ("activation", "dtype", "size", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, activation, dtype, size, impl):
        self.call = c.call(activation, dtype, size, "forward", True, impl)

    def time_forward(self, activation, dtype, size, impl):
        self.call()


class CallOverhead:
    """Seconds per in-place call on 64 float32 elements: what a call costs beyond its
    arithmetic (argument checks, dispatch, numba's dispatcher); elu has a parameter."""

    params = (["relu", "elu", "sigmoid"], c.IMPLS)
    param_names = ("activation", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, activation, impl):
        self.call = c.call(activation, "float32", 64, "forward", True, impl)

    def time_forward(self, activation, impl):
        self.call()


class ForwardSpeedup:
    """Naive numpy time / fastact time in place at 1M elements (higher is better)."""

    params = (c.ACTIVATIONS, c.DTYPES)
    param_names = ("activation", "dtype")
    unit = "x faster than numpy"

    def track_speedup(self, activation, dtype):
        return c.speedup(activation, dtype, c.SIZE, "forward", True)


class ForwardBandwidth:
    """GB/s of ``name_(x)`` at 16M elements (bytes read + written / time); compare ``Ceiling``."""

    params = (c.SWEEP, c.DTYPES)
    param_names = ("activation", "dtype")
    unit = "GB/s"

    def track_gbps(self, activation, dtype):
        return c.gbps(activation, dtype, 1 << 24, "forward")


class Ceiling:
    """GB/s of the in-place memory ceiling: fastact's loop around ``x[i] *= a`` / ``g[i] *= s[i]``."""

    params = (c.DTYPES, ["forward", "backward"])
    param_names = ("dtype", "direction")
    unit = "GB/s"

    def track_gbps(self, dtype, direction):
        return c.ceiling_gbps(dtype, 1 << 24, direction)


class Ufunc:
    """Seconds per call of the numpy ufunc ``fastact.ufuncs.<name>`` on 1M float32 into a
    new array or in place (``out=x``), parameters as broadcast scalars (elu's alpha)."""

    params = ([*c.SWEEP, "elu"], c.INPLACE)
    param_names = ("activation", "inplace")
    number = 1  # setup (fresh data) before every timed call
    repeat = (3, 10, 1.0)

    def setup(self, activation, inplace):
        self.call = c.ufunc_call(activation, "float32", c.SIZE, inplace)

    def time_ufunc(self, activation, inplace):
        self.call()


class ForwardMemory:
    """Peak memory of one call on 16M float64 (128 MiB): in place needs no temporary."""

    params = (c.SWEEP, c.INPLACE, c.IMPLS)
    param_names = ("activation", "inplace", "impl")

    def setup(self, activation, inplace, impl):
        self.call = c.memory_call(activation, "forward", inplace, impl)

    def peakmem_forward(self, activation, inplace, impl):
        self.call()
