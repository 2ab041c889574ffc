"""ONNX -> TensorFlow SavedModel (onnx2tf, NHWC) laid out for TF Serving, and TFLite FP32/FP16/INT8.

onnx2tf turns the NCHW ONNX graph into an NHWC Keras model. We do not ship its SavedModel as is:
the model is wrapped in a `serving_default` signature with stable names (`images` in, `logits`
out), which is what TF Serving clients address, and written under `<base>/<name>/<version>/`, the
model base path TF Serving expects. TFLite models are converted from that SavedModel with
TensorFlow's converter; INT8 is full-integer and calibrated on the pipeline's calibration images.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from crossdeploy.layout import INPUT_NAME, OUTPUT_NAME, SIGNATURE
from crossdeploy.onnx_rewrite import pad_maxpools_after_relu, spatial_means_to_global_pools
from crossdeploy.tensorflow_env import import_tensorflow

TFLITE_PRECISIONS = ("fp32", "fp16", "int8")


@contextlib.contextmanager
def _working_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def onnx_to_keras(onnx_path: Path):
    """Convert with onnx2tf in a scratch directory, so nothing lands outside our declared outputs.

    MaxPool padding after a Relu is made explicit first (see onnx_rewrite) so INT8 TFLite calibrates, , and
    spatial means become GlobalAveragePool, which onnx2tf converts right when the last map is 1x1.
    The ONNX batch axis is dynamic, which keeps onnx2tf from fetching its own sample images.
    """
    import onnx

    import_tensorflow()
    import onnx2tf

    model = onnx.load(str(onnx_path))
    pad_maxpools_after_relu(model)
    spatial_means_to_global_pools(model)
    with tempfile.TemporaryDirectory() as scratch, _working_directory(Path(scratch)):
        prepared = Path(scratch) / "model.onnx"
        onnx.save(model, str(prepared))
        return onnx2tf.convert(
            input_onnx_file_path=str(prepared),
            output_folder_path=str(Path(scratch) / "onnx2tf"),
            disable_model_save=True,
            non_verbose=True,
        )


def save_serving_model(keras_model, export_dir: Path, input_size: int) -> None:
    tf = import_tensorflow()

    class ServingModule(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name=INPUT_NAME)])
        def serve(self, images):
            return {OUTPUT_NAME: self.model(images, training=False)}

    module = ServingModule(keras_model)
    tf.saved_model.save(module, str(export_dir), signatures={SIGNATURE: module.serve})


def convert_tflite(saved_model_dir: Path, output: Path, precision: str, calibration_nhwc: np.ndarray | None = None) -> None:
    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE])
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if calibration_nhwc is None or not len(calibration_nhwc):
            raise ValueError("INT8 TFLite conversion needs calibration images")

        def representative_dataset():
            for image in calibration_nhwc:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        # Full-integer: every op in int8, so the model runs on integer-only accelerators;
        # float input/output keep the interface identical to the other variants.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif precision != "fp32":
        raise ValueError(f"unknown TFLite precision {precision}")
    output.write_bytes(converter.convert())
