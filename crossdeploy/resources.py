"""What a stage cost: its wall time and peak resident memory, written to metrics/resources/<stage>.json so
that `dvc metrics diff` and `dvc exp show` show a regression (or a model's cost growth) beside the results.

The peak is what the stage held: its process and every process it started (the embedded server, a local
TF Serving binary, the converters' child process; not a container, which Docker's daemon starts) together,
sampled every SAMPLE_S, shared library pages counted once per process (an upper bound); the
stage's own peak is the kernel's exact figure (VmHWM). getrusage is no substitute on Linux: it counts in a
process's peak, and in its children's, the pages of the process it was forked from, so a small helper
started by a 6 GB process reads as 6 GB.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: often enough for the long-lived peaks (a converter child, a server, a benchmark cell), rarely enough that
#: the sampler's /proc scan never competes with the closed-loop clients it shares the GIL with
SAMPLE_S = 0.5


def own_peak_rss_mb() -> float:
    """This process's peak resident set size in MB. On Linux VmHWM, the peak of this process's own memory:
    getrusage's ru_maxrss also keeps the peak of the process it was forked from (carried across fork and
    exec), so a stage started by a 9 GB test runner reads 9 GB. Elsewhere getrusage (macOS reports bytes)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


class TreePeak:
    """The largest resident memory of this process and its descendants together, sampled in a thread."""

    def __init__(self, interval_s: float = SAMPLE_S):
        import psutil

        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree_mb(self) -> float:
        import psutil

        total = 0
        for process in [self._process, *self._process.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:  # it ended between the listing and the reading
                pass
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_mb = max(self.peak_mb, self._tree_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak_mb, self._tree_mb())


def stage_resources(started: float, tree: TreePeak) -> dict[str, Any]:
    """The record for a stage that began at time.perf_counter() == `started`, `tree` sampling since."""
    own = own_peak_rss_mb()
    return {
        "wall_s": round(time.perf_counter() - started, 2),
        # the sampler can miss a peak shorter than SAMPLE_S; the stage's own exact peak bounds it from below
        "peak_rss_mb": round(max(tree.stop(), own), 1),
        "own_peak_rss_mb": round(own, 1),
    }
