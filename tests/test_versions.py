"""fastact refuses a numba outside the tested range with a clear message, and CI's pins hold."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from fastact import _numba_compat as compat

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _import_fastact_with(numba_version: str, **env) -> subprocess.CompletedProcess:
    code = f"import numba; numba.__version__ = {numba_version!r}; import fastact"
    base = {k: v for k, v in os.environ.items() if k != compat.ALLOW_UNTESTED}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env})


@pytest.mark.parametrize("version", ["0.67.1", "0.69.0", "0.69.0rc1", "1.0.0"])
def test_import_on_an_untested_numba_names_the_supported_range(version):
    result = _import_fastact_with(version)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastact was tested with numba>=0.68,<0.69"), last
    assert f"numba {version}" in last and "FASTACT_ALLOW_UNTESTED_NUMBA=1" in last


def test_untested_numba_allowed_by_the_environment_warns():
    result = _import_fastact_with("0.69.0", FASTACT_ALLOW_UNTESTED_NUMBA="1", PYTHONWARNINGS="error")
    assert result.returncode != 0 and "RuntimeWarning: fastact was tested with numba" in result.stderr
    assert _import_fastact_with("0.69.0", FASTACT_ALLOW_UNTESTED_NUMBA="1").returncode == 0


def test_the_running_numba_is_supported_and_llvmlite_is_checked_too():
    compat.check_versions()
    with pytest.raises(ImportError, match=r"llvmlite 0\.51\.0 \(fastact supports llvmlite>=0\.50,<0\.51\)"):
        compat.check_versions("0.68.1", "0.51.0")


def test_pyproject_pins_the_range_the_import_check_enforces():
    listed = re.search(r"^dependencies = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    deps = {re.match(r"[\w-]+", d).group(): d for d in re.findall(r'"([^"]+)"', listed)}
    assert deps["numba"] == "numba>=0.68,<0.69" == "numba" + compat._range(compat.NUMBA_SUPPORTED)
    assert deps["llvmlite"] == "llvmlite" + compat._range(compat.LLVMLITE_SUPPORTED)


def test_ci_installs_from_pinned_constraints():
    """Every package CI installs is pinned (==) for every interpreter; dask and distributed
    come as the pair dask's own extra names."""
    text = (ROOT / ".ci" / "constraints.txt").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    pin = re.compile(r'[a-z0-9._-]+==[\w.]+(; python_version == "3\.\d+")?')
    assert lines and all(pin.fullmatch(line) for line in lines)
    pins = {x.split("==")[0]: x.split("==")[1].split(";")[0] for x in lines}
    peers = ("numba", "numpy", "torch", "dask", "distributed", "hypothesis", "pytest", "ruff", "asv", "tbb")
    assert set(peers) <= set(pins), set(peers) - set(pins)
    assert pins["dask"] == pins["distributed"]
    run = (ROOT / ".ci" / "run").read_text()
    assert "constraints.txt" in run and "python -m pytest\n" in run  # the README's test command
