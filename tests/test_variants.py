"""The variant table: a row names a framework that exists, and the thresholds entry that judges it."""

from pathlib import Path

import pytest

from crossdeploy.compose import compose
from crossdeploy.device_info import no_gpu_reason
from crossdeploy.serving import tfserving_launch
from crossdeploy.variants import Variant, benchmark_variants
from tests.conftest import ROOT


def test_a_row_naming_no_framework_fails_when_the_table_is_built():
    with pytest.raises(ValueError, match="onnxruntime-fp32: unknown framework 'onnx-runtime'; one of torch, onnxruntime"):
        Variant("onnxruntime-fp32", "fp32", "fp32", "onnx-runtime", Path("model.onnx"))


@pytest.mark.parametrize("target", ["cpu", "a100"])
def test_every_row_is_judged_by_a_validate_thresholds_entry(target):
    params = compose([f"target={target}"], config_dir=ROOT / "conf")
    unknown = {v.name: v.thresholds for v in benchmark_variants(params) if v.thresholds not in params["validate"]["thresholds"]}
    assert unknown == {}


def test_the_gpu_rows_are_the_ones_on_a_gpu():
    params = compose(["target=a100"], config_dir=ROOT / "conf")
    on_gpu = {v.name for v in benchmark_variants(params) if v.on_gpu}
    assert on_gpu == {
        "onnxruntime-cuda-fp32",
        "onnxruntime-cuda-fp16",
        "onnxruntime-cuda-int8",
        "onnxruntime-trt-int8",
        "torch-cuda-fp16",
        "tensorrt-fp16",
        "tensorrt-int8",
        "tfserving-gpu-grpc-fp32",
        "tfserving-gpu-rest-bytes",
    }


def test_no_gpu_is_certain_only_without_nvidia_smi_and_without_a_gpu_device_node(tmp_path, monkeypatch):
    """A container given a GPU but not the driver's utilities has /dev/nvidia0 and no nvidia-smi: its GPU rows
    must still be tried (planted: the node), and a machine with neither is told at once."""
    from crossdeploy import device_info

    monkeypatch.setattr(device_info, "gpus", lambda: [])
    assert no_gpu_reason(tmp_path) == "no NVIDIA GPU here (nvidia-smi finds none)"
    for node in ("nvidia0", "dxg"):
        (tmp_path / node).touch()
        assert no_gpu_reason(tmp_path) is None
        (tmp_path / node).unlink()
    (tmp_path / "nvidiactl").touch()  # the control node alone is not a GPU
    assert no_gpu_reason(tmp_path) is not None


def test_a_tfserving_row_without_binary_or_docker_is_told_without_starting_anything():
    row = Variant("tfserving-rest-fp32", "fp32", "fp32", "served", Path("repo/m/1"), {"engine": "tfserving", "gpu": False})
    kserve = Variant("kserve-rest-fp32", "fp32", "fp32", "served", Path("repo/m/1"), {"engine": "kserve", "gpu": False})
    assert kserve.absent_reason() is None  # only importing kserve can tell
    if tfserving_launch.binary_available() or tfserving_launch.docker_available():
        assert row.absent_reason() is None
    else:
        assert row.absent_reason() == "TF Serving needs tensorflow_model_server on PATH or a running Docker engine; neither is here"
