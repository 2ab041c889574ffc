"""The whole pipeline through real `dvc repro` and `dvc exp run`, in a throwaway copy of the repository."""

import json
import shutil
import subprocess

import pytest
import yaml

from crossdeploy.compose import compose
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TINY = [
    "model=resnet18-tiny", "data.calibration_size=16", "data.evaluation_size=16", "quantize.calibration_size=16",
    "benchmark.profile=quick", "benchmark.batch_sizes=[1,4]", "benchmark.concurrency=[1,2]",
    "benchmark.torch_compile=false", "benchmark.mlperf.variants=[onnxruntime-int8]", "benchmark.targets.int8_speedup_batch=4",
]
VARIANTS = {
    "torch-fp32", "onnxruntime-fp32", "onnxruntime-int8", "onnxruntime-int8-trt",
    "tf-savedmodel-fp32", "tflite-fp32", "tflite-fp16", "tflite-int8",
}
STAGES = {"model", "data", "export", "optimize", "quantize", "to_tensorflow", "package", "validate", "benchmark"}


def sh(cwd, *args, timeout=900):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def stages_run(output):
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    tracked = sh(ROOT, "git", "ls-files", "--cached", "--others", "--exclude-standard").split()
    for name in tracked:
        if (ROOT / name).is_file() and not name.startswith(("metrics/", "models/")) and name != "dvc.lock":
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(compose(TINY, config_dir=ROOT / "conf"), sort_keys=False))
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    return repo


def test_repro_builds_every_variant_and_is_then_up_to_date(repo):
    first = sh(repo, "dvc", "repro")
    assert stages_run(first) == STAGES
    parity = json.loads((repo / "metrics" / "parity.json").read_text())
    assert set(parity) == VARIANTS
    assert {name: row["status"] for name, row in parity.items()} == {name: "ok" for name in VARIANTS}
    assert "random weights: fidelity figures only" in (repo / "metrics" / "parity.md").read_text()
    assert json.loads((repo / "metrics" / "optimize.json").read_text())["nodes"]["exported"] > 0
    assert (repo / "models" / "tensorflow" / "savedmodel" / "resnet18-tiny" / "1" / "saved_model.pb").is_file()
    serving = repo / "models" / "serving"
    assert {p.name for p in serving.iterdir()} == {"models.config", "batching_parameters.txt", "resnet18-tiny", "kserve"}
    assert (serving / "resnet18-tiny" / "1" / "saved_model.pb").is_file()

    benchmark = json.loads((repo / "metrics" / "benchmark.json").read_text())
    assert set(benchmark) == VARIANTS | {"torch-compile-fp32", "mlperf", "harness", "checks", "device", "setup"}
    for variant in VARIANTS:
        assert set(benchmark[variant]) == {"b1_c1", "b1_c2", "b4_c1", "b4_c2"}
        assert {cell["status"] for cell in benchmark[variant].values()} == {"ok"}
    assert benchmark["torch-compile-fp32"]["b1_c1"]["reason"] == "benchmark.torch_compile is false"
    assert benchmark["mlperf"]["onnxruntime-int8"]["status"] == "ok"
    assert "int8_over_fp32" in benchmark["checks"] and "harness_overhead" in benchmark["checks"]
    assert "| onnxruntime-int8 | int8 |" in (repo / "metrics" / "benchmark.md").read_text()

    second = sh(repo, "dvc", "repro")
    assert stages_run(second) == set()
    assert "up to date" in sh(repo, "dvc", "status")


def test_quantize_param_reruns_only_quantize_and_what_follows(repo):
    sh(repo, "dvc", "repro")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["quantize"]["calibration_method"] = "percentile"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stages_run(sh(repo, "dvc", "repro")) == {"quantize", "validate", "benchmark"}
    parity = json.loads((repo / "metrics" / "parity.json").read_text())
    assert parity["onnxruntime-int8"]["status"] == "ok"


def test_exp_run_composes_params_with_hydra(repo):
    sh(repo, "git", "checkout", "-q", "--", "params.yaml")
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    # Hydra composes conf/ with this override; the tiny sizes ride along as overrides too.
    overrides = [f"-S{o}" for o in TINY] + ["-Squantize.calibration_method=entropy", "-Squantize.calibration_size=12"]
    output = sh(repo, "dvc", "exp", "run", *overrides)
    # calibration_size feeds both INT8 paths (ONNX QDQ and TFLite); nothing upstream re-runs. The TF
    # Serving package follows only if re-running to_tensorflow rewrote the SavedModel's bytes.
    ran = stages_run(output)
    assert {"quantize", "to_tensorflow", "validate", "benchmark"} <= ran <= {"quantize", "to_tensorflow", "package", "validate", "benchmark"}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["quantize"]["calibration_method"] == "entropy" and params["quantize"]["calibration_size"] == 12
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json"))
    assert any("onnxruntime-int8" in key for changes in diff.values() for key in changes)


def test_benchmark_batch_sizes_rerun_only_the_benchmark_and_diff_per_cell(repo):
    sh(repo, "git", "checkout", "-q", "--", "params.yaml")
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "benchmark baseline")
    output = sh(repo, "dvc", "exp", "run", *[f"-S{o}" for o in TINY], "-Sbenchmark.batch_sizes=[1,2]")
    assert stages_run(output) == {"benchmark"}
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json"))["metrics/benchmark.json"]
    assert diff["onnxruntime-fp32.b2_c1.throughput_ips"]["old"] is None
    assert diff["onnxruntime-fp32.b2_c1.throughput_ips"]["new"] > 0
    assert diff["onnxruntime-fp32.b4_c1.throughput_ips"]["new"] is None

    sh(repo, "dvc", "plots", "show", "-o", "rendered")
    html = (repo / "rendered" / "index.html").read_text()
    for plot in ("latency_vs_batch.json", "throughput_vs_concurrency.json", "benchmark.png"):
        assert plot in html
