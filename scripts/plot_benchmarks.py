"""Measure fastact against naive numpy and draw the README's benchmark plot and table.

    python scripts/plot_benchmarks.py            # measure (float32 and float64), write everything
    python scripts/plot_benchmarks.py --from docs/benchmarks.json   # redraw from saved numbers

Writes ``docs/benchmarks.json`` (the measurements of ``python -m fastact bench``),
``docs/benchmarks.png`` (speedup over naive numpy for every activation, forward and
backward in place, float32 and float64, log scale) and the markdown table between
the ``<!-- benchmarks:start -->`` / ``<!-- benchmarks:end -->`` markers of README.md
and docs/BENCHMARKS_README_SECTION.md (where present).
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
DTYPES = ("float32", "float64")


def measure(n: int, budget: float) -> dict:
    """The bench CLI's measurements for every activation, both dtypes."""
    import numba

    import fastact
    from fastact import _bench
    from fastact.definitions import ACTIVATIONS

    runs = {}
    for dtype in DTYPES:
        progress = _bench.Progress(2 * len(ACTIVATIONS), sys.stderr.isatty(), f"measuring {dtype}")
        try:
            rows = _bench.measure(list(ACTIVATIONS), dtype, n, budget=budget, progress=progress)
        finally:
            progress.close()
        runs[dtype] = [row.__dict__ for row in rows]
    return {
        "n": n,
        "threads": numba.get_num_threads(),
        "fastact": fastact.__version__,
        "numba": numba.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "runs": runs,
    }


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
        f"\nIn place (`name_(x)`, `name_backward_(grad, saved)`), {data['n']:,} elements, "
        f"{data['threads']} threads, {data['cpu']} ({data['cores']} cores); fastact {data['fastact']}, "
        f"numba {data['numba']}. Speedup = naive numpy time / fastact time; vs ceiling = time of a "
        "numba `prange` loop `x[i] *= a` (backward: `g[i] *= s[i]`) over the same array / fastact time."
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


def replace_between_markers(path: Path, text: str) -> bool:
    """Put ``text`` between the markers of ``path``; False if it has none."""
    if not path.exists():
        return False
    content = path.read_text()
    if START not in content or END not in content:
        return False
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, help="redraw from this JSON instead of measuring")
    parser.add_argument("--size", type=int, default=1 << 22, help="elements (default 4M)")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds of timing per row")
    parser.add_argument("--out", type=Path, default=DOCS, help="directory for the PNG and JSON")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.source:
        data = json.loads(args.source.read_text())
    else:
        data = measure(args.size, args.budget)
        (args.out / "benchmarks.json").write_text(json.dumps(data, indent=1))
    plot(data, args.out / "benchmarks.png")
    text = table(data)
    print(text)
    for path in (ROOT / "README.md", DOCS / "BENCHMARKS_README_SECTION.md"):
        if replace_between_markers(path, text):
            print(f"updated the table in {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
