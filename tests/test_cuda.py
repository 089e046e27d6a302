"""fastact.cuda: import behaviour here, and the GPU tests (``cuda_cases.py``).

numba's CUDA simulator must be chosen before numba.cuda is first imported, so it
cannot be switched on inside a running test process. So: with a usable GPU, or when
this process already runs under ``NUMBA_ENABLE_CUDASIM=1``, the cases of
``tests/cuda_cases.py`` are collected here; otherwise ``test_cuda_suite_under_simulator``
runs this module again in a subprocess with the simulator on. Either way one
``pytest tests/`` runs every case.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
INNER = os.environ.get("FASTACT_CUDA_INNER") == "1"  # the subprocess below: these tests ran outside
outer_only = pytest.mark.skipif(INNER, reason="ran in the parent process")


def _real_gpu() -> bool:
    if SIM or importlib.util.find_spec("numba_cuda") is None:
        return False  # real GPUs need numba-cuda: don't import numba.cuda for nothing
    from fastact._cuda_probe import problem

    return problem() is None


GPU = _real_gpu()

if SIM or GPU:
    from cuda_cases import *  # noqa: F403 - the GPU test cases, collected here


def _run(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"} | env
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300
    )


# --- the suite in a subprocess, and import behaviour --------------------------------------


@pytest.mark.skipif(SIM or GPU, reason="this process runs the CUDA cases itself")
def test_cuda_suite_under_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FASTACT_CUDA_INNER="1")
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-x"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1500)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    print(f"simulator run: {summary}")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary, summary


@outer_only
def test_import_fastact_does_not_touch_cuda():
    done = _run("import sys, fastact; assert 'numba.cuda' not in sys.modules, 'numba.cuda imported'")
    assert done.returncode == 0, done.stderr


@outer_only
def test_availability_answers_without_raising():
    done = _run("from fastact._cuda_probe import cuda_is_available; print(cuda_is_available())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(GPU)
    sim = _run(
        "from fastact._cuda_probe import cuda_is_available; print(cuda_is_available())",
        NUMBA_ENABLE_CUDASIM="1",
    )
    assert sim.stdout.strip() == "True", sim.stderr


@outer_only
@pytest.mark.skipif(GPU, reason="a GPU is usable here")
def test_import_without_gpu_says_what_is_missing():
    done = _run("import fastact.cuda")
    assert "ImportError: fastact.cuda is not usable here" in done.stderr, done.stderr
    assert "pip install 'fastact[cuda]'" in done.stderr
    sim = _run("import fastact.cuda as c; assert c.SIMULATOR and c.is_available()", NUMBA_ENABLE_CUDASIM="1")
    assert sim.returncode == 0, sim.stderr


@outer_only
def test_kernels_compile_to_ptx():
    """Every kernel types, lowers and compiles for the real CUDA target (needs numba-cuda, no GPU)."""
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed")
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "cuda_ptx_check.py")
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, env=environ, timeout=1200)
    if done.returncode != 0 and "nvvm" in done.stderr.lower():
        pytest.skip("libNVVM not found (pip install 'numba-cuda[cu12]')")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
