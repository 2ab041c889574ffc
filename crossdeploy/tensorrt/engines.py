"""Where a TensorRT variant's engine comes from: the pipeline's plan when its record matches this
machine, else an engine built here into a local cache, with the reason logged. An engine built on
another GPU type or TensorRT version (pulled from a DVC remote, say) is never loaded."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from crossdeploy.atomic import atomic_path
from crossdeploy.errors import CrossdeployError, RuntimeUnavailable
from crossdeploy.layout import TensorRTEngine, engine_record, tensorrt_engines
from crossdeploy.stage import write_json
from crossdeploy.tensorrt.engine_key import BatchProfile, BuildSettings, EngineRecord, GpuTarget, current_target, engine_key, file_sha256

log = logging.getLogger(__name__)


def local_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "crossdeploy" / "tensorrt"


def timing_cache_path(directory: Path, target: GpuTarget) -> Path:
    """Timing caches are per GPU type and TensorRT version, like engines."""
    return directory / f"timing-{target.slug}.cache"


def skipped_record(onnx: Path, settings: BuildSettings, reason: str) -> dict[str, Any]:
    """The record of an engine not built here: why, and what it would have been built from and with."""
    return {"status": "skipped", "reason": reason, "onnx": str(onnx), "settings": settings.to_dict()}


def engine_settings(engine: TensorRTEngine, cfg: dict[str, Any]) -> BuildSettings:
    """What the pipeline builds `engine` with, from the tensorrt params; an engine from the FP16 model is built
    strongly typed (fp16_model), as TensorRT 10 and 11 both can."""
    return BuildSettings(
        precision=engine.precision,
        batch=BatchProfile(**cfg["batch"]),
        workspace_mib=int(cfg["workspace_mib"]),
        optimization_level=int(cfg["optimization_level"]),
        fp16_model=engine.fp16_model,
    )


def build_engines(paths: dict[str, Any], cfg: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]]:
    """Every engine of the pipeline (layout.tensorrt_engines) built into `folder` with its record beside it, by
    variant. One that cannot be built is recorded as failed, and the next is still built."""
    records = {}
    for engine in tensorrt_engines(paths, folder):
        settings = engine_settings(engine, cfg)
        if cfg["enabled"]:
            records[engine.variant] = build_record(engine.plan, engine.onnx, settings, Path(paths["tensorrt_timing"]))
        else:
            records[engine.variant] = skipped_record(engine.onnx, settings, "tensorrt.enabled is false")
        write_json(engine_record(engine.plan), records[engine.variant])
    return records


def build_record(plan: Path, onnx: Path, settings: BuildSettings, timing_dir: Path) -> dict[str, Any]:
    """Build `plan` for this machine and return its record: ok, skipped where TensorRT cannot run here, or failed
    with the reason where it cannot build this engine (a model it cannot parse, a build it refuses)."""
    from crossdeploy.tensorrt.build import TensorRTUnusable, build_engine

    target, why = current_target()
    if target is None:
        return skipped_record(onnx, settings, why)
    digest = file_sha256(onnx)
    timing_dir.mkdir(parents=True, exist_ok=True)
    try:
        build_engine(onnx, settings, timing_cache_path(timing_dir, target), plan)
    except TensorRTUnusable as exc:
        return skipped_record(onnx, settings, str(exc))
    except Exception as exc:  # this engine fails, not the stage: the other engine may still build
        log.exception("%s could not be built", plan.stem)
        reason = str(exc) if isinstance(exc, CrossdeployError) else f"{type(exc).__name__}: {exc}"
        return {
            "status": "failed",
            "reason": reason,
            "onnx": str(onnx),
            "onnx_sha256": digest,
            "settings": settings.to_dict(),
            "target": asdict(target),
        }
    record = EngineRecord(engine_key(digest, settings, target), digest, settings, target)
    return {"status": "ok", "onnx": str(onnx), **record.to_dict(), "plan_sha256": file_sha256(plan)}


def plan_mismatch(plan: Path, data: dict[str, Any]) -> str | None:
    """Why `plan`'s bytes are not the ones its record was written for; None where they are."""
    if not plan.is_file():
        return f"{plan} is missing"
    if data.get("plan_sha256") != file_sha256(plan):
        # a plan is deserialized straight into GPU code: never load one its record does not vouch for
        return f"{plan.name}'s SHA-256 does not match its record (a corrupted or swapped file)"
    return None


def usable_engine(plan: Path, timing_dir: Path | None = None) -> Path:
    """The engine to load for `plan` on this machine, building one locally where the shared one is invalid."""
    record_file = engine_record(plan)
    if not record_file.is_file():
        raise RuntimeUnavailable(f"{plan} was not built (no {record_file.name}); run `dvc repro tensorrt`")
    data = json.loads(record_file.read_text())
    target, why = current_target()
    if target is None:
        raise RuntimeUnavailable(data.get("reason") or why)
    onnx = Path(data["onnx"])
    settings = BuildSettings.from_dict(data["settings"])
    digest = file_sha256(onnx)
    if data["status"] == "ok":
        reason = EngineRecord.from_dict(data).mismatch(digest, settings, target) or plan_mismatch(plan, data)
        if reason is None:
            return plan
    elif data["status"] == "failed":
        built_on = GpuTarget(**data["target"])
        if EngineRecord("", data["onnx_sha256"], settings, built_on).mismatch(digest, settings, target) is None:
            # the same build on the same GPU and TensorRT: it would fail again, perhaps after minutes
            raise CrossdeployError(f"the tensorrt stage could not build {plan.name} on this GPU with this TensorRT: {data['reason']}")
        reason = f"the pipeline could not build it on {built_on.gpu} with TensorRT {built_on.tensorrt} ({data['reason']})"
    else:
        reason = f"the pipeline skipped it ({data['reason']})"
    local = local_cache_dir() / f"{plan.stem}-{engine_key(digest, settings, target)}.plan"
    local_record = engine_record(local)
    local_reason = plan_mismatch(local, json.loads(local_record.read_text())) if local_record.is_file() else "not built yet"
    if local_reason is not None:
        log.warning("%s: not loading the pipeline's engine: %s; building one for %s in %s", plan.stem, reason, target.gpu, local)
        if local.is_file():
            log.warning("%s: not loading the local engine either: %s", local.name, local_reason)
        from crossdeploy.tensorrt.build import build_engine

        build_engine(onnx, settings, timing_cache_path(timing_dir or local_cache_dir(), target), local)
        with atomic_path(local_record, unique=True) as tmp:
            tmp.write_text(json.dumps({"plan_sha256": file_sha256(local)}))
    return local
