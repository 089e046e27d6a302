"""The op table (fastact._ops.OPS): every op is complete, and its parts agree.

Each op's float64 reference, its naive baseline, its torch counterpart and fastact itself
compute the same thing; each op has its public functions, its torch and dask wrappers and a
README mention. (The asv coverage of every op is in tests/test_benchmarks.py.)
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from conftest import require

import fastact
from fastact._ops import OPS, Op
from fastact.testing import default_params

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ROW_OPS = [op for op in OPS.values() if op.kind == "row"]


def _params(op: Op) -> tuple:
    return default_params(op.activation) if op.activation is not None else ()


def _data(op: Op, seed: int = 0):
    """A float64 input where the op is smooth (elementwise: away from its break points)."""
    rng = np.random.default_rng(seed)
    if op.kind == "loss":
        return (rng.standard_normal((6, 5)) * 2, rng.integers(0, 5, 6))
    x = rng.standard_normal((4, 7)) * 3
    if op.activation is not None:
        edges = np.array(op.activation.edges or (0.0,))
        near = np.min(np.abs(x[..., None] - edges), axis=-1) < 1e-3
        x[near] += 0.01
    return (x,)


@pytest.mark.parametrize("op", OPS.values(), ids=lambda op: op.name)
def test_each_op_says_what_it_reads_writes_and_saves(op):
    assert op.reads and op.writes and op.formula and op.derivative
    assert set(op.saves) <= set(op.reads) | set(op.writes), (
        f"{op.name} saves what it neither reads nor writes"
    )
    assert op.kind in ("elementwise", "row", "loss")
    assert (op.reduces == "") == (op.kind == "elementwise")
    assert op.ulp >= 0 and (op.module_name or not op.public)


@pytest.mark.parametrize("op", OPS.values(), ids=lambda op: op.name)
def test_naive_baseline_computes_the_reference(op):
    args = _data(op)
    p = _params(op)
    if op.kind == "loss":
        loss, grad = op.naive(*args)
        np.testing.assert_allclose(loss, op.reference(*args), rtol=1e-12)
        np.testing.assert_allclose(grad, op.reference_backward(*args), rtol=1e-6, atol=1e-9)
        return
    (x,) = args
    y = op.naive(x, *p)
    np.testing.assert_allclose(y, np.asarray(op.reference(x, *p), np.float64), rtol=1e-9, atol=1e-14)
    g = np.random.default_rng(1).standard_normal(x.shape)
    saved = y if op.saves == ("y",) else x
    np.testing.assert_allclose(
        op.naive_backward(g, saved, *p),
        np.asarray(op.reference_backward(g, x, *p), np.float64),
        rtol=1e-9,
        atol=1e-14,
    )


@pytest.mark.parametrize("op", OPS.values(), ids=lambda op: op.name)
def test_reference_backward_is_the_derivative_of_the_reference(op):
    """Central differences of the reference forward, against its backward (d sum(g * y))."""
    args = _data(op, seed=2)
    p = _params(op)
    if op.kind == "loss":
        return  # its reference backward is central differences already
    (x,) = args
    g = np.random.default_rng(3).standard_normal(x.shape)
    h = 1e-6
    numeric = np.empty_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        f_up = np.sum(g * np.asarray(op.reference(up, *p), np.float64))
        f_down = np.sum(g * np.asarray(op.reference(down, *p), np.float64))
        numeric[i] = (f_up - f_down) / (2 * h)
    np.testing.assert_allclose(
        np.asarray(op.reference_backward(g, x, *p), np.float64), numeric, rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("op", ROW_OPS, ids=lambda op: op.name)
def test_fastact_meets_the_stated_bound(op, dtype):
    (x,) = _data(op, seed=4)
    x = x.astype(dtype)
    for axis in range(x.ndim):
        got = getattr(fastact, op.name)(x, axis)
        ref = np.asarray(op.reference(x, axis), np.float64)
        eps = np.finfo(dtype).eps
        assert np.all(np.abs(got - ref) <= op.ulp * eps * np.maximum(np.abs(ref), 1.0)), (op.name, axis)


@pytest.mark.parametrize("op", [op for op in OPS.values() if op.torch is not None], ids=lambda op: op.name)
def test_torch_counterpart_computes_the_reference(op):
    torch = require("torch")
    args = _data(op, seed=5)
    p = _params(op)
    if op.kind == "loss":
        logits, target = args
        got = op.torch(torch, torch.nn.functional, torch.tensor(logits), torch.tensor(target))
        np.testing.assert_allclose(got.item(), op.reference(logits, target), rtol=1e-12)
        return
    (x,) = args
    p = (-1,) if op.kind == "row" else p
    got = op.torch(torch, torch.nn.functional, torch.tensor(x), *p).numpy()
    np.testing.assert_allclose(got, np.asarray(op.reference(x, *p), np.float64), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("op", OPS.values(), ids=lambda op: op.name)
def test_every_op_has_its_functions_and_adapters(op):
    for name in op.functions:
        assert callable(getattr(fastact, name)), name
    assert op.name in README or (op.activation is not None and not op.public)
    if op.public:
        torch = require("torch")
        torch_adapter = require("fastact.torch")
        assert issubclass(getattr(torch_adapter, op.module_name), torch.nn.Module)


@pytest.mark.parametrize("op", [op for op in OPS.values() if op.public], ids=lambda op: op.name)
def test_every_op_has_its_dask_wrapper(op):
    require("dask")
    assert callable(getattr(require("fastact.dask"), op.name)), op.name
