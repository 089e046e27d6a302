"""Tables for the README, generated from the definitions table.

``python -m fastact table`` prints :func:`activation_table` and ``python -m fastact
accuracy`` prints :func:`accuracy_table`; a test keeps README.md in sync with the first.
"""

from __future__ import annotations

import numpy as np

from .definitions import ACTIVATIONS, GATED_UNITS


def activation_table() -> str:
    """Markdown: every activation with formula, derivative, what it saves, defaults, bound."""
    rows = [
        "| activation | y = f(x) | dy/dx | saves | parameters | stated bound |",
        "|---|---|---|---|---|---|",
    ]
    for entry in ACTIVATIONS.values():
        params = ", ".join(p.name + ("" if p.default is None else f"={p.default!r}") for p in entry.params)
        name = entry.name if entry.public else f"{entry.name} (`gelu(approximate='tanh')`)"
        bound = f"{entry.ulp} ulp" + (f" ({entry.tail[1]} for x < {entry.tail[0]:g})" if entry.tail else "")
        formula, derivative = (text.replace("|", "\\|") for text in (entry.formula, entry.derivative))
        rows.append(f"| {name} | `{formula}` | `{derivative}` | {entry.saves} | {params or '—'} | {bound} |")
    return "\n".join(rows)


def gated_table() -> str:
    """Markdown: every gated unit of GATED_UNITS, its functions, formula, gradient and torch form."""
    rows = [
        "| gated unit | functions | y | gradient | activation (bound + 1 ulp) | PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    for unit in GATED_UNITS.values():
        sig = (
            "(x, axis=-1)"
            if unit.halves
            else "(a, b" + "".join(f", {p.name}={p.default!r}" for p in unit.params) + ")"
        )
        suffixes = ("", "_backward") if unit.halves else ("", "_", "_backward", "_backward_")
        names = ", ".join(f"`{unit.name}{s}`" for s in suffixes)
        entries = ", ".join(unit.variants().values())
        formula, derivative = (t.replace("|", "\\|") for t in (unit.formula, unit.derivative))
        rows.append(
            f"| {unit.name}{sig} | {names} | `{formula}` | `{derivative}` | {entries} | `{unit.torch}` |"
        )
    return "\n".join(rows)


def accuracy_table(n: int = 20000) -> str:
    """Markdown: the measured max ulp error of every forward, float32 and float64."""
    from ._dispatch import run
    from ._kernels import forward_kernels
    from .testing import default_params, forward_ulp, sample

    rows = ["| activation | float32 max ulp | float64 max ulp |", "|---|---|---|"]
    for entry in ACTIVATIONS.values():
        params = default_params(entry)
        cells = []
        for dtype in (np.float32, np.float64):
            x = sample(entry, dtype, params, n=n)
            got = run(forward_kernels(entry.name), (x,), np.empty_like(x), tuple(dtype(p) for p in params))
            err = forward_ulp(entry, x, got, params)
            cell = f"{np.max(err[~(x < entry.tail[0])] if entry.tail else err):.2f}"
            if entry.tail:
                cell += f" ({np.max(err[x < entry.tail[0]]):.0f} for x < {entry.tail[0]:g})"
            cells.append(cell)
        rows.append(f"| {entry.name} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)
