"""Every op fastact offers, described once: :data:`OPS`.

An :class:`Op` says what an op reads, writes, saves for its backward and reduces, its
parameters, its float64 reference (forward and backward), its naive numpy baseline, its
torch counterpart and its accuracy bound. The elementwise activations are derived from
their entries in :data:`fastact.definitions.ACTIVATIONS`, the gated units from
:data:`fastact.definitions.GATED_UNITS`; bias_act, the ops that reduce (softmax,
log_softmax, the softmax cross-entropy) and the linear cross-entropy are written here.
tests/test_ops.py holds every op to its reference and its baseline, and checks each has
public functions, torch and dask wrappers, benchmarks and a README row; the benchmarks
take their baselines from here.

Backward signatures follow what is saved: ``backward(grad, *saves, *params)``. A
parameter with choices (gelu's ``approximate``) names another entry rather than reaching
the references: they take the kernel parameters only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .definitions import ACTIVATIONS, GATED_UNITS, Activation, GatedUnit, Param

__all__ = ["OPS", "Op", "ops_of_kind"]


@dataclass(frozen=True)
class Op:
    """One op: its data flow, parameters, references, baseline, torch counterpart, bound.

        ``kind``: "elementwise" (y = f(x) element by element), "gated" (y = f(a) * b
        element by element), "halves" (a gated unit on the two halves of x along
        ``axis``), "bias" (y = f(x + bias), bias along the last axis), "row" (each slice
        along ``axis`` reduced and written back), "loss" (rows of logits to per-row losses
        and the gradient). ``reduces``: "" (nothing), "rows" (the bias gradient, over
        every axis but the last), "axis" (over the ``axis`` parameter) or "classes" (over
        the last axis, then over rows for the loss).
        ``torch(torch, F, *reads, *params)`` calls torch's own op (None: torch has none).
        ``ulp``: the stated bound, relative to the reference, in units of the dtype's eps.
    The references take the forward's inputs: ``reference_backward(grad, *reads, *params)``
    returns the gradient of each float input (one array, or a tuple of them); a loss's
    ``reference_backward(*reads, **options)`` and ``naive(*reads)`` (loss and gradients)
    need no ``grad``. ``example(rng)``: float64 inputs where the op is smooth, for tests.
    ``adapters``: the adapter modules with a wrapper of it.
    """

    name: str
    kind: Literal["elementwise", "gated", "halves", "bias", "row", "loss"]
    formula: str
    derivative: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    saves: tuple[str, ...]
    reduces: Literal["", "rows", "axis", "classes"]
    params: tuple[Param, ...]
    reference: Callable
    reference_backward: Callable
    naive: Callable
    naive_backward: Callable | None
    torch: Callable | None
    ulp: int
    module_name: str
    example: Callable[[np.random.Generator], tuple]
    activation: Activation | None = None
    public: bool = True  # False: reached through another op's parameter (gelu_tanh)
    adapters: tuple[str, ...] = ("torch", "dask")

    @property
    def functions(self) -> tuple[str, ...]:
        """The names of its public functions in ``fastact``."""
        if not self.public:
            return ()
        if self.kind == "loss":
            return (self.name,)
        if self.kind == "halves":  # no in-place forms: the result is half the input
            return (self.name, self.name + "_backward")
        return (self.name, self.name + "_", self.name + "_backward", self.name + "_backward_")


def _smooth(x: np.ndarray, edges: tuple) -> np.ndarray:
    """``x`` moved 0.01 off each of ``edges`` it is within 1e-3 of (finite differences
    and references disagree at a kink)."""
    near = np.min(np.abs(x[..., None] - np.array(edges or (0.0,))), axis=-1) < 1e-3
    x[near] += 0.01
    return x


def _normal(shape: tuple, scale: float, edges: tuple = ()):
    return lambda rng: (_smooth(rng.standard_normal(shape) * scale, edges),)


def _elementwise(entry: Activation) -> Op:
    saved = "y" if entry.saves == "output" else "x"
    return Op(
        name=entry.name,
        kind="elementwise",
        formula=f"y = {entry.formula}",
        derivative=f"dx = grad * ({entry.derivative})",
        reads=("x",),
        writes=("y",),
        saves=(saved,),
        reduces="",
        params=entry.params,
        reference=entry.reference,
        reference_backward=lambda g, x, *p, entry=entry: g * entry.reference_derivative(x, *p),
        naive=entry.naive.forward,
        naive_backward=entry.naive.backward,
        torch=entry.torch,
        ulp=entry.ulp,
        module_name=entry.module_name,
        example=_normal((4, 7), 3.0, entry.edges),
        activation=entry,
        public=entry.public,
    )


# --- fused: gated units and bias + activation --------------------------------------------


def _saved(entry: Activation, x: np.ndarray, *p) -> np.ndarray:
    """What the entry's backward reads: its output or its input."""
    return entry.naive.forward(x, *p) if entry.saves == "output" else x


def _gated(unit: GatedUnit) -> Op:
    """y = f(a) * b; da = grad * b * f'(a), db = grad * f(a)."""
    entry = ACTIVATIONS[unit.activation]
    naive = entry.naive
    return Op(
        name=unit.name,
        kind="gated",
        formula=f"y = {unit.formula}",
        derivative=unit.derivative,
        reads=("a", "b"),
        writes=("y",),
        saves=("a", "b"),
        reduces="",
        params=unit.params,
        reference=lambda a, b, *p: entry.reference(a, *p) * b,
        reference_backward=lambda g, a, b, *p: (
            g * b * entry.reference_derivative(a, *p),
            g * entry.reference(a, *p),
        ),
        naive=lambda a, b, *p: naive.forward(a, *p) * b,
        naive_backward=lambda g, a, b, *p: (
            naive.backward(g * b, _saved(entry, a, *p), *p),
            g * naive.forward(a, *p),
        ),
        torch=lambda torch, F, a, b, *p: entry.torch(torch, F, a, *p) * b,
        ulp=entry.ulp + 1,  # the activation's bound and one rounding for the product
        module_name=unit.module_name,
        example=lambda rng: (*_normal((4, 7), 3.0, entry.edges)(rng), rng.standard_normal((4, 7))),
        activation=entry,
    )


def _split(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.split(np.asarray(x), 2, axis=axis)
    return first, second


def _halves(unit: GatedUnit) -> Op:
    """PyTorch's F.glu: the first half of x gated by f of the second, along ``axis``."""
    gated = _gated(unit)

    def reference_backward(g, x, axis=-1):
        first, second = _split(x, axis)
        da, db = gated.reference_backward(g, second, first)
        return np.concatenate([db, da], axis=axis)

    def naive_backward(g, x, axis=-1):
        first, second = _split(x, axis)
        da, db = gated.naive_backward(g, second, first)
        return np.concatenate([db, da], axis=axis)

    return Op(
        name=unit.name,
        kind="halves",
        formula=f"y = {unit.formula}",
        derivative=unit.derivative,
        reads=("x",),
        writes=("y",),
        saves=("x",),
        reduces="",
        params=(_AXIS,),
        reference=lambda x, axis=-1: gated.reference(*reversed(_split(x, axis))),
        reference_backward=reference_backward,
        naive=lambda x, axis=-1: gated.naive(*reversed(_split(x, axis))),
        naive_backward=naive_backward,
        torch=lambda torch, F, x, axis=-1: F.glu(x, axis),
        ulp=gated.ulp,
        module_name=unit.module_name,
        example=_normal((4, 8), 3.0),
        activation=gated.activation,
    )


def _reference_bias_act(x, bias, activation="gelu"):
    return ACTIVATIONS[activation].reference(x + bias)


def _reference_bias_act_backward(g, x, bias, activation="gelu"):
    dx = g * ACTIVATIONS[activation].reference_derivative(x + bias)
    return dx, dx.reshape(-1, dx.shape[-1]).sum(axis=0)


def _naive_bias_act_backward(g, x, bias, activation="gelu"):
    """From the forward's input, as the references (the op's own backward reads what the
    activation saves: y, or x)."""
    entry = ACTIVATIONS[activation]
    dx = entry.naive.backward(g, _saved(entry, x + bias))
    return dx, dx.reshape(-1, dx.shape[-1]).sum(axis=0)


_BIAS_ACT = Op(
    name="bias_act",
    kind="bias",
    formula="y = f(x + bias), bias along the last axis, f any activation of the table",
    derivative="dx = grad * f'(x + bias), dbias = sum of dx over every axis but the last",
    reads=("x", "bias"),
    writes=("y",),
    saves=("x", "bias"),  # y for an activation that saves its output (gelu saves x)
    reduces="rows",
    params=(Param("activation", "gelu"),),
    reference=_reference_bias_act,
    reference_backward=_reference_bias_act_backward,
    naive=lambda x, bias, activation="gelu": ACTIVATIONS[activation].naive.forward(x + bias),
    naive_backward=_naive_bias_act_backward,
    torch=lambda torch, F, x, bias, activation="gelu": ACTIVATIONS[activation].torch(torch, F, x + bias),
    ulp=ACTIVATIONS["gelu"].ulp + 1,  # the activation's bound and one rounding for the sum
    module_name="BiasAct",
    example=lambda rng: (rng.standard_normal((4, 7)) * 3, rng.standard_normal(7)),
)


# --- softmax and log_softmax ------------------------------------------------------------


def _reference_softmax(x, axis=-1, scale=1.0, where=None, log=False):
    """In long double (float64 inputs get a few extra bits), over the entries where
    ``where`` is True: the others 0 (log: -inf), as a row with none."""
    z = np.asarray(x, dtype=np.longdouble) * scale
    w = np.ones(z.shape, bool) if where is None else np.broadcast_to(where, z.shape)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(np.where(w, z, -np.inf), axis=axis, keepdims=True)
        e = np.where(w, np.exp(z - m), 0.0)
        s = np.sum(e, axis=axis, keepdims=True)
        return np.where(w, (z - m) - np.log(s), -np.inf) if log else np.where(w, e / s, 0.0)


def softmax_backward_from_output(grad, y, axis=-1, scale=1.0, where=None, log=False):
    """dL/dx from dL/dy and the output y, in float64 (excluded entries: 0)."""
    g = np.asarray(grad, np.longdouble)
    y = np.asarray(y, np.longdouble)
    w = np.ones(g.shape, bool) if where is None else np.broadcast_to(where, g.shape)
    with np.errstate(invalid="ignore"):
        if log:
            d = np.sum(np.where(w, g, 0.0), axis=axis, keepdims=True)
            return np.where(w, scale * (g - np.exp(y) * d), 0.0)
        d = np.sum(np.where(w, g * y, 0.0), axis=axis, keepdims=True)
        return np.where(w, scale * y * (g - d), 0.0)


def _reference_softmax_backward(grad, x, axis=-1, scale=1.0, where=None, log=False):
    y = _reference_softmax(x, axis, scale, where, log)
    return softmax_backward_from_output(grad, y, axis, scale, where, log)


def naive_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def naive_log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


def naive_softmax_backward(grad: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """dL/dx from dL/dy and the softmax output y."""
    return y * (grad - (grad * y).sum(axis, keepdims=True))


def naive_log_softmax_backward(grad: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """dL/dx from dL/dy and the log_softmax output y."""
    return grad - np.exp(y) * grad.sum(axis, keepdims=True)


# --- softmax cross-entropy --------------------------------------------------------------


def _reference_cross_entropy(
    x, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    """torch.nn.functional.cross_entropy written out in float64 numpy (loss only)."""
    x = np.asarray(x, np.float64)
    n, c = x.shape
    m = x.max(axis=1, keepdims=True)
    logp = (x - m) - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    eps = label_smoothing
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        valid = target != ignore_index
        t = np.where(valid, target, 0)
        nll = np.where(valid, -w[t] * logp[np.arange(n), t], 0.0)
        smooth = np.where(valid, -(logp * w).sum(axis=1), 0.0)
        losses = (1 - eps) * nll + eps / c * smooth
        denominator = w[t][valid].sum()
    else:
        q = np.asarray(target, np.float64) * (1 - eps) + eps / c
        losses = -(logp * q * w).sum(axis=1)
        denominator = n
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return losses.sum() / denominator


def _reference_cross_entropy_backward(x, target, **options):
    """dL/dlogits of the reference loss by central differences on the float64 reference
    (of sum(loss) for reduction "none"); slow, for small tests."""
    x = np.array(x, np.float64)
    grad = np.empty_like(x)
    h = 1e-6
    for i in np.ndindex(x.shape):
        keep = x[i]
        x[i] = keep + h
        up = np.sum(_reference_cross_entropy(x, target, **options))
        x[i] = keep - h
        down = np.sum(_reference_cross_entropy(x, target, **options))
        x[i] = keep
        grad[i] = (up - down) / (2 * h)
    return grad


def naive_cross_entropy(logits: np.ndarray, target: np.ndarray) -> tuple[np.floating, np.ndarray]:
    """Mean cross-entropy of integer class targets and its gradient wrt the logits."""
    rows = np.arange(logits.shape[0])
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    s = e.sum(-1, keepdims=True)
    loss = (np.log(s[:, 0]) - z[rows, target]).mean()
    grad = e / s
    grad[rows, target] -= 1
    grad /= logits.shape[0]
    return loss, grad


def _reference_linear_cross_entropy(input, linear_weight, target, linear_bias=None, **options):
    logits = np.asarray(input, np.float64) @ np.asarray(linear_weight, np.float64).T
    if linear_bias is not None:
        logits = logits + linear_bias
    return _reference_cross_entropy(logits, target, **options)


def _reference_linear_cross_entropy_backward(input, linear_weight, target, linear_bias=None, **options):
    """(dinput, dlinear_weight[, dlinear_bias]) from the reference's dlogits."""
    x = np.asarray(input, np.float64)
    w = np.asarray(linear_weight, np.float64)
    logits = x @ w.T + (0.0 if linear_bias is None else linear_bias)
    g = _reference_cross_entropy_backward(logits, target, **options)
    grads = (g @ w, g.T @ x)
    return grads if linear_bias is None else (*grads, g.sum(axis=0))


def naive_linear_cross_entropy(input, linear_weight, target) -> tuple:
    """Mean cross-entropy of ``input @ linear_weight.T`` through the whole logits:
    (loss, dinput, dlinear_weight)."""
    loss, g = naive_cross_entropy(input @ linear_weight.T, target)
    return loss, g @ linear_weight, g.T @ input


_AXIS = Param("axis", -1)
# y = softmax(scale * x) over the entries where ``where`` (broadcastable to x) is True
_SOFTMAX_PARAMS = (_AXIS, Param("scale", 1.0), Param("where", None))


def _softmax_op(log: bool) -> Op:
    """softmax or log_softmax: one definition, as the kernels have."""
    return Op(
        name="log_softmax" if log else "softmax",
        kind="row",
        formula=(
            "y_i = (x_i - m) - log sum_j e^(x_j - m), m = max_j x_j"
            if log
            else "y_i = e^(x_i - m) / sum_j e^(x_j - m), m = max_j x_j"
        ),
        derivative="dx = grad - e^y * sum_j grad_j" if log else "dx = y * (grad - sum_j grad_j y_j)",
        reads=("x",),
        writes=("y",),
        saves=("y",),
        reduces="axis",
        params=_SOFTMAX_PARAMS,
        reference=functools.partial(_reference_softmax, log=log),
        reference_backward=functools.partial(_reference_softmax_backward, log=log),
        naive=naive_log_softmax if log else naive_softmax,
        naive_backward=naive_log_softmax_backward if log else naive_softmax_backward,
        torch=lambda torch, F, x, axis=-1: (torch.log_softmax if log else torch.softmax)(x, axis),
        ulp=8,
        module_name="LogSoftmax" if log else "Softmax",
        example=_normal((4, 7), 3.0),
    )


_ROW_OPS = (
    _softmax_op(log=False),
    _softmax_op(log=True),
    Op(
        name="softmax_cross_entropy",
        kind="loss",
        formula="loss_n = (1-eps) w_k (lse - x_k) + eps/C sum_c w_c (lse - x_c), lse = log sum_c e^x_c",
        derivative="dlogits = scale (p ((1-eps) w_k + eps/C sum w) - eps/C w - (1-eps) w_k onehot(k))",
        reads=("logits", "target"),
        writes=("loss", "grad"),
        saves=(),
        reduces="classes",
        params=(
            Param("weight", None),
            Param("ignore_index", -100),
            Param("reduction", "mean", {"mean": "mean", "sum": "sum", "none": "none"}),
            Param("label_smoothing", 0.0),
        ),
        reference=_reference_cross_entropy,
        reference_backward=_reference_cross_entropy_backward,
        naive=naive_cross_entropy,
        naive_backward=None,  # the loss and its gradient come from one call
        torch=lambda torch, F, logits, target, **options: F.cross_entropy(logits, target, **options),
        ulp=8,
        module_name="CrossEntropyLoss",
        example=lambda rng: (rng.standard_normal((6, 5)) * 2, rng.integers(0, 5, 6)),
    ),
    Op(
        name="linear_cross_entropy",
        kind="loss",
        formula="softmax_cross_entropy(input @ linear_weight.T + linear_bias, target), in row chunks",
        derivative="dinput = dlogits @ linear_weight, dlinear_weight = dlogits.T @ input, "
        "dlinear_bias = sum of dlogits over rows",
        reads=("input", "linear_weight", "target"),
        writes=("loss", "dinput", "dlinear_weight"),
        saves=(),
        reduces="classes",
        params=(
            Param("linear_bias", None),
            Param("weight", None),
            Param("ignore_index", -100),
            Param("reduction", "mean", {"mean": "mean", "sum": "sum", "none": "none"}),
            Param("label_smoothing", 0.0),
            Param("chunk_size", None),
        ),
        reference=_reference_linear_cross_entropy,
        reference_backward=_reference_linear_cross_entropy_backward,
        naive=naive_linear_cross_entropy,
        naive_backward=None,  # the loss and its gradients come from one call
        torch=lambda torch, F, input, linear_weight, target, **options: F.linear_cross_entropy(
            input, linear_weight, target, **options
        ),
        ulp=8,
        module_name="LinearCrossEntropy",
        example=lambda rng: (rng.standard_normal((6, 4)), rng.standard_normal((5, 4)), rng.integers(0, 5, 6)),
        adapters=("torch",),  # dask: the weight and its gradient are not chunked arrays
    ),
)

OPS: dict[str, Op] = {
    **{entry.name: _elementwise(entry) for entry in ACTIVATIONS.values()},
    **{u.name: (_halves if u.halves else _gated)(u) for u in GATED_UNITS.values()},
    _BIAS_ACT.name: _BIAS_ACT,
    **{op.name: op for op in _ROW_OPS},
}


def ops_of_kind(kind: str) -> tuple[Op, ...]:
    return tuple(op for op in OPS.values() if op.kind == kind)
