"""A served model as a runner: `crossdeploy serve` in a child process, called over REST or gRPC, so
the benchmark measures what the network hop and serialization cost next to the in-process rows. A
TF Serving row runs its server on the CPU, or with `gpu` on the GPU (the official -gpu image); a row
with `serve_args` (`--bundle DIR`, `--variant NAME`) serves what they name on the embedded server with
whichever runtime that is."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdeploy.errors import RuntimeUnavailable
from crossdeploy.runtimes.base import Runner, ThreadSettings


class ServedRunner(Runner):
    layout = "NHWC"

    def __init__(
        self,
        name: str,
        engine: str,  # kserve | tfserving
        protocol: str,  # rest | grpc
        encoded: bool,
        repository: Path | None,  # the TF Serving repository the package stage built (None with `serve_args`)
        model: str,  # the model in it
        threads: ThreadSettings | None = None,
        gpu: bool = False,  # TF Serving's -gpu image with --gpus all; otherwise the server runs on the CPU
        params_file: str | Path = "params.yaml",  # the server's own settings (`crossdeploy serve --params`)
        serve_args: tuple[str, ...] = (),  # `crossdeploy serve --bundle DIR` or `--variant NAME` instead of `repository`
    ):
        if gpu and engine != "tfserving":
            raise ValueError(f"{name}: only TF Serving runs on the GPU (its -gpu image), not {engine}")
        if bool(serve_args) == (repository is not None) or (serve_args and engine != "kserve"):
            raise ValueError(f"{name}: serve a repository (any engine) or what serve_args name (the embedded server), one of the two")
        self.serve_args = tuple(serve_args)
        super().__init__(name, threads)
        self.engine, self.protocol, self.params_file = engine, protocol, Path(params_file)
        self.repository, self.model, self.gpu = repository, model, gpu
        self.input_kind = "encoded" if encoded else "tensor"
        self._failed = False  # a row that raised: its server may be wedged, so it is never handed on

    def _activate_impl(self) -> None:
        from crossdeploy.serving import clients
        from crossdeploy.serving.shared_servers import SharedServers

        self._check_engine()
        fresh = self.server_process()
        shared = SharedServers.current()
        kept = shared.take(fresh.identity) if shared else None
        if kept is not None:
            fresh.close()  # never started: this removes its log file
            self._server, endpoint = kept, kept.endpoint
        else:
            self._server, endpoint = fresh, fresh.start()
        try:
            if self.protocol == "grpc":
                self._client = clients.GrpcClient(f"{endpoint.host}:{endpoint.grpc_port}", self.model)
            else:
                self._client = clients.RestClient(f"http://{endpoint.host}:{endpoint.rest_port}", self.model)
        except BaseException:
            self._server.close()  # not active, so never deactivated: nothing else would stop it
            raise

    def __exit__(self, exc_type, *exc_info) -> None:
        self._failed = self._failed or exc_type is not None
        super().__exit__(exc_type, *exc_info)

    def server_process(self):
        """The child that serves the model (not yet started)."""
        from crossdeploy.serving.server_process import ServerProcess

        if self.serve_args:
            return ServerProcess(self.engine, self.params_file, model=self.model, extra_args=self.serve_args, whole_command=True)
        device = None if self.engine == "kserve" else "gpu" if self.gpu else "cpu"
        return ServerProcess(self.engine, self.params_file, self.repository, model=self.model, device=device)

    def _check_engine(self) -> None:
        if self.engine == "kserve":
            import kserve  # noqa: F401  (an ImportError here says the engine is not installed)

            return
        from crossdeploy.serving.tfserving_launch import unavailable_reason

        reason = unavailable_reason(self.gpu)
        if reason:
            raise RuntimeUnavailable(reason)

    def _prepare_impl(self, batch: np.ndarray):
        if self.input_kind == "encoded":
            return self._client.prepare(encoded_images=list(batch))
        return self._client.prepare(batch)

    def _infer_prepared_impl(self, prepared) -> np.ndarray:
        return self._client.send(prepared)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self._client.send(self._prepare_impl(batch))

    def _deactivate_impl(self) -> None:
        from crossdeploy.serving.shared_servers import SharedServers

        if self.protocol == "grpc":
            self._client.close()
        shared = SharedServers.current()
        if shared and not self._failed:
            shared.keep(self._server)
        else:
            self._server.close()
