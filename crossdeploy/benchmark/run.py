"""The benchmark's measurement: every variant of the plan swept on its warm runners (the concurrency search
leaving out what carries no information), its MLPerf scenarios on the same runners and the harness-overhead
measurement, each variant in a process of its own (benchmark/isolation.py), as one dict for
metrics/benchmark.json, with a progress bar that weighs each piece by its cost. What the figures mean
against the performance targets is the report stage's (benchmark/checks.py), which reads that file and
never this code, so changing a target, a judging rule or the report never re-runs a measurement."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossdeploy.benchmark.cells import NOT_MEASURED, cell_name, skipped
from crossdeploy.benchmark.isolation import ProcessEnded, run_isolated
from crossdeploy.benchmark.mlperf import run_mlperf
from crossdeploy.benchmark.plan import BenchmarkPlan
from crossdeploy.benchmark.progress import CostModel, Remaining, Work
from crossdeploy.benchmark.runner_pool import RunnerPool
from crossdeploy.benchmark.search import ConcurrencySearch
from crossdeploy.benchmark.sweep import client_batches, failed, sweep_variant
from crossdeploy.data.datasets import ImageSet
from crossdeploy.resources import TreePeak, stage_resources
from crossdeploy.runtimes.base import unavailable_reason
from crossdeploy.variants import Variant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Label:
    """What the variant's process is measuring now, for the progress bar."""

    text: str


@dataclass(frozen=True)
class CellDone:
    batch: int
    concurrency: int
    row: dict[str, Any]


@dataclass(frozen=True)
class ScenarioDone:
    """The MLPerf scenarios' or the harness measurement's row, and whether it ran (work given up at once
    must not teach the estimate)."""

    kind: str  # "mlperf" | "harness": its key in the variant's rows
    row: dict[str, Any]
    ran: bool


@dataclass(frozen=True)
class MeasuringCost:
    """What measuring the variant cost: wall time and peak memory, with any server its runner started."""

    resources: dict[str, Any]


def planned_work(variants: list[Variant], plan: BenchmarkPlan) -> list[Work]:
    """Everything the run may measure, in order: each variant's cells, its LoadGen scenarios, the harness."""
    work = []
    for variant in variants:
        work += [Work(variant.name, "cell", b, c) for b in sorted(set(plan.batch_sizes)) for c in sorted(set(plan.concurrencies))]
        if _wants_mlperf(plan, variant):
            work.append(Work(variant.name, "mlperf"))
        if _wants_harness(plan, variant):
            work.append(Work(variant.name, "harness"))
    return work


class _Bar:
    """tqdm counting seconds: done is the time spent, total that plus the estimate of what is left."""

    def __init__(self, remaining: Remaining):
        from tqdm import tqdm

        self._format_interval = tqdm.format_interval
        self.remaining = remaining
        self.started = time.perf_counter()
        self.text = ""
        self.bar = tqdm(
            total=max(1, round(remaining.seconds())),
            desc="benchmark",
            unit="s",
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} spent{postfix}",
        )

    def label(self, text: str) -> None:
        self.text = text
        self.refresh()

    def refresh(self) -> None:
        spent, left = time.perf_counter() - self.started, self.remaining.seconds()
        self.bar.n = round(spent)
        self.bar.total = max(1, round(spent + left))
        self.bar.set_postfix_str(f"about {self._format_interval(left)} left; {self.text}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def run_benchmark(variants: list[Variant], images: ImageSet, plan: BenchmarkPlan, mlperf_logs: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    mlperf: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    # why the harness is not measured, until it is
    harness = skipped(
        "benchmark.harness_check is false" if not plan.harness_check else f"{plan.harness_variant} is not in benchmark.variants"
    )
    cells = [cell_name(b, c) for b in plan.batch_sizes for c in plan.concurrencies]
    # known before anything runs, so the estimate never counts a variant that will not run
    unbuilt = {v.name: v.build_failure() for v in variants}
    reasons = {v.name: unbuilt[v.name] or plan.disabled.get(v.name) or v.missing_reason() or v.absent_reason() for v in variants}
    runnable = [v for v in variants if not reasons[v.name]]
    remaining = Remaining(planned_work(runnable, plan), CostModel(plan.windows, plan.mlperf, plan.harness_batch, plan.harness_rounds))
    bar = _Bar(remaining)
    try:
        for variant in variants:
            name = variant.name
            if reasons[name]:
                # a variant its converter could not build is failed, not skipped: skips are for missing runtimes
                row = {"status": "failed", "reason": f"not built: {unbuilt[name]}"} if unbuilt[name] else skipped(reasons[name])
                rows = _every_row(variant, plan, cells, row)
            else:
                rows = _measured_rows(variant, images, plan, mlperf_logs / name, cells, bar, remaining, resources)
            results[name] = {cell: rows[cell] for cell in cells}
            if "mlperf" in rows:
                mlperf[name] = rows["mlperf"]
            if "harness" in rows:
                harness = rows["harness"]
    finally:
        bar.close()
    results["mlperf"] = mlperf
    results["harness"] = harness
    results["resources"] = resources
    return results


def _measured_rows(
    variant: Variant,
    images: ImageSet,
    plan: BenchmarkPlan,
    log_dir: Path,
    cells: list[str],
    bar: _Bar,
    remaining: Remaining,
    resources: dict[str, Any],
) -> dict[str, Any]:
    """Every row of a variant measured in its own process (measure_variant), the bar and the estimate
    following its events; if the process ends early, what it did not report is failed with the reason."""
    name = variant.name
    rows: dict[str, Any] = {}  # every row the variant's process reported, kept if it dies later

    def on_event(event: Label | CellDone | ScenarioDone | MeasuringCost) -> None:
        if isinstance(event, Label):
            bar.label(event.text)
            return
        if isinstance(event, MeasuringCost):
            resources[name] = event.resources
            return
        if isinstance(event, CellDone):
            rows[cell_name(event.batch, event.concurrency)] = event.row
            work = Work(name, "cell", event.batch, event.concurrency)
            if event.row["status"] in (NOT_MEASURED, "skipped"):  # took no time: it must not teach the correction
                remaining.dropped(work, left_out=event.row["status"] == NOT_MEASURED)
            else:
                remaining.finished(work, event.row)
        else:
            rows[event.kind] = event.row
            if event.ran:
                remaining.finished(Work(name, event.kind))
            else:
                remaining.dropped(Work(name, event.kind))
        bar.refresh()

    try:
        run_isolated(measure_variant, (variant, images, plan, log_dir), on_event)
    except ProcessEnded as exc:
        log.error("measuring %s ended early: %s", name, exc)
        failed_row = {"status": "failed", "reason": f"the process measuring {name} failed: {exc}"}
        return {**_every_row(variant, plan, cells, failed_row), **rows}
    return rows


def measure_variant(variant: Variant, images: ImageSet, plan: BenchmarkPlan, log_dir: Path, report) -> None:
    """One variant's cells, then its LoadGen scenarios and the harness measurement, on the same warm runners;
    each row goes to `report` as soon as it is known (run in a process of its own: benchmark/isolation.py),
    and last what measuring it cost: wall time and peak memory, with any server its runner started."""
    started, tree = time.perf_counter(), TreePeak()
    pool = RunnerPool(variant, plan.threads)
    try:
        search = ConcurrencySearch(plan.windows.stability_pct, enabled=plan.concurrency_search)
        cells = sweep_variant(
            pool,
            images,
            plan.batch_sizes,
            plan.concurrencies,
            plan.windows,
            lambda label: report(Label(label)),
            search,
            lambda batch, concurrency, row: report(CellDone(batch, concurrency, row)),
        )
        measured = [row for row in cells.values() if row["status"] == "ok"]
        if _wants_mlperf(plan, variant):
            report(Label(f"{variant.name} MLPerf LoadGen"))
            report(ScenarioDone("mlperf", _mlperf_row(pool, images, plan, log_dir, cells, measured), bool(measured)))
        if _wants_harness(plan, variant):
            if measured:
                report(Label(f"{variant.name} harness overhead"))
                row = _harness(pool, images, plan)
            else:
                row = _unmeasured(cells, f"{variant.name} could not be measured: ")
            report(ScenarioDone("harness", row, bool(measured)))
    finally:
        pool.close()
        report(MeasuringCost(stage_resources(started, tree)))


def _every_row(variant: Variant, plan: BenchmarkPlan, cells: list[str], row: dict[str, Any]) -> dict[str, Any]:
    """`row` for every cell and for what the plan would have measured on the variant after them."""
    rows = {cell: dict(row) for cell in cells}
    if _wants_mlperf(plan, variant):
        rows["mlperf"] = dict(row)
    if _wants_harness(plan, variant):
        rows["harness"] = {**row, "reason": f"{variant.name} is not measured: {row['reason']}"}
    return rows


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
            runners,
            runners[0].inputs(images),
            plan.mlperf,
            log_dir,
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
        return {"status": "ok", **harness_overhead(runner, batch, plan.windows, plan.harness_rounds)}
    except Exception as exc:
        log.exception("the harness-overhead measurement failed on %s", pool.variant.name)
        return failed(exc)
