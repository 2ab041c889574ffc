"""Served variants as runners: `crossdeploy serve` started in a child process and called over REST,
compared with the in-process SavedModel it serves; TF Serving's variants (CPU and GPU) say why they cannot run."""

import numpy as np
import pytest

from crossdeploy.compose import compose
from crossdeploy.device_info import gpus
from crossdeploy.errors import RuntimeUnavailable
from crossdeploy.layout import SERVED
from crossdeploy.runtimes.base import ThreadSettings, unavailable_reason
from crossdeploy.runtimes.served_runtime import ServedRunner
from crossdeploy.runtimes.tensorflow_runtime import TensorFlowRunner
from crossdeploy.serving import tfserving_launch
from crossdeploy.serving.shared_servers import SharedServers
from crossdeploy.validation.parity import compare_logits
from crossdeploy.variants import pipeline_variants
from tests.conftest import ROOT


def served_runner(served_repo, name: str, **options) -> ServedRunner:
    """The runner of a served row over the test repository, handed what the variant table hands it."""
    how = {**SERVED[name]._asdict(), **options}
    return ServedRunner(name, **how, repository=served_repo / "models" / "serving", model="tiny", params_file=served_repo / "params.yaml")


@pytest.fixture(scope="module")
def in_process(tiny_saved_model, tiny_images):
    with TensorFlowRunner(tiny_saved_model) as runner:
        return runner.infer_all(runner.inputs(tiny_images[1]), 4)


def test_served_floats_equal_the_in_process_savedmodel(served_repo, tiny_images, in_process):
    with served_runner(served_repo, "kserve-rest-fp32") as runner:
        served = runner.infer_all(runner.inputs(tiny_images[1]), 4)
    np.testing.assert_allclose(served, in_process, rtol=1e-5, atol=1e-5)


def test_a_prepared_request_is_encoded_once_and_answers_as_infer_does(served_repo, tiny_images, in_process):
    """The closed loop's clients send one prepared body again and again (perf_analyzer's way), so the
    JSON encoding is not timed as the server's; the answer is the same logits."""
    with served_runner(served_repo, "kserve-rest-fp32") as runner:
        batch = runner.inputs(tiny_images[1])[:4]
        prepared = runner.prepare(batch)
        assert isinstance(prepared, bytes) and prepared.startswith(b'{"instances":')
        for _ in range(2):
            np.testing.assert_allclose(runner.infer_prepared(prepared), in_process[:4], rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="float32 NHWC batch"):
            runner.prepare(batch.astype(np.float64))  # checked as infer checks


def test_served_bytes_match_the_pipeline_preprocessing(served_repo, tiny_images, in_process):
    """The JPEGs the data stage kept, decoded and resized in the serving graph, give the logits of the
    pixels PIL made from the same files."""
    with served_runner(served_repo, "kserve-rest-bytes") as runner:
        batch = runner.inputs(tiny_images[1])
        assert batch.dtype == object and batch[0][:2] == b"\xff\xd8"  # JPEG files, not tensors
        served = runner.infer_all(batch, 4)
    # random weights amplify the grey level a resize may round differently (cosine about 0.998)
    assert compare_logits(in_process, served)["cosine_min"] >= 0.99


def test_a_bytes_runner_rejects_tensors(served_repo, tiny_images):
    runner = served_runner(served_repo, "kserve-rest-bytes")
    runner.is_active = True  # the check comes before any request
    with pytest.raises(ValueError, match="1-D object array of encoded images"):
        runner.infer(tiny_images[1].tensors("NHWC"))


def test_an_image_set_without_files_cannot_feed_the_bytes_path(served_repo, tiny_images):
    runner = served_runner(served_repo, "kserve-rest-bytes")
    assert tiny_images[0].encoded is None  # calibration keeps pixels only
    with pytest.raises(RuntimeUnavailable, match="keeps no encoded images"):
        runner.inputs(tiny_images[0])


@pytest.mark.skipif(
    tfserving_launch.binary_available() or tfserving_launch.docker_available(),
    reason="TF Serving can run here",
)
def test_tfserving_variants_say_why_they_cannot_run(served_repo):
    runner = served_runner(served_repo, "tfserving-grpc-fp32")
    with pytest.raises(RuntimeUnavailable, match="tensorflow_model_server on PATH or a running Docker engine"):
        runner.activate()


@pytest.mark.skipif(bool(gpus()), reason="this machine has an NVIDIA GPU")
def test_a_tfserving_gpu_row_without_a_gpu_is_skipped_naming_the_gpu(served_repo):
    """The table's tfserving-gpu-* rows serve the packaged repository from the -gpu image; where there is
    no GPU, the runner (a real one) says so, and validate and benchmark record the row as skipped."""
    params = compose(["model=resnet18-tiny"], config_dir=ROOT / "conf")
    params["model"]["name"], params["paths"]["serving"] = "tiny", str(served_repo / "models" / "serving")
    by_name = {v.name: v for v in pipeline_variants(params)}
    for name in ("tfserving-gpu-grpc-fp32", "tfserving-gpu-rest-bytes"):
        variant = by_name[name]
        assert variant.missing_reason() is None and variant.build_failure() is None  # the CPU rows' repository
        runner = variant.runner(ThreadSettings())
        assert isinstance(runner, ServedRunner) and runner.gpu
        with pytest.raises(RuntimeUnavailable) as raised:
            runner.activate()
        reason = unavailable_reason(variant.name, raised.value)
        assert "tensorflow/serving -gpu image with --gpus all" in reason
        assert "missing here: an NVIDIA GPU (nvidia-smi lists none)" in reason
        assert ("a running Docker engine" in reason) != tfserving_launch.docker_available()
        assert "2.17" not in reason and "TF-TRT" not in reason  # nothing the project's pins forbid
        assert not runner.is_active


def test_served_rows_start_their_server_on_their_device(served_repo):
    """A TF Serving row starts `crossdeploy serve --device cpu`, its GPU twin `--device gpu`."""
    endpoint = tfserving_launch.Endpoint("127.0.0.1", 9001, 9000)
    for gpu, device in ((False, "cpu"), (True, "gpu")):
        server = served_runner(served_repo, "tfserving-grpc-fp32", gpu=gpu).server_process()
        try:
            command = server.command(endpoint)
        finally:
            server.close()
        assert command[command.index("--device") + 1] == device
    server = served_runner(served_repo, "kserve-rest-fp32").server_process()
    server.close()
    assert "--device" not in server.command(endpoint)
    with pytest.raises(ValueError, match="only TF Serving runs on the GPU"):
        served_runner(served_repo, "kserve-rest-fp32", gpu=True)


def test_the_table_hands_a_served_row_its_model_and_repository(tmp_path):
    """The runner serves the model and repository the variant table names: it reads no params itself."""
    params = compose(["model=resnet18-tiny"], config_dir=ROOT / "conf")
    params["model"]["name"], params["paths"]["serving"] = "handed", str(tmp_path / "repository")
    server = {v.name: v for v in pipeline_variants(params)}["tfserving-rest-fp32"].runner(ThreadSettings()).server_process()
    server.close()
    command = server.command(tfserving_launch.Endpoint("127.0.0.1", 9001, 9000))
    assert command[command.index("--model") + 1] == "handed"
    assert command[command.index("--repository") + 1] == str((tmp_path / "repository").resolve())


def test_in_a_shared_scope_the_float_and_bytes_rows_use_one_server(served_repo, tiny_images, in_process):
    with SharedServers() as shared:
        with served_runner(served_repo, "kserve-rest-fp32") as floats:
            served = floats.infer_all(floats.inputs(tiny_images[1]), 4)
            server = floats._server
        assert server.running(), "the scope keeps the server for the next row"
        with served_runner(served_repo, "kserve-rest-bytes") as images:
            assert images._server is server
            encoded = images.infer_all(images.inputs(tiny_images[1]), 4)
        shared.close_idle()
        assert not server.running()
    np.testing.assert_allclose(served, in_process, rtol=1e-5, atol=1e-5)
    assert compare_logits(in_process, encoded)["cosine_min"] >= 0.99


def test_a_shared_scope_stops_its_idle_server_at_its_end_and_replaces_a_dead_one(served_repo, tiny_images):
    with SharedServers():
        with served_runner(served_repo, "kserve-rest-fp32") as runner:
            first = runner._server
        first.process.kill()
        first.process.wait()
        with served_runner(served_repo, "kserve-rest-fp32") as runner:
            second = runner._server
            assert second is not first and second.running()
            runner.infer_all(runner.inputs(tiny_images[1])[:2], 2)
    assert not second.running() and not second.log.exists()


def test_outside_a_shared_scope_each_row_stops_its_own_server(served_repo):
    with served_runner(served_repo, "kserve-rest-fp32") as runner:
        server = runner._server
    assert not server.running()


def test_a_shared_scope_serves_another_model_from_another_server(served_repo, tmp_path):
    other = served_repo / "params-other.yaml"
    other.write_text((served_repo / "params.yaml").read_text())
    with SharedServers():
        with served_runner(served_repo, "kserve-rest-fp32") as runner:
            first = runner._server
        with ServedRunner(
            "kserve-rest-fp32",
            **SERVED["kserve-rest-fp32"]._asdict(),
            repository=served_repo / "models" / "serving",
            model="tiny",
            params_file=other,
        ) as runner:
            assert runner._server is not first
            assert not first.running(), "the idle server of another identity is stopped before the next starts"


def test_a_row_that_failed_never_hands_its_server_on(served_repo, tiny_images):
    """A failed request may leave its server wedged (one still running past the client's timeout)."""
    with SharedServers() as shared:
        with pytest.raises(RuntimeError, match="planted"):
            with served_runner(served_repo, "kserve-rest-fp32") as runner:
                server = runner._server
                raise RuntimeError("planted: a request that failed")
        assert not server.running() and shared.take(server.identity) is None


def test_a_server_whose_client_cannot_be_made_is_stopped(served_repo, monkeypatch):
    from crossdeploy.serving import clients
    from crossdeploy.serving.server_process import ServerProcess

    started = []
    start = ServerProcess.start
    monkeypatch.setattr(ServerProcess, "start", lambda self: started.append(self) or start(self))

    def no_client(*args, **kwargs):
        raise RuntimeError("planted: no client")

    monkeypatch.setattr(clients, "RestClient", no_client)
    with pytest.raises(RuntimeError, match="planted"):
        served_runner(served_repo, "kserve-rest-fp32").activate()
    assert len(started) == 1 and not started[0].running()


def test_a_shared_scope_is_entered_once():
    scope = SharedServers()
    with scope:
        with pytest.raises(RuntimeError, match="entered once"):
            scope.__enter__()
    assert SharedServers.current() is None
