"""Stage scripts on bad input: one clear line naming the param, exit 1, nothing half-written."""

import subprocess
import sys

import yaml

from crossdeploy.compose import compose
from tests.conftest import ROOT


def run_stage(tmp_path, stage, **sections):
    params = compose(["model=resnet18-tiny"], config_dir=ROOT / "conf")
    for section, values in sections.items():
        params[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def test_unknown_architecture(tmp_path):
    result = run_stage(tmp_path, "model", model={"arch": "resnet-50"})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: model.arch 'resnet-50'") and "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.*"))


def test_empty_image_folder_leaves_no_data(tmp_path):
    assert run_stage(tmp_path, "model").returncode == 0
    (tmp_path / "images" / "cats").mkdir(parents=True)
    result = run_stage(tmp_path, "data", data={"images": str(tmp_path / "images")})
    assert result.returncode == 1 and "holds no images" in result.stderr
    assert not list((tmp_path / "models").glob("data/*"))
