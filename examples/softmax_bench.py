"""Softmax and softmax cross-entropy: fastact against torch (CPU) and naive numpy.

    python examples/softmax_bench.py [--threads N]

Same thread count for fastact (numba) and torch; numpy runs on one. Prints the best of
several runs in ms and the ratios (> 1: fastact faster). Cross-entropy: forward +
backward (fastact's one fused call, in place; torch's cross_entropy + backward()),
with the peak memory each adds, measured in a fresh subprocess (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numba
import numpy as np

import fastact as fa
from fastact._bench import CAUSAL_SCALE, CAUSAL_SHAPE, causal_softmax

SHAPES = [(4096, 4096), (65536, 128), (64, 32768)]


def best(fn, repeat: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def naive_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_row(shape: tuple[int, int]) -> dict:
    import torch

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = np.empty_like(x)
    y = x.copy()
    tx = torch.from_numpy(x)
    tout = torch.empty_like(tx)
    row = {
        "shape": shape,
        "fastact": best(lambda: fa.softmax(x, out=out)),
        "fastact_inplace": best(lambda: fa.softmax_(y)),
        "torch": best(lambda: torch.softmax(tx, -1, out=tout)),
        "numpy": best(lambda: naive_softmax(x), repeat=5),
    }
    g = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    s = fa.softmax(x)
    tg, ts = torch.from_numpy(g), torch.from_numpy(s)
    row["backward_fastact"] = best(lambda: fa.softmax_backward(g, s, out=out))
    row["backward_torch"] = best(lambda: torch._softmax_backward_data(tg, ts, -1, torch.float32))
    return row


XENT = (16384, 1000)


def xent_child(which: str) -> None:
    """Run one cross-entropy step in this process; print time and the peak RSS it added."""
    n, c = XENT
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, c), dtype=np.float32)  # no float64 temporary to mask the peak
    target = rng.integers(0, c, n)
    if which == "fastact":
        work = logits.copy()
        fa.softmax_cross_entropy(logits[:64].copy(), target[:64], inplace=True)  # compile / load first
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def step():
            work[...] = logits
            return fa.softmax_cross_entropy(work, target, inplace=True)

        copy = best(lambda: np.copyto(work, logits))
    else:
        import torch

        tl, tt = torch.from_numpy(logits), torch.from_numpy(target)
        copy = 0.0

        def step():
            leaf = tl.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(leaf, tt)
            loss.backward()
            leaf.grad = None
            return loss

        small = tl[:64].clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(small, tt[:64]).backward()  # warm up torch's machinery
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ms = best(step) - copy
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"ms": ms, "peak_mib": peak / 1024}))


def xent_rows(threads: int) -> dict:
    result = {}
    for which in ("fastact", "torch"):
        out = subprocess.run(
            [sys.executable, __file__, "--threads", str(threads), "--xent-child", which],
            capture_output=True,
            text=True,
            check=True,
        )
        result[which] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    parser.add_argument("--xent-child", choices=["fastact", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    numba.set_num_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.xent_child:
        xent_child(args.xent_child)
        return
    print(f"float32, {args.threads} threads for fastact and torch {torch.__version__}; numpy on one")
    print(
        f"{'softmax(x, -1)':16s} {'fastact':>9s} {'in place':>9s} {'torch':>9s} {'numpy':>9s}"
        f" {'vs torch':>9s} {'vs numpy':>9s} | {'bwd':>8s} {'torch bwd':>9s} {'vs torch':>9s}"
    )
    # The cross-entropy children first: run after the softmax timings, the torch child's
    # peak RSS reads low (85 MiB, even 0, instead of 188) on this VM.
    x = xent_rows(args.threads)
    for r in map(softmax_row, SHAPES):
        shape = "x".join(map(str, r["shape"]))
        print(
            f"{shape:16s} {r['fastact']:7.2f}ms {r['fastact_inplace']:7.2f}ms"
            f" {r['torch']:7.2f}ms {r['numpy']:7.2f}ms"
            f" {r['torch'] / r['fastact']:8.2f}x {r['numpy'] / r['fastact']:8.2f}x |"
            f" {r['backward_fastact']:6.2f}ms {r['backward_torch']:7.2f}ms"
            f" {r['backward_torch'] / r['backward_fastact']:8.2f}x"
        )
    causal = causal_softmax()
    base = causal["fastact unmasked"]
    print(
        f"causal softmax(x * {CAUSAL_SCALE}, where=tril) {'x'.join(map(str, CAUSAL_SHAPE))}: "
        + ", ".join(f"{name} {t * 1e3:.2f} ms ({t / base:.2f}x)" for name, t in causal.items())
    )
    n, c = XENT
    print(
        f"cross-entropy {n}x{c} forward+backward: fastact {x['fastact']['ms']:.2f} ms (in place), "
        f"torch {x['torch']['ms']:.2f} ms -> {x['torch']['ms'] / x['fastact']['ms']:.2f}x; "
        f"peak memory added: fastact {x['fastact']['peak_mib']:.1f} MiB, "
        f"torch {x['torch']['peak_mib']:.1f} MiB"
    )


if __name__ == "__main__":
    main()
