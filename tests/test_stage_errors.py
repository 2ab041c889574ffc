"""Stage scripts on bad input: one clear line naming the param, exit 1, nothing half-written."""

import os
import subprocess
import sys

import yaml

from crossdeploy.compose import compose
from tests.conftest import ROOT


def run_stage(tmp_path, stage, *overrides, edit=None):
    """Run a stage as dvc.yaml does, on params composed with `overrides`, then changed by hand by `edit`."""
    params = compose(["model=resnet18-tiny", *overrides], config_dir=ROOT / "conf")
    if edit:
        edit(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_unknown_architecture(tmp_path):
    result = run_stage(tmp_path, "model", "model.arch=resnet-50")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: model.arch 'resnet-50'") and "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.*"))


def test_empty_image_folder_leaves_no_data(tmp_path):
    assert run_stage(tmp_path, "model").returncode == 0
    (tmp_path / "images" / "cats").mkdir(parents=True)
    result = run_stage(tmp_path, "data", f"data.images={tmp_path / 'images'}")
    assert result.returncode == 1 and "holds no images" in result.stderr
    assert not list((tmp_path / "models").glob("data/*"))


def test_a_hand_edited_checkpoint_that_dvc_would_not_hash_stops_the_model_stage(tmp_path):
    """params.yaml naming a checkpoint that paths.inputs does not: overwriting it would re-run nothing."""
    checkpoint = tmp_path / "user.pt"
    checkpoint.write_bytes(b"")
    result = run_stage(tmp_path, "model", edit=lambda params: params["model"].update(checkpoint=str(checkpoint)))
    assert result.returncode == 1 and "paths.inputs.checkpoint: stages/model.py" in result.stderr
    assert "python -m crossdeploy.compose" in result.stderr and "Traceback" not in result.stderr
    assert run_stage(tmp_path, "model", f"model.checkpoint={checkpoint}").stderr.count("is not a PyTorch checkpoint") == 1


def test_an_untrusted_torchscript_checkpoint_stops_the_model_stage(tmp_path):
    """torch.jit.load runs the archive's code: without model.trust_checkpoint the stage loads nothing and writes nothing."""
    import torch
    import torchvision

    checkpoint = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torchvision.models.get_model("resnet18", num_classes=10).eval()), str(checkpoint))
    result = run_stage(tmp_path, "model", f"model.checkpoint={checkpoint}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith(f"error: model.checkpoint {checkpoint} is a TorchScript archive")
    assert "set model.trust_checkpoint: true" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.*"))


def test_a_missing_onnx_runtime_names_the_extras_to_install(tiny_optimized, monkeypatch, capsys):
    # ONNX Runtime comes from the cpu or the gpu extra, not the base install: a bare `pip install -e .` lacks it
    import pytest

    from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner
    from crossdeploy.stage import run_stage as run_stage_main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # how Python itself marks a module unimportable
    with pytest.raises(SystemExit) as exited:
        run_stage_main(lambda: OnnxRuntimeRunner(tiny_optimized[0], "onnxruntime-fp32").activate())
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ONNX Runtime is not installed") and "pip install -e '.[cpu]'" in err and "Traceback" not in err
