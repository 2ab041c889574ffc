"""The GPU path checked in one command on whatever NVIDIA machine runs it (`scripts/gpu-check OUT`):
the `gpu` tests, the CUDA plumbing the TensorRT runner stands on, and every GPU variant of a random-weight
classifier built by the pipeline's own stages with the target's composed params, validated by validate's
rules and measured by the benchmark's sweep, summarised in OUT/gpu-check.json with the card, the driver and
the library versions. It adds only what a check needs (the machine, the CUDA plumbing, the summary).
What the machine lacks (TensorRT, onnxruntime-gpu, cuda-python) is listed as skipped with the reason;
the rest still runs. It installs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from crossdeploy.atomic import atomic_path
from crossdeploy.runtimes.base import ThreadSettings, error_text, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
GPU_TESTS = ("tests/test_cuda.py", "tests/test_tensorrt.py")
SUMMARY = "gpu-check.json"
GPU_VARIANTS = (
    "torch-cuda-fp16",
    "onnxruntime-cuda-fp32",
    "onnxruntime-cuda-fp16",
    "onnxruntime-cuda-int8",
    "onnxruntime-trt-int8",
    "tensorrt-fp16",
    "tensorrt-int8",
)


def _timed(step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A step's result with its duration; an exception becomes a skip (package or GPU missing) or a failure."""
    start = time.perf_counter()
    try:
        result = step()
    except Exception as exc:
        reason = unavailable_reason("this check", exc)
        result = {"status": "skipped", "reason": reason} if reason else {"status": "failed", "reason": error_text(exc)}
    return {**result, "seconds": round(time.perf_counter() - start, 1)}


def machine() -> dict[str, Any]:
    import torch

    from crossdeploy.device_info import describe_device
    from crossdeploy.tensorrt.engine_key import current_target

    target, why = current_target()
    cuda = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "available": torch.cuda.is_available()}
    if cuda["available"]:
        cuda["device"] = torch.cuda.get_device_name(0)
        cuda["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except ImportError as exc:
        providers = [f"onnxruntime missing: {exc}"]
    return {
        **describe_device(),
        "torch_cuda": cuda,
        "tensorrt_target": target.__dict__ if target else {"reason": why},
        "onnxruntime_providers": providers,
    }


def run_tests(out: Path, timeout_s: int) -> dict[str, Any]:
    report = out / "gpu-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rs", f"--junitxml={report}", *GPU_TESTS]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    (out / "gpu-tests.log").write_text(run.stdout + run.stderr)
    if not report.is_file():
        return {"status": "failed", "reason": f"pytest wrote no report (exit {run.returncode}): {run.stderr[-500:]}"}
    cases = {}
    for case in ElementTree.parse(report).iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome = {"status": "passed"}
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"status": "skipped" if tag == "skipped" else "failed", "reason": (found.get("message") or "")[:300]}
        cases[name] = {**outcome, "seconds": round(float(case.get("time", 0)), 2)}
    counts = {s: sum(c["status"] == s for c in cases.values()) for s in ("passed", "skipped", "failed")}
    return {"status": "failed" if counts["failed"] or run.returncode not in (0, 5) else "ok", **counts, "tests": cases}


def cuda_plumbing() -> dict[str, Any]:
    """Pinned-memory bandwidth, and a plain enqueue against a CUDA-graph replay of the same small copy."""
    from crossdeploy.tensorrt.cuda import DeviceBuffer, GraphReplay, PinnedBuffer, check, cudart

    rt = cudart()
    stream = check(rt.cudaStreamCreate())
    start, end = check(rt.cudaEventCreate()), check(rt.cudaEventCreate())
    host = PinnedBuffer((64 << 20,), np.uint8)
    device, small = DeviceBuffer(host.nbytes), DeviceBuffer(4096)
    try:
        host.array[:] = 7
        bandwidth = {}
        for label, kind, dst, src in (
            ("h2d", rt.cudaMemcpyKind.cudaMemcpyHostToDevice, device.pointer, host.pointer),
            ("d2h", rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, host.pointer, device.pointer),
        ):
            check(rt.cudaMemcpyAsync(dst, src, host.nbytes, kind, stream))  # warm
            check(rt.cudaEventRecord(start, stream))
            for _ in range(10):
                check(rt.cudaMemcpyAsync(dst, src, host.nbytes, kind, stream))
            check(rt.cudaEventRecord(end, stream))
            check(rt.cudaStreamSynchronize(stream))
            ms = float(check(rt.cudaEventElapsedTime(start, end)))
            bandwidth[f"{label}_gb_per_s"] = round(10 * host.nbytes / ms / 1e6, 2)
        if not (host.array == 7).all():
            raise RuntimeError("a pinned round trip changed the bytes")

        def enqueue(s):
            check(rt.cudaMemcpyAsync(small.pointer, device.pointer, 4096, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, s))

        replay = GraphReplay(stream)
        per_call_us = {}
        for label, call in (("plain", lambda: enqueue(stream)), ("graph", lambda: replay.run(1, enqueue))):
            for _ in range(10):
                call()
            check(rt.cudaStreamSynchronize(stream))
            begin = time.perf_counter()
            for _ in range(2000):
                call()
            check(rt.cudaStreamSynchronize(stream))
            per_call_us[label] = round((time.perf_counter() - begin) / 2000 * 1e6, 2)
        replay.drop()
        return {"status": "ok", **bandwidth, "enqueue_us_per_call": per_call_us, "graph_captures": replay.captures}
    finally:
        for buffer in (host, device, small):
            buffer.free()
        check(rt.cudaEventDestroy(start))
        check(rt.cudaEventDestroy(end))
        check(rt.cudaStreamDestroy(stream))


#: the pipeline's stages that make the GPU rows' files, in dvc.yaml's order
STAGES = ("model", "data", "export", "optimize", "fp16", "quantize", "tensorrt")


def composed_params(target: str, arch: str) -> dict[str, Any]:
    """The pipeline's own params for `target` (conf/, composed as `python -m crossdeploy.compose` does), on a
    random-weight `arch` and short enough to check: quick windows and one client at the target's batch sizes,
    64 images, no stand-in, the GPU rows only, and a TensorRT profile up to the largest batch built at the
    default optimization level (the target's level 5 is for the engine it ships, not for a check)."""
    from crossdeploy.compose import compose

    params = compose(
        [
            f"target={target}", f"model.arch={arch}", "model.name=gpu-check", "data.calibration_size=64", "data.evaluation_size=64",
            "quantize.calibration_size=64", "trained.enabled=false", "benchmark.profile=quick", "benchmark.concurrency=[1]",
            "benchmark.mlperf.enabled=false", "benchmark.harness_check=false", f"benchmark.variants=[{','.join(GPU_VARIANTS)}]",
            "tensorrt.optimization_level=3",
        ],
        config_dir=ROOT / "conf",
    )  # fmt: skip
    # the profile follows the target's batch sizes, which only the composed params know (no param refers to it)
    batch = max(params["benchmark"]["batch_sizes"])
    params["tensorrt"]["batch"].update(opt=min(32, batch), max=batch)
    return params


@contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run the stages in `folder`, whose params.yaml they read and under which their relative paths land."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def benchmark(target: str, arch: str, work: Path) -> dict[str, Any]:
    """The pipeline's stages up to the TensorRT engines in `work` (composed_params), then every GPU row validated
    against the PyTorch FP32 reference by validate's own rules and measured by the benchmark's own sweep."""
    import importlib

    from crossdeploy.benchmark.plan import BenchmarkPlan
    from crossdeploy.benchmark.run import run_benchmark
    from crossdeploy.compose import write_params
    from crossdeploy.data.datasets import ImageSet
    from crossdeploy.layout import REFERENCE
    from crossdeploy.validation.parity import Floor, Thresholds
    from crossdeploy.validation.run import judging_rules, validate_variants
    from crossdeploy.variants import pipeline_variants

    params = composed_params(target, arch)
    if str(ROOT) not in sys.path:  # the stage scripts, from this checkout
        sys.path.insert(0, str(ROOT))
    steps: dict[str, Any] = {}
    with _inside(work):
        write_params(params)
        for stage in STAGES:
            failed = next((name for name, step in steps.items() if step["status"] == "failed"), None)
            if failed:  # every later stage reads what it would have written
                steps[stage] = {"status": "failed", "reason": f"not run: stage {failed} failed", "seconds": 0.0}
                continue
            steps[stage] = _timed(lambda: _done(importlib.import_module(f"stages.{stage}").main()))
        variants = [v for v in pipeline_variants(params) if v.name in (REFERENCE, *GPU_VARIANTS)]
        gpu_rows = [v for v in variants if v.name != REFERENCE]
        rows: dict[str, Any] = {}
        evaluation_file = Path(params["paths"]["evaluation"])
        if not evaluation_file.is_file():
            return {"status": "failed", "reason": "the data stage wrote no evaluation images", "steps": steps, "variants": rows}
        evaluation = ImageSet.load(evaluation_file)
        cfg = params["validate"]
        thresholds = {precision: Thresholds(**values) for precision, values in cfg["thresholds"].items()}
        parity = validate_variants(
            variants, evaluation, **judging_rules(cfg, thresholds), batch_size=int(cfg["batch_size"]),
            threads=ThreadSettings(**cfg["threads"]), floor=Floor(**cfg["floor"]),
        )  # fmt: skip
        plan = BenchmarkPlan.from_params(params["benchmark"], [v.name for v in variants])
        measured = run_benchmark(gpu_rows, evaluation, plan, Path(params["paths"]["benchmark"]) / "mlperf")
        for variant in gpu_rows:
            row = parity[variant.name]
            status = "ok" if row["status"] in ("ok", "unjudged") else row["status"]
            reason = row.get("reason", "")
            if not (variant.record or variant.artifact).exists():  # a failed step's file: failed, not a missing device
                status, reason = "failed", f"{variant.artifact.name} was not built (steps above)"
            rows[variant.name] = {"status": status, **({"reason": reason} if status != "ok" else {}), "parity": row,
                                  "cells": measured[variant.name]}  # fmt: skip
    return {"status": "ok", "arch": arch, "batch_sizes": plan.batch_sizes, "tensorrt_profile": params["tensorrt"]["batch"],
            "steps": steps, "variants": rows}  # fmt: skip


def _done(_: object) -> dict[str, Any]:
    """A step that returned: its value is in the files it wrote."""
    return {"status": "ok"}


def _target_for(device: dict[str, Any]) -> str:
    names = " ".join(g["name"] for g in device.get("gpus", []))
    return "a100" if "A100" in names else "h100"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu-check.json and the test log")
    parser.add_argument("--target", choices=("a100", "h100"), help="whose batch sizes (conf/target/); default: from the card")
    parser.add_argument("--arch", default="resnet50", help="the torchvision classifier benchmarked (random weights)")
    parser.add_argument("--tests-timeout", type=int, default=300, help="seconds the gpu tests may take")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    summary: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    summary["machine"] = machine()
    if not summary["machine"]["gpus"]:
        print("gpu-check: nvidia-smi finds no NVIDIA GPU here; the checks below will say skipped", file=sys.stderr)
    target = args.target or _target_for(summary["machine"])
    summary["tests"] = _timed(lambda: run_tests(args.out, args.tests_timeout))
    summary["cuda_plumbing"] = _timed(cuda_plumbing)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        summary["benchmark"] = _timed(lambda: benchmark(target, args.arch, Path(work)))
    summary["target"] = target
    failed = [name for name in ("tests", "cuda_plumbing", "benchmark") if summary[name]["status"] == "failed"]
    failed += [f"benchmark/{name}" for name, row in summary["benchmark"].get("steps", {}).items() if row["status"] == "failed"]
    failed += [f"benchmark/{name}" for name, row in summary["benchmark"].get("variants", {}).items() if row["status"] == "failed"]
    summary["failed"] = failed
    with atomic_path(args.out / SUMMARY) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    print(_digest(summary))
    return 1 if failed else 0


def _digest(summary: dict[str, Any]) -> str:
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in summary["machine"]["gpus"]) or "no GPU"
    lines = [f"gpu-check on {gpus}"]
    tests = summary["tests"]
    lines.append(
        f"  tests: {tests['status']} ({tests.get('passed', 0)} passed, {tests.get('skipped', 0)} skipped, {tests.get('failed', 0)} failed)"
    )
    plumbing = summary["cuda_plumbing"]
    lines.append(f"  cuda plumbing: {plumbing['status']} {plumbing.get('reason', '')}{plumbing.get('enqueue_us_per_call', '')}")
    for name, row in summary["benchmark"].get("variants", {}).items():
        if row["status"] != "ok":
            lines.append(f"  {name}: {row['status']}: {row['reason']}")
            continue
        best = max((c for c in row["cells"].values() if c.get("status") == "ok"), key=lambda c: c["throughput_ips"], default=None)
        peak = f"{best['throughput_ips']:.0f} img/s" if best else "no cell measured"
        lines.append(f"  {name}: cosine_min {row['parity'].get('cosine_min')}, top1 {row['parity'].get('top1_agreement')}, peak {peak}")
    if summary["benchmark"]["status"] != "ok":
        lines.append(f"  benchmark: {summary['benchmark']['status']}: {summary['benchmark'].get('reason')}")
    lines.append(f"  failed: {', '.join(summary['failed']) or 'none'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
