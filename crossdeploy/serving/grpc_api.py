"""TF Serving's gRPC API on the embedded server, from tensorflow-serving-api's own protos and stubs, so TF
Serving's clients work unchanged: PredictionService's Predict and GetModelMetadata, ModelService's
GetModelStatus, with TF Serving's status codes and messages (model not found: NOT_FOUND; a bad signature,
input or label: INVALID_ARGUMENT). Classify, Regress and MultiInference take tf.Example inputs a
classifier's predict signature does not have: UNIMPLEMENTED, as TF Serving answers for such a model.

The same guards as REST: a message over serve.max_body_mib is refused by gRPC itself (RESOURCE_EXHAUSTED);
max_in_flight calls run at once and as many more wait for a turn (gRPC holds each one's whole message, so
fewer wait than REST's max_queued), beyond which gRPC refuses at once (RESOURCE_EXHAUSTED); a call that has
not finished within serve.request_timeout_s (or its own deadline), waiting included, gets DEADLINE_EXCEEDED
(its inference finishes, then frees its slot); a connection lives at most twice that limit, so a call whose
message never arrives cannot hold its thread. REST and gRPC bound their calls apart; the model's calls at
once are bounded together (one per core, predictors.py).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from crossdeploy.layout import OUTPUT_NAME, SIGNATURE
from crossdeploy.serving.predictors import ModelLookupError, check_model_spec
from crossdeploy.serving.rest_payload import InputSpec, RequestError, check_batch, check_float_values

log = logging.getLogger(__name__)

#: TF Serving's one metadata field (get_model_metadata_impl.cc)
SIGNATURE_DEF = "signature_def"
PREDICT_METHOD = "tensorflow/serving/predict"


def signature_def_map(specs: dict[str, list[InputSpec]], num_classes: int):
    """The predictor's signatures as TF Serving's SignatureDefMap (what GetModelMetadata returns)."""
    result = get_model_metadata_pb2.SignatureDefMap()
    for name, inputs in specs.items():
        signature = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
        for spec in inputs:
            info = signature.inputs[spec.name]
            info.name = f"{name}_{spec.name}:0"
            info.dtype = types_pb2.DT_STRING if spec.dtype == "string" else types_pb2.DT_FLOAT
            for size in (-1, *spec.sample_shape):
                info.tensor_shape.dim.add(size=size)
        output = signature.outputs[OUTPUT_NAME]
        output.name = "StatefulPartitionedCall:0"
        output.dtype = types_pb2.DT_FLOAT
        output.tensor_shape.dim.add(size=-1)
        output.tensor_shape.dim.add(size=num_classes)
        result.signature_def[name].CopyFrom(signature)
    return result


def tensor_to_array(tensor, spec: InputSpec, max_batch: int) -> np.ndarray:
    """A TensorProto -> the input array its spec takes; RequestError (INVALID_ARGUMENT) on anything else."""
    shape = tuple(d.size for d in tensor.tensor_shape.dim)
    expected = "DT_STRING" if spec.dtype == "string" else "DT_FLOAT"
    if types_pb2.DataType.Name(tensor.dtype) != expected:
        raise RequestError(f"{spec.name}: expects a {expected} tensor, got {types_pb2.DataType.Name(tensor.dtype)}.")
    if len(shape) != 1 + len(spec.sample_shape) or tuple(shape[1:]) != spec.sample_shape or shape[0] < 1:
        dims = ", ".join(["batch", *map(str, spec.sample_shape)])
        raise RequestError(f"{spec.name}: expected a tensor of shape [{dims}], got {list(shape)}.")
    check_batch(shape[0], max_batch)
    count = int(np.prod(shape))
    if spec.dtype == "string":
        if len(tensor.string_val) != count:
            raise RequestError(f"{spec.name}: the tensor's shape says {count} values, its string_val holds {len(tensor.string_val)}.")
        return np.asarray(list(tensor.string_val), dtype=object)
    if tensor.tensor_content:
        if len(tensor.tensor_content) != 4 * count:
            raise RequestError(
                f"{spec.name}: the tensor's shape says {count} floats, its tensor_content holds {len(tensor.tensor_content)} bytes."
            )
        values = np.frombuffer(tensor.tensor_content, dtype="<f4").reshape(shape)
    else:
        if len(tensor.float_val) != count:
            raise RequestError(f"{spec.name}: the tensor's shape says {count} floats, its float_val holds {len(tensor.float_val)}.")
        values = np.asarray(tensor.float_val, dtype=np.float32).reshape(shape)
    check_float_values(values, spec)
    return np.ascontiguousarray(values, dtype=np.float32)


def array_to_tensor(values: np.ndarray):

    values = np.ascontiguousarray(values, dtype="<f4")
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=values.tobytes())
    for size in values.shape:
        tensor.tensor_shape.dim.add(size=size)
    return tensor


class GrpcServer:
    """PredictionService and ModelService for one predictor on host:port, in threads beside the REST server."""

    def __init__(self, predictor, host: str, port: int, limits, labels: dict[str, int] | None = None):
        self.predictor, self.limits, self.labels = predictor, limits, dict(labels or {})
        self._metadata = signature_def_map(predictor.specs, predictor.num_classes)
        # the model's own calls, bounded as REST's are: a call past its deadline keeps its thread until the model returns
        self._work = ThreadPoolExecutor(max_workers=limits.max_in_flight, thread_name_prefix="grpc-predict")
        self._in_flight = threading.BoundedSemaphore(limits.max_in_flight)
        # gRPC reads a call's whole message before the servicer sees it (REST reads a body only once admitted), so
        # the calls it holds at once are bounded tighter than REST's queue: the running ones and as many waiting.
        # A stalled call (its message never sent) holds a thread: connections live at most twice the time limit.
        age_ms = int(2000 * limits.request_timeout_s)
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=2 * limits.max_in_flight, thread_name_prefix="grpc"),
            maximum_concurrent_rpcs=2 * limits.max_in_flight,
            options=[
                ("grpc.max_receive_message_length", limits.max_body_bytes),
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_connection_age_ms", age_ms),
                ("grpc.max_connection_age_grace_ms", age_ms),
                ("grpc.max_connection_idle_ms", age_ms),
                ("grpc.so_reuseport", 0),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self), self._server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self._server.add_insecure_port(address) == 0:
            raise OSError(f"cannot listen on {address} for gRPC")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_s: float = 5.0) -> None:
        self._server.stop(grace_s).wait()
        self._work.shutdown(wait=False, cancel_futures=True)

    def lookup(self, spec, context) -> None:
        version = spec.version.value if spec.HasField("version") else None
        try:
            check_model_spec(self.predictor, spec.name, version, spec.version_label or None, self.labels)
        except ModelLookupError as exc:
            context.abort(getattr(grpc.StatusCode, exc.code), str(exc))

    def predict(self, request, context):
        self.lookup(request.model_spec, context)
        signature = request.model_spec.signature_name or SIGNATURE
        if signature not in self.predictor.specs:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'Serving signature name: "{signature[:100]}" not found in signature def')
        specs = self.predictor.specs[signature]
        names = {s.name for s in specs}
        if set(request.inputs) != names:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request's inputs {sorted(request.inputs)[:10]} are not the signature's {sorted(names)}.",
            )
        for wanted in request.output_filter:
            if wanted != OUTPUT_NAME:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"output tensor alias not found in signature: {wanted[:100]}")
        try:
            arrays = {s.name: tensor_to_array(request.inputs[s.name], s, self.predictor.max_batch) for s in specs}
        except RequestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        # a turn is waited for within the time limit (or the client's own deadline, if sooner), as REST's queue does
        deadline = time.monotonic() + min(self.limits.request_timeout_s, context.time_remaining() or self.limits.request_timeout_s)
        if not self._in_flight.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the call waited longer than {self.limits.request_timeout_s:g} s for a turn (serve.request_timeout_s).",
            )
        work = self._work.submit(self.predictor.run, signature, arrays)
        work.add_done_callback(lambda _: self._in_flight.release())
        try:
            outputs = work.result(timeout=max(deadline - time.monotonic(), 0.0))
        except FutureTimeout:
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the call took longer than {self.limits.request_timeout_s:g} s (serve.request_timeout_s).",
            )
        except RequestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception:
            log.exception("gRPC predict failed")
            context.abort(grpc.StatusCode.INTERNAL, "the server failed on this call; its log says why.")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.predictor.name
        response.model_spec.version.value = self.predictor.version
        response.model_spec.signature_name = signature
        for key, values in outputs.items():
            response.outputs[key].CopyFrom(array_to_tensor(values))
        return response

    def metadata(self, request, context):
        self.lookup(request.model_spec, context)
        if not request.metadata_field:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field[:100]} is not supported")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.predictor.name
        response.model_spec.version.value = self.predictor.version
        response.metadata[SIGNATURE_DEF].Pack(self._metadata)
        return response

    def status(self, request, context):
        self.lookup(request.model_spec, context)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add(version=self.predictor.version, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        status.status.error_code = 0  # OK
        return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: GrpcServer):
        self.server = server

    def Predict(self, request, context):
        return self.server.predict(request, context)

    def GetModelMetadata(self, request, context):
        return self.server.metadata(request, context)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: GrpcServer):
        self.server = server

    def GetModelStatus(self, request, context):
        return self.server.status(request, context)
