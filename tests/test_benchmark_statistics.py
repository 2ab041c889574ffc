"""Percentiles, throughput and the stability rule, on synthetic timings."""

import numpy as np
import pytest

from crossdeploy.benchmark.statistics import (
    Window,
    closed_loop_throughput,
    is_stable,
    summarize,
)


def window(latencies_ms, batch=1, concurrency=1):
    return Window(tuple(ms / 1e3 for ms in latencies_ms), batch, concurrency)


def test_closed_loop_throughput_is_clients_over_mean_latency():
    # four clients, each request of 8 images takes 100 ms: 4 * 8 / 0.1 images per second
    assert closed_loop_throughput([0.08, 0.12], batch_size=8, concurrency=4) == pytest.approx(320.0)


def test_summary_percentiles_and_throughput_over_the_last_three_windows():
    ignored = window([500.0] * 4)  # a slow warm-up window before the three that count
    counted = [window(range(1, 101), batch=4, concurrency=2) for _ in range(3)]
    summary = summarize([ignored, *counted], stable=True)
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p90_ms"] == pytest.approx(90.1)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["mean_ms"] == pytest.approx(50.5)
    assert summary["requests"] == 300
    assert summary["throughput_ips"] == pytest.approx(2 * 4 / 0.0505)
    assert summary["windows"] == 4 and summary["spread_pct"] == 0.0 and summary["stable"] is True


def test_spread_is_the_range_of_window_throughputs_relative_to_their_mean():
    windows = [window([ms] * 10) for ms in (10.0, 12.5, 10.0)]  # 100, 80, 100 images/s
    overall = 1 / np.mean([0.01, 0.0125, 0.01])
    assert summarize(windows, stable=False)["spread_pct"] == pytest.approx((100 - 80) / overall * 100, abs=0.01)


@pytest.mark.parametrize(
    "latency_ms,expected",
    [
        ((10.0, 10.2, 9.8), True),  # within 4 %
        ((10.0, 13.0, 10.0), False),  # one window 23 % slower
        ((10.0, 10.0), False),  # fewer than three windows
    ],
)
def test_stability_needs_three_windows_that_agree(latency_ms, expected):
    windows = [window([ms] * 50) for ms in latency_ms]
    assert is_stable(windows, stability_pct=10.0) is expected


def test_a_window_in_which_nothing_completed_is_not_stable():
    assert not is_stable([window([10.0] * 5), window([]), window([10.0] * 5)], 10.0)


def test_only_the_trailing_windows_decide_stability():
    noisy_start = [window([30.0] * 10), window([5.0] * 60)]
    settled = [window([10.0] * 30) for _ in range(3)]
    assert not is_stable(noisy_start + settled[:1], 10.0)
    assert is_stable(noisy_start + settled, 10.0)


def test_a_summary_needs_a_completed_request():
    with pytest.raises(ValueError, match="no request completed"):
        summarize([window([])], stable=False)


def test_percentiles_match_numpy_on_random_latencies():
    rng = np.random.default_rng(0)
    latencies = rng.lognormal(mean=3.0, sigma=0.4, size=(3, 250))
    summary = summarize([window(row) for row in latencies], stable=True)
    assert summary["p99_ms"] == pytest.approx(np.percentile(latencies, 99), rel=1e-4)
    assert summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"]
