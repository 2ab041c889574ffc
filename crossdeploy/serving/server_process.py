"""`crossdeploy serve` as a child process on free loopback ports: started, awaited until its model is
ready (the REST status call, as `serve` itself waits), and stopped with SIGTERM, as the benchmark and the
tests drive a real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import crossdeploy
from crossdeploy.errors import CrossdeployError
from crossdeploy.params import load_params
from crossdeploy.serving.tfserving_launch import Endpoint, model_ready


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _death_with_parent():
    """What the child runs between fork and exec so that it never outlives a killed parent (Linux: SIGTERM
    when the thread that started it ends). prctl is looked up here, in the parent: loading a library in the
    child can hang it when another thread of the parent held the loader's lock at the fork (validate starts
    servers from a thread while its other thread imports frameworks)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    PR_SET_PDEATHSIG = 1
    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    def __init__(
        self,
        engine: str,
        params_file: str | Path = "params.yaml",
        repository: Path | None = None,
        ready_timeout_s: float = 300.0,
        model: str | None = None,
        device: str | None = None,  # TF Serving's --device (cpu | gpu); None: the command's default
        extra_args: tuple[str, ...] = (),  # further `crossdeploy serve` options
        whole_command: bool = False,  # through the `crossdeploy` command (its --bundle and --variant), not serve_command alone
    ):
        self.engine, self.model, self.device, self.extra_args = engine, model, device, tuple(extra_args)
        self.entry = ("crossdeploy.cli", "serve") if whole_command else ("crossdeploy.serving.serve_command",)
        self.repository = repository.resolve() if repository else None
        self.params_file = Path(params_file).resolve()
        self.ready_timeout_s = ready_timeout_s
        self.endpoint: Endpoint | None = None
        self.process: subprocess.Popen | None = None
        # a file, not a pipe: nobody reads a pipe while the server runs, and a full pipe stalls it
        self.log = Path(tempfile.mkstemp(prefix=f"crossdeploy-serve-{engine}-", suffix=".log")[1])

    @property
    def identity(self) -> tuple:
        """What the server serves and how: two ServerProcess with the same identity serve alike."""
        return (self.engine, self.params_file, self.repository, self.model, self.device, self.extra_args, self.entry)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self, endpoint: Endpoint) -> list[str]:
        """The `crossdeploy serve` command line that serves on `endpoint`."""
        return [
            # -P: `-m` would put the working directory (params.yaml's) first on the path, where a checkout's
            # own crossdeploy/ would win over the one running here
            sys.executable,
            "-P",
            "-m",
            *self.entry,
            "--engine",
            self.engine,
            "--host",
            endpoint.host,
            "--rest-port",
            str(endpoint.rest_port),
            "--grpc-port",
            str(endpoint.grpc_port),
            "--params",
            self.params_file.name,
            *(["--repository", str(self.repository)] if self.repository else []),
            *(["--model", self.model] if self.model else []),
            *(["--device", self.device] if self.device else []),
            *self.extra_args,
        ]

    def start(self) -> Endpoint:
        self.endpoint = Endpoint("127.0.0.1", free_port(), free_port())
        command = self.command(self.endpoint)
        # the child runs this very crossdeploy, installed or not
        package_root = str(Path(crossdeploy.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                command, cwd=self.params_file.parent, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_death_with_parent()
            )
        model = self.model or load_params(self.params_file)["model"]["name"]  # what `serve` picks without --model
        deadline = time.monotonic() + self.ready_timeout_s
        while not model_ready(self.endpoint, model):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.output()[-2000:]
                self.close()
                raise CrossdeployError(f"crossdeploy serve --engine {self.engine} did not become ready:\n{tail}")
            time.sleep(0.2)
        return self.endpoint

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def close(self) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
