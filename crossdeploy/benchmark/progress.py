"""How long the benchmark has left, from what each piece of work is expected to cost.

Cells differ tenfold in cost (a batch-32 cell at 8 clients waits for 256 images per round, a batch-1 cell
at one client for one), so a per-cell average (tqdm's) is off by minutes. Each cell is weighted instead by
what the closed loop will spend on it: warm-up requests, then at least STABLE_WINDOWS windows, each at
least `window_s` long and holding a request per client, cut short at the cell's cap, where the requests
in flight still finish. A request round of `batch x clients` images takes that many times the variant's
time per image on saturated cores, measured from its cells so far. What the estimates got wrong on the
work already done scales the rest: the time each piece really took against what the model, as it stands
now, says it should have (a server's start-up, a slow LoadGen Server run), so the estimate corrects itself
as the run goes. Variants that will not run (a missing runtime or device) are never counted, and a cell
the concurrency search may leave out counts at the share of earlier variants that measured it (the cells
it leaves out are the dearest: eight clients at the largest batches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from crossdeploy.benchmark.closed_loop import WindowSettings, warmup_repeats_the_first_window
from crossdeploy.benchmark.mlperf import MlperfSettings
from crossdeploy.benchmark.statistics import STABLE_WINDOWS

#: Time per image before a run has measured any (ResNet50 FP32 takes about 40 ms on 2 cores, INT8 about 12)
PRIOR_S_PER_IMAGE = 0.03
#: LoadGen's Server peak search runs the scenario about this many times (doubling, then bisecting to 1 query/s)
PEAK_SEARCH_RUNS = 10
#: the correction learned from work done is trusted once this much expected work is behind it, and kept
#: within these bounds (a single slow start-up must not multiply the rest of the run tenfold)
CORRECTION_AFTER_S = 10.0
CORRECTION_BOUNDS = (0.25, 4.0)


@dataclass(frozen=True)
class Work:
    variant: str
    kind: str  # "cell" | "mlperf" | "harness"
    batch: int = 1
    concurrency: int = 1


@dataclass
class CostModel:
    windows: WindowSettings
    mlperf: MlperfSettings | None = None
    harness_batch: int = 32
    harness_rounds: int = 3  # the profile's: each a closed-loop measurement and a bare loop (benchmark/overhead.py)
    s_per_image: dict[str, float] = field(default_factory=dict)  # measured, per variant
    windows_seen: list[int] = field(default_factory=list)  # windows each measured cell needed
    single_s: dict[str, float] = field(default_factory=dict)  # per variant: one image alone (its b1_c1 p50)

    def expected_windows(self) -> float:
        return sum(self.windows_seen) / len(self.windows_seen) if self.windows_seen else STABLE_WINDOWS

    def per_image(self, variant: str) -> float:
        if variant in self.s_per_image:
            return self.s_per_image[variant]
        # a variant not yet measured: the typical one so far
        known = sorted(self.s_per_image.values())
        return known[len(known) // 2] if known else PRIOR_S_PER_IMAGE

    def cost_s(self, work: Work) -> float:
        t = self.per_image(work.variant)
        w = self.windows
        if work.kind == "cell":
            round_s = work.batch * work.concurrency * t  # every client's request, on shared cores
            warmup = 0.0 if warmup_repeats_the_first_window(round_s, work.concurrency, w) else w.warmup_requests * round_s
            measuring = min(self.expected_windows() * max(w.window_s, round_s), w.cell_cap_s + round_s)
            return warmup + measuring
        if work.kind == "harness":
            closed_loop = min(self.expected_windows() * max(w.window_s, self.harness_batch * t), w.cell_cap_s)
            return self.harness_rounds * 2 * closed_loop
        if self.mlperf is None:
            return 0.0
        m = self.mlperf
        minimum_s = m.min_duration_ms / 1000.0

        def scenario(name: str) -> float:
            return max(minimum_s, m.min_query_count[name] * t)

        # a Server run's queries arrive at about half the rate one query alone allows (mlperf.py's start)
        single = self.single_s.get(work.variant)
        server = max(minimum_s, m.min_query_count["server"] * 2 * single) if single else scenario("server")
        server_runs = PEAK_SEARCH_RUNS if m.server_runs is None else m.server_runs
        return scenario("singlestream") + scenario("offline") + server_runs * server

    def learn(self, variant: str, row: dict, single: bool = False) -> None:
        """A measured cell's throughput gives the variant's time per image on saturated cores, and its
        windows how many a cell needs here; `single` (batch 1, one client) its latency alone."""
        if single and row.get("status") == "ok" and row.get("p50_ms"):
            self.single_s[variant] = row["p50_ms"] / 1000.0
        if row.get("status") == "ok" and row.get("throughput_ips"):
            self.s_per_image[variant] = 1.0 / row["throughput_ips"]
            if row.get("windows"):
                self.windows_seen.append(int(row["windows"]))


class Remaining:
    """The work still to do and its expected cost under what the model has learned so far, scaled by how
    far the model was off on the work already done. `clock` is time.perf_counter, or a test's own."""

    def __init__(self, work: list[Work], model: CostModel, clock: Callable[[], float] = time.perf_counter):
        self.model = model
        self._todo = list(work)
        self._clock = clock
        self._since = clock()
        self._done: list[tuple[Work, float]] = []  # (work, seconds it really took)
        self._cells: dict[tuple[int, int], list[bool]] = {}  # (batch, clients) -> measured or left out, per variant so far

    def finished(self, work: Work, row: dict | None = None) -> None:
        """`work` is done; its row (a cell's) teaches the model the variant's speed and the windows a cell needs."""
        now = self._clock()
        self._done.append((work, now - self._since))
        self._since = now
        if row is not None:
            self.model.learn(work.variant, row, single=work.kind == "cell" and work.batch == work.concurrency == 1)
        if work.kind == "cell":
            self._cells.setdefault((work.batch, work.concurrency), []).append(True)
        if work in self._todo:
            self._todo.remove(work)

    def dropped(self, work: Work, left_out: bool = False) -> None:
        """`work` will not run: no cost. `left_out`: the concurrency search decided so (not a missing runtime)."""
        self._since = self._clock()
        if left_out:
            self._cells.setdefault((work.batch, work.concurrency), []).append(False)
        if work in self._todo:
            self._todo.remove(work)

    def measured_share(self, work: Work) -> float:
        """How likely a cell is to be measured at all: the share of earlier variants that measured it."""
        seen = self._cells.get((work.batch, work.concurrency)) if work.kind == "cell" else None
        return sum(seen) / len(seen) if seen else 1.0

    def correction(self) -> float:
        """Real seconds per expected second on the work done so far (1 until enough is behind it)."""
        expected = sum(self.model.cost_s(work) for work, _ in self._done)  # only work that ran: share 1
        if expected < CORRECTION_AFTER_S:
            return 1.0
        low, high = CORRECTION_BOUNDS
        return min(high, max(low, sum(took for _, took in self._done) / expected))

    def seconds(self) -> float:
        return self.correction() * sum(self.model.cost_s(w) * self.measured_share(w) for w in self._todo)
