"""The batch x concurrency sweep of one variant on its warm runners: every cell the concurrency search
(benchmark/search.py) finds informative is measured, and every other cell gets a row with the reason
(not measured, skipped, failed), so the sweep always goes on and the grid is always whole."""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from crossdeploy.benchmark.cells import cell_name, not_measured, skipped
from crossdeploy.benchmark.closed_loop import WindowSettings, measure_closed_loop, warmup_repeats_the_first_window
from crossdeploy.benchmark.runner_pool import RunnerPool
from crossdeploy.benchmark.search import ConcurrencySearch
from crossdeploy.data.datasets import ImageSet
from crossdeploy.runtimes.base import error_text, unavailable_reason

log = logging.getLogger(__name__)


def failed(exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "reason": error_text(exc)}


def client_batches(inputs: np.ndarray, batch_size: int, clients: int) -> list[np.ndarray]:
    """A distinct slice of real images per client (wrapping around a small set), contiguous for the runtime."""
    return [np.ascontiguousarray(np.take(inputs, range(c * batch_size, (c + 1) * batch_size), axis=0, mode="wrap")) for c in range(clients)]


def sweep_variant(
    pool: RunnerPool,
    images: ImageSet,
    batch_sizes: list[int],
    concurrencies: list[int],
    settings: WindowSettings,
    on_cell: Callable[[str], None] = lambda label: None,
    search: ConcurrencySearch | None = None,
    on_done: Callable[[int, int, dict[str, Any]], None] = lambda batch, concurrency, row: None,
) -> dict[str, dict[str, Any]]:
    """Every batch x concurrency cell of the pool's variant, in the grid's order; a runtime missing here
    skips the rest. Measured by ascending batch size, then concurrency, as the search needs; `on_cell`
    hears each cell before it is measured, `on_done` every cell, with its row, once it has one."""
    search = search or ConcurrencySearch(settings.stability_pct, enabled=False)
    rows: dict[str, dict[str, Any]] = {}
    unavailable: str | None = None
    for batch_size in sorted(set(batch_sizes)):
        for concurrency in sorted(set(concurrencies)):
            name = cell_name(batch_size, concurrency)
            if unavailable:
                rows[name] = skipped(unavailable)
            elif reason := search.skip_reason(batch_size, concurrency):
                rows[name] = not_measured(reason)
            else:
                on_cell(f"{pool.variant.name} {name}")
                rows[name] = _measure_cell(pool, images, batch_size, concurrency, settings, _request_s(rows, batch_size))
                if rows[name].pop("unavailable", False):
                    unavailable = rows[name]["reason"]
                search.record(batch_size, concurrency, rows[name])
            on_done(batch_size, concurrency, rows[name])
    return {cell_name(b, c): rows[cell_name(b, c)] for b in batch_sizes for c in concurrencies}


def _request_s(rows: dict[str, dict[str, Any]], batch_size: int) -> float:
    """What one request of `batch_size` should take alone, from the fastest images/s measured so far (0 before any)."""
    measured = [row["throughput_ips"] for row in rows.values() if row["status"] == "ok"]
    return batch_size / max(measured) if measured else 0.0


def _measure_cell(
    pool: RunnerPool, images: ImageSet, batch_size: int, concurrency: int, settings: WindowSettings, request_s: float = 0.0
) -> dict[str, Any]:
    try:
        runners = pool.open(concurrency)
        inputs = runners[0].inputs(images)
    except Exception as exc:
        reason = unavailable_reason(pool.variant.name, exc)
        if reason is None:
            # a broken install or a bug, never a skip: the row says what was raised
            log.exception("%s could not be opened", pool.variant.name)
            return {"status": "failed", "reason": f"could not open the runtime: {error_text(exc)}"}
        return {**skipped(reason), "unavailable": True}
    fixed = runners[0].fixed_batch
    if fixed is not None and fixed != batch_size:
        return skipped(f"the artifact takes a fixed batch of {fixed}")
    batches = client_batches(inputs, batch_size, concurrency)
    try:
        # each client's request made once and sent again and again, as perf_analyzer does: a served row's
        # JSON encoding is the client's work, not the server's, whose cores it would share here
        requests = [r.prepare(x) for r, x in zip(runners, batches)]
    except Exception as exc:
        log.exception("%s could not prepare a batch of %d", pool.variant.name, batch_size)
        return failed(exc)
    del batches  # a served row's requests are its encoded bodies: the float batches need not stay
    clients = [lambda r=r, p=p: r.infer_prepared(p) for r, p in zip(runners, requests)]
    for runner in runners:
        runner.device_ms.clear()
    warm = pool.warm_flags(runners, batch_size)
    if warmup_repeats_the_first_window(request_s, concurrency, settings):
        warm = [True] * len(warm)
    try:
        row = measure_closed_loop(clients, batch_size, settings, warm, pool.withdraw_waiting, pool.in_parallel(runners))
    except Exception as exc:
        log.exception("%s failed at batch %d, concurrency %d", pool.variant.name, batch_size, concurrency)
        return failed(exc)
    device_ms = [ms for runner in set(runners) for ms in runner.device_ms]
    if device_ms:
        # trtexec's split: GPU compute alone, beside the end-to-end host latency above (warm-up included)
        row["gpu_compute_p50_ms"] = round(float(np.percentile(device_ms, 50)), 4)
        row["gpu_compute_p99_ms"] = round(float(np.percentile(device_ms, 99)), 4)
    return {**row, "status": "ok"}
