"""Stage quantize: calibrated static INT8 QDQ, a CPU flavour (U8/S8) and a TensorRT flavour (S8/S8 symmetric)."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.datasets import ImageSet
from crossdeploy.onnx_quantize import QuantizeSettings, quantize_onnx
from crossdeploy.params import load_params
from crossdeploy.stage import run_stage


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["quantize"]
    settings = QuantizeSettings(**cfg)
    calibration = ImageSet.load(Path(paths["calibration"])).tensors("NCHW")
    for flavour, target in (("cpu", paths["onnx_int8"]), ("tensorrt", paths["onnx_int8_trt"])):
        with atomic_path(target) as out:
            quantize_onnx(Path(paths["onnx_optimized"]), out, calibration, settings, flavour)
        print(f"quantize: {flavour} flavour ({settings.method}, {settings.calibration_method}, {settings.calibration_size} images) -> {target}")


if __name__ == "__main__":
    run_stage(main)
