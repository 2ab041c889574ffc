"""Stage tftrt: the SavedModel through TF-TRT (INT8, calibrated) as a TF Serving repository for the GPU
image -> models/serving-tftrt/. Where TF-TRT cannot run, status.json says why and nothing else is written."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.build_failures import FAILURES_FILE, recorded_failure, write_failures
from crossdeploy.datasets import ImageSet
from crossdeploy.params import load_params
from crossdeploy.serving.repository import BatchingParameters, write_repository_files
from crossdeploy.stage import run_stage, write_json
from crossdeploy.tensorflow_env import import_tensorflow
from crossdeploy.tensorflow_tensorrt import convert_tftrt_int8, tftrt_unavailable_reason
from crossdeploy.layout import SAVEDMODEL_VARIANT, TFTRT_VARIANT, saved_model_version_dir


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["tensorrt"]
    name, version = params["model"]["name"], int(params["to_tensorflow"]["version"])
    tf = import_tensorflow()
    reason = "tensorrt.enabled is false" if not cfg["enabled"] else tftrt_unavailable_reason(tf)
    unbuilt = recorded_failure(Path(paths["savedmodel"]) / FAILURES_FILE, SAVEDMODEL_VARIANT)
    with atomic_path(paths["serving_tftrt"], directory=True) as repository:
        write_failures(repository, {TFTRT_VARIANT: f"no SavedModel to convert: {unbuilt}"} if reason is None and unbuilt else {})
        if reason is None and not unbuilt:
            calibration = ImageSet.load(Path(paths["data"]) / "calibration.npz").tensors("NHWC")
            calibration = calibration[: int(params["quantize"]["calibration_size"])]
            write_repository_files(repository, name, params["package"]["base_path"], BatchingParameters(**params["package"]["batching"]))
            convert_tftrt_int8(
                saved_model_version_dir(paths, name, version), repository / name / str(version), calibration,
                batch_sizes=sorted({1, int(cfg["batch"]["opt"])}), workspace_mib=int(cfg["workspace_mib"]),
            )  # fmt: skip
        write_json(repository / "status.json", {"status": "skipped", "reason": reason} if reason else {"status": "ok"})
    print(f"tftrt: {reason or (f'no SavedModel: {unbuilt}' if unbuilt else 'converted')}")


if __name__ == "__main__":
    run_stage(main)
