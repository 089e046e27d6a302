"""Every op fastact offers, described once: :data:`OPS`.

An :class:`Op` says what an op reads, writes, saves for its backward and reduces, its
parameters, its float64 reference (forward and backward), its naive numpy baseline, its
torch counterpart and its accuracy bound. The elementwise activations are derived from
their entries in :data:`fastact.definitions.ACTIVATIONS`; the ops that reduce (softmax,
log_softmax, the softmax cross-entropy) are written here. tests/test_ops.py holds every
op to its reference and its baseline, and checks each has public functions, torch and
dask wrappers, benchmarks and a README row; the benchmarks take their baselines from here.

Backward signatures follow what is saved: ``backward(grad, *saves, *params)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .definitions import ACTIVATIONS, Activation, Param

__all__ = ["OPS", "Op", "ops_of_kind"]


@dataclass(frozen=True)
class Op:
    """One op: its data flow, parameters, references, baseline, torch counterpart, bound.

        ``kind``: "elementwise" (y = f(x) element by element), "row" (each slice along
        ``axis`` reduced and written back), "loss" (rows of logits to per-row losses and
        the gradient). ``reduces``: "" (nothing), "axis" (over the ``axis`` parameter) or
        "classes" (over the last axis, then over rows for the loss).
        ``torch(torch, F, *reads, *params)`` calls torch's own op (None: torch has none).
        ``ulp``: the stated bound, relative to the reference, in units of the dtype's eps.
    The references take the forward's inputs: ``reference_backward(grad, *reads, *params)``.
    """

    name: str
    kind: Literal["elementwise", "row", "loss"]
    formula: str
    derivative: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    saves: tuple[str, ...]
    reduces: Literal["", "axis", "classes"]
    params: tuple[Param, ...]
    reference: Callable
    reference_backward: Callable
    naive: Callable
    naive_backward: Callable | None
    torch: Callable | None
    ulp: int
    module_name: str
    activation: Activation | None = None
    public: bool = True  # False: reached through another op's parameter (gelu_tanh)

    @property
    def functions(self) -> tuple[str, ...]:
        """The names of its public functions in ``fastact``."""
        if not self.public:
            return ()
        if self.kind == "loss":
            return (self.name,)
        return (self.name, self.name + "_", self.name + "_backward", self.name + "_backward_")


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
        activation=entry,
        public=entry.public,
    )


# --- softmax and log_softmax ------------------------------------------------------------


def _reference_softmax(x, axis=-1, log=False):
    """In long double (float64 inputs get a few extra bits)."""
    x = np.asarray(x, dtype=np.longdouble)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        s = np.sum(e, axis=axis, keepdims=True)
        return ((x - m) - np.log(s)) if log else e / s


def _reference_softmax_backward(grad, x, axis=-1):
    y = _reference_softmax(x, axis)
    g = np.asarray(grad, np.longdouble)
    return y * (g - np.sum(g * y, axis=axis, keepdims=True))


def _reference_log_softmax_backward(grad, x, axis=-1):
    y = _reference_softmax(x, axis)
    g = np.asarray(grad, np.longdouble)
    return g - y * np.sum(g, axis=axis, keepdims=True)


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


_AXIS = Param("axis", -1)

_ROW_OPS = (
    Op(
        name="softmax",
        kind="row",
        formula="y_i = e^(x_i - m) / sum_j e^(x_j - m), m = max_j x_j",
        derivative="dx = y * (grad - sum_j grad_j y_j)",
        reads=("x",),
        writes=("y",),
        saves=("y",),
        reduces="axis",
        params=(_AXIS,),
        reference=_reference_softmax,
        reference_backward=_reference_softmax_backward,
        naive=naive_softmax,
        naive_backward=naive_softmax_backward,
        torch=lambda torch, F, x, axis: torch.softmax(x, axis),
        ulp=8,
        module_name="Softmax",
    ),
    Op(
        name="log_softmax",
        kind="row",
        formula="y_i = (x_i - m) - log sum_j e^(x_j - m), m = max_j x_j",
        derivative="dx = grad - e^y * sum_j grad_j",
        reads=("x",),
        writes=("y",),
        saves=("y",),
        reduces="axis",
        params=(_AXIS,),
        reference=lambda x, axis=-1: _reference_softmax(x, axis, log=True),
        reference_backward=_reference_log_softmax_backward,
        naive=naive_log_softmax,
        naive_backward=naive_log_softmax_backward,
        torch=lambda torch, F, x, axis: torch.log_softmax(x, axis),
        ulp=8,
        module_name="LogSoftmax",
    ),
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
    ),
)

OPS: dict[str, Op] = {
    **{entry.name: _elementwise(entry) for entry in ACTIVATIONS.values()},
    **{op.name: op for op in _ROW_OPS},
}


def ops_of_kind(kind: str) -> tuple[Op, ...]:
    return tuple(op for op in OPS.values() if op.kind == kind)
