"""What fastact is measured against: naive numpy, and peers (torch, numexpr, scipy).

:data:`NAIVE` holds the naive numpy version of every activation, the expression a
user would write (``1 / (1 + np.exp(-x))``, ``np.maximum(x, 0)``), from its table entry
(``Activation.naive``). The asv suite, ``python -m fastact bench`` and the README plot
all use it; :data:`NAIVE_SOFTMAX` and :func:`softmax_cross_entropy` are the same for
the softmax family, from the op table (``fastact._ops.OPS``), and
:func:`linear_cross_entropy` for the chunked linear + cross-entropy. Each
entry gives the forward ``y = f(x)`` and the derivative ``dy/dx`` written in what
the forward saves (``ACTIVATIONS[name].saves``), so that

* backward:          ``grad * dydx(saved)``
* backward in place: ``grad *= dydx(saved)``
* forward in place:  ``x[...] = f(x)``, or a single ufunc with ``out=x`` where
  one exists (``np.maximum(x, 0, out=x)``).

Constants are Python floats so float32 stays float32 (NEP 50).

The peers (:data:`PEERS`: torch, numexpr, scipy) are in place too: forward
``f(x) -> x`` and backward ``b(grad, saved) -> grad``; None where the library has
no such operation. One more, ``torch_autograd``, is torch's backward as a training
step calls it (``torch.autograd.grad``, which returns a new gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ._ops import OPS, ops_of_kind
from .definitions import ACTIVATION_LIST, ACTIVATIONS, GELU_TANH_C, SELU_ALPHA, SELU_SCALE, Naive

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# the naive versions live in the table (Activation.naive)
NAIVE: dict[str, Naive] = {entry.name: entry.naive for entry in ACTIVATION_LIST}


# --- softmax family (last axis): the naive versions live in the op table (fastact._ops)


NAIVE_SOFTMAX: dict[str, tuple[Callable, Callable]] = {
    op.name: (op.naive, op.naive_backward) for op in ops_of_kind("row")
}
softmax_cross_entropy = OPS["softmax_cross_entropy"].naive
linear_cross_entropy = OPS["linear_cross_entropy"].naive


# --- peers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerOps:
    """A peer's in-place ``forward_(x)`` and ``backward_(grad, saved)`` for one activation.

    They take the library's own arrays: ``convert`` makes one from a numpy array
    without copying (done once, outside the timed call). None: no such operation.
    ``backward_input``: the backward takes the forward input x, not fastact's saved.
    """

    forward_: Callable | None
    backward_: Callable | None
    convert: Callable = lambda a: a
    note: str = ""
    backward_input: bool = False
    inplace: bool = True  # False: the backward returns a new gradient and leaves grad as is


def torch_impl(name: str, params: tuple) -> PeerOps:
    """In-place torch forward and ATen's backward kernels with ``grad_input=grad``."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    p = tuple(float(v) for v in params)
    buffers: dict = {}

    def buffer(x):
        """The buffer ATen's CPU log_sigmoid forward returns for its backward (once per x)."""
        if id(x) not in buffers:
            buffers[id(x)] = (x, aten.log_sigmoid_forward(x)[1])
        return buffers[id(x)][1]

    fwd = {
        "step": lambda t: t.ge_(p[0]),
        "linear": lambda t: t.mul_(p[0]),
        "sigmoid": torch.sigmoid_,
        "tanh": torch.tanh_,
        "relu": torch.relu_,
        "relu6": lambda t: F.hardtanh_(t, 0.0, 6.0),
        "leaky_relu": lambda t: F.leaky_relu_(t, p[0]),
        "elu": lambda t: F.elu_(t, p[0]),
        "selu": torch.selu_,
        "celu": lambda t: torch.celu_(t, p[0]),
        "gelu": lambda t: aten.gelu.out(t, approximate="none", out=t),
        "gelu_tanh": lambda t: aten.gelu.out(t, approximate="tanh", out=t),
        "silu": lambda t: F.silu(t, inplace=True),
        "mish": lambda t: F.mish(t, inplace=True),
        "softplus": lambda t: aten.softplus.out(t, p[0], p[1], out=t),
        "hardsigmoid": lambda t: F.hardsigmoid(t, inplace=True),
        "hardswish": lambda t: F.hardswish(t, inplace=True),
        "hardtanh": lambda t: F.hardtanh_(t, p[0], p[1]),
        "threshold": lambda t: F.threshold_(t, p[0], p[1]),
        "log_sigmoid": lambda t: aten.log_sigmoid_forward.output(t, output=t, buffer=t.new_empty(0)),
        "softsign": lambda t: t.div_(t.abs().add_(1.0)),  # F.softsign's own formula, in place
    }.get(name)
    bwd = {
        "step": lambda g, s: g.zero_(),
        "linear": lambda g, s: g.mul_(p[0]),
        "sigmoid": lambda g, s: aten.sigmoid_backward.grad_input(g, s, grad_input=g),
        "tanh": lambda g, s: aten.tanh_backward.grad_input(g, s, grad_input=g),
        "relu": lambda g, s: aten.threshold_backward.grad_input(g, s, 0.0, grad_input=g),
        "relu6": lambda g, s: aten.hardtanh_backward.grad_input(g, s, 0.0, 6.0, grad_input=g),
        "leaky_relu": lambda g, s: aten.leaky_relu_backward.grad_input(g, s, p[0], True, grad_input=g),
        "elu": lambda g, s: aten.elu_backward.grad_input(g, p[0], 1.0, 1.0, True, s, grad_input=g),
        "selu": lambda g, s: aten.elu_backward.grad_input(
            g, SELU_ALPHA, SELU_SCALE, 1.0, True, s, grad_input=g
        ),
        "celu": lambda g, s: aten.elu_backward.grad_input(g, p[0], 1.0, 1.0 / p[0], True, s, grad_input=g),
        "gelu": lambda g, s: aten.gelu_backward.grad_input(g, s, approximate="none", grad_input=g),
        "gelu_tanh": lambda g, s: aten.gelu_backward.grad_input(g, s, approximate="tanh", grad_input=g),
        "silu": lambda g, s: aten.silu_backward.grad_input(g, s, grad_input=g),
        "softplus": lambda g, s: aten.softplus_backward.grad_input(g, s, p[0], p[1], grad_input=g),
        "hardsigmoid": lambda g, s: aten.hardsigmoid_backward.grad_input(g, s, grad_input=g),
        "hardtanh": lambda g, s: aten.hardtanh_backward.grad_input(g, s, p[0], p[1], grad_input=g),
        "threshold": lambda g, s: aten.threshold_backward.grad_input(g, s, p[0], grad_input=g),
        "log_sigmoid": lambda g, s: aten.log_sigmoid_backward.grad_input(g, s, buffer(s), grad_input=g),
        "softsign": lambda g, s: g.mul_(s.abs().neg_().add_(1.0).square_()),  # from the output: (1 - |y|)^2
    }.get(name)
    note = ""
    if name == "softsign":
        note = "no ATen kernel: torch's composite x / (1 + |x|), with a temporary"
    if name in ("mish", "hardswish"):  # ATen has only an out-of-place backward
        op = aten.mish_backward if name == "mish" else aten.hardswish_backward
        bwd = lambda g, s: g.copy_(op(g, s))
        note = "backward out of place + copy (ATen has no in-place one)"
    # ATen's hardsigmoid and log_sigmoid backwards take the input where fastact saves the output
    return PeerOps(fwd, bwd, torch.from_numpy, note, backward_input=name in ("hardsigmoid", "log_sigmoid"))


_NUMEXPR_FORWARD = {
    "linear": "x * p0",
    "sigmoid": "1 / (1 + exp(-x))",
    "tanh": "tanh(x)",
    "relu": "where(x > 0, x, 0)",
    "relu6": "where(x > 0, where(x < 6, x, 6), 0)",
    "leaky_relu": "where(x > 0, x, x * p0)",
    "elu": "where(x > 0, x, p0 * expm1(x))",
    "selu": f"where(x > 0, {SELU_SCALE!r} * x, {SELU_SCALE * SELU_ALPHA!r} * expm1(x))",
    "celu": "where(x > 0, x, p0 * expm1(x / p0))",
    "gelu_tanh": f"0.5 * x * (1 + tanh({_SQRT_2_OVER_PI!r} * (x + {GELU_TANH_C!r} * x * x * x)))",
    "silu": "x / (1 + exp(-x))",
    "mish": "x * tanh(log1p(exp(x)))",
    "softplus": "where(x * p0 > p1, x, log1p(exp(p0 * x)) / p0)",
    "softsign": "x / (1 + abs(x))",
    "hardsigmoid": "where(x < -3, 0, where(x > 3, 1, x / 6 + 0.5))",
    "hardswish": "where(x < -3, 0, where(x > 3, x, x * (x + 3) / 6))",
    "hardtanh": "where(x < p0, p0, where(x > p1, p1, x))",
    "log_sigmoid": "-log1p(exp(-x))",
    "threshold": "where(x > p0, x, p1)",
}
_NUMEXPR_DERIVATIVE = {
    "linear": "g * p0",
    "sigmoid": "g * s * (1 - s)",
    "tanh": "g * (1 - s * s)",
    "relu": "where(s > 0, g, 0)",
    "relu6": "where((s > 0) & (s < 6), g, 0)",
    "leaky_relu": "where(s > 0, g, g * p0)",
    "elu": "where(s > 0, g, g * (s + p0))",
    "selu": f"where(s > 0, g * {SELU_SCALE!r}, g * (s + {SELU_SCALE * SELU_ALPHA!r}))",
    "celu": "where(s > 0, g, g * (s / p0 + 1))",
    "silu": "g * (1 + s * (1 - 1 / (1 + exp(-s)))) / (1 + exp(-s))",
    "softplus": "where(s * p0 > p1, g, g / (1 + exp(-p0 * s)))",
    "softsign": "g * (1 - abs(s)) ** 2",
    "hardsigmoid": "where((s > 0) & (s < 1), g / 6, 0)",
    "hardswish": "where(s < -3, 0, where(s > 3, g, g * (s / 3 + 0.5)))",
    "hardtanh": "where((s > p0) & (s < p1), g, 0)",
    "log_sigmoid": "-g * expm1(s)",
    "threshold": "where(s > p0, g, 0)",
}


def numexpr_impl(name: str, params: tuple) -> PeerOps:
    """numexpr expressions evaluated with ``out=`` the input (numexpr has no erf)."""
    import numexpr

    scope = {f"p{i}": p for i, p in enumerate(params)}
    fwd = bwd = None
    if name in _NUMEXPR_FORWARD:
        expr = _NUMEXPR_FORWARD[name]
        fwd = lambda x: numexpr.evaluate(expr, local_dict={"x": x, **scope}, out=x, casting="same_kind")
    if name in _NUMEXPR_DERIVATIVE:
        dexpr = _NUMEXPR_DERIVATIVE[name]
        bwd = lambda g, s: numexpr.evaluate(
            dexpr, local_dict={"g": g, "s": s, **scope}, out=g, casting="same_kind"
        )
    return PeerOps(fwd, bwd)


def scipy_impl(name: str, params: tuple) -> PeerOps:
    """The scipy.special ufuncs that are activations (sigmoid, log_sigmoid), ``out=x``."""
    from scipy import special

    fwd = {
        "sigmoid": lambda x: special.expit(x, out=x),
        "log_sigmoid": lambda x: special.log_expit(x, out=x),
    }.get(name)
    return PeerOps(fwd, None)


def torch_autograd_impl(name: str, params: tuple) -> PeerOps:
    """torch's backward as a training step runs it: ``torch.autograd.grad(y, x, grad)``
    through a retained graph of the functional forward, the gradient a new tensor (the
    engine's dispatch and the allocation included; no forward)."""
    import torch
    import torch.nn.functional as F

    p = tuple(float(v) for v in params)
    functional = ACTIVATIONS[name].torch if name in ACTIVATIONS else None
    fwd = None if functional is None else (lambda t: functional(torch, F, t, *p))
    if fwd is None:
        return PeerOps(None, None)
    graphs: dict = {}

    def backward(g, x):
        if id(x) not in graphs:  # the forward runs once per input, outside the timing
            leaf = x.detach().requires_grad_()
            graphs[id(x)] = (x, leaf, fwd(leaf))
        _, leaf, y = graphs[id(x)]
        return torch.autograd.grad(y, leaf, g, retain_graph=True)[0]

    return PeerOps(None, backward, torch.from_numpy, backward_input=True, inplace=False)


# peer name -> the module it needs
PEER_MODULES = {"torch": "torch", "torch_autograd": "torch", "numexpr": "numexpr", "scipy": "scipy"}

PEERS: dict[str, Callable[[str, tuple], PeerOps]] = {
    "torch": torch_impl,
    "torch_autograd": torch_autograd_impl,
    "numexpr": numexpr_impl,
    "scipy": scipy_impl,
}
