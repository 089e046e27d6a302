"""Fused ``softmax_cross_entropy(logits, target) -> (loss, grad)`` against the naive
numpy log-sum-exp, gather, mean and softmax-minus-one-hot gradient
(``fastact._baselines.softmax_cross_entropy``).

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
