"""A TensorRT engine, run as trtexec runs it: pinned host buffers, asynchronous copies and execution on
one CUDA stream, optionally replayed as a CUDA graph; each call records the GPU compute time (CUDA
events around the execution) beside the end-to-end host latency the harness measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdeploy.errors import RuntimeUnavailable
from crossdeploy.runtimes.base import Runner, ThreadSettings


class TensorRTRunner(Runner):
    layout = "NCHW"
    concurrent_infer = False  # an execution context and its stream serve one client at a time

    def __init__(self, engine_path: str | Path, name: str, threads: ThreadSettings | None = None, cuda_graph: bool = False):
        super().__init__(name, threads)
        self.engine_path = Path(engine_path)
        self.cuda_graph = cuda_graph

    def _activate_impl(self) -> None:
        from crossdeploy.tensorrt.engines import usable_engine

        # before importing TensorRT: where it cannot run, the engine's record says why
        engine_path = usable_engine(self.engine_path)
        import tensorrt as trt

        from crossdeploy.tensorrt.build import create_runtime
        from crossdeploy.tensorrt.cuda import DeviceBuffer, GraphReplay, PinnedBuffer, check, cudart

        self._rt = rt = cudart()
        self._check = check
        self._runtime = create_runtime(trt)  # kept: TensorRT wants the runtime to outlive its engines
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise RuntimeUnavailable(f"TensorRT {trt.__version__} cannot load {engine_path} on this GPU; rebuild it here")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        (self._input,) = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        (self._output,) = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        low, _, high = self._engine.get_tensor_profile_shape(self._input, 0)
        self._batch_range = (low[0], high[0])
        self._input_shape = tuple(high[1:])
        self._context.set_input_shape(self._input, tuple(high))
        self._shape = tuple(high)
        out_shape = tuple(self._context.get_tensor_shape(self._output))
        self._host_in = PinnedBuffer(tuple(high), trt.nptype(self._engine.get_tensor_dtype(self._input)))
        self._host_out = PinnedBuffer(out_shape, trt.nptype(self._engine.get_tensor_dtype(self._output)))
        self._dev_in, self._dev_out = DeviceBuffer(self._host_in.nbytes), DeviceBuffer(self._host_out.nbytes)
        self._context.set_tensor_address(self._input, self._dev_in.pointer)
        self._context.set_tensor_address(self._output, self._dev_out.pointer)
        self._stream = check(rt.cudaStreamCreate())
        self._start, self._end = check(rt.cudaEventCreate()), check(rt.cudaEventCreate())
        # one graph per context, for the shape it was captured with (GraphReplay says why)
        self._replay = GraphReplay(self._stream) if self.cuda_graph else None

    def _enqueue(self, stream) -> None:
        # False, not an exception, is how TensorRT says it enqueued nothing: the outputs would be stale
        if not self._context.execute_async_v3(stream):
            raise RuntimeError(f"{self.name}: TensorRT could not enqueue the engine (execute_async_v3 returned False); see its log")

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        rt, check = self._rt, self._check
        n = len(batch)
        low, high = self._batch_range
        if not low <= n <= high:
            raise ValueError(f"{self.name}: the engine's profile takes batches of {low} to {high}, got {n} (tensorrt.batch).")
        in_bytes = self._host_in.nbytes // high * n
        out_bytes = self._host_out.nbytes // high * n
        np.copyto(self._host_in.array[:n], batch, casting="same_kind")
        if batch.shape != self._shape:
            if not self._context.set_input_shape(self._input, batch.shape):
                raise RuntimeError(f"{self.name}: TensorRT refused the input shape {batch.shape}")
            self._shape = batch.shape
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(rt.cudaMemcpyAsync(self._dev_in.pointer, self._host_in.pointer, in_bytes, h2d, self._stream))
        check(rt.cudaEventRecord(self._start, self._stream))
        if self._replay is None:
            self._enqueue(self._stream)
        else:
            self._replay.run(n, self._enqueue)
        check(rt.cudaEventRecord(self._end, self._stream))
        check(rt.cudaMemcpyAsync(self._host_out.pointer, self._dev_out.pointer, out_bytes, d2h, self._stream))
        check(rt.cudaStreamSynchronize(self._stream))
        self.device_ms.append(float(check(rt.cudaEventElapsedTime(self._start, self._end))))
        return np.array(self._host_out.array[:n], dtype=np.float32)

    def _deactivate_impl(self) -> None:
        rt, check = self._rt, self._check
        if self._replay is not None:
            self._replay.drop()
        check(rt.cudaEventDestroy(self._start))
        check(rt.cudaEventDestroy(self._end))
        check(rt.cudaStreamDestroy(self._stream))
        for buffer in (self._host_in, self._host_out, self._dev_in, self._dev_out):
            buffer.free()
        del self._context, self._engine, self._runtime
