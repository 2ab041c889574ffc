"""The whole pipeline through real `dvc repro` and `dvc exp run`, in a throwaway copy of the repository."""

import json
import shutil
import subprocess
from pathlib import Path

import openvino
import pytest
import yaml

from crossdeploy.compose import compose
from crossdeploy.device_info import gpus
from crossdeploy.serving import tfserving_launch
from crossdeploy.variants import PARITY_ONLY, TRAINED_VARIANTS
from tests.conftest import TINY, back_to_the_run, sh

pytestmark = pytest.mark.slow

VARIANTS = {
    "torch-fp32",
    "onnxruntime-fp32",
    "onnxruntime-fp16",
    "onnxruntime-int8",
    "onnxruntime-int8-trt",
    "openvino-fp32",
    "openvino-int8",
    "tf-savedmodel-fp32",
    "tflite-fp32",
    "tflite-fp16",
    "tflite-int8",
    "kserve-rest-fp32",
    "kserve-rest-bytes",
}
# judged by validate, left out of the benchmark with the reason (the FP16 file on the CPU, computed in FP32)
MEASURED = VARIANTS - set(PARITY_ONLY)
# random weights: INT8, bf16 and served-bytes rows carry figures but no verdict; the trained model's rows judge them
UNJUDGED = {
    "onnxruntime-int8",
    "onnxruntime-int8-trt",
    "openvino-int8",
    "openvino-bf16",
    "tflite-int8",
    "kserve-rest-bytes",
    "tfserving-rest-bytes",
}
# OpenVINO's bf16 runs only on a CPU with BF16 instructions; elsewhere its rows say which feature is missing
BF16 = {"openvino-bf16"}
CPU_BF16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
TRAINED = {f"trained/{name}" for name in TRAINED_VARIANTS}
# real TF Serving needs its binary or a Docker engine; where neither is, these rows say so
TFSERVING = {"tfserving-grpc-fp32", "tfserving-rest-fp32", "tfserving-rest-bytes"}
TFSERVING_RUNS = tfserving_launch.binary_available() or tfserving_launch.docker_available()
# without an NVIDIA GPU the GPU stages still complete, and these rows say why they were skipped
GPU = {
    "tensorrt-fp16",
    "tensorrt-int8",
    "onnxruntime-cuda-fp32",
    "onnxruntime-cuda-fp16",
    "onnxruntime-cuda-int8",
    "onnxruntime-trt-int8",
    "torch-cuda-fp16",
    "tfserving-gpu-grpc-fp32",
    "tfserving-gpu-rest-bytes",
}
HAS_GPU = bool(gpus())
STAGES = {
    "model",
    "data",
    "export",
    "optimize",
    "fp16",
    "quantize",
    "to_tensorflow",
    "package",
    "tensorrt",
    "trained",
    "validate",
    "benchmark",
    "report",
    "deploy",
}


def stages_run(output):
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_builds_every_variant_and_is_then_up_to_date(tiny_run, tiny_repo):
    """The tiny run's first `dvc repro` ran every stage and built every variant; in a copy of the folder (the
    cache beside it) a second one runs none."""
    back_to_the_run(tiny_repo)
    assert stages_run(tiny_run[1]) == STAGES
    parity = json.loads((tiny_repo / "metrics" / "parity.json").read_text())
    assert set(parity) == VARIANTS | BF16 | TFSERVING | GPU | TRAINED
    expected = {name: "unjudged" if name in UNJUDGED else "ok" for name in VARIANTS} | {name: "ok" for name in TRAINED}
    expected |= {name: "unjudged" if CPU_BF16 else "skipped" for name in BF16}
    expected |= {f"trained/{name}": "ok" if CPU_BF16 else "skipped" for name in BF16}
    expected |= {name: ("unjudged" if name in UNJUDGED else "ok") if TFSERVING_RUNS else "skipped" for name in TFSERVING}
    statuses = {name: row["status"] for name, row in parity.items()}
    assert {name: statuses[name] for name in expected} == expected
    if not HAS_GPU:
        assert {statuses[name] for name in GPU} == {"skipped"}
        assert parity["tensorrt-int8"]["reason"] == "no NVIDIA GPU here (nvidia-smi finds none)"
        assert "missing here: an NVIDIA GPU" in parity["tfserving-gpu-grpc-fp32"]["reason"]
        engine = json.loads((tiny_repo / "models" / "tensorrt" / "tensorrt-int8.json").read_text())
        assert engine["status"] == "skipped" and engine["onnx"].endswith("model.int8-trt.onnx")
        engine = json.loads((tiny_repo / "models" / "tensorrt" / "tensorrt-fp16.json").read_text())
        assert engine["onnx"].endswith("model.fp16.onnx") and engine["settings"]["fp16_model"] is True
    assert "random weights: fidelity figures only" in (tiny_repo / "metrics" / "parity.md").read_text()
    assert json.loads((tiny_repo / "metrics" / "optimize.json").read_text())["nodes"]["exported"] > 0
    assert (tiny_repo / "models" / "tensorflow" / "savedmodel" / "resnet18-tiny" / "1" / "saved_model.pb").is_file()
    serving = tiny_repo / "models" / "serving"
    assert {p.name for p in serving.iterdir()} == {"models.config", "batching_parameters.txt", "resnet18-tiny", "kserve", "failures.json"}
    assert (serving / "resnet18-tiny" / "1" / "saved_model.pb").is_file()
    # every converter built every variant: the records say so
    for built in ("models/serving", "models/tensorflow/savedmodel", "models/tensorflow/tflite"):
        assert json.loads((tiny_repo / built / "failures.json").read_text()) == {}, built

    benchmark = json.loads((tiny_repo / "metrics" / "benchmark.json").read_text())
    assert set(benchmark) == VARIANTS | BF16 | TFSERVING | GPU | {
        "torch-compile-fp32",
        "mlperf",
        "harness",
        "device",
        "setup",
        "resources",
        "peaks",
    }
    if not CPU_BF16:
        assert "OpenVINO bf16 needs a CPU with BF16" in parity["openvino-bf16"]["reason"]
    assert benchmark["peaks"]["cpu"]["fp32"]["gops"] > 0 and benchmark["peaks"]["cpu"]["int8"]["gops"] > 0
    if not HAS_GPU:
        assert benchmark["tensorrt-fp16"]["b1_c1"] == {"status": "skipped", "reason": "no NVIDIA GPU here (nvidia-smi finds none)"}
    for variant in PARITY_ONLY:
        assert benchmark[variant]["b1_c1"] == {"status": "skipped", "reason": PARITY_ONLY[variant]}, variant
    for variant in MEASURED:
        assert set(benchmark[variant]) == {"b1_c1", "b1_c2", "b4_c1", "b4_c2"}
        cells = benchmark[variant]
        # one client at every batch size and both levels at the first are always measured; 2 clients at
        # batch 4 only where they gained at batch 1 (the concurrency search), else with the evidence
        assert {cells[name]["status"] for name in ("b1_c1", "b1_c2", "b4_c1")} == {"ok"}, variant
        assert cells["b4_c2"]["status"] == "ok" or (
            cells["b4_c2"]["status"] == "not measured" and cells["b4_c2"]["reason"].startswith("throughput had stopped rising")
        ), (variant, cells["b4_c2"])
    assert benchmark["torch-compile-fp32"]["b1_c1"]["reason"] == "benchmark.torch_compile is false"
    assert benchmark["mlperf"]["onnxruntime-int8"]["status"] == "ok"
    checks = json.loads((tiny_repo / "metrics" / "checks.json").read_text())
    assert {"int8_over_fp32", "harness_overhead", "kserve_bytes_over_in_process", "peaks_plausible"} <= set(checks)
    assert all("peak_pct" in benchmark[v]["b1_c1"] for v in MEASURED if benchmark[v]["b1_c1"]["status"] == "ok")
    if not TFSERVING_RUNS:
        assert "tensorflow_model_server on PATH" in benchmark["tfserving-rest-bytes"]["b1_c1"]["reason"]
    report = (tiny_repo / "metrics" / "benchmark.md").read_text()
    assert "| onnxruntime-int8 | int8 |" in report and "| kserve-rest-bytes | fp32 |" in report
    # the decision, served from its bundle and measured over each protocol beside its in-process row
    served = json.loads((tiny_repo / "metrics" / "deploy.json").read_text())["served"]
    assert served["status"] == "measured" and served["command"] == "crossdeploy serve --bundle models/deploy", served
    assert {row["status"] for row in served["protocols"].values()} == {"ok"}, served
    assert "**Served** by `crossdeploy serve --bundle models/deploy`" in (tiny_repo / "metrics" / "deploy.md").read_text()
    summary = json.loads((tiny_repo / "metrics" / "summary.json").read_text())
    assert set(summary["best_ips"]) == MEASURED | (BF16 if CPU_BF16 else set()) and set(summary["int8_top1_agreement"]) >= {
        "trained/onnxruntime-int8",
        "trained/tflite-int8",
    }

    second = sh(tiny_repo, "dvc", "repro")
    assert stages_run(second) == set()
    assert "up to date" in sh(tiny_repo, "dvc", "status")


def _stage(tiny_repo, name):
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": str(tiny_repo)}
    return subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=tiny_repo, env=env, capture_output=True, text=True, timeout=900)


def test_a_planted_file_where_the_bundle_comes_from_is_never_deployed(tiny_repo, tmp_path):
    """The issue's case, run as a user would: an input-blind file in the main model's INT8 place fails validate's
    floor (it was `unjudged` and then deployed on the stand-in's figures); damaged weights in the stand-in's INT8
    file fail its row, and the main INT8 file, unjudged on random weights, is then not eligible either."""
    import onnxruntime as ort

    from crossdeploy.data.datasets import ImageSet
    from tests.planted import answer_regardless, damage_weights

    back_to_the_run(tiny_repo)
    main_int8, standin_int8 = (
        tiny_repo / "models" / "onnx" / "model.int8.onnx",
        tiny_repo / "models" / "trained" / "onnx" / "model.int8.onnx",
    )
    kept = {path: shutil.copy(path, tmp_path / f"{i}.onnx") for i, path in enumerate((main_int8, standin_int8))}
    try:
        session = ort.InferenceSession(str(main_int8), providers=["CPUExecutionProvider"])
        images = ImageSet.load(tiny_repo / "models" / "data" / "evaluation.npz").tensors("NCHW")[:4]
        answer_regardless(kept[main_int8], main_int8, session.run(None, {"images": images})[0].mean(0))
        validated = _stage(tiny_repo, "validate")
        assert validated.returncode == 1 and "every image gets the same logits" in validated.stderr, validated.stderr[-2000:]
        parity = json.loads((tiny_repo / "metrics" / "parity.json").read_text())
        assert parity["onnxruntime-int8"]["status"] == "failed" and parity["onnxruntime-int8"]["floor"] == "failed"
        assert parity["trained/onnxruntime-int8"]["status"] == "ok"  # the stand-in's ok row no longer stands in for it
        assert _stage(tiny_repo, "deploy").returncode == 0
        decision = json.loads((tiny_repo / "metrics" / "deploy.json").read_text())
        assert decision["excluded"]["onnxruntime-int8"].startswith("parity failed: every image gets the same logits"), decision["excluded"]
        assert "A demonstration of the procedure on random weights" in (tiny_repo / "metrics" / "deploy.md").read_text()

        shutil.copy(kept[main_int8], main_int8)
        damage_weights(kept[standin_int8], standin_int8)
        assert _stage(tiny_repo, "validate").returncode == 1
        parity = json.loads((tiny_repo / "metrics" / "parity.json").read_text())
        assert parity["onnxruntime-int8"]["status"] == "unjudged" and parity["trained/onnxruntime-int8"]["status"] == "failed", parity[
            "trained/onnxruntime-int8"
        ]
        assert _stage(tiny_repo, "deploy").returncode == 0
        excluded = json.loads((tiny_repo / "metrics" / "deploy.json").read_text())["excluded"]
        assert excluded["onnxruntime-int8"].startswith("unjudged here, and trained/onnxruntime-int8 is failed"), excluded
    finally:
        for path, copy in kept.items():
            shutil.copy(copy, path)
    back_to_the_run(tiny_repo)


def test_a_quantize_param_through_hydra_reruns_only_quantize_and_what_follows(tiny_repo):
    back_to_the_run(tiny_repo)
    # Hydra composes conf/ (with crossdeploy's resolvers) and the override; the tiny sizes ride along too
    output = sh(tiny_repo, "dvc", "exp", "run", *[f"-S{o}" for o in TINY], "-Squantize.calibration_method=percentile")
    # the TensorRT INT8 engine is built from the re-quantized model, so its stage follows
    assert stages_run(output) == {"quantize", "trained", "tensorrt", "validate", "benchmark", "report", "deploy"}
    parity = json.loads((tiny_repo / "metrics" / "parity.json").read_text())
    assert parity["trained/onnxruntime-int8"]["status"] == "ok"


def test_benchmark_batch_sizes_rerun_only_the_benchmark_and_diff_per_cell(tiny_repo, tmp_path):
    back_to_the_run(tiny_repo)
    output = sh(tiny_repo, "dvc", "exp", "run", *[f"-S{o}" for o in TINY], "-Sbenchmark.batch_sizes=[1,2]")
    assert stages_run(output) == {"benchmark", "report", "deploy"}
    diff = json.loads(sh(tiny_repo, "dvc", "metrics", "diff", "--json"))["metrics/benchmark.json"]
    assert diff["onnxruntime-fp32.b2_c1.throughput_ips"]["old"] is None
    assert diff["onnxruntime-fp32.b2_c1.throughput_ips"]["new"] > 0
    assert diff["onnxruntime-fp32.b4_c1.throughput_ips"]["new"] is None

    sh(tiny_repo, "dvc", "plots", "show", "-o", str(tmp_path / "rendered"))
    html = (tmp_path / "rendered" / "index.html").read_text()
    for plot in ("latency_vs_batch.json", "throughput_vs_concurrency.json", "benchmark.png"):
        assert plot in html


def status_stages(tiny_repo):
    """Stages whose own deps or params changed, as `dvc status` reports them (nothing is run)."""
    return set(json.loads(sh(tiny_repo, "dvc", "status", "--json")))


# A change in each params section reaches exactly the stages that read it: hardware knobs (tensorrt,
# benchmark) never touch export, optimize or quantize.
SECTION_CHANGES = [
    ("data.evaluation_size", 12, {"data"}),
    ("export.opset", 18, {"export", "trained"}),
    ("fp16.op_block_list", ["Conv"], {"fp16", "trained"}),
    ("quantize.per_channel", False, {"quantize", "trained"}),
    ("to_tensorflow.version", 2, {"to_tensorflow", "package", "trained", "validate", "benchmark", "deploy"}),
    ("trained.epochs", 2, {"trained"}),
    ("package.batching.max_batch_size", 16, {"package", "trained", "deploy"}),
    ("tensorrt.workspace_mib", 1024, {"tensorrt"}),
    ("tensorrt.cuda_graph", True, {"validate", "benchmark"}),
    ("validate.batch_size", 8, {"validate"}),
    ("benchmark.concurrency", [1], {"benchmark"}),
    ("benchmark.baseline", "HEAD", {"report"}),
    ("benchmark.targets.int8_speedup_min", 4.0, {"report"}),
    ("deploy.p99_ms", 5, {"deploy"}),
]


def test_each_params_section_reaches_only_its_stages(tiny_repo):
    back_to_the_run(tiny_repo)
    assert status_stages(tiny_repo) == set()
    for key, value, expected in SECTION_CHANGES:
        params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
        (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert status_stages(tiny_repo) == expected, key
        sh(tiny_repo, "git", "checkout", "-q", "--", "params.yaml")


def test_report_params_rerun_only_the_report_which_compares_and_judges(tiny_repo):
    back_to_the_run(tiny_repo)
    overrides = ["-Sbenchmark.baseline=HEAD", "-Sbenchmark.targets.int8_speedup_min=100.0"]
    output = sh(tiny_repo, "dvc", "exp", "run", *[f"-S{o}" for o in TINY], *overrides)
    assert stages_run(output) == {"report"}
    assert "Compared with baseline `HEAD`" in (tiny_repo / "metrics" / "benchmark.md").read_text()
    checks = json.loads((tiny_repo / "metrics" / "checks.json").read_text())
    assert checks["int8_over_fp32"]["target"] == 100.0 and checks["int8_over_fp32"]["met"] is False


def test_the_deploy_slo_reruns_only_the_deploy_stage_which_moves_the_decision(tiny_repo):
    back_to_the_run(tiny_repo)
    assert (tiny_repo / "models" / "deploy" / "README.md").is_file() and (tiny_repo / "metrics" / "deploy.png").is_file()
    output = sh(tiny_repo, "dvc", "exp", "run", *[f"-S{o}" for o in TINY], "-Sdeploy.p99_ms=0.001")
    assert stages_run(output) == {"deploy"}
    after = json.loads((tiny_repo / "metrics" / "deploy.json").read_text())
    assert after["met"] is False and after["closest"]["miss_ms"] > 0
    assert "Nothing to deploy" in (tiny_repo / "models" / "deploy" / "README.md").read_text()
    diff = json.loads(sh(tiny_repo, "dvc", "metrics", "diff", "--json"))["metrics/deploy.json"]
    assert diff["p99_slo_ms"]["new"] == 0.001


def test_a_pushed_pipeline_pulls_into_a_fresh_clone_up_to_date(tiny_repo, tmp_path):
    """Nothing the pipeline writes is tied to the folder it ran in: a clone that pulls re-runs no stage,
    and the TensorRT records find their ONNX model and vouch for the pulled plans."""
    from crossdeploy.layout import engine_record, tensorrt_engines
    from crossdeploy.tensorrt.engines import plan_mismatch

    back_to_the_run(tiny_repo)
    # each checkout's own remote (config.local), so the run's commit stays the baseline of the tests that follow
    sh(tiny_repo, "dvc", "remote", "add", "--local", "-f", "-d", "shared", str(tmp_path / "remote"))
    sh(tiny_repo, "dvc", "push")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(tiny_repo), str(clone))
    sh(clone, "dvc", "remote", "add", "--local", "-f", "-d", "shared", str(tmp_path / "remote"))
    sh(clone, "dvc", "pull")
    assert stages_run(sh(clone, "dvc", "repro")) == set()
    paths = yaml.safe_load((clone / "params.yaml").read_text())["paths"]
    for engine in tensorrt_engines(paths, clone / paths["tensorrt"]):
        record = json.loads(engine_record(engine.plan).read_text())
        assert not Path(record["onnx"]).is_absolute() and record["onnx"] == str(engine.onnx), record
        assert (clone / engine.onnx).is_file(), engine.onnx
        if record["status"] == "ok":
            assert plan_mismatch(engine.plan, record) is None, engine.variant


def test_a_code_change_reaches_every_stage_that_runs_that_code(tiny_repo):
    """`dvc status` sees only stages whose own deps changed; `dvc repro --dry` shows the cascade."""
    back_to_the_run(tiny_repo)
    preprocessing = tiny_repo / "crossdeploy" / "data" / "preprocessing.py"
    original = preprocessing.read_text()
    try:
        preprocessing.write_text(original + "\n# a fix to normalize() would go here\n")
        would_run = stages_run(sh(tiny_repo, "dvc", "repro", "--dry"))
        assert {"model", "data", "quantize", "to_tensorflow", "trained", "validate", "benchmark"} <= would_run
        assert "export" not in would_run and "optimize" not in would_run
    finally:
        preprocessing.write_text(original)
    assert stages_run(sh(tiny_repo, "dvc", "repro", "--dry")) == set()


def test_bytecode_written_beside_the_code_reruns_no_stage(tiny_repo):
    """Stages depend on whole folders of code (crossdeploy/runtimes/, ...); the bytecode any import writes there
    (without PYTHONDONTWRITEBYTECODE, in another Python) is no change to them (.dvcignore)."""
    back_to_the_run(tiny_repo)
    for folder in ("runtimes", "serving", "benchmark"):
        cache = tiny_repo / "crossdeploy" / folder / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / "base.cpython-399.pyc").write_bytes(b"planted bytecode")
    assert status_stages(tiny_repo) == set()


def test_overwriting_the_users_checkpoint_or_adding_an_image_reruns_their_stage(tiny_repo):
    import torch
    import torchvision
    from PIL import Image

    back_to_the_run(tiny_repo)
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), tiny_repo / "user.pt")
    images = tiny_repo / "user_images"
    for k in range(8):
        (images / f"class{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (80, 72), (30 * k, 100, 200 - 20 * k)).save(images / f"class{k % 2}" / f"{k}.png")
    overrides = ["model.checkpoint=user.pt", "data.images=user_images", "data.calibration_size=4", "data.evaluation_size=4"]
    params = compose(TINY + overrides, config_dir=tiny_repo / "conf")
    assert params["paths"]["inputs"] == {"checkpoint": "user.pt", "images": "user_images"}
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert {"model", "data"} <= stages_run(sh(tiny_repo, "dvc", "repro", "data"))
        assert not {"model", "data"} & status_stages(tiny_repo)
        torch.manual_seed(2)
        torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), tiny_repo / "user.pt")
        assert "model" in status_stages(tiny_repo) and "data" not in status_stages(tiny_repo)
        Image.new("RGB", (80, 72), (1, 2, 3)).save(images / "class0" / "extra.png")
        assert {"model", "data"} <= status_stages(tiny_repo)
    finally:
        back_to_the_run(tiny_repo)
