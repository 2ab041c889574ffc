"""Pure arithmetic on request timings: windows, percentiles, and when a measurement counts as stable.

Kept free of any runtime so it can be tested on synthetic timings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: How many trailing windows must agree before a measurement is called stable (perf_analyzer uses 3).
STABLE_WINDOWS = 3


def closed_loop_throughput(latencies_s, batch_size: int, concurrency: int) -> float:
    """Images/s of `concurrency` clients that each send their next request as soon as one returns.

    Little's law for a closed loop: throughput = clients / mean latency. Unlike counting completions
    per window it has no boundary error, which matters when one request (a big batch on a CPU) takes
    about as long as a window.
    """
    return concurrency * batch_size / float(np.mean(latencies_s))


@dataclass(frozen=True)
class Window:
    """Requests that completed inside one measurement window."""

    latencies_s: tuple[float, ...]
    batch_size: int
    concurrency: int

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput_ips(self) -> float:
        return closed_loop_throughput(self.latencies_s, self.batch_size, self.concurrency)

    @property
    def p50_s(self) -> float:
        return float(np.percentile(self.latencies_s, 50))


def _within(values: list[float], stability_pct: float) -> bool:
    low, high = min(values), max(values)
    return high > 0 and (high - low) / high * 100.0 <= stability_pct


def is_stable(windows: list[Window], stability_pct: float) -> bool:
    """The last STABLE_WINDOWS windows agree on throughput and median latency within stability_pct."""
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    if any(w.requests == 0 for w in last):
        return False
    return _within([w.throughput_ips for w in last], stability_pct) and _within([w.p50_s for w in last], stability_pct)


def summarize(windows: list[Window], *, stable: bool) -> dict[str, float | int | bool]:
    """Figures over the trailing windows (the stable ones, or as many as were measured)."""
    last = [w for w in windows[-STABLE_WINDOWS:] if w.requests]
    if not last:
        raise ValueError("no request completed in any measurement window")
    latencies_s = np.concatenate([np.asarray(w.latencies_s) for w in last])
    latencies_ms = latencies_s * 1e3
    throughputs = [w.throughput_ips for w in last]
    mean_throughput = closed_loop_throughput(latencies_s, last[0].batch_size, last[0].concurrency)
    return {
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 4),
        "p90_ms": round(float(np.percentile(latencies_ms, 90)), 4),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 4),
        "mean_ms": round(float(latencies_ms.mean()), 4),
        "throughput_ips": round(mean_throughput, 3),
        "requests": int(latencies_ms.size),
        "windows": len(windows),
        "spread_pct": round((max(throughputs) - min(throughputs)) / mean_throughput * 100.0, 2),
        "stable": stable,
    }
