"""Where the pipeline's artifacts live, derived from params.yaml's `paths` section.

Kept apart from variants.py (which pulls in every runtime) so that a stage needing only a path,
such as the TensorRT build, does not depend on the runtimes' code under DVC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

#: The model's interface, the same in every artifact: ONNX input/output names, the SavedModel's
#: serving signature, and the largest batch the exported programs accept.
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
SIGNATURE = "serving_default"
#: the served repository's second signature: encoded JPEG/PNG bytes in, decoded and preprocessed in the graph
BYTES_SIGNATURE = "serving_bytes"
MAX_BATCH = 4096
#: the variant every other one is compared with
REFERENCE = "torch-fp32"
#: variants the to_tensorflow and package stages build, by the names validate and benchmark report
SAVEDMODEL_VARIANT = "tf-savedmodel-fp32"
TFLITE_PRECISIONS = ("fp32", "fp16", "int8")
TFLITE_VARIANTS = {precision: f"tflite-{precision}" for precision in TFLITE_PRECISIONS}


class Served(NamedTuple):
    engine: str  # kserve | tfserving
    protocol: str  # rest | grpc
    encoded: bool  # the bytes signature (JPEG/PNG in, resized in the graph) rather than float tensors
    gpu: bool = False  # TF Serving's -gpu image with --gpus all (CUDA kernels); otherwise the server runs on the CPU


#: served variant -> how it is served, all from the one repository the package stage builds. The embedded
#: engine runs anywhere; TF Serving where its binary or a Docker engine is; its GPU rows where a Docker
#: engine and an NVIDIA GPU are.
SERVED = {
    "tfserving-grpc-fp32": Served("tfserving", "grpc", False),
    "tfserving-rest-fp32": Served("tfserving", "rest", False),
    "tfserving-rest-bytes": Served("tfserving", "rest", True),
    "tfserving-gpu-grpc-fp32": Served("tfserving", "grpc", False, gpu=True),
    "tfserving-gpu-rest-bytes": Served("tfserving", "rest", True, gpu=True),
    "kserve-rest-fp32": Served("kserve", "rest", False),
    "kserve-rest-bytes": Served("kserve", "rest", True),
}
#: parity rows of the trained reference model (stage trained) are named trained/<variant>
TRAINED_PREFIX = "trained/"


def model_version_dir(base: str | Path, model_name: str, version: int) -> Path:
    """TF Serving's layout, <base>/<model name>/<version>/saved_model.pb: the to_tensorflow stage's SavedModel
    folder and the package stage's repository are both laid out this way."""
    return Path(base) / model_name / str(int(version))


def saved_model_version_dir(paths: dict[str, Any], model_name: str, version: int = 1) -> Path:
    return model_version_dir(paths["savedmodel"], model_name, version)


def engine_record(plan: Path) -> Path:
    """A TensorRT plan's record (what it was built from, for which GPU, or why it was skipped)."""
    return plan.with_suffix(".json")


class TensorRTEngine(NamedTuple):
    variant: str
    precision: str
    onnx: Path  # what it is built from
    plan: Path  # its record sits beside it, as <variant>.json
    fp16_model: bool  # `onnx` is the FP16 model, which TensorRT builds strongly typed (BuildSettings.fp16_model)


def tensorrt_engines(paths: dict[str, Any], folder: str | Path | None = None) -> list[TensorRTEngine]:
    """FP16 from the FP16 model (strongly typed: the one FP16 engine TensorRT 11 builds, and 10 builds it the
    same), INT8 from the TensorRT-flavour QDQ model (explicit quantization with the calibrated scales), as plans
    in `folder` (default: paths.tensorrt)."""
    folder = Path(folder or paths["tensorrt"])
    return [
        TensorRTEngine("tensorrt-fp16", "fp16", Path(paths["onnx_fp16"]), folder / "tensorrt-fp16.plan", fp16_model=True),
        TensorRTEngine("tensorrt-int8", "int8", Path(paths["onnx_int8_trt"]), folder / "tensorrt-int8.plan", fp16_model=False),
    ]


def trained_paths(root: str | Path) -> dict[str, str]:
    """The trained reference model's artifacts under one folder, keyed and laid out like params.yaml's
    `paths` under models/, so that the variant table reads them the way it reads the main model's."""
    root = Path(root)
    return {
        "source": str(root / "source"),
        "program": str(root / "source" / "model.pt2"),
        "model_card": str(root / "source" / "model.json"),
        "preprocessing": str(root / "source" / "preprocessing.json"),
        "data": str(root / "data"),
        "calibration": str(root / "data" / "calibration.npz"),
        "evaluation": str(root / "data" / "evaluation.npz"),
        "onnx": str(root / "onnx" / "model.onnx"),
        "onnx_optimized": str(root / "onnx" / "model.optimized.onnx"),
        "onnx_fp16": str(root / "onnx" / "model.fp16.onnx"),
        "onnx_int8": str(root / "onnx" / "model.int8.onnx"),
        "onnx_int8_trt": str(root / "onnx" / "model.int8-trt.onnx"),
        "savedmodel": str(root / "tensorflow" / "savedmodel"),
        "tflite": str(root / "tensorflow" / "tflite"),
        "serving": str(root / "serving"),
        "tensorrt": str(root / "tensorrt"),
    }
