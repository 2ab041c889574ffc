"""The one interface every runtime is driven through: open once, `infer(batch) -> logits`, close.

Subclasses implement only the `_*_impl` methods; the base class checks the input so every runtime
rejects a bad batch with the same clear message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from crossdeploy.errors import RuntimeUnavailable


@dataclass(frozen=True)
class ThreadSettings:
    """CPU threads a runtime may use; recorded with every measurement so comparisons are fair."""

    intra_op: int = 0  # 0: the runtime's own default
    inter_op: int = 0


#: The optional runtimes (pyproject's `gpu` extra): module a runner imports -> the package to install.
#: Only their absence makes a variant `skipped`; onnxruntime-gpu's providers, TF Serving and a GPU are
#: checked by the runtimes themselves, which raise RuntimeUnavailable. Any other ImportError (a
#: crossdeploy module, a required dependency such as onnxruntime or tensorflow, a half-installed
#: package) is a broken install that must fail, not pass as "not installed here".
OPTIONAL_MODULES = {
    "tensorrt": "tensorrt",
    "cuda": "cuda-python",
    "cuda.bindings": "cuda-python",  # cuda-python >= 12.6; `cuda` itself may be a namespace other NVIDIA wheels create
}


def missing_optional_package(exc: BaseException | None) -> str | None:
    """The optional package whose absence raised `exc`, or None where something else is wrong."""
    # exact names only: a missing `tensorrt.something` means an installed TensorRT is broken
    if not isinstance(exc, ImportError) or exc.name not in OPTIONAL_MODULES:
        return None
    if isinstance(exc, ModuleNotFoundError):
        return OPTIONAL_MODULES[exc.name]
    # `from cuda import cudart` on a bare `cuda` namespace, tried only after `cuda.bindings` was not
    # found (crossdeploy.tensorrt.cuda): cuda-python is missing rather than broken
    return missing_optional_package(exc.__context__)


def unavailable_reason(name: str, exc: BaseException) -> str | None:
    """Why `name` (a variant) cannot run here, if `exc` says an optional package or the device is missing;
    None where it is broken (the caller records it as failed, with error_text)."""
    if isinstance(exc, RuntimeUnavailable):
        return str(exc)
    package = missing_optional_package(exc)
    if package:
        return (
            f"{name} needs the optional package {package}, which is not installed here (pip install "
            "--extra-index-url https://pypi.nvidia.com -e '.[gpu]')"
        )
    return None


def error_text(exc: BaseException) -> str:
    """A failure's reason as the metrics record it: the exception's type and message, kept short."""
    return f"{type(exc).__name__}: {exc}"[:300]


class Runner(ABC):
    #: The layout `infer` expects: NCHW (PyTorch, ONNX, TensorRT) or NHWC (TensorFlow, TFLite).
    layout: str = "NCHW"
    #: What `infer` takes: "tensor" (preprocessed float32 images) or "encoded" (a 1-D object array of
    #: JPEG/PNG files, for a served signature that preprocesses in its graph).
    input_kind: str = "tensor"
    #: Whether several threads may call `infer` on one activated runner at once; if not, concurrent
    #: clients get instances of their own up to max_instances, and queue on them beyond it.
    concurrent_infer: bool = True
    #: For a runtime without concurrent_infer: the most instances worth opening (None: one per client);
    #: clients beyond it queue on the instances there are (benchmark/runner_pool.py).
    max_instances: int | None = None
    #: For a runtime with concurrent_infer: the most calls worth running at once (None: every client's).
    #: A runtime computing on the CPU already spreads one call over every core, so calls beyond one per
    #: core only hold their activations while waiting for the same cores (benchmark/runner_pool.py).
    max_in_flight: int | None = None

    def __init__(self, name: str, threads: ThreadSettings | None = None):
        self.name = name
        self.threads = threads or ThreadSettings()
        self.is_active = False
        #: Accelerator compute time per call in ms, for runtimes that can time it apart from the
        #: copies (TensorRT: CUDA events); the harness reads and clears it per cell.
        self.device_ms: list[float] = []
        self._input_shape: tuple[int, int, int] | None = None
        #: The only batch size the model takes, for artifacts exported with a fixed batch dimension.
        self.fixed_batch: int | None = None

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.is_active:
            self._activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._check(batch)
        return self._infer_impl(batch)

    def prepare(self, batch: np.ndarray):
        """The request for `batch`, made once for `infer_prepared` to send again and again: a closed-loop
        client repeats one batch, and the work a client does once per request body (a served runner's
        JSON or protobuf encoding) is then out of the timing, as perf_analyzer prepares its requests.
        Checked as `infer` checks; for an in-process runtime the batch itself."""
        self._check(batch)
        return self._prepare_impl(batch)

    def infer_prepared(self, prepared) -> np.ndarray:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activate() the runner (or use it as a context manager) before infer_prepared().")
        return self._infer_prepared_impl(prepared)

    def _prepare_impl(self, batch: np.ndarray):
        return batch

    def _infer_prepared_impl(self, prepared) -> np.ndarray:
        return self._infer_impl(prepared)

    def _check(self, batch: np.ndarray) -> None:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activate() the runner (or use it as a context manager) before infer().")
        got = f"{batch.dtype} array of shape {batch.shape}" if isinstance(batch, np.ndarray) else type(batch).__name__
        if self.input_kind == "encoded":
            if not isinstance(batch, np.ndarray) or batch.dtype != object or batch.ndim != 1:
                raise ValueError(f"{self.name}: expected a 1-D object array of encoded images, got {got}.")
        else:
            if not isinstance(batch, np.ndarray) or batch.dtype != np.float32 or batch.ndim != 4:
                raise ValueError(f"{self.name}: expected a float32 {self.layout} batch of rank 4, got {got}.")
            sample_shape = tuple(batch.shape[1:])
            if self._input_shape is not None and sample_shape != self._input_shape:
                raise ValueError(f"{self.name}: expected {self.layout} samples of shape {self._input_shape}, got {sample_shape}.")
        if self.fixed_batch is not None and len(batch) != self.fixed_batch:
            raise ValueError(f"{self.name}: the model takes batches of exactly {self.fixed_batch}, got {len(batch)}.")

    def infer_all(self, tensors: np.ndarray, batch_size: int) -> np.ndarray:
        """Run a whole set in batches and concatenate the logits."""
        batch_size = self.fixed_batch or batch_size
        return np.concatenate([self.infer(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)])

    def inputs(self, images) -> np.ndarray:
        """What this runner's `infer` takes, for every image of an ImageSet."""
        if self.input_kind == "encoded":
            if images.encoded is None:
                raise RuntimeUnavailable("the image set keeps no encoded images (the data stage stores them for evaluation)")
            return np.array(images.encoded, dtype=object)
        return images.tensors(self.layout)

    @abstractmethod
    def _activate_impl(self) -> None: ...

    @abstractmethod
    def _infer_impl(self, batch: np.ndarray) -> np.ndarray: ...

    def _deactivate_impl(self) -> None:
        pass
