"""One training step of a small MLP: fastact.torch activations and loss against torch's own.

Prints milliseconds per step (median of a few repeats) for both, measured in the same run.
Run: python examples/torch_mlp_bench.py [batch] [width] [--kernels]
(``--kernels``: fastact's kernels at every size, no crossover to torch's own ops.)
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import fastact.torch as ft


def mlp(act, width: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    layers = [
        torch.nn.Linear(256, width),
        act(),
        torch.nn.Linear(width, width),
        act(),
        torch.nn.Linear(width, 10),
    ]
    return torch.nn.Sequential(*layers)


def step_ms(model, loss_fn, x, target, steps: int = 5) -> float:
    """Milliseconds per training step, averaged over ``steps`` steps."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1e3


def compare(ours, theirs, x, target, repeats: int = 7) -> tuple[float, float]:
    """Median ms/step of both, alternating repeats so that machine noise hits both alike."""
    a, b = [], []
    for r in range(repeats + 1):
        ta = step_ms(*ours, x, target)
        tb = step_ms(*theirs, x, target)
        if r:  # the first repeat warms up (kernel loads, allocator)
            a.append(ta)
            b.append(tb)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    if "--kernels" in sys.argv:
        sys.argv.remove("--kernels")
        from fastact import _config

        _config.TORCH_CROSSOVER = {}
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    x = torch.randn(batch, 256)
    target = torch.randint(0, 10, (batch,))
    print(f"MLP 256-{width}-{width}-10, batch {batch}, float32, {torch.get_num_threads()} torch threads")
    for label, act_ours, act_torch in (("GELU", ft.GELU, torch.nn.GELU), ("SiLU", ft.SiLU, torch.nn.SiLU)):
        ours, theirs = compare(
            (mlp(act_ours, width), ft.CrossEntropyLoss()),
            (mlp(act_torch, width), torch.nn.CrossEntropyLoss()),
            x,
            target,
        )
        print(
            f"{label:5s} fastact {ours:7.2f} ms/step  torch {theirs:7.2f} ms/step  ratio {ours / theirs:.2f}"
        )


if __name__ == "__main__":
    main()
