"""`crossdeploy serve --bundle` serves the deploy bundle with the runtime the decision chose, behind the same
guarded embedded server: for each CPU runtime a decision can choose, a real bundle of the tiny model is
served and its logits over REST floats, REST image bytes, KServe's own client and gRPC (TF Serving's stubs)
match the runtime run in process; the guards
answer as they do for the SavedModel; a bundle that cannot be served is one sentence."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
import yaml
from PIL import Image

from crossdeploy.cli import main as crossdeploy_main
from crossdeploy.data.datasets import sample_photograph_paths
from crossdeploy.serving.server_process import ServerProcess
from tests.conftest import KSERVE, SERVED_MAX_BATCH, TINY_SIZE, bundle_decision, tiny_paths

#: the CPU runtimes a decision can choose and the file each bundle ships
RUNTIMES = ["onnxruntime-fp32", "openvino-fp32", "tflite-fp32", "torch-fp32"]


def _decision(variant: str) -> dict:
    choice = {
        "variant": variant,
        "cell": "b8_c1",
        "batch": 8,
        "concurrency": 1,
        "served": False,
        "throughput_ips": 100.0,
        "p50_ms": 20.0,
        "p99_ms": 40.0,
        "margin_ms": 10.0,
        "margin_pct": 20.0,
        "stable": True,
        "size_mb": 1.0,
        "fidelity": {"row": variant, "top1_agreement": 1.0, "cosine_min": 1.0},
    }
    return bundle_decision(choice)


@pytest.fixture(scope="module")
def project(tmp_path_factory, served_repo, tiny_source, tiny_optimized, tiny_saved_model):
    """A project folder with params.yaml over the tiny model's real artifacts (ONNX, TFLite, program, the
    packaged SavedModel), and a deploy bundle per runtime written by the deploy stage's own write_bundle."""
    from crossdeploy.deploy.bundle import Serving, write_bundle
    from crossdeploy.tensorflow.convert import convert_tflite
    from crossdeploy.variants import benchmark_variants

    root = tmp_path_factory.mktemp("project")
    tflite = root / "tflite"
    tflite.mkdir()
    convert_tflite(tiny_saved_model, tflite / "model.fp32.tflite", "fp32")
    preprocessing = {"preprocessing": tiny_source[1].preprocessing.to_dict(), "num_classes": 10}
    (root / "preprocessing.json").write_text(json.dumps(preprocessing))
    paths = tiny_paths(root, served_repo, tiny_source, tiny_optimized, savedmodel=tiny_saved_model.parent.parent)
    params = {
        "model": {"name": "tiny"},
        "to_tensorflow": {"version": 1},
        "paths": paths,
        "tensorrt": {"cuda_graph": False, "batch": {"min": 1, "opt": 8, "max": 32}},
        "package": {
            "base_path": "/models",
            "batching": {"max_batch_size": SERVED_MAX_BATCH},
            "kserve": KSERVE,
            "image_limits": {"max_pixels": 50_000_000, "max_aspect_ratio": 20},
        },
        "serve": {"max_in_flight": 2, "max_queued": 4, "request_timeout_s": 30},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    serving = Serving(paths, "tiny", 1, num_batch_threads=2, max_enqueued_batches=10, kserve=KSERVE, tensorrt_max_batch=32)
    table = {v.name: v for v in benchmark_variants(params)}
    for variant in [*RUNTIMES, "tf-savedmodel-fp32"]:
        (root / "bundles" / variant).mkdir(parents=True)
        write_bundle(root / "bundles" / variant, _decision(variant), {}, serving, preprocessing, table)
    (root / "bundles" / "tensorrt-fp16").mkdir()  # its decision alone: Triton serves a plan, not this server
    (root / "bundles" / "tensorrt-fp16" / "decision.json").write_text(json.dumps(_decision("tensorrt-fp16")))
    return root, table


def _post(base: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}/v1/models/tiny:predict", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _photos(n: int) -> list[bytes]:
    files = []
    for path in sample_photograph_paths()[:n]:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, format="PNG")
        files.append(buffer.getvalue())
    return files


@pytest.mark.parametrize("variant", RUNTIMES)
def test_each_runtime_serves_its_bundle_with_the_in_process_logits(project, variant, tiny_images):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from crossdeploy.data.preprocessing import normalize
    from crossdeploy.runtimes.base import ThreadSettings
    from crossdeploy.serving.image_input import ImageDecoder
    from crossdeploy.serving.signatures import ImageLimits

    root, table = project
    x = tiny_images[1].tensors("NHWC")[:4]
    with table[variant].runner(ThreadSettings()) as runner:
        expected_floats = runner.infer(x if runner.layout == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        photos = _photos(3)
        decoder = ImageDecoder(_prep(root), ImageLimits())
        pixels = np.stack([decoder.pixels(p) for p in photos])
        expected_bytes = runner.infer(normalize(pixels, decoder.preprocessing.mean, decoder.preprocessing.std, runner.layout))
    with ServerProcess(
        "kserve", root / "params.yaml", extra_args=("--bundle", str(root / "bundles" / variant)), whole_command=True
    ) as served:
        base = f"http://127.0.0.1:{served.endpoint.rest_port}"
        assert f"engine: kserve ({table[variant].framework} running" in served.output()
        status, answer = _post(base, {"instances": x.tolist()})
        assert status == 200, answer
        np.testing.assert_allclose(np.array(answer["predictions"]), expected_floats, rtol=1e-4, atol=1e-4)
        status, answer = _post(base, {"inputs": x.tolist()})  # columnar, as TF Serving takes it
        assert status == 200 and np.allclose(np.array(answer["outputs"]), expected_floats, rtol=1e-4, atol=1e-4)
        b64 = [{"b64": base64.b64encode(p).decode()} for p in photos]
        status, answer = _post(base, {"signature_name": "serving_bytes", "instances": b64})
        assert status == 200, answer
        np.testing.assert_allclose(np.array(answer["predictions"]), expected_bytes, rtol=1e-4, atol=1e-4)
        # the guards answer as the SavedModel's server does
        status, answer = _post(base, {"instances": x[:1].tolist() * (SERVED_MAX_BATCH + 1)})
        assert status == 400 and f"at most {SERVED_MAX_BATCH} per request" in answer["error"]
        status, answer = _post(
            base, {"signature_name": "serving_bytes", "instances": [{"b64": base64.b64encode(b"not an image").decode()}]}
        )
        assert status == 400 and "not a JPEG or PNG image" in answer["error"]
        status, answer = _post(base, {"instances": [[[[float("nan")] * 3] * TINY_SIZE] * TINY_SIZE]})
        assert status == 400, answer
        # KServe's own Python client (V1 = TF Serving's REST API): live, ready, predict
        live, ready, answer = asyncio.run(_kserve_client(base, x))
        assert live and ready
        np.testing.assert_allclose(np.array(answer["predictions"]), expected_floats, rtol=1e-4, atol=1e-4)
        # TF Serving's gRPC PredictionService, with its own stubs: floats and image bytes
        with grpc.insecure_channel(f"127.0.0.1:{served.endpoint.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for signature, key, values, expected in [
                ("serving_default", "images", x, expected_floats),
                ("serving_bytes", "image_bytes", np.array(photos, dtype=object), expected_bytes),
            ]:
                request = predict_pb2.PredictRequest()
                request.model_spec.name, request.model_spec.signature_name = "tiny", signature
                request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
                logits = tf.make_ndarray(stub.Predict(request, timeout=60).outputs["logits"])
                np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_a_savedmodel_bundle_is_served_from_the_bundle_itself(project, tiny_images):
    from crossdeploy.runtimes.base import ThreadSettings

    root, table = project
    x = tiny_images[1].tensors("NHWC")[:2]
    with table["tf-savedmodel-fp32"].runner(ThreadSettings()) as runner:
        expected = runner.infer(x)
    with ServerProcess(
        "kserve", root / "params.yaml", extra_args=("--bundle", str(root / "bundles" / "tf-savedmodel-fp32")), whole_command=True
    ) as served:
        status, answer = _post(f"http://127.0.0.1:{served.endpoint.rest_port}", {"instances": x.tolist()})
        assert status == 200 and np.allclose(np.array(answer["predictions"]), expected, rtol=1e-4, atol=1e-4), answer


async def _kserve_client(base: str, x: np.ndarray):
    from kserve import InferenceRESTClient, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=60))
    try:
        return (
            await client.is_server_live(base),
            await client.is_model_ready(base, "tiny"),
            await client.infer(base, {"instances": x.tolist()}, model_name="tiny"),
        )
    finally:
        await client.close()


def _prep(root):
    from crossdeploy.data.preprocessing import Preprocessing

    return Preprocessing.from_dict(json.loads((root / "preprocessing.json").read_text())["preprocessing"])


def test_an_image_over_the_limits_is_refused_from_its_header_naming_the_param(project):
    from crossdeploy.serving.image_input import ImageDecoder
    from crossdeploy.serving.rest_payload import RequestError
    from crossdeploy.serving.signatures import ImageLimits

    root, _ = project
    decoder = ImageDecoder(_prep(root), ImageLimits(max_pixels=10_000, max_aspect_ratio=4))
    for size, phrase in [((200, 100), "package.image_limits.max_pixels (10000)"), ((90, 10), "package.image_limits.max_aspect_ratio (4)")]:
        buffer = io.BytesIO()
        Image.new("RGB", size).save(buffer, format="PNG")
        with pytest.raises(RequestError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
            decoder.pixels(buffer.getvalue())
    buffer = io.BytesIO()
    Image.new("RGB", (50, 50)).save(buffer, format="GIF")
    with pytest.raises(RequestError, match="not a JPEG or PNG image"):
        decoder.pixels(buffer.getvalue())
    buffer = io.BytesIO()
    Image.new("RGB", (50, 50), (10, 20, 30)).save(buffer, format="PNG")
    with pytest.raises(RequestError, match="not a complete JPEG or PNG"):
        decoder.pixels(buffer.getvalue()[:-30])  # truncated
    # a PNG header claiming 20000 x 20000 (PIL refuses it at open, past its own bomb bound): the limit's 400, not a 500
    ihdr = (20000).to_bytes(4, "big") * 2 + buffer.getvalue()[24:29]  # width, height, then depth, colour, ...
    bomb = buffer.getvalue()[:16] + ihdr + zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big") + buffer.getvalue()[33:]
    with pytest.raises(RequestError, match=r"package.image_limits.max_pixels"):
        ImageDecoder(_prep(root), ImageLimits()).pixels(bomb)
    # a JPEG with a multi-picture header (PIL calls it MPO, as it does many phone photographs) is held to the scan bound
    buffer = io.BytesIO()
    Image.new("RGB", (50, 50)).save(buffer, format="MPO", save_all=True, append_images=[Image.new("RGB", (50, 50))])
    with pytest.raises(RequestError, match="scans"):
        decoder.pixels(buffer.getvalue() + b"\xff\xda" * 200)


@pytest.mark.parametrize(
    "args,phrase",
    [
        (["--bundle", "{root}/bundles/tensorrt-fp16"], "Triton serves on its GPU"),
        (["--bundle", "{root}/nowhere"], "give --bundle the deploy stage's folder"),
        (["--variant", "onnxruntime-fp33"], "unknown variant 'onnxruntime-fp33'; --variant takes one of"),
        (["--variant", "onnxruntime-fp32", "--engine", "tfserving"], "TF Serving serves SavedModels only"),
    ],
)
def test_what_cannot_be_served_is_one_sentence(project, args, phrase, capsys):
    root, _ = project
    code = crossdeploy_main(["serve", "--params", str(root / "params.yaml"), *[a.format(root=root) for a in args]])
    err = capsys.readouterr().err
    assert code == 1 and phrase in err and "Traceback" not in err, err


def _quick():
    """The served check's windows, short: the tiny model answers in a millisecond."""
    from crossdeploy.benchmark.closed_loop import WindowSettings

    return WindowSettings(warmup_requests=1, window_s=0.05, max_windows=4, stability_pct=50, cell_cap_s=0.5)


def _params(root, **deploy) -> dict:
    return {**yaml.safe_load((root / "params.yaml").read_text()), "deploy": deploy}


def test_the_decision_is_measured_served_from_its_bundle_over_each_protocol(project, tiny_images):
    from crossdeploy.deploy.decision import SloNotMet
    from crossdeploy.deploy.note import deploy_markdown
    from crossdeploy.deploy.served import IN_PROCESS, PROTOCOLS, check_served_met, served_deployment, served_summary

    root, table = project
    decision = {**_decision("onnxruntime-fp32"), "p99_slo_ms": 5000.0}  # every call of a tiny model, on a busy machine too
    served = served_deployment(
        root / "bundles" / "onnxruntime-fp32",
        decision,
        table,
        _params(root),
        tiny_images[1],
        _quick(),
        "crossdeploy serve --bundle b",
        root / "params.yaml",
    )
    assert served["status"] == "measured" and (served["batch"], served["concurrency"]) == (8, 1)
    rows = served["protocols"]
    assert list(rows) == [IN_PROCESS, *PROTOCOLS]
    for name, row in rows.items():
        assert row["status"] == "ok" and row["throughput_ips"] > 0 and row["p99_ms"] > 0, (name, row)
        assert name == IN_PROCESS or 0 < row["of_in_process_pct"] < 1000
    assert served["met"] and all(row["meets_slo"] for row in rows.values()), rows
    text = deploy_markdown({**decision, "served": served})
    assert "**Served** by `crossdeploy serve --bundle b` at batch 8 x 1 client" in text
    assert all(words in text for words in ("gRPC floats", "REST image bytes", "REST floats", "% of in-process"))
    # planted: the same figures against an SLO no served call meets: said, and under deploy.strict a failed stage
    raw = {name: {k: v for k, v in row.items() if k not in ("meets_slo", "of_in_process_pct")} for name, row in rows.items()}
    missed = served_summary(raw, decision["choice"], 1e-6, "crossdeploy serve --bundle b")
    assert not missed["met"] and "no protocol meets p99 <= 1e-06 ms" in deploy_markdown({**decision, "p99_slo_ms": 1e-6, "served": missed})
    with pytest.raises(SloNotMet, match=r"in process but not served by `crossdeploy serve --bundle b` \(gRPC floats p99"):
        check_served_met(missed, 1e-6)
    check_served_met(served, 5000.0)  # met: no error


def test_a_bundle_whose_server_cannot_start_fails_its_served_rows_with_the_reason(project, tiny_images, tmp_path):
    import shutil

    from crossdeploy.deploy.decision import SloNotMet
    from crossdeploy.deploy.served import PROTOCOLS, check_served_met, served_deployment

    root, table = project
    bundle = tmp_path / "bundle"
    shutil.copytree(root / "bundles" / "onnxruntime-fp32", bundle)
    (bundle / table["onnxruntime-fp32"].artifact.name).write_bytes(b"not an ONNX model")  # planted: a corrupt file ships
    served = served_deployment(
        bundle, _decision("onnxruntime-fp32"), table, _params(root), tiny_images[1], _quick(), "serve", root / "params.yaml"
    )
    for name in PROTOCOLS:
        assert served["protocols"][name]["status"] == "failed" and "did not become ready" in served["protocols"][name]["reason"]
    assert not served["met"]
    with pytest.raises(SloNotMet):
        check_served_met(served, 50.0)


def test_what_the_embedded_server_does_not_run_is_skipped_with_the_reason(project, tiny_images):
    from crossdeploy.deploy.served import served_deployment

    root, table = project
    args = (table, _params(root), tiny_images[1], _quick(), "serve", root / "params.yaml")
    assert "Triton serves on its GPU" in served_deployment(root / "bundles" / "tensorrt-fp16", _decision("tensorrt-fp16"), *args)["reason"]
    assert (
        "TF Serving serves this bundle"
        in served_deployment(root / "bundles" / "tf-savedmodel-fp32", _decision("tfserving-grpc-fp32"), *args)["reason"]
    )
    off = (table, _params(root, served_check=False), *args[2:])
    assert served_deployment(root / "bundles" / "onnxruntime-fp32", _decision("onnxruntime-fp32"), *off) == {
        "status": "skipped",
        "reason": "deploy.served_check is false",
    }
    with pytest.raises(Exception, match="deploy.served_check must be true or false, got 'yes'"):
        served_deployment(
            root / "bundles" / "onnxruntime-fp32", _decision("onnxruntime-fp32"), table, _params(root, served_check="yes"), *args[2:]
        )
    assert served_deployment(root / "bundles" / "onnxruntime-fp32", {**_decision("onnxruntime-fp32"), "choice": None}, *args) is None
