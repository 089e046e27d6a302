"""``python -m fastact bench --torch-crossover``: below what size fastact.torch calls torch.

For each op with a torch counterpart, dtype and size n (a tensor of shape (n // 1024, 1024)),
the forward and backward as a training step runs them, ``torch.autograd.grad(f(x), x, g)``:
fastact.torch with its kernels (no crossover) against torch's own op (the op table's
``torch`` field), in alternating rounds in one process (each round times both, in turn
first), so that load elsewhere hits both alike; a size's ratio is torch's best time over
fastact's best (see :func:`summary`). The crossover is the smallest
measured size from which fastact is at least as fast at every larger measured size:
:data:`fastact._config.TORCH_CROSSOVER` holds it per op and dtype, and fastact.torch calls
torch's op below it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

from . import _config
from ._ops import OPS
from .testing import default_params

COLUMNS = 1024
SIZES = tuple(1 << k for k in range(10, 25, 2))  # 1K .. 16M elements
NEVER = _config.ALWAYS_TORCH  # fastact was never faster: torch at every size


def ops_with_torch() -> list[str]:
    """Every op fastact.torch can hand to torch's own op (the table's ``torch`` is set)."""
    return [name for name, op in OPS.items() if op.torch is not None]


def shape_of(n: int) -> tuple[int, int]:
    return (max(1, n // COLUMNS), min(n, COLUMNS))


def calls(name: str, dtype: str, shape: tuple[int, int], seed: int = 0) -> tuple[Callable, Callable]:
    """(fastact.torch's forward + backward, torch's) on seeded data of ``shape``; each call
    returns the gradient with respect to the input."""
    import torch

    import fastact.torch as ft

    F = torch.nn.functional
    op = OPS[name]
    gen = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    x = (torch.randn(shape, generator=gen, dtype=dt) * 3).requires_grad_()
    if op.kind == "loss":
        target = torch.randint(0, shape[1], (shape[0],), generator=gen)
        ours = functools.partial(ft.cross_entropy, target=target)
        theirs = functools.partial(op.torch, torch, F, target=target)
        g = None
    elif op.kind == "row":
        ours = functools.partial(getattr(ft, name), dim=-1)
        theirs = functools.partial(op.torch, torch, F, axis=-1)
        g = torch.randn(shape, generator=gen, dtype=dt)
    else:
        entry = op.activation
        params = default_params(entry)
        if entry.public:
            ours = lambda t: getattr(ft, name)(t, *params)
        else:  # gelu_tanh
            ours = functools.partial(ft.gelu, approximate="tanh")
        theirs = lambda t: op.torch(torch, F, t, *params)
        g = torch.randn(shape, generator=gen, dtype=dt)

    def step(f):
        return lambda: torch.autograd.grad(f(x), x, g)[0]

    return step(ours), step(theirs)


def rounds(
    first: Callable, second: Callable, n_rounds: int = 7, sample_seconds: float = 0.01
) -> list[tuple[float, float]]:
    """Seconds per call of ``first`` and ``second`` in each of ``n_rounds`` rounds (each
    round times both, alternating which goes first), after a warm-up call of each; calls
    per sample chosen so that a sample lasts about ``sample_seconds``."""
    first(), second()
    t0 = time.perf_counter()
    first()
    number = max(1, int(sample_seconds / max(time.perf_counter() - t0, 1e-7)))
    out = []
    for r in range(n_rounds):
        pair = {}
        for key, call in ((0, first), (1, second)) if r % 2 == 0 else ((1, second), (0, first)):
            t0 = time.perf_counter()
            for _ in range(number):
                call()
            pair[key] = (time.perf_counter() - t0) / number
        out.append((pair[0], pair[1]))
    return out


def summary(samples: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(fastact's best s, torch's best s, torch's best / fastact's best): on a shared machine
    a sample is as often slowed by other work as not, and the best of each side is the
    steadiest estimate of its own cost (the medians moved 0.3-3x between runs there)."""
    a, b = min(a for a, _ in samples), min(b for _, b in samples)
    return a, b, b / a


def measure(
    names: Sequence[str], dtypes: Sequence[str], sizes: Sequence[int], n_rounds: int = 7, progress=None
) -> dict[str, dict[str, list[tuple[int, float, float, float]]]]:
    """{op: {dtype: [(n, fastact s, torch s, ratio)]}}, fastact's kernels at every size."""
    result: dict = {}
    with _config.overridden(TORCH_CROSSOVER={}):
        for name in names:
            for dtype in dtypes:
                rows = []
                for n in sizes:
                    ours, theirs = calls(name, dtype, shape_of(n))
                    rows.append((n, *summary(rounds(ours, theirs, n_rounds))))
                    if progress is not None:
                        progress.step(f"{name} {dtype} {n}")
                result.setdefault(name, {})[dtype] = rows
    return result


def crossover(rows: Sequence[tuple[int, float, float, float]]) -> int:
    """The smallest measured n from which fastact's ratio is >= 1 at every larger n
    (:data:`NEVER` if it is below 1 at the largest)."""
    best = NEVER
    for n, _, _, ratio in reversed(rows):
        if ratio < 1.0:
            break
        best = n
    return best


def suggestion(result: dict) -> dict[str, dict[str, int]]:
    return {name: {dtype: crossover(rows) for dtype, rows in by.items()} for name, by in result.items()}


def format_result(result: dict, threads: int) -> str:
    import torch

    sizes = [n for n, *_ in next(iter(next(iter(result.values())).values()))]
    lines = [
        f"forward + backward through autograd, torch time / fastact.torch time (> 1: fastact faster), "
        f"best of rounds in turn; {threads} threads for numba and torch, torch's kernels "
        f"{torch.backends.cpu.get_cpu_capability()}; shape (n // {COLUMNS}, {COLUMNS})",
        f"{'op':<22} {'dtype':<8} " + " ".join(f"{n:>8}" for n in sizes) + "  crossover (current)",
    ]
    for name, by in result.items():
        for dtype, rows in by.items():
            at = crossover(rows)
            now = _config.TORCH_CROSSOVER.get(name, {}).get(dtype, 0)
            lines.append(
                f"{name:<22} {dtype:<8} "
                + " ".join(f"{ratio:>8.2f}" for *_, ratio in rows)
                + f"  {_label(at)} ({_label(now)})"
            )
    lines.append("suggested fastact._config.TORCH_CROSSOVER:")
    lines.append(repr(suggestion(result)).replace(repr(NEVER), "ALWAYS_TORCH"))
    return "\n".join(lines)


def _label(n: int) -> str:
    return "never" if n >= NEVER else f"{n:,}"
