"""GPU kernels (``fastact.cuda``) on device arrays, forward and backward, in place or not.

Skipped (asv's NotImplementedError convention) without a CUDA GPU or while
``fastact.cuda`` does not exist. Assumes ``fastact.cuda`` mirrors the CPU entry
points (``name``, ``name_``, ``name_backward``, ``name_backward_``) on numba
device arrays; each timed call ends with a device synchronisation.
"""

from . import _common as c


class CudaElementwise:
    """Seconds per call (synchronised) at 1M and 16M float32 elements."""

    params = (c.SWEEP, [1 << 20, 1 << 24], ["forward", "backward"], c.INPLACE)
    param_names = ("activation", "size", "direction", "inplace")
    repeat = (3, 20, 1.0)

    def setup(self, activation, size, direction, inplace):
        self.call = c.cuda_call(activation, "float32", size, direction, inplace)

    def time_cuda(self, activation, size, direction, inplace):
        self.call()
