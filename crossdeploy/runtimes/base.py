"""The one interface every runtime is driven through: open once, `infer(batch) -> logits`, close.

Subclasses implement only the `_*_impl` methods; the base class checks the input so every runtime
rejects a bad batch with the same clear message, and keeps the timing of the last call.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ThreadSettings:
    """CPU threads a runtime may use; recorded with every measurement so comparisons are fair."""

    intra_op: int = 0  # 0: the runtime's own default
    inter_op: int = 0


class RuntimeUnavailable(Exception):
    """The runtime cannot run on this machine (package or device missing); the reason says which."""


def unavailable_reason(runtime: str, exc: BaseException) -> str | None:
    """Why a runtime cannot run here, if `exc` says it is missing rather than broken; None otherwise."""
    if isinstance(exc, RuntimeUnavailable):
        return str(exc)
    if isinstance(exc, ImportError):
        return f"{runtime} is not installed here ({exc.name or exc})"
    return None


class Runner(ABC):
    #: The layout `infer` expects: NCHW (PyTorch, ONNX, TensorRT) or NHWC (TensorFlow, TFLite).
    layout: str = "NCHW"
    #: What `infer` takes: "tensor" (preprocessed float32 images) or "encoded" (a 1-D object array of
    #: JPEG/PNG files, for a served signature that preprocesses in its graph).
    input_kind: str = "tensor"
    #: Whether several threads may call `infer` on one activated runner at once; if not, concurrent
    #: clients each open their own runner.
    concurrent_infer: bool = True

    def __init__(self, name: str, threads: ThreadSettings | None = None):
        self.name = name
        self.threads = threads or ThreadSettings()
        self.is_active = False
        self.last_inference_s: float | None = None
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
        start = time.perf_counter()
        logits = self._infer_impl(batch)
        self.last_inference_s = time.perf_counter() - start
        return logits

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
