"""What a TensorRT engine is valid for, and the key that names it.

A plan file only runs on the GPU type (compute capability) and TensorRT version that built it, and
its tactics were timed for one input profile. The key hashes all of that with the ONNX file itself,
so an engine shared through a DVC remote is loaded only where it is valid; elsewhere the record says
why and a fresh engine is built.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from crossdeploy.errors import CrossdeployError

PRECISIONS = ("fp16", "int8")


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT's optimization profile on the batch axis: the engine takes min..max, tuned for opt."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (isinstance(self.min, int) and 1 <= self.min <= self.opt <= self.max):
            raise CrossdeployError(f"tensorrt.batch must satisfy 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}.")

    def shapes(self, sample_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes for IOptimizationProfile.set_shape."""
        return tuple((batch, *sample_shape) for batch in (self.min, self.opt, self.max))  # type: ignore[return-value]


@dataclass(frozen=True)
class BuildSettings:
    precision: str  # fp16 | int8 (explicit: the QDQ ONNX carries the calibrated scales)
    batch: BatchProfile
    workspace_mib: int  # the WORKSPACE memory-pool limit
    optimization_level: int = 3  # TensorRT's builder_optimization_level, 0..5
    # fp16 only: the ONNX file is an FP16 model, built strongly typed on every TensorRT; False: the FP32
    # model, which only TensorRT 10's FP16 builder flag can lower (crossdeploy.tensorrt.api)
    fp16_model: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise CrossdeployError(f"TensorRT precision {self.precision!r} is not one of {', '.join(PRECISIONS)}.")
        if self.fp16_model and self.precision != "fp16":
            raise CrossdeployError(f"fp16_model applies to FP16 engines only; leave it False for precision {self.precision}.")
        if not 0 <= self.optimization_level <= 5:
            raise CrossdeployError(f"tensorrt.optimization_level must be 0..5, got {self.optimization_level}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BuildSettings":
        return cls(**{**data, "batch": BatchProfile(**data["batch"])})


@dataclass(frozen=True)
class GpuTarget:
    """The hardware and software an engine is bound to."""

    gpu: str
    compute_capability: str  # "8.0" for A100, "9.0" for H100
    tensorrt: str

    @property
    def slug(self) -> str:
        return f"sm{self.compute_capability.replace('.', '')}-trt{self.tensorrt}"


def tensorrt_version() -> str | None:
    for distribution in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12_libs"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def tensorrt_cuda_major() -> int | None:
    """The CUDA major version the installed TensorRT wheels are built for (tensorrt-cu12 / -cu13)."""
    for major in (13, 12, 11):
        for distribution in (f"tensorrt-cu{major}", f"tensorrt-cu{major}-libs", f"tensorrt-cu{major}-bindings"):
            try:
                metadata.version(distribution)
            except metadata.PackageNotFoundError:
                continue
            return major
    return None


def tensorrt_driver_reason() -> str | None:
    """Why this machine's driver cannot run the installed TensorRT; None if it can or cannot be told."""
    from crossdeploy.device_info import driver_too_old

    version = tensorrt_version()
    return driver_too_old(tensorrt_cuda_major(), f"TensorRT {version}")


@functools.cache  # the GPU and TensorRT do not change under a running process; each runner asks
def current_target() -> tuple[GpuTarget | None, str]:
    """(this machine's target, "") or (None, why TensorRT cannot build or run here)."""
    from crossdeploy.device_info import NO_GPU, gpus

    found = gpus()
    if not found:
        return None, NO_GPU
    version = tensorrt_version()
    if version is None:
        return None, "TensorRT is not installed here (pip install --extra-index-url https://pypi.nvidia.com -e '.[gpu]')"
    too_old = tensorrt_driver_reason()
    if too_old:
        return None, too_old
    first = found[0]
    return GpuTarget(first["name"], first["compute_capability"], version), ""


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)  # keyed by size and mtime: a runner per client hashes a 100 MB model once
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def engine_key(onnx_sha256: str, settings: BuildSettings, target: GpuTarget) -> str:
    identity = {"onnx": onnx_sha256, "settings": asdict(settings), "target": asdict(target)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class EngineRecord:
    """The JSON written beside each plan: what it was built from and for."""

    key: str
    onnx_sha256: str
    settings: BuildSettings
    target: GpuTarget

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "onnx_sha256": self.onnx_sha256, "settings": self.settings.to_dict(), "target": asdict(self.target)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineRecord":
        return cls(data["key"], data["onnx_sha256"], BuildSettings.from_dict(data["settings"]), GpuTarget(**data["target"]))

    def mismatch(self, onnx_sha256: str, settings: BuildSettings, target: GpuTarget) -> str | None:
        """Why this engine must not be loaded for these inputs on this machine; None if it may."""
        if self.target.compute_capability != target.compute_capability or self.target.gpu != target.gpu:
            return (
                f"it was built for {self.target.gpu} (sm {self.target.compute_capability}); this machine has "
                f"{target.gpu} (sm {target.compute_capability})"
            )
        if self.target.tensorrt != target.tensorrt:
            return f"it was built with TensorRT {self.target.tensorrt}; this machine has {target.tensorrt}"
        if self.onnx_sha256 != onnx_sha256:
            return "its ONNX model has changed since"
        if self.settings != settings:
            return f"it was built with {asdict(self.settings)}; the params now ask for {asdict(settings)}"
        return None
