"""The FP16 ONNX model: the tiny optimized model converted with the real onnxconverter-common, run by ONNX Runtime's
CPU provider as the variant table's row runs it and judged against the reference; its defects planted and caught."""

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from crossdeploy.compose import compose
from crossdeploy.errors import CrossdeployError
from crossdeploy.onnx.fp16 import Fp16Settings, check_fp16_file, convert_fp16
from crossdeploy.runtimes.base import ThreadSettings
from crossdeploy.validation.parity import Thresholds, compare_logits
from crossdeploy.validation.run import judging_rules, validate_variants
from crossdeploy.variants import REFERENCE, pipeline_variants
from tests.conftest import ROOT, run_onnx

PARAMS = compose([], config_dir=ROOT / "conf")


@pytest.fixture(scope="module")
def tiny_fp16(tiny_optimized, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    return path, convert_fp16(tiny_optimized[0], path)


def rows(tiny_source, **artifacts):
    """The variant table's rows by name, over the tiny model's files (reference: its program)."""
    table = {v.name: v for v in pipeline_variants(PARAMS)}
    return [dataclasses.replace(table[REFERENCE], artifact=tiny_source[0])] + [
        dataclasses.replace(table[name], artifact=path) for name, path in artifacts.items()
    ]


def validate(variants, tiny_images):
    cfg = PARAMS["validate"]
    thresholds = {precision: Thresholds(**values) for precision, values in cfg["thresholds"].items()}
    # random weights, as the main model's: the rules validate judges that model by
    return validate_variants(variants, tiny_images[1], **judging_rules(cfg, thresholds), batch_size=4, threads=ThreadSettings(0, 0))


def test_the_fp16_model_keeps_float32_input_and_output_and_holds_fp16_weights(tiny_fp16, tiny_optimized):
    path, counts = tiny_fp16
    model = onnx.load(str(path))
    assert [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)] == [TensorProto.FLOAT] * 2
    assert {i.data_type for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)} == {
        TensorProto.FLOAT16
    }
    floats = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert counts == {"fp16": len(floats), "fp32": 0, "clamped_tensors": 0}
    assert [i.name for i in model.graph.input] == ["images"] and model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert path.stat().st_size < 0.55 * tiny_optimized[0].stat().st_size
    check_fp16_file(path, "onnxruntime-fp16")


def test_the_fp16_row_passes_parity_on_the_cpu(tiny_fp16, tiny_optimized, tiny_source, tiny_images):
    parity = validate(rows(tiny_source, **{"onnxruntime-fp16": tiny_fp16[0]}), tiny_images)
    assert parity["onnxruntime-fp16"]["status"] == "ok" and parity["onnxruntime-fp16"]["floor"] == "passed", parity["onnxruntime-fp16"]
    # against the FP32 ONNX model, at validate's FP16 bounds for a trained model (not only the random-weight ones)
    x = tiny_images[1].tensors("NCHW")
    figures = compare_logits(run_onnx(tiny_optimized[0], x), run_onnx(tiny_fp16[0], x))
    assert Thresholds(**PARAMS["validate"]["thresholds"]["fp16"]).misses(figures) == [], figures


def test_an_fp32_file_under_the_fp16_name_fails_its_row(tiny_optimized, tiny_source, tiny_images):
    """The planted defect parity cannot see: the FP32 model, unconverted, in the FP16 model's place runs and
    agrees with the reference, but it is not what the FP16 engine and rows are about."""
    parity = validate(rows(tiny_source, **{"onnxruntime-fp16": tiny_optimized[0]}), tiny_images)
    assert parity["onnxruntime-fp16"]["status"] == "failed"
    assert f"onnxruntime-fp16: {tiny_optimized[0]} holds none of its" in parity["onnxruntime-fp16"]["reason"]
    assert "float weights in FP16: it is not an FP16 model" in parity["onnxruntime-fp16"]["reason"]


def test_a_nan_weight_in_the_fp16_model_fails_the_floor(tiny_fp16, tiny_source, tiny_images, tmp_path):
    model = onnx.load(str(tiny_fp16[0]))
    weight = next(i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16 and len(i.dims) == 4)
    poisoned = numpy_helper.to_array(weight).copy()
    poisoned.flat[0] = np.nan
    weight.CopyFrom(numpy_helper.from_array(poisoned, weight.name))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    parity = validate(rows(tiny_source, **{"onnxruntime-fp16": tmp_path / "nan.onnx"}), tiny_images)
    assert parity["onnxruntime-fp16"]["status"] == "failed" and parity["onnxruntime-fp16"]["floor"] == "failed"
    assert "logits are NaN or inf" in parity["onnxruntime-fp16"]["reason"]


def test_bad_input_gives_one_sentence(tiny_fp16, tmp_path):
    with pytest.raises(CrossdeployError, match=r"model\.optimized\.onnx is missing: .*run `dvc repro optimize`"):
        convert_fp16(tmp_path / "model.optimized.onnx", tmp_path / "out.onnx")
    with pytest.raises(CrossdeployError, match=r"is not an FP32 model \(\d+ FP16 and 0 FP32 float weights\)"):
        convert_fp16(tiny_fp16[0], tmp_path / "out.onnx")
    with pytest.raises(CrossdeployError, match="fp16.op_block_list names Convolution, which ONNX has no op type of"):
        Fp16Settings(op_block_list=["Conv", "Convolution"])
    assert not (tmp_path / "out.onnx").exists()


def test_an_op_kept_in_fp32_keeps_its_weights(tiny_optimized, tiny_images, tmp_path):
    """fp16.op_block_list: the convolutions stay FP32 between casts, the classifier head is FP16; it still runs."""
    path = tmp_path / "convs.onnx"
    counts = convert_fp16(tiny_optimized[0], path, Fp16Settings(op_block_list=["Conv"]))
    assert counts["fp16"] == 2 and counts["fp32"] > 2  # the head's weight and bias
    x = tiny_images[1].tensors("NCHW")
    assert compare_logits(run_onnx(tiny_optimized[0], x), run_onnx(path, x))["cosine_min"] > 0.9999
