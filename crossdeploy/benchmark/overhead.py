"""What the harness itself costs: the closed-loop measurement of a runner against a bare
`session.run` loop on the same ONNX Runtime session, batch and inputs. The two alternate round by
round and the overhead is the median of the paired ratios, so the machine's drift cancels out."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from crossdeploy.benchmark.closed_loop import WindowSettings, measure_closed_loop
from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner


def harness_overhead(runner: OnnxRuntimeRunner, batch: np.ndarray, settings: WindowSettings, rounds: int) -> dict[str, Any]:
    session, feed = runner.session, {runner.input_name: batch}
    session.run(None, feed)
    bare, harnessed = [], []
    for _ in range(rounds):
        measured = measure_closed_loop([lambda: runner.infer(batch)], len(batch), settings)
        harnessed.append(measured["throughput_ips"])
        calls = max(3, int(measured["requests"]))
        start = time.perf_counter()
        for _ in range(calls):
            session.run(None, feed)
        bare.append(calls * len(batch) / (time.perf_counter() - start))
    overhead = statistics.median(1.0 - h / b for h, b in zip(harnessed, bare))
    return {
        "variant": runner.name,
        "batch": len(batch),
        "bare_ips": round(statistics.median(bare), 3),
        "harness_ips": round(statistics.median(harnessed), 3),
        "overhead_pct": round(overhead * 100.0, 2),
        "rounds": rounds,
    }
