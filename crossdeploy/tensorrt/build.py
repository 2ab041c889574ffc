"""Build a TensorRT engine from ONNX with TensorRT's Python API: an optimization profile on the batch
axis, a WORKSPACE memory-pool limit (the removed --workspace's successor), FP16 or explicit INT8 from
the calibrated QDQ model (no calibrator, no uncalibrated INT8), and a timing cache loaded and saved."""

from __future__ import annotations

import logging
from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.errors import CrossdeployError
from crossdeploy.tensorrt.engine_key import BuildSettings

log = logging.getLogger(__name__)


def build_engine(onnx_path: Path, settings: BuildSettings, timing_cache: Path, out_path: Path) -> None:
    """Write the serialized engine to out_path; timing_cache is read if present and rewritten."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CrossdeployError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    config.builder_optimization_level = settings.optimization_level
    config.set_flag(trt.BuilderFlag.FP16)
    if settings.precision == "int8":
        # Q/DQ nodes carry the calibrated scales; the flag lets TensorRT run those layers in INT8 and
        # FP16 runs whatever the QDQ model leaves in float
        config.set_flag(trt.BuilderFlag.INT8)

    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        profile.set_shape(tensor.name, *settings.batch.shapes(tuple(tensor.shape)[1:]))
    config.add_optimization_profile(profile)

    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CrossdeployError(f"TensorRT could not build a {settings.precision} engine from {onnx_path}; see its log above.")
    out_path.write_bytes(bytes(serialized))
    with atomic_path(timing_cache) as tmp:
        tmp.write_bytes(bytes(cache.serialize()))
    log.info("built %s (%d MB)", out_path, out_path.stat().st_size >> 20)
