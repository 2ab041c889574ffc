"""The TF Serving command lines, checked as data: no binary, Docker engine or GPU needed."""

import pytest
from google.protobuf import text_format

from crossdeploy.errors import CrossdeployError
from crossdeploy.serving import serve_command, tfserving_launch
from crossdeploy.serving.repository import BatchingParameters, write_repository_files
from crossdeploy.serving.tfserving_launch import Endpoint, binary_command, docker_command, host_models_config

IMAGE = tfserving_launch.image("2.21.0")


def test_docker_command_mounts_the_repository_read_only_and_publishes_on_loopback(tmp_path):
    command = docker_command(tmp_path, Endpoint("127.0.0.1", 9001, 9000), IMAGE, gpu=False, base_path="/models")
    assert command[:4] == ["docker", "run", "--rm", "--init"]
    assert "--gpus" not in command
    published = [command[i + 1] for i, arg in enumerate(command) if arg == "-p"]
    assert published == ["127.0.0.1:9001:8501", "127.0.0.1:9000:8500"]
    assert f"type=bind,source={tmp_path.resolve()},target=/models,readonly" in command
    image_at = command.index("tensorflow/serving:2.21.0")
    assert command[image_at + 1 :] == [
        "--model_config_file=/models/models.config",
        "--enable_batching=true",
        "--batching_parameters_file=/models/batching_parameters.txt",
    ]


def test_docker_command_uses_the_gpu_image_with_a_gpu(tmp_path):
    command = docker_command(tmp_path, Endpoint(), IMAGE, gpu=True, base_path="/models")
    assert command[command.index("--gpus") + 1] == "all"
    assert command[command.index("-e") + 1] == "NVIDIA_TF32_OVERRIDE=0"  # the fp32 rows compute in fp32
    image_at = command.index("tensorflow/serving:2.21.0-gpu")
    # server-side batching into GPU batches, from the package stage's package.batching
    assert command[image_at + 1 :] == [
        "--model_config_file=/models/models.config",
        "--enable_batching=true",
        "--batching_parameters_file=/models/batching_parameters.txt",
    ]


def test_the_gpu_rows_launch_the_gpu_image_even_beside_a_local_binary(tmp_path, monkeypatch):
    """`crossdeploy serve --device gpu` (the tfserving-gpu-* rows) runs the official -gpu image: a local
    tensorflow_model_server may be a CPU build, so it serves only --device cpu and auto."""
    endpoint = Endpoint("127.0.0.1", 9001, 9000)
    monkeypatch.setattr(tfserving_launch, "binary_available", lambda: True)
    monkeypatch.setattr(tfserving_launch, "gpu_unavailable_reason", lambda: None)
    command = serve_command.tfserving_command(tmp_path, "tiny", endpoint, IMAGE, "gpu", tmp_path, "/models")
    assert command == docker_command(tmp_path, endpoint, IMAGE, gpu=True, base_path="/models")
    assert "tensorflow/serving:2.21.0-gpu" in command and command[command.index("--gpus") + 1] == "all"
    assert serve_command.tfserving_command(tmp_path, "tiny", endpoint, IMAGE, "cpu", tmp_path, "/models")[0] == "tensorflow_model_server"


def test_serving_on_the_gpu_where_none_is_names_what_is_missing(tmp_path):
    reason = tfserving_launch.gpu_unavailable_reason()
    if reason is None:
        pytest.skip("this machine has an NVIDIA GPU and a Docker engine")
    with pytest.raises(
        CrossdeployError, match="--device gpu: TF Serving on the GPU runs the official tensorflow/serving -gpu image"
    ) as raised:
        serve_command.tfserving_command(tmp_path, "tiny", Endpoint(), IMAGE, "gpu", tmp_path, "/models")
    assert "missing here: " in str(raised.value)


def _config_base_path(config_file) -> str:
    """The one model's base_path in a models.config, parsed as TF Serving parses it."""
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(config_file.read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    return model.base_path


@pytest.mark.parametrize("base_path", ["/models", "/srv/models"])
def test_docker_mounts_the_repository_where_its_models_config_says(tmp_path, base_path):
    """The planted defect was a mount at a fixed /models: with package.base_path elsewhere, TF Serving in the
    container found no model at the path models.config names."""
    repository = tmp_path / "serving"
    repository.mkdir()
    write_repository_files(repository, "resnet50", base_path, BatchingParameters(32, 2000, 2, 100))
    command = docker_command(repository, Endpoint(), IMAGE, gpu=False, base_path=base_path)
    mount = dict(option.split("=", 1) for option in command[command.index("--mount") + 1].split(",") if "=" in option)
    assert (mount["source"], mount["target"]) == (str(repository.resolve()), base_path)
    assert _config_base_path(repository / "models.config") == f"{mount['target']}/resnet50"  # inside the mount
    assert command[command.index(IMAGE) + 1 :] == [
        f"--model_config_file={base_path}/models.config",
        "--enable_batching=true",
        f"--batching_parameters_file={base_path}/batching_parameters.txt",
    ]


def test_binary_command_reads_a_models_config_with_host_paths(tmp_path):
    repository = tmp_path / "serving"
    repository.mkdir()
    write_repository_files(repository, "resnet50", "/models", BatchingParameters(32, 2000, 2, 100))
    config_file = host_models_config(repository, "resnet50", tmp_path)
    assert _config_base_path(config_file) == f"{repository.resolve()}/resnet50"
    assert binary_command(repository, config_file, Endpoint(rest_port=9001, grpc_port=9000)) == [
        "tensorflow_model_server",
        "--port=9000",
        "--rest_api_port=9001",
        f"--model_config_file={config_file}",
        "--enable_batching=true",
        f"--batching_parameters_file={repository.resolve()}/batching_parameters.txt",
    ]
