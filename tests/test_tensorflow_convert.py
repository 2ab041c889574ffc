"""onnx2tf -> SavedModel with a serving signature -> TFLite, on the tiny model, with real TensorFlow."""

import numpy as np
import onnx
import pytest

from crossdeploy.onnx_rewrite import pad_maxpools_after_relu, spatial_means_to_global_pools
from crossdeploy.parity import compare_logits
from crossdeploy.tensorflow_convert import convert_tflite
from tests.conftest import TINY_SIZE, run_onnx


def test_maxpool_padding_rewrite_is_exact(tiny_optimized, tmp_path):
    model = onnx.load(str(tiny_optimized[0]))
    assert pad_maxpools_after_relu(model) == 1  # resnet's stem pool
    onnx.checker.check_model(model)
    path = tmp_path / "padded.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(0).standard_normal((3, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
    np.testing.assert_array_equal(run_onnx(path, x), run_onnx(tiny_optimized[0], x))


def test_a_1x1_final_map_keeps_the_batch(tmp_path):
    """At 32 px a ResNet's last map is 1x1, where onnx2tf once reduced the mean over the batch axis and
    returned one row per batch; the GlobalAveragePool rewrite keeps every row, exactly."""
    import torch
    import torchvision

    from crossdeploy.onnx_export import export_onnx
    from crossdeploy.onnx_optimize import optimize_onnx
    from crossdeploy.source_model import export_program
    from crossdeploy.tensorflow_convert import onnx_to_keras

    torch.manual_seed(0)
    torch.export.save(export_program(torchvision.models.resnet18(num_classes=10).eval(), 32), tmp_path / "model.pt2")
    export_onnx(tmp_path / "model.pt2", tmp_path / "model.onnx", opset=17, input_size=32)
    optimize_onnx(tmp_path / "model.onnx", tmp_path / "model.optimized.onnx")
    model = onnx.load(str(tmp_path / "model.optimized.onnx"))
    assert spatial_means_to_global_pools(model) == 1
    rewritten = tmp_path / "rewritten.onnx"
    onnx.save(model, str(rewritten))
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    expected = run_onnx(tmp_path / "model.optimized.onnx", x)
    np.testing.assert_allclose(run_onnx(rewritten, x), expected, rtol=1e-5, atol=1e-5)
    logits = onnx_to_keras(tmp_path / "model.optimized.onnx")(x.transpose(0, 2, 3, 1)).numpy()
    assert logits.shape == (3, 10)
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_saved_model_has_a_named_nhwc_serving_signature(tiny_saved_model):
    import tensorflow as tf

    signature = tf.saved_model.load(str(tiny_saved_model)).signatures["serving_default"]
    (name, spec), = signature.structured_input_signature[1].items()
    assert name == "images" and spec.shape.as_list() == [None, TINY_SIZE, TINY_SIZE, 3]
    assert list(signature.structured_outputs) == ["logits"]
    assert (tiny_saved_model / "saved_model.pb").is_file() and tiny_saved_model.name == "1"


def test_saved_model_matches_onnx(tiny_saved_model, tiny_optimized, tiny_images):
    from crossdeploy.runtimes.tensorflow_runtime import TensorFlowRunner

    images = tiny_images[1]
    with TensorFlowRunner(tiny_saved_model) as runner:
        logits = runner.infer_all(images.tensors("NHWC"), 4)
    metrics = compare_logits(run_onnx(tiny_optimized[0], images.tensors("NCHW")), logits)
    assert metrics["max_abs_err_rel"] < 1e-4 and metrics["top1_agreement"] == 1.0


# random weights: FP16 and INT8 rounding is amplified (INT8 cosine about 0.96); test_negative_controls
# judges INT8 at the real thresholds on a trained model
@pytest.mark.parametrize("precision,min_cosine", [("fp32", 0.99999), ("fp16", 0.995), ("int8", 0.9)])
def test_tflite_variants_run_at_any_batch(tiny_saved_model, tiny_images, tiny_optimized, tmp_path, precision, min_cosine):
    from crossdeploy.runtimes.tflite_runtime import TFLiteRunner

    calibration, evaluation = tiny_images
    path = tmp_path / f"model.{precision}.tflite"
    convert_tflite(tiny_saved_model, path, precision, calibration.tensors("NHWC"))
    with TFLiteRunner(path, precision) as runner:
        logits = np.concatenate([runner.infer(evaluation.tensors("NHWC")[:3]), runner.infer(evaluation.tensors("NHWC")[3:])])
    metrics = compare_logits(run_onnx(tiny_optimized[0], evaluation.tensors("NCHW")), logits)
    assert metrics["cosine_min"] >= min_cosine
