"""Many Python threads calling fastact at once, on every threading layer numba has here.

Each case runs in a fresh interpreter with a hard timeout: a crash (numba's
workqueue aborts the process on concurrent launches) or a deadlock fails the test
instead of taking pytest down or hanging CI.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap

import pytest

import fastact

TIMEOUT = 240  # seconds; generous: the first run compiles the kernels


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> str:
    """Run ``code`` in a fresh interpreter; fail on a non-zero exit or a timeout."""
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout} s (deadlock?)\nstdout:\n{exc.stdout}\nstderr:\n{exc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc.stdout


@functools.cache
def layer_available(layer: str) -> bool:
    proc = subprocess.run(
        [sys.executable, "-c", "import fastact; print(fastact.threading_layer())"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "NUMBA_THREADING_LAYER": layer},
    )
    return proc.returncode == 0 and proc.stdout.strip() == layer


LAYERS = ["default", "omp", "workqueue", "tbb"]


@pytest.fixture(params=LAYERS)
def layer(request) -> str:
    if request.param != "default" and not layer_available(request.param):
        pytest.skip(f"numba's {request.param} threading layer cannot load here")
    return request.param


def layer_env(layer: str) -> dict[str, str]:
    return {} if layer == "default" else {"NUMBA_THREADING_LAYER": layer}


def test_threading_layer_and_runtime_info():
    layer = fastact.threading_layer()
    assert layer in ("tbb", "omp", "workqueue")
    info = fastact.runtime_info()
    assert info["threading_layer"] == layer
    assert info["numba"] and info["numpy"] and info["cpu"]
    assert isinstance(info["num_threads"], int) and info["num_threads"] >= 1
    assert info["simd"] in ("avx512", "avx2", "avx", "sse4.2", "neon", "sve", "baseline")
    assert os.path.isabs(info["cache_dir"])


def test_user_layer_is_respected():
    out = run_python("import fastact; print(fastact.threading_layer())", {"NUMBA_THREADING_LAYER": "omp"})
    assert out.strip() == "omp"


# Every thread runs all four entry points and a ufunc on shared and private arrays,
# contiguous and strided, above and below the parallel threshold, and checks each
# result bit for bit against one computed before the threads started.
STRESS = """
import threading
import numpy as np
import fastact
from fastact._config import PARALLEL_THRESHOLD

NAMES = {names!r}
ROUNDS = {rounds}
THREADS = {threads}
rng = np.random.default_rng(0)
big = PARALLEL_THRESHOLD * 2
shared = {{
    "small": rng.standard_normal(1000) * 4,
    "big": rng.standard_normal(big) * 4,
    "strided": (rng.standard_normal((big // 64, 128)) * 4)[:, ::2],
    "small32": (rng.standard_normal(999) * 4).astype(np.float32),
}}
for a in shared.values():
    a.flags.writeable = False

def calls(name, x):
    f = getattr(fastact, name)
    fb = getattr(fastact, name + "_backward")
    y = f(x)
    gb = fb(x, y if fastact.ACTIVATIONS[name].saves == "output" else x)
    xi = x.copy()
    getattr(fastact, name + "_")(xi)
    g = x.copy()
    getattr(fastact, name + "_backward_")(g, y if fastact.ACTIVATIONS[name].saves == "output" else x)
    u = getattr(fastact.ufuncs, name)(x, *(p.default for p in fastact.ACTIVATIONS[name].kernel_params))
    return [y, gb, xi, g, u]

expected = {{(n, k): calls(n, x) for n in NAMES for k, x in shared.items()}}
errors = []
barrier = threading.Barrier(THREADS)

def worker(seed):
    barrier.wait()
    try:
        for r in range(ROUNDS):
            for n in NAMES:
                for k, x in shared.items():
                    own = x.copy() if (seed + r) % 2 else x
                    for got, want in zip(calls(n, own), expected[(n, k)]):
                        if not np.array_equal(got, want, equal_nan=True):
                            errors.append((n, k, seed, r))
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors[:5]
print(fastact.threading_layer(), fastact.runtime_info()["parallel_kernels"])
"""


def test_concurrent_calls(layer):
    code = STRESS.format(names=["relu", "elu", "gelu", "hardtanh"], rounds=3, threads=8)
    out = run_python(code, layer_env(layer))
    if layer != "default":
        assert out.split()[0] == layer


# The very first calls of a process, from many threads at once: the lazy kernel
# tables, numba's dispatchers and the threading layer all start under contention.
FIRST_CALLS = """
import threading
import numpy as np
import fastact
from fastact._config import PARALLEL_THRESHOLD

THREADS = 8
x = np.linspace(-5, 5, PARALLEL_THRESHOLD + 7)
barrier = threading.Barrier(THREADS)
results, errors = {}, []

def worker(i):
    barrier.wait()
    try:
        name = ("silu", "softplus")[i % 2]
        results[i] = (name, getattr(fastact, name)(x), getattr(fastact, name)(x[:100:3]))
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
for name, big, small in results.values():
    ref = fastact.ACTIVATIONS[name]
    params = tuple(p.default for p in ref.kernel_params)
    np.testing.assert_allclose(big, ref.reference(x, *params), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(small, ref.reference(x[:100:3], *params), rtol=1e-12, atol=1e-300)
print("ok")
"""


def test_first_calls_from_many_threads(layer):
    assert run_python(FIRST_CALLS, layer_env(layer)).strip() == "ok"


DEGRADED = """
import warnings
import numpy as np
import fastact
from fastact._config import PARALLEL_THRESHOLD

x = np.linspace(-3, 3, 2 * PARALLEL_THRESHOLD)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    y = fastact.relu(x)
assert np.array_equal(y, np.maximum(x, 0))
assert any("serial kernels only" in str(w.message) for w in caught), [str(w.message) for w in caught]
print(fastact.threading_layer(), "|", fastact.runtime_info()["parallel_kernels"])
"""


def test_a_layer_that_cannot_load_degrades_to_serial():
    if layer_available("tbb"):
        pytest.skip("TBB loads here; nothing to degrade")
    out = run_python(DEGRADED, {"NUMBA_THREADING_LAYER": "tbb"})
    layer, mode = (s.strip() for s in out.split("|"))
    assert layer == "none" and mode.startswith("off")
