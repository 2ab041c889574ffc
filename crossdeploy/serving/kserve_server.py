"""The embedded server: KServe's Python model server answering TF Serving's REST API (KServe's V1
protocol) from the packaged SavedModel or any other runtime's file (serving/predictors.py). It runs wherever
Python does (no TF Serving binary, no Docker engine) and binds to loopback unless told otherwise.

It is written to face a network: a request is refused before any work if the server is busy or its
body is too large, parsing and inference run off the event loop under a time limit, every bad request
gets a 4xx whose message names what to change, and no answer carries a trace, a path or a graph node.
Only the endpoints the README documents are served; KServe's V2 endpoints (whose repository API lets
anyone who reaches the port unload the model) only with `--enable-v2`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here

from crossdeploy.device_info import usable_cores
from crossdeploy.serving.predictors import ModelLookupError, Predictor, check_model_spec
from crossdeploy.serving.rest_payload import RequestError
from crossdeploy.serving.slow_clients import FIRST_BYTE, arrival_deadline

log = logging.getLogger(__name__)

#: bytes of JSON per float of a float instance, generously: "-2.1179039478302",
JSON_BYTES_PER_FLOAT = 24
#: seconds a connection may stay silent: before its first request, and between requests (keep-alive)
IDLE_TIMEOUT_S = 5


@dataclass(frozen=True)
class ServerLimits:
    """The embedded server's guards (params `serve:`)."""

    max_body_bytes: int
    max_in_flight: int
    max_queued: int
    request_timeout_s: float

    @classmethod
    def from_params(cls, cfg: dict[str, Any] | None, max_batch: int, crop_size: int) -> "ServerLimits":
        cfg = cfg or {}
        body_mib = cfg.get("max_body_mib")
        # the largest legal request: a full batch of float instances, plus a megabyte of margin
        body = int(body_mib * (1 << 20)) if body_mib else max_batch * crop_size * crop_size * 3 * JSON_BYTES_PER_FLOAT + (1 << 20)
        # null: two per core, one in the model and one being read and parsed (Python, one at a time under the
        # GIL) so the model never waits for a parse; more would only hold their bodies while they wait
        in_flight = int(cfg.get("max_in_flight") or 2 * usable_cores())
        return cls(body, in_flight, int(cfg.get("max_queued", 64)), float(cfg.get("request_timeout_s", 30)))


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Admission:
    """Requests being read or run are bounded (serve.max_in_flight), and so are those waiting for a turn
    (serve.max_queued): beyond both a request is refused at once rather than queued without limit. A
    waiting request holds only its connection, since its body is read once it is admitted; a request
    leaves when its work ends, not when it is answered: a timed-out inference still holds its memory
    until TensorFlow returns."""

    def __init__(self, running: int, queued: int):
        self.running, self.queued = running, queued
        self.waiting = 0
        self._slots = asyncio.Semaphore(running)

    async def enter(self) -> bool:
        if self._slots.locked():
            if self.waiting >= self.queued:
                return False
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
            return True
        await self._slots.acquire()
        return True

    def leave(self) -> None:
        self._slots.release()


def model_status(version: int) -> dict[str, Any]:
    """TF Serving's GetModelStatus answer, so clients written for TF Serving read it unchanged."""
    return {"model_version_status": [{"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


@functools.cache
def model_metadata(predictor: Predictor) -> dict[str, Any]:
    """TF Serving's REST metadata answer: the model spec and the SignatureDefMap, as its http_rest_api_util
    prints them (proto field names, default values included)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import model_pb2

    from crossdeploy.serving.grpc_api import signature_def_map

    spec = model_pb2.ModelSpec(name=predictor.name)
    spec.version.value = predictor.version

    def as_dict(message) -> dict[str, Any]:
        return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    return {"model_spec": as_dict(spec), "metadata": {"signature_def": as_dict(signature_def_map(predictor.specs, predictor.num_classes))}}


async def read_body(request, limit: int) -> bytearray:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"the body is {int(declared)} bytes; this server takes at most {limit} (serve.max_body_mib).")
    # one buffer grown in place (orjson and the checks read a bytearray as they read bytes): a list of
    # chunks joined at the end held every body twice (a batch of 32 JSON float images is 52 MB)
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:  # a chunked body declares no length: counted as it arrives
            raise HttpError(413, f"the body exceeds {limit} bytes, the most this server takes (serve.max_body_mib).")
        body += chunk
    return body


def add_routes(app, predictor: Predictor, limits: ServerLimits, labels: dict[str, int] | None = None) -> None:
    """TF Serving's REST surface for one model: status, metadata and predict, by the latest version, a version
    number or a version label (`labels`: label -> version, as models.config's version_labels; none by default)."""
    labels = dict(labels or {})
    from fastapi.responses import ORJSONResponse
    from starlette.requests import ClientDisconnect

    admission = Admission(limits.max_in_flight, limits.max_queued)
    # as many threads as requests may run: asyncio's default pool is sized by the CPU count instead
    workers = ThreadPoolExecutor(max_workers=limits.max_in_flight, thread_name_prefix="predict")

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> ORJSONResponse:
        return ORJSONResponse({"error": message}, status_code=status, headers=headers)

    def check_model(model_name: str, version: str | None, label: str | None = None) -> None:
        # TF Serving parses the version as a number: /versions/01 is version 1; one that is no number is no version
        if version is not None and not version.isdigit():
            raise HttpError(
                404,
                f"Servable not found for request: Specific({model_name[:100]}, {version[:20]}); this server has version "
                f"{predictor.version}",
            )
        try:
            check_model_spec(predictor, model_name, None if version is None else int(version), label, labels)
        except ModelLookupError as exc:
            raise HttpError(404 if exc.code == "NOT_FOUND" else 400, str(exc)) from None

    async def status(model_name: str, version: str | None = None, label: str | None = None):
        try:
            check_model(model_name, version, label)
        except HttpError as exc:
            return error(exc.status, str(exc))
        return ORJSONResponse({**model_status(predictor.version), "name": predictor.name, "ready": True})

    async def metadata(model_name: str, version: str | None = None, label: str | None = None):
        try:
            check_model(model_name, version, label)
        except HttpError as exc:
            return error(exc.status, str(exc))
        # built on the first request (TensorFlow's protos load then, not at start-up), then read from the cache
        return ORJSONResponse(await asyncio.get_running_loop().run_in_executor(None, model_metadata, predictor))

    async def predict(model_name: str, request: Request, version: str | None = None, label: str | None = None):
        try:
            check_model(model_name, version, label)
        except HttpError as exc:
            return error(exc.status, str(exc))
        loop = asyncio.get_running_loop()
        # from the request's first byte (slow_clients.py): its head's arrival and waiting for a turn count too
        deadline = getattr(request.state, FIRST_BYTE, loop.time()) + limits.request_timeout_s
        try:
            admitted = await asyncio.wait_for(admission.enter(), max(deadline - loop.time(), 0.0))
        except asyncio.TimeoutError:
            return error(504, f"the request waited longer than {limits.request_timeout_s:g} s for a turn (serve.request_timeout_s).")
        if not admitted:
            return error(
                503,
                f"the server is busy: {limits.max_in_flight} requests are running and {limits.max_queued} waiting "
                "(serve.max_in_flight, serve.max_queued); retry shortly.",
            )
        handed_over = False
        try:
            # the time limit covers reading the body too: a client that trickles it holds a slot no longer
            body = await asyncio.wait_for(read_body(request, limits.max_body_bytes), max(deadline - loop.time(), 0.0))
            work = asyncio.ensure_future(loop.run_in_executor(workers, predictor.handle, body))
            work.add_done_callback(lambda _: admission.leave())
            handed_over = True
            try:
                # shielded: on timeout the thread runs on (TensorFlow cannot be interrupted) and keeps its slot
                return ORJSONResponse(await asyncio.wait_for(asyncio.shield(work), max(deadline - loop.time(), 0.0)))
            except asyncio.TimeoutError:
                work.add_done_callback(_discard_result)
                raise
        except asyncio.TimeoutError:
            return error(504, f"the request took longer than {limits.request_timeout_s:g} s (serve.request_timeout_s).")
        except HttpError as exc:
            # a refused body is not read to its end: the connection closes instead
            return error(exc.status, str(exc), headers={"Connection": "close"} if exc.status == 413 else None)
        except RequestError as exc:
            return error(400, str(exc))
        except ClientDisconnect:
            return error(400, "the client closed the connection before its body arrived.")
        except Exception:
            log.exception("predict failed")  # the trace stays in the server's log
            return error(500, "the server failed on this request; its log says why.")
        finally:
            if not handed_over:
                admission.leave()

    for prefix in ("/v1/models/{model_name}", "/v1/models/{model_name}/versions/{version}", "/v1/models/{model_name}/labels/{label}"):
        app.add_api_route(prefix, status, methods=["GET"])
        app.add_api_route(prefix + "/metadata", metadata, methods=["GET"])
        app.add_api_route(prefix + ":predict", predict, methods=["POST"], response_model=None)


def _discard_result(work: asyncio.Future) -> None:
    if not work.cancelled():
        work.exception()  # read, so asyncio does not log "exception was never retrieved" for an answered request


def serve_kserve(
    predictor: Predictor,
    host: str,
    rest_port: int,
    serve_cfg: dict[str, Any] | None = None,
    enable_v2: bool = False,
    grpc_port: int | None = None,
) -> None:
    """Block serving REST on host:rest_port (and TF Serving's gRPC API on grpc_port) until SIGINT or SIGTERM;
    serve_cfg: the params' `serve:` limits."""
    import kserve
    import kserve.model_server as model_server
    from kserve.errors import InvalidInput
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    name = predictor.name
    limits = ServerLimits.from_params(serve_cfg, predictor.max_batch, predictor.image_size)
    log.info("serving %s on %s; limits: %s", name, predictor.runtime, limits)

    class ReadyModel(kserve.Model):
        """KServe's registry entry: readiness for its liveness and V2 endpoints. V1 goes through add_routes."""

        def load(self) -> bool:
            self.ready = True
            return True

        async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
            # V2 inference would bypass every guard above: with --enable-v2 only its health and repository API serve
            raise InvalidInput(f"V2 inference is not served; POST /v1/models/{name}:predict (TF Serving's REST API).")

    class GuardedRESTServer(model_server.RESTServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # KServe binds 0.0.0.0; a local model server listens where it is told, loopback by default
            self.config.host = host
            # connections beyond the requests it may hold get 503 from uvicorn itself, so idle or slow
            # clients cannot take every file descriptor; headroom for status and liveness probes
            self.config.limit_concurrency = limits.max_in_flight + limits.max_queued + 32
            self.config.timeout_keep_alive = IDLE_TIMEOUT_S
            # and a client that sends nothing, or trickles its request, is cut (uvicorn times neither)
            self.config.http = arrival_deadline(limits.request_timeout_s, IDLE_TIMEOUT_S)

        def _register_endpoints(self, app) -> None:
            from fastapi import APIRouter

            # only the documented surface: no OpenAPI schema or docs pages either
            app.openapi_url = app.docs_url = app.redoc_url = None
            app.router.routes = [
                r
                for r in app.router.routes
                if getattr(r, "path", None) not in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
            ]
            root = APIRouter()
            root.add_api_route("/", self.dataplane.live)
            app.include_router(root)
            add_routes(app, predictor, limits)
            if enable_v2:
                register_v2_endpoints(app, self.dataplane, self.model_repository_extension)

    model_server.RESTServer = GuardedRESTServer
    model = ReadyModel(name)
    model.load()
    grpc_server = None
    if grpc_port:
        from crossdeploy.serving.grpc_api import GrpcServer

        grpc_server = GrpcServer(predictor, host, grpc_port, limits)
        grpc_server.start()
    try:
        kserve.ModelServer(http_port=rest_port, enable_grpc=False, workers=1, enable_latency_logging=False).start([model])
    finally:
        if grpc_server is not None:
            grpc_server.stop()
