"""models/deploy/: the chosen artifact and what serves it, with a README that says how to start it and what
it was measured to do.

By kind of variant:
- SavedModel (tf-savedmodel-fp32, tfserving-*, kserve-*): the package stage's TF Serving repository entry
  (<model>/<version>/, models.config), batching_parameters.txt from the chosen batch, and the KServe
  InferenceService manifest;
- TensorRT: the plan and its record, and a Triton model repository entry (triton/<model>/config.pbtxt,
  triton/<model>/1/model.plan) with the KServe Triton manifest;
- ONNX Runtime, TFLite, PyTorch: the model file, started as the README says.
Every bundle also carries decision.json (the decision it follows) and preprocessing.json (what a client
does to an image before a float tensor goes in).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossdeploy.layout import INPUT_NAME, OUTPUT_NAME, engine_record, model_version_dir
from crossdeploy.serving.manifests import check_service_name, schema_errors, tfserving_service, triton_service
from crossdeploy.serving.repository import BATCHING_PARAMETERS, MODELS_CONFIG, BatchingParameters
from crossdeploy.variants import Variant

#: what the bundle holds, by the framework that runs the variant (variants.py's table)
KINDS = {
    "tensorflow": "tfserving",
    "served": "tfserving",
    "tensorrt": "tensorrt",
    "openvino": "openvino",
    "onnxruntime": "onnxruntime",
    "tflite": "tflite",
    "torch": "torch",
}
README = "README.md"
DECISION = "decision.json"
PREPROCESSING = "preprocessing.json"
TRITON = "triton"
OVMS_CONFIG = "config.json"


@dataclass(frozen=True)
class Serving:
    """What the bundle needs beyond the decision: the package stage's names and knobs, and the model's shape."""

    paths: dict[str, Any]
    model_name: str
    version: int
    num_batch_threads: int  # package.batching: the target's server-side batching threads and queue
    max_enqueued_batches: int
    kserve: dict[str, Any]  # package.kserve
    tensorrt_max_batch: int  # tensorrt.batch.max: the largest batch the plan's profile takes
    tfserving_base_path: str = "/models"  # package.base_path: where models.config says the repository is


def artifact(variant: Variant, serving: Serving) -> Path:
    """What the bundle ships for the variant: the file its row runs; for the in-process SavedModel, the
    package stage's repository entry, as the served rows ship (the same graph with the bytes signature
    beside it, tests/test_serving_package), which is what TF Serving serves."""
    if variant.framework == "tensorflow":
        return model_version_dir(serving.paths["serving"], serving.model_name, serving.version)
    return variant.artifact


def batch_timeout_micros(batch: int, margin_ms: float, run_ms: float) -> int:
    """How long the server may hold a request for its batch to fill. The measured p99 does not include that
    wait, so p99 + timeout must stay within the SLO: half the margin is spent, half kept for run-to-run
    noise; and never longer than the batch takes to run (`run_ms`, its p50), past which waiting only idles
    the server. A batch of one is full on arrival, so it waits for nothing."""
    if batch <= 1:
        return 0
    return max(0, int(min(margin_ms / 2, run_ms) * 1000))


def triton_config(name: str, max_batch_size: int, preferred: int, delay_micros: int, crop: int, num_classes: int) -> str:
    """A Triton model configuration (ModelConfig as a text proto) for the TensorRT plan: NCHW float32 in, logits out."""
    return (
        f'name: "{name}"\n'
        'platform: "tensorrt_plan"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [ {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ 3, {crop}, {crop} ] }} ]\n'
        f'output [ {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ {num_classes} ] }} ]\n'
        f"dynamic_batching {{ preferred_batch_size: [ {preferred} ] max_queue_delay_microseconds: {delay_micros} }}\n"
    )


def _manifest(directory: Path, file_name: str, service: dict[str, Any]) -> None:
    import yaml

    errors = schema_errors(service)
    if errors:  # a KServe upgrade renamed a field: fail here, not at kubectl apply
        raise ValueError(f"{file_name} does not follow the InferenceService schema: {'; '.join(errors)}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / file_name).write_text(yaml.safe_dump(service, sort_keys=False))


def _tfserving(dest: Path, choice: dict[str, Any], variant: Variant, serving: Serving) -> list[str]:
    name, repository = serving.model_name, Path(serving.paths["serving"])
    check_service_name(name)
    shutil.copytree(artifact(variant, serving), model_version_dir(dest, name, serving.version))
    shutil.copy(repository / MODELS_CONFIG, dest / MODELS_CONFIG)
    timeout = batch_timeout_micros(choice["batch"], choice["margin_ms"], choice["p50_ms"])
    batching = BatchingParameters(choice["batch"], timeout, serving.num_batch_threads, serving.max_enqueued_batches)
    (dest / BATCHING_PARAMETERS).write_text(batching.to_text())
    # KServe downloads only the model base path, so its TF Serving finds the batching file there (as in package)
    shutil.copy(dest / BATCHING_PARAMETERS, dest / name / BATCHING_PARAMETERS)
    kserve = serving.kserve
    _manifest(
        dest / "kserve",
        "inferenceservice.yaml",
        tfserving_service(name, kserve["storage_uri"], str(kserve["tfserving_runtime_version"]), kserve["resources"]),
    )
    base = serving.tfserving_base_path.rstrip("/")
    engine = variant.options.get("engine")  # served rows: kserve | tfserving; None in process
    image = f"tensorflow/serving:{kserve['tfserving_runtime_version']}"
    # the -gpu image on the GPU rows, with TF32 off as they were measured (crossdeploy serve --device gpu)
    gpu = "--gpus all -e NVIDIA_TF32_OVERRIDE=0 " if variant.options.get("gpu") else ""
    image += "-gpu" if gpu else ""
    measured = {
        None: "Measured in process (TensorFlow's SavedModel runner); behind TF Serving each request adds its transport.",
        "kserve": "Measured behind the embedded server (`crossdeploy serve --engine kserve`), TF Serving's REST API.",
        "tfserving": "Measured behind TF Serving.",
    }[engine]
    if choice["batch"] <= 1:
        why = "a batch of one is full on arrival"
    elif timeout < int(choice["margin_ms"] * 500):
        why = f"the batch's {choice['p50_ms']:.4g} ms p50 run time, less than half the margin to the SLO"
    else:
        why = f"half the {choice['margin_ms']:.4g} ms margin to the SLO"
    return [
        f"TF Serving repository: `{MODELS_CONFIG}`, `{BATCHING_PARAMETERS}` (max_batch_size {choice['batch']}, "
        f"batch_timeout_micros {timeout}: {why}), `{name}/{serving.version}/`. {measured}",
        "",
        "```bash",
        f'docker run --rm {gpu}-p 8501:8501 -p 8500:8500 --mount type=bind,source="$PWD",target={base},readonly {image} \\',
        f"  --model_config_file={base}/{MODELS_CONFIG} --enable_batching=true --batching_parameters_file={base}/{BATCHING_PARAMETERS}",
        f"crossdeploy serve --repository {serving.paths.get('deploy', '.')}   # from the project root: TF Serving if it "
        "runs there, else the embedded server",
        f"kubectl apply -f kserve/inferenceservice.yaml   # after copying {name}/ to package.kserve.storage_uri",
        "```",
    ]


def _tensorrt(dest: Path, choice: dict[str, Any], variant: Variant, serving: Serving, preprocessing: dict[str, Any]) -> list[str]:
    plan = artifact(variant, serving)
    shutil.copy(plan, dest / plan.name)
    shutil.copy(engine_record(plan), dest / engine_record(plan).name)
    entry = dest / TRITON / serving.model_name
    (entry / "1").mkdir(parents=True)
    shutil.copy(plan, entry / "1" / "model.plan")
    timeout = batch_timeout_micros(choice["batch"], choice["margin_ms"], choice["p50_ms"])
    max_batch = max(serving.tensorrt_max_batch, choice["batch"])
    crop = int(preprocessing["preprocessing"]["crop_size"])
    (entry / "config.pbtxt").write_text(
        triton_config(serving.model_name, max_batch, choice["batch"], timeout, crop, int(preprocessing["num_classes"]))
    )
    kserve = serving.kserve
    _manifest(
        dest / "kserve",
        "inferenceservice-triton.yaml",
        triton_service(serving.model_name, kserve["triton_storage_uri"], str(kserve["triton_runtime_version"])),
    )
    return [
        f"TensorRT plan `{plan.name}` with its record `{engine_record(plan).name}` (the GPU and TensorRT version it was built for: "
        f"it loads only there), and a Triton model repository `{TRITON}/` (max_batch_size {max_batch}, dynamic batching preferring "
        f"{choice['batch']}, queue delay {timeout} us).",
        "",
        "```bash",
        f'docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -v "$PWD/{TRITON}:/models" '
        f"nvcr.io/nvidia/tritonserver:{kserve['triton_runtime_version']} tritonserver --model-repository=/models",
        "kubectl apply -f kserve/inferenceservice-triton.yaml   # after copying triton/ to package.kserve.triton_storage_uri",
        "```",
    ]


def _openvino(dest: Path, choice: dict[str, Any], variant: Variant, serving: Serving) -> list[str]:
    """OpenVINO's IR of the row's ONNX file (written by OpenVINO itself, weights as they are: save_model would
    otherwise halve them to fp16), in OpenVINO Model Server's layout with its config.json, compiled with the
    precision and hint the row was measured with."""
    import openvino as ov

    from crossdeploy.runtimes.openvino_runtime import compile_config

    name = serving.model_name
    check_service_name(name)
    version_dir = dest / name / str(serving.version)
    version_dir.mkdir(parents=True)
    ov.save_model(ov.Core().read_model(str(artifact(variant, serving))), version_dir / "model.xml", compress_to_fp16=False)
    plugin = compile_config(variant.precision)
    config = {
        "model_config_list": [
            {
                "config": {
                    "name": name,
                    "base_path": f"/models/{name}",
                    "target_device": "CPU",
                    "plugin_config": plugin,
                    "nireq": max(1, int(choice["concurrency"])),
                }
            }
        ]
    }
    (dest / OVMS_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    clients = choice["concurrency"]
    return [
        f"OpenVINO IR `{name}/{serving.version}/model.xml` (+ `.bin`) in OpenVINO Model Server's layout, with `{OVMS_CONFIG}` "
        f"(CPU, inference precision {plugin['INFERENCE_PRECISION_HINT']}, latency hint, as measured). Measured in process: "
        f"batches of {choice['batch']} from {clients} thread{'s' if clients > 1 else ''} at a time; behind the server each "
        "request adds its transport. The server answers TF Serving's gRPC API on port 9000 and KServe's REST API on 8000.",
        "",
        *SERVE_BUNDLE,
        "",
        "or with OpenVINO Model Server:",
        "",
        "```bash",
        'docker run --rm -p 9000:9000 -p 8000:8000 -v "$PWD:/models:ro" openvino/model_server:latest \\',
        f"  --config_path /models/{OVMS_CONFIG} --port 9000 --rest_port 8000",
        "```",
        "",
        "```python",
        "import openvino as ov",
        f'compiled = ov.Core().compile_model("{name}/{serving.version}/model.xml", "CPU", {plugin!r})',
        "logits = compiled(x)[0]   # x: float32 NCHW, preprocessed as preprocessing.json says",
        "```",
    ]


#: the one command that serves a bundle with its runtime (crossdeploy serve --bundle)
SERVE_BUNDLE = ["```bash", "crossdeploy serve --bundle models/deploy   # REST on 127.0.0.1:8501; --host, --rest-port", "```"]

RUN_NOTES = {
    "onnxruntime": [
        "```python",
        "import onnxruntime as ort",
        'session = ort.InferenceSession("{file}", providers=["{provider}"])',
        'logits = session.run(None, {{"images": x}})[0]   # x: float32 NCHW, preprocessed as preprocessing.json says',
        "```",
    ],
    "tflite": [
        "```python",
        "from ai_edge_litert.interpreter import Interpreter",
        'interpreter = Interpreter("{file}", num_threads=0)  # 0: every core; the benchmark gave TFLite every usable core',
        "interpreter.allocate_tensors()   # input: float32 NHWC, preprocessed as preprocessing.json says (INT8 models quantize inside)",
        "```",
    ],
    "torch": [
        "```python",
        "import torch",
        'model = torch.export.load("{file}").module()   # float32 NCHW in, logits out; preprocessing.json says how',
        "```",
    ],
}


def _file(dest: Path, choice: dict[str, Any], variant: Variant, serving: Serving) -> list[str]:
    source = artifact(variant, serving)
    shutil.copy(source, dest / source.name)
    provider = variant.options.get("provider", "CPUExecutionProvider")
    note = [line.format(file=source.name, provider=provider) for line in RUN_NOTES[KINDS[variant.framework]]]
    clients = choice["concurrency"]
    return [
        f"`{source.name}`, measured in process: batches of {choice['batch']} from {clients} "
        f"thread{'s' if clients > 1 else ''} at a time. Served behind TF Serving's REST API (floats and JPEG/PNG bytes), "
        "from the project's checkout:",
        "",
        *SERVE_BUNDLE,
        "",
        "or run in your own process:",
        "",
        *note,
    ]


def write_bundle(
    dest: Path,
    decision: dict[str, Any],
    results: dict[str, Any],
    serving: Serving,
    preprocessing: dict[str, Any],
    table: dict[str, Variant],
) -> None:
    """Fill the empty folder `dest` (the stage writes it to a temporary path and renames it at the end) for
    the decision's choice, a row of the variant `table` (variants.benchmark_variants by name)."""
    (dest / DECISION).write_text(json.dumps(decision, indent=2) + "\n")
    (dest / PREPROCESSING).write_text(json.dumps(preprocessing, indent=2) + "\n")
    choice = decision["choice"]
    if choice is None:
        lines = ["Nothing to deploy: no variant met the SLO.", "", *measured_lines(decision, results)]
    else:
        variant = table[choice["variant"]]
        what = KINDS[variant.framework]
        if what == "tfserving":
            how = _tfserving(dest, choice, variant, serving)
        elif what == "tensorrt":
            how = _tensorrt(dest, choice, variant, serving, preprocessing)
        elif what == "openvino":
            how = _openvino(dest, choice, variant, serving)
        else:
            how = _file(dest, choice, variant, serving)
        lines = [*measured_lines(decision, results), "", "## How to start it", "", *how]
    (dest / README).write_text(f"# Deploy: {serving.model_name}\n\n" + "\n".join(lines) + "\n")


def machine(results: dict[str, Any]) -> str:
    device = results.get("device", {})
    gpus = device.get("gpus") or []
    where = ", ".join(g.get("name", str(g)) if isinstance(g, dict) else str(g) for g in gpus) or "no GPU"
    libraries = ", ".join(f"{k} {v}" for k, v in (device.get("libraries") or {}).items())
    return f"{device.get('cpu', 'unknown CPU')}, {device.get('usable_cores', '?')} usable cores, {where}" + (
        f" ({libraries})" if libraries else ""
    )


def measured_lines(decision: dict[str, Any], results: dict[str, Any]) -> list[str]:
    from crossdeploy.deploy.note import headline, summary

    setup = results.get("setup", {})
    return [
        *headline(decision),
        *summary(decision),
        "",
        f"Measured on {machine(results)}; benchmark profile `{setup.get('profile')}`, target `{setup.get('target')}`, "
        f"weights {setup.get('weights')}. Another machine needs its own benchmark before these figures hold there.",
    ]
