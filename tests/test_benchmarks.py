"""The benchmark suite, its baselines and ``python -m fastact bench``.

* every activation has a naive numpy forward and backward that compute the right thing
  (and so does every peer, where installed), keeping the input dtype;
* every benchmark name is one asv collects, and every activation and entry point
  (forward, forward in place, backward, backward in place) is benchmarked;
* every benchmark runs: setup plus one call of each method on tiny arrays;
* ``asv check`` accepts the suite; (slow) ``asv run --quick`` + ``asv publish`` give a
  dashboard whose JSON lists the benchmarks with data points;
* the bench CLI prints its table and its crossover.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import require

import fastact
from fastact import _baselines, _bench
from fastact._ops import OPS
from fastact.definitions import ACTIVATIONS

ROOT = Path(__file__).resolve().parents[1]
ASV_DIR = ROOT / "asv_bench"
PREFIXES = ("time_", "mem_", "peakmem_", "track_", "timeraw_")
HOOKS = {"setup", "teardown", "setup_cache"}
SUFFIXES = ("", "_", "_backward", "_backward_")
# The entry points of each kind of op the asv suite must time: every one of the activations
# and the softmax family; the fused ops' forward and in-place backward (glu has no in-place
# forms); a loss's one call.
BENCHMARKED = {
    "elementwise": SUFFIXES,
    "row": SUFFIXES,
    "gated": ("", "_backward_"),
    "bias": ("", "_backward_"),
    "halves": ("", "_backward"),
    "loss": ("",),
}
# Modules whose benchmarks may be skipped: the API or the GPU they need is missing (fused:
# torch, the peer of its torch rows).
OPTIONAL = {"softmax", "cross_entropy", "cuda", "fused"}


# --- baselines ------------------------------------------------------------------------


def _sample(entry, dtype=np.float64):
    """Values away from the break points (where a naive formula may differ)."""
    x = np.linspace(-8, 8, 4001, dtype=dtype)
    params = _bench.kernel_params(entry.name, np.dtype(dtype))
    points = [*entry.edges, *[float(p) for p in params]]
    if entry.name == "softplus":
        points.append(float(params[1] / params[0]))
    keep = np.all([np.abs(x - p) > 1e-3 for p in points], axis=0) if points else slice(None)
    return x[keep], params


def test_naive_covers_the_table():
    assert set(_baselines.NAIVE) == set(ACTIVATIONS)


@pytest.mark.parametrize("entry", ACTIVATIONS.values(), ids=lambda e: e.name)
def test_naive_matches_reference(entry):
    x, params = _sample(entry)
    naive = _baselines.NAIVE[entry.name]
    np.testing.assert_allclose(naive.forward(x, *params), entry.reference(x, *params), rtol=1e-9, atol=1e-12)
    saved = entry.reference(x, *params) if entry.saves == "output" else x
    grad = np.cos(x)
    expected = grad * entry.reference_derivative(x, *params)
    np.testing.assert_allclose(naive.backward(grad, saved, *params), expected, rtol=1e-7, atol=1e-12)
    # the in-place versions overwrite their argument with the same values
    buf = x.copy()
    assert naive.forward_inplace(buf, *params) is buf
    np.testing.assert_allclose(buf, entry.reference(x, *params), rtol=1e-9, atol=1e-12)
    buf = grad.copy()
    assert naive.backward_inplace(buf, saved, *params) is buf
    np.testing.assert_allclose(buf, expected, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("entry", ACTIVATIONS.values(), ids=lambda e: e.name)
def test_naive_keeps_float32(entry):
    x, params = _sample(entry, np.float32)
    naive = _baselines.NAIVE[entry.name]
    assert naive.forward(x, *params).dtype == np.float32
    assert naive.backward(x.copy(), x, *params).dtype == np.float32
    assert naive.derivative(x, *params).dtype == np.float32


def test_naive_softmax_family():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)) * 4
    e = np.exp(x)
    p = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(_baselines.NAIVE_SOFTMAX["softmax"][0](x), p)
    np.testing.assert_allclose(_baselines.NAIVE_SOFTMAX["log_softmax"][0](x), np.log(p))
    g = rng.standard_normal(x.shape)
    jac = np.einsum("ij,jk->ijk", p, np.eye(7)) - np.einsum("ij,ik->ijk", p, p)  # d p_j / d x_k
    np.testing.assert_allclose(_baselines.NAIVE_SOFTMAX["softmax"][1](g, p), np.einsum("ij,ijk->ik", g, jac))
    log_jac = np.eye(7)[None] - p[:, None, :]  # d log p_j / d x_k
    np.testing.assert_allclose(
        _baselines.NAIVE_SOFTMAX["log_softmax"][1](g, np.log(p)), np.einsum("ij,ijk->ik", g, log_jac)
    )
    target = np.array([0, 6, 3, 3, 1])
    loss, grad = _baselines.softmax_cross_entropy(x, target)
    onehot = np.eye(7)[target]
    np.testing.assert_allclose(loss, -(np.log(p) * onehot).sum(-1).mean())
    np.testing.assert_allclose(grad, (p - onehot) / 5)
    w = rng.standard_normal((7, 3))
    h = rng.standard_normal((5, 3))
    loss, dx, dw = _baselines.linear_cross_entropy(h, w, target)
    want_loss, g = _baselines.softmax_cross_entropy(h @ w.T, target)
    assert loss == want_loss
    np.testing.assert_allclose(dx, g @ w)
    np.testing.assert_allclose(dw, g.T @ h)


def _peers():
    modules = _baselines.PEER_MODULES
    return [name for name in _baselines.PEERS if importlib.util.find_spec(modules[name]) is not None]


@pytest.mark.parametrize("peer", _peers())
def test_peers_compute_the_activation(peer):
    """The peers timed against fastact compute the same function, in place."""
    covered = 0
    for entry in ACTIVATIONS.values():
        x, params = _sample(entry)
        ops = _baselines.PEERS[peer](entry.name, params)
        if ops.forward_ is not None:
            buf = x.copy()
            ops.forward_(ops.convert(buf))
            np.testing.assert_allclose(
                buf, entry.reference(x, *params), rtol=1e-6, atol=1e-9, err_msg=entry.name
            )
            covered += 1
        if ops.backward_ is not None:
            saved = x if ops.backward_input or entry.saves == "input" else entry.reference(x, *params)
            grad = np.cos(x)
            buf = grad.copy()
            out = ops.backward_(ops.convert(buf), ops.convert(saved))
            if not ops.inplace:
                np.testing.assert_array_equal(buf, grad)  # left as is
                buf = np.asarray(out)
            expected = grad * entry.reference_derivative(x, *params)
            np.testing.assert_allclose(buf, expected, rtol=1e-6, atol=1e-9, err_msg=entry.name)
            covered += 1
    assert covered >= 2


# --- the asv suite --------------------------------------------------------------------


@pytest.fixture(scope="module")
def suite(monkeypatch_module):
    """The benchmark modules, imported as asv does (package ``benchmarks``), set to run
    every benchmark on at most 256 elements and with short timings."""
    monkeypatch_module.syspath_prepend(str(ASV_DIR))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch_module.delitem(sys.modules, name)
    package = importlib.import_module("benchmarks")
    modules = {}
    for path in sorted((ASV_DIR / "benchmarks").glob("*.py")):
        if not path.stem.startswith("_"):
            modules[path.stem] = importlib.import_module(f"benchmarks.{path.stem}")
    common = importlib.import_module("benchmarks._common")
    monkeypatch_module.setattr(common, "CAP", 256)
    monkeypatch_module.setattr(common, "BUDGET", 0.0)
    yield package, modules


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _benchmark_classes(module):
    """Public classes defined in ``module`` (asv looks at every public name)."""
    return [
        obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and not name.startswith("_") and obj.__module__ == module.__name__
    ]


def test_every_benchmark_name_is_collected_by_asv(suite):
    """A public method or function not named like a benchmark is dropped silently by asv."""
    _, modules = suite
    bad = []
    for mname, module in modules.items():
        for name, obj in vars(module).items():
            if name.startswith("_"):
                continue
            if inspect.isclass(obj):
                assert obj.__module__ == module.__name__, f"{mname} imports class {name}: asv would scan it"
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and not attr.startswith("_") and attr not in HOOKS:
                        if not attr.startswith(PREFIXES):
                            bad.append(f"{mname}.{name}.{attr}")
            elif inspect.isfunction(obj) and not obj.__name__.startswith(PREFIXES) and name not in HOOKS:
                bad.append(f"{mname}.{name}")
    assert not bad, f"not collected by asv (name must start with one of {PREFIXES}): {bad}"


def test_asv_discovery_agrees(suite):
    """asv's own discovery finds exactly the benchmark methods defined in the modules."""
    discovery = require("asv_runner.discovery")
    _, modules = suite
    expected = {
        f"{mname}.{cls.__name__}.{attr}"
        for mname, module in modules.items()
        for cls in _benchmark_classes(module)
        for attr, member in vars(cls).items()
        if inspect.isfunction(member) and attr.startswith(PREFIXES)
    }
    found = {b.name for b in discovery.disc_benchmarks(str(ASV_DIR / "benchmarks"))}
    assert found == expected
    assert len(found) >= 20


def _run_all(modules, record_skip):
    """setup + one call of every benchmark method for every parameter combination.

    Returns the timeraw (statement, setup) pairs, to be run in a fresh interpreter.
    """
    raw = []
    for mname, module in modules.items():
        for cls in _benchmark_classes(module):
            methods = [a for a, m in vars(cls).items() if inspect.isfunction(m) and a.startswith(PREFIXES)]
            assert methods, f"{mname}.{cls.__name__} has no benchmark method"
            params = getattr(cls, "params", ())
            combos = list(itertools.product(*params)) if params else [()]
            assert len(getattr(cls, "param_names", ())) == len(params), f"{cls.__name__}: param_names"
            for combo in combos:
                for method in methods:
                    bench = cls()
                    try:
                        if hasattr(bench, "setup"):
                            bench.setup(*combo)
                    except NotImplementedError as exc:
                        record_skip(mname, cls.__name__, method, combo, str(exc))
                        continue
                    result = getattr(bench, method)(*combo)
                    if method.startswith("track_"):
                        assert isinstance(result, float) and np.isfinite(result) and result > 0, (cls, combo)
                        assert getattr(cls, "unit", None), f"{cls.__name__}: track_ needs a unit"
                    elif method.startswith("timeraw_"):
                        stmt, setup = (result, "") if isinstance(result, str) else result
                        raw.append((stmt, setup))
                    else:
                        assert result is None
    return raw


def test_every_benchmark_runs_and_covers_every_entry_point(suite, monkeypatch):
    """Each benchmark's setup and methods run on tiny arrays; together they call every
    op of the op table through each of its entry points."""
    _, modules = suite
    called = set()

    def recorder(fname, fn):
        base, suffix = next((fname.removesuffix(s), s) for s in reversed(SUFFIXES) if fname.endswith(s))

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            name = "gelu_tanh" if base == "gelu" and kwargs.get("approximate") == "tanh" else base
            called.add((name, suffix))
            return fn(*args, **kwargs)

        return wrapper

    for op in OPS.values():
        for fname in op.functions:
            monkeypatch.setattr(fastact, fname, recorder(fname, getattr(fastact, fname)))

    skipped = {}
    raw = _run_all(modules, lambda *key: skipped.setdefault(key[:2], key[-1]))

    expected = {(op.name, s) for op in OPS.values() for s in BENCHMARKED[op.kind]}
    missing = expected - called
    assert not missing, f"ops / entry points without a benchmark: {sorted(missing)}"
    assert {m for m, _ in skipped} <= OPTIONAL, f"skipped outside the optional modules: {skipped}"
    for (_, cls), reason in skipped.items():
        assert "not available" in reason or "no CUDA GPU" in reason or "not usable" in reason, (cls, reason)
    _assert_skips_only_missing_api(skipped)

    # the timeraw statements work in a fresh interpreter
    script = "\n".join(f"exec({setup!r})\nexec({stmt!r})" for stmt, setup in raw)
    assert len(raw) >= 3
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def _assert_skips_only_missing_api(skipped):
    """Once the optional API exists, its benchmarks must run, not be skipped."""
    try:
        softmax = importlib.import_module("fastact._softmax")
    except ImportError:
        softmax = None
    if softmax is not None and hasattr(softmax, "softmax") and hasattr(softmax, "softmax_"):
        assert ("softmax", "Softmax") not in skipped, skipped.get(("softmax", "Softmax"))
    if hasattr(fastact, "softmax_cross_entropy") or hasattr(softmax, "softmax_cross_entropy"):
        assert ("cross_entropy", "CrossEntropy") not in skipped
    if hasattr(fastact, "linear_cross_entropy"):
        assert ("cross_entropy", "LinearCrossEntropy") not in skipped
        assert ("cross_entropy", "LinearCrossEntropyMemory") not in skipped


def test_fastact_in_place_allocates_nothing_input_sized(suite, monkeypatch):
    """What the peakmem_ benchmarks show, checked with tracemalloc on 1M float64."""
    common = importlib.import_module("benchmarks._common")
    monkeypatch.setattr(common, "CAP", None)
    n = 1 << 20
    for direction in ("forward", "backward"):
        peaks = {}
        for inplace, impl in itertools.product((True, False), ("fastact", "numpy")):
            call = common.memory_call("sigmoid", direction, inplace, impl, n=n)
            tracemalloc.start()
            call()
            peaks[inplace, impl] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peaks[True, "fastact"] < n, peaks  # no input-sized temporary (8 MiB)
        assert peaks[False, "fastact"] >= 8 * n  # the result
        assert peaks[True, "numpy"] >= 8 * n  # the naive expression's temporaries


def test_asv_check_accepts_the_suite():
    require("asv")
    result = subprocess.run(
        [sys.executable, "-m", "asv", "check", "--python=same"],
        cwd=ASV_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No problems found" in result.stdout


@pytest.mark.slow
def test_asv_run_and_publish(tmp_path):
    """``asv run --quick`` of a few benchmarks, then ``asv publish``: the dashboard's
    index.json lists them and their graph files hold data points."""
    require("asv")
    if shutil.which("git") is None:
        pytest.skip("asv needs git")
    conf = json.loads(_strip_comments((ASV_DIR / "asv.conf.json").read_text()))
    conf.update(
        repo=str(ROOT),
        branches=["HEAD"],
        benchmark_dir=str(ASV_DIR / "benchmarks"),
        env_dir=str(tmp_path / "env"),
        results_dir=str(tmp_path / "results"),
        html_dir=str(tmp_path / "html"),
    )
    (tmp_path / "asv.conf.json").write_text(json.dumps(conf))
    # asv's machine file goes to $HOME; a small cap keeps the run short
    env = {**os.environ, "HOME": str(tmp_path), "FASTACT_BENCH_CAP": "4096"}
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    asv = [sys.executable, "-m", "asv"]
    run = functools.partial(
        subprocess.run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    result = run([*asv, "machine", "--yes", "--machine", "ci"])
    assert result.returncode == 0, result.stderr
    expected = {
        "import_time.Import.timeraw_import_fastact",
        "elementwise.Ceiling.track_gbps",
        "elementwise.ForwardBandwidth.track_gbps",
        "backward.BackwardMemory.peakmem_backward",
        "softmax.SoftmaxDtype.time_forward",
    }
    bench = "|".join(name.replace(".", r"\.") for name in expected)
    options = ["--python=same", "--quick", "--launch-method=forkserver", "--machine=ci"]
    result = run([*asv, "run", *options, f"--set-commit-hash={commit}", "-b", bench])
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([*asv, "publish"])
    assert result.returncode == 0, result.stdout + result.stderr

    html = tmp_path / "html"
    assert (html / "index.html").is_file()
    index = json.loads((html / "index.json").read_text())
    names = set(index["benchmarks"])
    assert expected <= names, names
    assert index["benchmarks"]["elementwise.ForwardBandwidth.track_gbps"]["unit"] == "GB/s"
    graphs = list((html / "graphs").rglob("*.json"))
    assert graphs
    points = {}
    for path in graphs:
        data = json.loads(path.read_text())
        if path.stem in expected:
            points[path.stem] = data
    assert set(points) == expected
    for name, data in points.items():
        assert data and data[0][0] is not None, name
        values = data[0][1]
        values = values if isinstance(values, list) else [values]
        assert any(v is not None and v > 0 for v in values), (name, data)


def _strip_comments(text: str) -> str:
    """asv.conf.json allows // comments; json does not."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def test_ceiling_flavours_have_their_own_cache_entries():
    # numba keys its disk cache by qualified name and code: one name for the serial and
    # the parallel build let the "parallel" ceiling load the serial machine code
    names = {kernel.py_func.__qualname__ for kernel in _bench._CEILING.values()}
    assert len(names) == len(_bench._CEILING)


# --- python -m fastact bench ----------------------------------------------------------


def test_bench_cli_table(capsys, tmp_path):
    out = tmp_path / "bench.json"
    args = ["--quick", "--size", "4096", "--activation", "relu", "gelu_tanh", "softplus", "--no-progress"]
    assert _bench.main([*args, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4,096 elements" in text and "ceiling" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.split()}
    for name in ("relu", "gelu_tanh", "softplus"):
        row = lines[name]
        assert row.count("x ") + row.endswith("x") >= 2, row  # numpy ratio, forward and backward
        assert row.count("%") == 2, row  # ceiling, forward and backward
    data = json.loads(out.read_text())
    assert data["n"] == 4096 and len(data["rows"]) == 6
    for row in data["rows"]:
        assert row["fastact"] > 0 and row["ceiling"] > 0 and row["others"]["numpy"] > 0


def test_bench_cli_peers(capsys):
    peers = _bench.available_peers()
    if not peers:
        pytest.skip("no peer library installed")
    assert (
        _bench.main(["--quick", "--size", "2048", "--activation", "sigmoid", "--peers", "--no-progress"]) == 0
    )
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("activation"))
    for peer in peers:
        assert _bench._LABELS.get(peer, peer) in header
    row = next(line for line in text.splitlines() if line.startswith("sigmoid"))
    assert row.count("x") >= 2 * len(peers)  # sigmoid exists in every peer, forward at least


def test_bench_cli_crossover(capsys):
    assert (
        _bench.main(["--crossover", "--quick", "--size", "4096", "--activation", "relu", "--no-progress"])
        == 0
    )
    text = capsys.readouterr().out
    assert "suggested PARALLEL_THRESHOLD" in text
    assert sum(line.split()[0] in ("1024", "2048", "4096") for line in text.splitlines() if line.strip()) == 3


def test_bench_cli_linear_xent(capsys, tmp_path):
    out = tmp_path / "lce.json"
    args = ["--linear-xent", "--quick", "--shape", "64x16x300", "--chunk-size", "16", "--json", str(out)]
    assert _bench.main([*args, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "N=64 H=16 V=300" in text
    names = [line.split("  ")[1].strip() for line in text.splitlines() if line.startswith("  ")]
    assert names[:3] == ["fastact", "fastact chunk 16", "numpy"], names
    data = json.loads(out.read_text())
    assert data["shape"] == [64, 16, 300] and all(t > 0 for t in data["seconds"].values())
    if "torch" in _bench.available_peers():
        assert _bench.main(["--linear-xent", "--quick", "--shape", "64x16x300", "--peers"]) == 0
        assert "torch cross_entropy(x @ W.T)" in capsys.readouterr().out
    assert _bench.main(["--linear-xent", "--shape", "64x16"]) == 2


def test_bench_cli_causal_softmax(capsys, tmp_path):
    """--causal-softmax times fastact masked and unmasked (and torch's masked_fill
    composition when torch is installed) on one head of about --size elements."""
    out = tmp_path / "causal.json"
    assert _bench.main(["--causal-softmax", "--quick", "--size", "4096", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1x64x64" in printed and "fastact masked" in printed and "fastact unmasked" in printed
    seconds = json.loads(out.read_text())["seconds"]
    assert all(t > 0 for t in seconds.values()) and "fastact masked" in seconds


def test_bench_cli_rejects_bad_arguments(capsys):
    assert _bench.main(["--activation", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert _bench.main(["--size", "0"]) == 2
    assert _bench.main(["--dtype", "float8"]) == 2


def test_bench_cli_16_bit(capsys):
    """--dtype float16: the in-place table (16-bit ceiling, float32 call) and the reductions."""
    argv = ["--dtype", "float16", "--size", "4096", "--quick", "--activation", "relu", "--no-progress"]
    assert _bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "float16, 4,096 elements" in out and "relu" in out and "cross_entropy" in out


def test_crossover_rules():
    timings = {
        "cheap": [(1024, 1.0, 5.0), (4096, 2.0, 3.0), (16384, 8.0, 5.0), (65536, 30.0, 16.0)],
        "costly": [(1024, 2.0, 5.0), (4096, 8.0, 5.0), (16384, 30.0, 16.0), (65536, 120.0, 61.0)],
    }
    assert _bench.crossing(timings["cheap"]) == 16384
    assert _bench.crossing(timings["costly"]) == 4096
    assert _bench.crossing([(1, 1.0, 2.0)]) is None
    threshold, worst = _bench.suggest_threshold(timings)
    # 4096: cheap loses 3/2 at 4096; 16384: costly loses 8/5 at 4096; 1024: cheap loses 5x
    assert (threshold, worst) == (4096, pytest.approx(1.5))


def test_simd_environment_compiles_for_avx2_without_any_avx512():
    host = "+sse4.2,+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512fp16,-amx-tile"
    env = _bench.simd_environment("avx2", host)
    assert env["NUMBA_CPU_NAME"] == "znver3" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    flags = env["NUMBA_CPU_FEATURES"].split(",")
    assert "+avx2" in flags and "+fma" in flags and "-amx-tile" in flags
    assert not [f for f in flags if f.startswith("+avx512")] and "-avx512fp16" in flags
    assert "NUMBA_CPU_NAME" not in _bench.simd_environment("avx512", host)
    with pytest.raises(ValueError, match="no avx512"):
        _bench.simd_environment("avx512", "+avx,+avx2,+fma,-avx512f")


def test_bench_simd_option_runs_the_bench_compiled_for_that_level():
    level = "avx2"
    try:
        _bench.simd_environment(level)
    except ValueError:
        pytest.skip("this CPU has no AVX2")
    code = [sys.executable, "-m", "fastact", "bench", "--quick", "--simd", level, "--size", "4096"]
    out = subprocess.run(
        [*code, "--activation", "relu", "--no-progress"], capture_output=True, text=True, check=True
    ).stdout
    assert "fastact compiled for znver3 (avx2)" in out and "\nrelu " in out
