"""The FP16 ONNX model: the optimized model's weights and arithmetic in half precision, its input and output
left float32, by onnxconverter-common's float16 converter (Microsoft's; NVIDIA's ModelOpt depends on it too).

TensorRT 11 builds an FP16 engine only from an FP16 model (strongly typed: 10's FP16 builder flag is gone), and
ONNX Runtime's CUDA provider runs it in FP16. With float32 input and output (keep_io_types) every caller feeds
and reads it as it does the other ONNX files: the casts sit inside the graph.

NVIDIA's ModelOpt AutoCast would choose the ops kept in FP32 from calibration data, but its onnx extra pins
onnx 1.19 and onnxruntime-gpu 1.22 (a second ONNX Runtime beside the cpu extra's) and CUDA 12's cupy; a
classifier with its BatchNorm folded converts whole, and the parity rows judge the result.

ONNX Runtime's CPU provider has no FP16 kernel for most ops: it wraps each in casts to FP32 and back and then
drops the casts between neighbours, so on the CPU the file's FP16 weights and graph are what is judged, not FP16
activations (an activation past FP16's 65504 stays finite there and is inf on a GPU).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from crossdeploy.errors import CrossdeployError

#: the converter clamps weights beyond it (its default, given explicitly so that the count of clamped tensors
#: is of the same bound); FP16's own largest is 65504
CLAMP = 1e4


@dataclass(frozen=True)
class Fp16Settings:
    #: op types kept in FP32, beside the converter's own list (Resize, TopK, Range and others): for an op whose
    #: FP16 kernel is missing on a runtime or too coarse for its inputs
    op_block_list: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        import onnx

        object.__setattr__(self, "op_block_list", tuple(self.op_block_list))
        unknown = [op for op in self.op_block_list if not onnx.defs.has(op)]
        if unknown:
            raise CrossdeployError(
                f"fp16.op_block_list names {', '.join(unknown)}, which ONNX has no op type of; list op types such as Conv or Softmax."
            )


def convert_fp16(source: Path, output: Path, settings: Fp16Settings = Fp16Settings()) -> dict[str, int]:
    """Write the FP16 model of the FP32 ONNX file `source` to `output`; return how many float weights are FP16,
    how many stay FP32, and how many weight tensors held values beyond CLAMP, which the converter clamps."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnxconverter_common import float16

    if not source.is_file():
        raise CrossdeployError(
            f"{source} is missing: the FP16 model is converted from the optimized ONNX model (run `dvc repro optimize`)."
        )
    model = onnx.load(str(source))
    weights = float_weights(model)
    if weights["fp16"] or not weights["fp32"]:
        raise CrossdeployError(
            f"{source} is not an FP32 model ({weights['fp16']} FP16 and {weights['fp32']} FP32 float weights); convert "
            "the optimized FP32 ONNX model."
        )
    clamped = sum(
        bool(np.abs(numpy_helper.to_array(i)).max(initial=0) > CLAMP) for i in model.graph.initializer if i.data_type == TensorProto.FLOAT
    )
    with warnings.catch_warnings():
        # a warning per weight tensor it clamps: those with values below FP16's subnormals (raised to 1e-7) are in
        # every model, and those beyond CLAMP are counted above
        warnings.simplefilter("ignore", UserWarning)
        try:
            converted = float16.convert_float_to_float16(
                model, max_finite_val=CLAMP, keep_io_types=True, op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *settings.op_block_list]
            )
            # 1.16 keeps the FP32 type hint of an op kept in FP32 (fp16.op_block_list) beside the FP16 one it adds for
            # the cast after it, and ONNX Runtime refuses the model. The hints are optional (ONNX Runtime and TensorRT
            # infer the types), and the full check infers them all and proves they agree
            del converted.graph.value_info[:]
            onnx.checker.check_model(converted, full_check=True)
        except (ValueError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise CrossdeployError(
                f"onnxconverter-common could not convert {source} to FP16 with fp16.op_block_list {list(settings.op_block_list)}: {exc}"
            ) from exc
    check_fp16_model(converted, f"the FP16 conversion of {source}")
    onnx.save(converted, str(output))
    return {**float_weights(converted), "clamped_tensors": clamped}


def float_weights(model) -> dict[str, int]:
    """How many of the model's float initializers are FP16 and how many FP32."""
    from onnx import TensorProto

    types = [i.data_type for i in model.graph.initializer]
    return {"fp16": types.count(TensorProto.FLOAT16), "fp32": types.count(TensorProto.FLOAT)}


def check_fp16_model(model, name: str) -> None:
    """Raise with one sentence where `model` is not an FP16 model its callers can use: float32 input and output,
    and float weights in FP16 (a file under the FP16 name that holds the FP32 model runs, and passes parity, but
    is not what the FP16 engine and rows are about). Ops kept in FP32 keep their weights in FP32."""
    from onnx import TensorProto

    io = {value.name: value.type.tensor_type.elem_type for value in (*model.graph.input, *model.graph.output)}
    wrong = [f"{n} ({TensorProto.DataType.Name(t)})" for n, t in io.items() if t != TensorProto.FLOAT]
    if wrong:
        raise CrossdeployError(f"{name}: its input and output must stay float32 for its callers, but {', '.join(wrong)} are not.")
    weights = float_weights(model)
    if not weights["fp16"]:
        raise CrossdeployError(
            f"{name} holds none of its {weights['fp32']} float weights in FP16: it is not an FP16 model (the fp16 stage converts one)."
        )


def check_fp16_file(path: Path, name: str) -> None:
    """check_fp16_model for the file at `path`, naming the variant that runs it."""
    import onnx

    check_fp16_model(onnx.load(str(path), load_external_data=False), f"{name}: {path}")
