"""Shared fixtures: one tiny real model carried through the real frameworks, built once per session."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run with `pytest -m gpu` on a machine with an NVIDIA GPU; elsewhere they skip and say why."""
    from crossdeploy.device_info import gpus

    if gpus():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA (nvidia-smi finds none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TINY_ARCH = "resnet18"
TINY_SIZE = 64


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory):
    """(program path, ModelCard) for a seeded random resnet18 at 64 px."""
    import torch

    from crossdeploy.model.source import SourceSpec, build_source_model, export_program

    model, card = build_source_model(SourceSpec("tiny", TINY_ARCH, num_classes=10, input_size=TINY_SIZE))
    path = tmp_path_factory.mktemp("source") / "model.pt2"
    torch.export.save(export_program(model, TINY_SIZE), path)
    return path, card


@pytest.fixture(scope="session")
def tiny_images(tiny_source):
    from crossdeploy.data.datasets import DataSettings, default_image_sets

    return default_image_sets(DataSettings(12, 10, tiny_source[1].preprocessing))


@pytest.fixture(scope="session")
def tiny_onnx(tiny_source, tmp_path_factory):
    from crossdeploy.onnx.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(tiny_source[0], path, opset=17, input_size=TINY_SIZE)
    return path


@pytest.fixture(scope="session")
def tiny_optimized(tiny_onnx):
    from crossdeploy.onnx.optimize import optimize_onnx

    path = tiny_onnx.with_name("model.optimized.onnx")
    counts = optimize_onnx(tiny_onnx, path)
    return path, counts


@pytest.fixture(scope="session")
def tiny_saved_model(tiny_optimized, tmp_path_factory):
    """The tiny model as a SavedModel in TF Serving's layout (<base>/tiny/1)."""
    from crossdeploy.tensorflow.convert import onnx_to_keras, save_serving_model

    export_dir = tmp_path_factory.mktemp("tf") / "tiny" / "1"
    save_serving_model(onnx_to_keras(tiny_optimized[0]), export_dir, TINY_SIZE)
    return export_dir


SERVED_MAX_BATCH = 8


@pytest.fixture(scope="session")
def served_repo(tiny_saved_model, tiny_source, tmp_path_factory):
    """A directory laid out like the pipeline's: params.yaml and the packaged tiny model."""
    import yaml

    from crossdeploy.serving.repository import BatchingParameters, write_repository_files
    from crossdeploy.serving.signatures import export_with_bytes_signature

    root = tmp_path_factory.mktemp("serve")
    repository = root / "models" / "serving"
    repository.mkdir(parents=True)
    write_repository_files(repository, "tiny", "/models", BatchingParameters(SERVED_MAX_BATCH, 1000, 2, 10))
    export_with_bytes_signature(tiny_saved_model, repository / "tiny" / "1", tiny_source[1].preprocessing)
    params = {
        "model": {"name": "tiny"},
        "to_tensorflow": {"version": 1},
        "paths": {"serving": "models/serving"},
        "package": {
            "base_path": "/models",
            "batching": {"max_batch_size": SERVED_MAX_BATCH},
            "kserve": {"tfserving_runtime_version": "2.21.0"},
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture(scope="session")
def tiny_reference(tiny_source, tiny_images):
    """PyTorch FP32 logits of the evaluation images: what every variant is compared with."""
    from crossdeploy.runtimes.torch_runtime import TorchRunner

    with TorchRunner(tiny_source[0]) as runner:
        return runner.infer_all(tiny_images[1].tensors("NCHW"), 4)


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def random_model_files(arch: str, root: Path, size: int):
    """A seeded random `arch` with 10 classes (made input-sensitive, as the model stage does), written as its
    exported program, ONNX and optimized ONNX in the pipeline's layout under `root`, with 16 calibration and
    12 evaluation images: (paths, calibration set, evaluation set)."""
    import torch

    from crossdeploy.data.datasets import DataSettings, default_image_sets
    from crossdeploy.layout import trained_paths
    from crossdeploy.model.source import SourceSpec, build_source_model, export_program
    from crossdeploy.onnx.export import export_onnx
    from crossdeploy.onnx.optimize import optimize_onnx

    paths = trained_paths(root)
    model, card = build_source_model(SourceSpec(arch, arch, num_classes=10, input_size=size))
    calibration, evaluation = default_image_sets(DataSettings(16, 12, card.preprocessing))
    Path(paths["source"]).mkdir(parents=True)
    Path(paths["onnx"]).parent.mkdir(parents=True)
    torch.export.save(export_program(model, size), Path(paths["program"]))
    export_onnx(Path(paths["program"]), Path(paths["onnx"]), opset=17, input_size=size)
    optimize_onnx(Path(paths["onnx"]), Path(paths["onnx_optimized"]))
    return paths, calibration, evaluation


#: the pipeline on a tiny model with short benchmark windows: what the end-to-end tests run
TINY = [
    "model=resnet18-tiny",
    "data.calibration_size=16",
    "data.evaluation_size=16",
    "quantize.calibration_size=16",
    "benchmark.profile=quick",
    "benchmark.batch_sizes=[1,4]",
    "benchmark.concurrency=[1,2]",
    "benchmark.torch_compile=false",
    "benchmark.mlperf.variants=[onnxruntime-int8]",
    "benchmark.targets.int8_speedup_batch=4",
    "benchmark.targets.served_batch=4",
    "benchmark.targets.served_concurrency=2",
    "trained.input_size=32",
]


def sh(cwd, *args, timeout=900):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def commit(repo, message):
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, "--allow-empty")


#: the Git tag of the tiny run's commit in tiny_run's folder and every copy of it
TINY_RUN_TAG = "tiny-run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The pipeline run once on the tiny params with the real `dvc repro`, in a throwaway copy of the repository
    (code and config, no artifacts), committed and tagged TINY_RUN_TAG: (its folder, what that first `dvc repro`
    printed). Every module that runs the pipeline starts from a copy of it (tiny_repo), so the tiny run is paid
    for once a session."""
    from crossdeploy.compose import compose

    root = tmp_path_factory.mktemp("tiny-run")
    tracked = sh(ROOT, "git", "ls-files", "--cached", "--others", "--exclude-standard").split()
    for name in tracked:
        if (ROOT / name).is_file() and not name.startswith(("metrics/", "models/")) and name != "dvc.lock":
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(compose(TINY, config_dir=ROOT / "conf"), sort_keys=False))
    sh(root, "git", "init", "-q")
    commit(root, "tiny")
    output = sh(root, "dvc", "repro")
    commit(root, "tiny run")
    sh(root, "git", "tag", TINY_RUN_TAG)
    return root, output


@pytest.fixture(scope="module")
def tiny_repo(tiny_run, tmp_path_factory):
    """A copy of the tiny run (Git history, workspace and DVC cache), one per test module: its tests change it
    freely and go back to the run with back_to_the_run."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(tiny_run[0], root, symlinks=True, dirs_exist_ok=True)
    return root


def back_to_the_run(repo: Path) -> None:
    """The committed run (TINY_RUN_TAG) back in `repo`: HEAD, index and files from Git
    (a plain `dvc repro` stages dvc.lock, so the index is no baseline), untracked files gone, the artifacts
    from DVC's cache, instead of re-running what a test's change or experiment re-ran."""
    sh(repo, "git", "reset", "-q", "--hard", TINY_RUN_TAG)
    sh(repo, "git", "clean", "-q", "-f", "-d")  # not -x: models/ and the DVC cache are ignored, and kept
    sh(repo, "dvc", "checkout", "-q", "--force")
    assert sh(repo, "git", "status", "--porcelain") == "", "the tiny run's files did not come back from Git"


def module_imports(path: Path, root: Path) -> set[str]:
    """Every module name an import statement anywhere in the file names (lazy imports included:
    they run when the stage calls the function that holds them)."""
    names: set[str] = set()
    package = list(path.relative_to(root).with_suffix("").parts)
    package = package[:-1]  # a module's own package; an __init__'s package is its folder
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package[: len(package) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


#: the package stage's KServe settings a test bundle and the manifests tests are written with
KSERVE = {
    "storage_uri": "s3://bucket/serving/tiny",
    "tfserving_runtime_version": "2.21.0",
    "resources": {"cpu": "2", "memory": "4Gi"},
    "triton_storage_uri": "s3://bucket/triton",
    "triton_runtime_version": "25.10-py3",
}


def bundle_decision(choice: dict | None) -> dict:
    """A deploy decision (deploy.json's shape) around `choice`, or around none: what write_bundle and the served
    check read."""
    return {
        "met": choice is not None,
        "p99_slo_ms": 50.0,
        "tie_pct": 10.0,
        "choice": choice,
        "runner_up": None,
        "closest": None,
        "unstable": [],
        "excluded": {},
        "params": {"p99_ms": 50.0, "variants": "all"},
    }


#: the A100 target's params (conf/target/a100.yaml), its GPU performance targets among them
A100 = yaml.safe_load((ROOT / "conf" / "target" / "a100.yaml").read_text())


def tiny_paths(root: Path, served_repo: Path, tiny_source, tiny_optimized, **overrides: Path) -> dict[str, str]:
    """params.yaml's paths for a project folder `root` over the tiny model's artifacts: the packaged repository,
    the program, the optimized ONNX model in every ONNX place (FP16 aside), the rest under `root`."""
    paths = {
        "serving": served_repo / "models" / "serving",
        "program": tiny_source[0],
        "onnx_optimized": tiny_optimized[0],
        "onnx_int8": tiny_optimized[0],
        "onnx_int8_trt": tiny_optimized[0],
        "onnx_fp16": root / "model.fp16.onnx",
        "tflite": root / "tflite",
        "tensorrt": root / "tensorrt",
        "savedmodel": root / "savedmodel",
        "preprocessing": root / "preprocessing.json",
    }
    return {key: str(value) for key, value in {**paths, **overrides}.items()}
