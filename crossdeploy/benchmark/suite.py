"""The whole benchmark: every variant's sweep, its MLPerf scenarios and the harness-overhead measurement,
as one dict for metrics/benchmark.json. The figures are judged against the performance targets by the
report stage (benchmark/checks.py), so a change of target never re-runs a measurement."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossdeploy.benchmark.closed_loop import WindowSettings
from crossdeploy.benchmark.mlperf import MlperfSettings, run_mlperf
from crossdeploy.benchmark.sweep import RunnerPool, cell_name, client_batches, failed, skipped, sweep_variant
from crossdeploy.errors import CrossdeployError
from crossdeploy.datasets import ImageSet
from crossdeploy.runtimes.base import ThreadSettings, unavailable_reason
from crossdeploy.variants import TORCH_COMPILE, Variant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkPlan:
    batch_sizes: list[int]
    concurrencies: list[int]
    threads: ThreadSettings
    windows: WindowSettings
    mlperf: MlperfSettings | None  # None: no LoadGen scenarios
    mlperf_variants: list[str] | None  # None: every variant
    harness_check: bool
    harness_batch: int = 32
    harness_variant: str = "onnxruntime-int8"  # measured against a bare `session.run` loop: an ONNX Runtime variant
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
        harness_batch = cfg["harness_batch"]
        if not isinstance(harness_batch, int) or harness_batch < 1:
            raise CrossdeployError(f"benchmark.harness_batch must be a positive integer, got {harness_batch!r}.")
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
            harness_batch=harness_batch,
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
    # why the harness is not measured, until it is
    harness = skipped("benchmark.harness_check is false" if not plan.harness_check else f"{plan.harness_variant} is not in benchmark.variants")
    cells = [cell_name(b, c) for b in plan.batch_sizes for c in plan.concurrencies]
    with tqdm(total=len(variants) * len(cells), desc="benchmark", unit="cell", file=sys.stderr, dynamic_ncols=True) as bar:

        def on_cell(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update()

        for variant in variants:
            unbuilt = variant.build_failure()
            reason = unbuilt or plan.disabled.get(variant.name) or variant.missing_reason()
            if reason:
                # a variant its converter could not build is failed, not skipped: skips are for missing runtimes
                row = {"status": "failed", "reason": f"not built: {unbuilt}"} if unbuilt else skipped(reason)
                bar.update(len(cells))
                results[variant.name] = {cell: dict(row) for cell in cells}
                if _wants_mlperf(plan, variant):
                    mlperf[variant.name] = dict(row)
                if _wants_harness(plan, variant):
                    harness = {**row, "reason": f"{variant.name} is not measured: {row['reason']}"}
                continue
            pool = RunnerPool(variant, plan.threads)
            try:
                results[variant.name] = sweep_variant(pool, images, plan.batch_sizes, plan.concurrencies, plan.windows, on_cell)
                measured = [row for row in results[variant.name].values() if row["status"] == "ok"]
                if _wants_mlperf(plan, variant):
                    bar.set_postfix_str(f"{variant.name} MLPerf LoadGen")
                    mlperf[variant.name] = _mlperf_row(pool, images, plan, mlperf_logs / variant.name, results[variant.name], measured)
                if _wants_harness(plan, variant):
                    if measured:
                        bar.set_postfix_str(f"{variant.name} harness overhead")
                        harness = _harness(pool, images, plan)
                    else:
                        harness = _unmeasured(results[variant.name], f"{variant.name} could not be measured: ")
            finally:
                pool.close()
    results["mlperf"] = mlperf
    results["harness"] = harness
    return results


def _unmeasured(cells: dict[str, dict[str, Any]], prefix: str = "") -> dict[str, Any]:
    """The row for what follows a sweep that measured nothing: failed if a cell failed (a failure must
    not read as a skip further down the report), else skipped, with the cells' reasons."""
    reasons = "; ".join(sorted({row.get("reason", "") for row in cells.values()} - {""})) or "no sweep cell could be measured"
    status = "failed" if any(row["status"] == "failed" for row in cells.values()) else "skipped"
    return {"status": status, "reason": prefix + reasons}


def _wants_mlperf(plan: BenchmarkPlan, variant: Variant) -> bool:
    return plan.mlperf is not None and (plan.mlperf_variants is None or variant.name in plan.mlperf_variants)


def _wants_harness(plan: BenchmarkPlan, variant: Variant) -> bool:
    return plan.harness_check and variant.name == plan.harness_variant


def _mlperf_row(pool, images, plan, log_dir, cells, measured) -> dict[str, Any]:
    if not measured:
        return _unmeasured(cells)
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
        reason = unavailable_reason(pool.variant.name, exc)
        if reason:
            return skipped(reason)
        log.exception("MLPerf scenarios failed for %s", pool.variant.name)
        return failed(exc)
    return {"status": "ok", **row}


def _harness(pool: RunnerPool, images: ImageSet, plan: BenchmarkPlan) -> dict[str, Any]:
    from crossdeploy.benchmark.overhead import harness_overhead

    try:
        runner = pool.open(1)[0]
        batch = client_batches(runner.inputs(images), plan.harness_batch, 1)[0]
        return {"status": "ok", **harness_overhead(runner, batch, plan.windows)}
    except Exception as exc:
        log.exception("the harness-overhead measurement failed on %s", pool.variant.name)
        return failed(exc)
