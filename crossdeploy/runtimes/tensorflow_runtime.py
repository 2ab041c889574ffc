"""TensorFlow SavedModel, called through its serving signature exactly as TF Serving calls it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdeploy.device_info import usable_cores
from crossdeploy.layout import SIGNATURE
from crossdeploy.runtimes.base import Runner, ThreadSettings


class TensorFlowRunner(Runner):
    layout = "NHWC"

    def __init__(
        self,
        saved_model_dir: str | Path,
        name: str = "tf-savedmodel-fp32",
        threads: ThreadSettings | None = None,
        signature: str = SIGNATURE,
    ):
        super().__init__(name, threads)
        self.saved_model_dir = Path(saved_model_dir)
        self.signature = signature

    @property
    def max_in_flight(self) -> int | None:
        # a TensorFlow built with CUDA places the signature on a GPU, which keeps its own queue
        return None if self.is_active and self._tf.config.list_physical_devices("GPU") else usable_cores()

    def _activate_impl(self) -> None:
        from crossdeploy.tensorflow.env import import_tensorflow

        tf = import_tensorflow(self.threads)
        self._tf = tf
        self._loaded = tf.saved_model.load(str(self.saved_model_dir))
        self._fn = self._loaded.signatures[self.signature]
        ((self._input_key, spec),) = self._fn.structured_input_signature[1].items()
        self._input_shape = tuple(spec.shape[1:])
        (self._output_key,) = self._fn.structured_outputs.keys()

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self._fn(**{self._input_key: self._tf.constant(batch)})[self._output_key].numpy()

    def _deactivate_impl(self) -> None:
        del self._fn, self._loaded
