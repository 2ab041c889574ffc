"""Stage package: the SavedModel as a TF Serving repository with float and encoded-image signatures,
plus KServe InferenceService manifests beside it."""

import shutil
from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.build_failures import FAILURES_FILE, recorded_failure, write_failures
from crossdeploy.data.preprocessing import Preprocessing
from crossdeploy.layout import SAVEDMODEL_VARIANT, SERVED, model_version_dir, saved_model_version_dir
from crossdeploy.params import load_params
from crossdeploy.serving.manifests import write_manifests
from crossdeploy.serving.repository import BATCHING_PARAMETERS, BatchingParameters, write_repository_files
from crossdeploy.serving.signatures import ImageLimits, export_with_bytes_signature
from crossdeploy.stage import read_json, run_stage


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["package"]
    name, version = params["model"]["name"], int(params["to_tensorflow"]["version"])
    prep = Preprocessing.from_dict(read_json(paths["preprocessing"])["preprocessing"])
    batching = BatchingParameters(**cfg["batching"])
    limits = ImageLimits(**cfg["image_limits"])
    unbuilt = recorded_failure(Path(paths["savedmodel"]) / FAILURES_FILE, SAVEDMODEL_VARIANT)
    if unbuilt:
        # the served variants fail with the converter's reason; the rest of the pipeline goes on
        with atomic_path(paths["serving"], directory=True) as repository:
            write_failures(repository, {variant: f"no SavedModel to package: {unbuilt}" for variant in SERVED})
        print(f"warning: package: nothing to serve, {SAVEDMODEL_VARIANT} was not built: {unbuilt}")
        return
    with atomic_path(paths["serving"], directory=True) as repository:
        write_failures(repository, {})
        write_repository_files(repository, name, cfg["base_path"], batching)
        export_with_bytes_signature(
            saved_model_version_dir(paths, name, version), model_version_dir(repository, name, version), prep, limits=limits
        )
        # KServe downloads only the model base path, so its TF Serving finds the batching file there
        shutil.copy(repository / BATCHING_PARAMETERS, repository / name / BATCHING_PARAMETERS)
        write_manifests(repository / "kserve", name, cfg["kserve"])
    print(f"package: TF Serving repository -> {paths['serving']} (model {name}, version {version})")


if __name__ == "__main__":
    run_stage(main)
