"""Every tunable of fastact, with its default and the command that measures it.

Sizes and thresholds only: none changes a result, only which loop computes it and how
fast (except in the last bits of the linear cross-entropy's gradients, which sum over row
chunks: its chunk size sets the order of those sums). The kernels read the compile-time
ones (block and chunk sizes) when they compile; the host code reads the others at each
call, so a test or a user may patch them here (``fastact._config.PARALLEL_THRESHOLD = ...``).
Measurements behind each value: docs/TUNING.md.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

# --- elementwise kernels (compile time) ---------------------------------------------------

# LLVM's vector interleave for fastact's loops (its cost model picks 1 for the math layer's
# long bodies); `python -m fastact bench` with INTERLEAVE edited measures it.
INTERLEAVE = 4
# The 1-d kernels run in blocks of BLOCK_BYTES and prefetch each input PREFETCH_AHEAD bytes
# ahead of the block (the rows kernels: about PREFETCH_AHEAD bytes of rows ahead). On a
# target CPU whose name starts with one of NO_PREFETCH_CPUS the 1-d kernels prefetch nothing
# and run in blocks of NO_PREFETCH_BLOCK_BYTES (the rows kernels still prefetch).
BLOCK_BYTES = 1024
PREFETCH_AHEAD = 4096
NO_PREFETCH_CPUS = ("znver",)
NO_PREFETCH_BLOCK_BYTES = 16384
CACHE_LINE = 64
# The buffered strided kernels copy STRIDED_CHUNK elements at a time; a parallel task
# works through STRIDED_TASK_CHUNKS consecutive chunks.
STRIDED_CHUNK = 256
STRIDED_TASK_CHUNKS = 64

# bias_act's backward splits the rows into at most BIAS_GRAD_CHUNKS chunks of at least
# BIAS_GRAD_ROWS rows, each summing dbias's columns into a float64 row of its own (the
# partial sums then take at most 1/8 of a float32 input's bytes); the chunks depend on the
# shape only, so dbias is the same for any thread count. Each parallel task is one chunk's
# rows over BIAS_GRAD_COLUMN_BYTES of columns (compile time), so that few long rows still
# spread over the threads.
BIAS_GRAD_CHUNKS = 64
BIAS_GRAD_ROWS = 16
BIAS_GRAD_COLUMN_BYTES = 16 * 1024

# --- dispatch (each call) ----------------------------------------------------------------------

# Below this many elements the serial kernel wins: `python -m fastact bench --crossover`.
PARALLEL_THRESHOLD = 1 << 15

# --- fastact.torch (each call) -------------------------------------------------------------

# fastact.torch calls torch's own op (the op table's ``torch`` field) on a CPU tensor of fewer
# than TORCH_CROSSOVER[op][dtype] elements, where forward + backward through autograd is
# faster in torch (its C++ autograd node against a Python autograd.Function: ~15-20 us a call
# more); an op or dtype not listed always runs fastact's kernels, ALWAYS_TORCH never does.
# In-place calls and softmax with scale= or where= always run fastact's. Each value is the
# largest of three runs of `python -m fastact bench --torch-crossover` (1K..4M elements then;
# 2 threads, AMD Zen 4 AVX-512, 2 cores shared with other jobs: docs/TORCH.md); float32 gelu,
# silu, relu and sigmoid from 16M, where fastact's kernels were 1.06-1.36x torch in both runs of
# examples/torch_adapter_bench.py at (4096, 4096). Re-measure on the target machine.
ALWAYS_TORCH = 1 << 62
# Inside fastact.torch, fastact's kernels on fewer than TORCH_PARALLEL_THRESHOLD elements run
# on one thread, larger ones on torch.get_num_threads() threads: numba's pool then stays
# asleep beside torch's (whose OpenMP threads spin after each of torch's ops). The MLP step
# of examples/torch_mlp_bench.py --kernels (512 x 1024 activations) under load took 0.77-0.78
# of torch's time with serial kernels, 0.78-1.04 with both pools at 2 threads (docs/TORCH.md).
TORCH_PARALLEL_THRESHOLD = 1 << 20
TORCH_CROSSOVER: dict[str, dict[str, int]] = {
    "linear": {"float32": ALWAYS_TORCH, "float64": ALWAYS_TORCH},
    "sigmoid": {"float32": 16_777_216, "float64": 4_194_304},
    "tanh": {"float32": 1_048_576, "float64": 4_194_304},
    "relu": {"float32": 16_777_216, "float64": ALWAYS_TORCH},
    "relu6": {"float32": ALWAYS_TORCH, "float64": ALWAYS_TORCH},
    "leaky_relu": {"float32": ALWAYS_TORCH, "float64": ALWAYS_TORCH},
    "elu": {"float32": ALWAYS_TORCH, "float64": 4_194_304},
    "selu": {"float32": ALWAYS_TORCH, "float64": 65_536},
    "celu": {"float32": 4_194_304, "float64": 4_194_304},
    "gelu": {"float32": 16_777_216, "float64": 1_048_576},
    "gelu_tanh": {"float32": 4_194_304, "float64": 4_194_304},
    "silu": {"float32": 16_777_216, "float64": ALWAYS_TORCH},
    "mish": {"float32": 16_384, "float64": 262_144},
    "softplus": {"float32": 4_194_304, "float64": 4_194_304},
    "softsign": {"float32": 16_384, "float64": 1_024},
    "hardsigmoid": {"float32": ALWAYS_TORCH, "float64": ALWAYS_TORCH},
    "hardswish": {"float32": ALWAYS_TORCH, "float64": ALWAYS_TORCH},
    "hardtanh": {"float32": ALWAYS_TORCH, "float64": ALWAYS_TORCH},
    "log_sigmoid": {"float32": 4_194_304, "float64": 4_194_304},
    "threshold": {"float32": ALWAYS_TORCH, "float64": ALWAYS_TORCH},
    "softmax": {"float32": ALWAYS_TORCH, "float64": ALWAYS_TORCH},
    "log_softmax": {"float32": ALWAYS_TORCH, "float64": ALWAYS_TORCH},
    "softmax_cross_entropy": {"float32": 262_144, "float64": 262_144},
}

# --- softmax host side (each call) ------------------------------------------------------------

# A row up to ROW_CACHE_BYTES is done in cache (max, exp + sum, scale); longer rows go in
# chunks of CHUNK_BYTES. A cols tile (L x tw) is TILE_BYTES wide.
ROW_CACHE_BYTES = 128 * 1024
CHUNK_BYTES = 32 * 1024
TILE_BYTES = 8 * 1024
# An out-of-place softmax whose output has at least this many bytes writes it with
# non-temporal stores.
STREAM_BYTES = 16 * 1024 * 1024
# Rows are split across threads when there are fewer than this many rows per thread.
SPLIT_ROWS_PER_THREAD = 4
# The reductions' 16-bit calls (softmax family, cross-entropy) run in blocks of whole rows
# widened into float32 scratch of about this size (one row where a row is longer; up to 4x
# more for enough rows per thread), each Python thread (one per numba thread) with its
# blocks and its scratch: `python -m fastact bench --dtype bfloat16` (docs/HALF.md).
HALF_BLOCK_BYTES = 1024 * 1024

# --- linear cross-entropy host side (each call) ------------------------------------------------

# linear_cross_entropy(chunk_size=None) walks the rows in chunks of N // LCE_CHUNK_FRACTION
# rows (the chunk's logits buffer, rows x V, is 1/10 of the N x V logits: with the O(N + V)
# rest and BLAS's workspace, under 1/8), at most LCE_CHUNK_BYTES of logits per chunk, at
# least LCE_MIN_CHUNK_BYTES (tiny problems are not cut into tiny matrix products), rounded
# down to a multiple of LCE_ROW_MULTIPLE rows. Measured with
# `python scripts/linear_xent_measure.py --chunks ...` (docs/TUNING.md).
LCE_CHUNK_FRACTION = 10
LCE_CHUNK_BYTES = 64 * 1024 * 1024
LCE_MIN_CHUNK_BYTES = 1024 * 1024
LCE_ROW_MULTIPLE = 16
# Accumulate the weight gradient with numpy's own BLAS gemm (beta = 1, fastact._blas)
# where found; False, or no such BLAS: np.matmul into a scratch of 1/16 of the chunk
# buffer, then an add.
LCE_BLAS_ACCUMULATE = True


@contextmanager
def overridden(**values) -> Iterator[None]:
    """Set tunables for the duration of a block, then restore them (process-wide: calls
    in other threads meanwhile see the values too, and may take other, equally correct
    kernels)."""
    module = sys.modules[__name__]
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
