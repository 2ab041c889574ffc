"""ONNX -> TensorFlow SavedModel (onnx2tf, NHWC) laid out for TF Serving, and TFLite FP32/FP16/INT8.

onnx2tf turns the NCHW ONNX graph into an NHWC Keras model. We do not ship its SavedModel as is:
the model is wrapped in a `serving_default` signature with stable names (`images` in, `logits`
out), which is what TF Serving clients address, and written under `<base>/<name>/<version>/`, the
model base path TF Serving expects. TFLite models are converted from that SavedModel with
TensorFlow's converter; INT8 is full-integer and calibrated on the pipeline's calibration images.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import signal
import tempfile
from pathlib import Path

import numpy as np

from crossdeploy.build_failures import ConversionFailed, captured_output, error_summary, onnx2tf_failure
from crossdeploy.layout import INPUT_NAME, OUTPUT_NAME, SAVEDMODEL_VARIANT, SIGNATURE, TFLITE_VARIANTS
from crossdeploy.onnx.rewrite import gelus_in_onnx2tf_order, pad_maxpools_over_nonnegative, spatial_means_to_global_pools
from crossdeploy.tensorflow.env import import_tensorflow
from crossdeploy.tensorflow.saved_model import save_saved_model

ONNX2TF_HINT = (
    "the ONNX Runtime variants are unaffected; try another export.opset, or convert with onnx2tf's "
    "parameter replacement file (https://github.com/PINTO0309/onnx2tf#parameter-replacement)"
)


#: onnx2tf fetches this file of sample images from the network when the batch is fixed, unless it is in
#: the working directory; ours is seeded noise (onnx2tf only runs it through both models to compare them)
_ONNX2TF_SAMPLES = "calibration_image_sample_data_20x128x128x3_float32.npy"
#: the batch onnx2tf converts at when it cannot keep the batch dynamic
FIXED_BATCH = 1


#: a parameter replacement file that replaces nothing: given any file, onnx2tf skips its own automatic search
#: for one after a conversion error (an exhaustive search of transpositions that took ShuffleNet's dynamic
#: batch 3.5 minutes on two cores and still failed); our answer to that error is the fixed-batch attempt
_NO_REPLACEMENTS = "no_replacements.json"


def _onnx2tf(prepared: Path, op_types: set[str]):
    import onnx2tf

    replacements = prepared.parent / _NO_REPLACEMENTS
    replacements.write_text('{"format_version": 1, "operations": []}\n')
    return onnx2tf.convert(
        input_onnx_file_path=str(prepared),
        output_folder_path=str(prepared.parent / "onnx2tf"),
        disable_model_save=True,
        non_verbose=True,
        param_replacement_file=str(replacements),
        # TFLite has no builtin Erf: an Erf outside a GELU is built from builtin ops by onnx2tf's pseudo-Erf
        # (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7; its sign division cannot run in INT8)
        replace_to_pseudo_operators=["erf"] if "Erf" in op_types else [],  # onnx2tf matches them lowercased
    )


def _at_fixed_batch(model, batch: int):
    """The model with its batch axis fixed and the shape arithmetic that hung on it folded into
    constants by onnxslim: what onnx2tf cannot follow (ConvNeXt's and ViT's batch-sized ranges and
    concatenations) becomes plain constants."""
    import onnxslim

    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    shape = ",".join(str(d) for d in [batch, *dims[1:]])
    return onnxslim.slim(model, input_shapes=[f"{model.graph.input[0].name}:{shape}"])


def onnx_to_keras(onnx_path: Path):
    """Convert with onnx2tf in a scratch directory, so nothing lands outside our declared outputs.

    MaxPool padding over non-negative tensors is made explicit first (see onnx/rewrite.py) so INT8 TFLite
    calibrates, spatial means become GlobalAveragePool, which onnx2tf converts right when the last map
    is 1x1, and exact GELUs are put in the order onnx2tf turns into one GELU op. onnx2tf first converts
    the model with its dynamic batch axis; where it cannot (ConvNeXt and ViT compute shapes from the
    batch size), it converts the model at a fixed batch of
    1 (_at_fixed_batch), and save_serving_model restores the dynamic batch. Raises ConversionFailed
    with the first attempt's error when neither converts.
    """
    import onnx

    import_tensorflow()
    model = onnx.load(str(onnx_path))
    pad_maxpools_over_nonnegative(model)
    spatial_means_to_global_pools(model)
    gelus_in_onnx2tf_order(model)
    op_types = {node.name: node.op_type for node in model.graph.node}
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        np.save(Path(scratch) / _ONNX2TF_SAMPLES, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
        first = None
        for attempt, prepare in (("dynamic", lambda: model), ("fixed", lambda: _at_fixed_batch(model, FIXED_BATCH))):
            prepared = Path(scratch) / attempt / "model.onnx"
            prepared.parent.mkdir()
            with captured_output() as output:
                try:
                    onnx.save(prepare(), str(prepared))
                    return _onnx2tf(prepared, set(op_types.values()))
                except (Exception, SystemExit) as exc:  # onnx2tf calls sys.exit on some errors
                    first = first or onnx2tf_failure(exc, output.getvalue(), op_types, ONNX2TF_HINT)
        raise first


def fixed_batch(keras_model) -> int | None:
    """The batch size the converted model was built for, or None when it takes any."""
    return keras_model.inputs[0].shape[0]


def _serving_module(keras_model, input_size: int, batch: int | None):
    tf = import_tensorflow()
    fixed = fixed_batch(keras_model)

    # The Keras model is read through the closure, never an attribute: tf.saved_model.save would then
    # also save the Keras model itself, tracing and serializing every layer's call (for ResNet50 it took
    # 3.8 GB and a minute on top of onnx2tf's 1.7 GB). Only the serving signature is ever loaded.
    class ServingModule(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([batch, input_size, input_size, 3], tf.float32, name=INPUT_NAME)])
        def serve(self, images):
            if fixed is None or batch == fixed:
                return {OUTPUT_NAME: keras_model(images, training=False)}
            # a model converted at a fixed batch of 1 serves any batch one image at a time
            logits = tf.map_fn(
                lambda image: keras_model(image[None], training=False)[0],
                images,
                fn_output_signature=tf.TensorSpec(keras_model.outputs[0].shape[1:], tf.float32),
            )
            return {OUTPUT_NAME: logits}

    module = ServingModule()
    # Every variable the traced graph reads (onnx2tf creates some outside Keras layers, RegNet's grouped
    # convolutions) is attached, so the SavedModel holds the weights without holding the Keras model.
    module.graph_variables = list(module.serve.get_concrete_function().variables)
    return module


def save_serving_model(keras_model, export_dir: Path, input_size: int, batch: int | None = None) -> None:
    """The `serving_default` signature (`images` NHWC -> `logits`) at `batch` (None: any), under TF Serving's layout."""
    tf = import_tensorflow()
    module = _serving_module(keras_model, input_size, batch)
    save_saved_model(tf, module, export_dir, {SIGNATURE: module.serve})


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
                f"TensorFlow could not save onnx2tf's model as a SavedModel ({error_summary(exc)}); the ONNX Runtime "
                "variants are unaffected"
            ) from None
    except ConversionFailed as exc:
        return {SAVEDMODEL_VARIANT: str(exc), **{name: f"no SavedModel to convert: {exc}" for name in TFLITE_VARIANTS.values()}}
    failures = {}
    with tempfile.TemporaryDirectory() as scratch:
        source = version_dir
        if fixed_batch(keras_model) is not None:
            # a loop over the batch would not quantize to integers: TFLite gets the model at its fixed batch
            source = Path(scratch) / "fixed-batch"
            save_serving_model(keras_model, source, input_size, fixed_batch(keras_model))
        for precision, name in TFLITE_VARIANTS.items():
            try:
                with captured_output():
                    convert_tflite(source, tflite_dir / f"model.{precision}.tflite", precision, calibration_nhwc)
            except Exception as exc:
                failures[name] = (
                    f"TensorFlow's TFLite converter could not convert the SavedModel to {precision} ({error_summary(exc)}); "
                    "the SavedModel and the other TFLite variants are unaffected"
                )
    return failures


def _convert_in_child(result: Path, *args) -> None:
    result.write_text(json.dumps(convert_to_tensorflow(*args)))


def convert_to_tensorflow_isolated(
    onnx_path: Path, version_dir: Path, tflite_dir: Path, input_size: int, calibration_nhwc: np.ndarray
) -> dict[str, str]:
    """convert_to_tensorflow in a child process: onnx2tf and TensorFlow's converters are native code that
    can crash the process (MaxViT), and a crash must fail the variants being built, not the pipeline."""
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "failures.json"
        child = multiprocessing.get_context("spawn").Process(
            target=_convert_in_child, args=(result, onnx_path, version_dir, tflite_dir, input_size, calibration_nhwc)
        )
        child.start()
        child.join()
        if child.exitcode == 0:
            return json.loads(result.read_text())
    if child.exitcode is None or child.exitcode > 0:
        raise RuntimeError(f"the TensorFlow conversion process failed (exit code {child.exitcode}); its error is above")
    crash = f"crashed with {signal.Signals(-child.exitcode).name}"
    if not (version_dir / "saved_model.pb").is_file():
        reason = f"onnx2tf or TensorFlow {crash} converting the model; the ONNX Runtime variants are unaffected"
        return {SAVEDMODEL_VARIANT: reason, **{name: f"no SavedModel to convert: {reason}" for name in TFLITE_VARIANTS.values()}}
    return {
        name: f"TensorFlow's TFLite converter {crash}; the SavedModel is unaffected"
        for precision, name in TFLITE_VARIANTS.items()
        if not (tflite_dir / f"model.{precision}.tflite").is_file()
    }
