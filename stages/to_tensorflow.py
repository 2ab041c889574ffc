"""Stage to_tensorflow: ONNX -> SavedModel (TF Serving layout) -> TFLite FP32, FP16 and calibrated INT8."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.datasets import ImageSet
from crossdeploy.params import load_params
from crossdeploy.stage import read_json, run_stage
from crossdeploy.tensorflow_convert import TFLITE_PRECISIONS, convert_tflite, onnx_to_keras, save_serving_model


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["to_tensorflow"]
    name = params["model"]["name"]
    input_size = read_json(Path(paths["source"]) / "preprocessing.json")["preprocessing"]["crop_size"]
    calibration = ImageSet.load(Path(paths["data"]) / "calibration.npz").tensors("NHWC")
    calibration = calibration[: int(params["quantize"]["calibration_size"])]

    keras_model = onnx_to_keras(Path(paths["onnx_optimized"]))
    with atomic_path(paths["savedmodel"], directory=True) as base:
        version_dir = base / name / str(int(cfg["version"]))
        save_serving_model(keras_model, version_dir, input_size)
        with atomic_path(paths["tflite"], directory=True) as tflite:
            for precision in TFLITE_PRECISIONS:
                convert_tflite(version_dir, tflite / f"model.{precision}.tflite", precision, calibration)
    print(f"to_tensorflow: SavedModel -> {paths['savedmodel']}/{name}/{cfg['version']}, TFLite -> {paths['tflite']}")


if __name__ == "__main__":
    run_stage(main)
