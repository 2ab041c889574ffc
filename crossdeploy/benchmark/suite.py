"""The whole benchmark: every variant's sweep, its MLPerf scenarios, the harness-overhead measurement,
and the checks against the performance targets, as one dict for metrics/benchmark.json."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from crossdeploy.benchmark.closed_loop import WindowSettings
from crossdeploy.benchmark.mlperf import MlperfSettings, run_mlperf
from crossdeploy.benchmark.sweep import (
    RunnerPool,
    cell_name,
    client_batches,
    failed,
    parse_cell,
    skipped,
    sweep_variant,
)
from crossdeploy.errors import CrossdeployError
from crossdeploy.datasets import ImageSet
from crossdeploy.runtimes.base import ThreadSettings, unavailable_reason
from crossdeploy.variants import TORCH_COMPILE, Variant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Targets:
    """Performance that must hold on the benchmark machine; reported as checks, never asserted in tests."""

    int8_variant: str = "onnxruntime-int8"
    fp32_variant: str = "onnxruntime-fp32"
    int8_speedup_batch: int = 32
    int8_speedup_min: float = 3.0
    harness_variant: str = "onnxruntime-int8"
    harness_batch: int = 32
    harness_overhead_max_pct: float = 3.0
    in_process_variant: str = "tf-savedmodel-fp32"  # the SavedModel the servers load
    served_batch: int = 32
    served_concurrency: int = 8
    served_min_fraction: float = 0.6  # the bytes path over the in-process SavedModel, same cell


@dataclass(frozen=True)
class BenchmarkPlan:
    batch_sizes: list[int]
    concurrencies: list[int]
    threads: ThreadSettings
    windows: WindowSettings
    mlperf: MlperfSettings | None  # None: no LoadGen scenarios
    mlperf_variants: list[str] | None  # None: every variant
    harness_check: bool
    targets: Targets = field(default_factory=Targets)
    disabled: dict[str, str] = field(default_factory=dict)  # variant -> why it is not measured

    @classmethod
    def from_params(cls, cfg: dict[str, Any], known_variants: list[str]) -> "BenchmarkPlan":
        """Build the plan from params.yaml's benchmark section, naming the param to fix on bad values."""
        profiles = cfg["profiles"]
        if cfg["profile"] not in profiles:
            raise CrossdeployError(f"benchmark.profile {cfg['profile']!r} is unknown; use one of {', '.join(profiles)}.")
        profile = profiles[cfg["profile"]]
        for key in ("batch_sizes", "concurrency"):
            values = cfg[key]
            if not values or not all(isinstance(v, int) and v >= 1 for v in values):
                raise CrossdeployError(f"benchmark.{key} must be a non-empty list of positive integers, got {values!r}.")
        mlperf_cfg = cfg["mlperf"]
        mlperf = None
        if mlperf_cfg["enabled"]:
            mlperf = MlperfSettings(
                min_duration_ms=int(profile["mlperf_min_duration_ms"]),
                min_query_count={k: int(v) for k, v in profile["mlperf_min_query_count"].items()},
                server_latency_ms=float(mlperf_cfg["server_latency_ms"]),
                offline_batch=int(mlperf_cfg["offline_batch"]),
                server_max_batch=int(mlperf_cfg["server_max_batch"]),
                workers=int(mlperf_cfg["workers"]),
            )
        targets = cfg["targets"]
        return cls(
            batch_sizes=list(cfg["batch_sizes"]),
            concurrencies=list(cfg["concurrency"]),
            threads=ThreadSettings(**cfg["threads"]),
            windows=WindowSettings(
                warmup_requests=int(profile["warmup_requests"]),
                window_s=float(profile["window_s"]),
                max_windows=int(profile["max_windows"]),
                stability_pct=float(profile["stability_pct"]),
                cell_cap_s=float(profile["cell_cap_s"]),
            ),
            mlperf=mlperf,
            mlperf_variants=_variant_list(mlperf_cfg["variants"], known_variants, "benchmark.mlperf.variants"),
            harness_check=bool(cfg["harness_check"]),
            targets=Targets(
                int8_speedup_batch=int(targets["int8_speedup_batch"]),
                int8_speedup_min=float(targets["int8_speedup_min"]),
                harness_batch=int(targets["int8_speedup_batch"]),
                harness_overhead_max_pct=float(targets["harness_overhead_max_pct"]),
                served_batch=int(targets["served_batch"]),
                served_concurrency=int(targets["served_concurrency"]),
                served_min_fraction=float(targets["served_min_fraction"]),
            ),
            disabled={} if cfg["torch_compile"] else {TORCH_COMPILE: "benchmark.torch_compile is false"},
        )


def _variant_list(value: Any, known: list[str], param: str) -> list[str] | None:
    if value in (None, "all"):
        return None
    names = [value] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CrossdeployError(f"{param} names unknown variants {', '.join(unknown)}; choose from all, {', '.join(known)}.")
    return names


def select_variants(variants: list[Variant], value: Any) -> list[Variant]:
    """The variants `benchmark.variants` asks for, in pipeline order."""
    names = _variant_list(value, [v.name for v in variants], "benchmark.variants")
    return variants if names is None else [v for v in variants if v.name in names]


def run_benchmark(variants: list[Variant], images: ImageSet, plan: BenchmarkPlan, mlperf_logs: Path) -> dict[str, Any]:
    from tqdm import tqdm

    results: dict[str, Any] = {}
    mlperf: dict[str, Any] = {}
    harness: dict[str, Any] = {}
    cells = [cell_name(b, c) for b in plan.batch_sizes for c in plan.concurrencies]
    with tqdm(total=len(variants) * len(cells), desc="benchmark", unit="cell", file=sys.stderr, dynamic_ncols=True) as bar:

        def on_cell(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update()

        for variant in variants:
            reason = plan.disabled.get(variant.name) or variant.missing_reason()
            if reason:
                bar.update(len(cells))
                results[variant.name] = {cell: skipped(reason) for cell in cells}
                if _wants_mlperf(plan, variant):
                    mlperf[variant.name] = skipped(reason)
                continue
            pool = RunnerPool(variant, plan.threads)
            try:
                results[variant.name] = sweep_variant(pool, images, plan.batch_sizes, plan.concurrencies, plan.windows, on_cell)
                measured = [row for row in results[variant.name].values() if row["status"] == "ok"]
                if _wants_mlperf(plan, variant):
                    bar.set_postfix_str(f"{variant.name} MLPerf LoadGen")
                    mlperf[variant.name] = _mlperf_row(pool, images, plan, mlperf_logs / variant.name, results[variant.name], measured)
                if plan.harness_check and variant.name == plan.targets.harness_variant and measured:
                    bar.set_postfix_str(f"{variant.name} harness overhead")
                    harness = _harness(pool, images, plan)
            finally:
                pool.close()
    results["mlperf"] = mlperf
    results["harness"] = harness
    results["checks"] = checks(results, plan.targets)
    return results


def _wants_mlperf(plan: BenchmarkPlan, variant: Variant) -> bool:
    return plan.mlperf is not None and (plan.mlperf_variants is None or variant.name in plan.mlperf_variants)


def _mlperf_row(pool, images, plan, log_dir, cells, measured) -> dict[str, Any]:
    if not measured:
        reasons = {row.get("reason", "") for row in cells.values()}
        return skipped("; ".join(sorted(reasons)) or "no sweep cell could be measured")
    single = cells.get(cell_name(1, 1), {})
    expected_latency_ms = single["p50_ms"] if single.get("status") == "ok" else min(r["p50_ms"] for r in measured)
    try:
        runners = pool.open(plan.mlperf.workers)
        row = run_mlperf(
            runners, runners[0].inputs(images), plan.mlperf, log_dir,
            expected_latency_ms=expected_latency_ms,
            expected_ips=max(r["throughput_ips"] for r in measured),
        )
    except Exception as exc:
        reason = unavailable_reason(pool.variant.runtime, exc)
        if reason:
            return skipped(reason)
        log.exception("MLPerf scenarios failed for %s", pool.variant.name)
        return failed(exc)
    return {"status": "ok", **row}


def _harness(pool: RunnerPool, images: ImageSet, plan: BenchmarkPlan) -> dict[str, Any]:
    from crossdeploy.benchmark.overhead import harness_overhead

    runner = pool.open(1)[0]
    batch = client_batches(runner.inputs(images), plan.targets.harness_batch, 1)[0]
    return harness_overhead(runner, batch, plan.windows)


def best_throughput(cells: dict[str, dict[str, Any]], batch_size: int | None = None) -> tuple[float, str] | None:
    """The highest throughput over the measured cells (at one batch size if given) and its cell name."""
    ok = [
        (row["throughput_ips"], name)
        for name, row in cells.items()
        if row.get("status") == "ok" and (batch_size is None or parse_cell(name)[0] == batch_size)
    ]
    return max(ok) if ok else None


def checks(results: dict[str, Any], targets: Targets) -> dict[str, Any]:
    out: dict[str, Any] = {}
    int8 = best_throughput(results.get(targets.int8_variant, {}), targets.int8_speedup_batch)
    fp32 = best_throughput(results.get(targets.fp32_variant, {}), targets.int8_speedup_batch)
    if int8 and fp32:
        ratio = int8[0] / fp32[0]
        out["int8_over_fp32"] = {
            "batch": targets.int8_speedup_batch,
            "ratio": round(ratio, 3),
            "target": targets.int8_speedup_min,
            "met": ratio >= targets.int8_speedup_min,
        }
    harness = results.get("harness") or {}
    if "overhead_pct" in harness:
        out["harness_overhead"] = {
            "overhead_pct": harness["overhead_pct"],
            "target_max_pct": targets.harness_overhead_max_pct,
            "met": harness["overhead_pct"] <= targets.harness_overhead_max_pct,
        }
    out.update(served_checks(results, targets))
    return out


def gpu_checks(results: dict[str, Any], parity: dict[str, Any], gpu: dict[str, Any] | None, gpu_names: list[str]) -> dict[str, Any]:
    """The GPU target's figures against MLPerf's reference for that card: Offline throughput, SingleStream
    p90, INT8 top-1 agreement. Judged only on the card the reference is for."""
    if not gpu:
        return {}
    row = results.get("mlperf", {}).get(gpu["variant"], {})
    out: dict[str, Any] = {"variant": gpu["variant"], "card": gpu["card"], "measured_on": ", ".join(gpu_names) or "no GPU"}
    if not any(gpu["card"].lower() in name.lower() for name in gpu_names):
        out["note"] = f"the reference is for an {gpu['card']}; this run had {out['measured_on']}"
        return {"gpu_target": out}
    if row.get("status") != "ok":
        out["note"] = f"{gpu['variant']} has no MLPerf figures: {row.get('reason', 'not measured')}"
        return {"gpu_target": out}
    fraction = row["offline_ips"] / gpu["offline_reference_ips"]
    out["offline"] = {
        "ips": row["offline_ips"], "reference_ips": gpu["offline_reference_ips"], "fraction": round(fraction, 3),
        "target": gpu["offline_min_fraction"], "met": fraction >= gpu["offline_min_fraction"],
    }  # fmt: skip
    if gpu.get("singlestream_p90_max_ms") is not None:
        p90 = row["singlestream_p90_ms"]
        out["singlestream_p90"] = {"ms": p90, "target_max_ms": gpu["singlestream_p90_max_ms"], "met": p90 <= gpu["singlestream_p90_max_ms"]}
    agreement = parity.get(gpu["variant"], {}).get("top1_agreement")
    if agreement is not None:
        out["int8_top1_agreement"] = {"value": agreement, "target": gpu["int8_top1_agreement_min"], "met": agreement >= gpu["int8_top1_agreement_min"]}
    return {"gpu_target": out}


def served_checks(results: dict[str, Any], targets: Targets) -> dict[str, Any]:
    """Each engine's bytes path against the in-process SavedModel at one cell, with its REST-float figure."""
    cell = cell_name(targets.served_batch, targets.served_concurrency)

    def ips(variant: str) -> float | None:
        row = results.get(variant, {}).get(cell, {})
        return row["throughput_ips"] if row.get("status") == "ok" else None

    out: dict[str, Any] = {}
    in_process = ips(targets.in_process_variant)
    for engine in ("tfserving", "kserve"):
        served = ips(f"{engine}-rest-bytes")
        if not (in_process and served):
            continue
        fraction = served / in_process
        rest_float = ips(f"{engine}-rest-fp32")
        out[f"{engine}_bytes_over_in_process"] = {
            "batch": targets.served_batch,
            "concurrency": targets.served_concurrency,
            "served_ips": served,
            "in_process_ips": in_process,
            "fraction": round(fraction, 3),
            "rest_float_fraction": round(rest_float / in_process, 3) if rest_float else None,
            "target": targets.served_min_fraction,
            "met": fraction >= targets.served_min_fraction,
        }
    return out
