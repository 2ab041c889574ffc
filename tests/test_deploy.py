"""The deploy decision on synthetic benchmark and parity data, its bundle for each kind of variant built from
the tiny model's real artifacts, and `crossdeploy deploy`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from crossdeploy.deploy.bundle import Serving, batch_timeout_micros, triton_config, write_bundle
from crossdeploy.deploy.decision import Settings, SloNotMet, decide
from crossdeploy.deploy.note import deploy_markdown
from crossdeploy.errors import CrossdeployError
from crossdeploy.variants import benchmark_variants
from tests.conftest import KSERVE, TINY_SIZE, bundle_decision, tiny_paths

STABILITY_PCT = 10.0


def cell(ips, p99, stable=True, p50=None):
    return {"status": "ok", "stable": stable, "throughput_ips": ips, "p99_ms": p99, "p50_ms": p50 or p99 * 0.8}


def results(variants: dict, sizes: dict | None = None) -> dict:
    return {
        **variants,
        "device": {"cpu": "Test CPU", "usable_cores": 2, "gpus": [], "libraries": {"onnxruntime": "1.0"}},
        "setup": {"stability_pct": STABILITY_PCT, "profile": "quick", "target": "cpu", "weights": "random", "artifact_mb": sizes or {}},
    }


def ok(precision="fp32", top1=1.0, cosine=1.0):
    return {"status": "ok", "reason": "", "precision": precision, "top1_agreement": top1, "cosine_min": cosine, "max_abs_err_rel": 0.0}


def decision(cells, parity, sizes=None, **settings):
    return decide(results(cells, sizes), parity, Settings(**{"p99_ms": 50, **settings}))


def chosen(d):
    return (d["choice"]["variant"], d["choice"]["cell"]) if d["choice"] else None


# --- the decision --------------------------------------------------------------------------------------------


def test_the_best_throughput_within_the_slo_is_chosen_with_its_margin_and_runner_up():
    d = decision(
        {
            "onnxruntime-fp32": {"b1_c1": cell(20, 45), "b8_c1": cell(30, 300)},
            "onnxruntime-int8": {"b1_c1": cell(60, 20), "b8_c1": cell(90, 60)},
        },
        {"onnxruntime-fp32": ok(), "onnxruntime-int8": ok("int8", 0.99, 0.99)},
    )
    assert d["met"] is True and chosen(d) == ("onnxruntime-int8", "b1_c1")  # b8_c1's 90 img/s misses the SLO (p99 60 ms)
    choice = d["choice"]
    assert (choice["batch"], choice["concurrency"], choice["throughput_ips"], choice["p99_ms"]) == (1, 1, 60, 20)
    assert choice["margin_ms"] == 30 and choice["margin_pct"] == 60.0
    assert choice["fidelity"] == {
        "row": "onnxruntime-int8",
        "judged_by": "its own file",
        "top1_agreement": 0.99,
        "cosine_min": 0.99,
        "max_abs_err_rel": 0.0,
    }
    runner = d["runner_up"]
    assert (runner["variant"], runner["cell"]) == ("onnxruntime-fp32", "b1_c1")
    assert runner["why_not"] == "20 img/s, 66.7 % below the best that meets the SLO"
    assert d["params"]["p99_ms"] == 50 and d["tie_pct"] == STABILITY_PCT
    assert "**Deploy `onnxruntime-int8` at batch 1 x 1 client**: 60 img/s, p50" in deploy_markdown(d)  # no peak measured: none quoted
    with_peak = decision({"onnxruntime-int8": {"b1_c1": {**cell(60, 20), "peak_pct": 81.5}}}, {"onnxruntime-int8": ok("int8", 0.99, 0.99)})
    assert with_peak["choice"]["peak_pct"] == 81.5
    assert "60 img/s (81.5 % of this machine's GEMM peak in its precision), p50" in deploy_markdown(with_peak)


def test_when_nothing_meets_the_slo_the_closest_cell_and_its_miss_are_named():
    d = decision(
        {"torch-fp32": {"b1_c1": cell(10, 80), "b8_c1": cell(15, 400)}, "tflite-fp32": {"b1_c1": cell(12, 65)}},
        {"torch-fp32": ok(), "tflite-fp32": ok()},
    )
    assert d["met"] is False and d["choice"] is None and d["runner_up"] is None
    assert (d["closest"]["variant"], d["closest"]["cell"], d["closest"]["miss_ms"]) == ("tflite-fp32", "b1_c1", 15)
    assert "**SLO not met** (p99 <= 50 ms). Closest: `tflite-fp32` at batch 1 x 1 client, p99 65 ms, 15 ms over" in deploy_markdown(d)


def test_strict_fails_with_one_sentence_naming_the_closest_cell():
    with pytest.raises(
        SloNotMet, match=r"^no stable cell meets p99 <= 50 ms; the closest, tflite-fp32 at batch 1 x 1 client, has p99 65 ms, 15 ms over\.$"
    ):
        decision({"tflite-fp32": {"b1_c1": cell(12, 65)}}, {"tflite-fp32": ok()}, strict=True)
    # met, strict changes nothing
    assert decision({"tflite-fp32": {"b1_c1": cell(12, 45)}}, {"tflite-fp32": ok()}, strict=True)["met"] is True


def test_a_tie_within_the_stability_bound_goes_to_the_simpler_deployment():
    parity = {"onnxruntime-int8": ok("int8"), "kserve-rest-fp32": ok(), "tflite-int8": ok("int8")}
    # served vs in-process, 5 % apart: in-process wins though slower
    d = decision({"kserve-rest-fp32": {"b1_c1": cell(100, 30)}, "onnxruntime-int8": {"b1_c1": cell(95, 30)}}, parity)
    assert chosen(d) == ("onnxruntime-int8", "b1_c1")
    assert d["runner_up"]["why_not"].endswith("the less simple deployment (served rather than in-process)")
    # fewer clients, then the smaller batch
    d = decision({"onnxruntime-int8": {"b1_c8": cell(100, 40), "b1_c1": cell(92, 10)}}, parity)
    assert chosen(d) == ("onnxruntime-int8", "b1_c1") and d["runner_up"]["why_not"].endswith("(more clients)")
    d = decision({"onnxruntime-int8": {"b8_c1": cell(100, 40)}, "tflite-int8": {"b1_c1": cell(91, 10)}}, parity)
    assert chosen(d) == ("tflite-int8", "b1_c1") and d["runner_up"]["why_not"].endswith("(a larger batch)")
    # beyond the bound it is not a tie: the faster, served one wins
    d = decision({"kserve-rest-fp32": {"b1_c1": cell(100, 30)}, "onnxruntime-int8": {"b1_c1": cell(89, 30)}}, parity)
    assert chosen(d) == ("kserve-rest-fp32", "b1_c1")


def test_unstable_cells_are_reported_not_chosen():
    d = decision({"onnxruntime-int8": {"b8_c1": cell(90, 40, stable=False), "b1_c1": cell(60, 20)}}, {"onnxruntime-int8": ok("int8")})
    assert chosen(d) == ("onnxruntime-int8", "b1_c1")
    assert d["unstable"] == ["onnxruntime-int8 b8_c1"]
    assert "Met the SLO but unstable (reported, not chosen): onnxruntime-int8 b8_c1." in deploy_markdown(d)


def test_failed_skipped_and_parity_failed_variants_are_excluded_with_their_reasons():
    variants = {
        "onnxruntime-fp32": {"b1_c1": cell(20, 45)},
        "tensorrt-int8": {"b1_c1": {"status": "skipped", "reason": "no NVIDIA GPU here"}},
        "tflite-fp16": {"b1_c1": {"status": "failed", "reason": "RuntimeError: boom"}},
        "tflite-int8": {"b1_c1": cell(500, 5)},  # fastest, but its parity failed
        "torch-compile-fp32": {"b1_c1": cell(400, 5)},  # no parity row
    }
    parity = {
        "onnxruntime-fp32": ok(),
        "tensorrt-int8": {"status": "skipped", "reason": "no NVIDIA GPU here"},
        "tflite-fp16": ok("fp16"),
        "tflite-int8": {"status": "failed", "reason": "top1_agreement 0.5 < 0.98"},
    }
    d = decision(variants, parity)
    assert chosen(d) == ("onnxruntime-fp32", "b1_c1")
    assert d["excluded"] == {
        "tensorrt-int8": "parity skipped: no NVIDIA GPU here",
        "tflite-fp16": "benchmark failed: RuntimeError: boom",
        "tflite-int8": "parity failed: top1_agreement 0.5 < 0.98",
        "torch-compile-fp32": "no parity row: its fidelity was never checked",
    }


def references(arch="resnet50", standin_arch="resnet50", random_weights=True):
    """The two reference rows validate writes: the main model's, and the stand-in's."""
    return {
        "torch-fp32": {**ok(), "model": arch, "arch": arch, "random_weights": random_weights, "stand_in": False},
        "trained/torch-fp32": {**ok(), "model": f"digits-{standin_arch}", "arch": standin_arch, "random_weights": False, "stand_in": True},
    }


def test_an_unjudged_row_is_eligible_only_when_its_trained_row_is_ok():
    unjudged = {
        "status": "unjudged",
        "reason": "random weights",
        "precision": "int8",
        "top1_agreement": 0.7,
        "cosine_min": 0.5,
        "floor": "passed",
    }
    variants = {"onnxruntime-int8": {"b1_c1": cell(90, 10)}, "onnxruntime-fp32": {"b1_c1": cell(20, 40)}}
    parity = {**references(), "onnxruntime-int8": unjudged, "onnxruntime-fp32": ok(), "trained/onnxruntime-int8": ok("int8", 0.995, 0.999)}
    d = decision(variants, parity)
    assert chosen(d) == ("onnxruntime-int8", "b1_c1")
    assert d["choice"]["fidelity"]["row"] == "trained/onnxruntime-int8" and d["choice"]["fidelity"]["top1_agreement"] == 0.995
    assert d["choice"]["fidelity"]["judged_by"].startswith("the stand-in digits-resnet50 (resnet50 trained on digits), same conversion")
    parity["trained/onnxruntime-int8"] = {"status": "failed", "reason": "accuracy_drop 0.03 > 0.01"}
    d = decision(variants, parity)
    assert chosen(d) == ("onnxruntime-fp32", "b1_c1")
    assert d["excluded"]["onnxruntime-int8"] == "unjudged here, and trained/onnxruntime-int8 is failed: accuracy_drop 0.03 > 0.01"
    del parity["trained/onnxruntime-int8"]
    assert "no trained/onnxruntime-int8 row" in decision(variants, parity)["excluded"]["onnxruntime-int8"]
    # a stricter floor reads the trained row's figures too, not the random model's
    parity["trained/onnxruntime-int8"] = ok("int8", 0.995, 0.999)
    assert decision(variants, parity, min_cosine=0.9995)["excluded"] == {
        "onnxruntime-int8": "trained/onnxruntime-int8 cosine_min 0.999 is below deploy.min_cosine 0.9995"
    }
    assert chosen(decision(variants, parity, min_cosine=0.99)) == ("onnxruntime-int8", "b1_c1")  # its own row's 0.5 is not read


@pytest.mark.parametrize(
    "plant,words",
    [
        # the case: the main INT8 file answered every image alike, and the stand-in's ok row stood in for it
        (
            {"onnxruntime-int8": {"status": "failed", "reason": "every image gets the same logits", "floor": "failed"}},
            "parity failed: every image gets the same logits",
        ),
        # a parity.json from before the floor: its own file was never checked
        ({"onnxruntime-int8": {"status": "unjudged", "reason": "random weights", "precision": "int8"}}, "never checked against the floor"),
        # a ResNet18 stand-in's verdict for a ResNet50 file
        (references(standin_arch="resnet18"), "the stand-in that judged its conversion is a resnet18, not the resnet50 this file holds"),
        # no architecture recorded for the main model: nothing says the stand-in matches
        ({"torch-fp32": ok()}, "not the unknown architecture this file holds"),
    ],
)
def test_a_file_is_never_chosen_on_another_models_figures(plant, words):
    unjudged = {"status": "unjudged", "reason": "random weights", "precision": "int8", "floor": "passed"}
    variants = {"onnxruntime-int8": {"b1_c1": cell(90, 10)}, "onnxruntime-fp32": {"b1_c1": cell(20, 40)}}
    parity = {**references(), "onnxruntime-int8": unjudged, "onnxruntime-fp32": ok(), "trained/onnxruntime-int8": ok("int8", 0.995, 0.999)}
    assert chosen(decision(variants, parity)) == ("onnxruntime-int8", "b1_c1")  # the unplanted control
    d = decision(variants, {**parity, **plant})
    assert chosen(d) == ("onnxruntime-fp32", "b1_c1") and words in d["excluded"]["onnxruntime-int8"], d["excluded"]


def test_on_random_weights_the_decision_says_it_is_a_demonstration():
    variants = {"onnxruntime-fp32": {"b1_c1": cell(20, 40)}}
    for random_weights in (True, False):
        d = decision(variants, {**references(random_weights=random_weights), "onnxruntime-fp32": ok()})
        assert d["model"] == {"model": "resnet50", "arch": "resnet50", "random_weights": random_weights}
        text = deploy_markdown(d)
        assert ("A demonstration of the procedure on random weights" in text) is random_weights, text
        assert "judged by its own file, parity row `onnxruntime-fp32`" in text


def test_the_fidelity_floor_is_each_precisions_verdict_and_a_stricter_floor_applies_to_every_precision():
    # INT8 at 98.5 % top-1 passed its own thresholds (int8: 98 %), FP32 at 100 % its own: both verdicts ok
    variants = {
        "onnxruntime-int8": {"b1_c1": cell(90, 10)},
        "tflite-fp16": {"b1_c1": cell(40, 10)},
        "onnxruntime-fp32": {"b1_c1": cell(20, 10)},
    }
    parity = {"onnxruntime-int8": ok("int8", 0.985, 0.99), "tflite-fp16": ok("fp16", 0.995, 0.9995), "onnxruntime-fp32": ok()}
    assert chosen(decision(variants, parity)) == ("onnxruntime-int8", "b1_c1")
    d = decision(variants, parity, min_top1_agreement=0.99)
    assert chosen(d) == ("tflite-fp16", "b1_c1")
    assert d["excluded"] == {"onnxruntime-int8": "onnxruntime-int8 top1_agreement 0.985 is below deploy.min_top1_agreement 0.99"}
    d = decision(variants, parity, min_cosine=0.9999)
    assert chosen(d) == ("onnxruntime-fp32", "b1_c1") and set(d["excluded"]) == {"onnxruntime-int8", "tflite-fp16"}


def test_eligible_variants_and_the_size_cap():
    variants = {
        "onnxruntime-int8": {"b1_c1": cell(90, 10)},
        "kserve-rest-fp32": {"b1_c1": cell(20, 30)},
        "onnxruntime-fp32": {"b1_c1": cell(25, 30)},
    }
    parity = {name: ok() for name in variants}
    d = decision(variants, parity, variants="served")
    assert chosen(d) == ("kserve-rest-fp32", "b1_c1") and d["excluded"]["onnxruntime-int8"] == "not in deploy.variants"
    assert chosen(decision(variants, parity, variants=["onnxruntime-fp32"])) == ("onnxruntime-fp32", "b1_c1")
    d = decision(variants, parity, sizes={"onnxruntime-int8": 26.0, "onnxruntime-fp32": 102.0, "kserve-rest-fp32": 102.6}, max_model_mb=100)
    assert chosen(d) == ("onnxruntime-int8", "b1_c1") and d["excluded"]["onnxruntime-fp32"] == "102.0 MB exceeds deploy.max_model_mb 100"
    d = decision(variants, parity, sizes={"onnxruntime-int8": 26.0}, max_model_mb=100)
    assert d["excluded"]["onnxruntime-fp32"].startswith("its size is not in benchmark.json's setup.artifact_mb")
    with pytest.raises(CrossdeployError, match="deploy.variants must be all, served or a non-empty list"):
        Settings(p99_ms=10, variants="fastest")
    with pytest.raises(CrossdeployError, match=r"deploy.p99_ms is not set: .* or pass --p99-ms\.$"):
        Settings.from_params({"variants": "all"})


# --- the bundle ----------------------------------------------------------------------------------------------


def choice_of(variant, batch=8, concurrency=1, margin_ms=10.0):
    return {
        "variant": variant,
        "cell": f"b{batch}_c{concurrency}",
        "batch": batch,
        "concurrency": concurrency,
        "served": False,
        "throughput_ips": 100.0,
        "p50_ms": 20.0,
        "p99_ms": 40.0,
        "margin_ms": margin_ms,
        "margin_pct": 20.0,
        "stable": True,
        "size_mb": 1.0,
        "fidelity": {"row": variant, "top1_agreement": 1.0, "cosine_min": 1.0},
    }


PREPROCESSING = {"preprocessing": {"resize_size": 73, "crop_size": TINY_SIZE, "mean": [0.5] * 3, "std": [0.2] * 3}, "num_classes": 10}


@pytest.fixture
def artifacts(tmp_path, served_repo, tiny_optimized, tiny_source):
    """params' paths over the tiny model's real artifacts: the packaged repository, the ONNX model, the
    program; a TFLite file and a TensorRT plan stand in as bytes (the bundle copies them, it does not run them)."""
    tflite = tmp_path / "tflite"
    tflite.mkdir()
    (tflite / "model.int8.tflite").write_bytes(b"TFL3 tiny")
    tensorrt = tmp_path / "tensorrt"
    tensorrt.mkdir()
    (tensorrt / "tensorrt-fp16.plan").write_bytes(b"plan bytes")
    (tensorrt / "tensorrt-fp16.json").write_text(json.dumps({"status": "built", "gpu": "NVIDIA H100"}))
    # the bundle ships the packaged repository entry, not the SavedModel folder
    paths = tiny_paths(tmp_path, served_repo, tiny_source, tiny_optimized, tflite=tflite, tensorrt=tensorrt)
    return Serving(paths, "tiny", 1, num_batch_threads=2, max_enqueued_batches=10, kserve=KSERVE, tensorrt_max_batch=32)


def build(tmp_path, serving, choice, name="bundle"):
    """The bundle for `choice`, from the variant table over the tiny artifacts (the stage's table, its paths)."""
    params = {
        "paths": serving.paths,
        "model": {"name": "tiny"},
        "to_tensorflow": {"version": 1},
        "tensorrt": {"cuda_graph": False, "batch": {"min": 1, "opt": 8, "max": 32}},
    }
    dest = tmp_path / "bundles" / name
    dest.mkdir(parents=True)
    write_bundle(dest, bundle_decision(choice), results({}), serving, PREPROCESSING, {v.name: v for v in benchmark_variants(params)})
    return dest


def test_a_savedmodel_choice_bundles_the_tf_serving_repository_and_its_manifest(tmp_path, artifacts):
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from crossdeploy.serving.manifests import schema_errors
    from crossdeploy.serving.repository import BatchingParameters

    dest = build(tmp_path, artifacts, choice_of("kserve-rest-bytes", batch=8, margin_ms=10.0))
    # the package stage's checks: models.config is TF Serving's proto, the batching file BatchingParameters'
    # text, the manifest KServe's InferenceService; and the SavedModel keeps both signatures
    config = text_format.Parse((dest / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path) == ("tiny", "/models/tiny")
    expected = BatchingParameters(max_batch_size=8, batch_timeout_micros=5000, num_batch_threads=2, max_enqueued_batches=10).to_text()
    assert (dest / "batching_parameters.txt").read_text() == expected == (dest / "tiny" / "batching_parameters.txt").read_text()
    manifest = yaml.safe_load((dest / "kserve" / "inferenceservice.yaml").read_text())
    assert schema_errors(manifest) == [] and manifest["spec"]["predictor"]["tensorflow"]["storageUri"] == KSERVE["storage_uri"]
    assert set(tf.saved_model.load(str(dest / "tiny" / "1")).signatures) == {"serving_default", "serving_bytes"}
    readme = (dest / "README.md").read_text()
    assert "Measured behind the embedded server" in readme and "tensorflow/serving:2.21.0 " in readme
    assert (
        "batch_timeout_micros 5000: half the 10 ms margin to the SLO" in readme and "Measured on Test CPU, 2 usable cores, no GPU" in readme
    )
    assert json.loads((dest / "decision.json").read_text())["choice"]["variant"] == "kserve-rest-bytes"
    # TF Serving's GPU rows were measured on the -gpu image with TF32 off: the command says so
    readme = (build(tmp_path, artifacts, choice_of("tfserving-gpu-rest-bytes", batch=1), "gpu") / "README.md").read_text()
    assert "docker run --rm --gpus all -e NVIDIA_TF32_OVERRIDE=0 -p 8501:8501" in readme and "tensorflow/serving:2.21.0-gpu " in readme
    assert "batch_timeout_micros 0: a batch of one is full on arrival" in readme and "Measured behind TF Serving." in readme


def test_an_openvino_choice_bundles_its_ir_and_a_model_server_config(tmp_path, artifacts, tiny_images):
    """OpenVINO's IR, written by OpenVINO with the weights as measured (not halved to fp16), loads and gives the
    ONNX file's logits; config.json compiles it with the row's precision, as OpenVINO Model Server reads it."""
    import numpy as np
    import openvino as ov

    dest = build(tmp_path, artifacts, choice_of("openvino-fp32", batch=8, concurrency=2))
    config = json.loads((dest / "config.json").read_text())["model_config_list"][0]["config"]
    assert (config["name"], config["base_path"], config["target_device"]) == ("tiny", "/models/tiny", "CPU")
    assert config["plugin_config"] == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"} and config["nireq"] == 2
    core, x = ov.Core(), tiny_images[1].tensors("NCHW")
    from_ir = core.compile_model(str(dest / "tiny" / "1" / "model.xml"), "CPU", config["plugin_config"])(x)[0]
    from_onnx = core.compile_model(artifacts.paths["onnx_optimized"], "CPU", config["plugin_config"])(x)[0]
    np.testing.assert_array_equal(from_ir, from_onnx)
    readme = (dest / "README.md").read_text()
    assert "openvino/model_server:latest" in readme and "--config_path /models/config.json" in readme
    assert "batches of 8 from 2 threads at a time" in readme


def test_the_batch_timeout_spends_half_the_margin_and_nothing_at_batch_one():
    assert batch_timeout_micros(8, 10.0, 40.0) == 5000
    assert batch_timeout_micros(1, 10.0, 40.0) == 0  # a batch of one is full on arrival
    assert batch_timeout_micros(8, -3.0, 40.0) == 0
    # a huge SLO (1e12 ms had given a 15-year wait): never longer than the batch takes to run
    assert batch_timeout_micros(8, 1e12, 40.0) == 40000


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"p99_ms": float("nan")}, "p99_ms must be a positive, finite"),
        ({"p99_ms": float("inf")}, "p99_ms must be a positive, finite"),
        ({"p99_ms": True}, "p99_ms must be a positive, finite"),
        ({"min_top1_agreement": float("nan")}, "min_top1_agreement must be a finite number"),
        ({"max_model_mb": "big"}, "max_model_mb must be a finite number"),
        ({"strict": "no"}, "strict must be true or false"),
        ({"variants": []}, "non-empty list of variant names"),
        ({"variants": [""]}, "non-empty list of variant names"),
        ({"variants": "ALL"}, "non-empty list of variant names"),
        ({"variants": 5}, "non-empty list of variant names"),
    ],
)
def test_settings_refuse_what_would_decide_nothing_or_the_wrong_thing(overrides, message):
    with pytest.raises(CrossdeployError, match=message):
        Settings(**{"p99_ms": 50.0, **overrides})


def test_variant_names_are_stripped_and_unknown_ones_named():
    assert Settings(p99_ms=50.0, variants=[" onnxruntime-int8"]).variants == ["onnxruntime-int8"]
    data = results({"onnxruntime-int8": {"b1_c1": cell(50.0, 10.0)}})
    with pytest.raises(CrossdeployError, match="deploy.variants names nosuch, which benchmark.json does not hold"):
        decide(data, {"onnxruntime-int8": {"status": "ok"}}, Settings(p99_ms=50.0, variants=["onnxruntime-int8", "nosuch"]))


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "must be the benchmark and validate stages' JSON objects"),
        ({"v": {"b1_c1": {"status": "ok", "throughput_ips": 10.0, "p50_ms": 5.0}}}, "lacks finite throughput_ips"),
        ({"v": {"b1_c1": {"status": "ok", "throughput_ips": float("nan"), "p50_ms": 5.0, "p99_ms": 6.0}}}, "lacks finite throughput_ips"),
        ({"v": {"bad_cell": {"status": "ok"}}}, "cell named 'bad_cell'"),
        ({"v": ["b1_c1"]}, "not a table of cells"),
        ({"setup": {"stability_pct": None}}, "stability_pct must be a percentage"),
        ({"setup": {"stability_pct": 200}}, "stability_pct must be a percentage"),
    ],
)
def test_malformed_benchmark_json_is_one_sentence(data, message):
    with pytest.raises(CrossdeployError, match=message):
        decide(data, {}, Settings(p99_ms=50.0))


def test_a_metrics_file_that_is_not_json_is_one_sentence(tmp_path):
    from crossdeploy.deploy.decision import load_metrics

    (tmp_path / "cut.json").write_text('{"torch-fp32": {"b1_')
    with pytest.raises(CrossdeployError, match="cut.json is not the JSON the pipeline writes"):
        load_metrics(tmp_path / "cut.json")
    with pytest.raises(CrossdeployError, match="gone.json does not exist"):
        load_metrics(tmp_path / "gone.json")


def test_unstable_cells_under_the_slo_are_never_named_as_the_closest_miss():
    data = results(
        {"onnxruntime-int8": {"b1_c1": {**cell(50.0, 10.0), "stable": False}, "b8_c1": {**cell(60.0, 120.0), "stable": "false"}}}
    )
    decision = decide(data, {"onnxruntime-int8": {"status": "ok"}}, Settings(p99_ms=100.0))
    assert decision["met"] is False and decision["unstable"] == ["onnxruntime-int8 b1_c1"]
    assert decision["closest"]["cell"] == "b8_c1" and decision["closest"]["miss_ms"] == 20.0  # "false" is not stable


# Triton's ModelConfig, in a process of its own: tritonclient.grpc registers the `inference` protobuf package that
# KServe's V2 protocol (imported by the manifests' schema check) registers too, and one process refuses both
PARSE_MODEL_CONFIG = """
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
config = text_format.Parse(sys.stdin.read(), model_config_pb2.ModelConfig())
print(json_format.MessageToJson(config))
"""


def parse_model_config(text: str) -> dict:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", PARSE_MODEL_CONFIG], input=text, capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise ValueError(result.stderr.strip().splitlines()[-1])
    return json.loads(result.stdout)


def test_a_tensorrt_choice_bundles_a_triton_model_that_parses_as_modelconfig(tmp_path, artifacts):
    from crossdeploy.serving.manifests import schema_errors

    dest = build(tmp_path, artifacts, choice_of("tensorrt-fp16", batch=8, margin_ms=4.0))
    assert (dest / "tensorrt-fp16.plan").read_bytes() == b"plan bytes" and (dest / "tensorrt-fp16.json").is_file()
    assert (dest / "triton" / "tiny" / "1" / "model.plan").read_bytes() == b"plan bytes"
    config = parse_model_config((dest / "triton" / "tiny" / "config.pbtxt").read_text())
    assert (config["name"], config["platform"], config["maxBatchSize"]) == ("tiny", "tensorrt_plan", 32)
    assert config["dynamicBatching"] == {"preferredBatchSize": [8], "maxQueueDelayMicroseconds": "2000"}
    assert config["input"] == [{"name": "images", "dataType": "TYPE_FP32", "dims": ["3", str(TINY_SIZE), str(TINY_SIZE)]}]
    assert config["output"] == [{"name": "logits", "dataType": "TYPE_FP32", "dims": ["10"]}]
    assert schema_errors(yaml.safe_load((dest / "kserve" / "inferenceservice-triton.yaml").read_text())) == []
    # the planted defect: a field Triton's message does not have is refused by the same parse
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        parse_model_config(triton_config("tiny", 32, 8, 0, 64, 10).replace("preferred_batch_size", "preferred_batch_sizes"))


def test_onnxruntime_tflite_and_torch_choices_bundle_the_model_file_and_how_to_run_it(tmp_path, artifacts, tiny_images, tiny_reference):
    import numpy as np

    from tests.conftest import run_onnx

    dest = build(tmp_path, artifacts, choice_of("onnxruntime-int8", batch=1), "ort")
    onnx = dest / Path(artifacts.paths["onnx_int8"]).name
    np.testing.assert_allclose(run_onnx(onnx, tiny_images[1].tensors("NCHW")), tiny_reference, rtol=1e-3, atol=1e-3)
    assert 'InferenceSession("model.optimized.onnx", providers=["CPUExecutionProvider"])' in (dest / "README.md").read_text()
    assert json.loads((dest / "preprocessing.json").read_text()) == PREPROCESSING
    dest = build(tmp_path, artifacts, choice_of("tflite-int8", batch=1), "tflite")
    assert (dest / "model.int8.tflite").read_bytes() == b"TFL3 tiny" and 'Interpreter("model.int8.tflite"' in (
        dest / "README.md"
    ).read_text()
    dest = build(tmp_path, artifacts, choice_of("torch-fp32", batch=1), "torch")
    assert (dest / "model.pt2").is_file()


def test_an_unmet_slo_bundles_only_the_decision_and_a_readme_and_the_bundle_is_deterministic(tmp_path, artifacts):
    dest = build(tmp_path, artifacts, None, "none")
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "decision.json", "preprocessing.json"]
    assert "Nothing to deploy: no variant met the SLO." in (dest / "README.md").read_text()

    def digest(folder):
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
        }

    one = build(tmp_path, artifacts, choice_of("tf-savedmodel-fp32"), "one")
    two = build(tmp_path, artifacts, choice_of("tf-savedmodel-fp32"), "two")
    assert digest(one) == digest(two)
    shutil.rmtree(two)


# --- the command ---------------------------------------------------------------------------------------------


def test_crossdeploy_deploy_prints_the_decision_for_a_given_slo(tmp_path, capsys):
    from crossdeploy.cli import main

    variants = {"onnxruntime-int8": {"b1_c1": cell(60, 20), "b8_c1": cell(90, 60)}, "onnxruntime-fp32": {"b1_c1": cell(20, 45)}}
    (tmp_path / "benchmark.json").write_text(json.dumps(results(variants)))
    (tmp_path / "parity.json").write_text(json.dumps({"onnxruntime-int8": ok("int8"), "onnxruntime-fp32": ok()}))
    params = {
        "paths": {"benchmark_metrics": str(tmp_path / "benchmark.json"), "parity": str(tmp_path / "parity.json")},
        "deploy": {"p99_ms": 10, "variants": "all", "min_top1_agreement": None, "min_cosine": None, "max_model_mb": None, "strict": True},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["deploy", "--p99-ms", "30", "--params", str(tmp_path / "params.yaml")]) == 0
    assert "**Deploy `onnxruntime-int8` at batch 1 x 1 client**: 60 img/s" in capsys.readouterr().out
    assert main(["deploy", "--p99-ms", "100", "--json", "--params", str(tmp_path / "params.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["choice"]["cell"] == "b8_c1"
    # the params' SLO (10 ms) is met by nothing: printed, not an error, though deploy.strict is the stage's
    assert main(["deploy", "--params", str(tmp_path / "params.yaml")]) == 0
    assert "**SLO not met** (p99 <= 10 ms)" in capsys.readouterr().out


# --- the trade-off -------------------------------------------------------------------------------------------


def test_the_pareto_front_keeps_only_cells_nothing_beats_on_both_counts_and_the_chart_is_drawn(tmp_path):
    from crossdeploy.deploy.chart import pareto_front, plot_rows, write_chart

    variants = {
        "onnxruntime-int8": {"b1_c1": cell(60, 20), "b8_c1": cell(90, 60), "b8_c8": cell(85, 500, stable=False)},
        "onnxruntime-fp32": {"b1_c1": cell(20, 45), "b8_c1": {"status": "skipped", "reason": "x"}},
    }
    rows = plot_rows(results(variants))
    assert [(r["variant"], r["batch"], r["concurrency"], r["stable"]) for r in rows] == [
        ("onnxruntime-int8", 1, 1, True),
        ("onnxruntime-int8", 8, 1, True),
        ("onnxruntime-int8", 8, 8, False),
        ("onnxruntime-fp32", 1, 1, True),
    ]
    # fp32 b1 (20 img/s at 45 ms) is beaten by int8 b1 (60 at 20); int8 b8_c8 by int8 b8_c1
    assert [(r["variant"], r["batch"], r["concurrency"]) for r in pareto_front(rows)] == [
        ("onnxruntime-int8", 1, 1),
        ("onnxruntime-int8", 8, 1),
    ]
    d = decision(variants, {"onnxruntime-int8": ok("int8"), "onnxruntime-fp32": ok()})
    write_chart(results(variants), d, tmp_path / "deploy.png")
    assert (tmp_path / "deploy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
