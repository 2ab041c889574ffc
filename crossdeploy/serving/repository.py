"""The TF Serving model repository: versioned SavedModels, `models.config` and `batching_parameters.txt`.

Layout, as `tensorflow_model_server --model_config_file=models.config --enable_batching
--batching_parameters_file=batching_parameters.txt` and the official Docker image expect it:

    <repository>/models.config
    <repository>/batching_parameters.txt
    <repository>/<model name>/<version>/saved_model.pb, variables/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from crossdeploy.errors import CrossdeployError

MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's server-side batching; each field is a google.protobuf wrapper in its proto."""

    max_batch_size: int
    batch_timeout_micros: int
    num_batch_threads: int
    max_enqueued_batches: int

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < (0 if name == "batch_timeout_micros" else 1):
                raise CrossdeployError(f"package.batching.{name} must be a positive integer, got {value!r}.")

    def to_text(self) -> str:
        return "".join(f"{name} {{ value: {value} }}\n" for name, value in vars(self).items())


def models_config(model_name: str, base_path: str | PurePosixPath) -> str:
    """A model_config_list serving the newest version of one model, as a text proto."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = str(PurePosixPath(base_path) / model_name)
    model.model_platform = "tensorflow"
    model.model_version_policy.latest.num_versions = 1
    return text_format.MessageToString(config)


def write_repository_files(repository: Path, model_name: str, base_path: str, batching: BatchingParameters) -> None:
    if not PurePosixPath(base_path).is_absolute():
        raise CrossdeployError(
            f"package.base_path {base_path!r} must be absolute: it is where TF Serving sees the repository "
            "(/models in the official Docker image)."
        )
    (repository / MODELS_CONFIG).write_text(models_config(model_name, base_path))
    (repository / BATCHING_PARAMETERS).write_text(batching.to_text())
