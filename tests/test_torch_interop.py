"""fastact.torch: autograd functions and modules against torch.nn.functional and gradcheck."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import require

torch = require("torch")
ft = require("fastact.torch")
F = torch.nn.functional

import fastact as fa  # noqa: E402
from fastact import ACTIVATIONS, _config  # noqa: E402
from fastact.testing import break_points, default_params  # noqa: E402

PUBLIC = [name for name, entry in ACTIVATIONS.items() if entry.public]
# torch's own op for each activation it has (step it has not), from the table.
TORCH_F = {
    name: lambda x, entry=entry, **params: entry.torch(torch, F, x, *(params[n] for n in entry.kernel_names))
    for name, entry in ACTIVATIONS.items()
    if entry.public and entry.torch is not None
}


@pytest.fixture(autouse=True)
def _fastact_kernels():
    """These tests hold fastact's kernels to torch: no call here goes to torch's own op
    (the small-tensor crossover is tested in test_torch_dispatch.py)."""
    with _config.overridden(TORCH_CROSSOVER={}):
        yield


def _params(name: str) -> tuple:
    entry = ACTIVATIONS[name]
    return tuple(p.default for p in entry.params if p.choices) + default_params(entry)


def _points(name: str, dtype, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Finite sample points at several scales, away from the entry's break points."""
    entry = ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.standard_normal(n // 2) * 3, rng.standard_normal(n // 2) * 0.5])
    for p in break_points(entry, default_params(entry)):
        x = x[np.abs(x - p) > 1e-3]
    return torch.tensor(x[: len(x) // 16 * 16], dtype=dtype)  # reshapes to (-1, 4) and (16, -1)


def test_import_fastact_does_not_import_torch():
    code = "import sys, fastact; fastact.relu([1.0]); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_module_names_from_table():
    assert set(ft.MODULE_NAMES) == set(PUBLIC)
    for name, cls in ft.MODULE_NAMES.items():
        assert issubclass(getattr(ft, cls), torch.nn.Module)
        assert callable(getattr(ft, name))
    assert ft.MODULE_NAMES["leaky_relu"] == "LeakyReLU" and ft.MODULE_NAMES["step"] == "Step"
    assert ft.MODULE_NAMES["linear"] == "LinearActivation"


@pytest.mark.parametrize("name", PUBLIC)
def test_gradcheck(name):
    x = _points(name, torch.float64).reshape(-1, 4)[:, :3].requires_grad_()  # strided
    params = _params(name)
    assert torch.autograd.gradcheck(lambda t: getattr(ft, name)(t, *params), (x,), eps=1e-6, atol=1e-6)


def test_gradcheck_gelu_tanh():
    x = _points("gelu", torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ft.gelu(t, approximate="tanh"), (x,))


@pytest.mark.parametrize("name", sorted(TORCH_F))
def test_matches_torch_float32(name):
    x = _points(name, torch.float32, n=512, seed=1).reshape(16, -1).T  # non-contiguous
    entry = ACTIVATIONS[name]
    params = dict(zip([p.name for p in entry.params], _params(name)))
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    y1 = getattr(ft, name)(x1, **params)
    y2 = TORCH_F[name](x2, **params)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    tol = {"rtol": 8 * 2.0**-23, "atol": 8 * 2.0**-23}  # 8 ulp, absolute at unit scale (cancellation)
    torch.testing.assert_close(y1, y2, **tol)
    torch.testing.assert_close(x1.grad, x2.grad, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(TORCH_F))
def test_values_and_gradients_at_break_points_match_torch(name, dtype):
    """At the kinks (relu's 0, hardswish's -3 and 3, hardtanh's bounds, ...) fastact's
    backward gives the derivative torch's autograd gives; so it does at the floats beside
    them where the backward reads the input (from a saved output that rounds onto the
    break point, as hardsigmoid's 1.0 at 3 - ulp, no backward can tell the side)."""
    entry = ACTIVATIONS[name]
    params = dict(zip([p.name for p in entry.params], _params(name)))
    x = np.array(break_points(entry, default_params(entry)), dtype)
    if entry.saves == "input":
        x = np.unique(np.concatenate([x, np.nextafter(x, -np.inf), np.nextafter(x, np.inf)]))
    xt = torch.tensor(x).requires_grad_()
    (expected,) = torch.autograd.grad(TORCH_F[name](xt, **params).sum(), xt)
    y = getattr(fa, name)(x, **params)
    saved = y if entry.saves == "output" else x
    got = getattr(fa, name + "_backward")(np.ones_like(x), saved, **params)
    tol = 8 * np.finfo(dtype).eps
    for where, value in zip(x, got - expected.numpy()):
        assert abs(value) <= tol, f"{name}'({where!r}): fastact and torch differ by {value}"


@pytest.mark.parametrize("name", ["step", "linear"])
def test_no_torch_equivalent_matches_reference(name):
    x = _points(name, torch.float64)
    params = _params(name)
    entry = ACTIVATIONS[name]
    np.testing.assert_array_equal(getattr(ft, name)(x, *params).numpy(), entry.reference(x.numpy(), *params))


@pytest.mark.parametrize("name", PUBLIC)
def test_inplace(name):
    params = _params(name)
    base = _points(name, torch.float64).requires_grad_()
    expected = getattr(ft, name)(base * 1.0, *params)
    (grad_expected,) = torch.autograd.grad(expected.sum(), base)
    a = base * 1.0  # non-leaf, may be overwritten
    ptr = a.data_ptr()
    y = getattr(ft, name)(a, *params, inplace=True)
    assert y is a and y.data_ptr() == ptr
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(y.sum(), base)
    torch.testing.assert_close(grad, grad_expected, rtol=0, atol=0)


def test_inplace_module_and_no_grad():
    x = torch.linspace(-2, 2, 9)
    y = ft.ReLU(inplace=True)(x)
    assert y is x and bool((x >= 0).all())


def test_inplace_on_leaf_raises_before_writing():
    x = torch.linspace(-2, 2, 9, requires_grad=True)
    before = x.detach().clone()
    with pytest.raises(RuntimeError, match="leaf"):
        ft.relu(x, inplace=True)
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize("dtype", [torch.int16, torch.complex64, torch.int64])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16"):
        ft.relu(torch.zeros(3, dtype=dtype))
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16"):
        ft.softmax(torch.zeros(3, dtype=dtype))


def test_bad_arguments():
    with pytest.raises(TypeError, match="torch.Tensor"):
        ft.relu(np.zeros(3))
    with pytest.raises(ValueError, match="approximate"):
        ft.gelu(torch.zeros(3), approximate="fast")
    with pytest.raises(ValueError, match="approximate"):
        ft.GELU(approximate="fast")
    with pytest.raises(TypeError):
        ft.Threshold(0.1)  # value is required
    with pytest.raises(TypeError):
        ft.elu(torch.zeros(3), beta=2.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_gpu_is_clear():
    from fastact._cuda_probe import problem

    assert problem() is not None
    with pytest.raises(RuntimeError, match="CPU and CUDA"):
        ft.relu(torch.zeros(3, device="meta"))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_gradcheck_and_torch(op, dim):
    x = torch.randn(5, 7, dtype=torch.float64).T.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: getattr(ft, op)(t, dim), (x,))
    x32 = (torch.randn(6, 9) * 4).requires_grad_()
    x32b = x32.detach().clone().requires_grad_()
    y1 = getattr(ft, op)(x32, dim=dim)
    y2 = getattr(F, op)(x32b, dim=dim)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(y1, y2, rtol=8 * 2.0**-23, atol=1e-6)
    torch.testing.assert_close(x32.grad, x32b.grad, rtol=8 * 2.0**-23, atol=1e-6)


XENT_CASES = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.1},
    {"ignore_index": 2},
    {"weight": True, "reduction": "mean"},
    {"weight": True, "reduction": "none", "label_smoothing": 0.2},
]


@pytest.mark.parametrize(
    ("kwargs", "probs"),
    [(k, False) for k in XENT_CASES] + [(k, True) for k in XENT_CASES if "ignore_index" not in k],
)
def test_cross_entropy(kwargs, probs):
    kwargs = dict(kwargs)
    gen = torch.Generator().manual_seed(3)
    n, c = 8, 5
    logits = torch.randn(n, c, dtype=torch.float64, generator=gen) * 3
    if probs:
        target = torch.softmax(torch.randn(n, c, dtype=torch.float64, generator=gen), 1)
    else:
        target = torch.randint(0, c, (n,), generator=gen)
    if kwargs.get("weight"):
        kwargs["weight"] = torch.rand(c, dtype=torch.float64, generator=gen) + 0.5
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ft.cross_entropy(t, target, **kwargs), (x,))
    x1 = logits.float().requires_grad_()
    x2 = logits.float().requires_grad_()
    t32 = target.float() if probs else target
    kw32 = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    l1 = ft.cross_entropy(x1, t32, **kw32)
    l2 = F.cross_entropy(x2, t32, **kw32)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=1e-6)
    g = torch.rand_like(l1)
    l1.backward(g)
    l2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=1e-7)


def test_modules_in_sequential_train_like_torch():
    torch.manual_seed(0)
    ours = torch.nn.Sequential(
        torch.nn.Linear(6, 16), ft.GELU(), torch.nn.Linear(16, 16), ft.LeakyReLU(0.1), torch.nn.Linear(16, 4)
    )
    theirs = torch.nn.Sequential(
        torch.nn.Linear(6, 16),
        torch.nn.GELU(),
        torch.nn.Linear(16, 16),
        torch.nn.LeakyReLU(0.1),
        torch.nn.Linear(16, 4),
    )
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(32, 6)
    target = torch.randint(0, 4, (32,))
    loss1 = ft.CrossEntropyLoss(label_smoothing=0.05)(ours(x), target)
    loss2 = torch.nn.CrossEntropyLoss(label_smoothing=0.05)(theirs(x), target)
    loss1.backward()
    loss2.backward()
    torch.testing.assert_close(loss1, loss2, rtol=1e-5, atol=1e-6)
    for p1, p2 in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-6)
    assert "negative_slope=0.1" in repr(ours)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_masked_scaled_softmax_gradcheck_and_torch(op):
    """scale= and where= (a causal mask broadcast over the batch): gradcheck in float64,
    and torch's masked_fill composition on rows with an entry included (grad_output 0 at
    the excluded entries: torch's log_softmax backward sums it over every entry)."""
    where = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    where[0, 0] = False  # row 0: nothing included
    x = torch.randn(2, 6, 6, dtype=torch.float64).requires_grad_()
    # log_softmax's excluded outputs are -inf, whose finite differences are NaN: compared at 0
    masked = lambda t: getattr(ft, op)(t, -1, scale=0.7, where=where).masked_fill(~where, 0)
    assert torch.autograd.gradcheck(masked, (x,))
    assert torch.autograd.gradcheck(lambda t: getattr(ft, op)(t, 1, scale=-2.0), (x,))
    x32 = (torch.randn(3, 6, 6) * 4).requires_grad_()
    x32b = x32.detach().clone().requires_grad_()
    y1 = getattr(ft, op)(x32, scale=0.25, where=where)
    y2 = getattr(torch, op)((x32b * 0.25).masked_fill(~where, float("-inf")), -1)
    g = torch.randn_like(y1).masked_fill(~where, 0)
    y1.backward(g)
    y2.backward(g)
    rows = where.any(-1)
    torch.testing.assert_close(y1[:, rows], y2[:, rows], rtol=16 * 2.0**-23, atol=1e-6)
    torch.testing.assert_close(x32.grad[:, rows], x32b.grad[:, rows], rtol=16 * 2.0**-23, atol=1e-5)
    assert (y1[:, 0] == (0.0 if op == "softmax" else float("-inf"))).all() and (x32.grad[:, 0] == 0).all()
    module = (ft.Softmax if op == "softmax" else ft.LogSoftmax)(dim=-1, scale=0.25)
    torch.testing.assert_close(module(x32, where=where), y1)
    assert "scale=0.25" in repr(module)
    with pytest.raises(TypeError, match="where"):
        getattr(ft, op)(x32, where=where.float())
    with pytest.raises(ValueError, match="where"):
        getattr(ft, op)(x32, where=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="scale"):
        getattr(ft, op)(x32, scale=float("nan"))
    with pytest.raises(TypeError, match="scale"):
        getattr(ft, op)(x32, scale=True)
