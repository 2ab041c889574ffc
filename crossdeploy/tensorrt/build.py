"""Build a TensorRT engine from ONNX with TensorRT's Python API (10 or 11): an optimization profile on
the batch axis, a WORKSPACE memory-pool limit (the removed --workspace's successor), the network and
builder flags of the installed major (crossdeploy.tensorrt.api: explicit INT8 from the calibrated QDQ
model, no calibrator, no uncalibrated INT8), and a timing cache loaded and saved."""

from __future__ import annotations

import logging
from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.errors import CrossdeployError, RuntimeUnavailable
from crossdeploy.tensorrt.engine_key import BuildSettings

log = logging.getLogger(__name__)


class TensorRTUnusable(RuntimeUnavailable):
    """TensorRT is installed but cannot work on this machine (driver, GPU or library mismatch)."""


def _unusable(trt, what: str, detail: str) -> TensorRTUnusable:
    from crossdeploy.tensorrt.engine_key import tensorrt_driver_reason

    cause = tensorrt_driver_reason() or "check that the NVIDIA driver, the GPU and TensorRT's CUDA libraries match"
    return TensorRTUnusable(f"TensorRT {trt.__version__} cannot create a {what} on this machine ({detail}): {cause}")


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def create_builder(trt):
    """trt.Builder, or TensorRTUnusable with the reason: where CUDA cannot start (a driver too old for
    TensorRT's CUDA, an unsupported GPU) the bindings raise a bare pybind11 TypeError or return None."""
    return _created(trt, trt.Builder, "builder")


def create_runtime(trt):
    """trt.Runtime, or TensorRTUnusable with the reason (as create_builder)."""
    return _created(trt, trt.Runtime, "runtime")


def _created(trt, factory, what: str):
    try:
        made = factory(_logger(trt))
    except TypeError as exc:
        raise _unusable(trt, what, str(exc)) from exc
    if made is None:
        raise _unusable(trt, what, f"trt.{what.capitalize()} returned None")
    return made


def _timing_cache(config, path: Path):
    """The timing cache from `path` where it suits this GPU and TensorRT, else an empty one."""
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(data) if data else None
    except (RuntimeError, TypeError, ValueError):  # bytes TensorRT cannot even read
        cache = None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    if data:
        # another device's or TensorRT's timings (or a damaged file): TensorRT refuses them, and writing
        # them back unchanged would keep the next build from ever caching its own
        log.warning("timing cache %s does not match this GPU or TensorRT; starting from an empty one", path)
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise CrossdeployError("TensorRT refused an empty timing cache")


def build_engine(onnx_path: Path, settings: BuildSettings, timing_cache: Path, out_path: Path) -> None:
    """Write the serialized engine to out_path; timing_cache is read if it suits and rewritten."""
    import tensorrt as trt

    from crossdeploy.tensorrt.api import build_flags, tensorrt_api

    # before the builder starts CUDA: an engine this TensorRT cannot build says so first
    flags = build_flags(tensorrt_api(trt.__version__), settings.precision, settings.fp16_model)
    builder = create_builder(trt)
    logger = _logger(trt)
    # bits from the enum, never literals: STRONGLY_TYPED is bit 1 on 10 and bit 0 on 11
    network = builder.create_network(sum(1 << int(getattr(trt.NetworkDefinitionCreationFlag, name)) for name in flags.network))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CrossdeployError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    config.builder_optimization_level = settings.optimization_level
    for name in flags.builder:
        config.set_flag(getattr(trt.BuilderFlag, name))

    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        profile.set_shape(tensor.name, *settings.batch.shapes(tuple(tensor.shape)[1:]))
    config.add_optimization_profile(profile)

    _timing_cache(config, timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CrossdeployError(f"TensorRT could not build a {settings.precision} engine from {onnx_path}; see its log above.")
    with atomic_path(out_path, unique=True) as tmp:
        tmp.write_bytes(bytes(serialized))
    # unique temporary names: builders of one engine in parallel (dvc queue start -j 2) share the caches
    with atomic_path(timing_cache, unique=True) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    log.info("built %s (%d MB)", out_path, out_path.stat().st_size >> 20)
