"""Stage report: the performance targets judged against the benchmark and parity metrics
(metrics/checks.json), metrics/benchmark.md with them, compared with benchmark.baseline where one is
named, metrics/summary.json, the key figures `dvc exp show` lists as columns, and the chart and plot rows
drawn from benchmark.json. It reads the benchmark's results, never its code: changing a target, the
baseline, or how the figures are judged or drawn re-runs only this stage."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.benchmark.baseline import load_baseline
from crossdeploy.benchmark.charts import plot_data, write_chart
from crossdeploy.benchmark.checks import Targets, check_targets
from crossdeploy.benchmark.report import benchmark_markdown, key_figures
from crossdeploy.params import load_params
from crossdeploy.source_model import ModelCard
from crossdeploy.stage import read_json, run_stage, write_json


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["benchmark"]
    metrics = Path(paths["metrics"])
    card = ModelCard.from_dict(read_json(Path(paths["source"]) / "model.json"))
    results = read_json(metrics / "benchmark.json")
    parity = read_json(metrics / "parity.json")
    baseline = None
    if cfg["baseline"]:
        commit, data = load_baseline(str(cfg["baseline"]), (metrics / "benchmark.json").as_posix())
        baseline = (f"`{cfg['baseline']}` (commit {commit[:7]})", data)
    checks = check_targets(results, parity, Targets.from_params(cfg["targets"]))
    write_json(metrics / "checks.json", checks)
    write_json(metrics / "summary.json", key_figures(results, parity))
    for name, rows in plot_data(results).items():
        write_json(metrics / "plots" / name, rows)
    with atomic_path(metrics / "benchmark.png") as chart:
        write_chart(results, chart)
    text = benchmark_markdown(results, parity, checks, card, "benchmark.png", baseline=baseline)
    with atomic_path(metrics / "benchmark.md") as report:
        report.write_text(text)
    print(text)


if __name__ == "__main__":
    run_stage(main)
