"""The benchmark on the tiny model with real runtimes: the closed loop, MLPerf LoadGen, skipped rows."""

import contextlib
import json
import time
from dataclasses import replace

import numpy as np
import pytest

from crossdeploy.benchmark.charts import plot_data, write_chart
from crossdeploy.benchmark.checks import Targets, check_targets, gpu_checks
from crossdeploy.benchmark.closed_loop import WindowSettings, measure_closed_loop
from crossdeploy.benchmark.mlperf import MlperfSettings, _server, run_mlperf
from crossdeploy.benchmark.plan import BenchmarkPlan, select_variants
from crossdeploy.benchmark.report import benchmark_markdown, key_figures, summary_rows
from crossdeploy.benchmark.run import run_benchmark
from crossdeploy.device_info import no_gpu_reason
from crossdeploy.errors import CrossdeployError
from crossdeploy.runtimes.base import Runner, ThreadSettings
from crossdeploy.variants import Variant, benchmark_variants
from tests.conftest import A100, ROOT

QUICK = WindowSettings(warmup_requests=1, window_s=0.05, max_windows=4, stability_pct=50, cell_cap_s=0.5)
CELL_KEYS = {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips", "requests", "status"}


def test_closed_loop_counts_every_client_and_times_each_request():
    calls = []

    def request():
        calls.append(1)
        time.sleep(0.01)

    row = measure_closed_loop([request] * 3, batch_size=2, settings=QUICK)
    assert row["requests"] >= 3 and len(calls) >= row["requests"] + 3  # three warm-up calls are not counted
    assert row["p50_ms"] >= 10.0  # each request sleeps 10 ms: the harness never under-reports
    assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]


def test_closed_loop_reports_a_client_error():
    def broken():
        raise RuntimeError("runtime exploded")

    with pytest.raises(RuntimeError, match="runtime exploded"):
        measure_closed_loop([broken, broken], batch_size=1, settings=QUICK)


@pytest.fixture(scope="module")
def tiny_tflite(tiny_saved_model, tiny_images, tmp_path_factory):
    from crossdeploy.tensorflow.convert import convert_tflite

    path = tmp_path_factory.mktemp("tflite") / "model.fp32.tflite"
    convert_tflite(tiny_saved_model, path, "fp32", tiny_images[0].tensors("NHWC"))
    return path


@pytest.fixture(scope="module")
def benchmark_run(tiny_source, tiny_optimized, tiny_tflite, tiny_saved_model, served_repo, tiny_images, tmp_path_factory):
    missing = tmp_path_factory.mktemp("none") / "absent.onnx"
    variants = [
        Variant("torch-fp32", "fp32", "fp32", "torch", tiny_source[0]),
        Variant("onnxruntime-fp32", "fp32", "fp32", "onnxruntime", tiny_optimized[0]),
        Variant("tflite-fp32", "fp32", "fp32", "tflite", tiny_tflite),
        Variant("tf-savedmodel-fp32", "fp32", "fp32", "tensorflow", tiny_saved_model),
        Variant(
            "kserve-rest-bytes",
            "fp32",
            "encoded",
            "served",
            served_repo / "models" / "serving" / "tiny" / "1",
            {"engine": "kserve", "protocol": "rest", "encoded": True, "repository": served_repo / "models" / "serving", "model": "tiny"},
        ),
        Variant("onnxruntime-cuda-fp32", "fp32", "fp32", "onnxruntime", tiny_optimized[0], {"provider": "CUDAExecutionProvider"}),
        Variant("never-built", "int8", "int8", "onnxruntime", missing),
        Variant("torch-compile-fp32", "fp32", "fp32", "torch", tiny_source[0], {"compile": True}),
    ]
    plan = BenchmarkPlan(
        batch_sizes=[1, 4],
        concurrencies=[1, 2],
        threads=ThreadSettings(),
        windows=QUICK,
        mlperf=MlperfSettings(min_duration_ms=200, min_query_count={"singlestream": 8, "offline": 16, "server": 8}),
        mlperf_variants=["onnxruntime-fp32", "never-built"],
        harness_check=True,
        harness_variant="onnxruntime-fp32",
        harness_batch=4,
        harness_rounds=2,
        disabled={"torch-compile-fp32": "benchmark.torch_compile is false"},
        concurrency_search=False,  # every cell measured: the search has its own tests (test_benchmark_search.py)
    )
    logs = tmp_path_factory.mktemp("mlperf")
    with contextlib.chdir(served_repo):  # served variants start `crossdeploy serve` on the params.yaml where the stage runs
        return run_benchmark(variants, tiny_images[1], plan, logs), logs


def test_tflite_clients_queue_on_one_interpreter_per_core(tiny_tflite, tiny_images):
    """Eight clients, as the 8-client cells have, hold one interpreter per core (not eight: half of the
    benchmark's 7 GB peak was eight ResNet50 interpreters at batch 32) and all get the same logits."""
    import os

    from crossdeploy.benchmark.runner_pool import RunnerPool
    from crossdeploy.benchmark.sweep import client_batches

    pool = RunnerPool(Variant("tflite-fp32", "fp32", "fp32", "tflite", tiny_tflite), ThreadSettings())
    try:
        runners = pool.open(8)
        cores = len(os.sched_getaffinity(0))
        assert len(runners) == 8 and len({id(r) for r in runners}) == pool.opened == min(8, cores)
        inputs = runners[0].inputs(tiny_images[1])
        batches = client_batches(inputs, 4, 8)
        row = measure_closed_loop([lambda r=r, x=x: r.infer(x) for r, x in zip(runners, batches)], 4, QUICK)
        assert row["requests"] >= 8
        expected = runners[0].infer(batches[1])
        np.testing.assert_array_equal(runners[1].infer(batches[1]), expected)
        assert pool.open(2)[0] is runners[0]  # LoadGen's workers get the same warm interpreters
    finally:
        pool.close()


#: the tiny run's cells: a variant against itself for INT8 over FP32, the served cell at 4 x 2
TINY_TARGETS = Targets(int8_variant="onnxruntime-fp32", int8_speedup_batch=4, served_batch=4, served_concurrency=2)


def test_every_cell_of_a_runnable_variant_is_measured(benchmark_run):
    results, _ = benchmark_run
    for variant in ("torch-fp32", "onnxruntime-fp32", "tflite-fp32", "tf-savedmodel-fp32", "kserve-rest-bytes"):
        assert set(results[variant]) == {"b1_c1", "b1_c2", "b4_c1", "b4_c2"}
        for cell in results[variant].values():
            assert cell["status"] == "ok" and CELL_KEYS <= set(cell)
            assert 0 < cell["p50_ms"] <= cell["p90_ms"] <= cell["p99_ms"] and cell["throughput_ips"] > 0
    json.dumps(results)  # the metrics file DVC reads must be plain JSON


def test_rows_that_cannot_be_measured_say_why(benchmark_run):
    results, _ = benchmark_run
    reasons = {
        # without a GPU, said before a process starts; with one, ONNX Runtime's own reason names the provider
        "onnxruntime-cuda-fp32": "no NVIDIA GPU here" if no_gpu_reason() else "CUDAExecutionProvider",
        "never-built": "was not built",
        "torch-compile-fp32": "benchmark.torch_compile is false",
    }
    for variant, reason in reasons.items():
        assert {row["status"] for row in results[variant].values()} == {"skipped"}
        assert all(reason in row["reason"] for row in results[variant].values())
    assert results["mlperf"]["never-built"]["status"] == "skipped"


def test_mlperf_scenarios_run_through_loadgen(benchmark_run):
    results, logs = benchmark_run
    row = results["mlperf"]["onnxruntime-fp32"]
    assert row["status"] == "ok" and row["singlestream_p90_ms"] > 0 and row["offline_ips"] > 0
    assert (row["server_ips"] > 0) if row["server_ips"] is not None else "over the 15 ms bound" in row["server_note"]
    assert isinstance(row["server_valid"], bool)
    summary = (logs / "onnxruntime-fp32" / "offline" / "mlperf_log_summary.txt").read_text()
    assert "Scenario : Offline" in summary
    assert set(results["mlperf"]) == {"onnxruntime-fp32", "never-built"}


def test_harness_overhead_and_checks_are_recorded(benchmark_run):
    results, _ = benchmark_run
    harness = results["harness"]
    assert harness["status"] == "ok" and harness["variant"] == "onnxruntime-fp32" and harness["batch"] == 4
    assert harness["bare_ips"] > 0 and harness["harness_ips"] > 0
    assert harness["rounds"] == 2  # the plan's harness_rounds
    assert "checks" not in results  # judged by the report stage, never inside the measurement
    checks = check_targets(results, {}, TINY_TARGETS)
    assert set(checks) == {
        "int8_over_fp32",
        "harness_overhead",
        "kserve_bytes_over_in_process",
        "tfserving_bytes_over_in_process",
        "peaks_plausible",
    }
    assert checks["peaks_plausible"]["met"] is None  # run_benchmark alone measures no peaks: the check says so, not "met"
    assert checks["harness_overhead"]["overhead_pct"] == harness["overhead_pct"]
    served = checks["kserve_bytes_over_in_process"]
    assert served["served_ips"] == results["kserve-rest-bytes"]["b4_c2"]["throughput_ips"]
    assert served["fraction"] == pytest.approx(served["served_ips"] / results["tf-savedmodel-fp32"]["b4_c2"]["throughput_ips"], abs=1e-3)
    assert served["rest_float_fraction"] is None  # kserve-rest-fp32 was not measured
    assert checks["tfserving_bytes_over_in_process"]["met"] is None  # not benchmarked here: said, not dropped
    # a target whose variant was skipped reads "not measured" with the skip's reason
    cuda = check_targets(results, {}, Targets(int8_variant="onnxruntime-cuda-fp32", int8_speedup_batch=4))["int8_over_fp32"]
    # without a GPU the row is skipped before a process starts; with one, ONNX Runtime says why it cannot use it
    why = "no NVIDIA GPU here" if no_gpu_reason() else "ONNX Runtime could not start CUDAExecutionProvider"
    assert cuda["met"] is None and cuda["note"].startswith(f"not measured: onnxruntime-cuda-fp32 skipped: {why}")


def _cells(**ips: float) -> dict[str, dict]:
    """Measured cells from their throughputs, as benchmark.json holds them."""
    return {cell: {"status": "ok", "throughput_ips": value, "p50_ms": 1.0, "p99_ms": 2.0} for cell, value in ips.items()}


def test_int8_target_compares_the_best_cells_at_its_own_batch():
    # INT8 is far ahead at batch 1 and only 3x ahead at batch 32: the target judges batch 32 alone
    results = {
        "onnxruntime-int8": _cells(b1_c1=1000.0, b32_c1=270.0, b32_c8=300.0),
        "onnxruntime-fp32": _cells(b1_c1=10.0, b32_c1=100.0, b32_c8=90.0),
        "harness": {"status": "ok", "variant": "onnxruntime-int8", "batch": 16, "overhead_pct": 1.5},
    }
    checks = check_targets(results, {}, Targets(int8_speedup_batch=32, int8_speedup_min=3.0))
    assert checks["int8_over_fp32"] == {"batch": 32, "target": 3.0, "ratio": 3.0, "met": True}
    # the harness figure says which batch it ran at: its own param, not the INT8 target's batch
    assert checks["harness_overhead"]["batch"] == 16 and checks["harness_overhead"]["variant"] == "onnxruntime-int8"
    missed = check_targets(results, {}, Targets(int8_speedup_batch=8))["int8_over_fp32"]
    assert missed["met"] is None and "has no cell at batch 8" in missed["note"]


def test_summary_rows_compare_with_the_reference_and_the_baseline():
    results = {"torch-fp32": _cells(b1_c1=20.0, b8_c8=40.0), "onnxruntime-fp32": _cells(b1_c1=30.0, b8_c1=100.0)}
    baseline = {"onnxruntime-fp32": _cells(b1_c1=50.0)}
    rows = {row["variant"]: row for row in summary_rows(results, {}, baseline)}
    assert rows["onnxruntime-fp32"]["speedup"] == pytest.approx(2.5) and rows["onnxruntime-fp32"]["vs_baseline"] == pytest.approx(2.0)
    assert rows["onnxruntime-fp32"]["best_at"] == "batch 8, concurrency 1" and rows["torch-fp32"]["vs_baseline"] is None


class SleepingRunner(Runner):
    """A runtime that takes a fixed time per call, so a latency bound is missed on purpose."""

    def __init__(self, seconds: float):
        super().__init__("sleeping")
        self.seconds = seconds

    def _activate_impl(self) -> None:
        pass

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return np.zeros((len(batch), 10), np.float32)


def test_mlperf_server_without_a_rate_within_the_bound_is_null_with_the_reason(tmp_path):
    samples = np.zeros((8, 3, 4, 4), np.float32)
    settings = MlperfSettings(
        min_duration_ms=100, min_query_count={"singlestream": 4, "offline": 8, "server": 8}, server_latency_ms=1.0, offline_batch=4
    )
    with SleepingRunner(0.003) as runner:
        # one query alone is over the bound: no Server run can meet it
        row = run_mlperf([runner], samples, settings, tmp_path / "alone", expected_latency_ms=3, expected_ips=300)
        assert row["server_ips"] is None and "over the 1 ms bound" in row["server_note"] and row["singlestream_p90_ms"] >= 3
        # LoadGen's peak search from a start rate the runner cannot hold within the bound (a 3 ms call, a 1 ms
        # bound, a SingleStream figure that claimed 0.5 ms): the bound is never met at any rate it tries
        searched = _server([runner], samples, settings, tmp_path / "search", singlestream_p90_ms=0.5)
    assert searched["server_ips"] is None and "over the 1 ms bound" in searched["server_note"]
    assert searched["server_p99_ms"] >= 3  # what was measured stays: the latency at the lowest rate tried


def test_mlperf_server_fixed_rates_bracket_the_peak(tmp_path):
    """One worker, one sample per call, 10 ms a call: it serves at most 100 queries/s. From 50 queries/s
    (half of one query alone) the search doubles to 100, which queues without end and misses the 40 ms
    bound, then bisects: the figure is a rate that met the bound, and the note says which missed."""
    samples = np.zeros((8, 3, 4, 4), np.float32)
    settings = MlperfSettings(
        min_duration_ms=300,
        min_query_count={"singlestream": 4, "offline": 8, "server": 32},
        server_latency_ms=40.0,
        offline_batch=4,
        server_max_batch=1,
        server_runs=3,
    )
    with SleepingRunner(0.01) as runner:
        row = _server([runner], samples, settings, tmp_path, singlestream_p90_ms=10.0)
        # a planted start the runner cannot hold: every run misses, the figure stays null with the reason
        missed = _server(
            [runner], samples, replace(settings, server_latency_ms=1.0, server_runs=2), tmp_path / "missed", singlestream_p90_ms=0.5
        )
    assert 40 <= row["server_ips"] <= 80 and row["server_p99_ms"] <= 40
    assert "3 fixed-rate runs" in row["server_note"] and "met the 40 ms bound" in row["server_note"] and "missed it" in row["server_note"]
    assert len(list(tmp_path.glob("run*/mlperf_log_detail.txt"))) == 3  # each run's LoadGen log is kept
    assert missed["server_ips"] is None and "over the 1 ms bound" in missed["server_note"] and missed["server_p99_ms"] >= 10


def test_report_chart_and_plot_data(benchmark_run, tiny_source, tmp_path):
    results, _ = benchmark_run
    results = {**results, "device": {"cpu": "test cpu", "usable_cores": 2, "gpus": []}}
    results["setup"] = {
        "profile": "quick",
        "threads": {"intra_op": 0, "inter_op": 0},
        "stability_pct": 50,
        "mlperf_min_duration_ms": 200,
        "server_latency_ms": 15,
    }
    parity = {"torch-fp32": {"status": "ok", "precision": "fp32", "size_mb": 1.0}}
    checks = check_targets(results, parity, TINY_TARGETS)
    text = benchmark_markdown(results, parity, checks, tiny_source[1], "benchmark.png")
    assert "random weights: fidelity figures only" in text and "not official MLPerf results" in text
    assert "| torch-fp32 | fp32 | 1.0 | ok |" in text
    assert "| never-built |" in text and "was not built" in text
    data = plot_data(results)
    assert {r["variant"] for r in data["latency_vs_batch.json"]} == {
        "torch-fp32",
        "onnxruntime-fp32",
        "tflite-fp32",
        "tf-savedmodel-fp32",
        "kserve-rest-bytes",
    }
    assert "kserve-rest-bytes over tf-savedmodel-fp32 in process (batch 4, 2 clients)" in text
    assert "- tfserving-rest-bytes over tf-savedmodel-fp32 in process (batch 4, 2 clients): target >= 60%: not measured: " in text
    assert {r["concurrency"] for r in data["latency_vs_batch.json"]} == {1}
    assert {r["batch"] for r in data["throughput_vs_concurrency.json"]} == {1}
    compared = benchmark_markdown(results, parity, checks, tiny_source[1], "benchmark.png", baseline=("`main` (commit abc1234)", results))
    assert "Compared with baseline `main` (commit abc1234)" in compared and "| vs baseline |" in compared
    figures = key_figures(results, {"onnxruntime-int8": {"precision": "int8", "status": "ok", "top1_agreement": 0.99}})
    assert figures["best_ips"]["torch-fp32"] == max(c["throughput_ips"] for c in results["torch-fp32"].values())
    assert figures["p99_b1_ms"]["onnxruntime-fp32"] == results["onnxruntime-fp32"]["b1_c1"]["p99_ms"]
    assert figures["int8_top1_agreement"] == {"onnxruntime-int8": 0.99} and "never-built" not in figures["best_ips"]
    write_chart(results, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_names_the_param_to_fix():
    from crossdeploy.compose import compose

    cfg = compose([], config_dir=ROOT / "conf")["benchmark"]
    with pytest.raises(CrossdeployError, match="benchmark.profile 'fast' is unknown"):
        BenchmarkPlan.from_params({**cfg, "profile": "fast"}, ["torch-fp32"])
    with pytest.raises(CrossdeployError, match="benchmark.batch_sizes must be"):
        BenchmarkPlan.from_params({**cfg, "batch_sizes": [0]}, ["torch-fp32"])
    with pytest.raises(CrossdeployError, match="benchmark.variants names unknown variants tensorrt-int9"):
        select_variants([Variant("torch-fp32", "fp32", "fp32", "torch", ROOT)], ["tensorrt-int9"])
    with pytest.raises(CrossdeployError, match="benchmark.harness_batch must be a positive integer"):
        BenchmarkPlan.from_params({**cfg, "harness_batch": 0}, ["torch-fp32"])
    default = cfg["profiles"]["default"]
    for key, value, message in (
        ("concurrency_search", "false", "benchmark.profiles.default.concurrency_search must be true or false, got 'false'"),
        ("mlperf_server_runs", 0, "benchmark.profiles.default.mlperf_server_runs must be a positive integer"),
        ("harness_rounds", 0, "benchmark.profiles.default.harness_rounds must be a positive integer, got 0"),
        ("harness_rounds", True, "benchmark.profiles.default.harness_rounds must be a positive integer, got True"),
    ):
        broken = {**cfg, "profiles": {**cfg["profiles"], "default": {**default, key: value}}}
        with pytest.raises(CrossdeployError, match=message):
            BenchmarkPlan.from_params(broken, ["torch-fp32"])
    # the targets never reach the measurement: the harness's batch does not follow the INT8 target's
    retargeted = {**cfg, "targets": {**cfg["targets"], "int8_speedup_batch": cfg["harness_batch"] * 2}}
    assert BenchmarkPlan.from_params(retargeted, ["torch-fp32"]) == BenchmarkPlan.from_params(cfg, ["torch-fp32"])


def test_a_parity_only_row_is_measured_only_where_benchmark_variants_names_it():
    """onnxruntime-fp16 (the FP16 file on ONNX Runtime's CPU, which computes it in FP32) is judged by validate, but
    costs the benchmark its cells for no FP16 figure: left out with the reason, unless the user names it."""
    from crossdeploy.compose import compose
    from crossdeploy.variants import benchmark_variants

    params = compose([], config_dir=ROOT / "conf")
    known = [v.name for v in benchmark_variants(params)]
    plan = BenchmarkPlan.from_params(params["benchmark"], known)
    assert (
        plan.disabled["onnxruntime-fp16"].startswith("a check of the FP16 file, not a deployment")
        and params["benchmark"]["variants"] == "all"
    )
    named = BenchmarkPlan.from_params({**params["benchmark"], "variants": ["onnxruntime-fp16", "onnxruntime-fp32"]}, known)
    assert "onnxruntime-fp16" not in named.disabled


def test_baseline_names_a_revision_or_says_what_to_pick():
    from crossdeploy.benchmark.baseline import load_baseline

    with pytest.raises(CrossdeployError, match="'no-such-exp' is not a commit, tag, branch or experiment"):
        load_baseline("no-such-exp", "metrics/benchmark.json", str(ROOT))


@pytest.mark.parametrize("target", ["a100", "h100"])
def test_gpu_targets_set_only_the_hardware_knobs(target):
    from crossdeploy.compose import compose

    cpu, gpu = compose([], config_dir=ROOT / "conf"), compose([f"target={target}"], config_dir=ROOT / "conf")
    # the engines take the batches MLPerf Offline sends them
    assert gpu["tensorrt"]["batch"]["max"] >= gpu["benchmark"]["mlperf"]["offline_batch"]
    # only the hardware knobs differ: the conversion pipeline is the same on every target
    for section in ("model", "data", "export", "fp16", "quantize", "to_tensorflow", "paths"):
        assert cpu[section] == gpu[section], section
    # validate judges the same way everywhere; only the variants the hardware must run differ
    assert {**cpu["validate"], "require": None} == {**gpu["validate"], "require": None}
    every = benchmark_variants(gpu)
    plan = BenchmarkPlan.from_params(gpu["benchmark"], [v.name for v in every])  # every variant it names exists
    judged = gpu["benchmark"]["targets"]["gpu"]["variant"]  # the GPU target's variant is measured, MLPerf included
    assert judged in [v.name for v in select_variants(every, gpu["benchmark"]["variants"])] and judged in plan.mlperf_variants


def test_gpu_checks_judge_only_on_the_card_they_are_for():
    gpu = dict(A100["benchmark"]["targets"]["gpu"])
    results = {"mlperf": {"tensorrt-int8": {"status": "ok", "offline_ips": 40000.0, "singlestream_p90_ms": 0.5}}}
    parity = {"tensorrt-int8": {"top1_agreement": 0.995}}
    checks = gpu_checks(results, parity, gpu, ["NVIDIA A100-SXM4-40GB"])
    assert checks["offline"]["fraction"] == pytest.approx(40000 / 42379, abs=1e-3) and checks["offline"]["met"]
    assert checks["singlestream_p90"]["met"] and checks["int8_top1_agreement"]["met"]
    elsewhere = gpu_checks(results, parity, gpu, ["NVIDIA H100 80GB HBM3"])
    assert elsewhere["offline"]["met"] is None and "the reference is for an A100" in elsewhere["offline"]["note"]
    assert elsewhere["singlestream_p90"]["met"] is None and elsewhere["int8_top1_agreement"]["met"]
    no_bound = gpu_checks(results, parity, {**gpu, "singlestream_p90_max_ms": None}, ["NVIDIA A100-SXM4-40GB"])
    assert no_bound["singlestream_p90"] == {
        "target_max_ms": None,
        "met": None,
        "note": "no target: benchmark.targets.gpu.singlestream_p90_max_ms is null",
    }
    assert "gpu_target" not in check_targets(results, parity, Targets())  # a CPU target has no GPU checks


def test_the_report_says_how_the_server_rate_was_found():
    from crossdeploy.benchmark.report import _server_method

    assert "LoadGen's peak search found" in _server_method({"server_latency_ms": 15, "mlperf_server_runs": None})
    fixed = _server_method({"server_latency_ms": 100, "mlperf_server_runs": 2})
    assert "highest of 2 fixed Poisson rates" in fixed and "lower bound on the peak" in fixed and "peak search found" not in fixed
    single = _server_method({"server_latency_ms": 100, "mlperf_server_runs": 1})
    assert "one fixed Poisson rate, half what one worker sustains alone" in single and "highest of" not in single
