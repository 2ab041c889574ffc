"""What a stage cost: its wall time and peak resident memory, written to metrics/resources/<stage>.json so
that `dvc metrics diff` and `dvc exp show` show a regression (or a model's cost growth) beside the results.

The peak comes from getrusage: the stage's own process (RUSAGE_SELF) and, apart, the largest of the
processes it started and waited for (RUSAGE_CHILDREN: TF Serving, the embedded server, converters), since
those run beside it and a machine must hold both.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any


def peak_rss_mb(who: int) -> float:
    """Peak resident set size in MB of RUSAGE_SELF or RUSAGE_CHILDREN (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(who).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def stage_resources(started: float) -> dict[str, Any]:
    """The record for a stage that began at time.perf_counter() == `started` and has just finished."""
    own = peak_rss_mb(resource.RUSAGE_SELF)
    children = peak_rss_mb(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": own,
        "children_peak_rss_mb": children,
        # what the machine must hold at worst: the stage and its largest child at their peaks together
        "peak_total_rss_mb": round(own + children, 1),
    }
