"""The op table (fastact._ops.OPS): every op is complete, and its parts agree.

Each op's float64 reference, its naive baseline, its torch counterpart and fastact itself
compute the same thing; fastact's backward reads what the table says the op saves; each op
has its public functions, its adapters' wrappers and a README mention. (The asv coverage
of every op is in tests/test_benchmarks.py.)
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
DTYPES = [np.float32, np.float64]
POINTWISE = ("elementwise", "gated", "halves")  # the kinds that reduce nothing


def _params(op: Op) -> tuple:
    """The references' parameters to test with: an activation's kernel parameters,
    bias_act's activation (the others' parameters are keywords, or have defaults)."""
    if op.kind == "elementwise":
        return default_params(op.activation)
    return tuple(p.default for p in op.params) if op.kind == "bias" else ()


def _grads(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def _floats(args: tuple) -> list[int]:
    """The positions of the float inputs (the ones with a gradient)."""
    return [i for i, a in enumerate(args) if np.asarray(a).dtype.kind == "f"]


def _saved(op: Op, args: tuple, y) -> list:
    """What the op's backward takes after grad: the saves, by name, from its inputs and y."""
    values = dict(zip(op.reads, args))
    values[op.writes[0]] = y
    return [values[name] for name in op.saves]


def _close(got, want, dtype, ulps: int) -> None:
    """|got - want| <= ulps eps max(|want|, 1), elementwise (NaN where want is NaN)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    eps = np.finfo(dtype).eps
    with np.errstate(invalid="ignore"):
        ok = (np.abs(got - want) <= ulps * eps * np.maximum(np.abs(want), 1.0)) | (got == want)
    assert ok.all(), f"max error {np.nanmax(np.abs(got - want))} at {np.argwhere(~ok)[:3].tolist()}"


@pytest.mark.parametrize("op", OPS.values(), ids=lambda op: op.name)
def test_each_op_says_what_it_reads_writes_and_saves(op):
    assert op.reads and op.writes and op.formula and op.derivative
    assert set(op.saves) <= set(op.reads) | set(op.writes), (
        f"{op.name} saves what it neither reads nor writes"
    )
    assert op.kind in ("elementwise", "gated", "halves", "bias", "row", "loss")
    assert (op.reduces == "") == (op.kind in POINTWISE)
    assert op.ulp >= 0 and (op.module_name or not op.public)
    assert set(op.adapters) <= {"torch", "dask"}
    args = op.example(np.random.default_rng(0))
    assert len(args) == len(op.reads) and all(np.asarray(args[i]).dtype == np.float64 for i in _floats(args))


@pytest.mark.parametrize("op", OPS.values(), ids=lambda op: op.name)
def test_naive_baseline_computes_the_reference(op):
    args = op.example(np.random.default_rng(0))
    p = _params(op)
    if op.kind == "loss":  # the loss and every gradient from one call
        loss, *grads = op.naive(*args)
        np.testing.assert_allclose(loss, op.reference(*args), rtol=1e-12)
        for got, want in zip(grads, _grads(op.reference_backward(*args)), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
        return
    y = op.naive(*args, *p)
    np.testing.assert_allclose(y, np.asarray(op.reference(*args, *p), np.float64), rtol=1e-9, atol=1e-14)
    g = np.random.default_rng(1).standard_normal(y.shape)
    got = _grads(op.naive_backward(g, *_saved(op, args, y), *p))
    want = _grads(op.reference_backward(g, *args, *p))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, np.asarray(b, np.float64), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("op", [op for op in OPS.values() if op.kind != "loss"], ids=lambda op: op.name)
def test_reference_backward_is_the_derivative_of_the_reference(op):
    """Central differences of the reference forward, against its backward (d sum(g * y)),
    for every float input. (A loss's reference backward is central differences already.)"""
    args = list(op.example(np.random.default_rng(2)))
    p = _params(op)
    y = np.asarray(op.reference(*args, *p), np.float64)
    g = np.random.default_rng(3).standard_normal(y.shape)
    want = _grads(op.reference_backward(g, *args, *p))
    h = 1e-6
    for k, i in enumerate(_floats(args)):
        x = args[i]
        numeric = np.empty_like(x)
        for index in np.ndindex(x.shape):
            sums = []
            for step in (h, -h):
                moved = x.copy()
                moved[index] += step
                sums.append(
                    np.sum(g * np.asarray(op.reference(*args[:i], moved, *args[i + 1 :], *p), np.float64))
                )
            numeric[index] = (sums[0] - sums[1]) / (2 * h)
        np.testing.assert_allclose(np.asarray(want[k], np.float64), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(
    "op", [op for op in OPS.values() if op.kind != "elementwise"], ids=lambda op: op.name
)
def test_fastact_computes_the_reference_from_what_the_table_says_it_saves(op, dtype):
    """fastact's forward within the stated bound of the reference, and its backward, called
    with the saves the table names, within a few more roundings. (tests/test_activations.py
    holds the elementwise activations to their bounds over edges and every layout.)"""
    raw = op.example(np.random.default_rng(4))
    args = tuple(a.astype(dtype) if i in _floats(raw) else a for i, a in enumerate(raw))
    p = _params(op)
    if op.kind == "loss":
        loss, *grads = getattr(fastact, op.name)(*args)
        _close(loss, op.reference(*raw), dtype, op.ulp)
        # the references' gradients are central differences: good to 1e-9 or so
        rtol = max(1e-6, 4 * op.ulp * np.finfo(dtype).eps)
        for got, want in zip(grads, _grads(op.reference_backward(*raw)), strict=False):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol / 100)
        return
    y = getattr(fastact, op.name)(*args, *p)
    _close(y, op.reference(*raw, *p), dtype, op.ulp)
    g = np.random.default_rng(5).standard_normal(y.shape).astype(dtype)
    got = _grads(getattr(fastact, op.name + "_backward")(g, *_saved(op, args, y), *p))
    for a, b in zip(got, _grads(op.reference_backward(g.astype(np.float64), *raw, *p)), strict=True):
        _close(a, b, dtype, 4 * op.ulp)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("op", [op for op in OPS.values() if op.kind == "row"], ids=lambda op: op.name)
def test_scaled_and_masked_row_ops_meet_the_stated_bound(op, dtype):
    """scale= and where= as the references say: excluded entries 0 (log: -inf) with a zero
    gradient, a row with none included all excluded; along each axis."""
    (raw,) = op.example(np.random.default_rng(6))
    x = raw.astype(dtype)
    rng = np.random.default_rng(7)
    for axis in range(x.ndim):
        where = rng.random(x.shape) < 0.6
        where[(slice(None),) * axis + (0,)] = False  # a slice with nothing included
        for scale in (1.0, 0.5):
            kw = {"scale": scale, "where": where}
            y = getattr(fastact, op.name)(x, axis, **kw)
            _close(y, op.reference(raw, axis, **kw), dtype, op.ulp)
            g = rng.standard_normal(x.shape).astype(dtype)
            dx = getattr(fastact, op.name + "_backward")(g, y, axis, **kw)
            _close(dx, op.reference_backward(g.astype(np.float64), raw, axis, **kw), dtype, 4 * op.ulp)


@pytest.mark.parametrize("op", [op for op in OPS.values() if op.torch is not None], ids=lambda op: op.name)
def test_torch_counterpart_computes_the_reference(op):
    torch = require("torch")
    args = op.example(np.random.default_rng(8))
    p = _params(op)
    got = op.torch(torch, torch.nn.functional, *map(torch.tensor, args), *p)
    if op.kind == "loss":
        np.testing.assert_allclose(got.item(), op.reference(*args), rtol=1e-12)
        return
    want = np.asarray(op.reference(*args, *p), np.float64)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("op", OPS.values(), ids=lambda op: op.name)
def test_every_op_has_its_functions_and_adapters(op):
    for name in op.functions:
        assert callable(getattr(fastact, name)), name
    assert op.name in README or (op.activation is not None and not op.public)
    if op.public and "torch" in op.adapters:
        torch = require("torch")
        torch_adapter = require("fastact.torch")
        assert issubclass(getattr(torch_adapter, op.module_name), torch.nn.Module)


@pytest.mark.parametrize(
    "op", [op for op in OPS.values() if op.public and "dask" in op.adapters], ids=lambda op: op.name
)
def test_every_op_has_its_dask_wrapper(op):
    require("dask")
    assert callable(getattr(require("fastact.dask"), op.name)), op.name
