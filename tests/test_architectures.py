"""Any torchvision classifier: small models of several families through every CPU conversion, and a
converter that cannot handle a model failing its own variants, not the pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from crossdeploy.compose import compose
from crossdeploy.layout import SAVEDMODEL_VARIANT, SERVED, TFLITE_VARIANTS
from tests.conftest import ROOT

#: one small model per family, each with what once broke it: ShuffleNet's channel Split (no ONNX
#: version adapter below opset 18), RegNet's grouped convolutions (weights onnx2tf left untracked),
#: GoogLeNet's ceil-mode pools over concatenated Relus (full-integer TFLite lost everything),
#: MobileNetV3's hard-swish and squeeze-excitation
FAMILIES = ["shufflenet_v2_x0_5", "regnet_y_400mf", "googlenet", "mobilenet_v3_small"]
SIZE = 64


def _variants(root: Path, name: str):
    from crossdeploy.layout import trained_paths
    from crossdeploy.variants import pipeline_variants

    params = {
        "paths": trained_paths(root),
        "model": {"name": name},
        "to_tensorflow": {"version": 1},
        "tensorrt": {"cuda_graph": False, "batch": {"min": 1, "opt": 4, "max": 8}},
    }
    cpu = {
        "torch-fp32",
        "onnxruntime-fp32",
        "onnxruntime-fp16",
        "onnxruntime-int8",
        "onnxruntime-int8-trt",
        SAVEDMODEL_VARIANT,
        *TFLITE_VARIANTS.values(),
    }
    return [v for v in pipeline_variants(params) if v.name in cpu]


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAMILIES)
def test_each_family_converts_and_validates(arch, tmp_path):
    from crossdeploy.layout import saved_model_version_dir
    from crossdeploy.onnx.fp16 import convert_fp16
    from crossdeploy.onnx.quantize import QuantizeSettings, quantize_onnx
    from crossdeploy.runtimes.base import ThreadSettings
    from crossdeploy.tensorflow.convert import convert_to_tensorflow
    from crossdeploy.validation.parity import Thresholds
    from crossdeploy.validation.run import judging_rules, validate_variants
    from tests.conftest import random_model_files

    paths, calibration, evaluation = random_model_files(arch, tmp_path, SIZE)
    convert_fp16(Path(paths["onnx_optimized"]), Path(paths["onnx_fp16"]))
    settings = QuantizeSettings(method="static", calibration_method="minmax", calibration_size=16, calibration_batch=8, per_channel=True)
    for flavour, target in (("cpu", paths["onnx_int8"]), ("tensorrt", paths["onnx_int8_trt"])):
        quantize_onnx(Path(paths["onnx_optimized"]), Path(target), calibration.tensors("NCHW"), settings, flavour)
    version_dir = saved_model_version_dir(paths, arch, 1)
    failures = convert_to_tensorflow(Path(paths["onnx_optimized"]), version_dir, Path(paths["tflite"]), SIZE, calibration.tensors("NHWC"))
    assert failures == {}

    cfg = compose([], config_dir=ROOT / "conf")["validate"]
    thresholds = {precision: Thresholds(**values) for precision, values in cfg["thresholds"].items()}
    rows = validate_variants(
        _variants(tmp_path, arch), evaluation, **judging_rules(cfg, thresholds), batch_size=8, threads=ThreadSettings(0, 0)
    )
    assert {name: row["status"] for name, row in rows.items() if row["status"] not in ("ok", "unjudged")} == {}
    # random weights: the INT8 rows carry figures but no verdict (the trained model's rows judge INT8)
    for name in ("onnxruntime-int8", "onnxruntime-int8-trt", "tflite-int8"):
        assert rows[name]["status"] == "unjudged" and np.isfinite(rows[name]["cosine_min"]), (name, rows[name])


def _add_zero_term(path: Path, term: str, nodes: list, initializers: list) -> None:
    """logits = previous logits + `term` (which `nodes` compute, times zero): ONNX Runtime computes the
    very same logits, so only the converter meeting `nodes` can tell the models apart."""
    model = onnx.load(str(path))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["logits_before" if o == out else o for o in node.output]
    model.graph.initializer.extend(initializers)
    model.graph.node.extend([*nodes, helper.make_node("Add", ["logits_before", term], [out], name="logits_plus_zero")])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def add_unconvertible_op(path: Path) -> None:
    """An op onnx2tf has no converter for: SoftmaxCrossEntropyLoss of the logits against their argmax."""
    _add_zero_term(
        path,
        "no_loss",
        [
            helper.make_node("ArgMax", ["logits_before"], ["predicted"], axis=1, keepdims=0, name="predicted"),
            helper.make_node("SoftmaxCrossEntropyLoss", ["logits_before", "predicted"], ["loss"], name="self_loss"),
            helper.make_node("Mul", ["loss", "loss_weight"], ["no_loss"], name="no_loss"),
        ],
        [helper.make_tensor("loss_weight", TensorProto.FLOAT, [], [0.0])],
    )


def add_batch_range(path: Path) -> None:
    """ConvNeXt's pattern: a Range whose limit is the batch size (Shape -> Squeeze -> Cast). onnx2tf
    cannot follow it with a dynamic batch; folded at a fixed batch it converts."""
    images = onnx.load(str(path)).graph.input[0].name
    _add_zero_term(
        path,
        "zeros",
        [
            helper.make_node("Shape", [images], ["batch_shape"], start=0, end=1, name="batch_shape"),
            helper.make_node("Squeeze", ["batch_shape"], ["batch"], name="batch"),
            helper.make_node("Cast", ["batch"], ["batch_float"], to=TensorProto.FLOAT, name="batch_float"),
            helper.make_node("Range", ["range_start", "batch_float", "range_delta"], ["rows"], name="batch_range"),
            helper.make_node("Unsqueeze", ["rows", "range_axis"], ["row_column"], name="row_column"),
            helper.make_node("Mul", ["row_column", "range_start"], ["zeros"], name="zeros"),
        ],
        [
            helper.make_tensor("range_start", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("range_delta", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("range_axis", TensorProto.INT64, [1], [1]),
        ],
    )


def test_a_batch_sized_range_converts_at_a_fixed_batch_and_serves_any(tiny_optimized, tiny_images, tmp_path):
    """The dynamic conversion fails; the fixed-batch one folds the Range, the SavedModel still takes any
    batch (one image at a time), and the TFLite models say they take batches of 1."""
    import tensorflow as tf

    from crossdeploy.runtimes.tflite_runtime import TFLiteRunner
    from crossdeploy.tensorflow.convert import convert_to_tensorflow
    from crossdeploy.validation.parity import compare_logits
    from tests.conftest import TINY_SIZE, run_onnx

    path = tmp_path / "range.onnx"
    shutil.copy(tiny_optimized[0], path)
    add_batch_range(path)
    calibration, evaluation = (images.tensors("NHWC") for images in tiny_images)
    assert convert_to_tensorflow(path, tmp_path / "sm" / "1", tmp_path / "tflite", TINY_SIZE, calibration) == {}
    reference = run_onnx(path, evaluation.transpose(0, 3, 1, 2))
    served = tf.saved_model.load(str(tmp_path / "sm" / "1")).signatures["serving_default"]
    logits = served(images=tf.constant(evaluation))["logits"].numpy()
    assert logits.shape == reference.shape and compare_logits(reference, logits)["cosine_min"] > 0.99999
    with TFLiteRunner(tmp_path / "tflite" / "model.fp32.tflite", "tflite-fp32") as runner:
        assert runner.fixed_batch == 1
        assert compare_logits(reference, runner.infer_all(evaluation, 4))["cosine_min"] > 0.99999


def _run(cwd: Path, stage: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_converter_failure_fails_its_variants_and_every_other_variant_still_runs(tmp_path):
    """The pipeline's own stages on a model onnx2tf cannot convert: to_tensorflow and package record the
    failure and exit 0, validate runs every other variant and fails at the end with the table,
    the benchmark measures what exists; one sentence, no traceback."""
    overrides = [
        "model=resnet18-tiny",
        "data.calibration_size=8",
        "data.evaluation_size=8",
        "quantize.calibration_size=8",
        "validate.batch_size=8",
        "benchmark.profile=quick",
        "benchmark.batch_sizes=[1]",
        "benchmark.concurrency=[1]",
        "benchmark.mlperf.enabled=false",
        "benchmark.harness_check=false",
    ]
    params = compose(overrides, config_dir=ROOT / "conf")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("model", "data", "export", "optimize", "fp16", "quantize"):
        assert _run(tmp_path, stage).returncode == 0, stage
    add_unconvertible_op(tmp_path / params["paths"]["onnx_optimized"])

    converted = _run(tmp_path, "to_tensorflow")
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert "Traceback" not in converted.stdout + converted.stderr
    assert "warning: tf-savedmodel-fp32 was not built: onnx2tf has no converter for the ONNX op SoftmaxCrossEntropyLoss" in converted.stdout
    packaged = _run(tmp_path, "package")
    assert packaged.returncode == 0 and "nothing to serve" in packaged.stdout, packaged.stderr[-2000:]

    validated = _run(tmp_path, "validate")
    assert validated.returncode == 1 and "Traceback" not in validated.stderr, validated.stderr[-3000:]
    errors = [line for line in validated.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: variants that failed or fell outside their parity thresholds (validate.thresholds):"], errors
    assert validated.stderr.rstrip().endswith("set validate.strict: false to record them without failing.")
    parity = json.loads((tmp_path / "metrics" / "parity.json").read_text())
    sentence = parity[SAVEDMODEL_VARIANT]["reason"]
    assert parity[SAVEDMODEL_VARIANT]["status"] == "failed"
    assert sentence.startswith("onnx2tf has no converter for the ONNX op SoftmaxCrossEntropyLoss (node self_loss); ")
    assert "\n" not in sentence and "Traceback" not in sentence
    for name in TFLITE_VARIANTS.values():
        assert parity[name] == {
            "status": "failed",
            "reason": f"no SavedModel to convert: {sentence}",
            "precision": parity[name]["precision"],
        }
    for name in SERVED:
        assert parity[name]["status"] == "failed" and parity[name]["reason"] == f"no SavedModel to package: {sentence}"
    # every other CPU variant was still run and judged
    assert parity["onnxruntime-fp32"]["status"] == "ok" and parity["onnxruntime-fp32"]["cosine_min"] > 0.99999
    assert {parity[n]["status"] for n in ("onnxruntime-int8", "onnxruntime-int8-trt")} <= {"ok", "unjudged"}

    measured = _run(tmp_path, "benchmark")
    assert measured.returncode == 0, measured.stderr[-2000:]
    benchmark = json.loads((tmp_path / "metrics" / "benchmark.json").read_text())
    assert benchmark[SAVEDMODEL_VARIANT]["b1_c1"] == {"status": "failed", "reason": f"not built: {sentence}"}
    assert benchmark["onnxruntime-fp32"]["b1_c1"]["status"] == "ok" and benchmark["onnxruntime-fp32"]["b1_c1"]["throughput_ips"] > 0


class ConverterError(Exception):
    """The shape of TensorFlow's tf.lite ConverterError message."""


def test_failure_records_are_one_sentence_per_variant(tmp_path):
    from crossdeploy.build_failures import error_summary, recorded_failure, write_failures

    keras_error = ValueError(
        'Exception encountered when calling layer "tf.range" (type TFOpLambda).\n\nShape must be rank 0 but is rank 1\n'
        "\t for 'limit' for '{{node tf.range/range}}' with input shapes: [], [3], [].\n\nCall arguments received:\n  • start=0"
    )
    assert error_summary(keras_error) == "Shape must be rank 0 but is rank 1"
    assert len(error_summary(ValueError("x" * 1000))) == 300
    mlir = ConverterError(
        'Could not translate MLIR to FlatBuffer.<unknown>:0: error: loc(callsite(fused["Erf:", "model/tf.math.erf/Erf@serve"])): '
        "'tf.Erf' op is neither a custom op nor a flex op\n<unknown>:0: note: see current operation"
    )
    assert error_summary(mlir) == "'tf.Erf' op is neither a custom op nor a flex op"
    write_failures(tmp_path, {"tflite-int8": "TFLite could not convert it"})
    assert recorded_failure(tmp_path / "failures.json", "tflite-int8") == "TFLite could not convert it"
    assert recorded_failure(tmp_path / "failures.json", "tflite-fp32") is None
    assert recorded_failure(tmp_path / "absent.json", "tflite-int8") is None


class _CrashOnUnpickle:
    """Reads address 0 where the converting process unpickles it: a real SIGSEGV in that process."""

    def __reduce__(self):
        import ctypes

        return ctypes.string_at, (0,)


def test_a_converter_crash_fails_the_variants_it_was_building(tmp_path):
    """onnx2tf crashed the whole stage on MaxViT (SIGSEGV); the conversion runs in its own process, so a
    crash there fails the SavedModel and TFLite variants with what happened, and the stage goes on."""
    from crossdeploy.tensorflow.convert import convert_to_tensorflow_isolated

    failures = convert_to_tensorflow_isolated(tmp_path / "model.onnx", tmp_path / "sm" / "1", tmp_path / "tflite", 64, _CrashOnUnpickle())
    assert set(failures) == {SAVEDMODEL_VARIANT, *TFLITE_VARIANTS.values()}
    assert failures[SAVEDMODEL_VARIANT].startswith("onnx2tf or TensorFlow crashed with SIGSEGV converting the model")
    assert failures["tflite-int8"].startswith("no SavedModel to convert: onnx2tf or TensorFlow crashed with SIGSEGV")


def test_an_error_in_the_converting_process_is_not_mistaken_for_a_converter_limit(tmp_path):
    """A Python error there (here: no ONNX file) is a bug or a broken input, not an architecture the
    converter cannot handle: the stage fails instead of recording it."""
    from crossdeploy.tensorflow.convert import convert_to_tensorflow_isolated

    with pytest.raises(RuntimeError, match=r"conversion process failed \(exit code 1\)"):
        convert_to_tensorflow_isolated(
            tmp_path / "absent.onnx", tmp_path / "sm" / "1", tmp_path / "tflite", 64, np.zeros((1, 64, 64, 3), np.float32)
        )
