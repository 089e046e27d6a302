"""fastact.torch's dispatch: torch's own op below the measured crossover, fastact's kernels
from it, in place always fastact's; numba's threads follow torch's. What is chosen, never
how fast (the measurements: docs/TORCH.md)."""

from __future__ import annotations

import numba
import pytest
from conftest import require

torch = require("torch")
ft = require("fastact.torch")
F = torch.nn.functional

from fastact import _config  # noqa: E402
from fastact._bench_torch import calls, ops_with_torch  # noqa: E402
from fastact._ops import OPS  # noqa: E402


def _fastact_ran(t: torch.Tensor) -> bool:
    """Whether fastact's autograd.Function made ``t`` (else torch's own op did)."""
    return type(t.grad_fn).__name__ in ("_ElementwiseBackward", "_SoftmaxBackward", "_CrossEntropyBackward")


def test_default_crossovers_name_ops_with_a_torch_op_and_both_dtypes():
    assert set(_config.TORCH_CROSSOVER) <= set(ops_with_torch())
    for op, by in _config.TORCH_CROSSOVER.items():
        assert set(by) <= {"float32", "float64"}, op
        assert all(isinstance(n, int) and n >= 0 for n in by.values()), op


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elementwise_below_the_crossover_is_torchs_op(dtype):
    x = torch.randn(4, 25, dtype=dtype, requires_grad=True)  # 100 elements
    name = "float32" if dtype == torch.float32 else "float64"
    with _config.overridden(TORCH_CROSSOVER={"relu": {name: 101}, "gelu_tanh": {name: 101}}):
        assert not _fastact_ran(ft.relu(x))
        assert type(ft.relu(x).grad_fn).__name__.startswith("Relu")
        assert type(ft.gelu(x, approximate="tanh").grad_fn).__name__.startswith("Gelu")
        assert _fastact_ran(ft.gelu(x))  # "gelu" (erf) is not listed
        assert _fastact_ran(ft.ReLU()(torch.randn(101, dtype=dtype, requires_grad=True)))
        assert _fastact_ran(ft.ReLU(inplace=True)(x * 1.0))  # in place: fastact's kernels at any size
    with _config.overridden(TORCH_CROSSOVER={"relu": {"float32" if name == "float64" else "float64": 10**6}}):
        assert _fastact_ran(ft.relu(x))  # the other dtype's crossover


def test_softmax_and_cross_entropy_below_the_crossover_are_torchs():
    x = torch.randn(8, 16, requires_grad=True)
    target = torch.randint(0, 16, (8,))
    small = {op: {"float32": 1000} for op in ("softmax", "log_softmax", "softmax_cross_entropy")}
    with _config.overridden(TORCH_CROSSOVER=small):
        assert not _fastact_ran(ft.softmax(x))
        assert not _fastact_ran(ft.LogSoftmax()(x))
        assert not _fastact_ran(ft.cross_entropy(x, target, label_smoothing=0.1))
        assert _fastact_ran(ft.softmax(x, scale=0.5))  # torch has no scale= (nor where=): fastact's
    with _config.overridden(TORCH_CROSSOVER={}):
        assert _fastact_ran(ft.softmax(x)) and _fastact_ran(ft.cross_entropy(x, target))


@pytest.mark.parametrize("op", ["relu", "gelu", "silu", "sigmoid", "softmax", "softmax_cross_entropy"])
def test_both_paths_give_the_same_values_and_gradients(op):
    """The same call on both sides of the crossover: within the op's stated bound."""
    ours, _ = calls(op, "float32", (16, 64), seed=1)
    with _config.overridden(TORCH_CROSSOVER={}):
        fastact_grad = ours()
    with _config.overridden(TORCH_CROSSOVER={op: {"float32": 1 << 30}}):
        torch_grad = ours()
    bound = OPS[op].ulp * 2.0**-23
    torch.testing.assert_close(fastact_grad, torch_grad, rtol=bound, atol=bound)


def test_bad_arguments_raise_on_both_paths():
    x = torch.randn(10)
    for table in ({}, {"gelu": {"float32": 100}, "elu": {"float32": 100}}):
        with _config.overridden(TORCH_CROSSOVER=table):
            with pytest.raises(ValueError, match="approximate"):
                ft.gelu(x, approximate="fast")
            with pytest.raises(TypeError, match="alpha"):
                ft.elu(x, "one")
            with pytest.raises(TypeError, match="inplace"):
                ft.elu(x, inplace=1)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs a pool of 2 threads or more")
def test_kernels_run_serial_below_the_threshold_and_on_torchs_threads_from_it(monkeypatch):
    """The thread count fastact's kernels see inside the adapter (recorded at the kernel
    call), and the caller's numba count restored after."""
    import fastact.torch as adapter

    seen = []
    original = adapter._run

    def recording(*args, **kwargs):
        seen.append(numba.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(adapter, "_run", recording)
    pool = numba.config.NUMBA_NUM_THREADS
    small, large = _config.PARALLEL_THRESHOLD, 2 * _config.PARALLEL_THRESHOLD
    saved_torch = torch.get_num_threads()
    numba.set_num_threads(pool)
    try:
        with _config.overridden(TORCH_CROSSOVER={}, TORCH_PARALLEL_THRESHOLD=large):
            for torch_threads, n, expected in ((pool, small, 1), (pool, large, pool), (1, large, 1)):
                torch.set_num_threads(torch_threads)
                seen.clear()
                x = torch.randn(n, requires_grad=True)
                ft.silu(x).backward(torch.ones(n))  # forward and backward
                assert seen == [expected, expected], (torch_threads, n)
                assert numba.get_num_threads() == pool
    finally:
        torch.set_num_threads(saved_torch)


def test_the_adapter_starts_fastacts_threading_layer():
    """The first parallel kernel of fastact.torch starts the layer fastact picks (TBB where
    it loads), not numba's default (setting numba's thread count first would)."""
    import subprocess
    import sys

    alone = "import fastact._threading as t; print(t.threading_layer())"
    through_torch = (
        "import torch, fastact.torch as ft, fastact._config as c, fastact._threading as t; "
        "c.TORCH_CROSSOVER = {}; "
        "ft.silu(torch.ones(c.PARALLEL_THRESHOLD, requires_grad=True)); print(t.threading_layer())"
    )
    layers = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for code in (alone, through_torch)
    ]
    assert layers[0] == layers[1]
