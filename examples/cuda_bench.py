"""Benchmark fastact.cuda on a GPU: bandwidth, softmax against torch, per-call overhead.

    python examples/cuda_bench.py              # the full run (a few minutes on an H100)
    python examples/cuda_bench.py --quick      # fewer activations and repetitions
    python examples/cuda_bench.py --json r.json

Timings are CUDA events around each call (median of the repetitions, after warm-up
calls that compile). GB/s counts the bytes a kernel must move: read + write for a
forward in place, two reads + one write for a backward, 2 reads + 1 write for softmax
(its input is read twice). Baselines, measured in the same run:

* copy: device-to-device copy of the same buffer (read + write): the bandwidth ceiling;
* torch: the same operation in torch where it has one (arrays are torch tensors when
  torch with CUDA is installed, numba device arrays otherwise);
* naive numba: a plain ``@cuda.jit`` grid-stride relu called as ``kernel[grid, block](x)``,
  for the per-call overhead.

Shapes: 2^28 float32 elements for the elementwise kernels; softmax on 32768 x 4096,
1048576 x 128 and 256 x 131072 float32 (last axis); per-call overhead on 1024 elements.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from numba import cuda

ELEMENTWISE = [
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "gelu",
    "silu",
    "mish",
    "softplus",
    "elu",
    "hardswish",
]
QUICK = ["relu", "sigmoid", "gelu", "silu"]
SOFTMAX_SHAPES = [(32768, 4096), (1048576, 128), (256, 131072)]


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


class Timer:
    """Median milliseconds of a call, by CUDA events on the stream fastact will use."""

    def __init__(self, torch, reps: int) -> None:
        self.torch, self.reps = torch, reps

    def __call__(self, fn, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(self.reps):
            if self.torch is not None:
                start, end = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                start, end = cuda.event(), cuda.event()
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        return statistics.median(times)


def _gbps(nbytes: float, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")


def _torch_inplace(torch, name):
    f = torch.nn.functional
    table = {
        "relu": torch.relu_,
        "leaky_relu": f.leaky_relu_,
        "sigmoid": torch.sigmoid_,
        "tanh": torch.tanh_,
        "gelu": lambda x: x.copy_(f.gelu(x)),
        "silu": lambda x: f.silu(x, inplace=True),
        "mish": lambda x: f.mish(x, inplace=True),
        "softplus": lambda x: x.copy_(f.softplus(x)),
        "elu": f.elu_,
        "hardswish": lambda x: f.hardswish(x, inplace=True),
    }
    return table.get(name)


def elementwise(fc, torch, timer, names, n, rows):
    if torch is not None:
        x = torch.randn(n, device="cuda")
        y = torch.empty_like(x)
        g = torch.randn(n, device="cuda")
        copy = lambda: y.copy_(x)
    else:
        x = cuda.to_device(np.random.default_rng(0).standard_normal(n).astype(np.float32))
        y = cuda.device_array_like(x)
        g = cuda.to_device(np.random.default_rng(1).standard_normal(n).astype(np.float32))
        copy = lambda: y.copy_to_device(x)
    nbytes = 4 * n
    ceiling = _gbps(2 * nbytes, timer(copy))
    rows.append({"case": "d2d copy", "n": n, "GB/s": ceiling})
    for name in names:
        ms = timer(lambda name=name: getattr(fc, name + "_")(x))
        row = {"case": f"{name}_ (in place)", "n": n, "GB/s": _gbps(2 * nbytes, ms)}
        row["of copy"] = row["GB/s"] / ceiling
        ref = _torch_inplace(torch, name) if torch is not None else None
        if ref is not None:
            row["torch GB/s"] = _gbps(2 * nbytes, timer(lambda ref=ref: ref(x)))
        rows.append(row)
        ms = timer(lambda name=name: getattr(fc, name + "_backward_")(g, x))
        rows.append({"case": f"{name}_backward_", "n": n, "GB/s": _gbps(3 * nbytes, ms)})
        rows[-1]["of copy"] = rows[-1]["GB/s"] / ceiling


def softmax(fc, torch, timer, shapes, rows):
    for shape in shapes:
        if torch is not None:
            x = torch.randn(*shape, device="cuda")
            out = torch.empty_like(x)
        else:
            x = cuda.to_device(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
            out = cuda.device_array_like(x)
        nbytes = 4 * int(np.prod(shape))
        for name in ("softmax", "log_softmax"):
            ms = timer(lambda name=name, x=x, out=out: getattr(fc, name)(x, -1, out=out))
            row = {"case": f"{name} {shape[0]}x{shape[1]}", "GB/s": _gbps(3 * nbytes, ms), "ms": ms}
            if torch is not None:
                ref = getattr(torch, name)
                t_ms = timer(lambda ref=ref, x=x: ref(x, -1))
                row["torch ms"] = t_ms
                row["torch GB/s (2 passes)"] = _gbps(2 * nbytes, t_ms)
                row["speedup vs torch"] = t_ms / ms
            rows.append(row)


@cuda.jit
def naive_relu(a):
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[i] = max(a[i], 0.0)


def overhead(fc, torch, rows, calls: int, n: int = 1024, warmup: int = 20):
    """Host time per call on 1024 elements (the launch is asynchronous: this is the Python side)."""
    if torch is not None:
        x = torch.randn(n, device="cuda")
        sync = torch.cuda.synchronize
    else:
        x = cuda.to_device(np.ones(n, np.float32))
        sync = cuda.synchronize
    grid, block = (n + 255) // 256, min(n, 256)

    target = cuda.as_cuda_array(x) if torch is not None else x
    cases = {
        "fastact.cuda.relu_": lambda: fc.relu_(x),
        "naive numba relu": lambda: naive_relu[grid, block](target),
    }
    if torch is not None:
        cases["torch.relu_"] = lambda: torch.relu_(x)
        cases["naive numba relu (torch tensor in)"] = lambda: naive_relu[grid, block](x)
    for name, fn in cases.items():
        for _ in range(warmup):
            fn()
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        rows.append({"case": f"per call: {name}", "us": (time.perf_counter() - start) / calls * 1e6})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer activations and repetitions")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--log2n", type=int, default=28, help="elementwise size 2^N (default 28)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes: a smoke test (e.g. under the simulator)"
    )
    args = parser.parse_args(argv)
    import fastact.cuda as fc

    torch = _torch()
    timer = Timer(torch, reps=2 if args.tiny else 5 if args.quick else 20)
    rows: list[dict] = []
    names = ["relu"] if args.tiny else QUICK if args.quick else ELEMENTWISE
    elementwise(fc, torch, timer, names, 1 << (6 if args.tiny else args.log2n), rows)
    softmax(fc, torch, timer, [(3, 8), (2, 80)] if args.tiny else SOFTMAX_SHAPES, rows)
    if args.tiny:
        overhead(fc, torch, rows, calls=2, n=8, warmup=1)
    else:
        overhead(fc, torch, rows, calls=2000 if args.quick else 20000)
    for row in rows:
        print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
