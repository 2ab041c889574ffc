"""MLPerf LoadGen scenarios (SingleStream, Offline, Server) driven through the same runners as the sweep.

These are MLPerf-methodology figures, not official results: the quick and default profiles run far
shorter than the rules require, and no accuracy run or audit is made.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossdeploy.runtimes.base import Runner

SCENARIOS = ("singlestream", "offline", "server")
#: LoadGen's FindPeakPerformance refuses a starting rate that already misses the latency bound.
_LOWER_BOUND_ERROR = "Initial lower bound does not satisfy"
_START_RATE_TRIES = 4


@dataclass(frozen=True)
class MlperfSettings:
    min_duration_ms: int
    min_query_count: dict[str, int]  # per scenario
    server_latency_ms: float = 15.0  # MLPerf's ResNet50 Server bound on p99
    offline_batch: int = 32
    server_max_batch: int = 8  # the SUT coalesces queued Server queries into batches up to this size
    workers: int = 2
    # None: LoadGen's own peak search (FindPeakPerformance: many runs, the rate to 1 query/s); a number:
    # at most that many fixed-rate runs, doubling or halving then bisecting, which brackets the peak
    server_runs: int | None = None


class SystemUnderTest:
    """LoadGen's SUT: queries go into a queue; each worker drains up to `max_batch` samples per inference."""

    def __init__(self, runners: list[Runner], samples: np.ndarray, max_batch: int):
        import mlperf_loadgen as lg

        self._lg = lg
        self.samples = samples
        self.max_batch = max_batch
        self.errors: list[BaseException] = []
        self._queue: queue.Queue = queue.Queue()
        self._workers = [threading.Thread(target=self._work, args=(r,), daemon=True) for r in runners]
        for worker in self._workers:
            worker.start()
        self.handle = lg.ConstructSUT(self._issue, lambda: None)

    def _issue(self, query_samples) -> None:
        for sample in query_samples:
            self._queue.put(sample)

    def _work(self, runner: Runner) -> None:
        lg = self._lg
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                runner.infer(self.samples[[s.index for s in batch]])
            except BaseException as exc:  # LoadGen must still hear back, or it waits forever
                self.errors.append(exc)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in batch])
            if stop:
                return

    def close(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()
        self._lg.DestroySUT(self.handle)


def read_detail_log(path: Path) -> dict[str, Any]:
    """LoadGen's detail log as {key: value}; errors are collected under "errors"."""
    values: dict[str, Any] = {"errors": []}
    for line in path.read_text().splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        record = json.loads(line[len(":::MLLOG ") :])
        if record.get("metadata", {}).get("is_error"):
            values["errors"].append(str(record["value"]))
        values[record["key"]] = record["value"]
    return values


def run_scenario(
    runners: list[Runner], samples: np.ndarray, scenario: str, settings: MlperfSettings, log_dir: Path, **overrides: Any
) -> dict[str, Any]:
    """One LoadGen run; returns its detail log. `overrides` set TestSettings fields (expected rates, mode)."""
    import mlperf_loadgen as lg

    test = lg.TestSettings()
    test.scenario = {"singlestream": lg.TestScenario.SingleStream, "offline": lg.TestScenario.Offline, "server": lg.TestScenario.Server}[
        scenario
    ]
    test.mode = lg.TestMode.PerformanceOnly
    test.min_duration_ms = settings.min_duration_ms
    test.min_query_count = settings.min_query_count[scenario]
    test.server_target_latency_ns = int(settings.server_latency_ms * 1e6)
    test.server_target_latency_percentile = 0.99
    for key, value in overrides.items():
        setattr(test, key, value)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(log_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False

    max_batch = {"singlestream": 1, "offline": settings.offline_batch, "server": settings.server_max_batch}[scenario]
    workers = runners[:1] if scenario == "singlestream" else runners
    sut = SystemUnderTest(workers, samples, max_batch)
    qsl = lg.ConstructQSL(len(samples), len(samples), lambda indices: None, lambda indices: None)
    try:
        lg.StartTestWithLogSettings(sut.handle, qsl, test, log_settings)
    finally:
        sut.close()
        lg.DestroyQSL(qsl)
    if sut.errors:
        raise sut.errors[0]
    for unused in ("mlperf_log_accuracy.json", "mlperf_log_trace.json"):  # empty in performance mode, no trace
        (log_dir / unused).unlink(missing_ok=True)
    return read_detail_log(log_dir / "mlperf_log_detail.txt")


def run_mlperf(
    runners: list[Runner],
    samples: np.ndarray,
    settings: MlperfSettings,
    log_dir: Path,
    *,
    expected_latency_ms: float,
    expected_ips: float,
) -> dict[str, Any]:
    """SingleStream p90, Offline samples/s and the highest Server rate whose p99 stays within the bound
    (`server_ips` null, with `server_note` saying why, where no rate does).

    The sweep's figures seed LoadGen's expectations, so the runs are sized to the hardware.
    """
    single = run_scenario(
        runners,
        samples,
        "singlestream",
        settings,
        log_dir / "singlestream",
        single_stream_expected_latency_ns=max(1, int(expected_latency_ms * 1e6)),
    )
    p90_ms = single["result_90.00_percentile_latency_ns"] / 1e6
    offline = run_scenario(runners, samples, "offline", settings, log_dir / "offline", offline_expected_qps=max(1.0, expected_ips))
    return {
        "singlestream_p90_ms": round(p90_ms, 4),
        "offline_ips": round(float(offline["result_samples_per_second"]), 3),
        **_server(runners, samples, settings, log_dir / "server", p90_ms),
        # LoadGen's own verdict (duration, query counts, early stopping); short profiles are rarely VALID
        "singlestream_valid": single["result_validity"] == "VALID",
        "offline_valid": offline["result_validity"] == "VALID",
    }


def _server(runners, samples, settings: MlperfSettings, log_dir: Path, singlestream_p90_ms: float) -> dict[str, Any]:
    # No rate met the bound: server_ips is null with the reason, never 0.0, which would read as a
    # measured throughput of nothing (and average into comparisons as one).
    if singlestream_p90_ms > settings.server_latency_ms:
        return {
            "server_ips": None,
            "server_note": f"one query alone takes {singlestream_p90_ms:.1f} ms at p90, over the {settings.server_latency_ms:g} ms bound",
            "server_valid": False,
        }
    # Half the rate one worker sustains alone is a start whose latency fits; the search goes from there.
    rate = 0.5 * 1000.0 / singlestream_p90_ms
    if settings.server_runs is None:
        return _server_peak_search(runners, samples, settings, log_dir, rate)
    return _server_fixed_rates(runners, samples, settings, log_dir, rate)


def _server_row(detail: dict[str, Any], met: bool) -> dict[str, Any]:
    return {
        "server_ips": round(float(detail["result_scheduled_samples_per_sec"]), 3) if met else None,
        "server_p99_ms": round(detail["result_99.00_percentile_latency_ns"] / 1e6, 4),
        "server_valid": detail.get("result_validity") == "VALID",
    }


def _server_peak_search(runners, samples, settings: MlperfSettings, log_dir: Path, rate: float) -> dict[str, Any]:
    """LoadGen's FindPeakPerformance: the highest rate to 1 query/s (the full profile's; a dozen runs)."""
    import mlperf_loadgen as lg

    for _ in range(_START_RATE_TRIES):
        detail = run_scenario(
            runners,
            samples,
            "server",
            settings,
            log_dir,
            mode=lg.TestMode.FindPeakPerformance,
            server_target_qps=rate,
            server_find_peak_qps_decimals_of_precision=0,
        )
        if not any(_LOWER_BOUND_ERROR in e for e in detail["errors"]):
            break
        rate /= 2
    met = bool(detail.get("result_perf_constraints_met"))
    row = _server_row(detail, met)
    if not met:
        lowest = detail.get("effective_target_qps")
        rate_text = f"even {lowest:.1f} queries/s" if lowest is not None else "the lowest rate LoadGen tried"
        row["server_note"] = f"{rate_text} gave p99 {row['server_p99_ms']:.1f} ms, over the {settings.server_latency_ms:g} ms bound"
    return row


def _server_fixed_rates(runners, samples, settings: MlperfSettings, log_dir: Path, rate: float) -> dict[str, Any]:
    """At most `server_runs` PerformanceOnly runs: double the rate while the bound holds, halve it while it
    does not, then bisect between the highest rate that met it and the lowest that missed. LoadGen's peak
    search pins the rate to 1 query/s in a dozen runs, each at least min_query_count queries (seconds
    apiece for a variant serving a few queries/s); this brackets it, and the row says how closely."""
    met: tuple[float, dict[str, Any]] | None = None
    missed: tuple[float, dict[str, Any]] | None = None
    for run in range(1, settings.server_runs + 1):
        detail = run_scenario(runners, samples, "server", settings, log_dir / f"run{run}", server_target_qps=rate)
        if detail.get("result_perf_constraints_met"):
            met = (rate, detail)
        else:
            missed = (rate, detail)
        if met and missed:
            rate = (met[0] + missed[0]) / 2
        else:
            rate = rate * 2 if met else rate / 2
    bound = f"{settings.server_latency_ms:g} ms"
    if met is None:
        row = _server_row(missed[1], False)
        row["server_note"] = f"even {missed[0]:.1f} queries/s gave p99 {row['server_p99_ms']:.1f} ms, over the {bound} bound"
        return row
    row = _server_row(met[1], True)
    runs = f"{settings.server_runs} fixed-rate run{'s' if settings.server_runs > 1 else ''}"
    row["server_note"] = (
        f"{runs}: {met[0]:.1f} queries/s met the {bound} bound, "
        + (
            f"{missed[0]:.1f} missed it (p99 {missed[1]['result_99.00_percentile_latency_ns'] / 1e6:.1f} ms)"
            if missed
            else "no rate tried missed it"
        )
        + "; the full profile runs LoadGen's peak search"
    )
    return row
