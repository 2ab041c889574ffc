"""The support matrix's table: each family's stand-in and its INT8 verdicts beside the random model's rows."""

from __future__ import annotations

from crossdeploy.experiments.support_matrix import markdown


def test_the_support_matrix_gives_each_family_its_standin_and_int8_verdicts():
    """The stand-in's accuracy and each INT8 variant's verdict on it are columns of their own, with the reason noted."""
    ok = {"status": "ok", "cosine_min": 0.5, "top1_agreement": 0.4}
    rows = {
        "efficientnet_b0": {
            "pipeline": "ok",
            "minutes": 3.0,
            "variants": {"onnxruntime-int8": {**ok, "status": "unjudged"}},
            "standin": {
                "torch-fp32": {"status": "ok", "arch": "efficientnet_b0", "accuracy_top1": 0.955},
                "onnxruntime-int8": {**ok, "top1_agreement": 0.9875},
                "onnxruntime-int8-trt": {"status": "failed", "reason": "noise_rel 0.31 > 0.15"},
                "tflite-int8": {**ok, "top1_agreement": 0.99},
                "openvino-int8": {**ok, "top1_agreement": 0.995},
            },
        },
        "maxvit_t": {
            "pipeline": "ok",
            "variants": {},
            "standin": {"torch-fp32": {"status": "skipped", "reason": "trained.enabled is false"}},
        },
    }
    text = markdown({"date": "2026-12-06", "machine": "Test CPU, 2 cores, no GPU", "rows": rows})
    line = next(row for row in text.splitlines() if row.startswith("| efficientnet_b0 |"))
    assert "| efficientnet_b0 0.955 | ok (top-1 98.8%) / failed [" in line and "/ ok (top-1 99.0%) / ok (top-1 99.5%) |" in line, line
    assert "noise_rel 0.31 > 0.15" in text and "trained.enabled is false" in text
    assert "INT8 on the stand-in" in text.splitlines()[2]
