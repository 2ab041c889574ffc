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

from crossdeploy.build_failures import ConversionFailed, captured_output, error_summary, onnx2tf_failure
from crossdeploy.layout import INPUT_NAME, OUTPUT_NAME, SAVEDMODEL_VARIANT, SIGNATURE, TFLITE_PRECISIONS, TFLITE_VARIANTS
from crossdeploy.onnx_rewrite import pad_maxpools_over_nonnegative, spatial_means_to_global_pools
from crossdeploy.tensorflow_env import import_tensorflow

ONNX2TF_HINT = (
    "the ONNX Runtime variants are unaffected; try another export.opset, or convert with onnx2tf's "
    "parameter replacement file (https://github.com/PINTO0309/onnx2tf#parameter-replacement)"
)


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
    pad_maxpools_over_nonnegative(model)
    spatial_means_to_global_pools(model)
    with tempfile.TemporaryDirectory() as scratch, _working_directory(Path(scratch)), captured_output() as output:
        prepared = Path(scratch) / "model.onnx"
        onnx.save(model, str(prepared))
        try:
            return onnx2tf.convert(
                input_onnx_file_path=str(prepared),
                output_folder_path=str(Path(scratch) / "onnx2tf"),
                disable_model_save=True,
                non_verbose=True,
            )
        except (Exception, SystemExit) as exc:  # onnx2tf calls sys.exit on some errors
            op_types = {node.name: node.op_type for node in model.graph.node}
            raise onnx2tf_failure(exc, output.getvalue(), op_types, ONNX2TF_HINT) from None


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
    # onnx2tf creates some weights outside Keras layers (RegNet's grouped convolutions), which the
    # SavedModel would refuse as untracked; attaching every variable the traced graph reads tracks them.
    module.graph_variables = list(module.serve.get_concrete_function().variables)
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


def convert_to_tensorflow(
    onnx_path: Path, version_dir: Path, tflite_dir: Path, input_size: int, calibration_nhwc: np.ndarray
) -> dict[str, str]:
    """ONNX -> SavedModel at `version_dir` -> TFLite FP32/FP16/INT8 in `tflite_dir`.

    Returns {variant: why it could not be built}: a converter that cannot handle the architecture
    fails the variants it would have produced, and the caller records them (build_failures).
    """
    tflite_dir.mkdir(parents=True, exist_ok=True)
    try:
        keras_model = onnx_to_keras(onnx_path)
        try:
            save_serving_model(keras_model, version_dir, input_size)
        except Exception as exc:
            raise ConversionFailed(
                f"TensorFlow could not save onnx2tf's model as a SavedModel ({error_summary(exc)}); the ONNX Runtime variants are unaffected"
            ) from None
    except ConversionFailed as exc:
        return {SAVEDMODEL_VARIANT: str(exc), **{name: f"no SavedModel to convert: {exc}" for name in TFLITE_VARIANTS.values()}}
    failures = {}
    for precision, name in TFLITE_VARIANTS.items():
        try:
            with captured_output():
                convert_tflite(version_dir, tflite_dir / f"model.{precision}.tflite", precision, calibration_nhwc)
        except Exception as exc:
            failures[name] = (
                f"TensorFlow's TFLite converter could not convert the SavedModel to {precision} ({error_summary(exc)}); "
                "the SavedModel and the other TFLite variants are unaffected"
            )
    return failures
