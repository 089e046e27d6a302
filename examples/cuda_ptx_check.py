"""Compile every fastact.cuda kernel to PTX, without a GPU, and check its float types.

Needs numba-cuda and libNVVM (``pip install "numba-cuda[cu12]"`` brings it), no GPU and
no driver: the kernels are compiled with ``numba.cuda.compile_ptx`` for an sm_90 target
instead of being loaded. This checks what the simulator cannot: that every kernel and
device function types and lowers for the real CUDA target, and that float32 and
16-bit kernels contain no float64 arithmetic except the entries fastact computes in float64 on
purpose (``fastact.cuda._compile.WIDEN``).

    python examples/cuda_ptx_check.py        # exit status 0 when everything is right
"""

from __future__ import annotations

import collections
import re
import sys
import types

CC = (9, 0)
FUSED = ("silu", "gelu", "relu", "leaky_relu", "threshold")  # WIDEN entries, parameters, none


def main() -> int:
    import fastact._cuda_probe as probe

    probe.problem = lambda: None  # import fastact.cuda without a GPU: nothing is launched
    from numba import cuda

    if getattr(cuda, "implementation", None) != "NVIDIA":
        print("numba-cuda is not installed")
        return 2
    import numba.cuda.dispatcher as dispatcher

    # Device functions ask the current device for its compute capability.
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)

    compiled = []

    def compile_kernel(pyfunc, signature):
        ptx, _ = cuda.compile_ptx(pyfunc, signature, cc=CC)
        compiled.append((signature, ptx))
        return ptx

    from fastact.cuda import _kernels, _launch, _softmax, _xent
    from fastact.cuda._compile import WIDEN
    from fastact.definitions import ACTIVATIONS

    for module in (_launch, _kernels, _softmax, _xent):
        module.compile_kernel = compile_kernel
    wide = 0
    for dtype in ("float32", "float64", "float16", "bfloat16"):  # 16-bit: computed in float32
        for name in ACTIVATIONS:
            for direction in ("forward", "backward"):
                for strided in (False, True):
                    _kernels.kernel(name, direction, dtype, strided)
                    wide += dtype != "float64" and (name, direction) in WIDEN
        _kernels._copy_kernel(_kernels.kernel_dtype(dtype))
        if dtype in ("float16", "bfloat16"):
            _kernels.narrow_kernel(dtype)
        for name in _softmax.sk.KERNELS:
            _softmax.compiled(name, dtype, 256)
        for name in _xent._SIGNATURES:
            for index in ("int32", "int64"):
                _xent.compiled(name, dtype, index, 256)
        for kname in FUSED:  # the fused ops' kernels, for a few entries (each is compiled per entry)
            for op in ("gated", "gated_backward", "bias"):
                for strided in (False, True):
                    _kernels.fused_kernel(op, kname, dtype, strided)
                    wide += dtype != "float64" and _kernels._fused_compute(kname, dtype).name == "float64"
            _kernels.bias_backward_kernel(kname, dtype)  # float64 partial sums: not counted
        _kernels.combine_kernel(dtype)
    with_f64 = 0
    for signature, ptx in compiled:
        if "float64" not in signature:  # float32 and 16-bit kernels
            ops = collections.Counter(re.findall(r"^\s*([a-z]+(?:\.[a-z0-9]+)*)", ptx, re.M))
            with_f64 += any("f64" in op for op in ops)
    print(f"{len(compiled)} kernels compiled to PTX for sm_{CC[0]}{CC[1]}")
    print(f"float32/16-bit kernels with float64 arithmetic: {with_f64} (expected {wide}: the WIDEN entries)")
    return 0 if with_f64 == wide else 1


if __name__ == "__main__":
    sys.exit(main())
