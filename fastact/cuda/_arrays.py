"""Caller's GPU arrays in, caller's array type out, without copying.

:func:`as_device` reads any CUDA Array Interface object (numba device arrays, CuPy
arrays, torch CUDA tensors -- the latter through their own fast accessors) into a
:class:`DArray`: pointer, shape, byte strides, dtype, read-only flag and library.
:func:`empty_like` allocates with the caller's library, :func:`view` makes the
strided numba view a kernel is launched on, and :func:`resolve_stream` finds the
stream to run on: ``stream=`` if given, else the caller's library's current stream.

Under numba's simulator a "device pointer" is a host pointer and the views are
numpy arrays wrapped as the simulator's device arrays; everything else is shared.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numba import config, cuda

SIMULATOR = bool(config.ENABLE_CUDASIM)

if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
else:  # pragma: no cover - needs a GPU
    FakeCUDAArray = ()

_TORCH_DTYPES = {
    "torch.float32": np.dtype(np.float32),
    "torch.float64": np.dtype(np.float64),
    "torch.float16": np.dtype(np.float16),
}
_TORCH_INTS = {"torch.int64": np.dtype(np.int64), "torch.int32": np.dtype(np.int32)}
_U16 = np.dtype(np.uint16)


def is_bfloat16(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is ml_dtypes' bfloat16 (by name, as fastact._half.is_bfloat16)."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


def _bfloat16() -> np.dtype | None:
    """ml_dtypes' bfloat16, or None where ml_dtypes is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


BFLOAT16 = _bfloat16()
if BFLOAT16 is not None:
    _TORCH_DTYPES["torch.bfloat16"] = BFLOAT16


def kernel_view_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype kernels see an array of ``dtype`` as: bfloat16 as uint16 (its bits)."""
    return _U16 if is_bfloat16(dtype) else dtype


class DArray:
    """A device array as the kernels see it; ``obj`` is what the caller passed."""

    __slots__ = ("dtype", "lib", "obj", "ptr", "readonly", "shape", "size", "stream", "strides")

    def __init__(self, obj, lib, ptr, shape, strides, dtype, readonly=False, stream=None):
        self.obj = obj
        self.lib = lib
        self.ptr = ptr
        self.shape = tuple(shape)
        self.dtype = dtype
        self.strides = tuple(strides) if strides is not None else c_strides(self.shape, dtype.itemsize)
        self.readonly = readonly
        self.stream = stream
        self.size = math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def contiguous(self, order: str = "C") -> bool:
        shape, strides = (
            (self.shape, self.strides) if order == "C" else (self.shape[::-1], self.strides[::-1])
        )
        expected = self.dtype.itemsize
        for n, s in zip(reversed(shape), reversed(strides)):
            if n != 1 and s != expected:
                return False
            expected *= n
        return True


def c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _host_error(name: str, func: str) -> TypeError:
    return TypeError(
        f"{name} is a host (numpy) array: use fastact.{func} for host arrays, "
        f"or copy it to the GPU first (numba.cuda.to_device)"
    )


def _torch(t, name: str, func: str, dtypes: dict) -> DArray:
    if not t.is_cuda:
        raise TypeError(
            f"{name} is a CPU torch tensor: use fastact.{func} on x.numpy(), or move it with .cuda()"
        )
    dtype = dtypes.get(str(t.dtype))
    if dtype is None:
        if str(t.dtype) == "torch.bfloat16" and any(d.itemsize == 2 for d in dtypes.values()):
            raise TypeError(
                f"{name} is a bfloat16 tensor: fastact needs ml_dtypes for bfloat16 (pip install ml_dtypes)"
            )
        kinds = next((k for k, d in _KINDS.values() if d is dtypes), _FLOATS)
        raise TypeError(f"{name} must be {kinds}, got dtype {t.dtype}")
    torch = sys.modules["torch"]
    if t.get_device() != torch.cuda.current_device():
        raise ValueError(
            f"{name} is on {t.device} but the current device is cuda:{torch.cuda.current_device()}; "
            f"call inside `with torch.cuda.device({name}.device):`"
        )
    itemsize = dtype.itemsize
    return DArray(t, "torch", t.data_ptr(), t.shape, [s * itemsize for s in t.stride()], dtype)


def _from_interface(obj, desc: dict, name: str, lib: str) -> DArray:
    if desc.get("mask") is not None:
        raise TypeError(f"{name} is a masked array; fastact.cuda needs plain arrays")
    try:
        dtype = np.dtype(desc["typestr"])
    except TypeError as exc:
        raise TypeError(f"{name} has an unsupported dtype {desc['typestr']!r}") from exc
    if dtype.kind == "V" and is_bfloat16(getattr(obj, "dtype", dtype)):  # the interface says "<V2"
        dtype = obj.dtype
    ptr, readonly = desc["data"]
    return DArray(
        obj, lib, ptr, desc["shape"], desc.get("strides"), dtype, bool(readonly), desc.get("stream")
    )


def _library(obj) -> str:
    module = type(obj).__module__
    if module.startswith("cupy"):
        return "cupy"
    if module.startswith("numba"):
        return "numba"
    return "cai"


_FLOATS = "a float32 or float64 array (or float16, or ml_dtypes' bfloat16)"  # the CPU's message
_KINDS = {
    "bool": ("a boolean array", {"torch.bool": np.dtype(np.bool_)}),
    "float": (_FLOATS, _TORCH_DTYPES),
    "int": ("an int32 or int64 array", _TORCH_INTS),
    "any": (
        "an int32, int64, float32 or float64 array (or float16, or ml_dtypes' bfloat16)",
        {**_TORCH_DTYPES, **_TORCH_INTS},
    ),
}


def _accepts(dtype: np.dtype, dtypes: dict) -> bool:
    return dtype in dtypes.values() or (is_bfloat16(dtype) and np.dtype(np.float16) in dtypes.values())


def as_device(obj, name: str, func: str, write: bool = False, kind: str = "float") -> DArray:
    """``obj`` as a :class:`DArray`, checked: float32/float64/float16/bfloat16 (``kind``
    "int": int32/int64, "any": either), and writeable without broadcast strides when ``write``."""
    if isinstance(obj, np.ndarray):
        raise _host_error(name, func)
    kinds, dtypes = _KINDS[kind]
    if type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr"):
        a = _torch(obj, name, func, dtypes)
        if write and obj.requires_grad:
            raise ValueError(
                f"{name} requires grad; writing into it would bypass autograd: pass {name}.detach()"
            )
    elif SIMULATOR and isinstance(obj, FakeCUDAArray):
        host = obj._ary
        a = DArray(
            obj, "numba", host.__array_interface__["data"][0], host.shape, host.strides, host.dtype,
            not host.flags.writeable,
        )  # fmt: skip
    else:
        desc = getattr(obj, "__cuda_array_interface__", None)
        if desc is None:
            raise TypeError(
                f"{name} must be a CUDA array (numba device array, CuPy array, torch CUDA tensor or any "
                f"object with __cuda_array_interface__), got {type(obj).__name__}"
            )
        a = _from_interface(obj, desc, name, _library(obj))
    if not _accepts(a.dtype, dtypes):
        raise TypeError(f"{name} must be {kinds}, got dtype {a.dtype}")
    if write:
        if a.readonly:
            raise ValueError(f"{name} is read-only; in-place calls need a writeable array")
        if a.size > 1 and any(s == 0 and n > 1 for n, s in zip(a.shape, a.strides)):
            raise ValueError(f"{name} has a zero stride (a broadcast view); it cannot be written in place")
    return a


def _order(a: DArray) -> str:
    return "F" if a.ndim > 1 and a.contiguous("F") and not a.contiguous("C") else "C"


def empty(shape: tuple[int, ...], dtype: np.dtype, like: DArray, stream) -> DArray:
    """A new C-contiguous array allocated by ``like``'s library (numba for unknown ones)."""
    if like.lib == "torch":
        torch = sys.modules["torch"]
        t = torch.empty(shape, dtype=getattr(torch, dtype.name), device=like.obj.device)  # bfloat16 too
        return _torch(t, "out", "", {str(t.dtype): dtype})
    if like.lib == "cupy":
        cupy = sys.modules["cupy"]
        a = cupy.empty(shape, dtype=dtype)
        return _from_interface(a, a.__cuda_array_interface__, "out", "cupy")
    return _numba_empty(shape, dtype, "C", stream)


def empty_like(a: DArray, stream) -> DArray:
    """A new array like ``a`` (same shape, dtype and memory order), from ``a``'s library."""
    if a.lib == "torch":
        t = sys.modules["torch"].empty_like(a.obj)
        return _torch(t, "out", "", {str(t.dtype): a.dtype})
    if a.lib == "cupy":
        c = sys.modules["cupy"].empty_like(a.obj)
        return _from_interface(c, c.__cuda_array_interface__, "out", "cupy")
    return _numba_empty(a.shape, a.dtype, _order(a), stream)


def _numba_empty(shape, dtype, order, stream) -> DArray:
    if SIMULATOR:
        d = cuda.device_array(shape=shape, dtype=dtype, order=order)
        host = d._ary
        return DArray(d, "numba", host.__array_interface__["data"][0], host.shape, host.strides, host.dtype)
    d = cuda.device_array(shape, dtype=dtype, order=order, stream=stream)  # pragma: no cover
    a = _from_interface(d, d.__cuda_array_interface__, "out", "numba")  # pragma: no cover
    a.dtype = np.dtype(dtype)  # pragma: no cover - bfloat16's interface typestr is "<V2"
    return a  # pragma: no cover


class _HostView:
    """Simulator only: a numpy view of "device" memory, kept alive with its owner."""

    def __init__(self, desc: dict, owner) -> None:
        self.__array_interface__ = desc
        self.owner = owner


_views: dict[tuple, object] = {}


def view(a: DArray, shape: tuple[int, ...], strides: tuple[int, ...], offset: int = 0):
    """A numba device array over ``a``'s memory with the given shape and byte strides.

    On a GPU the views are cached by (pointer, shape, strides, dtype): building one
    costs microseconds, and a training loop passes the same buffers again and again
    (caching allocators hand back the same blocks). A view owns nothing and is only
    used while the caller's array at that address is alive, so a stale entry is
    harmless.
    """
    ptr, shape, strides = a.ptr + offset, tuple(shape), tuple(strides)
    typestr = kernel_view_dtype(a.dtype).str
    desc = {"shape": shape, "strides": strides, "typestr": typestr, "data": (ptr, False), "version": 3}
    if SIMULATOR:
        return FakeCUDAArray(np.asarray(_HostView(desc, a.obj)))
    key = (ptr, shape, strides, a.dtype.char)  # pragma: no cover - needs a GPU
    v = _views.get(key)
    if v is None:
        v = cuda.from_cuda_array_interface(desc, owner=None, sync=False)
        if len(_views) > 1024:
            _views.clear()
        _views[key] = v
    return v


def flat(a: DArray):
    """A 1-d view of a C- or F-contiguous array, in memory order."""
    if a.ndim == 1 and a.lib == "numba" and not is_bfloat16(a.dtype):
        return a.obj
    return view(a, (a.size,), (a.dtype.itemsize,))


# --- streams ------------------------------------------------------------------------

_streams: dict[int, object] = {}


def _numba_stream(handle: int):
    if handle == 0:
        return 0
    stream = _streams.get(handle)
    if stream is None:
        if handle == 1:
            stream = cuda.legacy_default_stream()
        elif handle == 2:
            stream = cuda.per_thread_default_stream()
        else:
            stream = cuda.external_stream(handle)
        if len(_streams) > 64:
            _streams.clear()
        _streams[handle] = stream
    return stream


def _handle(stream) -> int | object:
    """An integer stream handle from ``stream=``, or a numba stream as it is."""
    if isinstance(stream, (int, np.integer)) and not isinstance(stream, bool):
        return int(stream)
    if type(stream).__module__.startswith("numba") and hasattr(stream, "handle"):
        return stream
    for attribute in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        value = getattr(stream, attribute, None)
        if isinstance(value, int):
            return value
    if hasattr(stream, "__cuda_stream__"):
        return int(stream.__cuda_stream__()[1])
    raise TypeError(
        "stream must be a numba stream, a torch or CuPy stream, an object with __cuda_stream__, "
        f"or an integer handle, got {type(stream).__name__}"
    )


def check_stream(stream) -> None:
    """Raise TypeError now (before anything is written) for an unusable ``stream=``."""
    if stream is not None:
        _handle(stream)


def resolve_stream(stream, a: DArray):
    """The numba stream to launch on: ``stream=``, else the current stream of ``a``'s library."""
    if SIMULATOR:
        return 0  # the simulator runs everything synchronously
    if stream is not None:  # pragma: no cover - needs a GPU
        handle = _handle(stream)
        return handle if not isinstance(handle, int) else _numba_stream(handle)
    if a.lib == "torch":  # pragma: no cover - the tensor is on the current device (checked)
        return _numba_stream(sys.modules["torch"].cuda.current_stream().cuda_stream)
    if a.lib == "cupy":  # pragma: no cover
        return _numba_stream(sys.modules["cupy"].cuda.get_current_stream().ptr)
    if a.lib == "numba":  # pragma: no cover
        return getattr(a.obj, "stream", 0) or 0
    return _numba_stream(a.stream or 0)  # pragma: no cover
