"""ONNX Runtime: the CPU execution provider, or CUDA / TensorRT providers where onnxruntime-gpu and a GPU exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdeploy.runtimes.base import Runner, RuntimeUnavailable, ThreadSettings


class OnnxRuntimeRunner(Runner):
    layout = "NCHW"

    def __init__(
        self,
        model_path: str | Path,
        name: str,
        threads: ThreadSettings | None = None,
        providers: tuple[str | tuple[str, dict], ...] = ("CPUExecutionProvider",),
    ):
        super().__init__(name, threads)
        self.model_path = Path(model_path)
        self.providers = providers

    def _activate_impl(self) -> None:
        import onnxruntime as ort

        names = [p if isinstance(p, str) else p[0] for p in self.providers]
        missing = [p for p in names if p not in ort.get_available_providers()]
        if missing:
            raise RuntimeUnavailable(
                f"ONNX Runtime here has no {', '.join(missing)} (available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu on a machine with a GPU."
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads.intra_op
        options.inter_op_num_threads = self.threads.inter_op
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(self.model_path), options, providers=list(self.providers))
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self._output_name = self._session.get_outputs()[0].name
        if all(isinstance(d, int) for d in model_input.shape[1:]):
            self._input_shape = tuple(model_input.shape[1:])
        if isinstance(model_input.shape[0], int):
            self.fixed_batch = model_input.shape[0]

    @property
    def session(self):
        """The ONNX Runtime session, for callers that measure a bare `session.run` against this wrapper."""
        return self._session

    @property
    def input_name(self) -> str:
        return self._input_name

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input_name: batch})[0]

    def _deactivate_impl(self) -> None:
        del self._session
