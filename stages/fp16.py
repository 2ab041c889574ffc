"""Stage fp16: the optimized ONNX model in FP16, input and output float32 -> models/onnx/model.fp16.onnx (the FP16
TensorRT engine's and the FP16 ONNX Runtime rows' model)."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.onnx.fp16 import Fp16Settings, convert_fp16
from crossdeploy.params import load_params
from crossdeploy.stage import run_stage


def main() -> None:
    params = load_params()
    paths = params["paths"]
    settings = Fp16Settings(**params["fp16"])
    with atomic_path(paths["onnx_fp16"]) as out:
        counts = convert_fp16(Path(paths["onnx_optimized"]), out, settings)
    print(
        f"fp16: {counts['fp16']} weight tensors in FP16, {counts['fp32']} kept in FP32, {counts['clamped_tensors']} clamped "
        f"to FP16's range -> {paths['onnx_fp16']}"
    )


if __name__ == "__main__":
    run_stage(main)
