"""The fused ops: gated units (every entry of ``fastact.GATED_UNITS`` and each choice of its
parameters) and ``bias_act`` (gelu, gelu tanh, silu, relu), float32, forward (``name(a, b,
out=)``, ``bias_act(x, bias, act, out=)``) and in-place backward (``name_backward_(g, a, b)``,
``glu_backward(g, x)``, ``bias_act_backward_``), next to torch's composition (``F.silu(a) *
b``; autograd through it for the backward) and the memory ceiling of as many streams.

The calls come from ``fastact._bench.fused_pairs``, shared with ``python -m fastact bench
--fused``: a, b of 16M elements each (glu: x of 16M), bias_act on 8192 x 4096.
"""

from . import _common as c

OPS = list(c.FUSED_OPS)
DIRECTIONS = ["forward", "backward"]


class Fused:
    """Seconds per call of fastact, torch's composition and the ceiling loop."""

    params = (OPS, DIRECTIONS, ["fastact", "torch", "ceiling"])
    param_names = ("op", "direction", "impl")
    repeat = (3, 10, 1.0)

    def setup(self, op, direction, impl):
        self.call, reset = c.fused_pair(op, direction, impl)
        if reset is not None:
            reset()

    def time_fused(self, op, direction, impl):
        self.call()


class FusedSpeedup:
    """torch's time / fastact's (the composition allocating; autograd for the backward)."""

    params = (OPS, DIRECTIONS)
    param_names = ("op", "direction")
    unit = "x faster than torch"

    def setup(self, op, direction):
        self.pairs = {impl: c.fused_pair(op, direction, impl) for impl in ("fastact", "torch")}

    def track_speedup(self, op, direction):
        t = c._bench.compare(self.pairs, c.BUDGET)
        return t["torch"] / t["fastact"]


class FusedCeiling:
    """The ceiling loop's time / fastact's, in percent (100: memory bound)."""

    params = (OPS, DIRECTIONS)
    param_names = ("op", "direction")
    unit = "% of the ceiling"

    def setup(self, op, direction):
        self.pairs = {impl: c.fused_pair(op, direction, impl) for impl in ("fastact", "ceiling")}

    def track_ceiling(self, op, direction):
        t = c._bench.compare(self.pairs, c.BUDGET)
        return 100.0 * t["ceiling"] / t["fastact"]
