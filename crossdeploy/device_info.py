"""The machine a benchmark ran on, recorded beside its figures: CPU, cores, GPU and driver, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = (
    "torch", "onnxruntime", "onnxruntime-gpu", "tensorflow", "ai-edge-litert", "onnx",
    "tensorrt", "mlcommons-loadgen", "numpy",
)


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs as nvidia-smi reports them; empty where there is none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    keys = ("name", "driver", "compute_capability", "memory")
    return [dict(zip(keys, (field.strip() for field in line.split(",")))) for line in out.splitlines() if line.strip()]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe_device() -> dict[str, object]:
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "int8_instructions": sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2"}),
        "gpus": gpus(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
