"""The table of activation definitions: the one place an activation is described.

Each :class:`Activation` entry holds a scalar forward ``f(x, *params)``, a scalar
backward ``b(grad, saved, *params) -> dL/dx`` written in terms of what the forward
saves (its input or its output), the parameters with their defaults and checks,
a float64 numpy reference and its derivative, and the edge points of the function.
The CPU kernels, the ufuncs, the public wrappers, the tests, the benchmarks and the
README table are all generated from :data:`ACTIVATIONS`.

The fused ops are described here too, by what they are made of, never by new math:
:data:`GATED_UNITS` (swiglu, geglu, reglu, glu: ``f(a) * b`` for an activation ``f`` of
the table) and ``bias_act`` (``f(x + bias)`` for every activation; it needs no table of
its own). Their kernels compose the entries' scalars (:mod:`fastact._fused_kernels`).

Adding an activation = adding one entry below (plus, if needed, a math helper).

NaN and infinities follow PyTorch, except where PyTorch's composite formula gives
NaN for an infinite input whose limit exists (silu, gelu, mish, hardswish at -inf,
softsign at +-inf, and their derivatives at +-inf): fastact returns the limit there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

import numpy as np
from numba import njit

from . import _math as fm

# Not cached themselves: the kernels inline them (LLVM alwaysinline) and are cached.
_scalar = njit(forceinline=True, fastmath={"contract"}, error_model="numpy")

INV_SQRT_2PI = 0.3989422804014327  # 1/sqrt(2*pi)
SQRT_2_OVER_PI = 0.7978845608028654  # sqrt(2/pi)
GELU_TANH_C = 0.044715
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@dataclass(frozen=True)
class Param:
    """A parameter of an activation: name, default (``None``: required) and choices.

    ``choices`` maps each allowed string value to the name of the table entry that
    implements it (e.g. gelu's ``approximate``); such a parameter selects an entry
    rather than reaching the kernel.
    """

    name: str
    default: float | str | None
    choices: dict[str, str] | None = None


@dataclass(frozen=True)
class Naive:
    """The naive numpy version of an activation, the expression a user would write
    (``1 / (1 + np.exp(-x))``, ``np.maximum(x, 0)``): what fastact is measured against.

    ``forward(x, *params)`` and the derivative ``derivative(saved, *params)`` written in
    what the forward saves, so that backward is ``grad * derivative(saved)``; ``forward_``
    is a genuinely in-place numpy call (``out=x``) where one exists. Constants are Python
    floats so float32 stays float32 (NEP 50).
    """

    forward: Callable[..., np.ndarray]
    derivative: Callable[..., np.ndarray]
    forward_: Callable[..., np.ndarray] | None = None

    def forward_inplace(self, x: np.ndarray, *params) -> np.ndarray:
        if self.forward_ is not None:
            return self.forward_(x, *params)
        x[...] = self.forward(x, *params)
        return x

    def backward(self, grad: np.ndarray, saved: np.ndarray, *params) -> np.ndarray:
        return grad * self.derivative(saved, *params)

    def backward_inplace(self, grad: np.ndarray, saved: np.ndarray, *params) -> np.ndarray:
        grad *= self.derivative(saved, *params)
        return grad


@dataclass(frozen=True)
class Activation:
    """One activation: scalar kernels, what its backward needs, references, edges.

    ``light_forward``/``light_backward`` and ``backward_reads_saved`` tell the kernels
    how to loop (see the fields); they never change a result.

    ``ulp`` is the stated forward error bound in units in the last place. Where a
    function is ill-conditioned (gelu's far negative tail, where y ~ x e^(-x^2/2)
    amplifies the rounding of its argument) ``tail = (x_below, ulp_there)`` states a
    looser bound for x < x_below.
    """

    name: str
    formula: str
    derivative: str
    forward: Callable
    backward: Callable
    saves: Literal["input", "output"]
    reference: Callable[..., np.ndarray]
    reference_derivative: Callable[..., np.ndarray]
    params: tuple[Param, ...] = ()
    check: Callable[..., str | None] | None = None
    edges: tuple[float, ...] = ()
    ulp: int = 4
    tail: tuple[float, int] | None = None
    public: bool = True
    note: str = ""
    # A light scalar is one select with adds and multiplies (no division, no math-layer
    # call): its strided 2-d kernel loops over the strides directly, where a heavier one
    # copies through a small buffer to run its SIMD loop (the copies would double a light
    # loop's traffic; a scalar strided loop of heavy math is several times slower).
    light_forward: bool = False
    light_backward: bool = False
    # Whether the backward reads ``saved`` (linear's and step's do not): the kernels
    # prefetch only what the scalar reads.
    backward_reads_saved: bool = True
    # The nn.Module class name of fastact.torch (torch's own where it has the activation).
    module_name: str = ""
    # Directions whose float32 CUDA kernels compute in float64: in float32 they break the
    # stated bound (gelu's far tail amplifies the rounding of x/sqrt(2); silu and mish go
    # through a subnormal sigmoid near x = -90). tests/cuda_cases.py checks every other
    # entry meets its bound in float32.
    cuda_float64: tuple[str, ...] = ()
    # The naive numpy version (the benchmarks' baseline), and torch's functional
    # counterpart ``torch(torch, F, x, *kernel params)`` (None: torch has none).
    naive: Naive | None = None
    torch: Callable | None = None
    defaults: dict = field(init=False, repr=False)
    # The numeric parameters the scalar kernels take, in order, and their names.
    kernel_params: tuple[Param, ...] = field(init=False, repr=False)
    kernel_names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", {p.name: p.default for p in self.params})
        numeric = tuple(p for p in self.params if p.choices is None)
        object.__setattr__(self, "kernel_params", numeric)
        object.__setattr__(self, "kernel_names", tuple(p.name for p in numeric))


# --- scalar kernels -----------------------------------------------------------------
# Conditions are written in PyTorch's orientation so NaN takes the same branch.
# Constants go through ``fm.like(x, c)`` (a float literal would promote float32 to
# float64); every "branch" is a select, so the kernels' loops vectorize.


@_scalar
def _step(x, threshold):
    y = fm.like(x, 1.0) if x >= threshold else fm.like(x, 0.0)
    return x if x != x else y


@_scalar
def _step_backward(g, y, threshold):
    return fm.like(g, 0.0)


@_scalar
def _linear(x, slope):
    return slope * x


@_scalar
def _linear_backward(g, y, slope):
    return g * slope


@_scalar
def _sigmoid(x):
    return fm.sigmoid(x)


@_scalar
def _sigmoid_backward(g, y):
    return g * (fm.like(y, 1.0) - y) * y


@_scalar
def _tanh(x):
    return fm.tanh(x)


@_scalar
def _tanh_backward(g, y):
    return g * (fm.like(y, 1.0) - y * y)


@_scalar
def _relu(x):
    return fm.like(x, 0.0) if x < 0.0 else x


@_scalar
def _relu_backward(g, y):
    return fm.like(g, 0.0) if y <= 0.0 else g


@_scalar
def _relu6(x):
    return fm.like(x, 0.0) if x < 0.0 else (fm.like(x, 6.0) if x > 6.0 else x)


@_scalar
def _relu6_backward(g, y):
    return fm.like(g, 0.0) if (y <= 0.0 or y >= 6.0) else g


@_scalar
def _leaky_relu(x, negative_slope):
    return x if x > 0.0 else x * negative_slope


@_scalar
def _leaky_relu_backward(g, y, negative_slope):
    return g if y > 0.0 else g * negative_slope


@_scalar
def _elu(x, alpha):
    return alpha * fm.expm1(x) if x <= 0.0 else x


@_scalar
def _elu_backward(g, y, alpha):
    return g * (y + alpha) if y <= 0.0 else g


@_scalar
def _selu(x):
    scale = fm.like(x, SELU_SCALE)
    return scale * fm.like(x, SELU_ALPHA) * fm.expm1(x) if x <= 0.0 else scale * x


@_scalar
def _selu_backward(g, y):
    scale = fm.like(y, SELU_SCALE)
    return g * (y + scale * fm.like(y, SELU_ALPHA)) if y <= 0.0 else g * scale


@_scalar
def _celu(x, alpha):
    return alpha * fm.expm1(x / alpha) if x <= 0.0 else x


@_scalar
def _celu_backward(g, y, alpha):
    return g * (y / alpha + fm.like(y, 1.0)) if y <= 0.0 else g


@_scalar
def _gelu(x):
    return fm.gelu(x)  # fused: relative accuracy in the negative tail, -0.0 at -inf


@_scalar
def _gelu_backward(g, x):
    return g * fm.gelu_grad(x)  # fused: Phi(x) + x phi(x) from one exp


@_scalar
def _gelu_tanh(x):
    return fm.gelu_tanh(x)  # fused: x * sigmoid(2u), no cancellation


@_scalar
def _gelu_tanh_backward(g, x):
    # With s = sigmoid(2u): 1 + tanh(u) = 2s and 1 - tanh(u)^2 = 4s(1 - s), so
    # d = s (1 + 2x (1 - s) u'), with s and 1 - s both from e = e^-|2u| (no cancellation).
    one = fm.like(x, 1.0)
    k0 = fm.like(x, SQRT_2_OVER_PI)
    c = fm.like(x, GELU_TANH_C)
    xc = x if abs(x) <= 1e10 else fm.like(x, 0.0)  # x**3 would overflow: the derivative is 0 or 1
    z = fm.like(x, 2.0) * k0 * (xc + c * xc * xc * xc)
    e = fm.exp(-abs(z))
    r = one / (one + e)
    s, s_c = (r, e * r) if z >= 0.0 else (e * r, r)
    du = k0 * (one + fm.like(x, 3.0) * c * xc * xc)
    d = s * (one + fm.like(x, 2.0) * xc * s_c * du)
    d = d if abs(x) <= 1e10 else (one if x > 0.0 else fm.like(x, 0.0))
    return g * d


@_scalar
def _silu(x):
    return fm.silu(x)  # fused: one division, accurate to the subnormals, -0.0 at -inf


@_scalar
def _silu_backward(g, x):
    return g * fm.silu_grad(x)  # fused: one exp, one division


@_scalar
def _mish(x):
    return fm.mish(x)  # fused: one exp, one division, -0.0 at -inf


@_scalar
def _mish_backward(g, x):
    one = fm.like(x, 1.0)
    t = fm.tanh(fm.softplus(x))
    d = t + x * fm.sigmoid(x) * (one - t * t)
    d = d if abs(x) != math.inf else (one if x > 0.0 else fm.like(x, 0.0))
    return g * d


@_scalar
def _softplus(x, beta, threshold):
    # times 1/beta, not / beta: LLVM hoists the reciprocal out of the loop instead of a
    # division per element (exact for beta = 1 and powers of two, else one more rounding)
    return x if x * beta > threshold else fm.softplus(x * beta) * (fm.like(x, 1.0) / beta)


@_scalar
def _softplus_backward(g, x, beta, threshold):
    # From the input, as PyTorch: from y = softplus(x) the branch is ambiguous for
    # beta * y in (threshold, softplus(threshold)], wide when threshold is small.
    return g if x * beta > threshold else g * fm.sigmoid(x * beta)


@_scalar
def _softsign(x):
    one = fm.like(x, 1.0)
    y = x / (one + abs(x))
    return y if abs(x) != math.inf else (one if x > 0.0 else -one)


@_scalar
def _softsign_backward(g, y):
    d = fm.like(y, 1.0) - abs(y)
    return g * d * d


@_scalar
def _hardsigmoid(x):
    y = fm.sixth(x + fm.like(x, 3.0))  # x + 3 is exact near -3, x/6 + 1/2 would cancel
    return fm.like(x, 0.0) if x <= -3.0 else (fm.like(x, 1.0) if x >= 3.0 else y)


@_scalar
def _hardsigmoid_backward(g, y):
    return g / fm.like(g, 6.0) if (y > 0.0 and y < 1.0) else fm.like(g, 0.0)


@_scalar
def _hardswish(x):
    y = x * (x + fm.like(x, 3.0)) / fm.like(x, 6.0)
    return fm.like(x, -0.0) if x <= -3.0 else (x if x >= 3.0 else y)


@_scalar
def _hardswish_backward(g, x):
    d = x / fm.like(x, 3.0) + fm.like(x, 0.5)
    # The corners follow PyTorch (its test_hardswish_grad_corner): 0 at x = -3, 1 at x = 3.
    return fm.like(g, 0.0) if x <= -3.0 else (g * d if x < 3.0 else g)


@_scalar
def _hardtanh(x, min_val, max_val):
    return min_val if x < min_val else (max_val if x > max_val else x)


@_scalar
def _hardtanh_backward(g, y, min_val, max_val):
    return fm.like(g, 0.0) if (y <= min_val or y >= max_val) else g


@_scalar
def _log_sigmoid(x):
    return fm.log_sigmoid(x)


@_scalar
def _log_sigmoid_backward(g, y):
    return g * -fm.expm1(y)


@_scalar
def _threshold(x, threshold, value):
    return value if x <= threshold else x


@_scalar
def _threshold_backward(g, x, threshold, value):
    return fm.like(g, 0.0) if x <= threshold else g


# --- float64 references (clarity over speed) ------------------------------------------


def _sigmoid_ref(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


def _softplus_ref(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _phi(x):
    """Standard normal cdf Phi(x) = erfc(-x / sqrt 2) / 2, accurate in the negative tail.

    erfc amplifies a relative error in its argument a by 2a^2 (1250 at a = 25), so the
    argument is formed in x's precision (long double in the accuracy tests) and its
    rounding to float64 is corrected to first order: erfc(a + d) = erfc(a) - d 2/sqrt(pi) e^(-a^2).
    """
    x = np.asarray(x)
    ftype = x.dtype.type if x.dtype.kind == "f" else np.float64
    a = -x * np.sqrt(ftype(0.5))
    a64 = a.astype(np.float64)
    d = np.where(np.isfinite(a), a - a64, 0.0)
    return 0.5 * (_erfc(a64) - d * (2 / np.sqrt(ftype(np.pi))) * np.exp(-np.square(a64.astype(ftype))))


def _limits(x, value, at_neg_inf, at_pos_inf=None):
    """`value` with the limits at +-inf patched in (where a formula gives inf*0)."""
    value = np.where(x == -np.inf, at_neg_inf, value)
    if at_pos_inf is not None:
        value = np.where(x == np.inf, at_pos_inf, value)
    return value


def _gelu_tanh_ref(x):
    with np.errstate(over="ignore", invalid="ignore"):
        inner = SQRT_2_OVER_PI * (x + GELU_TANH_C * x**3)
        return _limits(x, x * _sigmoid_ref(2 * inner), -0.0)  # 1 + tanh(u) = 2 sigmoid(2u)


def _gelu_tanh_ref_derivative(x):
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x**3))
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * x * x)
        return np.where(np.abs(x) > 1e10, (x > 0) * 1.0, d)


def _mish_ref(x):
    with np.errstate(invalid="ignore"):
        return _limits(x, x * np.tanh(_softplus_ref(x)), -0.0)


def _mish_ref_derivative(x):
    with np.errstate(invalid="ignore"):
        t = np.tanh(_softplus_ref(x))
        return _limits(x, t + x * _sigmoid_ref(x) * (1 - t * t), 0.0, 1.0)


def _nonneg(name):
    def check(value, *_):
        return None if value >= 0 else f"{name} must be >= 0, got {value}"

    return check


def _check_softplus(beta, threshold):
    return None if beta > 0 else f"beta must be > 0, got {beta}"


def _check_elu(alpha):
    # The backward from the output, g * (y + alpha), is inf - inf for an infinite alpha.
    return None if 0 <= alpha < math.inf else f"alpha must be >= 0 and finite, got {alpha}"


def _check_celu(alpha):
    return None if alpha != 0 and math.isfinite(alpha) else f"alpha must be nonzero and finite, got {alpha}"


def _check_hardtanh(min_val, max_val):
    return None if min_val <= max_val else f"min_val ({min_val}) must be <= max_val ({max_val})"


# --- naive numpy versions (what fastact is measured against) -----------------------------

_SQRT2 = math.sqrt(2.0)


@cache
def naive_erf_source() -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """scipy.special.erf if scipy is installed, else a (slow) loop over math.erf; imported
    on first use (scipy is no dependency, and importing it would slow ``import fastact``)."""
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - scipy is installed wherever we benchmark
        loop = np.frompyfunc(math.erf, 1, 1)
        return (lambda x: loop(x).astype(x.dtype)), "math.erf"
    return erf, "scipy.special.erf"


def _naive_erf(x):
    return naive_erf_source()[0](x)


def _naive_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _naive_gelu_tanh_t(x):
    return np.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x**3))


def _naive_gelu_tanh_derivative(x):
    t = _naive_gelu_tanh_t(x)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * x * x)


def _naive_mish_derivative(x):
    t = np.tanh(np.log1p(np.exp(x)))
    return t + x * _naive_sigmoid(x) * (1 - t * t)


def _naive_silu_derivative(x):
    s = _naive_sigmoid(x)
    return s * (1 + x * (1 - s))


_OUTPUT_NOTE = "the derivative is a function of the output"

ACTIVATION_LIST: tuple[Activation, ...] = (
    Activation(
        "step",
        "1 if x >= threshold else 0",
        "0",
        _step,
        _step_backward,
        "output",
        lambda x, threshold: np.where(np.isnan(x), x, (x >= threshold) * 1.0),
        lambda x, threshold: np.zeros_like(x),
        params=(Param("threshold", 0.0),),
        edges=(0.0,),
        ulp=0,
        note="NaN stays NaN (a hidden NaN is worse than a visible one); the gradient is 0.",
        light_backward=True,
        backward_reads_saved=False,
        module_name="Step",
        naive=Naive(
            lambda x, threshold: (x >= threshold).astype(x.dtype),
            lambda y, threshold: np.zeros_like(y),
        ),
    ),
    Activation(
        "linear",
        "slope * x",
        "slope",
        _linear,
        _linear_backward,
        "output",
        lambda x, slope: slope * x,
        lambda x, slope: np.full_like(x, slope),
        params=(Param("slope", 1.0),),
        ulp=1,
        note="the derivative is constant",
        light_forward=True,
        light_backward=True,
        backward_reads_saved=False,
        module_name="LinearActivation",
        naive=Naive(
            lambda x, slope: slope * x,
            lambda y, slope: np.full_like(y, slope),
            lambda x, slope: np.multiply(x, slope, out=x),
        ),
        torch=lambda torch, F, x, slope: x * slope,
    ),
    Activation(
        "sigmoid",
        "1 / (1 + exp(-x))",
        "y * (1 - y)",
        _sigmoid,
        _sigmoid_backward,
        "output",
        _sigmoid_ref,
        lambda x: _sigmoid_ref(x) * _sigmoid_ref(-x),
        edges=(-88.7, -17.0, 17.0, 88.7),
        note=_OUTPUT_NOTE,
        light_backward=True,
        module_name="Sigmoid",
        naive=Naive(_naive_sigmoid, lambda y: y * (1 - y)),
        torch=lambda torch, F, x: torch.sigmoid(x),
    ),
    Activation(
        "tanh",
        "tanh(x)",
        "1 - y**2",
        _tanh,
        _tanh_backward,
        "output",
        np.tanh,
        lambda x: 1 / np.cosh(x) ** 2,
        edges=(-9.0, 9.0),
        note=_OUTPUT_NOTE,
        light_backward=True,
        module_name="Tanh",
        naive=Naive(np.tanh, lambda y: 1 - y * y, lambda x: np.tanh(x, out=x)),
        torch=lambda torch, F, x: torch.tanh(x),
    ),
    Activation(
        "relu",
        "max(x, 0)",
        "1 if y > 0 else 0",
        _relu,
        _relu_backward,
        "output",
        lambda x: np.where(x < 0, 0.0, x),
        lambda x: (x > 0) * 1.0,
        edges=(0.0,),
        ulp=0,
        note="y > 0 exactly where x > 0",
        light_forward=True,
        light_backward=True,
        module_name="ReLU",
        naive=Naive(
            lambda x: np.maximum(x, 0),
            lambda y: (y > 0).astype(y.dtype),
            lambda x: np.maximum(x, 0, out=x),
        ),
        torch=lambda torch, F, x: F.relu(x),
    ),
    Activation(
        "relu6",
        "min(max(x, 0), 6)",
        "1 if 0 < y < 6 else 0",
        _relu6,
        _relu6_backward,
        "output",
        lambda x: np.where(x < 0, 0.0, np.where(x > 6, 6.0, x)),
        lambda x: ((x > 0) & (x < 6)) * 1.0,
        edges=(0.0, 6.0),
        ulp=0,
        note="0 < y < 6 exactly where 0 < x < 6",
        module_name="ReLU6",
        naive=Naive(
            lambda x: np.clip(x, 0, 6),
            lambda y: ((y > 0) & (y < 6)).astype(y.dtype),
            lambda x: np.clip(x, 0, 6, out=x),
        ),
        torch=lambda torch, F, x: F.relu6(x),
    ),
    Activation(
        "leaky_relu",
        "x if x > 0 else negative_slope * x",
        "1 if y > 0 else negative_slope",
        _leaky_relu,
        _leaky_relu_backward,
        "output",
        lambda x, negative_slope: np.where(x > 0, x, x * negative_slope),
        lambda x, negative_slope: np.where(x > 0, 1.0, negative_slope),
        params=(Param("negative_slope", 0.01),),
        check=_nonneg("negative_slope"),
        edges=(0.0,),
        ulp=1,
        note="sign(y) = sign(x) needs negative_slope >= 0 (as PyTorch's in-place backward)",
        light_forward=True,
        light_backward=True,
        module_name="LeakyReLU",
        naive=Naive(
            lambda x, slope: np.where(x > 0, x, x * slope),
            lambda y, slope: np.where(y > 0, 1, slope).astype(y.dtype),
        ),
        torch=lambda torch, F, x, negative_slope: F.leaky_relu(x, negative_slope),
    ),
    Activation(
        "elu",
        "x if x > 0 else alpha * (exp(x) - 1)",
        "1 if y > 0 else y + alpha",
        _elu,
        _elu_backward,
        "output",
        lambda x, alpha: np.where(x <= 0, alpha * np.expm1(x), x),
        lambda x, alpha: np.where(x <= 0, alpha * np.exp(x), 1.0),
        params=(Param("alpha", 1.0),),
        check=_check_elu,
        edges=(0.0, -17.0, -88.7),
        note="y <= 0 exactly where x <= 0 when alpha >= 0 (as PyTorch's in-place backward)",
        light_backward=True,
        module_name="ELU",
        naive=Naive(
            lambda x, alpha: np.where(x > 0, x, alpha * (np.exp(x) - 1)),
            lambda y, alpha: np.where(y > 0, 1, y + alpha),
        ),
        torch=lambda torch, F, x, alpha: F.elu(x, alpha),
    ),
    Activation(
        "selu",
        "scale * (x if x > 0 else alpha * (exp(x) - 1))",
        "scale if y > 0 else y + scale * alpha",
        _selu,
        _selu_backward,
        "output",
        lambda x: SELU_SCALE * np.where(x <= 0, SELU_ALPHA * np.expm1(x), x),
        lambda x: SELU_SCALE * np.where(x <= 0, SELU_ALPHA * np.exp(x), 1.0),
        edges=(0.0, -17.0, -88.7),
        note=_OUTPUT_NOTE,
        light_backward=True,
        module_name="SELU",
        naive=Naive(
            lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1)),
            lambda y: np.where(y > 0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA),
        ),
        torch=lambda torch, F, x: F.selu(x),
    ),
    Activation(
        "celu",
        "x if x > 0 else alpha * (exp(x / alpha) - 1)",
        "1 if y > 0 else y / alpha + 1",
        _celu,
        _celu_backward,
        "output",
        lambda x, alpha: np.where(x <= 0, alpha * np.expm1(x / alpha), x),
        lambda x, alpha: np.where(x <= 0, np.exp(x / alpha), 1.0),
        params=(Param("alpha", 1.0),),
        check=_check_celu,
        edges=(0.0, -17.0),
        note="sign(y) = sign(x) for every alpha != 0",
        module_name="CELU",
        naive=Naive(
            lambda x, alpha: np.where(x > 0, x, alpha * (np.exp(x / alpha) - 1)),
            lambda y, alpha: np.where(y > 0, 1, y / alpha + 1),
        ),
        torch=lambda torch, F, x, alpha: F.celu(x, alpha),
    ),
    Activation(
        "gelu",
        "x * Phi(x) = x/2 * (1 + erf(x / sqrt(2)))",
        "Phi(x) + x * phi(x)",
        _gelu,
        _gelu_backward,
        "input",
        lambda x: _limits(x, x * _phi(x), -0.0),
        lambda x: _limits(x, _phi(x) + x * INV_SQRT_2PI * np.exp(-0.5 * x * x), -0.0, 1.0),
        params=(Param("approximate", "none", choices={"none": "gelu", "tanh": "gelu_tanh"}),),
        edges=(0.0, -5.0, -10.0),
        ulp=8,
        tail=(-3.0, 64),
        note="not monotonic, so the output cannot give back the input",
        module_name="GELU",
        cuda_float64=("forward",),
        naive=Naive(
            lambda x: 0.5 * x * (1 + _naive_erf(x / _SQRT2)),
            lambda x: 0.5 * (1 + _naive_erf(x / _SQRT2)) + x * INV_SQRT_2PI * np.exp(-0.5 * x * x),
        ),
        torch=lambda torch, F, x: F.gelu(x),
    ),
    Activation(
        "gelu_tanh",
        "x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x**3)))",
        "(1 + t)/2 + x/2 * (1 - t**2) * sqrt(2/pi) * (1 + 3 * 0.044715 x**2)",
        _gelu_tanh,
        _gelu_tanh_backward,
        "input",
        _gelu_tanh_ref,
        _gelu_tanh_ref_derivative,
        edges=(0.0, -5.0, -10.0),
        ulp=8,
        tail=(-3.0, 4096),
        public=False,
        note="gelu(x, approximate='tanh'); not monotonic",
        cuda_float64=("forward",),
        naive=Naive(lambda x: 0.5 * x * (1 + _naive_gelu_tanh_t(x)), _naive_gelu_tanh_derivative),
        torch=lambda torch, F, x: F.gelu(x, approximate="tanh"),
    ),
    Activation(
        "silu",
        "x * sigmoid(x)",
        "s * (1 + x * (1 - s)), s = sigmoid(x)",
        _silu,
        _silu_backward,
        "input",
        lambda x: _limits(x, x * _sigmoid_ref(x), -0.0),
        lambda x: _limits(x, _sigmoid_ref(x) * (1 + x * _sigmoid_ref(-x)), 0.0, 1.0),
        edges=(0.0, -1.278, -20.0),
        note="not monotonic",
        module_name="SiLU",
        cuda_float64=("forward",),
        naive=Naive(lambda x: x * _naive_sigmoid(x), _naive_silu_derivative),
        torch=lambda torch, F, x: F.silu(x),
    ),
    Activation(
        "mish",
        "x * tanh(softplus(x))",
        "t + x * sigmoid(x) * (1 - t**2), t = tanh(softplus(x))",
        _mish,
        _mish_backward,
        "input",
        _mish_ref,
        _mish_ref_derivative,
        edges=(0.0, -1.19, -20.0),
        note="not monotonic",
        module_name="Mish",
        cuda_float64=("forward",),
        naive=Naive(lambda x: x * np.tanh(np.log1p(np.exp(x))), _naive_mish_derivative),
        torch=lambda torch, F, x: F.mish(x),
    ),
    Activation(
        "softplus",
        "log(1 + exp(beta * x)) / beta, or x where beta * x > threshold",
        "1 if beta * x > threshold else sigmoid(beta * x)",
        _softplus,
        _softplus_backward,
        "input",
        lambda x, beta, threshold: np.where(x * beta > threshold, x, _softplus_ref(x * beta) / beta),
        lambda x, beta, threshold: np.where(x * beta > threshold, 1.0, _sigmoid_ref(x * beta)),
        params=(Param("beta", 1.0), Param("threshold", 20.0)),
        check=_check_softplus,
        edges=(0.0, 20.0, -20.0),
        note="saves its input: from the output the linear branch is ambiguous for small thresholds",
        module_name="Softplus",
        naive=Naive(
            lambda x, beta, threshold: np.where(x * beta > threshold, x, np.log1p(np.exp(beta * x)) / beta),
            lambda x, beta, threshold: np.where(x * beta > threshold, 1, _naive_sigmoid(beta * x)),
        ),
        torch=lambda torch, F, x, beta, threshold: F.softplus(x, beta, threshold),
    ),
    Activation(
        "softsign",
        "x / (1 + |x|)",
        "(1 - |y|)**2",
        _softsign,
        _softsign_backward,
        "output",
        lambda x: _limits(x, x / (1 + np.abs(x)), -1.0, 1.0),
        lambda x: _limits(x, 1 / (1 + np.abs(x)) ** 2, 0.0, 0.0),
        edges=(0.0,),
        note="1 / (1 + |x|) = 1 - |y|",
        light_backward=True,
        module_name="Softsign",
        naive=Naive(lambda x: x / (1 + np.abs(x)), lambda y: (1 - np.abs(y)) ** 2),
        torch=lambda torch, F, x: F.softsign(x),
    ),
    Activation(
        "hardsigmoid",
        "min(max(x + 3, 0), 6) / 6",
        "1/6 if 0 < y < 1 else 0",
        _hardsigmoid,
        _hardsigmoid_backward,
        "output",
        lambda x: np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, (x + 3) / 6)),
        lambda x: ((x > -3) & (x < 3)) / 6.0,
        edges=(-3.0, 3.0),
        ulp=1,
        note="0 < y < 1 where -3 < x < 3 (up to the rounding of y next to the break points)",
        module_name="Hardsigmoid",
        naive=Naive(
            lambda x: np.clip(x / 6 + 0.5, 0, 1),
            lambda y: ((y > 0) & (y < 1)) / np.array(6, y.dtype),
        ),
        torch=lambda torch, F, x: F.hardsigmoid(x),
    ),
    Activation(
        "hardswish",
        "x * min(max(x + 3, 0), 6) / 6",
        "0 if x <= -3 else 1 if x >= 3 else x/3 + 1/2",
        _hardswish,
        _hardswish_backward,
        "input",
        lambda x: np.where(x <= -3, -0.0, np.where(x >= 3, x, x * (x + 3) / 6)),
        lambda x: np.where(x <= -3, 0.0, np.where(x < 3, x / 3 + 0.5, 1.0)),
        edges=(-3.0, 3.0, -1.5),
        ulp=2,
        note="not monotonic",
        module_name="Hardswish",
        naive=Naive(
            lambda x: x * np.clip(x + 3, 0, 6) / 6,
            lambda x: np.where(x < -3, 0, np.where(x > 3, 1, x / 3 + 0.5)),
        ),
        torch=lambda torch, F, x: F.hardswish(x),
    ),
    Activation(
        "hardtanh",
        "min(max(x, min_val), max_val)",
        "1 if min_val < y < max_val else 0",
        _hardtanh,
        _hardtanh_backward,
        "output",
        lambda x, min_val, max_val: np.where(x < min_val, min_val, np.where(x > max_val, max_val, x)),
        lambda x, min_val, max_val: ((x > min_val) & (x < max_val)) * 1.0,
        params=(Param("min_val", -1.0), Param("max_val", 1.0)),
        check=_check_hardtanh,
        edges=(-1.0, 1.0),
        ulp=0,
        note="min_val < y < max_val exactly where min_val < x < max_val",
        module_name="Hardtanh",
        naive=Naive(
            lambda x, lo, hi: np.clip(x, lo, hi),
            lambda y, lo, hi: ((y > lo) & (y < hi)).astype(y.dtype),
            lambda x, lo, hi: np.clip(x, lo, hi, out=x),
        ),
        torch=lambda torch, F, x, min_val, max_val: F.hardtanh(x, min_val, max_val),
    ),
    Activation(
        "log_sigmoid",
        "log(sigmoid(x)) = -softplus(-x)",
        "1 - exp(y)",
        _log_sigmoid,
        _log_sigmoid_backward,
        "output",
        lambda x: np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x))),
        lambda x: _sigmoid_ref(-x),
        edges=(0.0, -20.0, 20.0, 88.7),
        note="sigmoid(-x) = 1 - exp(y)",
        module_name="LogSigmoid",
        naive=Naive(lambda x: -np.log1p(np.exp(-x)), lambda y: 1 - np.exp(y)),
        torch=lambda torch, F, x: F.logsigmoid(x),
    ),
    Activation(
        "threshold",
        "x if x > threshold else value",
        "1 if x > threshold else 0",
        _threshold,
        _threshold_backward,
        "input",
        lambda x, threshold, value: np.where(x <= threshold, value, x),
        lambda x, threshold, value: (x > threshold) * 1.0,
        params=(Param("threshold", None), Param("value", None)),
        edges=(0.0,),
        ulp=0,
        note="y = value cannot tell x <= threshold from x == value > threshold",
        light_forward=True,
        light_backward=True,
        module_name="Threshold",
        naive=Naive(
            lambda x, threshold, value: np.where(x > threshold, x, value),
            lambda x, threshold, value: (x > threshold).astype(x.dtype),
        ),
        torch=lambda torch, F, x, threshold, value: F.threshold(x, threshold, value),
    ),
)

ACTIVATIONS: dict[str, Activation] = {a.name: a for a in ACTIVATION_LIST}


@dataclass(frozen=True)
class GatedUnit:
    """A gated unit ``f(a) * b``, ``f`` the table entry :attr:`activation` (no math of its own).

    Forward ``y = f(a) * b``; backward, from the entry's scalars: ``da = backward_f(g * b,
    a or f(a))`` (what the entry saves) and ``db = g * f(a)``. ``params`` are the entry's
    (geglu's ``approximate`` selects gelu or gelu_tanh, as gelu's does). ``halves``: the
    unit takes one array ``x`` and gates its first half by its second along ``axis``
    (PyTorch's ``F.glu``: ``a`` = the second half, ``b`` = the first, as views).
    ``torch`` is the composition PyTorch users write (docs and the bench's peer).
    """

    name: str
    activation: str
    formula: str
    derivative: str
    torch: str
    module_name: str
    halves: bool = False
    params: tuple[Param, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", ACTIVATIONS[self.activation].params)

    def variants(self) -> dict[str, str]:
        """{suffix: entry name} of every choice of its parameters: {"": "gelu", "_tanh":
        "gelu_tanh"} for geglu (the ufuncs' names), {"": "silu"} for swiglu."""
        chooser = next((p for p in self.params if p.choices), None)
        if chooser is None:
            return {"": self.activation}
        return {("" if c == chooser.default else f"_{c}"): e for c, e in chooser.choices.items()}


GATED_UNIT_LIST: tuple[GatedUnit, ...] = (
    GatedUnit(
        "swiglu",
        "silu",
        "silu(a) * b",
        "da = g * b * silu'(a), db = g * silu(a)",
        "F.silu(a) * b",
        "SwiGLU",
    ),
    GatedUnit(
        "geglu",
        "gelu",
        "gelu(a) * b",
        "da = g * b * gelu'(a), db = g * gelu(a)",
        "F.gelu(a) * b",
        "GEGLU",
    ),
    GatedUnit(
        "reglu",
        "relu",
        "relu(a) * b",
        "da = g * b if a > 0 else 0, db = g * relu(a)",
        "F.relu(a) * b",
        "ReGLU",
    ),
    GatedUnit(
        "glu",
        "sigmoid",
        "x1 * sigmoid(x2), x = [x1, x2] split in halves along axis",
        "dx1 = g * sigmoid(x2), dx2 = g * x1 * s * (1 - s), s = sigmoid(x2)",
        "F.glu(x, dim)",
        "GLU",
        halves=True,
    ),
)

GATED_UNITS: dict[str, GatedUnit] = {u.name: u for u in GATED_UNIT_LIST}
