"""The FP16 ONNX model: the tiny optimized model converted with the real onnxconverter-common and run by ONNX
Runtime's CPU provider; bad input gives one sentence."""

import onnx
import pytest
from onnx import TensorProto

from crossdeploy.errors import CrossdeployError
from crossdeploy.onnx_fp16 import Fp16Settings, check_fp16_file, convert_fp16
from crossdeploy.parity import compare_logits
from tests.conftest import run_onnx


@pytest.fixture(scope="module")
def tiny_fp16(tiny_optimized, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    return path, convert_fp16(tiny_optimized[0], path)


def test_the_fp16_model_keeps_float32_input_and_output_and_holds_fp16_weights(tiny_fp16, tiny_optimized):
    path, counts = tiny_fp16
    model = onnx.load(str(path))
    assert [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)] == [TensorProto.FLOAT] * 2
    assert {i.data_type for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)} == {TensorProto.FLOAT16}
    floats = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert counts == {"fp16": len(floats), "fp32": 0, "clamped_tensors": 0}
    assert [i.name for i in model.graph.input] == ["images"] and model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert path.stat().st_size < 0.55 * tiny_optimized[0].stat().st_size
    check_fp16_file(path, "onnxruntime-fp16")


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
