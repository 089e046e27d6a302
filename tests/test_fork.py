"""fastact in child processes: fork (after parallel kernels ran), spawn, forkserver.

PyTorch DataLoader workers are forked from a process that has usually run parallel
code already. With GNU OpenMP numba kills such a child as soon as it runs a
parallel region; fastact must notice and run serial kernels there. Each case runs
in a fresh interpreter with a hard timeout, so a deadlocked pool fails the test.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest
from conftest import require

TIMEOUT = 240

LAYERS = ["default", "omp", "workqueue", "tbb"]
METHODS = ["fork", "spawn", "forkserver"]


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> str:
    """Run ``code`` as a script (spawn children re-import it) in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(textwrap.dedent(code))
    try:
        proc = subprocess.run(
            [sys.executable, f.name],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout} s (deadlock?)\nstdout:\n{exc.stdout}\nstderr:\n{exc.stderr}")
    finally:
        os.unlink(f.name)
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


@pytest.fixture(params=LAYERS)
def layer(request) -> str:
    if request.param != "default" and not layer_available(request.param):
        pytest.skip(f"numba's {request.param} threading layer cannot load here")
    return request.param


def layer_env(layer: str) -> dict[str, str]:
    return {} if layer == "default" else {"NUMBA_THREADING_LAYER": layer}


POOL = """
import multiprocessing as mp
import sys
import numpy as np
import fastact
from fastact._config import PARALLEL_THRESHOLD

N = PARALLEL_THRESHOLD * 4

def compute(seed):
    x = np.random.default_rng(seed).standard_normal(N) * 4
    y = fastact.gelu(x)
    g = fastact.gelu_backward(np.ones_like(x), x)
    s = fastact.silu(x.reshape(-1, 64)[:, ::2])
    fastact.elu_(x)
    return y, g, s, x, fastact.runtime_info()["parallel_kernels"]

if __name__ == "__main__":
    parent = [compute(i) for i in range(4)]  # runs the parallel kernels here first
    layer = fastact.threading_layer()
    with mp.get_context({method!r}).Pool(2) as pool:
        children = pool.map_async(compute, range(4)).get(timeout={timeout})
    for want, got in zip(parent, children):
        for a, b in zip(want[:4], got[:4]):
            assert np.array_equal(a, b), "child result differs from the parent's"
    # the parent can still run parallel kernels after forking
    again = compute(0)
    assert all(np.array_equal(a, b) for a, b in zip(again[:4], parent[0][:4]))
    print(layer, "|", children[0][4])
"""


@pytest.mark.parametrize("method", METHODS)
def test_pool_after_parallel_kernels(method, layer):
    out = run_python(POOL.format(method=method, timeout=TIMEOUT - 30), layer_env(layer))
    used, child_mode = (s.strip() for s in out.split("|"))
    if method == "fork" and used == "omp":
        assert child_mode.startswith("off"), "a forked GNU OpenMP child must run serial kernels"
    elif used in ("tbb", "omp"):
        assert child_mode == "on"


NESTED = """
import os
import numpy as np
import fastact

x = np.linspace(-3, 3, 1 << 17)
want = fastact.mish(x)

def child(depth):
    pid = os.fork()
    if pid == 0:
        ok = np.array_equal(fastact.mish(x), want)
        if ok and depth > 1:
            ok = child(depth - 1)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return status == 0

assert child(3), "a (grand)child forked after parallel kernels gave a wrong result or died"
print("ok")
"""


def test_nested_fork(layer):
    assert run_python(NESTED, layer_env(layer)).strip() == "ok"


TORCH = """
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
import fastact

class Data(Dataset):
    def __len__(self):
        return 8
    def __getitem__(self, i):
        x = np.random.default_rng(i).standard_normal(1 << 16).astype(np.float32)
        return torch.from_numpy(fastact.silu_(x))

want = [fastact.silu(np.random.default_rng(i).standard_normal(1 << 16).astype(np.float32)) for i in range(8)]
loader = DataLoader(Data(), batch_size=1, num_workers=2, multiprocessing_context="fork", timeout={timeout})
got = [batch[0].numpy() for batch in loader]
assert all(np.array_equal(a, b) for a, b in zip(want, got))
print("ok")
"""


def test_torch_dataloader_fork_workers():
    require("torch")
    assert run_python(TORCH.format(timeout=TIMEOUT - 30)).strip() == "ok"
