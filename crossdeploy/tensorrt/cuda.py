"""The few CUDA runtime calls the TensorRT runner needs, through cuda-python, with errors raised."""

from __future__ import annotations

import ctypes

import numpy as np


def cudart():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python
    return runtime


def check(result):
    """cuda-python returns (error, *values); raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = cudart().cudaGetErrorName(err)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else tuple(values)


class PinnedBuffer:
    """Page-locked host memory seen as a numpy array: copies from it run asynchronously at full bandwidth."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.pointer = check(cudart().cudaMallocHost(self.nbytes))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.pointer)
        self.array = np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.pointer:
            check(cudart().cudaFreeHost(self.pointer))
            self.pointer = 0


class DeviceBuffer:
    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.pointer = check(cudart().cudaMalloc(nbytes))

    def free(self) -> None:
        if self.pointer:
            check(cudart().cudaFree(self.pointer))
            self.pointer = 0
