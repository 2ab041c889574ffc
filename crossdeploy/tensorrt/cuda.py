"""The few CUDA runtime calls the TensorRT runner needs, through cuda-python, with errors raised."""

from __future__ import annotations

import ctypes
from typing import Callable, Hashable

import numpy as np

from crossdeploy.errors import RuntimeUnavailable

#: CUDA errors that say the machine cannot run CUDA at all: a reason to skip, not a bug
_NO_CUDA = {
    "cudaErrorNoDevice": "no CUDA GPU is visible here",
    "cudaErrorInsufficientDriver": "the NVIDIA driver is missing or older than this cuda-python's CUDA",
}


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
        name = name.decode() if isinstance(name, bytes) else str(name)
        if name in _NO_CUDA:
            raise RuntimeUnavailable(f"CUDA cannot start ({name}): {_NO_CUDA[name]}")
        raise RuntimeError(f"CUDA error {name}")
    if not values:
        return None
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


class GraphReplay:
    """Work enqueued on one stream, replayed as a CUDA graph while its shape stays the one captured.

    A captured graph bakes in the launch parameters of the shape it saw, and an execution context
    enqueued with another shape since then may have changed state the graph reads. So a shape change
    drops the graph: the first call at a new shape runs plainly (TensorRT applies a shape change
    lazily, at its first enqueue, which a capture must not see), the second consecutive call at it
    captures, and later ones replay. Alternating shapes never replay a stale graph; they run plainly.
    """

    def __init__(self, stream):
        self.stream = stream
        self.captures = 0
        self.replays = 0
        self._graph = None
        self._graph_shape: Hashable = None
        self._last_shape: Hashable = None

    def run(self, shape: Hashable, enqueue: Callable[[object], None]) -> None:
        rt = cudart()
        if self._graph is not None and shape == self._graph_shape:
            check(rt.cudaGraphLaunch(self._graph, self.stream))
            self.replays += 1
            return
        self.drop()
        if shape != self._last_shape:
            enqueue(self.stream)
            self._last_shape = shape
            return
        check(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            enqueue(self.stream)
        except BaseException:
            err, graph = rt.cudaStreamEndCapture(self.stream)  # leave capture mode; the partial graph goes
            if int(err) == 0 and graph:
                rt.cudaGraphDestroy(graph)
            raise
        graph = check(rt.cudaStreamEndCapture(self.stream))
        try:
            _, count = check(rt.cudaGraphGetNodes(graph, 0))
            if not count:
                raise RuntimeError("the captured CUDA graph is empty: the work enqueued nothing on the stream")
            self._graph = check(rt.cudaGraphInstantiate(graph, 0))
        finally:
            check(rt.cudaGraphDestroy(graph))
        self._graph_shape = shape
        self.captures += 1
        check(rt.cudaGraphLaunch(self._graph, self.stream))

    def drop(self) -> None:
        if self._graph is not None:
            check(cudart().cudaGraphExecDestroy(self._graph))
            self._graph, self._graph_shape = None, None
