"""The benchmark's remaining-time estimate: cells weighted by what the closed loop spends on them, the
variant's measured speed, and the windows cells need here."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crossdeploy.benchmark.closed_loop import WindowSettings
from crossdeploy.benchmark.mlperf import MlperfSettings
from crossdeploy.benchmark.plan import BenchmarkPlan
from crossdeploy.benchmark.progress import CORRECTION_BOUNDS, PEAK_SEARCH_RUNS, PRIOR_S_PER_IMAGE, CostModel, Remaining, Work
from crossdeploy.benchmark.run import planned_work
from crossdeploy.runtimes.base import ThreadSettings
from crossdeploy.variants import Variant

DEFAULT = WindowSettings(warmup_requests=1, window_s=0.5, max_windows=10, stability_pct=10, cell_cap_s=4)


def _cells(variant: str) -> list[Work]:
    return [Work(variant, "cell", b, c) for b in (1, 8, 16, 32) for c in (1, 8)]


def simulated_s(work: Work, s_per_image: float) -> float:
    """What a cell 'really' takes in these tests: the cost model's shape, but five windows instead of three."""
    round_s = work.batch * work.concurrency * s_per_image
    return round_s + min(5 * max(DEFAULT.window_s, round_s), DEFAULT.cell_cap_s + round_s)


def test_a_cell_costs_its_rounds_and_windows_up_to_its_cap():
    model = CostModel(DEFAULT, s_per_image={"v": 0.04})
    small, large = model.cost_s(Work("v", "cell", 1, 1)), model.cost_s(Work("v", "cell", 32, 8))
    assert small == pytest.approx(0.04 + 3 * 0.5)  # warm-up round, three half-second windows
    assert large == pytest.approx(256 * 0.04 + DEFAULT.cell_cap_s + 256 * 0.04)  # capped; the round in flight ends it
    assert large > 10 * small
    # one client whose request fills a window alone: no warm-up (closed_loop.warmup_repeats_the_first_window)
    assert model.cost_s(Work("v", "cell", 16, 1)) == pytest.approx(3 * 16 * 0.04)
    # where a fourth request would start after the cap, the warm-up stays (1.6 s requests, a 4 s cap)
    slower = CostModel(DEFAULT, s_per_image={"v": 0.05})
    assert slower.cost_s(Work("v", "cell", 32, 1)) == pytest.approx(4 * 32 * 0.05)


def test_a_variant_not_yet_measured_costs_the_typical_speed():
    model = CostModel(DEFAULT)
    assert model.per_image("new") == PRIOR_S_PER_IMAGE
    model.learn("fast", {"status": "ok", "throughput_ips": 100.0})
    model.learn("slow", {"status": "ok", "throughput_ips": 10.0})
    model.learn("broken", {"status": "failed", "reason": "x"})
    assert model.per_image("slow") == pytest.approx(0.1) and "broken" not in model.s_per_image
    assert model.per_image("new") in (0.01, 0.1)


class Clock:
    """Time the test advances by hand, as the work 'takes' it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_estimate_tracks_a_run_whose_cells_differ_tenfold():
    """After the cheap half of a variant's cells, the estimate is near the truth; tqdm's per-cell
    average (the planted defect) is off by several times."""
    work = _cells("v")
    speed = 0.04
    truth = {w: simulated_s(w, speed) for w in work}
    clock = Clock()
    remaining = Remaining(work, CostModel(DEFAULT), clock)
    cheap_first = sorted(work, key=lambda w: w.batch * w.concurrency)
    done = cheap_first[:4]
    for w in done:
        clock.now += truth[w]
        remaining.finished(w, {"status": "ok", "throughput_ips": 1 / speed, "windows": 5})
    left = sum(truth[w] for w in cheap_first[4:])
    per_cell_average = sum(truth[w] for w in done) / len(done) * len(cheap_first[4:])
    assert remaining.seconds() == pytest.approx(left, rel=0.05)
    assert per_cell_average < left / 3


def test_what_the_model_leaves_out_is_learned_from_the_time_work_really_took():
    """A served variant's start-up, a slow LoadGen run: the model does not know them, so work that took
    twice its expected time doubles the rest (within bounds); without the correction the estimate is half."""
    work = [Work("v", "cell", b, 1) for b in (1, 8, 16, 32)] + [Work("w", "cell", b, 1) for b in (1, 8, 16, 32)]
    clock = Clock()
    model = CostModel(DEFAULT, s_per_image={"v": 0.05, "w": 0.05})  # v's cells: more than CORRECTION_AFTER_S expected
    remaining = Remaining(work, model, clock)
    for w in work[:4]:
        clock.now += 2 * model.cost_s(w)
        remaining.finished(w)
    assert remaining.correction() == pytest.approx(2.0)
    assert remaining.seconds() == pytest.approx(2 * sum(model.cost_s(w) for w in work[4:]))
    clock.now += 1000  # a start-up that took forever: the correction stays bounded
    remaining.finished(work[4])
    assert remaining.correction() == CORRECTION_BOUNDS[1]


def test_dropped_work_costs_nothing_and_the_run_ends_at_zero():
    work = _cells("a") + [Work("a", "mlperf")]
    model = CostModel(DEFAULT, MlperfSettings(min_duration_ms=1000, min_query_count={"singlestream": 32, "offline": 64, "server": 64}))
    clock = Clock()
    remaining = Remaining(work, model, clock)
    before = remaining.seconds()
    clock.now += 100  # dropping takes no time, and what came before it is not charged to the next work
    remaining.dropped(Work("a", "cell", 32, 8))  # the concurrency search left it out
    assert remaining.seconds() < before
    for w in [w for w in work if w != Work("a", "cell", 32, 8)]:
        clock.now += model.cost_s(w)
        remaining.finished(w)
    assert remaining.seconds() == 0 and remaining.correction() == pytest.approx(1.0)


def test_the_server_search_is_costed_by_its_runs():
    settings = MlperfSettings(min_duration_ms=1000, min_query_count={"singlestream": 32, "offline": 64, "server": 32})
    fixed, peak = CostModel(DEFAULT, replace(settings, server_runs=2)), CostModel(DEFAULT, settings)
    assert peak.cost_s(Work("v", "mlperf")) - fixed.cost_s(Work("v", "mlperf")) == pytest.approx(
        (PEAK_SEARCH_RUNS - 2) * max(1.0, 32 * PRIOR_S_PER_IMAGE)
    )


def test_the_plan_lists_each_variants_cells_loadgen_and_harness(tmp_path):
    plan = BenchmarkPlan(
        batch_sizes=[8, 1],
        concurrencies=[1],
        threads=ThreadSettings(),
        windows=DEFAULT,
        mlperf=None,
        mlperf_variants=None,
        harness_check=True,
        harness_variant="onnxruntime-fp32",
    )
    variants = [Variant("onnxruntime-fp32", "fp32", "fp32", "onnxruntime", tmp_path / "m.onnx")]
    assert planned_work(variants, plan) == [
        Work("onnxruntime-fp32", "cell", 1, 1),
        Work("onnxruntime-fp32", "cell", 8, 1),
        Work("onnxruntime-fp32", "harness"),
    ]


def test_cells_the_search_left_out_before_count_at_the_share_measured():
    """Two variants in: the first measured its 8-client batch-32 cell, the second's search left it out, so
    the third's counts half; cells every variant measured count whole."""
    model = CostModel(DEFAULT, s_per_image={"a": 0.04, "b": 0.04, "c": 0.04})
    clock = Clock()
    remaining = Remaining([Work("c", "cell", 32, 8), Work("c", "cell", 32, 1)], model, clock)
    for work in (Work("a", "cell", 32, 8), Work("a", "cell", 32, 1)):
        clock.now += model.cost_s(work)  # as expected: no correction
        remaining.finished(work)
    remaining.dropped(Work("b", "cell", 32, 8), left_out=True)
    clock.now += model.cost_s(Work("b", "cell", 32, 1))
    remaining.finished(Work("b", "cell", 32, 1))
    remaining.dropped(Work("x", "cell", 32, 1))  # a missing runtime says nothing about the search
    assert remaining.measured_share(Work("c", "cell", 32, 8)) == 0.5 and remaining.measured_share(Work("c", "cell", 32, 1)) == 1.0
    assert remaining.seconds() == pytest.approx(0.5 * model.cost_s(Work("c", "cell", 32, 8)) + model.cost_s(Work("c", "cell", 32, 1)))


def test_a_server_run_lasts_its_queries_at_half_the_rate_one_query_alone_allows():
    settings = MlperfSettings(min_duration_ms=1000, min_query_count={"singlestream": 32, "offline": 64, "server": 32}, server_runs=2)
    model = CostModel(DEFAULT, settings, s_per_image={"fp32": 0.04})
    remaining = Remaining([Work("fp32", "mlperf")], model, Clock())
    remaining.finished(Work("fp32", "cell", 1, 1), {"status": "ok", "p50_ms": 50.0, "throughput_ips": 20.0, "windows": 3})
    remaining.finished(Work("fp32", "cell", 8, 1), {"status": "ok", "p50_ms": 400.0, "throughput_ips": 25.0, "windows": 3})
    assert model.single_s == {"fp32": 0.05}  # the batch-8 cell is not one query alone
    # SingleStream and Offline at the saturated speed, two Server runs of 32 queries 0.1 s apart
    assert model.cost_s(Work("fp32", "mlperf")) == pytest.approx(max(1, 32 * 0.04) + max(1, 64 * 0.04) + 2 * 32 * 0.1)
