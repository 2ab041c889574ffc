"""The artifact layout has one source: params.yaml's `paths`, which dvc.yaml and the stages read, and
layout.py, which builds the same layout for the trained reference model. Static and fast."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import yaml

from crossdeploy.layout import trained_paths
from tests.conftest import ROOT

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
#: entries of paths that are not one model's artifacts: the user's inputs, folders shared by every model
#: (measurements, timing caches, the trained model's own folder, the deploy bundle chosen among the variants)
#: and the metrics
NOT_PER_MODEL = {"inputs", "benchmark", "tensorrt_timing", "trained", "deploy"}


def model_artifacts(paths: dict) -> dict[str, str]:
    """paths' entries under models/, as paths relative to it."""
    return {
        key: str(PurePosixPath(value).relative_to("models"))
        for key, value in paths.items()
        if key not in NOT_PER_MODEL and isinstance(value, str) and PurePosixPath(value).parts[0] == "models"
    }


def test_the_trained_model_folder_mirrors_models(tmp_path):
    """Every artifact key the pipeline's model has, the trained model has, at the same place in its folder:
    the variant table reads both through the same keys."""
    trained = {key: str(Path(value).relative_to(tmp_path).as_posix()) for key, value in trained_paths(tmp_path).items()}
    assert model_artifacts(PARAMS["paths"]) == trained


def test_a_key_the_trained_folder_lacks_is_caught(tmp_path):
    """The planted defect: a new artifact in params' paths that trained_paths does not know."""
    paths = {**PARAMS["paths"], "onnx_bf16": "models/onnx/model.bf16.onnx"}
    trained = {key: str(Path(value).relative_to(tmp_path).as_posix()) for key, value in trained_paths(tmp_path).items()}
    assert model_artifacts(paths) != trained


def _paths_in(value) -> list[str]:
    """The path strings of a stage's deps/outs/metrics/plots list (an entry may be a {path: options} map)."""
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in value or []]


def literal_paths(dvc_yaml: dict) -> list[str]:
    """Paths in dvc.yaml's artifacts that are not exactly one ${paths.*} reference: a file name written
    there as well as in a script can drift from it."""
    return [
        f"{name}: {path}"
        for name, stage in dvc_yaml["stages"].items()
        for field in ("deps", "outs", "metrics", "plots")
        for path in _paths_in(stage.get(field))
        if not re.fullmatch(r"\$\{paths\.[a-z0-9_.]+\}", path) and not path.startswith(("stages/", "crossdeploy/"))
    ]


def test_dvc_yaml_takes_every_artifact_path_from_params():
    assert literal_paths(yaml.safe_load((ROOT / "dvc.yaml").read_text())) == []


def test_a_file_name_written_in_dvc_yaml_is_caught():
    planted = {
        "stages": {
            "report": {"deps": ["stages/report.py", "${paths.metrics}/parity.json"], "outs": [{"${paths.summary}": {"cache": False}}]}
        }
    }
    assert literal_paths(planted) == ["report: ${paths.metrics}/parity.json"]
