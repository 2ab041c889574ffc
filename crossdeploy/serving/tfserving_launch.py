"""The command lines that start real TF Serving on the packaged repository: the `tensorflow_model_server`
binary, or the official Docker image (its `-gpu` variant, with `--gpus all`, to run on the GPU), and the
REST status call that says when its model is ready.

Kept as data (argument lists) so they can be checked without either being installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from crossdeploy.serving.repository import BATCHING_PARAMETERS, MODELS_CONFIG, models_config

BINARY = "tensorflow_model_server"
IMAGE_REPOSITORY = "tensorflow/serving"  # the official image; gpu_image() names its CUDA build
CONTAINER_GRPC_PORT, CONTAINER_REST_PORT = 8500, 8501  # the image's entrypoint listens on these


@dataclass(frozen=True)
class Endpoint:
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500


def binary_available() -> bool:
    return shutil.which(BINARY) is not None


def docker_available() -> bool:
    """The docker CLI exists and its daemon answers."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (subprocess.SubprocessError, OSError):
        return False


def image(version: str) -> str:
    """The official image of a TF Serving version (params: package.kserve.tfserving_runtime_version)."""
    return f"{IMAGE_REPOSITORY}:{version}"


def gpu_image(image: str) -> str:
    """The official image's CUDA build: the same version's `-gpu` tag."""
    return image if image.endswith("-gpu") else f"{image}-gpu"


def unavailable_reason(gpu: bool) -> str | None:
    """Why TF Serving cannot run here (on the GPU where `gpu`), naming what is missing; None where it can."""
    if gpu:
        return gpu_unavailable_reason()
    if binary_available() or docker_available():
        return None
    return f"TF Serving needs {BINARY} on PATH or a running Docker engine; neither is here"


def gpu_unavailable_reason() -> str | None:
    """Why TF Serving cannot run on the GPU here, naming what is missing; None where it can."""
    from crossdeploy.device_info import gpus

    missing = [*([] if gpus() else ["an NVIDIA GPU (nvidia-smi lists none)"]), *([] if docker_available() else ["a running Docker engine"])]
    if not missing:
        return None
    # Docker only: a tensorflow_model_server on PATH does not say whether it is a CUDA build
    return (
        f"TF Serving on the GPU runs the official {IMAGE_REPOSITORY} -gpu image with --gpus all (Docker only, not a local {BINARY}); "
        f"missing here: {' and '.join(missing)}"
    )


def host_models_config(repository: Path, model_name: str, config_dir: Path) -> Path:
    """models.config with host paths, for the binary (the packaged one names package.base_path, the container's)."""
    path = config_dir / MODELS_CONFIG
    path.write_text(models_config(model_name, repository.resolve().as_posix()))
    return path


def binary_command(repository: Path, config_file: Path, endpoint: Endpoint) -> list[str]:
    # The binary has no bind-address flag: it listens on every interface, which the caller must say.
    return [
        BINARY,
        f"--port={endpoint.grpc_port}",
        f"--rest_api_port={endpoint.rest_port}",
        f"--model_config_file={config_file}",
        "--enable_batching=true",
        f"--batching_parameters_file={(repository / BATCHING_PARAMETERS).resolve()}",
    ]


def docker_command(repository: Path, endpoint: Endpoint, image: str, gpu: bool, base_path: str, name: str | None = None) -> list[str]:
    """The repository is mounted at package.base_path: its models.config names the models there."""
    image = gpu_image(image) if gpu else image
    base = PurePosixPath(base_path)
    return [
        "docker",
        "run",
        "--rm",
        "--init",
        *(["--name", name] if name else []),
        # TF32 off: cuDNN and cuBLAS would otherwise round fp32 convolutions to 10-bit mantissas on
        # Ampere and later, and the fp32 rows are judged against fp32 thresholds
        *(["--gpus", "all", "-e", "NVIDIA_TF32_OVERRIDE=0"] if gpu else []),
        "-p",
        f"{endpoint.host}:{endpoint.rest_port}:{CONTAINER_REST_PORT}",
        "-p",
        f"{endpoint.host}:{endpoint.grpc_port}:{CONTAINER_GRPC_PORT}",
        "--mount",
        f"type=bind,source={repository.resolve()},target={base},readonly",
        image,
        f"--model_config_file={base / MODELS_CONFIG}",
        "--enable_batching=true",
        f"--batching_parameters_file={base / BATCHING_PARAMETERS}",
    ]


def model_ready(endpoint: Endpoint, name: str) -> bool:
    """True once GET /v1/models/<name> says so (KServe: "ready"; TF Serving: a version AVAILABLE): the one
    readiness test for both engines, whoever started them."""
    host = "127.0.0.1" if endpoint.host in ("0.0.0.0", "::") else endpoint.host
    try:
        with urllib.request.urlopen(f"http://{host}:{endpoint.rest_port}/v1/models/{name}", timeout=2) as response:
            status = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    versions = status.get("model_version_status", [])
    return bool(status.get("ready")) or any(v.get("state") == "AVAILABLE" for v in versions)
