"""`crossdeploy serve`: the repository the package stage built, served by TF Serving (its binary, or its
Docker image on the CPU or GPU) or by the embedded KServe server. Runnable as `python -m
crossdeploy.serving.serve_command`, which is how ServerProcess starts it, so that the stages that serve a
model depend on this module and not on the whole command line."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import model_version_dir
from crossdeploy.params import load_params
from crossdeploy.serving import tfserving_launch as launch

READY_TIMEOUT_S = 300
STOP_GRACE_S = 10  # what a stopped server gets to finish its requests before it is killed
#: the signals that stop `crossdeploy serve`, and with it everything it started
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def add_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--engine",
        choices=("auto", "tfserving", "kserve"),
        default="auto",
        help="auto: TF Serving where its binary or Docker can run, else the embedded KServe server",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--rest-port", type=int, default=8501)
    serve.add_argument("--grpc-port", type=int, default=8500)
    serve.add_argument(
        "--image",
        help="TF Serving Docker image (-gpu is added to run on the GPU); default: tensorflow/serving at "
        "the params' package.kserve.tfserving_runtime_version",
    )
    serve.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="TF Serving on the CPU (its binary, else the Docker image) or on the GPU (the -gpu image with "
        "--gpus all, Docker only); auto: the binary, else the Docker image, -gpu where an NVIDIA GPU is",
    )
    serve.add_argument(
        "--enable-v2",
        action="store_true",
        help="also serve KServe's V2 endpoints, whose repository API lets anyone who reaches the port unload the model (embedded engine)",
    )
    serve.add_argument("--params", default="params.yaml", help="the pipeline's params (model name, repository path)")
    serve.add_argument("--repository", help="the TF Serving repository to serve (default: paths.serving from the params)")
    serve.add_argument("--model", help="the model in the repository to serve (default: model.name from the params)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossdeploy serve", description=__doc__)
    add_arguments(parser)
    try:
        return serve(parser.parse_args(argv))
    except CrossdeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def choose_engine(requested: str) -> tuple[str, str]:
    """(engine, why): TF Serving where it can run, else the embedded server."""
    if requested in ("auto", "tfserving"):
        if launch.binary_available():
            return "tfserving", f"{launch.BINARY} is on PATH"
        if launch.docker_available():
            return "tfserving", "a Docker engine answers"
        if requested == "tfserving":
            raise CrossdeployError(
                f"--engine tfserving needs {launch.BINARY} on PATH or a running Docker engine; "
                "install one, or use --engine kserve (the embedded server)."
            )
        return "kserve", f"neither {launch.BINARY} nor a Docker engine is available here"
    return "kserve", "requested"


def serve(args: argparse.Namespace, target=None) -> int:
    """Serve the params' repository, or `target` (deploy/serve_target.py, resolved by `crossdeploy serve
    --bundle/--variant`): its SavedModel repository, or another runtime's file on the embedded server."""
    params = load_params(args.params)
    name, version = args.model or params["model"]["name"], int(params["to_tensorflow"]["version"])
    repository = Path(args.repository or params["paths"]["serving"])
    runtime = target.runtime if target else None
    if target and target.repository:
        if args.repository:
            raise CrossdeployError("--bundle serves the SavedModel it holds; give --bundle or --repository, not both.")
        repository = target.repository
    if runtime is not None:
        if args.engine == "tfserving":
            raise CrossdeployError(
                f"TF Serving serves SavedModels only; {runtime.label} is served by the embedded server (--engine kserve or auto)."
            )
        engine, why = "kserve", runtime.label
    else:
        served = model_version_dir(repository, name, version)
        if not (served / "saved_model.pb").is_file():
            raise CrossdeployError(f"{served} holds no SavedModel: run `dvc repro` (its package stage builds it) first.")
        engine, why = choose_engine(args.engine)
    if args.device == "gpu" and engine != "tfserving":
        raise CrossdeployError(f"--device gpu runs TF Serving's -gpu image, but the engine is {engine} ({why}).")
    endpoint = launch.Endpoint(args.host, args.rest_port, args.grpc_port)
    _check_free(endpoint.host, endpoint.rest_port, "--rest-port")
    _check_free(endpoint.host, endpoint.grpc_port, "--grpc-port")
    print(f"engine: {engine} ({why})", flush=True)
    if engine == "kserve":
        from crossdeploy.serving.kserve_server import serve_kserve
        from crossdeploy.serving.predictors import RunnerPredictor, SavedModelPredictor

        max_batch = int(params["package"]["batching"]["max_batch_size"])
        if runtime is None:
            predictor = SavedModelPredictor(name, model_version_dir(repository, name, version), max_batch)
        else:
            predictor = RunnerPredictor(
                name, version, runtime.open_runner, runtime.label, max_batch, runtime.preprocessing, runtime.image_limits
            )
        _announce_when_ready(endpoint, name)
        serve_kserve(predictor, args.host, args.rest_port, params.get("serve"), enable_v2=args.enable_v2, grpc_port=args.grpc_port)
        return 0
    image = args.image or launch.image(str(params["package"]["kserve"]["tfserving_runtime_version"]))
    return _run_tfserving(repository, name, endpoint, image, args.device, str(params["package"]["base_path"]))


def _check_free(host: str, port: int, option: str) -> None:
    """Refuse a port the server could not bind, binding it the way the server will: uvicorn (asyncio's
    create_server), TF Serving (gRPC and libevent) and docker-proxy set SO_REUSEADDR on POSIX, so the TIME_WAIT
    connections a server stopped a moment ago leaves do not block a restart; a listening socket still does."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        if os.name == "posix":  # as asyncio: on Windows SO_REUSEADDR would let two servers share a port
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CrossdeployError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another {option} or --host.") from None


def container_name(model: str) -> str:
    """A Docker container name of its own, so that stopping `serve` can stop that container and no other
    (Docker allows [a-zA-Z0-9_.-] in names; --model may hold anything else)."""
    return f"crossdeploy-{re.sub(r'[^a-zA-Z0-9_.-]', '-', model)}-{uuid.uuid4().hex[:12]}"


def tfserving_command(
    repository: Path,
    name: str,
    endpoint: launch.Endpoint,
    image: str,
    device: str,
    scratch: Path,
    base_path: str,
    container: str | None = None,
) -> list[str]:
    """The command that starts TF Serving on `device` (cpu | gpu | auto), Docker's container named `container`
    with the repository at `base_path` (package.base_path, which the packaged models.config names).
    The GPU runs the official -gpu image only: a local binary's build (CPU or CUDA) cannot be told from the binary
    itself. Docker publishes the ports on endpoint.host only (-p host:port:port); the binary has no bind-address
    flag and listens on every interface, which is printed as a note."""
    from crossdeploy.device_info import gpus

    if device == "gpu":
        reason = launch.gpu_unavailable_reason()
        if reason:
            raise CrossdeployError(f"--device gpu: {reason}.")
        return launch.docker_command(repository, endpoint, image, gpu=True, base_path=base_path, name=container)
    if launch.binary_available():
        if endpoint.host not in ("0.0.0.0", "::"):
            print(f"note: {launch.BINARY} has no bind-address flag; it listens on every interface", flush=True)
        return launch.binary_command(repository, launch.host_models_config(repository, name, scratch), endpoint)
    return launch.docker_command(repository, endpoint, image, gpu=device == "auto" and bool(gpus()), base_path=base_path, name=container)


def _run_tfserving(repository: Path, name: str, endpoint: launch.Endpoint, image: str, device: str, base_path: str) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        container = container_name(name)
        command = tfserving_command(repository, name, endpoint, image, device, Path(scratch), base_path, container)
        container = container if command[0] == "docker" else None  # the binary runs in no container
        process = subprocess.Popen(command)
        # The handler only notes the signal (no locks): stopping waits for processes, and a wait inside a
        # handler that interrupted Popen.wait would deadlock on Popen's own lock.
        requested: list[int] = []
        previous = {sig: signal.signal(sig, lambda sig, _: requested.append(sig)) for sig in STOP_SIGNALS}
        try:
            _announce_when_ready(endpoint, name, alive=lambda: process.poll() is None)
            while process.poll() is None and not requested:
                time.sleep(0.2)
        finally:
            stop_server(process, container)  # on any exit, an exception's included
            for sig, handler in previous.items():
                if handler is not None:  # None: a handler not installed from Python, which cannot be put back
                    signal.signal(sig, handler)
        return 0 if requested else process.returncode


def stop_server(process: subprocess.Popen, container: str | None, grace_s: float = STOP_GRACE_S) -> None:
    """Stop TF Serving and everything that runs it. A `docker run` client that dies (killed, or its terminal
    gone) leaves its container running, so the container is stopped by name first; then the process (the
    binary, or the docker client) is terminated, and killed if it is still there after `grace_s`."""
    if container:
        try:
            result = subprocess.run(
                ["docker", "stop", "--time", str(int(grace_s)), container], capture_output=True, text=True, timeout=grace_s + 30
            )
            # no such container: it had not started yet, or --rm removed it when it exited with its client
            problem = result.stderr.strip() if result.returncode and "No such container" not in result.stderr else None
        except (subprocess.SubprocessError, OSError) as exc:
            problem = str(exc)
        if problem:
            print(f"warning: could not stop Docker container {container} ({problem}); run `docker stop {container}`.", file=sys.stderr)
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _announce_when_ready(endpoint: launch.Endpoint, name: str, alive=lambda: True) -> None:
    def wait() -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and alive():
            if launch.model_ready(endpoint, name):
                base = f"http://{endpoint.host}:{endpoint.rest_port}/v1/models/{name}"
                print(f"ready: REST {base}:predict (status {base})", flush=True)
                print(f"ready: gRPC {endpoint.host}:{endpoint.grpc_port} (PredictionService, ModelService)", flush=True)
                return
            time.sleep(0.5)
        print(f"error: {name} did not become ready within {READY_TIMEOUT_S} s", file=sys.stderr, flush=True)

    threading.Thread(target=wait, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
