"""TFLite / LiteRT interpreter; quantized inputs and outputs are (de)quantized at the boundary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdeploy.device_info import usable_cores
from crossdeploy.runtimes.base import Runner, ThreadSettings


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # older stacks ship the interpreter inside TensorFlow only
        from crossdeploy.tensorflow.env import import_tensorflow

        tf = import_tensorflow()

        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    return Interpreter, OpResolverType


class TFLiteRunner(Runner):
    layout = "NHWC"
    concurrent_infer = False  # an interpreter holds its tensors; concurrent clients need one each ...

    @property
    def max_instances(self) -> int:
        # ... up to one per core: each already runs on every core, so more only hold more activations
        return usable_cores()

    def __init__(self, model_path: str | Path, name: str, threads: ThreadSettings | None = None):
        super().__init__(name, threads)
        self.model_path = Path(model_path)

    def _activate_impl(self) -> None:
        Interpreter, resolvers = _interpreter_class()
        # TFLite's own default is one thread; every other runtime uses all cores by default, so match them.
        threads = self.threads.intra_op or usable_cores()
        options = {"model_path": str(self.model_path), "num_threads": threads}
        self._interpreter = Interpreter(**options)
        try:
            self._interpreter.allocate_tensors()
        except RuntimeError:
            # XNNPACK declines some full-integer graphs (dynamic-batch reshapes, int8 padding);
            # TFLite's builtin kernels run every op it can convert.
            self._interpreter = Interpreter(**options, experimental_op_resolver_type=resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._input_shape = tuple(int(d) for d in self._input["shape"][1:])
        self._batch = None
        signature = self._input.get("shape_signature")
        if signature is not None and len(signature) and int(signature[0]) > 0:
            # converted at a fixed batch (onnx2tf could not keep it dynamic): resizing would break its reshapes
            self.fixed_batch = int(signature[0])

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter
        if self._batch != len(batch):
            interpreter.resize_tensor_input(self._input["index"], [len(batch), *self._input_shape])
            interpreter.allocate_tensors()
            self._batch = len(batch)
        interpreter.set_tensor(self._input["index"], _quantize(batch, self._input))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(self._output["index"]), self._output)

    def _deactivate_impl(self) -> None:
        del self._interpreter


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale
