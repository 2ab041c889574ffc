"""The deployable variants: which artifact each is, which runtime runs it, at which precision.

A table rather than a class hierarchy: validate and benchmark iterate over it, and later targets
(TensorRT, TF Serving) add rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from crossdeploy.runtimes.base import Runner, ThreadSettings


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str  # fp32 | fp16 | int8: picks the parity thresholds
    runtime: str  # a key of RUNNER_FACTORIES
    artifact: Path

    def runner(self, threads: ThreadSettings) -> Runner:
        return RUNNER_FACTORIES[self.runtime](self, threads)


def _torch(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.torch_runtime import TorchRunner

    return TorchRunner(v.artifact, v.name, threads)


def _torch_compile(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.torch_runtime import TorchRunner

    return TorchRunner(v.artifact, v.name, threads, compile=True)


def _onnxruntime(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(v.artifact, v.name, threads)


def _onnxruntime_cuda(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(v.artifact, v.name, threads, providers=("CUDAExecutionProvider",))


def _onnxruntime_tensorrt(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner

    # CUDA behind TensorRT runs whatever TensorRT declines
    return OnnxRuntimeRunner(v.artifact, v.name, threads, providers=("TensorrtExecutionProvider", "CUDAExecutionProvider"))


def _tensorflow(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.tensorflow_runtime import TensorFlowRunner

    return TensorFlowRunner(v.artifact, v.name, threads)


def _tflite(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.tflite_runtime import TFLiteRunner

    return TFLiteRunner(v.artifact, v.name, threads)


RUNNER_FACTORIES: dict[str, Callable[[Variant, ThreadSettings], Runner]] = {
    "torch": _torch,
    "torch-compile": _torch_compile,
    "onnxruntime": _onnxruntime,
    "onnxruntime-cuda": _onnxruntime_cuda,
    "onnxruntime-tensorrt": _onnxruntime_tensorrt,
    "tensorflow": _tensorflow,
    "tflite": _tflite,
}

REFERENCE = "torch-fp32"


def saved_model_version_dir(paths: dict[str, Any], model_name: str, version: int = 1) -> Path:
    """TF Serving's layout: <model base path>/<version>/saved_model.pb."""
    return Path(paths["savedmodel"]) / model_name / str(version)


def pipeline_variants(paths: dict[str, Any], model_name: str) -> list[Variant]:
    tflite = Path(paths["tflite"])
    return [
        Variant(REFERENCE, "fp32", "torch", Path(paths["source"]) / "model.pt2"),
        Variant("onnxruntime-fp32", "fp32", "onnxruntime", Path(paths["onnx_optimized"])),
        Variant("onnxruntime-int8", "int8", "onnxruntime", Path(paths["onnx_int8"])),
        Variant("onnxruntime-int8-trt", "int8", "onnxruntime", Path(paths["onnx_int8_trt"])),
        Variant("tf-savedmodel-fp32", "fp32", "tensorflow", saved_model_version_dir(paths, model_name)),
        Variant("tflite-fp32", "fp32", "tflite", tflite / "model.fp32.tflite"),
        Variant("tflite-fp16", "fp16", "tflite", tflite / "model.fp16.tflite"),
        Variant("tflite-int8", "int8", "tflite", tflite / "model.int8.tflite"),
    ]


TORCH_COMPILE = "torch-compile-fp32"


def benchmark_variants(paths: dict[str, Any], model_name: str) -> list[Variant]:
    """Every pipeline variant, plus the reference program run through torch.compile."""
    return [*pipeline_variants(paths, model_name), Variant(TORCH_COMPILE, "fp32", "torch-compile", Path(paths["source"]) / "model.pt2")]
