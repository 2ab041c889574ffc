"""Which cells of one variant's batch x concurrency grid carry information, decided as results come in.

perf_analyzer's concurrency sweep and Model Analyzer's quick search stop adding clients once throughput
stops rising while latency only grows: past that point a closed loop measures queueing, not the runtime
(on a CPU, more clients than cores for an in-process runtime wait for the same cores). The search does
the same per batch size, and once a concurrency level has added nothing at CONFIRMATIONS batch sizes
(with no gain in between) it is not measured at the larger ones either: a larger batch already keeps the
cores busier.

Along the batch axis, with more than one client: once a larger batch adds nothing at a concurrency level
(throughput within the stability rule while p50 grows), the larger batches are not measured at that level
(Model Analyzer's quick search climbs batch sizes the same way). Each such cell is the dearest of its
variant: eight clients of the served JSON path at batch 32 took 30 s for a figure inside the noise of
batch 16's. One client is measured at every batch size: its latency-by-batch curve is what a deployment
without a queue gets, and the INT8 target reads batch 32.

Cells it leaves out keep their row (cells.not_measured: `status: "not measured"` with the evidence as the
reason), so every batch size and concurrency level of the grid is still reported and none reads as a figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Batch sizes (with no gain at this level in between) at which a concurrency level must add nothing
#: before the larger batch sizes skip it. It was two while the first round of a multi-client cell was timed:
#: that round read the SavedModel's 8 clients 23 to 46 % above 1 client at batch 8 to 32. Measured
#: without it (this project's 2-core machine), every in-process runtime and the served bytes path that
#: gained nothing at batch 1 gained nothing at batch 8 either (-15 to +5 %); the two that gain from more
#: clients (the SavedModel's inter-op threads, +21 % at batch 1; the server parsing JSON beside the model,
#: +21 % at batch 1 and +45 % at batch 8) already gain at batch 1. So one batch size is the evidence:
#: the queueing is reported once, not for every batch size.
CONFIRMATIONS = 1


def rises(before: dict[str, Any], after: dict[str, Any], stability_pct: float) -> bool:
    """`after`'s throughput is above `before`'s by more than the stability rule lets two windows of one
    measurement differ, i.e. the gain is not noise."""
    return after["throughput_ips"] > before["throughput_ips"] * (1.0 + stability_pct / 100.0)


def _clients(n: int) -> str:
    return f"{n} client" + ("" if n == 1 else "s")


def _batch_sizes(n: int) -> str:
    return "a smaller batch size" if n == 1 else f"{n} smaller batch sizes"


@dataclass
class ConcurrencySearch:
    """Feed it each measured cell (`record`) in order of batch size, then concurrency, both ascending;
    ask `skip_reason` before measuring a cell."""

    stability_pct: float
    enabled: bool = True
    _previous: tuple[int, int, dict[str, Any]] | None = None  # (batch, concurrency, row) last measured ok
    _stopped: dict[int, str] = field(default_factory=dict)  # batch -> why its larger concurrencies are left out
    _plateaus: dict[int, list[str]] = field(default_factory=dict)  # concurrency -> the batches it added nothing at since it last did
    _dropped: tuple[int, str] | None = None  # (lowest concurrency left out at larger batches, why)
    _at_level: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # concurrency > 1 -> (batch, row) last measured ok
    _batch_stopped: dict[int, str] = field(default_factory=dict)  # concurrency > 1 -> why its larger batches are left out

    def skip_reason(self, batch: int, concurrency: int) -> str | None:
        if not self.enabled:
            return None
        if batch in self._stopped:
            return self._stopped[batch]
        if self._dropped and concurrency >= self._dropped[0]:
            return self._dropped[1]
        return self._batch_stopped.get(concurrency)

    def record(self, batch: int, concurrency: int, row: dict[str, Any]) -> None:
        if row.get("status") != "ok":
            return  # no figure, no evidence either way: the next level is measured
        if concurrency > 1:
            self._record_batch(batch, concurrency, row)
        previous, self._previous = self._previous, (batch, concurrency, row)
        if previous is None or previous[0] != batch:
            return
        _, fewer, before = previous
        if rises(before, row, self.stability_pct):
            self._plateaus.pop(concurrency, None)
            return
        if row["p50_ms"] <= before["p50_ms"]:
            return  # latency did not grow either: not the queueing the search looks for
        evidence = (
            f"batch {batch}: {before['throughput_ips']:.1f} img/s at {_clients(fewer)}, {row['throughput_ips']:.1f} at "
            f"{concurrency}, no gain beyond the {self.stability_pct:g} % stability rule, while p50 grew from "
            f"{before['p50_ms']:.3g} to {row['p50_ms']:.3g} ms"
        )
        self._stopped[batch] = f"throughput had stopped rising at {_clients(fewer)} ({evidence})"
        seen = self._plateaus.setdefault(concurrency, [])
        seen.append(evidence)
        if len(seen) >= CONFIRMATIONS and (self._dropped is None or concurrency < self._dropped[0]):
            self._dropped = (
                concurrency,
                f"throughput had stopped rising at {_clients(fewer)} at {_batch_sizes(len(seen))} "
                f"({'; '.join(seen)}): more clients queue for the same cores",
            )

    def _record_batch(self, batch: int, concurrency: int, row: dict[str, Any]) -> None:
        earlier = self._at_level.get(concurrency)
        self._at_level[concurrency] = (batch, row)
        if earlier is None or rises(earlier[1], row, self.stability_pct) or row["p50_ms"] <= earlier[1]["p50_ms"]:
            return
        smaller, before = earlier
        self._batch_stopped[concurrency] = (
            f"throughput had stopped rising with the batch size at {_clients(concurrency)} (batch {smaller}: "
            f"{before['throughput_ips']:.1f} img/s, batch {batch}: {row['throughput_ips']:.1f}, no gain beyond the "
            f"{self.stability_pct:g} % stability rule, while p50 grew from {before['p50_ms']:.3g} to {row['p50_ms']:.3g} ms): "
            "a larger batch only waits longer"
        )
