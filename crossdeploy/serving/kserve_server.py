"""The embedded server: KServe's Python model server answering KServe's V1 protocol, which is TF
Serving's REST API, from the packaged SavedModel. It runs wherever Python does (no TF Serving binary,
no Docker engine), binds to loopback unless told otherwise, and answers bad requests with a 4xx."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from crossdeploy.serving.rest_payload import InputSpec, RequestError, decode_request, encode_response


def signature_specs(signatures) -> dict[str, list[InputSpec]]:
    specs = {}
    for name, fn in signatures.items():
        inputs = fn.structured_input_signature[1]
        specs[name] = [
            InputSpec(key, "string" if spec.dtype.name == "string" else "float32", tuple(spec.shape[1:]))
            for key, spec in sorted(inputs.items())
        ]
    return specs


def build_model(name: str, version_dir: Path, max_batch: int):
    import kserve
    from kserve.errors import InvalidInput

    from crossdeploy.tensorflow_env import import_tensorflow

    class SavedModelPredictor(kserve.Model):
        def load(self) -> bool:
            tf = import_tensorflow()
            self._tf = tf
            self._loaded = tf.saved_model.load(str(version_dir))
            self._signatures = dict(self._loaded.signatures)
            self._specs = signature_specs(self._signatures)
            self.ready = True
            return self.ready

        async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
            try:
                signature, arrays, fmt = decode_request(payload, self._specs, max_batch)
            except RequestError as exc:
                raise InvalidInput(str(exc)) from None
            # TensorFlow releases the GIL: other requests are decoded while this one runs
            outputs = await asyncio.to_thread(self._run, signature, arrays)
            return encode_response(outputs, fmt)

        def _run(self, signature: str, arrays: dict[str, Any]):
            tf = self._tf
            tensors = {k: tf.constant(list(v) if v.dtype == object else v) for k, v in arrays.items()}
            return {k: v.numpy() for k, v in self._signatures[signature](**tensors).items()}

    model = SavedModelPredictor(name)
    model.load()
    return model


def serve_kserve(name: str, version_dir: Path, host: str, rest_port: int, max_batch: int) -> None:
    """Block serving REST on host:rest_port until SIGINT or SIGTERM."""
    import kserve
    import kserve.model_server as model_server

    class BoundRESTServer(model_server.RESTServer):
        # KServe binds 0.0.0.0; a local model server should listen where it is told, loopback by default
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.config.host = host

    model_server.RESTServer = BoundRESTServer
    model = build_model(name, version_dir, max_batch)
    kserve.ModelServer(http_port=rest_port, enable_grpc=False, workers=1, enable_latency_logging=False).start([model])
