"""The one place that tells TensorRT 10 from 11: which network-creation and builder flags an engine build
may name on each major, and the flags an engine of each precision is built with.

TensorRT 11 removed weak typing. Every network is strongly typed, so an engine runs in the types of its
ONNX model (FP16 tensors for FP16; Q/DQ nodes for INT8, FP32 elsewhere), and BuilderFlag.FP16, INT8 and
the other precision flags are gone. TensorRT 10 builds either way. Both majors build the INT8 engine and
an FP16 model's engine strongly typed, so the two give the same engines; only an FP16 engine from the
FP32 model needs 10's FP16 flag, which 11 has no way to give.

The enum members are those of NVIDIA's Python bindings (NVIDIA/TensorRT, python/src/infer/pyCore.cpp)
at v10.0.0 and v11.0, the first release of each major, and match NVIDIA's "Migrating from TensorRT 10.x
to 11.x" Python reference (docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/).
"""

from __future__ import annotations

from dataclasses import dataclass

from crossdeploy.errors import CrossdeployError

#: members of the two enums that decide an engine's types, in every release of each major
ENUMS: dict[int, dict[str, frozenset[str]]] = {
    10: {
        "NetworkDefinitionCreationFlag": frozenset({"EXPLICIT_BATCH", "STRONGLY_TYPED"}),
        "BuilderFlag": frozenset(
            {
                "FP16",
                "BF16",
                "INT8",
                "FP8",
                "OBEY_PRECISION_CONSTRAINTS",
                "PREFER_PRECISION_CONSTRAINTS",
                "TF32",
                "DEBUG",
                "GPU_FALLBACK",
                "REFIT",
                "REFIT_IDENTICAL",
                "DISABLE_TIMING_CACHE",
                "SPARSE_WEIGHTS",
                "SAFETY_SCOPE",
                "DIRECT_IO",
                "VERSION_COMPATIBLE",
                "EXCLUDE_LEAN_RUNTIME",
                "ERROR_ON_TIMING_CACHE_MISS",
                "DISABLE_COMPILATION_CACHE",
                "STRIP_PLAN",
                "WEIGHTLESS",
                "WEIGHT_STREAMING",
            }
        ),
    },
    11: {
        "NetworkDefinitionCreationFlag": frozenset({"STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"}),
        "BuilderFlag": frozenset(
            {
                "TF32",
                "DEBUG",
                "GPU_FALLBACK",
                "REFIT",
                "REFIT_IDENTICAL",
                "REFIT_INDIVIDUAL",
                "DISABLE_TIMING_CACHE",
                "EDITABLE_TIMING_CACHE",
                "SPARSE_WEIGHTS",
                "SAFETY_SCOPE",
                "DIRECT_IO",
                "VERSION_COMPATIBLE",
                "EXCLUDE_LEAN_RUNTIME",
                "ERROR_ON_TIMING_CACHE_MISS",
                "DISABLE_COMPILATION_CACHE",
                "STRIP_PLAN",
                "WEIGHT_STREAMING",
                "STRICT_NANS",
                "MONITOR_MEMORY",
                "DISTRIBUTIVE_INDEPENDENCE",
            }
        ),
    },
}
#: members a major keeps only so that old code still runs, and ignores
IGNORED: dict[int, dict[str, frozenset[str]]] = {
    11: {"NetworkDefinitionCreationFlag": frozenset({"STRONGLY_TYPED"})},  # strongly typed is 11's only mode
}


@dataclass(frozen=True)
class TensorRTApi:
    """The flags one major's engine build names. A name the major lacks or ignores is refused here,
    so a build never reaches for it (TensorRT would raise AttributeError mid-build, or silently ignore it)."""

    major: int
    strongly_typed: tuple[str, ...]  # NetworkDefinitionCreationFlag members for a strongly typed network
    fp16_from_fp32: tuple[str, ...] | None  # BuilderFlag members that let an FP32 network run in FP16; None: it has none

    def __post_init__(self) -> None:
        for enum, names in (("NetworkDefinitionCreationFlag", self.strongly_typed), ("BuilderFlag", self.fp16_from_fp32 or ())):
            for name in names:
                if name not in ENUMS[self.major][enum]:
                    raise CrossdeployError(f"TensorRT {self.major} has no {enum}.{name}; take it out of that major's TensorRTApi.")
                if name in IGNORED.get(self.major, {}).get(enum, ()):
                    raise CrossdeployError(
                        f"TensorRT {self.major} ignores {enum}.{name} (deprecated); take it out of that major's TensorRTApi."
                    )


APIS = {
    10: TensorRTApi(10, strongly_typed=("STRONGLY_TYPED",), fp16_from_fp32=("FP16",)),
    11: TensorRTApi(11, strongly_typed=(), fp16_from_fp32=None),
}


def tensorrt_api(version: str) -> TensorRTApi:
    """The table for an installed TensorRT, from its version string (tensorrt.__version__)."""
    major = int(version.split(".", 1)[0])
    if major not in APIS:
        raise CrossdeployError(f"TensorRT {version} is not a major this project builds with (10 or 11); install tensorrt>=10.0,<12.")
    return APIS[major]


@dataclass(frozen=True)
class BuildFlags:
    network: tuple[str, ...]  # NetworkDefinitionCreationFlag members, for builder.create_network
    builder: tuple[str, ...]  # BuilderFlag members, for config.set_flag


def build_flags(api: TensorRTApi, precision: str, fp16_model: bool) -> BuildFlags:
    """The flags, by name, of an engine of `precision` (fp16 | int8): strongly typed where the ONNX model's
    own types carry the precision (Q/DQ for INT8; `fp16_model`: an FP16 model), else the FP32 model
    lowered by the FP16 builder flag."""
    if precision == "int8" or fp16_model:
        return BuildFlags(network=api.strongly_typed, builder=())
    if api.fp16_from_fp32 is None:
        raise CrossdeployError(
            f"TensorRT {api.major} builds an FP16 engine only from an FP16 ONNX model (it has no FP16 builder flag); "
            "build the FP16 engine from one (BuildSettings.fp16_model) or install TensorRT 10."
        )
    return BuildFlags(network=(), builder=api.fp16_from_fp32)
