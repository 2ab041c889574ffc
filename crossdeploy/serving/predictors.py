"""What the embedded server runs a request on: the packaged SavedModel (TensorFlow runs both signatures),
or any other runtime's file (ONNX Runtime, OpenVINO, TFLite, torch) through its crossdeploy runner, behind
the same two signatures: `serving_default` takes float images as the SavedModel does (NHWC, preprocessed),
`serving_bytes` takes JPEG/PNG files, checked against package.image_limits from their headers and
preprocessed as the pipeline's data stage does (serving/image_input.py). Parsing and the guards on a body's
structure are the same for every runtime (Predictor); only running the model differs."""

from __future__ import annotations

import queue
import re
import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from crossdeploy.device_info import usable_cores
from crossdeploy.layout import BYTES_SIGNATURE, INPUT_NAME, OUTPUT_NAME, SIGNATURE
from crossdeploy.serving.gc_pause import GcPause
from crossdeploy.serving.rest_payload import InputSpec, RequestError, decode_request, encode_response
from crossdeploy.serving.signatures import BYTES_INPUT


class Predictor(ABC):
    """One model behind TF Serving's predict: parse a body (in a worker thread), run it, encode the answer.
    Every request in flight parses at once, at most one per core runs the model: parsing is Python under the
    GIL, so more requests in flight than cores keep the cores busy with the model while bodies are read and
    decoded; more model calls than cores would only hold their activations while they wait."""

    name: str
    version: int
    max_batch: int
    specs: dict[str, list[InputSpec]]
    num_classes: int  # the logits' width
    #: what serves the model, for the server's log and `crossdeploy serve`'s first line
    runtime: str

    def _setup(self, name: str, version: int, max_batch: int, specs: dict[str, list[InputSpec]]) -> None:
        self.name, self.version, self.max_batch, self.specs = name, int(version), max_batch, specs
        self._model_slots = threading.BoundedSemaphore(usable_cores())
        self._parse_pause = GcPause()
        # JSON containers and separators a legal request can hold: a full batch of the largest float
        # signature, row by row. Parsed, each costs tens of bytes of Python objects per byte of body
        # ("[]," is 3 bytes), so a body of empty lists within the size limit could take 30 times its size.
        values = max((max_batch * int(np.prod(spec.sample_shape)) for specs in specs.values() for spec in specs), default=0)
        rows = max(
            (max_batch * int(np.prod(spec.sample_shape[:-1])) for specs in specs.values() for spec in specs if spec.sample_shape), default=0
        )
        self.max_containers, self.max_separators = 2 * rows + 64 * max_batch + 64, values + 2 * rows + 64 * max_batch + 64

    @property
    def image_size(self) -> int:
        """The float signature's image side (its samples are side x side x 3)."""
        return self.specs[SIGNATURE][0].sample_shape[0]

    def _parse(self, body: bytes | bytearray) -> tuple[str, dict[str, np.ndarray], str]:
        self.check_structure(body)
        with self._parse_pause:  # the parsed tree lives until its arrays are built: no collection meanwhile
            return self._parse_checked(body)

    def _parse_checked(self, body: bytes | bytearray) -> tuple[str, dict[str, np.ndarray], str]:
        import orjson

        try:
            payload = orjson.loads(body)  # strict JSON: NaN and Infinity literals are refused here
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"the body is not valid JSON ({exc.msg} at byte {exc.pos}).") from None
        # "true" or "false" anywhere in the body (a substring search: 20 times faster than a regular
        # expression over 50 MB) sends the float inputs through the exact walk that refuses booleans
        return decode_request(payload, self.specs, self.max_batch, check_booleans=b"true" in body or b"false" in body)

    def check_structure(self, body: bytes | bytearray) -> None:
        """Refuse, before parsing, a body with more JSON structure than any legal request (bytes.count runs at memory speed)."""
        containers = body.count(b"[") + body.count(b"{")
        separators = body.count(b",")
        if containers > self.max_containers or separators > self.max_separators:
            raise RequestError(
                f"the body holds {containers} JSON arrays or objects and {separators} commas; a legal request to this model "
                f"holds at most {self.max_containers} and {self.max_separators} (a full batch of {self.max_batch})."
            )

    def handle(self, body: bytes | bytearray) -> dict[str, Any]:
        """Parse, check, run and encode one request body (in a worker thread); RequestError on bad input."""
        # parsed apart, so the parsed JSON (a batch of 32 float images is 4.8 M Python floats in 1.6 M lists,
        # about 5x the body) is freed before the model runs rather than held beside its activations
        signature, arrays, fmt = self._parse(body)
        return encode_response(self.run(signature, arrays), fmt)

    @abstractmethod
    def run(self, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature's outputs for checked input arrays; RequestError for an input the model refuses."""


class ModelLookupError(Exception):
    """A request names a model, version or label this server does not have. `code` is TF Serving's status:
    NOT_FOUND (REST 404) or INVALID_ARGUMENT (REST 400)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def check_model_spec(predictor: Predictor, name: str, version: int | None, label: str | None, labels: dict[str, int]) -> None:
    """TF Serving's model lookup, for REST and gRPC alike: the name, then a version or a label (not both)."""
    if name != predictor.name:
        raise ModelLookupError("NOT_FOUND", f"Servable not found for request: Latest({name[:100]})")
    if version is not None and label:
        raise ModelLookupError(
            "INVALID_ARGUMENT", f"Both model version ({version}) and model version label ({label[:100]}) cannot be supplied."
        )
    if version is not None and version != predictor.version:
        raise ModelLookupError(
            "NOT_FOUND", f"Servable not found for request: Specific({name[:100]}, {version}); this server has version {predictor.version}"
        )
    if label and labels.get(label) != predictor.version:
        raise ModelLookupError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label[:100]}")


def signature_specs(signatures) -> dict[str, list[InputSpec]]:
    specs = {}
    for name, fn in signatures.items():
        inputs = fn.structured_input_signature[1]
        specs[name] = [
            InputSpec(key, "string" if spec.dtype.name == "string" else "float32", tuple(spec.shape[1:]))
            for key, spec in sorted(inputs.items())
        ]
    return specs


#: a message the serving graph raises on purpose (serving/signatures.py), quoted inside TensorFlow's
#: assertion text as "[image ...]"
_GRAPH_MESSAGE = re.compile(r"\[(image[^\[\]\n]*)\]")


def model_error_message(text: str) -> str:
    """What a client may read of a TensorFlow InvalidArgumentError: the graph's own sentence about the
    image where there is one; never TensorFlow's node names, source paths or traceback."""
    found = _GRAPH_MESSAGE.search(text)
    if found:
        return found.group(1).strip()
    return "an input was rejected by the model: an encoded image that is not a complete JPEG or PNG file, or a value it cannot take."


class SavedModelPredictor(Predictor):
    """The packaged SavedModel (both signatures in its graph), called from worker threads."""

    runtime = "TensorFlow SavedModel"

    def __init__(self, name: str, version_dir: Path, max_batch: int):
        from crossdeploy.tensorflow.env import import_tensorflow

        self._tf = tf = import_tensorflow()
        self._loaded = tf.saved_model.load(str(version_dir))
        self._signatures = dict(self._loaded.signatures)
        self._setup(name, int(version_dir.name), max_batch, signature_specs(self._signatures))
        (output,) = self._signatures[SIGNATURE].structured_outputs.values()
        self.num_classes = int(output.shape[-1])

    def run(self, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        tensors = {k: tf.constant(list(v) if v.dtype == object else v) for k, v in arrays.items()}
        del arrays
        try:
            with self._model_slots:
                outputs = self._signatures[signature](**tensors)
        except tf.errors.InvalidArgumentError as exc:
            raise RequestError(model_error_message(exc.message)) from None
        return {k: v.numpy() for k, v in outputs.items()}


class RunnerPredictor(Predictor):
    """Any other runtime's file through its runner (crossdeploy/runtimes/), behind the SavedModel's two
    signatures. A runner that takes concurrent calls is shared; one that does not (TFLite's interpreter)
    gets one instance per model slot."""

    def __init__(self, name: str, version: int, open_runner: Callable[[], Any], label: str, max_batch: int, preprocessing, image_limits):
        """`open_runner`: a new, inactive runner of the served file (variants.Variant.runner)."""
        from crossdeploy.serving.image_input import ImageDecoder

        self.runtime = label
        self._decoder = ImageDecoder(preprocessing, image_limits)
        first = open_runner()
        first.activate()
        self._layout = first.layout
        self._shared = first if first.concurrent_infer else None  # one runner takes every call at once
        # decoding a large photograph holds hundreds of MB until it is resized: one per core at a time, as the model runs
        self._decode_slots = threading.BoundedSemaphore(usable_cores())
        self._runners: queue.Queue = queue.Queue()  # else an instance per model slot, each call taking one
        if self._shared is None:
            self._runners.put(first)
            for _ in range(min(usable_cores(), first.max_instances or usable_cores()) - 1):
                runner = open_runner()
                runner.activate()
                self._runners.put(runner)
        size = preprocessing.crop_size
        # one image through the model before the server opens: its width, and the first call's set-up is not a client's
        self._fixed_batch = first.fixed_batch
        self.num_classes = int(first.infer(np.zeros((self._fixed_batch or 1, *self._shape(size)), np.float32)).shape[-1])
        specs = {SIGNATURE: [InputSpec(INPUT_NAME, "float32", (size, size, 3))], BYTES_SIGNATURE: [InputSpec(BYTES_INPUT, "string", ())]}
        self._setup(name, version, max_batch, specs)

    def _shape(self, size: int) -> tuple[int, int, int]:
        return (3, size, size) if self._layout == "NCHW" else (size, size, 3)

    @contextmanager
    def _runner(self) -> Iterator[Any]:
        if self._shared is not None:
            yield self._shared
            return
        runner = self._runners.get()
        try:
            yield runner
        finally:
            self._runners.put(runner)

    def run(self, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if signature == BYTES_SIGNATURE:
            with self._decode_slots:
                images = self._decoder.tensors(arrays[BYTES_INPUT], self._layout)
        else:
            images = arrays[INPUT_NAME]  # NHWC, as the SavedModel's float signature takes it
            if self._layout == "NCHW":
                images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        del arrays
        if self._fixed_batch and len(images) != self._fixed_batch:
            raise RequestError(f"this model was exported for batches of exactly {self._fixed_batch}; the request holds {len(images)}.")
        with self._model_slots, self._runner() as runner:
            logits = runner.infer(images)
        return {OUTPUT_NAME: logits}
