"""TF Serving's APIs in full on the embedded server: its gRPC PredictionService and ModelService, called with
tensorflow-serving-api's own stubs, and the REST routes for metadata and version labels, with TF Serving's
shapes, status codes and messages; the same limits as REST."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import yaml

from crossdeploy.serving.server_process import ServerProcess
from tests.conftest import SERVED_MAX_BATCH, TINY_SIZE


@pytest.fixture(scope="module")
def server(served_repo, tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc")
    params = yaml.safe_load((served_repo / "params.yaml").read_text())
    (root / "params.yaml").write_text(
        yaml.safe_dump({**params, "serve": {"max_body_mib": 4, "max_in_flight": 2, "max_queued": 2, "request_timeout_s": 30}})
    )
    with ServerProcess("kserve", root / "params.yaml", repository=served_repo / "models" / "serving") as served:
        channel = grpc.insecure_channel(f"127.0.0.1:{served.endpoint.grpc_port}", options=[("grpc.max_send_message_length", 64 << 20)])
        yield served, channel, f"http://127.0.0.1:{served.endpoint.rest_port}"
        channel.close()


def _stubs(channel):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel)


def _predict_request(x, name="tiny", signature="serving_default", key="images"):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(tf.make_tensor_proto(x))
    return request


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_tf_servings_stubs_predict_with_the_rest_logits(server, tiny_images):
    import tensorflow as tf

    _, channel, base = server
    predict, _ = _stubs(channel)
    x = tiny_images[1].tensors("NHWC")[:3]
    response = predict.Predict(_predict_request(x), timeout=60)
    logits = tf.make_ndarray(response.outputs["logits"])
    body = json.dumps({"instances": x.tolist()}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{base}/v1/models/tiny:predict", data=body), timeout=60) as rest:
        np.testing.assert_allclose(logits, np.array(json.loads(rest.read())["predictions"]), rtol=1e-5, atol=1e-5)
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) == (
        "tiny",
        1,
        "serving_default",
    )
    # the bytes signature over gRPC: JPEG/PNG files as a DT_STRING tensor
    encoded = np.array(tiny_images[1].encoded[:2], dtype=object)
    response = predict.Predict(_predict_request(encoded, signature="serving_bytes", key="image_bytes"), timeout=60)
    assert tf.make_ndarray(response.outputs["logits"]).shape == (2, 10)


def test_metadata_and_status_have_tf_servings_shapes_over_grpc_and_rest(server):
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    _, channel, base = server
    predict, models = _stubs(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    response = predict.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    floats = signatures.signature_def["serving_default"]
    assert [d.size for d in floats.inputs["images"].tensor_shape.dim] == [-1, TINY_SIZE, TINY_SIZE, 3]
    assert [d.size for d in floats.outputs["logits"].tensor_shape.dim] == [-1, 10] and floats.method_name == "tensorflow/serving/predict"
    assert set(signatures.signature_def) == {"serving_default", "serving_bytes"}
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "tiny"
    (version,) = models.GetModelStatus(status_request, timeout=30).model_version_status
    assert (version.version, version.state) == (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    # REST: TF Serving's metadata answer, by the latest version and by number
    for path in ("/v1/models/tiny/metadata", "/v1/models/tiny/versions/1/metadata"):
        status, answer = _get(base + path)
        assert status == 200 and (answer["model_spec"]["name"], answer["model_spec"]["version"]) == ("tiny", "1"), answer
        inputs = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["images"]
        assert inputs["dtype"] == "DT_FLOAT" and [d["size"] for d in inputs["tensor_shape"]["dim"]] == [
            "-1",
            str(TINY_SIZE),
            str(TINY_SIZE),
            "3",
        ]
    # a label this server does not define: TF Serving's 400, on every route that takes one
    for path in ("/v1/models/tiny/labels/stable", "/v1/models/tiny/labels/stable/metadata"):
        status, answer = _get(base + path)
        assert status == 400 and answer["error"] == "Unrecognized servable version label: stable"


@pytest.mark.parametrize(
    "change,code,phrase",
    [
        (lambda r: setattr(r.model_spec, "name", "other"), "NOT_FOUND", "Servable not found for request: Latest(other)"),
        (lambda r: r.model_spec.version.__setattr__("value", 7), "NOT_FOUND", "Specific(tiny, 7)"),
        (lambda r: setattr(r.model_spec, "version_label", "canary"), "INVALID_ARGUMENT", "Unrecognized servable version label: canary"),
        (lambda r: setattr(r.model_spec, "signature_name", "nope"), "INVALID_ARGUMENT", 'Serving signature name: "nope" not found'),
        (
            lambda r: r.output_filter.append("probabilities"),
            "INVALID_ARGUMENT",
            "output tensor alias not found in signature: probabilities",
        ),
    ],
)
def test_a_wrong_model_spec_gets_tf_servings_status(server, tiny_images, change, code, phrase):
    _, channel, _ = server
    predict, _ = _stubs(channel)
    request = _predict_request(tiny_images[1].tensors("NHWC")[:1])
    change(request)
    with pytest.raises(grpc.RpcError) as refused:
        predict.Predict(request, timeout=30)
    assert refused.value.code() == getattr(grpc.StatusCode, code) and phrase in refused.value.details(), refused.value.details()


@pytest.mark.parametrize(
    "x,phrase",
    [
        (np.zeros((1, TINY_SIZE, TINY_SIZE, 3), np.float64), "expects a DT_FLOAT tensor, got DT_DOUBLE"),
        (
            np.zeros((1, 3, TINY_SIZE, TINY_SIZE), np.float32),
            f"expected a tensor of shape [batch, {TINY_SIZE}, {TINY_SIZE}, 3], got [1, 3, {TINY_SIZE}, {TINY_SIZE}]",
        ),
        (np.zeros((SERVED_MAX_BATCH + 1, TINY_SIZE, TINY_SIZE, 3), np.float32), f"at most {SERVED_MAX_BATCH} per request"),
        (np.full((1, TINY_SIZE, TINY_SIZE, 3), np.nan, np.float32), "finite number"),
    ],
)
def test_a_bad_input_tensor_is_invalid_argument_naming_what_to_change(server, x, phrase):
    _, channel, _ = server
    predict, _ = _stubs(channel)
    with pytest.raises(grpc.RpcError) as refused:
        predict.Predict(_predict_request(x), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and phrase in refused.value.details(), refused.value.details()


def test_a_message_over_the_body_limit_is_refused_by_grpc_and_the_server_goes_on(server, tiny_images):
    _, channel, _ = server
    predict, _ = _stubs(channel)
    big = np.zeros((5 << 20,), np.float32)  # 20 MiB against serve.max_body_mib 4
    with pytest.raises(grpc.RpcError) as refused:
        predict.Predict(_predict_request(big), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert predict.Predict(_predict_request(tiny_images[1].tensors("NHWC")[:1]), timeout=30).outputs["logits"].tensor_shape.dim[0].size == 1


def test_an_image_over_the_limits_over_grpc_is_invalid_argument_naming_the_param(server):
    import io

    from PIL import Image

    _, channel, _ = server
    predict, _ = _stubs(channel)
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 100)).save(buffer, format="PNG")  # 40:1 against max_aspect_ratio 20
    with pytest.raises(grpc.RpcError) as refused:
        predict.Predict(
            _predict_request(np.array([buffer.getvalue()], dtype=object), signature="serving_bytes", key="image_bytes"), timeout=30
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "package.image_limits.max_aspect_ratio" in refused.value.details()
