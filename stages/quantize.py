"""Stage quantize: calibrated static INT8 QDQ, a CPU flavour (U8/S8) and a TensorRT flavour (S8/S8 symmetric)."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.data.datasets import ImageSet
from crossdeploy.onnx.quantize import QuantizeSettings, quantize_flavours
from crossdeploy.params import load_params
from crossdeploy.stage import run_stage


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["quantize"]
    settings = QuantizeSettings(**cfg)
    calibration = ImageSet.load(Path(paths["calibration"])).tensors("NCHW")
    targets = {"cpu": paths["onnx_int8"], "tensorrt": paths["onnx_int8_trt"]}
    with atomic_path(targets["cpu"]) as cpu, atomic_path(targets["tensorrt"]) as tensorrt:
        quantize_flavours(Path(paths["onnx_optimized"]), {"cpu": cpu, "tensorrt": tensorrt}, calibration, settings)
    for flavour, target in targets.items():
        print(
            f"quantize: {flavour} flavour ({settings.method}, {settings.calibration_method}, "
            f"{settings.calibration_size} images) -> {target}"
        )


if __name__ == "__main__":
    run_stage(main)
