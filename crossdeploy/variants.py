"""The deployable variants, as one table (pipeline_variants): what each is, what runs it, what judges it.

A row names the artifact, the framework that runs it with the row's options (device, provider, how it
is served), its precision and the validate.thresholds entry that judges it. Validate and benchmark
iterate over the table; a new target is a new row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossdeploy.build_failures import FAILURES_FILE, recorded_failure
from crossdeploy.layout import (
    REFERENCE,
    SAVEDMODEL_VARIANT,
    SERVED,
    TFLITE_VARIANTS,
    engine_record,
    model_version_dir,
    saved_model_version_dir,
    tensorrt_engines,
    trained_paths,
)  # fmt: skip
from crossdeploy.runtimes.base import Runner, ThreadSettings

#: ONNX Runtime's providers that run on an NVIDIA GPU
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
#: what runs a row: one Runner per framework (crossdeploy/runtimes/), "served" a model behind `crossdeploy serve`
FRAMEWORKS = ("torch", "onnxruntime", "openvino", "tensorrt", "tensorflow", "tflite", "served")


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str  # fp32 | fp16 | bf16 | int8: the arithmetic the artifact runs in
    thresholds: str  # the validate.thresholds entry that judges it
    framework: str  # one of FRAMEWORKS
    artifact: Path
    #: the framework's runner options for this row: torch's device, half and compile; ONNX Runtime's
    #: provider and TensorRT batch profile; TensorRT's cuda_graph; how a served row is served (OpenVINO's
    #: precision is the row's own)
    options: dict[str, Any] = field(default_factory=dict)
    #: A record the runtime reads where the artifact may be missing (a TensorRT engine's JSON says
    #: why it was skipped, and the runtime may build an engine for this machine from it).
    record: Path | None = None
    #: where the stage that builds the artifact records why it could not (build_failures)
    build_failures: Path | None = None

    def __post_init__(self) -> None:
        if self.framework not in FRAMEWORKS:  # a typo fails when the table is built, not when the row runs
            raise ValueError(f"{self.name}: unknown framework {self.framework!r}; one of {', '.join(FRAMEWORKS)}")

    def build_failure(self) -> str | None:
        """Why the converting stage could not build the artifact, as it recorded; None if it did not fail."""
        return recorded_failure(self.build_failures, self.name)

    def missing_reason(self) -> str | None:
        """Why the variant cannot be run at all, before any runtime is tried; None if it can be."""
        if self.artifact.exists() or (self.record is not None and self.record.is_file()):
            return None
        return f"{self.artifact} was not built"

    @property
    def on_gpu(self) -> bool:
        """The row runs on an NVIDIA GPU: its torch device, ONNX Runtime provider, TensorRT or a GPU server says so."""
        return (
            self.framework == "tensorrt"
            or str(self.options.get("device", "cpu")).startswith("cuda")
            or self.options.get("provider") in GPU_PROVIDERS
            or bool(self.options.get("gpu"))
        )

    def absent_reason(self) -> str | None:
        """What this machine certainly lacks to run the row, told without importing its framework (a GPU, TF
        Serving's binary or Docker); None where only opening the runtime can tell. The benchmark asks before
        it starts a process for the row, so a row that cannot run costs no start-up and no estimate."""
        if self.framework == "served" and self.options.get("engine") == "tfserving":
            from crossdeploy.serving.tfserving_launch import unavailable_reason

            return unavailable_reason(bool(self.options.get("gpu")))
        if self.on_gpu:
            from crossdeploy.device_info import no_gpu_reason

            return no_gpu_reason()
        return None

    def runner(self, threads: ThreadSettings) -> Runner:
        """The framework's runner for this row, given its options; only the framework that runs is imported."""
        options = dict(self.options)
        if self.framework == "served":
            from crossdeploy.runtimes.served_runtime import ServedRunner

            return ServedRunner(self.name, threads=threads, **options)
        if self.framework == "torch":
            from crossdeploy.runtimes.torch_runtime import TorchRunner as runner_class
        elif self.framework == "onnxruntime":
            from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner as runner_class

            options["providers"] = _onnxruntime_providers(options.pop("provider", "CPUExecutionProvider"), self.precision)
            options["precision"] = self.precision
        elif self.framework == "openvino":
            from crossdeploy.runtimes.openvino_runtime import OpenVinoRunner as runner_class

            options["precision"] = self.precision
        elif self.framework == "tensorrt":
            from crossdeploy.runtimes.tensorrt_runtime import TensorRTRunner as runner_class
        elif self.framework == "tensorflow":
            from crossdeploy.runtimes.tensorflow_runtime import TensorFlowRunner as runner_class
        else:  # tflite
            from crossdeploy.runtimes.tflite_runtime import TFLiteRunner as runner_class
        return runner_class(self.artifact, self.name, threads, **options)


def _onnxruntime_providers(provider: str, precision: str) -> tuple[str | tuple[str, dict], ...]:
    """ONNX Runtime's provider list for a row's provider, with the options that keep its figures comparable."""
    if provider == "CPUExecutionProvider":
        return (provider,)
    if provider == "CUDAExecutionProvider":
        # TF32 (the provider's default on Ampere and later) would round FP32 convolutions to a 10-bit mantissa
        return ((provider, {"use_tf32": "0"}),)
    if provider != "TensorrtExecutionProvider":
        raise ValueError(f"no ONNX Runtime options for the provider {provider!r}")
    from crossdeploy.tensorrt.engine_key import tensorrt_version
    from crossdeploy.tensorrt.engines import local_cache_dir

    # the provider's caches hold no record of what built them: one folder per ONNX Runtime and TensorRT
    # version (its file names carry the GPU's compute capability)
    cache = str(local_cache_dir() / "onnxruntime" / f"ort{_onnxruntime_version()}-trt{tensorrt_version()}")
    # the QDQ model carries its scales, so INT8 needs no calibration table; FP16 covers what stays float.
    # CUDA behind TensorRT runs whatever TensorRT declines.
    options = {
        "trt_int8_enable": precision == "int8",
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,  # its default is the working directory: the project's root
    }
    return ((provider, options), "CUDAExecutionProvider")


def _onnxruntime_version() -> str | None:
    from importlib import metadata

    for distribution in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def pipeline_variants(params: dict[str, Any]) -> list[Variant]:
    """Every variant the pipeline builds, in the order validate and benchmark report them."""
    paths, model_name, version = params["paths"], params["model"]["name"], int(params["to_tensorflow"]["version"])
    source = Path(paths["program"])
    onnx_fp32, onnx_fp16, onnx_int8, onnx_int8_trt = (
        Path(paths[key]) for key in ("onnx_optimized", "onnx_fp16", "onnx_int8", "onnx_int8_trt")
    )
    savedmodel = saved_model_version_dir(paths, model_name, version)
    tflite = Path(paths["tflite"])
    repository = Path(paths["serving"])
    served = model_version_dir(repository, model_name, version)
    return [
        #       name                     precision thresholds framework      artifact       framework options
        # on the CPU: the reference and every conversion of it
        Variant(REFERENCE,               "fp32",   "fp32",    "torch",       source),
        Variant("onnxruntime-fp32",      "fp32",   "fp32",    "onnxruntime", onnx_fp32),
        # the FP16 model's file judged on the CPU, which computes it in FP32 between its FP16 weights (onnx/fp16.py):
        # a check, not a deployment, so the benchmark leaves it out (PARITY_ONLY)
        Variant("onnxruntime-fp16",      "fp16",   "fp16",    "onnxruntime", onnx_fp16),
        Variant("onnxruntime-int8",      "int8",   "int8",    "onnxruntime", onnx_int8),
        Variant("onnxruntime-int8-trt",  "int8",   "int8",    "onnxruntime", onnx_int8_trt),
        # OpenVINO's CPU plugin on the same files: f32 forced (its default is bf16 where the CPU has it), bf16
        # where the CPU has it, and INT8 from the CPU flavour's Q/DQ model
        Variant("openvino-fp32",         "fp32",   "fp32",    "openvino",    onnx_fp32),
        Variant("openvino-bf16",         "bf16",   "bf16",    "openvino",    onnx_fp32),
        Variant("openvino-int8",         "int8",   "int8",    "openvino",    onnx_int8),
        Variant(SAVEDMODEL_VARIANT,      "fp32",   "fp32",    "tensorflow",  savedmodel,    build_failures=Path(paths["savedmodel"]) / FAILURES_FILE),  # noqa: E501  (the table reads across)
        *(  # tflite-fp32, tflite-fp16, tflite-int8
            Variant(name,                precision, precision, "tflite",     tflite / f"model.{precision}.tflite", build_failures=tflite / FAILURES_FILE)  # noqa: E501  (the table reads across)
            for precision, name in TFLITE_VARIANTS.items()
        ),
        # on the GPU: where no GPU (or package) exists their rows say so
        Variant("onnxruntime-cuda-fp32", "fp32",   "fp32",    "onnxruntime", onnx_fp32,     {"provider": "CUDAExecutionProvider"}),
        Variant("onnxruntime-cuda-fp16", "fp16",   "fp16",    "onnxruntime", onnx_fp16,     {"provider": "CUDAExecutionProvider"}),
        # the symmetric QDQ model on the CUDA provider alone: it runs Q/DQ around float kernels, so this row checks
        # what an ONNX Runtime GPU user gets from the INT8 file without TensorRT, not integer speed
        Variant("onnxruntime-cuda-int8", "int8",   "int8",    "onnxruntime", onnx_int8_trt, {"provider": "CUDAExecutionProvider"}),
        Variant("onnxruntime-trt-int8",  "int8",   "int8",    "onnxruntime", onnx_int8_trt, {"provider": "TensorrtExecutionProvider", "trt_batch": dict(params["tensorrt"]["batch"])}),  # noqa: E501  (the table reads across)
        Variant("torch-cuda-fp16",       "fp16",   "fp16",    "torch",       source,        {"device": "cuda", "half": True}),
        *(  # tensorrt-fp16, tensorrt-int8: the engine's JSON record says why one was not built
            Variant(engine.variant,      engine.precision, engine.precision, "tensorrt", engine.plan,
                    {"cuda_graph": bool(params["tensorrt"]["cuda_graph"])}, record=engine_record(engine.plan))
            for engine in tensorrt_engines(paths)
        ),
        # served (layout.SERVED: engine, protocol, bytes or floats, CPU or GPU), all from the package stage's
        # repository. The bytes signature resizes in its graph, not with PIL: judged by the "encoded" thresholds.
        *(
            Variant(name,                "fp32",   "encoded" if how.encoded else "fp32", "served", served,
                    {**how._asdict(), "repository": repository, "model": model_name}, build_failures=repository / FAILURES_FILE)
            for name, how in SERVED.items()
        ),
    ]  # fmt: skip


TORCH_COMPILE = "torch-compile-fp32"
#: rows validate judges and the benchmark measures only where benchmark.variants names them, and why
PARITY_ONLY = {
    "onnxruntime-fp16": "a check of the FP16 file, not a deployment: ONNX Runtime's CPU provider computes it in FP32 between "
    "casts, so its speed says nothing of FP16 (onnxruntime-cuda-fp16 and tensorrt-fp16 measure that); name it in "
    "benchmark.variants to measure it",
}


#: what the trained reference model is taken through: every conversion the CPU runs, and the embedded server
TRAINED_VARIANTS = (
    REFERENCE, "onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8", "onnxruntime-int8-trt", "openvino-fp32", "openvino-bf16",
    "openvino-int8", "tf-savedmodel-fp32", "tflite-fp32", "tflite-fp16", "tflite-int8", "kserve-rest-fp32", "kserve-rest-bytes",
)  # fmt: skip


def trained_variants(params: dict[str, Any]) -> list[Variant]:
    """The trained reference model's variants, read from its own folder (layout.trained_paths)."""
    trained = {**params, "paths": trained_paths(params["paths"]["trained"]), "model": {"name": params["trained"]["name"]}}
    return [v for v in pipeline_variants(trained) if v.name in TRAINED_VARIANTS]


def benchmark_variants(params: dict[str, Any]) -> list[Variant]:
    """Every pipeline variant, plus the reference program run through torch.compile."""
    source = Path(params["paths"]["program"])
    return [*pipeline_variants(params), Variant(TORCH_COMPILE, "fp32", "fp32", "torch", source, {"compile": True})]
