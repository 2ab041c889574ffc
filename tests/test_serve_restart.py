"""`crossdeploy serve` stopped and started again at once: the port probe binds as the servers do, and a stop
stops everything serve started (the Docker container too). No Docker engine or TF Serving binary needed:
a stand-in `docker` executable on PATH records what it is asked."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from crossdeploy.errors import CrossdeployError
from crossdeploy.serving import serve_command, tfserving_launch
from crossdeploy.serving.server_process import ServerProcess, free_port
from crossdeploy.serving.tfserving_launch import Endpoint
from tests.conftest import ROOT

IMAGE = tfserving_launch.image("2.21.0")
DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")  # what `docker run --name` accepts


def _port_left_in_time_wait() -> int:
    """A loopback port whose server closed its side of a connection first, as a stopped server does."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    connection, _ = server.accept()
    connection.close()  # the server side closes first, so the port's end of it enters TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    server.close()
    return port


def test_a_port_a_server_just_left_in_time_wait_is_free_to_restart_on():
    port = _port_left_in_time_wait()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the defect: a probe without SO_REUSEADDR calls it in use
    serve_command._check_free("127.0.0.1", port, "--rest-port")


def test_a_listening_port_is_still_refused():
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CrossdeployError) as refused:
            serve_command._check_free("127.0.0.1", port, "--grpc-port")
    assert str(refused.value) == f"cannot listen on 127.0.0.1:{port} (Address already in use); pick another --grpc-port or --host."


def test_the_docker_container_gets_a_name_of_its_own_and_publishes_on_host_only(tmp_path, monkeypatch):
    monkeypatch.setattr(tfserving_launch, "binary_available", lambda: False)
    container = serve_command.container_name("tiny")
    assert re.fullmatch(r"crossdeploy-tiny-[0-9a-f]{12}", container) and serve_command.container_name("tiny") != container
    assert DOCKER_NAME.match(serve_command.container_name("my model/v2"))
    command = serve_command.tfserving_command(
        tmp_path, "tiny", Endpoint("127.0.0.1", 9001, 9000), IMAGE, "cpu", tmp_path, "/models", container
    )
    assert command[:2] == ["docker", "run"] and command[command.index("--name") + 1] == container
    assert [command[i + 1] for i, arg in enumerate(command) if arg == "-p"] == ["127.0.0.1:9001:8501", "127.0.0.1:9000:8500"]


def _stand_in_docker(tmp_path, monkeypatch=None):
    """A `docker` that logs its arguments; `docker run` records its pid and sleeps, as an attached client does.
    Returns (an environment with it first on PATH, its log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        'case "$1" in\n'
        f'  run) echo $$ > "{tmp_path / "run.pid"}"; exec sleep 60 ;;\n'
        "  *) exit 0 ;;\n"
        "esac\n"
    )
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    if monkeypatch:
        monkeypatch.setenv("PATH", env["PATH"])
    return env, log


def test_stopping_stops_the_container_by_name_then_the_process(tmp_path, monkeypatch):
    _, log = _stand_in_docker(tmp_path, monkeypatch)
    client = subprocess.Popen(["sleep", "60"])  # stands in for the `docker run` client
    serve_command.stop_server(client, "crossdeploy-tiny-0123456789ab", grace_s=2)
    assert client.poll() is not None
    assert log.read_text().splitlines() == ["stop --time 2 crossdeploy-tiny-0123456789ab"]


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period():
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stubborn.stdout.readline().strip() == "ready"
    started = time.monotonic()
    serve_command.stop_server(stubborn, None, grace_s=1)
    assert stubborn.returncode == -signal.SIGKILL and time.monotonic() - started >= 1
    stubborn.stdout.close()


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_to_serve_stops_its_docker_container_and_client(tmp_path):
    """Also the Docker command `serve` runs from the params: the image at package.kserve.tfserving_runtime_version,
    the repository mounted at package.base_path (not the image's /models), where models.config names it."""
    if shutil.which(tfserving_launch.BINARY):
        pytest.skip(f"{tfserving_launch.BINARY} is on PATH, so serve runs it rather than Docker")
    env, log = _stand_in_docker(tmp_path)
    (tmp_path / "serving" / "tiny" / "1").mkdir(parents=True)
    (tmp_path / "serving" / "tiny" / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {"name": "tiny"},
                "to_tensorflow": {"version": 1},
                "paths": {"serving": "serving"},
                "package": {"base_path": "/srv/models", "kserve": {"tfserving_runtime_version": "2.20.0"}},
            }
        )
    )
    rest, grpc = free_port(), free_port()
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crossdeploy.cli",
            "serve",
            "--engine",
            "tfserving",
            "--device",
            "cpu",
            "--rest-port",
            str(rest),
            "--grpc-port",
            str(grpc),
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run.pid").is_file() and serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "run.pid").is_file(), serve.communicate(timeout=10)
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
    assert serve.returncode == 0, err  # a stop on request is a clean exit
    run, stop = [line.split() for line in log.read_text().splitlines() if line.split()[0] in ("run", "stop")]
    container = run[run.index("--name") + 1]
    assert f"type=bind,source={(tmp_path / 'serving').resolve()},target=/srv/models,readonly" in run
    assert run[run.index("tensorflow/serving:2.20.0") + 1] == "--model_config_file=/srv/models/models.config"
    assert container.startswith("crossdeploy-tiny-") and stop == ["stop", "--time", str(serve_command.STOP_GRACE_S), container]
    assert _gone(int((tmp_path / "run.pid").read_text())), "the docker client outlived serve"
    assert "warning" not in err and "Traceback" not in err


#: a stand-in server on the REST port it is given: answers TF Serving's status call for `tiny` (AVAILABLE)
STATUS_SERVER = """
import http.server, json, sys
class Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        known = self.path == "/v1/models/tiny"
        self.send_response(200 if known else 404)
        self.end_headers()
        self.wfile.write(json.dumps({"model_version_status": [{"version": "1", "state": "AVAILABLE"}]} if known else {}).encode())
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Status).serve_forever()
"""
#: the planted defect: a server that prints serve's ready line but whose model never answers
SAYS_READY = "import sys, time; print('ready: REST http://127.0.0.1:' + sys.argv[1], flush=True); time.sleep(60)"


class StandInServer(ServerProcess):
    def __init__(self, tmp_path, script: str):
        super().__init__("kserve", tmp_path / "params.yaml", model="tiny", ready_timeout_s=5)
        self.script = script

    def command(self, endpoint: Endpoint) -> list[str]:
        return [sys.executable, "-c", self.script, str(endpoint.rest_port)]


def test_a_child_server_is_ready_when_its_model_answers_over_rest(tmp_path):
    with StandInServer(tmp_path, STATUS_SERVER) as served:
        assert tfserving_launch.model_ready(served.endpoint, "tiny")
        assert not tfserving_launch.model_ready(served.endpoint, "other")


def test_a_printed_ready_line_alone_is_not_readiness(tmp_path):
    with pytest.raises(CrossdeployError, match="did not become ready"):
        StandInServer(tmp_path, SAYS_READY).start()
