"""The benchmark's measurement: every variant of the plan swept, its MLPerf scenarios and the harness-overhead
measurement, as one dict for metrics/benchmark.json. What the figures mean against the performance targets
is the report stage's (benchmark/checks.py), which reads that file and never this code, so changing a
target, a judging rule or the report never re-runs a measurement."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from crossdeploy.benchmark.mlperf import run_mlperf
from crossdeploy.benchmark.plan import BenchmarkPlan
from crossdeploy.benchmark.cells import cell_name, skipped
from crossdeploy.benchmark.sweep import RunnerPool, client_batches, failed, sweep_variant
from crossdeploy.datasets import ImageSet
from crossdeploy.runtimes.base import unavailable_reason
from crossdeploy.variants import Variant

log = logging.getLogger(__name__)


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
