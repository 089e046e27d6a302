"""fastact.torch against torch's own ops, as a training step runs them (issue 28's table).

1. Per call, forward + backward through autograd (``torch.autograd.grad(f(x), x, g)``), float32,
   at (64, 256), (512, 1024), (4096, 4096): gelu, silu, relu, sigmoid, softmax, cross-entropy.
   "as shipped" is fastact.torch with its crossover (torch's own op below it); "kernels" forces
   fastact's kernels at every size.
2. The MLP training step of examples/torch_mlp_bench.py (GELU and SiLU, fastact's loss).
3. Activation-heavy steps, batch x width activations (default 8192 x 4096) between two narrow
   Linear layers: time per step and the step's peak memory (RSS growth over the process after a
   warm-up step on a small batch, one fresh process per variant): GELU, GELU in place, SiLU, and a
   SwiGLU block (fastact's fused SwiGLU against ``F.silu(a) * b``); fastact's kernels here (the
   shipped crossover calls torch's GELU and SiLU in float32).

Every time is a ratio measured in one process with the two sides in alternating rounds (best of each side).
Run: python examples/torch_adapter_bench.py [--rounds 7] [--batch 8192] [--width 4096] [--skip-calls]
[--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

import fastact.torch as ft
from fastact import _config
from fastact._bench_torch import calls, rounds, summary

SHAPES = ((64, 256), (512, 1024), (4096, 4096))
OPS = ("gelu", "silu", "relu", "sigmoid", "softmax", "softmax_cross_entropy")
NARROW = 64  # the Linear layers around the wide activation


def per_call(n_rounds: int) -> list[dict]:
    rows = []
    for shape in SHAPES:
        for op in OPS:
            ours, theirs = calls(op, "float32", shape)
            shipped = summary(rounds(ours, theirs, n_rounds))
            with _config.overridden(TORCH_CROSSOVER={}):
                ours, theirs = calls(op, "float32", shape)
                kernels = summary(rounds(ours, theirs, n_rounds))
            n = shape[0] * shape[1]
            path = "torch's op" if n < _config.TORCH_CROSSOVER.get(op, {}).get("float32", 0) else "fastact"
            rows.append({"op": op, "shape": shape, "path": path, "shipped": shipped, "kernels": kernels})
            print(
                f"{op:22s} {shape!s:13s} as shipped ({path:10s}) {shipped[2]:5.2f}x "
                f"[{shipped[0] * 1e6:9.1f} vs {shipped[1] * 1e6:9.1f} us]   kernels {kernels[2]:5.2f}x",
                flush=True,
            )
    return rows


def mlp_step(n_rounds: int) -> list[dict]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_mlp_bench as mb

    x = torch.randn(512, 256)
    target = torch.randint(0, 10, (512,))
    rows = []
    for label, ours_act, theirs_act, table in (
        ("GELU", ft.GELU, torch.nn.GELU, _config.TORCH_CROSSOVER),
        ("SiLU", ft.SiLU, torch.nn.SiLU, _config.TORCH_CROSSOVER),
        ("GELU kernels", ft.GELU, torch.nn.GELU, {}),
        ("SiLU kernels", ft.SiLU, torch.nn.SiLU, {}),
    ):
        saved, _config.TORCH_CROSSOVER = _config.TORCH_CROSSOVER, table
        ours = (mb.mlp(ours_act, 1024), ft.CrossEntropyLoss())
        theirs = (mb.mlp(theirs_act, 1024), torch.nn.CrossEntropyLoss())
        samples = []
        mb.step_ms(*ours, x, target, steps=2), mb.step_ms(*theirs, x, target, steps=2)
        for r in range(n_rounds):
            pair = (ours, theirs) if r % 2 == 0 else (theirs, ours)
            t = [mb.step_ms(*m, x, target, steps=3) for m in pair]
            samples.append(tuple(t) if r % 2 == 0 else (t[1], t[0]))
        _config.TORCH_CROSSOVER = saved
        a, b, ratio = summary(samples)
        rows.append({"act": label, "fastact_ms": a, "torch_ms": b, "ratio": ratio})
        print(f"MLP 256-1024-1024-10 batch 512 {label}: fastact {a:.2f} ms  torch {b:.2f} ms  {ratio:.2f}x")
    return rows


# --- activation-heavy steps --------------------------------------------------------------


class SwiGLUBlock(torch.nn.Module):
    def __init__(self, width: int, fused: bool) -> None:
        super().__init__()
        self.up = torch.nn.Linear(NARROW, 2 * width)
        self.down = torch.nn.Linear(width, NARROW)
        self.fused = fused

    def forward(self, x):
        a, b = self.up(x).chunk(2, dim=-1)
        return self.down(ft.swiglu(a, b) if self.fused else torch.nn.functional.silu(a) * b)


VARIANTS = {
    "torch GELU": lambda w: _block(torch.nn.GELU(), w),
    "fastact GELU": lambda w: _block(ft.GELU(), w),
    "fastact GELU inplace": lambda w: _block(ft.GELU(inplace=True), w),
    "torch SiLU": lambda w: _block(torch.nn.SiLU(), w),
    "fastact SiLU": lambda w: _block(ft.SiLU(), w),
    "torch silu(a)*b": lambda w: SwiGLUBlock(w, False),
    "fastact SwiGLU": lambda w: SwiGLUBlock(w, True),
}
PAIRS = (
    ("fastact GELU", "torch GELU"),
    ("fastact GELU inplace", "torch GELU"),
    ("fastact SiLU", "torch SiLU"),
    ("fastact SwiGLU", "torch silu(a)*b"),
)


def _block(act, width: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(NARROW, width), act, torch.nn.Linear(width, NARROW))


def _step(model, x) -> None:
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()


def _status(field: str) -> int:
    """A size field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_child(name: str, batch: int, width: int) -> None:
    """In a fresh process: the step's peak RSS over the RSS before it (after a small step).
    Linux: writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to the current RSS."""
    _config.TORCH_CROSSOVER = {}  # as heavy(): fastact's kernels
    torch.manual_seed(0)
    model = VARIANTS[name](width)
    _step(model, torch.randn(64, NARROW))  # libraries and kernels loaded, parameters' grads exist
    x = torch.randn(batch, NARROW)
    _step(model, torch.randn(64, NARROW))
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    _step(model, x)
    print(json.dumps({"peak_bytes": _status("VmHWM") - before}))


def heavy(batch: int, width: int, n_rounds: int) -> list[dict]:
    """fastact's kernels (no crossover: the shipped defaults call torch's GELU and SiLU in
    float32 at every size) against torch's modules."""
    _config.TORCH_CROSSOVER = {}
    peaks = {}
    for name in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--peak-child", name, "--batch", str(batch), "--width", str(width)],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
    rows = []
    for ours_name, theirs_name in PAIRS:
        torch.manual_seed(0)
        ours, theirs = VARIANTS[ours_name](width), VARIANTS[theirs_name](width)
        x = torch.randn(batch, NARROW)

        def timed(model, x=x):
            t0 = time.perf_counter()
            _step(model, x)
            return time.perf_counter() - t0

        timed(ours), timed(theirs)
        samples = []
        for r in range(n_rounds):
            if r % 2 == 0:
                samples.append((timed(ours), timed(theirs)))
            else:
                b = timed(theirs)
                samples.append((timed(ours), b))
        a, b, ratio = summary(samples)
        row = {
            "fastact": ours_name,
            "torch": theirs_name,
            "fastact_ms": a * 1e3,
            "torch_ms": b * 1e3,
            "ratio": ratio,
            "fastact_peak_mib": peaks[ours_name] / 2**20,
            "torch_peak_mib": peaks[theirs_name] / 2**20,
        }
        rows.append(row)
        print(
            f"{batch}x{width} {ours_name:21s} {a * 1e3:8.1f} ms vs {theirs_name:16s} {b * 1e3:8.1f} ms "
            f"{ratio:5.2f}x; peak {row['fastact_peak_mib']:7.0f} vs {row['torch_peak_mib']:7.0f} MiB",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--skip-calls", action="store_true")
    parser.add_argument("--threads", type=int, help="torch's threads (numba's follow them); default torch's")
    parser.add_argument("--json")
    parser.add_argument("--peak-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        peak_child(args.peak_child, args.batch, args.width)
        return
    import numba

    from fastact._threading import threading_layer

    if args.threads:
        torch.set_num_threads(args.threads)

    layer = threading_layer()  # first: numba's own calls would start numba's default layer
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads, kernels "
        f"{torch.backends.cpu.get_cpu_capability()}), numba {numba.__version__} "
        f"(pool of {numba.get_num_threads()}, layer {layer}; the adapter follows torch), "
        f"{os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start; ratio = torch time / fastact time",
        flush=True,
    )
    result = {}
    if not args.skip_calls:
        result["per_call"] = per_call(args.rounds)
    result["mlp"] = mlp_step(args.rounds)
    result["heavy"] = heavy(args.batch, args.width, args.rounds)
    print(f"load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
