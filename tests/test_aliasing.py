"""Outputs that overlap inputs, ``grad is saved``, and broadcast (zero-stride) views.

The rule is numpy's: the result is as if every input were read before ``out`` is
written, or the call is refused with a clear error; never silently wrong.
Marked ``bounds``: .ci/run repeats these under ``NUMBA_BOUNDSCHECK=1``.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

import fastact
from fastact import _dispatch
from fastact._config import PARALLEL_THRESHOLD
from fastact._kernels import KernelSet

pytestmark = pytest.mark.bounds

# One activation per kernel shape: no parameter, one, two; saves output or input.
NAMES = ["relu", "elu", "hardtanh", "gelu"]
SIZES = {"serial": 64, "parallel": 2 * PARALLEL_THRESHOLD + 64}


def params_of(name: str) -> tuple:
    return tuple(p.default for p in fastact.ACTIVATIONS[name].kernel_params)


def expected_forward(name: str, x: np.ndarray) -> np.ndarray:
    """The result on an unaliased contiguous copy (accuracy is tested elsewhere)."""
    return getattr(fastact, name)(np.ascontiguousarray(x).copy(), *params_of(name))


def expected_backward(name: str, grad: np.ndarray, saved: np.ndarray) -> np.ndarray:
    """The result on unaliased contiguous copies (accuracy is tested elsewhere)."""
    grad, saved = (np.ascontiguousarray(a).copy() for a in (grad, saved))
    return getattr(fastact, name + "_backward")(grad, saved, *params_of(name))


def _square(b: np.ndarray) -> np.ndarray:
    k = int(np.sqrt(b.size))
    return b[: k * k].reshape(k, k)


def data(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n) * 3


def check(got: np.ndarray, want: np.ndarray) -> None:
    """Elementwise kernels give the same bits whatever the layout."""
    np.testing.assert_array_equal(got, want)


# (name, make(base) -> (input view, output view)) over a 1-d or 2-d base.
OVERLAPS = {
    "shift-right": lambda b: (b[:-1], b[1:]),
    "shift-left": lambda b: (b[1:], b[:-1]),
    "reversed": lambda b: (b, b[::-1]),
    "step2-shift": lambda b: (b[:-2:2], b[2::2]),
    "2d-columns": lambda b: (b.reshape(-1, 16)[:, :-1], b.reshape(-1, 16)[:, 1:]),
    "2d-transpose": lambda b: (_square(b), _square(b).T),
    "2d-rows-reversed": lambda b: (b.reshape(-1, 16)[:-1], b.reshape(-1, 16)[1:][::-1]),
}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("overlap", list(OVERLAPS))
@pytest.mark.parametrize("name", NAMES)
def test_forward_out_overlapping_input(name, overlap, size):
    base = data(SIZES[size])
    x, out = OVERLAPS[overlap](base)
    want = expected_forward(name, x.copy())
    outside = np.ones(base.shape, bool)
    outside[np.unravel_index(_offsets(base, out), base.shape)] = False
    before = base[outside].copy()
    result = getattr(fastact, name)(x, out=out)
    assert result is out
    check(out, want)
    np.testing.assert_array_equal(base[outside], before)  # nothing outside out was written


def _offsets(base: np.ndarray, view: np.ndarray) -> np.ndarray:
    """Flat indices into ``base`` of every element of ``view``."""
    index = np.arange(base.size).reshape(base.shape)
    start = (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // base.itemsize
    strides = tuple(s // base.itemsize for s in view.strides)
    return np.lib.stride_tricks.as_strided(
        index.reshape(-1)[start:], view.shape, tuple(s * index.itemsize for s in strides)
    ).reshape(-1)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("overlap", list(OVERLAPS))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("which", ["grad", "saved", "both"])
def test_backward_out_overlapping_inputs(name, overlap, size, which):
    base = data(SIZES[size], seed=1)
    other = data(SIZES[size], seed=2)
    view, out = OVERLAPS[overlap](base)
    partner, _ = OVERLAPS[overlap](other)
    grad, saved = {"grad": (view, partner), "saved": (partner, view), "both": (view, view)}[which]
    want = expected_backward(name, grad, saved)
    result = getattr(fastact, name + "_backward")(grad, saved, out=out)
    assert result is out
    check(out, want)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", NAMES)
def test_in_place_backward_with_saved_overlapping_grad(name, size):
    base = data(SIZES[size], seed=3)
    grad, saved = base[1:], base[:-1]
    want = expected_backward(name, grad, saved)
    assert getattr(fastact, name + "_backward_")(grad, saved) is grad
    check(grad, want)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", NAMES)
def test_grad_and_saved_the_same_array(name, size, layout):
    base = data(2 * SIZES[size], seed=4)
    g = base[: SIZES[size]] if layout == "contiguous" else base[::2]
    want = expected_backward(name, g, g)
    check(getattr(fastact, name + "_backward")(g, g), want)
    assert getattr(fastact, name + "_backward_")(g, g) is g
    check(g, want)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", NAMES)
def test_out_is_input(name, size):
    x = data(SIZES[size], seed=5).reshape(-1, 8)[:, ::2]
    want = expected_forward(name, x.copy())
    assert getattr(fastact, name)(x, out=x) is x
    check(x, want)


def zero_stride_writeable(shape=(4, 5)) -> np.ndarray:
    row = np.zeros(shape[-1])
    return np.lib.stride_tricks.as_strided(row, shape, (0, row.itemsize), writeable=True)


@pytest.mark.parametrize("name", NAMES)
def test_zero_stride_out_is_refused(name):
    x = data(20).reshape(4, 5)
    for out in (zero_stride_writeable(), np.broadcast_to(np.zeros(5), (4, 5))):
        before = out.copy()
        with pytest.raises(ValueError, match="out"):
            getattr(fastact, name)(x, out=out)
        with pytest.raises(ValueError, match="out"):
            getattr(fastact, name + "_backward")(x, x, out=out)
        np.testing.assert_array_equal(out, before)


@pytest.mark.parametrize("name", NAMES)
def test_zero_stride_in_place_is_refused(name):
    x = zero_stride_writeable()
    with pytest.raises(ValueError, match="x"):
        getattr(fastact, name + "_")(x)
    with pytest.raises(ValueError, match="grad"):
        getattr(fastact, name + "_backward_")(x, data(20).reshape(4, 5))
    assert not x.any()


@pytest.mark.parametrize("name", NAMES)
def test_broadcast_inputs_are_read_fine(name):
    row = data(PARALLEL_THRESHOLD // 4 + 3, seed=6)
    x = np.broadcast_to(row, (5, row.size))
    want = expected_forward(name, np.ascontiguousarray(x))
    got = getattr(fastact, name)(x)
    assert got.flags.writeable and 0 not in got.strides
    check(got, want)
    g = np.broadcast_to(np.float64(2.0), x.shape)
    check(getattr(fastact, name + "_backward")(g, x), expected_backward(name, g, x))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_kernel_flavour(name, dtype):
    """Serial and parallel, 1-d and 2-d (and > 2-d) kernels, forward and backward."""
    for n in SIZES.values():
        base = data(4 * n, seed=7).astype(dtype)
        views = {
            "1-d": base[:n],
            "2-d": base.reshape(-1, 8)[:, ::2],
            "3-d": base.reshape(4, -1, 8)[:, ::2, 1:7],
        }
        for x in views.values():
            check(getattr(fastact, name)(x), expected_forward(name, x))
            saved = x if fastact.ACTIVATIONS[name].saves == "input" else getattr(fastact, name)(x)
            got = getattr(fastact, name + "_backward")(np.ones_like(x), saved)
            flat = getattr(fastact, name + "_backward")(np.ones(x.size, dtype), saved.reshape(-1))
            check(got.reshape(-1), flat)


class _Recorder:
    """Stands in for a compiled kernel: records which flavour ran, with what."""

    def __init__(self, flavour: str, calls: list):
        self.flavour, self.calls = flavour, calls

    def __call__(self, *args):
        self.calls.append((self.flavour, args))


def _recording_kernels() -> tuple[KernelSet, list]:
    calls: list = []
    return KernelSet(*(_Recorder(f.name, calls) for f in fields(KernelSet))), calls


@pytest.mark.parametrize("parallel_allowed", [True, False], ids=["parallel", "no-parallel-launch"])
@pytest.mark.parametrize("size", list(SIZES))
def test_in_place_goes_to_the_one_array_kernel(size, parallel_allowed, monkeypatch):
    """Calls whose out is the first input (same object, or a view of the same elements)
    run the in-place kernels, given one array fewer; everything else the kernels with a
    separate out. Serial below the threshold or where parallel launches are off."""
    if not parallel_allowed:  # e.g. forked from an OpenMP process: large arrays run serially
        monkeypatch.setattr(_dispatch, "gate", lambda: False)
    n = SIZES[size]
    flavour_wanted = "serial" if size == "serial" or not parallel_allowed else "parallel"
    x, s = data(n), data(n, seed=1)
    cases = [
        ((x,), x, True),  # name_(x)
        ((x[:],), x, True),  # out= a different view of the same elements
        ((x, s), x, True),  # name_backward_(grad, saved)
        ((x, x), x, True),  # grad is saved, in place
        ((x,), np.empty_like(x), False),
        ((s, x), x, False),  # out is saved: overlaps the second input only
        ((x[:-1],), x[1:], False),  # overlapping, not element for element: a copy
        ((x.reshape(-1, 8).T,), x.reshape(-1, 8).T, True),  # F-contiguous 2-d: flat views
    ]
    for inputs, out, in_place in cases:
        kernels, calls = _recording_kernels()
        _dispatch.run(kernels, inputs, out, (1.5,))
        ((flavour, args),) = calls
        *arrays, param = args
        assert param == 1.5 and all(a.ndim == 1 for a in arrays)
        assert arrays[-1] is out or arrays[-1].base is out.base
        if in_place:
            assert flavour == flavour_wanted + "_in_place"
            assert len(arrays) == len(inputs) and all(a is i for a, i in zip(arrays, inputs[1:]))
        else:
            assert flavour == flavour_wanted
            assert len(arrays) == len(inputs) + 1 and not np.shares_memory(arrays[0], out)
