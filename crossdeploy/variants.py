"""The deployable variants: which artifact each is, which runtime runs it, at which precision.

A table rather than a class hierarchy: validate and benchmark iterate over it, and later targets
(TensorRT, TF Serving) add rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from crossdeploy.build_failures import FAILURES_FILE, recorded_failure
from crossdeploy.layout import (
    REFERENCE, SAVEDMODEL_VARIANT, SERVED, TFLITE_VARIANTS, model_version_dir, saved_model_version_dir, tensorrt_engines, trained_paths,
)  # fmt: skip
from crossdeploy.runtimes.base import Runner, ThreadSettings


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str  # fp32 | fp16 | int8: picks the parity thresholds
    runtime: str  # a key of RUNNER_FACTORIES
    artifact: Path
    tolerance: str = ""  # the validate.thresholds entry that judges it; empty: its precision's
    #: A record the runtime reads where the artifact may be missing (a TensorRT engine's JSON says
    #: why it was skipped, and the runtime may build an engine for this machine from it).
    record: Path | None = None
    #: where the stage that builds the artifact records why it could not (build_failures)
    build_failures: Path | None = None
    #: params a runtime needs beyond the artifact (the TensorRT provider's batch profile: tensorrt.batch)
    batch_profile: dict[str, int] | None = None

    @property
    def thresholds_key(self) -> str:
        return self.tolerance or self.precision

    def build_failure(self) -> str | None:
        """Why the converting stage could not build the artifact, as it recorded; None if it did not fail."""
        return recorded_failure(self.build_failures, self.name)

    def missing_reason(self) -> str | None:
        """Why the variant cannot be run at all, before any runtime is tried; None if it can be."""
        if self.artifact.exists() or (self.record is not None and self.record.is_file()):
            return None
        return f"{self.artifact} was not built"

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

    # TF32 (the provider's default on Ampere and later) would round FP32 convolutions to a 10-bit mantissa
    return OnnxRuntimeRunner(v.artifact, v.name, threads, providers=(("CUDAExecutionProvider", {"use_tf32": "0"}),))


def _onnxruntime_tensorrt(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner

    from crossdeploy.tensorrt.engines import local_cache_dir

    # the QDQ model carries its scales, so INT8 needs no calibration table; FP16 covers what stays float.
    # CUDA behind TensorRT runs whatever TensorRT declines.
    from crossdeploy.tensorrt.engine_key import tensorrt_version

    # the provider's caches hold no record of what built them: one folder per ONNX Runtime and TensorRT
    # version (its file names carry the GPU's compute capability)
    cache = str(local_cache_dir() / "onnxruntime" / f"ort{_onnxruntime_version()}-trt{tensorrt_version()}")
    options = {
        "trt_int8_enable": v.precision == "int8",
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,  # its default is the working directory: the project's root
    }
    return OnnxRuntimeRunner(
        v.artifact, v.name, threads, providers=(("TensorrtExecutionProvider", options), "CUDAExecutionProvider"), trt_batch=v.batch_profile
    )


def _onnxruntime_version() -> str | None:
    from importlib import metadata

    for distribution in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def _torch_cuda_fp16(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.torch_runtime import TorchRunner

    return TorchRunner(v.artifact, v.name, threads, device="cuda", half=True)


def _tensorrt(cuda_graph: bool, v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.tensorrt_runtime import TensorRTRunner

    return TensorRTRunner(v.artifact, v.name, threads, cuda_graph=cuda_graph)


def _tensorflow(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.tensorflow_runtime import TensorFlowRunner

    return TensorFlowRunner(v.artifact, v.name, threads)


def _tflite(v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.tflite_runtime import TFLiteRunner

    return TFLiteRunner(v.artifact, v.name, threads)


def _served(engine: str, protocol: str, encoded: bool, gpu: bool, v: Variant, threads: ThreadSettings) -> Runner:
    from crossdeploy.runtimes.served_runtime import ServedRunner

    # the artifact is <repository>/<model>/<version>, as the package stage lays it out
    return ServedRunner(
        v.name, engine, protocol, encoded, threads=threads, repository=v.artifact.parent.parent, model=v.artifact.parent.name, gpu=gpu
    )


RUNNER_FACTORIES: dict[str, Callable[[Variant, ThreadSettings], Runner]] = {
    **{name: partial(_served, *spec) for name, spec in SERVED.items()},
    "torch": _torch,
    "torch-compile": _torch_compile,
    "onnxruntime": _onnxruntime,
    "onnxruntime-cuda": _onnxruntime_cuda,
    "onnxruntime-tensorrt": _onnxruntime_tensorrt,
    "torch-cuda-fp16": _torch_cuda_fp16,
    "tensorrt": partial(_tensorrt, False),
    "tensorrt-cuda-graph": partial(_tensorrt, True),
    "tensorflow": _tensorflow,
    "tflite": _tflite,
}



def pipeline_variants(params: dict[str, Any]) -> list[Variant]:
    paths, model_name, version = params["paths"], params["model"]["name"], int(params["to_tensorflow"]["version"])
    tflite = Path(paths["tflite"])
    repository = Path(paths["serving"])
    served = model_version_dir(repository, model_name, version)
    engine_runtime = "tensorrt-cuda-graph" if params["tensorrt"]["cuda_graph"] else "tensorrt"
    return [
        Variant(REFERENCE, "fp32", "torch", Path(paths["source"]) / "model.pt2"),
        Variant("onnxruntime-fp32", "fp32", "onnxruntime", Path(paths["onnx_optimized"])),
        Variant("onnxruntime-int8", "int8", "onnxruntime", Path(paths["onnx_int8"])),
        Variant("onnxruntime-int8-trt", "int8", "onnxruntime", Path(paths["onnx_int8_trt"])),
        Variant(
            SAVEDMODEL_VARIANT, "fp32", "tensorflow", saved_model_version_dir(paths, model_name, version),
            build_failures=Path(paths["savedmodel"]) / FAILURES_FILE,
        ),
        *(
            Variant(name, precision, "tflite", tflite / f"model.{precision}.tflite", build_failures=tflite / FAILURES_FILE)
            for precision, name in TFLITE_VARIANTS.items()
        ),
        # GPU variants: where no GPU (or package) exists their rows say so
        Variant("onnxruntime-cuda-fp32", "fp32", "onnxruntime-cuda", Path(paths["onnx_optimized"])),
        Variant("onnxruntime-trt-int8", "int8", "onnxruntime-tensorrt", Path(paths["onnx_int8_trt"]), batch_profile=dict(params["tensorrt"]["batch"])),
        Variant("torch-cuda-fp16", "fp16", "torch-cuda-fp16", Path(paths["source"]) / "model.pt2"),
        *(
            Variant(name, precision, engine_runtime, plan, record=plan.with_suffix(".json"))
            for name, precision, _ in tensorrt_engines(paths)
            for plan in [Path(paths["tensorrt"]) / f"{name}.plan"]
        ),
        # the bytes signature resizes in its graph, not with PIL: judged by the "encoded" thresholds.
        # The tfserving-gpu-* rows serve this same repository from TF Serving's -gpu image.
        *(
            Variant(name, "fp32", name, served, "encoded" if spec.encoded else "", build_failures=repository / FAILURES_FILE)
            for name, spec in SERVED.items()
        ),
    ]


TORCH_COMPILE = "torch-compile-fp32"


#: what the trained reference model is taken through: every conversion the CPU runs, and the embedded server
TRAINED_VARIANTS = (
    REFERENCE, "onnxruntime-fp32", "onnxruntime-int8", "onnxruntime-int8-trt",
    "tf-savedmodel-fp32", "tflite-fp32", "tflite-fp16", "tflite-int8", "kserve-rest-fp32", "kserve-rest-bytes",
)  # fmt: skip


def trained_variants(params: dict[str, Any]) -> list[Variant]:
    """The trained reference model's variants, read from its own folder (layout.trained_paths)."""
    trained = {**params, "paths": trained_paths(params["paths"]["trained"]), "model": {"name": params["trained"]["name"]}}
    return [v for v in pipeline_variants(trained) if v.name in TRAINED_VARIANTS]


def benchmark_variants(params: dict[str, Any]) -> list[Variant]:
    """Every pipeline variant, plus the reference program run through torch.compile."""
    source = Path(params["paths"]["source"]) / "model.pt2"
    return [*pipeline_variants(params), Variant(TORCH_COMPILE, "fp32", "torch-compile", source)]
