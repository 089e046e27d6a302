"""fastact's modules import only downward, also inside functions (docs/ARCHITECTURE.md).

Every ``import`` statement of every module, at any depth (module level, in functions, in
``try`` blocks), is read from the source with ``ast``; a module may import a module of
its own layer or a lower one, never a higher one, and the import graph has no cycle.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "fastact"

# Bottom to top. The package itself ("": fastact/__init__.py, the facade that re-exports
# the public names) sits in the top layer with the tools that time and report the API as
# users call it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "platform and numba glue",
        (
            "_version",
            "_config",
            "_numba_compat",
            "_platform",
            "_threading",
            "_cuda_probe",
            "_blas",
            "cuda._arrays",
            "cuda._launch",
        ),
    ),
    ("intrinsics", ("_intrinsics", "_half")),
    ("math", ("_math", "cuda._math")),
    ("definitions", ("definitions", "_ops")),
    (
        "kernels",
        (
            "_kernels",
            "_row_intrinsics",
            "_softmax_jit",
            "_softmax_kernels",
            "_xent_kernels",
            "_fused_kernels",
            "cuda._compile",
            "cuda._reduce",
            "cuda._softmax_kernels",
        ),
    ),
    # cuda._kernels: the elementwise kernels' compilation and their dispatch, in one module
    ("layout and dispatch", ("_layout", "_validate", "_dispatch", "cuda._kernels")),
    (
        "front end",
        (
            "_frontend",
            "_api",
            "_softmax",
            "_fused",
            "_linear_xent",
            "cuda._api",
            "cuda._softmax",
            "cuda._xent",
            "cuda._fused",
        ),
    ),
    ("public modules", ("_functions", "ufuncs", "cuda", "torch", "dask")),
    (
        "warmup, runtime info, bench",
        ("_warmup", "", "_baselines", "_bench", "_bench_torch", "_docs", "testing", "__main__"),
    ),
]
RANK = {module: rank for rank, (_, modules) in enumerate(LAYERS) for module in modules}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _resolve(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute fastact-relative module of a relative import inside ``name``."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    if node.level:
        package = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        return ".".join([*package, *(node.module.split(".") if node.module else [])]).strip(".")
    return (node.module or "").removeprefix("fastact").strip(".")


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The fastact modules ``name`` imports anywhere in its source."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [
                a.name.removeprefix("fastact").strip(".") for a in node.names if a.name.startswith("fastact")
            ]
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("fastact")):
            base = _resolve(name, is_package, node)
            # `from . import x` / `from .cuda import _math`: x may be a module
            targets = [
                f"{base}.{a.name}".strip(".") if f"{base}.{a.name}".strip(".") in known else base
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:  # fastact.cuda.x -> the module that exists
                target = target.rsplit(".", 1)[0]
            if target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name, path, set(_modules())) for name, path in _modules().items()}


def test_every_module_has_a_layer():
    assert set(GRAPH) - set(RANK) == set(), "add the new module to LAYERS (and docs/ARCHITECTURE.md)"
    assert set(RANK) == set(GRAPH), set(RANK) - set(GRAPH)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_only_downward(module):
    upward = {t: LAYERS[RANK[t]][0] for t in GRAPH[module] if RANK[t] > RANK[module]}
    assert not upward, (
        f"fastact.{module} ({LAYERS[RANK[module]][0] if module else 'package'}) imports {upward}"
    )


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [])


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """Function-level and relative imports count (the old _math -> _runtime cycle hid in a
    function)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\ndef f():\n    from ._warmup import warmup\n    from . import ufuncs\n")
    assert imports_of("_math", probe, set(GRAPH)) == {"_warmup", "ufuncs"}
