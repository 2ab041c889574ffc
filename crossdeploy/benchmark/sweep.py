"""The batch x concurrency sweep of one variant: open its runners once, measure every cell, and give
every cell that cannot be measured a row with the reason, so the sweep always goes on."""

from __future__ import annotations

import gc
import logging
from typing import Any, Callable

import numpy as np

from crossdeploy.benchmark.cells import cell_name, skipped
from crossdeploy.benchmark.closed_loop import WindowSettings, measure_closed_loop
from crossdeploy.datasets import ImageSet
from crossdeploy.runtimes.base import Runner, ThreadSettings, error_text, unavailable_reason
from crossdeploy.variants import Variant

log = logging.getLogger(__name__)


def failed(exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "reason": error_text(exc)}


class RunnerPool:
    """Runners of one variant: one shared by every client, or one per client where a runtime needs that."""

    def __init__(self, variant: Variant, threads: ThreadSettings):
        self.variant = variant
        self.threads = threads
        self._runners: list[Runner] = []
        self._warm: set[tuple[int, int]] = set()  # (runner index, batch size) already run

    def warm_flags(self, runners: list[Runner], batch_size: int) -> list[bool]:
        """Which of these runners have run this batch size; marks them all as having run it from now on."""
        keys = [(self._index(r), batch_size) for r in runners]
        flags = [key in self._warm for key in keys]
        self._warm.update(keys)
        return flags

    def _index(self, runner: Runner) -> int:
        return next(i for i, r in enumerate(self._runners) if r is runner)

    def open(self, count: int) -> list[Runner]:
        if not self._runners:
            self._runners.append(self._activated())
        if self._runners[0].concurrent_infer:
            return [self._runners[0]] * count
        while len(self._runners) < count:
            self._runners.append(self._activated())
        return self._runners[:count]

    def _activated(self) -> Runner:
        runner = self.variant.runner(self.threads)
        runner.activate()
        return runner

    def close(self) -> None:
        for runner in self._runners:
            runner.deactivate()
        self._runners.clear()
        self._warm.clear()
        gc.collect()


def client_batches(inputs: np.ndarray, batch_size: int, clients: int) -> list[np.ndarray]:
    """A distinct slice of real images per client (wrapping around a small set), contiguous for the runtime."""
    return [
        np.ascontiguousarray(np.take(inputs, range(c * batch_size, (c + 1) * batch_size), axis=0, mode="wrap"))
        for c in range(clients)
    ]


def sweep_variant(
    pool: RunnerPool,
    images: ImageSet,
    batch_sizes: list[int],
    concurrencies: list[int],
    settings: WindowSettings,
    on_cell: Callable[[str], None] = lambda label: None,
) -> dict[str, dict[str, Any]]:
    """Every batch x concurrency cell of the pool's variant; a runtime missing here skips the rest."""
    cells = [(b, c) for b in batch_sizes for c in concurrencies]
    results: dict[str, dict[str, Any]] = {}
    for batch_size, concurrency in cells:
        name = cell_name(batch_size, concurrency)
        on_cell(f"{pool.variant.name} {name}")
        results[name] = _measure_cell(pool, images, batch_size, concurrency, settings)
        if results[name].pop("unavailable", False):
            for b, c in cells[len(results) :]:
                on_cell(f"{pool.variant.name} {cell_name(b, c)}")
                results[cell_name(b, c)] = skipped(results[name]["reason"])
            break
    return results


def _measure_cell(
    pool: RunnerPool, images: ImageSet, batch_size: int, concurrency: int, settings: WindowSettings
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
    clients = [lambda r=r, x=x: r.infer(x) for r, x in zip(runners, batches)]
    for runner in runners:
        runner.device_ms.clear()
    try:
        row = measure_closed_loop(clients, batch_size, settings, pool.warm_flags(runners, batch_size))
    except Exception as exc:
        log.exception("%s failed at batch %d, concurrency %d", pool.variant.name, batch_size, concurrency)
        return failed(exc)
    device_ms = [ms for runner in set(runners) for ms in runner.device_ms]
    if device_ms:
        # trtexec's split: GPU compute alone, beside the end-to-end host latency above (warm-up included)
        row["gpu_compute_p50_ms"] = round(float(np.percentile(device_ms, 50)), 4)
        row["gpu_compute_p99_ms"] = round(float(np.percentile(device_ms, 99)), 4)
    return {**row, "status": "ok"}
