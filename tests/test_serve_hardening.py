"""The embedded server facing a network: each bad request docs/serving.md's limits cover, sent to a
real `crossdeploy serve --engine kserve` on loopback, gets its 4xx (or 503/504) with a clear message and
leaks nothing; the server's surface is TF Serving's; and a fuzz test of generated bodies never gets a
5xx or a reset and keeps the server's memory bounded."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import psutil
import pytest
import yaml
from PIL import Image

from crossdeploy.data.datasets import sample_photograph_paths
from crossdeploy.serving.server_process import ServerProcess
from tests.conftest import SERVED_MAX_BATCH as MAX_BATCH
from tests.conftest import TINY_SIZE, tiny_paths

BODY_LIMIT_MIB = 1.0
LEAKS = ("Traceback", "{{node", ".py", 'File "', "site-packages", "/tmp/")


def _serve(served_repo, tmp_path_factory, serve_cfg, *extra_args):
    root = tmp_path_factory.mktemp("guarded")
    params = yaml.safe_load((served_repo / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({**params, "serve": serve_cfg}))
    return ServerProcess("kserve", root / "params.yaml", repository=served_repo / "models" / "serving", extra_args=extra_args)


@pytest.fixture(scope="module", params=["savedmodel", "onnxruntime"])
def guarded(request, served_repo, tiny_source, tiny_optimized, tmp_path_factory):
    """A server with a small body limit, two requests running at a time and none waiting: the packaged
    SavedModel, and an ONNX Runtime file through `crossdeploy serve --variant` (the runner path every other
    runtime shares: its own image decoding and preprocessing), so every check below runs against both."""
    limits = {"max_body_mib": BODY_LIMIT_MIB, "max_in_flight": 2, "max_queued": 0, "request_timeout_s": 60}
    if request.param == "savedmodel":
        server = _serve(served_repo, tmp_path_factory, limits)
    else:
        root = tmp_path_factory.mktemp("guarded-runner")
        params = yaml.safe_load((served_repo / "params.yaml").read_text())
        (root / "preprocessing.json").write_text(json.dumps({"preprocessing": tiny_source[1].preprocessing.to_dict(), "num_classes": 10}))
        params["paths"] = {**params["paths"], **tiny_paths(root, served_repo, tiny_source, tiny_optimized)}
        params["package"]["image_limits"] = {"max_pixels": 50_000_000, "max_aspect_ratio": 20}
        params["tensorrt"] = {"cuda_graph": False, "batch": {"min": 1, "opt": 8, "max": 32}}
        (root / "params.yaml").write_text(yaml.safe_dump({**params, "serve": limits}))
        server = ServerProcess("kserve", root / "params.yaml", extra_args=("--variant", "onnxruntime-fp32"), whole_command=True)
    with server as served:
        yield served, f"http://127.0.0.1:{served.endpoint.rest_port}"


def send(url, body, content_type="application/json", method="POST", timeout=60):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    if content_type is None:
        request.remove_header("Content-type")  # urllib adds one for a body; curl -d sends its own
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"error": raw.decode(errors="replace")}


def encode(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def photo() -> Image.Image:
    return Image.open(sample_photograph_paths()[0])


def bytes_request(*b64: str) -> dict:
    return {"signature_name": "serving_bytes", "instances": [{"b64": value} for value in b64]}


def floats(n: int = 1) -> list:
    return np.zeros((n, TINY_SIZE, TINY_SIZE, 3), np.float32).tolist()


def assert_clean_4xx(status, answer, expected_status, *phrases):
    assert status == expected_status, answer
    message = answer["error"]
    for phrase in phrases:
        assert phrase in message, message
    assert not any(leak in message for leak in LEAKS), message


def assert_still_serving(base):
    status, answer = send(f"{base}/v1/models/tiny:predict", {"instances": floats(1)})
    assert status == 200 and len(answer["predictions"]) == 1


# ---- memory is bounded before work starts ----


def test_a_body_over_the_limit_gets_413_before_parsing(guarded):
    served, base = guarded
    junk = b"[" * int(BODY_LIMIT_MIB * (1 << 20) + 10)
    request = urllib.request.Request(f"{base}/v1/models/tiny:predict", data=junk, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413 and refused.value.headers["Connection"] == "close"  # the rest is not read
    assert_clean_4xx(413, json.loads(refused.value.read()), 413, "serve.max_body_mib")
    assert_still_serving(base)


def test_a_body_of_tiny_json_elements_is_refused_before_parsing(guarded):
    # "[]," is 3 bytes of body and tens of bytes once parsed: a body within the size limit made of them
    # took 30 times its size; it is refused by counting, before any parsing
    served, base = guarded
    process = psutil.Process(served.process.pid)
    before = process.memory_info().rss
    body = b'{"instances": [' + b"[]," * int(BODY_LIMIT_MIB * (1 << 20) / 3 - 100) + b"[]]}"
    start = time.perf_counter()
    status, answer = send(f"{base}/v1/models/tiny:predict", body)
    assert_clean_4xx(status, answer, 400, "JSON arrays or objects", f"a full batch of {MAX_BATCH}")
    assert time.perf_counter() - start < 5 and process.memory_info().rss - before < 20 * BODY_LIMIT_MIB * (1 << 20)


def test_a_chunked_body_over_the_limit_gets_413(guarded):
    _, base = guarded
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(
            b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        )
        chunk = b" " * 65536
        try:
            for _ in range(int(BODY_LIMIT_MIB * 16) + 4):
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the rest arrived: what a limit is for
        reply = conn.recv(65536).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413")
    assert_still_serving(base)


def test_too_many_instances_are_refused_before_any_conversion(guarded):
    _, base = guarded
    # 10,000 tiny rows of the wrong shape: the batch is what is wrong first, not the shape
    status, answer = send(f"{base}/v1/models/tiny:predict", {"instances": [[0]] * 10_000})
    assert_clean_4xx(status, answer, 400, f"at most {MAX_BATCH}")
    status, answer = send(f"{base}/v1/models/tiny:predict", {"inputs": [[0]] * (MAX_BATCH + 1)})
    assert_clean_4xx(status, answer, 400, f"at most {MAX_BATCH}")


def test_requests_over_the_in_flight_bound_get_503_at_once(guarded):
    _, base = guarded
    port = int(base.rsplit(":", 1)[1])
    held = []
    try:
        for _ in range(2):  # two slow clients that never finish their body hold both slots
            conn = socket.create_connection(("127.0.0.1", port), timeout=30)
            conn.sendall(
                b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            held.append(conn)
        time.sleep(0.5)
        start = time.perf_counter()
        status, answer = send(f"{base}/v1/models/tiny:predict", {"instances": floats(1)})
        assert_clean_4xx(status, answer, 503, "serve.max_in_flight")
        assert time.perf_counter() - start < 5
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.5)
    assert_still_serving(base)


def test_idle_connections_beyond_what_the_server_holds_get_503(guarded):
    _, base = guarded
    port = int(base.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2 + 0 + 32 + 8)]
    try:
        time.sleep(0.5)
        status, answer = send(f"{base}/v1/models/tiny", None, method="GET", timeout=10)
        assert status == 503  # uvicorn's own answer: no file descriptor or task is taken beyond the bound
    finally:
        for conn in idle:
            conn.close()
    time.sleep(0.5)
    assert_still_serving(base)


def test_waiting_for_a_turn_counts_against_the_time_limit(served_repo, tmp_path_factory):
    # three clients that trickle their bodies, one running and two waiting: were the limit counted from
    # admission, each would hold the slot for its own 3 s and a request behind them would wait 9 s
    with _serve(served_repo, tmp_path_factory, {"max_in_flight": 1, "max_queued": 4, "request_timeout_s": 3}) as served:
        base = f"http://127.0.0.1:{served.endpoint.rest_port}"
        slow = []
        try:
            for _ in range(3):
                conn = socket.create_connection(("127.0.0.1", served.endpoint.rest_port), timeout=30)
                conn.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
                slow.append(conn)
            time.sleep(0.3)
            start = time.perf_counter()
            status, answer = send(f"{base}/v1/models/tiny:predict", {"instances": floats(1)})
            waited = time.perf_counter() - start
        finally:
            for conn in slow:
                conn.close()
        assert status in (200, 504), answer
        assert waited < 3 + 1.5, waited


def test_a_request_over_the_time_limit_gets_504_and_frees_its_slot(served_repo, tmp_path_factory):
    # a body that arrives in milliseconds (a 6000 x 6000 PNG of one colour compresses to 120 kB) and
    # takes seconds to decode (0.3 s an image, a full batch of them), so it is the running, not the
    # arrival, that times out
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000), (120, 80, 40)).save(buffer, format="PNG")
    large = bytes_request(*[base64.b64encode(buffer.getvalue()).decode()] * MAX_BATCH)
    with _serve(served_repo, tmp_path_factory, {"max_in_flight": 1, "request_timeout_s": 1.0}) as served:
        base = f"http://127.0.0.1:{served.endpoint.rest_port}"
        for _ in range(3):  # the slot comes back when the inference ends, so later requests are admitted
            status, answer = send(f"{base}/v1/models/tiny:predict", large)
            if status == 503:
                time.sleep(2)
                status, answer = send(f"{base}/v1/models/tiny:predict", large)
            assert_clean_4xx(status, answer, 504, "serve.request_timeout_s")
        assert served.process.poll() is None


# ---- slow and idle clients are cut ----

ARRIVAL_S = 2.0


@pytest.fixture(scope="module")
def impatient(served_repo, tmp_path_factory):
    """A server that gives a request 2 s from its first byte to its last."""
    with _serve(served_repo, tmp_path_factory, {"max_in_flight": 2, "max_queued": 0, "request_timeout_s": ARRIVAL_S}) as served:
        yield served.endpoint.rest_port, f"http://127.0.0.1:{served.endpoint.rest_port}"


def _trickle(port: int, head: bytes, tail: bytes, every_s: float = 0.25) -> tuple[bytes, float]:
    """Send `head` at once, then `tail` a byte every `every_s`, until the server closes the connection;
    what it answered, and how long after the first byte it closed."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    answer, start = b"", time.perf_counter()
    try:
        conn.sendall(head)
        conn.settimeout(every_s)
        for byte in tail:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                chunk = None
            if chunk == b"":
                break
            answer += chunk or b""
            try:
                conn.sendall(bytes([byte]))
            except OSError:  # the server closed it
                break
        conn.settimeout(10)
        while chunk := conn.recv(65536):
            answer += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    finally:
        conn.close()
    return answer, time.perf_counter() - start


def test_a_request_head_sent_a_byte_at_a_time_is_cut_with_408(impatient):
    port, base = impatient
    # a header line of 200 bytes at four a second would hold the connection for 50 s
    answer, took = _trickle(port, b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 200 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"serve.request_timeout_s" in answer
    assert ARRIVAL_S - 0.1 < took < ARRIVAL_S + 2.0, took
    assert_still_serving(base)


def test_a_request_body_sent_a_byte_at_a_time_is_cut_with_408(impatient):
    port, base = impatient
    body = json.dumps({"instances": floats(1)}).encode()[:200]
    head = b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    answer, took = _trickle(port, head, body)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert ARRIVAL_S - 0.1 < took < ARRIVAL_S + 2.0, took
    assert_still_serving(base)  # the slot the trickled request held is free again


def test_a_connection_that_sends_nothing_is_closed(impatient):
    from crossdeploy.serving.kserve_server import IDLE_TIMEOUT_S

    port, _ = impatient
    conn = socket.create_connection(("127.0.0.1", port), timeout=IDLE_TIMEOUT_S + 10)
    start = time.perf_counter()
    try:
        assert conn.recv(1024) == b""  # closed by the server, with nothing said
    finally:
        conn.close()
    assert time.perf_counter() - start < IDLE_TIMEOUT_S + 2.0


def test_blank_lines_after_an_answer_do_not_keep_a_connection_open(impatient):
    # llhttp skips a bare CRLF between requests without starting one: the idle timer must still run
    from crossdeploy.serving.kserve_server import IDLE_TIMEOUT_S

    port, _ = impatient
    conn = socket.create_connection(("127.0.0.1", port), timeout=IDLE_TIMEOUT_S + 10)
    try:
        conn.sendall(b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"ready" not in answer:
            answer += conn.recv(65536)
        start = time.perf_counter()
        conn.sendall(b"\r\n")
        while conn.recv(65536):
            pass  # until the server closes it
    finally:
        conn.close()
    assert time.perf_counter() - start < IDLE_TIMEOUT_S + 2.0


def test_a_second_request_trickled_on_a_kept_alive_connection_gets_its_408(impatient):
    port, _ = impatient
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        conn.sendall(b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"ready" not in answer:
            answer += conn.recv(65536)
        conn.sendall(b"GET /v1/models/tiny HTTP/1.1\r\nHo")  # and nothing more
        late = b""
        while chunk := conn.recv(65536):
            late += chunk
    finally:
        conn.close()
    assert late.startswith(b"HTTP/1.1 408"), late[:200]


def test_a_prompt_request_on_a_kept_alive_connection_is_not_cut(impatient):
    # the deadline runs per request: a connection reused for several prompt requests, each sent whole
    import http.client

    port, _ = impatient
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        sockets = []
        for _ in range(3):
            conn.request("GET", "/v1/models/tiny")
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["ready"]
            sockets.append(conn.sock)
            time.sleep(ARRIVAL_S * 0.75)  # the connection lives longer than one request's deadline
        assert len(set(map(id, sockets))) == 1  # http.client would have opened a new one for a closed connection
    finally:
        conn.close()


# ---- every bad request is a 4xx with a clear message, and nothing leaks ----


@pytest.mark.parametrize(
    "case,value",
    [
        ("not_an_image", base64.b64encode(b"hello, this is text").decode()),
        ("empty", ""),
        ("truncated_png", encode(photo())[:200]),
        ("corrupt_jpeg", base64.b64encode(base64.b64decode(encode(photo(), "JPEG"))[:600] + b"\x00" * 600).decode()),
    ],
)
def test_b64_payloads_that_are_not_images_get_400(guarded, case, value):
    _, base = guarded
    status, answer = send(f"{base}/v1/models/tiny:predict", bytes_request(value))
    assert status == 400, (case, answer)
    assert_clean_4xx(status, answer, 400)
    assert_still_serving(base)


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P"])
def test_grayscale_alpha_and_palette_pngs_are_served_as_photos(guarded, mode):
    _, base = guarded
    image = photo().convert("RGB")
    status, converted = send(f"{base}/v1/models/tiny:predict", bytes_request(encode(image.convert(mode))))
    _, rgb = send(f"{base}/v1/models/tiny:predict", bytes_request(encode(image.convert(mode).convert("RGB"))))
    assert status == 200
    np.testing.assert_allclose(converted["predictions"], rgb["predictions"], rtol=1e-5, atol=1e-5)


def test_a_jpeg_of_thousands_of_scans_gets_400_before_decoding(guarded):
    _, base = guarded
    buffer = io.BytesIO()
    photo().convert("RGB").resize((256, 256)).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    end = data.rfind(b"\xff\xd9")
    scans = [data[a:b] for a, b in zip(starts, [*starts[1:], end])]
    smallest = min(scans, key=len)  # a refinement scan: each repeat decodes the whole frame again
    bomb = data[:end] + smallest * 2000 + data[end:]
    assert len(bomb) < BODY_LIMIT_MIB * (1 << 20) / 2
    start = time.perf_counter()
    status, answer = send(f"{base}/v1/models/tiny:predict", bytes_request(base64.b64encode(bomb).decode()))
    assert_clean_4xx(status, answer, 400, "scans; more than 100")
    assert time.perf_counter() - start < 10


def test_an_image_with_a_huge_side_gets_400_naming_the_limit(guarded):
    _, base = guarded
    sliver = Image.new("RGB", (20000, 1), (120, 80, 40))  # ~100 bytes as PNG, 15 GB once resized
    status, answer = send(f"{base}/v1/models/tiny:predict", bytes_request(encode(sliver)))
    assert_clean_4xx(status, answer, 400, "package.image_limits.max_aspect_ratio")
    assert_still_serving(base)


@pytest.mark.parametrize(
    "case,token,phrase",
    [
        ("null", b"null", "not numbers"),
        ("true", b"true", "numbers only"),
        ("string_number", b'"1.5"', "not numbers"),
        ("nan_string", b'"NaN"', "not numbers"),
        ("nan_literal", b"NaN", "not valid JSON"),
        ("infinity_literal", b"-Infinity", "not valid JSON"),
        ("beyond_float32", b"1e39", "finite number within float32"),
    ],
)
def test_float_inputs_that_are_not_finite_numbers_get_400(guarded, case, token, phrase):
    _, base = guarded
    # a full-shaped sample with one bad value: the value is what is wrong, not the shape
    sample = json.dumps({"instances": [np.zeros((TINY_SIZE, TINY_SIZE, 3)).tolist()]}).encode()
    body = sample.replace(b"[[[[0.0,", b"[[[[" + token + b",", 1)
    assert body != sample
    status, answer = send(f"{base}/v1/models/tiny:predict", body)
    assert_clean_4xx(status, answer, 400, phrase)


@pytest.mark.parametrize(
    "case,path,body,expected,phrase",
    [
        (
            "signature_name_not_a_string",
            "tiny:predict",
            {"signature_name": ["serving_default"], "instances": [1]},
            400,
            '"signature_name" must be a string',
        ),
        ("unknown_signature", "tiny:predict", {"signature_name": "nope", "instances": [1]}, 400, "unknown signature_name"),
        ("unknown_model", "other:predict", {"instances": [1]}, 404, "other"),
        ("unknown_version", "tiny/versions/7:predict", {"instances": [1]}, 404, "version 1"),
        ("body_not_an_object", "tiny:predict", [1, 2, 3], 400, "JSON object"),
        ("instances_not_a_list", "tiny:predict", {"instances": {"a": 1}}, 400, "non-empty list"),
    ],
)
def test_wrong_names_and_types_get_4xx(guarded, case, path, body, expected, phrase):
    _, base = guarded
    status, answer = send(f"{base}/v1/models/{path}", body)
    assert_clean_4xx(status, answer, expected, phrase)


@pytest.mark.parametrize("content_type", [None, "application/json; charset=utf-8", "application/x-www-form-urlencoded", "text/plain"])
def test_any_content_type_is_read_as_json(guarded, content_type):
    _, base = guarded
    status, answer = send(f"{base}/v1/models/tiny:predict", bytes_request(encode(photo())), content_type=content_type)
    assert status == 200 and len(answer["predictions"]) == 1


def test_the_serving_pages_curl_example_works_as_written(guarded, tmp_path):
    import re
    import shutil
    import subprocess

    from tests.conftest import ROOT

    if not shutil.which("curl"):
        pytest.skip("needs the curl command (apt install curl)")
    _, base = guarded
    page = (ROOT / "docs" / "serving.md").read_text()
    block = page.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in re.sub(r"\\\n\s*", " ", block).splitlines() if line.startswith("curl")]
    assert len(commands) == 2
    photo().convert("RGB").save(tmp_path / "cat.jpg")
    for command in commands:
        command = command.replace("localhost:8501", base.removeprefix("http://")).replace("resnet50", "tiny")
        out = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout
        answer = json.loads(out)
        assert "predictions" in answer or answer["model_version_status"][0]["state"] == "AVAILABLE", out


# ---- TF Serving's surface, and nothing more ----


def test_true_elsewhere_in_the_body_does_not_refuse_a_float_request(guarded):
    _, base = guarded
    body = json.dumps({"note": "so true, or false", "instances": floats(1)}).encode().replace(b'"note"', b'"flag": true, "note"', 1)
    status, answer = send(f"{base}/v1/models/tiny:predict", body)
    assert status == 200 and len(answer["predictions"]) == 1


def test_versioned_urls_and_tf_servings_status_shape(guarded):
    _, base = guarded
    with urllib.request.urlopen(f"{base}/v1/models/tiny/versions/1", timeout=10) as response:
        status = json.loads(response.read())
    assert status["model_version_status"] == [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    code, answer = send(f"{base}/v1/models/tiny/versions/1:predict", {"instances": floats(2)})
    assert code == 200 and np.asarray(answer["predictions"]).shape == (2, 10)
    code, _ = send(f"{base}/v1/models/tiny/versions/01:predict", {"instances": floats(1)})  # a number, as TF Serving reads it
    assert code == 200


def test_kserves_repository_endpoints_are_off(guarded):
    _, base = guarded
    for path in ("/v2/repository/models/tiny/unload", "/v2/repository/models/tiny/load", "/v2/repository/index"):
        status, _ = send(base + path, b"{}")
        assert status == 404, path
    for path in ("/openapi.json", "/docs", "/metrics", "/v2/models/tiny/infer"):
        status, _ = send(base + path, None, method="GET")
        assert status == 404, path
    assert_still_serving(base)


def test_v2_endpoints_only_with_the_flag(served_repo, tmp_path_factory):
    with _serve(served_repo, tmp_path_factory, {}, "--enable-v2") as served:
        base = f"http://127.0.0.1:{served.endpoint.rest_port}"
        with urllib.request.urlopen(f"{base}/v2/models/tiny/ready", timeout=10) as response:
            assert response.status == 200
        # V2 inference would skip every guard: refused, cleanly
        v2 = {
            "inputs": [
                {"name": "images", "shape": [1, TINY_SIZE, TINY_SIZE, 3], "datatype": "FP32", "data": [0.0] * (TINY_SIZE * TINY_SIZE * 3)}
            ]
        }
        status, answer = send(f"{base}/v2/models/tiny/infer", v2)
        assert_clean_4xx(status, answer, 400, "V2 inference is not served")


def test_the_server_listens_on_loopback_only(guarded):
    served, _ = guarded
    process = psutil.Process(served.process.pid)
    processes = [process, *process.children(recursive=True)]
    # psutil 6 renamed connections() to net_connections()
    listening = [c.laddr for p in processes for c in getattr(p, "net_connections", p.connections)("tcp") if c.status == psutil.CONN_LISTEN]
    # REST and gRPC; gRPC's socket is dual-stack, bound to the IPv4-mapped form of the same loopback address
    assert len(listening) == 2 and all(address.ip in ("127.0.0.1", "::ffff:127.0.0.1") for address in listening), listening


# ---- proof: generated bodies ----


def test_generated_bodies_get_2xx_or_4xx_and_memory_stays_bounded(guarded):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    served, base = guarded
    process = psutil.Process(served.process.pid)
    idle_rss = process.memory_info().rss
    largest_legal = MAX_BATCH * TINY_SIZE * TINY_SIZE * 3 * 4 + int(BODY_LIMIT_MIB * (1 << 20)) * 8
    ceiling = 2 * idle_rss + largest_legal
    peak = [idle_rss]

    def png_of(width, height):
        return encode(Image.new("RGB", (width, height), (10, 200, 30)))

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)
    )
    json_values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=20
    )
    b64_values = st.one_of(
        st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        st.text(max_size=40),
        st.tuples(st.integers(1, 30000), st.integers(1, 8)).map(lambda wh: png_of(*wh)),  # huge dimensions in small images
        st.tuples(st.integers(1, 8), st.integers(1, 30000)).map(lambda wh: png_of(*wh)),
    )
    bodies = st.one_of(
        json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        st.binary(max_size=256),
        st.builds(lambda v: json.dumps({"instances": v}, allow_nan=True).encode(), json_values),
        st.builds(lambda v: json.dumps({"inputs": v}, allow_nan=True).encode(), json_values),
        st.builds(lambda vs: json.dumps(bytes_request(*vs)).encode(), st.lists(b64_values, min_size=1, max_size=MAX_BATCH + 2)),
        st.builds(
            lambda n, shape: json.dumps({"instances": np.zeros((n, *shape)).tolist()}).encode(),
            st.integers(1, MAX_BATCH + 3),
            st.sampled_from([(TINY_SIZE, TINY_SIZE, 3), (TINY_SIZE, TINY_SIZE, 4), (3, TINY_SIZE, TINY_SIZE), (1,)]),
        ),
        st.builds(lambda sig, v: json.dumps({"signature_name": sig, "instances": v}).encode(), json_values, json_values),
    )

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    @given(body=bodies, content_type=st.sampled_from([None, "application/json", "text/plain"]))
    def probe(body, content_type):
        status, answer = send(f"{base}/v1/models/tiny:predict", body, content_type=content_type)
        assert 200 <= status < 500, (status, answer, body[:200])
        if status >= 400:
            assert not any(leak in answer.get("error", "") for leak in LEAKS), answer
        peak[0] = max(peak[0], process.memory_info().rss)
        assert peak[0] < ceiling, f"RSS {peak[0] >> 20} MiB over the ceiling {ceiling >> 20} MiB"

    probe()
    assert served.process.poll() is None
    assert_still_serving(base)


def test_requests_parse_together_but_the_model_runs_one_call_per_core(served_repo, tiny_images):
    """Eight requests in flight at once: all are parsed, at most one per core is inside the model (the
    defect, every request in the model at once, held eight batches of activations on two cores)."""
    import threading

    import orjson

    from crossdeploy.device_info import usable_cores
    from crossdeploy.serving.predictors import SavedModelPredictor

    predictor = SavedModelPredictor("tiny", served_repo / "models" / "serving" / "tiny" / "1", 8)
    inside, most = [0], [0]
    lock = threading.Lock()
    model = predictor._signatures["serving_default"]

    def slow_model(**tensors):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.2)
        try:
            return model(**tensors)
        finally:
            with lock:
                inside[0] -= 1

    predictor._signatures["serving_default"] = slow_model
    body = orjson.dumps({"instances": tiny_images[1].tensors("NHWC")[:2]}, option=orjson.OPT_SERIALIZE_NUMPY)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(predictor.handle(body))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8 and all(len(a["predictions"]) == 2 for a in answers)
    assert most[0] == min(8, usable_cores())


def test_the_default_in_flight_bound_is_two_requests_per_core():
    """serve.max_in_flight: null admits two per core, one in the model and one being parsed; a number
    is taken as it is."""
    from crossdeploy.device_info import usable_cores
    from crossdeploy.serving.kserve_server import ServerLimits

    assert ServerLimits.from_params({"max_in_flight": None}, 8, 32).max_in_flight == 2 * usable_cores()
    assert ServerLimits.from_params({"max_in_flight": 5}, 8, 32).max_in_flight == 5


def test_the_server_runs_this_crossdeploy_not_one_beside_params_yaml(served_repo, tmp_path_factory):
    """The server starts in params.yaml's directory; a checkout there with its own crossdeploy/ (another
    version than the one running) must not be what it imports. The planted decoy fails on import."""
    server = _serve(served_repo, tmp_path_factory, {"max_body_mib": 1, "max_in_flight": 2, "max_queued": 0, "request_timeout_s": 60})
    decoy = server.params_file.parent / "crossdeploy"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy crossdeploy beside params.yaml was imported')\n")
    with server:
        status, answer = send(f"http://127.0.0.1:{server.endpoint.rest_port}/v1/models/tiny", None, method="GET")
    assert status == 200, answer
    assert "decoy" not in server.output()


@pytest.mark.parametrize("form", ["named_then_bare", "bare_then_named", "columnar"])
def test_a_boolean_in_a_float_input_is_refused_in_every_request_form(served_repo, form):
    """The boolean walk covers exactly the values converted: a single-input request may mix named and
    bare rows, and a true inside the named one was taken as 1.0 when the walk read the payload's rows."""
    from crossdeploy.serving.predictors import SavedModelPredictor
    from crossdeploy.serving.rest_payload import RequestError

    predictor = SavedModelPredictor("tiny", served_repo / "models" / "serving" / "tiny" / "1", 8)
    (name,) = [spec.name for spec in predictor.specs["serving_default"]]
    sample = np.zeros((TINY_SIZE, TINY_SIZE, 3)).tolist()
    marked = json.loads(json.dumps(sample))
    marked[0][0][0] = True
    payload = {
        "named_then_bare": {"instances": [{name: marked}, sample]},
        "bare_then_named": {"instances": [sample, {name: marked}]},
        "columnar": {"inputs": {name: [sample, marked]}},
    }[form]
    with pytest.raises(RequestError, match="numbers only"):
        predictor._parse(json.dumps(payload).encode())
    payload_without = json.dumps(payload).replace("true", "0.0").encode()
    assert predictor._parse(payload_without)[1][name].shape == (2, TINY_SIZE, TINY_SIZE, 3)  # the control decodes
