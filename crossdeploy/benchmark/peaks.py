"""The machine's limit beside every figure: dense matrix-multiply (GEMM) peaks per precision, measured once at
the start of a benchmark, and each cell's share of the peak for its precision.

A cell's images/s times the model's FLOPs per image is the arithmetic rate it reached; over the GEMM peak of
the precision it computes in, that says at a glance whether a variant is slow or the machine is (ResNet50 at
batch 32 keeps a runtime near the peak; a runtime at a third of it leaves the machine idle). torch's own
kernels and ONNX Runtime's (MLAS) measure the peaks, each the best of the two: FP32 torch.mm and MatMul, INT8
torch._int_mm and a Q/DQ MatMul (VNNI or AMX where the CPU has them; torch's CPU kernel is a reference loop
on a CPU without VNNI); BF16 torch.mm (AVX512-BF16 or AMX); on a GPU, cuBLAS (FP32 with TF32 off, FP16,
INT8). A peak is the best of several timed products, each 2n^3 operations; BF16 is measured only where the
CPU has BF16 instructions (elsewhere torch emulates it, and an emulated peak is no limit).
"""

from __future__ import annotations

import math
import time
from typing import Any

#: the CPU features that give BF16 dot products in hardware
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: matrix sides, the best of them taken: a CPU with small caches peaks at a side its caches hold (this
#: project's 2-core host: FP32 180-190 GFLOP/s at 512, 129 at 2048), a large one only where the products are
#: large enough to fill it; ResNet50's own GEMMs are 64 to 4608 wide. Each product stays well under a second.
SIZES = {"cpu": (512, 1024, 2048), "cuda": (4096, 8192)}
#: how long each kernel is timed at each side, at least MIN_REPEATS products
SECONDS = 0.4
MIN_REPEATS = 3


def measure_peaks(device: str = "cpu", threads: int = 0, flags: set[str] | None = None) -> dict[str, Any]:
    """{precision: {"gops": best rate, "seconds": time spent} or {"status": "skipped", "reason": ...}} with the
    matrix size and threads: fp32 and int8 on a CPU (bf16 where it has BF16 instructions); fp32, fp16 and
    int8 on a GPU."""
    import torch

    from crossdeploy.device_info import cpu_flags, usable_cores

    sizes = SIZES["cuda" if device.startswith("cuda") else "cpu"]
    previous = torch.get_num_threads()
    if not device.startswith("cuda"):
        torch.set_num_threads(threads or usable_cores())
    try:
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32, as the GPU rows run it
            precisions = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.int8}
        else:
            flags = cpu_flags() if flags is None else flags
            precisions = {"fp32": torch.float32, "int8": torch.int8, "bf16": torch.bfloat16}
        peaks: dict[str, Any] = {"device": device, "sizes": list(sizes), "threads": torch.get_num_threads()}
        int_mm_skipped = _int_mm_reference_loop(torch, device)  # probed once, whatever the sizes
        for name, dtype in precisions.items():
            if name == "bf16" and not flags & BF16_FLAGS:
                peaks[name] = {"status": "skipped", "reason": f"this CPU has no BF16 instructions ({', '.join(sorted(BF16_FLAGS))})"}
                continue
            by_size = {size: _time_gemm(torch, dtype, size, device, int_mm_skipped) for size in sizes}
            best = max(by_size, key=lambda size: by_size[size]["gops"])
            peaks[name] = {**by_size[best], "size": best, "by_size": {size: m["gops"] for size, m in by_size.items()}}
        return peaks
    finally:
        torch.set_num_threads(previous)


def _sync(torch, device: str):
    """What makes a product's time its own: a GPU's queue waited for; nothing on a CPU."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _time_gemm(torch, dtype, size: int, device: str, int_mm_skipped: str | None) -> dict[str, Any]:
    if dtype == torch.int8:
        return _int8_peak(torch, size, device, int_mm_skipped)
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(dtype).to(device) for _ in range(2))
    sync = _sync(torch, device)
    if dtype != torch.float32 or device.startswith("cuda"):
        return _best_rate(lambda: (torch.mm(a, b), sync()), size)
    # FP32 on a CPU: the best of torch's kernels and ONNX Runtime's (MLAS), as for INT8
    return _best_of(
        {
            "torch.mm": _best_rate(lambda: torch.mm(a, b), size),
            "onnxruntime MatMul": _onnxruntime_gemm(size, torch.get_num_threads(), quantized=False),
        }
    )


def _best_of(methods: dict[str, Any]) -> dict[str, Any]:
    """The fastest of the kernels timed (a dict each; a string says why one was not timed), with every rate kept."""
    timed = {name: m for name, m in methods.items() if isinstance(m, dict)}
    best = max(timed, key=lambda name: timed[name]["gops"])
    return {
        "gops": timed[best]["gops"],
        "by": best,
        "seconds": round(sum(m["seconds"] for m in timed.values()), 2),
        "methods": {name: m["gops"] if isinstance(m, dict) else m for name, m in methods.items()},
    }


def _best_rate(product, size: int) -> dict[str, Any]:
    """The best rate over timed products (at least MIN_REPEATS, at least SECONDS), after one untimed call."""
    product()  # the first call picks and loads its kernels
    best, spent, repeats = math.inf, 0.0, 0
    while repeats < MIN_REPEATS or spent < SECONDS:
        start = time.perf_counter()
        product()
        elapsed = time.perf_counter() - start
        best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
    return {"gops": round(2 * size**3 / best / 1e9, 1), "seconds": round(spent, 2)}


#: below this rate on a 256-wide probe a kernel is a reference loop, not a peak (torch._int_mm on a CPU
#: without VNNI: about 1 GOP/s, where 2048^3 would take a minute)
PROBE_SIZE, PROBE_MIN_GOPS = 256, 5.0


def _int_mm_reference_loop(torch, device: str) -> str | None:
    """Why torch._int_mm is not timed here (a reference loop: one 256-wide product under PROBE_MIN_GOPS), or None."""
    generator = torch.Generator().manual_seed(0)
    probe = [torch.randint(-128, 128, (PROBE_SIZE, PROBE_SIZE), dtype=torch.int8, generator=generator).to(device) for _ in range(2)]
    start = time.perf_counter()
    torch._int_mm(*probe)
    _sync(torch, device)()
    probe_gops = 2 * PROBE_SIZE**3 / max(time.perf_counter() - start, 1e-9) / 1e9
    return f"a reference loop here ({probe_gops:.1f} GOP/s at {PROBE_SIZE}), not timed" if probe_gops < PROBE_MIN_GOPS else None


def _int8_peak(torch, size: int, device: str, int_mm_skipped: str | None) -> dict[str, Any]:
    """INT8 x INT8 -> INT32 products: torch._int_mm (oneDNN where the CPU has VNNI or AMX, cuBLASLt on a GPU;
    `int_mm_skipped` says why not where it is a reference loop) and, on a CPU, ONNX Runtime's Q/DQ MatMul
    (MLAS: the kernels its INT8 convolutions run). The best is the peak; each kernel's rate, or why it was
    not timed, is kept beside it."""
    methods: dict[str, Any] = {}
    if int_mm_skipped:
        methods["torch._int_mm"] = int_mm_skipped
    else:
        generator, sync = torch.Generator().manual_seed(0), _sync(torch, device)
        a, b = (torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator).to(device) for _ in range(2))
        methods["torch._int_mm"] = _best_rate(lambda: (torch._int_mm(a, b), sync()), size)
    if not device.startswith("cuda"):
        methods["onnxruntime MatMul (Q/DQ)"] = _onnxruntime_gemm(size, torch.get_num_threads(), quantized=True)
    return _best_of(methods)


def _onnxruntime_gemm(size: int, threads: int, quantized: bool) -> dict[str, Any]:
    """ONNX Runtime's MatMul on constant weights; quantized: an activation quantized to uint8 times int8
    weights, as the calibrated model's MatMuls and Convs are."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if quantized:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
            helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"]),
            helper.make_node("MatMul", ["xd", "wd"], ["y"]),
        ]
        constants = {
            "w": rng.integers(-64, 64, (size, size), dtype=np.int8),
            "x_scale": np.array(1 / 255, np.float32),
            "x_zero": np.array(0, np.uint8),
            "w_scale": np.array(0.01, np.float32),
            "w_zero": np.array(0, np.int8),
        }
    else:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        constants = {"w": rng.standard_normal((size, size), dtype=np.float32)}
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = rng.random((size, size), dtype=np.float32)
    return _best_rate(lambda: session.run(None, {"x": x}), size)


def peak_precision(precision: str, on_gpu: bool) -> str:
    """The peak a variant of `precision` is measured against: its own; on a CPU, fp16 files compute in fp32
    (TFLite's XNNPACK and ONNX Runtime widen half-precision weights on x86)."""
    if precision == "fp16" and not on_gpu:
        return "fp32"
    return precision


def peak_gops(peaks: dict[str, Any], precision: str) -> float | None:
    entry = peaks.get(precision) or {}
    return entry.get("gops")


def machine_peaks(threads: int = 0) -> dict[str, Any]:
    """{"cpu": peaks, "gpu": peaks or why not}: the CPU's always, the first GPU's where torch can reach one."""
    import torch

    from crossdeploy.device_info import no_gpu_reason

    peaks: dict[str, Any] = {"cpu": measure_peaks("cpu", threads)}
    reason = no_gpu_reason()
    if reason is None and torch.cuda.is_available():
        peaks["gpu"] = {**measure_peaks("cuda:0"), "name": torch.cuda.get_device_name(0)}
    else:
        peaks["gpu"] = {"status": "skipped", "reason": reason or "torch finds no CUDA device"}
    return peaks


def annotate_cells(results: dict[str, Any], variants: list, peaks: dict[str, Any], gflops_per_image: float | None) -> None:
    """Add `peak_pct` (the cell's arithmetic rate over its precision's peak on its device, in %) to every
    measured cell (machine_peaks' layout: a CPU row against the CPU's peaks, a GPU row against the GPU's)."""
    if not gflops_per_image:
        return
    for variant in variants:
        device = peaks.get("gpu" if variant.on_gpu else "cpu") or {}
        peak = peak_gops(device, peak_precision(variant.precision, variant.on_gpu))
        if not peak or variant.name not in results:
            continue
        for row in results[variant.name].values():
            if isinstance(row, dict) and row.get("status") == "ok" and row.get("throughput_ips"):
                row["peak_pct"] = round(100 * row["throughput_ips"] * gflops_per_image / peak, 1)
