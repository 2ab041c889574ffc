"""The performance targets (`benchmark.targets`) judged against the benchmark's and the parity check's
figures -> metrics/checks.json.

Run by the report stage, apart from the measurement: editing a threshold, or these rules, re-renders the
report and never re-runs the benchmark. Every target appears in the result; one whose figures are
missing has `met: null` and a note saying why, so a skipped variant never reads as a target met or
quietly drops out of the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from crossdeploy.benchmark.cells import NOT_MEASURED, best_throughput, cell_name, parse_cell, variant_cells


@dataclass(frozen=True)
class Targets:
    """Performance that must hold on the benchmark machine; reported as checks, never asserted in tests."""

    int8_variant: str = "onnxruntime-int8"
    fp32_variant: str = "onnxruntime-fp32"
    int8_speedup_batch: int = 32
    int8_speedup_min: float = 3.0
    harness_overhead_max_pct: float = 3.0
    in_process_variant: str = "tf-savedmodel-fp32"  # the SavedModel the servers load
    served_batch: int = 32
    served_concurrency: int = 8
    served_min_fraction: float = 0.6  # the bytes path over the in-process SavedModel, same cell
    gpu: dict[str, Any] | None = None  # the GPU target's MLPerf reference (conf/target/a100.yaml)

    @classmethod
    def from_params(cls, cfg: dict[str, Any]) -> "Targets":
        """From params.yaml's benchmark.targets."""
        return cls(
            int8_speedup_batch=int(cfg["int8_speedup_batch"]),
            int8_speedup_min=float(cfg["int8_speedup_min"]),
            harness_overhead_max_pct=float(cfg["harness_overhead_max_pct"]),
            served_batch=int(cfg["served_batch"]),
            served_concurrency=int(cfg["served_concurrency"]),
            served_min_fraction=float(cfg["served_min_fraction"]),
            gpu=cfg.get("gpu"),
        )


def not_measured(reason: str, **context: Any) -> dict[str, Any]:
    return {**context, "met": None, "note": f"not measured: {reason}"}


def _unmeasured_reason(results: dict[str, Any], variant: str, wanted: str, cells: list[str]) -> str:
    """Why none of `cells` (described as `wanted`) of `variant` has a figure: the rows' own reasons, or
    what the sweep left out."""
    if variant not in results:
        return f"{variant} is not in benchmark.variants"
    rows = [results[variant][c] for c in cells if c in results[variant]]
    if not rows:
        return f"{variant} has no cell {wanted} (benchmark.batch_sizes, benchmark.concurrency)"
    return "; ".join(sorted({f"{variant} {row['status']}: {row.get('reason', '')}" for row in rows}))


def check_targets(results: dict[str, Any], parity: dict[str, Any], targets: Targets) -> dict[str, Any]:
    """Every target's verdict: met true or false with the figures, or null with the reason."""
    out = {
        "int8_over_fp32": _int8_over_fp32(results, targets),
        "harness_overhead": _harness(results.get("harness") or {}, targets),
        **_served(results, targets),
        "peaks_plausible": _peaks(results),
    }
    if targets.gpu:
        gpu_names = [g["name"] for g in results.get("device", {}).get("gpus", [])]
        out["gpu_target"] = gpu_checks(results, parity, targets.gpu, gpu_names)
    return out


def _int8_over_fp32(results: dict[str, Any], targets: Targets) -> dict[str, Any]:
    batch = targets.int8_speedup_batch
    context = {"batch": batch, "target": targets.int8_speedup_min}
    best = {}
    for variant in (targets.int8_variant, targets.fp32_variant):
        cells = results.get(variant, {})
        best[variant] = best_throughput(cells, batch)
        if best[variant] is None:
            at_batch = [name for name in cells if parse_cell(name)[0] == batch]
            return not_measured(_unmeasured_reason(results, variant, f"at batch {batch}", at_batch), **context)
    ratio = best[targets.int8_variant][0] / best[targets.fp32_variant][0]
    return {**context, "ratio": round(ratio, 3), "met": ratio >= targets.int8_speedup_min}


def _peaks(results: dict[str, Any]) -> dict[str, Any]:
    """The GEMM peaks every `% of peak` is taken against hold as a limit: positive, and above every cell."""
    if not results.get("peaks"):
        return not_measured("the benchmark recorded no GEMM peaks")
    problems = implausible_peaks(results["peaks"], results)
    return {"met": not problems, "problems": problems}


def _harness(harness: dict[str, Any], targets: Targets) -> dict[str, Any]:
    context = {"target_max_pct": targets.harness_overhead_max_pct}
    if "overhead_pct" not in harness:
        reason = harness.get("reason") or "the benchmark recorded no harness measurement"
        return not_measured(f"harness {harness['status']}: {reason}" if "status" in harness else reason, **context)
    measured_on = {"variant": harness["variant"], "batch": harness["batch"]}  # benchmark.harness_batch, not a target's batch
    return {
        **context,
        **measured_on,
        "overhead_pct": harness["overhead_pct"],
        "met": harness["overhead_pct"] <= targets.harness_overhead_max_pct,
    }


def _served(results: dict[str, Any], targets: Targets) -> dict[str, Any]:
    """Each engine's bytes path against the in-process SavedModel at one cell, with its REST-float figure.

    Where the concurrency search left that cell out on either side (more clients had added nothing at
    smaller batches), both are compared at the same batch with the most clients both measured, never
    at different cells: one side's best against the other's fewer clients would read as the server's
    cost or gain. The row names the cell it used. A failed cell is never stood in for, and no cell stands
    in over a failure at that batch (a failed 4-client cell does not leave 2 clients to speak for 8).
    Cells count as measured when their status is ok, stable or not, as in every other check; the
    report's table says which cells are unstable.
    """
    batch, wanted = targets.served_batch, targets.served_concurrency
    cell = cell_name(batch, wanted)
    context = {"batch": batch, "concurrency": wanted, "target": targets.served_min_fraction}

    def ips(variant: str, name: str) -> float | None:
        row = results.get(variant, {}).get(name, {})
        return row["throughput_ips"] if row.get("status") == "ok" else None

    def common_cell(variants: tuple[str, ...]) -> str | None:
        if all(ips(v, cell) is not None for v in variants):
            return cell
        if any(results.get(v, {}).get(cell, {}).get("status") != NOT_MEASURED for v in variants if ips(v, cell) is None):
            return None  # missing or failed on one side: no stand-in
        if failures(variants):
            return None
        clients = [c for b, c in map(parse_cell, results[variants[0]]) if b == batch and c <= wanted]
        both = [c for c in clients if all(ips(v, cell_name(batch, c)) is not None for v in variants)]
        return cell_name(batch, max(both)) if both else None

    def failures(variants: tuple[str, ...]) -> list[str]:
        """`variant cell: reason` of every failed cell at the target's batch with at most its clients."""
        return [
            f"{v} {name} failed: {row.get('reason', '')}"
            for v in variants
            for name, row in results.get(v, {}).items()
            if parse_cell(name)[0] == batch and parse_cell(name)[1] <= wanted and row.get("status") == "failed"
        ]

    out: dict[str, Any] = {}
    for engine in ("tfserving", "kserve"):
        bytes_variant = f"{engine}-rest-bytes"
        used = common_cell((bytes_variant, targets.in_process_variant))
        if used is None:
            missing = [v for v in (bytes_variant, targets.in_process_variant) if ips(v, cell) is None]
            reason = "; ".join(_unmeasured_reason(results, v, cell, [cell]) for v in missing)
            if all(results.get(v, {}).get(cell, {}).get("status") == NOT_MEASURED for v in missing):
                failed = failures((bytes_variant, targets.in_process_variant))
                reason += "; and " + (
                    "; ".join(failed) if failed else f"no cell at batch {batch} with at most {wanted} clients was measured on both"
                )
            out[f"{engine}_bytes_over_in_process"] = not_measured(reason, **context)
            continue
        served, in_process = ips(bytes_variant, used), ips(targets.in_process_variant, used)
        rest_float = ips(f"{engine}-rest-fp32", used)
        fraction = served / in_process
        out[f"{engine}_bytes_over_in_process"] = {
            **context,
            "cell": used,
            "served_ips": served,
            "in_process_ips": in_process,
            "fraction": round(fraction, 3),
            "rest_float_fraction": round(rest_float / in_process, 3) if rest_float is not None else None,
            "met": fraction >= targets.served_min_fraction,
        }
    return out


def gpu_checks(results: dict[str, Any], parity: dict[str, Any], gpu: dict[str, Any], gpu_names: list[str]) -> dict[str, Any]:
    """The GPU target's figures against MLPerf's reference for that card: Offline throughput, SingleStream
    p90, INT8 top-1 agreement. The MLPerf figures are judged only on the card the reference is for."""
    variant = gpu["variant"]
    measured_on = ", ".join(gpu_names) or "no GPU"
    out: dict[str, Any] = {"variant": variant, "card": gpu["card"], "measured_on": measured_on}
    row = results.get("mlperf", {}).get(variant)
    if not any(gpu["card"].lower() in name.lower() for name in gpu_names):
        mlperf_note = f"not judged: the reference is for an {gpu['card']}; this run had {measured_on}"
    elif row is None:
        mlperf_note = f"not measured: {variant} has no MLPerf run (benchmark.variants, benchmark.mlperf.variants)"
    elif row.get("status") != "ok":
        mlperf_note = f"not measured: {variant} MLPerf {row['status']}: {row.get('reason', '')}"
    else:
        mlperf_note = None

    offline_target = {"reference_ips": gpu["offline_reference_ips"], "target": gpu["offline_min_fraction"]}
    if mlperf_note:
        out["offline"] = {**offline_target, "met": None, "note": mlperf_note}
    else:
        fraction = row["offline_ips"] / gpu["offline_reference_ips"]
        out["offline"] = {
            **offline_target,
            "ips": row["offline_ips"],
            "fraction": round(fraction, 3),
            "met": fraction >= gpu["offline_min_fraction"],
        }

    bound = gpu.get("singlestream_p90_max_ms")
    if bound is None:
        out["singlestream_p90"] = {
            "target_max_ms": None,
            "met": None,
            "note": "no target: benchmark.targets.gpu.singlestream_p90_max_ms is null",
        }
    elif mlperf_note:
        out["singlestream_p90"] = {"target_max_ms": bound, "met": None, "note": mlperf_note}
    else:
        p90 = row["singlestream_p90_ms"]
        out["singlestream_p90"] = {"target_max_ms": bound, "ms": p90, "met": p90 <= bound}

    # parity is the validate stage's, a property of the engine rather than of the card's speed: judged wherever it was measured
    agreement_target = {"target": gpu["int8_top1_agreement_min"]}
    parity_row = parity.get(variant)
    if parity_row is None or parity_row.get("top1_agreement") is None:
        reason = f"{variant} {parity_row['status']}: {parity_row.get('reason', '')}" if parity_row else f"{variant} has no parity row"
        out["int8_top1_agreement"] = not_measured(reason, **agreement_target)
    else:
        value = parity_row["top1_agreement"]
        out["int8_top1_agreement"] = {**agreement_target, "value": value, "met": value >= gpu["int8_top1_agreement_min"]}
    return out


#: a cell may not exceed its precision's peak by more than this: beyond it the peak was mismeasured. A shared
#: host's GEMM rate drifts between the peak's second and a cell minutes later: this project's 2-core machine
#: gave 120 to 157 GFLOP/s FP32 and 213 to 340 GOP/s INT8 within one hour, and a TFLite FP32 cell 122 % of
#: the 129 GFLOP/s its run measured at the start; a peak off by a factor (a reference loop, a zero) stays caught
TOLERANCE = 1.25


def implausible_peaks(peaks: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """What makes the recorded peaks (machine_peaks' layout) unusable as a limit: a peak that is zero, negative
    or not a number, or one a measured cell exceeds (a cell cannot outrun dense GEMM in its own precision).
    Empty where they hold."""
    problems = []
    for device, entries in peaks.items():
        if not isinstance(entries, dict) or entries.get("status") == "skipped":
            continue
        for precision, entry in entries.items():
            if not isinstance(entry, dict) or entry.get("status") == "skipped":
                continue
            gops = entry.get("gops")
            if not isinstance(gops, (int, float)) or isinstance(gops, bool) or not math.isfinite(gops) or gops <= 0:
                problems.append(f"the {device} {precision} peak is {gops!r}, not a positive rate")
    for variant, cells in variant_cells(results).items():
        for cell, row in cells.items():
            pct = row.get("peak_pct")
            if pct is not None and pct > 100 * TOLERANCE:
                problems.append(f"{variant} {cell} reached {pct:g} % of its precision's peak: the peak was mismeasured")
    return problems
