"""Fused ``softmax_cross_entropy(logits, target) -> (loss, grad)`` against the naive
numpy log-sum-exp, gather, mean and softmax-minus-one-hot gradient
(``fastact._baselines.softmax_cross_entropy``); chunked ``linear_cross_entropy(x, W,
target) -> (loss, dx, dW, db)`` against the naive composition with the whole logits
(``fastact._baselines.linear_cross_entropy``).

Skipped (asv's NotImplementedError convention) while fastact lacks it.
"""

from . import _common as c

SHAPES = ["512x4096", "256x32768"]  # batch x classes: 2M and 8M logits


class CrossEntropy:
    """Seconds per call: loss and gradient together; in place, the gradient overwrites
    the logits (``inplace=True``; numpy: ``logits[...] = grad``)."""

    params = (c.DTYPES, SHAPES, c.INPLACE, c.IMPLS)
    param_names = ("dtype", "shape", "inplace", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, dtype, shape, inplace, impl):
        self.call = c.cross_entropy_call(dtype, shape, inplace, impl)

    def time_loss_and_grad(self, dtype, shape, inplace, impl):
        self.call()


class CrossEntropyMemory:
    """Peak memory of one call on 256 x 32768 float64 logits (64 MiB)."""

    params = (c.INPLACE, c.IMPLS)
    param_names = ("inplace", "impl")

    def setup(self, inplace, impl):
        self.call = c.cross_entropy_call("float64", "256x32768", inplace, impl, copy=False)

    def peakmem_loss_and_grad(self, inplace, impl):
        self.call()


LCE_SHAPES = ["1024x512x8192", "4096x1024x32000"]  # tokens x hidden x vocab: 32 and 500 MiB of logits


class LinearCrossEntropy:
    """Seconds per call: loss, dinput and dW (float32, mean over class targets)."""

    params = (LCE_SHAPES, c.IMPLS)
    param_names = ("shape", "impl")
    repeat = (1, 5, 60.0)
    number = 1
    timeout = 600

    def setup(self, shape, impl):
        self.call = c.linear_cross_entropy_call("float32", shape, impl)

    def time_loss_and_grads(self, shape, impl):
        self.call()


class LinearCrossEntropyMemory:
    """Peak memory of one call, 2048 x 512 x 16000 float32 (125 MiB of logits): fastact
    holds a chunk of 1/10 of them, numpy the logits and their gradient."""

    params = (c.IMPLS,)
    param_names = ("impl",)
    timeout = 300

    def setup(self, impl):
        self.call = c.linear_cross_entropy_call("float32", "2048x512x16000", impl)

    def peakmem_loss_and_grads(self, impl):
        self.call()
