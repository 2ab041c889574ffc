"""scripts/gpu-check on a machine without a GPU: the pipeline's own stages build every file a GPU row needs (up to
the TensorRT records, which say skipped), each GPU check is listed as skipped with the missing piece named, and a
row whose file a failed stage did not make is failed with the reason."""

import json

from crossdeploy.device_info import gpus
from crossdeploy.gpu_check import main


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
    assert [step["status"] for step in summary["benchmark"]["steps"].values()] == ["ok"] * 7  # model ... tensorrt
    for name, row in rows.items():
        assert row["status"] == "skipped" and row["reason"], name
    assert "nvidia-smi finds none" in rows["torch-cuda-fp16"]["reason"]


def test_a_row_whose_file_a_failed_step_did_not_make_is_listed_as_failed(tmp_path, monkeypatch):
    """Planted: the INT8 quantization step fails; the rows that run its file say they could not, the others go on."""
    if gpus():
        import pytest

        pytest.skip("this machine has an NVIDIA GPU: scripts/gpu-check measures it instead")
    import stages.quantize

    def broken(*args, **kwargs):
        raise ValueError("planted: the calibration produced no ranges")

    monkeypatch.setattr(stages.quantize, "quantize_flavours", broken)
    assert main([str(tmp_path), "--arch", "squeezenet1_1", "--target", "a100"]) == 1
    summary = json.loads((tmp_path / "gpu-check.json").read_text())
    steps = summary["benchmark"]["steps"]
    assert steps["quantize"]["status"] == "failed" and "planted" in steps["quantize"]["reason"]
    assert steps["tensorrt"] == {"status": "failed", "reason": "not run: stage quantize failed", "seconds": 0.0}
    rows = summary["benchmark"]["variants"]
    for name in ("onnxruntime-cuda-int8", "onnxruntime-trt-int8"):
        assert rows[name]["status"] == "failed" and "model.int8-trt.onnx was not built" in rows[name]["reason"], rows[name]
    assert rows["onnxruntime-cuda-fp32"]["status"] == "skipped"  # its file was made: only the GPU is missing
    assert "benchmark/quantize" in summary["failed"] and "benchmark/onnxruntime-cuda-int8" in summary["failed"]
