"""Stage deploy: which variant, batch size and concurrency to ship on this hardware under deploy.p99_ms and
the fidelity floor (metrics/deploy.json, metrics/deploy.md), the trade-off chart and plot rows, and the
bundle that serves the choice (models/deploy/), then that bundle served as its README says and measured
at the choice's cell (deploy/served.py): the figures a served deployment gets. It reads benchmark.json
and parity.json, never the code that made them: changing the SLO or a rule re-runs only this stage."""

import os
from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.benchmark.plan import BenchmarkPlan
from crossdeploy.data.datasets import ImageSet
from crossdeploy.deploy.bundle import Serving, write_bundle
from crossdeploy.deploy.chart import plot_rows, write_chart
from crossdeploy.deploy.decision import Settings, decide, load_metrics
from crossdeploy.deploy.note import deploy_markdown
from crossdeploy.deploy.served import check_served_met, served_deployment
from crossdeploy.errors import CrossdeployError
from crossdeploy.params import load_params
from crossdeploy.stage import read_json, run_stage, write_json
from crossdeploy.variants import benchmark_variants


def main() -> None:
    params = load_params()
    paths, package = params["paths"], params["package"]
    results, parity = load_metrics(paths["benchmark_metrics"]), load_metrics(paths["parity"])
    settings = Settings.from_params(params.get("deploy"))
    decision = decide(results, parity, settings)  # strict: raises SloNotMet, one sentence
    # everything the bundle needs is read before anything is written
    preprocessing = read_json(paths["preprocessing"])
    table = {v.name: v for v in benchmark_variants(params)}
    if decision["choice"] and decision["choice"]["variant"] not in table:
        raise CrossdeployError(
            f"benchmark.json chose {decision['choice']['variant']}, which this pipeline's variant table has not: re-run "
            "`dvc repro benchmark`."
        )
    serving = Serving(
        paths,
        params["model"]["name"],
        int(params["to_tensorflow"]["version"]),
        int(package["batching"]["num_batch_threads"]),
        int(package["batching"]["max_enqueued_batches"]),
        package["kserve"],
        int(params["tensorrt"]["batch"]["max"]),
        str(package["base_path"]),
    )
    windows = BenchmarkPlan.from_params(params["benchmark"], list(table)).windows
    images = ImageSet.load(Path(paths["evaluation"]))
    with atomic_path(paths["deploy"], directory=True) as bundle:
        write_bundle(bundle, decision, results, serving, preprocessing, table)
        # measured before the bundle is in place: a strict miss leaves the last bundle where it was
        served = served_deployment(bundle, decision, table, params, images, windows, f"crossdeploy serve --bundle {paths['deploy']}")
        if served is not None:
            decision["served"] = served
            if settings.strict:
                check_served_met(served, settings.p99_ms)
    write_json(paths["deploy_metrics"], decision)
    write_json(paths["deploy_plot"], plot_rows(results))
    with atomic_path(paths["deploy_chart"]) as chart_file:
        write_chart(results, decision, chart_file)
    chart = Path(os.path.relpath(paths["deploy_chart"], Path(paths["deploy_report"]).parent)).as_posix()
    text = deploy_markdown(decision, chart)
    with atomic_path(paths["deploy_report"]) as report:
        report.write_text(text)
    print(text)


if __name__ == "__main__":
    run_stage(main)
