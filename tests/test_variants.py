"""The variant table: a row names a framework that exists, and the thresholds entry that judges it."""

from pathlib import Path

import pytest

from crossdeploy.compose import compose
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
