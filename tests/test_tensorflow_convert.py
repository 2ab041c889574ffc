"""onnx2tf -> SavedModel with a serving signature -> TFLite, on the tiny model, with real TensorFlow."""

import os

import numpy as np
import onnx
import pytest

from crossdeploy.onnx.rewrite import pad_maxpools_over_nonnegative, spatial_means_to_global_pools
from crossdeploy.tensorflow.convert import convert_tflite
from crossdeploy.validation.parity import compare_logits
from tests.conftest import TINY_SIZE, run_onnx


def test_maxpool_padding_rewrite_is_exact(tiny_optimized, tmp_path):
    model = onnx.load(str(tiny_optimized[0]))
    assert pad_maxpools_over_nonnegative(model) == 1  # resnet's stem pool
    onnx.checker.check_model(model)
    path = tmp_path / "padded.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(0).standard_normal((3, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
    np.testing.assert_array_equal(run_onnx(path, x), run_onnx(tiny_optimized[0], x))


@pytest.mark.parametrize("size", [15, 16, 17])
def test_ceil_mode_pools_over_concatenated_relus_are_padded_exactly(tmp_path, size):
    """GoogLeNet pools a Concat of Relu branches with ceil_mode: onnx2tf pads the ceil remainder with the
    float minimum, and full-integer TFLite then lost everything (cosine -0.33 on random weights, 0.94 once
    rewritten, as ONNX Runtime's INT8). The rewrite must be exact at every input size, odd ones included."""
    import torch

    from crossdeploy.model.source import export_program
    from crossdeploy.onnx.export import export_onnx

    class Branches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(3, 4, 1)
            self.pool = torch.nn.MaxPool2d(3, 2, ceil_mode=True)
            self.same = torch.nn.MaxPool2d(3, 1, padding=1, ceil_mode=True)
            self.signed = torch.nn.MaxPool2d(2, 2, ceil_mode=True)  # over a signed tensor: must stay as it is

        def forward(self, x):
            merged = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
            return torch.cat([self.same(self.pool(merged)).flatten(1), self.signed(self.a(x)).flatten(1)], 1)

    torch.manual_seed(0)
    torch.export.save(export_program(Branches().eval(), size), tmp_path / "m.pt2")
    export_onnx(tmp_path / "m.pt2", tmp_path / "m.onnx", opset=17, input_size=size)
    model = onnx.load(str(tmp_path / "m.onnx"))
    # the stride-2 pool needs a ceil remainder at even sizes only; the padded one always; the signed one never
    assert pad_maxpools_over_nonnegative(model) == (2 if (size - 3) % 2 else 1)
    onnx.save(model, str(tmp_path / "padded.onnx"))
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    np.testing.assert_array_equal(run_onnx(tmp_path / "padded.onnx", x), run_onnx(tmp_path / "m.onnx", x))


def test_a_1x1_final_map_keeps_the_batch(tmp_path):
    """At 32 px a ResNet's last map is 1x1, where onnx2tf once reduced the mean over the batch axis and
    returned one row per batch; the GlobalAveragePool rewrite keeps every row, exactly."""
    import torch
    import torchvision

    from crossdeploy.model.source import export_program
    from crossdeploy.onnx.export import export_onnx
    from crossdeploy.onnx.optimize import optimize_onnx
    from crossdeploy.tensorflow.convert import onnx_to_keras

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
    ((name, spec),) = signature.structured_input_signature[1].items()
    assert name == "images" and spec.shape.as_list() == [None, TINY_SIZE, TINY_SIZE, 3]
    assert list(signature.structured_outputs) == ["logits"]


def test_saved_model_holds_the_signature_and_weights_not_the_keras_model(tiny_saved_model):
    """Tracking onnx2tf's Keras model made tf.saved_model.save trace and save every layer's call too (the
    planted defect: for ResNet50, 3.8 GB and a minute more); the served signature never needs them."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((tiny_saved_model / "saved_model.pb").read_bytes())
    nodes = saved.meta_graphs[0].object_graph_def.nodes
    keras = [n.user_object.identifier for n in nodes if n.WhichOneof("kind") == "user_object" and "keras" in n.user_object.identifier]
    assert not keras, f"Keras objects saved beside the signature: {sorted(set(keras))}"
    assert any(n.WhichOneof("kind") in ("variable", "constant") for n in nodes)  # the weights are there


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


def test_exact_gelu_reaches_tflite_as_one_op_and_runs_in_int8(tmp_path):
    """torch exports GELU as x * (0.5 * (1 + erf(x / sqrt 2))); TFLite has no Erf, and the pseudo-Erf's
    sign division made full-integer ConvNeXt abort (`div.cc: data[i] != zero_point`). Reordered, onnx2tf
    emits TFLite's GELU: every precision converts and runs, FP32 equal to ONNX Runtime."""
    import torch

    from crossdeploy.model.source import export_program
    from crossdeploy.onnx.export import export_onnx
    from crossdeploy.onnx.rewrite import gelus_in_onnx2tf_order
    from crossdeploy.runtimes.tflite_runtime import TFLiteRunner
    from crossdeploy.tensorflow.convert import convert_to_tensorflow

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.GELU(),
        torch.nn.Conv2d(8, 8, 1),
        torch.nn.GELU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    ).eval()
    torch.export.save(export_program(model, 16), tmp_path / "m.pt2")
    export_onnx(tmp_path / "m.pt2", tmp_path / "m.onnx", opset=17, input_size=16)
    rewritten = onnx.load(str(tmp_path / "m.onnx"))
    assert gelus_in_onnx2tf_order(rewritten) == 2
    onnx.save(rewritten, str(tmp_path / "r.onnx"))
    x = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(tmp_path / "r.onnx", x), run_onnx(tmp_path / "m.onnx", x), rtol=0, atol=1e-6)

    assert convert_to_tensorflow(tmp_path / "m.onnx", tmp_path / "sm" / "1", tmp_path / "tflite", 16, x.transpose(0, 2, 3, 1)) == {}
    reference = run_onnx(tmp_path / "m.onnx", x)
    for precision, cosine in (("fp32", 0.99999), ("int8", 0.9)):
        with TFLiteRunner(tmp_path / "tflite" / f"model.{precision}.tflite", precision) as runner:
            assert compare_logits(reference, runner.infer_all(x.transpose(0, 2, 3, 1), 3))["cosine_min"] > cosine


def test_tensorflow_is_imported_without_keras_3():
    """Plain `import tensorflow` imports Keras 3 (and scikit-learn, IPython) to resolve tf.keras: about 1.3 s in
    every process that imports TensorFlow. import_tensorflow points tf.keras at tf_keras, which onnx2tf builds
    with, so neither is imported; planted: TensorFlow imported first, as the defect did."""
    import subprocess
    import sys

    probe = "import sys; {}; print(sorted(m for m in ('keras', 'sklearn', 'IPython') if m in sys.modules))"
    ours = "from crossdeploy.tensorflow.env import import_tensorflow; import_tensorflow()"
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    loaded = {
        first: subprocess.run([sys.executable, "-c", probe.format(first)], capture_output=True, text=True, env=env, check=True).stdout
        for first in (ours, "import tensorflow")
    }
    assert loaded[ours].strip() == "[]" and "'keras'" in loaded["import tensorflow"], loaded


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


_SAVE_BOTH = """
import json, sys
from pathlib import Path
from crossdeploy.data.preprocessing import Preprocessing
from crossdeploy.serving.signatures import export_with_bytes_signature
from crossdeploy.tensorflow.convert import onnx_to_keras, save_serving_model
onnx_path, out, prep = Path(sys.argv[1]), Path(sys.argv[2]), Preprocessing(**json.loads(sys.argv[3]))
save_serving_model(onnx_to_keras(onnx_path), out / "float", prep.crop_size)
export_with_bytes_signature(out / "float", out / "bytes", prep)
"""


def test_the_same_model_saved_twice_gives_the_same_files(tiny_optimized, tiny_saved_model, tiny_source, tmp_path):
    """The defect: TensorFlow's random fingerprint uuid made every re-run of to_tensorflow and package a new
    artifact for DVC. Each stage saves in a process of its own, as here; planted: a plain
    tf.saved_model.save of the same model differs in fingerprint.pb."""
    import dataclasses
    import json
    import subprocess
    import sys

    from crossdeploy.tensorflow.env import import_tensorflow
    from crossdeploy.tensorflow.saved_model import FINGERPRINT

    prep = json.dumps(dataclasses.asdict(tiny_source[1].preprocessing))
    for run in ("a", "b"):
        subprocess.run(
            [sys.executable, "-c", _SAVE_BOTH, str(tiny_optimized[0]), str(tmp_path / run), prep], check=True, capture_output=True
        )
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    tf = import_tensorflow()
    for run in ("plain-a", "plain-b"):
        model = tf.saved_model.load(str(tiny_saved_model))
        tf.saved_model.save(model, str(tmp_path / run), signatures={"serving_default": model.signatures["serving_default"]})
    assert _files(tmp_path / "plain-a")[FINGERPRINT] != _files(tmp_path / "plain-b")[FINGERPRINT]
    # another model gets another uuid: the fingerprint still tells models apart
    assert _files(tmp_path / "a" / "float")[FINGERPRINT] != _files(tmp_path / "a" / "bytes")[FINGERPRINT]
