"""Where a TensorRT variant's engine comes from: the pipeline's plan when its record matches this
machine, else an engine built here into a local cache, with the reason logged. An engine built on
another GPU type or TensorRT version (pulled from a DVC remote, say) is never loaded."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from crossdeploy.atomic import atomic_path
from crossdeploy.runtimes.base import RuntimeUnavailable
from crossdeploy.tensorrt.engine_key import BuildSettings, EngineRecord, GpuTarget, current_target, engine_key, file_sha256

log = logging.getLogger(__name__)


def record_path(plan: Path) -> Path:
    return plan.with_suffix(".json")


def local_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "crossdeploy" / "tensorrt"


def timing_cache_path(directory: Path, target: GpuTarget) -> Path:
    """Timing caches are per GPU type and TensorRT version, like engines."""
    return directory / f"timing-{target.slug}.cache"


def build_record(plan: Path, onnx: Path, settings: BuildSettings, timing_dir: Path) -> dict[str, Any]:
    """Build `plan` for this machine and return its record; where TensorRT cannot run, the skip reason."""
    from crossdeploy.tensorrt.build import build_engine

    target, why = current_target()
    if target is None:
        return {"status": "skipped", "reason": why, "onnx": str(onnx), "settings": settings.to_dict()}
    digest = file_sha256(onnx)
    timing_dir.mkdir(parents=True, exist_ok=True)
    build_engine(onnx, settings, timing_cache_path(timing_dir, target), plan)
    record = EngineRecord(engine_key(digest, settings, target), digest, settings, target)
    return {"status": "ok", "onnx": str(onnx), **record.to_dict()}


def usable_engine(plan: Path, timing_dir: Path | None = None) -> Path:
    """The engine to load for `plan` on this machine, building one locally where the shared one is invalid."""
    record_file = record_path(plan)
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
        mismatch = EngineRecord.from_dict(data).mismatch(digest, settings, target)
        if mismatch is None and plan.is_file():
            return plan
        reason = mismatch or f"{plan} is missing"
    else:
        reason = f"the pipeline skipped it ({data['reason']})"
    local = local_cache_dir() / f"{plan.stem}-{engine_key(digest, settings, target)}.plan"
    if not local.is_file():
        log.warning("%s: not loading the pipeline's engine: %s; building one for %s in %s", plan.stem, reason, target.gpu, local)
        from crossdeploy.tensorrt.build import build_engine

        with atomic_path(local) as tmp:
            build_engine(onnx, settings, timing_cache_path(timing_dir or local_cache_dir(), target), tmp)
    return local
