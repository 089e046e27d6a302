"""softmax and log_softmax over the last axis, forward and backward, in place or not,
against the naive numpy ``e = np.exp(x - x.max(-1, keepdims=True)); e / e.sum(-1, keepdims=True)``.

Skipped (asv's NotImplementedError convention) while fastact lacks a function of the softmax family.
"""

from . import _common as c

FUNCTIONS = ["softmax", "log_softmax"]
SHAPES = ["1x1024", "256x256", "1024x1024", "4096x4096"]  # 1K .. 16M elements


class Softmax:
    """Seconds per forward call, float32; shapes are rows x classes."""

    params = (FUNCTIONS, SHAPES, c.INPLACE, c.IMPLS)
    param_names = ("function", "shape", "inplace", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, function, shape, inplace, impl):
        self.call = c.softmax_call(function, "float32", shape, "forward", inplace, impl)

    def time_forward(self, function, shape, inplace, impl):
        self.call()


class SoftmaxBackward:
    """Seconds per backward call (from the forward output), float32."""

    params = (FUNCTIONS, SHAPES, c.INPLACE, c.IMPLS)
    param_names = ("function", "shape", "inplace", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, function, shape, inplace, impl):
        self.call = c.softmax_call(function, "float32", shape, "backward", inplace, impl)

    def time_backward(self, function, shape, inplace, impl):
        self.call()


class SoftmaxDtype:
    """Seconds per in-place forward call on 1024 x 1024, both dtypes."""

    params = (FUNCTIONS, c.DTYPES, c.IMPLS)
    param_names = ("function", "dtype", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, function, dtype, impl):
        self.call = c.softmax_call(function, dtype, "1024x1024", "forward", True, impl)

    def time_forward(self, function, dtype, impl):
        self.call()


class SoftmaxMemory:
    """Peak memory of a forward call on 4096 x 4096 float64 (128 MiB)."""

    params = (FUNCTIONS, c.INPLACE, c.IMPLS)
    param_names = ("function", "inplace", "impl")

    def setup(self, function, inplace, impl):
        self.call = c.softmax_call(function, "float64", "4096x4096", "forward", inplace, impl, copy=False)

    def peakmem_forward(self, function, inplace, impl):
        self.call()


class SoftmaxCausal:
    """Seconds per forward call, float32 heads x L x L (16 x 2048 x 2048, smaller under the
    tests' cap), scale 1/8 and a causal L x L mask broadcast over the heads (read in place):
    fastact with scale and where, the same fastact call without them, and torch's
    ``torch.softmax(x.masked_fill(~where, -inf) * scale, -1)``."""

    params = (["fastact masked", "fastact unmasked", "torch masked_fill"],)
    param_names = ("impl",)
    repeat = (3, 10, 1.0)

    def setup(self, impl):
        self.call = c.causal_softmax_call(impl)

    def time_forward(self, impl):
        self.call()
