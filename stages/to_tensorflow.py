"""Stage to_tensorflow: ONNX -> SavedModel (TF Serving layout) -> TFLite FP32, FP16 and calibrated INT8."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.build_failures import write_failures
from crossdeploy.data.datasets import ImageSet
from crossdeploy.layout import SAVEDMODEL_VARIANT, model_version_dir, saved_model_version_dir
from crossdeploy.params import load_params
from crossdeploy.stage import read_json, run_stage
from crossdeploy.tensorflow.convert import convert_to_tensorflow_isolated


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["to_tensorflow"]
    name = params["model"]["name"]
    input_size = read_json(paths["preprocessing"])["preprocessing"]["crop_size"]
    calibration = ImageSet.load(Path(paths["calibration"])).tensors("NHWC")
    calibration = calibration[: int(params["quantize"]["calibration_size"])]

    with atomic_path(paths["savedmodel"], directory=True) as base, atomic_path(paths["tflite"], directory=True) as tflite:
        version_dir = model_version_dir(base, name, cfg["version"])
        failures = convert_to_tensorflow_isolated(Path(paths["onnx_optimized"]), version_dir, tflite, input_size, calibration)
        write_failures(base, {k: v for k, v in failures.items() if k == SAVEDMODEL_VARIANT})
        write_failures(tflite, {k: v for k, v in failures.items() if k != SAVEDMODEL_VARIANT})
    print(f"to_tensorflow: SavedModel -> {saved_model_version_dir(paths, name, cfg['version'])}, TFLite -> {paths['tflite']}")
    for variant, reason in failures.items():
        print(f"warning: {variant} was not built: {reason}")


if __name__ == "__main__":
    run_stage(main)
