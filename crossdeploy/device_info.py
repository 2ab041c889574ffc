"""The machine a benchmark ran on, recorded beside its figures: CPU, cores, GPU and driver, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = (
    "torch",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "tensorflow",
    "ai-edge-litert",
    "onnx",
    "tensorrt",
    "mlcommons-loadgen",
    "numpy",
)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


#: the CPU features whose 8-bit dot products accumulate in 32 bits
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def int8_kernels_saturate(flags: set[str] | None = None) -> bool:
    """Whether ONNX Runtime's 8-bit kernels here add pairs of 8-bit products in 16 bits, which saturate: an x86
    CPU without VNNI (AVX2, AVX-512F). quantize.reduce_range's 7-bit weights keep the pairs within 16 bits.
    False where the flags cannot be read (no /proc/cpuinfo): unknown is not a diagnosis."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags) and platform.machine().lower() in ("x86_64", "amd64") and not flags & VNNI_FLAGS


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs as nvidia-smi reports them; empty where there is none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    keys = ("name", "driver", "compute_capability", "memory")
    return [dict(zip(keys, (field.strip() for field in line.split(",")))) for line in out.splitlines() if line.strip()]


#: Device nodes through which a program reaches an NVIDIA GPU: the driver's on Linux, WSL2's GPU bridge
GPU_DEVICE_NODES = ("nvidia[0-9]*", "dxg")
#: the reason a GPU row gives where nvidia-smi lists no GPU
NO_GPU = "no NVIDIA GPU here (nvidia-smi finds none)"


def no_gpu_reason(dev: Path = Path("/dev")) -> str | None:
    """Why no program here can use an NVIDIA GPU, where that is certain; None where one may be usable.
    nvidia-smi's answer alone is not enough: a container given a GPU without the driver's utilities has
    the GPU's device node but no nvidia-smi."""
    if gpus() or any(any(dev.glob(pattern)) for pattern in GPU_DEVICE_NODES):
        return None
    return NO_GPU


#: The oldest Linux driver branch each CUDA major version runs on (CUDA's release notes: minor-version
#: compatibility). A library built for CUDA 13 fails on an older driver with errors that do not say so.
MIN_DRIVER = {11: 450, 12: 525, 13: 580}


def driver_too_old(cuda_major: int | None, library: str, driver: str | None = None) -> str | None:
    """Why `library`, built for CUDA `cuda_major`, cannot run on this machine's NVIDIA driver; None if it can
    (or where either version is unknown). `driver` defaults to the first GPU's, as nvidia-smi reports it."""
    if driver is None:
        found = gpus()
        driver = found[0]["driver"] if found else None
    if cuda_major not in MIN_DRIVER or not driver:
        return None
    try:
        branch = int(driver.split(".")[0])
    except ValueError:
        return None
    needed = MIN_DRIVER[cuda_major]
    if branch >= needed:
        return None
    return (
        f"the NVIDIA driver {driver} is too old for {library}, which is built for CUDA {cuda_major}: "
        f"CUDA {cuda_major} needs driver R{needed} or newer; update the driver"
    )


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
        "usable_cores": usable_cores(),
        "int8_instructions": sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2"}),
        "gpus": gpus(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
