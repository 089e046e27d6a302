"""fastact.torch on bfloat16 and float16 CPU tensors, against torch's own ops in float32
rounded once to the tensor's dtype (torch's oracle; its own bf16/fp16 CPU kernels widen to
float32 too, but some round intermediates)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

torch = require("torch")
ft = require("fastact.torch")

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture(params=DTYPES)
def dtype(request):
    if request.param == "bfloat16":
        require("ml_dtypes")
    return DTYPES[request.param]


def _x(dtype, shape=(64, 48), seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def _close(got, want, ulps=1):
    """At most ``ulps`` 16-bit ulps apart (relative, or of the largest value: the two libraries'
    float32 results differ by a few float32 ulps and in tails)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    g, w = got.float(), want.float()
    eps = torch.finfo(got.dtype).eps
    torch.testing.assert_close(g, w, rtol=ulps * eps, atol=ulps * eps * w.abs().max().item(), equal_nan=True)


@pytest.mark.parametrize(
    "name, torch_fn",
    [
        ("gelu", torch.nn.functional.gelu),
        ("silu", torch.nn.functional.silu),
        ("relu", torch.relu),
        ("hardtanh", torch.nn.functional.hardtanh),
    ],
)
def test_elementwise_forward_and_backward(name, torch_fn, dtype):
    x = _x(dtype).requires_grad_()
    xf = x.detach().float().requires_grad_()
    y = getattr(ft, name)(x)
    yf = torch_fn(xf)
    _close(y.detach(), yf.detach().to(dtype))  # torch's float32 gelu flushes part of its tail
    g = _x(dtype, seed=1, scale=1.0)
    y.backward(g)
    yf.backward(g.float())
    _close(x.grad, xf.grad.to(dtype), ulps=1)  # torch's float32 derivative formula, not fastact's
    xi = x.detach().clone()[:, ::2]  # a strided view, written in place
    assert getattr(ft, name)(xi, inplace=True) is xi
    _close(xi, torch_fn(x.detach()[:, ::2].float()).to(dtype))


def test_softmax_and_cross_entropy(dtype):
    x = _x(dtype).requires_grad_()
    xf = x.detach().float().requires_grad_()
    for dim in (-1, 0):
        _close(ft.softmax(x, dim).detach(), torch.softmax(xf, dim).detach().to(dtype))
        _close(ft.log_softmax(x, dim).detach(), torch.log_softmax(xf, dim).detach().to(dtype), ulps=2)
    t = torch.randint(0, 48, (64,), generator=torch.Generator().manual_seed(2))
    loss = ft.cross_entropy(x, t, label_smoothing=0.1)
    loss_f = torch.nn.functional.cross_entropy(xf, t, label_smoothing=0.1)
    assert loss.dtype == dtype
    _close(loss.detach(), loss_f.detach().to(dtype))
    loss.backward()
    loss_f.backward()
    _close(x.grad, xf.grad.to(dtype))
    none = ft.cross_entropy(x.detach(), t, reduction="none")
    _close(none, torch.nn.functional.cross_entropy(xf.detach(), t, reduction="none").to(dtype))


def test_fused(dtype):
    a, b = _x(dtype).requires_grad_(), _x(dtype, seed=1).requires_grad_()
    af, bf = a.detach().float().requires_grad_(), b.detach().float().requires_grad_()
    y = ft.swiglu(a, b)
    yf = torch.nn.functional.silu(af) * bf
    _close(y.detach(), yf.detach().to(dtype), ulps=1)  # torch rounds silu(a) before the product
    g = _x(dtype, seed=2, scale=1.0)
    y.backward(g)
    yf.backward(g.float())
    _close(a.grad, af.grad.to(dtype), ulps=2)
    _close(b.grad, bf.grad.to(dtype), ulps=1)
    bias = _x(dtype, (48,), seed=3).requires_grad_()
    out = ft.bias_act(a.detach(), bias, "gelu")
    _close(out, torch.nn.functional.gelu(a.detach().float() + bias.detach().float()).to(dtype), ulps=1)


def test_bfloat16_round_trips_through_numpy_views():
    require("ml_dtypes")
    from fastact.torch import _np, _tensor

    t = _x(torch.bfloat16)[:, ::3]
    a = _np(t)
    assert a.dtype.name == "bfloat16" and np.shares_memory(a, _np(t))
    back = _tensor(np.ascontiguousarray(a))
    torch.testing.assert_close(back, t.contiguous(), rtol=0, atol=0)


def test_other_dtypes_are_type_errors():
    with pytest.raises(TypeError, match="bfloat16 or float16 tensor"):
        ft.relu(torch.zeros(3, dtype=torch.int16))
