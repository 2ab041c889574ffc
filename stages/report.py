"""Stage report: the performance targets judged against the benchmark and parity metrics
(metrics/checks.json), metrics/benchmark.md with them, compared with benchmark.baseline where one is
named, metrics/summary.json, the key figures `dvc exp show` lists as columns, and the chart and plot rows
drawn from benchmark.json. It reads the benchmark's results, never its code: changing a target, the
baseline, or how the figures are judged or drawn re-runs only this stage."""

import os
from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.benchmark.baseline import load_baseline
from crossdeploy.benchmark.charts import plot_data, write_chart
from crossdeploy.benchmark.checks import Targets, check_targets
from crossdeploy.benchmark.report import benchmark_markdown, key_figures
from crossdeploy.model.card import ModelCard
from crossdeploy.params import load_params
from crossdeploy.stage import read_json, run_stage, write_json


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["benchmark"]
    card = ModelCard.from_dict(read_json(paths["model_card"]))
    results = read_json(paths["benchmark_metrics"])
    parity = read_json(paths["parity"])
    baseline = None
    if cfg["baseline"]:
        commit, data = load_baseline(str(cfg["baseline"]), Path(paths["benchmark_metrics"]).as_posix())
        baseline = (f"`{cfg['baseline']}` (commit {commit[:7]})", data)
    checks = check_targets(results, parity, Targets.from_params(cfg["targets"]))
    write_json(paths["checks"], checks)
    write_json(paths["summary"], key_figures(results, parity))
    plots = plot_data(results)
    write_json(paths["latency_plot"], plots["latency_vs_batch.json"])
    write_json(paths["throughput_plot"], plots["throughput_vs_concurrency.json"])
    with atomic_path(paths["benchmark_chart"]) as chart_file:
        write_chart(results, chart_file)
    # the chart beside the report, linked relative to it
    chart = Path(os.path.relpath(paths["benchmark_chart"], Path(paths["benchmark_report"]).parent)).as_posix()
    text = benchmark_markdown(results, parity, checks, card, chart, baseline=baseline)
    with atomic_path(paths["benchmark_report"]) as report:
        report.write_text(text)
    print(text)


if __name__ == "__main__":
    run_stage(main)
