"""A skip is only a skip: a missing optional runtime or device skips a variant; a broken install or a
bug in crossdeploy fails it, in validate and in the benchmark; a variant the target requires fails the
validate stage when it is skipped; a target whose figures are missing says "not measured" and why."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import yaml

from crossdeploy.benchmark.checks import Targets, check_targets
from crossdeploy.benchmark.closed_loop import WindowSettings
from crossdeploy.benchmark.mlperf import MlperfSettings
from crossdeploy.benchmark.plan import BenchmarkPlan
from crossdeploy.benchmark.run import run_benchmark
from crossdeploy.compose import compose
from crossdeploy.errors import CrossdeployError
from crossdeploy.runtimes.base import Runner, ThreadSettings, unavailable_reason
from crossdeploy.validation.parity import Thresholds
from crossdeploy.validation.run import required_variants, unmet_requirements, validate_variants
from crossdeploy.variants import Variant, pipeline_variants
from tests.conftest import A100, ROOT


def _import_crossdeploy_module():
    importlib.import_module("crossdeploy.no_such_runtime")  # a bug in crossdeploy's own imports


def _missing_tensorrt():
    raise ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt")


def _missing_onnxruntime():
    raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")  # a required dependency


class RaisingRunner(Runner):
    """A real runner whose runtime cannot be opened, the way each planted defect makes it fail."""

    def __init__(self, name: str, threads: ThreadSettings, defect):
        super().__init__(name, threads)
        self.defect = defect

    def _activate_impl(self) -> None:
        self.defect()

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        raise AssertionError("never activated")


@dataclass(frozen=True)
class DefectiveVariant(Variant):
    """A table row whose runner fails to open with its planted defect."""

    defect: Callable[[], None] = _missing_tensorrt

    def runner(self, threads: ThreadSettings) -> Runner:
        return RaisingRunner(self.name, threads, self.defect)


DEFECTS = {"broken-import": _import_crossdeploy_module, "no-tensorrt": _missing_tensorrt, "no-onnxruntime": _missing_onnxruntime}


@pytest.fixture
def defective_variants(tiny_source):
    # each needs an artifact that exists, or it is skipped as "not built" before its runtime is tried
    return [DefectiveVariant(name, "fp32", "fp32", "torch", tiny_source[0], defect=defect) for name, defect in DEFECTS.items()]


def raised(defect) -> BaseException:
    try:
        defect()
    except BaseException as exc:
        return exc
    raise AssertionError("the defect raised nothing")


def test_only_a_missing_optional_package_is_a_skip():
    assert "optional package tensorrt" in unavailable_reason("tensorrt", raised(_missing_tensorrt))
    assert unavailable_reason("x", raised(_import_crossdeploy_module)) is None
    assert unavailable_reason("onnxruntime", raised(_missing_onnxruntime)) is None

    def broken_tensorrt():  # installed, but a part of it is missing
        raise ModuleNotFoundError("No module named 'tensorrt.plugin'", name="tensorrt.plugin")

    def tensorrt_without_its_libraries():
        raise ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory")

    assert unavailable_reason("tensorrt", raised(broken_tensorrt)) is None
    assert unavailable_reason("tensorrt", raised(tensorrt_without_its_libraries)) is None

    def cuda_python_missing_beside_a_cuda_namespace():  # crossdeploy.tensorrt.cuda's fallback, where another wheel made `cuda/`
        try:
            raise ModuleNotFoundError("No module named 'cuda.bindings'", name="cuda.bindings")
        except ImportError:
            raise ImportError("cannot import name 'cudart' from 'cuda' (unknown location)", name="cuda")

    assert "optional package cuda-python" in unavailable_reason("tensorrt", raised(cuda_python_missing_beside_a_cuda_namespace))


def test_validate_fails_a_broken_variant_and_skips_a_missing_optional_one(defective_variants, tiny_source, tiny_images):
    variants = [Variant("torch-fp32", "fp32", "fp32", "torch", tiny_source[0]), *defective_variants]
    thresholds = {"fp32": Thresholds(top1_agreement=1.0, top5_overlap=0.99, cosine_min=0.99999, max_abs_err_rel=1e-3)}
    results = validate_variants(variants, tiny_images[1], thresholds, batch_size=4, threads=ThreadSettings(intra_op=1))
    assert results["broken-import"]["status"] == "failed"
    assert "No module named 'crossdeploy.no_such_runtime'" in results["broken-import"]["reason"]
    assert results["no-onnxruntime"]["status"] == "failed" and "onnxruntime" in results["no-onnxruntime"]["reason"]
    # the variant, not a runtime's key, is what the reason says needs the package
    assert results["no-tensorrt"]["status"] == "skipped"
    assert results["no-tensorrt"]["reason"].startswith("no-tensorrt needs the optional package tensorrt, which is not installed here")


def test_benchmark_fails_a_broken_variant_and_skips_a_missing_optional_one(defective_variants, tiny_images, tmp_path):
    plan = BenchmarkPlan(
        batch_sizes=[1],
        concurrencies=[1],
        threads=ThreadSettings(),
        windows=WindowSettings(warmup_requests=1, window_s=0.05, max_windows=2, stability_pct=50, cell_cap_s=0.2),
        mlperf=MlperfSettings(min_duration_ms=100, min_query_count={"singlestream": 4, "offline": 4, "server": 4}),
        mlperf_variants=None,
        harness_check=True,
        harness_variant="broken-import",
    )
    results = run_benchmark(defective_variants, tiny_images[1], plan, tmp_path)
    broken, optional = results["broken-import"]["b1_c1"], results["no-tensorrt"]["b1_c1"]
    assert broken["status"] == "failed" and "crossdeploy.no_such_runtime" in broken["reason"]
    assert results["no-onnxruntime"]["b1_c1"]["status"] == "failed"
    assert optional["status"] == "skipped" and "optional package tensorrt" in optional["reason"]
    # what follows a failed sweep stays a failure: the MLPerf row and the harness measured on it
    assert results["mlperf"]["broken-import"]["status"] == "failed" and results["mlperf"]["no-tensorrt"]["status"] == "skipped"
    assert results["harness"]["status"] == "failed" and "crossdeploy.no_such_runtime" in results["harness"]["reason"]


def test_unknown_required_variant_names_the_param():
    with pytest.raises(CrossdeployError, match="validate.require names unknown variants tensorrt-int9"):
        required_variants(["torch-fp32", "tensorrt-int9"], ["torch-fp32", "tensorrt-int8"])
    skipped = {"tensorrt-int8": {"status": "skipped", "reason": "no NVIDIA GPU here"}, "torch-fp32": {"status": "ok"}}
    assert unmet_requirements(skipped, required_variants(["torch-fp32", "tensorrt-int8"], list(skipped))) == [
        "tensorrt-int8 is required on this target (validate.require) but was skipped: no NVIDIA GPU here"
    ]


@pytest.mark.parametrize("target", ["cpu", "a100", "h100"])
def test_every_target_requires_variants_that_exist(target):
    params = compose([f"target={target}"], config_dir=ROOT / "conf")
    required = required_variants(params["validate"]["require"], [v.name for v in pipeline_variants(params)])
    assert {"torch-fp32", "onnxruntime-int8", "tflite-int8", "kserve-rest-bytes"} <= set(required)
    assert not {name for name in required if name.startswith("tfserving-")}  # pip installs neither TF Serving nor Docker
    gpu = {"tensorrt-fp16", "tensorrt-int8", "onnxruntime-cuda-fp32", "onnxruntime-trt-int8", "torch-cuda-fp16"}
    assert gpu <= set(required) if target != "cpu" else not gpu & set(required)


def run_validate_stage(tmp_path, tiny_source, tiny_images, **validate):
    """stages/validate.py in a directory holding only the reference and the evaluation set: every other
    variant is skipped as not built."""
    params = compose(["model=resnet18-tiny"], config_dir=ROOT / "conf")
    params["validate"].update(validate)
    source, data = tmp_path / params["paths"]["source"], tmp_path / params["paths"]["data"]
    source.mkdir(parents=True)
    data.mkdir(parents=True)
    shutil.copy(tiny_source[0], source / "model.pt2")
    (source / "model.json").write_text(json.dumps(tiny_source[1].to_dict()))
    tiny_images[1].save(data / "evaluation.npz")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "stages.validate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_required_variant_skipped_fails_the_stage(tmp_path, tiny_source, tiny_images):
    result = run_validate_stage(tmp_path / "strict", tiny_source, tiny_images, require=["torch-fp32", "onnxruntime-fp32"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "onnxruntime-fp32 is required on this target (validate.require) but was skipped: " in result.stderr
    assert "model.optimized.onnx was not built" in result.stderr
    parity = json.loads((tmp_path / "strict" / "metrics" / "parity.json").read_text())
    assert parity["onnxruntime-fp32"]["status"] == "skipped" and parity["torch-fp32"]["status"] == "ok"

    lenient = run_validate_stage(tmp_path / "lenient", tiny_source, tiny_images, require=["onnxruntime-fp32"], strict=False)
    assert lenient.returncode == 0 and "warning: onnxruntime-fp32 is required on this target" in lenient.stdout


def test_a_target_whose_variant_was_skipped_is_not_measured():
    skipped = {"status": "skipped", "reason": "ONNX Runtime here has no CUDAExecutionProvider"}
    results = {
        "onnxruntime-int8": {"b32_c1": skipped},
        "onnxruntime-fp32": {"b32_c1": {"status": "ok", "throughput_ips": 10.0}},
        "tf-savedmodel-fp32": {"b32_c8": {"status": "ok", "throughput_ips": 10.0}},
        "kserve-rest-bytes": {"b32_c8": {"status": "failed", "reason": "ConnectionError: refused"}},
        "harness": {"status": "skipped", "reason": "benchmark.harness_check is false"},
        "mlperf": {},
        "device": {"gpus": []},
    }
    gpu = dict(A100["benchmark"]["targets"]["gpu"])
    parity = {"tensorrt-int8": {"status": "skipped", "reason": "no NVIDIA GPU here (nvidia-smi finds none)"}}
    checks = check_targets(results, parity, Targets(gpu=gpu))
    assert checks["int8_over_fp32"] == {
        "batch": 32,
        "target": 3.0,
        "met": None,
        "note": "not measured: onnxruntime-int8 skipped: ONNX Runtime here has no CUDAExecutionProvider",
    }
    assert checks["harness_overhead"]["met"] is None and "benchmark.harness_check is false" in checks["harness_overhead"]["note"]
    assert checks["kserve_bytes_over_in_process"]["note"] == "not measured: kserve-rest-bytes failed: ConnectionError: refused"
    assert checks["tfserving_bytes_over_in_process"]["note"] == "not measured: tfserving-rest-bytes is not in benchmark.variants"
    target = checks["gpu_target"]
    assert target["offline"]["met"] is None and "the reference is for an A100; this run had no GPU" in target["offline"]["note"]
    assert target["int8_top1_agreement"]["note"] == "not measured: tensorrt-int8 skipped: no NVIDIA GPU here (nvidia-smi finds none)"
    assert all(
        c["met"] is None for c in [*(v for k, v in checks.items() if k != "gpu_target"), target["offline"], target["singlestream_p90"]]
    )
