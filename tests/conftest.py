"""Shared fixtures: one tiny real model carried through the real frameworks, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

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

    from crossdeploy.source_model import SourceSpec, build_source_model, export_program

    model, card = build_source_model(SourceSpec("tiny", TINY_ARCH, num_classes=10, input_size=TINY_SIZE))
    path = tmp_path_factory.mktemp("source") / "model.pt2"
    torch.export.save(export_program(model, TINY_SIZE), path)
    return path, card


@pytest.fixture(scope="session")
def tiny_images(tiny_source):
    from crossdeploy.datasets import DataSettings, default_image_sets

    return default_image_sets(DataSettings(12, 10, tiny_source[1].preprocessing))


@pytest.fixture(scope="session")
def tiny_onnx(tiny_source, tmp_path_factory):
    from crossdeploy.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(tiny_source[0], path, opset=17, input_size=TINY_SIZE)
    return path


@pytest.fixture(scope="session")
def tiny_optimized(tiny_onnx):
    from crossdeploy.onnx_optimize import optimize_onnx

    path = tiny_onnx.with_name("model.optimized.onnx")
    counts = optimize_onnx(tiny_onnx, path)
    return path, counts


@pytest.fixture(scope="session")
def tiny_saved_model(tiny_optimized, tmp_path_factory):
    """The tiny model as a SavedModel in TF Serving's layout (<base>/tiny/1)."""
    from crossdeploy.tensorflow_convert import onnx_to_keras, save_serving_model

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
        "model": {"name": "tiny"}, "to_tensorflow": {"version": 1}, "paths": {"serving": "models/serving"},
        "package": {"base_path": "/models", "batching": {"max_batch_size": SERVED_MAX_BATCH}, "kserve": {"tfserving_runtime_version": "2.21.0"}},
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

    from crossdeploy.datasets import DataSettings, default_image_sets
    from crossdeploy.layout import trained_paths
    from crossdeploy.onnx_export import export_onnx
    from crossdeploy.onnx_optimize import optimize_onnx
    from crossdeploy.source_model import SourceSpec, build_source_model, export_program

    paths = trained_paths(root)
    model, card = build_source_model(SourceSpec(arch, arch, num_classes=10, input_size=size))
    calibration, evaluation = default_image_sets(DataSettings(16, 12, card.preprocessing))
    Path(paths["source"]).mkdir(parents=True)
    Path(paths["onnx"]).parent.mkdir(parents=True)
    torch.export.save(export_program(model, size), Path(paths["program"]))
    export_onnx(Path(paths["program"]), Path(paths["onnx"]), opset=17, input_size=size)
    optimize_onnx(Path(paths["onnx"]), Path(paths["onnx_optimized"]))
    return paths, calibration, evaluation
