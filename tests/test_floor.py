"""The floor, whatever the weights: a variant whose outputs ignore the input, are constant or zero, barely move,
or are not finite is failed, never unjudged, on random weights of several families; planted in the main
model's own INT8 file, where the deploy bundle comes from."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from crossdeploy.compose import compose
from tests.conftest import ROOT
from tests.planted import answer_regardless

#: the random default's family and three others with what sets them apart (depthwise, SE and SiLU, channel split)
FAMILIES = ["resnet50", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5"]
SIZE = 64

#: planted in place of model.int8.onnx: (how to build it from the real file and its mean logits, the reason's words)
DEFECTS = {
    "input-blind": (lambda real, mean, out: answer_regardless(real, out, mean), "do not depend on the input"),
    "zero": (lambda real, mean, out: answer_regardless(real, out, np.zeros_like(mean)), "every logit is zero"),
    "barely-moving": (lambda real, mean, out: answer_regardless(real, out, mean, echo=1e-4), "barely depend on the input"),
    "nan": (lambda real, mean, out: answer_regardless(real, out, np.where(np.arange(mean.size) == 3, np.nan, mean)), "NaN or inf"),
}


@pytest.fixture(scope="module")
def validate_cfg():
    return compose([], config_dir=ROOT / "conf")["validate"]


def _rows(root: Path, name: str, evaluation, cfg) -> dict:
    from crossdeploy.layout import trained_paths
    from crossdeploy.runtimes.base import ThreadSettings
    from crossdeploy.validation.parity import Floor, Thresholds
    from crossdeploy.validation.run import judging_rules, validate_variants
    from crossdeploy.variants import pipeline_variants

    params = {
        "paths": trained_paths(root),
        "model": {"name": name},
        "to_tensorflow": {"version": 1},
        "tensorrt": {"cuda_graph": False, "batch": {"min": 1, "opt": 4, "max": 8}},
    }
    variants = [v for v in pipeline_variants(params) if v.name in ("torch-fp32", "onnxruntime-fp32", "onnxruntime-int8")]
    thresholds = {precision: Thresholds(**values) for precision, values in cfg["thresholds"].items()}
    return validate_variants(
        variants, evaluation, **judging_rules(cfg, thresholds), batch_size=8, threads=ThreadSettings(0, 0), floor=Floor(**cfg["floor"])
    )


@pytest.fixture(scope="module", params=FAMILIES)
def random_family(request, tmp_path_factory):
    """A seeded random model of the family (made input-sensitive, as the model stage does), its ONNX and
    calibrated INT8 files in the pipeline's layout, and its evaluation images."""
    from crossdeploy.onnx.quantize import QuantizeSettings, quantize_onnx
    from tests.conftest import random_model_files

    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    paths, calibration, evaluation = random_model_files(arch, root, SIZE)
    quantize_onnx(
        Path(paths["onnx_optimized"]), Path(paths["onnx_int8"]), calibration.tensors("NCHW"), QuantizeSettings(calibration_size=16), "cpu"
    )
    return arch, root, paths, evaluation


def test_a_correct_int8_file_on_random_weights_passes_the_floor_and_stays_unjudged(random_family, validate_cfg):
    arch, root, _, evaluation = random_family
    rows = _rows(root, arch, evaluation, validate_cfg)
    row = rows["onnxruntime-int8"]
    assert row["status"] == "unjudged" and row["floor"] == "passed", row
    # INT8 noise on random weights adds spread, it does not take it away: far from the floor
    assert row["input_spread"] > 2 * validate_cfg["floor"]["input_spread_min"], row
    assert rows["onnxruntime-fp32"]["status"] == "ok" and rows["onnxruntime-fp32"]["floor"] == "passed"


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_a_planted_int8_file_fails_the_floor_on_random_weights(random_family, validate_cfg, defect, tmp_path):
    arch, root, paths, evaluation = random_family
    real = Path(paths["onnx_int8"])
    kept = shutil.copy(real, tmp_path / "real.int8.onnx")
    try:
        from tests.conftest import run_onnx

        mean = run_onnx(kept, evaluation.tensors("NCHW")).mean(0)
        build, words = DEFECTS[defect]
        build(kept, mean, real)
        row = _rows(root, arch, evaluation, validate_cfg)["onnxruntime-int8"]
    finally:
        shutil.copy(kept, real)
    assert row["status"] == "failed" and words in row["reason"], (arch, defect, row)
    assert row.get("floor") == "failed"


def test_the_floor_bound_is_checked():
    from crossdeploy.errors import CrossdeployError
    from crossdeploy.validation.parity import Floor

    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(CrossdeployError, match="validate.floor.input_spread_min"):
            Floor(input_spread_min=bad)


def test_a_reference_that_ignores_its_input_is_one_sentence():
    from crossdeploy.errors import CrossdeployError
    from crossdeploy.validation.parity import compare_logits

    same = np.ones((4, 10), np.float32)
    with pytest.raises(CrossdeployError, match="same logits for all 4 evaluation images"):
        compare_logits(same, same)
