"""Softmax and cross-entropy of a lazily generated, chunked dask array with fastact.dask.

The logits (rows x classes, float32) are generated chunk by chunk with ``da.random`` and
never held whole in memory; each chunk runs fastact's fused kernels, and the loss is a
tree reduction. Run: python examples/dask_softmax.py [rows] [classes] [--distributed]
"""

from __future__ import annotations

import sys
import time

import dask
import dask.array as da
import numpy as np
from dask.diagnostics import ProgressBar

import fastact.dask as fd


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rows = int(args[0]) if args else 200_000
    classes = int(args[1]) if len(args) > 1 else 1000
    chunk_rows = max(1, (32 << 20) // (4 * classes))  # ~32 MiB chunks, the class axis whole
    rng = da.random.default_rng(0)
    logits = (rng.standard_normal((rows, classes), chunks=(chunk_rows, classes)) * 3).astype(np.float32)
    target = rng.integers(0, classes, rows, chunks=chunk_rows)
    print(f"logits {logits.shape} float32 = {logits.nbytes / 2**30:.2f} GiB in {logits.numblocks[0]} chunks")

    probs = fd.softmax(logits, axis=1)
    loss, grad = fd.softmax_cross_entropy(logits, target, label_smoothing=0.1)
    # Reduce what we compute to small results, so nothing input-sized is kept.
    row_sums = probs.sum(axis=1, dtype=np.float64)
    grad_norm = da.sqrt((grad.astype(np.float64) ** 2).sum())
    t0 = time.perf_counter()
    if "--distributed" in sys.argv:
        from distributed import Client, LocalCluster, progress

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as c,
        ):
            futures = c.compute([loss, row_sums.min(), row_sums.max(), grad_norm])
            progress(futures)
            values = c.gather(futures)
    else:
        with ProgressBar():
            values = dask.compute(loss, row_sums.min(), row_sums.max(), grad_norm)
    loss_v, lo, hi, norm = values
    print(f"\nmean loss {float(loss_v):.6f}; softmax row sums in [{lo:.7f}, {hi:.7f}]; |grad| {norm:.6g}")
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
