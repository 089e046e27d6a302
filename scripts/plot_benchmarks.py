"""Measure fastact against naive numpy and draw the README's benchmark plot and table.

    python scripts/plot_benchmarks.py            # measure (float32 and float64), write everything
    python scripts/plot_benchmarks.py --from docs/benchmarks.json   # redraw from saved numbers
    python scripts/plot_benchmarks.py --torch    # fastact vs PyTorch CPU, 16M, both dtypes

Writes ``docs/benchmarks.json`` (the measurements of ``python -m fastact bench``),
``docs/benchmarks.png`` (speedup over naive numpy for every activation, forward and
backward in place, float32 and float64, log scale) and the markdown table between
the ``<!-- benchmarks:start -->`` / ``<!-- benchmarks:end -->`` markers of README.md
and docs/BENCHMARKS_README_SECTION.md (where present). ``--torch`` measures against PyTorch
instead (``docs/torch.json``) and writes the table between ``<!-- torch:start -->`` /
``<!-- torch:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
TORCH_MARKERS = ("<!-- torch:start -->", "<!-- torch:end -->")
DTYPES = ("float32", "float64")


def measure(n: int, budget: float, peers: tuple[str, ...] = ()) -> dict:
    """The bench CLI's measurements for every activation, both dtypes."""
    import numba

    import fastact
    from fastact import _bench
    from fastact.definitions import ACTIVATIONS

    runs = {}
    for dtype in DTYPES:
        progress = _bench.Progress(2 * len(ACTIVATIONS), sys.stderr.isatty(), f"measuring {dtype}")
        try:
            with _bench._Threads(peers):  # the peers get numba's thread count
                rows = _bench.measure(list(ACTIVATIONS), dtype, n, peers, budget=budget, progress=progress)
        finally:
            progress.close()
        runs[dtype] = [row.__dict__ for row in rows]
    return {
        "n": n,
        "threads": numba.get_num_threads(),
        "fastact": fastact.__version__,
        "numba": numba.__version__,
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "runs": runs,
    }


def _cpu() -> str:
    """e.g. 'x86_64 emeraldrapids, avx512': the SIMD width decides the compute-bound rows."""
    import fastact

    info = fastact.runtime_info()
    return f"{platform.machine()} {info['cpu']}, {info['simd']}"


def speedups(data: dict) -> dict[tuple[str, str, str], float]:
    """{(activation, direction, dtype): numpy time / fastact time}."""
    return {
        (row["activation"], row["direction"], dtype): row["others"]["numpy"] / row["fastact"]
        for dtype, rows in data["runs"].items()
        for row in rows
    }


def ceilings(data: dict) -> dict[tuple[str, str, str], float]:
    """{(activation, direction, dtype): ceiling time / fastact time}."""
    return {
        (row["activation"], row["direction"], dtype): row["ceiling"] / row["fastact"]
        for dtype, rows in data["runs"].items()
        for row in rows
    }


def _setting(data: dict) -> str:
    return (
        f"{data['n']:,} elements, {data['threads']} threads, {data['cpu']} ({data['cores']} cores); "
        f"fastact {data['fastact']}, numba {data['numba']}"
    )


def table(data: dict) -> str:
    """Markdown: one row per activation, speedups and fraction of the memory ceiling."""
    s, c = speedups(data), ceilings(data)
    names = list(dict.fromkeys(row["activation"] for row in data["runs"]["float32"]))
    head = (
        "| activation | forward f32 | backward f32 | forward f64 | backward f64 "
        "| forward f32 vs ceiling | backward f32 vs ceiling |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for name in names:
        cells = [f"{s[name, d, t]:.1f}x" for t in DTYPES for d in ("forward", "backward")]
        cells += [f"{c[name, d, 'float32']:.0%}" for d in ("forward", "backward")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = (
        f"\nIn place (`name_(x)`, `name_backward_(grad, saved)`), {_setting(data)}. Speedup = naive "
        "numpy time / fastact time; vs ceiling = time of fastact's in-place loop around `x[i] *= a` "
        "(backward: `g[i] *= s[i]`) over the same array / fastact time."
    )
    return "\n".join(lines) + "\n" + note


def torch_table(data: dict) -> str:
    """Markdown: fastact against PyTorch per activation (ms, ratios, fraction of the ceiling)."""
    rows = {(r["activation"], r["direction"], t): r for t, rs in data["runs"].items() for r in rs}
    names = list(dict.fromkeys(r["activation"] for r in data["runs"]["float32"]))

    def vs_torch(name, direction, dtype, peer="torch"):
        row = rows[name, direction, dtype]
        torch_time = row["others"].get(peer)
        return f"{torch_time / row['fastact']:.2f}x" if torch_time else "—"

    lines = [
        "| activation | fwd f32 ms | vs torch | vs ceiling | bwd f32 ms | vs torch | vs autograd "
        "| vs ceiling | fwd f64 vs torch | bwd f64 vs torch | bwd f64 vs autograd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        cells = []
        for direction in ("forward", "backward"):
            row = rows[name, direction, "float32"]
            cells += [f"{row['fastact'] * 1e3:.2f}", vs_torch(name, direction, "float32")]
            if direction == "backward":
                cells.append(vs_torch(name, direction, "float32", "torch_autograd"))
            cells.append(f"{row['ceiling'] / row['fastact']:.0%}")
        cells += [vs_torch(name, d, "float64") for d in ("forward", "backward")]
        cells.append(vs_torch(name, "backward", "float64", "torch_autograd"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = (
        f"\nIn place, {_setting(data)}, torch {data.get('torch', '?')} on as many threads. "
        "vs torch = torch time / fastact time (> 1: fastact faster): forward in place, backward "
        "ATen's kernel writing into grad; vs autograd: `torch.autograd.grad(y, x, grad)` through "
        "the graph, as a training step runs it (it allocates the gradient); vs ceiling as above."
    )
    return "\n".join(lines) + "\n" + note


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    s = speedups(data)
    names = list(dict.fromkeys(row["activation"] for row in data["runs"]["float32"]))
    series = [(d, t) for t in DTYPES for d in ("forward", "backward")]
    colors = {
        ("forward", "float32"): "#1f77b4",
        ("backward", "float32"): "#ff7f0e",
        ("forward", "float64"): "#aec7e8",
        ("backward", "float64"): "#ffbb78",
    }
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(names) + 2.2), dpi=110)
    y = np.arange(len(names))
    h = 0.8 / len(series)
    for i, (d, t) in enumerate(series):
        values = [s[name, d, t] for name in names]
        ax.barh(y + (i - 1.5) * h, values, height=h, color=colors[d, t], label=f"{d} in place, {t}")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over naive numpy (numpy time / fastact time, log scale; > 1: fastact faster)")
    ax.set_title(f"fastact vs naive numpy, {data['n']:,} elements, {data['threads']} threads")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def replace_between_markers(path: Path, text: str, markers: tuple[str, str] = (START, END)) -> bool:
    """Put ``text`` between the markers of ``path``; False if it has none."""
    start, end = markers
    if not path.exists():
        return False
    content = path.read_text()
    if start not in content or end not in content:
        return False
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, help="redraw from this JSON instead of measuring")
    parser.add_argument("--size", type=int, help="elements (default 4M; 16M with --torch)")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds of timing per row")
    parser.add_argument("--out", type=Path, default=DOCS, help="directory for the PNG and JSON")
    parser.add_argument("--torch", action="store_true", help="against PyTorch CPU (default size 16M)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.torch:
        return main_torch(args)
    if args.source:
        data = json.loads(args.source.read_text())
    else:
        data = measure(args.size or 1 << 22, args.budget)
        (args.out / "benchmarks.json").write_text(json.dumps(data, indent=1))
    plot(data, args.out / "benchmarks.png")
    text = table(data)
    print(text)
    for path in (ROOT / "README.md", DOCS / "BENCHMARKS_README_SECTION.md"):
        if replace_between_markers(path, text):
            print(f"updated the table in {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


def main_torch(args) -> int:
    if args.source:
        data = json.loads(args.source.read_text())
    else:
        import torch

        data = measure(args.size or 1 << 24, args.budget, peers=("torch", "torch_autograd"))
        data["torch"] = torch.__version__
        (args.out / "torch.json").write_text(json.dumps(data, indent=1))
    text = torch_table(data)
    print(text)
    if replace_between_markers(ROOT / "README.md", text, TORCH_MARKERS):
        print("updated the torch table in README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
