"""The GPU path checked in one command on whatever NVIDIA machine runs it (`scripts/gpu-check OUT`):
the `gpu` tests, the CUDA plumbing the TensorRT runner stands on, and a short benchmark with parity of
every GPU variant on a random-weight classifier, summarised in OUT/gpu-check.json with the card, the
driver and the library versions. What the machine lacks (TensorRT, onnxruntime-gpu, cuda-python) is
listed as skipped with the reason; the rest still runs. It installs nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from crossdeploy.atomic import atomic_path
from crossdeploy.layout import engine_record, tensorrt_engines
from crossdeploy.runtimes.base import ThreadSettings, error_text, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
GPU_TESTS = ("tests/test_cuda.py", "tests/test_tensorrt.py")
SUMMARY = "gpu-check.json"
#: the least cosine similarity to PyTorch FP32 a GPU row may show on random weights (which amplify
#: rounding; the gpu tests use the same bounds): below it the row is wrong, not just imprecise
COSINE_MIN = {"fp32": 0.9999, "fp16": 0.99, "int8": 0.9}
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


def _settings(target: str) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    hardware = yaml.safe_load((ROOT / "conf" / "target" / f"{target}.yaml").read_text())
    return {"profile": config["benchmark"]["profiles"]["quick"], "batch_sizes": hardware["benchmark"]["batch_sizes"]}


def benchmark(target: str, arch: str, work: Path) -> dict[str, Any]:
    """Every GPU variant of a random-weight `arch` at the target's batch sizes (quick windows, one client),
    with parity against the PyTorch FP32 reference on the CPU."""
    import torch

    from crossdeploy.benchmark.closed_loop import WindowSettings
    from crossdeploy.benchmark.runner_pool import RunnerPool
    from crossdeploy.benchmark.sweep import sweep_variant
    from crossdeploy.datasets import DataSettings, default_image_sets
    from crossdeploy.onnx_export import export_onnx
    from crossdeploy.onnx_fp16 import convert_fp16
    from crossdeploy.onnx_optimize import optimize_onnx
    from crossdeploy.onnx_quantize import QuantizeSettings, quantize_onnx
    from crossdeploy.parity import compare_logits
    from crossdeploy.runtimes.torch_runtime import TorchRunner
    from crossdeploy.source_model import SourceSpec, build_source_model, export_program
    from crossdeploy.tensorrt.engines import build_record, engine_settings
    from crossdeploy.variants import pipeline_variants

    settings = _settings(target)
    batch_sizes = settings["batch_sizes"]
    profile = {"min": 1, "opt": 32, "max": max(batch_sizes)}
    steps: dict[str, Any] = {}
    model, card = build_source_model(SourceSpec("gpu-check", arch, num_classes=1000))
    size = card.preprocessing.crop_size
    program = work / "model.pt2"
    torch.export.save(export_program(model, size), program)
    calibration, evaluation = default_image_sets(DataSettings(64, 64, card.preprocessing))
    with TorchRunner(program) as cpu:
        reference = cpu.infer_all(evaluation.tensors("NCHW"), 16)

    onnx, optimized, fp16, int8 = work / "model.onnx", work / "model.optimized.onnx", work / "model.fp16.onnx", work / "model.int8-trt.onnx"
    steps["onnx_export"] = _timed(lambda: _done(export_onnx(program, onnx, opset=17, input_size=size)))
    if steps["onnx_export"]["status"] == "ok":
        steps["onnx_optimize"] = _timed(lambda: _done(optimize_onnx(onnx, optimized)))
    if optimized.is_file():
        steps["onnx_fp16"] = _timed(lambda: _done(convert_fp16(optimized, fp16)))
        quantize = QuantizeSettings(calibration_size=64, calibration_batch=16)
        steps["quantize_int8_trt"] = _timed(
            lambda: _done(quantize_onnx(optimized, int8, calibration.tensors("NCHW"), quantize, "tensorrt"))
        )

    # the pipeline's own variant table, pointed at this work folder: its GPU rows, as the pipeline runs them
    paths = {
        "source": work,
        "program": program,
        "onnx_optimized": optimized,
        "onnx_fp16": fp16,
        "onnx_int8": int8,
        "onnx_int8_trt": int8,
        "tensorrt": work / "tensorrt",
        "savedmodel": work / "savedmodel",
        "tflite": work / "tflite",
        "serving": work / "serving",
    }
    params = {
        "paths": paths,
        "model": {"name": "gpu-check"},
        "to_tensorflow": {"version": 1},
        "tensorrt": {"cuda_graph": True, "batch": profile},
    }
    for engine in tensorrt_engines(paths):
        if not engine.onnx.is_file():
            continue
        engine.plan.parent.mkdir(exist_ok=True)
        build = engine_settings(engine, {"batch": profile, "workspace_mib": 4096, "optimization_level": 3})
        steps[f"tensorrt_build_{engine.precision}"] = _timed(
            lambda: _write_record(engine.plan, build_record(engine.plan, engine.onnx, build, work / "timing"))
        )
    variants = [v for v in pipeline_variants(params) if v.name in GPU_VARIANTS]

    quick = settings["profile"]
    windows = WindowSettings(
        warmup_requests=int(quick["warmup_requests"]),
        window_s=float(quick["window_s"]),
        max_windows=int(quick["max_windows"]),
        stability_pct=float(quick["stability_pct"]),
        cell_cap_s=float(quick["cell_cap_s"]),
    )
    rows = {}
    for variant in variants:
        if not (variant.record or variant.artifact).exists():  # the step that should have made it says why
            rows[variant.name] = {"status": "failed", "reason": f"{variant.artifact.name} was not built (steps above)", "seconds": 0.0}
            continue
        pool = RunnerPool(variant, ThreadSettings())

        def measure() -> dict[str, Any]:
            runner = pool.open(1)[0]
            logits = runner.infer_all(evaluation.tensors("NCHW"), 16)
            parity = compare_logits(reference, logits)
            cells = sweep_variant(pool, evaluation, batch_sizes, [1], windows)
            wrong = parity_failure(variant.precision, parity)
            return {"status": "failed" if wrong else "ok", **({"reason": wrong} if wrong else {}), "parity": parity, "cells": cells}

        try:
            rows[variant.name] = _timed(measure)
        finally:
            pool.close()
    return {
        "status": "ok",
        "arch": arch,
        "input_size": size,
        "batch_sizes": batch_sizes,
        "tensorrt_profile": profile,
        "steps": steps,
        "variants": rows,
    }


def parity_failure(precision: str, parity: dict[str, Any]) -> str | None:
    """Why a GPU row's logits are wrong rather than rounded; None where they pass (COSINE_MIN)."""
    bound = COSINE_MIN[precision]
    cosine = parity.get("cosine_min")
    if cosine is None:
        return f"its logits hold {parity.get('nonfinite_values')} NaN or infinite values"
    return None if cosine >= bound else f"cosine_min {cosine} against PyTorch FP32 is below {bound} ({precision})"


def _done(_: object) -> dict[str, Any]:
    """A step that returned: its value is in the files it wrote."""
    return {"status": "ok"}


def _write_record(plan: Path, record: dict[str, Any]) -> dict[str, Any]:
    engine_record(plan).write_text(json.dumps(record, indent=2))
    return {"status": record["status"], **({"reason": record["reason"]} if record["status"] != "ok" else {})}


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
