"""Every param a stage tracks changes what that stage writes, or is listed here with the reason it does not.

A knob that changes nothing (quantize.calibration_method once wrote an INT8 model byte-identical to
minmax's) re-runs stages and reports a difference that is not there. The fast test keeps the tables
below complete against dvc.yaml; the slow one re-runs each stage in a throwaway tiny repository with
one param changed and compares the outputs DVC recorded.
"""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import A100, ROOT, back_to_the_run, sh

#: stage -> param -> a new value; re-running the stage with it must change at least one of its outputs
LIVE = {
    "model": {
        "model.name": "other",
        "model.arch": "resnet34",
        "model.num_classes": 10,
        "model.seed": 1,
        "model.input_size": 72,
        "model.resize_size": 96,
        "model.mean": [0.4, 0.4, 0.4],
        "model.std": [0.2, 0.2, 0.2],
    },
    "data": {"data.calibration_size": 12, "data.evaluation_size": 12, "data.seed": 1},
    "export": {"export.opset": 18},
    "fp16": {"fp16.op_block_list": ["Conv"]},  # the convolutions kept in FP32
    "quantize": {
        "quantize.method": "dynamic",
        "quantize.calibration_method": "entropy",
        "quantize.calibration_size": 8,
        "quantize.per_channel": False,
        "quantize.reduce_range": False,
    },
    "to_tensorflow": {"model.name": "other", "quantize.calibration_size": 8, "to_tensorflow.version": 2},
    "package": {
        "model.name": "other",
        "to_tensorflow.version": 2,
        "package.base_path": "/srv/models",
        "package.kserve.storage_uri": "gs://bucket/model",
        "package.kserve.tfserving_runtime_version": "2.20.0",
        "package.kserve.resources.cpu": "4",
        "package.kserve.resources.memory": "8Gi",
        "package.kserve.triton_storage_uri": "gs://bucket/triton",
        "package.kserve.triton_runtime_version": "25.09-py3",
        "package.batching.max_batch_size": 16,
        "package.batching.batch_timeout_micros": 500,
        "package.batching.num_batch_threads": 4,
        "package.batching.max_enqueued_batches": 10,
        "package.image_limits.max_pixels": 1000000,
        "package.image_limits.max_aspect_ratio": 10,
    },
    "trained": {"trained.enabled": False},  # no stand-in: an empty folder
    "tensorrt": {
        "tensorrt.enabled": False,
        "tensorrt.batch.min": 2,
        "tensorrt.batch.opt": 8,
        "tensorrt.batch.max": 64,
        "tensorrt.workspace_mib": 1024,
        "tensorrt.optimization_level": 5,
    },
    "report": {
        "benchmark.baseline": "HEAD",
        "benchmark.targets.int8_speedup_batch": 1,
        "benchmark.targets.int8_speedup_min": 100.0,
        "benchmark.targets.harness_overhead_max_pct": 0.001,
        "benchmark.targets.served_batch": 1,
        "benchmark.targets.served_concurrency": 1,
        "benchmark.targets.served_min_fraction": 100.0,
        "benchmark.targets.gpu": A100["benchmark"]["targets"]["gpu"],
    },
    # each changes the decision itself, not only the params deploy.json echoes: nothing meets 1 us, no served
    # variant is the in-process choice, no variant agrees more than 100 % or weighs 1 kB
    "deploy": {
        "deploy.p99_ms": 0.001,
        "deploy.variants": "served",
        "deploy.min_top1_agreement": 1.01,
        "deploy.min_cosine": 1.01,
        "deploy.max_model_mb": 0.001,
    },
}

NAMES = "a folder name the stage reads artifacts from; the artifacts, and so the figures, are the same"
VERDICT = "a verdict threshold: the output changes only when a row crosses it (tests/test_negative_controls, test_validation)"
RUN_ONLY = "how the variants are run, not what they compute: the figures agree to float rounding"
MEASURED = "measurements differ on every run, so a changed output proves nothing: test_benchmark_params_reach_the_plan"
TRAINED = "the trained model's own knob: live-tested on train_classifier in tests/test_trained_reference"
SHARED = "the same call as the stage that owns the param, where it is live-tested"
SERVING_BUNDLE = (
    "read only when the choice is served by TF Serving or Triton (a CPU run of the tiny model chooses an in-process variant): "
    "tests/test_deploy writes those bundles"
)

#: "stage:param" -> why a change need not show in that stage's outputs, or where it is shown live instead
EXPLAINED = {
    "model:model.weights": "torchvision weights come from the torch hub cache or the network, neither here; "
    "tests/test_source_model checks the param's errors",
    "model:model.checkpoint": "the user's file: tests/test_pipeline overwrites it and the model stage re-runs",
    "model:model.trust_checkpoint": "read only for a whole pickled or TorchScript model: tests/test_source_model loads "
    "each with it and refuses each without",
    "data:data.images": "the user's folder: tests/test_pipeline adds an image and the data stage re-runs",
    "quantize:quantize.calibration_batch": "images per calibration pass: memory and speed only; tests/test_calibration "
    "checks the ranges are equal",
    "quantize:quantize.percentile": "read by calibration_method percentile only: tests/test_calibration shows two "
    "percentiles give two models",
    **{
        f"trained:{key}": TRAINED
        for key in (
            "trained.name",
            "trained.arch",
            "trained.input_size",
            "trained.epochs",
            "trained.batch_size",
            "trained.learning_rate",
            "trained.calibration_size",
            "trained.evaluation_size",
            "trained.seed",
        )
    },
    **{
        f"trained:{key}": SHARED
        for key in (
            "export.opset",
            "fp16.op_block_list",
            "quantize.method",
            "quantize.calibration_method",
            "quantize.calibration_size",
            "quantize.calibration_batch",
            "quantize.per_channel",
            "quantize.percentile",
            "quantize.reduce_range",
            "to_tensorflow.version",
            "package.base_path",
            "package.batching.max_batch_size",
            "package.batching.batch_timeout_micros",
            "package.batching.num_batch_threads",
            "package.batching.max_enqueued_batches",
            "package.image_limits.max_pixels",
            "package.image_limits.max_aspect_ratio",
        )
    },
    "validate:model.name": NAMES,
    "validate:trained.name": NAMES,
    "validate:to_tensorflow.version": NAMES,
    "validate:quantize.reduce_range": "names the likely cause in a failed ONNX Runtime INT8 row's reason on a CPU without VNNI; "
    "the figures are the quantize stage's files (tests/test_int8_saturation)",
    "validate:tensorrt.cuda_graph": "the TensorRT runner's replay mode: the same engine computes the same logits (GPU tests)",
    "validate:validate.strict": "whether failures stop the stage; parity.json is the same (tests/test_skips)",
    "validate:validate.judge_agreement_with_random_weights": VERDICT,
    "validate:validate.floor.input_spread_min": "the floor's bound: the output changes only when a row crosses it (tests/test_floor)",
    "validate:validate.standin_accuracy_min": "below it the stand-in's INT8 rows are unjudged: a status, not a figure "
    "(tests/test_trained_reference)",
    "validate:validate.batch_size": RUN_ONLY,
    "validate:validate.threads.intra_op": RUN_ONLY,
    "validate:validate.threads.inter_op": RUN_ONLY,
    "validate:validate.require": "which skips fail the stage; parity.json is the same (tests/test_skips)",
    "validate:validate.random_weights.unjudged": "which rows of a random model get no verdict: their status, not their figures "
    "(tests/test_pipeline finds the random model's INT8 rows unjudged)",
    "benchmark:model.name": NAMES,
    **{
        f"benchmark:serve.{key}": "the embedded server's limits, which the served rows are measured through (measurements differ on every "
        "run, so a changed output proves nothing): tests/test_serve_hardening sends each limit its request"
        for key in ("max_body_mib", "max_in_flight", "max_queued", "request_timeout_s")
    },
    "benchmark:to_tensorflow.version": NAMES,
    "deploy:deploy.strict": "whether an unmet SLO fails the stage; what it writes when it succeeds is the same (tests/test_deploy)",
    "deploy:deploy.served_check": "whether the choice is measured served: deploy.json's `served` says skipped, a measured output "
    "(tests/test_serve_bundle)",
    "deploy:model.name": NAMES,
    "deploy:to_tensorflow.version": NAMES,
    **{
        f"deploy:{key}": SERVING_BUNDLE
        for key in (
            "tensorrt.batch.max",
            "package.base_path",
            "package.batching.num_batch_threads",
            "package.batching.max_enqueued_batches",
            "package.kserve.storage_uri",
            "package.kserve.tfserving_runtime_version",
            "package.kserve.resources.cpu",
            "package.kserve.resources.memory",
            "package.kserve.triton_storage_uri",
            "package.kserve.triton_runtime_version",
        )
    },
}


def leaves(node, prefix: str):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}")
    else:
        yield prefix


def tracked_params(root=ROOT) -> dict[str, list[str]]:
    """stage -> every leaf param it tracks, as DVC resolves dvc.yaml against params.yaml."""
    import dvc.repo

    params = yaml.safe_load((root / "params.yaml").read_text())
    tracked = {}
    with dvc.repo.Repo(str(root)) as repo:
        for stage in repo.index.stages:
            keys = []
            for dep in stage.params:
                for name in dep.params:
                    node = params
                    for part in name.split("."):
                        node = node[part]
                    keys += leaves(node, name)
            tracked[stage.name] = keys
    return tracked


#: what the deploy stage's served check reads: the server's limits and the benchmark's windows, whose effect
#: is on measured figures (deploy.json's `served`), different on every run
SERVED_CHECK = ("serve.", "package.image_limits.", "package.batching.max_batch_size", "benchmark.profile")
#: outputs that hold measurements (wall time and memory, the served check's figures): a change in them proves nothing
MEASURED_OUTPUTS = ("metrics/resources/", "metrics/deploy.json", "metrics/deploy.md")


def explained(stage: str, key: str) -> bool:
    if f"{stage}:{key}" in EXPLAINED:
        return True
    if stage == "deploy" and key.startswith(SERVED_CHECK):
        return True  # tests/test_serve_bundle and test_serve_hardening send each limit its request
    if key.startswith(("validate.thresholds.", "validate.random_weights.thresholds.")) and stage == "validate":
        return True  # every threshold: VERDICT
    return stage == "benchmark" and key.startswith(("benchmark.", "tensorrt.cuda_graph"))  # MEASURED


def test_every_tracked_param_is_live_or_explained():
    tracked = tracked_params()
    unaccounted = [
        f"{stage}:{key}" for stage, keys in tracked.items() for key in keys if key not in LIVE.get(stage, {}) and not explained(stage, key)
    ]
    assert not unaccounted, "params a stage tracks with neither a live test (LIVE) nor a reason (EXPLAINED): " + ", ".join(unaccounted)
    stale = [f"{s}:{k}" for s, keys in LIVE.items() for k in keys if k not in tracked.get(s, [])]
    stale += [entry for entry in EXPLAINED if entry.split(":")[1] not in tracked.get(entry.split(":")[0], [])]
    assert not stale, "entries for params the stage does not track: " + ", ".join(stale)


def stage_outputs(tiny_repo, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"][stage]
    return {out["path"]: out.get("md5") for out in lock.get("outs", []) if not out["path"].startswith(MEASURED_OUTPUTS)}


@pytest.mark.slow
@pytest.mark.parametrize("stage,key", [(stage, key) for stage, keys in LIVE.items() for key in keys])
def test_changing_a_param_changes_the_stage_output(tiny_repo, stage, key):
    before = stage_outputs(tiny_repo, stage)
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    node = params
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = LIVE[stage][key]
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        sh(tiny_repo, "dvc", "repro", stage)
        after = stage_outputs(tiny_repo, stage)
        assert after != before, f"{key}: {LIVE[stage][key]!r} left every output of stage {stage} unchanged"
    finally:  # the run as committed: `dvc repro` staged its dvc.lock, which must not be the next test's before
        back_to_the_run(tiny_repo)


def _changed(value):
    """A different value of the same kind, for a param whose meaning the test need not know."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, list):
        return value[:1]
    return {"all": ["onnxruntime-int8"], "cpu": "a100", "default": "quick"}[value]


def benchmark_plan(params):
    """What the benchmark stage derives from its params before measuring: the plan, the variants and
    what runs them, and the setup it records."""
    from crossdeploy.benchmark.plan import BenchmarkPlan, select_variants
    from crossdeploy.variants import benchmark_variants

    cfg = params["benchmark"]
    every = benchmark_variants(params)
    plan = BenchmarkPlan.from_params(cfg, [v.name for v in every])
    return plan, [(v.name, v.framework, v.options) for v in select_variants(every, cfg["variants"])], cfg["target"]


@pytest.mark.parametrize("key", [k for k in tracked_params()["benchmark"] if k.startswith(("benchmark.", "tensorrt."))])
def test_benchmark_params_reach_the_plan(key):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    before = benchmark_plan(params)
    node = params
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = _changed(node[leaf])
    assert benchmark_plan(params) != before, f"{key} changes nothing the benchmark stage measures or records"
