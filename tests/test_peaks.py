"""The GEMM peaks beside every figure: measured with torch's real kernels (small, fast), each cell's share of
its precision's peak, and the plausibility check caught on planted absurd peaks."""

from pathlib import Path

import pytest

from crossdeploy.benchmark import peaks as peaks_module
from crossdeploy.benchmark.checks import Targets, check_targets, implausible_peaks
from crossdeploy.benchmark.peaks import annotate_cells, measure_peaks, peak_precision
from crossdeploy.variants import Variant


@pytest.fixture
def small_gemm(monkeypatch):
    monkeypatch.setitem(peaks_module.SIZES, "cpu", (128, 256))
    monkeypatch.setattr(peaks_module, "SECONDS", 0.05)


def test_cpu_peaks_are_measured_and_bf16_only_with_its_instructions(small_gemm):
    found = measure_peaks("cpu", threads=1, flags=set())
    assert found["sizes"] == [128, 256] and found["threads"] == 1
    for precision in ("fp32", "int8"):
        entry = found[precision]
        assert entry["gops"] == max(entry["by_size"].values()) > 0 and entry["size"] in (128, 256)
        assert entry["seconds"] >= 0.05 and entry["gops"] == max(v for v in entry["methods"].values() if isinstance(v, float))
    assert found["bf16"]["status"] == "skipped" and "no BF16 instructions (amx_bf16, avx512_bf16)" in found["bf16"]["reason"]
    with_bf16 = measure_peaks("cpu", threads=1, flags={"avx512_bf16"})  # torch runs it either way: the flag decides
    assert with_bf16["bf16"]["gops"] > 0


def _results(ips: float) -> dict:
    cell = {"status": "ok", "throughput_ips": ips, "p50_ms": 10.0}
    return {
        "onnxruntime-int8": {"b1_c1": dict(cell), "b8_c1": {"status": "skipped", "reason": "x"}},
        "tflite-fp16": {"b1_c1": dict(cell)},
        "tensorrt-int8": {"b1_c1": dict(cell)},
    }


VARIANTS = [
    Variant("onnxruntime-int8", "int8", "int8", "onnxruntime", Path("m.onnx")),
    Variant("tflite-fp16", "fp16", "fp16", "tflite", Path("m.tflite")),
    Variant("tensorrt-int8", "int8", "int8", "tensorrt", Path("m.plan")),
]
PEAKS = {
    "cpu": {
        "device": "cpu",
        "sizes": [2048],
        "threads": 2,
        "fp32": {"gops": 100.0, "seconds": 1.0},
        "int8": {"gops": 400.0, "seconds": 1.0},
    },
    "gpu": {"status": "skipped", "reason": "no NVIDIA GPU here"},
}


def test_each_cell_gets_its_share_of_its_precisions_peak_on_its_device():
    results = _results(ips=10.0)
    annotate_cells(results, VARIANTS, PEAKS, gflops_per_image=4.0)
    assert results["onnxruntime-int8"]["b1_c1"]["peak_pct"] == 10.0  # 10 img/s x 4 GOP / 400 GOP/s
    assert results["tflite-fp16"]["b1_c1"]["peak_pct"] == 40.0  # fp16 files compute in fp32 on a CPU
    assert "peak_pct" not in results["onnxruntime-int8"]["b8_c1"]  # a skipped cell has no figure
    assert "peak_pct" not in results["tensorrt-int8"]["b1_c1"]  # a GPU row is not judged against the CPU
    assert implausible_peaks(PEAKS, results) == []
    assert peak_precision("fp16", on_gpu=True) == "fp16"


@pytest.mark.parametrize(
    "planted, words",
    [
        ({"gops": 0.0, "seconds": 1.0}, "the cpu int8 peak is 0.0, not a positive rate"),
        ({"gops": float("nan"), "seconds": 1.0}, "the cpu int8 peak is nan"),
        ({"gops": 4.0, "seconds": 1.0}, "onnxruntime-int8 b1_c1 reached 1000 % of its precision's peak"),  # below a measured cell
    ],
)
def test_an_absurd_peak_is_caught_and_the_report_check_fails(planted, words):
    peaks = {**PEAKS, "cpu": {**PEAKS["cpu"], "int8": planted}}
    results = _results(ips=10.0)
    annotate_cells(results, VARIANTS, peaks, gflops_per_image=4.0)
    problems = implausible_peaks(peaks, results)
    assert any(words in p for p in problems), problems
    check = check_targets({**results, "peaks": peaks}, {}, Targets())["peaks_plausible"]
    assert check["met"] is False and check["problems"] == problems


def test_no_peaks_recorded_is_not_a_pass():
    check = check_targets(_results(ips=10.0), {}, Targets())["peaks_plausible"]
    assert check["met"] is None and "no GEMM peaks" in check["note"]
