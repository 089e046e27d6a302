"""Time and peak memory of the chunked linear cross-entropy against torch, forward + backward.

    python scripts/linear_xent_measure.py                       # N=4096, H=1024, V=32000 float32
    python scripts/linear_xent_measure.py --shape 1024x512x8192 --rounds 5
    python scripts/linear_xent_measure.py --chunks 128 256 448 512 --no-memory
    python scripts/linear_xent_measure.py --no-time             # memory only

Implementations (those installed): ``fastact`` (``fastact.linear_cross_entropy``, chunk_size
None unless ``--chunks``), ``numpy`` (the naive composition with the full logits,
``fastact._baselines.linear_cross_entropy``), ``torch_lce`` (``F.linear_cross_entropy``,
its reference path: ``options=None``), ``torch_chunked`` (``F.linear_cross_entropy`` with
``LinearCrossEntropyOptions()``), ``torch_composition`` (``F.cross_entropy(x @ W.T, t)``);
each computes the mean loss and the gradients of input and weight.

Time: one process, every implementation once per round, in turn (a burst of load elsewhere
hits them all alike); the best of the rounds and the ratio to fastact's best. Threads:
``--threads`` for numba, torch and numpy's BLAS (threadpoolctl when installed, else
OPENBLAS_NUM_THREADS set before numpy loads).

Memory: each implementation in a fresh process: inputs made and touched, one warm-up call
on a few rows (compiles, loads BLAS), the peak RSS reset (``/proc/self/clear_refs``), one
call; the peak RSS added over the RSS before it, with the returned gradients (or torch's
.grad) still held, and the same less those outputs. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

IMPLS = ("fastact", "numpy", "torch_lce", "torch_chunked", "torch_composition")


def _setup(shape: str, dtype: str, threads: int):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    import numpy as np

    n, h, v = (int(s) for s in shape.split("x"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h), dtype=np.float32).astype(dtype)
    w = (rng.standard_normal((v, h), dtype=np.float32) * 0.02).astype(dtype)
    t = rng.integers(0, v, n)
    return np, x, w, t


def _calls(impls, x, w, t, threads: int, chunk: int | None) -> dict:
    """name -> call() returning what it holds (outputs)."""
    import fastact
    from fastact import _baselines

    calls = {}
    for impl in impls:
        if impl == "fastact":
            calls[impl] = lambda x=x, w=w, t=t, c=chunk: fastact.linear_cross_entropy(x, w, t, chunk_size=c)
        elif impl.startswith("fastact_"):
            c = int(impl.split("_")[1])
            calls[impl] = lambda x=x, w=w, t=t, c=c: fastact.linear_cross_entropy(x, w, t, chunk_size=c)
        elif impl == "numpy":
            calls[impl] = lambda: _baselines.linear_cross_entropy(x, w, t)
        else:
            try:
                import torch
            except ImportError:
                continue
            torch.set_num_threads(threads)
            F = torch.nn.functional
            if impl != "torch_composition" and not hasattr(F, "linear_cross_entropy"):
                continue
            if impl == "torch_chunked" and not hasattr(torch.nn, "LinearCrossEntropyOptions"):
                continue
            xt = torch.from_numpy(x).requires_grad_()
            wt = torch.from_numpy(w).requires_grad_()
            tt = torch.from_numpy(t)

            def run(impl=impl, xt=xt, wt=wt, tt=tt, F=F, torch=torch):
                xt.grad = wt.grad = None
                if impl == "torch_composition":
                    loss = F.cross_entropy(xt @ wt.T, tt)
                elif impl == "torch_lce":
                    loss = F.linear_cross_entropy(xt, wt, tt)
                else:
                    loss = F.linear_cross_entropy(xt, wt, tt, options=torch.nn.LinearCrossEntropyOptions())
                loss.backward()
                return loss, xt.grad, wt.grad

            calls[impl] = run
    return calls


def _limit_blas(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(threads, user_api="blas")


def time_all(args) -> None:
    _, x, w, t = _setup(args.shape, args.dtype, args.threads)
    import numba

    numba.set_num_threads(args.threads)
    _limit_blas(args.threads)
    impls = [f"fastact_{c}" for c in args.chunks] if args.chunks else []
    impls += [i for i in args.impls if i != "fastact" or not args.chunks]
    calls = _calls(impls, x, w, t, args.threads, None)
    for call in calls.values():
        call()  # compile, fault pages in
    best = dict.fromkeys(calls, float("inf"))
    runs: dict = {k: [] for k in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            out = call()
            dt = time.perf_counter() - t0
            del out
            best[name] = min(best[name], dt)
            runs[name].append(round(dt, 3))
    ref = min(v for k, v in best.items() if k.startswith("fastact"))
    print(f"time, {args.shape} {args.dtype}, {args.threads} threads, best of {args.rounds} rounds in turn:")
    for name in calls:
        print(
            f"  {name:18s} {best[name]:7.3f} s  {best[name] / ref:5.2f}x fastact's best   rounds {runs[name]}"
        )


_PROBE = """
import json, sys
sys.path.insert(0, {here!r})
import linear_xent_measure as m
args = json.loads(sys.argv[1])
np, x, w, t = m._setup(args["shape"], args["dtype"], args["threads"])
import numba
numba.set_num_threads(args["threads"])
m._limit_blas(args["threads"])
impl = args["impl"]
small = m._calls([impl], x[:64].copy(), w, t[:64].copy(), args["threads"], args["chunk"])
if not small:
    print(json.dumps(None)); sys.exit()
small[impl]()  # compile, load BLAS and torch's kernels
del small
call = m._calls([impl], x, w, t, args["threads"], args["chunk"])[impl]

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

before = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
out = call()
peak = rss("VmHWM:")
held = sum(a.numel() * a.element_size() if hasattr(a, "numel") else a.nbytes
           for a in out[1:] if a is not None and getattr(a, "ndim", 0))
print(json.dumps({{"added": peak - before, "outputs": held}}))
"""


def memory_all(args) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    n, _, v = (int(s) for s in args.shape.split("x"))
    logits = n * v * (4 if args.dtype == "float32" else 8)
    mib = 1 << 20
    print(f"peak memory added, {args.shape} {args.dtype} (logits {logits / mib:,.0f} MiB), fresh processes:")
    for impl in args.impls:
        for chunk in args.chunks if impl == "fastact" and args.chunks else [None]:
            spec = {**vars(args), "impl": impl, "chunk": chunk}
            out = subprocess.run(
                [sys.executable, "-c", _PROBE.format(here=here), json.dumps(spec)],
                capture_output=True,
                text=True,
                # fixed mmap threshold: every large array is its own mapping, returned to the
                # system when freed (glibc's moving threshold would keep the warm-up's arrays'
                # pages in the heap, hiding the call's own allocations from the RSS)
                env={
                    **os.environ,
                    "OPENBLAS_NUM_THREADS": str(args.threads),
                    "MALLOC_MMAP_THRESHOLD_": "131072",
                },
            )
            if out.returncode:
                print(f"  {impl}: failed\n{out.stderr[-2000:]}")
                continue
            m = json.loads(out.stdout.strip().splitlines()[-1])
            if m is None:
                continue
            name = impl if chunk is None else f"{impl}_{chunk}"
            added, rest = m["added"], m["added"] - m["outputs"]
            print(
                f"  {name:18s} {added / mib:8,.1f} MiB   less the gradients held {rest / mib:8,.1f} MiB"
                f"  ({rest / logits:.3f} of the logits)"
            )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="4096x1024x32000", help="N x H x V (default 4096x1024x32000)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chunks", type=int, nargs="*", default=[], help="fastact chunk sizes to time")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--no-time", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args(argv)
    if not args.no_memory:
        memory_all(args)
    if not args.no_time:
        time_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
