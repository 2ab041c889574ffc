"""`crossdeploy serve` with the embedded KServe engine on loopback: predictions, bad requests, a
bounded load test and a clean shutdown. Real TF Serving needs its binary or Docker (see
test_tfserving_launch for its command lines as data, and the tfserving test below)."""

import base64
import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml
from PIL import Image

from crossdeploy.data.datasets import sample_photograph_paths
from crossdeploy.serving import tfserving_launch
from crossdeploy.serving.clients import RestClient, predict_request
from crossdeploy.serving.serve_command import choose_engine
from crossdeploy.serving.server_process import ServerProcess
from tests.conftest import SERVED_MAX_BATCH as MAX_BATCH


@pytest.fixture(scope="module")
def server(served_repo):
    with ServerProcess("kserve", served_repo / "params.yaml") as served:
        yield served, f"http://127.0.0.1:{served.endpoint.rest_port}/v1/models", served.output().splitlines()


def post(url, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def png_b64(path) -> str:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_serve_prints_the_engine_and_urls(server):
    served, base, lines = server
    assert next(line for line in lines if line.startswith("engine:")).startswith("engine: kserve")
    # the ready line is for people: the server prints it once its own status check passes, which may be a
    # moment after ServerProcess's check did
    deadline = time.monotonic() + 30
    while f"ready: REST {base}/tiny:predict" not in served.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"ready: REST {base}/tiny:predict" in served.output()


def test_served_predictions_equal_the_in_process_savedmodel(server, tiny_saved_model, tiny_images):
    import tensorflow as tf

    _, base, _ = server
    x = tiny_images[1].tensors("NHWC")[:3]
    expected = tf.saved_model.load(str(tiny_saved_model)).signatures["serving_default"](images=tf.constant(x))["logits"].numpy()
    client = RestClient(base.removesuffix("/v1/models"), "tiny")
    np.testing.assert_allclose(client.predict(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(client.predict(x, columnar=True), expected, rtol=1e-5, atol=1e-5)


def test_bytes_signature_over_rest_b64(server):
    _, base, _ = server
    encoded = [base64.b64decode(png_b64(p)) for p in sample_photograph_paths()[:2]]
    assert RestClient(base.removesuffix("/v1/models"), "tiny").predict_encoded(encoded).shape == (2, 10)


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        ("tiny:predict", b"{not json", 400, "the body is not valid JSON"),
        ("tiny:predict", {"instances": [[1.0, 2.0]]}, 400, "expected samples of shape [64, 64, 3]"),
        ("tiny:predict", {"instances": [[[["x"] * 3] * 64] * 64]}, 400, "not numbers"),
        ("tiny:predict", {"instances": np.zeros((MAX_BATCH + 1, 64, 64, 3)).tolist()}, 400, f"at most {MAX_BATCH}"),
        ("tiny:predict", {"signature_name": "serving_bytes", "instances": [{"b64": "%%%"}]}, 400, "not valid base64"),
        ("tiny:predict", {"signature_name": "nope", "instances": [1]}, 400, "unknown signature_name"),
        ("tiny:predict", {"images": []}, 400, 'exactly one of "instances"'),
        ("other:predict", {"instances": [1]}, 404, "other"),
    ],
)
def test_bad_requests_get_a_4xx_and_the_server_stays_up(server, path, body, status, message):
    served, base, _ = server
    got, answer = post(f"{base}/{path}", body)
    assert got == status and message in answer["error"]
    assert served.process.poll() is None
    with urllib.request.urlopen(f"{base}/tiny", timeout=10) as response:
        assert json.loads(response.read())["ready"] is True


def test_bounded_load_on_loopback_loses_nothing(server):
    _, base, _ = server
    body = {"signature_name": "serving_bytes", "instances": [{"b64": png_b64(sample_photograph_paths()[0])}]}
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: post(f"{base}/tiny:predict", body)[0], range(2000)))
    assert len(statuses) == 2000 and statuses.count(200) == 2000


def test_sigterm_shuts_the_server_down_cleanly(server):
    served, _, _ = server
    assert served.stop(timeout_s=60) == 0  # SIGTERM; a kill would give -9


def test_a_port_in_use_is_one_clear_error(served_repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "crossdeploy.cli", "serve", "--engine", "kserve", "--rest-port", str(port)],
            cwd=served_repo,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); pick another --rest-port or --host."
    )


def test_missing_repository_says_to_run_the_pipeline(tmp_path):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {"name": "m"},
                "to_tensorflow": {"version": 1},
                "paths": {"serving": "models/serving"},
            }
        )
    )
    result = subprocess.run([sys.executable, "-m", "crossdeploy.cli", "serve"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "run `dvc repro`" in result.stderr and "Traceback" not in result.stderr


def test_auto_engine_says_why_it_picked_the_embedded_server():
    if tfserving_launch.binary_available() or tfserving_launch.docker_available():
        pytest.skip("TF Serving can run here, so auto picks it")
    engine, why = choose_engine("auto")
    assert engine == "kserve" and "nor a Docker engine" in why


def test_grpc_predict_request_carries_the_signature_and_tensor():
    import tensorflow as tf

    x = np.zeros((2, 64, 64, 3), np.float32)
    request = predict_request("tiny", images_nhwc=x)
    assert (request.model_spec.name, request.model_spec.signature_name) == ("tiny", "serving_default")
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["images"]), x)
    request = predict_request("tiny", encoded_images=[b"\x89PNG..."])
    assert request.model_spec.signature_name == "serving_bytes"
    assert tf.make_ndarray(request.inputs["image_bytes"]).tolist() == [b"\x89PNG..."]


@pytest.mark.skipif(
    not (tfserving_launch.binary_available() or tfserving_launch.docker_available()),
    reason="needs the tensorflow_model_server binary or a running Docker engine",
)
def test_real_tfserving_answers_rest_and_grpc(served_repo, tiny_saved_model, tiny_images):
    import tensorflow as tf

    from crossdeploy.serving.clients import GrpcClient

    with ServerProcess("tfserving", served_repo / "params.yaml") as served:
        rest_port, grpc_port = served.endpoint.rest_port, served.endpoint.grpc_port
        assert served.output().startswith("engine: tfserving")
        x = tiny_images[1].tensors("NHWC")[:2]
        expected = tf.saved_model.load(str(tiny_saved_model)).signatures["serving_default"](images=tf.constant(x))["logits"].numpy()
        np.testing.assert_allclose(RestClient(f"http://127.0.0.1:{rest_port}", "tiny").predict(x), expected, rtol=1e-5, atol=1e-5)
        grpc_client = GrpcClient(f"127.0.0.1:{grpc_port}", "tiny")
        np.testing.assert_allclose(grpc_client.predict(x), expected, rtol=1e-5, atol=1e-5)
        assert grpc_client.predict_encoded([base64.b64decode(png_b64(sample_photograph_paths()[0]))]).shape == (1, 10)
        grpc_client.close()
