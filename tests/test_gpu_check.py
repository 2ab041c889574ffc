"""scripts/gpu-check on a machine without a GPU: it completes, lists each GPU check as skipped with the
missing piece named, and judges a GPU row's parity so a wrong one fails the check."""

import json

import numpy as np

from crossdeploy.device_info import gpus
from crossdeploy.gpu_check import main, parity_failure
from crossdeploy.parity import compare_logits


def test_a_row_whose_logits_are_wrong_fails_the_check():
    reference = np.random.default_rng(0).standard_normal((16, 1000)).astype(np.float32)
    assert parity_failure("fp16", compare_logits(reference, reference + 1e-3)) is None
    constant = np.tile(reference[:1], (16, 1))  # an engine that ignores its input
    assert "below 0.99 (fp16)" in parity_failure("fp16", compare_logits(reference, constant))
    broken = reference.copy()
    broken[3, 7] = np.nan
    assert "NaN or infinite" in parity_failure("int8", compare_logits(reference, broken))


def test_without_a_gpu_every_check_says_what_is_missing(tmp_path):
    if gpus():
        import pytest

        pytest.skip("this machine has an NVIDIA GPU: scripts/gpu-check measures it instead")
    assert main([str(tmp_path), "--arch", "squeezenet1_1", "--target", "a100"]) == 0
    summary = json.loads((tmp_path / "gpu-check.json").read_text())
    assert summary["machine"]["gpus"] == [] and summary["failed"] == []
    assert summary["tests"]["failed"] == 0 and summary["tests"]["passed"] == 0 and summary["tests"]["skipped"] > 0
    assert summary["cuda_plumbing"]["status"] == "skipped" and summary["cuda_plumbing"]["reason"]
    rows = summary["benchmark"]["variants"]
    assert set(rows) == {
        "torch-cuda-fp16",
        "onnxruntime-cuda-fp32",
        "onnxruntime-cuda-fp16",
        "onnxruntime-cuda-int8",
        "onnxruntime-trt-int8",
        "tensorrt-fp16",
        "tensorrt-int8",
    }
    assert summary["benchmark"]["steps"]["onnx_fp16"]["status"] == "ok"
    for name, row in rows.items():
        assert row["status"] == "skipped" and row["reason"], name
    assert "nvidia-smi finds none" in rows["torch-cuda-fp16"]["reason"]


def test_a_row_whose_file_a_failed_step_did_not_make_is_listed_as_failed(tmp_path, monkeypatch):
    """Planted: the INT8 quantization step fails; the rows that run its file say they could not, the others go on."""
    if gpus():
        import pytest

        pytest.skip("this machine has an NVIDIA GPU: scripts/gpu-check measures it instead")
    import crossdeploy.onnx_quantize

    def broken(*args, **kwargs):
        raise ValueError("planted: the calibration produced no ranges")

    monkeypatch.setattr(crossdeploy.onnx_quantize, "quantize_onnx", broken)
    assert main([str(tmp_path), "--arch", "squeezenet1_1", "--target", "a100"]) == 1
    summary = json.loads((tmp_path / "gpu-check.json").read_text())
    assert summary["benchmark"]["steps"]["quantize_int8_trt"] == {**summary["benchmark"]["steps"]["quantize_int8_trt"], "status": "failed"}
    rows = summary["benchmark"]["variants"]
    for name in ("onnxruntime-cuda-int8", "onnxruntime-trt-int8"):
        assert rows[name]["status"] == "failed" and "model.int8-trt.onnx was not built" in rows[name]["reason"], rows[name]
    assert rows["onnxruntime-cuda-fp32"]["status"] == "skipped"  # its file was made: only the GPU is missing
    assert "benchmark/quantize_int8_trt" in summary["failed"] and "benchmark/onnxruntime-cuda-int8" in summary["failed"]
