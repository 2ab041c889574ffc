"""Stage benchmark: latency and throughput of every variant -> metrics/benchmark.json (the report stage
judges the figures against benchmark.targets and draws them). Measurement only: it reads neither
parity.json nor the targets and runs none of the judging or drawing code, so changing any of those never
re-runs it."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.benchmark.peaks import annotate_cells, machine_peaks
from crossdeploy.benchmark.plan import BenchmarkPlan, select_variants
from crossdeploy.benchmark.run import run_benchmark
from crossdeploy.data.datasets import ImageSet
from crossdeploy.device_info import describe_device
from crossdeploy.model.card import ModelCard
from crossdeploy.onnx.graph import size_mb
from crossdeploy.params import load_params
from crossdeploy.stage import read_json, run_stage, write_json
from crossdeploy.variants import benchmark_variants


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["benchmark"]
    card = ModelCard.from_dict(read_json(paths["model_card"]))
    every = benchmark_variants(params)
    plan = BenchmarkPlan.from_params(cfg, [v.name for v in every])
    variants = select_variants(every, cfg["variants"])
    images = ImageSet.load(Path(paths["evaluation"]))

    # the machine's limits first, on cores no variant is using yet
    peaks = machine_peaks(int(cfg["threads"]["intra_op"]))
    with atomic_path(paths["benchmark"], directory=True) as artifacts:
        results = run_benchmark(variants, images, plan, artifacts / "mlperf")
        annotate_cells(results, variants, peaks, read_json(paths["model_size"]).get("gflops_per_image"))
        results["peaks"] = peaks
        results["device"] = describe_device()
        results["setup"] = {
            "target": cfg["target"],
            "profile": cfg["profile"],
            "weights": "random" if card.random_weights else (card.weights or card.checkpoint),
            "threads": cfg["threads"],
            "batch_sizes": plan.batch_sizes,
            "concurrency": plan.concurrencies,
            "stability_pct": plan.windows.stability_pct,
            "mlperf_min_duration_ms": plan.mlperf.min_duration_ms if plan.mlperf else None,
            "server_latency_ms": plan.mlperf.server_latency_ms if plan.mlperf else None,
            # how Server's rate was found (null: LoadGen's peak search) and whether the sweep searched its clients
            "mlperf_server_runs": plan.mlperf.server_runs if plan.mlperf else None,
            "concurrency_search": plan.concurrency_search,
            "artifact_mb": {v.name: size_mb(v.artifact) for v in variants if v.artifact.exists()},
        }

    write_json(paths["benchmark_metrics"], results)


if __name__ == "__main__":
    run_stage(main)
